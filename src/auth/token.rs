//! A cheap, unverified first look at a token: its shape, its `alg` and its `kid`.
//!
//! This runs before any key is chosen, so it must not trust anything it reads: it only
//! decides which key *could* verify the token. It also stops `alg: none` here, because
//! `jsonwebtoken` cannot even parse that header and would report it as mere garbage.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use jsonwebtoken::Algorithm;
use serde::Deserialize;

use super::error::AuthError;

/// Longest token accepted. Real tokens are well under 2 KiB; the cap keeps a hostile
/// client from making us base64-decode and parse megabytes before refusing it.
pub(crate) const MAX_TOKEN_LEN: usize = 8 * 1024;

// === Alg ===

/// The algorithms the gateway can ever accept. Anything else is refused at the header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Alg {
    Hs256,
    Rs256,
    Es256,
}

impl Alg {
    pub(crate) fn to_jwt(self) -> Algorithm {
        match self {
            Self::Hs256 => Algorithm::HS256,
            Self::Rs256 => Algorithm::RS256,
            Self::Es256 => Algorithm::ES256,
        }
    }
}

// === TokenHeader ===

/// What the unverified header says.
#[derive(Debug)]
pub(crate) struct TokenHeader {
    pub(crate) alg: Alg,
    pub(crate) kid: Option<String>,
}

/// The header fields we read; the rest (`typ`, `cty`, ...) is ignored.
#[derive(Deserialize)]
struct RawHeader {
    alg: String,
    #[serde(default)]
    kid: Option<String>,
}

/// Checks the token's shape and reads its header, without verifying anything.
pub(crate) fn peek(token: &str) -> Result<TokenHeader, AuthError> {
    if token.is_empty() || token.len() > MAX_TOKEN_LEN {
        return Err(AuthError::Malformed);
    }
    let mut parts = token.split('.');
    let (Some(header), Some(_payload), Some(_signature), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(AuthError::Malformed);
    };
    let header = URL_SAFE_NO_PAD
        .decode(header)
        .map_err(|_| AuthError::Malformed)?;
    let header: RawHeader = serde_json::from_slice(&header).map_err(|_| AuthError::Malformed)?;
    let alg = match header.alg.as_str() {
        "HS256" => Alg::Hs256,
        "RS256" => Alg::Rs256,
        "ES256" => Alg::Es256,
        // RFC 7518 spells it "none", but some libraries have accepted any casing.
        other if other.eq_ignore_ascii_case("none") => return Err(AuthError::AlgNone),
        _ => return Err(AuthError::AlgNotAllowed),
    };
    Ok(TokenHeader {
        alg,
        kid: header.kid,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_header(json: &str) -> String {
        format!("{}.e30.c2ln", URL_SAFE_NO_PAD.encode(json))
    }

    #[test]
    fn reads_alg_and_kid() {
        let h = peek(&with_header(r#"{"alg":"RS256","kid":"k1","typ":"JWT"}"#)).unwrap();
        assert_eq!(h.alg, Alg::Rs256);
        assert_eq!(h.kid.as_deref(), Some("k1"));
    }

    #[test]
    fn refuses_bad_shapes() {
        for bad in ["", "abc", "a.b", "a.b.c", "a.b.c.d", "...", "e30.e30.e30"] {
            assert_eq!(peek(bad).unwrap_err(), AuthError::Malformed, "{bad:?}");
        }
        let long = with_header(r#"{"alg":"HS256"}"#) + &"A".repeat(MAX_TOKEN_LEN);
        assert_eq!(peek(&long).unwrap_err(), AuthError::Malformed);
    }

    #[test]
    fn refuses_none_and_unknown_algs() {
        for none in ["none", "None", "NONE"] {
            let token = with_header(&format!(r#"{{"alg":"{none}"}}"#));
            assert_eq!(peek(&token).unwrap_err(), AuthError::AlgNone);
        }
        for other in ["HS512", "PS256", "hs256", "EdDSA"] {
            let token = with_header(&format!(r#"{{"alg":"{other}"}}"#));
            assert_eq!(
                peek(&token).unwrap_err(),
                AuthError::AlgNotAllowed,
                "{other}"
            );
        }
        assert_eq!(
            peek(&with_header(r#"{"alg":5}"#)).unwrap_err(),
            AuthError::Malformed
        );
    }
}
