//! Ingest: publications coming in (the HTTP publish API; later stream consumers), validated,
//! recorded as chain signs of life, and handed to the hub for fan-out.
pub mod validate;

use std::sync::Arc;
use std::time::Instant;

use crate::hub::Publication;
use crate::metrics;
use crate::node::Node;
use crate::protocol::Channel;
pub use validate::{validate, ItemError, Rejection, Validated};

/// What happened to one accepted publication.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Outcome {
    pub channel: String,
}

/// Publishing failed after validation (e.g. the store is down); nothing was delivered.
#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    #[error("the history store is unavailable: {0}")]
    Unavailable(String),
}

/// Publishes validated publications in order.
pub async fn publish(node: &Arc<Node>, items: Vec<Validated>) -> Result<Vec<Outcome>, PublishError> {
    let accepted_at = Instant::now();
    let mut outcomes = Vec::with_capacity(items.len());
    for item in items {
        if let Channel::AccountActivity(a) = &item.channel {
            node.chains.sign_of_life(&a.account.chain);
        }
        let publication = Arc::new(publication_of(&item, accepted_at));
        metrics::get().published(item.namespace(), 1);
        node.hub.publish(&publication);
        outcomes.push(Outcome { channel: item.canonical });
    }
    Ok(outcomes)
}

fn publication_of(item: &Validated, accepted_at: Instant) -> Publication {
    let chain_reference = item.channel.chain().reference().to_owned();
    Publication::new(
        item.namespace(),
        item.channel.hub_key(),
        chain_reference,
        item.canonical.as_str().into(),
        &item.payload,
        None,
        accepted_at,
    )
}
