//! The JWKS cache: fetches the issuer's key set over HTTP, keeps it for a TTL, and refetches
//! when a token names a `kid` it does not know (that is how key rotation is picked up).
//!
//! Two locks with two jobs. The key map sits in a `parking_lot::RwLock` that is only held
//! for a map lookup or swap, never across `.await`, so a cache hit costs one uncontended read
//! lock. Fetches are serialised by a `tokio::sync::Mutex` that is held across the HTTP call:
//! it is the single-flight gate, so a burst of tokens arriving during a fetch waits for that
//! one fetch instead of starting their own.
//!
//! Every fetch attempt, successful or not, is spaced at least `min_refresh_interval` from
//! the previous one. That bounds what tokens with random `kid`s (or a down JWKS server) can
//! cost the JWKS server: one request per interval, whatever the token rate.
//!
//! A successful fetch *replaces* the key set, so a key the issuer removed stops verifying
//! at once. A failed fetch keeps the previous set (stale keys beat refusing every client
//! while the JWKS server is down).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk, KeyAlgorithm, PublicKeyUse};
use jsonwebtoken::DecodingKey;
use parking_lot::RwLock;
use serde::Deserialize;
use tracing::{debug, warn};

use super::error::AuthError;
use super::token::Alg;

/// Largest JWKS body read. Real sets are a few KiB; the cap bounds memory if the URL
/// points somewhere unexpected.
const MAX_JWKS_BYTES: usize = 1024 * 1024;

// === Jwks ===

/// Cache of the keys published at one JWKS URL.
pub(crate) struct Jwks {
    /// Where the set is fetched from. Logged on failure; it is configuration, not a secret.
    url: String,
    /// Shared client (connection pool), built with a request timeout so a hung JWKS server
    /// cannot hold the single-flight gate for long.
    client: reqwest::Client,
    /// A successful fetch is trusted for this long.
    ttl: Duration,
    /// Minimum spacing of fetch attempts.
    min_refresh_interval: Duration,
    /// The keys and fetch bookkeeping. Held only for lookups and swaps.
    state: RwLock<State>,
    /// Single-flight gate around fetches; see the module doc.
    refresh: tokio::sync::Mutex<()>,
}

/// One usable key from the set.
pub(crate) struct JwkKey {
    /// The only algorithm this key may verify, fixed by its key type (RSA or P-256).
    pub(crate) alg: Alg,
    pub(crate) key: DecodingKey,
}

#[derive(Default)]
struct State {
    /// Keys by `kid`. `Arc` so a lookup can hand a key out and drop the lock at once.
    keys: HashMap<String, Arc<JwkKey>>,
    /// When the current `keys` were fetched; `None` until the first success.
    fetched_at: Option<Instant>,
    /// When the last fetch was attempted, for the rate limit.
    last_attempt: Option<Instant>,
    /// Whether the last attempt succeeded: tells "unknown kid" from "JWKS unavailable".
    last_ok: bool,
    /// Bumped when an attempt completes. A task that waited on the gate compares it with
    /// what it saw before waiting, and skips its own fetch if someone else fetched meanwhile.
    attempts: u64,
}

/// Result of a cache lookup.
enum Lookup {
    Fresh(Arc<JwkKey>),
    Stale(Arc<JwkKey>),
    Miss,
}

/// Why a fetch failed; only ever logged.
#[derive(Debug, thiserror::Error)]
enum FetchError {
    #[error("request failed: {0}")]
    Http(#[from] reqwest::Error),
    #[error("server answered {0}")]
    Status(reqwest::StatusCode),
    #[error("body is larger than {MAX_JWKS_BYTES} bytes")]
    TooLarge,
    #[error("body is not a JWKS: {0}")]
    Json(#[from] serde_json::Error),
}

impl Jwks {
    pub(crate) fn new(
        url: String,
        client: reqwest::Client,
        ttl: Duration,
        min_refresh_interval: Duration,
    ) -> Self {
        Self {
            url,
            client,
            ttl,
            min_refresh_interval,
            state: RwLock::new(State::default()),
            refresh: tokio::sync::Mutex::new(()),
        }
    }

    /// The key named `kid`, fetching the set if it is missing or stale (rate limits allowing).
    pub(crate) async fn key(&self, kid: &str) -> Result<Arc<JwkKey>, AuthError> {
        let seen = match self.lookup(kid) {
            (Lookup::Fresh(key), _) => return Ok(key),
            (Lookup::Stale(key), seen) => match self.refresh.try_lock() {
                Ok(_gate) => {
                    self.refresh_gated(seen).await;
                    return self.after_refresh(kid);
                }
                // Someone is fetching already; the stale key is good enough meanwhile.
                Err(_) => return Ok(key),
            },
            (Lookup::Miss, seen) => seen,
        };
        let _gate = self.refresh.lock().await;
        self.refresh_gated(seen).await;
        self.after_refresh(kid)
    }

    /// Looks `kid` up; also returns the attempt counter it saw, for single-flight.
    fn lookup(&self, kid: &str) -> (Lookup, u64) {
        let state = self.state.read();
        let found = match state.keys.get(kid) {
            None => Lookup::Miss,
            Some(key) if self.is_fresh(&state) => Lookup::Fresh(Arc::clone(key)),
            Some(key) => Lookup::Stale(Arc::clone(key)),
        };
        (found, state.attempts)
    }

    fn is_fresh(&self, state: &State) -> bool {
        state.fetched_at.is_some_and(|at| at.elapsed() < self.ttl)
    }

    /// The answer once a fetch was done or deliberately skipped: any key we hold, stale or
    /// not, else why we have none.
    fn after_refresh(&self, kid: &str) -> Result<Arc<JwkKey>, AuthError> {
        let state = self.state.read();
        match state.keys.get(kid) {
            Some(key) => Ok(Arc::clone(key)),
            None if state.last_ok => Err(AuthError::UnknownKid),
            None => Err(AuthError::JwksUnavailable),
        }
    }

    /// Fetches the set unless someone did since `seen` or the rate limit forbids it.
    /// Callers hold the `refresh` gate.
    async fn refresh_gated(&self, seen: u64) {
        {
            let mut state = self.state.write();
            if state.attempts != seen {
                return;
            }
            if state
                .last_attempt
                .is_some_and(|at| at.elapsed() < self.min_refresh_interval)
            {
                return;
            }
            state.last_attempt = Some(Instant::now());
        }
        let fetched = self.fetch().await;
        let mut state = self.state.write();
        // Bumped only now, together with the new keys: a task that looked the cache up
        // while this fetch was in flight saw the old count and the old keys, so it will
        // skip its own fetch and read ours.
        state.attempts += 1;
        match fetched {
            Ok(keys) => {
                debug!(url = %self.url, keys = keys.len(), "JWKS fetched.");
                if keys.is_empty() {
                    warn!(url = %self.url, "JWKS holds no usable RS256/ES256 key; every JWKS token will be refused.");
                }
                state.keys = keys;
                state.fetched_at = Some(Instant::now());
                state.last_ok = true;
            }
            Err(error) => {
                warn!(url = %self.url, %error, cached_keys = state.keys.len(), "JWKS fetch failed; keeping cached keys.");
                state.last_ok = false;
            }
        }
    }

    async fn fetch(&self) -> Result<HashMap<String, Arc<JwkKey>>, FetchError> {
        let mut response = self.client.get(&self.url).send().await?;
        if !response.status().is_success() {
            return Err(FetchError::Status(response.status()));
        }
        // Read chunk by chunk so an endless body is cut off at the cap, not buffered.
        let mut body = Vec::new();
        while let Some(chunk) = response.chunk().await? {
            if body.len() + chunk.len() > MAX_JWKS_BYTES {
                return Err(FetchError::TooLarge);
            }
            body.extend_from_slice(&chunk);
        }
        Ok(parse_jwks(&body)?)
    }
}

/// The JWKS document, with keys left raw so that one key we cannot use (an Ed25519 key, a
/// future key type) does not make the whole set unreadable.
#[derive(Deserialize)]
struct RawJwks {
    keys: Vec<serde_json::Value>,
}

/// Parses a JWKS body into the keys we can use, skipping the others.
pub(crate) fn parse_jwks(body: &[u8]) -> Result<HashMap<String, Arc<JwkKey>>, serde_json::Error> {
    let raw: RawJwks = serde_json::from_slice(body)?;
    let mut keys = HashMap::new();
    for value in raw.keys {
        let Ok(jwk) = serde_json::from_value::<Jwk>(value) else {
            debug!("Skipping an unparsable JWKS entry.");
            continue;
        };
        let Some(kid) = jwk.common.key_id.clone() else {
            debug!("Skipping a JWKS key without kid.");
            continue;
        };
        match usable_key(&jwk) {
            // First one wins: a duplicate kid is the issuer's mistake, and a stable choice
            // beats one that depends on ordering we do not control.
            Some(key) => {
                keys.entry(kid).or_insert_with(|| Arc::new(key));
            }
            None => debug!(%kid, "Skipping a JWKS key that cannot verify RS256/ES256."),
        }
    }
    Ok(keys)
}

/// The key as an RS256 or ES256 verifier, or `None` if it is anything else.
///
/// Symmetric (`oct`) keys are never taken from a JWKS: a published HMAC secret would let
/// anyone sign tokens.
fn usable_key(jwk: &Jwk) -> Option<JwkKey> {
    if matches!(jwk.common.public_key_use, Some(PublicKeyUse::Encryption)) {
        return None;
    }
    let declared = jwk.common.key_algorithm;
    let (alg, key) = match &jwk.algorithm {
        AlgorithmParameters::RSA(rsa) => {
            if declared.is_some_and(|a| a != KeyAlgorithm::RS256) {
                return None;
            }
            (
                Alg::Rs256,
                DecodingKey::from_rsa_components(&rsa.n, &rsa.e).ok()?,
            )
        }
        AlgorithmParameters::EllipticCurve(ec) => {
            if ec.curve != EllipticCurve::P256 || declared.is_some_and(|a| a != KeyAlgorithm::ES256)
            {
                return None;
            }
            (
                Alg::Es256,
                DecodingKey::from_ec_components(&ec.x, &ec.y).ok()?,
            )
        }
        _ => return None,
    };
    Some(JwkKey { alg, key })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_rsa_and_p256_skips_the_rest() {
        let body = br#"{"keys":[
            {"kty":"RSA","kid":"r","n":"sXch","e":"AQAB","alg":"RS256","use":"sig"},
            {"kty":"RSA","kid":"r512","n":"sXch","e":"AQAB","alg":"RS512"},
            {"kty":"RSA","n":"sXch","e":"AQAB"},
            {"kty":"RSA","kid":"enc","n":"sXch","e":"AQAB","use":"enc"},
            {"kty":"EC","kid":"e","crv":"P-256","x":"AA","y":"AA"},
            {"kty":"EC","kid":"e384","crv":"P-384","x":"AA","y":"AA"},
            {"kty":"oct","kid":"h","k":"c2VjcmV0"},
            {"kty":"OKP","kid":"ed","crv":"Ed25519","x":"AA"},
            {"kty":"weird","kid":"w"}
        ]}"#;
        let keys = parse_jwks(body).unwrap();
        let mut kids: Vec<_> = keys.keys().cloned().collect();
        kids.sort();
        assert_eq!(kids, ["e", "r"]);
        assert_eq!(keys["r"].alg, Alg::Rs256);
        assert_eq!(keys["e"].alg, Alg::Es256);
    }

    #[test]
    fn not_a_jwks_is_an_error() {
        assert!(parse_jwks(b"<html>").is_err());
        assert!(parse_jwks(br#"{"kid":"x"}"#).is_err());
        assert!(parse_jwks(br#"{"keys":[]}"#).unwrap().is_empty());
    }
}
