//! A wallet as the fault tests see it: an acking client (the crate's own, which acks, dedupes
//! and resumes) whose events are read with deadlines, recording every push it receives.
#![allow(dead_code)]

use std::time::{Duration, Instant};

use activity_gateway::client::{Client, ClientConfig, Event};
use serde_json::Value;
use tokio::sync::mpsc;

use super::TestGateway;

/// A connected, subscribed, acking wallet.
pub struct Wallet {
    events: mpsc::UnboundedReceiver<Event>,
    /// `data` of every push received, in order.
    pub pushes: Vec<Value>,
    task: tokio::task::JoinHandle<()>,
}

impl Wallet {
    /// Connects to `gw` in ack mode and subscribes to `channel`.
    pub async fn connect(gw: &TestGateway, channel: &str) -> Wallet {
        let mut client = Client::connect(ClientConfig::new(
            format!("ws://{}/v1", gw.addr),
            gw.token("wallet", 3600),
        ))
        .await
        .expect("connect");
        client
            .subscribe(&[channel.to_owned()])
            .await
            .expect("subscribe");
        let (tx, events) = mpsc::unbounded_channel();
        // The client reads on its own task, so a deadline here never cuts a read short.
        let task = tokio::spawn(async move {
            while let Ok(e) = client.next_event().await {
                if tx.send(e).is_err() {
                    return;
                }
            }
        });
        Wallet {
            events,
            pushes: Vec::new(),
            task,
        }
    }

    /// The next status change (`true` for up) of `chain` within `within`, recording pushes
    /// meanwhile; `None` when none came.
    pub async fn status_within(&mut self, chain: &str, within: Duration) -> Option<bool> {
        let deadline = Instant::now() + within;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match tokio::time::timeout(left, self.events.recv()).await {
                Ok(Some(Event::System { chain_ids, up, .. })) => {
                    if chain_ids.iter().any(|c| c == chain) {
                        return Some(up);
                    }
                }
                Ok(Some(Event::Notification(n))) => self.pushes.push(n.data),
                Ok(Some(_)) => {}
                Ok(None) => panic!("the wallet's connection ended"),
                Err(_) => return None,
            }
        }
    }

    /// Asserts that `chain` is not said `up` during `period`.
    pub async fn no_up_for(&mut self, chain: &str, period: Duration) {
        let deadline = Instant::now() + period;
        while Instant::now() < deadline {
            let left = deadline.saturating_duration_since(Instant::now());
            if let Some(up) = self.status_within(chain, left).await {
                assert!(!up, "{chain} said up while the fault lasts");
            }
        }
    }

    /// Waits until `n` pushes were received (at most `within`) and returns their `seq`s.
    pub async fn seqs(&mut self, n: usize, within: Duration) -> Vec<i64> {
        let deadline = Instant::now() + within;
        while self.pushes.len() < n && Instant::now() < deadline {
            let left = deadline.saturating_duration_since(Instant::now());
            match tokio::time::timeout(left, self.events.recv()).await {
                Ok(Some(Event::Notification(n))) => self.pushes.push(n.data),
                Ok(Some(_)) => {}
                Ok(None) | Err(_) => break,
            }
        }
        self.pushes
            .iter()
            .map(|d| d["seq"].as_i64().unwrap_or(-1))
            .collect()
    }
}

impl Drop for Wallet {
    fn drop(&mut self) {
        self.task.abort();
    }
}
