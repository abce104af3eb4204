//! The PutLogEvents request body (JSON 1.1), written straight from a [`Batch`].
//!
//! Why not the SDK's serializer: it needs an owned `InputLogEvent` per event (a copy of every
//! message) and escapes strings one character at a time; for 1 KiB lines the two were ~0.4 of
//! dockwatch's ~2.4 CPU-seconds per 500 MB, taken from a Docker engine that competes for the
//! same cores. Here each message is escaped once, eight bytes at a time, into one buffer sized
//! up front. The SDK still does everything else (endpoint, credentials, SigV4 signing of this
//! body, the response): see [`super::request::put`].
//!
//! A batch in flight is kept as its body only ([`Sealed`]): the events are written into it
//! once, when the batch is sent, and dropped. With 4 requests of 1 MiB in flight that is
//! 4 MiB less memory than keeping both (measured in the bench: W2's peak RSS 32.5 MiB and W4's
//! 34.8 MiB before). The events are read back from the body only when they are needed again:
//! to compare with the stream after a lost answer, or to hand them back undelivered.
//!
//! Bodies' buffers are reused (the shipper keeps one spare per request slot): a megabyte
//! allocated and freed per request fragmented glibc's heap by 4-6 MiB in W4, and handing
//! such blocks to mmap instead (`MALLOC_MMAP_THRESHOLD_=262144`) cost 20% more CPU in page
//! faults (measured: W4 peak RSS 30.4-32.7 MiB → 26.5 MiB, CPU 5.5 → 6.7 s).

use bytes::Bytes;

use crate::pipeline::batcher::Batch;
use crate::pipeline::framing::{Event, Source};

/// A batch as it is sent: its PutLogEvents body and what the shipper needs to know of it.
#[derive(Debug, Clone)]
pub(crate) struct Sealed {
    /// The batch's position in the stream of batches.
    pub(crate) seq: u64,
    /// Events before this batch that carry its first millisecond.
    pub(crate) lead: u64,
    /// How many events.
    pub(crate) count: usize,
    /// Message bytes, without CloudWatch's per-event overhead.
    pub(crate) message_bytes: usize,
    pub(crate) first_ms: i64,
    pub(crate) last_ms: i64,
    /// One bit per event, set for stderr.
    stderr: Vec<u64>,
    /// The JSON body.
    pub(crate) body: Bytes,
}

impl Sealed {
    /// Writes the batch's body for `group`/`stream` into `buf` (a spare body's buffer, or a
    /// new one); the events are not kept.
    pub(crate) fn new(group: &str, stream: &str, batch: Batch, mut buf: Vec<u8>) -> Sealed {
        write_put_log_events(&mut buf, group, stream, &batch);
        let mut stderr = vec![0u64; batch.events.len().div_ceil(64)];
        for (i, e) in batch.events.iter().enumerate() {
            if e.source == Source::Stderr {
                stderr[i / 64] |= 1 << (i % 64);
            }
        }
        Sealed {
            seq: batch.seq,
            lead: batch.lead,
            count: batch.events.len(),
            message_bytes: batch.message_bytes(),
            first_ms: batch.first_ms(),
            last_ms: batch.last_ms(),
            stderr,
            body: Bytes::from(buf),
        }
    }

    /// The body's buffer back for the next batch, once nothing else holds it (the request is
    /// over).
    pub(crate) fn into_buffer(self) -> Option<Vec<u8>> {
        self.body.try_into_mut().ok().map(Vec::from)
    }

    /// The events, read back from the body.
    pub(crate) fn events(&self) -> Vec<Event> {
        #[derive(serde::Deserialize)]
        struct Body {
            #[serde(rename = "logEvents")]
            events: Vec<Put>,
        }
        #[derive(serde::Deserialize)]
        struct Put {
            timestamp: i64,
            message: String,
        }
        let body: Body = serde_json::from_slice(&self.body).expect("dockwatch's own JSON body");
        body.events
            .into_iter()
            .enumerate()
            .map(|(i, p)| Event {
                ts_ms: p.timestamp,
                message: p.message,
                source: if self.stderr[i / 64] & (1 << (i % 64)) != 0 {
                    Source::Stderr
                } else {
                    Source::Stdout
                },
            })
            .collect()
    }
}

/// The JSON body of PutLogEvents for `batch`.
#[cfg(test)]
pub(crate) fn put_log_events(group: &str, stream: &str, batch: &Batch) -> Bytes {
    let mut out = Vec::new();
    write_put_log_events(&mut out, group, stream, batch);
    Bytes::from(out)
}

/// Writes the JSON body of PutLogEvents for `batch` into `out` (emptied first; its capacity
/// is reused).
fn write_put_log_events(out: &mut Vec<u8>, group: &str, stream: &str, batch: &Batch) {
    out.clear();
    // Messages + per-event framing (`{"timestamp":<20 digits>,"message":""},` = 45 bytes);
    // escapes make it grow, rarely.
    out.reserve(64 + group.len() + stream.len() + batch.message_bytes() + 48 * batch.events.len());
    out.extend_from_slice(b"{\"logGroupName\":\"");
    escape_into(out, group);
    out.extend_from_slice(b"\",\"logStreamName\":\"");
    escape_into(out, stream);
    out.extend_from_slice(b"\",\"logEvents\":[");
    let mut ts = itoa::Buffer::new();
    for (i, e) in batch.events.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        out.extend_from_slice(b"{\"timestamp\":");
        out.extend_from_slice(ts.format(e.ts_ms).as_bytes());
        out.extend_from_slice(b",\"message\":\"");
        escape_into(out, &e.message);
        out.extend_from_slice(b"\"}");
    }
    out.extend_from_slice(b"]}");
}

const ONES: u64 = 0x0101_0101_0101_0101;
const HIGHS: u64 = 0x8080_8080_8080_8080;

/// Whether any of the eight bytes of `w` needs escaping in a JSON string: a control character
/// (< 0x20), `"` or `\`. Exact as a whole-word test (the classic "has byte less than / equal to"
/// bit tricks); bytes >= 0x80 (UTF-8 sequences) never count.
#[inline]
fn word_needs_escape(w: u64) -> bool {
    let control = w.wrapping_sub(ONES * 0x20) & !w;
    let q = w ^ (ONES * u64::from(b'"'));
    let quote = q.wrapping_sub(ONES) & !q;
    let b = w ^ (ONES * u64::from(b'\\'));
    let backslash = b.wrapping_sub(ONES) & !b;
    (control | quote | backslash) & HIGHS != 0
}

/// The escape of one byte, if it needs one.
#[inline]
fn escape_of(c: u8) -> Option<&'static [u8]> {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    const CONTROL: [[u8; 6]; 32] = {
        let mut t = [[0u8; 6]; 32];
        let mut i = 0;
        while i < 32 {
            t[i] = [b'\\', b'u', b'0', b'0', HEX[i >> 4], HEX[i & 15]];
            i += 1;
        }
        t
    };
    match c {
        b'"' => Some(b"\\\""),
        b'\\' => Some(b"\\\\"),
        b'\n' => Some(b"\\n"),
        b'\r' => Some(b"\\r"),
        b'\t' => Some(b"\\t"),
        0x08 => Some(b"\\b"),
        0x0c => Some(b"\\f"),
        0..=0x1f => Some(&CONTROL[c as usize]),
        _ => None,
    }
}

/// Appends `s` as the inside of a JSON string. Runs of bytes that need no escape (checked a
/// word at a time) are copied whole.
pub(crate) fn escape_into(out: &mut Vec<u8>, s: &str) {
    let b = s.as_bytes();
    let mut run = 0; // start of the bytes not yet copied
    let mut i = 0;
    while i < b.len() {
        if let Some(word) = b.get(i..i + 8) {
            let w = u64::from_le_bytes(word.try_into().expect("eight bytes"));
            if !word_needs_escape(w) {
                i += 8;
                continue;
            }
        }
        if let Some(esc) = escape_of(b[i]) {
            out.extend_from_slice(&b[run..i]);
            out.extend_from_slice(esc);
            run = i + 1;
        }
        i += 1;
    }
    out.extend_from_slice(&b[run..]);
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn escaped(s: &str) -> String {
        let mut out = Vec::new();
        escape_into(&mut out, s);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn escapes_what_json_requires() {
        assert_eq!(escaped(""), "");
        assert_eq!(
            escaped("plain text, long enough"),
            "plain text, long enough"
        );
        assert_eq!(escaped(r#"a"b\c"#), r#"a\"b\\c"#);
        assert_eq!(
            escaped("\t\n\r\u{8}\u{c}\0\u{1b}[0m"),
            r"\t\n\r\b\f\u0000\u001b[0m"
        );
        assert_eq!(escaped("é中😀\u{7f}"), "é中😀\u{7f}");
    }

    #[test]
    fn the_word_test_is_exact_for_every_byte_at_every_position() {
        for c in 0..=255u8 {
            for pos in 0..8 {
                let mut w = [b'a'; 8];
                w[pos] = c;
                assert_eq!(
                    word_needs_escape(u64::from_le_bytes(w)),
                    escape_of(c).is_some(),
                    "byte {c:#x} at {pos}"
                );
            }
        }
    }

    #[test]
    fn body_is_the_request_cloudwatch_expects() {
        let events = vec![
            Event {
                ts_ms: 1_700_000_000_000,
                message: "one \"quoted\"".into(),
                source: Source::Stdout,
            },
            Event {
                ts_ms: 1_700_000_000_001,
                message: "two".into(),
                source: Source::Stderr,
            },
        ];
        let bytes = events
            .iter()
            .map(crate::pipeline::batcher::event_size)
            .sum();
        let batch = Batch {
            seq: 0,
            events,
            bytes,
            lead: 0,
        };
        let body = put_log_events("g/1", "s", &batch);
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(
            v,
            serde_json::json!({
                "logGroupName": "g/1",
                "logStreamName": "s",
                "logEvents": [
                    {"timestamp": 1_700_000_000_000i64, "message": "one \"quoted\""},
                    {"timestamp": 1_700_000_000_001i64, "message": "two"},
                ]
            })
        );
    }

    #[test]
    fn a_body_buffer_comes_back_for_the_next_batch() {
        let events = vec![Event {
            ts_ms: 1,
            message: "x".repeat(1000),
            source: Source::Stdout,
        }];
        let bytes = events
            .iter()
            .map(crate::pipeline::batcher::event_size)
            .sum();
        let batch = || Batch {
            seq: 0,
            events: events.clone(),
            bytes,
            lead: 0,
        };
        let buf = Vec::with_capacity(64 * 1024);
        let at = buf.as_ptr();
        let sealed = Sealed::new("g", "s", batch(), buf);
        let held = sealed.body.clone();
        assert!(
            sealed.clone().into_buffer().is_none(),
            "still held: not taken back"
        );
        drop(held);
        let back = sealed
            .into_buffer()
            .expect("unique once the request is over");
        assert_eq!(
            (back.as_ptr(), back.capacity()),
            (at, 64 * 1024),
            "the same allocation"
        );
        let again = Sealed::new("g", "s", batch(), back);
        assert_eq!(again.events(), events);
    }

    proptest! {
        /// A sealed batch gives back exactly its events, sources included.
        #[test]
        fn sealed_events_come_back(
            events in prop::collection::vec(
                (0i64..1_000, "(\\PC|[\\x00-\\x1f\"\\\\]){1,40}", any::<bool>()),
                1..150,
            ),
            lead in 0u64..5,
        ) {
            let events: Vec<Event> = events
                .into_iter()
                .map(|(ts, message, err)| Event {
                    ts_ms: ts,
                    message,
                    source: if err { Source::Stderr } else { Source::Stdout },
                })
                .collect();
            let bytes = events.iter().map(crate::pipeline::batcher::event_size).sum();
            let batch = Batch { seq: 7, events: events.clone(), bytes, lead };
            let (first, last) = (batch.first_ms(), batch.last_ms());
            let message_bytes = batch.message_bytes();
            let sealed = Sealed::new("g", "s", batch, Vec::new());
            prop_assert_eq!(sealed.events(), events.clone());
            prop_assert_eq!(
                (sealed.seq, sealed.lead, sealed.count, sealed.message_bytes),
                (7, lead, events.len(), message_bytes)
            );
            prop_assert_eq!((sealed.first_ms, sealed.last_ms), (first, last));
        }

        /// Any string survives a JSON round trip, whatever its mix of escapes and UTF-8.
        #[test]
        fn any_string_round_trips(s in "(\\PC|[\\x00-\\x1f\"\\\\]){0,80}") {
            let json = format!("\"{}\"", escaped(&s));
            let back: String = serde_json::from_str(&json).unwrap();
            prop_assert_eq!(back, s);
        }
    }
}
