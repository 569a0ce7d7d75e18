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
type Shard = RwLock<HashMap<String, Subscribers>>;

/// Most keys have one subscriber: up to this many they are a list searched in place, which
/// costs an idle connection one small allocation instead of a hash table's four buckets.
const FEW: usize = 8;

/// A key's subscribers, by (connection, channel as sent): a connection holds a channel once.
/// Past [`FEW`] they are a map, so removing one is a lookup, whatever their number.
#[derive(Debug)]
enum Subscribers {
    Few(Vec<Subscriber>),
    Many(HashMap<(ConnId, Arc<str>), Subscriber>),
}

// === Subscribers ===

impl Default for Subscribers {
    fn default() -> Self {
        Subscribers::Few(Vec::with_capacity(1))
    }
}

impl Subscribers {
    fn get(&self, conn: ConnId, channel: &str) -> Option<&Subscriber> {
        match self {
            Subscribers::Few(list) => list
                .iter()
                .find(|s| s.conn == conn && &*s.channel == channel),
            Subscribers::Many(map) => map.get(&(conn, Arc::from(channel))),
        }
    }

    fn remove(&mut self, conn: ConnId, channel: &str) {
        match self {
            Subscribers::Few(list) => {
                if let Some(i) = list
                    .iter()
                    .position(|s| s.conn == conn && &*s.channel == channel)
                {
                    list.swap_remove(i);
                }
            }
            Subscribers::Many(map) => {
                map.remove(&(conn, Arc::from(channel)));
            }
        }
    }

    /// Adds `sub`, replacing the connection's entry for the same channel.
    fn insert(&mut self, sub: Subscriber) {
        self.remove(sub.conn, &sub.channel);
        match self {
            Subscribers::Few(list) if list.len() < FEW => list.push(sub),
            Subscribers::Few(list) => {
                let mut map: HashMap<_, _> = list
                    .drain(..)
                    .map(|s| ((s.conn, s.channel.clone()), s))
                    .collect();
                map.insert((sub.conn, sub.channel.clone()), sub);
                *self = Subscribers::Many(map);
            }
            Subscribers::Many(map) => {
                map.insert((sub.conn, sub.channel.clone()), sub);
            }
        }
    }

    fn is_empty(&self) -> bool {
        match self {
            Subscribers::Few(list) => list.is_empty(),
            Subscribers::Many(map) => map.is_empty(),
        }
    }

    fn for_each(&self, f: impl FnMut(&Subscriber)) {
        match self {
            Subscribers::Few(list) => list.iter().for_each(f),
            Subscribers::Many(map) => map.values().for_each(f),
        }
    }
}

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

    /// Adds a subscriber, replacing the connection's entry for the same channel if any.
    /// (Broker interest is counted by the broker itself, per holder.)
    pub fn insert(&self, key: &str, sub: Subscriber) {
        let mut shard = self.shard(key).write();
        let list = match shard.get_mut(key) {
            Some(list) => list,
            None => shard.entry(key.to_owned()).or_default(),
        };
        list.insert(sub);
    }

    /// Moves a connection's channel to a new subscriber entry in one step, so no publication
    /// on the key falls between the old entry and the new one.
    pub fn replace(&self, key: &str, old_channel: &str, sub: Subscriber) {
        let mut shard = self.shard(key).write();
        let list = match shard.get_mut(key) {
            Some(list) => list,
            None => shard.entry(key.to_owned()).or_default(),
        };
        list.remove(sub.conn, old_channel);
        list.insert(sub);
    }

    /// Removes one connection's subscription from a key; drops the key when it is empty.
    pub fn remove(&self, key: &str, conn: ConnId, subscription_id: &str, channel: &str) {
        let mut shard = self.shard(key).write();
        let Some(list) = shard.get_mut(key) else {
            return;
        };
        // A channel that moved to a newer subscription id is not removed by the old one.
        if list
            .get(conn, channel)
            .is_some_and(|s| &*s.subscription_id == subscription_id)
        {
            list.remove(conn, channel);
        }
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
        list.for_each(|sub| {
            if let Some(chain) = &sub.chain_reference {
                if **chain != *publication.chain_reference {
                    return;
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
        });
        queued
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hub::Publication;
    use crate::session::Receiver;
    use std::time::Instant;

    const KEY: &str = "account-activity.v1.eip155:0x00000000000000000000000000000000000000aa";

    fn sub(conn: ConnId, id: &str, outbox: &Outbox) -> Subscriber {
        Subscriber {
            conn,
            subscription_id: id.into(),
            channel: "account-activity.v1.eip155:0:0x00000000000000000000000000000000000000aa"
                .into(),
            chain_reference: None,
            outbox: outbox.clone(),
            gate: None,
        }
    }

    /// A publication on `KEY`, on chain `eip155:1`.
    fn publication() -> Arc<Publication> {
        Arc::new(Publication::new(
            Namespace::AccountActivity,
            KEY.into(),
            "1".into(),
            "account-activity.v1.eip155:1:0x00000000000000000000000000000000000000aa".into(),
            "{}",
            None,
            Instant::now(),
        ))
    }

    fn pushed_ids(rx: &mut Receiver) -> Vec<String> {
        let mut out = Vec::new();
        while let Ok(item) = rx.try_recv() {
            if let Outbound::Push {
                subscription_id, ..
            } = item
            {
                out.push(subscription_id.to_string());
            }
        }
        out
    }

    #[test]
    fn many_subscribers_on_a_key_each_get_one_push_and_leave_one_by_one() {
        let registry = Registry::default();
        let (outbox, mut rx) = Outbox::new(1 << 20, false);
        for conn in 0..(FEW as u64 * 3) {
            registry.insert(KEY, sub(conn, &format!("s{conn}"), &outbox));
        }
        let p = publication();
        assert_eq!(registry.fan_out(&p), FEW * 3);
        assert_eq!(pushed_ids(&mut rx).len(), FEW * 3);
        for conn in 0..(FEW as u64 * 3) {
            let channel = sub(conn, "", &outbox).channel;
            registry.remove(KEY, conn, &format!("s{conn}"), &channel);
        }
        assert_eq!(registry.fan_out(&p), 0);
        assert!(registry.shard(KEY).read().get(KEY).is_none());
    }

    #[test]
    fn a_connection_holds_a_channel_once_and_the_newest_id_wins() {
        let registry = Registry::default();
        let (outbox, mut rx) = Outbox::new(1 << 20, false);
        for n in 0..300 {
            registry.insert(KEY, sub(7, &format!("s{n}"), &outbox));
        }
        let p = publication();
        assert_eq!(registry.fan_out(&p), 1);
        assert_eq!(pushed_ids(&mut rx), ["s299"]);
        // The old id no longer removes it; the holder does.
        registry.remove(KEY, 7, "s0", &sub(7, "", &outbox).channel);
        assert_eq!(registry.fan_out(&p), 1);
        registry.remove(KEY, 7, "s299", &sub(7, "", &outbox).channel);
        assert_eq!(registry.fan_out(&p), 0);
    }
}
