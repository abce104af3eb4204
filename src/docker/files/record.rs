//! One line of the `json-file` driver's log: `{"log":"…","stream":"stdout","time":"…"}`
//! (and `"attrs"` with the `labels`/`env`/`tag` log options, ignored here), as a [`Frame`] —
//! the same frame the logs endpoint gives, so both read paths feed one pipeline.
//!
//! The engine writes `log` as a JSON string: the bytes it could not store as UTF-8 (invalid
//! bytes, and the halves of a character its 16 KiB cut split) are `\ufffd` in the file
//! already, so the file holds no more than the logs endpoint returns; a `log` without a
//! trailing `\n` is a partial message, completed by the next one of its stream (the framer
//! joins them).

use std::borrow::Cow;

use bytes::Bytes;
use serde::Deserialize;

use crate::docker::Source;
use crate::docker::logs::{Frame, parse_timestamp};

#[derive(Deserialize)]
struct Line<'a> {
    #[serde(borrow)]
    log: Cow<'a, str>,
    #[serde(borrow)]
    stream: Cow<'a, str>,
    #[serde(borrow)]
    time: Cow<'a, str>,
}

/// Why a line is not a frame (a line torn by a crash of the engine, another driver's file).
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct BadLine(pub(crate) String);

/// Parses one line (without its `\n`).
pub(crate) fn parse(line: &[u8]) -> Result<Frame, BadLine> {
    let l: Line<'_> =
        serde_json::from_slice(line).map_err(|e| BadLine(format!("not a log record: {e}")))?;
    let source = match &*l.stream {
        "stdout" => Source::Stdout,
        "stderr" => Source::Stderr,
        other => return Err(BadLine(format!("unknown stream {other:?}"))),
    };
    let ts_ns = parse_timestamp(l.time.as_bytes())
        .ok_or_else(|| BadLine(format!("bad time {:?}", l.time)))?;
    let data = match l.log {
        Cow::Owned(s) => Bytes::from(s.into_bytes()),
        Cow::Borrowed(s) => Bytes::copy_from_slice(s.as_bytes()),
    };
    Ok(Frame {
        source,
        ts_ns,
        data,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_as_the_engine_writes_them() {
        let f = parse(br#"{"log":"hello \"x\" \u00e9\n","stream":"stderr","time":"2026-12-07T15:24:20.60777606Z"}"#)
            .unwrap();
        assert_eq!(f.source, Source::Stderr);
        assert_eq!(&f.data[..], "hello \"x\" é\n".as_bytes());
        assert_eq!(
            f.ts_ns,
            parse_timestamp(b"2026-12-07T15:24:20.607776060Z").unwrap()
        );
        // A partial message (no newline) and attrs.
        let f = parse(
            br#"{"log":"abc","stream":"stdout","attrs":{"tag":"t"},"time":"2026-12-07T15:24:20Z"}"#,
        )
        .unwrap();
        assert_eq!((&f.data[..], f.source), (&b"abc"[..], Source::Stdout));
        // The engine's replacement of a cut character is text like any other.
        let f =
            parse(br#"{"log":"0\ufffd","stream":"stdout","time":"2026-12-07T15:24:20Z"}"#).unwrap();
        assert_eq!(&f.data[..], "0\u{FFFD}".as_bytes());
    }

    #[test]
    fn torn_and_foreign_lines_are_refused() {
        for bad in [
            &br#"{"log":"abc","stream":"stdout","time":"2026-12"#[..],
            br#"{"log":"abc","stream":"stdin","time":"2026-12-07T15:24:20Z"}"#,
            br#"{"log":"abc","stream":"stdout","time":"yesterday"}"#,
            b"",
            b"\x00\x00\x00\x10",
        ] {
            assert!(parse(bad).is_err(), "{:?}", String::from_utf8_lossy(bad));
        }
    }
}
