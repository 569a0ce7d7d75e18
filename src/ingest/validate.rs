//! Validation of publish requests: a single publication or a batch, validated whole.
//!
//! Every item is checked before anything is delivered; the rejection lists every invalid item
//! with its index, a stable code and a message saying what to fix.
//!
//! The body is read in one pass: each object's members are sorted into the parts validation
//! needs as they are met, and a member of the wrong type is recorded, not raised, so that one
//! bad item neither hides the others nor turns into a body error. Only JSON syntax errors
//! abort the pass. `data` is kept as the text it was sent as and probed once more for the
//! members validation looks at.

use std::borrow::Cow;
use std::fmt;

use serde::de::{self, DeserializeSeed, IgnoredAny, MapAccess, SeqAccess, Visitor};
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

// === Reading the body ===

/// The scalar visitor methods of a visitor that reads every scalar as `$value`.
macro_rules! scalars_are {
    ($value:expr) => {
        fn visit_bool<E: de::Error>(self, _: bool) -> Result<Self::Value, E> {
            Ok($value)
        }
        fn visit_i64<E: de::Error>(self, _: i64) -> Result<Self::Value, E> {
            Ok($value)
        }
        fn visit_u64<E: de::Error>(self, _: u64) -> Result<Self::Value, E> {
            Ok($value)
        }
        fn visit_f64<E: de::Error>(self, _: f64) -> Result<Self::Value, E> {
            Ok($value)
        }
    };
}

/// The string, `null` and array visitor methods of a visitor that reads them as `$value`.
macro_rules! strings_null_and_arrays_are {
    ($value:expr) => {
        fn visit_str<E: de::Error>(self, _: &str) -> Result<Self::Value, E> {
            Ok($value)
        }
        fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok($value)
        }
        fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Self::Value, A::Error> {
            skip_seq(seq).map(|()| $value)
        }
    };
}

/// Reads an array to its end without keeping anything.
fn skip_seq<'de, A: SeqAccess<'de>>(mut seq: A) -> Result<(), A::Error> {
    while seq.next_element::<IgnoredAny>()?.is_some() {}
    Ok(())
}

/// Reads an object to its end without keeping anything.
fn skip_map<'de, A: MapAccess<'de>>(mut map: A) -> Result<(), A::Error> {
    while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
    Ok(())
}

/// A member where a string is expected: the string (borrowed from the body unless it has
/// escapes), `null`, or a value of another type.
enum Text<'a> {
    Str(Cow<'a, str>),
    Null,
    Other,
}

impl<'de> Deserialize<'de> for Text<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Text<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("any JSON value")
            }
            scalars_are!(Text::Other);
            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
                Ok(Text::Str(Cow::Borrowed(v)))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                Ok(Text::Str(Cow::Owned(v.to_owned())))
            }
            fn visit_string<E: de::Error>(self, v: String) -> Result<Self::Value, E> {
                Ok(Text::Str(Cow::Owned(v)))
            }
            fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
                Ok(Text::Null)
            }
            fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Self::Value, A::Error> {
                skip_seq(seq).map(|()| Text::Other)
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
                skip_map(map).map(|()| Text::Other)
            }
        }
        d.deserialize_any(V)
    }
}

/// A member name: borrowed from the body, or `Escaped` when it contains escapes (no name a
/// publication has is sent that way, and such an object is refused).
enum Key<'a> {
    Name(&'a str),
    Escaped,
}

impl<'de> Deserialize<'de> for Key<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Key<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a member name")
            }
            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
                Ok(Key::Name(v))
            }
            fn visit_str<E: de::Error>(self, _: &str) -> Result<Self::Value, E> {
                Ok(Key::Escaped)
            }
        }
        d.deserialize_str(V)
    }
}

/// The members of an object read as a publication (the body itself, or an item of
/// `publications`). A member met twice keeps its last value.
#[derive(Default)]
struct Fields<'a> {
    /// A member name with escapes was met.
    escaped: bool,
    /// The first, in byte order, of the members a publication does not have.
    unknown: Option<&'a str>,
    /// `channel`, as whatever type it was sent.
    channel: Option<Text<'a>>,
    /// `data`, as the text it was sent as.
    data: Option<&'a RawValue>,
    /// `id`, as whatever type it was sent.
    id: Option<Text<'a>>,
    /// `publications`: read only on the body itself, which it makes a batch.
    publications: Option<List<'a>>,
}

/// Where an object is read: the body itself (which may hold `publications`, of which at most
/// `max_batch` items are kept), or an item of `publications`.
#[derive(Clone, Copy)]
enum Place {
    Body { max_batch: usize },
    Item,
}

impl<'de> Fields<'de> {
    /// Reads an object's members; the body's `publications` too.
    fn read<A: MapAccess<'de>>(mut map: A, place: Place) -> Result<Self, A::Error> {
        let mut f = Fields::default();
        while let Some(key) = map.next_key::<Key<'de>>()? {
            match key {
                Key::Name("channel") => f.channel = Some(map.next_value()?),
                Key::Name("data") => f.data = Some(map.next_value()?),
                Key::Name("id") => f.id = Some(map.next_value()?),
                Key::Name("publications") => match place {
                    Place::Body { max_batch } => {
                        f.publications = Some(map.next_value_seed(ListSeed { max_batch })?)
                    }
                    Place::Item => f.unknown_member("publications", &mut map)?,
                },
                Key::Name(name) => f.unknown_member(name, &mut map)?,
                Key::Escaped => {
                    f.escaped = true;
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(f)
    }

    /// Skips the value of a member a publication does not have, remembering its name.
    fn unknown_member<A: MapAccess<'de>>(
        &mut self,
        name: &'de str,
        map: &mut A,
    ) -> Result<(), A::Error> {
        if self.unknown.is_none_or(|u| name < u) {
            self.unknown = Some(name);
        }
        map.next_value::<IgnoredAny>().map(|_| ())
    }

    /// Validates the publication these members make.
    fn validate(self) -> Result<Validated, Invalid> {
        if self.escaped {
            return Err(not_a_publication());
        }
        if let Some(k) = self.unknown {
            return Err(Invalid::new(
                ErrorCode::InvalidPublication,
                format!("unknown field \"{k}\"; a publication has channel, data and optional id"),
            ));
        }
        let Some(Text::Str(channel)) = self.channel else {
            return Err(Invalid::new(
                ErrorCode::InvalidChannel,
                "\"channel\" must be a string",
            ));
        };
        let id = match self.id {
            None | Some(Text::Null) => None,
            Some(Text::Str(id)) => Some(id),
            Some(Text::Other) => return Err(Invalid::new(ErrorCode::InvalidId, id_rule())),
        };
        let data = self.data.ok_or_else(data_not_object)?;
        check(channel, id, data)
    }
}

/// The error of an item that is not an object of plainly named members.
fn not_a_publication() -> Invalid {
    Invalid::new(
        ErrorCode::InvalidPublication,
        "a publication must be an object {channel, data}",
    )
}

/// The error of a `data` that is missing or not an object.
fn data_not_object() -> Invalid {
    Invalid::new(ErrorCode::InvalidData, "\"data\" must be a JSON object")
}

/// The body, or one item of `publications`: an object's members or another value.
enum Object<'a> {
    Members(Fields<'a>),
    Not,
}

/// Reads an object with [`Fields::read`].
struct ObjectVisitor {
    /// The body, or an item of `publications`.
    place: Place,
}

impl<'de> Visitor<'de> for ObjectVisitor {
    type Value = Object<'de>;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }
    scalars_are!(Object::Not);
    strings_null_and_arrays_are!(Object::Not);
    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
        Fields::read(map, self.place).map(Object::Members)
    }
}

impl<'de> Deserialize<'de> for Object<'de> {
    /// Reads an item of `publications`.
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(ObjectVisitor { place: Place::Item })
    }
}

/// The value of `publications`: its first `max_batch` items and how many there are, or
/// another value. Items past the bound are counted, not kept: a body of many tiny items would
/// otherwise cost many times its size in memory before the batch limit refused it.
enum List<'a> {
    Items { kept: Vec<Object<'a>>, count: usize },
    Not,
}

/// Reads `publications`, keeping at most `max_batch` items.
struct ListSeed {
    max_batch: usize,
}

impl<'de> DeserializeSeed<'de> for ListSeed {
    type Value = List<'de>;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<List<'de>, D::Error> {
        struct V {
            max_batch: usize,
        }
        impl<'de> Visitor<'de> for V {
            type Value = List<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("any JSON value")
            }
            scalars_are!(List::Not);
            fn visit_str<E: de::Error>(self, _: &str) -> Result<Self::Value, E> {
                Ok(List::Not)
            }
            fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
                Ok(List::Not)
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
                skip_map(map).map(|()| List::Not)
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
                let mut kept = Vec::new();
                while kept.len() < self.max_batch {
                    match seq.next_element()? {
                        Some(item) => kept.push(item),
                        None => {
                            let count = kept.len();
                            return Ok(List::Items { kept, count });
                        }
                    }
                }
                let mut count = kept.len();
                while seq.next_element::<IgnoredAny>()?.is_some() {
                    count += 1;
                }
                Ok(List::Items { kept, count })
            }
        }
        d.deserialize_any(V {
            max_batch: self.max_batch,
        })
    }
}

/// What validation needs to see inside `data`; every other member is skipped unparsed.
#[derive(Deserialize)]
struct DataProbe<'a> {
    #[serde(rename = "requestId", default, deserialize_with = "present")]
    request_id: bool,
    #[serde(borrow, default, deserialize_with = "some_text")]
    address: Option<Text<'a>>,
}

/// True for a member that is there at all, whatever its value (`null` included).
fn present<'de, D: Deserializer<'de>>(d: D) -> Result<bool, D::Error> {
    IgnoredAny::deserialize(d).map(|_| true)
}

/// `Some` for a member that is there, `null` included (an `Option` would read `null` as absent).
fn some_text<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Text<'de>>, D::Error> {
    Text::deserialize(d).map(Some)
}

// === Validating ===

/// Parses and validates a request body.
pub fn validate(body: &[u8], max_batch: usize) -> Result<Vec<Validated>, Rejection> {
    // Every value is accepted by the visitors above, so only a syntax error fails the parse.
    let not_json = |e: serde_json::Error| {
        Rejection::Body(format!("body is not valid JSON ({e}); send {{\"channel\",\"data\"}} or {{\"publications\":[…]}}"))
    };
    let mut de = serde_json::Deserializer::from_slice(body);
    let top = de
        .deserialize_any(ObjectVisitor {
            place: Place::Body { max_batch },
        })
        .map_err(not_json)?;
    de.end().map_err(not_json)?;
    let not_object = || {
        Rejection::Body(
            "body must be a JSON object: {\"channel\",\"data\"} or {\"publications\":[…]}".into(),
        )
    };
    let mut top = match top {
        Object::Members(f) if !f.escaped => f,
        _ => return Err(not_object()),
    };
    let (items, count) = match top.publications.take() {
        Some(List::Items { kept, count }) => (kept, count),
        Some(List::Not) => {
            return Err(Rejection::Body(
                "\"publications\" must be an array of {channel, data} objects".into(),
            ))
        }
        None => (vec![Object::Members(top)], 1),
    };
    if count == 0 {
        return Err(Rejection::Body(
            "\"publications\" is empty: send at least one publication".into(),
        ));
    }
    if count > max_batch {
        return Err(Rejection::Body(format!(
            "{count} publications in one request; at most {max_batch} are allowed (publish.max_batch): split the batch"
        )));
    }
    let mut valid = Vec::with_capacity(items.len());
    let mut errors = Vec::new();
    for (index, item) in items.into_iter().enumerate() {
        let checked = match item {
            Object::Members(f) => f.validate(),
            Object::Not => Err(not_a_publication()),
        };
        match checked {
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

/// The rules of the publish API for one publication, shared by every ingest path.
pub fn validate_parts(
    channel_text: String,
    id: Option<String>,
    data: &RawValue,
) -> Result<Validated, Invalid> {
    check(Cow::Owned(channel_text), id.map(Cow::Owned), data)
}

/// [`validate_parts`] on text that may still be borrowed from the body.
fn check(
    channel_text: Cow<'_, str>,
    id: Option<Cow<'_, str>>,
    data: &RawValue,
) -> Result<Validated, Invalid> {
    if id.as_deref().is_some_and(|id| !valid_id(id)) {
        return Err(Invalid::new(ErrorCode::InvalidId, id_rule()));
    }
    let channel = Channel::parse(&channel_text).map_err(|e| match e {
        ChannelError::Reserved => Invalid::new(ErrorCode::ReservedChannel, e.to_string()),
        _ => Invalid::new(ErrorCode::InvalidChannel, e.to_string()),
    })?;
    if !data.get().starts_with('{') {
        return Err(data_not_object());
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
                let same = match addr {
                    Text::Str(s) => normalize_address(ns, &s).is_ok_and(|s| s == a.account.address),
                    Text::Null | Text::Other => false,
                };
                if !same {
                    return Err(Invalid::new(ErrorCode::AddressMismatch, "data.address names another account than the channel: a wallet would show it as its own activity"));
                }
            }
            // The channel text is the chain as parsed, then the address, which normalising
            // keeps at its length: text that ends with the normalised address is canonical.
            if channel_text.ends_with(a.account.address.as_str()) {
                channel_text.into_owned()
            } else {
                a.canonical()
            }
        }
        Channel::MarketData(_) => channel_text.into_owned(),
    };
    Ok(Validated {
        channel,
        canonical,
        payload: data.get().to_owned(),
        id: id.map(Cow::into_owned),
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

    #[test]
    fn items_past_the_batch_limit_are_counted_not_kept() {
        let many = format!(r#"[{}]"#, vec!["{}"; 5000].join(","));
        let mut de = serde_json::Deserializer::from_str(&many);
        let Ok(List::Items { kept, count }) = ListSeed { max_batch: 3 }.deserialize(&mut de) else {
            panic!("an array is a list")
        };
        assert_eq!((kept.len(), count), (3, 5000));
        let body = format!(r#"{{"publications":{many}}}"#);
        match validate(body.as_bytes(), 3) {
            Err(Rejection::Body(m)) => assert_eq!(
                m,
                "5000 publications in one request; at most 3 are allowed (publish.max_batch): \
                 split the batch"
            ),
            _ => panic!("a batch over the limit is refused whole"),
        }
    }

    /// The code of each item's error, by index, for a batch of `items`.
    fn codes(items: &str) -> Vec<(usize, String)> {
        match validate(format!(r#"{{"publications":[{items}]}}"#).as_bytes(), 20) {
            Err(Rejection::Items(e)) => e
                .into_iter()
                .map(|e| (e.index, e.code.as_str().to_owned()))
                .collect(),
            Ok(_) => vec![],
            Err(Rejection::Body(m)) => panic!("body error: {m}"),
        }
    }

    #[test]
    fn an_item_of_any_shape_is_reported_at_its_index_without_hiding_the_others() {
        let items = format!(
            r#"5,"x",null,[{{"channel":1}}],{{"channel":5,"data":{{}}}},{{"channel":"{CH}","data":{{}},"id":7}},{{"channel":"{CH}"}},{{"ch\u0061nnel":"{CH}","data":{{}}}},{{"channel":"{CH}","data":{{}},"publications":[]}},{{"channel":"{CH}","data":{{}},"id":null}}"#
        );
        let want = [
            (0, "invalid_publication"),
            (1, "invalid_publication"),
            (2, "invalid_publication"),
            (3, "invalid_publication"),
            (4, "invalid_channel"),
            (5, "invalid_id"),
            (6, "invalid_data"),
            (7, "invalid_publication"),
            (8, "invalid_publication"),
        ];
        let want: Vec<(usize, String)> = want.iter().map(|(i, c)| (*i, c.to_string())).collect();
        assert_eq!(codes(&items), want);
    }

    #[test]
    fn unknown_fields_come_before_the_other_checks_and_are_named() {
        let body = r#"{"zeta":1,"channel":5,"alpha":2}"#;
        let Err(Rejection::Items(e)) = validate(body.as_bytes(), 10) else {
            panic!()
        };
        assert_eq!(e[0].code, ErrorCode::InvalidPublication);
        assert_eq!(
            e[0].message,
            "unknown field \"alpha\"; a publication has channel, data and optional id"
        );
    }

    #[test]
    fn escaped_strings_are_read_and_the_canonical_channel_is_lower_case() {
        let body = format!(
            r#"{{"channel":"\u0061{}","data":{{}},"id":"a\u0062"}}"#,
            &CH[1..]
        );
        let v = validate(body.as_bytes(), 10).unwrap();
        assert_eq!(v[0].canonical, CH);
        assert_eq!(v[0].id.as_deref(), Some("ab"));
        let upper = "account-activity.v1.eip155:8453:0XD14B2B8D5E5F1C3C1A4D6B7C9E0F1A2B3C4D5E6F";
        let body = format!(
            r#"{{"channel":"{upper}","data":{{"address":"{upper_addr}"}},"id":null}}"#,
            upper_addr = &upper[32..]
        );
        let v = validate(body.as_bytes(), 10).unwrap();
        assert_eq!(v[0].canonical, CH);
        assert_eq!(v[0].id, None);
    }

    #[test]
    fn a_batch_body_is_judged_by_its_publications_member() {
        let batch = format!(r#"{{"note":1,"publications":[{{"channel":"{CH}","data":{{}}}}]}}"#);
        assert_eq!(validate(batch.as_bytes(), 10).unwrap().len(), 1);
        for body in [
            r#"{"publications":null}"#,
            r#"{"publications":{}}"#,
            r#"{"p\u0075blications":[]}"#,
            "null",
            r#""text""#,
            r#"{"channel":"x","data":{}"#,
        ] {
            assert!(
                matches!(validate(body.as_bytes(), 10), Err(Rejection::Body(_))),
                "{body}"
            );
        }
    }
}
