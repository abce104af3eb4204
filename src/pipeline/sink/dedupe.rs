//! Resume without duplicates and without a gap: after a crash, CloudWatch may hold events
//! past the checkpoint's position that the checkpoint does not know of — acknowledged
//! batches beyond a batch that was still being retried (a hole), acknowledgements since the
//! last save, requests in flight at the crash. Resume reads what the stream holds from the
//! position's [`Mark`] on and [`AlreadyStored`] drops, from the events it frames again, every
//! one CloudWatch already has; it sends exactly the holes.
//!
//! Why this is exact: the shipper's ordering rules (see `batcher`) make the stream's events,
//! read in CloudWatch's order (timestamp, then arrival), a subsequence of the events framed
//! from the log, with the timestamps the batcher gave them; the batcher continues from the
//! mark, so the events framed again get the same timestamps. The first `tie` stored events
//! at `last_ms` precede the position and are dropped from the read. Then one pass matches:
//! an event equal (timestamp and message) to the oldest stored event left is skipped and
//! that stored event consumed. Equal events are interchangeable, so taking the first match
//! gives the same stream as taking the "right" one.
//!
//! The attach path: a run that read it gave its events the times dockwatch received their
//! bytes, and resume frames the rest from the engine's log, whose times differ from those by
//! a fraction of a millisecond (both are the host's clock at the same moment). Such a resume
//! matches with a tolerance ([`AlreadyStored::within`]): an event is CloudWatch's when the
//! message is equal and the times are at most that far apart, and a stored event is given up
//! only once the framed events are that far past it. Matching stays in order, so the same
//! argument holds. A hole (an event CloudWatch does not have) is then sent with a time before
//! the next stored event's ([`AlreadyStored::before_next`]): its own engine time can be a
//! little later than that event's receive time, which would put it after in CloudWatch's
//! order (found by the SIGKILL-under-faults test, 1 kill in 10).
//!
//! What it cannot know: a stored event no framed event matches (another writer in the same
//! stream, or an event changed) is counted as unrecognised once the framed events have passed
//! its timestamp, and reported; a read that lags CloudWatch's writes (seconds, on AWS) can let
//! a duplicate through, which is why resume reads only after the crash, never during a run.

use std::collections::VecDeque;

use crate::pipeline::batcher::Mark;

/// The stored events past a position, consumed as the events framed again pass them.
#[derive(Debug, Default)]
pub(crate) struct AlreadyStored {
    /// Stored events past the position, in CloudWatch's order: (timestamp, message).
    stored: VecDeque<(i64, String)>,
    /// Events skipped because CloudWatch has them.
    pub(crate) skipped: u64,
    /// Stored events no framed event matched.
    pub(crate) unrecognised: u64,
    /// How far apart a stored event's time and its framed event's may be (ms).
    tolerance_ms: i64,
}

impl AlreadyStored {
    /// `read`: the stream's events with timestamps from `mark.last_ms` on, in its order.
    pub(crate) fn after(mark: Mark, read: Vec<(i64, String)>) -> Self {
        let mut stored: VecDeque<(i64, String)> =
            read.into_iter().filter(|e| e.0 >= mark.last_ms).collect();
        let mut tie = mark.tie;
        while tie > 0 && stored.front().is_some_and(|e| e.0 == mark.last_ms) {
            stored.pop_front();
            tie -= 1;
        }
        Self {
            stored,
            ..Self::default()
        }
    }

    /// Matches times up to `ms` apart (see the module doc).
    pub(crate) fn within(mut self, ms: i64) -> Self {
        self.tolerance_ms = ms;
        self
    }

    /// True while stored events are left to match.
    pub(crate) fn is_matching(&self) -> bool {
        !self.stored.is_empty()
    }

    /// The next framed event, with the timestamp it is stored with: `Some(stored time)` when
    /// CloudWatch has it (skip it).
    pub(crate) fn take(&mut self, ts: i64, message: &str) -> Option<i64> {
        // Stored events older than this one can match nothing any more.
        let tol = self.tolerance_ms;
        while self.stored.front().is_some_and(|e| e.0 < ts - tol) {
            self.stored.pop_front();
            self.unrecognised += 1;
        }
        match self.stored.front() {
            Some(e) if (e.0 - ts).abs() <= tol && e.1 == message => {
                let stored = e.0;
                self.stored.pop_front();
                self.skipped += 1;
                Some(stored)
            }
            _ => None,
        }
    }

    /// With a tolerance: the latest time a framed event CloudWatch does not have may be
    /// stored with to stay before the next stored event (which it precedes: CloudWatch orders
    /// by time, then arrival, and it arrives later). Without one, framed times are the stored
    /// ones already.
    pub(crate) fn before_next(&self) -> Option<i64> {
        if self.tolerance_ms == 0 {
            return None;
        }
        self.stored.front().map(|e| e.0 - 1)
    }

    /// The framed events ended: stored events left are unrecognised.
    pub(crate) fn finish(&mut self) {
        self.unrecognised += self.stored.len() as u64;
        self.stored.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn stored(v: &[(i64, &str)]) -> Vec<(i64, String)> {
        v.iter().map(|(t, m)| (*t, m.to_string())).collect()
    }

    /// The framed events that are sent, and the skip count.
    fn run(mark: Mark, read: Vec<(i64, String)>, framed: &[(i64, &str)]) -> (Vec<String>, u64) {
        let mut a = AlreadyStored::after(mark, read);
        let sent = framed
            .iter()
            .filter(|(t, m)| a.take(*t, m).is_none())
            .map(|(_, m)| m.to_string())
            .collect();
        a.finish();
        (sent, a.skipped)
    }

    #[test]
    fn sends_exactly_the_holes() {
        // Batches [b c] and [f] were stored, [d e] was not (still retried at the crash).
        let mark = Mark { last_ms: 1, tie: 1 };
        let read = stored(&[(1, "a"), (2, "b"), (3, "c"), (6, "f")]);
        let framed = [(2, "b"), (3, "c"), (4, "d"), (5, "e"), (6, "f"), (7, "g")];
        assert_eq!(
            run(mark, read, &framed),
            (vec!["d".into(), "e".into(), "g".into()], 3)
        );
    }

    #[test]
    fn the_tie_separates_what_precedes_the_position() {
        // Three "x" at ms 5: two before the position, one after it (stored).
        let mark = Mark { last_ms: 5, tie: 2 };
        let read = stored(&[(5, "x"), (5, "x"), (5, "x")]);
        assert_eq!(
            run(mark, read.clone(), &[(5, "x"), (5, "x")]),
            (vec!["x".into()], 1)
        );
        // With all three before the position, nothing after it is stored.
        let mark = Mark { tie: 3, ..mark };
        assert_eq!(run(mark, read, &[(5, "x")]), (vec!["x".into()], 0));
    }

    #[test]
    fn a_foreign_event_is_unrecognised_and_does_not_block() {
        let mut a = AlreadyStored::after(Mark::default(), stored(&[(1, "other"), (2, "b")]));
        assert!(a.take(2, "a").is_none(), "same-ms event a is not stored");
        assert_eq!(a.take(2, "b"), Some(2));
        a.finish();
        assert_eq!((a.skipped, a.unrecognised), (1, 1));
    }

    proptest! {
        /// Whatever subset of whole batches was stored, the stream ends up with every framed
        /// event exactly once.
        #[test]
        fn stored_batches_plus_what_is_sent_is_everything_once(
            gaps in prop::collection::vec(0i64..2, 1..120),
            words in prop::collection::vec(0u8..3, 120),
            batch in 1usize..8,
            stored_mask in prop::collection::vec(any::<bool>(), 120),
            cut in 0usize..120,
        ) {
            // Framed events: timestamps non-decreasing, few distinct messages (repeats).
            let mut ts = 0;
            let events: Vec<(i64, String)> = gaps.iter().zip(&words).map(|(g, w)| {
                ts += g;
                (ts, format!("m{w}"))
            }).collect();
            // The position: after `cut` events; its mark.
            let cut = cut.min(events.len());
            let last_ms = if cut == 0 { -1 } else { events[cut - 1].0 };
            let tie = events[..cut].iter().filter(|e| e.0 == last_ms).count() as u64;
            // Past the position, whole batches were stored or not.
            let after = &events[cut..];
            let mut stream: Vec<(i64, String)> = events[..cut].to_vec();
            for (i, b) in after.chunks(batch).enumerate() {
                if stored_mask[i] {
                    stream.extend(b.iter().cloned());
                }
            }
            let mut a = AlreadyStored::after(Mark { last_ms, tie }, stream.clone());
            for e in after {
                if a.take(e.0, &e.1).is_none() {
                    stream.push(e.clone());
                }
            }
            a.finish();
            prop_assert_eq!(a.unrecognised, 0);
            let mut got = stream;
            got.sort();
            let mut want = events.clone();
            want.sort();
            prop_assert_eq!(got, want);
        }
    }

    #[test]
    fn with_a_tolerance_times_apart_match_and_holes_stay_before_the_next_stored_event() {
        let stored = vec![(105, "b".to_string()), (108, "d".to_string())];
        let mut a = AlreadyStored::after(Mark::default(), stored).within(60_000);
        assert_eq!(a.before_next(), Some(104));
        assert_eq!(a.take(100, "a"), None, "a hole");
        assert_eq!(a.take(101, "b"), Some(105), "stored 4 ms later");
        assert_eq!(a.before_next(), Some(107));
        assert_eq!(a.take(102, "c"), None);
        assert_eq!(a.take(103, "d"), Some(108));
        assert!(!a.is_matching());
        // Without a tolerance, times must be equal.
        let mut b = AlreadyStored::after(Mark::default(), vec![(105, "b".to_string())]);
        assert_eq!(b.before_next(), None);
        assert_eq!(b.take(101, "b"), None);
    }
}
