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
        Ok(Store { path, objects })
    }

    pub(crate) fn get(&self, id: &str) -> Option<&Outcome> {
        self.objects.get(id)
    }

    pub(crate) fn succeeded(&self, id: &str) -> bool {
        self.get(id).is_some_and(|o| o.status == "succeeded")
    }

    /// Records an outcome and saves atomically.
    pub(crate) fn record(&mut self, id: &str, outcome: Outcome) -> Result<(), String> {
        self.objects.insert(id.to_string(), outcome);
        let bytes = serde_json::to_vec_pretty(&OnDisk {
            version: 1,
            objects: self.objects.clone(),
        })
        .expect("serialises");
        crate::util::durable::replace(&self.path, &bytes)
            .map_err(|e| format!("cannot save {}: {e}", self.path.display()))
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
        s.record(&id, o.clone()).unwrap();
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
