//! The spool: events that could not be delivered, saved so they are not lost.
//!
//! Design:
//! - Format: one file per run that left something undelivered, JSON lines. The first line is a
//!   header `{"dockwatch_spool":1,"group":..,"stream":..,"container":..,"events":N}`; each
//!   following line is one event `{"timestamp":MS,"source":"stdout","message":".."}`, in the
//!   order they were written.
//! - Invariant: a spool file either exists complete or not at all: it is written to a
//!   temporary name in the same directory, fsynced, then renamed into place.
//! - Recovery: the file is self-describing; its events are the exact CloudWatch events (already
//!   framed and valid UTF-8), so delivering them again needs no access to the container.

use std::io::Write;
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::framing::Event;

#[derive(Serialize)]
struct Header<'a> {
    dockwatch_spool: u32,
    group: &'a str,
    stream: &'a str,
    container: &'a str,
    events: usize,
}

#[derive(Serialize)]
struct Line<'a> {
    timestamp: i64,
    source: &'a str,
    message: &'a str,
}

/// Writes `events` to a new spool file in `dir` and returns its path.
pub fn write(
    dir: &Path,
    group: &str,
    stream: &str,
    container: &str,
    events: &[Event],
) -> std::io::Result<PathBuf> {
    std::fs::create_dir_all(dir)?;
    let short = &container[..container.len().min(12)];
    let stamp = chrono::Utc::now().format("%Y%m%dT%H%M%S%.3fZ");
    let path = dir.join(format!("{short}-{stamp}.jsonl"));
    let tmp = dir.join(format!(".{short}-{stamp}.jsonl.tmp"));
    {
        let mut f = std::io::BufWriter::new(std::fs::File::create(&tmp)?);
        let header = Header {
            dockwatch_spool: 1,
            group,
            stream,
            container,
            events: events.len(),
        };
        serde_json::to_writer(&mut f, &header)?;
        f.write_all(b"\n")?;
        for e in events {
            let line = Line {
                timestamp: e.ts_ms,
                source: e.source.as_str(),
                message: &e.message,
            };
            serde_json::to_writer(&mut f, &line)?;
            f.write_all(b"\n")?;
        }
        f.flush()?;
        f.get_ref().sync_all()?;
    }
    std::fs::rename(&tmp, &path)?;
    if let Ok(d) = std::fs::File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::framing::Source;

    #[test]
    fn writes_header_and_events() {
        let dir = std::env::temp_dir().join(format!("dockwatch-spool-test-{}", std::process::id()));
        let events = vec![
            Event {
                ts_ms: 1,
                message: "a \"quoted\"\tline".into(),
                source: Source::Stdout,
            },
            Event {
                ts_ms: 2,
                message: "é".into(),
                source: Source::Stderr,
            },
        ];
        let path = write(&dir, "g", "s", "0123456789abcdef", &events).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        let lines: Vec<serde_json::Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines[0]["events"], 2);
        assert_eq!(lines[0]["container"], "0123456789abcdef");
        assert_eq!(lines[1]["message"], "a \"quoted\"\tline");
        assert_eq!(lines[2]["source"], "stderr");
        assert_eq!(lines[2]["timestamp"], 2);
        std::fs::remove_dir_all(dir).unwrap();
    }
}
