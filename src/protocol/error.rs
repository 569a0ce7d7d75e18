//! Stable error codes: what a client or publisher is told when something is refused.
//!
//! Codes are snake_case strings and never change meaning; docs/protocol.md lists them all.

/// Declares [`ErrorCode`] from one list of `Variant => "wire_string"`, so the enum, its wire
/// strings and [`ErrorCode::ALL`] cannot drift apart.
macro_rules! error_codes {
    ($($(#[$doc:meta])* $variant:ident => $wire:literal,)*) => {
        /// Every error code the gateway sends, on the WebSocket or the HTTP API. Serialises as
        /// its wire string ([`ErrorCode::as_str`]).
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum ErrorCode {
            $($(#[$doc])* $variant,)*
        }

        impl ErrorCode {
            /// Every code, in declaration order.
            pub const ALL: &'static [ErrorCode] = &[$(ErrorCode::$variant,)*];

            /// The wire string: the `code` of a WebSocket error reply, the `error` of an HTTP
            /// error body, the `code` of an invalid publication item.
            pub fn as_str(self) -> &'static str {
                match self {
                    $(ErrorCode::$variant => $wire,)*
                }
            }
        }
    };
}

error_codes! {
    // WebSocket requests
    InvalidJson => "invalid_json",
    InvalidMessage => "invalid_message",
    UnknownEvent => "unknown_event",
    InvalidChannel => "invalid_channel",
    TooManyChannels => "too_many_channels",
    TooManySubscriptions => "too_many_subscriptions",
    RateLimited => "rate_limited",
    TooManyMessageIds => "too_many_message_ids",
    BrokerTimeout => "broker_timeout",
    // Tokens (HTTP 401 at the upgrade; `AuthError::code`)
    TokenMissing => "token_missing",
    TokenInvalid => "token_invalid",
    TokenExpired => "token_expired",
    TokenNotYetValid => "token_not_yet_valid",
    // Admission (HTTP at the upgrade)
    OverCapacity => "over_capacity",
    TooManyConnections => "too_many_connections",
    OriginNotAllowed => "origin_not_allowed",
    // HTTP API
    InvalidPublication => "invalid_publication",
    // Publication items (`errors[].code` of `invalid_publication`; JetStream terminations)
    InvalidId => "invalid_id",
    InvalidData => "invalid_data",
    ReservedChannel => "reserved_channel",
    ReservedField => "reserved_field",
    WildcardChain => "wildcard_chain",
    AddressMismatch => "address_mismatch",
    /// A JetStream message on a subject outside the ingest's grammar (terminated).
    InvalidSubject => "invalid_subject",
    InvalidRequest => "invalid_request",
    Unauthorized => "unauthorized",
    Forbidden => "forbidden",
    PayloadTooLarge => "payload_too_large",
    PublicationTooLarge => "publication_too_large",
    UnknownChain => "unknown_chain",
    TooManyChains => "too_many_chains",
    StoreUnavailable => "store_unavailable",
    Draining => "draining",
    NotFound => "not_found",
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

    #[test]
    fn docs_protocol_md_names_every_code() {
        let doc = include_str!("../../docs/protocol.md");
        for code in ErrorCode::ALL {
            let quoted = format!("`{}`", code.as_str());
            assert!(
                doc.contains(&quoted),
                "docs/protocol.md does not name {quoted}"
            );
        }
    }

    #[test]
    fn wire_strings_are_distinct_snake_case_and_serialised_as_such() {
        let mut seen: Vec<&str> = ErrorCode::ALL.iter().map(|c| c.as_str()).collect();
        assert!(seen
            .iter()
            .all(|s| s.chars().all(|c| c.is_ascii_lowercase() || c == '_')));
        seen.sort_unstable();
        seen.dedup();
        assert_eq!(seen.len(), ErrorCode::ALL.len());
        assert_eq!(
            serde_json::to_string(&OverCapacity).unwrap(),
            "\"over_capacity\""
        );
    }
}
