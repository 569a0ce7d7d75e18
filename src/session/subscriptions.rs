//! One connection's subscriptions: ids, the channels each holds, the distinct-channel count
//! that the per-connection limit applies to, and which chains concern the connection.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::Arc;

use crate::protocol::caip::ChainId;
use crate::protocol::channel::{AccountChannel, ACCOUNT_ACTIVITY};
use crate::protocol::{Channel, Namespace};

/// One channel held by a subscription.
#[derive(Debug, Clone)]
pub struct Held {
    /// The channel string exactly as the client sent it.
    pub sent: Arc<str>,
    /// The channel, parsed.
    pub channel: Channel,
    /// Its hub key: the account stream, or the market-data key.
    pub key: String,
    /// Normalised identity: the same channel written differently counts once.
    pub identity: String,
}

/// The subscription state of one connection. A channel (by identity) is held by at most one
/// subscription id; every id holds at least one channel, so ids never outnumber channels.
#[derive(Debug, Default)]
pub struct Subscriptions {
    /// Subscription id → its channels (at most `limits.max_subscriptions_per_connection`, so
    /// a list: an idle connection's one channel costs one `Held`, not a hash table's buckets).
    by_id: HashMap<Arc<str>, Vec<Held>>,
    /// Channel identity → the subscription id holding it.
    owner: HashMap<String, Arc<str>>,
}

impl Held {
    pub fn new(sent: &str, channel: Channel) -> Self {
        let (key, identity) = match &channel {
            Channel::AccountActivity(a) => account_key_and_identity(a),
            Channel::MarketData(m) => (m.key.clone(), m.key.clone()),
        };
        Self {
            sent: sent.into(),
            key,
            channel,
            identity,
        }
    }

    /// The concrete chain filter for the hub (`None` = every chain, or not an account channel).
    pub fn chain_filter(&self) -> Option<Arc<str>> {
        match &self.channel {
            Channel::AccountActivity(a) if !a.account.chain.is_wildcard() => {
                Some(a.account.chain.reference().into())
            }
            _ => None,
        }
    }
}

/// An account channel's hub key and identity: the same strings as
/// [`AccountChannel::stream_key`] and [`AccountChannel::canonical`], each built in one
/// allocation of its exact size (every subscribe builds them, for each channel).
fn account_key_and_identity(a: &AccountChannel) -> (String, String) {
    let chain = &a.account.chain;
    let (namespace, reference) = (chain.namespace(), chain.reference());
    let address = a.account.address.as_str();
    let prefix = ACCOUNT_ACTIVITY.len() + 1 + namespace.len() + 1;
    let mut key = String::with_capacity(prefix + 2 + address.len());
    key.push_str(ACCOUNT_ACTIVITY);
    key.push('.');
    key.push_str(namespace);
    key.push(':');
    let mut identity = String::with_capacity(prefix + reference.len() + 1 + address.len());
    identity.push_str(&key);
    identity.push_str(reference);
    identity.push(':');
    identity.push_str(address);
    key.push_str("0:");
    key.push_str(address);
    (key, identity)
}

impl Subscriptions {
    /// Distinct channels currently held.
    pub fn channel_count(&self) -> usize {
        self.owner.len()
    }

    /// Subscription ids currently holding a channel.
    pub fn id_count(&self) -> usize {
        self.by_id.len()
    }

    /// How many of `identities` are not held yet.
    pub fn new_identities<'a>(&self, identities: impl Iterator<Item = &'a str>) -> usize {
        identities.filter(|i| !self.owner.contains_key(*i)).count()
    }

    /// The subscription id holding `identity`, and the channel as it was sent then.
    pub fn holder(&self, identity: &str) -> Option<(&Arc<str>, &Held)> {
        let id = self.owner.get(identity)?;
        let held = self
            .by_id
            .get(id)?
            .iter()
            .find(|h| h.identity == identity)?;
        Some((id, held))
    }

    /// Adds `held` under `id`. A channel already held by another id moves to `id`; returns
    /// the (old id, old channel) pairs that moved.
    pub fn insert(&mut self, id: Arc<str>, held: Vec<Held>) -> Vec<(Arc<str>, Held)> {
        let mut moved = Vec::new();
        let n = held.len();
        for h in held {
            if let Some(old) = self.owner.insert(h.identity.clone(), id.clone()) {
                if let Some(list) = self.by_id.get_mut(&old) {
                    if let Some(i) = list.iter().position(|p| p.identity == h.identity) {
                        moved.push((old.clone(), list.swap_remove(i)));
                    }
                    if list.is_empty() {
                        self.by_id.remove(&old);
                    }
                }
            }
            self.by_id
                .entry(id.clone())
                .or_insert_with(|| Vec::with_capacity(n))
                .push(h);
        }
        moved
    }

    /// Removes the channels of `id` whose sent text is in `channels` (all when empty).
    /// Returns what was removed. Linear in the subscription's channels plus `channels`.
    pub fn remove(&mut self, id: &str, channels: &[String]) -> Vec<Held> {
        let Some(list) = self.by_id.get_mut(id) else {
            return Vec::new();
        };
        let removed: Vec<Held> = if channels.is_empty() {
            std::mem::take(list)
        } else {
            let wanted: HashSet<&str> = channels.iter().map(String::as_str).collect();
            let (gone, kept): (Vec<Held>, Vec<Held>) = std::mem::take(list)
                .into_iter()
                .partition(|h| wanted.contains(&*h.sent));
            *list = kept;
            gone
        };
        if list.is_empty() {
            self.by_id.remove(id);
        }
        for h in &removed {
            self.owner.remove(&h.identity);
        }
        removed
    }

    /// True when subscription `id` still holds a channel.
    pub fn holds(&self, id: &str) -> bool {
        self.by_id.contains_key(id)
    }

    /// True when some subscription holds this channel identity.
    pub fn holds_identity(&self, identity: &str) -> bool {
        self.owner.contains_key(identity)
    }

    /// Every (subscription id, held channel); used to clean up when the connection ends.
    pub fn drain(&mut self) -> Vec<(Arc<str>, Held)> {
        self.owner.clear();
        self.by_id
            .drain()
            .flat_map(|(id, list)| list.into_iter().map(move |h| (id.clone(), h)))
            .collect()
    }

    /// Every held channel.
    pub fn channels(&self) -> impl Iterator<Item = &Held> {
        self.by_id.values().flatten()
    }

    /// The chain selectors per namespace: wildcard chains match their whole namespace.
    pub fn selectors(&self) -> HashMap<Namespace, BTreeSet<ChainId>> {
        let mut out: HashMap<Namespace, BTreeSet<ChainId>> = HashMap::new();
        for h in self.channels() {
            out.entry(h.channel.namespace())
                .or_default()
                .insert(h.channel.chain().clone());
        }
        out
    }
}

/// The chains among `chains` that concern `selectors`, as CAIP-2 strings.
pub fn relevant<'a>(
    selectors: &BTreeSet<ChainId>,
    chains: impl Iterator<Item = &'a ChainId>,
) -> Vec<String> {
    chains
        .filter(|c| {
            selectors
                .iter()
                .any(|s| *s == **c || (s.is_wildcard() && s.namespace() == c.namespace()))
        })
        .map(ToString::to_string)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: &str = "account-activity.v1.eip155:0:0xd14b2b8d5e5f1c3c1a4d6b7c9e0f1a2b3c4d5e6f";

    fn held(s: &str) -> Held {
        Held::new(s, Channel::parse(s).unwrap())
    }

    #[test]
    fn held_key_and_identity_are_the_channels() {
        let specific = "account-activity.v1.eip155:8453:0xD14B2B8D5E5F1C3C1A4D6B7C9E0F1A2B3C4D5E6F";
        for s in [A, specific] {
            let h = held(s);
            let Channel::AccountActivity(a) = &h.channel else {
                panic!("{s} is an account channel")
            };
            assert_eq!(h.key, a.stream_key());
            assert_eq!(h.identity, a.canonical());
            assert_eq!(h.key.capacity(), h.key.len());
            assert_eq!(h.identity.capacity(), h.identity.len());
        }
        let h = held(specific);
        assert_eq!(
            (h.key.as_str(), h.identity.as_str()),
            (
                "account-activity.v1.eip155:0:0xd14b2b8d5e5f1c3c1a4d6b7c9e0f1a2b3c4d5e6f",
                "account-activity.v1.eip155:8453:0xd14b2b8d5e5f1c3c1a4d6b7c9e0f1a2b3c4d5e6f"
            )
        );
    }

    #[test]
    fn a_channel_held_again_moves_to_the_new_id_and_removal_is_by_sent_text() {
        let mut subs = Subscriptions::default();
        assert!(subs.insert("s1".into(), vec![held(A)]).is_empty());
        let other_spelling = A
            .to_uppercase()
            .replace("ACCOUNT-ACTIVITY.V1.EIP155", "account-activity.v1.eip155")
            .replace("0XD", "0xD");
        let moved = subs.insert("s2".into(), vec![held(&other_spelling)]);
        assert_eq!(moved.len(), 1);
        assert_eq!((&*moved[0].0, &*moved[0].1.sent), ("s1", A));
        assert_eq!((subs.channel_count(), subs.id_count()), (1, 1));
        assert!(!subs.holds("s1") && subs.holds("s2"));
        assert!(subs.remove("s1", &[]).is_empty());
        assert!(
            subs.remove("s2", &[A.to_owned()]).is_empty(),
            "by sent text"
        );
        assert_eq!(subs.remove("s2", &[other_spelling]).len(), 1);
        assert_eq!((subs.channel_count(), subs.id_count()), (0, 0));
        assert!(subs.remove("unknown", &[]).is_empty());
    }

    #[test]
    fn removing_many_channels_removes_each_once() {
        let mut subs = Subscriptions::default();
        let channels: Vec<String> = (0..20_000)
            .map(|n| format!("account-activity.v1.eip155:0:0x{n:040x}"))
            .collect();
        subs.insert("s".into(), channels.iter().map(|c| held(c)).collect());
        let removed = subs.remove("s", &channels);
        assert_eq!(removed.len(), 20_000);
        let mut sent: Vec<&str> = removed.iter().map(|h| &*h.sent).collect();
        sent.sort_unstable();
        sent.dedup();
        assert_eq!(sent.len(), 20_000);
        assert_eq!((subs.channel_count(), subs.id_count()), (0, 0));
    }

    #[test]
    fn relevance_of_chains() {
        let mut subs = Subscriptions::default();
        subs.insert("s".into(), vec![held(A), held("account-activity.v1.solana:5eykt4UsFv8P8NJdTREpY1vzqKqZKvdp:9WzDXwBbmkg8ZTbNMqUxvQRAyrZzDsGYdLVL9zYtAWWM")]);
        let sel = subs.selectors();
        let chains: Vec<ChainId> = [
            "eip155:1",
            "eip155:8453",
            "solana:5eykt4UsFv8P8NJdTREpY1vzqKqZKvdp",
            "solana:other",
            "tron:0x2b6653dc",
        ]
        .iter()
        .map(|c| ChainId::parse(c).unwrap())
        .collect();
        assert_eq!(
            relevant(&sel[&Namespace::AccountActivity], chains.iter()),
            [
                "eip155:1",
                "eip155:8453",
                "solana:5eykt4UsFv8P8NJdTREpY1vzqKqZKvdp"
            ]
        );
        assert!(!sel.contains_key(&Namespace::MarketData));
    }
}
