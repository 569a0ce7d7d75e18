//! Minting HS256 tokens, for the `activity-gateway token` command and dev mode.
//!
//! Production tokens come from the wallet backend; this exists so an operator can produce
//! a token the gateway accepts without standing up an issuer.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use jsonwebtoken::{EncodingKey, Header};
use serde::Serialize;

use super::error::AuthSetupError;

#[derive(Serialize)]
struct MintedClaims<'a> {
    sub: &'a str,
    iat: u64,
    exp: u64,
}

/// Signs an HS256 token for `sub`, valid from now for `ttl`.
///
/// The token carries only `sub`, `iat` and `exp`: it will not pass a verifier configured
/// with an `issuer` or `audience`.
pub fn mint_hs256(secret: &str, sub: &str, ttl: Duration) -> Result<String, AuthSetupError> {
    if secret.is_empty() {
        return Err(AuthSetupError::EmptySecret);
    }
    if sub.is_empty() {
        return Err(AuthSetupError::EmptySubject);
    }
    // A clock before 1970 is broken beyond what a token can fix; 0 just yields an expired token.
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let claims = MintedClaims {
        sub,
        iat: now,
        exp: now.saturating_add(ttl.as_secs()),
    };
    jsonwebtoken::encode(
        &Header::default(),
        &claims,
        &EncodingKey::from_secret(secret.as_bytes()),
    )
    .map_err(AuthSetupError::Sign)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::{AuthConfig, Verifier};

    #[tokio::test]
    async fn minted_token_verifies() {
        let secret = "0123456789abcdef0123456789abcdef";
        let token = mint_hs256(secret, "0xabc", Duration::from_secs(60)).unwrap();
        let verifier = Verifier::new(&AuthConfig {
            hs256_secret: Some(secret.into()),
            ..AuthConfig::default()
        })
        .unwrap();
        let claims = verifier.verify(&token).await.unwrap();
        assert_eq!(claims.sub, "0xabc");
    }

    #[test]
    fn refuses_empty_inputs() {
        assert!(matches!(
            mint_hs256("", "0xabc", Duration::from_secs(60)),
            Err(AuthSetupError::EmptySecret)
        ));
        assert!(matches!(
            mint_hs256("secret", "", Duration::from_secs(60)),
            Err(AuthSetupError::EmptySubject)
        ));
    }
}
