//! Building push frames: a publication is serialised once; each recipient's frame splices
//! its subscription id and channel in front of the shared tail.

use std::hint::black_box;
use std::sync::Arc;
use std::time::Instant;

use activity_gateway::hub::{Durable, Publication};
use activity_gateway::protocol::Namespace;
use activity_gateway::protocol::Position;
use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};

const CHANNEL: &str = "account-activity.v1.eip155:8453:0xd14b2b8d5e5f1c3c1a4d6b7c9e0f1a2b3c4d5e6f";

/// A typical ~600-byte account-activity payload.
fn payload() -> String {
    let a = "0xd14b2b8d5e5f1c3c1a4d6b7c9e0f1a2b3c4d5e6f";
    let from = "0x7b07000000000000000000000000000000000001";
    format!(
        concat!(
            r#"{{"address":"{a}","tx":{{"id":"0x{id:064x}","chain":"eip155:8453","status":"confirmed","timestamp":1760099871,"from":"{f}","to":"{a}"}},"#,
            r#""updates":[{{"asset":{{"fungible":true,"type":"eip155:8453/erc20:0x833589fcd6edb6e08f4c7c32d4f71b54bda02913","unit":"USDC","decimals":6}},"#,
            r#""postBalance":{{"amount":"0xc350"}},"transfers":[{{"from":"{f}","to":"{a}","amount":"0x2710"}}]}}]}}"#
        ),
        a = a,
        f = from,
        id = 0x1cde_u64
    )
}

fn publication(durable: bool) -> Publication {
    Publication::new(
        Namespace::AccountActivity,
        "account-activity.v1.eip155:0:0xd14b2b8d5e5f1c3c1a4d6b7c9e0f1a2b3c4d5e6f".into(),
        "8453".into(),
        Arc::from(CHANNEL),
        &payload(),
        durable.then(|| {
            Durable::new(Position {
                epoch: "k3j2h1".into(),
                offset: 12_345,
            })
        }),
        Instant::now(),
    )
}

fn frames(c: &mut Criterion) {
    let plain = publication(false);
    let durable = publication(true);
    let sub_id = "5f0c8a2e-3b1d-4c7a-9e6f-2d8b1a0c4e7f";
    let mut g = c.benchmark_group("frame");
    g.throughput(Throughput::Bytes(
        plain.frame_len(sub_id, CHANNEL, false) as u64
    ));
    g.bench_function("per_subscription", |b| {
        b.iter(|| black_box(plain.frame(black_box(sub_id), CHANNEL, false, false)))
    });
    g.bench_function("per_subscription_ack_mode", |b| {
        b.iter(|| black_box(durable.frame(black_box(sub_id), CHANNEL, true, false)))
    });
    g.bench_function("frame_len", |b| {
        b.iter(|| black_box(plain.frame_len(black_box(sub_id), CHANNEL, false)))
    });
    g.bench_function("publication_new", |b| {
        let text = payload();
        b.iter_batched(
            || text.clone(),
            |t| {
                black_box(Publication::new(
                    Namespace::AccountActivity,
                    "k".into(),
                    "8453".into(),
                    Arc::from(CHANNEL),
                    &t,
                    None,
                    Instant::now(),
                ))
            },
            BatchSize::SmallInput,
        )
    });
    g.finish();
}

criterion_group!(benches, frames);
criterion_main!(benches);
