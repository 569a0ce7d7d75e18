//! [`Verifier`]: turns a client token into [`Claims`], or into the [`AuthError`] saying why not.
//!
//! The order of checks matters for safety:
//! 1. the header is read unverified, only to refuse `alg: none` and algorithms no configured
//!    key is for;
//! 2. the key is chosen by the token's `alg` *and* the key's type, so an HS256 token can
//!    never be checked against an RSA/EC public key used as an HMAC secret (the classic
//!    algorithm-confusion forgery);
//! 3. the signature is checked before any claim is looked at;
//! 4. then `exp`, `nbf`, `sub` and the configured `iss` / `aud`;
//! 5. last the token's claimed life (`exp - iat`, `exp - now`) against
//!    `auth.max_token_lifetime`.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use jsonwebtoken::{DecodingKey, Validation};
use serde_json::{Map, Value};
use tracing::{debug, warn};

use super::claims::{check_lifetime, claims, unix_now, Claims};
use super::error::{record_failure, AuthError, AuthSetupError};
use super::jwks::Jwks;
use super::keys::{check_jwks_url, parse_pem, validation};
use super::token::{self, Alg};
use crate::config::{non_empty, AuthConfig};

/// Timeout of one JWKS request, connection included. It bounds how long the single-flight
/// gate can be held, and so how long clients with an unknown `kid` can wait.
const JWKS_TIMEOUT: Duration = Duration::from_secs(5);
/// Largest accepted leeway. More than this is a misconfiguration that would quietly keep
/// expired tokens alive.
const MAX_LEEWAY: Duration = Duration::from_secs(10 * 60);
/// HS256 secrets shorter than this are brute-forceable; RFC 7518 §3.2 asks for 256 bits.
const MIN_HS256_SECRET_LEN: usize = 32;

// === Verifier ===

/// Verifies client tokens against the configured keys.
///
/// Cheap to clone: all clones share one key set and one JWKS cache.
#[derive(Clone)]
pub struct Verifier {
    inner: Arc<Inner>,
}

struct Inner {
    /// HS256 secret, if configured.
    hs256: Option<DecodingKey>,
    /// Static RSA public key, if configured.
    rs256: Option<DecodingKey>,
    /// Static P-256 public key, if configured.
    es256: Option<DecodingKey>,
    /// JWKS cache, if a URL is configured. Consulted only for tokens that carry a `kid`.
    jwks: Option<Jwks>,
    /// Claim checks, one per algorithm because `Validation` pins the algorithm list.
    hs256_validation: Validation,
    rs256_validation: Validation,
    es256_validation: Validation,
    /// Longest `exp - iat` and `exp - now` accepted, in seconds.
    max_lifetime_secs: u64,
}

impl Verifier {
    /// Builds a verifier from the `[auth]` section.
    ///
    /// PEM keys are parsed here, so a bad key stops startup with an error naming the
    /// setting. The JWKS is not fetched yet: the first token that needs it triggers the
    /// fetch, so an issuer outage does not stop the gateway from starting.
    pub fn new(cfg: &AuthConfig) -> Result<Verifier, AuthSetupError> {
        if !cfg.has_any_key() {
            return Err(AuthSetupError::NoKeys);
        }
        if cfg.leeway > MAX_LEEWAY {
            return Err(AuthSetupError::LeewayTooLarge);
        }
        if cfg.max_token_lifetime.is_zero() {
            return Err(AuthSetupError::ZeroTokenLifetime);
        }
        let hs256 = non_empty(&cfg.hs256_secret).map(|secret| {
            if secret.len() < MIN_HS256_SECRET_LEN {
                warn!(
                    min_len = MIN_HS256_SECRET_LEN,
                    "The HS256 secret is short enough to brute-force; use at least 32 random bytes."
                );
            }
            DecodingKey::from_secret(secret.as_bytes())
        });
        let rs256 = non_empty(&cfg.rsa_public_key_pem)
            .map(|pem| parse_pem(pem, "auth.rsa_public_key_pem", Alg::Rs256))
            .transpose()?;
        let es256 = non_empty(&cfg.ec_public_key_pem)
            .map(|pem| parse_pem(pem, "auth.ec_public_key_pem", Alg::Es256))
            .transpose()?;
        let jwks = non_empty(&cfg.jwks_url)
            .map(|url| {
                check_jwks_url(url)?;
                if non_empty(&cfg.audience).is_none() {
                    return Err(AuthSetupError::JwksWithoutAudience);
                }
                // A redirect could lead the fetch to plain http or to another host's keys.
                let client = reqwest::Client::builder()
                    .timeout(JWKS_TIMEOUT)
                    .redirect(reqwest::redirect::Policy::none())
                    .build()
                    .map_err(AuthSetupError::HttpClient)?;
                Ok(Jwks::new(
                    url.to_owned(),
                    client,
                    cfg.jwks_cache_ttl,
                    cfg.jwks_min_refresh_interval,
                ))
            })
            .transpose()?;
        Ok(Verifier {
            inner: Arc::new(Inner {
                hs256,
                rs256,
                es256,
                jwks,
                hs256_validation: validation(Alg::Hs256, cfg),
                rs256_validation: validation(Alg::Rs256, cfg),
                es256_validation: validation(Alg::Es256, cfg),
                max_lifetime_secs: cfg.max_token_lifetime.as_secs().max(1),
            }),
        })
    }

    /// Verifies `token` (the bare JWT, without a `Bearer ` prefix).
    ///
    /// Every failure is counted once in `gateway_auth_failures_total` before it is returned
    /// (see [`record_failure`]). The token itself is never logged.
    pub async fn verify(&self, token: &str) -> Result<Claims, AuthError> {
        let result = self.inner.verify(token).await;
        if let Err(err) = &result {
            debug!(reason = err.reason(), "Token refused.");
            record_failure(err);
        }
        result
    }
}

impl fmt::Debug for Verifier {
    // By hand: the derived form would print the HS256 secret.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Verifier")
            .field("hs256", &self.inner.hs256.is_some())
            .field("rs256", &self.inner.rs256.is_some())
            .field("es256", &self.inner.es256.is_some())
            .field("jwks", &self.inner.jwks.is_some())
            .finish()
    }
}

// === Inner ===

impl Inner {
    async fn verify(&self, token: &str) -> Result<Claims, AuthError> {
        let header = token::peek(token)?;
        // Holds a JWKS key alive while `key` borrows it.
        let jwks_key;
        let key = match (header.alg, &self.jwks, header.kid.as_deref()) {
            (Alg::Hs256, _, _) => self.hs256.as_ref().ok_or(AuthError::AlgNotAllowed)?,
            (alg, Some(jwks), Some(kid)) => {
                jwks_key = jwks.key(kid).await?;
                // The kid names an RSA key but the token says ES256, or the reverse.
                if jwks_key.alg != alg {
                    return Err(AuthError::AlgNotAllowed);
                }
                &jwks_key.key
            }
            (alg, jwks, _) => match self.static_key(alg) {
                Some(key) => key,
                // Only the JWKS could verify this algorithm, and it needs a kid.
                None if jwks.is_some() => return Err(AuthError::UnknownKid),
                None => return Err(AuthError::AlgNotAllowed),
            },
        };
        let data =
            jsonwebtoken::decode::<Map<String, Value>>(token, key, self.validation(header.alg))
                .map_err(|err| AuthError::from_jwt(&err))?;
        let claims = claims(&data.claims)?;
        check_lifetime(&data.claims, claims.exp, unix_now(), self.max_lifetime_secs)?;
        Ok(claims)
    }

    fn static_key(&self, alg: Alg) -> Option<&DecodingKey> {
        match alg {
            Alg::Hs256 => self.hs256.as_ref(),
            Alg::Rs256 => self.rs256.as_ref(),
            Alg::Es256 => self.es256.as_ref(),
        }
    }

    fn validation(&self, alg: Alg) -> &Validation {
        match alg {
            Alg::Hs256 => &self.hs256_validation,
            Alg::Rs256 => &self.rs256_validation,
            Alg::Es256 => &self.es256_validation,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hs_config() -> AuthConfig {
        AuthConfig {
            hs256_secret: Some("0123456789abcdef0123456789abcdef".into()),
            ..AuthConfig::default()
        }
    }

    #[test]
    fn new_needs_a_key_and_a_sane_leeway() {
        assert!(matches!(
            Verifier::new(&AuthConfig::default()),
            Err(AuthSetupError::NoKeys)
        ));
        let cfg = AuthConfig {
            leeway: Duration::from_secs(3600),
            ..hs_config()
        };
        assert!(matches!(
            Verifier::new(&cfg),
            Err(AuthSetupError::LeewayTooLarge)
        ));
    }

    #[test]
    fn new_names_the_bad_pem() {
        let cfg = AuthConfig {
            ec_public_key_pem: Some(
                "-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n".into(),
            ),
            ..hs_config()
        };
        let err = Verifier::new(&cfg).unwrap_err();
        assert!(
            matches!(
                err,
                AuthSetupError::InvalidKey {
                    setting: "auth.ec_public_key_pem",
                    ..
                }
            ),
            "{err:?}"
        );
        assert!(err.to_string().contains("auth.ec_public_key_pem"));
    }

    #[test]
    fn new_refuses_bad_jwks_urls() {
        let jwks = |url: &str| AuthConfig {
            jwks_url: Some(url.into()),
            audience: Some("gateway".into()),
            ..AuthConfig::default()
        };
        for url in [
            "not a url",
            "ftp://issuer.example/jwks",
            "file:///etc/jwks.json",
        ] {
            assert!(
                matches!(
                    Verifier::new(&jwks(url)),
                    Err(AuthSetupError::InvalidJwksUrl)
                ),
                "{url}"
            );
        }
        for url in ["http://issuer.example/jwks", "http://10.0.0.1/jwks"] {
            assert!(
                matches!(
                    Verifier::new(&jwks(url)),
                    Err(AuthSetupError::InsecureJwksUrl)
                ),
                "{url}"
            );
        }
        for url in [
            "https://issuer.example/jwks",
            "http://127.0.0.1:9000/jwks",
            "http://[::1]/jwks",
            "http://localhost/jwks",
        ] {
            assert!(Verifier::new(&jwks(url)).is_ok(), "{url}");
        }
        let no_audience = AuthConfig {
            audience: None,
            ..jwks("https://issuer.example/jwks")
        };
        assert!(matches!(
            Verifier::new(&no_audience),
            Err(AuthSetupError::JwksWithoutAudience)
        ));
    }

    #[test]
    fn verifier_and_its_future_can_cross_threads() {
        // axum handlers need both; a lock guard held across `.await` would break the second.
        fn is_send_sync<T: Send + Sync>(_: &T) {}
        fn is_send<T: Send>(_: &T) {}
        let verifier = Verifier::new(&hs_config()).unwrap();
        is_send_sync(&verifier);
        is_send(&verifier.verify("token"));
    }

    #[test]
    fn debug_hides_the_secret() {
        let verifier = Verifier::new(&hs_config()).unwrap();
        assert!(!format!("{verifier:?}").contains("0123456789"));
    }
}
