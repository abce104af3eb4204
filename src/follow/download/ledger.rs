//! What a stream's file holds, by time, so that events CloudWatch accepts *late* — after an
//! event with a newer timestamp was already downloaded — are found and appended once.
//!
//! # Why
//! GetLogEvents serves a stream sorted by event timestamp, and a forward token is a position
//! in that order: an event that arrives later with an older timestamp lands behind the
//! position and a forward reader never sees it. Every writer with several requests in flight
//! or retries produces such arrivals (dockwatch itself under throttling: a third of the
//! events of a 300,000-line run). CloudWatch accepts events up to 14 days old. GetLogEvents
//! gives no event ids, so "what is already in the file" has to be known locally.
//!
//! # Design
//! The file is divided by event time into buckets — *fine* (5 s) for time still inside the
//! late window, *coarse* (1 h) behind it. Each bucket keeps the count and the wrapping sum of
//! the 64-bit fingerprints of its lines (the line exactly as rendered into the file, so any
//! line format works), and the byte ranges of the file that hold those lines. Checking a
//! time range means reading it again from CloudWatch (GetLogEvents with startTime/endTime)
//! and comparing each bucket's (count, sum); only a bucket that differs is resolved, by
//! fingerprinting its lines back from the file ([`Fingerprints`]) and taking CloudWatch's
//! events away from them: what is left over of CloudWatch's is missing, and is appended.
//!
//! Each stretch of time is checked:
//! 1. *early*, once it is `window / 16` old (at least one fine bucket);
//! 2. *final*, once it is `window` old; its fine buckets then merge into coarse ones;
//! 3. by *reconciliation*, every `reconcile_interval`, one coarse bucket at a time, from
//!    `now - reconcile_horizon` (up to CloudWatch's 14 days) to the final frontier itself
//!    (the last coarse bucket is the partial one of the frontier's hour): events later than
//!    the window are found there, also one minutes late in the current hour or older than the
//!    first event read.
//!
//! Time before the early frontier belongs to the checks: the forward reader drops any event
//! there (CloudWatch does not return them going forward anyway), so a check and the forward
//! read never both write one event. The checks only look at time the forward reader has
//! passed: up to the newest timestamp it wrote while it is catching up, up to now once it has
//! reached the end of the stream (so the last seconds of a stream that went quiet are
//! checked too). Time that the forward reader
//! first wrote when it was already `window` old (catching up on history) skips the two window
//! checks: nothing can have arrived in between that reconciliation would not find.
//!
//! # Order of the file
//! Append-only: events read forward, in CloudWatch's order; each late event is appended when
//! it is found, so a late event follows events with newer timestamps (the `rfc3339`,
//! `unix-ms` and `json` formats carry each event's own time; sort by it to get time order).
//!
//! # Crash safety
//! The ledger is part of the download state and saved with it, after the bytes it describes
//! (the state module's invariant 2). Bytes appended after the last save are cut back on
//! start, and the check that found them runs again.
//!
//! # Cost
//! Every event is read three times within the window (forward, early, final) plus once per
//! reconciliation pass; a bucket that differs is also read back from the local file. The
//! state holds at most `window / 5 s` fine and one coarse bucket per hour of the horizon.

use std::collections::{BTreeMap, HashMap};

use serde::{Deserialize, Serialize};

/// Span of a fine bucket.
pub(crate) const FINE_MS: i64 = 5_000;
/// Span of a coarse bucket.
pub(crate) const COARSE_MS: i64 = 3_600_000;

/// The fingerprint of one rendered line (without its newline).
pub(crate) fn fingerprint(line: &[u8]) -> u64 {
    // FNV-1a then a SplitMix64 finaliser, so that sums of fingerprints stay well mixed.
    let mut z = crate::util::fnv1a(line).wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// `t` rounded down to a multiple of `span`.
pub(crate) fn align(t: i64, span: i64) -> i64 {
    t.div_euclid(span) * span
}

/// The lines of one stretch of time: how many, the sum of their fingerprints, where they are.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Bucket {
    pub(crate) count: u64,
    pub(crate) sum: u64,
    /// Byte ranges `[start, end)` of the file holding these lines, ascending; adjacent
    /// ranges are merged.
    pub(crate) ranges: Vec<(u64, u64)>,
    /// When the forward reader first wrote into it (epoch ms; 0 for a check or a merge).
    #[serde(default)]
    pub(crate) first_written: i64,
}

impl Bucket {
    fn add(&mut self, fp: u64, range: (u64, u64)) {
        self.count += 1;
        self.sum = self.sum.wrapping_add(fp);
        push_range(&mut self.ranges, range);
    }

    fn absorb(&mut self, other: Bucket) {
        self.count += other.count;
        self.sum = self.sum.wrapping_add(other.sum);
        for r in other.ranges {
            push_range(&mut self.ranges, r);
        }
    }

    /// (count, sum): what a check compares.
    pub(crate) fn digest(&self) -> (u64, u64) {
        (self.count, self.sum)
    }
}

fn push_range(ranges: &mut Vec<(u64, u64)>, r: (u64, u64)) {
    match ranges.last_mut() {
        Some(last) if last.1 == r.0 => last.1 = r.1,
        _ => {
            ranges.push(r);
            ranges.sort_unstable();
        }
    }
}

/// Which check a [`Check`] is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Pass {
    Early,
    Final,
    Reconcile,
}

/// A time range `[from, to)` to read again and compare.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Check {
    pub(crate) pass: Pass,
    pub(crate) from: i64,
    pub(crate) to: i64,
}

/// The time settings of the checks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Schedule {
    /// Late window, ms.
    pub(crate) window_ms: i64,
    /// Between the starts of two reconciliation passes, ms.
    pub(crate) reconcile_every_ms: i64,
    /// How far back reconciliation looks, ms.
    pub(crate) horizon_ms: i64,
}

impl Schedule {
    fn early_age(&self) -> i64 {
        (self.window_ms / 16).max(FINE_MS)
    }
}

/// Longest range one window check covers (bounded work per step).
const MAX_CHECK_MS: i64 = 60_000;

/// One stream's buckets and check frontiers.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Ledger {
    /// Nothing before this time is known to the ledger (a stream downloaded by a dockwatch
    /// without one): checks never look there.
    pub(crate) since: i64,
    /// Fine buckets by start, for time at or after `final_to`.
    pub(crate) fine: BTreeMap<i64, Bucket>,
    /// Coarse buckets by start, for time before `final_to`.
    pub(crate) coarse: BTreeMap<i64, Bucket>,
    /// Time before this had its early check; `None` until the first event.
    pub(crate) early_to: Option<i64>,
    /// Time before this had its final check.
    pub(crate) final_to: Option<i64>,
    /// The next coarse bucket of the reconciliation pass under way.
    pub(crate) reconcile_next: Option<i64>,
    /// When the last reconciliation pass started (epoch ms).
    pub(crate) reconcile_started: i64,
}

impl Ledger {
    /// A ledger for a stream downloaded from its start.
    pub(crate) fn new() -> Self {
        Self {
            since: i64::MIN,
            ..Default::default()
        }
    }

    /// A ledger that knows nothing before `since`.
    pub(crate) fn from(since: i64) -> Self {
        Self {
            since,
            reconcile_started: since,
            early_to: Some(align(since, FINE_MS) + FINE_MS),
            final_to: Some(align(since, FINE_MS) + FINE_MS),
            ..Default::default()
        }
    }

    /// Records one line written to the file at `range`, with event time `ts`; `now` is set
    /// when the forward reader wrote it.
    pub(crate) fn record(&mut self, ts: i64, fp: u64, range: (u64, u64), forward_now: Option<i64>) {
        let f = align(ts, FINE_MS);
        if self.final_to.is_none() {
            // The first line: checks start at its time, the first reconciliation pass one
            // interval later.
            self.early_to = Some(f);
            self.final_to = Some(f);
            self.reconcile_started = forward_now.unwrap_or(ts);
        }
        if let (true, start) = self.slot(ts) {
            self.coarse.entry(start).or_default().add(fp, range);
        } else {
            let b = self.fine.entry(f).or_default();
            if b.count == 0 && b.first_written == 0 {
                b.first_written = forward_now.unwrap_or(0);
            }
            b.add(fp, range);
        }
    }

    /// The bucket that holds time `t` (fine or coarse, as it is filed now), if any.
    pub(crate) fn bucket_at(&self, t: i64) -> Option<&Bucket> {
        match self.slot(t) {
            (true, start) => self.coarse.get(&start),
            (false, start) => self.fine.get(&start),
        }
    }

    /// The start of the bucket that holds time `t` as it is filed now.
    pub(crate) fn bucket_start(&self, t: i64) -> i64 {
        self.slot(t).1
    }

    /// Where time `t` is filed now: in a coarse bucket (behind the final frontier) or a fine
    /// one, and that bucket's start.
    fn slot(&self, t: i64) -> (bool, i64) {
        if t < self.final_to.unwrap_or(i64::MIN) {
            (true, align(t, COARSE_MS))
        } else {
            (false, align(t, FINE_MS))
        }
    }

    /// The next check to run, if one is due. `sealed`: the forward reader has passed every
    /// time before it (the newest timestamp written).
    pub(crate) fn due(&mut self, now: i64, sealed: Option<i64>, s: &Schedule) -> Option<Check> {
        let (Some(early), Some(fin), Some(sealed)) = (self.early_to, self.final_to, sealed) else {
            return self.reconcile_due(now, s);
        };
        self.skip_history(now, sealed, s);
        let (early, fin) = (self.early_to.unwrap_or(early), self.final_to.unwrap_or(fin));
        let early_target = align((now - s.early_age()).min(sealed), FINE_MS);
        if early_target > early {
            return Some(Check {
                pass: Pass::Early,
                from: early,
                to: early_target.min(early + MAX_CHECK_MS),
            });
        }
        let final_target = align((now - s.window_ms).min(sealed), FINE_MS).min(early);
        if final_target > fin {
            return Some(Check {
                pass: Pass::Final,
                from: fin,
                to: final_target.min(fin + MAX_CHECK_MS),
            });
        }
        self.reconcile_due(now, s)
    }

    /// Moves both frontiers over time that the forward reader first wrote when it was already
    /// a window old (nothing can have arrived late there within the window), when no window
    /// check is pending.
    fn skip_history(&mut self, now: i64, sealed: i64, s: &Schedule) {
        let (Some(early), Some(fin)) = (self.early_to, self.final_to) else {
            return;
        };
        if early != fin {
            return;
        }
        // Never past what the forward reader has passed: it still writes there.
        let limit = align((now - s.window_ms).min(sealed), FINE_MS);
        if limit <= fin {
            return;
        }
        let mut to = fin;
        for (&start, b) in self.fine.range(fin..limit) {
            // A gap before an old-written bucket was passed in the same read as it.
            if b.first_written < start + FINE_MS + s.window_ms {
                break;
            }
            to = start + FINE_MS;
        }
        if to > fin {
            self.early_to = Some(to);
            self.finish(Check {
                pass: Pass::Final,
                from: fin,
                to,
            });
        }
    }

    /// Reconciliation runs up to the final frontier itself, through the partial coarse bucket
    /// of its hour: time there is behind both window checks (an event more than a window late
    /// in the current hour, or older than the first event read) and would otherwise wait for
    /// the hour to end.
    fn reconcile_due(&mut self, now: i64, s: &Schedule) -> Option<Check> {
        let end = self.final_to?;
        if self.reconcile_next.is_none() && now - self.reconcile_started >= s.reconcile_every_ms {
            let start = align((now - s.horizon_ms).max(self.since), COARSE_MS);
            self.reconcile_started = now;
            if start < end {
                self.reconcile_next = Some(start);
            }
        }
        let from = self.reconcile_next?;
        if from >= end {
            self.reconcile_next = None;
            return None;
        }
        Some(Check {
            pass: Pass::Reconcile,
            from,
            to: end,
        })
    }

    /// A check of `[c.from, c.to)` is done (its missing lines recorded): move its frontier.
    pub(crate) fn finish(&mut self, c: Check) {
        match c.pass {
            Pass::Early => self.early_to = Some(c.to),
            Pass::Final => {
                self.final_to = Some(c.to);
                let keep = self.fine.split_off(&c.to);
                let done = std::mem::replace(&mut self.fine, keep);
                for (start, b) in done {
                    self.coarse
                        .entry(align(start, COARSE_MS))
                        .or_default()
                        .absorb(Bucket {
                            first_written: 0,
                            ..b
                        });
                }
            }
            Pass::Reconcile => {
                let end = self.final_to.unwrap_or(c.to);
                self.reconcile_next = (c.to < end).then_some(c.to);
            }
        }
    }

    /// Forgets coarse buckets older than the horizon (their time is never checked again).
    pub(crate) fn prune(&mut self, now: i64, s: &Schedule) {
        let oldest = align(now - s.horizon_ms, COARSE_MS);
        self.coarse = self.coarse.split_off(&oldest);
    }
}

/// A multiset of fingerprints: the lines a bucket's ranges hold in the file.
#[derive(Debug, Default)]
pub(crate) struct Fingerprints(HashMap<u64, u32>);

impl Fingerprints {
    /// The fingerprints of the whole lines in `bytes` (each ends with `\n`).
    pub(crate) fn add_lines(&mut self, bytes: &[u8]) {
        for line in bytes.split(|b| *b == b'\n') {
            if !line.is_empty() {
                *self.0.entry(fingerprint(line)).or_default() += 1;
            }
        }
    }

    /// Takes one `fp` away; false when there is none (the line is not in the file).
    pub(crate) fn take(&mut self, fp: u64) -> bool {
        match self.0.get_mut(&fp) {
            Some(n) if *n > 0 => {
                *n -= 1;
                true
            }
            _ => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const SCHED: Schedule = Schedule {
        window_ms: 160_000,
        reconcile_every_ms: 3_600_000,
        horizon_ms: 14 * 24 * 3_600_000,
    };

    fn lines(msgs: &[&str]) -> Vec<u8> {
        msgs.iter()
            .flat_map(|m| format!("{m}\n").into_bytes())
            .collect()
    }

    #[test]
    fn ranges_merge_when_adjacent() {
        let mut l = Ledger::new();
        l.record(1_000, 1, (0, 10), Some(2_000));
        l.record(1_001, 2, (10, 25), Some(2_000));
        l.record(1_002, 3, (90, 99), Some(2_000));
        let b = l.bucket_at(1_000).unwrap();
        assert_eq!(b.ranges, vec![(0, 25), (90, 99)]);
        assert_eq!(b.digest(), (3, 6));
    }

    #[test]
    fn checks_come_early_then_final_then_merge() {
        let mut l = Ledger::new();
        let t0 = 1_000_000_000;
        l.record(t0, 7, (0, 5), Some(t0));
        l.record(t0 + 20_000, 8, (5, 10), Some(t0 + 20_000));
        let sealed = Some(t0 + 20_000);
        // Too young for anything.
        assert_eq!(l.due(t0 + 1_000, sealed, &SCHED), None);
        // Early: time older than window/16 = 10 s, up to what the forward reader passed.
        let c = l.due(t0 + 30_000, sealed, &SCHED).unwrap();
        assert_eq!(
            (c.pass, c.from, c.to),
            (Pass::Early, t0, align(t0 + 20_000, FINE_MS))
        );
        l.finish(c);
        assert_eq!(l.due(t0 + 30_000, sealed, &SCHED), None);
        // Final: once a window old.
        let c = l.due(t0 + 200_000, sealed, &SCHED).unwrap();
        assert_eq!((c.pass, c.from), (Pass::Final, t0));
        l.finish(c);
        assert!(!l.fine.contains_key(&t0), "merged into a coarse bucket");
        assert_eq!(l.bucket_at(t0).unwrap().digest().0, 1);
        // A line found late for merged time goes to the coarse bucket.
        l.record(t0 + 1, 9, (10, 15), None);
        assert_eq!(l.bucket_at(t0).unwrap().digest(), (2, 16));
    }

    #[test]
    fn history_written_old_skips_the_window_checks() {
        let mut l = Ledger::new();
        let now = 10_000_000_000;
        for i in 0..100 {
            let ts = now - 86_400_000 + i * 1_000;
            l.record(ts, i as u64, (i as u64, i as u64 + 1), Some(now));
        }
        let sealed = Some(now - 86_400_000 + 99_000);
        let c = l.due(now, sealed, &SCHED);
        // No early or final check of the old history; reconciliation may start.
        assert!(c.is_none_or(|c| c.pass == Pass::Reconcile), "{c:?}");
        // Only the bucket the forward reader is still in is left.
        assert_eq!(l.fine.len(), 1);
    }

    #[test]
    fn reconciliation_walks_the_horizon_once_per_interval() {
        let mut l = Ledger::new();
        let now = 10_000_000_000;
        l.record(
            now - 3 * COARSE_MS,
            1,
            (0, 1),
            Some(now - 3 * COARSE_MS + 1),
        );
        l.early_to = Some(now - COARSE_MS);
        l.final_to = Some(now - COARSE_MS);
        let sealed = Some(now - COARSE_MS);
        let c = l.due(now, sealed, &SCHED).unwrap();
        assert_eq!(c.pass, Pass::Reconcile);
        assert_eq!(c.from, align(now - SCHED.horizon_ms, COARSE_MS));
        assert_eq!(
            c.to,
            now - COARSE_MS,
            "up to the frontier, not its hour's start"
        );
        l.finish(Check {
            to: now - COARSE_MS,
            ..c
        });
        assert_eq!(l.due(now + 1, sealed, &SCHED), None, "pass over");
        let c = l.due(now + SCHED.reconcile_every_ms, sealed, &SCHED);
        assert_eq!(c.map(|c| c.pass), Some(Pass::Reconcile), "next pass");
    }

    /// The hole found by trying it: a stream whose first events were read 20 s after they
    /// were put, then an event 10 minutes older than the newest in the same hour. Both
    /// window checks have passed that time; reconciliation must reach it within one interval,
    /// not when the hour ends.
    #[test]
    fn reconciliation_reaches_the_partial_hour_behind_the_final_frontier() {
        let sched = Schedule {
            window_ms: 32_000,
            reconcile_every_ms: 20_000,
            horizon_ms: 14 * 24 * 3_600_000,
        };
        let hour = 10_000 * COARSE_MS;
        let first = hour + 30 * 60_000;
        let mut l = Ledger::new();
        let mut now = first + 20_000;
        l.record(first, 1, (0, 1), Some(now));
        // The checks run as the daemon runs them, for two minutes.
        let mut reconciled = Vec::new();
        while now < first + 140_000 {
            while let Some(c) = l.due(now, Some(i64::MAX), &sched) {
                if c.pass == Pass::Reconcile {
                    reconciled.push((c.from, c.to));
                }
                l.finish(c);
            }
            now += 1_000;
        }
        // 10 minutes before the first event, the same hour; and 5 s before it (the first
        // fine bucket is the early check's); an hour boundary's first millisecond.
        for late in [first - 600_000, first - 5_000, hour] {
            assert!(
                reconciled
                    .iter()
                    .any(|(from, to)| (*from..*to).contains(&late)),
                "{late} never reconciled: {reconciled:?}"
            );
        }
    }

    #[test]
    fn fingerprints_are_taken_once_each() {
        let mut f = Fingerprints::default();
        f.add_lines(&lines(&["a", "b", "a"]));
        assert!(f.take(fingerprint(b"a")));
        assert!(f.take(fingerprint(b"a")));
        assert!(!f.take(fingerprint(b"a")));
        assert!(f.take(fingerprint(b"b")));
        assert!(!f.take(fingerprint(b"c")));
    }

    proptest! {
        /// Whatever subset of a bucket's lines the file holds, taking CloudWatch's lines
        /// away from the file's fingerprints leaves exactly the missing ones, and the digests
        /// differ exactly when something is missing.
        #[test]
        fn the_missing_lines_are_found_exactly(
            msgs in proptest::collection::vec("[ab]{0,2}", 0..40),
            keep in proptest::collection::vec(any::<bool>(), 40),
        ) {
            let mut l = Ledger::new();
            let mut file = Vec::new();
            for (i, m) in msgs.iter().enumerate() {
                let line = format!("{i} {m}");
                if keep[i] {
                    let start = file.len() as u64;
                    file.extend_from_slice(line.as_bytes());
                    file.push(b'\n');
                    l.record(1_000, fingerprint(line.as_bytes()), (start, file.len() as u64), Some(1));
                }
            }
            let cw: Vec<String> = msgs.iter().enumerate().map(|(i, m)| format!("{i} {m}")).collect();
            let mut count = 0u64;
            let mut sum = 0u64;
            for c in &cw {
                count += 1;
                sum = sum.wrapping_add(fingerprint(c.as_bytes()));
            }
            let stored = l.bucket_at(1_000).map(Bucket::digest).unwrap_or((0, 0));
            let all_kept = keep.iter().take(msgs.len()).all(|k| *k);
            prop_assert_eq!(stored == (count, sum), all_kept);
            let mut f = Fingerprints::default();
            if let Some(b) = l.bucket_at(1_000) {
                for (s, e) in &b.ranges {
                    f.add_lines(&file[*s as usize..*e as usize]);
                }
            }
            let missing: Vec<usize> = cw.iter().enumerate()
                .filter(|(_, c)| !f.take(fingerprint(c.as_bytes())))
                .map(|(i, _)| i)
                .collect();
            let expected: Vec<usize> = (0..msgs.len()).filter(|i| !keep[*i]).collect();
            prop_assert_eq!(missing, expected);
        }
    }
}
