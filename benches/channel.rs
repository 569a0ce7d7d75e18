//! Channel parsing and routing: what every subscribe and every publication pays before the
//! hub — `Channel::parse`, the hub key, and the canonical form.

use std::hint::black_box;

use activity_gateway::protocol::Channel;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};

const WALLET: &str = "account-activity.v1.eip155:0:0xD14B2B8D5E5F1C3C1A4D6B7C9E0F1A2B3C4D5E6F";
const CONCRETE: &str = "account-activity.v1.eip155:8453:0xd14b2b8d5e5f1c3c1a4d6b7c9e0f1a2b3c4d5e6f";
const SOLANA: &str = "account-activity.v1.solana:5eykt4UsFv8P8NJdTREpY1vzqKqZKvdp:9WzDXwBbmkg8ZTbNMqUxvQRAyrZzDsGYdLVL9zYtAWWM";
const MARKET: &str =
    "market-data.v1.eip155:8453/erc20:0x833589fCD6eDb6E08f4c7C32D4f71b54bdA02913.1m.usd";
const INVALID: &str = "account-activity.v1.eip155:1:not-an-address";

fn parse(c: &mut Criterion) {
    let mut g = c.benchmark_group("channel/parse");
    g.throughput(Throughput::Elements(1));
    for (name, text) in [
        ("evm_wildcard_mixed_case", WALLET),
        ("evm_concrete", CONCRETE),
        ("solana", SOLANA),
        ("market_data", MARKET),
        ("invalid", INVALID),
    ] {
        g.bench_function(name, |b| {
            b.iter(|| black_box(Channel::parse(black_box(text)).is_ok()))
        });
    }
    g.finish();
}

/// What routing a publication costs: parse, hub key, canonical channel, chain reference.
fn route(c: &mut Criterion) {
    let mut g = c.benchmark_group("channel/route");
    g.throughput(Throughput::Elements(1));
    g.bench_function("publication_key_and_canonical", |b| {
        b.iter(|| {
            let Ok(ch) = Channel::parse(black_box(CONCRETE)) else {
                return 0;
            };
            let key = ch.hub_key();
            let reference_len = ch.chain().reference().len();
            let canonical_len = match &ch {
                Channel::AccountActivity(a) => a.canonical().len(),
                Channel::MarketData(_) => 0,
            };
            black_box(key.len() + reference_len + canonical_len)
        })
    });
    g.bench_function("subscription_key", |b| {
        b.iter(|| {
            Channel::parse(black_box(WALLET))
                .map(|ch| ch.hub_key().len())
                .unwrap_or(0)
        })
    });
    g.finish();
}

criterion_group!(benches, parse, route);
criterion_main!(benches);
