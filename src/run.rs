//! The main job: check the destination, run the container, ship its output, clean up.
//!
//! ```text
//!  preflight: AWS client + group/stream, Docker engine, image
//!  create container ──► start ──► reader task ──(bounded channel)──► shipper task
//!                                   (docker logs → framing)            (batcher → PutLogEvents)
//!  interrupts: 1st signal: docker stop (grace), delivery deadline starts
//!              2nd: kill the container      3rd: stop now, spool what is left
//!  end: exit code, spool of anything undelivered, summary, container removed
//! ```
//!
//! Shutdown is passed in: [`run`] reads signals from an [`Interrupts`] receiver, so tests and
//! other callers can drive it without process signals.
//!
//! A run that could not deliver everything (dockwatch killed, delivery failed for good, the
//! deadline passed) keeps its container and its checkpoint, and [`resume`] ships the rest.

use std::time::{Duration, Instant};

use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::checkpoint::Checkpoint;
use crate::cli::ResumeArgs;
use crate::config::{AwsOptions, ConfigError, RunConfig, ShipConfig};
use crate::docker::attach::Tap;
use crate::docker::logs::Cursor;
use crate::docker::{self, DockerError, container};
use crate::exit_codes;
use crate::reader::Chunk;
use crate::reader::{self, ReaderConfig, ReaderReport};
use crate::sink::client::{self as cw, preflight_error};
use crate::sink::retry::Failure;
use crate::sink::{ShipReport, SinkError, split};
use crate::spool;

/// A signal that asks dockwatch to stop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signal {
    Interrupt,
    Terminate,
}

impl Signal {
    pub fn exit_code(self) -> i32 {
        match self {
            Signal::Interrupt => exit_codes::SIGINT,
            Signal::Terminate => exit_codes::SIGTERM,
        }
    }
}

/// How many stop signals arrived so far, and the first one.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Interrupts {
    pub count: u32,
    pub first: Option<Signal>,
}

/// Why the main job failed.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error(transparent)]
    Docker(#[from] DockerError),
    #[error(transparent)]
    Sink(#[from] SinkError),
    #[error(
        "delivery to CloudWatch failed: {failure}; {undelivered} event(s) not delivered{saved}"
    )]
    Delivery {
        failure: Failure,
        undelivered: usize,
        saved: String,
    },
    #[error("interrupted before the container started")]
    InterruptedEarly(Signal),
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("{0}")]
    Resume(String),
}

impl RunError {
    pub fn exit_code(&self) -> i32 {
        match self {
            RunError::Docker(DockerError::NoShell { .. }) => exit_codes::NO_SHELL,
            RunError::Sink(SinkError::NoRegion | SinkError::NoCredentials) => exit_codes::USAGE,
            RunError::Config(_) => exit_codes::USAGE,
            RunError::InterruptedEarly(s) => s.exit_code(),
            _ => exit_codes::FAILURE,
        }
    }
}

/// Runs the main job and returns the exit code.
pub async fn run(cfg: RunConfig, interrupts: watch::Receiver<Interrupts>) -> Result<i32, RunError> {
    let launched = launch(&cfg, &interrupts).await?;
    launched.ship(interrupts).await
}

/// A container created and started by [`launch`], whose output is not shipped yet.
pub struct Launched {
    /// The container's id.
    pub id: String,
    /// How to ship it.
    session: Session,
    /// The engine.
    docker: bollard::Docker,
    /// CloudWatch Logs.
    client: aws_sdk_cloudwatchlogs::Client,
    /// When the job began, for the summary.
    started: Instant,
    /// The attach stream, for `--invalid-utf8 escape`.
    tap: Option<Tap>,
}

impl Launched {
    /// Ships the container's output until it exits (or an interruption), then cleans up.
    pub async fn ship(self, mut interrupts: watch::Receiver<Interrupts>) -> Result<i32, RunError> {
        let outcome = supervise(
            &self.session,
            &self.docker,
            &self.id,
            self.client,
            &mut interrupts,
            self.started,
            None,
            None,
            self.tap,
        )
        .await;
        finish(&self.session, &self.docker, &self.id, outcome).await
    }
}

/// The main job up to a started container: CloudWatch destination, image, container,
/// checkpoint. Used by `dockwatch run` and by the agent's LaunchContainer.
pub async fn launch(
    cfg: &RunConfig,
    interrupts: &watch::Receiver<Interrupts>,
) -> Result<Launched, RunError> {
    let started = Instant::now();
    if cfg.aws.secret_on_command_line() {
        eprintln!(
            "dockwatch: warning: a secret on the command line is visible to other local users; prefer AWS_SECRET_ACCESS_KEY or --aws-profile"
        );
    }
    let client = cw::build(&cfg.aws).await?;
    let endpoint = cw::endpoint_of(&client, &cfg.aws);
    ensure_destinations(&client, &cfg.ship, &endpoint).await?;

    let request_timeout = Duration::from_secs(120).max(cfg.stop_timeout + Duration::from_secs(60));
    let docker = docker::connect(request_timeout).await?;
    container::ensure_image(&docker, &cfg.container).await?;
    if let Some(s) = interrupts.borrow().first {
        return Err(RunError::InterruptedEarly(s));
    }

    let id = container::create(&docker, &cfg.container).await?;
    tracing::debug!("created container {id}");
    let session = Session {
        ship: cfg.ship.clone(),
        echo: cfg.echo,
        keep_container: cfg.keep_container,
        stop_timeout: cfg.stop_timeout,
        flush_timeout: cfg.flush_timeout,
        spool_dir: cfg.spool_dir.clone(),
        state_dir: cfg.state_dir.clone(),
        checkpoint: Checkpoint::new(
            &id,
            &cfg.ship.group,
            &cfg.ship.stream,
            client.config().region().map(|r| r.to_string()),
            cfg.aws.endpoint_url.clone(),
            cfg.keep_container,
            cfg.ship.max_event_size,
        )
        .with_transforms(&cfg.transforms)
        .with_split_streams(cfg.ship.split_streams),
        transforms: crate::transform::TransformConfig {
            container: id[..12.min(id.len())].to_string(),
            ..cfg.transforms.clone()
        },
    };
    if let Err(e) = session.checkpoint.save(&session.state_dir) {
        eprintln!(
            "dockwatch: warning: cannot write the checkpoint in {}: {e}; a crash could not be resumed",
            session.state_dir.display()
        );
    }
    let attached_and_started = async {
        // The raw bytes for `--invalid-utf8 escape`: attached before the start, so none is
        // missed.
        let tap = if cfg.transforms.escape_invalid_utf8 {
            Some(Tap::attach(&docker, &id, cfg.container.tty).await?)
        } else {
            None
        };
        container::start(&docker, &id, &cfg.container).await?;
        Ok::<_, DockerError>(tap)
    };
    let tap = match attached_and_started.await {
        Ok(tap) => tap,
        Err(e) => {
            let _ = container::remove(&docker, &id).await;
            let _ = Checkpoint::remove(&session.state_dir, &id);
            return Err(e.into());
        }
    };
    Ok(Launched {
        id,
        session,
        docker,
        client,
        started,
        tap,
    })
}

/// Creates the group and every destination stream when missing (start-up: few retries).
async fn ensure_destinations(
    client: &aws_sdk_cloudwatchlogs::Client,
    ship: &ShipConfig,
    endpoint: &str,
) -> Result<(), RunError> {
    for name in split::stream_names(&ship.stream, ship.split_streams) {
        cw::ensure_destination(client, &ship.group, &name, 3)
            .await
            .map_err(|f| preflight_error(f, endpoint.to_string()))?;
    }
    Ok(())
}

/// What a run or a resume needs to ship a started container's output.
pub struct Session {
    pub ship: ShipConfig,
    pub echo: bool,
    pub keep_container: bool,
    pub stop_timeout: Duration,
    pub flush_timeout: Duration,
    pub spool_dir: std::path::PathBuf,
    pub state_dir: std::path::PathBuf,
    /// The checkpoint, updated as delivery goes on.
    pub checkpoint: Checkpoint,
    /// Transforms between framing and batching.
    pub transforms: crate::transform::TransformConfig,
}

/// How supervision ended.
pub struct Outcome {
    result: Result<i32, RunError>,
    /// Everything the container wrote was delivered.
    complete: bool,
}

/// Cleans up after a complete delivery; keeps container and checkpoint otherwise.
async fn finish(
    session: &Session,
    docker: &bollard::Docker,
    id: &str,
    outcome: Outcome,
) -> Result<i32, RunError> {
    let short = &id[..12.min(id.len())];
    if outcome.complete {
        if session.keep_container {
            eprintln!("dockwatch: kept container {short}");
        } else if let Err(e) = container::remove(docker, id).await {
            eprintln!("dockwatch: warning: could not remove container {short}: {e}");
        }
        let _ = Checkpoint::remove(&session.state_dir, id);
        // Spools of this container are now delivered (resume read the same output again).
        for f in spool::files_of(&session.spool_dir, id) {
            let _ = std::fs::remove_file(f);
        }
    } else {
        eprintln!(
            "dockwatch: kept container {short} and its checkpoint in {}; ship the rest with: dockwatch resume {short}",
            session.state_dir.display()
        );
    }
    outcome.result
}

/// Resumes an interrupted run from its checkpoint, or delivers a spool file.
pub async fn resume(
    args: ResumeArgs,
    mut interrupts: watch::Receiver<Interrupts>,
) -> Result<i32, RunError> {
    let started = Instant::now();
    if let Some(path) = &args.spool {
        return resume_spool(path, &args).await;
    }
    let candidates: Vec<_> = Checkpoint::list(&args.state_dir)
        .into_iter()
        .filter(|p| {
            let name = p
                .file_stem()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            args.container
                .as_deref()
                .is_none_or(|c| name.starts_with(c))
        })
        .collect();
    let path = match candidates.as_slice() {
        [one] => one.clone(),
        [] => {
            return Err(RunError::Resume(format!(
                "no checkpoint{} in {}; nothing to resume",
                args.container
                    .as_deref()
                    .map(|c| format!(" for {c}"))
                    .unwrap_or_default(),
                args.state_dir.display()
            )));
        }
        many => {
            let names: Vec<String> = many
                .iter()
                .filter_map(|p| {
                    p.file_stem()
                        .map(|n| n.to_string_lossy()[..12.min(n.len())].to_string())
                })
                .collect();
            return Err(RunError::Resume(format!(
                "several checkpoints in {}: name the container, one of {}",
                args.state_dir.display(),
                names.join(", ")
            )));
        }
    };
    let cp = Checkpoint::load(&path).map_err(RunError::Resume)?;
    let mut aws = AwsOptions::from_args(args.aws.clone())?;
    aws.region = aws.region.or(cp.region.clone());
    aws.endpoint_url = aws.endpoint_url.or(cp.endpoint_url.clone());
    let client = cw::build(&aws).await?;
    let endpoint = cw::endpoint_of(&client, &aws);
    let ship = ShipConfig {
        group: cp.group.clone(),
        stream: cp.stream.clone(),
        max_event_size: cp.max_event_size,
        flush_interval: Duration::from_millis(200),
        max_in_flight: 4,
        split_streams: cp.split_streams,
    };
    ensure_destinations(&client, &ship, &endpoint).await?;
    let docker =
        docker::connect(Duration::from_secs(120).max(args.stop_timeout + Duration::from_secs(60)))
            .await?;
    let id = cp.container_id.clone();
    if let Err(e) = container::exit_code(&docker, &id).await {
        return Err(RunError::Resume(format!(
            "container {} of the checkpoint {} cannot be read ({e}); its output is gone, remove the checkpoint",
            &id[..12.min(id.len())],
            path.display()
        )));
    }
    let mut tails = Vec::new();
    for name in split::stream_names(&cp.stream, cp.split_streams) {
        let tail = cw::newest_events(&client, &cp.group, &name, RESUME_PAGES)
            .await
            .map_err(|f| preflight_error(f, endpoint.clone()))?;
        tails.push(tail);
    }
    eprintln!(
        "dockwatch: resuming container {} after {} delivered events",
        &id[..12.min(id.len())],
        cp.events_delivered
    );
    let session = Session {
        ship,
        echo: !args.quiet,
        keep_container: cp.keep_container,
        stop_timeout: args.stop_timeout,
        flush_timeout: args.flush_timeout,
        spool_dir: args.spool_dir.clone(),
        state_dir: args.state_dir.clone(),
        transforms: cp.transforms()?,
        checkpoint: cp.clone(),
    };
    if cp.escape_invalid_utf8 {
        eprintln!(
            "dockwatch: note: --invalid-utf8 escape: the rest is read from the engine's log, where invalid bytes are already replaced by U+FFFD"
        );
    }
    let start = cp.cursor.map(Cursor::from);
    let outcome = supervise(
        &session,
        &docker,
        &id,
        client,
        &mut interrupts,
        started,
        start,
        Some(tails),
        None,
    )
    .await;
    finish(&session, &docker, &id, outcome).await
}

/// Delivers the events of a spool file; removes it once they are all delivered.
async fn resume_spool(path: &std::path::Path, args: &ResumeArgs) -> Result<i32, RunError> {
    let started = Instant::now();
    let (header, events) = spool::read(path).map_err(RunError::Resume)?;
    let mut aws = AwsOptions::from_args(args.aws.clone())?;
    aws.region = aws.region.or(header.region.clone());
    aws.endpoint_url = aws.endpoint_url.or(header.endpoint_url.clone());
    let client = cw::build(&aws).await?;
    let endpoint = cw::endpoint_of(&client, &aws);
    let ship = ShipConfig {
        group: header.group.clone(),
        stream: header.stream.clone(),
        max_event_size: crate::batcher::MAX_BATCH_BYTES,
        flush_interval: Duration::from_millis(200),
        max_in_flight: 4,
        split_streams: header.split_streams,
    };
    ensure_destinations(&client, &ship, &endpoint).await?;
    let (tx, rx) = mpsc::channel(16);
    let abort = CancellationToken::new();
    let shipper =
        tokio::spawn(async move { split::ship(client, &ship, rx, abort, None, None).await });
    for chunk in events.chunks(512) {
        if tx
            .send(Chunk {
                events: chunk.to_vec(),
                boundary: None,
            })
            .await
            .is_err()
        {
            break;
        }
    }
    drop(tx);
    let report = shipper.await.unwrap_or_default();
    let s = report.stats;
    eprintln!(
        "dockwatch: delivered {} events ({}) from {} to {}/{} in {:.1}s",
        s.events,
        human_bytes(s.message_bytes),
        path.display(),
        header.group,
        header.stream,
        started.elapsed().as_secs_f64()
    );
    if let Some(failure) = report.fatal {
        return Err(RunError::Delivery {
            failure,
            undelivered: report.undelivered.len(),
            saved: format!(", still in {}", path.display()),
        });
    }
    let _ = std::fs::remove_file(path);
    Ok(0)
}

/// Pages of a stream's newest events read by resume to skip what is already there: 100,000
/// events, more than the requests in flight (4 x 10,000 by default) plus what a checkpoint
/// may lag behind ([`SAVE_EVENTS`] and one batch).
const RESUME_PAGES: usize = 10;
/// The checkpoint is saved at most this often...
const SAVE_EVERY: Duration = Duration::from_millis(250);
/// ...unless this many delivered events are not in it yet.
const SAVE_EVENTS: u64 = 40_000;

/// Keeps the checkpoint up to date without an fsync per request: a save when [`SAVE_EVERY`]
/// passed or [`SAVE_EVENTS`] events are unsaved, and a last one when shipping ends. A crash in
/// between leaves an older position, which resume corrects by skipping events CloudWatch
/// already has (see [`RESUME_PAGES`]).
struct Saver {
    /// Events delivered before this run (resume).
    base: u64,
    checkpoint: Checkpoint,
    dir: std::path::PathBuf,
    last_save: Instant,
    /// Delivered events not in the saved checkpoint yet.
    unsaved: u64,
    /// The position moved since the last save.
    dirty: bool,
}

impl Saver {
    fn delivered(&mut self, cursor: Cursor, events: u64) {
        let before = self.checkpoint.events_delivered;
        self.checkpoint.cursor = Some(cursor.into());
        self.checkpoint.events_delivered = self.base + events;
        self.unsaved += self.checkpoint.events_delivered.saturating_sub(before);
        self.dirty = true;
        if self.last_save.elapsed() >= SAVE_EVERY || self.unsaved >= SAVE_EVENTS {
            self.flush();
        }
    }

    fn flush(&mut self) {
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

#[allow(clippy::too_many_arguments)]
async fn supervise(
    cfg: &Session,
    docker: &bollard::Docker,
    id: &str,
    client: aws_sdk_cloudwatchlogs::Client,
    interrupts: &mut watch::Receiver<Interrupts>,
    started: Instant,
    start: Option<Cursor>,
    already_delivered: Option<Vec<Vec<(i64, String)>>>,
    tap: Option<Tap>,
) -> Outcome {
    let tracker = TaskTracker::new();
    let abort = CancellationToken::new();
    let stop_reading = CancellationToken::new();
    let (tx, rx) = mpsc::channel(16);
    let reader = tracker.spawn(reader::read(
        ReaderConfig {
            docker: docker.clone(),
            container_id: id.to_string(),
            echo: cfg.echo,
            max_message_bytes: cfg.ship.max_message_bytes(),
            start,
            transforms: cfg.transforms.clone(),
            tap,
        },
        tx,
        stop_reading.clone(),
    ));
    let saver = std::sync::Arc::new(std::sync::Mutex::new(Saver {
        base: cfg.checkpoint.events_delivered,
        checkpoint: cfg.checkpoint.clone(),
        dir: cfg.state_dir.clone(),
        last_save: Instant::now(),
        unsaved: 0,
        dirty: false,
    }));
    let saver2 = saver.clone();
    let on_delivered: crate::sink::OnDelivered = Box::new(move |cursor, events| {
        saver2.lock().expect("saver").delivered(cursor, events);
    });
    let (ship_cfg, ship_abort) = (cfg.ship.clone(), abort.clone());
    let shipper = tracker.spawn(async move {
        split::ship(
            client,
            &ship_cfg,
            rx,
            ship_abort,
            Some(on_delivered),
            already_delivered,
        )
        .await
    });
    tracker.close();

    // Interruptions: the exit code they imply, and the delivery deadline.
    let mut interrupted: Option<Signal> = None;
    let mut deadline: Option<tokio::time::Instant> = None;
    let mut seen = 0;
    let mut reader = reader;
    let mut shipper = shipper;
    let mut reader_report: Option<ReaderReport> = None;
    let ship_report: ShipReport = loop {
        tokio::select! {
            r = &mut reader, if reader_report.is_none() => {
                reader_report = Some(r.unwrap_or_else(|e| ReaderReport {
                    error: Some(DockerError::Api {
                        context: "read container logs".into(),
                        reason: crate::docker::logs::describe_join(&e),
                    }),
                    ..ReaderReport::default()
                }));
            }
            s = &mut shipper => {
                break s.unwrap_or_else(|e| ShipReport {
                    fatal: Some(Failure::Construction(format!("shipper task failed: {e}"))),
                    ..ShipReport::default()
                });
            }
            changed = interrupts.changed(), if seen < 3 => {
                if changed.is_err() { seen = 3; continue; }
                let now = *interrupts.borrow_and_update();
                while seen < now.count {
                    seen += 1;
                    match seen {
                        1 => {
                            let running = matches!(container::exit_code(docker, id).await, Ok(None));
                            if running {
                                interrupted = now.first;
                            }
                            eprintln!("dockwatch: stopping the container (grace {:?}); press Ctrl+C again to kill it", cfg.stop_timeout);
                            deadline = Some(tokio::time::Instant::now() + cfg.stop_timeout + cfg.flush_timeout);
                            let (d, i, grace) = (docker.clone(), id.to_string(), cfg.stop_timeout);
                            tokio::spawn(async move {
                                if let Err(e) = container::stop(&d, &i, grace).await {
                                    tracing::warn!("{e}");
                                }
                            });
                        }
                        2 => {
                            eprintln!("dockwatch: killing the container; delivering what it wrote (Ctrl+C again to quit now)");
                            let (d, i) = (docker.clone(), id.to_string());
                            tokio::spawn(async move {
                                if let Err(e) = container::kill(&d, &i).await {
                                    tracing::warn!("{e}");
                                }
                            });
                        }
                        _ => {
                            eprintln!("dockwatch: quitting now");
                            abort.cancel();
                            stop_reading.cancel();
                        }
                    }
                }
            }
            () = sleep_until(deadline), if deadline.is_some() && !abort.is_cancelled() => {
                eprintln!("dockwatch: --flush-timeout reached; saving what is left to the spool");
                abort.cancel();
                stop_reading.cancel();
            }
        }
    };
    // The shipper is done: the reader ends too (its channel is closed).
    stop_reading.cancel();
    saver.lock().expect("saver").flush();
    let mut reader_report = match reader_report {
        Some(r) => r,
        None => reader.await.unwrap_or_default(),
    };
    tracker.wait().await;

    // The container: its exit code, or stop it if it still runs (delivery failed, aborted).
    let mut code = container::exit_code(docker, id).await.ok().flatten();
    if code.is_none() {
        if let Err(e) = container::stop(docker, id, cfg.stop_timeout).await {
            tracing::warn!("{e}");
        }
        code = container::exit_code(docker, id).await.ok().flatten();
    }

    let mut undelivered = ship_report.undelivered;
    undelivered.append(&mut reader_report.unsent);
    let mut saved = String::new();
    if !undelivered.is_empty() {
        let header = spool::Header {
            dockwatch_spool: 1,
            group: cfg.ship.group.clone(),
            stream: cfg.ship.stream.clone(),
            container: id.to_string(),
            region: cfg.checkpoint.region.clone(),
            endpoint_url: cfg.checkpoint.endpoint_url.clone(),
            events: undelivered.len(),
            split_streams: cfg.ship.split_streams,
        };
        match spool::write(&cfg.spool_dir, &header, &undelivered) {
            Ok(p) => saved = format!(", saved to {}", p.display()),
            Err(e) => {
                saved = format!(
                    " and could not be saved to {}: {e}",
                    cfg.spool_dir.display()
                )
            }
        }
    }
    print_summary(
        cfg,
        &ship_report.stats,
        &reader_report,
        code,
        started,
        undelivered.len(),
        &saved,
    );

    let complete = ship_report.fatal.is_none()
        && undelivered.is_empty()
        && reader_report.error.is_none()
        && !reader_report.stopped;
    let result = if let Some(failure) = ship_report.fatal {
        Err(RunError::Delivery {
            failure,
            undelivered: undelivered.len(),
            saved,
        })
    } else if let Some(e) = reader_report.error {
        Err(RunError::Docker(e))
    } else if let Some(s) = interrupted {
        Ok(s.exit_code())
    } else {
        Ok(code.map_or(exit_codes::FAILURE, exit_codes::from_container))
    };
    Outcome { result, complete }
}

fn print_summary(
    cfg: &Session,
    s: &crate::sink::ShipStats,
    r: &ReaderReport,
    code: Option<i64>,
    started: Instant,
    undelivered: usize,
    saved: &str,
) {
    let mut line = format!(
        "dockwatch: shipped {} events ({}) in {} requests to {}/{} in {:.1}s",
        s.events,
        human_bytes(s.message_bytes),
        s.requests,
        cfg.ship.group,
        cfg.ship.stream,
        started.elapsed().as_secs_f64()
    );
    match code {
        Some(c) => line.push_str(&format!("; container exited with code {c}")),
        None => line.push_str("; container state unknown"),
    }
    let mut notes = Vec::new();
    if s.retries > 0 {
        notes.push(format!("{} retries ({} throttled)", s.retries, s.throttled));
    }
    if s.recreated > 0 {
        notes.push(format!("group/stream recreated {} times", s.recreated));
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
    let f = r.framing;
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
    if s.skipped_duplicates > 0 {
        notes.push(format!(
            "{} events already in CloudWatch not sent again",
            s.skipped_duplicates
        ));
    }
    if f.split_pieces > 0 {
        notes.push(format!(
            "{} extra events from splitting long lines",
            f.split_pieces
        ));
    }
    if undelivered > 0 {
        notes.push(format!("{undelivered} events NOT delivered{saved}"));
    }
    if !notes.is_empty() {
        line.push_str(" (");
        line.push_str(&notes.join("; "));
        line.push(')');
    }
    eprintln!("{line}");
}

fn human_bytes(b: u64) -> String {
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

async fn sleep_until(at: Option<tokio::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}
