//! CAIP-2 chain ids, CAIP-10 account ids and CAIP-19 asset ids: parsing and validation.
//!
//! Grammar (chainagnostic.org):
//! - CAIP-2  `namespace:reference`, namespace `[-a-z0-9]{3,8}`, reference `[-_a-zA-Z0-9]{1,32}`;
//! - CAIP-10 `chain_id:address`, address `[-.%a-zA-Z0-9]{1,128}`;
//! - CAIP-19 `chain_id/asset_namespace:asset_reference[/token_id]`.
//!
//! On top of the generic grammar, namespaces the gateway knows get stricter rules:
//! `eip155` references are decimal and addresses are `0x` + 40 hex digits, compared
//! case-insensitively (stored lower-case); `solana` addresses are base58, 32 to 44 characters.
//! The reference `0` is the wildcard "every chain of this namespace" used by subscriptions.

use std::fmt;

/// Why a CAIP identifier was refused. The message says which part is wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CaipError {
    #[error("chain id '{0}' is not CAIP-2 (expected namespace:reference, e.g. eip155:1)")]
    ChainId(String),
    #[error("namespace '{0}' is not valid (3 to 8 characters of a-z, 0-9 and '-')")]
    Namespace(String),
    #[error("chain reference '{0}' is not valid for its namespace")]
    Reference(String),
    #[error("address '{0}' is not valid for its namespace")]
    Address(String),
    #[error("asset id '{0}' is not CAIP-19 (expected chain_id/namespace:reference)")]
    Asset(String),
}

/// A CAIP-2 chain id such as `eip155:8453`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ChainId {
    namespace: String,
    reference: String,
}

/// A CAIP-10 account id; the address is normalised (lower-case for `eip155`).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct AccountId {
    pub chain: ChainId,
    pub address: String,
}

/// A CAIP-19 asset id, kept verbatim and in a normalised form used for matching.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AssetId {
    pub chain: ChainId,
    /// Normalised text (EVM contract addresses lower-case); used to match publications.
    pub normalized: String,
}

// === ChainId ===

impl ChainId {
    /// Parses a CAIP-2 chain id, with the namespace-specific reference rules.
    pub fn parse(s: &str) -> Result<Self, CaipError> {
        let (namespace, reference) = s
            .split_once(':')
            .ok_or_else(|| CaipError::ChainId(s.to_owned()))?;
        if !is_namespace(namespace) {
            return Err(CaipError::Namespace(namespace.to_owned()));
        }
        let generic_ok = (1..=32).contains(&reference.len())
            && reference
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        let specific_ok = match namespace {
            "eip155" => {
                reference.bytes().all(|b| b.is_ascii_digit())
                    && (reference == "0" || !reference.starts_with('0'))
            }
            _ => true,
        };
        if !generic_ok || !specific_ok {
            return Err(CaipError::Reference(reference.to_owned()));
        }
        Ok(Self {
            namespace: namespace.to_owned(),
            reference: reference.to_owned(),
        })
    }

    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    pub fn reference(&self) -> &str {
        &self.reference
    }

    /// The wildcard reference `0`: every chain of the namespace.
    pub fn is_wildcard(&self) -> bool {
        self.reference == "0"
    }

    /// The wildcard chain of this chain's namespace (`eip155:0`).
    pub fn wildcard(&self) -> ChainId {
        ChainId {
            namespace: self.namespace.clone(),
            reference: "0".to_owned(),
        }
    }
}

impl fmt::Display for ChainId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.namespace, self.reference)
    }
}

// === AccountId ===

impl AccountId {
    /// Parses a CAIP-10 account id. EVM addresses are lower-cased.
    pub fn parse(s: &str) -> Result<Self, CaipError> {
        let (chain, address) = s
            .rsplit_once(':')
            .ok_or_else(|| CaipError::ChainId(s.to_owned()))?;
        let chain = ChainId::parse(chain)?;
        let address = normalize_address(chain.namespace(), address)?;
        Ok(Self { chain, address })
    }
}

impl fmt::Display for AccountId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.chain, self.address)
    }
}

/// Validates an address for its namespace and returns its normalised form.
pub fn normalize_address(namespace: &str, address: &str) -> Result<String, CaipError> {
    let generic_ok = (1..=128).contains(&address.len())
        && address
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'%'));
    if !generic_ok {
        return Err(CaipError::Address(address.to_owned()));
    }
    match namespace {
        "eip155" => {
            let hex = address
                .strip_prefix("0x")
                .or_else(|| address.strip_prefix("0X"))
                .ok_or_else(|| CaipError::Address(address.to_owned()))?;
            if hex.len() != 40 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(CaipError::Address(address.to_owned()));
            }
            // `0X` lower-cases to `0x` too.
            Ok(address.to_ascii_lowercase())
        }
        "solana" => {
            if (32..=44).contains(&address.len()) && address.bytes().all(is_base58) {
                Ok(address.to_owned())
            } else {
                Err(CaipError::Address(address.to_owned()))
            }
        }
        _ => Ok(address.to_owned()),
    }
}

// === AssetId ===

impl AssetId {
    /// Parses a CAIP-19 asset id. The verbatim text is the caller's; `normalized` lower-cases
    /// EVM contract addresses so that `0xAbC` and `0xabc` name the same asset.
    pub fn parse(s: &str) -> Result<Self, CaipError> {
        let err = || CaipError::Asset(s.to_owned());
        let (chain, asset) = s.split_once('/').ok_or_else(err)?;
        let chain = ChainId::parse(chain)?;
        let (asset_type, token_id) = match asset.split_once('/') {
            Some((a, t)) => (a, Some(t)),
            None => (asset, None),
        };
        let (asset_ns, asset_ref) = asset_type.split_once(':').ok_or_else(err)?;
        let ref_ok = |r: &str, max: usize| {
            (1..=max).contains(&r.len())
                && r.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'%'))
        };
        if !is_namespace(asset_ns) || !ref_ok(asset_ref, 128) {
            return Err(err());
        }
        if let Some(t) = token_id {
            if !ref_ok(t, 78) {
                return Err(err());
            }
        }
        let evm_contract = chain.namespace() == "eip155"
            && asset_ref.len() == 42
            && asset_ref.starts_with("0x")
            && asset_ref[2..].bytes().all(|b| b.is_ascii_hexdigit());
        let normalized = if evm_contract {
            s.to_ascii_lowercase()
        } else {
            s.to_owned()
        };
        Ok(Self { chain, normalized })
    }
}

fn is_namespace(s: &str) -> bool {
    (3..=8).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

fn is_base58(b: u8) -> bool {
    b.is_ascii_alphanumeric() && !matches!(b, b'0' | b'O' | b'I' | b'l')
}

#[cfg(test)]
mod tests {
    use super::*;

    const EVM: &str = "0xD14B2b8d5e5f1c3C1A4d6b7C9e0f1a2B3c4D5e6F";
    const SOL: &str = "9WzDXwBbmkg8ZTbNMqUxvQRAyrZzDsGYdLVL9zYtAWWM";

    #[test]
    fn chain_ids() {
        let c = ChainId::parse("eip155:8453").unwrap();
        assert_eq!((c.namespace(), c.reference()), ("eip155", "8453"));
        assert!(ChainId::parse("eip155:0").unwrap().is_wildcard());
        assert!(ChainId::parse("solana:5eykt4UsFv8P8NJdTREpY1vzqKqZKvdp").is_ok());
        for bad in [
            "eip155",
            "EIP155:1",
            "ei:1",
            "eip155:01",
            "eip155:abc",
            "eip155:",
            "toolongnamespace:1",
            "cosmos:a b",
        ] {
            assert!(ChainId::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn evm_accounts_are_lower_cased_and_strict() {
        let a = AccountId::parse(&format!("eip155:1:{EVM}")).unwrap();
        assert_eq!(a.address, EVM.to_ascii_lowercase());
        assert_eq!(
            a.to_string(),
            format!("eip155:1:{}", EVM.to_ascii_lowercase())
        );
        for bad in [
            "eip155:1:0x123",
            "eip155:1:d14b2b8d5e5f1c3c1a4d6b7c9e0f1a2b3c4d5e6f00",
            "eip155:1:0xZZ4b2b8d5e5f1c3c1a4d6b7c9e0f1a2b3c4d5e6f",
            "eip155:1:",
        ] {
            assert!(AccountId::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn solana_accounts_keep_case_and_reject_non_base58() {
        let a = AccountId::parse(&format!("solana:0:{SOL}")).unwrap();
        assert_eq!(a.address, SOL);
        assert!(AccountId::parse("solana:0:0OIl0OIl0OIl0OIl0OIl0OIl0OIl0OIl").is_err());
        assert!(AccountId::parse("solana:0:short").is_err());
    }

    #[test]
    fn asset_ids() {
        let a =
            AssetId::parse("eip155:8453/erc20:0x833589fCD6eDb6E08f4c7C32D4f71b54bdA02913").unwrap();
        assert_eq!(
            a.normalized,
            "eip155:8453/erc20:0x833589fcd6edb6e08f4c7c32d4f71b54bda02913"
        );
        assert!(AssetId::parse("eip155:1/slip44:60").is_ok());
        assert!(AssetId::parse(
            "eip155:1/erc721:0x06012c8cf97BEaD5deAe237070F9587f8E7A266d/771769"
        )
        .is_ok());
        for bad in [
            "eip155:1",
            "eip155:1/erc20",
            "eip155:1/ER:0x1",
            "eip155:1/erc20:a\"b",
        ] {
            assert!(AssetId::parse(bad).is_err(), "{bad}");
        }
    }
}
