//! Per-stream ordering of publications that arrive over the cluster broker.
//!
//! Offsets are assigned by the shared store, but two nodes that commit offsets 5 and 6 of one
//! stream publish them to the broker independently, so a receiver may see 6 before 5. The
//! orderer releases publications strictly in offset order: duplicates (at or below the last
//! released offset) are dropped, early arrivals wait, and a gap that does not close by itself
//! within the grace period is filled from the history.

use std::collections::BTreeMap;

/// What the receiver must do with an arrival.
#[derive(Debug, PartialEq, Eq)]
pub enum Verdict<T> {
    /// Release these, in order.
    Release(Vec<T>),
    /// Held: a gap before it. Fill it from history after `last` if it persists.
    Gap {
        /// The last offset released.
        last: u64,
    },
}

/// Ordering state of one stream on this node.
#[derive(Debug)]
pub struct Orderer<T> {
    /// The epoch followed; an arrival of another one starts over.
    epoch: Option<String>,
    /// The last offset released: everything at or below it was released or skipped.
    last: u64,
    /// Early arrivals, above `last + 1`, by offset.
    held: BTreeMap<u64, T>,
}

impl<T> Default for Orderer<T> {
    fn default() -> Self {
        Self {
            epoch: None,
            last: 0,
            held: BTreeMap::new(),
        }
    }
}

impl<T> Orderer<T> {
    /// Starts at a known position (the stream's top when interest began).
    pub fn starting_at(epoch: String, last: u64) -> Self {
        Self {
            epoch: Some(epoch),
            last,
            held: BTreeMap::new(),
        }
    }

    /// The last offset released.
    pub fn last(&self) -> u64 {
        self.last
    }

    /// An arrival at `offset` of `epoch`.
    pub fn arrive(&mut self, epoch: &str, offset: u64, item: T) -> Verdict<T> {
        if self.epoch.as_deref() != Some(epoch) {
            // A new epoch (or the first arrival): start over from it.
            self.epoch = Some(epoch.to_owned());
            self.held.clear();
            self.last = offset;
            return Verdict::Release(vec![item]);
        }
        if offset <= self.last {
            return Verdict::Release(Vec::new());
        }
        self.held.insert(offset, item);
        let released = self.release_contiguous();
        if released.is_empty() {
            Verdict::Gap { last: self.last }
        } else {
            Verdict::Release(released)
        }
    }

    /// Items read from history to fill a gap (ascending); returns everything now releasable.
    pub fn fill(&mut self, filled: Vec<(u64, T)>) -> Vec<T> {
        let mut out = Vec::new();
        for (offset, item) in filled {
            if offset == self.last + 1 {
                self.last = offset;
                self.held.remove(&offset);
                out.push(item);
            }
        }
        out.extend(self.release_contiguous());
        out
    }

    /// The gap cannot be filled (history lost it): release what waits, in order.
    pub fn give_up(&mut self) -> Vec<T> {
        let held = std::mem::take(&mut self.held);
        if let Some((&max, _)) = held.iter().next_back() {
            self.last = max;
        }
        held.into_values().collect()
    }

    /// The epoch followed, once known.
    pub fn epoch(&self) -> Option<&str> {
        self.epoch.as_deref()
    }

    /// True while something waits behind a gap.
    pub fn has_gap(&self) -> bool {
        !self.held.is_empty()
    }

    fn release_contiguous(&mut self) -> Vec<T> {
        let mut out = Vec::new();
        while let Some(item) = self.held.remove(&(self.last + 1)) {
            self.last += 1;
            out.push(item);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn releases_in_offset_order_and_drops_duplicates() {
        let mut o = Orderer::starting_at("e".into(), 4);
        assert_eq!(o.arrive("e", 6, 'b'), Verdict::Gap { last: 4 });
        assert_eq!(o.arrive("e", 5, 'a'), Verdict::Release(vec!['a', 'b']));
        assert_eq!(o.arrive("e", 5, 'a'), Verdict::Release(vec![]));
        assert_eq!(o.arrive("e", 7, 'c'), Verdict::Release(vec!['c']));
        assert!(!o.has_gap());
    }

    #[test]
    fn gaps_are_filled_from_history() {
        let mut o = Orderer::starting_at("e".into(), 0);
        assert_eq!(o.arrive("e", 3, 'c'), Verdict::Gap { last: 0 });
        assert_eq!(
            o.fill(vec![(1, 'a'), (2, 'b'), (3, 'c')]),
            vec!['a', 'b', 'c']
        );
        assert_eq!(o.last(), 3);
        assert!(!o.has_gap());
    }

    #[test]
    fn a_new_epoch_starts_over() {
        let mut o = Orderer::starting_at("e".into(), 9);
        assert_eq!(o.arrive("f", 1, 'x'), Verdict::Release(vec!['x']));
        assert_eq!(o.arrive("f", 2, 'y'), Verdict::Release(vec!['y']));
    }
}
