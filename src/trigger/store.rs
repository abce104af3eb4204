//! What `on-upload` has done with each object, so a notification delivered twice (SQS is at
//! least once) or a file uploaded again unchanged does not run again, even after a restart.
//!
//! # Format
//! `<state_dir>/processed.jsonl`: one JSON record a line, appended, `{"id":"BUCKET/KEY@ETAG",
//! "status":"succeeded"|"failed","attempts","exit_code","outputs","error","at"}`; the last
//! line for an id wins, except that a success is never replaced by a later failure.
//!
//! # Invariants
//! - A record says `succeeded` only after the outputs were uploaded; the SQS message is
//!   deleted only after that record is on disk (appended and fsynced). A crash in between
//!   leaves the message to come back, and the record makes its second delivery a no-op.
//! - The identity of an object is key + ETag: the same key uploaded with new content is a new
//!   object and runs.
//! - Cost per task: one append and one fsync (O(1)), off the async runtime
//!   ([`Writer::append`] on a blocking thread), never under the records' lock.
//! - Bounded: records older than `remember` (30 days: past any redelivery of SQS, whose
//!   retention is at most 14 days) are dropped, and when the file holds more than twice the
//!   live records (plus 1,000) it is compacted: rewritten atomically (temporary file, fsync,
//!   rename) with one line per live id.
//!
//! # Recovery
//! A last line cut by a crash (no newline, or not JSON) is ignored and cut off at the next
//! open; the version 1 file `processed.json` of an older dockwatch is read once and folded
//! into the log.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// How long an object's record is kept.
pub(crate) const REMEMBER: Duration = Duration::from_secs(30 * 24 * 3600);

/// One object's outcome.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Outcome {
    /// `succeeded` or `failed`.
    pub(crate) status: String,
    pub(crate) attempts: u32,
    pub(crate) exit_code: Option<i64>,
    /// Keys uploaded from OUTPUT_DIR.
    pub(crate) outputs: Vec<String>,
    /// Why it failed, when it did.
    pub(crate) error: Option<String>,
    /// Epoch ms of the outcome.
    pub(crate) at: i64,
}

#[derive(Debug, Serialize, Deserialize)]
struct Line {
    id: String,
    #[serde(flatten)]
    outcome: Outcome,
}

#[derive(Debug, Default, Deserialize)]
struct OldFile {
    objects: BTreeMap<String, Outcome>,
}

/// The records in memory.
#[derive(Debug)]
pub(crate) struct Store {
    objects: BTreeMap<String, Outcome>,
    /// Lines in the file (for compaction).
    lines: usize,
}

/// What to write for one record: a line to append, or the whole compacted file.
#[derive(Debug)]
pub(crate) enum Pending {
    Append(Vec<u8>),
    Compact(Vec<u8>),
}

/// Writes the log, one writer at a time.
#[derive(Debug)]
pub(crate) struct Writer {
    path: PathBuf,
    lock: std::sync::Mutex<()>,
}

impl Writer {
    pub(crate) fn new(dir: &Path) -> Self {
        Self {
            path: dir.join(LOG),
            lock: std::sync::Mutex::new(()),
        }
    }

    /// Makes `w` durable (blocking: call it off the runtime).
    pub(crate) fn append(&self, w: Pending) -> Result<(), String> {
        let _one = self.lock.lock().expect("writer");
        let fail = |e: std::io::Error| format!("cannot save {}: {e}", self.path.display());
        match w {
            Pending::Append(line) => {
                let mut f = std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(&self.path)
                    .map_err(fail)?;
                f.write_all(&line).map_err(fail)?;
                f.sync_data().map_err(fail)
            }
            Pending::Compact(all) => crate::util::durable::replace(&self.path, &all).map_err(fail),
        }
    }
}

const LOG: &str = "processed.jsonl";
const OLD: &str = "processed.json";

/// The record key of an object.
pub(crate) fn object_id(bucket: &str, key: &str, etag: &str) -> String {
    format!("{bucket}/{key}@{etag}")
}

impl Store {
    /// Reads the log (and an old `processed.json`), dropping records older than `remember`,
    /// and compacts it when that dropped or repaired anything.
    pub(crate) fn open(dir: &Path, now: i64, remember: Duration) -> Result<Self, String> {
        std::fs::create_dir_all(dir)
            .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
        let mut objects = BTreeMap::new();
        let old = dir.join(OLD);
        let had_old = match std::fs::read(&old) {
            Ok(b) => {
                let f: OldFile = serde_json::from_slice(&b).map_err(|e| {
                    format!(
                        "{} is unreadable: {e}; move it away to start over",
                        old.display()
                    )
                })?;
                objects.extend(f.objects);
                true
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => false,
            Err(e) => return Err(format!("cannot read {}: {e}", old.display())),
        };
        let path = dir.join(LOG);
        let text = match std::fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(e) => return Err(format!("cannot read {}: {e}", path.display())),
        };
        let mut lines = 0;
        let mut damaged = false;
        for raw in text.split_inclusive(|b| *b == b'\n') {
            let parsed = raw
                .strip_suffix(b"\n")
                .and_then(|l| serde_json::from_slice::<Line>(l).ok());
            match parsed {
                Some(l) => {
                    lines += 1;
                    insert(&mut objects, l.id, l.outcome);
                }
                None => damaged = true,
            }
        }
        let oldest = now - remember.as_millis() as i64;
        let before = objects.len();
        objects.retain(|_, o| o.at >= oldest);
        let mut store = Store { objects, lines };
        if had_old || damaged || store.objects.len() != before {
            Writer::new(dir).append(store.compacted())?;
            if had_old {
                let _ = std::fs::remove_file(&old);
            }
        }
        Ok(store)
    }

    pub(crate) fn get(&self, id: &str) -> Option<&Outcome> {
        self.objects.get(id)
    }

    pub(crate) fn succeeded(&self, id: &str) -> bool {
        self.get(id).is_some_and(|o| o.status == "succeeded")
    }

    /// Records an outcome; the returned write is what [`Writer::append`] makes durable.
    pub(crate) fn record(&mut self, id: &str, outcome: Outcome) -> Pending {
        let mut line = serde_json::to_vec(&Line {
            id: id.to_string(),
            outcome: outcome.clone(),
        })
        .expect("serialises");
        line.push(b'\n');
        insert(&mut self.objects, id.to_string(), outcome);
        self.lines += 1;
        if self.lines > 2 * self.objects.len() + 1_000 {
            self.compacted()
        } else {
            Pending::Append(line)
        }
    }

    /// The whole log, one line per live record.
    fn compacted(&mut self) -> Pending {
        let mut all = Vec::new();
        for (id, o) in &self.objects {
            all.extend(
                serde_json::to_vec(&Line {
                    id: id.clone(),
                    outcome: o.clone(),
                })
                .expect("serialises"),
            );
            all.push(b'\n');
        }
        self.lines = self.objects.len();
        Pending::Compact(all)
    }
}

/// A recorded success stays: a later failure of a duplicate run does not replace it.
fn insert(objects: &mut BTreeMap<String, Outcome>, id: String, o: Outcome) {
    let keep = objects
        .get(&id)
        .is_some_and(|old| old.status == "succeeded" && o.status != "succeeded");
    if !keep {
        objects.insert(id, o);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn outcome(status: &str, at: i64) -> Outcome {
        Outcome {
            status: status.into(),
            attempts: 1,
            exit_code: Some(0),
            outputs: vec!["out/a.csv/r.txt".into()],
            error: None,
            at,
        }
    }

    fn tmp() -> PathBuf {
        std::env::temp_dir().join(format!("dw-store-{}", rand::random::<u64>()))
    }

    #[test]
    fn records_survive_a_reopen_and_a_success_is_never_replaced() {
        let dir = tmp();
        let now = 10_000_000_000;
        let mut s = Store::open(&dir, now, REMEMBER).unwrap();
        let w = Writer::new(&dir);
        let id = object_id("b", "in/a.csv", "e1");
        assert!(!s.succeeded(&id));
        w.append(s.record(&id, outcome("succeeded", now))).unwrap();
        w.append(s.record(&id, outcome("failed", now + 1))).unwrap();
        w.append(s.record(&object_id("b", "in/o", "e9"), outcome("failed", now)))
            .unwrap();
        let s2 = Store::open(&dir, now, REMEMBER).unwrap();
        assert_eq!(s2.get(&id), Some(&outcome("succeeded", now)));
        assert!(s2.get(&object_id("b", "in/o", "e9")).is_some());
        assert!(
            !s2.succeeded(&object_id("b", "in/a.csv", "e2")),
            "new content runs"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn the_log_is_bounded_and_repaired() {
        let dir = tmp();
        let now = 10_000_000_000;
        let mut s = Store::open(&dir, now, REMEMBER).unwrap();
        let w = Writer::new(&dir);
        // Many outcomes of few objects: compacted, not grown for ever.
        for i in 0..5_000 {
            let id = object_id("b", &format!("k{}", i % 10), "e");
            w.append(s.record(&id, outcome("failed", now))).unwrap();
        }
        let lines = std::fs::read_to_string(dir.join(LOG))
            .unwrap()
            .lines()
            .count();
        assert!(lines <= 1_020, "{lines} lines");
        // A cut last line is ignored and cut off; old records expire.
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(dir.join(LOG))
            .unwrap();
        f.write_all(b"{\"id\":\"b/cut").unwrap();
        let later = now + REMEMBER.as_millis() as i64 + 1;
        let s2 = Store::open(&dir, later, REMEMBER).unwrap();
        assert!(s2.get(&object_id("b", "k1", "e")).is_none(), "expired");
        assert_eq!(std::fs::read_to_string(dir.join(LOG)).unwrap(), "");
        // The file of an older dockwatch is folded in.
        let old =
            serde_json::json!({"version": 1, "objects": {"b/x@e": outcome("succeeded", later)}});
        std::fs::write(dir.join(OLD), old.to_string()).unwrap();
        let s3 = Store::open(&dir, later, REMEMBER).unwrap();
        assert!(s3.succeeded("b/x@e"));
        assert!(!dir.join(OLD).exists());
        std::fs::write(dir.join(OLD), b"{").unwrap();
        assert!(
            Store::open(&dir, later, REMEMBER)
                .unwrap_err()
                .contains("move it away")
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
