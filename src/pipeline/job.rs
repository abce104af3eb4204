//! The main job: check the destination, run the container, ship its output, clean up.
//!
//! ```text
//!  preflight: AWS client, Docker engine, image; create container, its shell, group/stream
//!  ──► start ──► reader task ──(bounded channel)──► shipper task
//!                                   (docker logs → framing)            (batcher → PutLogEvents)
//!  stop steps (one per signal, crate::shutdown::Stop):
//!    Graceful: docker stop (grace), delivery deadline starts
//!    Kill: kill the container       Abandon: stop now, spool what is left
//!  end: exit code, spool of anything undelivered, summary, container removed
//! ```
//!
//! Shutdown is passed in: [`run`] reads a [`Shutdown`], so tests and other callers (the agent,
//! on-upload) drive it without process signals. The shipping itself is watched by
//! [`super::supervisor`].
//!
//! A run that could not deliver everything (dockwatch killed, delivery failed for good, the
//! deadline passed) keeps its container and its checkpoint, and [`resume`] ships the rest.

use std::time::{Duration, Instant};

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::buffer::{self, Attached};
use super::checkpoint::Checkpoint;
use super::reader::Chunk;
use super::sink::split;
use super::spool;
use super::supervisor::{self, Report, Session, Start};
use crate::aws::logs::{self as cw, preflight_error};
use crate::aws::retry::Failure;
use crate::aws::{AwsError, AwsOptions};
use crate::config::{ConfigError, ReadPath, ResumeConfig, RunConfig, ShipConfig};
use crate::docker::attach::Tap;
use crate::docker::{self, DockerError, container};
use crate::exit_codes;
use crate::shutdown::{Shutdown, Signal};

/// Why the main job failed.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error(transparent)]
    Docker(#[from] DockerError),
    #[error(transparent)]
    Aws(#[from] AwsError),
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
            RunError::Aws(e) if e.is_usage() => exit_codes::USAGE,
            RunError::Config(_) => exit_codes::USAGE,
            RunError::InterruptedEarly(s) => s.exit_code(),
            _ => exit_codes::FAILURE,
        }
    }
}

/// Runs the main job and returns the exit code.
pub async fn run(cfg: RunConfig, shutdown: Shutdown) -> Result<i32, RunError> {
    let launched = launch(&cfg, &shutdown).await?;
    launched.ship(shutdown).await
}

/// A container created and started by [`launch`], whose output is not shipped yet.
pub(crate) struct Launched {
    /// The container's id.
    pub(crate) id: String,
    /// How to ship it.
    session: Session,
    /// The engine.
    docker: bollard::Docker,
    /// CloudWatch Logs.
    client: aws_sdk_cloudwatchlogs::Client,
    /// When the job began, for the summary.
    started: Instant,
    /// The attach stream, for `--invalid-utf8 escape` on the logs path.
    tap: Option<Tap>,
    /// The attach path, when the run reads it.
    attached: Option<Attached>,
}

impl Launched {
    /// Ships the container's output until it exits (or an interruption), then cleans up.
    pub(crate) async fn ship(self, shutdown: Shutdown) -> Result<i32, RunError> {
        let start = Start {
            tap: self.tap,
            attached: self.attached,
            ..Start::default()
        };
        finish(
            &self.session,
            &self.docker,
            &self.id,
            self.client,
            shutdown,
            self.started,
            start,
        )
        .await
    }
}

/// The main job up to a started container: CloudWatch destination, image, container,
/// checkpoint. Used by `dockwatch run` and by the agent's LaunchContainer.
pub(crate) async fn launch(cfg: &RunConfig, shutdown: &Shutdown) -> Result<Launched, RunError> {
    let started = Instant::now();
    if cfg.aws.secret_on_command_line() {
        crate::say!(
            "dockwatch: warning: a secret on the command line is visible to other local users; prefer AWS_SECRET_ACCESS_KEY or --aws-profile"
        );
    }
    // Start-up calls can wait long (an endpoint that never answers, a slow pull): a stop
    // asked for meanwhile ends them at once, before any container exists.
    let mut stop = shutdown.clone();
    let (client, docker) = tokio::select! {
        r = prepare(cfg) => r?,
        () = stop.requested() => return Err(interrupted_early(shutdown)),
    };
    if shutdown.is_requested() {
        return Err(interrupted_early(shutdown));
    }

    let id = container::create(&docker, &cfg.container).await?;
    tracing::debug!("created container {id}");
    // The shell, then the destination: a run that cannot start creates nothing in CloudWatch.
    let endpoint = cw::endpoint_of(&client, &cfg.aws);
    let checked = async {
        container::check_shell(&docker, &id, &cfg.container).await?;
        ensure_destinations(&client, &cfg.ship, &endpoint).await
    };
    let checked = tokio::select! {
        r = checked => r,
        () = stop.requested() => Err(interrupted_early(shutdown)),
    };
    if let Err(e) = checked {
        let _ = container::remove(&docker, &id).await;
        return Err(e);
    }
    let session = session_for(cfg, &id, &client);
    let (tap, attached) = match attach_and_start(cfg, &docker, &id, &session.state_dir).await {
        Ok(both) => both,
        Err(e) => {
            let e = start_failure(&docker, &id, e).await;
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
        attached,
    })
}

/// The run's session for the created container `id`, its checkpoint written (a warning when
/// it cannot be: the run goes on, a crash could not be resumed).
fn session_for(cfg: &RunConfig, id: &str, client: &aws_sdk_cloudwatchlogs::Client) -> Session {
    let session = Session {
        ship: cfg.ship.clone(),
        echo: cfg.echo,
        quiet: cfg.quiet,
        keep_container: cfg.keep_container,
        stop_timeout: cfg.stop_timeout,
        flush_timeout: cfg.flush_timeout,
        spool_dir: cfg.spool_dir.clone(),
        state_dir: cfg.state_dir.clone(),
        checkpoint: Checkpoint::new(
            id,
            &cfg.ship.group,
            &cfg.ship.stream,
            client.config().region().map(|r| r.to_string()),
            cfg.aws.endpoint_url.clone(),
            cfg.keep_container,
            cfg.ship.max_event_size,
        )
        .with_transforms(&cfg.transforms)
        .with_split_streams(cfg.ship.split_streams)
        .reading_attach(attach_budget(cfg).is_some()),
        transforms: crate::config::TransformConfig {
            container: docker::short_id(id).to_string(),
            ..cfg.transforms.clone()
        },
        on_progress: None,
    };
    if let Err(e) = session.checkpoint.save(&session.state_dir) {
        crate::say!(
            "dockwatch: warning: cannot write the checkpoint in {}: {e}; a crash could not be resumed",
            session.state_dir.display()
        );
    }
    session
}

/// Attaches what the run reads (before the start, so that no byte is missed: the attach
/// path, or the raw bytes for `--invalid-utf8 escape` on the logs path), the standard input
/// for `-i`, then starts the container.
async fn attach_and_start(
    cfg: &RunConfig,
    docker: &bollard::Docker,
    id: &str,
    state_dir: &std::path::Path,
) -> Result<(Option<Tap>, Option<Attached>), DockerError> {
    let attached = match attach_budget(cfg) {
        Some(budget) => {
            let dir = buffer::dir(state_dir, id);
            Attached::start(docker, id, cfg.container.tty, &dir, budget).await?
        }
        None => None,
    };
    let tap = if cfg.transforms.escape_invalid_utf8 && attached.is_none() {
        Some(Tap::attach(docker, id, cfg.container.tty).await?)
    } else {
        None
    };
    if cfg.container.run.stdin {
        container::forward_stdin(docker, id).await?;
    }
    container::start(docker, id, &cfg.container).await?;
    Ok((tap, attached))
}

/// What a failed attach or start means: 404 (removed, or something the container needs is
/// missing: a network) or 409 (from start: marked for removal, the engine's only conflict for
/// starting a created container) is [`DockerError::ContainerGone`] only when the engine says
/// the container is gone.
async fn start_failure(docker: &bollard::Docker, id: &str, e: DockerError) -> DockerError {
    let maybe_gone = matches!(
        e,
        DockerError::Answered {
            status: 404 | 409,
            ..
        }
    );
    if maybe_gone && container::is_gone(docker, id).await {
        DockerError::ContainerGone {
            id: docker::short_id(id).to_string(),
        }
    } else {
        e
    }
}

/// The attach path's buffer budget, when the run reads the attach path: asked for, and the
/// engine on a Unix socket (the pump reads the socket itself; other hosts read the logs
/// endpoint).
fn attach_budget(cfg: &RunConfig) -> Option<u64> {
    match cfg.read_path {
        ReadPath::Attach { buffer_bytes } if docker::logs::unix_socket().is_some() => {
            Some(buffer_bytes)
        }
        _ => None,
    }
}

/// The start-up calls before the container: the CloudWatch client (its settings, no call
/// yet), the engine, the image.
async fn prepare(
    cfg: &RunConfig,
) -> Result<(aws_sdk_cloudwatchlogs::Client, bollard::Docker), RunError> {
    let client = cw::build(&cfg.aws).await?;
    let request_timeout = Duration::from_secs(120).max(cfg.stop_timeout + Duration::from_secs(60));
    let docker = docker::connect(request_timeout).await?;
    container::ensure_image(&docker, &cfg.container).await?;
    Ok((client, docker))
}

fn interrupted_early(shutdown: &Shutdown) -> RunError {
    RunError::InterruptedEarly(shutdown.signal().unwrap_or(Signal::Terminate))
}

/// Creates the group and every destination stream when missing (start-up: few retries).
async fn ensure_destinations(
    client: &aws_sdk_cloudwatchlogs::Client,
    ship: &ShipConfig,
    endpoint: &str,
) -> Result<(), RunError> {
    for name in split::stream_names(&ship.stream, ship.split_streams) {
        cw::ensure_destination(client, &ship.group, &name, 3, ship.retention_days)
            .await
            .map_err(|f| preflight_error(f, endpoint.to_string()))?;
    }
    Ok(())
}

/// How supervision ended.
struct Outcome {
    result: Result<i32, RunError>,
    /// Everything the container wrote was delivered.
    complete: bool,
    /// The container is gone: nothing is left to resume.
    gone: bool,
}

/// The run's result from what supervision saw: a delivery failure first, then a reader
/// failure, then the signal that interrupted the container, else the container's exit code.
fn decide(r: Report) -> Outcome {
    let complete = r.complete();
    let gone = matches!(r.reader.error, Some(DockerError::ContainerGone { .. }));
    let result = if let Some(failure) = r.ship.fatal {
        Err(RunError::Delivery {
            failure,
            undelivered: r.undelivered,
            saved: r.saved,
        })
    } else if let Some(e) = r.reader.error {
        Err(RunError::Docker(e))
    } else if let Some(s) = r.interrupted {
        Ok(s.exit_code())
    } else if !complete {
        // Whatever the container did: not everything it wrote was delivered.
        Ok(exit_codes::FAILURE)
    } else {
        Ok(r.exit_code
            .map_or(exit_codes::FAILURE, exit_codes::from_container))
    };
    Outcome {
        result,
        complete,
        gone,
    }
}

/// Supervises the shipping, prints the summary, then cleans up after a complete delivery
/// (container removed unless kept, checkpoint and spools removed); keeps container and
/// checkpoint otherwise, and says how to resume.
async fn finish(
    session: &Session,
    docker: &bollard::Docker,
    id: &str,
    client: aws_sdk_cloudwatchlogs::Client,
    shutdown: Shutdown,
    started: Instant,
    start: Start,
) -> Result<i32, RunError> {
    let report = supervisor::supervise(session, docker, id, client, shutdown, started, start).await;
    let tell = !session.quiet || supervisor::needs_telling(&report);
    if tell {
        crate::say!(
            "{}",
            supervisor::summary(&session.ship.group, &session.ship.stream, &report)
        );
    }
    let (spool, still_running) = (report.spool.clone(), report.still_running);
    let outcome = decide(report);
    let short = docker::short_id(id);
    if outcome.gone {
        let _ = Checkpoint::remove(&session.state_dir, id);
        if let Some(p) = spool {
            crate::say!(
                "dockwatch: deliver what was read but not delivered with: dockwatch resume --spool {}",
                p.display()
            );
        }
    } else if outcome.complete {
        if session.keep_container {
            if tell {
                crate::say!("dockwatch: kept container {short}");
            }
        } else if let Err(e) = container::remove(docker, id).await {
            crate::say!("dockwatch: warning: could not remove container {short}: {e}");
        }
        let _ = Checkpoint::remove(&session.state_dir, id);
        // Spools of this container are now delivered (resume read the same output again).
        for f in spool::files_of(&session.spool_dir, id) {
            let _ = std::fs::remove_file(f);
        }
        // Nothing left behind in the user's directory: the directories go when empty.
        let _ = std::fs::remove_dir(&session.state_dir);
        let _ = std::fs::remove_dir(&session.spool_dir);
    } else {
        let running = if still_running {
            " (still running)"
        } else {
            ""
        };
        crate::say!(
            "dockwatch: kept container {short}{running} and its checkpoint in {}; ship the rest with: dockwatch resume {short}",
            session.state_dir.display()
        );
    }
    outcome.result
}

/// Resumes an interrupted run from its checkpoint, or delivers a spool file.
pub async fn resume(args: ResumeConfig, shutdown: Shutdown) -> Result<i32, RunError> {
    let started = Instant::now();
    if let Some(path) = &args.spool {
        return resume_spool(path, &args).await;
    }
    let path = find_checkpoint(&args)?;
    let cp = Checkpoint::load(&path).map_err(RunError::Resume)?;
    let ship = ShipConfig {
        max_event_size: cp.max_event_size,
        split_streams: cp.split_streams,
        credentials_timeout: args.credentials_timeout,
        ..ShipConfig::new(cp.group.clone(), cp.stream.clone())?
    };
    let (client, endpoint) = reconnect(&args, &cp.region, &cp.endpoint_url, &ship).await?;
    let docker =
        docker::connect(Duration::from_secs(120).max(args.stop_timeout + Duration::from_secs(60)))
            .await?;
    let id = cp.container_id.clone();
    if let Err(e) = container::exit_code(&docker, &id).await {
        return Err(RunError::Resume(format!(
            "container {} of the checkpoint {} cannot be read ({e}); its output is gone, remove the checkpoint",
            docker::short_id(&id),
            path.display()
        )));
    }
    let resume_from = stored_past(&client, &cp, &endpoint).await?;
    if !args.quiet {
        crate::say!(
            "dockwatch: resuming container {} after {} delivered events",
            docker::short_id(&id),
            cp.events_delivered
        );
    }
    let session = Session {
        ship,
        echo: args.echo,
        quiet: args.quiet,
        keep_container: cp.keep_container,
        stop_timeout: args.stop_timeout,
        flush_timeout: args.flush_timeout,
        spool_dir: args.spool_dir.clone(),
        state_dir: args.state_dir.clone(),
        transforms: cp.transforms()?,
        checkpoint: cp.clone(),
        on_progress: None,
    };
    if cp.escape_invalid_utf8 {
        crate::say!(
            "dockwatch: note: --invalid-utf8 escape: the rest is read from the engine's log, where invalid bytes are already replaced by U+FFFD"
        );
    }
    // A crashed run's disk buffer is not read: the engine's log has the same bytes.
    buffer::remove(&buffer::dir(&args.state_dir, &id));
    let start = Start {
        position: cp.position(),
        resume: Some(resume_from),
        ..Start::default()
    };
    finish(&session, &docker, &id, client, shutdown, started, start).await
}

/// What each destination stream holds past the checkpoint's position (see
/// `sink::dedupe`).
pub(crate) async fn stored_past(
    client: &aws_sdk_cloudwatchlogs::Client,
    cp: &Checkpoint,
    endpoint: &str,
) -> Result<Vec<split::ResumeFrom>, RunError> {
    let names = split::stream_names(&cp.stream, cp.split_streams);
    let marks = cp.marks(names.len()).map_err(RunError::Resume)?;
    let mut out = Vec::new();
    for (name, mark) in names.iter().zip(marks) {
        let (stored, complete) =
            cw::events_between(client, &cp.group, name, mark.last_ms, None, RESUME_EVENTS)
                .await
                .map_err(|f| preflight_error(f, endpoint.to_string()))?;
        if !complete {
            crate::say!(
                "dockwatch: warning: {}/{name} holds more than {RESUME_EVENTS} events past the checkpoint; only those are recognised, later ones may be sent twice",
                cp.group
            );
        }
        out.push(split::ResumeFrom {
            mark,
            stored,
            tolerance_ms: if cp.attached { ATTACH_TOLERANCE_MS } else { 0 },
        });
    }
    Ok(out)
}

/// CloudWatch again for a saved run (a checkpoint or a spool): the flags' AWS settings, with
/// the saved region and endpoint where the flags give none, and the destination made sure
/// of. The client and the endpoint's name for messages.
async fn reconnect(
    args: &ResumeConfig,
    region: &Option<String>,
    endpoint_url: &Option<String>,
    ship: &ShipConfig,
) -> Result<(aws_sdk_cloudwatchlogs::Client, String), RunError> {
    let mut aws = args.aws.clone();
    aws.region = aws.region.or(region.clone());
    aws.endpoint_url = aws.endpoint_url.or(endpoint_url.clone());
    destination(&aws, ship).await
}

/// The CloudWatch client, with the group and every destination stream made sure of; the
/// client and the endpoint's name for messages.
async fn destination(
    aws: &AwsOptions,
    ship: &ShipConfig,
) -> Result<(aws_sdk_cloudwatchlogs::Client, String), RunError> {
    let client = cw::build(aws).await?;
    let endpoint = cw::endpoint_of(&client, aws);
    ensure_destinations(&client, ship, &endpoint).await?;
    Ok((client, endpoint))
}

/// The one checkpoint `args` names (a container id prefix, or the only one there is).
fn find_checkpoint(args: &ResumeConfig) -> Result<std::path::PathBuf, RunError> {
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
    match candidates.as_slice() {
        [one] => Ok(one.clone()),
        [] => Err(RunError::Resume(format!(
            "no checkpoint{} in {}; nothing to resume",
            args.container
                .as_deref()
                .map(|c| format!(" for {c}"))
                .unwrap_or_default(),
            args.state_dir.display()
        ))),
        many => {
            let names: Vec<String> = many
                .iter()
                .filter_map(|p| {
                    p.file_stem()
                        .map(|n| docker::short_id(&n.to_string_lossy()).to_string())
                })
                .collect();
            Err(RunError::Resume(format!(
                "several checkpoints in {}: name the container, one of {}",
                args.state_dir.display(),
                names.join(", ")
            )))
        }
    }
}

/// Delivers the events of a spool file; removes it once they are all delivered.
async fn resume_spool(path: &std::path::Path, args: &ResumeConfig) -> Result<i32, RunError> {
    let started = Instant::now();
    let (header, events) = spool::read(path).map_err(RunError::Resume)?;
    let ship = ShipConfig {
        max_event_size: crate::pipeline::batcher::MAX_BATCH_BYTES,
        split_streams: header.split_streams,
        ..ShipConfig::new(header.group.clone(), header.stream.clone())?
    };
    let (client, _) = reconnect(args, &header.region, &header.endpoint_url, &ship).await?;
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
    crate::say!(
        "dockwatch: delivered {} events ({}) from {} to {}/{} in {:.1}s",
        s.events,
        supervisor::human_bytes(s.message_bytes),
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

/// Most events resume reads past the checkpoint's position, per stream: what can be stored
/// past it is at most `sink::MAX_AHEAD` batches of 10,000 events plus what the checkpoint's
/// save lags behind (40,000 events or 250 ms), with room to spare.
const RESUME_EVENTS: usize = 500_000;
/// How far apart the attach path's times (when dockwatch received the bytes) and the engine
/// log's (when its copier read them) may be for resume to take an event as already stored:
/// both are the host's clock at about the same moment (the copier lags the attach stream by
/// at most its 1 MiB pipe); a minute is far beyond that and far below any real gap.
const ATTACH_TOLERANCE_MS: i64 = 60_000;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline::supervisor::tests::report;

    #[test]
    fn a_complete_run_exits_with_the_container_code() {
        let o = decide(report());
        assert!(o.complete);
        assert_eq!(o.result.unwrap(), 3);
    }

    #[test]
    fn a_signal_that_stopped_the_container_names_the_exit_code() {
        let o = decide(Report {
            interrupted: Some(Signal::Terminate),
            ..report()
        });
        assert_eq!(o.result.unwrap(), exit_codes::SIGTERM);
    }

    #[test]
    fn undelivered_events_make_a_run_incomplete() {
        let r = Report {
            undelivered: 7,
            saved: ", saved to /tmp/x.jsonl".into(),
            ..report()
        };
        assert!(!decide(r).complete);
    }

    #[test]
    fn undelivered_events_exit_non_zero_although_the_container_exited_0() {
        let r = Report {
            exit_code: Some(0),
            unread: crate::pipeline::supervisor::Unread {
                events: 3,
                exact: true,
            },
            ..report()
        };
        let o = decide(r);
        assert!(!o.complete);
        assert_eq!(o.result.unwrap(), exit_codes::FAILURE);
    }

    #[test]
    fn a_delivery_failure_wins_over_the_exit_code() {
        let mut r = report();
        r.ship.fatal = Some(Failure::Construction("bad".into()));
        r.undelivered = 2;
        let o = decide(r);
        assert!(!o.complete);
        assert!(matches!(
            o.result,
            Err(RunError::Delivery { undelivered: 2, .. })
        ));
    }
}
