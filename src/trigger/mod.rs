//! `dockwatch on-upload`: a container for each file uploaded to an S3 prefix.
//!
//! ```text
//! S3 ObjectCreated ──notification──► SQS ──ReceiveMessage──► loop (≤ N tasks, semaphore)
//!   task: skip if done (store) ─► GetObject ─► container (main job pipeline: logs to
//!   GROUP / stream named after the key) ─► PutObject outputs ─► record ─► DeleteMessage
//! ```
//!
//! Delivery is at least once, so a task is idempotent: an object (bucket, key, ETag) recorded
//! as succeeded ([`store`]) is not run again. While a task runs, its message's visibility is
//! extended every half timeout; a failed task makes its message visible again after a short
//! backoff, and after `--max-attempts` receives it is left alone for the queue's dead-letter
//! policy (`--setup` creates a dead-letter queue with that many receives). SIGINT/SIGTERM:
//! no new messages; running tasks get `--grace` to finish, then their containers are stopped
//! (the main job's own interruption path) and their messages become visible again.
//!
//! With `--on ecs` ([`crate::ecs`]) each file's task runs on Fargate instead, with `S3_BUCKET`
//! and `S3_KEY` as environment overrides (the task fetches and stores its own data).

pub(crate) mod claims;
pub(crate) mod event;
mod metrics;
mod preflight;
pub(crate) mod setup;
pub(crate) mod store;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_sqs::types::MessageSystemAttributeName;
use tokio::sync::Semaphore;
use tokio_util::task::TaskTracker;

use self::claims::{Claim, Claims, Wait};
use self::event::{Notice, Upload};
use self::store::{Outcome, Store, object_id};
use crate::aws::retry::chain;
use crate::aws::{AwsError, Clients};
use crate::config::{ConfigError, ContainerSpec, OnUploadConfig, RunConfig, ShipConfig};
use crate::ecs::EcsError;
use crate::exit_codes;
use crate::pipeline::job::RunError;
use crate::shutdown::{self, Shutdown, Stop};
use crate::util::backoff::Backoff;

/// Why `on-upload` stopped.
#[derive(Debug, thiserror::Error)]
pub enum TriggerError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Aws(#[from] AwsError),
    #[error("--setup: cannot {what}: {detail}")]
    Setup { what: String, detail: String },
    #[error("{0}")]
    Store(String),
    /// A start-up check failed: the arguments or the account need changing.
    #[error("{0}")]
    Check(String),
}

impl TriggerError {
    pub fn exit_code(&self) -> i32 {
        match self {
            TriggerError::Config(_) | TriggerError::Check(_) => exit_codes::USAGE,
            TriggerError::Aws(e) if e.is_usage() => exit_codes::USAGE,
            _ => exit_codes::ERROR,
        }
    }
}

/// Why one object's task did not succeed.
#[derive(Debug, thiserror::Error)]
enum TaskError {
    #[error("cannot download s3://{bucket}/{key}: {detail}")]
    Download {
        bucket: String,
        key: String,
        detail: String,
    },
    #[error("{what} {}: {source}", path.display())]
    Io {
        what: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Run(#[from] RunError),
    #[error(transparent)]
    Ecs(#[from] EcsError),
    #[error("the container exited with code {0}")]
    Exit(i64),
    #[error("stopped by a signal before it finished")]
    Stopped,
    #[error("stopped after --task-timeout {}", humantime::format_duration(*.0))]
    TimedOut(Duration),
    #[error("cannot upload s3://{bucket}/{key}: {detail}")]
    Upload {
        bucket: String,
        key: String,
        detail: String,
    },
    /// The object was deleted, or replaced by new content (which has its own notification),
    /// before it ran: routine, not a failure.
    #[error("{0}")]
    Gone(&'static str),
    #[error(transparent)]
    Claim(#[from] claims::ClaimError),
}

impl TaskError {
    /// The task's exit code, when it got as far as having one.
    fn exit_code(&self) -> Option<i64> {
        match self {
            TaskError::Exit(c) => Some(*c),
            TaskError::Upload { .. } => Some(0),
            _ => None,
        }
    }

    fn io(what: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> TaskError {
        let path = path.to_path_buf();
        move |source| TaskError::Io { what, path, source }
    }
}

/// Everything a task needs.
struct Ctx {
    cfg: OnUploadConfig,
    clients: Clients,
    queue_url: String,
    store: Mutex<Store>,
    /// Who runs which object (this host, or workers sharing the queue).
    claims: Claims,
    /// Saves the store's snapshots, off the runtime.
    writer: store::Writer,
    /// Stop steps passed to running containers (after the grace period).
    task_stop: Shutdown,
    /// Messages already said to be given up on (said once each).
    given_up: Mutex<std::collections::HashSet<String>>,
    /// What `/metrics` shows.
    metrics: metrics::Shared,
}

/// Runs `dockwatch on-upload`; returns the exit code.
pub async fn on_upload(cfg: OnUploadConfig, mut shutdown: Shutdown) -> Result<i32, TriggerError> {
    // Start-up waits on AWS (a slow or unreachable endpoint): a stop ends them at once.
    let (clients, queue_url) = tokio::select! {
        r = start_up(&cfg) => r?,
        () = shutdown.requested() => {
            log("stopped during start-up");
            return Ok(0);
        }
    };
    let store = open_store(cfg.state_dir.clone()).await?;
    let (task_trigger, task_stop) = shutdown::channel();
    let ctx_state_dir = cfg.state_dir.clone();
    let wait_ms = cfg.wait.as_millis() as i64;
    let claims = match &cfg.claims {
        Some(at) => Claims::shared(clients.s3.clone(), at.clone(), cfg.lease),
        None => Claims::local(),
    };
    let ctx = Arc::new(Ctx {
        cfg,
        clients,
        queue_url,
        store: Mutex::new(store),
        claims,
        writer: store::Writer::new(&ctx_state_dir),
        task_stop,
        given_up: Mutex::new(Default::default()),
        metrics: Arc::new(Mutex::new(metrics::Metrics {
            wait_ms,
            ..Default::default()
        })),
    });
    clean_killed_runs(&ctx.cfg).await;
    let stop_metrics = tokio_util::sync::CancellationToken::new();
    let _stop_metrics_on_return = stop_metrics.clone().drop_guard();
    if let Some(addr) = ctx.cfg.metrics_addr {
        crate::util::metrics_http::serve(addr, ctx.metrics.clone(), stop_metrics.clone())
            .await
            .map_err(|e| {
                TriggerError::Check(format!("cannot listen for metrics on {addr}: {e}"))
            })?;
        log(&format!("metrics on http://{addr}/metrics"));
    }
    log(&format!(
        "watching s3://{}/{} through {} ({} task(s) at once, on {})",
        ctx.cfg.bucket,
        ctx.cfg.prefix,
        ctx.queue_url,
        ctx.cfg.concurrency,
        if ctx.cfg.ecs.is_some() {
            "ECS"
        } else {
            "this Docker engine"
        }
    ));
    let slots = Arc::new(Semaphore::new(ctx.cfg.concurrency));
    let tracker = TaskTracker::new();
    let mut backoff = receive_backoff();
    loop {
        if shutdown.is_requested() {
            break;
        }
        let permit = tokio::select! {
            p = slots.clone().acquire_owned() => p.expect("semaphore open"),
            () = shutdown.requested() => break,
        };
        let recv = receive(&ctx, 1 + slots.available_permits());
        let r = tokio::select! {
            r = recv => r,
            () = shutdown.requested() => break,
        };
        let messages = match r {
            Ok(r) => {
                backoff = receive_backoff();
                ctx.metrics.lock().expect("metrics").last_receive_ms = crate::util::time::now_ms();
                r.messages.unwrap_or_default()
            }
            Err(e) => {
                let wait = backoff.next_delay();
                log(&format!(
                    "cannot receive from {}: {}; trying again in {wait:.1?}",
                    ctx.queue_url,
                    chain(&e)
                ));
                drop(permit);
                tokio::select! {
                    _ = tokio::time::sleep(wait) => continue,
                    () = shutdown.requested() => break,
                }
            }
        };
        let mut permit = Some(permit);
        for m in messages {
            let p = match permit.take() {
                Some(p) => p,
                None => match slots.clone().try_acquire_owned() {
                    Ok(p) => p,
                    Err(_) => slots.clone().acquire_owned().await.expect("semaphore open"),
                },
            };
            let ctx = ctx.clone();
            tracker.spawn(async move {
                handle_message(&ctx, m).await;
                drop(p);
            });
        }
    }
    // Stopping: no new messages; running tasks get the grace period, then are stopped.
    tracker.close();
    stop_tasks(&tracker, &task_trigger, &mut shutdown, ctx.cfg.grace).await;
    log("stopped");
    Ok(0)
}

/// The store of processed objects in `dir` (a file read and repaired: off the runtime).
async fn open_store(dir: std::path::PathBuf) -> Result<Store, TriggerError> {
    tokio::task::spawn_blocking(move || {
        Store::open(&dir, crate::util::time::now_ms(), store::REMEMBER)
    })
    .await
    .map_err(|e| TriggerError::Store(e.to_string()))?
    .map_err(TriggerError::Store)
}

/// One long poll of the queue for at most `free` messages (SQS gives at most 10), with the
/// attributes a task needs (receive count, sent time).
async fn receive(
    ctx: &Ctx,
    free: usize,
) -> Result<
    aws_sdk_sqs::operation::receive_message::ReceiveMessageOutput,
    aws_sdk_sqs::error::SdkError<aws_sdk_sqs::operation::receive_message::ReceiveMessageError>,
> {
    ctx.clients
        .sqs
        .receive_message()
        .queue_url(&ctx.queue_url)
        .max_number_of_messages(free.min(10) as i32)
        .wait_time_seconds(ctx.cfg.wait.as_secs().min(20) as i32)
        .visibility_timeout(ctx.cfg.visibility_timeout.as_secs().max(1) as i32)
        .message_system_attribute_names(MessageSystemAttributeName::ApproximateReceiveCount)
        .message_system_attribute_names(MessageSystemAttributeName::SentTimestamp)
        .send()
        .await
}

/// The clients, `--setup` when asked, and the start-up checks (each a one-line error) before
/// any message is taken; the queue's URL.
async fn start_up(cfg: &OnUploadConfig) -> Result<(Clients, String), TriggerError> {
    let clients = Clients::build(&cfg.aws).await?;
    let ep = cfg.aws.endpoint_url.clone().unwrap_or_else(|| "AWS".into());
    preflight::credentials(&clients, &ep).await?;
    let queue_url = match &cfg.queue_url {
        Some(u) => u.clone(),
        None => setup::setup(&clients, cfg).await?,
    };
    let dead_letters = preflight::queue(&clients, &ep, &queue_url).await?;
    preflight::bucket(&clients, &ep, &cfg.bucket, "bucket").await?;
    if cfg.output_bucket != cfg.bucket {
        preflight::bucket(&clients, &ep, &cfg.output_bucket, "output bucket").await?;
    }
    if let Some(at) = &cfg.claims {
        preflight::bucket(&clients, &ep, &at.bucket, "claims bucket").await?;
    }
    if !dead_letters {
        preflight::warn_no_dead_letters(&queue_url);
    }
    Ok((clients, queue_url))
}

/// Running tasks get `grace` to finish (a second signal cuts it short); then their
/// containers are stopped the main job's way, with the step the user asked for so far; one
/// signal more abandons them (5 s to save what they hold).
async fn stop_tasks(
    tracker: &TaskTracker,
    tasks: &shutdown::Trigger,
    shutdown: &mut Shutdown,
    grace: Duration,
) {
    if tracker.is_empty() {
        return;
    }
    log(&format!(
        "stopping: {} task(s) running; waiting up to {grace:?} for them",
        tracker.len()
    ));
    let finished = tokio::select! {
        _ = tracker.wait() => true,
        _ = tokio::time::sleep(grace) => false,
        () = shutdown.reached(Stop::Kill) => false,
    };
    if finished {
        return;
    }
    let now = shutdown.stop().unwrap_or(Stop::Graceful);
    log("stopping the running containers; their messages will be received again");
    tasks.request(now, shutdown.signal());
    let more = match now {
        Stop::Graceful => Stop::Kill,
        _ => Stop::Abandon,
    };
    tokio::select! {
        _ = tracker.wait() => {}
        () = shutdown.reached(more) => {
            tasks.request(Stop::Abandon, shutdown.signal());
            let _ = tokio::time::timeout(Duration::from_secs(5), tracker.wait()).await;
        }
    }
}

/// Waits between failed ReceiveMessage calls: from 0.5 s up to 30 s.
fn receive_backoff() -> Backoff {
    Backoff::new(Duration::from_millis(500), Duration::from_secs(30))
}

fn log(msg: &str) {
    crate::say!("dockwatch on-upload: {msg}");
}

/// One SQS message: every upload in it, then delete (all succeeded) or release it.
async fn handle_message(ctx: &Arc<Ctx>, m: aws_sdk_sqs::types::Message) {
    let Some(receipt) = m.receipt_handle().map(str::to_string) else {
        return;
    };
    let attempts: u32 = m
        .attributes()
        .and_then(|a| a.get(&MessageSystemAttributeName::ApproximateReceiveCount))
        .and_then(|v| v.parse().ok())
        .unwrap_or(1);
    let uploads = match event::parse(m.body().unwrap_or_default()) {
        Ok(Notice::Test) => {
            log("S3 test event received: the notification works");
            delete(ctx, &receipt).await;
            return;
        }
        Ok(Notice::Uploads(u)) => u,
        Err(why) => {
            log(&format!(
                "message {} is not an S3 upload notification ({why}); left for the queue's dead-letter policy",
                m.message_id().unwrap_or("?")
            ));
            return;
        }
    };
    let ours: Vec<Upload> = uploads
        .into_iter()
        .filter(|u| u.bucket == ctx.cfg.bucket && u.key.starts_with(&ctx.cfg.prefix))
        .filter(|u| worth_running(&ctx.cfg, u))
        .collect();
    let id = m.message_id().unwrap_or_default();
    if attempts > ctx.cfg.max_attempts {
        // A queue whose redrive allows more receives than --max-attempts (or has none).
        give_up(ctx, id, &ours, attempts - 1);
        return;
    }
    let sent: Option<i64> = m
        .attributes()
        .and_then(|a| a.get(&MessageSystemAttributeName::SentTimestamp))
        .and_then(|v| v.parse().ok());
    let heartbeat = keep_hidden(ctx, &receipt);
    let mut all_ok = true;
    for u in &ours {
        all_ok &= run_upload(ctx, u, attempts, sent).await;
    }
    heartbeat.abort();
    if all_ok {
        delete(ctx, &receipt).await;
        return;
    }
    if attempts >= ctx.cfg.max_attempts {
        // The last attempt failed: the queue's redrive (maxReceiveCount = --max-attempts, as
        // --setup makes it) moves the message to the dead-letter queue at its next receive,
        // which dockwatch never sees: this is the moment to say so.
        give_up(ctx, id, &ours, attempts);
    }
    release(ctx, &receipt, attempts).await;
}

/// Says once per message that its uploads failed their last attempt, and counts it.
fn give_up(ctx: &Ctx, message_id: &str, uploads: &[Upload], attempts: u32) {
    if !ctx
        .given_up
        .lock()
        .expect("given up")
        .insert(message_id.to_string())
    {
        return; // said already: once per message, not every visibility timeout
    }
    ctx.metrics.lock().expect("metrics").dead_lettered += 1;
    for u in uploads {
        log(&format!(
            "giving up on s3://{}/{} after {attempts} attempts; the message is left for the queue's dead-letter policy",
            u.bucket, u.key
        ));
    }
}

/// Keeps a message hidden while its work goes on: its visibility is extended every half
/// timeout, until the returned task is aborted.
fn keep_hidden(ctx: &Ctx, receipt: &str) -> tokio::task::JoinHandle<()> {
    let (sqs, url, r, vis) = (
        ctx.clients.sqs.clone(),
        ctx.queue_url.clone(),
        receipt.to_string(),
        ctx.cfg.visibility_timeout,
    );
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(vis / 2).await;
            let _ = sqs
                .change_message_visibility()
                .queue_url(&url)
                .receipt_handle(&r)
                .visibility_timeout(vis.as_secs().max(1) as i32)
                .send()
                .await;
        }
    })
}

/// Whether an upload is an input: a folder marker (`input/folder/`) and one of the tool's
/// own outputs are not (an output can only reach here when the outputs go to the watched
/// bucket under a prefix that start-up refused to overlap; this is the second line).
fn worth_running(cfg: &OnUploadConfig, u: &Upload) -> bool {
    if u.key.ends_with('/') {
        log(&format!(
            "s3://{}/{} is a folder marker: skipped",
            u.bucket, u.key
        ));
        return false;
    }
    if u.bucket == cfg.output_bucket && u.key.starts_with(&cfg.output_prefix) {
        log(&format!(
            "s3://{}/{} is under --output-prefix: skipped",
            u.bucket, u.key
        ));
        return false;
    }
    true
}

/// Takes the object's claim, waiting while another run holds it; `None` when it succeeded
/// before (nothing to do).
async fn claim(ctx: &Ctx, u: &Upload, id: &str) -> Result<Option<claims::Lease>, TaskError> {
    let mut said = false;
    loop {
        let done = ctx.store.lock().expect("store").succeeded(id);
        match ctx.claims.claim(id, done).await? {
            Claim::Won(lease) => return Ok(Some(lease)),
            Claim::Done => {
                log(&format!(
                    "s3://{}/{} ({}) was already processed: skipped",
                    u.bucket, u.key, u.etag
                ));
                return Ok(None);
            }
            Claim::Busy(wait) => {
                if !said {
                    log(&format!(
                        "s3://{}/{} is being processed by another run; waiting for it",
                        u.bucket, u.key
                    ));
                    said = true;
                }
                match wait {
                    // A wake-up can come between the claim and the wait: look again anyway.
                    Wait::Local(n) => {
                        let _ = tokio::time::timeout(Duration::from_secs(1), n.notified()).await;
                    }
                    Wait::Poll(d) => tokio::time::sleep(d).await,
                }
            }
        }
    }
}

/// One upload of a message, unless already done: runs it and records the outcome. True when
/// it succeeded (now or before) or is gone (deleted, replaced).
async fn run_upload(ctx: &Arc<Ctx>, u: &Upload, attempts: u32, sent: Option<i64>) -> bool {
    let id = object_id(&u.bucket, &u.key, &u.etag);
    let mut lease = match claim(ctx, u, &id).await {
        Ok(Some(l)) => l,
        Ok(None) => {
            ctx.metrics.lock().expect("metrics").skipped_duplicates += 1;
            return true;
        }
        Err(e) => {
            log(&format!("s3://{}/{}: {e}", u.bucket, u.key));
            return false;
        }
    };
    log(&format!(
        "s3://{}/{}: starting (attempt {attempts}; notified through {})",
        u.bucket, u.key, u.via
    ));
    {
        let mut m = ctx.metrics.lock().expect("metrics");
        m.running += 1;
        m.retries += u64::from(attempts > 1);
        if let Some(t) = sent {
            m.queue_wait_ms_sum += (crate::util::time::now_ms() - t).max(0) as u64;
            m.queue_wait_count += 1;
        }
    }
    let result = run_leased(ctx, u, attempts, &mut lease).await;
    {
        let mut m = ctx.metrics.lock().expect("metrics");
        m.running -= 1;
        match &result {
            Ok(_) => m.succeeded += 1,
            Err(TaskError::Gone(_)) => m.acknowledged += 1,
            Err(_) => m.failed += 1,
        }
    }
    finish_upload(ctx, u, attempts, id, lease, result).await
}

/// The task, its lease renewed meanwhile (shared claims).
async fn run_leased(
    ctx: &Arc<Ctx>,
    u: &Upload,
    attempts: u32,
    lease: &mut claims::Lease,
) -> Result<(i64, Vec<String>), TaskError> {
    {
        let work = process(ctx, u, attempts);
        tokio::pin!(work);
        match ctx.claims.renew_every() {
            None => work.await,
            Some(every) => loop {
                tokio::select! {
                    r = &mut work => break r,
                    _ = tokio::time::sleep(every) => match ctx.claims.renew(lease).await {
                        Ok(true) => {}
                        Ok(false) => log(&format!(
                            "s3://{}/{}: another worker took the object over (this claim was not renewed in time); its outcome counts",
                            u.bucket, u.key
                        )),
                        Err(e) => log(&format!("s3://{}/{}: cannot renew the claim: {e}", u.bucket, u.key)),
                    },
                }
            },
        }
    }
}

/// Records a task's outcome and ends its claim. True when it succeeded or is gone.
async fn finish_upload(
    ctx: &Arc<Ctx>,
    u: &Upload,
    attempts: u32,
    id: String,
    lease: claims::Lease,
    result: Result<(i64, Vec<String>), TaskError>,
) -> bool {
    if let Err(TaskError::Gone(why)) = &result {
        log(&format!("s3://{}/{}: {why}; acknowledged", u.bucket, u.key));
        let _ = ctx.claims.finish(lease, false).await;
        return true;
    }
    let outcome = match result {
        Ok((code, outputs)) => {
            log(&format!(
                "s3://{}/{}: done, {} output file(s) under s3://{}/{}",
                u.bucket,
                u.key,
                outputs.len(),
                ctx.cfg.bucket,
                ctx.cfg.output_base(&u.key)
            ));
            Outcome {
                status: "succeeded".into(),
                attempts,
                exit_code: Some(code),
                outputs,
                error: None,
                at: crate::util::time::now_ms(),
            }
        }
        Err(e) => {
            let exit_code = e.exit_code();
            let why = crate::util::chain(&e);
            log(&format!(
                "s3://{}/{}: failed (attempt {attempts} of {}): {why}",
                u.bucket, u.key, ctx.cfg.max_attempts
            ));
            Outcome {
                status: "failed".into(),
                attempts,
                exit_code,
                outputs: Vec::new(),
                error: Some(why),
                at: crate::util::time::now_ms(),
            }
        }
    };
    let ok = outcome.status == "succeeded";
    let saved = record(ctx, id, outcome).await;
    match ctx.claims.finish(lease, ok && saved).await {
        Ok(true) => {}
        Ok(false) => log(&format!(
            "s3://{}/{}: another worker had taken the object over; the shared record is theirs",
            u.bucket, u.key
        )),
        Err(e) => {
            log(&format!("s3://{}/{}: {e}", u.bucket, u.key));
            return false;
        }
    }
    saved && ok
}

/// Saves an outcome durably, off the runtime (an fsync must not hold up the heartbeats, nor
/// the store's lock, which other tasks take on the runtime).
async fn record(ctx: &Arc<Ctx>, id: String, outcome: Outcome) -> bool {
    let pending = ctx.store.lock().expect("store").record(&id, outcome);
    let c = ctx.clone();
    let saved = tokio::task::spawn_blocking(move || c.writer.append(pending))
        .await
        .unwrap_or_else(|e| Err(e.to_string()));
    match saved {
        Ok(()) => true,
        Err(e) => {
            log(&e);
            false
        }
    }
}

/// Makes a failed message visible again after a backoff (at once when stopping, for another
/// worker).
async fn release(ctx: &Ctx, receipt: &str, attempts: u32) {
    let delay = if ctx.task_stop.is_requested() {
        0
    } else {
        retry_delay(attempts, ctx.cfg.visibility_timeout)
    };
    let _ = ctx
        .clients
        .sqs
        .change_message_visibility()
        .queue_url(&ctx.queue_url)
        .receipt_handle(receipt)
        .visibility_timeout(delay as i32)
        .send()
        .await;
}

/// Seconds before a failed object is tried again: 5 s doubling per attempt, at most the
/// visibility timeout (and 12 h, SQS's limit), with jitter (50-100%) so that objects failing
/// together do not come back together.
fn retry_delay(attempts: u32, visibility: Duration) -> u32 {
    let cap = visibility.as_secs().clamp(1, 43_200) as f64;
    let full = (5.0 * 2f64.powi(attempts.saturating_sub(1).min(20) as i32)).min(cap);
    (full * (0.5 + rand::random::<f64>() / 2.0)).round() as u32
}

/// A run SIGKILLed with this state directory left its container and checkpoint: the object's
/// message comes back and runs again from the start, so both are removed (and the work
/// directories, which belong to no running task yet).
async fn clean_killed_runs(cfg: &OnUploadConfig) {
    let dir = cfg.state_dir.join("checkpoints");
    let found = crate::pipeline::checkpoint::Checkpoint::list(&dir);
    let _ = tokio::fs::remove_dir_all(cfg.state_dir.join("work")).await;
    if found.is_empty() || cfg.ecs.is_some() {
        return;
    }
    let Ok(docker) = crate::docker::connect(Duration::from_secs(30)).await else {
        return;
    };
    for path in found {
        let Ok(cp) = crate::pipeline::checkpoint::Checkpoint::load(&path) else {
            continue;
        };
        match crate::docker::container::remove(&docker, &cp.container_id).await {
            Ok(()) => {
                let _ = crate::pipeline::checkpoint::Checkpoint::remove(&dir, &cp.container_id);
                log(&format!(
                    "removed container {} of a run that was killed ({}); its object runs again when its message comes back",
                    crate::docker::short_id(&cp.container_id),
                    cp.stream
                ));
            }
            Err(e) => log(&format!(
                "cannot remove container {} of a killed run: {e}",
                crate::docker::short_id(&cp.container_id)
            )),
        }
    }
}

async fn delete(ctx: &Ctx, receipt: &str) {
    if let Err(e) = ctx
        .clients
        .sqs
        .delete_message()
        .queue_url(&ctx.queue_url)
        .receipt_handle(receipt)
        .send()
        .await
    {
        log(&format!(
            "cannot delete a finished message (it will come back and be skipped): {}",
            chain(&e)
        ));
    }
}

/// One object: fetch, run, upload; the exit code and the output keys.
async fn process(ctx: &Ctx, u: &Upload, attempt: u32) -> Result<(i64, Vec<String>), TaskError> {
    if let Some(ecs) = &ctx.cfg.ecs {
        return process_on_ecs(ctx, ecs, u, attempt).await;
    }
    // Each attempt has its own directory: a run never removes another's input or output.
    let work =
        ctx.cfg
            .state_dir
            .join("work")
            .join(crate::follow::download::files::encode_component(&format!(
                "{}@{}#{attempt}-{:08x}",
                u.key,
                u.etag,
                rand::random::<u32>()
            )));
    let _ = tokio::fs::remove_dir_all(&work).await;
    let result = process_in(ctx, u, &work).await;
    let _ = tokio::fs::remove_dir_all(&work).await;
    result
}

/// [`process`] in its work directory `work` (removed by the caller).
async fn process_in(ctx: &Ctx, u: &Upload, work: &Path) -> Result<(i64, Vec<String>), TaskError> {
    let (input_dir, output_dir) = (work.join("input"), work.join("output"));
    for d in [&input_dir, &output_dir] {
        tokio::fs::create_dir_all(d)
            .await
            .map_err(TaskError::io("cannot create the work directory", d))?;
    }
    // Any user in the container may write its outputs.
    {
        use std::os::unix::fs::PermissionsExt;
        let _ =
            tokio::fs::set_permissions(&output_dir, std::fs::Permissions::from_mode(0o777)).await;
    }
    let file_name = u
        .key
        .rsplit('/')
        .next()
        .filter(|n| !n.is_empty() && *n != "." && *n != "..")
        .unwrap_or("input");
    download(ctx, u, &input_dir.join(file_name)).await?;
    match run_container(ctx, u, &input_dir, &output_dir, file_name).await? {
        0 => {}
        c => return Err(TaskError::Exit(c)),
    }
    let outputs = upload_dir(ctx, &output_dir, &ctx.cfg.output_base(&u.key)).await?;
    Ok((0, outputs))
}

/// `--on ecs`: the task fetches and stores its own data.
async fn process_on_ecs(
    ctx: &Ctx,
    ecs: &crate::config::EcsConfig,
    u: &Upload,
    attempt: u32,
) -> Result<(i64, Vec<String>), TaskError> {
    let env = vec![
        ("S3_BUCKET".to_string(), u.bucket.clone()),
        ("S3_KEY".to_string(), u.key.clone()),
        (
            "OUTPUT_S3_BUCKET".to_string(),
            ctx.cfg.output_bucket.clone(),
        ),
        ("OUTPUT_S3_PREFIX".to_string(), ctx.cfg.output_base(&u.key)),
    ];
    let job = crate::ecs::EcsJob {
        image: ctx.cfg.image.clone(),
        shell: ctx.cfg.shell.clone(),
        command: ctx.cfg.command.clone(),
        group: ctx.cfg.group.clone(),
        stream_prefix: "dockwatch".into(),
        env,
        echo: false,
        // One task per object and attempt, also when RunTask's answer is lost and the call
        // is made again.
        client_token: Some(format!(
            "dockwatch-{:016x}-{attempt}",
            crate::util::fnv1a(object_id(&u.bucket, &u.key, &u.etag).as_bytes())
        )),
        purpose: Some(format!("s3://{}/{}", u.bucket, u.key)),
    };
    let code =
        crate::ecs::run_task(&ctx.clients, ecs, &job, &ctx.cfg.aws, ctx.task_stop.clone()).await?;
    if code == 0 {
        Ok((0, Vec::new()))
    } else {
        Err(TaskError::Exit(code))
    }
}

async fn download(ctx: &Ctx, u: &Upload, to: &Path) -> Result<(), TaskError> {
    let fail = |detail: String| TaskError::Download {
        bucket: u.bucket.clone(),
        key: u.key.clone(),
        detail,
    };
    let mut req = ctx.clients.s3.get_object().bucket(&u.bucket).key(&u.key);
    if !u.etag.is_empty() {
        req = req.if_match(format!("\"{}\"", u.etag));
    }
    let obj = match req.send().await {
        Ok(o) => o,
        Err(e) => {
            let code = aws_sdk_s3::error::ProvideErrorMetadata::code(&e);
            if e.as_service_error().is_some_and(|s| s.is_no_such_key()) {
                return Err(TaskError::Gone("deleted before it could run"));
            }
            if code == Some("PreconditionFailed") {
                return Err(TaskError::Gone(
                    "replaced by new content before it could run (the new content has its own notification)",
                ));
            }
            return Err(fail(chain(&e)));
        }
    };
    let mut reader = obj.body.into_async_read();
    let mut f = tokio::fs::File::create(to)
        .await
        .map_err(TaskError::io("cannot write", to))?;
    tokio::io::copy(&mut reader, &mut f)
        .await
        .map_err(|e| fail(e.to_string()))?;
    Ok(())
}

/// The main job's pipeline for one file; the container's exit code.
async fn run_container(
    ctx: &Ctx,
    u: &Upload,
    input_dir: &Path,
    output_dir: &Path,
    file_name: &str,
) -> Result<i64, TaskError> {
    let c = &ctx.cfg;
    let abs = |p: &Path| {
        let p = p.to_path_buf();
        async move { tokio::fs::canonicalize(&p).await.unwrap_or(p) }
    };
    let mut container = ContainerSpec::new(c.image.clone(), c.shell.clone(), c.command.clone())?
        .with_env(vec![
            format!("INPUT_FILE=/input/{file_name}"),
            "OUTPUT_DIR=/output".into(),
            format!("S3_BUCKET={}", u.bucket),
            format!("S3_KEY={}", u.key),
        ])?
        .with_env(c.env.clone())?
        .with_label("dockwatch.on-upload", "true");
    for (k, v) in &c.labels {
        container = container.with_label(k, v);
    }
    container.pull = c.pull;
    container.binds = vec![
        format!("{}:/input:ro", abs(input_dir).await.display()),
        format!("{}:/output", abs(output_dir).await.display()),
    ];
    let ship = ShipConfig::new(c.group.clone(), event::stream_name(&u.key))?;
    let mut cfg = RunConfig::managed(container, c.aws.clone(), ship, &c.state_dir);
    cfg.stop_timeout = c.stop_timeout;
    // This task's own stop: on-upload's (signals), or its time limit.
    let (trigger, stop) = shutdown::channel();
    let timed_out = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let watch = {
        let (mut outer, limit, flag) = (ctx.task_stop.clone(), c.task_timeout, timed_out.clone());
        tokio::spawn(async move {
            let deadline = async {
                match limit {
                    Some(d) => tokio::time::sleep(d).await,
                    None => std::future::pending().await,
                }
            };
            tokio::pin!(deadline);
            if let Some(level) = outer.stop() {
                trigger.request(level, outer.signal());
            }
            loop {
                tokio::select! {
                    level = outer.changed() => if let Some(level) = level {
                        trigger.request(level, outer.signal());
                    },
                    () = &mut deadline, if !flag.load(std::sync::atomic::Ordering::Relaxed) => {
                        flag.store(true, std::sync::atomic::Ordering::Relaxed);
                        trigger.request(Stop::Graceful, None);
                    }
                }
            }
        })
    };
    let result = async {
        let launched = crate::pipeline::job::launch(&cfg, &stop).await?;
        Ok::<_, TaskError>(launched.ship(stop.clone()).await?)
    }
    .await;
    watch.abort();
    if timed_out.load(std::sync::atomic::Ordering::Relaxed) {
        return Err(TaskError::TimedOut(c.task_timeout.unwrap_or_default()));
    }
    let code = result?;
    if ctx.task_stop.is_requested() {
        return Err(TaskError::Stopped);
    }
    Ok(i64::from(code))
}

/// Every file under `dir`, sorted (blocking: run off the runtime).
fn list_files(dir: &Path) -> Result<Vec<PathBuf>, TaskError> {
    let mut files: Vec<PathBuf> = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let entries = std::fs::read_dir(&d).map_err(TaskError::io("cannot list", &d))?;
        for e in entries.flatten() {
            let p = e.path();
            match e.file_type() {
                Ok(t) if t.is_dir() => stack.push(p),
                Ok(t) if t.is_file() => files.push(p),
                _ => {}
            }
        }
    }
    files.sort();
    Ok(files)
}

/// Uploads every file under `dir` to `prefix` + its relative path; returns the keys.
async fn upload_dir(ctx: &Ctx, dir: &Path, prefix: &str) -> Result<Vec<String>, TaskError> {
    let listed = dir.to_path_buf();
    let files = tokio::task::spawn_blocking(move || list_files(&listed))
        .await
        .map_err(|e| TaskError::Io {
            what: "cannot list",
            path: dir.to_path_buf(),
            source: std::io::Error::other(e),
        })??;
    let mut keys = Vec::new();
    for f in files {
        let rel = f
            .strip_prefix(dir)
            .unwrap_or(&f)
            .to_string_lossy()
            .replace('\\', "/");
        let key = format!("{prefix}{rel}");
        let fail = |detail: String| TaskError::Upload {
            bucket: ctx.cfg.output_bucket.clone(),
            key: key.clone(),
            detail,
        };
        let body = ByteStream::from_path(&f)
            .await
            .map_err(|e| fail(format!("cannot read {}: {e}", f.display())))?;
        ctx.clients
            .s3
            .put_object()
            .bucket(&ctx.cfg.output_bucket)
            .key(&key)
            .body(body)
            .send()
            .await
            .map_err(|e| fail(chain(&e)))?;
        keys.push(key);
    }
    Ok(keys)
}
