//! The checkpoint: how far a run's delivery got, so that `dockwatch resume` can ship exactly
//! the rest after dockwatch was killed (SIGKILL, power cut) or gave up.
//!
//! Design:
//! - Format (version 3): one JSON file per container, `STATE_DIR/<container id>.json`, holding
//!   the destination (group, stream, region and endpoint, never credentials), the container
//!   id, whether the container is to be kept, the largest event size, when the container was
//!   created, the transforms, whether the run read the attach path, and the delivered
//!   [`Position`]: the number of the engine's log messages of each source up to it
//!   (`messages`) and, when the logs endpoint read the last of them, its [`Cursor`] (both
//!   absent: nothing delivered yet); the number of events delivered, and for each destination
//!   stream the [`Mark`] there (its newest timestamp and how many delivered events carry it);
//!   under `dockwatch ship`, `drained`: the container's `State.FinishedAt` once its log was
//!   delivered to that exit (absent otherwise; older files read as absent), and `file`: where
//!   the position is in the engine's log files when they were read (`docker::files`: the hash
//!   of the file's first line and a byte offset; absent on the other paths and in older files).
//!   Version 2 (a cursor, no message counts) is read as it is.
//! - Invariant: every event made from the container's log up to the position has been
//!   acknowledged by CloudWatch, and the framer held no partial line there, so framing again
//!   from right after it gives exactly the events not delivered up to it. The position only
//!   moves after CloudWatch acknowledged, in order, every batch before it.
//! - What it does not hold: batches acknowledged past the cursor (a batch still retried when
//!   later ones were stored: a hole; at most `sink::MAX_AHEAD` batches), acknowledgements
//!   since the last save, and requests in flight at a crash. Rather than recording those
//!   ranges (which would still miss the in-flight ones), resume reads what each stream holds
//!   from the mark on and skips exactly what is there (`sink::dedupe`): one mechanism for
//!   all three.
//! - Writes are atomic: a temporary file in the same directory, fsync, rename over the old
//!   one, fsync of the directory. A crash leaves the old checkpoint or the new one, never a
//!   mix. It is written when the container is created, then as acknowledgements move the
//!   position, at most every 250 ms unless 40,000 events are unsaved (an fsync per request
//!   was a measurable share of a flood's CPU), and once more when shipping ends; it is removed
//!   when a run ends with everything delivered.
//! - Recovery: `dockwatch resume` reads it, reopens the container's log after the position
//!   (after the cursor's frame, or past the counted messages of each source),
//!   reads each stream from its mark on, and ships the rest without what CloudWatch already
//!   has. A version-1 file (no marks) is refused with what to do.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::docker::files::FileMark;
use crate::docker::logs::{Cursor, Position};
use crate::pipeline::batcher::Mark;
use crate::pipeline::framing::Source;

/// Version of the file format written.
const VERSION: u32 = 3;
/// Versions read.
const READS: [u32; 2] = [2, 3];

/// The saved state of one run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Checkpoint {
    pub(crate) version: u32,
    pub(crate) container_id: String,
    pub(crate) group: String,
    pub(crate) stream: String,
    pub(crate) region: Option<String>,
    pub(crate) endpoint_url: Option<String>,
    pub(crate) keep_container: bool,
    pub(crate) max_event_size: usize,
    /// The delivered position's cursor, when the logs endpoint read it.
    pub(crate) cursor: Option<SavedCursor>,
    /// The delivered position's log messages of stdout and stderr (version 3).
    #[serde(default)]
    pub(crate) messages: Option<[u64; 2]>,
    /// The run read the attach path: its events carry the times dockwatch received them,
    /// not the engine's (resume matches what CloudWatch holds accordingly).
    #[serde(default)]
    pub(crate) attached: bool,
    /// Events delivered up to the cursor.
    pub(crate) events_delivered: u64,
    /// Each destination stream's mark at the cursor (empty before anything was delivered).
    #[serde(default)]
    pub(crate) marks: Vec<Mark>,
    /// When the container was created, less a second (ms since the epoch): nothing of its
    /// output is older, so a resume with no position reads its streams from here.
    #[serde(default)]
    pub(crate) created_ms: i64,
    /// The transforms of the run, so that resume frames the rest the same way.
    #[serde(default)]
    pub(crate) strip_ansi: bool,
    #[serde(default)]
    pub(crate) multiline_pattern: Option<String>,
    #[serde(default)]
    pub(crate) multiline_timeout_ms: u64,
    #[serde(default)]
    pub(crate) json: bool,
    /// stdout and stderr went to `STREAM/stdout` and `STREAM/stderr`.
    #[serde(default)]
    pub(crate) split_streams: bool,
    /// `--invalid-utf8 escape`: backslashes are escaped (the engine's log has the invalid
    /// bytes already replaced, so resume can only escape what it still sees).
    #[serde(default)]
    pub(crate) escape_invalid_utf8: bool,
    /// `dockwatch ship`: the container's `State.FinishedAt` when its log was delivered to
    /// the end (a later start of the same container makes it differ).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) drained: Option<String>,
    /// The delivered position in the engine's log files, when they were read.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) file: Option<SavedFile>,
}

/// A [`FileMark`] as stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct SavedFile {
    pub(crate) first_line: u64,
    pub(crate) offset: u64,
}

impl From<FileMark> for SavedFile {
    fn from(m: FileMark) -> Self {
        Self {
            first_line: m.first_line,
            offset: m.offset,
        }
    }
}

impl From<SavedFile> for FileMark {
    fn from(m: SavedFile) -> Self {
        Self {
            first_line: m.first_line,
            offset: m.offset,
        }
    }
}

/// A [`Cursor`] as stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct SavedCursor {
    pub(crate) ts_ns: i64,
    pub(crate) stderr: bool,
    pub(crate) nth: u64,
}

impl From<Cursor> for SavedCursor {
    fn from(c: Cursor) -> Self {
        Self {
            ts_ns: c.ts_ns,
            stderr: c.source == Source::Stderr,
            nth: c.nth,
        }
    }
}

impl From<SavedCursor> for Cursor {
    fn from(c: SavedCursor) -> Self {
        Self {
            ts_ns: c.ts_ns,
            source: if c.stderr {
                Source::Stderr
            } else {
                Source::Stdout
            },
            nth: c.nth,
        }
    }
}

impl Checkpoint {
    pub(crate) fn new(
        container_id: &str,
        group: &str,
        stream: &str,
        region: Option<String>,
        endpoint_url: Option<String>,
        keep_container: bool,
        max_event_size: usize,
    ) -> Self {
        Self {
            version: VERSION,
            container_id: container_id.to_string(),
            group: group.to_string(),
            stream: stream.to_string(),
            region,
            endpoint_url,
            keep_container,
            max_event_size,
            cursor: None,
            messages: None,
            attached: false,
            events_delivered: 0,
            marks: Vec::new(),
            created_ms: crate::util::time::now_ms() - 1000,
            strip_ansi: false,
            multiline_pattern: None,
            multiline_timeout_ms: 0,
            json: false,
            split_streams: false,
            escape_invalid_utf8: false,
            drained: None,
            file: None,
        }
    }

    /// Records the run's transforms.
    pub(crate) fn with_transforms(mut self, t: &crate::config::TransformConfig) -> Self {
        self.strip_ansi = t.strip_ansi;
        self.multiline_pattern = t.multiline.as_ref().map(|(re, _)| re.as_str().to_string());
        self.multiline_timeout_ms = t
            .multiline
            .as_ref()
            .map_or(0, |(_, d)| d.as_millis() as u64);
        self.json = t.json;
        self.escape_invalid_utf8 = t.escape_invalid_utf8;
        self
    }

    /// Records whether the run reads the attach path.
    pub(crate) fn reading_attach(mut self, attached: bool) -> Self {
        self.attached = attached;
        self
    }

    /// Records whether stdout and stderr go to two streams.
    pub(crate) fn with_split_streams(mut self, split: bool) -> Self {
        self.split_streams = split;
        self
    }

    /// The run's transforms, for resume.
    pub(crate) fn transforms(
        &self,
    ) -> Result<crate::config::TransformConfig, crate::config::ConfigError> {
        Ok(crate::config::TransformConfig {
            strip_ansi: self.strip_ansi,
            multiline: crate::config::multiline(
                self.multiline_pattern.as_deref(),
                std::time::Duration::from_millis(self.multiline_timeout_ms),
            )?,
            json: self.json,
            container: self.container_id[..self.container_id.len().min(12)].to_string(),
            escape_invalid_utf8: self.escape_invalid_utf8,
        })
    }

    /// Where resume starts: the delivered position, or the beginning.
    pub(crate) fn position(&self) -> Position {
        if !self.has_position() {
            return Position::START;
        }
        Position {
            messages: self.messages,
            cursor: self.cursor.map(Cursor::from),
            file: self.file.map(FileMark::from),
        }
    }

    /// Something was delivered.
    fn has_position(&self) -> bool {
        self.cursor.is_some() || self.messages.is_some()
    }

    /// Each destination stream's mark at the position, `streams` of them.
    pub(crate) fn marks(&self, streams: usize) -> Result<Vec<Mark>, String> {
        if !self.has_position() {
            let start = Mark {
                last_ms: self.created_ms,
                tie: 0,
            };
            return Ok(vec![start; streams]);
        }
        if self.marks.len() != streams {
            return Err(format!(
                "the checkpoint of container {} has {} stream marks for {streams} streams",
                crate::docker::short_id(&self.container_id),
                self.marks.len()
            ));
        }
        Ok(self.marks.clone())
    }

    /// The file of a container's checkpoint.
    pub(crate) fn path(dir: &Path, container_id: &str) -> PathBuf {
        dir.join(format!("{container_id}.json"))
    }

    /// Writes it atomically (see the module doc).
    pub(crate) fn save(&self, dir: &Path) -> std::io::Result<()> {
        std::fs::create_dir_all(dir)?;
        let path = Self::path(dir, &self.container_id);
        crate::util::durable::replace(&path, &serde_json::to_vec(self)?)
    }

    pub(crate) fn load(path: &Path) -> Result<Self, String> {
        let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
        let cp: Checkpoint =
            serde_json::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))?;
        if !READS.contains(&cp.version) {
            return Err(format!(
                "{}: checkpoint version {} is not this dockwatch's ({VERSION}); resume it with the dockwatch that wrote it, or remove it",
                path.display(),
                cp.version
            ));
        }
        Ok(cp)
    }

    /// Removes a container's checkpoint (after everything was delivered).
    pub(crate) fn remove(dir: &Path, container_id: &str) -> std::io::Result<()> {
        match std::fs::remove_file(Self::path(dir, container_id)) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        }
    }

    /// The checkpoints in `dir`.
    pub(crate) fn list(dir: &Path) -> Vec<PathBuf> {
        let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.path())
            .filter(|p| {
                p.extension().is_some_and(|x| x == "json")
                    && !p
                        .file_name()
                        .is_some_and(|n| n.to_string_lossy().starts_with('.'))
            })
            .collect();
        v.sort();
        v
    }
}

/// The checkpoint is saved at most this often...
const SAVE_EVERY: Duration = Duration::from_millis(250);
/// ...unless this many delivered events are not in it yet.
const SAVE_EVENTS: u64 = 40_000;

/// Keeps the checkpoint up to date without an fsync per request: a save when [`SAVE_EVERY`]
/// passed or [`SAVE_EVENTS`] events are unsaved, and a last one when shipping ends
/// ([`Saver::flush`]). A crash in between leaves an older position, which resume corrects by
/// skipping events CloudWatch already has.
pub(crate) struct Saver {
    /// Events delivered before this run (resume).
    base: u64,
    checkpoint: Checkpoint,
    dir: PathBuf,
    last_save: Instant,
    /// Delivered events not in the saved checkpoint yet.
    unsaved: u64,
    /// The position moved since the last save.
    dirty: bool,
}

impl Saver {
    pub(crate) fn new(checkpoint: Checkpoint, dir: PathBuf) -> Self {
        Saver {
            base: checkpoint.events_delivered,
            checkpoint,
            dir,
            last_save: Instant::now(),
            unsaved: 0,
            dirty: false,
        }
    }

    /// Everything up to `position` is acknowledged, `events` in this run; `marks` are the
    /// destination streams' marks there.
    pub(crate) fn delivered(&mut self, position: Position, marks: &[Mark], events: u64) {
        let before = self.checkpoint.events_delivered;
        self.checkpoint.version = VERSION;
        self.checkpoint.cursor = position.cursor.map(SavedCursor::from);
        self.checkpoint.messages = position.messages;
        self.checkpoint.file = position.file.map(SavedFile::from);
        self.checkpoint.marks = marks.to_vec();
        self.checkpoint.events_delivered = self.base + events;
        self.unsaved += self.checkpoint.events_delivered.saturating_sub(before);
        self.dirty = true;
        if self.last_save.elapsed() >= SAVE_EVERY || self.unsaved >= SAVE_EVENTS {
            self.flush();
        }
    }

    /// The checkpoint as it stands (saved or about to be).
    pub(crate) fn checkpoint(&self) -> &Checkpoint {
        &self.checkpoint
    }

    /// Saves the newest position if it moved since the last save.
    pub(crate) fn flush(&mut self) {
        if !self.dirty {
            return;
        }
        if let Err(e) = self.checkpoint.save(&self.dir) {
            tracing::warn!("cannot update the checkpoint: {e}");
        }
        self.last_save = Instant::now();
        self.unsaved = 0;
        self.dirty = false;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_atomic_replace() {
        let dir = std::env::temp_dir().join(format!("dockwatch-cp-{}", std::process::id()));
        let mut cp = Checkpoint::new("abc", "g", "s", Some("eu-west-1".into()), None, false, 1024);
        cp.save(&dir).unwrap();
        assert_eq!(
            Checkpoint::load(&Checkpoint::path(&dir, "abc")).unwrap(),
            cp
        );
        cp.cursor = Some(
            Cursor {
                ts_ns: 5,
                source: Source::Stderr,
                nth: 2,
            }
            .into(),
        );
        cp.events_delivered = 7;
        cp.save(&dir).unwrap();
        let back = Checkpoint::load(&Checkpoint::path(&dir, "abc")).unwrap();
        assert_eq!(back, cp);
        assert_eq!(Cursor::from(back.cursor.unwrap()).source, Source::Stderr);
        // No temporary file is left, and list() sees exactly the checkpoint.
        assert_eq!(Checkpoint::list(&dir), vec![Checkpoint::path(&dir, "abc")]);
        Checkpoint::remove(&dir, "abc").unwrap();
        Checkpoint::remove(&dir, "abc").unwrap();
        assert!(Checkpoint::list(&dir).is_empty());
        std::fs::remove_dir_all(dir).unwrap();
    }
}
