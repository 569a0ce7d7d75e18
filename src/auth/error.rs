//! Errors of the auth module: [`AuthError`] for a refused token, [`AuthSetupError`] for
//! configuration that cannot work, and [`record_failure`], the one place a refusal is counted.
//!
//! A refused token has three faces, each for a different reader: [`AuthError::code`] for the
//! client's program (a small stable set), [`AuthError::message`] for the human behind it, and
//! [`AuthError::reason`] for the operator's dashboards. Only the last one is precise, because
//! telling a client *why* a forged token failed helps whoever forged it.

use jsonwebtoken::errors::ErrorKind;

use crate::protocol::ErrorCode;

// === AuthError ===

/// Why a client token was refused.
///
/// The `Display` text is for logs; it never contains the token, key ids or expected
/// claim values. Clients get [`code`](Self::code) and [`message`](Self::message) instead.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AuthError {
    /// No token was given. Built by the HTTP layer, which also counts it.
    #[error("no token was given")]
    Missing,
    /// Not a JWT: wrong shape, bad base64, bad JSON, or absurdly long.
    #[error("token is not a well-formed JWT")]
    Malformed,
    /// `exp` is in the past (beyond the leeway).
    #[error("token has expired")]
    Expired,
    /// The token claims a longer life than `auth.max_token_lifetime`: `exp - iat` or
    /// `exp - now` is above it.
    #[error("token lifetime is longer than auth.max_token_lifetime")]
    LifetimeTooLong,
    /// `nbf` is in the future (beyond the leeway).
    #[error("token is not valid yet")]
    NotYetValid,
    /// The signature does not match the key chosen for the token.
    #[error("token signature does not verify")]
    BadSignature,
    /// The header says `alg: none`, an unsigned token.
    #[error("token is unsigned (alg none)")]
    AlgNone,
    /// The header names an algorithm no configured key is for, or one that does not match
    /// the type of the key its `kid` names.
    #[error("token algorithm is not allowed")]
    AlgNotAllowed,
    /// `iss` differs from the configured issuer.
    #[error("token issuer is not the configured one")]
    WrongIssuer,
    /// `aud` does not contain the configured audience.
    #[error("token audience is not the configured one")]
    WrongAudience,
    /// No key matches the token's `kid` (or the token has no `kid` and only a JWKS can
    /// verify its algorithm).
    #[error("no key matches the token's key id")]
    UnknownKid,
    /// The JWKS could not be fetched and no cached key matches.
    #[error("the JWKS could not be fetched")]
    JwksUnavailable,
    /// A required claim (`exp`, `sub`, or a configured `iss` / `aud`) is absent.
    #[error("token lacks a required claim")]
    MissingClaim,
}

impl AuthError {
    /// Stable wire code sent to the client in the 401 body: exactly one of
    /// [`TokenMissing`](ErrorCode::TokenMissing), [`TokenInvalid`](ErrorCode::TokenInvalid),
    /// [`TokenExpired`](ErrorCode::TokenExpired), [`TokenNotYetValid`](ErrorCode::TokenNotYetValid).
    pub fn code(&self) -> ErrorCode {
        match self {
            Self::Missing => ErrorCode::TokenMissing,
            Self::Expired => ErrorCode::TokenExpired,
            Self::NotYetValid => ErrorCode::TokenNotYetValid,
            Self::Malformed
            | Self::BadSignature
            | Self::AlgNone
            | Self::AlgNotAllowed
            | Self::WrongIssuer
            | Self::WrongAudience
            | Self::UnknownKid
            | Self::JwksUnavailable
            | Self::MissingClaim
            | Self::LifetimeTooLong => ErrorCode::TokenInvalid,
        }
    }

    /// Metric label: a bounded set, more precise than [`code`](Self::code).
    pub fn reason(&self) -> &'static str {
        match self {
            Self::Missing => "missing",
            Self::Malformed => "malformed",
            Self::Expired => "expired",
            Self::NotYetValid => "not_yet_valid",
            Self::BadSignature => "bad_signature",
            Self::AlgNone => "alg_none",
            Self::AlgNotAllowed => "alg_not_allowed",
            Self::WrongIssuer => "wrong_issuer",
            Self::WrongAudience => "wrong_audience",
            Self::UnknownKid => "unknown_kid",
            Self::JwksUnavailable => "jwks_unavailable",
            Self::MissingClaim => "missing_claim",
            Self::LifetimeTooLong => "lifetime_too_long",
        }
    }

    /// Message for the client: what is wrong and what to do about it.
    ///
    /// Signature, algorithm and key-id failures share one message on purpose: which check
    /// failed is exactly what someone probing with forged tokens wants to learn.
    pub fn message(&self) -> &'static str {
        match self {
            Self::Missing => "An access token is required. Connect again with a token.",
            Self::Malformed => {
                "The access token is not a well-formed JWT. Obtain a new token and connect again."
            }
            Self::Expired => "The access token has expired. Obtain a new token and connect again.",
            Self::NotYetValid => {
                "The access token is not valid yet. Check the device clock, or retry shortly."
            }
            Self::WrongIssuer | Self::WrongAudience => {
                "The access token was not issued for this service. Obtain a token for this service."
            }
            Self::MissingClaim => {
                "The access token lacks a required claim. Obtain a new token and connect again."
            }
            Self::LifetimeTooLong => {
                "The access token lives longer than this gateway accepts. Obtain a shorter-lived token and connect again."
            }
            Self::JwksUnavailable => {
                "The access token cannot be verified right now. Retry in a moment."
            }
            Self::BadSignature | Self::AlgNone | Self::AlgNotAllowed | Self::UnknownKid => {
                "The access token was rejected. Obtain a new token and connect again."
            }
        }
    }

    /// Maps a `jsonwebtoken` failure (signature check, then claim validation) onto ours.
    pub(crate) fn from_jwt(err: &jsonwebtoken::errors::Error) -> Self {
        match err.kind() {
            ErrorKind::InvalidToken
            | ErrorKind::Base64(_)
            | ErrorKind::Json(_)
            | ErrorKind::Utf8(_)
            | ErrorKind::InvalidClaimFormat(_) => Self::Malformed,
            ErrorKind::ExpiredSignature => Self::Expired,
            ErrorKind::ImmatureSignature => Self::NotYetValid,
            ErrorKind::InvalidIssuer => Self::WrongIssuer,
            ErrorKind::InvalidAudience => Self::WrongAudience,
            ErrorKind::MissingRequiredClaim(_) => Self::MissingClaim,
            ErrorKind::InvalidAlgorithm | ErrorKind::MissingAlgorithm => Self::AlgNotAllowed,
            // Everything left is "this key could not verify this signature" (bad signature,
            // key/curve mismatch, provider failure). The enum is non-exhaustive, so new
            // kinds land here too: refusing is the safe default.
            _ => Self::BadSignature,
        }
    }
}

/// Counts a refused token in `gateway_auth_failures_total{reason}`.
///
/// [`Verifier::verify`](super::Verifier::verify) calls this on every `Err` it returns; the
/// HTTP layer calls it for [`AuthError::Missing`], the one failure it builds itself. Every
/// refusal is therefore counted exactly once.
pub fn record_failure(err: &AuthError) {
    crate::metrics::auth_failure(err.reason());
}

// === AuthSetupError ===

/// Auth configuration that cannot work, found at startup (or when minting a token).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AuthSetupError {
    /// Neither a secret, a PEM key nor a JWKS URL is configured.
    #[error("no auth key is configured: set auth.hs256_secret, auth.rsa_public_key_pem, auth.ec_public_key_pem or auth.jwks_url")]
    NoKeys,
    /// A configured PEM key does not parse. `setting` names the config field.
    #[error("{setting} is not a valid PEM public key")]
    InvalidKey {
        /// The config field holding the key, e.g. `auth.rsa_public_key_pem`.
        setting: &'static str,
        /// What the PEM parser said.
        #[source]
        source: jsonwebtoken::errors::Error,
    },
    /// `auth.jwks_url` is not an absolute `http`/`https` URL.
    #[error("auth.jwks_url is not an absolute https URL (e.g. https://issuer.example/.well-known/jwks.json)")]
    InvalidJwksUrl,
    /// `auth.jwks_url` is plain `http` to a host that is not loopback: anyone on the path
    /// could swap the keys.
    #[error("auth.jwks_url must use https; plain http is accepted only for a loopback host (127.0.0.1, ::1, localhost)")]
    InsecureJwksUrl,
    /// `auth.jwks_url` is set without `auth.audience`.
    #[error("auth.audience is required with auth.jwks_url: set it to the `aud` your issuer puts in this gateway's client tokens")]
    JwksWithoutAudience,
    /// `auth.max_token_lifetime` is zero, which would refuse every token.
    #[error("auth.max_token_lifetime must be greater than 0 (default 24h)")]
    ZeroTokenLifetime,
    /// The HTTP client for JWKS fetches could not be built.
    #[error("cannot build the JWKS HTTP client")]
    HttpClient(#[source] reqwest::Error),
    /// A configured key field holds a private key; the gateway only needs the public half.
    #[error("{setting} holds a private key; configure the public key instead")]
    PrivateKeyGiven {
        /// The config field holding the key.
        setting: &'static str,
    },
    /// `auth.leeway` is above the 10 minute ceiling.
    #[error("auth.leeway is larger than 10m")]
    LeewayTooLarge,
    /// An empty secret signs tokens anyone can forge.
    #[error("the HS256 secret is empty")]
    EmptySecret,
    /// A token for nobody: verification refuses an empty `sub`.
    #[error("the token subject is empty")]
    EmptySubject,
    /// Signing a token failed.
    #[error("cannot sign the token")]
    Sign(#[source] jsonwebtoken::errors::Error),
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALL: [AuthError; 12] = [
        AuthError::Missing,
        AuthError::Malformed,
        AuthError::Expired,
        AuthError::NotYetValid,
        AuthError::BadSignature,
        AuthError::AlgNone,
        AuthError::AlgNotAllowed,
        AuthError::WrongIssuer,
        AuthError::WrongAudience,
        AuthError::UnknownKid,
        AuthError::JwksUnavailable,
        AuthError::MissingClaim,
    ];

    #[test]
    fn codes_are_the_four_wire_codes() {
        for err in &ALL {
            assert!(
                [
                    "token_missing",
                    "token_invalid",
                    "token_expired",
                    "token_not_yet_valid"
                ]
                .contains(&err.code().as_str()),
                "{err:?}"
            );
        }
        assert_eq!(AuthError::Missing.code().as_str(), "token_missing");
        assert_eq!(AuthError::Expired.code().as_str(), "token_expired");
        assert_eq!(
            AuthError::NotYetValid.code().as_str(),
            "token_not_yet_valid"
        );
        assert_eq!(AuthError::JwksUnavailable.code().as_str(), "token_invalid");
    }

    #[test]
    fn reasons_are_distinct() {
        let mut reasons: Vec<_> = ALL.iter().map(AuthError::reason).collect();
        reasons.sort_unstable();
        reasons.dedup();
        assert_eq!(reasons.len(), ALL.len());
    }

    #[test]
    fn forgery_failures_share_one_message() {
        let msg = AuthError::BadSignature.message();
        for err in [
            AuthError::AlgNone,
            AuthError::AlgNotAllowed,
            AuthError::UnknownKid,
        ] {
            assert_eq!(err.message(), msg);
        }
        assert_ne!(AuthError::Expired.message(), msg);
    }

    #[test]
    fn jwt_errors_map_to_reasons() {
        let map = |k| AuthError::from_jwt(&jsonwebtoken::errors::Error::from(k)).reason();
        assert_eq!(map(ErrorKind::ExpiredSignature), "expired");
        assert_eq!(map(ErrorKind::ImmatureSignature), "not_yet_valid");
        assert_eq!(map(ErrorKind::InvalidSignature), "bad_signature");
        assert_eq!(map(ErrorKind::InvalidIssuer), "wrong_issuer");
        assert_eq!(map(ErrorKind::InvalidAudience), "wrong_audience");
        assert_eq!(
            map(ErrorKind::MissingRequiredClaim("exp".into())),
            "missing_claim"
        );
        assert_eq!(map(ErrorKind::InvalidToken), "malformed");
        assert_eq!(map(ErrorKind::InvalidAlgorithm), "alg_not_allowed");
    }
}
