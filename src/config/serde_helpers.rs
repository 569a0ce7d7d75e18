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

/// A list of CIDR blocks (`10.0.0.0/8`, `2001:db8::/32`) or single addresses, in either
/// form [`string_list`] accepts.
pub fn net_list<'de, D>(deserializer: D) -> Result<Vec<ipnet::IpNet>, D::Error>
where
    D: Deserializer<'de>,
{
    string_list(deserializer)?
        .into_iter()
        .map(|item| {
            item.parse::<ipnet::IpNet>()
                .or_else(|_| item.parse::<std::net::IpAddr>().map(ipnet::IpNet::from))
                .map_err(|_| {
                    serde::de::Error::custom(format!(
                        "`{item}` is neither an IP address nor a CIDR block such as 10.0.0.0/8"
                    ))
                })
        })
        .collect()
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

    #[derive(Deserialize)]
    struct Nets {
        #[serde(deserialize_with = "net_list")]
        nets: Vec<ipnet::IpNet>,
    }

    #[test]
    fn nets_take_blocks_and_single_addresses_and_name_a_bad_one() {
        let n: Nets = serde_json::from_str(r#"{"nets":"10.0.0.0/8, 192.0.2.7,::1"}"#).unwrap();
        let shown: Vec<String> = n.nets.iter().map(ToString::to_string).collect();
        assert_eq!(shown, ["10.0.0.0/8", "192.0.2.7/32", "::1/128"]);
        let err = serde_json::from_str::<Nets>(r#"{"nets":["10.0.0.0/33"]}"#)
            .err()
            .unwrap();
        assert!(err.to_string().contains("`10.0.0.0/33`"), "{err}");
    }
}
