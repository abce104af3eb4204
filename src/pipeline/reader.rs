//! The reader task: the container's output, echoed to the terminal and cut into events,
//! sent to the shipper over a bounded channel.
//!
//! Two read paths, one framing state:
//! - **attach** (the default, when the engine is on a Unix socket): records from the disk
//!   buffer the attach pump fills (`buffer`), cut into the engine's own log messages
//!   (`docker::messages`) so that positions count the log's messages. When the buffer ends
//!   early (its budget full, the attach stream broken) the reader goes on from the engine's
//!   log right after the last message it took; framing state carries over, so nothing is
//!   lost or repeated at the switch.
//! - **files** (`dockwatch ship`, where the engine's `json-file` log can be read): the
//!   engine's own log files, held open from the container's creation and followed through
//!   rotation (`docker::files`); positions carry the file mark besides the counted messages
//!   and the cursor, so a read error there goes on through the logs endpoint after the
//!   cursor. The end: the engine closed the file and the container has ended (exited, dead,
//!   removed), and the held files are read to their end; a removed container's files are
//!   still read to their end through the open descriptors.
//! - **logs** (`--read-path logs`, resume, after a switch): it follows the logs endpoint until
//!   the container exits, reopening the stream after the last frame it had when the
//!   connection breaks (engine restart). When the follow stream ends it reads the end of the
//!   log once more, after that same frame, because the engine can leave out a last line that
//!   has no newline in follow mode (moby#43860).
//!
//! Timestamps: on the attach path an event's timestamp is when the pump received its bytes;
//! on the logs path, when the engine's log copier read them. Both are wall-clock times of the
//! Docker host, a fraction of a millisecond apart in a run that keeps up.

use crate::util::sleep_until;
use bollard::Docker;
use futures_util::{FutureExt, StreamExt};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use bytes::Bytes;

use crate::docker::attach::Tap;
use crate::docker::files::{self, FileMark, LogFiles, Lost};
use crate::docker::logs::{self, CursorTracker, Frame, Position, ReadPlan, Skip};
use crate::docker::messages::{self, Messages};
use crate::docker::{DockerError, container, short_id};
use crate::pipeline::buffer::{Attached, End};
use crate::pipeline::echo::EchoTx;
use crate::pipeline::framing::{Event, Framer, FramingStats, Source};
use crate::pipeline::transform::{TransformConfig, Transforms};
use crate::util::backoff::Backoff;

/// U+FFFD, counted in what the engine's log holds (one searcher for the process).
static REPLACEMENT: std::sync::LazyLock<memchr::memmem::Finder<'static>> =
    std::sync::LazyLock::new(|| memchr::memmem::Finder::new("\u{FFFD}"));

/// Events per message on the channel, at most.
const SEND_EVENTS: usize = 512;
/// Bytes per message on the channel, about.
const SEND_BYTES: usize = 256 * 1024;
/// Echo buffer size before it is written out.
const ECHO_BYTES: usize = 64 * 1024;
/// How many times a broken log stream is reopened before giving up.
const MAX_RECONNECTS: u32 = 30;
/// How often a quiet follow stream checks that its container still exists: the engine
/// (20.10) never ends the follow stream of a container removed with `docker rm -f`.
const GONE_CHECK: std::time::Duration = std::time::Duration::from_secs(1);

/// What the reader hands to the shipper: events, and, when the framer held no partial line
/// after the last of them, the position right after them (a point to resume from).
#[derive(Debug, Default)]
pub(crate) struct Chunk {
    pub(crate) events: Vec<Event>,
    pub(crate) boundary: Option<Position>,
}

/// What the reader did.
#[derive(Debug, Default)]
pub(crate) struct ReaderReport {
    /// Frames read from the engine.
    pub(crate) frames: u64,
    /// Bytes of output read.
    pub(crate) bytes: u64,
    /// What framing had to do.
    pub(crate) framing: FramingStats,
    /// How far reading got: every message up to here was framed.
    pub(crate) position: Position,
    /// Events made but not handed to the shipper (when stopped early).
    pub(crate) unsent: Vec<Event>,
    /// Why reading ended early, if it did.
    pub(crate) error: Option<DockerError>,
    /// Stopped by `stop` before the end of the output.
    pub(crate) stopped: bool,
    /// Stopped with part of a line framed: the log's next bytes complete an event.
    pub(crate) partial: bool,
    /// `--invalid-utf8 escape`: frames shipped as the engine stored them, and why.
    pub(crate) tap_fallback: Option<(u64, String)>,
    /// Output bytes read through the attach path.
    pub(crate) attached_bytes: u64,
    /// Why the attach path handed over to the engine's log before the output ended.
    pub(crate) switched: Option<String>,
    /// U+FFFD characters in what was read from the engine's log: invalid bytes, or halves
    /// of a character its 16 KiB split cut, as the engine stored them (or a genuine U+FFFD).
    pub(crate) replaced_in_log: u64,
    /// The files path read the container's log to its end (it may have been removed since).
    pub(crate) read_to_end: bool,
    /// Output the files path found rotated away unread.
    pub(crate) lost: Vec<Lost>,
    /// Records of the log files that were not the engine's (torn by a crash), passed over.
    pub(crate) bad_records: u64,
}

/// Told each gap the files path finds, when it finds it.
pub(crate) type OnLost = std::sync::Arc<dyn Fn(&Lost) + Send + Sync>;

/// The files path: the container's log files, held open already.
pub(crate) struct FilesStart {
    pub(crate) files: LogFiles,
    pub(crate) on_lost: OnLost,
}

/// Settings of the reader.
pub(crate) struct ReaderConfig {
    pub(crate) docker: Docker,
    pub(crate) container_id: String,
    /// Echo the output on our stdout/stderr (never waiting for them).
    pub(crate) echo: Option<EchoTx>,
    /// Largest message in bytes.
    pub(crate) max_message_bytes: usize,
    /// Start after this position (resume), or at the beginning.
    pub(crate) start: Position,
    /// Optional transforms (strip ANSI, multi-line, JSON).
    pub(crate) transforms: TransformConfig,
    /// The raw bytes from the attach stream (`--invalid-utf8 escape` on the logs path).
    pub(crate) tap: Option<Tap>,
    /// The attach path: read from its buffer first.
    pub(crate) attached: Option<Attached>,
    /// The files path (`dockwatch ship`).
    pub(crate) files: Option<FilesStart>,
}

struct State {
    framer: Framer,
    transforms: Transforms,
    /// Framed events on their way through the transforms.
    scratch: Vec<Event>,
    pending: Vec<Event>,
    pending_bytes: usize,
    echo: Option<(Vec<u8>, Vec<u8>, EchoTx)>,
    /// The last frame read from the log (skipped ones too): where a broken stream reopens.
    cursor: CursorTracker,
    /// Messages of the log still to pass over (a start from counted messages).
    skip: Skip,
    /// Gives each frame its raw bytes back (`--invalid-utf8 escape`).
    tap: Option<Tap>,
    /// The latest clean position not yet sent.
    boundary: Option<Position>,
    report: ReaderReport,
}

/// The channel closed: the shipper stopped.
struct Closed;

impl State {
    /// One frame of the engine's log.
    async fn process(&mut self, mut frame: Frame, tx: &mpsc::Sender<Chunk>) -> Result<(), Closed> {
        self.cursor.advance(&frame);
        if self.skip.take(frame.source) {
            return Ok(());
        }
        if let Some(tap) = &mut self.tap {
            frame.data = tap.restore(&frame).await;
        } else {
            self.report.replaced_in_log += REPLACEMENT.find_iter(&frame.data).count() as u64;
        }
        self.take(frame.source, frame.ts_ms(), &frame.data);
        self.report.position.cursor = self.cursor.cursor();
        self.report.position.count(frame.source, 1);
        self.end_of_messages(tx).await
    }

    /// One record of the engine's log files, and the file position after it.
    async fn process_file(
        &mut self,
        frame: Frame,
        mark: FileMark,
        tx: &mpsc::Sender<Chunk>,
    ) -> Result<(), Closed> {
        self.report.position.file = Some(mark);
        self.process(frame, tx).await
    }

    /// Whole messages from the attach path: `pieces` are their bytes, `count` how many.
    async fn process_attached(
        &mut self,
        source: Source,
        ts_ns: i64,
        pieces: &mut Vec<Bytes>,
        count: u64,
        tx: &mpsc::Sender<Chunk>,
    ) -> Result<(), Closed> {
        for piece in pieces.drain(..) {
            self.report.attached_bytes += piece.len() as u64;
            self.take(source, ts_ns.div_euclid(1_000_000), &piece);
        }
        self.report.position.count(source, count);
        self.end_of_messages(tx).await
    }

    /// Echoes and frames output bytes.
    fn take(&mut self, source: Source, ts_ms: i64, data: &[u8]) {
        if let Some((out, err, _)) = &mut self.echo {
            match source {
                Source::Stdout => out.extend_from_slice(data),
                Source::Stderr => err.extend_from_slice(data),
            }
            if out.len() + err.len() > ECHO_BYTES {
                self.flush_echo();
            }
        }
        self.report.frames += 1;
        self.report.bytes += data.len() as u64;
        self.pending_bytes += data.len();
        self.framer.push(source, ts_ms, data, &mut self.scratch);
        if !self.scratch.is_empty() {
            if self.transforms.is_noop() {
                // Per frame on the logs and files paths: no allocation, no clock.
                self.pending.append(&mut self.scratch);
            } else {
                let events = std::mem::take(&mut self.scratch);
                self.transforms
                    .apply(events, std::time::Instant::now(), &mut self.pending);
            }
        }
    }

    /// After whole messages: a clean position is a boundary; enough events go out.
    async fn end_of_messages(&mut self, tx: &mpsc::Sender<Chunk>) -> Result<(), Closed> {
        if self.framer.is_clean() && self.transforms.is_clean() {
            self.boundary = Some(self.report.position);
        }
        if self.pending.len() >= SEND_EVENTS || self.pending_bytes >= SEND_BYTES {
            self.send(tx).await?;
        }
        Ok(())
    }

    async fn send(&mut self, tx: &mpsc::Sender<Chunk>) -> Result<(), Closed> {
        self.pending_bytes = 0;
        if self.pending.is_empty() && self.boundary.is_none() {
            return Ok(());
        }
        let chunk = Chunk {
            events: std::mem::take(&mut self.pending),
            boundary: self.boundary.take(),
        };
        tx.send(chunk).await.map_err(|e| {
            self.report.unsent = e.0.events;
            Closed
        })
    }

    fn is_gone(&self) -> bool {
        matches!(self.report.error, Some(DockerError::ContainerGone { .. }))
    }

    /// Hands the buffered output to the echo thread (see [`super::echo`]): never waits.
    fn flush_echo(&mut self) {
        if let Some((out, err, tx)) = &mut self.echo {
            if !out.is_empty() {
                tx.write(Source::Stdout, std::mem::take(out));
            }
            if !err.is_empty() {
                tx.write(Source::Stderr, std::mem::take(err));
            }
        }
    }

    /// Everything read so far goes out (when the stream waits, and at the end).
    async fn flush(&mut self, tx: &mpsc::Sender<Chunk>) -> Result<(), Closed> {
        self.flush_echo();
        self.send(tx).await
    }

    /// The output ended (or the container is gone): what is still framed goes to the
    /// shipper, a last line without its newline too.
    async fn end(mut self, tx: &mpsc::Sender<Chunk>) -> ReaderReport {
        self.framer.finish(&mut self.scratch);
        let events = std::mem::take(&mut self.scratch);
        self.transforms
            .apply(events, std::time::Instant::now(), &mut self.pending);
        self.transforms.finish(&mut self.pending);
        let stopped = self.flush(tx).await.is_err();
        self.finish(stopped)
    }

    fn finish(mut self, stopped: bool) -> ReaderReport {
        self.report.framing = self.framer.stats;
        self.report.stopped = stopped;
        if let Some(tap) = &self.tap
            && let Some(why) = tap.off_reason()
        {
            self.report.tap_fallback = Some((tap.fallback_frames, why.to_string()));
        }
        if stopped {
            self.report.partial = !self.framer.is_clean();
            self.transforms.finish(&mut self.pending);
            self.report.unsent.append(&mut self.pending);
        }
        self.report
    }
}

/// Bytes of each source's end kept to confirm, when the attach stream ends, that it
/// delivered all the engine's log holds.
const TAIL_BYTES: usize = 64 * 1024;

/// How long a container may still run after its attach stream ended before the end counts
/// as a broken stream.
const EXIT_AFTER_EOF: std::time::Duration = std::time::Duration::from_secs(3);

/// The last bytes of one source's whole messages read on the attach path.
#[derive(Default)]
struct Tail {
    kept: bytes::BytesMut,
    /// Bytes were dropped from the front: the kept ones may start inside a message.
    cut: bool,
}

impl Tail {
    fn push(&mut self, b: &[u8]) {
        if b.len() >= TAIL_BYTES {
            self.kept.clear();
            self.kept.extend_from_slice(&b[b.len() - TAIL_BYTES..]);
            self.cut = true;
            return;
        }
        self.kept.extend_from_slice(b);
        if self.kept.len() > 2 * TAIL_BYTES {
            let _ = self.kept.split_to(self.kept.len() - TAIL_BYTES);
            self.cut = true;
        }
    }

    /// The kept bytes, then `held` (the unfinished message), as the engine's log stores
    /// them, from the first message start the kept bytes hold on: its replacement is per
    /// message, so where messages start matters (a character its 16 KiB cut splits is two
    /// halves there). `None` when no message start is known (one line longer than what is
    /// kept).
    fn as_engine_stores(&self, held: &[u8]) -> Option<Vec<u8>> {
        let all = [&self.kept[..], held].concat();
        let start = if self.cut {
            memchr::memchr(b'\n', &all)? + 1
        } else {
            0
        };
        Some(
            messages::each(&all[start..])
                .flat_map(crate::docker::attach::as_engine_stores)
                .collect(),
        )
    }
}

/// Whether the attach stream delivered everything: when it ends, the engine cannot tell a
/// container that exited from a connection that broke (an engine restart, a proxy), so the
/// container must have exited and the last messages of each source in the engine's log (a
/// `tail` read, cheap: the engine reads its log backwards) must end what was read (`ours`:
/// the kept end of each source and its unfinished message, as the log stores them).
/// `Err(why)` when they do not, or when it cannot be told (a source missing from the window):
/// then the rest is read from the log, after the messages counted.
async fn confirm_end(docker: &Docker, id: &str, ours: [Option<Vec<u8>>; 2]) -> Result<(), String> {
    let [Some(out), Some(err)] = ours else {
        return Err("the end of the output is one line longer than what is kept to compare".into());
    };
    let ours = [out, err];
    // The engine closes the attach stream when the container's output closes, a moment
    // before it records the exit.
    let deadline = tokio::time::Instant::now() + EXIT_AFTER_EOF;
    loop {
        match container::exit_code(docker, id).await {
            Ok(Some(_)) => break,
            Ok(None) if tokio::time::Instant::now() < deadline => {
                tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            }
            Ok(None) => {
                return Err("the attach stream ended while the container still runs".into());
            }
            Err(e) => return Err(format!("the attach stream ended and {e}")),
        }
    }
    // Wider windows when one source's end is not in the last messages (the other one kept
    // writing after it), each cheap beside reading the whole log.
    for window in [64u64, 4096, 262_144] {
        let plan = ReadPlan {
            follow: false,
            tail: Some(window),
        };
        let (mut frames, _) = logs::open(docker, id, plan, None);
        let mut ends = [Tail::default(), Tail::default()];
        let mut count = 0u64;
        while let Some(item) = frames.next().await {
            let f = item.map_err(|e| format!("cannot read the end of the engine's log: {e}"))?;
            ends[f.source.index()].push(&f.data);
            count += 1;
        }
        let theirs = ends.map(|t| t.kept);
        let whole_log = count < window;
        let mut unseen = false;
        for (ours, theirs) in ours.iter().zip(&theirs) {
            if theirs.is_empty() {
                if ours.is_empty() {
                    continue;
                }
                if whole_log {
                    return Err(
                        "the engine's log does not end with what the attach stream delivered"
                            .into(),
                    );
                }
                unseen = true;
                continue;
            }
            let theirs = &theirs[theirs.len().saturating_sub(ours.len())..];
            if !ours.ends_with(theirs) {
                return Err(
                    "the engine's log holds output the attach stream did not deliver".into(),
                );
            }
        }
        if !unseen {
            return Ok(());
        }
    }
    Err("the end of each source was not among the engine's last log messages".into())
}

/// How the attach path ended.
enum AttachEnd {
    /// The output is complete.
    Complete,
    /// Told to stop, or the shipper stopped.
    Stopped,
    /// The rest is read from the engine's log, for this reason.
    Switch(String),
}

/// The attach path (see the module doc): records from the buffer, cut into the engine's
/// messages, framed as whole messages only.
async fn read_attached(
    st: &mut State,
    attached: &mut Attached,
    (docker, id): (&Docker, &str),
    tx: &mpsc::Sender<Chunk>,
    stop: &CancellationToken,
) -> AttachEnd {
    let mut cut = [Messages::default(), Messages::default()];
    let mut tails = [Tail::default(), Tail::default()];
    let mut last_ts = [0i64; 2];
    let mut pieces = Vec::new();
    loop {
        let next = match attached.reader.next().now_or_never() {
            Some(r) => r,
            None => {
                if st.flush(tx).await.is_err() {
                    return AttachEnd::Stopped;
                }
                let deadline = st.transforms.next_deadline();
                tokio::select! {
                    r = attached.reader.next() => r,
                    () = stop.cancelled() => return AttachEnd::Stopped,
                    () = sleep_until(deadline) => {
                        st.transforms.flush_expired(std::time::Instant::now(), &mut st.pending);
                        continue;
                    }
                }
            }
        };
        match next {
            Ok(rec) => {
                let i = rec.source.index();
                last_ts[i] = rec.ts_ns;
                let count = cut[i].feed(&rec.data, &mut pieces);
                for p in &pieces {
                    tails[i].push(p);
                }
                if count > 0
                    && st
                        .process_attached(rec.source, rec.ts_ns, &mut pieces, count, tx)
                        .await
                        .is_err()
                {
                    return AttachEnd::Stopped;
                }
            }
            Err(End::Complete) => {
                let ours = [0, 1].map(|i| tails[i].as_engine_stores(cut[i].held()));
                // Ok(true): removed, and its log with it: what was read is all there is.
                let checked = async {
                    if container::is_gone(docker, id).await {
                        return Ok(true);
                    }
                    confirm_end(docker, id, ours).await.map(|()| false)
                };
                let gone = tokio::select! {
                    r = checked => r,
                    () = stop.cancelled() => return AttachEnd::Stopped,
                };
                match gone {
                    Ok(true) => {
                        st.report.error = Some(DockerError::ContainerGone {
                            id: short_id(id).to_string(),
                        });
                    }
                    Ok(false) => {}
                    Err(why) => return AttachEnd::Switch(why),
                }
                for source in [Source::Stdout, Source::Stderr] {
                    let i = source.index();
                    let count = cut[i].finish(&mut pieces);
                    if count > 0
                        && st
                            .process_attached(source, last_ts[i], &mut pieces, count, tx)
                            .await
                            .is_err()
                    {
                        return AttachEnd::Stopped;
                    }
                }
                return AttachEnd::Complete;
            }
            Err(End::Full(why) | End::Broken(why)) => return AttachEnd::Switch(why),
            Err(End::Stopped) => return AttachEnd::Stopped,
        }
    }
}

/// How often an idle files path asks the engine whether its container ended, when the engine
/// did not close the file meanwhile (a close is what prompts a look: at every exit).
const FILES_IDLE_CHECK: std::time::Duration = std::time::Duration::from_secs(30);
/// After a close, the engine records the exit a moment later: looks at these growing delays.
const FILES_AFTER_CLOSE: std::time::Duration = std::time::Duration::from_millis(50);

/// How the files path ended.
enum FilesEnd {
    /// Read to the end of a container that ended.
    Complete,
    /// Told to stop, or the shipper stopped.
    Stopped,
    /// The rest is read through the logs endpoint, for this reason.
    Switch(String),
}

/// The files path (see the module doc).
async fn read_files(
    st: &mut State,
    f: &mut FilesStart,
    (docker, id): (&Docker, &str),
    tx: &mpsc::Sender<Chunk>,
    stop: &CancellationToken,
) -> FilesEnd {
    if let Err(e) = f.files.start_after(&st.report.position) {
        return FilesEnd::Switch(e.to_string());
    }
    let mut closes_seen = 0;
    let mut after_close = FILES_AFTER_CLOSE;
    let mut check_at = tokio::time::Instant::now() + FILES_IDLE_CHECK;
    loop {
        match f.files.next() {
            Ok(files::Next::Frame(frame, mark)) => {
                if stop.is_cancelled() || st.process_file(frame, mark, tx).await.is_err() {
                    return FilesEnd::Stopped;
                }
                continue;
            }
            Ok(files::Next::Idle) => {}
            Err(e) => return FilesEnd::Switch(e.to_string()),
        }
        for l in f.files.take_lost() {
            (f.on_lost)(&l);
            st.report.lost.push(l);
        }
        if st.flush(tx).await.is_err() {
            return FilesEnd::Stopped;
        }
        let (closes, gone) = f.files.closes_and_gone();
        if gone {
            // Removed: every file it had is held and read to its end.
            return FilesEnd::Complete;
        }
        if closes != closes_seen {
            closes_seen = closes;
            after_close = FILES_AFTER_CLOSE;
            check_at = tokio::time::Instant::now();
        }
        let deadline = st.transforms.next_deadline();
        tokio::select! {
            () = f.files.changed() => {}
            () = stop.cancelled() => return FilesEnd::Stopped,
            () = tokio::time::sleep_until(check_at) => {
                match container::has_ended(docker, id).await {
                    Ok(true) => {
                        // The engine closed the log before it recorded the exit: what is
                        // there now is all.
                        return drain_files(st, f, tx, stop).await;
                    }
                    Ok(false) if after_close < FILES_IDLE_CHECK => {
                        check_at = tokio::time::Instant::now() + after_close;
                        after_close *= 2;
                    }
                    // Running, or the engine did not answer (a restart): the files go on.
                    _ => check_at = tokio::time::Instant::now() + FILES_IDLE_CHECK,
                }
            }
            () = sleep_until(deadline) => {
                st.transforms.flush_expired(std::time::Instant::now(), &mut st.pending);
            }
        }
    }
}

/// The container ended: the held files are read to their end (or a stop).
async fn drain_files(
    st: &mut State,
    f: &mut FilesStart,
    tx: &mpsc::Sender<Chunk>,
    stop: &CancellationToken,
) -> FilesEnd {
    loop {
        if stop.is_cancelled() {
            return FilesEnd::Stopped;
        }
        match f.files.next() {
            Ok(files::Next::Frame(frame, mark)) => {
                if st.process_file(frame, mark, tx).await.is_err() {
                    return FilesEnd::Stopped;
                }
            }
            Ok(files::Next::Idle) => return FilesEnd::Complete,
            Err(e) => return FilesEnd::Switch(e.to_string()),
        }
    }
}

/// Reads the container's whole output (see the module doc) until it ends or `stop` is
/// cancelled: the attach stream or the engine's log files first when given, then the logs
/// endpoint (followed, then its end read once more). Each stage shares one cursor tracker
/// and one framing state ([`State`]). Dropping `tx` at the end tells the shipper there is
/// nothing more.
pub(crate) async fn read(
    cfg: ReaderConfig,
    tx: mpsc::Sender<Chunk>,
    stop: CancellationToken,
) -> ReaderReport {
    let mut st = State {
        framer: Framer::new(cfg.max_message_bytes).escaping(cfg.transforms.escape_invalid_utf8),
        transforms: Transforms::new(cfg.transforms.clone(), cfg.max_message_bytes),
        scratch: Vec::new(),
        pending: Vec::new(),
        pending_bytes: 0,
        echo: cfg.echo.map(|tx| (Vec::new(), Vec::new(), tx)),
        cursor: CursorTracker::default(),
        skip: Skip::default(),
        tap: cfg.tap,
        boundary: None,
        report: ReaderReport {
            position: cfg.start,
            ..ReaderReport::default()
        },
    };
    if let Some(mut attached) = cfg.attached {
        let on = (&cfg.docker, cfg.container_id.as_str());
        match read_attached(&mut st, &mut attached, on, &tx, &stop).await {
            AttachEnd::Complete => return st.end(&tx).await,
            AttachEnd::Stopped => return st.finish(true),
            AttachEnd::Switch(why) => {
                tracing::warn!(
                    "{why}: the rest of the output is read from the engine's log (from message {:?})",
                    st.report.position.messages.unwrap_or_default()
                );
                st.report.switched = Some(why);
            }
        }
        // Stops the pump and deletes the buffer.
        drop(attached);
    }
    let (after, skip) = st.report.position.reopen();
    st.cursor = CursorTracker::starting_at(after);
    st.skip = skip;
    if let Some(mut f) = cfg.files {
        let on = (&cfg.docker, cfg.container_id.as_str());
        let end = read_files(&mut st, &mut f, on, &tx, &stop).await;
        st.report.bad_records = f.files.bad_records;
        for l in f.files.take_all_lost() {
            (f.on_lost)(&l);
            st.report.lost.push(l);
        }
        match end {
            FilesEnd::Complete => {
                st.report.read_to_end = true;
                return st.end(&tx).await;
            }
            FilesEnd::Stopped => return st.finish(true),
            FilesEnd::Switch(why) => {
                tracing::warn!(
                    "{why}: the rest of the output is read through the engine's logs endpoint"
                );
                st.report.switched = Some(why);
                st.report.position.file = None;
            }
        }
    }
    let (docker, id) = (&cfg.docker, cfg.container_id.as_str());
    match follow_endpoint(&mut st, docker, id, &tx, &stop).await {
        EndpointEnd::Stopped => return st.finish(true),
        EndpointEnd::Gone => return st.end(&tx).await,
        EndpointEnd::Ended => {}
    }
    match read_the_end(&mut st, docker, id, &tx, &stop).await {
        EndpointEnd::Stopped => st.finish(true),
        EndpointEnd::Gone | EndpointEnd::Ended => st.end(&tx).await,
    }
}

/// How a read through the logs endpoint ended.
enum EndpointEnd {
    /// The stream ended: the container stopped, or reading failed (in the report).
    Ended,
    /// The container is gone: there is nothing more to read.
    Gone,
    /// Told to stop, or the shipper stopped.
    Stopped,
}

/// Follows the log through the logs endpoint while the container runs, reconnecting after a
/// broken stream (from the cursor: no gap, no duplicate), checking every [`GONE_CHECK`] of
/// silence that the container still exists.
async fn follow_endpoint(
    st: &mut State,
    docker: &bollard::Docker,
    id: &str,
    tx: &mpsc::Sender<Chunk>,
    stop: &CancellationToken,
) -> EndpointEnd {
    let mut backoff = Backoff::new(
        std::time::Duration::from_millis(200),
        std::time::Duration::from_secs(5),
    );
    let mut next_check = tokio::time::Instant::now() + GONE_CHECK;
    'follow: loop {
        let plan = ReadPlan {
            follow: true,
            tail: None,
        };
        let (mut frames, _) = logs::open(docker, id, plan, st.cursor.cursor());
        loop {
            let next = match frames.next().now_or_never() {
                Some(item) => item,
                None => {
                    if st.flush(tx).await.is_err() {
                        return EndpointEnd::Stopped;
                    }
                    let deadline = st.transforms.next_deadline();
                    tokio::select! {
                        item = frames.next() => item,
                        () = stop.cancelled() => return EndpointEnd::Stopped,
                        () = tokio::time::sleep_until(next_check) => {
                            next_check = tokio::time::Instant::now() + GONE_CHECK;
                            if container::is_gone(docker, id).await {
                                st.report.error = Some(DockerError::ContainerGone {
                                    id: short_id(id).to_string(),
                                });
                                return EndpointEnd::Gone;
                            }
                            continue;
                        }
                        () = sleep_until(deadline) => {
                            // A held multi-line event waited long enough.
                            let now = std::time::Instant::now();
                            st.transforms.flush_expired(now, &mut st.pending);
                            continue;
                        }
                    }
                }
            };
            match next {
                None => return EndpointEnd::Ended,
                Some(Ok(frame)) => {
                    if st.process(frame, tx).await.is_err() {
                        return EndpointEnd::Stopped;
                    }
                }
                Some(Err(e))
                    if logs::is_transport_error(&e) && backoff.attempts() < MAX_RECONNECTS =>
                {
                    tracing::warn!("the container's log stream broke ({e}); reconnecting");
                    tokio::select! {
                        () = tokio::time::sleep(backoff.next_delay()) => continue 'follow,
                        () = stop.cancelled() => return EndpointEnd::Stopped,
                    }
                }
                Some(Err(e)) => {
                    st.report.error = Some(gone_or(docker, id, e).await);
                    if st.is_gone() {
                        return EndpointEnd::Gone;
                    }
                    return EndpointEnd::Ended;
                }
            }
        }
    }
}

/// Reads the end of the log once more after the last frame followed (moby#43860: a follow
/// stream can end before the last lines): the last 64 messages, 4096, then all, until the
/// cursor's message is among them.
async fn read_the_end(
    st: &mut State,
    docker: &bollard::Docker,
    id: &str,
    tx: &mpsc::Sender<Chunk>,
    stop: &CancellationToken,
) -> EndpointEnd {
    let tails: &[Option<u64>] = if st.cursor.cursor().is_some() {
        &[Some(64), Some(4096), None]
    } else {
        &[None]
    };
    for &tail in tails {
        let plan = ReadPlan {
            follow: false,
            tail,
        };
        let (mut frames, found) = logs::open(docker, id, plan, st.cursor.cursor());
        loop {
            let item = tokio::select! {
                item = frames.next() => item,
                () = stop.cancelled() => return EndpointEnd::Stopped,
            };
            match item {
                None => break,
                Some(Ok(frame)) => {
                    if st.process(frame, tx).await.is_err() {
                        return EndpointEnd::Stopped;
                    }
                }
                Some(Err(e)) => {
                    let e = gone_or(docker, id, e).await;
                    st.report.error.get_or_insert(e);
                    if st.is_gone() {
                        return EndpointEnd::Gone;
                    }
                    break;
                }
            }
        }
        if found.load(std::sync::atomic::Ordering::Acquire) {
            break;
        }
    }
    EndpointEnd::Ended
}

/// Events the container's log holds after `after` that a stopped reader did not read:
/// framed and transformed as the reader would have, counted, not kept. At most `limit` is
/// spent reading; the flag is false when the count stopped there (then it is a lower bound).
pub(crate) async fn count_unread(
    docker: &Docker,
    id: &str,
    after: Position,
    max_message_bytes: usize,
    transforms: TransformConfig,
    limit: std::time::Duration,
) -> (u64, bool) {
    let mut framer = Framer::new(max_message_bytes).escaping(transforms.escape_invalid_utf8);
    let mut transforms = Transforms::new(transforms, max_message_bytes);
    let (mut scratch, mut out) = (Vec::new(), Vec::new());
    let mut count = 0u64;
    let plan = ReadPlan {
        follow: false,
        tail: None,
    };
    let (cursor, mut skip) = after.reopen();
    let (mut frames, _) = logs::open(docker, id, plan, cursor);
    let read_all = async {
        while let Some(Ok(frame)) = frames.next().await {
            if skip.take(frame.source) {
                continue;
            }
            framer.push(frame.source, frame.ts_ms(), &frame.data, &mut scratch);
            transforms.apply(
                std::mem::take(&mut scratch),
                std::time::Instant::now(),
                &mut out,
            );
            count += out.len() as u64;
            out.clear();
        }
    };
    let complete = tokio::time::timeout(limit, read_all).await.is_ok();
    framer.finish(&mut scratch);
    transforms.apply(scratch, std::time::Instant::now(), &mut out);
    transforms.finish(&mut out);
    (count + out.len() as u64, complete)
}

/// The engine's error, or [`DockerError::ContainerGone`] when the container is gone or going:
/// 404, 409 "dead or marked for removal", or no longer known.
async fn gone_or(docker: &Docker, id: &str, e: DockerError) -> DockerError {
    let gone = match &e {
        DockerError::Answered { status, .. } => {
            *status == 404 || *status == 409 || container::is_gone(docker, id).await
        }
        _ => false,
    };
    if gone {
        DockerError::ContainerGone {
            id: short_id(id).to_string(),
        }
    } else {
        e
    }
}
