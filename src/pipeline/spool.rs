//! The spool: events that could not be delivered, saved so they are not lost.
//!
//! Design:
//! - Format: one file per run that left something undelivered, JSON lines. The first line is a
//!   header `{"dockwatch_spool":1,"group":..,"stream":..,"container":..,"region":..,
//!   "endpoint_url":..,"events":N}`; each following line is one event
//!   `{"timestamp":MS,"source":"stdout","message":".."}`, in the order they were written.
//! - Invariant: a spool file either exists complete or not at all: it is written to a
//!   temporary name in the same directory, fsynced, then renamed into place.
//! - Recovery: the file is self-describing; its events are the exact CloudWatch events (already
//!   framed and valid UTF-8), so delivering them again needs no access to the container.

use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::pipeline::framing::{Event, Source};

/// Where the spooled events were going.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Header {
    pub(crate) dockwatch_spool: u32,
    pub(crate) group: String,
    pub(crate) stream: String,
    pub(crate) container: String,
    pub(crate) region: Option<String>,
    pub(crate) endpoint_url: Option<String>,
    pub(crate) events: usize,
    /// Events go to `STREAM/stdout` and `STREAM/stderr` by their source.
    #[serde(default)]
    pub(crate) split_streams: bool,
}

#[derive(Serialize, Deserialize)]
struct Line {
    timestamp: i64,
    source: String,
    message: String,
}

/// Writes `events` to a new spool file in `dir` and returns its path.
pub(crate) fn write(dir: &Path, header: &Header, events: &[Event]) -> std::io::Result<PathBuf> {
    std::fs::create_dir_all(dir)?;
    let container = header.container.as_str();
    let short = &container[..container.len().min(12)];
    let stamp = chrono::Utc::now().format("%Y%m%dT%H%M%S%.3fZ");
    let path = dir.join(format!("{short}-{stamp}.jsonl"));
    crate::util::durable::replace_with(&path, |f| {
        let header = Header {
            dockwatch_spool: 1,
            events: events.len(),
            ..header.clone()
        };
        serde_json::to_writer(&mut *f, &header)?;
        f.write_all(b"\n")?;
        for e in events {
            let line = Line {
                timestamp: e.ts_ms,
                source: e.source.as_str().to_string(),
                message: e.message.clone(),
            };
            serde_json::to_writer(&mut *f, &line)?;
            f.write_all(b"\n")?;
        }
        Ok(())
    })?;
    Ok(path)
}

/// Reads a spool file back.
pub(crate) fn read(path: &Path) -> Result<(Header, Vec<Event>), String> {
    let err = |e: &dyn std::fmt::Display| format!("{}: {e}", path.display());
    let text = std::fs::read_to_string(path).map_err(|e| err(&e))?;
    let mut lines = text.lines().enumerate();
    let (_, first) = lines.next().ok_or_else(|| err(&"empty file"))?;
    let header: Header = serde_json::from_str(first).map_err(|e| err(&format!("line 1: {e}")))?;
    let mut events = Vec::with_capacity(header.events);
    for (i, l) in lines {
        let line: Line =
            serde_json::from_str(l).map_err(|e| err(&format!("line {}: {e}", i + 1)))?;
        let source = if line.source == "stderr" {
            Source::Stderr
        } else {
            Source::Stdout
        };
        events.push(Event {
            ts_ms: line.timestamp,
            message: line.message,
            source,
        });
    }
    Ok((header, events))
}

/// Spool files of a container in `dir`.
pub(crate) fn files_of(dir: &Path, container: &str) -> Vec<PathBuf> {
    let short = &container[..container.len().min(12)];
    std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            p.file_name().is_some_and(|n| {
                let n = n.to_string_lossy();
                n.starts_with(short) && n.ends_with(".jsonl")
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline::framing::Source;

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
        let header = Header {
            dockwatch_spool: 1,
            group: "g".into(),
            stream: "s".into(),
            container: "0123456789abcdef".into(),
            region: Some("eu-west-1".into()),
            endpoint_url: None,
            events: 0,
            split_streams: false,
        };
        let path = write(&dir, &header, &events).unwrap();
        let (h, back) = read(&path).unwrap();
        assert_eq!(back, events);
        assert_eq!(h.events, 2);
        assert_eq!(files_of(&dir, "0123456789abcdef"), vec![path.clone()]);
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
