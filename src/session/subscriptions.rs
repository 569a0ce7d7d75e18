//! One connection's subscriptions: ids, the channels each holds, the distinct-channel count
//! that the per-connection limit applies to, and which chains concern the connection.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use crate::protocol::caip::ChainId;
use crate::protocol::{Channel, Namespace};

/// One channel held by a subscription.
#[derive(Debug, Clone)]
pub struct Held {
    /// The channel string exactly as the client sent it.
    pub sent: Arc<str>,
    pub channel: Channel,
    pub key: String,
    /// Normalised identity: the same channel written differently counts once.
    pub identity: String,
}

/// The subscription state of one connection.
#[derive(Debug, Default)]
pub struct Subscriptions {
    by_id: HashMap<Arc<str>, Vec<Held>>,
    identities: HashMap<String, usize>,
}

impl Held {
    pub fn new(sent: &str, channel: Channel) -> Self {
        let identity = match &channel {
            Channel::AccountActivity(a) => a.canonical(),
            Channel::MarketData(m) => m.key.clone(),
        };
        Self {
            sent: sent.into(),
            key: channel.hub_key(),
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

impl Subscriptions {
    /// Distinct channels currently held.
    pub fn channel_count(&self) -> usize {
        self.identities.len()
    }

    /// How many of `identities` are not held yet.
    pub fn new_identities<'a>(&self, identities: impl Iterator<Item = &'a str>) -> usize {
        identities
            .filter(|i| !self.identities.contains_key(*i))
            .count()
    }

    pub fn insert(&mut self, id: Arc<str>, held: Vec<Held>) {
        for h in &held {
            *self.identities.entry(h.identity.clone()).or_default() += 1;
        }
        self.by_id.insert(id, held);
    }

    /// Removes the channels of `id` whose sent text is in `channels` (all when empty).
    /// Returns what was removed.
    pub fn remove(&mut self, id: &str, channels: &[String]) -> Vec<Held> {
        let Some(list) = self.by_id.get_mut(id) else {
            return Vec::new();
        };
        let removed: Vec<Held> = if channels.is_empty() {
            std::mem::take(list)
        } else {
            let (gone, kept) = std::mem::take(list)
                .into_iter()
                .partition(|h| channels.iter().any(|c| **c == *h.sent));
            *list = kept;
            gone
        };
        if list.is_empty() {
            self.by_id.remove(id);
        }
        for h in &removed {
            if let Some(n) = self.identities.get_mut(&h.identity) {
                *n -= 1;
                if *n == 0 {
                    self.identities.remove(&h.identity);
                }
            }
        }
        removed
    }

    /// True when subscription `id` still holds a channel.
    pub fn holds(&self, id: &str) -> bool {
        self.by_id.contains_key(id)
    }

    /// True when some subscription still holds this channel identity.
    pub fn holds_identity(&self, identity: &str) -> bool {
        self.identities.contains_key(identity)
    }

    /// Every (subscription id, held channel); used to clean up when the connection ends.
    pub fn drain(&mut self) -> Vec<(Arc<str>, Held)> {
        self.identities.clear();
        self.by_id
            .drain()
            .flat_map(|(id, list)| list.into_iter().map(move |h| (id.clone(), h)))
            .collect()
    }

    /// The chain selectors per namespace: wildcard chains match their whole namespace.
    pub fn selectors(&self) -> HashMap<Namespace, BTreeSet<ChainId>> {
        let mut out: HashMap<Namespace, BTreeSet<ChainId>> = HashMap::new();
        for h in self.by_id.values().flatten() {
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
    fn duplicate_channels_count_once_and_removal_is_by_sent_text() {
        let mut subs = Subscriptions::default();
        subs.insert("s1".into(), vec![held(A)]);
        subs.insert(
            "s2".into(),
            vec![held(
                &A.to_uppercase()
                    .replace("ACCOUNT-ACTIVITY.V1.EIP155", "account-activity.v1.eip155")
                    .replace("0XD", "0xD"),
            )],
        );
        assert_eq!(subs.channel_count(), 1);
        assert!(subs.holds("s1") && subs.holds("s2"));
        assert_eq!(subs.remove("s1", &[]).len(), 1);
        assert_eq!(subs.channel_count(), 1);
        assert!(subs.remove("unknown", &[]).is_empty());
        assert_eq!(subs.drain().len(), 1);
        assert_eq!(subs.channel_count(), 0);
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
