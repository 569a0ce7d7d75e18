//! Property tests of the request parser and the channel grammar (CAIP-2/10/19): any input is
//! either parsed or refused with a documented error, never a panic, and parsing what was
//! serialised gives back the same value (and the same text).

use std::collections::HashMap;

use activity_gateway::protocol::caip::{AccountId, AssetId, ChainId};
use activity_gateway::protocol::request::{self, Request};
use activity_gateway::protocol::Position;
use activity_gateway::protocol::{Channel, ErrorCode};
use proptest::prelude::*;
use serde_json::{json, Value};

/// Codes docs/protocol.md gives for a frame that is not a request.
const REQUEST_CODES: [ErrorCode; 3] = [
    ErrorCode::InvalidJson,
    ErrorCode::InvalidMessage,
    ErrorCode::UnknownEvent,
];

// === Strategies ===

/// Any JSON value, nested a few levels.
fn any_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<f64>().prop_map(Value::from),
        ".{0,12}".prop_map(Value::String),
    ];
    leaf.prop_recursive(3, 24, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::hash_map("[a-zA-Z]{1,12}", inner, 0..6)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// Frames shaped like requests, with any part possibly of the wrong type.
fn request_like() -> impl Strategy<Value = Value> {
    let event = prop_oneof![
        Just(json!("subscribe")),
        Just(json!("unsubscribe")),
        Just(json!("ack")),
        any_json(),
    ];
    let field = |name: &'static str| {
        prop::option::of(any_json()).prop_map(move |v| v.map(|v| (name.to_owned(), v)))
    };
    let data = (
        field("requestId"),
        field("channels"),
        field("subscription"),
        field("positions"),
        field("messageIds"),
    )
        .prop_map(|(a, b, c, d, e)| Value::Object([a, b, c, d, e].into_iter().flatten().collect()));
    (event, prop::option::of(data)).prop_map(|(event, data)| {
        let mut frame = json!({ "event": event });
        if let Some(data) = data {
            frame["data"] = data;
        }
        frame
    })
}

fn hex40() -> impl Strategy<Value = String> {
    "[0-9a-fA-F]{40}".prop_map(|h| format!("0x{h}"))
}

/// Valid CAIP-2 chain ids of the namespaces the gateway knows and of generic ones.
fn chain_id() -> impl Strategy<Value = String> {
    prop_oneof![
        (0u64..100_000).prop_map(|n| format!("eip155:{n}")),
        "[1-9A-HJ-NP-Za-km-z]{32}".prop_map(|r| format!("solana:{r}")),
        ("[a-z0-9-]{3,8}", "[-_a-zA-Z0-9]{1,32}")
            .prop_filter("eip155 has stricter rules", |(n, _)| n != "eip155")
            .prop_map(|(n, r)| format!("{n}:{r}")),
    ]
}

/// Valid CAIP-10 account ids.
fn account_id() -> impl Strategy<Value = String> {
    prop_oneof![
        ((0u64..100_000), hex40()).prop_map(|(n, a)| format!("eip155:{n}:{a}")),
        "[1-9A-HJ-NP-Za-km-z]{32,44}"
            .prop_map(|a| format!("solana:5eykt4UsFv8P8NJdTREpY1vzqKqZKvdp:{a}")),
        (
            "[a-z0-9-]{3,8}",
            "[-_a-zA-Z0-9]{1,32}",
            "[-.%a-zA-Z0-9]{1,64}"
        )
            .prop_filter("eip155 and solana have stricter rules", |(n, _, _)| {
                n != "eip155" && n != "solana"
            })
            .prop_map(|(n, r, a)| format!("{n}:{r}:{a}")),
    ]
}

/// Valid channels of both namespaces.
fn valid_channel() -> impl Strategy<Value = String> {
    prop_oneof![
        account_id().prop_map(|a| format!("account-activity.v1.{a}")),
        (
            (0u64..100_000),
            hex40(),
            "[a-zA-Z0-9]{1,8}",
            "[a-zA-Z0-9]{1,16}"
        )
            .prop_map(|(n, contract, interval, currency)| format!(
                "market-data.v1.eip155:{n}/erc20:{contract}.{interval}.{currency}"
            )),
        ((0u64..100_000), "[a-zA-Z0-9]{1,8}", "[a-zA-Z0-9]{1,16}").prop_map(
            |(n, interval, currency)| format!(
                "market-data.v1.eip155:{n}/slip44:60.{interval}.{currency}"
            )
        ),
    ]
}

/// Near misses: valid prefixes followed by text from the grammar's alphabet and a little more.
fn channel_like() -> impl Strategy<Value = String> {
    let prefix = prop_oneof![
        Just(""),
        Just("account-activity.v1."),
        Just("market-data.v1."),
        Just("system-notifications.v1."),
        Just("account-activity.v1.eip155:"),
        Just("account-activity.v1.eip155:0:0x"),
        Just("market-data.v1.eip155:1/"),
    ];
    (prefix, "[-a-zA-Z0-9:._%/ \u{0}é]{0,300}").prop_map(|(p, rest)| format!("{p}{rest}"))
}

/// Well-formed requests.
fn valid_request() -> impl Strategy<Value = Request> {
    let id = "[a-zA-Z0-9-]{1,36}";
    let channels = prop::collection::vec(valid_channel(), 1..5);
    let position =
        ("[a-z0-9]{1,16}", any::<u64>()).prop_map(|(epoch, offset)| Position { epoch, offset });
    prop_oneof![
        (id, channels, prop::collection::vec(position, 0..3)).prop_map(
            |(request_id, channels, positions)| {
                let positions: HashMap<_, _> = channels.iter().cloned().zip(positions).collect();
                Request::Subscribe {
                    request_id,
                    channels,
                    positions,
                }
            }
        ),
        (
            id,
            prop::option::of("[a-zA-Z0-9-]{1,36}"),
            prop::collection::vec(valid_channel(), 0..5)
        )
            .prop_map(
                |(request_id, subscription, channels)| Request::Unsubscribe {
                    request_id,
                    subscription,
                    channels,
                }
            ),
        prop::collection::vec("[a-zA-Z0-9:-]{1,40}", 0..10)
            .prop_map(|message_ids| Request::Ack { message_ids }),
    ]
}

/// A request as a client sends it.
fn wire(request: &Request) -> Value {
    match request {
        Request::Subscribe {
            request_id,
            channels,
            positions,
        } => {
            let mut data = json!({ "requestId": request_id, "channels": channels });
            if !positions.is_empty() {
                data["positions"] = serde_json::to_value(positions).unwrap();
            }
            json!({ "event": "subscribe", "data": data })
        }
        Request::Unsubscribe {
            request_id,
            subscription,
            channels,
        } => {
            let mut data = json!({ "requestId": request_id, "channels": channels });
            if let Some(s) = subscription {
                data["subscription"] = json!(s);
            }
            json!({ "event": "unsubscribe", "data": data })
        }
        Request::Ack { message_ids } => {
            json!({ "event": "ack", "data": { "messageIds": message_ids } })
        }
    }
}

/// An error for a frame: a documented code, a message, and the frame's `data.requestId`
/// echoed when it had a non-empty string one.
fn assert_documented(frame: &str, err: &request::RequestError) {
    assert!(
        REQUEST_CODES.contains(&err.code),
        "{:?} for {frame}",
        err.code
    );
    assert!(!err.message.is_empty());
    let sent = serde_json::from_str::<Value>(frame).ok().and_then(|v| {
        v.pointer("/data/requestId")
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
    });
    assert_eq!(err.request_id, sent, "requestId not echoed for {frame}");
}

/// Canonical text of a parsed channel, which must parse to the same channel.
fn channel_text(channel: &Channel) -> String {
    match channel {
        Channel::AccountActivity(a) => a.canonical(),
        Channel::MarketData(m) => m.key.clone(),
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn any_text_is_a_request_or_a_documented_error(text in "\\PC{0,200}") {
        if let Err(err) = request::parse(&text) {
            assert_documented(&text, &err);
        }
    }

    #[test]
    fn any_request_shaped_frame_is_a_request_or_a_documented_error(frame in request_like()) {
        let text = frame.to_string();
        match request::parse(&text) {
            Ok(parsed) => {
                // What parsed serialises to a frame that parses the same.
                prop_assert_eq!(request::parse(&wire(&parsed).to_string()), Ok(parsed));
            }
            Err(err) => assert_documented(&text, &err),
        }
    }

    #[test]
    fn a_serialised_request_parses_back_to_itself(req in valid_request()) {
        let text = wire(&req).to_string();
        let parsed = request::parse(&text).expect("a valid request parses");
        prop_assert_eq!(&parsed, &req);
        prop_assert_eq!(wire(&parsed).to_string(), text);
    }

    #[test]
    fn any_channel_text_is_a_channel_or_an_error(text in channel_like()) {
        match Channel::parse(&text) {
            Ok(channel) => {
                let canonical = channel_text(&channel);
                let again = Channel::parse(&canonical).expect("canonical text parses");
                prop_assert_eq!(&again, &channel);
                prop_assert_eq!(channel_text(&again), canonical);
            }
            Err(err) => prop_assert!(!err.to_string().is_empty()),
        }
    }

    #[test]
    fn a_valid_channel_parses_and_its_canonical_form_is_stable(text in valid_channel()) {
        let channel = Channel::parse(&text).expect("a valid channel parses");
        let canonical = channel_text(&channel);
        // Only the case of EVM addresses (and of the currency) may change.
        prop_assert_eq!(canonical.to_ascii_lowercase(), text.to_ascii_lowercase());
        let again = Channel::parse(&canonical).expect("canonical text parses");
        prop_assert_eq!(&again, &channel);
        prop_assert_eq!(channel_text(&again), canonical);
    }

    #[test]
    fn caip_ids_parse_or_refuse_and_display_round_trips(text in "[-a-zA-Z0-9:._%/]{0,80}") {
        if let Ok(chain) = ChainId::parse(&text) {
            prop_assert_eq!(ChainId::parse(&chain.to_string()), Ok(chain));
        }
        if let Ok(account) = AccountId::parse(&text) {
            let shown = account.to_string();
            prop_assert_eq!(AccountId::parse(&shown), Ok(account));
        }
        if let Ok(asset) = AssetId::parse(&text) {
            prop_assert_eq!(AssetId::parse(&asset.normalized).map(|a| a.normalized), Ok(asset.normalized.clone()));
        }
    }

    #[test]
    fn valid_caip_ids_parse(chain in chain_id(), account in account_id()) {
        let parsed = ChainId::parse(&chain).expect("a valid chain id parses");
        prop_assert_eq!(parsed.to_string(), chain);
        let parsed = AccountId::parse(&account).expect("a valid account id parses");
        prop_assert_eq!(parsed.to_string().to_ascii_lowercase(), account.to_ascii_lowercase());
    }
}
