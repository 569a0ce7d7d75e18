//! activity-gateway: a MetaMask-compatible WebSocket gateway for real-time account activity.
//!
//! Wallets connect over WebSocket with a JWT, subscribe to CAIP-10 account-activity and
//! market-data channels, and receive pushes; indexers publish over HTTP; per-chain `up`/`down`
//! system notifications tell wallets when to fall back to polling.
//!
//! # Layout
//! - [`protocol`]: wire messages, the channel grammar (CAIP-2/10/19), error codes. No I/O.
//! - [`auth`]: client token verification (HS256/RS256/ES256, PEM, JWKS).
//! - [`broker`]: cross-node transport (in-process, or NATS with interest routing).
//! - [`hub`]: this node's subscriptions and the fan-out of publications (serialised once).
//! - [`session`]: one client connection: reader loop, writer task with a byte-bounded
//!   queue, limits, subscriptions, acknowledged delivery.
//! - [`client`]: a Rust client speaking the ack extension (tests, benchmarks, `tail`).
//! - [`chains`]: the one owner of chain health (signs of life, operator overrides, the store's
//!   and the broker's health, state kept across restarts and shared between nodes) and the
//!   system notifications derived from it.
//! - [`ingest`]: validation of publications (HTTP API and the JetStream consumer), the
//!   durable publish path and the history commit listener.
//! - [`admission`]: who may open a WebSocket session (connection caps, allowed origins, the
//!   client address behind trusted proxies).
//! - [`http`]: the axum router (WebSocket upgrade, publish, chains,
//!   health, metrics, the operator status page).
//! - [`server`]: the accept loop with handshake and idle timeouts; [`tls`]: `wss://` and
//!   certificate reloading.
//! - [`node`]: the state one process shares; [`app`]: start and drain.
//! - [`config`], [`metrics`], [`shutdown`], [`dev`] (the zero-configuration mode).
pub mod admission;
pub mod app;
pub mod auth;
pub mod broker;
pub mod chains;
pub mod client;
pub mod config;
pub mod dev;
pub mod history;
pub mod http;
pub mod hub;
pub mod ingest;
pub mod metrics;
pub mod node;
pub mod protocol;
pub mod server;
pub mod session;
pub mod shutdown;
pub mod tls;
