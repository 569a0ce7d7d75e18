//! Turning the `[auth]` settings into what verification uses: the checked JWKS URL, the
//! parsed public keys, and the claim checks per algorithm.

use jsonwebtoken::{DecodingKey, Validation};
use url::Url;

use super::error::AuthSetupError;
use super::token::Alg;
use crate::config::{non_empty, AuthConfig};

/// Refuses a JWKS URL that is not absolute `https`, or plain `http` to a host other than
/// loopback (a JWKS served next to the gateway, in tests or a sidecar).
pub(super) fn check_jwks_url(url: &str) -> Result<(), AuthSetupError> {
    let parsed = Url::parse(url).map_err(|_| AuthSetupError::InvalidJwksUrl)?;
    match (parsed.scheme(), parsed.host()) {
        ("https", Some(_)) => Ok(()),
        ("http", Some(host)) if is_loopback(&host) => Ok(()),
        ("http", Some(_)) => Err(AuthSetupError::InsecureJwksUrl),
        _ => Err(AuthSetupError::InvalidJwksUrl),
    }
}

fn is_loopback(host: &url::Host<&str>) -> bool {
    match host {
        url::Host::Ipv4(ip) => ip.is_loopback(),
        url::Host::Ipv6(ip) => ip.is_loopback(),
        url::Host::Domain(name) => name.eq_ignore_ascii_case("localhost"),
    }
}

/// Parses a public key PEM for `alg`, refusing private keys outright: a private key in the
/// gateway's config is a leak waiting to happen, and the PEM parser would half-accept it.
pub(super) fn parse_pem(
    pem: &str,
    setting: &'static str,
    alg: Alg,
) -> Result<DecodingKey, AuthSetupError> {
    if pem.contains("PRIVATE KEY") {
        return Err(AuthSetupError::PrivateKeyGiven { setting });
    }
    let invalid = |source| AuthSetupError::InvalidKey { setting, source };
    let key = match alg {
        Alg::Rs256 => DecodingKey::from_rsa_pem(pem.as_bytes()),
        Alg::Es256 | Alg::Hs256 => DecodingKey::from_ec_pem(pem.as_bytes()),
    }
    .map_err(invalid)?;
    // A trial verification builds the verifier, which is where a key of the wrong curve
    // (say P-384 for ES256) is found. The signature is garbage; only an `Err` matters.
    jsonwebtoken::crypto::verify("AA", b"probe", &key, alg.to_jwt()).map_err(invalid)?;
    Ok(key)
}

/// The claim checks for tokens signed with `alg`.
pub(super) fn validation(alg: Alg, cfg: &AuthConfig) -> Validation {
    let mut v = Validation::new(alg.to_jwt());
    v.leeway = cfg.leeway.as_secs();
    v.validate_exp = true;
    v.validate_nbf = true;
    let mut required = vec!["exp", "sub"];
    // jsonwebtoken checks iss/aud only when present, so a configured one must also be
    // required, or a token simply omitting it would pass.
    if let Some(issuer) = non_empty(&cfg.issuer) {
        v.set_issuer(&[issuer]);
        required.push("iss");
    }
    match non_empty(&cfg.audience) {
        Some(audience) => {
            v.set_audience(&[audience]);
            required.push("aud");
        }
        // Without a configured audience, a token's `aud` is someone else's business;
        // jsonwebtoken would otherwise refuse every token that has one.
        None => v.validate_aud = false,
    }
    v.set_required_spec_claims(&required);
    v
}
