//! The hub: this node's subscribers and the fan-out of publications to them. It knows nothing
//! of connections beyond the [`Recipient`] each subscriber is delivered through; queues,
//! resume and acknowledgement belong to the session.
//!
//! A publication reaches every local subscriber whose hub key matches (the account stream,
//! or the market-data key) and, for concrete-chain account subscriptions, whose chain matches:
//! one delivery per matching subscriber, carrying that subscriber's subscription id.
mod publication;
mod subscribers;

#[cfg(test)]
pub(crate) use publication::stored_at;
pub use publication::{message_id, Durable, Publication, MAX_FRAME_OVERHEAD};
pub use subscribers::{ConnId, Hub, Recipient, Subscriber};
