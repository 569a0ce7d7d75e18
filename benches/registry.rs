//! The hub: fan-out to one key with many subscribers (broadcast), fan-out to many
//! keys with one subscriber each (unicast), and publishing while other threads subscribe and
//! unsubscribe (the write locks a connection storm takes on the shards).

use std::hint::black_box;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

use activity_gateway::hub::{Hub, Publication, Subscriber};
use activity_gateway::protocol::Namespace;
use activity_gateway::session::{Outbound, Outbox, Receiver};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};

const PAYLOAD: &str = r#"{"address":"0xd14b2b8d5e5f1c3c1a4d6b7c9e0f1a2b3c4d5e6f","tx":{"id":"0x1cde","chain":"eip155:8453","status":"confirmed"},"updates":[]}"#;

fn key(i: u64) -> String {
    format!("account-activity.v1.eip155:0:0x{i:040x}")
}

fn publication(key: String) -> Arc<Publication> {
    Arc::new(Publication::new(
        Namespace::AccountActivity,
        key,
        "8453".into(),
        Arc::from("account-activity.v1.eip155:8453:0xd14b"),
        PAYLOAD,
        None,
        Instant::now(),
    ))
}

/// A subscriber whose queue is large enough never to overflow during a measurement, and the
/// writer's end of that queue.
fn subscriber(conn: u64) -> (Subscriber, Receiver) {
    let (outbox, rx) = Outbox::new(usize::MAX / 2, false);
    let sub = Subscriber {
        conn,
        subscription_id: Arc::from(format!("sub-{conn}").as_str()),
        channel: Arc::from("account-activity.v1.eip155:0:0xd14b"),
        chain_filter: None,
        recipient: outbox.recipient(),
    };
    (sub, rx)
}

/// Empties a queue, as its writer would.
fn drain(rx: &mut Receiver) {
    while let Ok(item) = rx.try_recv() {
        let _: Outbound = item;
    }
}

fn broadcast(c: &mut Criterion) {
    let mut g = c.benchmark_group("registry/broadcast");
    for n in [100u64, 10_000] {
        let hub = Hub::new();
        let mut rxs = Vec::new();
        for conn in 0..n {
            let (sub, rx) = subscriber(conn);
            hub.subscribe(&key(0), sub);
            rxs.push(rx);
        }
        let p = publication(key(0));
        g.throughput(Throughput::Elements(n));
        g.bench_function(format!("fan_out_{n}"), |b| {
            b.iter(|| {
                let queued = hub.publish(&p);
                rxs.iter_mut().for_each(drain);
                black_box(queued)
            })
        });
    }
    g.finish();
}

/// 10,000 connections, each on its own key, and publications to every 97th key.
struct Unicast {
    rxs: Vec<Receiver>,
    targets: Vec<usize>,
    pubs: Vec<Arc<Publication>>,
}

impl Unicast {
    fn subscribe(hub: &Hub) -> Self {
        let n = 10_000u64;
        let mut rxs = Vec::new();
        for conn in 0..n {
            let (sub, rx) = subscriber(conn);
            hub.subscribe(&key(conn), sub);
            rxs.push(rx);
        }
        let targets: Vec<usize> = (0..n as usize).step_by(97).collect();
        let pubs = targets
            .iter()
            .map(|&i| publication(key(i as u64)))
            .collect();
        Self { rxs, targets, pubs }
    }

    /// Measures publishing every publication once (and draining what it queued).
    fn bench(&mut self, c: &mut Criterion, group: &str, name: &str, hub: &Hub) {
        let mut g = c.benchmark_group(group);
        g.throughput(Throughput::Elements(self.pubs.len() as u64));
        g.bench_function(name, |b| {
            b.iter(|| {
                let queued: usize = self.pubs.iter().map(|p| hub.publish(p)).sum();
                for &i in &self.targets {
                    drain(&mut self.rxs[i]);
                }
                black_box(queued)
            })
        });
        g.finish();
    }
}

fn unicast(c: &mut Criterion) {
    let hub = Hub::new();
    Unicast::subscribe(&hub).bench(c, "registry/unicast", "10k_keys", &hub);
}

/// Publishing on this thread while two threads subscribe and unsubscribe on other keys.
fn contended(c: &mut Criterion) {
    let hub = Arc::new(Hub::new());
    let mut fixture = Unicast::subscribe(&hub);
    let stop = Arc::new(AtomicBool::new(false));
    let churners: Vec<_> = (0..2u64)
        .map(|t| {
            let (hub, stop) = (hub.clone(), stop.clone());
            std::thread::spawn(move || {
                let mut i = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    let conn = 1_000_000 + t * 1_000_000 + i % 1000;
                    let k = key(conn);
                    let (sub, _rx) = subscriber(conn);
                    let id = sub.subscription_id.clone();
                    let ch = sub.channel.clone();
                    hub.subscribe(&k, sub);
                    hub.unsubscribe(&k, conn, &id, &ch);
                    i += 1;
                }
            })
        })
        .collect();
    fixture.bench(
        c,
        "registry/contended",
        "publish_while_2_threads_subscribe",
        &hub,
    );
    stop.store(true, Ordering::Relaxed);
    for t in churners {
        let _ = t.join();
    }
}

criterion_group!(benches, broadcast, unicast, contended);
criterion_main!(benches);
