//! Stable error codes: what a client or publisher is told when something is refused.
//!
//! Codes are snake_case strings and never change meaning; docs/protocol.md lists them all.

/// Every error code the gateway sends, on the WebSocket or the HTTP API.
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
    // Tokens (HTTP 401 at the upgrade)
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
