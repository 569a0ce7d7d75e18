//! Deserialisers shared by every configuration section.
//!
//! Environment variables can only carry strings, so a list must be accepted both as a
//! TOML array and as one comma-separated string (`GATEWAY__PUBLISH__API_KEYS=k1,k2`).

use serde::{Deserialize, Deserializer};

/// A list of strings given either as an array or as a comma-separated string.
/// Empty items are dropped, so `""` is the empty list.
pub fn string_list<'de, D>(deserializer: D) -> Result<Vec<String>, D::Error>
where
    D: Deserializer<'de>,
{
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Raw {
        One(String),
        Many(Vec<String>),
    }
    let items = match Raw::deserialize(deserializer)? {
        Raw::One(s) => s.split(',').map(str::to_owned).collect(),
        Raw::Many(v) => v,
    };
    Ok(items
        .into_iter()
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty())
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Deserialize)]
    struct Holder {
        #[serde(deserialize_with = "string_list")]
        keys: Vec<String>,
    }

    #[test]
    fn accepts_comma_separated_and_arrays() {
        let h: Holder = serde_json::from_str(r#"{"keys":"a, b,,c"}"#).unwrap();
        assert_eq!(h.keys, ["a", "b", "c"]);
        let h: Holder = serde_json::from_str(r#"{"keys":["x"," y "]}"#).unwrap();
        assert_eq!(h.keys, ["x", "y"]);
        let h: Holder = serde_json::from_str(r#"{"keys":""}"#).unwrap();
        assert!(h.keys.is_empty());
    }
}
