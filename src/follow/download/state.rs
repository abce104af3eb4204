//! The download daemon's position in every stream, so a restart resumes with no gap and no
//! duplicate — even after SIGKILL or a power cut.
//!
//! # Format
//! One JSON file, `<output_dir>/.dockwatch-download.json`:
//! `{"version":2,"saved_at":MS,"streams":[{group, stream, file, format, token, offset,
//! events, bytes, late_events, last_timestamp, at_last_timestamp, gone, ledger}, ...]}`.
//! `file` is relative to the output directory; `format` is the line format the file is
//! written in (kept for the file's life: a changed `line_format` applies to new files);
//! `token` is the GetLogEvents `nextForwardToken` to read from next; `ledger` is what the
//! file holds by time ([`super::ledger`]: how late events are found).
//!
//! Version 1 (no ledger) is read and upgraded: its streams get a ledger that starts after
//! their last event, so time downloaded before the upgrade is not checked for late events.
//!
//! # Invariants
//! 1. For each stream, the first `offset` bytes of `file` are exactly the events the ledger
//!    lists, rendered; reading from `token` gives the events after the newest of them (late
//!    events behind it are the ledger's checks' to find).
//! 2. The state is saved only after the bytes it covers are on disk: the daemon appends a page
//!    to the file, `fsync`s it, then saves the state (temporary file, `fsync`, `rename` over
//!    the old one, `fsync` of the directory). Writing the page and saving the state happen with
//!    no await point between them, so cancellation cannot split them either.
//! 3. One daemon per output directory: `.dockwatch-download.lock` is held with an exclusive
//!    lock for the daemon's lifetime.
//! 4. A stream's entry is saved before its file's first byte (when the stream is found), and
//!    before every append the file's length is checked against the entry ([`State::check`]):
//!    nothing is ever appended to a file whose length is not the saved `offset`.
//!
//! # Recovery
//! On start, and before every append, a file longer than its `offset` is cut back to
//! `offset`: those bytes were written after the last save and will be read again from
//! `token` (a file found for a new entry is cut back to nothing: it was not written under
//! this state). A file that is missing
//! (deleted by hand to download a stream again) starts over from the stream's head. A file
//! shorter than its `offset` was changed outside dockwatch: it is set aside as
//! `FILE.damaged-<ms>` and the stream downloaded again.
//!
//! When CloudWatch no longer accepts a saved token (tokens expire), reading restarts at
//! `last_timestamp` and skips the first `at_last_timestamp` events there — those already in
//! the file.

use std::collections::BTreeMap;
use std::fs::OpenOptions;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::ledger::Ledger;
use crate::cli::LineFormat;
use crate::follow::FollowError;

/// The state file's name inside the output directory.
pub(crate) const STATE_FILE: &str = ".dockwatch-download.json";
/// The state format written.
const VERSION: u32 = 2;
/// The lock file's name inside the output directory.
pub(crate) const LOCK_FILE: &str = ".dockwatch-download.lock";

/// Makes a stream's file agree with its entry: longer than `offset` is cut back to it
/// (bytes written after the last save; with a new entry, `offset` 0), shorter is set aside
/// as `FILE.damaged-<ms>` and the stream downloaded again, missing starts over. Never is
/// anything appended to a file whose length is not the entry's.
fn check_file(dir: &Path, s: &mut StreamState) -> Result<Option<String>, FollowError> {
    let path = dir.join(&s.file);
    let len = match std::fs::metadata(&path) {
        Ok(m) => m.len(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let note = (s.offset > 0).then(|| {
                format!(
                    "{} is missing: downloading {}/{} again from its start",
                    path.display(),
                    s.group,
                    s.stream
                )
            });
            restart(s);
            return Ok(note);
        }
        Err(source) => {
            return Err(FollowError::Io {
                what: "cannot inspect",
                path,
                source,
            });
        }
    };
    if len > s.offset {
        OpenOptions::new()
            .write(true)
            .open(&path)
            .and_then(|f| f.set_len(s.offset).and_then(|_| f.sync_all()))
            .map_err(|source| FollowError::Io {
                what: "cannot cut back",
                path: path.clone(),
                source,
            })?;
        return Ok(Some(format!(
            "{}: removed {} byte(s) written after the last saved position; they will be read again",
            path.display(),
            len - s.offset
        )));
    }
    if len < s.offset {
        let aside = path.with_file_name(format!(
            "{}.damaged-{}",
            path.file_name().unwrap_or_default().to_string_lossy(),
            crate::util::time::now_ms()
        ));
        std::fs::rename(&path, &aside).map_err(|source| FollowError::Io {
            what: "cannot set aside",
            path: path.clone(),
            source,
        })?;
        let note = format!(
            "{} is shorter than dockwatch wrote it ({len} < {} bytes): moved to {} and downloading {}/{} again",
            path.display(),
            s.offset,
            aside.display(),
            s.group,
            s.stream
        );
        restart(s);
        return Ok(Some(note));
    }
    Ok(None)
}

/// One stream's position.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct StreamState {
    pub(crate) group: String,
    pub(crate) stream: String,
    /// The local file, relative to the output directory.
    pub(crate) file: PathBuf,
    /// The line format of the file (`None` in version 1: the configured one).
    #[serde(default)]
    pub(crate) format: Option<LineFormat>,
    /// GetLogEvents token to read from next; `None`: from the head (or `last_timestamp`).
    pub(crate) token: Option<String>,
    /// Bytes of `file` covered by `token` (invariant 1).
    pub(crate) offset: u64,
    /// Events written so far.
    pub(crate) events: u64,
    /// Message bytes written so far.
    pub(crate) bytes: u64,
    /// Timestamp of the last event written (epoch ms), if any.
    pub(crate) last_timestamp: Option<i64>,
    /// How many events with `last_timestamp` were written (for token-less resumption).
    pub(crate) at_last_timestamp: u64,
    /// The stream was deleted in CloudWatch; the file is kept.
    #[serde(default)]
    pub(crate) gone: bool,
    /// Events found late by the ledger's checks and appended.
    #[serde(default)]
    pub(crate) late_events: u64,
    /// What the file holds by time (`None` in version 1; set on load).
    #[serde(default)]
    pub(crate) ledger: Option<Ledger>,
}

impl StreamState {
    /// The ledger (present once loaded).
    pub(crate) fn ledger(&mut self) -> &mut Ledger {
        self.ledger.get_or_insert_with(Ledger::new)
    }
}

#[derive(Debug, Serialize, Deserialize)]
struct OnDisk {
    version: u32,
    saved_at: i64,
    streams: Vec<StreamState>,
}

/// All streams' positions, and where they are saved.
#[derive(Debug)]
pub(crate) struct State {
    /// The output directory.
    dir: PathBuf,
    /// Positions by (group, stream).
    pub(crate) streams: BTreeMap<(String, String), StreamState>,
    /// When the state was last saved (epoch ms), 0 before the first save.
    pub(crate) saved_at: i64,
}

impl State {
    /// Reads the saved state (none yet: empty).
    pub(crate) fn load(dir: &Path) -> Result<Self, FollowError> {
        let path = dir.join(STATE_FILE);
        let mut streams = BTreeMap::new();
        let mut saved_at = 0;
        match std::fs::read(&path) {
            Ok(bytes) => {
                let d: OnDisk =
                    serde_json::from_slice(&bytes).map_err(|e| FollowError::BadState {
                        path: path.clone(),
                        detail: e.to_string(),
                    })?;
                if d.version != 1 && d.version != VERSION {
                    return Err(FollowError::BadState {
                        path,
                        detail: format!("version {} is not one this dockwatch reads", d.version),
                    });
                }
                saved_at = d.saved_at;
                for mut s in d.streams {
                    if s.ledger.is_none() {
                        // Version 1: nothing before the next event is known to a ledger.
                        s.ledger = Some(match s.last_timestamp {
                            Some(t) => Ledger::from(t.saturating_add(1)),
                            None => Ledger::new(),
                        });
                    }
                    streams.insert((s.group.clone(), s.stream.clone()), s);
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(source) => {
                return Err(FollowError::Io {
                    what: "cannot read the state file",
                    path,
                    source,
                });
            }
        }
        Ok(State {
            dir: dir.to_path_buf(),
            streams,
            saved_at,
        })
    }

    /// Applies the recovery rules (module doc) to every file; returns what was done, for the log.
    pub(crate) fn recover(&mut self) -> Result<Vec<String>, FollowError> {
        let mut notes = Vec::new();
        for s in self.streams.values_mut() {
            notes.extend(check_file(&self.dir, s)?);
        }
        Ok(notes)
    }

    /// Makes the file of `key` agree with its entry before anything is appended to it (see
    /// [`check_file`]); the note says what was done, if anything.
    pub(crate) fn check(&mut self, key: &(String, String)) -> Result<Option<String>, FollowError> {
        match self.streams.get_mut(key) {
            Some(s) => check_file(&self.dir, s),
            None => Ok(None),
        }
    }

    /// Saves atomically (invariant 2). Synchronous on purpose: see the module doc.
    pub(crate) fn save(&mut self) -> Result<(), FollowError> {
        let path = self.dir.join(STATE_FILE);
        self.saved_at = crate::util::time::now_ms();
        let d = OnDisk {
            version: VERSION,
            saved_at: self.saved_at,
            streams: self.streams.values().cloned().collect(),
        };
        let bytes = serde_json::to_vec(&d).expect("state serialises");
        let io = |what: &'static str, p: &Path| {
            let p = p.to_path_buf();
            move |source| FollowError::Io {
                what,
                path: p,
                source,
            }
        };
        crate::util::durable::replace(&path, &bytes)
            .map_err(io("cannot write the state file", &path))
    }
}

/// Forget a stream's position: its file starts again, empty, from the stream's head.
fn restart(s: &mut StreamState) {
    s.token = None;
    s.offset = 0;
    s.events = 0;
    s.bytes = 0;
    s.last_timestamp = None;
    s.at_last_timestamp = 0;
    s.late_events = 0;
    s.ledger = Some(Ledger::new());
}

/// The daemon's exclusive hold on an output directory (invariant 3); released on drop.
pub(crate) struct DirLock;

impl DirLock {
    pub(crate) fn acquire(dir: &Path) -> Result<crate::util::lock::DirLock, FollowError> {
        crate::util::lock::DirLock::acquire(dir, LOCK_FILE).map_err(|e| match e {
            crate::util::lock::LockError::Held(d) => FollowError::Locked(d),
            crate::util::lock::LockError::Io { what, path, source } => {
                FollowError::Io { what, path, source }
            }
        })
    }

    /// Whether some process holds the lock now (for `--status`).
    pub(crate) fn is_held(dir: &Path) -> bool {
        crate::util::lock::DirLock::is_held(dir, LOCK_FILE)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tmp() -> PathBuf {
        let p = std::env::temp_dir().join(format!(
            "dockwatch-state-{}-{}",
            std::process::id(),
            rand::random::<u64>()
        ));
        std::fs::create_dir_all(&p).unwrap();
        p
    }

    fn entry(file: &str, offset: u64) -> StreamState {
        StreamState {
            group: "g".into(),
            stream: file.into(),
            file: file.into(),
            token: Some("f/1".into()),
            offset,
            events: 2,
            bytes: 4,
            last_timestamp: Some(5),
            at_last_timestamp: 1,
            gone: false,
            format: None,
            late_events: 0,
            ledger: Some(Ledger::new()),
        }
    }

    #[test]
    fn a_version_1_state_gets_a_ledger_that_starts_after_its_last_event() {
        let dir = tmp();
        let v1 = serde_json::json!({"version": 1, "saved_at": 1, "streams": [{
            "group": "g", "stream": "s", "file": "s.log", "token": "f/1", "offset": 0,
            "events": 2, "bytes": 4, "last_timestamp": 5_000, "at_last_timestamp": 1}]});
        std::fs::write(dir.join(STATE_FILE), v1.to_string()).unwrap();
        let mut st = State::load(&dir).unwrap();
        let s = st.streams.get_mut(&("g".into(), "s".into())).unwrap();
        assert_eq!(s.ledger().since, 5_001);
        assert_eq!(s.format, None);
        st.save().unwrap();
        let text = std::fs::read_to_string(dir.join(STATE_FILE)).unwrap();
        assert!(text.starts_with("{\"version\":2"), "{text}");
    }

    #[test]
    fn saves_and_loads_and_recovers() {
        let dir = tmp();
        let mut st = State::load(&dir).unwrap();
        assert!(st.streams.is_empty());
        std::fs::write(dir.join("long"), b"a\nb\nhalf").unwrap(); // 4 bytes covered, 4 extra
        std::fs::write(dir.join("short"), b"a\n").unwrap(); // 4 covered, only 2 there
        for e in [entry("long", 4), entry("short", 4), entry("missing", 4)] {
            st.streams.insert((e.group.clone(), e.stream.clone()), e);
        }
        st.save().unwrap();
        let mut back = State::load(&dir).unwrap();
        assert_eq!(back.streams, st.streams);
        let notes = back.recover().unwrap();
        assert_eq!(notes.len(), 3, "{notes:?}");
        assert_eq!(std::fs::read(dir.join("long")).unwrap(), b"a\nb\n");
        let long = &back.streams[&("g".into(), "long".into())];
        assert_eq!(long.token.as_deref(), Some("f/1"));
        let short = &back.streams[&("g".into(), "short".into())];
        assert_eq!((short.token.as_deref(), short.offset), (None, 0));
        assert!(!dir.join("short").exists());
        assert!(std::fs::read_dir(&dir).unwrap().any(|e| {
            e.unwrap()
                .file_name()
                .to_string_lossy()
                .starts_with("short.damaged-")
        }));
        let missing = &back.streams[&("g".into(), "missing".into())];
        assert_eq!((missing.token.as_deref(), missing.events), (None, 0));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_corrupt_state_file_is_a_clear_error() {
        let dir = tmp();
        std::fs::write(dir.join(STATE_FILE), b"{not json").unwrap();
        let e = State::load(&dir).unwrap_err().to_string();
        assert!(
            e.contains("is unreadable") && e.contains("move it away"),
            "{e}"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn one_lock_holder_per_directory() {
        let dir = tmp();
        let first = DirLock::acquire(&dir).unwrap();
        assert!(DirLock::is_held(&dir));
        assert!(matches!(
            DirLock::acquire(&dir),
            Err(FollowError::Locked(_))
        ));
        drop(first);
        assert!(!DirLock::is_held(&dir));
        let _again = DirLock::acquire(&dir).unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
