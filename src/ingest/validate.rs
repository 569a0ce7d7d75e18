//! Validation of publish requests: a single publication or a batch, validated whole.
//!
//! Every item is checked before anything is delivered; the rejection lists every invalid item
//! with its index, a stable code and a message saying what to fix.

use std::collections::BTreeMap;

use serde::de::IgnoredAny;
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::value::RawValue;

use crate::protocol::caip::normalize_address;
use crate::protocol::{Channel, ChannelError, ErrorCode, Namespace};

/// The longest idempotency key accepted.
pub const MAX_ID_LEN: usize = 128;

/// A publication that passed validation.
#[derive(Debug, Clone)]
pub struct Validated {
    pub channel: Channel,
    /// Canonical channel text (normalised address, concrete chain).
    pub canonical: String,
    /// The JSON text of `data` as the publisher sent it (not re-serialised).
    pub payload: String,
    /// The publisher's idempotency key.
    pub id: Option<String>,
}

/// Why one publication is invalid: a stable code and a message saying what to fix.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{code}: {message}")]
pub struct Invalid {
    /// The item code (`invalid_channel`, `invalid_data`, …).
    pub code: ErrorCode,
    /// What is wrong and what to fix.
    pub message: String,
}

impl Invalid {
    fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }
}

/// One invalid item of a publish request, as listed in the `errors` of the reply.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct ItemError {
    /// The item's place in the request, from 0.
    pub index: usize,
    /// The item code.
    pub code: ErrorCode,
    /// What is wrong and what to fix.
    pub message: String,
}

/// Why a publish request was refused as a whole.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rejection {
    /// The body is not JSON or not of the expected shape.
    Body(String),
    /// One or more items are invalid; nothing was delivered.
    Items(Vec<ItemError>),
}

/// An object's members, borrowed from the body: no value is parsed into a tree, and `data`
/// is passed on as the text it was sent as (the hot path of the publish API).
type Members<'a> = BTreeMap<&'a str, &'a RawValue>;

/// What validation needs to see inside `data`; every other member is skipped unparsed.
#[derive(Deserialize)]
struct DataProbe<'a> {
    #[serde(rename = "requestId", default, deserialize_with = "present")]
    request_id: bool,
    #[serde(borrow, default, deserialize_with = "some_raw")]
    address: Option<&'a RawValue>,
}

/// True for a member that is there at all, whatever its value (`null` included).
fn present<'de, D: Deserializer<'de>>(d: D) -> Result<bool, D::Error> {
    IgnoredAny::deserialize(d).map(|_| true)
}

/// `Some` for a member that is there, `null` included (an `Option` would read `null` as absent).
fn some_raw<'de, D: Deserializer<'de>>(d: D) -> Result<Option<&'de RawValue>, D::Error> {
    <&RawValue>::deserialize(d).map(Some)
}

/// Parses and validates a request body.
pub fn validate(body: &[u8], max_batch: usize) -> Result<Vec<Validated>, Rejection> {
    let whole: &RawValue = serde_json::from_slice(body).map_err(|e| {
        Rejection::Body(format!("body is not valid JSON ({e}); send {{\"channel\",\"data\"}} or {{\"publications\":[…]}}"))
    })?;
    let not_object = || {
        Rejection::Body(
            "body must be a JSON object: {\"channel\",\"data\"} or {\"publications\":[…]}".into(),
        )
    };
    if !whole.get().starts_with('{') {
        return Err(not_object());
    }
    let members: Members<'_> = serde_json::from_str(whole.get()).map_err(|_| not_object())?;
    let items: Vec<&RawValue> = match members.get("publications") {
        Some(list) => serde_json::from_str(list.get()).map_err(|_| {
            Rejection::Body("\"publications\" must be an array of {channel, data} objects".into())
        })?,
        None => vec![whole],
    };
    if items.is_empty() {
        return Err(Rejection::Body(
            "\"publications\" is empty: send at least one publication".into(),
        ));
    }
    if items.len() > max_batch {
        return Err(Rejection::Body(format!(
            "{} publications in one request; at most {max_batch} are allowed (publish.max_batch): split the batch",
            items.len()
        )));
    }
    let mut valid = Vec::with_capacity(items.len());
    let mut errors = Vec::new();
    for (index, item) in items.into_iter().enumerate() {
        match validate_item(item) {
            Ok(v) => valid.push(v),
            Err(Invalid { code, message }) => errors.push(ItemError {
                index,
                code,
                message,
            }),
        }
    }
    if errors.is_empty() {
        Ok(valid)
    } else {
        Err(Rejection::Items(errors))
    }
}

/// Validates one publication object `{channel, data, id?}` of the publish API.
pub fn validate_item(item: &RawValue) -> Result<Validated, Invalid> {
    let invalid = || {
        Invalid::new(
            ErrorCode::InvalidPublication,
            "a publication must be an object {channel, data}",
        )
    };
    if !item.get().starts_with('{') {
        return Err(invalid());
    }
    let members: Members<'_> = serde_json::from_str(item.get()).map_err(|_| invalid())?;
    if let Some(k) = members
        .keys()
        .find(|k| !matches!(**k, "channel" | "data" | "id"))
    {
        return Err(Invalid::new(
            ErrorCode::InvalidPublication,
            format!("unknown field \"{k}\"; a publication has channel, data and optional id"),
        ));
    }
    let channel = members
        .get("channel")
        .and_then(|raw| serde_json::from_str::<String>(raw.get()).ok())
        .ok_or_else(|| Invalid::new(ErrorCode::InvalidChannel, "\"channel\" must be a string"))?;
    let id = match members.get("id").map(|raw| raw.get()) {
        None | Some("null") => None,
        Some(raw) => match serde_json::from_str::<String>(raw) {
            Ok(s) => Some(s),
            Err(_) => return Err(Invalid::new(ErrorCode::InvalidId, id_rule())),
        },
    };
    let data = members
        .get("data")
        .copied()
        .ok_or_else(|| Invalid::new(ErrorCode::InvalidData, "\"data\" must be a JSON object"))?;
    validate_parts(channel, id, data)
}

/// The rules of the publish API for one publication, shared by every ingest path.
pub fn validate_parts(
    channel_text: String,
    id: Option<String>,
    data: &RawValue,
) -> Result<Validated, Invalid> {
    if id.as_deref().is_some_and(|id| !valid_id(id)) {
        return Err(Invalid::new(ErrorCode::InvalidId, id_rule()));
    }
    let channel = Channel::parse(&channel_text).map_err(|e| match e {
        ChannelError::Reserved => Invalid::new(ErrorCode::ReservedChannel, e.to_string()),
        _ => Invalid::new(ErrorCode::InvalidChannel, e.to_string()),
    })?;
    let not_object = || Invalid::new(ErrorCode::InvalidData, "\"data\" must be a JSON object");
    if !data.get().starts_with('{') {
        return Err(not_object());
    }
    let probe: DataProbe<'_> = serde_json::from_str(data.get()).map_err(|e| {
        Invalid::new(
            ErrorCode::InvalidData,
            format!("\"data\" must be a JSON object with each member once ({e})"),
        )
    })?;
    if probe.request_id {
        return Err(Invalid::new(ErrorCode::ReservedField, "data must not contain \"requestId\": clients would take the push for a reply and drop it"));
    }
    let canonical = match &channel {
        Channel::AccountActivity(a) => {
            if a.account.chain.is_wildcard() {
                return Err(Invalid::new(ErrorCode::WildcardChain, "account-activity publications must name a concrete chain (e.g. eip155:8453), not 0"));
            }
            if let Some(addr) = probe.address {
                let ns = a.account.chain.namespace();
                let same = serde_json::from_str::<String>(addr.get())
                    .ok()
                    .and_then(|s| normalize_address(ns, &s).ok())
                    .is_some_and(|s| s == a.account.address);
                if !same {
                    return Err(Invalid::new(ErrorCode::AddressMismatch, "data.address names another account than the channel: a wallet would show it as its own activity"));
                }
            }
            a.canonical()
        }
        Channel::MarketData(_) => channel_text,
    };
    Ok(Validated {
        channel,
        canonical,
        payload: data.get().to_owned(),
        id,
    })
}

/// An idempotency key the store can hold and compare: non-empty, at most [`MAX_ID_LEN`] bytes,
/// no control characters (a NUL cannot be stored at all, and the others would be invisible
/// in logs).
fn valid_id(id: &str) -> bool {
    !id.is_empty() && id.len() <= MAX_ID_LEN && !id.chars().any(char::is_control)
}

/// What [`valid_id`] accepts, for the rejection message.
fn id_rule() -> String {
    format!(
        "\"id\" must be a non-empty string of at most {MAX_ID_LEN} bytes without control \
         characters (such as NUL)"
    )
}

impl Validated {
    pub fn namespace(&self) -> Namespace {
        self.channel.namespace()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CH: &str = "account-activity.v1.eip155:8453:0xd14b2b8d5e5f1c3c1a4d6b7c9e0f1a2b3c4d5e6f";

    #[test]
    fn ids_the_store_cannot_hold_are_invalid_on_every_path() {
        let code = |id: &str| {
            let body = serde_json::json!({"channel": CH, "data": {}, "id": id}).to_string();
            match validate(body.as_bytes(), 10) {
                Ok(_) => "ok",
                Err(Rejection::Items(e)) => e[0].code.as_str(),
                Err(Rejection::Body(_)) => "body",
            }
        };
        assert_eq!(code("a\0b"), "invalid_id");
        assert_eq!(code("tab\there"), "invalid_id");
        assert_eq!(code(&"x".repeat(MAX_ID_LEN + 1)), "invalid_id");
        assert_eq!(code(&"x".repeat(MAX_ID_LEN)), "ok");
        assert_eq!(code("order-17/ü"), "ok");
        // The JetStream consumer hands the Nats-Msg-Id header to the same rules.
        let data = RawValue::from_string("{}".to_owned()).unwrap();
        let parts = |id: &str| validate_parts(CH.to_owned(), Some(id.to_owned()), &data);
        assert_eq!(parts("a\0").unwrap_err().code, ErrorCode::InvalidId);
        assert_eq!(
            parts(&"x".repeat(MAX_ID_LEN + 1)).unwrap_err().code,
            ErrorCode::InvalidId
        );
        assert!(parts("js:ACTIVITY:17").is_ok());
    }

    #[test]
    fn single_and_batch() {
        let one = validate(
            format!(r#"{{"channel":"{CH}","data":{{"a":1}}}}"#).as_bytes(),
            10,
        )
        .unwrap();
        assert_eq!(one.len(), 1);
        assert_eq!(one[0].payload, r#"{"a":1}"#);
        let two = validate(format!(r#"{{"publications":[{{"channel":"{CH}","data":{{}},"id":"x"}},{{"channel":"{CH}","data":{{}}}}]}}"#).as_bytes(), 10).unwrap();
        assert_eq!(two[0].id.as_deref(), Some("x"));
    }

    #[test]
    fn a_batch_lists_every_invalid_item() {
        let body = format!(
            r#"{{"publications":[{{"channel":"{CH}","data":{{}}}},{{"channel":"account-activity.v1.eip155:0:0xd14b2b8d5e5f1c3c1a4d6b7c9e0f1a2b3c4d5e6f","data":{{}}}},{{"channel":"system-notifications.v1.account-activity.v1","data":{{}}}},{{"channel":"{CH}","data":[]}},{{"channel":"{CH}","data":{{"address":"0x0000000000000000000000000000000000000001"}}}},{{"channel":"{CH}","data":{{"requestId":"r"}}}}]}}"#
        );
        let Err(Rejection::Items(errs)) = validate(body.as_bytes(), 10) else {
            panic!()
        };
        let got: Vec<(usize, &str)> = errs.iter().map(|e| (e.index, e.code.as_str())).collect();
        assert_eq!(
            got,
            vec![
                (1, "wildcard_chain"),
                (2, "reserved_channel"),
                (3, "invalid_data"),
                (4, "address_mismatch"),
                (5, "reserved_field")
            ]
        );
    }

    #[test]
    fn data_is_passed_on_as_sent_and_probed_without_parsing_it_into_a_tree() {
        let body = format!(r#"{{"channel":"{CH}","data":{{"z":1, "a":[{{"requestId":1}}]}}}}"#);
        let v = validate(body.as_bytes(), 10).unwrap();
        // Key order and spacing as the publisher wrote them; a nested requestId is no reply.
        assert_eq!(v[0].payload, r#"{"z":1, "a":[{"requestId":1}]}"#);
        let code = |data: &str| match validate(
            format!(r#"{{"channel":"{CH}","data":{data}}}"#).as_bytes(),
            10,
        ) {
            Err(Rejection::Items(e)) => e[0].code.as_str(),
            Ok(_) => "ok",
            Err(Rejection::Body(_)) => "body",
        };
        assert_eq!(code(r#"{"requestId":null}"#), "reserved_field");
        assert_eq!(code(r#"{"address":null}"#), "address_mismatch");
        assert_eq!(
            code(r#"{"address":"0xD14B2B8D5E5F1C3C1A4D6B7C9E0F1A2B3C4D5E6F"}"#),
            "ok"
        );
        assert_eq!(
            code(r#"{"address":"0xd14b2b8d5e5f1c3c1a4d6b7c9e0f1a2b3c4d5e6f","address":"0x1"}"#),
            "invalid_data"
        );
        assert_eq!(code(r#""text""#), "invalid_data");
    }

    #[test]
    fn body_shape_errors() {
        assert!(matches!(validate(b"nope", 10), Err(Rejection::Body(_))));
        assert!(matches!(validate(b"[]", 10), Err(Rejection::Body(_))));
        assert!(matches!(
            validate(br#"{"publications":[]}"#, 10),
            Err(Rejection::Body(_))
        ));
        let many = format!(
            r#"{{"publications":[{}]}}"#,
            vec![format!(r#"{{"channel":"{CH}","data":{{}}}}"#); 3].join(",")
        );
        assert!(matches!(
            validate(many.as_bytes(), 2),
            Err(Rejection::Body(_))
        ));
    }
}
