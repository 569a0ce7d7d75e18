//! Layered configuration: built-in defaults < optional TOML file < `GATEWAY__SECTION__KEY`.
pub mod serde_helpers;
