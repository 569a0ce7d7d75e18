//! Chain health and the polling-fallback signal.
//!
//! The registry knows every chain (CAIP-2) from configuration or from its first heartbeat or
//! publication. A chain in `auto` mode is up while a heartbeat or a publication arrived within
//! its `stale_after`; an operator can force it `up` or `down`. Every transition is broadcast
//! as a [`ChainEvent`]; each session turns it into `system-notification`s for the chains that
//! concern it. Status is also the `gateway_chain_status` gauge.
mod registry;

pub use registry::{ChainEvent, ChainView, Chains, ChainsConfig, Mode, UnknownChain};
