//! activity-gateway: a MetaMask-compatible WebSocket gateway for real-time account activity.
//!
//! Wallets connect over WebSocket with a JWT, subscribe to CAIP-10 account-activity and
//! market-data channels, and receive pushes; indexers publish over HTTP; per-chain `up`/`down`
//! system notifications tell wallets when to fall back to polling.
//!
//! # Module map
//!
//! From the edge inward: the edge serves and starts; the node owns the parts; the parts move
//! publications along the data path; the history keeps them, beside the leaves every other
//! module may use.
//!
//! ## At the edge
//! - [`app`]: starts a gateway (history, broker, chains, the node, then the listeners) and
//!   drains it on shutdown.
//! - [`server`]: the accept loop with handshake and idle timeouts; [`tls`]: `wss://` and
//!   certificate reloading.
//! - [`http`]: the axum router: WebSocket upgrade, publish, chains, health, metrics, the
//!   operator status page. Handlers reach everything through the [`node`].
//!
//! ## Ownership
//! - [`node`]: owns the parts one process shares (settings, hub, history, broker, chains,
//!   token verifier, admission, shutdown) behind one `Arc`.
//! - [`admission`]: who may open a WebSocket session: the node-wide, per-address and
//!   per-subject caps, the allowed origins, and the slot each open session holds.
//!
//! ## The data path
//! An account-activity publication travels `ingest -> history -> broker -> hub -> session`,
//! and no push leaves for a publication that is not committed:
//! - [`ingest`]: validates publications (the HTTP publish API, the JetStream consumer) and
//!   appends account activity to the history. Market data is ephemeral and goes to the
//!   broker directly.
//! - [`broker`]: cross-node transport. Its sending half is the history's commit listener, so
//!   each committed publication goes out in commit order; its receiving half (in-process, or
//!   NATS with interest routing, re-ordering each stream by offset and filling gaps from the
//!   shared history) hands publications and chain events to the [`broker::Handler`] the
//!   [`node`] registers, which passes them to the hub and the chains.
//! - [`hub`]: this node's subscriptions and the fan-out of publications (serialised once).
//! - [`session`]: one client connection: reader loop, writer task with a byte-bounded queue,
//!   limits, subscriptions, acknowledged delivery and replay from the history on resume.
//! - [`chains`]: the one owner of chain health (signs of life, operator overrides, the store's
//!   and the broker's health, state kept in the history store and shared through the broker)
//!   and the system notifications the sessions send from it.
//! - [`auth`]: client token verification (HS256/RS256/ES256, PEM, JWKS).
//!
//! ## The history
//! - [`history`]: the durable publication log (SQLite or PostgreSQL): group commit, offsets
//!   per stream and epoch, retention, resumes from a position, chain state. It depends on the
//!   leaves only: it tells whoever implements [`history::CommitListener`] (the broker's
//!   sending half) about each commit, and knows nothing of brokers, hubs or sessions.
//!
//! ## Leaves: nothing else of the crate
//! - [`protocol`]: wire messages, the channel grammar (CAIP-2/10/19), [`protocol::Position`]
//!   (the one position type), error codes. No I/O.
//! - [`config`]: the settings file, each section's struct, validation, URL redaction.
//! - [`metrics`]: metric names, help texts and the handles used on the hot path.
//! - [`shutdown`]: the drain signal every session waits on, and readiness.
//!
//! `scripts/module-deps.sh` lists these imports and fails on a cycle; the test command runs
//! it.
//!
//! ## Beside the gateway
//! - [`client`]: a Rust client speaking the ack extension (tests, benchmarks, `tail`).
//! - [`dev`]: the zero-configuration mode (dev keys, common chains, a ready token).
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
