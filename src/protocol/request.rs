//! Client → server messages: parsing text frames into requests.
//!
//! Parsing never panics and always tells what was wrong; when the frame carried a readable
//! `data.requestId`, the error keeps it so the reply can echo it (the real client otherwise
//! only notices after its 30 s request timeout).

use std::collections::HashMap;

use serde::Deserialize;
use serde_json::Value;

use super::error::ErrorCode;
use super::Position;

/// A well-formed client request.
#[derive(Debug, Clone, PartialEq)]
pub enum Request {
    Subscribe {
        request_id: String,
        channels: Vec<String>,
        /// Resume positions keyed by the channel string exactly as in `channels`.
        positions: HashMap<String, Position>,
    },
    Unsubscribe {
        request_id: String,
        subscription: Option<String>,
        channels: Vec<String>,
    },
    Ack {
        message_ids: Vec<String>,
    },
}

/// A request that could not be understood.
#[derive(Debug, Clone, PartialEq)]
pub struct RequestError {
    pub code: ErrorCode,
    pub message: String,
    pub request_id: Option<String>,
}

/// Parses one text frame.
pub fn parse(text: &str) -> Result<Request, RequestError> {
    let value: Value = serde_json::from_str(text).map_err(|e| RequestError {
        code: ErrorCode::InvalidJson,
        message: format!("message is not valid JSON ({e}); send one JSON object per text frame"),
        request_id: None,
    })?;
    let request_id = value
        .pointer("/data/requestId")
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
        .map(str::to_owned);
    let fail = |code, message: &str| RequestError {
        code,
        message: message.to_owned(),
        request_id: request_id.clone(),
    };
    let Some(obj) = value.as_object() else {
        return Err(fail(
            ErrorCode::InvalidMessage,
            "message must be a JSON object with an \"event\" field",
        ));
    };
    let Some(event) = obj.get("event").and_then(Value::as_str) else {
        return Err(fail(
            ErrorCode::InvalidMessage,
            "message has no string \"event\" field; expected subscribe, unsubscribe or ack",
        ));
    };
    let data = obj.get("data").cloned().unwrap_or(Value::Null);
    match event {
        "subscribe" | "unsubscribe" => {
            #[derive(Deserialize)]
            #[serde(rename_all = "camelCase")]
            struct Body {
                #[serde(default)]
                channels: Option<Vec<String>>,
                #[serde(default)]
                subscription: Option<String>,
                #[serde(default)]
                positions: Option<HashMap<String, Position>>,
            }
            let Some(request_id) = request_id.clone() else {
                return Err(fail(
                    ErrorCode::InvalidMessage,
                    "data.requestId must be a non-empty string",
                ));
            };
            let body: Body = serde_json::from_value(data).map_err(|e| {
                fail(
                    ErrorCode::InvalidMessage,
                    &format!("malformed {event} data: {e}"),
                )
            })?;
            let channels = body.channels.unwrap_or_default();
            if event == "subscribe" {
                if channels.is_empty() {
                    return Err(fail(
                        ErrorCode::InvalidMessage,
                        "data.channels must be a non-empty array of channel strings",
                    ));
                }
                Ok(Request::Subscribe {
                    request_id,
                    channels,
                    positions: body.positions.unwrap_or_default(),
                })
            } else {
                Ok(Request::Unsubscribe {
                    request_id,
                    subscription: body.subscription.filter(|s| !s.is_empty()),
                    channels,
                })
            }
        }
        "ack" => {
            let ids = data
                .get("messageIds")
                .and_then(Value::as_array)
                .ok_or_else(|| {
                    fail(
                        ErrorCode::InvalidMessage,
                        "ack needs data.messageIds, an array of strings",
                    )
                })?;
            Ok(Request::Ack {
                message_ids: ids
                    .iter()
                    .filter_map(Value::as_str)
                    .map(str::to_owned)
                    .collect(),
            })
        }
        other => {
            let shown: String = other.chars().take(32).collect();
            Err(fail(
                ErrorCode::UnknownEvent,
                &format!("unknown event \"{shown}\"; expected subscribe, unsubscribe or ack"),
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subscribe_with_positions() {
        let r = parse(r#"{"event":"subscribe","data":{"requestId":"r1","channels":["a"],"positions":{"a":{"epoch":"e","offset":7}}}}"#).unwrap();
        let Request::Subscribe {
            request_id,
            channels,
            positions,
        } = r
        else {
            panic!()
        };
        assert_eq!(
            (request_id.as_str(), channels),
            ("r1", vec!["a".to_owned()])
        );
        assert_eq!(
            positions["a"],
            Position {
                epoch: "e".into(),
                offset: 7
            }
        );
    }

    #[test]
    fn errors_keep_a_readable_request_id() {
        let e = parse(r#"{"event":"nope","data":{"requestId":"r9"}}"#).unwrap_err();
        assert_eq!(
            (e.code, e.request_id.as_deref()),
            (ErrorCode::UnknownEvent, Some("r9"))
        );
        let e =
            parse(r#"{"event":"subscribe","data":{"requestId":"r2","channels":[1]}}"#).unwrap_err();
        assert_eq!(
            (e.code, e.request_id.as_deref()),
            (ErrorCode::InvalidMessage, Some("r2"))
        );
        assert_eq!(parse("{").unwrap_err().code, ErrorCode::InvalidJson);
        assert_eq!(parse("[]").unwrap_err().code, ErrorCode::InvalidMessage);
        assert_eq!(
            parse(r#"{"data":{}}"#).unwrap_err().code,
            ErrorCode::InvalidMessage
        );
        assert_eq!(
            parse(r#"{"event":"subscribe","data":{"channels":["a"]}}"#)
                .unwrap_err()
                .code,
            ErrorCode::InvalidMessage
        );
    }

    #[test]
    fn unsubscribe_and_ack() {
        let r = parse(r#"{"event":"unsubscribe","data":{"requestId":"r","subscription":"s","channels":["c"]}}"#).unwrap();
        assert_eq!(
            r,
            Request::Unsubscribe {
                request_id: "r".into(),
                subscription: Some("s".into()),
                channels: vec!["c".into()]
            }
        );
        let r = parse(r#"{"event":"ack","data":{"messageIds":["m1","m2"]}}"#).unwrap();
        assert_eq!(
            r,
            Request::Ack {
                message_ids: vec!["m1".into(), "m2".into()]
            }
        );
    }
}
