//! Any text is a channel (whose canonical text parses to the same channel, and is its own
//! canonical text) or refused with a message; the same for CAIP-2, CAIP-10 and CAIP-19 ids.
#![no_main]

use activity_gateway::protocol::caip::{AccountId, AssetId, ChainId};
use activity_gateway::protocol::Channel;
use libfuzzer_sys::fuzz_target;

fn canonical(channel: &Channel) -> String {
    match channel {
        Channel::AccountActivity(a) => a.canonical(),
        Channel::MarketData(m) => m.key.clone(),
    }
}

fuzz_target!(|text: &str| {
    match Channel::parse(text) {
        Ok(channel) => {
            let shown = canonical(&channel);
            let again = Channel::parse(&shown).expect("canonical text parses");
            assert_eq!(again, channel);
            assert_eq!(canonical(&again), shown);
        }
        Err(err) => assert!(!err.to_string().is_empty()),
    }
    if let Ok(chain) = ChainId::parse(text) {
        assert_eq!(ChainId::parse(&chain.to_string()), Ok(chain));
    }
    if let Ok(account) = AccountId::parse(text) {
        assert_eq!(AccountId::parse(&account.to_string()), Ok(account));
    }
    if let Ok(asset) = AssetId::parse(text) {
        let again = AssetId::parse(&asset.normalized).expect("normalised asset id parses");
        assert_eq!(again.normalized, asset.normalized);
    }
});
