//! De-duplication and resume positions on the client side.
//!
//! First deliveries of a stream arrive in offset order, and every re-send, replay or
//! redelivery is of an offset the client may already have. So one watermark per subscribed
//! channel (epoch, highest offset processed) is enough: a push at or below the watermark of
//! the same epoch is a duplicate. The watermark is also the position to resume from.

use std::collections::HashMap;

use crate::protocol::Position;

/// Watermarks by subscribed channel (exactly as subscribed).
#[derive(Debug, Default, Clone)]
pub struct Watermarks {
    by_channel: HashMap<String, Position>,
}

impl Watermarks {
    /// True when the push at `position` on `channel` is new; records it.
    pub fn accept(&mut self, channel: &str, position: &Position) -> bool {
        match self.by_channel.get_mut(channel) {
            Some(w) if w.epoch == position.epoch => {
                if position.offset <= w.offset {
                    return false;
                }
                w.offset = position.offset;
                true
            }
            _ => {
                self.by_channel.insert(channel.to_owned(), position.clone());
                true
            }
        }
    }

    /// Sets the starting point (from a `subscribed` reply) unless one is known already.
    pub fn start_at(&mut self, channel: &str, position: Position) {
        self.by_channel
            .entry(channel.to_owned())
            .or_insert(position);
    }

    /// Forgets a channel whose recovery failed (the client must refresh from its HTTP source).
    pub fn reset(&mut self, channel: &str, position: Position) {
        self.by_channel.insert(channel.to_owned(), position);
    }

    pub fn get(&self, channel: &str) -> Option<&Position> {
        self.by_channel.get(channel)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(epoch: &str, offset: u64) -> Position {
        Position {
            epoch: epoch.into(),
            offset,
        }
    }

    #[test]
    fn duplicates_and_epoch_changes() {
        let mut w = Watermarks::default();
        w.start_at("c", p("e", 3));
        assert!(
            !w.accept("c", &p("e", 3)),
            "at the start position: already had it"
        );
        assert!(w.accept("c", &p("e", 4)));
        assert!(!w.accept("c", &p("e", 4)), "a redelivery");
        assert!(w.accept("c", &p("e2", 1)), "a new epoch starts over");
        assert_eq!(w.get("c"), Some(&p("e2", 1)));
    }
}
