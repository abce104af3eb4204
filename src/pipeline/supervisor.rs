//! Supervision of one container's shipping, from the spawned pipeline to a [`Report`].
//!
//! ```text
//!  spawn: reader task ──(bounded channel, 2 chunks)──► shipper task ──► checkpoint saver
//!  watch: until the shipper ends; stop steps from the Shutdown passed in:
//!         Graceful → docker stop (grace) + delivery deadline (grace + --flush-timeout)
//!         Kill     → docker kill; what the container wrote is still delivered
//!         Abandon  → shipper and reader told to stop now (so is a passed deadline)
//!  settle: the container's exit code (stopped first if it still runs)
//!  spool:  everything not acknowledged, in order, to one spool file
//!  decide: exit code or error, and whether delivery was complete ([`decide`], pure)
//! ```
//!
//! Each step is its own function so that the no-loss rules sit in small pieces: the shipper
//! hands back every unacknowledged event, the reader every event it made but did not send, and
//! both lists go to the spool before anything is decided.

use crate::util::sleep_until;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::buffer::Attached;
use super::checkpoint::Checkpoint;
use super::checkpoint::Saver;
use super::echo::Echo;
use super::framing::Event;
use super::reader::{self, ReaderConfig, ReaderReport};
use super::sink::{LogService, ShipReport, ShipStats, split};
use super::spool;
use crate::aws::retry::Failure;
use crate::config::ShipConfig;
use crate::docker::attach::Tap;
use crate::docker::logs::Position;
use crate::docker::{DockerError, container};
use crate::shutdown::{Shutdown, Signal, Stop};

/// Where shipping starts.
pub(crate) struct Start {
    /// After this position (resume), or at the beginning.
    pub(crate) position: Position,
    /// On resume: where each destination stream continues, to skip what is already there.
    pub(crate) resume: Option<Vec<split::ResumeFrom>>,
    /// The attach stream, for `--invalid-utf8 escape` on the logs path.
    pub(crate) tap: Option<Tap>,
    /// The attach path, when the run reads it.
    pub(crate) attached: Option<Attached>,
    /// The engine's log files, when `dockwatch ship` reads them.
    pub(crate) files: Option<reader::FilesStart>,
}

impl Default for Start {
    /// A new run: from the beginning, messages counted from the first.
    fn default() -> Self {
        Start {
            position: Position::START,
            resume: None,
            tap: None,
            attached: None,
            files: None,
        }
    }
}

/// What supervision saw, for the summary and the decision.
pub(crate) struct Report {
    pub(crate) ship: ShipReport,
    pub(crate) reader: ReaderReport,
    /// The container's exit code, when it could be read.
    pub(crate) exit_code: Option<i64>,
    /// The signal that stopped a running container, if one did.
    pub(crate) interrupted: Option<Signal>,
    /// Events not delivered (shipper's and reader's), all of them in the spool or not.
    pub(crate) undelivered: usize,
    /// Events not read from the container's log (the reader was stopped).
    pub(crate) unread: Unread,
    /// Bytes of output not echoed because our stdout or stderr did not keep up.
    pub(crate) unechoed: u64,
    /// The container was left running (delivery failed for good; resume follows it).
    pub(crate) still_running: bool,
    /// Where those went: `", saved to PATH"` or why they could not be saved.
    pub(crate) saved: String,
    /// The spool file they went to.
    pub(crate) spool: Option<std::path::PathBuf>,
    pub(crate) started: Instant,
}

impl Report {
    /// Everything the container wrote was delivered: no failure, nothing read and not
    /// delivered, nothing left unread (or a count of it cut short).
    pub(crate) fn complete(&self) -> bool {
        self.ship.fatal.is_none()
            && self.undelivered == 0
            && self.unread.events == 0
            && self.reader.error.is_none()
            && (!self.reader.stopped || self.unread.exact)
    }
}

/// What a run or a resume needs to ship a started container's output.
pub(crate) struct Session {
    pub(crate) ship: ShipConfig,
    pub(crate) echo: bool,
    /// The summary only when [`needs_telling`] (`-q`).
    pub(crate) quiet: bool,
    pub(crate) keep_container: bool,
    pub(crate) stop_timeout: Duration,
    pub(crate) flush_timeout: Duration,
    pub(crate) spool_dir: std::path::PathBuf,
    pub(crate) state_dir: std::path::PathBuf,
    /// The checkpoint, updated as delivery goes on.
    pub(crate) checkpoint: Checkpoint,
    /// Transforms between framing and batching.
    pub(crate) transforms: crate::config::TransformConfig,
    /// Told the events delivered so far and the newest delivered timestamp (ms) each time
    /// the delivered position moves (`dockwatch ship`'s metrics).
    pub(crate) on_progress: Option<Progress>,
}

/// See [`Session::on_progress`].
pub(crate) type Progress = Arc<dyn Fn(u64, i64) + Send + Sync>;

/// Ships a started container's output until the shipper ends, then settles the container,
/// spools what is left and reports.
pub(crate) async fn supervise(
    session: &Session,
    docker: &bollard::Docker,
    id: &str,
    client: aws_sdk_cloudwatchlogs::Client,
    mut shutdown: Shutdown,
    started: Instant,
    start: Start,
) -> Report {
    let mut pipeline = Pipeline::spawn(session, docker, id, client, start);
    let (ship, reader, interrupted) = pipeline.watch(session, docker, id, &mut shutdown).await;
    let unechoed = match pipeline.echo.take() {
        Some(echo) => tokio::task::spawn_blocking(move || echo.finish())
            .await
            .unwrap_or(0),
        None => 0,
    };
    // A delivery that failed for good (credentials refused past their deadline) leaves a
    // running container running: `dockwatch resume` follows it once credentials are good.
    let keep_running = ship.fatal.is_some() && !shutdown.is_requested();
    let (exit_code, still_running) =
        settle_container(docker, id, session.stop_timeout, keep_running).await;
    let mut undelivered = ship.undelivered;
    let mut reader = reader;
    undelivered.append(&mut reader.unsent);
    let unread = if reader.stopped && reader.error.is_none() {
        let quit = shutdown.stop() == Some(Stop::Abandon);
        let limit = if quit { QUIT_COUNT_LIMIT } else { COUNT_LIMIT };
        count_unread(session, docker, id, &reader, limit).await
    } else {
        Unread::default()
    };
    let (saved, spool) = spool_undelivered(session, id, &undelivered);
    Report {
        ship: ShipReport {
            undelivered: Vec::new(),
            ..ship
        },
        reader,
        exit_code,
        interrupted,
        undelivered: undelivered.len(),
        unread,
        unechoed,
        still_running,
        saved,
        spool,
        started,
    }
}

/// Events left in the container's log after what a stopped reader read.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Unread {
    pub(crate) events: u64,
    /// False when counting took too long: `events` is a lower bound.
    pub(crate) exact: bool,
}

/// None left: the reader read to the end (or was not stopped).
impl Default for Unread {
    fn default() -> Self {
        Unread {
            events: 0,
            exact: true,
        }
    }
}

/// Longest time spent counting what a stopped reader left in the log after a passed deadline
/// (a lower bound is said as such).
const COUNT_LIMIT: Duration = Duration::from_secs(5);

/// The same after the third signal, which quits at once: the logs endpoint counts about
/// 600,000 lines a second here, so a flood's rest is said as a lower bound rather than kept
/// the user waiting (measured: `seq 1 3000000` exited 5.4 s after `quitting now` with 5 s).
const QUIT_COUNT_LIMIT: Duration = Duration::from_millis(500);

async fn count_unread(
    session: &Session,
    docker: &bollard::Docker,
    id: &str,
    reader: &ReaderReport,
    limit: Duration,
) -> Unread {
    let (events, exact) = reader::count_unread(
        docker,
        id,
        reader.position,
        session.ship.max_message_bytes(),
        session.transforms.clone(),
        limit,
    )
    .await;
    Unread {
        events: events.max(reader.partial as u64),
        exact,
    }
}

/// Chunks (of at most 512 events or about 256 KiB) between the reader and the shipper. In a
/// flood the reader is ahead of the shipper (the disk buffer or the engine's log hold the
/// rest), so a longer channel would only hold more in memory; the shipper keeps a batch
/// ready of its own.
const CHANNEL_CHUNKS: usize = 2;

/// The reader and shipper tasks, and how to stop them.
struct Pipeline {
    reader: JoinHandle<ReaderReport>,
    shipper: JoinHandle<ShipReport>,
    /// Tells the shipper to hand back what is not acknowledged.
    abort: CancellationToken,
    /// Tells the reader to stop reading.
    stop_reading: CancellationToken,
    saver: Arc<Mutex<Saver>>,
    /// The echo thread, ended after the reader.
    echo: Option<Echo>,
}

impl Pipeline {
    fn spawn<S: LogService>(
        session: &Session,
        docker: &bollard::Docker,
        id: &str,
        service: S,
        start: Start,
    ) -> Self {
        let abort = CancellationToken::new();
        let stop_reading = CancellationToken::new();
        let (tx, rx) = mpsc::channel(CHANNEL_CHUNKS);
        let echo = session.echo.then(Echo::start);
        let reader = tokio::spawn(reader::read(
            ReaderConfig {
                docker: docker.clone(),
                container_id: id.to_string(),
                echo: echo.as_ref().map(Echo::sender),
                max_message_bytes: session.ship.max_message_bytes(),
                start: start.position,
                transforms: session.transforms.clone(),
                tap: start.tap,
                attached: start.attached,
                files: start.files,
            },
            tx,
            stop_reading.clone(),
        ));
        let saver = Arc::new(Mutex::new(Saver::new(
            session.checkpoint.clone(),
            session.state_dir.clone(),
        )));
        let on_saver = saver.clone();
        let progress = session.on_progress.clone();
        let on_position: split::OnPosition = Box::new(move |cursor, marks, events| {
            on_saver
                .lock()
                .expect("saver")
                .delivered(cursor, marks, events);
            if let Some(p) = &progress {
                p(events, marks.iter().map(|m| m.last_ms).max().unwrap_or(0));
            }
        });
        let (ship_cfg, ship_abort) = (session.ship.clone(), abort.clone());
        let shipper = tokio::spawn(async move {
            split::ship(
                service,
                &ship_cfg,
                rx,
                ship_abort,
                Some(on_position),
                start.resume,
            )
            .await
        });
        Pipeline {
            reader,
            shipper,
            abort,
            stop_reading,
            saver,
            echo,
        }
    }

    /// Waits for the shipper, running the stop steps asked for meanwhile. Returns both
    /// reports and the signal that interrupted a running container.
    async fn watch(
        &mut self,
        session: &Session,
        docker: &bollard::Docker,
        id: &str,
        shutdown: &mut Shutdown,
    ) -> (ShipReport, ReaderReport, Option<Signal>) {
        let mut interrupted = None;
        let mut deadline: Option<tokio::time::Instant> = None;
        let mut seen: Option<Stop> = None;
        let mut reader_report: Option<ReaderReport> = None;
        let ship = loop {
            tokio::select! {
                r = &mut self.reader, if reader_report.is_none() => {
                    reader_report = Some(reader_joined(r));
                }
                s = &mut self.shipper => break shipper_joined(s),
                now = shutdown.changed(), if seen < Some(Stop::Abandon) => {
                    for step in Stop::steps(seen, now) {
                        match step {
                            Stop::Graceful => {
                                interrupted = graceful_stop(session, docker, id, shutdown.signal()).await;
                                deadline = Some(tokio::time::Instant::now() + session.stop_timeout + session.flush_timeout);
                            }
                            Stop::Kill => kill(docker, id),
                            Stop::Abandon => {
                                crate::say!("dockwatch: quitting now");
                                self.stop_now();
                            }
                        }
                    }
                    seen = seen.max(now);
                }
                () = sleep_until(deadline), if deadline.is_some() && !self.abort.is_cancelled() => {
                    crate::say!("dockwatch: --flush-timeout reached; saving what is left to the spool");
                    self.stop_now();
                }
            }
        };
        (ship, self.settle(reader_report).await, interrupted)
    }

    /// After the shipper ended: the reader ends too (its channel is closed), the checkpoint
    /// is saved. The reader's report.
    async fn settle(&mut self, reader_report: Option<ReaderReport>) -> ReaderReport {
        self.stop_reading.cancel();
        self.saver.lock().expect("saver").flush();
        match reader_report {
            Some(r) => r,
            None => (&mut self.reader).await.unwrap_or_default(),
        }
    }

    fn stop_now(&self) {
        self.abort.cancel();
        self.stop_reading.cancel();
    }
}

fn reader_joined(r: Result<ReaderReport, tokio::task::JoinError>) -> ReaderReport {
    r.unwrap_or_else(|e| ReaderReport {
        error: Some(DockerError::Api {
            context: "read container logs".into(),
            reason: crate::docker::logs::describe_join(&e),
        }),
        ..ReaderReport::default()
    })
}

fn shipper_joined(s: Result<ShipReport, tokio::task::JoinError>) -> ShipReport {
    s.unwrap_or_else(|e| ShipReport {
        fatal: Some(Failure::Construction(format!("shipper task failed: {e}"))),
        ..ShipReport::default()
    })
}

/// What [`follow`] saw.
pub(crate) struct Followed {
    pub(crate) ship: ShipReport,
    pub(crate) reader: ReaderReport,
    /// The checkpoint as last saved.
    pub(crate) checkpoint: Checkpoint,
}

/// Ships the output of a container that dockwatch did not start (`dockwatch ship`) until it
/// ends (the container exited and its log was read to the end) or `drain` is cancelled:
/// then reading stops, what was read is delivered for up to `deadline`, and what is left
/// stays in the engine's log after the checkpoint's position. The container is never
/// touched, nothing is spooled: the checkpoint is the whole state.
pub(crate) async fn follow<S: LogService>(
    session: &Session,
    docker: &bollard::Docker,
    service: S,
    start: Start,
    drain: CancellationToken,
    deadline: Duration,
) -> Followed {
    let id = session.checkpoint.container_id.clone();
    let mut p = Pipeline::spawn(session, docker, &id, service, start);
    let mut reader_report = None;
    let mut give_up: Option<tokio::time::Instant> = None;
    let ship = loop {
        tokio::select! {
            r = &mut p.reader, if reader_report.is_none() => reader_report = Some(reader_joined(r)),
            s = &mut p.shipper => break shipper_joined(s),
            () = drain.cancelled(), if give_up.is_none() => {
                p.stop_reading.cancel();
                give_up = Some(tokio::time::Instant::now() + deadline);
            }
            () = sleep_until(give_up), if give_up.is_some() && !p.abort.is_cancelled() => p.stop_now(),
        }
    };
    let reader = p.settle(reader_report).await;
    let checkpoint = p.saver.lock().expect("saver").checkpoint().clone();
    Followed {
        ship,
        reader,
        checkpoint,
    }
}

/// The first stop step: `docker stop` with the grace period, in the background. Returns the
/// signal when the container was still running (the exit code is then the signal's).
async fn graceful_stop(
    session: &Session,
    docker: &bollard::Docker,
    id: &str,
    signal: Option<Signal>,
) -> Option<Signal> {
    let running = matches!(container::exit_code(docker, id).await, Ok(None));
    crate::say!(
        "dockwatch: stopping the container: SIGTERM, SIGKILL after {} (--stop-timeout); press Ctrl+C again to kill it now",
        humantime::format_duration(session.stop_timeout)
    );
    let (d, i, grace) = (docker.clone(), id.to_string(), session.stop_timeout);
    tokio::spawn(async move {
        if let Err(e) = container::stop(&d, &i, grace).await {
            tracing::warn!("{e}");
        }
    });
    if running { signal } else { None }
}

/// The second stop step: kill the container, in the background.
fn kill(docker: &bollard::Docker, id: &str) {
    crate::say!(
        "dockwatch: killing the container; delivering what it wrote (Ctrl+C again to quit now)"
    );
    let (d, i) = (docker.clone(), id.to_string());
    tokio::spawn(async move {
        if let Err(e) = container::kill(&d, &i).await {
            tracing::warn!("{e}");
        }
    });
}

/// The container's exit code; a container that still runs (delivery failed or was abandoned)
/// is stopped first, unless `keep_running` (then: no code, and true).
async fn settle_container(
    docker: &bollard::Docker,
    id: &str,
    grace: Duration,
    keep_running: bool,
) -> (Option<i64>, bool) {
    match container::exit_code(docker, id).await {
        Ok(Some(code)) => return (Some(code), false),
        Ok(None) if keep_running => return (None, true),
        Ok(None) => {}
        Err(_) => return (None, false),
    }
    if let Err(e) = container::stop(docker, id, grace).await {
        tracing::warn!("{e}");
    }
    (container::exit_code(docker, id).await.ok().flatten(), false)
}

/// Writes what was not delivered to a spool file; returns the summary's words for it, and
/// the file.
fn spool_undelivered(
    session: &Session,
    id: &str,
    undelivered: &[Event],
) -> (String, Option<std::path::PathBuf>) {
    if undelivered.is_empty() {
        return (String::new(), None);
    }
    let header = spool::Header {
        dockwatch_spool: 1,
        group: session.ship.group.clone(),
        stream: session.ship.stream.clone(),
        container: id.to_string(),
        region: session.checkpoint.region.clone(),
        endpoint_url: session.checkpoint.endpoint_url.clone(),
        events: undelivered.len(),
        split_streams: session.ship.split_streams,
    };
    match spool::write(&session.spool_dir, &header, undelivered) {
        Ok(p) => (format!(", saved to {}", p.display()), Some(p)),
        Err(e) => (
            format!(
                " and could not be saved to {}: {e}",
                session.spool_dir.display()
            ),
            None,
        ),
    }
}

/// The one summary line: what was shipped where, the container's end, and every note the
/// user must know (retries, rejections, framing changes, what was NOT delivered).
pub(crate) fn summary(group: &str, stream: &str, r: &Report) -> String {
    let s = &r.ship.stats;
    let mut line = format!(
        "dockwatch: shipped {} events ({}) in {} requests to {group}/{stream} in {:.1}s",
        s.events,
        human_bytes(s.message_bytes),
        s.requests,
        r.started.elapsed().as_secs_f64()
    );
    match r.exit_code {
        Some(c) => line.push_str(&format!("; container exited with code {c}")),
        None if r.still_running => line.push_str("; container still running"),
        None => line.push_str("; container state unknown"),
    }
    let mut notes = ship_notes(s);
    notes.extend(reader_notes(&r.reader));
    if s.skipped_duplicates > 0 {
        notes.push(format!(
            "{} events already in CloudWatch not sent again",
            s.skipped_duplicates
        ));
    }
    if r.reader.framing.split_pieces > 0 {
        notes.push(format!(
            "{} extra events from splitting long lines",
            r.reader.framing.split_pieces
        ));
    }
    notes.extend(undelivered_note(r));
    if r.unechoed > 0 {
        notes.push(format!(
            "{} of output not echoed: the terminal or pipe did not keep up (all of it was shipped)",
            human_bytes(r.unechoed)
        ));
    }
    if !notes.is_empty() {
        line.push_str(" (");
        line.push_str(&notes.join("; "));
        line.push(')');
    }
    line
}

/// Whether a run must be reported whatever `-q` says: something was not delivered, or was
/// changed or may be doubled on the way (`-q` leaves out retries, skipped empty lines,
/// split lines: the run delivered what the container wrote).
pub(crate) fn needs_telling(r: &Report) -> bool {
    let (s, f) = (&r.ship.stats, &r.reader.framing);
    !r.complete()
        || r.still_running
        || s.maybe_twice > 0
        || s.unrecognised > 0
        || s.rejected.total() > 0
        || f.invalid_sequences > 0
        || r.reader.tap_fallback.is_some()
        || r.reader.replaced_in_log > 0
}

/// What was not delivered: events read (and where they were saved) and events still unread
/// in the container's log.
fn undelivered_note(r: &Report) -> Option<String> {
    let unread = r.unread.events;
    // Counting the rest was cut short: what is said is a lower bound.
    let cut = !r.unread.exact;
    if r.undelivered == 0 && unread == 0 && !cut {
        return None;
    }
    let total = r.undelivered as u64 + unread;
    let bound = if cut { "at least " } else { "" };
    if unread == 0 && !cut {
        return Some(format!("{total} events NOT delivered{}", r.saved));
    }
    let mut note = format!("{bound}{total} events NOT delivered: ");
    if r.undelivered > 0 {
        note.push_str(&format!("{} read{}, ", r.undelivered, r.saved));
    }
    if unread == 0 {
        // Cut before the first one was counted (a third signal gives it half a second).
        note.push_str("more still unread in the container's log (not counted in time)");
    } else {
        note.push_str(&format!(
            "{bound}{unread} still unread in the container's log"
        ));
    }
    Some(note)
}

fn ship_notes(s: &ShipStats) -> Vec<String> {
    let mut notes = Vec::new();
    if s.retries > 0 {
        notes.push(format!("{} retries ({} throttled)", s.retries, s.throttled));
    }
    if s.recreated > 0 {
        notes.push(format!("group/stream recreated {} times", s.recreated));
    }
    if s.lost_answers > 0 {
        notes.push(format!(
            "{} lost answers found stored, not sent again",
            s.lost_answers
        ));
    }
    if s.maybe_twice > 0 {
        notes.push(format!(
            "{} events may be stored twice: their answers were lost and reading the stream back could not tell",
            s.maybe_twice
        ));
    }
    if s.unrecognised > 0 {
        notes.push(format!(
            "{} events in the stream past the checkpoint were not this run's (another writer?)",
            s.unrecognised
        ));
    }
    if s.rejected.total() > 0 {
        notes.push(format!(
            "CloudWatch rejected {} events (too old {}, too new {}, expired {})",
            s.rejected.total(),
            s.rejected.too_old,
            s.rejected.too_new,
            s.rejected.expired
        ));
    }
    notes
}

fn reader_notes(r: &ReaderReport) -> Vec<String> {
    let f = r.framing;
    let mut notes = Vec::new();
    if f.empty_lines > 0 {
        notes.push(format!("{} empty lines skipped", f.empty_lines));
    }
    if f.invalid_sequences > 0 {
        notes.push(format!(
            "{} invalid UTF-8 sequences replaced",
            f.invalid_sequences
        ));
    }
    if f.escaped_bytes > 0 {
        notes.push(format!("{} invalid UTF-8 bytes escaped", f.escaped_bytes));
    }
    if let Some((frames, why)) = &r.tap_fallback {
        notes.push(format!(
            "{frames} log messages shipped as the engine stored them, not escaped: {why}"
        ));
    }
    if let Some(why) = &r.switched {
        notes.push(format!(
            "the first {} read from the attach stream, the rest from the engine's log ({why})",
            human_bytes(r.attached_bytes)
        ));
    }
    if r.replaced_in_log > 0 {
        notes.push(format!(
            "{} U+FFFD characters as the engine's log stores them (invalid bytes, or characters its 16 KiB split cut in two)",
            r.replaced_in_log
        ));
    }
    notes
}

pub(crate) fn human_bytes(b: u64) -> String {
    const UNITS: [&str; 4] = ["B", "KiB", "MiB", "GiB"];
    let mut v = b as f64;
    let mut u = 0;
    while v >= 1024.0 && u < UNITS.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{b} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn report() -> Report {
        Report {
            ship: ShipReport::default(),
            reader: ReaderReport::default(),
            exit_code: Some(3),
            interrupted: None,
            undelivered: 0,
            unread: Unread::default(),
            unechoed: 0,
            still_running: false,
            saved: String::new(),
            spool: None,
            started: Instant::now(),
        }
    }

    #[test]
    fn undelivered_events_are_in_the_summary() {
        let r = Report {
            undelivered: 7,
            saved: ", saved to /tmp/x.jsonl".into(),
            ..report()
        };
        let line = summary("g", "s", &r);
        assert!(
            line.contains("7 events NOT delivered, saved to /tmp/x.jsonl"),
            "{line}"
        );
    }

    #[test]
    fn unread_events_count_as_not_delivered() {
        let r = Report {
            undelivered: 7,
            unread: Unread {
                events: 10,
                exact: true,
            },
            saved: ", saved to /tmp/x.jsonl".into(),
            ..report()
        };
        let line = summary("g", "s", &r);
        assert!(
            line.contains(
                "17 events NOT delivered: 7 read, saved to /tmp/x.jsonl, 10 still unread in the container's log"
            ),
            "{line}"
        );
        let r = Report {
            unread: Unread {
                events: 10,
                exact: false,
            },
            ..report()
        };
        let line = summary("g", "s", &r);
        assert!(
            line.contains("at least 10 events NOT delivered: at least 10 still unread"),
            "{line}"
        );
        // Cut before anything was counted: still a lower bound, and the rest is named.
        let r = Report {
            undelivered: 7,
            unread: Unread {
                events: 0,
                exact: false,
            },
            saved: ", saved to /tmp/x.jsonl".into(),
            ..report()
        };
        let line = summary("g", "s", &r);
        assert!(
            line.contains(
                "at least 7 events NOT delivered: 7 read, saved to /tmp/x.jsonl, more still unread in the container's log (not counted in time)"
            ),
            "{line}"
        );
    }

    #[test]
    fn bytes_read_as_people_write_them() {
        assert_eq!(human_bytes(512), "512 B");
        assert_eq!(human_bytes(1536), "1.5 KiB");
        assert_eq!(human_bytes(3 << 30), "3.0 GiB");
    }
}
