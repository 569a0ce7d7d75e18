//! activity-gateway (layout map written as modules land).
pub mod auth;
pub mod chains;
pub mod client;
pub mod config;
pub mod history;
pub mod http;
pub mod hub;
pub mod ingest;
pub mod protocol;
pub mod session;
