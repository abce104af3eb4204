//! Optional transforms between framing and batching, in this order:
//!
//! 1. `--strip-ansi`: ANSI escape sequences (colours, cursor moves, OSC titles) are removed
//!    from each line; a line that becomes empty is skipped like an empty line.
//! 2. `--multiline-pattern REGEX`: like Docker's awslogs driver, a line matching the pattern
//!    starts a new event and the lines that follow are joined to it with `\n` (stack traces),
//!    per source. A held event is sent when the next one starts, when it would outgrow the
//!    largest message, or after `--multiline-timeout` without a new line.
//! 3. `--format json`: each event becomes `{"log":..,"stream":"stdout","container":ID}`; an
//!    event whose JSON would exceed the largest message is split (at character boundaries)
//!    into pieces that each fit once wrapped.
//!
//! All of them work on whole events, so they keep framing's guarantees (order, chunking does
//! not matter). While a multi-line event is held, the log position is not "clean": the
//! checkpoint only moves past it once it is sent.

use std::time::Instant;

pub(crate) use crate::config::TransformConfig;
use crate::pipeline::framing::{Event, Source};

/// Removes ANSI escape sequences: CSI (`ESC [` params final), OSC (`ESC ]` .. BEL or `ESC \`),
/// and two-character escapes (`ESC` + one byte).
pub(crate) fn strip_ansi(s: &str) -> std::borrow::Cow<'_, str> {
    if !s.contains('\u{1b}') {
        return std::borrow::Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        if c != '\u{1b}' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('[') => {
                // Parameters and intermediates, then one final byte in @..~.
                for c in chars.by_ref() {
                    if ('@'..='~').contains(&c) {
                        break;
                    }
                }
            }
            Some(']') => {
                while let Some(c) = chars.next() {
                    if c == '\u{7}' {
                        break;
                    }
                    if c == '\u{1b}' && chars.peek() == Some(&'\\') {
                        chars.next();
                        break;
                    }
                }
            }
            Some(_) | None => {}
        }
    }
    std::borrow::Cow::Owned(out)
}

/// The transforms with their state.
#[derive(Debug)]
pub(crate) struct Transforms {
    cfg: TransformConfig,
    max_message_bytes: usize,
    /// Held multi-line events per source, with the time of their last line.
    held: [Option<(Event, Instant)>; 2],
    /// Lines dropped because stripping left nothing.
    pub(crate) emptied: u64,
}

fn slot(s: Source) -> usize {
    match s {
        Source::Stdout => 0,
        Source::Stderr => 1,
    }
}

impl Transforms {
    /// Nothing to do: events pass as they are.
    pub(crate) fn is_noop(&self) -> bool {
        self.cfg.is_noop()
    }

    pub(crate) fn new(cfg: TransformConfig, max_message_bytes: usize) -> Self {
        Self {
            cfg,
            max_message_bytes,
            held: [None, None],
            emptied: 0,
        }
    }

    /// Transforms `events`, appending what is ready to `out`.
    pub(crate) fn apply(&mut self, events: Vec<Event>, now: Instant, out: &mut Vec<Event>) {
        if self.cfg.is_noop() {
            out.extend(events);
            return;
        }
        for mut e in events {
            if self.cfg.strip_ansi {
                if let std::borrow::Cow::Owned(s) = strip_ansi(&e.message) {
                    e.message = s;
                }
                if e.message.is_empty() {
                    self.emptied += 1;
                    continue;
                }
            }
            match &self.cfg.multiline {
                None => self.emit(e, out),
                Some((re, _)) => {
                    let starts = re.is_match(&e.message);
                    let i = slot(e.source);
                    match self.held[i].take() {
                        Some((mut cur, _))
                            if !starts
                                && cur.message.len() + 1 + e.message.len()
                                    <= self.max_message_bytes =>
                        {
                            cur.message.push('\n');
                            cur.message.push_str(&e.message);
                            self.held[i] = Some((cur, now));
                        }
                        Some((cur, _)) => {
                            self.emit(cur, out);
                            self.held[i] = Some((e, now));
                        }
                        None => self.held[i] = Some((e, now)),
                    }
                }
            }
        }
    }

    /// Sends held events older than the multi-line timeout.
    pub(crate) fn flush_expired(&mut self, now: Instant, out: &mut Vec<Event>) {
        let Some((_, timeout)) = &self.cfg.multiline else {
            return;
        };
        let timeout = *timeout;
        let mut expired: Vec<Event> = Vec::new();
        for h in &mut self.held {
            if h.as_ref()
                .is_some_and(|(_, t)| now.duration_since(*t) >= timeout)
            {
                expired.extend(h.take().map(|(e, _)| e));
            }
        }
        // Oldest first, so stdout and stderr stay in timestamp order.
        expired.sort_by_key(|e| e.ts_ms);
        for e in expired {
            self.emit(e, out);
        }
    }

    /// When the next held event expires.
    pub(crate) fn next_deadline(&self) -> Option<Instant> {
        let (_, timeout) = self.cfg.multiline.as_ref()?;
        self.held.iter().flatten().map(|(_, t)| *t + *timeout).min()
    }

    /// Sends everything held (end of output), oldest first.
    pub(crate) fn finish(&mut self, out: &mut Vec<Event>) {
        let mut held: Vec<Event> = self
            .held
            .iter_mut()
            .filter_map(|h| h.take())
            .map(|(e, _)| e)
            .collect();
        held.sort_by_key(|e| e.ts_ms);
        for e in held {
            self.emit(e, out);
        }
    }

    /// Nothing is held.
    pub(crate) fn is_clean(&self) -> bool {
        self.held.iter().all(Option::is_none)
    }

    fn emit(&self, e: Event, out: &mut Vec<Event>) {
        if !self.cfg.json {
            out.push(e);
            return;
        }
        self.emit_json(e.ts_ms, e.source, &e.message, out);
    }

    fn emit_json(&self, ts_ms: i64, source: Source, log: &str, out: &mut Vec<Event>) {
        let wrapped = serde_json::json!({
            "log": log,
            "stream": source.as_str(),
            "container": self.cfg.container,
        })
        .to_string();
        if wrapped.len() <= self.max_message_bytes || log.chars().nth(1).is_none() {
            out.push(Event {
                ts_ms,
                message: wrapped,
                source,
            });
            return;
        }
        let mid = log
            .floor_char_boundary(log.len() / 2)
            .max(log.chars().next().map_or(1, char::len_utf8));
        self.emit_json(ts_ms, source, &log[..mid], out);
        self.emit_json(ts_ms, source, &log[mid..], out);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use regex::Regex;
    use std::time::Duration;

    fn ev(ts: i64, source: Source, m: &str) -> Event {
        Event {
            ts_ms: ts,
            message: m.into(),
            source,
        }
    }

    fn msgs(v: &[Event]) -> Vec<&str> {
        v.iter().map(|e| e.message.as_str()).collect()
    }

    #[test]
    fn strips_ansi_sequences() {
        assert_eq!(strip_ansi("\u{1b}[1;31mred\u{1b}[0m plain"), "red plain");
        assert_eq!(strip_ansi("\u{1b}]0;title\u{7}text"), "text");
        assert_eq!(strip_ansi("\u{1b}]8;;http://x\u{1b}\\link"), "link");
        assert_eq!(strip_ansi("a\u{1b}7b\u{1b}8c"), "abc");
        assert_eq!(strip_ansi("no escapes é"), "no escapes é");
        assert_eq!(strip_ansi("cut \u{1b}["), "cut ");
    }

    #[test]
    fn strip_ansi_drops_lines_that_become_empty() {
        let cfg = TransformConfig {
            strip_ansi: true,
            ..Default::default()
        };
        let mut t = Transforms::new(cfg, 100);
        let mut out = Vec::new();
        t.apply(
            vec![
                ev(1, Source::Stdout, "\u{1b}[2K"),
                ev(2, Source::Stdout, "\u{1b}[32mok"),
            ],
            Instant::now(),
            &mut out,
        );
        assert_eq!(msgs(&out), ["ok"]);
        assert_eq!(t.emptied, 1);
    }

    #[test]
    fn multiline_joins_until_the_next_match_or_timeout() {
        let re = Regex::new(r"^\d{4}-").unwrap();
        let cfg = TransformConfig {
            multiline: Some((re, Duration::from_secs(1))),
            ..Default::default()
        };
        let mut t = Transforms::new(cfg, 100);
        let now = Instant::now();
        let mut out = Vec::new();
        t.apply(
            vec![
                ev(1, Source::Stdout, "2024- error"),
                ev(2, Source::Stdout, "  at a()"),
                ev(3, Source::Stderr, "2024- other source"),
                ev(4, Source::Stdout, "  at b()"),
                ev(5, Source::Stdout, "2024- next"),
            ],
            now,
            &mut out,
        );
        assert_eq!(msgs(&out), ["2024- error\n  at a()\n  at b()"]);
        assert!(!t.is_clean());
        assert_eq!(t.next_deadline(), Some(now + Duration::from_secs(1)));
        t.flush_expired(now + Duration::from_millis(500), &mut out);
        assert_eq!(out.len(), 1);
        t.flush_expired(now + Duration::from_secs(1), &mut out);
        assert_eq!(msgs(&out)[1..], ["2024- other source", "2024- next"]);
        assert!(t.is_clean());
    }

    #[test]
    fn multiline_never_outgrows_the_largest_message() {
        let re = Regex::new("^START").unwrap();
        let cfg = TransformConfig {
            multiline: Some((re, Duration::from_secs(1))),
            ..Default::default()
        };
        let mut t = Transforms::new(cfg, 12);
        let mut out = Vec::new();
        t.apply(
            vec![
                ev(1, Source::Stdout, "START"),
                ev(2, Source::Stdout, "aaaa"),
                ev(3, Source::Stdout, "bbbb"),
            ],
            Instant::now(),
            &mut out,
        );
        t.finish(&mut out);
        assert_eq!(msgs(&out), ["START\naaaa", "bbbb"]);
        assert!(out.iter().all(|e| e.message.len() <= 12));
    }

    #[test]
    fn json_wraps_and_splits_to_fit() {
        let cfg = TransformConfig {
            json: true,
            container: "abc".into(),
            ..Default::default()
        };
        let mut t = Transforms::new(cfg, 60);
        let mut out = Vec::new();
        t.apply(
            vec![ev(1, Source::Stderr, "say \"hi\"")],
            Instant::now(),
            &mut out,
        );
        let v: serde_json::Value = serde_json::from_str(&out[0].message).unwrap();
        assert_eq!(v["log"], "say \"hi\"");
        assert_eq!(v["stream"], "stderr");
        assert_eq!(v["container"], "abc");
        out.clear();
        let long = "é".repeat(40);
        t.apply(vec![ev(1, Source::Stdout, &long)], Instant::now(), &mut out);
        assert!(out.len() > 1 && out.iter().all(|e| e.message.len() <= 60));
        let joined: String = out
            .iter()
            .map(|e| {
                serde_json::from_str::<serde_json::Value>(&e.message).unwrap()["log"]
                    .as_str()
                    .unwrap()
                    .to_string()
            })
            .collect();
        assert_eq!(joined, long);
    }
}
