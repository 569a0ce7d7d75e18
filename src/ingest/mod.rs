//! Ingest: publications coming in (the HTTP publish API, the JetStream consumer), validated,
//! made durable, counted as chain signs of life once committed, and handed to the broker for
//! fan-out on every node.
//!
//! Account activity is appended to the history first; the broker hears of it from the
//! history's commit listener (the broker's outlet), in commit order, so a push is never sent
//! for a publication that is not committed. Market data is ephemeral and goes to the broker
//! directly.
pub mod jetstream;
pub mod validate;

use std::sync::Arc;
use std::time::Instant;

use serde::Serialize;

use crate::history::{HistoryError, NewPublication};
use crate::hub::{message_id, Publication};
use crate::metrics;
use crate::node::Node;
use crate::protocol::caip::ChainId;
use crate::protocol::Position;
use crate::protocol::{Channel, Namespace};
pub use validate::{validate, ItemError, Rejection, Validated};

/// What happened to one accepted publication. Members are declared in name order: the
/// order of the reply's members on the wire.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Outcome {
    /// The canonical channel it was published on.
    pub channel: String,
    /// True when the idempotency key was already stored: not delivered again.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub duplicate: bool,
    /// The message id of account activity (the same on every delivery and replay).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message_id: Option<String>,
    /// The stream position of account activity.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub position: Option<Position>,
}

/// Publishing failed after validation; nothing was delivered.
#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    /// The history store or the cluster broker cannot take it now; retry later.
    #[error("publishing is unavailable: {0}")]
    Unavailable(String),
}

impl From<HistoryError> for PublishError {
    fn from(e: HistoryError) -> Self {
        PublishError::Unavailable(e.to_string())
    }
}

/// Publishes validated publications; outcomes are in input order.
pub async fn publish(
    node: &Arc<Node>,
    mut items: Vec<Validated>,
) -> Result<Vec<Outcome>, PublishError> {
    // The store takes the payload and key of account activity; the items keep the channel
    // for the outcomes, and market data keeps its payload for the broker.
    let durable: Vec<NewPublication> = items
        .iter_mut()
        .filter(|i| i.namespace() == Namespace::AccountActivity)
        .map(|i| NewPublication {
            stream: i.channel.hub_key(),
            channel: i.canonical.clone(),
            payload: std::mem::take(&mut i.payload),
            idempotency_key: i.id.take(),
        })
        .collect();
    if !node.broker.is_up() {
        return Err(PublishError::Unavailable(
            "the cluster broker (NATS) is unreachable".into(),
        ));
    }
    let committed = match node.history.append(durable).await {
        Ok(c) => c,
        Err(e) => {
            // The store's failure turns the chains down now, not at the next check.
            node.chains.refresh_store();
            return Err(e.into());
        }
    };
    // A committed publication, not a replay of one already stored, is a sign of life of
    // its chain: one that was refused proves nothing a wallet could receive.
    let mut results = committed.iter();
    let mut alive: Vec<&ChainId> = Vec::new();
    for item in &items {
        if let Channel::AccountActivity(a) = &item.channel {
            if results.next().is_some_and(|c| !c.duplicate) && !alive.contains(&&a.account.chain) {
                alive.push(&a.account.chain);
            }
        }
    }
    for chain in alive {
        // Over chains.max_chains the chain is not tracked (and counted); the publication
        // itself is delivered all the same.
        let _ = node.chains.alive(chain);
    }
    let mut committed = committed.into_iter();
    let accepted_at = Instant::now();
    let mut outcomes = Vec::with_capacity(items.len());
    for item in items {
        metrics::get().published(item.namespace(), 1);
        match item.namespace() {
            Namespace::AccountActivity => {
                let c = committed.next().ok_or_else(|| {
                    PublishError::Unavailable(
                        "history answered fewer publications than appended".into(),
                    )
                })?;
                let position = c.position;
                outcomes.push(Outcome {
                    channel: item.canonical,
                    message_id: Some(message_id(&position)),
                    position: Some(position),
                    duplicate: c.duplicate,
                });
            }
            Namespace::MarketData => {
                let publication = Arc::new(Publication::new(
                    Namespace::MarketData,
                    item.channel.hub_key(),
                    item.channel.chain().reference().to_owned(),
                    item.canonical.as_str().into(),
                    &item.payload,
                    None,
                    accepted_at,
                ));
                node.broker.publish(publication, &item.payload);
                outcomes.push(Outcome {
                    channel: item.canonical,
                    message_id: None,
                    position: None,
                    duplicate: false,
                });
            }
        }
    }
    Ok(outcomes)
}
