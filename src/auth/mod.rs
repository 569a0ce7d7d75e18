//! Client token verification: decides whether a JWT presented by a wallet client is
//! genuine, current and meant for this gateway, and who it was issued to.
//!
//! # Layout
//! - [`AuthConfig`] (the `[auth]` section) lives in [`crate::config`].
//! - [`verifier`]: [`Verifier`], token in, [`Claims`] or [`AuthError`] out.
//! - `keys`: the `[auth]` settings turned into keys and claim checks.
//! - `claims`: [`Claims`] and the payload checks of our own (`sub`, token lifetime).
//! - `token`: the unverified first look at a token (shape, `alg`, `kid`).
//! - `jwks`: the JWKS cache, with rate-limited, single-flight refresh.
//! - [`error`]: [`AuthError`] (wire code, metric reason, client message),
//!   [`AuthSetupError`], and [`record_failure`], the one place refusals are counted.
//! - [`mint`]: [`mint_hs256`], for the `token` command and dev mode.
//!
//! # Keys and algorithms
//! The accepted algorithms follow from the configured keys: HS256 with `hs256_secret`,
//! RS256 with an RSA PEM or a JWKS, ES256 with a P-256 PEM or a JWKS. A token carrying a
//! `kid` is checked against the JWKS key of that `kid` when a JWKS is configured; otherwise
//! against the static key for its algorithm. Nothing else is accepted, `alg: none` least of all.
//!
//! # Metrics
//! `gateway_auth_failures_total{reason}` counts refused tokens, `reason` being
//! [`AuthError::reason`]. [`Verifier::verify`] counts its own failures; the HTTP layer calls
//! [`record_failure`] for [`AuthError::Missing`].

mod claims;
pub mod error;
mod jwks;
mod keys;
pub mod mint;
mod token;
pub mod verifier;

pub use crate::config::AuthConfig;
pub use claims::Claims;
pub use error::{record_failure, AuthError, AuthSetupError};
pub use mint::mint_hs256;
pub use verifier::Verifier;
