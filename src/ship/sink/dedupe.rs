//! Resume without duplicates: requests in flight when dockwatch died may have been stored by
//! CloudWatch after the last checkpoint. Before shipping, resume reads the stream's newest
//! events (`tail`) and [`Dedupe`] drops the leading events it is about to send that already
//! stand at the very end of the stream, in the same order.
//!
//! Matching: an event matches a stored one when the messages are equal and the stored
//! timestamp is the event's or up to one second later (the batcher may have raised it to its
//! predecessor's). Only a run of events that reaches the end of the tail counts; the longest
//! such run wins.

use crate::ship::framing::Event;

/// Filters the first events of a resumed run.
#[derive(Debug)]
pub(crate) struct Dedupe {
    /// The stream's newest events, oldest first: (timestamp, message).
    tail: Vec<(i64, String)>,
    /// Events held while undecided.
    held: Vec<Event>,
    /// Positions in `tail` where the held events may start.
    candidates: Vec<usize>,
    /// Decided: everything now passes.
    decided: bool,
    /// Events dropped as already delivered.
    pub(crate) skipped: u64,
}

fn matches(stored: &(i64, String), e: &Event) -> bool {
    stored.1 == e.message && (e.ts_ms..=e.ts_ms + 1000).contains(&stored.0)
}

impl Dedupe {
    pub(crate) fn new(tail: Vec<(i64, String)>) -> Self {
        let decided = tail.is_empty();
        Self {
            tail,
            held: Vec::new(),
            candidates: Vec::new(),
            decided,
            skipped: 0,
        }
    }

    /// True while events are held back.
    pub(crate) fn is_deciding(&self) -> bool {
        !self.decided
    }

    /// Feeds events in order; returns those to ship.
    pub(crate) fn feed(&mut self, events: Vec<Event>) -> Vec<Event> {
        if self.decided {
            return events;
        }
        let mut out = Vec::new();
        for e in events {
            if self.decided {
                out.push(e);
                continue;
            }
            let i = self.held.len();
            let n = self.tail.len();
            if i == 0 {
                self.candidates = (0..n).filter(|&j| matches(&self.tail[j], &e)).collect();
            } else {
                let tail = &self.tail;
                self.candidates
                    .retain(|&j| j + i >= n || matches(&tail[j + i], &e));
            }
            self.held.push(e);
            let held = self.held.len();
            if self.candidates.is_empty() {
                self.decide(0, &mut out);
            } else if self.candidates.iter().all(|&j| j + held >= n) {
                let j = *self.candidates.iter().min().expect("non-empty");
                self.decide(n - j, &mut out);
            }
        }
        out
    }

    /// The input ended: what is still held.
    pub(crate) fn finish(&mut self) -> Vec<Event> {
        let mut out = Vec::new();
        if !self.decided {
            let n = self.tail.len();
            let held = self.held.len();
            let complete = self
                .candidates
                .iter()
                .filter(|&&j| j + held >= n)
                .min()
                .copied();
            self.decide(complete.map_or(0, |j| n - j), &mut out);
        }
        out
    }

    fn decide(&mut self, dup: usize, out: &mut Vec<Event>) {
        self.decided = true;
        self.skipped = dup as u64;
        out.extend(self.held.drain(..).skip(dup));
        self.tail = Vec::new();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ship::framing::Source;

    fn ev(ts: i64, m: &str) -> Event {
        Event {
            ts_ms: ts,
            message: m.into(),
            source: Source::Stdout,
        }
    }

    fn tail(v: &[(i64, &str)]) -> Vec<(i64, String)> {
        v.iter().map(|(t, m)| (*t, m.to_string())).collect()
    }

    fn run(t: Vec<(i64, String)>, chunks: Vec<Vec<Event>>) -> (Vec<String>, u64) {
        let mut d = Dedupe::new(t);
        let mut out = Vec::new();
        for c in chunks {
            out.extend(d.feed(c));
        }
        out.extend(d.finish());
        (out.into_iter().map(|e| e.message).collect(), d.skipped)
    }

    #[test]
    fn drops_what_is_already_at_the_end() {
        let t = tail(&[(1, "a"), (2, "b"), (3, "c")]);
        let (out, skipped) = run(t, vec![vec![ev(2, "b")], vec![ev(3, "c"), ev(4, "d")]]);
        assert_eq!(out, ["d"]);
        assert_eq!(skipped, 2);
    }

    #[test]
    fn nothing_delivered_after_the_checkpoint() {
        let t = tail(&[(1, "a"), (2, "b")]);
        let (out, skipped) = run(t, vec![vec![ev(3, "c"), ev(4, "d")]]);
        assert_eq!(out, ["c", "d"]);
        assert_eq!(skipped, 0);
    }

    #[test]
    fn a_match_that_does_not_reach_the_end_is_no_duplicate() {
        // "b" is in the tail, but followed there by "x", not by what we send next.
        let t = tail(&[(1, "b"), (2, "x")]);
        let (out, _) = run(t, vec![vec![ev(1, "b"), ev(2, "c")]]);
        assert_eq!(out, ["b", "c"]);
    }

    #[test]
    fn repeated_lines_take_the_longest_run() {
        let t = tail(&[(1, "tick"), (1, "tick"), (1, "tick")]);
        let (out, skipped) = run(
            t,
            vec![vec![
                ev(1, "tick"),
                ev(1, "tick"),
                ev(1, "tick"),
                ev(2, "tock"),
            ]],
        );
        assert_eq!(out, ["tock"]);
        assert_eq!(skipped, 3);
    }

    #[test]
    fn input_shorter_than_the_suffix() {
        let t = tail(&[(1, "a"), (2, "b")]);
        let (out, skipped) = run(t, vec![vec![ev(2, "b")]]);
        assert_eq!(out, Vec::<String>::new());
        assert_eq!(skipped, 1);
        let (out, _) = run(tail(&[(1, "a"), (2, "b")]), vec![vec![ev(1, "a")]]);
        assert_eq!(
            out,
            ["a"],
            "a is followed by b in the stream, so it is no tail of ours"
        );
    }

    #[test]
    fn timestamps_must_be_close() {
        let t = tail(&[(10_000, "a")]);
        let (out, _) = run(t, vec![vec![ev(1, "a")]]);
        assert_eq!(out, ["a"]);
    }
}
