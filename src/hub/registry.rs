//! The local subscription registry: hub key → subscribers, sharded so that fan-out of
//! different channels never contends and a subscribe only locks one shard.
//!
//! Locks are `parking_lot` read/write locks held for a map lookup and a loop of
//! non-blocking `Outbox::push` calls, never across an `.await`.

use std::collections::HashMap;
use std::hash::{BuildHasher, RandomState};
use std::sync::Arc;

use parking_lot::RwLock;

use super::{Gate, Publication};
use crate::protocol::Namespace;
use crate::session::{Outbound, Outbox};

const SHARDS: usize = 64;

/// Identifies one connection on this node.
pub type ConnId = u64;

/// One subscription of one connection to one channel.
#[derive(Debug, Clone)]
pub struct Subscriber {
    pub conn: ConnId,
    pub subscription_id: Arc<str>,
    /// The channel as the client sent it (echoed verbatim for market data).
    pub channel: Arc<str>,
    /// `Some(reference)` for a concrete-chain account subscription; `None` matches every chain.
    pub chain_reference: Option<Arc<str>>,
    pub outbox: Outbox,
    /// Closed while this subscription's history is being replayed (see `Gate`).
    pub gate: Option<Arc<Gate>>,
}

/// One shard: hub key → its subscribers.
type Shard = RwLock<HashMap<String, Vec<Subscriber>>>;

/// Sharded map of hub key → subscribers.
pub struct Registry {
    shards: Box<[Shard]>,
    hasher: RandomState,
}

impl Default for Registry {
    fn default() -> Self {
        Self {
            shards: (0..SHARDS).map(|_| RwLock::new(HashMap::new())).collect(),
            hasher: RandomState::new(),
        }
    }
}

impl Registry {
    fn shard(&self, key: &str) -> &Shard {
        let h = self.hasher.hash_one(key) as usize;
        &self.shards[h % SHARDS]
    }

    /// Adds a subscriber. (Broker interest is counted by the broker itself, per holder.)
    pub fn insert(&self, key: &str, sub: Subscriber) {
        let mut shard = self.shard(key).write();
        match shard.get_mut(key) {
            Some(list) => list.push(sub),
            None => {
                shard.insert(key.to_owned(), vec![sub]);
            }
        }
    }

    /// Removes one connection's subscription from a key; drops the key when it is empty.
    pub fn remove(&self, key: &str, conn: ConnId, subscription_id: &str, channel: &str) {
        let mut shard = self.shard(key).write();
        let Some(list) = shard.get_mut(key) else {
            return;
        };
        list.retain(|s| {
            !(s.conn == conn && &*s.subscription_id == subscription_id && &*s.channel == channel)
        });
        if list.is_empty() {
            shard.remove(key);
        }
    }

    /// Queues the publication for every matching subscriber; returns how many were queued.
    pub fn fan_out(&self, publication: &Arc<Publication>) -> usize {
        let shard = self.shard(&publication.key).read();
        let Some(list) = shard.get(&publication.key) else {
            return 0;
        };
        let mut queued = 0;
        for sub in list {
            if let Some(chain) = &sub.chain_reference {
                if **chain != *publication.chain_reference {
                    continue;
                }
            }
            let channel = match publication.namespace {
                Namespace::AccountActivity => publication.channel.clone(),
                Namespace::MarketData => sub.channel.clone(),
            };
            let item = Outbound::Push {
                publication: publication.clone(),
                subscription_id: sub.subscription_id.clone(),
                channel,
                redelivered: false,
            };
            let ok = match &sub.gate {
                Some(gate) => gate.pass(&sub.outbox, item),
                None => sub.outbox.push(item),
            };
            if ok {
                queued += 1;
            }
        }
        queued
    }
}
