//! Unborn positions: the position of a stream that has no row (no publication yet, or none
//! left after retention removed the row), handed out without writing anything.
//!
//! An unborn position is `{"epoch": "none.<ms>", "offset": 0}`, where `<ms>` is when it was
//! handed out (milliseconds since the Unix epoch). A stream's row appears in the same
//! transaction as its first publications, so every publication of the row that exists when
//! the client resumes was committed after the position was handed out, unless an earlier
//! incarnation came and went in between. Retention removes a row only after age retention
//! deleted its last publication, so an incarnation born after the position and already gone
//! takes longer than `history.retention_age` from the position to its removal. Hence a resume
//! from an unborn position replays the current incarnation from offset 1 when its row was
//! created less than `retention_age` after the position (or, without a row, when the position
//! is younger than `retention_age`), and answers `trimmed` otherwise, because publications
//! may have been lost.

use super::Position;
use super::RecoveryFailure;

/// Prefix of an unborn epoch; real epochs are 16 hex digits and never start with it.
const PREFIX: &str = "none.";

/// The unborn position handed out at `now_ms`.
pub(crate) fn position(now_ms: i64) -> Position {
    Position {
        epoch: format!("{PREFIX}{now_ms}"),
        offset: 0,
    }
}

/// When the unborn position with this epoch was handed out; `None` for a real epoch.
pub(crate) fn handed_out_at(epoch: &str) -> Option<i64> {
    epoch.strip_prefix(PREFIX)?.parse().ok()
}

/// How to answer a resume from an unborn position.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// Nothing was published since: recovered, nothing to replay.
    Nothing,
    /// Read the current incarnation after the position's offset, as if in its epoch.
    Continue,
    /// The publications since cannot all be replayed.
    Failed(RecoveryFailure),
}

/// Decides a resume from the unborn position handed out at `at_ms` with `offset` (0, unless a
/// caller went on paging with the unborn epoch), given when the stream's row was created
/// (`None`: no row), the time now and age retention.
pub(crate) fn resolve(
    at_ms: i64,
    offset: u64,
    created_at_ms: Option<i64>,
    now_ms: i64,
    retention_age_ms: i64,
) -> Verdict {
    match created_at_ms {
        None if offset > 0 => Verdict::Failed(RecoveryFailure::EpochChanged),
        None if now_ms.saturating_sub(at_ms) > retention_age_ms => {
            Verdict::Failed(RecoveryFailure::Trimmed)
        }
        None => Verdict::Nothing,
        Some(created) if created.saturating_sub(at_ms) > retention_age_ms => {
            Verdict::Failed(RecoveryFailure::Trimmed)
        }
        Some(_) => Verdict::Continue,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAY: i64 = 86_400_000;

    #[test]
    fn unborn_epochs_round_trip_and_real_ones_are_not_unborn() {
        let p = position(1_733_140_000_000);
        assert_eq!(p.epoch, "none.1733140000000");
        assert_eq!(p.offset, 0);
        assert_eq!(handed_out_at(&p.epoch), Some(1_733_140_000_000));
        assert_eq!(handed_out_at("0123456789abcdef"), None);
        assert_eq!(handed_out_at("none.x"), None);
    }

    #[test]
    fn resumes_from_an_unborn_position() {
        let at = 10 * DAY;
        // No row yet: nothing was published.
        assert_eq!(resolve(at, 0, None, at + 1000, DAY), Verdict::Nothing);
        // No row, but long enough for an incarnation to come and go.
        assert_eq!(
            resolve(at, 0, None, at + DAY + 1, DAY),
            Verdict::Failed(RecoveryFailure::Trimmed)
        );
        // A row born after the position (or committed just after it, stamped a bit before).
        assert_eq!(
            resolve(at, 0, Some(at + 5), at + 2 * DAY, DAY),
            Verdict::Continue
        );
        assert_eq!(
            resolve(at, 0, Some(at - 5), at + 10, DAY),
            Verdict::Continue
        );
        // A row born so late that an earlier one may have been removed in between.
        assert_eq!(
            resolve(at, 0, Some(at + DAY + 1), at + 2 * DAY, DAY),
            Verdict::Failed(RecoveryFailure::Trimmed)
        );
        // Paging on with the unborn epoch: the incarnation it paged through is gone.
        assert_eq!(
            resolve(at, 7, None, at + 10, DAY),
            Verdict::Failed(RecoveryFailure::EpochChanged)
        );
        assert_eq!(
            resolve(at, 7, Some(at + 1), at + 10, DAY),
            Verdict::Continue
        );
    }
}
