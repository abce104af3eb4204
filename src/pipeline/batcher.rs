//! Batching: events grouped into PutLogEvents requests that obey every CloudWatch rule.
//!
//! Rules kept by every batch (checked by a property test):
//! - at most [`MAX_BATCH_EVENTS`] events and [`MAX_BATCH_BYTES`] bytes, counting each event as
//!   its message's UTF-8 bytes + [`EVENT_OVERHEAD`];
//! - timestamps non-decreasing within a batch and from one batch to the next: an event older
//!   than its predecessor (stdout and stderr are timestamped by two Docker copiers) is given its
//!   predecessor's timestamp, so the order CloudWatch returns is the order the lines arrived;
//! - a batch spans at most 24 hours;
//! - events keep their order across batches.
//!
//! Ordering with requests in flight: CloudWatch sorts a stream by timestamp, and events with
//! equal timestamps sent in two concurrent requests may come back in either order. So when a
//! batch is cut, the events that share its last millisecond with the next event move to the
//! next batch (when that keeps the current one non-empty), and the shipper never sends a batch
//! whose first millisecond equals the last millisecond of a batch still in flight.
//!
//! What precedes a position ([`Mark`]): the batcher counts, over every event in order, the
//! newest timestamp and how many events carry it. With the ordering rules above, the events
//! CloudWatch stores for a stream, read in its order (timestamp, then arrival), are a
//! subsequence of the events the batcher saw, with the same timestamps; so "skip the first
//! `tie` stored events at `last_ms`" separates what came before a position from what came
//! after it. Each batch carries its `lead`, the events before it that share its first
//! millisecond, so that a batch whose answer was lost can be looked up exactly
//! (see `sink`'s lost answers).

pub(crate) use crate::aws::limits::{
    EVENT_OVERHEAD, MAX_BATCH_BYTES, MAX_BATCH_EVENTS, MAX_BATCH_SPAN_MS,
};
use crate::pipeline::framing::Event;

/// The counted size of an event.
pub(crate) fn event_size(e: &Event) -> usize {
    e.message.len() + EVENT_OVERHEAD
}

/// Limits of one batch (CloudWatch's by default; smaller in tests).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Limits {
    pub(crate) max_events: usize,
    pub(crate) max_bytes: usize,
    pub(crate) max_span_ms: i64,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_events: MAX_BATCH_EVENTS,
            max_bytes: MAX_BATCH_BYTES,
            max_span_ms: MAX_BATCH_SPAN_MS,
        }
    }
}

/// A request's worth of events.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Batch {
    /// Position of this batch in the stream of batches (0, 1, 2, ...).
    pub(crate) seq: u64,
    /// The events, timestamps already non-decreasing.
    pub(crate) events: Vec<Event>,
    /// Counted bytes (messages + 26 per event).
    pub(crate) bytes: usize,
    /// Events before this batch that carry its first millisecond.
    pub(crate) lead: u64,
}

/// What precedes a position in a stream: its newest timestamp and how many events carry it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
pub(crate) struct Mark {
    pub(crate) last_ms: i64,
    pub(crate) tie: u64,
}

impl Batch {
    pub(crate) fn first_ms(&self) -> i64 {
        self.events.first().map_or(0, |e| e.ts_ms)
    }
    pub(crate) fn last_ms(&self) -> i64 {
        self.events.last().map_or(0, |e| e.ts_ms)
    }
    /// Message bytes, without the overhead.
    pub(crate) fn message_bytes(&self) -> usize {
        self.bytes - self.events.len() * EVENT_OVERHEAD
    }
}

/// Groups events into batches. The flush timer lives with the caller.
#[derive(Debug)]
pub(crate) struct Batcher {
    /// The limits every batch obeys.
    limits: Limits,
    /// Events of the batch being filled.
    cur: Vec<Event>,
    /// Counted bytes of `cur`.
    cur_bytes: usize,
    /// Highest timestamp seen: later events are clamped up to it.
    last_ts: i64,
    /// Events seen with `last_ts`.
    tie: u64,
    /// `lead` of the batch being filled.
    cur_lead: u64,
    /// Sequence number of the next batch.
    next_seq: u64,
}

impl Batcher {
    pub(crate) fn new(limits: Limits) -> Self {
        Self {
            limits,
            cur: Vec::new(),
            cur_bytes: 0,
            last_ts: i64::MIN,
            tie: 0,
            cur_lead: 0,
            next_seq: 0,
        }
    }

    /// Continues after a position whose [`Mark`] is `mark` (resume): timestamps are raised
    /// and counted as they were in the run that stored what precedes it.
    pub(crate) fn after(mut self, mark: Mark) -> Self {
        self.last_ts = mark.last_ms;
        self.tie = mark.tie;
        self
    }

    /// What precedes the next event.
    pub(crate) fn mark(&self) -> Mark {
        Mark {
            last_ms: self.last_ts,
            tie: self.tie,
        }
    }

    /// The timestamp `ts` is stored with when it comes next.
    pub(crate) fn adjusted(&self, ts: i64) -> i64 {
        ts.max(self.last_ts)
    }

    /// Counts an event that is not batched (CloudWatch has it already: resume).
    pub(crate) fn observe(&mut self, ts: i64) {
        self.count(self.adjusted(ts));
    }

    /// Counts `ts` as the newest timestamp; returns the events before it that carry it.
    fn count(&mut self, ts: i64) -> u64 {
        let before = if ts == self.last_ts { self.tie } else { 0 };
        self.last_ts = ts;
        self.tie = before + 1;
        before
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.cur.is_empty()
    }

    /// Adds an event (at most `max_bytes` counted); returns the batch it closed, if any.
    pub(crate) fn push(&mut self, mut ev: Event) -> Option<Batch> {
        let size = event_size(&ev);
        debug_assert!(
            size <= self.limits.max_bytes,
            "framing keeps events within the limit"
        );
        ev.ts_ms = self.adjusted(ev.ts_ms);
        let before = self.count(ev.ts_ms);

        let mut closed = None;
        if let Some(first) = self.cur.first() {
            let full = self.cur.len() + 1 > self.limits.max_events
                || self.cur_bytes + size > self.limits.max_bytes;
            let too_long = ev.ts_ms - first.ts_ms > self.limits.max_span_ms;
            if full || too_long {
                closed = Some(self.cut(&ev, size));
            }
        }
        if self.cur.is_empty() {
            self.cur_lead = before;
        }
        self.cur_bytes += size;
        self.cur.push(ev);
        closed
    }

    /// Closes the current batch, if it has events.
    pub(crate) fn flush(&mut self) -> Option<Batch> {
        if self.cur.is_empty() {
            return None;
        }
        let events = std::mem::take(&mut self.cur);
        let bytes = std::mem::replace(&mut self.cur_bytes, 0);
        Some(self.make(events, bytes))
    }

    /// Closes the current batch on a timer: like [`Self::flush`], but the events of the last
    /// millisecond stay for the next batch when the batch has others, since more events of
    /// that millisecond may still come and must not race this batch.
    pub(crate) fn flush_on_timer(&mut self) -> Option<Batch> {
        let last = self.cur.last()?.ts_ms;
        let split = self
            .cur
            .iter()
            .rposition(|e| e.ts_ms != last)
            .map_or(0, |i| i + 1);
        if split == 0 {
            return self.flush();
        }
        let rest = self.cur.split_off(split);
        let rest_bytes: usize = rest.iter().map(event_size).sum();
        let events = std::mem::replace(&mut self.cur, rest);
        let bytes = self.cur_bytes - rest_bytes;
        self.cur_bytes = rest_bytes;
        Some(self.make(events, bytes))
    }

    /// Closes the current batch before `next`, carrying the events of `next`'s millisecond
    /// over when they fit beside it.
    fn cut(&mut self, next: &Event, next_size: usize) -> Batch {
        let mut split = self.cur.len();
        let mut carried_bytes = 0;
        while split > 0 && self.cur[split - 1].ts_ms == next.ts_ms {
            carried_bytes += event_size(&self.cur[split - 1]);
            split -= 1;
        }
        let carried = self.cur.len() - split;
        let fits =
            carried < self.limits.max_events && carried_bytes + next_size <= self.limits.max_bytes;
        if split == 0 || carried == 0 || !fits {
            return self
                .flush()
                .expect("cut is only called on a non-empty batch");
        }
        let rest = self.cur.split_off(split);
        let events = std::mem::replace(&mut self.cur, rest);
        let bytes = self.cur_bytes - carried_bytes;
        self.cur_bytes = carried_bytes;
        self.make(events, bytes)
    }

    fn make(&mut self, events: Vec<Event>, bytes: usize) -> Batch {
        let seq = self.next_seq;
        self.next_seq += 1;
        // What stays behind starts at a millisecond the closed batch does not have (cut and
        // flush_on_timer keep a millisecond whole), so its lead is 0.
        let lead = std::mem::replace(&mut self.cur_lead, 0);
        Batch {
            seq,
            events,
            bytes,
            lead,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline::framing::Source;
    use proptest::prelude::*;

    fn ev(ts: i64, msg: &str) -> Event {
        Event {
            ts_ms: ts,
            message: msg.to_string(),
            source: Source::Stdout,
        }
    }

    fn run(limits: Limits, events: Vec<Event>) -> Vec<Batch> {
        let mut b = Batcher::new(limits);
        let mut out: Vec<Batch> = events.into_iter().filter_map(|e| b.push(e)).collect();
        out.extend(b.flush());
        out
    }

    #[test]
    fn cuts_at_event_count() {
        let limits = Limits {
            max_events: 3,
            ..Limits::default()
        };
        let batches = run(limits, (0..7).map(|i| ev(i, "x")).collect());
        let sizes: Vec<_> = batches.iter().map(|b| b.events.len()).collect();
        assert_eq!(sizes, [3, 3, 1]);
        assert_eq!(batches.iter().map(|b| b.seq).collect::<Vec<_>>(), [0, 1, 2]);
    }

    #[test]
    fn cuts_at_bytes_counting_overhead() {
        let limits = Limits {
            max_bytes: 2 * (EVENT_OVERHEAD + 4),
            ..Limits::default()
        };
        let batches = run(limits, (0..5).map(|i| ev(i, "abcd")).collect());
        assert!(batches.iter().all(|b| b.bytes <= limits.max_bytes));
        assert_eq!(batches.len(), 3);
        assert_eq!(batches[0].message_bytes(), 8);
    }

    #[test]
    fn clamps_timestamps_non_decreasing() {
        let batches = run(
            Limits::default(),
            vec![ev(10, "a"), ev(5, "b"), ev(12, "c")],
        );
        let ts: Vec<_> = batches[0].events.iter().map(|e| e.ts_ms).collect();
        assert_eq!(ts, [10, 10, 12]);
    }

    #[test]
    fn cuts_at_24_hours() {
        let batches = run(
            Limits::default(),
            vec![ev(0, "a"), ev(MAX_BATCH_SPAN_MS + 1, "b")],
        );
        assert_eq!(batches.len(), 2);
    }

    #[test]
    fn same_millisecond_moves_to_the_next_batch() {
        let limits = Limits {
            max_events: 4,
            ..Limits::default()
        };
        let batches = run(
            limits,
            vec![ev(1, "a"), ev(2, "b"), ev(3, "c"), ev(3, "d"), ev(3, "e")],
        );
        let msgs: Vec<Vec<&str>> = batches
            .iter()
            .map(|b| b.events.iter().map(|e| e.message.as_str()).collect())
            .collect();
        assert_eq!(msgs, vec![vec!["a", "b"], vec!["c", "d", "e"]]);
        assert!(batches[0].last_ms() < batches[1].first_ms());
    }

    #[test]
    fn timer_flush_keeps_the_last_millisecond() {
        let mut b = Batcher::new(Limits::default());
        for (ts, m) in [(1, "a"), (2, "b"), (2, "c")] {
            assert!(b.push(ev(ts, m)).is_none());
        }
        let first = b.flush_on_timer().unwrap();
        assert_eq!(first.events.len(), 1);
        assert_eq!(first.bytes, event_size(&first.events[0]));
        // Only one millisecond left: it goes whole.
        let second = b.flush_on_timer().unwrap();
        assert_eq!(
            second
                .events
                .iter()
                .map(|e| e.message.as_str())
                .collect::<Vec<_>>(),
            ["b", "c"]
        );
        assert!(b.flush_on_timer().is_none());
        assert_eq!((first.seq, second.seq), (0, 1));
    }

    #[test]
    fn the_mark_counts_what_precedes_and_resumes_alike() {
        let mut b = Batcher::new(Limits::default());
        for (ts, m) in [(5, "a"), (7, "b"), (6, "c"), (7, "d")] {
            b.push(ev(ts, m));
        }
        let mark = b.mark();
        assert_eq!(mark, Mark { last_ms: 7, tie: 3 });
        // Continuing from the mark raises and counts exactly as the first run did.
        let mut again = Batcher::new(Limits::default()).after(mark);
        assert_eq!(again.adjusted(6), 7);
        again.observe(6);
        assert_eq!(again.mark(), Mark { last_ms: 7, tie: 4 });
        b.push(ev(6, "e"));
        assert_eq!(b.mark(), again.mark());
        let batch = again.push(ev(7, "f")).or_else(|| again.flush()).unwrap();
        assert_eq!((batch.first_ms(), batch.lead), (7, 4));
    }

    proptest! {
        #[test]
        fn every_batch_obeys_the_rules(
            specs in prop::collection::vec((0i64..5, 1usize..60), 0..300),
            max_events in 1usize..20,
            max_bytes in 90usize..400,
            backwards in prop::collection::vec(any::<bool>(), 300),
        ) {
            let limits = Limits { max_events, max_bytes, max_span_ms: 6 };
            let mut ts = 0i64;
            let events: Vec<Event> = specs.iter().enumerate().map(|(i, (dt, len))| {
                // Mostly forward, sometimes a little backwards (two Docker copiers).
                ts = if backwards[i] { ts - dt } else { ts + dt };
                ev(ts, &format!("{i:0>width$}", width = *len))
            }).collect();
            let batches = run(limits, events.clone());
            let mut flat = Vec::new();
            let mut flat_ts: Vec<i64> = Vec::new();
            let mut prev_ts = i64::MIN;
            for (n, b) in batches.iter().enumerate() {
                prop_assert_eq!(b.seq, n as u64);
                // lead: the events before the batch that share its first millisecond.
                let lead = flat_ts.iter().filter(|&&t| t == b.first_ms()).count() as u64;
                prop_assert_eq!(b.lead, lead);
                prop_assert!(!b.events.is_empty());
                prop_assert!(b.events.len() <= max_events);
                prop_assert!(b.bytes <= max_bytes);
                prop_assert_eq!(b.bytes, b.events.iter().map(event_size).sum::<usize>());
                prop_assert!(b.last_ms() - b.first_ms() <= limits.max_span_ms);
                for e in &b.events {
                    prop_assert!(e.ts_ms >= prev_ts);
                    prev_ts = e.ts_ms;
                }
                flat.extend(b.events.iter().map(|e| e.message.clone()));
                flat_ts.extend(b.events.iter().map(|e| e.ts_ms));
            }
            let want: Vec<String> = events.into_iter().map(|e| e.message).collect();
            prop_assert_eq!(flat, want);
        }
    }
}
