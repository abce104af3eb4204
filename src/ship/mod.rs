//! `dockwatch ship`: every selected container of the Docker host to CloudWatch Logs, each
//! with the main job's guarantees, for as long as the daemon runs.
//!
//! ```text
//!  engine events (start, die, destroy) ─┐
//!  every 10 s, and on (re)connect ──────┴► reconcile: which containers need a follower
//!        │                                   (running, or exited with output not yet
//!        │                                    delivered to its end, and selected)
//!        └► one follower task per container (`follower`): checkpoint, destination,
//!           the main job's pipeline on the engine's log, all through one request budget
//!  SIGHUP: the selection reloaded     SIGINT/SIGTERM: every follower drains (--drain-timeout)
//! ```
//!
//! Design (the invariants that make "every line once, in order" hold across restarts):
//! 1. **The engine's log is the buffer.** A follower reads the container's json-file log
//!    through the logs endpoint; the container never waits on dockwatch or CloudWatch.
//!    Whatever is not delivered when `ship` stops or dies is still in that log.
//! 2. **A checkpoint per container** (`STATE/containers/<id>.json`, the main job's format):
//!    the position up to which everything is acknowledged, moved only by acknowledgements,
//!    written atomically. A restart continues after it and skips what each stream holds past
//!    it (what was in flight when `ship` was killed), exactly as `dockwatch resume` does.
//! 3. **Which containers to follow is decided from state, not from events.** Events are lost
//!    while the engine connection is down and across an engine restart, so they only prompt
//!    a look: a container is followed when it is selected and running, or exited with a
//!    checkpoint that does not record this exit as drained (`drained` = its `FinishedAt`),
//!    or exited without a checkpoint but created after `ship` first ran on this state
//!    directory (it started and ended while `ship` was down). One follower per container at
//!    a time; a start during a follow follows again after it.
//! 4. **Shared limits.** One budget of PutLogEvents in flight for the host (`--max-requests`,
//!    fair: tokio's semaphore is first come, first served); each container has at most
//!    two requests out, one ready batch and two chunks in its channel, so memory grows with
//!    containers that are writing, by at most a few MiB each, never with the backlog.
//! 5. **Removal** (`docker rm`, `--rm`): the engine deletes the log with the container, so
//!    what a follower had not read by then is gone; the window is the follower's reading lag
//!    (the logs endpoint, a few ms in a steady run). Such a container is counted and logged,
//!    and its checkpoint removed.
//!
//! Stopping: the first signal stops reading everywhere and lets each follower deliver what
//! it read for up to `--drain-timeout`, then exits 0 (the checkpoints say where each
//! container continues); the second quits at once (the checkpoints are at most 250 ms old;
//! the next start skips what CloudWatch already holds).

mod follower;
mod reading;
pub(crate) mod status;

use crate::util::sleep_until;
use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::{Stream, StreamExt};
use tokio::sync::{Semaphore, mpsc};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::aws::AwsError;
use crate::aws::logs as cw;
use crate::cli::ShipArgs;
use crate::config::ship::{HostConfig, HostConfigError, Selection};
use crate::docker::events::{self, ContainerEvent, ContainerFacts, Happened};
use crate::docker::files::LogFiles;
use crate::docker::{self, DockerError};
use crate::exit_codes;
use crate::pipeline::checkpoint::Checkpoint;
use crate::pipeline::sink::budget::Budgeted;
use crate::shutdown::{Shutdown, Stop};
use crate::util::backoff::Backoff;
use crate::util::lock::{DirLock, LockError};
use crate::util::time::now_ms;
use follower::{Context, Ended, Outcome, Progress};
use status::Status;

/// Why `ship` could not run.
#[derive(Debug, thiserror::Error)]
pub enum HostError {
    #[error(transparent)]
    Config(#[from] HostConfigError),
    #[error(transparent)]
    Docker(#[from] DockerError),
    #[error(transparent)]
    Aws(#[from] AwsError),
    #[error("another 'dockwatch ship' holds {}; stop it or give another --state-dir", .0.display())]
    Locked(PathBuf),
    #[error("{what} {}: {source}", path.display())]
    Io {
        what: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
}

impl HostError {
    pub fn exit_code(&self) -> i32 {
        match self {
            HostError::Config(_) => exit_codes::USAGE,
            HostError::Aws(e) if e.is_usage() => exit_codes::USAGE,
            // A daemon's failure, as `download` and `on-upload` say it.
            _ => exit_codes::ERROR,
        }
    }
}

/// How often the containers are looked at again without an event.
const RECONCILE_EVERY: Duration = Duration::from_secs(10);
/// How often the status file is replaced.
const STATUS_EVERY: Duration = Duration::from_secs(2);
/// A failed follow is tried again after this, doubling up to [`RETRY_MAX`].
const RETRY_FIRST: Duration = Duration::from_secs(5);
const RETRY_MAX: Duration = Duration::from_secs(300);
/// How long a removed container is remembered as followed (see `Daemon::followed`).
const FOLLOWED_KEPT: Duration = Duration::from_secs(600);
/// The file that records when `ship` first ran on a state directory.
const SINCE_FILE: &str = "since";

/// The daemon's log line, on stderr (systemd's journal adds the time).
pub(crate) fn log(msg: &str) {
    crate::say!("dockwatch ship: {msg}");
}

/// Runs `dockwatch ship` (or `--status`); returns the exit code.
pub async fn ship(args: ShipArgs, mut shutdown: Shutdown) -> Result<i32, HostError> {
    if args.status {
        let dir = crate::config::ship::status_dir(&args)?;
        status::print(&dir).map_err(|source| HostError::Io {
            what: "cannot read the status in",
            path: dir,
            source,
        })?;
        return Ok(0);
    }
    let cfg = HostConfig::load(&args)?;
    let started = async {
        let client = cw::build(&cfg.aws).await?;
        let docker = docker::connect(Duration::from_secs(120)).await?;
        let engine = events::engine_info(&docker).await?;
        Ok::<_, HostError>((client, docker, engine))
    };
    let (client, docker, engine) = tokio::select! {
        r = started => r?,
        _ = shutdown.changed() => return Ok(0),
    };
    let endpoint = cw::endpoint_of(&client, &cfg.aws);
    tokio::select! {
        r = check_cloudwatch(&client, &endpoint) => r?,
        _ = shutdown.changed() => return Ok(0),
    }
    // State only once the engine and CloudWatch said yes: a bad start leaves nothing.
    let _lock = hold_state(&cfg.state_dir)?;
    let since_ms = first_run(&cfg.state_dir)?;
    let host = engine.name.clone();
    // Each followed container holds its log files open (rotated ones too, until read).
    raise_open_files_limit();
    let (files, read_note) = reading::files_of(&cfg, &engine);
    log(&read_note);
    let status = Arc::new(Mutex::new(Status {
        pid: std::process::id(),
        host: host.clone(),
        read_note,
        started_ms: now_ms(),
        max_requests: cfg.max_requests,
        ..Status::default()
    }));
    let stop_metrics = CancellationToken::new();
    if let Some(addr) = cfg.metrics_addr {
        crate::util::metrics_http::serve(addr, status.clone(), stop_metrics.clone())
            .await
            .map_err(|source| HostError::Io {
                what: "cannot listen for metrics on",
                path: addr.to_string().into(),
                source,
            })?;
        log(&format!("metrics on http://{addr}/metrics"));
    }
    let hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).map_err(
        |source| HostError::Io {
            what: "cannot listen for",
            path: "SIGHUP".into(),
            source,
        },
    )?;
    let permits = Arc::new(Semaphore::new(cfg.max_requests));
    let ctx = Context {
        service: Budgeted::new(client.clone(), permits),
        client,
        endpoint,
        docker,
        host: host.into(),
        on_progress: progress_into(status.clone()),
        files,
        default_driver: engine.log_driver,
        cfg: Arc::new(cfg),
    };
    log(&format!(
        "shipping the selected containers of {} to {}/{} (state in {})",
        ctx.host,
        ctx.cfg.group.source(),
        ctx.cfg.stream.source(),
        ctx.cfg.state_dir.display()
    ));
    let (done_tx, done_rx) = mpsc::channel(64);
    let mut daemon = Daemon {
        selection: ctx.cfg.selection.clone(),
        ctx,
        args,
        followers: HashMap::new(),
        done_tx,
        skipped: HashSet::new(),
        followed: HashMap::new(),
        retry: HashMap::new(),
        since_ms,
        status,
        draining: false,
    };
    let code = daemon.run(done_rx, hup, &mut shutdown).await;
    daemon.publish();
    stop_metrics.cancel();
    Ok(code)
}

/// The state directory, created, and this process's exclusive hold on it.
fn hold_state(state_dir: &Path) -> Result<DirLock, HostError> {
    let dir = follower::checkpoints(state_dir);
    std::fs::create_dir_all(&dir).map_err(|source| HostError::Io {
        what: "cannot create the state directory",
        path: dir.clone(),
        source,
    })?;
    DirLock::acquire(state_dir, status::LOCK_FILE).map_err(|e| match e {
        LockError::Held(dir) => HostError::Locked(dir),
        LockError::Io { what, path, source } => HostError::Io { what, path, source },
    })
}

/// What the followers tell of their containers, into the status (`--status`, metrics); a
/// lost stretch of log is also said in the log.
fn progress_into(status: Arc<Mutex<Status>>) -> follower::OnProgress {
    Arc::new(move |id: &str, p: Progress| {
        let mut st = status.lock().expect("status");
        let Some(c) = st.containers.get_mut(id) else {
            return;
        };
        match p {
            Progress::Destination { group, stream } => {
                c.group = group.to_string();
                c.stream = stream.to_string();
            }
            Progress::Delivered { events, last_ms } => {
                c.events_now = events;
                c.last_ms = c.last_ms.max(last_ms);
            }
            Progress::Lost(l) => {
                log(&reading::describe_lost(&c.name, id, l));
                c.lost_gaps += 1;
                c.lost_files += l.files;
                c.lost_after_ms = l.after_ns.map_or(0, |n| n.div_euclid(1_000_000));
                c.lost_before_ms = l.before_ns.map_or(0, |n| n.div_euclid(1_000_000));
            }
        }
    })
}

/// One call at start: refused or missing credentials end `ship` at once (one line); an
/// endpoint that does not answer is said and waited for (the output waits in the engine's log).
async fn check_cloudwatch(
    client: &aws_sdk_cloudwatchlogs::Client,
    endpoint: &str,
) -> Result<(), HostError> {
    let call = client.describe_log_groups().limit(1).send();
    let failure = match tokio::time::timeout(Duration::from_secs(10), call).await {
        Ok(Ok(_)) => return Ok(()),
        Ok(Err(e)) => crate::aws::retry::failure_of(&e),
        Err(_) => crate::aws::retry::Failure::Timeout("no answer in 10 s".into()),
    };
    match cw::preflight_error(failure, endpoint.to_string()) {
        e @ AwsError::Unreachable { .. } => {
            log(&format!(
                "{}; shipping starts when it answers (the containers' output waits in the engine's log)",
                crate::util::chain(&e)
            ));
            Ok(())
        }
        // A server error without an AWS code may pass (an outage) or be a region the
        // endpoint does not serve: said, and delivery retries.
        e @ AwsError::NotAws { .. } => {
            log(&crate::util::chain(&e));
            Ok(())
        }
        AwsError::Call { .. } => Ok(()),
        e => Err(e.into()),
    }
}

/// Raises the soft limit of open files to the hard one (1,024 by default on Debian, where
/// the hard limit is far higher): a host's containers and their rotated files are held open.
fn raise_open_files_limit() {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit only read and write the struct passed.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0 && lim.rlim_cur < lim.rlim_max {
            lim.rlim_cur = lim.rlim_max;
            let _ = libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
        }
    }
}

/// When `ship` first ran on this state directory (ms), written the first time.
fn first_run(state_dir: &Path) -> Result<i64, HostError> {
    let path = state_dir.join(SINCE_FILE);
    if let Some(ms) = std::fs::read_to_string(&path)
        .ok()
        .and_then(|s| s.trim().parse::<i64>().ok())
    {
        return Ok(ms);
    }
    let ms = now_ms();
    crate::util::durable::replace(&path, ms.to_string().as_bytes()).map_err(|source| {
        HostError::Io {
            what: "cannot write",
            path,
            source,
        }
    })?;
    Ok(ms)
}

/// A follower running.
struct Running {
    stop: CancellationToken,
    /// Started again meanwhile: follow again when this one ends.
    again: bool,
}

/// A failed container's next try.
struct Retry {
    at: Instant,
    backoff: Backoff,
}

type Events = std::pin::Pin<Box<dyn Stream<Item = Result<Seen, DockerError>> + Send>>;

/// An event, and for a `create` on the files path the container's log files, held from the
/// moment the event arrived.
struct Seen {
    event: ContainerEvent,
    files: Option<Box<LogFiles>>,
}

/// Events queued between the engine and the daemon loop, at most.
const EVENTS_QUEUED: usize = 256;

/// The engine's container events, read by a task of their own: a `create` registers the
/// container's log files at once, before the daemon loop (which inspects each container it
/// considers) comes to it, so that a container that lives a millisecond and is removed with
/// `--rm` is held before its directory goes.
fn watched_events(docker: &bollard::Docker, files: Option<reading::FilesHost>) -> Events {
    let (tx, rx) = mpsc::channel(EVENTS_QUEUED);
    let stream = events::container_events(docker);
    tokio::spawn(async move {
        let mut stream = std::pin::pin!(stream);
        while let Some(item) = stream.next().await {
            let item = item.map(|event| {
                let files = match (&files, event.happened) {
                    (Some(host), Happened::Create) => reading::hold(host, &event.id),
                    _ => None,
                };
                Seen { event, files }
            });
            if tx.send(item).await.is_err() {
                break;
            }
        }
    });
    Box::pin(futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|item| (item, rx))
    }))
}

struct Daemon<S> {
    ctx: Context<S>,
    /// The selection in force (replaced on SIGHUP).
    selection: Selection,
    args: ShipArgs,
    followers: HashMap<String, Running>,
    done_tx: mpsc::Sender<Outcome>,
    /// Containers whose destination could not be made (said once).
    skipped: HashSet<String>,
    /// Containers a follower was started for, and when: a `create` event queued behind the
    /// daemon's work can arrive after its container was followed to its end (found by a
    /// reconcile first); its held files must not start a second follow from the beginning.
    followed: HashMap<String, Instant>,
    retry: HashMap<String, Retry>,
    since_ms: i64,
    status: Arc<Mutex<Status>>,
    draining: bool,
}

impl<S: crate::pipeline::sink::LogService> Daemon<S> {
    /// The loop: events, ended followers, the timers, SIGHUP, signals. The exit code.
    async fn run(
        &mut self,
        mut done_rx: mpsc::Receiver<Outcome>,
        mut hup: tokio::signal::unix::Signal,
        shutdown: &mut Shutdown,
    ) -> i32 {
        let mut events: Option<Events> = None;
        let mut reconnect = Backoff::new(Duration::from_millis(500), Duration::from_secs(5));
        let mut connect_at = Some(Instant::now());
        let mut tick = tokio::time::interval(RECONCILE_EVERY);
        let mut publish = tokio::time::interval(STATUS_EVERY);
        let mut seen: Option<Stop> = None;
        loop {
            if self.draining && self.followers.is_empty() {
                return 0;
            }
            tokio::select! {
                e = next_event(&mut events), if events.is_some() => match e {
                    Some(Ok(e)) => self.on_event(e).await,
                    other => {
                        let why = match other {
                            Some(Err(e)) => e.to_string(),
                            _ => "the event stream ended".into(),
                        };
                        self.engine_lost(&why);
                        events = None;
                        connect_at = Some(Instant::now() + reconnect.next_delay());
                    }
                },
                () = sleep_until(connect_at), if connect_at.is_some() && !self.draining => {
                    // Subscribe first, then look: nothing starts unseen in between.
                    let stream = watched_events(&self.ctx.docker, self.ctx.files.clone());
                    match self.reconcile().await {
                        Ok(()) => {
                            self.engine_back();
                            reconnect = Backoff::new(Duration::from_millis(500), Duration::from_secs(5));
                            events = Some(stream);
                            connect_at = None;
                        }
                        Err(e) => {
                            self.engine_lost(&e.to_string());
                            connect_at = Some(Instant::now() + reconnect.next_delay());
                        }
                    }
                }
                Some(o) = done_rx.recv() => self.on_done(o).await,
                _ = tick.tick(), if events.is_some() && !self.draining => {
                    if let Err(e) = self.reconcile().await {
                        tracing::debug!("reconcile: {e}");
                    }
                }
                _ = publish.tick() => self.publish(),
                _ = hup.recv() => self.reload().await,
                now = shutdown.changed(), if seen < Some(Stop::Kill) => {
                    if now >= Some(Stop::Kill) {
                        log("quitting now; each container continues from its checkpoint at the next start");
                        return shutdown.signal().map_or(exit_codes::SIGTERM, |s| s.exit_code());
                    }
                    seen = now;
                    self.drain();
                }
            }
        }
    }

    /// The first signal: every follower stops reading and delivers what it read.
    fn drain(&mut self) {
        self.draining = true;
        log(&format!(
            "stopping: delivering what {} container(s) read, for up to {} (--drain-timeout); a second signal quits now",
            self.followers.len(),
            humantime::format_duration(self.ctx.cfg.drain_timeout)
        ));
        for r in self.followers.values() {
            r.stop.cancel();
        }
    }

    fn engine_lost(&self, why: &str) {
        let mut st = self.status.lock().expect("status");
        if st.engine_up || st.engine_down_since_ms == 0 {
            log(&format!(
                "the Docker engine is unreachable ({why}); reconnecting (followers resume from their checkpoints)"
            ));
            st.engine_down_since_ms = now_ms();
        }
        st.engine_up = false;
    }

    fn engine_back(&self) {
        let mut st = self.status.lock().expect("status");
        if st.engine_down_since_ms > 0 && !st.engine_up && st.started_ms + 5_000 < now_ms() {
            log("the Docker engine is back");
        }
        st.engine_up = true;
        st.engine_down_since_ms = 0;
    }

    async fn on_event(&mut self, seen: Seen) {
        let e = seen.event;
        match e.happened {
            // Its log files are held since the event arrived (a container that lives a
            // millisecond and is removed at once is read to its end through them).
            Happened::Create => {
                if let Some(files) = seen.files
                    && !self.followers.contains_key(&e.id)
                    && !self.followed.contains_key(&e.id)
                {
                    self.consider_held(&e.id, Some((e.created_facts(), files)))
                        .await;
                }
            }
            Happened::Start => {
                if let Some(r) = self.followers.get_mut(&e.id) {
                    r.again = true;
                } else {
                    self.retry.remove(&e.id);
                    self.consider(&e.id).await;
                }
            }
            // The follower's log stream ends by itself.
            Happened::Die => {}
            Happened::Destroy => {
                // Events come in order: no `create` of it is queued any more.
                self.followed.remove(&e.id);
                if !self.followers.contains_key(&e.id) {
                    self.forget(&e.id);
                }
            }
        }
    }

    /// Looks at every container the engine has; removes the checkpoints of containers that
    /// are gone.
    async fn reconcile(&mut self) -> Result<(), DockerError> {
        let ids = events::list_ids(&self.ctx.docker).await?;
        let known: HashSet<&str> = ids.iter().map(String::as_str).collect();
        let dir = follower::checkpoints(&self.ctx.cfg.state_dir);
        for path in Checkpoint::list(&dir) {
            let Some(id) = path.file_stem().map(|s| s.to_string_lossy().into_owned()) else {
                continue;
            };
            if !known.contains(id.as_str()) && !self.followers.contains_key(&id) {
                self.forget(&id);
            }
        }
        // A removed container's destroy event can be missed (the engine connection down):
        // long past its creation, no event of it is queued.
        self.followed
            .retain(|id, at| known.contains(id.as_str()) || at.elapsed() < FOLLOWED_KEPT);
        for id in &ids {
            if !self.followers.contains_key(id) {
                self.consider(id).await;
            }
        }
        Ok(())
    }

    /// A container the engine no longer has: its checkpoint goes; said when its log had not
    /// been read to the end.
    fn forget(&mut self, id: &str) {
        let dir = follower::checkpoints(&self.ctx.cfg.state_dir);
        let path = Checkpoint::path(&dir, id);
        let Ok(cp) = Checkpoint::load(&path) else {
            self.drop_state(id);
            return;
        };
        if cp.drained.is_none() {
            self.removed_undrained(id, &cp.group, &cp.stream);
        }
        let _ = Checkpoint::remove(&dir, id);
        self.drop_state(id);
    }

    /// Everything kept about a container that no longer exists: what is shown of the
    /// containers stays bounded by those the engine has.
    fn drop_state(&mut self, id: &str) {
        self.retry.remove(id);
        self.skipped.remove(id);
        self.status.lock().expect("status").containers.remove(id);
    }

    fn removed_undrained(&self, id: &str, group: &str, stream: &str) {
        log(&format!(
            "container {} was removed before its log was confirmed read to the end: lines it wrote after the last one delivered to {group}/{stream}, if any, are gone with it",
            docker::short_id(id)
        ));
        self.status.lock().expect("status").removed_undrained += 1;
    }

    /// Starts a follower for `id` when it needs one (invariant 3).
    async fn consider(&mut self, id: &str) {
        self.consider_held(id, None).await;
    }

    /// [`Self::consider`], with the log files held since the container's creation and the
    /// facts its event told: a container removed before it is inspected is still shipped.
    async fn consider_held(&mut self, id: &str, held: Option<(ContainerFacts, Box<LogFiles>)>) {
        if self.draining || self.followers.contains_key(id) {
            return;
        }
        if self.retry.get(id).is_some_and(|r| Instant::now() < r.at) {
            return;
        }
        let (facts, held) = match (events::inspect(&self.ctx.docker, id).await, held) {
            (Ok(Some(f)), held) => (f, held.map(|(_, files)| files)),
            (Ok(None), Some((f, files))) => (f, Some(files)),
            (Ok(None), None) => return,
            (Err(e), _) => {
                tracing::debug!("inspect {}: {e}", docker::short_id(id));
                return;
            }
        };
        let removed_already = held.is_some() && !facts.running && facts.finished_at.is_empty();
        let chosen = self.selection.matches(&facts.candidate());
        if !chosen {
            return;
        }
        let dir = follower::checkpoints(&self.ctx.cfg.state_dir);
        let needed = facts.running
            || removed_already
            || (facts.created_only && self.ctx.files.is_some())
            || match Checkpoint::load(&Checkpoint::path(&dir, id)) {
                Ok(cp) => cp.drained.as_deref() != Some(facts.finished_at.as_str()),
                Err(_) => facts.created_ms >= self.since_ms,
            };
        if !needed {
            return;
        }
        let read = reading::choose(
            self.ctx.files.as_ref(),
            &self.ctx.default_driver,
            &facts,
            held,
        );
        let shown = read.shown();
        let files = match read {
            reading::Read::Files(f) => Some(f),
            reading::Read::Logs(_) if facts.created_only => return,
            reading::Read::Logs(_) => None,
            reading::Read::Gone => return,
            reading::Read::Skip(why) => {
                if self.skipped.insert(id.to_string()) {
                    log(&format!(
                        "container {} ({}) not shipped: {why}",
                        docker::short_id(id),
                        facts.name
                    ));
                    let mut st = self.status.lock().expect("status");
                    let c = st.containers.entry(id.to_string()).or_default();
                    c.name.clone_from(&facts.name);
                    c.state = "skipped".into();
                    c.read = shown;
                }
                return;
            }
        };
        let stop = CancellationToken::new();
        self.followed.insert(id.to_string(), Instant::now());
        self.followers.insert(
            id.to_string(),
            Running {
                stop: stop.clone(),
                again: false,
            },
        );
        {
            let mut st = self.status.lock().expect("status");
            let c = st.containers.entry(id.to_string()).or_default();
            c.name.clone_from(&facts.name);
            c.state = "following".into();
            c.read = shown;
            c.events_before += c.events_now;
            c.events_now = 0;
        }
        let (ctx, done) = (self.ctx.clone(), self.done_tx.clone());
        tokio::spawn(async move {
            let outcome = follower::follow(ctx, facts, files, stop).await;
            let _ = done.send(outcome).await;
        });
    }

    /// A follower ended: what it did, and whether the container is followed again.
    async fn on_done(&mut self, o: Outcome) {
        let again = self.followers.remove(&o.id).is_some_and(|r| r.again);
        let short = docker::short_id(&o.id).to_string();
        let state = match &o.ended {
            Ended::Drained => "drained",
            Ended::Removed => "removed",
            Ended::Stopped => "stopped",
            Ended::Gone => "removed",
            Ended::Failed(_) => "failed",
            Ended::Restarted => "following",
            Ended::Skipped(_) => "skipped",
        };
        {
            let mut st = self.status.lock().expect("status");
            let c = st.containers.entry(o.id.clone()).or_default();
            c.state = state.into();
            c.group.clone_from(&o.group);
            c.stream.clone_from(&o.stream);
            // The last events of an exit (a line without newline) pass no position.
            c.events_now = c.events_now.max(o.events);
            c.bytes += o.bytes;
            c.retries += o.retries;
            c.throttled += o.throttled;
            if let Ended::Failed(_) = o.ended {
                st.failures += 1;
            }
        }
        match o.ended {
            Ended::Drained => {
                self.retry.remove(&o.id);
                tracing::info!("container {short}: delivered to its end");
            }
            Ended::Stopped => {}
            Ended::Removed => {
                tracing::info!("container {short}: delivered to its end, then removed");
                let _ = Checkpoint::remove(&follower::checkpoints(&self.ctx.cfg.state_dir), &o.id);
                self.drop_state(&o.id);
            }
            Ended::Gone => {
                self.removed_undrained(&o.id, &o.group, &o.stream);
                let _ = Checkpoint::remove(&follower::checkpoints(&self.ctx.cfg.state_dir), &o.id);
                self.drop_state(&o.id);
            }
            Ended::Failed(why) => {
                let r = self.retry.entry(o.id.clone()).or_insert_with(|| Retry {
                    at: Instant::now(),
                    backoff: Backoff::new(RETRY_FIRST, RETRY_MAX),
                });
                let wait = r.backoff.next_delay();
                r.at = Instant::now() + wait;
                log(&format!(
                    "container {short}: shipping stopped ({why}); trying again in {}",
                    humantime::format_duration(Duration::from_secs(wait.as_secs().max(1)))
                ));
            }
            Ended::Skipped(why) => {
                if self.skipped.insert(o.id.clone()) {
                    log(&format!("container {short} not shipped: {why}"));
                }
            }
            Ended::Restarted => {}
        }
        if !self.draining && (again || matches!(state, "following")) {
            self.consider(&o.id).await;
        }
    }

    /// SIGHUP: the selection again; followers of containers no longer selected stop.
    async fn reload(&mut self) {
        let selection = match self.ctx.cfg.reload(&self.args) {
            Ok(s) => s,
            Err(e) => {
                log(&format!(
                    "reload failed, keeping the previous selection: {}",
                    crate::util::chain(&e)
                ));
                return;
            }
        };
        self.selection = selection;
        let mut dropped = 0;
        for (id, r) in &self.followers {
            let keep = match events::inspect(&self.ctx.docker, id).await {
                Ok(Some(f)) => self.selection.matches(&f.candidate()),
                _ => true,
            };
            if !keep {
                r.stop.cancel();
                dropped += 1;
            }
        }
        log(&format!(
            "selection reloaded; {dropped} container(s) no longer selected"
        ));
        self.skipped.clear();
        if let Err(e) = self.reconcile().await {
            tracing::debug!("reconcile: {e}");
        }
    }

    /// The status file (and so `--status`) brought up to date.
    fn publish(&self) {
        let mut st = self.status.lock().expect("status");
        if let Err(e) = st.save(&self.ctx.cfg.state_dir) {
            tracing::warn!("cannot write the status file: {e}");
        }
    }
}

async fn next_event(events: &mut Option<Events>) -> Option<Result<Seen, DockerError>> {
    match events {
        Some(s) => s.next().await,
        None => std::future::pending().await,
    }
}
