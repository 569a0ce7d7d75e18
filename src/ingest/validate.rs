//! Validation of publish requests: a single publication or a batch, validated whole.
//!
//! Every item is checked before anything is delivered; the rejection lists every invalid item
//! with its index, a stable code and a message saying what to fix.

use serde::Serialize;
use serde_json::Value;

use crate::protocol::caip::normalize_address;
use crate::protocol::{Channel, ChannelError, Namespace};

/// The longest idempotency key accepted.
pub const MAX_ID_LEN: usize = 128;

/// A publication that passed validation.
#[derive(Debug, Clone)]
pub struct Validated {
    pub channel: Channel,
    /// Canonical channel text (normalised address, concrete chain).
    pub canonical: String,
    /// Compact JSON text of `data`.
    pub payload: String,
    /// The publisher's idempotency key.
    pub id: Option<String>,
}

/// One invalid item of a publish request.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct ItemError {
    pub index: usize,
    pub code: &'static str,
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

/// Parses and validates a request body.
pub fn validate(body: &[u8], max_batch: usize) -> Result<Vec<Validated>, Rejection> {
    let value: Value = serde_json::from_slice(body).map_err(|e| {
        Rejection::Body(format!("body is not valid JSON ({e}); send {{\"channel\",\"data\"}} or {{\"publications\":[…]}}"))
    })?;
    let items: Vec<Value> = match value {
        Value::Object(mut obj) if obj.contains_key("publications") => {
            match obj.remove("publications") {
                Some(Value::Array(items)) => items,
                _ => {
                    return Err(Rejection::Body(
                        "\"publications\" must be an array of {channel, data} objects".into(),
                    ))
                }
            }
        }
        Value::Object(_) => vec![value],
        _ => {
            return Err(Rejection::Body(
                "body must be a JSON object: {\"channel\",\"data\"} or {\"publications\":[…]}"
                    .into(),
            ))
        }
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
            Err((code, message)) => errors.push(ItemError {
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

/// Validates one publication object `{channel, data, id?}`: the rules of the publish API, shared
/// by every ingest path. The error is a stable code and a message saying what to fix.
pub fn validate_item(item: Value) -> Result<Validated, (&'static str, String)> {
    let Value::Object(mut obj) = item else {
        return Err((
            "invalid_publication",
            "a publication must be an object {channel, data}".into(),
        ));
    };
    if let Some(k) = obj
        .keys()
        .find(|k| !matches!(k.as_str(), "channel" | "data" | "id"))
    {
        return Err((
            "invalid_publication",
            format!("unknown field \"{k}\"; a publication has channel, data and optional id"),
        ));
    }
    let Some(Value::String(channel_text)) = obj.remove("channel") else {
        return Err(("invalid_channel", "\"channel\" must be a string".into()));
    };
    let channel = Channel::parse(&channel_text).map_err(|e| match e {
        ChannelError::Reserved => ("reserved_channel", e.to_string()),
        _ => ("invalid_channel", e.to_string()),
    })?;
    let id = match obj.remove("id") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) if !s.is_empty() && s.len() <= MAX_ID_LEN => Some(s),
        Some(_) => {
            return Err((
                "invalid_id",
                format!("\"id\" must be a non-empty string of at most {MAX_ID_LEN} characters"),
            ))
        }
    };
    let Some(Value::Object(data)) = obj.remove("data") else {
        return Err(("invalid_data", "\"data\" must be a JSON object".into()));
    };
    if data.contains_key("requestId") {
        return Err(("reserved_field", "data must not contain \"requestId\": clients would take the push for a reply and drop it".into()));
    }
    let canonical = match &channel {
        Channel::AccountActivity(a) => {
            if a.account.chain.is_wildcard() {
                return Err(("wildcard_chain", "account-activity publications must name a concrete chain (e.g. eip155:8453), not 0".into()));
            }
            if let Some(addr) = data.get("address") {
                let ns = a.account.chain.namespace();
                let same = addr
                    .as_str()
                    .and_then(|s| normalize_address(ns, s).ok())
                    .is_some_and(|s| s == a.account.address);
                if !same {
                    return Err(("address_mismatch", "data.address names another account than the channel: a wallet would show it as its own activity".into()));
                }
            }
            a.canonical()
        }
        Channel::MarketData(_) => channel_text,
    };
    let payload = Value::Object(data).to_string();
    Ok(Validated {
        channel,
        canonical,
        payload,
        id,
    })
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
        let got: Vec<(usize, &str)> = errs.iter().map(|e| (e.index, e.code)).collect();
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
