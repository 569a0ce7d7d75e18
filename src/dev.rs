//! Development mode: a gateway that runs with no configuration at all.
//!
//! It fills in what production must configure (a fresh random HS256 secret, a publisher key,
//! an admin key, the common chains) and prints a ready client token and a curl command.
//! Outside dev mode, [`require_production_keys`] refuses to start without them.

use std::fmt::Write;
use std::time::Duration;

use rand::RngCore;

use crate::auth;
use crate::config::Settings;

/// Chains dev mode knows: Ethereum, Optimism, BNB, Polygon, Base, Arbitrum, Linea, Solana.
pub const DEV_CHAINS: &[&str] = &[
    "eip155:1",
    "eip155:10",
    "eip155:56",
    "eip155:137",
    "eip155:8453",
    "eip155:42161",
    "eip155:59144",
    "solana:5eykt4UsFv8P8NJdTREpY1vzqKqZKvdp",
];

fn random_hex(bytes: usize) -> String {
    let mut buf = vec![0u8; bytes];
    rand::thread_rng().fill_bytes(&mut buf);
    hex::encode(buf)
}

/// Fills in the dev defaults that are not set.
pub fn apply(settings: &mut Settings) {
    if !settings.auth.has_any_key() {
        settings.auth.hs256_secret = Some(random_hex(32));
    }
    if settings.publish.api_keys.is_empty() {
        settings.publish.api_keys = vec![format!("pub-{}", random_hex(12))];
    }
    if settings.admin.api_keys.is_empty() {
        settings.admin.api_keys = vec![format!("adm-{}", random_hex(12))];
    }
    if settings.chains.known.is_empty() {
        settings.chains.known = DEV_CHAINS.iter().map(|s| s.to_string()).collect();
    }
}

/// The banner printed at start in dev mode: a token, the keys and a curl that publishes.
pub fn banner(settings: &Settings, addr: &str) -> String {
    let token = settings
        .auth
        .hs256_secret
        .as_deref()
        .and_then(|s| auth::mint_hs256(s, "dev-wallet", Duration::from_secs(24 * 3600)).ok())
        .unwrap_or_else(|| "(configure auth.hs256_secret to get a token here)".into());
    let publisher = settings
        .publish
        .api_keys
        .first()
        .cloned()
        .unwrap_or_default();
    let admin = settings.admin.api_keys.first().cloned().unwrap_or_default();
    let address = "0xd14b2b8d5e5f1c3c1a4d6b7c9e0f1a2b3c4d5e6f";
    let mut out = String::new();
    let _ = writeln!(
        out,
        "activity-gateway DEV MODE (random secret, keys change on every start; not for production)"
    );
    let _ = writeln!(out, "  client token (sub dev-wallet, 24h): {token}");
    let _ = writeln!(out, "  connect:        ws://{addr}/v1?token=<client token>");
    let _ = writeln!(out, "  publisher key:  {publisher}");
    let _ = writeln!(out, "  admin key:      {admin}");
    let _ = writeln!(out, "  subscribe with: {{\"event\":\"subscribe\",\"data\":{{\"requestId\":\"1\",\"channels\":[\"account-activity.v1.eip155:0:{address}\"]}}}}");
    let _ = writeln!(out, "  publish a sample activity message:");
    let _ = writeln!(
        out,
        r#"    curl -sS -X POST http://{addr}/v1/publish -H 'Authorization: Bearer {publisher}' -H 'Content-Type: application/json' -d '{{"channel":"account-activity.v1.eip155:8453:{address}","data":{{"address":"{address}","tx":{{"id":"0x1cde","chain":"eip155:8453","status":"confirmed","timestamp":1760099871,"from":"0x7b07000000000000000000000000000000000001","to":"{address}"}},"updates":[{{"asset":{{"fungible":true,"type":"eip155:8453/erc20:0x833589fcd6edb6e08f4c7c32d4f71b54bda02913","unit":"USDC","decimals":6}},"postBalance":{{"amount":"0xc350"}},"transfers":[{{"from":"0x7b07000000000000000000000000000000000001","to":"{address}","amount":"0x2710"}}]}}]}}}}'"#
    );
    let _ = writeln!(out, "  mark a chain alive: curl -sS -X POST http://{addr}/v1/chains/eip155:8453/heartbeat -H 'Authorization: Bearer {publisher}'");
    out
}

/// Outside dev mode every key must be configured; the error names the missing one.
pub fn require_production_keys(settings: &Settings) -> Result<(), String> {
    if !settings.auth.has_any_key() {
        return Err("no token verification key: set auth.hs256_secret, auth.rsa_public_key_pem, auth.ec_public_key_pem or auth.jwks_url (e.g. GATEWAY__AUTH__HS256_SECRET), or run with --dev".into());
    }
    if settings.publish.api_keys.is_empty() {
        return Err("no publisher API key: set publish.api_keys (e.g. GATEWAY__PUBLISH__API_KEYS=key1,key2), or run with --dev".into());
    }
    if settings.admin.api_keys.is_empty() {
        return Err("no admin API key: set admin.api_keys (e.g. GATEWAY__ADMIN__API_KEYS=key), or run with --dev".into());
    }
    Ok(())
}
