//! The hub's subscriber table: hub key → subscribers, sharded so that fan-out of different
//! channels never contends and a subscribe only locks one shard.
//!
//! Locks are `parking_lot` read/write locks held for a map lookup and a loop of non-blocking
//! [`Recipient::deliver`] calls, never across an `.await`.

use std::collections::HashMap;
use std::fmt::Debug;
use std::hash::{BuildHasher, RandomState};
use std::sync::Arc;

use parking_lot::RwLock;

use super::Publication;
use crate::protocol::Namespace;

const SHARDS: usize = 64;

/// Identifies one connection on this node.
pub type ConnId = u64;

/// What the hub delivers a publication through: one subscriber's end of its connection.
///
/// `deliver` is called under a shard's read lock, for every matching subscriber of every
/// publication: it must not block, and should not allocate beyond queuing the item.
pub trait Recipient: Send + Sync + Debug {
    /// Queues `publication` for the subscription `subscription_id`, sent on `channel`.
    /// Returns false when the recipient refused it (its connection is finishing or full).
    fn deliver(
        &self,
        publication: &Arc<Publication>,
        subscription_id: &Arc<str>,
        channel: &Arc<str>,
    ) -> bool;
}

/// One subscription of one connection to one channel.
#[derive(Debug, Clone)]
pub struct Subscriber {
    /// The connection holding the subscription: a connection holds a channel once.
    pub conn: ConnId,
    /// The subscription id the client was given; carried by every delivery.
    pub subscription_id: Arc<str>,
    /// The channel as the client sent it (echoed verbatim for market data).
    pub channel: Arc<str>,
    /// `Some(reference)` for a concrete-chain account subscription; `None` matches every chain.
    pub chain_filter: Option<Arc<str>>,
    /// Where the publications go.
    pub recipient: Arc<dyn Recipient>,
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

/// This node's subscribers, sharded by hub key, and the fan-out of publications to them.
pub struct Hub {
    shards: Box<[Shard]>,
    hasher: RandomState,
}

impl Default for Hub {
    fn default() -> Self {
        Self {
            shards: (0..SHARDS).map(|_| RwLock::new(HashMap::new())).collect(),
            hasher: RandomState::new(),
        }
    }
}

// === Hub ===

impl Hub {
    pub fn new() -> Self {
        Self::default()
    }

    fn shard(&self, key: &str) -> &Shard {
        let h = self.hasher.hash_one(key) as usize;
        &self.shards[h % SHARDS]
    }

    /// Adds a subscriber, replacing the connection's entry for the same channel if any.
    /// (Broker interest is counted by the broker itself, per holder.)
    pub fn subscribe(&self, key: &str, sub: Subscriber) {
        let mut shard = self.shard(key).write();
        let list = match shard.get_mut(key) {
            Some(list) => list,
            None => shard.entry(key.to_owned()).or_default(),
        };
        list.insert(sub);
    }

    /// Moves a connection's channel (held as `old_channel`) to the subscriber `sub` in one
    /// step, so no publication on the key falls between the old entry and the new one.
    pub fn resubscribe(&self, key: &str, old_channel: &str, sub: Subscriber) {
        let mut shard = self.shard(key).write();
        let list = match shard.get_mut(key) {
            Some(list) => list,
            None => shard.entry(key.to_owned()).or_default(),
        };
        list.remove(sub.conn, old_channel);
        list.insert(sub);
    }

    /// Removes one connection's subscription from a key; drops the key when it is empty.
    pub fn unsubscribe(&self, key: &str, conn: ConnId, subscription_id: &str, channel: &str) {
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

    /// Delivers the publication to every matching subscriber; returns how many took it.
    /// Never blocks.
    pub fn publish(&self, publication: &Arc<Publication>) -> usize {
        let shard = self.shard(&publication.key).read();
        let Some(list) = shard.get(&publication.key) else {
            return 0;
        };
        let mut queued = 0;
        list.for_each(|sub| {
            if let Some(chain) = &sub.chain_filter {
                if **chain != *publication.chain_reference {
                    return;
                }
            }
            let channel = match publication.namespace {
                Namespace::AccountActivity => &publication.channel,
                Namespace::MarketData => &sub.channel,
            };
            if sub
                .recipient
                .deliver(publication, &sub.subscription_id, channel)
            {
                queued += 1;
            }
        });
        queued
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use parking_lot::Mutex;
    use std::time::Instant;

    const KEY: &str = "account-activity.v1.eip155:0x00000000000000000000000000000000000000aa";

    /// Records the subscription id of every delivery.
    #[derive(Debug, Default)]
    struct Ids(Mutex<Vec<String>>);

    impl Recipient for Ids {
        fn deliver(&self, _: &Arc<Publication>, subscription_id: &Arc<str>, _: &Arc<str>) -> bool {
            self.0.lock().push(subscription_id.to_string());
            true
        }
    }

    impl Ids {
        fn take(&self) -> Vec<String> {
            std::mem::take(&mut *self.0.lock())
        }
    }

    fn sub(conn: ConnId, id: &str, ids: &Arc<Ids>) -> Subscriber {
        Subscriber {
            conn,
            subscription_id: id.into(),
            channel: "account-activity.v1.eip155:0:0x00000000000000000000000000000000000000aa"
                .into(),
            chain_filter: None,
            recipient: ids.clone(),
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

    #[test]
    fn many_subscribers_on_a_key_each_get_one_push_and_leave_one_by_one() {
        let hub = Hub::new();
        let ids = Arc::new(Ids::default());
        for conn in 0..(FEW as u64 * 3) {
            hub.subscribe(KEY, sub(conn, &format!("s{conn}"), &ids));
        }
        let p = publication();
        assert_eq!(hub.publish(&p), FEW * 3);
        assert_eq!(ids.take().len(), FEW * 3);
        for conn in 0..(FEW as u64 * 3) {
            let channel = sub(conn, "", &ids).channel;
            hub.unsubscribe(KEY, conn, &format!("s{conn}"), &channel);
        }
        assert_eq!(hub.publish(&p), 0);
        assert!(hub.shard(KEY).read().get(KEY).is_none());
    }

    #[test]
    fn a_connection_holds_a_channel_once_and_the_newest_id_wins() {
        let hub = Hub::new();
        let ids = Arc::new(Ids::default());
        for n in 0..300 {
            hub.subscribe(KEY, sub(7, &format!("s{n}"), &ids));
        }
        let p = publication();
        assert_eq!(hub.publish(&p), 1);
        assert_eq!(ids.take(), ["s299"]);
        // The old id does not remove it; the holder does.
        hub.unsubscribe(KEY, 7, "s0", &sub(7, "", &ids).channel);
        assert_eq!(hub.publish(&p), 1);
        hub.unsubscribe(KEY, 7, "s299", &sub(7, "", &ids).channel);
        assert_eq!(hub.publish(&p), 0);
    }
}
