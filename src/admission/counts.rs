//! Open sessions per key (a client address, a token subject): a count that refuses past its
//! cap and a [`Slot`] that gives one back on drop. An entry is removed when its count drops to
//! zero, so a table holds only keys with a session open: at most `server.max_connections`.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::Arc;

use parking_lot::Mutex;

/// Open sessions per key, each entry present only while its count is above zero.
pub(super) struct Counts<K> {
    table: Mutex<HashMap<K, usize>>,
}

impl<K> Default for Counts<K> {
    fn default() -> Self {
        Self {
            table: Mutex::new(HashMap::new()),
        }
    }
}

impl<K: Hash + Eq + Clone> Counts<K> {
    /// One more session for `key`, unless it already holds `max`.
    pub(super) fn acquire(self: &Arc<Self>, key: K, max: usize) -> Option<Slot<K>> {
        let mut table = self.table.lock();
        let count = table.entry(key.clone()).or_insert(0);
        if *count >= max {
            if *count == 0 {
                table.remove(&key);
            }
            return None;
        }
        *count += 1;
        Some(Slot {
            counts: self.clone(),
            key,
        })
    }

    #[cfg(test)]
    pub(super) fn len(&self) -> usize {
        self.table.lock().len()
    }
}

/// One session's share of a key's count, given back on drop.
pub(super) struct Slot<K: Hash + Eq> {
    counts: Arc<Counts<K>>,
    key: K,
}

impl<K: Hash + Eq> Drop for Slot<K> {
    fn drop(&mut self) {
        let mut table = self.counts.table.lock();
        if let Some(count) = table.get_mut(&self.key) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                table.remove(&self.key);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_hold_only_keys_with_a_slot_out() {
        let counts = Arc::new(Counts::<String>::default());
        let a1 = counts.acquire("a".into(), 2).unwrap();
        let a2 = counts.acquire("a".into(), 2).unwrap();
        assert!(counts.acquire("a".into(), 2).is_none());
        assert!(counts.acquire("z".into(), 0).is_none());
        let b = counts.acquire("b".into(), 2).unwrap();
        assert_eq!(counts.len(), 2);
        drop(a1);
        let a3 = counts.acquire("a".into(), 2).unwrap();
        drop((a2, a3, b));
        assert_eq!(counts.len(), 0);
    }
}
