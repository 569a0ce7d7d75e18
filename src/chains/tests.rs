//! The rule and the registry, without I/O.

use std::time::Duration;

use super::{ChainRefused, ChainsConfig, Mode, Registry};
use crate::protocol::caip::ChainId;

fn registry(stale: Duration, max: usize) -> std::sync::Arc<Registry> {
    Registry::new(ChainsConfig {
        known: vec!["eip155:1".into(), "eip155:10".into()],
        stale_after: stale,
        max_chains: max,
        ..Default::default()
    })
    .unwrap()
}

fn id(s: &str) -> ChainId {
    ChainId::parse(s).unwrap()
}

#[test]
fn a_sign_of_life_brings_a_chain_up_and_staleness_down() {
    let r = registry(Duration::from_millis(30), 8);
    let mut rx = r.events();
    r.local_alive(&id("eip155:1"), 0).unwrap();
    assert_eq!(rx.try_recv().unwrap().changes, vec![(id("eip155:1"), true)]);
    r.remote_alive(&id("eip155:1")).unwrap();
    assert!(rx.try_recv().is_err(), "no event without a change");
    std::thread::sleep(Duration::from_millis(40));
    r.tick();
    assert_eq!(
        rx.try_recv().unwrap().changes,
        vec![(id("eip155:1"), false)]
    );
}

#[test]
fn a_store_or_broker_failure_takes_every_chain_down_at_once_and_back() {
    let r = registry(Duration::from_secs(60), 8);
    r.local_alive(&id("eip155:1"), 0).unwrap();
    r.set_mode(&id("eip155:10"), Mode::Up, false).unwrap();
    let mut rx = r.events();
    r.set_store_failure(Some("locked".into()));
    assert_eq!(
        rx.try_recv().unwrap().changes,
        vec![(id("eip155:1"), false), (id("eip155:10"), false)],
        "one event, every chain, forced up included"
    );
    let v = r.view(&id("eip155:1")).unwrap();
    assert_eq!(
        (v.status, v.reason.as_str(), v.inputs.store_writable),
        ("down", "history store not writable: locked", false)
    );
    r.local_alive(&id("eip155:1"), 0).unwrap();
    assert!(
        rx.try_recv().is_err(),
        "a sign of life does not override the store"
    );
    r.set_store_failure(None);
    assert_eq!(rx.try_recv().unwrap().changes.len(), 2);

    r.set_broker_connected(false);
    assert_eq!(rx.try_recv().unwrap().changes.len(), 2);
    assert_eq!(
        r.view(&id("eip155:1")).unwrap().reason,
        "cluster broker unreachable"
    );
    r.set_broker_connected(true);
    assert_eq!(r.up_chains(), vec![id("eip155:1"), id("eip155:10")]);
}

#[test]
fn an_operator_down_wins_and_unknown_chains_are_refused() {
    let r = registry(Duration::from_secs(60), 8);
    r.set_mode(&id("eip155:1"), Mode::Down, false).unwrap();
    r.local_alive(&id("eip155:1"), 0).unwrap();
    assert_eq!(r.view(&id("eip155:1")).unwrap().status, "down");
    assert_eq!(
        r.set_mode(&id("eip155:5"), Mode::Up, false).unwrap_err(),
        ChainRefused::Unknown("eip155:5".into())
    );
    // A peer's or the store's mode adds the chain.
    assert_eq!(
        r.set_mode(&id("eip155:5"), Mode::Up, true).unwrap().status,
        "up"
    );
}

#[test]
fn restored_state_keeps_a_recent_sign_of_life_and_ignores_a_stale_one() {
    let r = registry(Duration::from_secs(10), 8);
    r.restore(
        &id("eip155:1"),
        Some(Mode::Auto),
        Some(Duration::from_secs(3)),
    );
    r.restore(
        &id("eip155:10"),
        Some(Mode::Auto),
        Some(Duration::from_secs(30)),
    );
    r.restore(
        &id("eip155:8453"),
        Some(Mode::Down),
        Some(Duration::from_secs(1)),
    );
    assert_eq!(r.up_chains(), vec![id("eip155:1")]);
    let v = r.view(&id("eip155:1")).unwrap();
    assert!(v.last_seen_ms_ago.is_some_and(|ms| ms >= 3000), "{v:?}");
    // A peer's older sign of life does not replace a newer one.
    r.restore(&id("eip155:1"), None, Some(Duration::from_secs(9)));
    assert!(r
        .view(&id("eip155:1"))
        .unwrap()
        .last_seen_ms_ago
        .is_some_and(|ms| ms < 4000));
}

#[test]
fn the_registry_holds_at_most_max_chains() {
    let r = registry(Duration::from_secs(60), 3);
    r.local_alive(&id("eip155:8453"), 0).unwrap();
    assert_eq!(
        r.local_alive(&id("eip155:137"), 0).unwrap_err(),
        ChainRefused::Limit {
            chain: "eip155:137".into(),
            max: 3
        }
    );
    assert!(r.remote_alive(&id("eip155:137")).is_err());
    assert!(r.set_mode(&id("eip155:137"), Mode::Up, true).is_err());
    assert_eq!(r.views().len(), 3);
    // Known chains still take signs of life.
    assert!(r.local_alive(&id("eip155:1"), 0).is_ok());
    assert!(Registry::new(ChainsConfig {
        known: vec!["eip155:1".into(), "eip155:10".into()],
        max_chains: 1,
        ..Default::default()
    })
    .is_err());
    assert!(Registry::new(ChainsConfig {
        check_interval: Duration::ZERO,
        ..Default::default()
    })
    .is_err());
}

#[test]
fn unsaved_signs_of_life_are_taken_once_and_returned_on_failure() {
    let r = registry(Duration::from_secs(60), 8);
    r.local_alive(&id("eip155:1"), 100).unwrap();
    r.remote_alive(&id("eip155:10")).unwrap();
    let taken = r.take_unsaved();
    assert_eq!(
        taken.into_iter().collect::<Vec<_>>(),
        vec![(id("eip155:1"), 100)]
    );
    assert!(r.take_unsaved().is_empty());
    r.local_alive(&id("eip155:1"), 200).unwrap();
    r.return_unsaved([(id("eip155:1"), 100)].into());
    assert_eq!(r.take_unsaved()[&id("eip155:1")], 200, "the newer one wins");
}

/// Two threads flipping one chain's mode: the events, in the order they are received, must
/// alternate and end on the chain's state. An event sent after the registry's lock was
/// released could overtake an earlier one, and wallets would end on a status the node does not
/// hold (an `up` it cannot honour, or polling for a chain that is up).
#[test]
fn concurrent_changes_are_announced_in_the_order_they_happened() {
    let r = registry(Duration::from_secs(60), 8);
    let chain = id("eip155:1");
    let mut rx = r.events();
    let mut last = None;
    let mut received = 0;
    // Rounds small enough for the event channel (256) to hold a round's events unread.
    for _ in 0..300 {
        std::thread::scope(|s| {
            for first in [Mode::Up, Mode::Down] {
                let (r, chain) = (&r, &chain);
                s.spawn(move || {
                    let second = if first == Mode::Up {
                        Mode::Down
                    } else {
                        Mode::Up
                    };
                    for _ in 0..60 {
                        r.set_mode(chain, first, false).unwrap();
                        r.set_mode(chain, second, false).unwrap();
                    }
                });
            }
        });
        while let Ok(event) = rx.try_recv() {
            for (c, up) in &event.changes {
                assert_eq!(c, &chain);
                assert_ne!(
                    last,
                    Some(*up),
                    "two `{up}` in a row after {received} events"
                );
                last = Some(*up);
                received += 1;
            }
        }
        assert_eq!(
            last,
            Some(r.up_chains().contains(&chain)),
            "after {received} events"
        );
    }
}
