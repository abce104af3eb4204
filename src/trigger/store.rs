//! What `on-upload` has done with each object, so a notification delivered twice (SQS is at
//! least once) or a file uploaded again unchanged does not run again, even after a restart.
//!
//! # Format
//! `<state_dir>/processed.json`: `{"version":1,"objects":{"BUCKET/KEY@ETAG":{...}}}`, each
//! record holding the outcome (`succeeded` or `failed`), attempts, exit code, outputs, time.
//!
//! # Invariants
//! - A record says `succeeded` only after the outputs were uploaded; the SQS message is
//!   deleted only after that record is on disk (temporary file, fsync, rename). A crash in
//!   between leaves the message to come back, and the record makes its second delivery a
//!   no-op.
//! - The identity of an object is key + ETag: the same key uploaded with new content is a new
//!   object and runs.
//!
//! - The file is only written off the async runtime ([`Writer::save`] on a blocking thread),
//!   and never under the records' lock: a record is staged (inserted, serialised, numbered)
//!   under the lock in microseconds, and the writer, behind its own lock, writes a snapshot
//!   only when it is newer than the last one written, so concurrent saves never put an older
//!   snapshot over a newer one.
//!
//! # Recovery
//! Nothing to repair: the file is replaced atomically, so it is the old or the new version.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

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

#[derive(Debug, Default, Serialize, Deserialize)]
struct OnDisk {
    version: u32,
    objects: BTreeMap<String, Outcome>,
}

/// The records, and where they are saved.
#[derive(Debug)]
pub(crate) struct Store {
    path: PathBuf,
    objects: BTreeMap<String, Outcome>,
    /// Snapshots staged so far.
    staged: u64,
}

/// The whole file as of one staged record, numbered.
#[derive(Debug)]
pub(crate) struct Snapshot {
    number: u64,
    path: PathBuf,
    bytes: Vec<u8>,
}

/// Writes snapshots in order of staging: the number of the newest one written.
#[derive(Debug, Default)]
pub(crate) struct Writer(std::sync::Mutex<u64>);

impl Writer {
    /// Writes `s` atomically unless a newer snapshot is already on disk (blocking: call it off
    /// the runtime).
    pub(crate) fn save(&self, s: Snapshot) -> Result<(), String> {
        let mut newest = self.0.lock().expect("writer");
        if s.number <= *newest {
            return Ok(());
        }
        crate::util::durable::replace(&s.path, &s.bytes)
            .map_err(|e| format!("cannot save {}: {e}", s.path.display()))?;
        *newest = s.number;
        Ok(())
    }
}

/// The record key of an object.
pub(crate) fn object_id(bucket: &str, key: &str, etag: &str) -> String {
    format!("{bucket}/{key}@{etag}")
}

impl Store {
    pub(crate) fn open(dir: &Path) -> Result<Self, String> {
        std::fs::create_dir_all(dir)
            .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
        let path = dir.join("processed.json");
        let objects = match std::fs::read(&path) {
            Ok(b) => {
                serde_json::from_slice::<OnDisk>(&b)
                    .map_err(|e| {
                        format!(
                            "{} is unreadable: {e}; move it away to start over",
                            path.display()
                        )
                    })?
                    .objects
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => BTreeMap::new(),
            Err(e) => return Err(format!("cannot read {}: {e}", path.display())),
        };
        Ok(Store {
            path,
            objects,
            staged: 0,
        })
    }

    pub(crate) fn get(&self, id: &str) -> Option<&Outcome> {
        self.objects.get(id)
    }

    pub(crate) fn succeeded(&self, id: &str) -> bool {
        self.get(id).is_some_and(|o| o.status == "succeeded")
    }

    /// Records an outcome; the returned snapshot is what [`Writer::save`] makes durable.
    pub(crate) fn record(&mut self, id: &str, outcome: Outcome) -> Snapshot {
        // A recorded success stays: a later failure of a duplicate run does not replace it.
        if !(self.succeeded(id) && outcome.status != "succeeded") {
            self.objects.insert(id.to_string(), outcome);
        }
        let bytes = serde_json::to_vec_pretty(&OnDisk {
            version: 1,
            objects: self.objects.clone(),
        })
        .expect("serialises");
        self.staged += 1;
        Snapshot {
            number: self.staged,
            path: self.path.clone(),
            bytes,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_survive_a_reopen() {
        let dir = std::env::temp_dir().join(format!("dw-store-{}", rand::random::<u64>()));
        let mut s = Store::open(&dir).unwrap();
        let id = object_id("b", "in/a.csv", "e1");
        assert!(!s.succeeded(&id));
        let o = Outcome {
            status: "succeeded".into(),
            attempts: 1,
            exit_code: Some(0),
            outputs: vec!["out/a.csv/r.txt".into()],
            error: None,
            at: 5,
        };
        let writer = Writer::default();
        let first = s.record(&id, o.clone());
        let failed = Outcome {
            status: "failed".into(),
            ..o.clone()
        };
        let second = s.record(&object_id("b", "in/other", "e9"), failed);
        writer.save(second).unwrap();
        // An older snapshot saved late never replaces a newer one.
        writer.save(first).unwrap();
        assert!(
            Store::open(&dir)
                .unwrap()
                .get(&object_id("b", "in/other", "e9"))
                .is_some()
        );
        let s2 = Store::open(&dir).unwrap();
        assert!(s2.succeeded(&id));
        assert_eq!(s2.get(&id), Some(&o));
        assert!(
            !s2.succeeded(&object_id("b", "in/a.csv", "e2")),
            "new content runs"
        );
        std::fs::write(dir.join("processed.json"), b"{").unwrap();
        assert!(Store::open(&dir).unwrap_err().contains("move it away"));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
