//! The `[auth]` configuration section: which keys verify client tokens and which claims
//! they must carry.
//!
//! This module only describes the settings and their defaults; turning them into usable
//! keys (and rejecting bad ones) is [`Verifier::new`](crate::auth::Verifier::new)'s job.

use std::fmt;
use std::time::Duration;

use serde::Deserialize;

/// How long a fetched JWKS is trusted before it is fetched again.
const DEFAULT_JWKS_CACHE_TTL: Duration = Duration::from_secs(10 * 60);
/// Shortest gap between two JWKS fetches, whatever triggered them.
const DEFAULT_JWKS_MIN_REFRESH_INTERVAL: Duration = Duration::from_secs(30);
/// Clock skew tolerated on `exp` and `nbf`.
const DEFAULT_LEEWAY: Duration = Duration::from_secs(5);
/// Sessions one subject may hold: a wallet's few devices and tabs, with room to reconnect.
const DEFAULT_MAX_CONNECTIONS_PER_SUBJECT: usize = 16;
/// Longest token life accepted: a stolen token is useful for at most this long.
const DEFAULT_MAX_TOKEN_LIFETIME: Duration = Duration::from_secs(24 * 60 * 60);

// === AuthConfig ===

/// `[auth]` section of the config file, or the `GATEWAY__AUTH__*` environment variables.
///
/// Every field is optional. An empty string counts as unset, so that an environment
/// variable exported as `""` does not become a zero-length HMAC secret.
///
/// `Debug` is written by hand so that the HS256 secret never reaches a log line.
#[derive(Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuthConfig {
    /// Shared secret for HS256 tokens. Enables HS256.
    pub hs256_secret: Option<String>,
    /// PEM text of an RSA public key (`BEGIN PUBLIC KEY` or `BEGIN RSA PUBLIC KEY`). Enables RS256.
    pub rsa_public_key_pem: Option<String>,
    /// PEM text of a P-256 public key (`BEGIN PUBLIC KEY`). Enables ES256.
    pub ec_public_key_pem: Option<String>,
    /// `https` URL of a JWKS holding RS256 / ES256 keys, each with a `kid`. Enables RS256
    /// and ES256 for tokens that carry a `kid`. `http` only for a loopback host; redirects
    /// are not followed. Requires `audience`.
    pub jwks_url: Option<String>,
    /// How long a fetched JWKS is used before it is fetched again. Default `10m`.
    #[serde(with = "humantime_serde")]
    pub jwks_cache_ttl: Duration,
    /// Shortest gap between two JWKS fetches. A token with an unknown `kid` triggers a
    /// refetch (that is how key rotation is picked up), so without this limit a flood of
    /// tokens with random `kid`s would turn the gateway into a load generator against the
    /// JWKS server. Default `30s`.
    #[serde(with = "humantime_serde")]
    pub jwks_min_refresh_interval: Duration,
    /// When set, tokens must carry exactly this `iss`.
    pub issuer: Option<String>,
    /// When set, tokens must carry this value in `aud`. When unset, `aud` is not checked.
    /// Required with `jwks_url`: an issuer's key set usually signs tokens for many services.
    pub audience: Option<String>,
    /// Clock skew tolerated on `exp` and `nbf`, whole seconds (sub-second parts are
    /// dropped). Default `5s`: a token minted with `nbf = now` by an issuer whose clock is a
    /// second ahead would otherwise be refused intermittently, while 5s adds nothing useful
    /// to a stolen token's life. Set `0s` for strict checks.
    #[serde(with = "humantime_serde")]
    pub leeway: Duration,
    /// WebSocket sessions one token subject (`sub`) may hold at once; past it, 429
    /// `too_many_connections`. Default 16.
    pub max_connections_per_subject: usize,
    /// Longest life a token may claim: one whose `exp - iat` or `exp - now` is longer is
    /// refused (`token_invalid`). Default `24h`.
    #[serde(with = "humantime_serde")]
    pub max_token_lifetime: Duration,
}

impl AuthConfig {
    /// Whether at least one verification key (secret, PEM or JWKS URL) is configured.
    ///
    /// Without one, [`Verifier::new`](crate::auth::Verifier::new) fails; the caller decides
    /// whether that means "refuse to start" or "run without authentication".
    pub fn has_any_key(&self) -> bool {
        [
            &self.hs256_secret,
            &self.rsa_public_key_pem,
            &self.ec_public_key_pem,
            &self.jwks_url,
        ]
        .into_iter()
        .any(|v| non_empty(v).is_some())
    }
}

impl Default for AuthConfig {
    fn default() -> Self {
        Self {
            hs256_secret: None,
            rsa_public_key_pem: None,
            ec_public_key_pem: None,
            jwks_url: None,
            jwks_cache_ttl: DEFAULT_JWKS_CACHE_TTL,
            jwks_min_refresh_interval: DEFAULT_JWKS_MIN_REFRESH_INTERVAL,
            issuer: None,
            audience: None,
            leeway: DEFAULT_LEEWAY,
            max_connections_per_subject: DEFAULT_MAX_CONNECTIONS_PER_SUBJECT,
            max_token_lifetime: DEFAULT_MAX_TOKEN_LIFETIME,
        }
    }
}

impl fmt::Debug for AuthConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AuthConfig")
            .field(
                "hs256_secret",
                &self.hs256_secret.as_ref().map(|_| super::redact::Redacted),
            )
            .field("rsa_public_key_pem", &self.rsa_public_key_pem.is_some())
            .field("ec_public_key_pem", &self.ec_public_key_pem.is_some())
            .field(
                "jwks_url",
                &self.jwks_url.as_deref().map(super::redact::url),
            )
            .field("jwks_cache_ttl", &self.jwks_cache_ttl)
            .field("jwks_min_refresh_interval", &self.jwks_min_refresh_interval)
            .field("issuer", &self.issuer)
            .field("audience", &self.audience)
            .field("leeway", &self.leeway)
            .field(
                "max_connections_per_subject",
                &self.max_connections_per_subject,
            )
            .field("max_token_lifetime", &self.max_token_lifetime)
            .finish()
    }
}

/// The value of an optional setting, treating an empty (or all-whitespace) string as unset.
pub(crate) fn non_empty(value: &Option<String>) -> Option<&str> {
    value.as_deref().filter(|v| !v.trim().is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_apply_to_missing_fields() {
        let cfg: AuthConfig = serde_json::from_str(r#"{"issuer":"me"}"#).unwrap();
        assert_eq!(cfg.jwks_cache_ttl, Duration::from_secs(600));
        assert_eq!(cfg.jwks_min_refresh_interval, Duration::from_secs(30));
        assert_eq!(cfg.leeway, Duration::from_secs(5));
        assert_eq!(cfg.max_token_lifetime, Duration::from_secs(86_400));
        assert_eq!(cfg.issuer.as_deref(), Some("me"));
        assert!(!cfg.has_any_key());
    }

    #[test]
    fn durations_parse_humantime_and_unknown_fields_fail() {
        let cfg: AuthConfig =
            serde_json::from_str(r#"{"jwks_cache_ttl":"1m 30s","leeway":"0s"}"#).unwrap();
        assert_eq!(cfg.jwks_cache_ttl, Duration::from_secs(90));
        assert_eq!(cfg.leeway, Duration::ZERO);
        assert!(serde_json::from_str::<AuthConfig>(r#"{"hs256_secrett":"x"}"#).is_err());
    }

    #[test]
    fn empty_strings_are_not_keys() {
        let mut cfg = AuthConfig {
            hs256_secret: Some("  ".into()),
            ..AuthConfig::default()
        };
        assert!(!cfg.has_any_key());
        cfg.jwks_url = Some("https://issuer.example/jwks".into());
        assert!(cfg.has_any_key());
    }

    #[test]
    fn debug_redacts_the_secret() {
        let cfg = AuthConfig {
            hs256_secret: Some("hunter2-very-secret".into()),
            ..AuthConfig::default()
        };
        let shown = format!("{cfg:?}");
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(shown.contains("[redacted]"));
    }
}
