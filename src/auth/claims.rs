//! [`Claims`], what a verified token says about its holder, and the checks on its payload that
//! `jsonwebtoken` does not make: a non-empty `sub`, and a life no longer than
//! `auth.max_token_lifetime`.

use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::{Map, Value};

use super::error::AuthError;

/// What a verified token says about its holder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claims {
    /// Subject: who the token was issued to. Never empty.
    pub sub: String,
    /// Expiry, seconds since the Unix epoch.
    pub exp: u64,
}

/// Seconds since the Unix epoch.
pub(super) fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Refuses a token that claims to live longer than `max_secs`, counted from its `iat` (when
/// it has one) and from `now`. A valid signature does not make a month-long token safe: it
/// stays usable that long once stolen.
pub(super) fn check_lifetime(
    payload: &Map<String, Value>,
    exp: u64,
    now: u64,
    max_secs: u64,
) -> Result<(), AuthError> {
    if exp.saturating_sub(now) > max_secs {
        return Err(AuthError::LifetimeTooLong);
    }
    let iat = payload.get("iat").and_then(|iat| {
        iat.as_u64()
            .or_else(|| iat.as_f64().filter(|f| *f >= 0.0).map(|f| f as u64))
    });
    match iat {
        Some(iat) if exp.saturating_sub(iat) > max_secs => Err(AuthError::LifetimeTooLong),
        _ => Ok(()),
    }
}

/// Extracts our claims from a payload that already passed validation.
pub(super) fn claims(payload: &Map<String, Value>) -> Result<Claims, AuthError> {
    let sub = payload
        .get("sub")
        .and_then(Value::as_str)
        .filter(|sub| !sub.is_empty())
        .ok_or(AuthError::MissingClaim)?;
    // Validation accepted `exp` as a number; JSON allows it to be written as a float.
    let exp = payload
        .get("exp")
        .and_then(|exp| {
            exp.as_u64()
                .or_else(|| exp.as_f64().filter(|f| *f >= 0.0).map(|f| f as u64))
        })
        .ok_or(AuthError::MissingClaim)?;
    Ok(Claims {
        sub: sub.to_owned(),
        exp,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lifetime_counts_from_iat_and_from_now() {
        let payload = |json: &str| serde_json::from_str::<Map<String, Value>>(json).unwrap();
        let day = 86_400;
        let now = 1_700_000_000;
        let ok = |json: &str, exp| check_lifetime(&payload(json), exp, now, day);
        assert_eq!(ok(r#"{}"#, now + day), Ok(()));
        assert_eq!(ok(r#"{}"#, now + day + 1), Err(AuthError::LifetimeTooLong));
        let iat = format!(r#"{{"iat":{}}}"#, now - 10);
        assert_eq!(ok(&iat, now + day - 10), Ok(()));
        assert_eq!(ok(&iat, now + day - 9), Err(AuthError::LifetimeTooLong));
        // An expired token's life is the `exp` check's business, not this one's.
        assert_eq!(ok(r#"{"iat":5}"#, 10), Ok(()));
    }

    #[test]
    fn claims_require_a_non_empty_sub() {
        let payload = |json: &str| serde_json::from_str::<Map<String, Value>>(json).unwrap();
        assert_eq!(
            claims(&payload(r#"{"sub":"0xabc","exp":1700000000.5}"#)).unwrap(),
            Claims {
                sub: "0xabc".into(),
                exp: 1_700_000_000
            }
        );
        assert_eq!(
            claims(&payload(r#"{"sub":"","exp":1}"#)).unwrap_err(),
            AuthError::MissingClaim
        );
    }
}
