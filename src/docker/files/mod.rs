//! Reading a container's output from the engine's own `json-file` log files, the way the
//! host-wide shippers do (Fluent Bit's `tail`, Vector's `file`), instead of through the logs
//! endpoint, where the engine decodes its JSON log again for every reader (about a third of
//! the attach stream's rate on 2 cores: `shared/notes`).
//!
//! Format: `<root>/containers/<id>/<id>-json.log`, one JSON record per line
//! ([`record`]); rotation (`max-size`, `max-file`) renames `-json.log` → `.log.1` → … and
//! deletes the oldest; `compress=true` gzips `.1` afterwards into `.1.gz` (so for a moment
//! both exist). A container restarted by its policy appends to the same file.
//!
//! Design:
//! - **Hold, don't chase.** [`LogFiles::open`] registers the file's directory with the host's
//!   [`Watcher`] first, then opens every file that exists (rotated ones, oldest first, then the
//!   current one); from then on the watcher opens each new file at its creation. A descriptor
//!   keeps a renamed or deleted file (rotation, `--rm`) readable to its end, so while `ship`
//!   runs nothing rotates away unread, however far behind the reader is (up to
//!   [`watch::MAX_WAITING`] files waiting).
//! - **A file is finished when a newer one exists**: the engine closes, renames, then creates,
//!   so once a newer file is seen the older one is read to its end once more and left.
//! - **Position** ([`FileMark`]): the file, by a hash of its first line (a nanosecond
//!   timestamp and the text: unlike an inode it survives compression into a new file and is not
//!   reused), and the byte offset after the last whole record read (in the uncompressed bytes).
//!   Resuming finds the file among those that exist and continues at the offset; when none has
//!   that first line, what was between the mark and the oldest file left rotated away while
//!   nothing read it: reading starts at the oldest file, and the gap is reported ([`Lost`]) with
//!   the time range it spans, never silently.
//! - A position from the logs endpoint (a cursor, no mark) is continued by time: records at or
//!   before the cursor's frame are passed over.
//! - Records that are not the engine's (a line torn by a crash of the engine) are skipped and
//!   counted; a file that shrank under the reader (truncated) is read again from its start, and
//!   said.

pub(crate) mod page;
pub(crate) mod record;
pub(crate) mod watch;

use std::collections::VecDeque;
use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use flate2::read::GzDecoder;

pub(crate) use crate::docker::logs::FileMark;
use crate::docker::logs::{Cursor, Frame, Position};
pub(crate) use watch::Watcher;
use watch::{Registration, Slot};

/// Bytes read from a file at a time. The buffer is let go when everything written is read:
/// an idle container costs no buffer (many idle containers, one busy host).
const CHUNK: usize = 64 * 1024;
/// The longest record kept: a 16 KiB message escaped as `\uXXXX` is about 100 KiB.
const MAX_RECORD: usize = 1024 * 1024;

/// Output that was not read: rotated away (or truncated) before anything read it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Lost {
    /// The last record delivered before the gap (ns), when known.
    pub(crate) after_ns: Option<i64>,
    /// The first record read after it (ns); `None` until one was read.
    pub(crate) before_ns: Option<i64>,
    /// Whole files known to be missing (0: at least the rest of one file).
    pub(crate) files: u64,
    pub(crate) why: &'static str,
}

/// Why the files cannot be read on.
#[derive(Debug, thiserror::Error)]
pub(crate) enum FilesError {
    #[error("cannot watch {}: {source}", dir.display())]
    Watch { dir: PathBuf, source: io::Error },
    #[error("cannot read {}: {source}", path.display())]
    Read { path: PathBuf, source: io::Error },
}

impl FilesError {
    /// The files cannot be read by this process (no root, no `CAP_DAC_READ_SEARCH`).
    pub(crate) fn is_permission(&self) -> bool {
        let (FilesError::Watch { source, .. } | FilesError::Read { source, .. }) = self;
        source.kind() == io::ErrorKind::PermissionDenied
    }

    /// The container's directory is gone (removed before it could be watched).
    pub(crate) fn is_gone(&self) -> bool {
        let (FilesError::Watch { source, .. } | FilesError::Read { source, .. }) = self;
        source.kind() == io::ErrorKind::NotFound
    }
}

/// What [`LogFiles::next`] found.
#[derive(Debug)]
pub(crate) enum Next {
    /// A record, and the position right after it.
    Frame(Frame, FileMark),
    /// Everything written so far is read: wait for [`LogFiles::changed`].
    Idle,
}

enum Src {
    Plain(File),
    Gz(Box<GzDecoder<File>>),
}

/// One file of the log, open.
struct Open {
    src: Src,
    path: PathBuf,
    /// Hash of its first line, once known.
    first_line: Option<u64>,
    /// Uncompressed bytes consumed: the end of the last whole record taken.
    offset: u64,
}

impl Open {
    /// A plain file; its first line is hashed when it is asked for ([`Open::first_line`]):
    /// one opened at its creation is empty yet.
    fn plain(file: File, path: PathBuf) -> Open {
        Open {
            src: Src::Plain(file),
            path,
            first_line: None,
            offset: 0,
        }
    }

    /// The hash of its first line, once it has one.
    fn first_line(&mut self) -> Option<u64> {
        if self.first_line.is_none()
            && let Src::Plain(f) = &self.src
        {
            self.first_line = first_line_hash(|b, at| f.read_at(b, at));
        }
        self.first_line
    }

    fn gz(file: File, path: PathBuf) -> io::Result<Open> {
        let mut peek = GzDecoder::new(&file);
        let first_line = first_line_hash(|b, _| peek.read(b));
        (&file).seek(SeekFrom::Start(0))?;
        Ok(Open {
            src: Src::Gz(Box::new(GzDecoder::new(file))),
            path,
            first_line,
            offset: 0,
        })
    }

    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match &mut self.src {
            Src::Plain(f) => f.read(buf),
            Src::Gz(d) => d.read(buf),
        }
    }

    /// Continues after `offset` bytes; false when the file is shorter.
    fn skip_to(&mut self, offset: u64) -> io::Result<bool> {
        let done = match &mut self.src {
            Src::Plain(f) => {
                if f.metadata()?.len() < offset {
                    false
                } else {
                    f.seek(SeekFrom::Start(offset))?;
                    true
                }
            }
            Src::Gz(d) => io::copy(&mut d.by_ref().take(offset), &mut io::sink())? == offset,
        };
        if done {
            self.offset = offset;
        }
        Ok(done)
    }

    /// The file shrank below what was read (truncated in place).
    fn truncated(&self) -> bool {
        match &self.src {
            Src::Plain(f) => f.metadata().is_ok_and(|m| m.len() < self.offset),
            Src::Gz(_) => false,
        }
    }
}

/// The hash of a file's first line; `read(buf, at)` reads the bytes from offset `at` on.
fn first_line_hash(mut read: impl FnMut(&mut [u8], u64) -> io::Result<usize>) -> Option<u64> {
    let (mut buf, mut len) = (Vec::new(), 0usize);
    loop {
        if let Some(nl) = memchr::memchr(b'\n', &buf[..len]) {
            return Some(crate::util::fnv1a(&buf[..nl]));
        }
        if len >= MAX_RECORD {
            return None;
        }
        buf.resize(len + 8192, 0);
        match read(&mut buf[len..], len as u64) {
            Ok(0) | Err(_) => return None,
            Ok(n) => len += n,
        }
    }
}

/// One container's log files, held from their first sight to the end of reading.
pub(crate) struct LogFiles {
    reg: Registration,
    current: Option<Open>,
    /// Files to read after `current`, oldest first.
    ahead: VecDeque<Open>,
    buf: Vec<u8>,
    pos: usize,
    len: usize,
    /// Frames at or before this cursor are passed over (a position from the logs endpoint).
    skip_to: Option<(Cursor, u64)>,
    lost: Vec<Lost>,
    /// The slot's dropped count already reported.
    dropped: u64,
    /// Records that were not the engine's.
    pub(crate) bad_records: u64,
}

impl LogFiles {
    /// Watches the log file `path` and opens every file of it that exists now (see the module
    /// doc). The container may not have started yet: its first file is opened when it appears.
    pub(crate) fn open(watcher: &Watcher, path: &Path) -> Result<LogFiles, FilesError> {
        let dir = path.parent().unwrap_or(Path::new("/")).to_path_buf();
        let reg = watcher.register(path).map_err(|source| FilesError::Watch {
            dir: dir.clone(),
            source,
        })?;
        let read_err = |path: &Path| {
            let path = path.to_path_buf();
            move |source| FilesError::Read { path, source }
        };
        let mut ahead = VecDeque::new();
        for (rotated, gz) in rotated_files(&dir, path).map_err(read_err(&dir))? {
            let file = match File::open(&rotated) {
                Ok(f) => f,
                // Rotated on meanwhile: the watcher holds what is newer.
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(read_err(&rotated)(e)),
            };
            ahead.push_back(if gz {
                Open::gz(file, rotated.clone()).map_err(read_err(&rotated))?
            } else {
                Open::plain(file, rotated)
            });
        }
        {
            let slot: &Slot = &reg.slot;
            let mut st = slot.lock();
            if let Some((f, ino)) = slot.open_current().map_err(read_err(path))? {
                // Its create may be queued still: that one is no file missed.
                if !st.opened.iter().any(|(_, i)| *i == ino) {
                    st.initial = Some(ino);
                }
                st.opened.retain(|(_, i)| *i != ino);
                st.newest = Some(ino);
                ahead.push_back(Open::plain(f, path.to_path_buf()));
            }
            for (f, _) in st.opened.drain(..) {
                ahead.push_back(Open::plain(f, path.to_path_buf()));
            }
        }
        Ok(LogFiles {
            reg,
            current: None,
            ahead,
            buf: Vec::new(),
            pos: 0,
            len: 0,
            skip_to: None,
            lost: Vec::new(),
            dropped: 0,
            bad_records: 0,
        })
    }

    /// Continues after `position` (see the module doc): at its file mark, or past its cursor.
    pub(crate) fn start_after(&mut self, position: &Position) -> Result<(), FilesError> {
        if let Some(mark) = position.file {
            let found = self
                .ahead
                .iter_mut()
                .position(|o| o.first_line() == Some(mark.first_line));
            match found {
                Some(i) => {
                    self.ahead.drain(..i);
                    let o = self.ahead.front_mut().expect("found");
                    let whole = o.skip_to(mark.offset).map_err(|source| FilesError::Read {
                        path: o.path.clone(),
                        source,
                    })?;
                    if !whole {
                        self.lost.push(Lost {
                            after_ns: position.cursor.map(|c| c.ts_ns),
                            before_ns: None,
                            files: 0,
                            why: "the log file is shorter than the position read (truncated)",
                        });
                    }
                }
                None => self.lost.push(Lost {
                    after_ns: position.cursor.map(|c| c.ts_ns),
                    before_ns: None,
                    files: 0,
                    why: "rotated away while dockwatch ship was not reading",
                }),
            }
        } else if let Some(c) = position.cursor {
            self.skip_to = Some((c, 0));
        }
        Ok(())
    }

    /// The next record, or [`Next::Idle`] at the end of what is written.
    pub(crate) fn next(&mut self) -> Result<Next, FilesError> {
        loop {
            let Some(cur) = &mut self.current else {
                self.take_opened();
                match self.ahead.pop_front() {
                    Some(o) => {
                        self.current = Some(o);
                        self.pos = 0;
                        self.len = 0;
                        continue;
                    }
                    None => return Ok(Next::Idle),
                }
            };
            if let Some(nl) = memchr::memchr(b'\n', &self.buf[self.pos..self.len]) {
                let line = &self.buf[self.pos..self.pos + nl];
                if cur.offset == 0 {
                    cur.first_line = Some(crate::util::fnv1a(line));
                }
                cur.offset += nl as u64 + 1;
                self.pos += nl + 1;
                let mark = FileMark {
                    first_line: cur.first_line.unwrap_or_default(),
                    offset: cur.offset,
                };
                let Ok(frame) = record::parse(line) else {
                    self.bad_records += 1;
                    continue;
                };
                if self.passed_over(&frame) {
                    continue;
                }
                for l in &mut self.lost {
                    l.before_ns.get_or_insert(frame.ts_ns);
                }
                return Ok(Next::Frame(frame, mark));
            }
            if self.fill()? {
                continue;
            }
            // The end of the current file: finished only when a newer one exists, and then
            // after one more read (it may have been written up to its close meanwhile).
            self.take_opened();
            if self.ahead.is_empty() {
                if self.current.as_ref().is_some_and(Open::truncated) {
                    self.restart_truncated()?;
                    continue;
                }
                // Ask for a wake-up at the next write, then look once more: what was written
                // before the watch was armed raised no event.
                self.reg.arm();
                if self.fill()? {
                    continue;
                }
                if self.len == self.pos {
                    self.buf = Vec::new();
                    (self.len, self.pos) = (0, 0);
                }
                return Ok(Next::Idle);
            }
            if self.fill()? {
                continue;
            }
            if self.len > self.pos {
                // A record torn by a crash of the engine: never completed.
                self.bad_records += 1;
            }
            self.current = None;
        }
    }

    /// Reads more of the current file; false at its end.
    fn fill(&mut self) -> Result<bool, FilesError> {
        let cur = self.current.as_mut().expect("a current file");
        if self.pos > 0 {
            self.buf.copy_within(self.pos..self.len, 0);
            self.len -= self.pos;
            self.pos = 0;
        }
        if self.len >= MAX_RECORD {
            // No newline in a megabyte: not the engine's; passed over.
            self.bad_records += 1;
            self.len = 0;
        }
        if self.buf.len() < self.len + CHUNK {
            self.buf.resize(self.len + CHUNK, 0);
        }
        let n = cur
            .read(&mut self.buf[self.len..])
            .map_err(|source| FilesError::Read {
                path: cur.path.clone(),
                source,
            })?;
        self.len += n;
        Ok(n > 0)
    }

    fn restart_truncated(&mut self) -> Result<(), FilesError> {
        let cur = self.current.as_mut().expect("a current file");
        self.lost.push(Lost {
            after_ns: None,
            before_ns: None,
            files: 0,
            why: "the log file was truncated before it was read to its end",
        });
        if let Src::Plain(f) = &mut cur.src {
            f.seek(SeekFrom::Start(0))
                .map_err(|source| FilesError::Read {
                    path: cur.path.clone(),
                    source,
                })?;
        }
        cur.offset = 0;
        cur.first_line = None;
        self.pos = 0;
        self.len = 0;
        Ok(())
    }

    /// Files the watcher opened since, after the ones already ahead.
    fn take_opened(&mut self) {
        let path = self.reg.slot.path().to_path_buf();
        let mut st = self.reg.slot.lock();
        for (f, _) in st.opened.drain(..) {
            self.ahead.push_back(Open::plain(f, path.clone()));
        }
        if st.dropped > self.dropped {
            self.lost.push(Lost {
                after_ns: None,
                before_ns: None,
                files: st.dropped - self.dropped,
                why: "rotated away before the watcher could hold it (it ran behind the rotations, or 256 files were waiting)",
            });
            self.dropped = st.dropped;
        }
    }

    /// A frame at or before the cursor being continued from.
    fn passed_over(&mut self, f: &Frame) -> bool {
        let Some((c, rank)) = &mut self.skip_to else {
            return false;
        };
        if f.ts_ns < c.ts_ns {
            return true;
        }
        if f.ts_ns == c.ts_ns && f.source == c.source && *rank < c.nth {
            *rank += 1;
            return true;
        }
        if f.ts_ns > c.ts_ns || f.source == c.source {
            self.skip_to = None;
        }
        false
    }

    /// Waits until the files changed (a write, a new file, a close, the directory removed).
    pub(crate) async fn changed(&self) {
        self.reg.slot.changed().await;
    }

    /// How often the engine closed the file so far, and whether the directory is gone.
    pub(crate) fn closes_and_gone(&self) -> (u64, bool) {
        let st = self.reg.slot.lock();
        (st.closes, st.gone)
    }

    /// Gaps found since the last call.
    pub(crate) fn take_lost(&mut self) -> Vec<Lost> {
        if self.lost.iter().any(|l| l.before_ns.is_none()) {
            return Vec::new();
        }
        std::mem::take(&mut self.lost)
    }

    /// Gaps found, also those no record was read after yet (at the end).
    pub(crate) fn take_all_lost(&mut self) -> Vec<Lost> {
        std::mem::take(&mut self.lost)
    }
}

/// The rotated files of `path` in `dir`, oldest first: `NAME.N` and `NAME.N.gz` (the plain one
/// when both exist: its compression is under way).
fn rotated_files(dir: &Path, path: &Path) -> io::Result<Vec<(PathBuf, bool)>> {
    let name = path.file_name().unwrap_or_default().to_string_lossy();
    let prefix = format!("{name}.");
    let mut found: Vec<(u32, bool, PathBuf)> = Vec::new();
    for e in std::fs::read_dir(dir)? {
        let e = e?;
        let file = e.file_name().to_string_lossy().into_owned();
        let Some(rest) = file.strip_prefix(&prefix) else {
            continue;
        };
        let (num, gz) = match rest.strip_suffix(".gz") {
            Some(n) => (n, true),
            None => (rest, false),
        };
        if let Ok(n) = num.parse::<u32>() {
            found.push((n, gz, e.path()));
        }
    }
    // Oldest (highest number) first; for one number, the plain file first.
    found.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
    found.dedup_by_key(|f| f.0);
    Ok(found.into_iter().map(|(_, gz, p)| (p, gz)).collect())
}

/// The `json-file` log of container `id` under the engine's root directory.
pub(crate) fn log_path(root: &Path, id: &str) -> PathBuf {
    root.join("containers")
        .join(id)
        .join(format!("{id}-json.log"))
}

#[cfg(test)]
mod tests;
