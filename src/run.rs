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

use std::time::{Duration, Instant};

use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::RunConfig;
use crate::docker::{self, DockerError, container};
use crate::exit_codes;
use crate::reader::{self, ReaderConfig, ReaderReport};
use crate::sink::client::{self as cw, preflight_error};
use crate::sink::retry::Failure;
use crate::sink::{ShipReport, Shipper, SinkError};
use crate::spool;

/// A signal that asks dockwatch to stop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signal {
    Interrupt,
    Terminate,
}

impl Signal {
    fn exit_code(self) -> i32 {
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
}

impl RunError {
    pub fn exit_code(&self) -> i32 {
        match self {
            RunError::Docker(DockerError::NoShell { .. }) => exit_codes::NO_SHELL,
            RunError::Sink(SinkError::NoRegion | SinkError::NoCredentials) => exit_codes::USAGE,
            RunError::InterruptedEarly(s) => s.exit_code(),
            _ => exit_codes::FAILURE,
        }
    }
}

/// Runs the main job and returns the exit code.
pub async fn run(
    cfg: RunConfig,
    mut interrupts: watch::Receiver<Interrupts>,
) -> Result<i32, RunError> {
    let started = Instant::now();
    if cfg.aws.secret_on_command_line() {
        eprintln!(
            "dockwatch: warning: a secret on the command line is visible to other local users; prefer AWS_SECRET_ACCESS_KEY or --aws-profile"
        );
    }
    let client = cw::build(&cfg.aws).await?;
    let endpoint = cw::endpoint_of(&client, &cfg.aws);
    cw::ensure_destination(&client, &cfg.ship.group, &cfg.ship.stream, 3)
        .await
        .map_err(|f| preflight_error(f, endpoint))?;

    let request_timeout = Duration::from_secs(120).max(cfg.stop_timeout + Duration::from_secs(60));
    let docker = docker::connect(request_timeout).await?;
    container::ensure_image(&docker, &cfg.container).await?;
    if let Some(s) = interrupts.borrow().first {
        return Err(RunError::InterruptedEarly(s));
    }

    let id = container::create(&docker, &cfg.container).await?;
    tracing::debug!("created container {id}");
    let result = supervise(&cfg, &docker, &id, client, &mut interrupts, started).await;
    if cfg.keep_container {
        eprintln!("dockwatch: kept container {}", &id[..12.min(id.len())]);
    } else if let Err(e) = container::remove(&docker, &id).await {
        eprintln!("dockwatch: warning: could not remove container {id}: {e}");
    }
    result
}

async fn supervise(
    cfg: &RunConfig,
    docker: &bollard::Docker,
    id: &str,
    client: aws_sdk_cloudwatchlogs::Client,
    interrupts: &mut watch::Receiver<Interrupts>,
    started: Instant,
) -> Result<i32, RunError> {
    container::start(docker, id, &cfg.container).await?;

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
        },
        tx,
        stop_reading.clone(),
    ));
    let shipper = tracker.spawn(Shipper::new(client, &cfg.ship).run(rx, abort.clone()));
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
        match spool::write(
            &cfg.spool_dir,
            &cfg.ship.group,
            &cfg.ship.stream,
            id,
            &undelivered,
        ) {
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

    if let Some(failure) = ship_report.fatal {
        return Err(RunError::Delivery {
            failure,
            undelivered: undelivered.len(),
            saved,
        });
    }
    if let Some(e) = reader_report.error {
        eprintln!("dockwatch: warning: reading the container's output ended early: {e}");
    }
    if let Some(s) = interrupted {
        return Ok(s.exit_code());
    }
    Ok(code.map_or(exit_codes::FAILURE, exit_codes::from_container))
}

fn print_summary(
    cfg: &RunConfig,
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
