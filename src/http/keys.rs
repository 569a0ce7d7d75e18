//! API keys of the HTTP API: a publisher key for publishing and heartbeats, an admin key
//! for operator overrides. Compared in constant time.

use axum::http::{header, HeaderMap, StatusCode};
use subtle::ConstantTimeEq;

use super::error::ApiError;
use crate::config::Settings;
use crate::protocol::ErrorCode;

/// Which key an endpoint requires.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Publisher,
    Admin,
}

/// Checks the bearer key: missing or unknown → 401; a key of the other role → 403.
pub fn require(headers: &HeaderMap, settings: &Settings, role: Role) -> Result<(), ApiError> {
    let Some(key) = bearer(headers) else {
        return Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            ErrorCode::Unauthorized,
            "missing API key: send it as Authorization: Bearer <key>",
        ));
    };
    let (mine, other) = match role {
        Role::Publisher => (&settings.publish.api_keys, &settings.admin.api_keys),
        Role::Admin => (&settings.admin.api_keys, &settings.publish.api_keys),
    };
    if contains(mine, key) {
        return Ok(());
    }
    if contains(other, key) {
        let msg = match role {
            Role::Publisher => {
                "this is an admin key; publishing needs a publisher key (publish.api_keys)"
            }
            Role::Admin => {
                "this is a publisher key; the admin API needs an admin key (admin.api_keys)"
            }
        };
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            ErrorCode::Forbidden,
            msg,
        ));
    }
    Err(ApiError::new(
        StatusCode::UNAUTHORIZED,
        ErrorCode::Unauthorized,
        "unknown API key: check the key configured for this endpoint",
    ))
}

/// The bearer token of an `Authorization` header, if any.
pub fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    (scheme.eq_ignore_ascii_case("bearer") && !token.trim().is_empty()).then(|| token.trim())
}

fn contains(keys: &[String], key: &str) -> bool {
    // Check every key so the time taken does not tell which one matched.
    keys.iter().fold(false, |found, k| {
        found | bool::from(k.as_bytes().ct_eq(key.as_bytes()))
    })
}
