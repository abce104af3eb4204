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

/// Parses one line (without its `\n`): the engine's own layout by hand (a third of the
/// files path's CPU went to a general JSON parser), anything else through `serde_json`.
pub(crate) fn parse(line: &[u8]) -> Result<Frame, BadLine> {
    match parse_engine_layout(line) {
        Some(f) => Ok(f),
        None => parse_any(line),
    }
}

/// `{"log":"…","stream":"stdout|stderr","time":"…"}`, exactly as the engine writes it (no
/// `attrs`, no spaces); `None` for anything else.
fn parse_engine_layout(line: &[u8]) -> Option<Frame> {
    let rest = line.strip_prefix(br#"{"log":""#)?;
    let mut data = Vec::with_capacity(rest.len());
    let rest = json_string_into(rest, &mut data)?;
    let rest = rest.strip_prefix(br#","stream":""#)?;
    let (source, rest) = if let Some(r) = rest.strip_prefix(b"stdout\"") {
        (Source::Stdout, r)
    } else {
        (Source::Stderr, rest.strip_prefix(b"stderr\"")?)
    };
    let rest = rest.strip_prefix(br#","time":""#)?;
    let end = memchr::memchr(b'"', rest)?;
    if &rest[end..] != b"\"}" {
        return None;
    }
    Some(Frame {
        source,
        ts_ns: parse_timestamp(&rest[..end])?,
        data: Bytes::from(data),
    })
}

/// Decodes a JSON string's body (after its opening quote) into `out`; the bytes after its
/// closing quote. `None` for a malformed escape or an unpaired surrogate.
fn json_string_into<'a>(mut s: &'a [u8], out: &mut Vec<u8>) -> Option<&'a [u8]> {
    loop {
        let i = memchr::memchr2(b'"', b'\\', s)?;
        out.extend_from_slice(&s[..i]);
        if s[i] == b'"' {
            return Some(&s[i + 1..]);
        }
        let esc = *s.get(i + 1)?;
        s = &s[i + 2..];
        let b = match esc {
            b'n' => b'\n',
            b't' => b'\t',
            b'r' => b'\r',
            b'"' => b'"',
            b'\\' => b'\\',
            b'/' => b'/',
            b'b' => 0x08,
            b'f' => 0x0c,
            b'u' => {
                let (c, rest) = unicode_escape(s)?;
                s = rest;
                let mut buf = [0u8; 4];
                out.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
                continue;
            }
            _ => return None,
        };
        out.push(b);
    }
}

/// `XXXX` (after `\u`), or a surrogate pair `XXXX\uYYYY`: the character and what follows.
fn unicode_escape(s: &[u8]) -> Option<(char, &[u8])> {
    let hex = |s: &[u8]| -> Option<u32> {
        let h = std::str::from_utf8(s.get(..4)?).ok()?;
        u32::from_str_radix(h, 16).ok()
    };
    let first = hex(s)?;
    if (0xD800..0xDC00).contains(&first) {
        let rest = s.get(4..)?.strip_prefix(b"\\u")?;
        let low = hex(rest)?;
        if !(0xDC00..0xE000).contains(&low) {
            return None;
        }
        let c = char::from_u32(0x10000 + ((first - 0xD800) << 10) + (low - 0xDC00))?;
        return Some((c, &rest[4..]));
    }
    Some((char::from_u32(first)?, &s[4..]))
}

/// Any JSON record with `log`, `stream` and `time` (other keys, other orders, spaces).
fn parse_any(line: &[u8]) -> Result<Frame, BadLine> {
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

    proptest::proptest! {
        /// The hand-written layout gives what a JSON parser gives, for any text (escaped as
        /// the engine escapes: HTML characters, controls, U+FFFD, astral characters).
        #[test]
        fn the_engine_layout_parses_as_json_does(text in "\\PC*", stderr in proptest::bool::ANY) {
            let mut esc = String::new();
            for c in text.chars() {
                match c {
                    '<' | '>' | '&' | '\u{2028}' | '\u{FFFD}' => esc.push_str(&format!("\\u{:04x}", c as u32)),
                    c if (c as u32) >= 0x10000 && text.len() % 2 == 0 => {
                        let mut b = [0u16; 2];
                        for u in c.encode_utf16(&mut b) {
                            esc.push_str(&format!("\\u{u:04x}"));
                        }
                    }
                    c => {
                        let quoted = serde_json::to_string(&c.to_string()).unwrap();
                        esc.push_str(&quoted[1..quoted.len() - 1]);
                    }
                }
            }
            let stream = if stderr { "stderr" } else { "stdout" };
            let line = format!(r#"{{"log":"{esc}\n","stream":"{stream}","time":"2026-12-07T15:24:20.60777606Z"}}"#);
            let fast = parse_engine_layout(line.as_bytes()).expect("the engine's layout");
            let general = parse_any(line.as_bytes()).unwrap();
            proptest::prop_assert_eq!(&fast, &general);
            let want = format!("{text}\n");
            proptest::prop_assert_eq!(&fast.data[..], want.as_bytes());
        }
    }

    #[test]
    fn other_layouts_go_through_the_json_parser() {
        for line in [
            &br#"{"log":"a\n","stream":"stdout","attrs":{"x":"y"},"time":"2026-12-07T15:24:20Z"}"#
                [..],
            br#"{"stream":"stdout","log":"a\n","time":"2026-12-07T15:24:20Z"}"#,
            br#"{ "log" : "a\n", "stream":"stdout","time":"2026-12-07T15:24:20Z"}"#,
        ] {
            assert!(parse_engine_layout(line).is_none());
            assert_eq!(&parse(line).unwrap().data[..], b"a\n");
        }
        // Malformed escapes are the JSON parser's to refuse.
        assert!(
            parse(br#"{"log":"\ud800","stream":"stdout","time":"2026-12-07T15:24:20Z"}"#).is_err()
        );
        assert!(parse(br#"{"log":"\q","stream":"stdout","time":"2026-12-07T15:24:20Z"}"#).is_err());
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
