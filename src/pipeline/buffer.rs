//! The attach path's disk buffer: the container's output read from the engine's attach
//! stream as fast as it arrives, kept on local disk until the reader frames it.
//!
//! Why: the attach stream is the engine's cheapest way out (about a third of the engine CPU
//! of following the logs endpoint, `../shared/notes/engine-read-paths.md`), but it is not a
//! buffer: a client that stops reading holds up the container's writes. So a thread of its
//! own ([`Pump`]) reads it and only appends here, never waiting for the reader, the shipper
//! or CloudWatch; the reader takes records from here at its own pace.
//!
//! Format: a directory per container, `STATE_DIR/buffer/<container id>/`, of segment files
//! `<n>.seg` (n = 1, 2, ...) of at most [`SEGMENT_BYTES`], each a run of records: a 16-byte
//! header (data length `u32` LE, source `u8` (1 stdout, 2 stderr), 3 zero bytes, receive
//! time `i64` LE in ns since the epoch) and the data, the bytes of one attach frame.
//!
//! Invariants and budget: the writer only appends; the reader reads records in the order
//! they were written and deletes a segment as soon as it has read past it. Bytes on disk
//! (every segment not yet deleted) never exceed the budget (`--buffer-size`), and a segment
//! is not started when the file system has less than [`FREE_FLOOR`] free. When the next
//! record does not fit (or a write fails) the buffer ends with [`End::Full`]: the pump drops
//! the attach connection (the container goes on writing into the engine's log, never
//! waiting) and the reader, once it has read everything before that point, goes on from the
//! engine's log (see `reader`).
//!
//! Durability (fsync policy): none, on purpose. The engine's `json-file` log holds the same
//! bytes and stays the source of truth: positions are counted in the log's messages
//! (`docker::messages`), so after a crash `dockwatch resume` reads the log from the
//! checkpoint and this directory is deleted unread. The buffer only has to be fast, bounded
//! and in order while its process lives; records in the page cache are enough for that. A
//! segment the reader finishes is deleted before the kernel would normally write it back,
//! so in a run that keeps up nothing reaches the disk at all.

use std::collections::VecDeque;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use bytes::{Bytes, BytesMut};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::docker::{DockerError, Source};

/// Largest segment file.
pub(crate) const SEGMENT_BYTES: u64 = 32 * 1024 * 1024;
/// A new segment is not started on a file system with less free space than this.
pub(crate) const FREE_FLOOR: u64 = 256 * 1024 * 1024;
const HEADER: usize = 16;
/// Bytes the reader asks the file for at once.
const READ_AHEAD: usize = 256 * 1024;

/// One attach frame as received.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Record {
    pub(crate) source: Source,
    /// When the pump received it, in ns since the epoch.
    pub(crate) ts_ns: i64,
    pub(crate) data: Bytes,
}

/// Why the buffer takes no more records.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum End {
    /// The attach stream ended: the container's output is complete.
    Complete,
    /// The budget (or the file system) is full, or a write failed: the rest is in the
    /// engine's log only.
    Full(String),
    /// The attach stream broke (engine restart, connection error).
    Broken(String),
    /// The pump was told to stop.
    Stopped,
}

#[derive(Debug)]
struct Segment {
    n: u64,
    len: u64,
}

#[derive(Debug, Default)]
struct State {
    /// Segments on disk, oldest first; the last one is being written.
    segments: VecDeque<Segment>,
    ended: Option<End>,
}

struct Shared {
    state: Mutex<State>,
    wrote: Notify,
}

fn segment_path(dir: &Path, n: u64) -> PathBuf {
    dir.join(format!("{n}.seg"))
}

/// The buffer directory of container `id` beside the checkpoints in `state_dir`.
pub(crate) fn dir(state_dir: &Path, id: &str) -> PathBuf {
    state_dir.join("buffer").join(id)
}

/// Creates an empty buffer in `dir` (anything there before is deleted).
pub(crate) fn create(dir: &Path, budget: u64) -> std::io::Result<(Writer, Reader)> {
    remove(dir);
    std::fs::create_dir_all(dir)?;
    let shared = Arc::new(Shared {
        state: Mutex::new(State::default()),
        wrote: Notify::new(),
    });
    let writer = Writer {
        dir: dir.to_path_buf(),
        shared: shared.clone(),
        file: None,
        len: 0,
        next: 1,
        budget,
        scratch: Vec::new(),
        ended: false,
    };
    let reader = Reader {
        dir: dir.to_path_buf(),
        shared,
        file: None,
        at: 0,
        pending: BytesMut::new(),
        read_bytes: 0,
    };
    Ok((writer, reader))
}

/// Deletes a buffer directory (a crashed run's, or one read to its end), and the `buffer`
/// directory above it when no other run's is left there.
pub(crate) fn remove(dir: &Path) {
    let _ = std::fs::remove_dir_all(dir);
    if let Some(parent) = dir.parent() {
        let _ = std::fs::remove_dir(parent);
    }
}

/// The appending side (the pump's).
pub(crate) struct Writer {
    dir: PathBuf,
    shared: Arc<Shared>,
    /// The segment being written, and the bytes in it.
    file: Option<File>,
    len: u64,
    next: u64,
    budget: u64,
    scratch: Vec<u8>,
    ended: bool,
}

impl Writer {
    /// Appends one record, or says why the buffer ended (then it takes no more).
    pub(crate) fn append(&mut self, source: Source, ts_ns: i64, data: &[u8]) -> Result<(), End> {
        let rec = (HEADER + data.len()) as u64;
        let on_disk: u64 = {
            let st = self.shared.state.lock().expect("buffer lock");
            st.segments.iter().map(|s| s.len).sum()
        };
        if on_disk + rec > self.budget {
            return Err(self.end(End::Full(format!(
                "the disk buffer reached its --buffer-size ({} MiB)",
                self.budget >> 20
            ))));
        }
        if (self.file.is_none() || self.len + rec > SEGMENT_BYTES)
            && let Err(why) = self.roll()
        {
            return Err(self.end(End::Full(why)));
        }
        self.scratch.clear();
        self.scratch
            .extend_from_slice(&(data.len() as u32).to_le_bytes());
        self.scratch.push(match source {
            Source::Stdout => 1,
            Source::Stderr => 2,
        });
        self.scratch.extend_from_slice(&[0; 3]);
        self.scratch.extend_from_slice(&ts_ns.to_le_bytes());
        self.scratch.extend_from_slice(data);
        let file = self.file.as_ref().expect("a segment is open");
        if let Err(e) = file.write_all_at(&self.scratch, self.len) {
            return Err(self.end(End::Full(format!("cannot write the disk buffer: {e}"))));
        }
        self.len += rec;
        if let Some(s) = self
            .shared
            .state
            .lock()
            .expect("buffer lock")
            .segments
            .back_mut()
        {
            s.len = self.len;
        }
        self.shared.wrote.notify_one();
        Ok(())
    }

    /// Starts the next segment file.
    fn roll(&mut self) -> Result<(), String> {
        if let Some(free) = free_space(&self.dir)
            && free < FREE_FLOOR + SEGMENT_BYTES
        {
            return Err(format!(
                "the file system of {} has only {} MiB free",
                self.dir.display(),
                free >> 20
            ));
        }
        let n = self.next;
        let file = File::create(segment_path(&self.dir, n)).map_err(|e| {
            format!(
                "cannot create the disk buffer in {}: {e}",
                self.dir.display()
            )
        })?;
        self.next += 1;
        self.file = Some(file);
        self.len = 0;
        let mut st = self.shared.state.lock().expect("buffer lock");
        st.segments.push_back(Segment { n, len: 0 });
        Ok(())
    }

    /// No more records; `why` tells the reader what follows.
    pub(crate) fn end(&mut self, why: End) -> End {
        if !self.ended {
            self.ended = true;
            self.file = None;
            self.shared.state.lock().expect("buffer lock").ended = Some(why.clone());
            self.shared.wrote.notify_one();
        }
        why
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        self.end(End::Stopped);
    }
}

/// Free bytes for an unprivileged user on the file system of `dir`.
fn free_space(dir: &Path) -> Option<u64> {
    use std::os::unix::ffi::OsStrExt;
    let path = std::ffi::CString::new(dir.as_os_str().as_bytes()).ok()?;
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: `path` is a valid C string and `st` a writable statvfs.
    let rc = unsafe { libc::statvfs(path.as_ptr(), &mut st) };
    (rc == 0).then(|| st.f_bavail as u64 * st.f_frsize as u64)
}

/// The reading side (the reader task's).
pub(crate) struct Reader {
    dir: PathBuf,
    shared: Arc<Shared>,
    /// The segment being read and its number.
    file: Option<(File, u64)>,
    /// Bytes of that segment read from the file.
    at: u64,
    /// Bytes read but not yet returned as records.
    pending: BytesMut,
    read_bytes: u64,
}

impl Reader {
    /// The next record in write order; waits for the pump. `Err` once every record was read
    /// and the buffer ended, with why.
    pub(crate) async fn next(&mut self) -> Result<Record, End> {
        loop {
            if let Some(rec) = self.parse() {
                return Ok(rec);
            }
            match self.fill() {
                Ok(true) => continue,
                Ok(false) => {}
                Err(end) => return Err(end),
            }
            self.shared.wrote.notified().await;
        }
    }

    /// Output bytes read so far.
    #[cfg(test)]
    pub(crate) fn bytes_read(&self) -> u64 {
        self.read_bytes
    }

    fn parse(&mut self) -> Option<Record> {
        if self.pending.len() < HEADER {
            return None;
        }
        let len = u32::from_le_bytes(self.pending[0..4].try_into().expect("4 bytes")) as usize;
        if self.pending.len() < HEADER + len {
            return None;
        }
        let source = if self.pending[4] == 2 {
            Source::Stderr
        } else {
            Source::Stdout
        };
        let ts_ns = i64::from_le_bytes(self.pending[8..16].try_into().expect("8 bytes"));
        let _ = self.pending.split_to(HEADER);
        self.read_bytes += len as u64;
        Some(Record {
            source,
            ts_ns,
            data: self.pending.split_to(len).freeze(),
        })
    }

    /// Reads more of the segments: `Ok(true)` when bytes came, `Ok(false)` when the reader
    /// must wait for the pump, `Err` when everything was read and the buffer ended.
    fn fill(&mut self) -> Result<bool, End> {
        loop {
            let (front, moved_on, ended) = {
                let st = self.shared.state.lock().expect("buffer lock");
                let front = st.segments.front().map(|s| (s.n, s.len));
                (front, st.segments.len() > 1, st.ended.clone())
            };
            let Some((n, len)) = front else {
                return match ended {
                    Some(end) => Err(end),
                    None => Ok(false),
                };
            };
            if self.file.as_ref().is_none_or(|f| f.1 != n) {
                match File::open(segment_path(&self.dir, n)) {
                    Ok(f) => self.file = Some((f, n)),
                    Err(e) => return Err(End::Full(format!("cannot read the disk buffer: {e}"))),
                }
                self.at = 0;
            }
            if self.at < len {
                let want = ((len - self.at) as usize).min(READ_AHEAD);
                let start = self.pending.len();
                self.pending.resize(start + want, 0);
                let (f, _) = self.file.as_ref().expect("open");
                match f.read_exact_at(&mut self.pending[start..], self.at) {
                    Ok(()) => {
                        self.at += want as u64;
                        return Ok(true);
                    }
                    Err(e) => {
                        self.pending.truncate(start);
                        return Err(End::Full(format!("cannot read the disk buffer: {e}")));
                    }
                }
            }
            // Everything written to this segment is read: done with it once the writer has
            // moved on (or ended).
            if !moved_on && ended.is_none() {
                return Ok(false);
            }
            {
                let mut st = self.shared.state.lock().expect("buffer lock");
                // The writer may have appended since: read that first.
                if st.segments.front().is_some_and(|s| s.len > self.at) {
                    continue;
                }
                st.segments.pop_front();
            }
            self.file = None;
            let _ = std::fs::remove_file(segment_path(&self.dir, n));
        }
    }
}

/// The attach path of one container: the pump filling the buffer and the reader's end of it.
/// Dropping it stops the pump and deletes the buffer.
pub(crate) struct Attached {
    pub(crate) reader: Reader,
    pump: Pump,
    dir: PathBuf,
}

impl Drop for Attached {
    fn drop(&mut self) {
        self.pump.join();
        remove(&self.dir);
    }
}

impl Attached {
    /// Attaches to container `id` (call before starting it) with a buffer of `budget` bytes
    /// in `dir`. `None` when the engine is not on a Unix socket (the pump reads the socket
    /// itself): such runs read the logs endpoint.
    pub(crate) async fn start(
        docker: &bollard::Docker,
        id: &str,
        tty: bool,
        dir: &Path,
        budget: u64,
    ) -> Result<Option<Self>, DockerError> {
        let Some(socket) = crate::docker::logs::unix_socket() else {
            return Ok(None);
        };
        let (writer, reader) = create(dir, budget).map_err(|e| DockerError::Api {
            context: "create the disk buffer".into(),
            reason: format!("{}: {e}", dir.display()),
        })?;
        let v = docker.client_version();
        let path = format!(
            "/v{}.{}/containers/{id}/attach?stream=1&stdout=1&stderr=1",
            v.major_version, v.minor_version
        );
        match Pump::attach(socket, path, tty, writer).await {
            Ok(pump) => Ok(Some(Attached {
                reader,
                pump,
                dir: dir.to_path_buf(),
            })),
            Err(e) => {
                remove(dir);
                Err(e)
            }
        }
    }
}

/// Reads the attach stream into a [`Writer`] on a thread of its own (see the module doc).
/// Stopped (and joined) when dropped.
pub(crate) struct Pump {
    stop: CancellationToken,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Pump {
    /// Attaches to the container's output through the engine's Unix socket `socket` and
    /// starts pumping; returns once the engine accepted the attach (call it before starting
    /// the container, so that no byte is missed).
    pub(crate) async fn attach(
        socket: String,
        path: String,
        tty: bool,
        mut writer: Writer,
    ) -> Result<Self, DockerError> {
        let stop = CancellationToken::new();
        let (attached_tx, attached_rx) = tokio::sync::oneshot::channel();
        let on_thread = stop.clone();
        let thread = std::thread::Builder::new()
            .name("dockwatch-attach".into())
            .spawn(move || {
                let rt = match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(rt) => rt,
                    Err(e) => {
                        let _ = attached_tx.send(Err(DockerError::Api {
                            context: "attach to the container".into(),
                            reason: format!("cannot start the attach thread's runtime: {e}"),
                        }));
                        return;
                    }
                };
                rt.block_on(async move {
                    let raw = crate::docker::raw_logs::RawLogs::attach(&socket, &path, tty).await;
                    let mut raw = match raw {
                        Ok(raw) => {
                            let _ = attached_tx.send(Ok(()));
                            raw
                        }
                        Err(e) => {
                            let _ = attached_tx.send(Err(e));
                            return;
                        }
                    };
                    pump(&mut raw, &mut writer, &on_thread).await;
                });
            })
            .map_err(|e| DockerError::Api {
                context: "attach to the container".into(),
                reason: format!("cannot start the attach thread: {e}"),
            })?;
        let mut pump = Pump {
            stop,
            thread: Some(thread),
        };
        match attached_rx.await {
            Ok(Ok(())) => Ok(pump),
            Ok(Err(e)) => Err(e),
            Err(_) => {
                pump.join();
                Err(DockerError::Api {
                    context: "attach to the container".into(),
                    reason: "the attach thread ended".into(),
                })
            }
        }
    }

    fn join(&mut self) {
        self.stop.cancel();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Pump {
    fn drop(&mut self) {
        self.join();
    }
}

async fn pump(
    raw: &mut crate::docker::raw_logs::RawLogs,
    writer: &mut Writer,
    stop: &CancellationToken,
) {
    loop {
        let item = tokio::select! {
            item = raw.next() => item,
            () = stop.cancelled() => { writer.end(End::Stopped); return; }
        };
        match item {
            Some(Ok((source, data))) => {
                if writer.append(source, now_ns(), &data).is_err() {
                    return;
                }
            }
            Some(Err(e)) => {
                writer.end(End::Broken(e.to_string()));
                return;
            }
            None => {
                writer.end(End::Complete);
                return;
            }
        }
    }
}

fn now_ns() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as i64)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir(name: &str) -> PathBuf {
        let d =
            std::env::temp_dir().join(format!("dockwatch-buffer-{}-{name}", std::process::id()));
        remove(&d);
        d
    }

    fn segments(d: &Path) -> usize {
        std::fs::read_dir(d).map_or(0, |r| r.count())
    }

    #[tokio::test]
    async fn records_come_back_in_order_and_read_segments_go() {
        let d = dir("order");
        let (mut w, mut r) = create(&d, u64::MAX).unwrap();
        let big = vec![7u8; 1024 * 1024];
        for i in 0..70u8 {
            let source = if i % 3 == 0 {
                Source::Stderr
            } else {
                Source::Stdout
            };
            let mut data = big.clone();
            data[0] = i;
            w.append(source, i as i64, &data).unwrap();
        }
        w.end(End::Complete);
        assert!(segments(&d) >= 3, "1 MiB records fill 32 MiB segments");
        for i in 0..70u8 {
            let rec = r.next().await.unwrap();
            assert_eq!(
                (rec.ts_ns, rec.data[0], rec.data.len()),
                (i as i64, i, big.len())
            );
            assert_eq!(rec.source == Source::Stderr, i % 3 == 0);
        }
        assert_eq!(r.next().await, Err(End::Complete));
        assert_eq!(segments(&d), 0, "every segment read is deleted");
        assert_eq!(r.bytes_read(), 70 * big.len() as u64);
        remove(&d);
    }

    #[tokio::test]
    async fn the_budget_ends_the_buffer_and_what_was_written_is_still_read() {
        let d = dir("budget");
        let (mut w, mut r) = create(&d, 10_000).unwrap();
        let mut n = 0;
        let end = loop {
            match w.append(Source::Stdout, n, &[b'x'; 1000]) {
                Ok(()) => n += 1,
                Err(end) => break end,
            }
        };
        assert!(matches!(end, End::Full(_)), "{end:?}");
        assert_eq!(n, 9, "9 records of 1016 bytes fit in 10000");
        for i in 0..n {
            assert_eq!(r.next().await.unwrap().ts_ns, i);
        }
        assert!(matches!(r.next().await, Err(End::Full(_))));
        remove(&d);
    }

    #[tokio::test]
    async fn reading_frees_the_budget_for_later_records() {
        let d = dir("frees");
        // Room for two segments' worth: records keep fitting while the reader keeps up.
        let (mut w, mut r) = create(&d, 2 * SEGMENT_BYTES + 1024).unwrap();
        let chunk = vec![1u8; 4 * 1024 * 1024];
        for i in 0..40 {
            w.append(Source::Stdout, i, &chunk).unwrap();
            assert_eq!(r.next().await.unwrap().ts_ns, i);
        }
        drop(w);
        assert_eq!(r.next().await, Err(End::Stopped));
        remove(&d);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_reader_waits_for_a_writer_on_another_thread() {
        let d = dir("wait");
        let (mut w, mut r) = create(&d, u64::MAX).unwrap();
        let t = std::thread::spawn(move || {
            for i in 0..1000 {
                w.append(Source::Stdout, i, format!("{i}\n").as_bytes())
                    .unwrap();
                if i % 100 == 0 {
                    std::thread::sleep(std::time::Duration::from_millis(5));
                }
            }
            w.end(End::Complete);
        });
        for i in 0..1000 {
            let rec = r.next().await.unwrap();
            assert_eq!(rec.data, Bytes::from(format!("{i}\n")));
        }
        assert_eq!(r.next().await, Err(End::Complete));
        t.join().unwrap();
        remove(&d);
    }
}
