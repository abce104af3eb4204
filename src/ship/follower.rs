//! One container's shipping under `dockwatch ship`: its checkpoint, its destination, the
//! main job's pipeline on the engine's log, and what the daemon is told when it ends.
//!
//! ```text
//!  checkpoint STATE/containers/<id>.json: load (a restart) or create (a new container)
//!  destination: group/stream made sure of, retried until CloudWatch answers or a stop
//!  start: after the checkpoint's position, skipping what each stream already holds past it
//!         (the same rule as `dockwatch resume`: what was in flight at a crash is not sent
//!         twice), or from the log's beginning
//!  ship:  reader (the engine's log files, held open by the daemon since the container was
//!         first seen, or the logs endpoint) → framing → transforms → batcher → sink, through the
//!         host's shared request budget, until the log ends (the container exited) or a stop
//!  end:   Drained (every line up to the exit delivered: the checkpoint records the exit's
//!         `FinishedAt`), Removed (every line delivered, then removed: its files were held),
//!         Stopped (the rest waits in the engine's log), Gone (removed before its log was
//!         read to the end), Failed (retried by the daemon later)
//! ```
//!
//! The container is never touched: stopping `ship` leaves every container running, and
//! nothing is spooled, because what was not delivered is still in the engine's log after the
//! checkpoint's position.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::aws::logs as cw;
use crate::config::TransformConfig;
use crate::config::ship::{Facts, HostConfig};
use crate::docker::events::{self, ContainerFacts};
use crate::docker::files::LogFiles;
use crate::docker::{self, DockerError};
use crate::pipeline::checkpoint::Checkpoint;
use crate::pipeline::job::stored_past;
use crate::pipeline::reader::FilesStart;
use crate::pipeline::sink::LogService;
use crate::pipeline::sink::split;
use crate::pipeline::supervisor::{self, Followed, Session, Start};
use crate::util::backoff::Backoff;

/// What a follower needs from the daemon; cheap to clone.
#[derive(Clone)]
pub(crate) struct Context<S> {
    pub(crate) cfg: Arc<HostConfig>,
    pub(crate) docker: bollard::Docker,
    /// CloudWatch through the host's request budget.
    pub(crate) service: S,
    /// CloudWatch itself, for setting up destinations and reading streams back.
    pub(crate) client: aws_sdk_cloudwatchlogs::Client,
    pub(crate) endpoint: String,
    pub(crate) host: Arc<str>,
    /// Called with the events delivered so far and the newest delivered timestamp.
    pub(crate) on_progress: OnProgress,
    /// The engine's log files, where this host reads them.
    pub(crate) files: Option<super::reading::FilesHost>,
    /// The logging driver of containers created without one.
    pub(crate) default_driver: String,
}

/// Told a container's id and how its follow goes.
pub(crate) type OnProgress = Arc<dyn Fn(&str, Progress) + Send + Sync>;

/// What a follower tells the daemon while it runs.
pub(crate) enum Progress<'a> {
    /// Where the container's events go.
    Destination { group: &'a str, stream: &'a str },
    /// Events delivered in this follow, and the newest delivered timestamp (ms).
    Delivered { events: u64, last_ms: i64 },
    /// Output rotated away before it was read.
    Lost(&'a crate::docker::files::Lost),
}

/// How a follower ended.
#[derive(Debug)]
pub(crate) enum Ended {
    /// The container exited and everything it wrote is delivered.
    Drained,
    /// Everything it wrote is delivered, and it was removed since (its files were held).
    Removed,
    /// A stop: the rest is shipped by the next start.
    Stopped,
    /// The container was removed; what it wrote after the last line read is gone.
    Gone,
    /// Shipping failed (CloudWatch refused for good, the engine lost): tried again later.
    Failed(String),
    /// Started again while its log was read: followed again at once.
    Restarted,
    /// Its destination cannot be made from the templates: not shipped.
    Skipped(String),
}

/// What the daemon learns when a follower ends.
#[derive(Debug)]
pub(crate) struct Outcome {
    pub(crate) id: String,
    pub(crate) ended: Ended,
    pub(crate) group: String,
    pub(crate) stream: String,
    pub(crate) events: u64,
    pub(crate) bytes: u64,
    pub(crate) retries: u64,
    pub(crate) throttled: u64,
    pub(crate) skipped_duplicates: u64,
}

/// The checkpoints' directory under the state directory.
pub(crate) fn checkpoints(state_dir: &Path) -> PathBuf {
    state_dir.join("containers")
}

/// Ships one container until it ends or `stop` is cancelled; `files`: its log files, held
/// open already (else the logs endpoint).
pub(crate) async fn follow<S: LogService>(
    ctx: Context<S>,
    facts: ContainerFacts,
    files: Option<Box<LogFiles>>,
    stop: CancellationToken,
) -> Outcome {
    let dir = checkpoints(&ctx.cfg.state_dir);
    let path = Checkpoint::path(&dir, &facts.id);
    let mut outcome = Outcome {
        id: facts.id.clone(),
        ended: Ended::Stopped,
        group: String::new(),
        stream: String::new(),
        events: 0,
        bytes: 0,
        retries: 0,
        throttled: 0,
        skipped_duplicates: 0,
    };
    let known = path.exists().then(|| Checkpoint::load(&path));
    let (cp, existed) = match known {
        Some(Ok(cp)) => (cp, true),
        Some(Err(e)) => {
            outcome.ended = Ended::Failed(format!("its checkpoint cannot be read: {e}"));
            return outcome;
        }
        None => match new_checkpoint(&ctx, &facts) {
            Ok(cp) => (cp, false),
            Err(why) => {
                outcome.ended = Ended::Skipped(why);
                return outcome;
            }
        },
    };
    outcome.group.clone_from(&cp.group);
    outcome.stream.clone_from(&cp.stream);
    let destination = Progress::Destination {
        group: &cp.group,
        stream: &cp.stream,
    };
    (ctx.on_progress)(&facts.id, destination);
    let Some(mut start) = prepare(&ctx, &cp, existed, &stop).await else {
        return outcome;
    };
    start.files = files.map(|f| {
        let (id, on_progress) = (facts.id.clone(), ctx.on_progress.clone());
        FilesStart {
            files: *f,
            on_lost: Arc::new(move |l| on_progress(&id, Progress::Lost(l))),
        }
    });
    let session = session(&ctx, cp, &dir);
    if let Err(e) = session.checkpoint.save(&dir) {
        outcome.ended = Ended::Failed(format!(
            "cannot write its checkpoint in {}: {e}",
            dir.display()
        ));
        return outcome;
    }
    let followed = supervisor::follow(
        &session,
        &ctx.docker,
        ctx.service.clone(),
        start,
        stop.clone(),
        ctx.cfg.drain_timeout,
    )
    .await;
    let s = followed.ship.stats;
    outcome.events = s.events;
    outcome.bytes = s.message_bytes;
    outcome.retries = s.retries;
    outcome.throttled = s.throttled;
    outcome.skipped_duplicates = s.skipped_duplicates;
    outcome.ended = judge(&ctx, &dir, followed, stop.is_cancelled()).await;
    outcome
}

/// The checkpoint of a container seen for the first time: its destination from the templates.
fn new_checkpoint(ctx: &Context<impl Sized>, f: &ContainerFacts) -> Result<Checkpoint, String> {
    let facts = Facts {
        host: &ctx.host,
        name: &f.name,
        id: &f.id,
        image: &f.image,
        labels: &f.labels,
        sample: false,
    };
    let group = ctx.cfg.group.render(&facts)?;
    let stream = ctx.cfg.stream.render(&facts)?;
    let ship = crate::config::ShipConfig::new(group, stream).map_err(|e| e.to_string())?;
    if ctx.cfg.ship.split_streams {
        crate::config::validate_stream_name(&format!("{}/stdout", ship.stream))
            .map_err(|e| e.to_string())?;
    }
    let mut cp = Checkpoint::new(
        &f.id,
        &ship.group,
        &ship.stream,
        ctx.client.config().region().map(|r| r.to_string()),
        ctx.cfg.aws.endpoint_url.clone(),
        true,
        ctx.cfg.ship.max_event_size,
    )
    .with_transforms(&ctx.cfg.transforms)
    .with_split_streams(ctx.cfg.ship.split_streams);
    // Nothing the container wrote is older: a restart with no position reads its streams
    // back from here.
    cp.created_ms = f.created_ms - 1000;
    Ok(cp)
}

/// The destination made sure of and, for a known container, what its streams hold past the
/// checkpoint; retried (CloudWatch down: the output waits in the engine's log) until it
/// works or `stop`. `None` when stopped first.
async fn prepare<S>(
    ctx: &Context<S>,
    cp: &Checkpoint,
    existed: bool,
    stop: &CancellationToken,
) -> Option<Start> {
    let mut backoff = Backoff::new(Duration::from_millis(500), Duration::from_secs(30));
    loop {
        let attempt = async {
            for name in split::stream_names(&cp.stream, cp.split_streams) {
                cw::ensure_destination(
                    &ctx.client,
                    &cp.group,
                    &name,
                    3,
                    ctx.cfg.ship.retention_days,
                )
                .await
                .map_err(|f| f.to_string())?;
            }
            if !existed {
                return Ok(Start::default());
            }
            let resume = stored_past(&ctx.client, cp, &ctx.endpoint)
                .await
                .map_err(|e| crate::util::chain(&e))?;
            Ok::<_, String>(Start {
                position: cp.position(),
                resume: Some(resume),
                ..Start::default()
            })
        };
        let r = tokio::select! {
            r = attempt => r,
            () = stop.cancelled() => return None,
        };
        match r {
            Ok(start) => return Some(start),
            Err(why) => {
                let wait = backoff.next_delay();
                if backoff.attempts() <= 1 || backoff.attempts().is_multiple_of(10) {
                    super::log(&format!(
                        "{}/{}: CloudWatch not ready ({why}); trying again",
                        cp.group, cp.stream
                    ));
                }
                tokio::select! {
                    () = tokio::time::sleep(wait) => {}
                    () = stop.cancelled() => return None,
                }
            }
        }
    }
}

fn session<S>(ctx: &Context<S>, checkpoint: Checkpoint, dir: &Path) -> Session {
    let on_progress = ctx.on_progress.clone();
    let id = checkpoint.container_id.clone();
    Session {
        ship: crate::config::ShipConfig {
            group: checkpoint.group.clone(),
            stream: checkpoint.stream.clone(),
            max_event_size: checkpoint.max_event_size,
            split_streams: checkpoint.split_streams,
            ..ctx.cfg.ship.clone()
        },
        echo: false,
        quiet: true,
        keep_container: true,
        stop_timeout: Duration::ZERO,
        flush_timeout: ctx.cfg.drain_timeout,
        spool_dir: dir.to_path_buf(),
        state_dir: dir.to_path_buf(),
        transforms: TransformConfig {
            container: docker::short_id(&checkpoint.container_id).to_string(),
            ..ctx.cfg.transforms.clone()
        },
        checkpoint,
        on_progress: Some(Arc::new(move |events, last_ms| {
            on_progress(&id, Progress::Delivered { events, last_ms })
        })),
    }
}

/// How the follow ended; a drained container's checkpoint records its exit.
async fn judge<S>(ctx: &Context<S>, dir: &Path, f: Followed, stopped: bool) -> Ended {
    let Followed {
        ship,
        reader,
        mut checkpoint,
    } = f;
    if let Some(e) = reader.error {
        return match e {
            DockerError::ContainerGone { .. } => Ended::Gone,
            e => Ended::Failed(e.to_string()),
        };
    }
    if let Some(f) = ship.fatal {
        return Ended::Failed(format!("delivery failed: {f}"));
    }
    if stopped || reader.stopped || !ship.undelivered.is_empty() {
        return Ended::Stopped;
    }
    match events::inspect(&ctx.docker, &checkpoint.container_id).await {
        Ok(Some(now)) if !now.running => {
            checkpoint.drained = Some(now.finished_at);
            if let Err(e) = checkpoint.save(dir) {
                tracing::warn!("cannot update the checkpoint: {e}");
            }
            Ended::Drained
        }
        // Started again meanwhile: its new output follows the checkpoint.
        Ok(Some(_)) => Ended::Restarted,
        Ok(None) if reader.read_to_end => Ended::Removed,
        Ok(None) => Ended::Gone,
        Err(e) => Ended::Failed(e.to_string()),
    }
}
