//! Stable error codes: what a client or publisher is told when something is refused.
//!
//! Codes are snake_case strings and never change meaning; docs/protocol.md lists them all.

/// Every error code the gateway sends, on the WebSocket or the HTTP API. Serialises as its
/// wire string ([`ErrorCode::as_str`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorCode {
    // WebSocket requests
    InvalidJson,
    InvalidMessage,
    UnknownEvent,
    InvalidChannel,
    TooManyChannels,
    TooManySubscriptions,
    RateLimited,
    TooManyMessageIds,
    BrokerTimeout,
    // Tokens (HTTP 401 at the upgrade; `AuthError::code`)
    TokenMissing,
    TokenInvalid,
    TokenExpired,
    TokenNotYetValid,
    // Admission (HTTP at the upgrade)
    OverCapacity,
    TooManyConnections,
    OriginNotAllowed,
    // HTTP API
    InvalidPublication,
    // Publication items (`errors[].code` of `invalid_publication`; JetStream terminations)
    InvalidId,
    InvalidData,
    ReservedChannel,
    ReservedField,
    WildcardChain,
    AddressMismatch,
    /// A JetStream message on a subject outside the ingest's grammar (terminated).
    InvalidSubject,
    InvalidRequest,
    Unauthorized,
    Forbidden,
    PayloadTooLarge,
    PublicationTooLarge,
    UnknownChain,
    TooManyChains,
    StoreUnavailable,
    Draining,
    NotFound,
}

impl ErrorCode {
    /// The wire string: the `code` of a WebSocket error reply, the `error` of an HTTP error
    /// body, the `code` of an invalid publication item.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::InvalidJson => "invalid_json",
            ErrorCode::InvalidMessage => "invalid_message",
            ErrorCode::UnknownEvent => "unknown_event",
            ErrorCode::InvalidChannel => "invalid_channel",
            ErrorCode::TooManyChannels => "too_many_channels",
            ErrorCode::TooManySubscriptions => "too_many_subscriptions",
            ErrorCode::RateLimited => "rate_limited",
            ErrorCode::TooManyMessageIds => "too_many_message_ids",
            ErrorCode::BrokerTimeout => "broker_timeout",
            ErrorCode::TokenMissing => "token_missing",
            ErrorCode::TokenInvalid => "token_invalid",
            ErrorCode::TokenExpired => "token_expired",
            ErrorCode::TokenNotYetValid => "token_not_yet_valid",
            ErrorCode::OverCapacity => "over_capacity",
            ErrorCode::TooManyConnections => "too_many_connections",
            ErrorCode::OriginNotAllowed => "origin_not_allowed",
            ErrorCode::InvalidPublication => "invalid_publication",
            ErrorCode::InvalidId => "invalid_id",
            ErrorCode::InvalidData => "invalid_data",
            ErrorCode::ReservedChannel => "reserved_channel",
            ErrorCode::ReservedField => "reserved_field",
            ErrorCode::WildcardChain => "wildcard_chain",
            ErrorCode::AddressMismatch => "address_mismatch",
            ErrorCode::InvalidSubject => "invalid_subject",
            ErrorCode::InvalidRequest => "invalid_request",
            ErrorCode::Unauthorized => "unauthorized",
            ErrorCode::Forbidden => "forbidden",
            ErrorCode::PayloadTooLarge => "payload_too_large",
            ErrorCode::PublicationTooLarge => "publication_too_large",
            ErrorCode::UnknownChain => "unknown_chain",
            ErrorCode::TooManyChains => "too_many_chains",
            ErrorCode::StoreUnavailable => "store_unavailable",
            ErrorCode::Draining => "draining",
            ErrorCode::NotFound => "not_found",
        }
    }
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl serde::Serialize for ErrorCode {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::ErrorCode::{self, *};

    const ALL: [ErrorCode; 34] = [
        InvalidJson,
        InvalidMessage,
        UnknownEvent,
        InvalidChannel,
        TooManyChannels,
        TooManySubscriptions,
        RateLimited,
        TooManyMessageIds,
        BrokerTimeout,
        TokenMissing,
        TokenInvalid,
        TokenExpired,
        TokenNotYetValid,
        OverCapacity,
        TooManyConnections,
        OriginNotAllowed,
        InvalidPublication,
        InvalidId,
        InvalidData,
        ReservedChannel,
        ReservedField,
        WildcardChain,
        AddressMismatch,
        InvalidSubject,
        InvalidRequest,
        Unauthorized,
        Forbidden,
        PayloadTooLarge,
        PublicationTooLarge,
        UnknownChain,
        TooManyChains,
        StoreUnavailable,
        Draining,
        NotFound,
    ];

    #[test]
    fn wire_strings_are_distinct_snake_case_and_serialised_as_such() {
        let mut seen: Vec<&str> = ALL.iter().map(|c| c.as_str()).collect();
        assert!(seen
            .iter()
            .all(|s| s.chars().all(|c| c.is_ascii_lowercase() || c == '_')));
        seen.sort_unstable();
        seen.dedup();
        assert_eq!(seen.len(), ALL.len());
        assert_eq!(
            serde_json::to_string(&OverCapacity).unwrap(),
            "\"over_capacity\""
        );
    }
}
