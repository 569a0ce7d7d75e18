//! The channel grammar: which channels exist, how they are parsed, and how a publication's
//! channel is matched to subscriptions.
//!
//! - `account-activity.v1.<CAIP-10>`: one account's activity. A subscription may use the
//!   wildcard chain reference `0` (every chain of the namespace); a publication always names
//!   a concrete chain. Both map to the same *stream key* `account-activity.v1.<ns>:0:<address>`.
//! - `market-data.v1.<CAIP-19>.<interval>.<currency>`: OHLCV bars. Matched on a normalised
//!   key, echoed to each subscriber exactly as it subscribed.
//! - `system-notifications.v1.<namespace>`: the server's own; never subscribed nor published.
//!
//! Every valid channel consists only of `[-_.:%/a-zA-Z0-9]`, so it can be spliced into a JSON
//! string without escaping (the push frame relies on this).

use super::caip::{AccountId, AssetId, CaipError, ChainId};

pub const ACCOUNT_ACTIVITY: &str = "account-activity.v1";
pub const MARKET_DATA: &str = "market-data.v1";
pub const SYSTEM_NOTIFICATIONS: &str = "system-notifications.v1";

/// The longest channel accepted, in bytes.
pub const MAX_CHANNEL_LEN: usize = 256;

/// A channel namespace that clients subscribe to; each has its own system-notification channel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Namespace {
    AccountActivity,
    MarketData,
}

/// A parsed, valid channel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Channel {
    AccountActivity(AccountChannel),
    MarketData(MarketChannel),
}

/// `account-activity.v1.<CAIP-10>`, normalised.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccountChannel {
    pub account: AccountId,
}

/// `market-data.v1.<asset>.<interval>.<currency>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MarketChannel {
    pub asset: AssetId,
    /// Normalised key used for matching publications to subscriptions.
    pub key: String,
}

/// Why a channel was refused. On the wire every variant is
/// [`ErrorCode::InvalidChannel`](super::ErrorCode::InvalidChannel), except that the publish API
/// reports [`Reserved`](Self::Reserved) as [`ErrorCode::ReservedChannel`](super::ErrorCode::ReservedChannel).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChannelError {
    #[error("channel is longer than {MAX_CHANNEL_LEN} bytes")]
    TooLong,
    #[error("unknown channel namespace: expected account-activity.v1.<CAIP-10 account> or market-data.v1.<CAIP-19 asset>.<interval>.<currency>")]
    UnknownNamespace,
    #[error("system-notifications channels are sent by the server and cannot be subscribed or published")]
    Reserved,
    #[error("{0}")]
    Caip(#[from] CaipError),
    #[error("market-data channel must be market-data.v1.<CAIP-19 asset>.<interval>.<currency>, e.g. market-data.v1.eip155:1/slip44:60.1m.usd")]
    MarketShape,
}

// === Namespace ===

impl Namespace {
    pub fn as_str(self) -> &'static str {
        match self {
            Namespace::AccountActivity => ACCOUNT_ACTIVITY,
            Namespace::MarketData => MARKET_DATA,
        }
    }

    /// `system-notifications.v1.<namespace>`.
    pub fn system_channel(self) -> &'static str {
        match self {
            Namespace::AccountActivity => "system-notifications.v1.account-activity.v1",
            Namespace::MarketData => "system-notifications.v1.market-data.v1",
        }
    }
}

// === Channel ===

impl Channel {
    pub fn parse(s: &str) -> Result<Channel, ChannelError> {
        if s.len() > MAX_CHANNEL_LEN {
            return Err(ChannelError::TooLong);
        }
        if let Some(rest) = s
            .strip_prefix(ACCOUNT_ACTIVITY)
            .and_then(|r| r.strip_prefix('.'))
        {
            let account = AccountId::parse(rest)?;
            return Ok(Channel::AccountActivity(AccountChannel { account }));
        }
        if let Some(rest) = s
            .strip_prefix(MARKET_DATA)
            .and_then(|r| r.strip_prefix('.'))
        {
            return MarketChannel::parse(rest).map(Channel::MarketData);
        }
        if s.starts_with(SYSTEM_NOTIFICATIONS) {
            return Err(ChannelError::Reserved);
        }
        Err(ChannelError::UnknownNamespace)
    }

    pub fn namespace(&self) -> Namespace {
        match self {
            Channel::AccountActivity(_) => Namespace::AccountActivity,
            Channel::MarketData(_) => Namespace::MarketData,
        }
    }

    /// The key under which subscriptions and publications meet in the hub.
    pub fn hub_key(&self) -> String {
        match self {
            Channel::AccountActivity(a) => a.stream_key(),
            Channel::MarketData(m) => m.key.clone(),
        }
    }

    /// The chain this channel concerns (the wildcard chain for `ns:0:` subscriptions).
    pub fn chain(&self) -> &ChainId {
        match self {
            Channel::AccountActivity(a) => &a.account.chain,
            Channel::MarketData(m) => &m.asset.chain,
        }
    }
}

// === AccountChannel ===

impl AccountChannel {
    /// `account-activity.v1.<ns>:0:<address>`: one stream per account across its namespace.
    pub fn stream_key(&self) -> String {
        [
            ACCOUNT_ACTIVITY,
            ".",
            self.account.chain.namespace(),
            ":0:",
            &self.account.address,
        ]
        .concat()
    }

    /// The normalised channel text (`account-activity.v1.eip155:8453:0xabc…`).
    pub fn canonical(&self) -> String {
        let chain = &self.account.chain;
        [
            ACCOUNT_ACTIVITY,
            ".",
            chain.namespace(),
            ":",
            chain.reference(),
            ":",
            &self.account.address,
        ]
        .concat()
    }
}

// === MarketChannel ===

impl MarketChannel {
    fn parse(rest: &str) -> Result<Self, ChannelError> {
        // The asset id may itself contain dots, so interval and currency are taken from the right.
        let (rest, currency) = rest.rsplit_once('.').ok_or(ChannelError::MarketShape)?;
        let (asset, interval) = rest.rsplit_once('.').ok_or(ChannelError::MarketShape)?;
        let interval_ok = (1..=8).contains(&interval.len())
            && interval.bytes().all(|b| b.is_ascii_alphanumeric());
        let currency_ok = (1..=16).contains(&currency.len())
            && currency.bytes().all(|b| b.is_ascii_alphanumeric());
        if !interval_ok || !currency_ok {
            return Err(ChannelError::MarketShape);
        }
        let asset = AssetId::parse(asset)?;
        // The interval keeps its case (`1m` is a minute, `1M` a month); the currency does not.
        let key = format!(
            "{MARKET_DATA}.{}.{interval}.{}",
            asset.normalized,
            currency.to_ascii_lowercase()
        );
        Ok(Self { asset, key })
    }
}

/// True when `s` can be placed inside a JSON string literal as it is.
pub fn is_json_safe(s: &str) -> bool {
    s.bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':' | b'%' | b'/'))
}

#[cfg(test)]
mod tests {
    use super::*;

    const ADDR: &str = "0xD14B2b8d5e5f1c3C1A4d6b7C9e0f1a2B3c4D5e6F";

    #[test]
    fn wildcard_and_concrete_share_a_stream() {
        let w = Channel::parse(&format!("account-activity.v1.eip155:0:{ADDR}")).unwrap();
        let c = Channel::parse(&format!("account-activity.v1.eip155:8453:{ADDR}")).unwrap();
        assert_eq!(w.hub_key(), c.hub_key());
        assert_eq!(
            w.hub_key(),
            format!("account-activity.v1.eip155:0:{}", ADDR.to_ascii_lowercase())
        );
        assert!(w.chain().is_wildcard() && !c.chain().is_wildcard());
        let Channel::AccountActivity(a) = c else {
            panic!()
        };
        assert_eq!(
            a.canonical(),
            format!(
                "account-activity.v1.eip155:8453:{}",
                ADDR.to_ascii_lowercase()
            )
        );
    }

    #[test]
    fn market_data_keys_normalise_case_but_keep_interval() {
        let a = Channel::parse(
            "market-data.v1.eip155:8453/erc20:0x833589fCD6eDb6E08f4c7C32D4f71b54bdA02913.1m.USD",
        )
        .unwrap();
        let b = Channel::parse(
            "market-data.v1.eip155:8453/erc20:0x833589fcd6edb6e08f4c7c32d4f71b54bda02913.1m.usd",
        )
        .unwrap();
        let month = Channel::parse(
            "market-data.v1.eip155:8453/erc20:0x833589fcd6edb6e08f4c7c32d4f71b54bda02913.1M.usd",
        )
        .unwrap();
        assert_eq!(a.hub_key(), b.hub_key());
        assert_ne!(a.hub_key(), month.hub_key());
        assert_eq!(a.namespace(), Namespace::MarketData);
    }

    #[test]
    fn refusals_name_the_problem() {
        assert_eq!(
            Channel::parse("system-notifications.v1.account-activity.v1"),
            Err(ChannelError::Reserved)
        );
        assert_eq!(
            Channel::parse("foo.v1.eip155:1:0x1"),
            Err(ChannelError::UnknownNamespace)
        );
        assert_eq!(
            Channel::parse("market-data.v1.eip155:1/slip44:60"),
            Err(ChannelError::MarketShape)
        );
        assert!(matches!(
            Channel::parse("account-activity.v1.eip155:1:0x12"),
            Err(ChannelError::Caip(_))
        ));
        assert_eq!(Channel::parse(&"a".repeat(300)), Err(ChannelError::TooLong));
        assert!(Channel::parse("account-activity.v1.").is_err());
    }

    #[test]
    fn every_valid_channel_is_json_safe() {
        for ch in [
            format!("account-activity.v1.eip155:0:{ADDR}"),
            "market-data.v1.eip155:1/erc721:0x06012c8cf97BEaD5deAe237070F9587f8E7A266d/771769.1h.eur".to_owned(),
        ] {
            assert!(Channel::parse(&ch).is_ok());
            assert!(is_json_safe(&ch));
        }
        assert!(!is_json_safe("a\"b"));
    }
}
