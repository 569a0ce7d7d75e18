//! Which nodes of a cluster are alive, for the status page: every node announces itself on
//! `<prefix>.nodes` every [`ANNOUNCE_EVERY`] and remembers whom it heard from. A node not heard
//! from for [`FORGET_AFTER`] is dropped. A node is named by a random id per process (logged at
//! start), never by its address or host name.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_nats::Client;
use futures_util::StreamExt;
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use tokio::task::JoinSet;

/// How often a node announces itself.
pub const ANNOUNCE_EVERY: Duration = Duration::from_secs(2);
/// How long a node stays listed after its last announcement.
pub const FORGET_AFTER: Duration = Duration::from_secs(10);

/// One announcement on the wire.
#[derive(Debug, Serialize, Deserialize)]
struct Announcement {
    /// The node's random id.
    id: String,
    /// Its gateway version.
    version: String,
}

/// A node as the status page shows it.
#[derive(Debug, Clone, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct NodeSeen {
    /// The node's random id.
    pub id: String,
    /// Its gateway version.
    pub version: String,
    /// Milliseconds since its last announcement arrived.
    pub last_seen_ms_ago: u64,
    /// This is the node answering.
    #[serde(rename = "self")]
    pub this: bool,
}

/// The nodes this node has heard from.
pub struct Presence {
    /// This node's random id.
    id: String,
    /// Every node heard from: id → (when, version).
    seen: Mutex<HashMap<String, (Instant, String)>>,
}

impl Presence {
    /// A new id for this process.
    pub fn new() -> Arc<Self> {
        let id = uuid::Uuid::new_v4().simple().to_string()[..8].to_owned();
        tracing::info!(node_id = %id, "Cluster node id (shown on the status page).");
        Arc::new(Self {
            id,
            seen: Mutex::new(HashMap::new()),
        })
    }

    /// Announces this node and listens to the others, in two tasks of `tasks`.
    pub fn spawn(self: &Arc<Self>, tasks: &mut JoinSet<()>, client: Client, subject: String) {
        let me = self.clone();
        let (c, s) = (client.clone(), subject.clone());
        tasks.spawn(async move {
            let payload = serde_json::to_vec(&Announcement {
                id: me.id.clone(),
                version: env!("CARGO_PKG_VERSION").to_owned(),
            })
            .unwrap_or_default();
            let mut tick = tokio::time::interval(ANNOUNCE_EVERY);
            loop {
                tick.tick().await;
                if c.publish(s.clone(), payload.clone().into()).await.is_err() {
                    tracing::debug!("Cluster presence announcement not sent; retrying.");
                }
            }
        });
        let me = self.clone();
        tasks.spawn(async move {
            loop {
                let Ok(mut sub) = client.subscribe(subject.clone()).await else {
                    tokio::time::sleep(Duration::from_millis(500)).await;
                    continue;
                };
                while let Some(msg) = sub.next().await {
                    if let Ok(a) = serde_json::from_slice::<Announcement>(&msg.payload) {
                        me.heard(a.id, a.version, Instant::now());
                    }
                }
            }
        });
    }

    fn heard(&self, id: String, version: String, at: Instant) {
        if id.len() > 64 || version.len() > 64 {
            return;
        }
        let mut seen = self.seen.lock();
        seen.retain(|_, (t, _)| at.duration_since(*t) < FORGET_AFTER);
        seen.insert(id, (at, version));
    }

    /// The nodes heard from within [`FORGET_AFTER`], this one first, then by id.
    pub fn nodes(&self) -> Vec<NodeSeen> {
        let now = Instant::now();
        let mut list: Vec<NodeSeen> = self
            .seen
            .lock()
            .iter()
            .filter(|(_, (t, _))| now.duration_since(*t) < FORGET_AFTER)
            .map(|(id, (t, v))| NodeSeen {
                id: id.clone(),
                version: v.clone(),
                last_seen_ms_ago: now.duration_since(*t).as_millis() as u64,
                this: *id == self.id,
            })
            .collect();
        if !list.iter().any(|n| n.this) {
            list.push(NodeSeen {
                id: self.id.clone(),
                version: env!("CARGO_PKG_VERSION").to_owned(),
                last_seen_ms_ago: 0,
                this: true,
            });
        }
        list.sort_by(|a, b| b.this.cmp(&a.this).then_with(|| a.id.cmp(&b.id)));
        list
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists_self_first_and_forgets_silent_nodes() {
        let p = Presence::new();
        let now = Instant::now();
        p.heard("zz".into(), "1".into(), now);
        p.heard("aa".into(), "1".into(), now);
        let ids: Vec<_> = p.nodes().into_iter().map(|n| (n.id, n.this)).collect();
        assert_eq!(
            ids,
            vec![
                (p.id.clone(), true),
                ("aa".into(), false),
                ("zz".into(), false)
            ]
        );
        if let Some(old) = now.checked_sub(FORGET_AFTER) {
            p.heard("aa".into(), "1".into(), old);
            assert!(
                p.nodes().iter().all(|n| n.id != "aa"),
                "a silent node is dropped"
            );
        }
    }
}
