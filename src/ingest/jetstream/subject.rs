//! The JetStream subject grammar: which channel or chain a message's subject names.

use crate::protocol::caip::ChainId;

/// What a message's subject names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Subject {
    /// `activity.<chainId>.<address>`: the channel `account-activity.v1.<chainId>:<address>`.
    Activity { channel: String },
    /// `chains.<chainId>.heartbeat`.
    Heartbeat(ChainId),
}

impl Subject {
    /// Parses a message subject, `prefix` (without its dot) first when not empty.
    pub fn parse(prefix: &str, subject: &str) -> Result<Subject, String> {
        let rest = match prefix {
            "" => Some(subject),
            p => subject.strip_prefix(p).and_then(|r| r.strip_prefix('.')),
        }
        .ok_or("the subject does not start with ingest.jetstream.subject_prefix")?;
        let tokens: Vec<&str> = rest.split('.').collect();
        match tokens.as_slice() {
            ["activity", chain, address] => Ok(Subject::Activity {
                channel: format!("account-activity.v1.{chain}:{address}"),
            }),
            ["chains", chain, "heartbeat"] => {
                let chain = ChainId::parse(chain).map_err(|e| e.to_string())?;
                if chain.is_wildcard() {
                    return Err(
                        "chain reference 0 is the subscription wildcard, not a chain".into(),
                    );
                }
                Ok(Subject::Heartbeat(chain))
            }
            _ => Err("expected activity.<chainId>.<address> or chains.<chainId>.heartbeat".into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subjects() {
        assert_eq!(
            Subject::parse("", "activity.eip155:8453.0xabc"),
            Ok(Subject::Activity {
                channel: "account-activity.v1.eip155:8453:0xabc".into()
            })
        );
        assert_eq!(
            Subject::parse("t1.x", "t1.x.chains.eip155:1.heartbeat"),
            Ok(Subject::Heartbeat(ChainId::parse("eip155:1").unwrap()))
        );
        for bad in [
            "activity.eip155:1",
            "activity.eip155:1.0xabc.extra",
            "chains.eip155:1.beat",
            "chains.eip155:0.heartbeat",
            "chains.nope.heartbeat",
            "other.eip155:1.0xabc",
        ] {
            assert!(Subject::parse("", bad).is_err(), "{bad}");
        }
        assert!(Subject::parse("t1", "t2.activity.eip155:1.0xabc").is_err());
        assert!(Subject::parse("t1", "t1activity.eip155:1.0xabc").is_err());
    }
}
