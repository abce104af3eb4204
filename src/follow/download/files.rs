//! Local files: one per stream, named safely and predictably from the group and stream
//! names, and how an event becomes a line in it.
//!
//! Naming: `<output_dir>/<group>/<stream>.log`, each name percent-encoded as ONE path
//! component: bytes outside `[A-Za-z0-9._-]` become `%XX` (so `/` is `%2F`), and so does a
//! leading `.`; names are never `.`, `..` or hidden, and two different names never share a
//! file. An encoded name longer than 200 bytes keeps its first 180 bytes and ends with `~`
//! and 16 hex digits of the name's FNV-1a hash.

use std::fs::OpenOptions;
use std::io::Write;
use std::path::{Path, PathBuf};

use crate::cli::LineFormat;
use crate::follow::source::Event;
use crate::util::fnv1a;
use crate::util::time::format_rfc3339_ms;

/// Longest encoded component before it is shortened.
const MAX_COMPONENT: usize = 200;
/// What a shortened component keeps of the encoded name.
const KEEP: usize = 180;

/// One name as one safe path component.
pub(crate) fn encode_component(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    for (i, b) in name.bytes().enumerate() {
        let plain = b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-') || (b == b'.' && i > 0);
        if plain {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    if out.is_empty() {
        out.push_str("%00");
    }
    if out.len() > MAX_COMPONENT {
        let mut cut = KEEP;
        // Never cut inside a %XX escape.
        if let Some(p) = out[..cut].rfind('%')
            && p + 3 > cut
        {
            cut = p;
        }
        out = format!("{}~{:016x}", &out[..cut], fnv1a(name.as_bytes()));
    }
    out
}

/// The file for a stream, relative to the output directory.
pub(crate) fn relative_path(group: &str, stream: &str) -> PathBuf {
    Path::new(&encode_component(group)).join(format!("{}.log", encode_component(stream)))
}

/// Renders events as lines into `buf`.
pub(crate) fn render_into(buf: &mut Vec<u8>, format: LineFormat, events: &[Event]) {
    for e in events {
        match format {
            LineFormat::Json => {
                let v = serde_json::json!({"timestamp": e.timestamp, "message": e.message});
                buf.extend_from_slice(v.to_string().as_bytes());
            }
            LineFormat::Rfc3339 => {
                buf.extend_from_slice(format_rfc3339_ms(e.timestamp).as_bytes());
                buf.push(b' ');
                push_text(buf, &e.message);
            }
            LineFormat::UnixMs => {
                buf.extend_from_slice(e.timestamp.to_string().as_bytes());
                buf.push(b' ');
                push_text(buf, &e.message);
            }
            LineFormat::Message => push_text(buf, &e.message),
        }
        buf.push(b'\n');
    }
}

/// Renders events as lines and says where each line is in the result: `(start, end, fingerprint)`
/// with `end` past its newline, the fingerprint of the line without it
/// ([`super::ledger::fingerprint`]).
pub(crate) fn render_lines(
    format: LineFormat,
    events: &[Event],
) -> (Vec<u8>, Vec<(u64, u64, u64)>) {
    let mut buf = Vec::with_capacity(events.len() * 64);
    let mut lines = Vec::with_capacity(events.len());
    for e in events {
        let start = buf.len();
        render_into(&mut buf, format, std::slice::from_ref(e));
        let fp = super::ledger::fingerprint(&buf[start..buf.len() - 1]);
        lines.push((start as u64, buf.len() as u64, fp));
    }
    (buf, lines)
}

/// Bytes `[start, end)` of `path`.
pub(crate) fn read_range(path: &Path, (start, end): (u64, u64)) -> std::io::Result<Vec<u8>> {
    use std::io::{Read, Seek, SeekFrom};
    let mut f = std::fs::File::open(path)?;
    f.seek(SeekFrom::Start(start))?;
    let mut buf = Vec::with_capacity(end.saturating_sub(start) as usize);
    f.take(end.saturating_sub(start)).read_to_end(&mut buf)?;
    Ok(buf)
}

/// A message as text on one line: a final `\n` dropped, other line breaks written `\n`/`\r`
/// so that one event stays one line (the json format keeps messages exactly).
fn push_text(buf: &mut Vec<u8>, msg: &str) {
    let msg = msg.strip_suffix('\n').unwrap_or(msg);
    for c in msg.chars() {
        match c {
            '\n' => buf.extend_from_slice(b"\\n"),
            '\r' => buf.extend_from_slice(b"\\r"),
            c => {
                let mut tmp = [0u8; 4];
                buf.extend_from_slice(c.encode_utf8(&mut tmp).as_bytes());
            }
        }
    }
}

/// Appends `bytes` to `path` (created with its directory when missing) and makes them
/// durable before returning. Returns the file's new length.
pub(crate) fn append_durably(path: &Path, bytes: &[u8]) -> std::io::Result<u64> {
    let created = !path.exists();
    if created && let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)?;
    }
    let mut f = OpenOptions::new().create(true).append(true).open(path)?;
    f.write_all(bytes)?;
    f.sync_data()?;
    let len = f.metadata()?.len();
    if created && let Some(parent) = path.parent() {
        crate::util::durable::sync_dir(parent)?;
    }
    Ok(len)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_safe_and_distinct() {
        assert_eq!(encode_component("/ecs/web"), "%2Fecs%2Fweb");
        assert_eq!(encode_component("app-1_x.y"), "app-1_x.y");
        assert_eq!(encode_component(".."), "%2E.");
        assert_eq!(encode_component(".hidden"), "%2Ehidden");
        assert_eq!(encode_component(""), "%00");
        assert_eq!(encode_component("a b%"), "a%20b%25");
        assert_eq!(encode_component("é"), "%C3%A9");
        assert_ne!(encode_component("a/b"), encode_component("a%2Fb"));
        assert_eq!(
            relative_path("/ecs/web", "task/1"),
            PathBuf::from("%2Fecs%2Fweb/task%2F1.log")
        );
    }

    #[test]
    fn long_names_are_shortened_with_a_hash() {
        let a = "x".repeat(300);
        let b = format!("{}y", "x".repeat(299));
        let (ea, eb) = (encode_component(&a), encode_component(&b));
        assert_eq!(ea.len(), KEEP + 17);
        assert_ne!(ea, eb);
        let slashes = "/".repeat(100); // every byte escaped: a cut must not split %2F
        let e = encode_component(&slashes);
        let stem = e.split('~').next().unwrap();
        assert_eq!(stem.len() % 3, 0, "{e}");
        assert!(e.len() <= MAX_COMPONENT);
    }

    #[test]
    fn line_formats() {
        let ev = |m: &str| Event {
            stream: "s".into(),
            timestamp: 1_763_892_000_123,
            ingestion_time: 0,
            id: String::new(),
            message: m.into(),
        };
        let events = [ev("one\n"), ev("two\nlines"), ev("tab\tand \"q\"")];
        let mut b = Vec::new();
        render_into(&mut b, LineFormat::Rfc3339, &events);
        assert_eq!(
            String::from_utf8(b).unwrap(),
            "2025-11-23T10:00:00.123Z one\n2025-11-23T10:00:00.123Z two\\nlines\n2025-11-23T10:00:00.123Z tab\tand \"q\"\n"
        );
        let mut b = Vec::new();
        render_into(&mut b, LineFormat::UnixMs, &events[..1]);
        assert_eq!(b, b"1763892000123 one\n");
        let mut b = Vec::new();
        render_into(&mut b, LineFormat::Message, &events[..2]);
        assert_eq!(b, b"one\ntwo\\nlines\n");
        let mut b = Vec::new();
        render_into(&mut b, LineFormat::Json, &events);
        let back: Vec<serde_json::Value> = String::from_utf8(b)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(back[1]["message"], "two\nlines");
        assert_eq!(back[0]["timestamp"], 1_763_892_000_123i64);
    }
}
