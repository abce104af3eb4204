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

pub mod event;
pub mod setup;
pub mod store;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_sqs::types::MessageSystemAttributeName;
use tokio::sync::{Semaphore, watch};
use tokio_util::task::TaskTracker;

use self::event::{Notice, Upload};
use self::store::{Outcome, Store, object_id};
use crate::cli::{Engine, OnUploadArgs};
use crate::config::AwsOptions;
use crate::exit_codes;
use crate::run::{Interrupts, Signal};

/// Why `on-upload` stopped.
#[derive(Debug, thiserror::Error)]
pub enum TriggerError {
    #[error("{0}")]
    Usage(String),
    #[error(transparent)]
    Sink(#[from] crate::sink::SinkError),
    #[error("{0}")]
    Failed(String),
}

impl TriggerError {
    pub fn exit_code(&self) -> i32 {
        match self {
            TriggerError::Usage(_)
            | TriggerError::Sink(
                crate::sink::SinkError::NoRegion | crate::sink::SinkError::NoCredentials,
            ) => exit_codes::USAGE,
            _ => exit_codes::ERROR,
        }
    }
}

/// The service clients, built once from one AWS configuration.
#[derive(Clone)]
pub struct Clients {
    pub s3: aws_sdk_s3::Client,
    pub sqs: aws_sdk_sqs::Client,
    pub ecs: aws_sdk_ecs::Client,
    pub logs: aws_sdk_cloudwatchlogs::Client,
}

impl Clients {
    pub async fn build(aws: &AwsOptions) -> Result<Self, crate::sink::SinkError> {
        let conf = crate::sink::client::sdk_config(aws).await?;
        // AWS-compatible endpoints serve buckets by path, not by host name.
        let s3 = aws_sdk_s3::config::Builder::from(&conf)
            .force_path_style(aws.endpoint_url.is_some())
            .build();
        Ok(Clients {
            s3: aws_sdk_s3::Client::from_conf(s3),
            sqs: aws_sdk_sqs::Client::new(&conf),
            ecs: aws_sdk_ecs::Client::new(&conf),
            logs: aws_sdk_cloudwatchlogs::Client::new(&conf),
        })
    }
}

/// The whole error chain of an SDK error, one line.
pub fn sdk_error(e: &(dyn std::error::Error + 'static)) -> String {
    crate::sink::retry::chain(e)
}

/// Everything a task needs.
struct Ctx {
    args: OnUploadArgs,
    aws: AwsOptions,
    clients: Clients,
    queue_url: String,
    store: Mutex<Store>,
    /// Interrupts passed to running containers (after the grace period).
    task_stop: watch::Receiver<Interrupts>,
    /// ECS settings with `--on ecs`.
    ecs: Option<crate::ecs::EcsConfig>,
}

/// Runs `dockwatch on-upload`; returns the exit code.
pub async fn on_upload(
    args: OnUploadArgs,
    mut interrupts: watch::Receiver<Interrupts>,
) -> Result<i32, TriggerError> {
    validate(&args)?;
    let aws =
        AwsOptions::from_args(args.aws.clone()).map_err(|e| TriggerError::Usage(e.to_string()))?;
    let ecs = match args.ecs.on {
        Engine::Ecs => {
            Some(crate::ecs::EcsConfig::from_args(&args.ecs).map_err(TriggerError::Usage)?)
        }
        Engine::Local => None,
    };
    let clients = Clients::build(&aws).await?;
    let queue_url = match &args.queue_url {
        Some(u) => u.clone(),
        None => setup::setup(&clients, &args, &aws).await?,
    };
    let store = Store::open(&args.state_dir).map_err(TriggerError::Failed)?;
    let (task_stop_tx, task_stop) = watch::channel(Interrupts::default());
    let ctx = Arc::new(Ctx {
        args,
        aws,
        clients,
        queue_url,
        store: Mutex::new(store),
        task_stop,
        ecs,
    });
    log(&format!(
        "watching s3://{}/{} through {} ({} task(s) at once, on {})",
        ctx.args.bucket,
        ctx.args.prefix,
        ctx.queue_url,
        ctx.args.concurrency,
        if ctx.ecs.is_some() {
            "ECS"
        } else {
            "this Docker engine"
        }
    ));
    let slots = Arc::new(Semaphore::new(ctx.args.concurrency));
    let tracker = TaskTracker::new();
    let mut backoff =
        crate::sink::retry::Backoff::new(Duration::from_millis(500), Duration::from_secs(30));
    loop {
        if interrupts.borrow().count > 0 {
            break;
        }
        let permit = tokio::select! {
            p = slots.clone().acquire_owned() => p.expect("semaphore open"),
            _ = interrupts.changed() => break,
        };
        let free = 1 + slots.available_permits();
        let recv = ctx
            .clients
            .sqs
            .receive_message()
            .queue_url(&ctx.queue_url)
            .max_number_of_messages(free.min(10) as i32)
            .wait_time_seconds(ctx.args.wait.as_secs().min(20) as i32)
            .visibility_timeout(ctx.args.visibility_timeout.as_secs().max(1) as i32)
            .message_system_attribute_names(MessageSystemAttributeName::ApproximateReceiveCount)
            .send();
        let r = tokio::select! {
            r = recv => r,
            _ = interrupts.changed() => break,
        };
        let messages = match r {
            Ok(r) => {
                backoff = crate::sink::retry::Backoff::new(
                    Duration::from_millis(500),
                    Duration::from_secs(30),
                );
                r.messages.unwrap_or_default()
            }
            Err(e) => {
                let wait = backoff.next_delay();
                log(&format!(
                    "cannot receive from {}: {}; trying again in {wait:.1?}",
                    ctx.queue_url,
                    sdk_error(&e)
                ));
                drop(permit);
                tokio::select! {
                    _ = tokio::time::sleep(wait) => continue,
                    _ = interrupts.changed() => break,
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
    let first = interrupts.borrow().first.unwrap_or(Signal::Terminate);
    if !tracker.is_empty() {
        log(&format!(
            "stopping: {} task(s) running; waiting up to {:?} for them",
            tracker.len(),
            ctx.args.grace
        ));
        let finished = tokio::select! {
            _ = tracker.wait() => true,
            _ = tokio::time::sleep(ctx.args.grace) => false,
            _ = interrupts.wait_for(|i| i.count > 1) => false,
        };
        if !finished {
            let count = interrupts.borrow().count.max(1);
            log("stopping the running containers; their messages will be received again");
            task_stop_tx.send_replace(Interrupts {
                count,
                first: Some(first),
            });
            tokio::select! {
                _ = tracker.wait() => {}
                _ = interrupts.wait_for(|i| i.count > count) => {
                    task_stop_tx.send_replace(Interrupts { count: 3, first: Some(first) });
                    let _ = tokio::time::timeout(Duration::from_secs(5), tracker.wait()).await;
                }
            }
        }
    }
    log("stopped");
    Ok(0)
}

fn validate(a: &OnUploadArgs) -> Result<(), TriggerError> {
    let u = |m: &str| Err(TriggerError::Usage(m.to_string()));
    if a.bucket.is_empty() {
        return u("--bucket is empty");
    }
    if a.concurrency == 0 || a.concurrency > 64 {
        return u("--concurrency must be 1 to 64");
    }
    if a.max_attempts == 0 {
        return u("--max-attempts must be at least 1");
    }
    if a.wait > Duration::from_secs(20) {
        return u("--wait must be at most 20s (SQS long polling)");
    }
    if a.visibility_timeout < Duration::from_secs(2)
        || a.visibility_timeout > Duration::from_secs(43_200)
    {
        return u("--visibility-timeout must be between 2s and 12h");
    }
    if a.output_prefix.is_empty()
        || (!a.prefix.is_empty() && a.output_prefix.starts_with(&a.prefix))
    {
        return u(
            "--output-prefix must be set and outside --prefix, or the outputs would trigger new tasks",
        );
    }
    crate::config::validate_group_name(&a.aws_cloudwatch_group)
        .map_err(|e| TriggerError::Usage(e.to_string()))?;
    Ok(())
}

fn log(msg: &str) {
    eprintln!("dockwatch on-upload: {msg}");
}

/// One SQS message: every upload in it, then delete (all succeeded) or release it.
async fn handle_message(ctx: &Ctx, m: aws_sdk_sqs::types::Message) {
    let Some(receipt) = m.receipt_handle().map(str::to_string) else {
        return;
    };
    let attempts: u32 = m
        .attributes()
        .and_then(|a| a.get(&MessageSystemAttributeName::ApproximateReceiveCount))
        .and_then(|v| v.parse().ok())
        .unwrap_or(1);
    let body = m.body().unwrap_or_default();
    let uploads = match event::parse(body) {
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
        .filter(|u| u.bucket == ctx.args.bucket && u.key.starts_with(&ctx.args.prefix))
        .collect();
    if attempts > ctx.args.max_attempts {
        for u in &ours {
            log(&format!(
                "giving up on s3://{}/{} after {} attempts; the message is left for the queue's dead-letter policy",
                u.bucket,
                u.key,
                attempts - 1
            ));
        }
        return;
    }
    // Keep the message hidden while the work goes on.
    let heartbeat = {
        let (sqs, url, r, vis) = (
            ctx.clients.sqs.clone(),
            ctx.queue_url.clone(),
            receipt.clone(),
            ctx.args.visibility_timeout,
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
    };
    let mut all_ok = true;
    for u in &ours {
        let id = object_id(&u.bucket, &u.key, &u.etag);
        if ctx.store.lock().expect("store").succeeded(&id) {
            log(&format!(
                "s3://{}/{} ({}) was already processed: skipped",
                u.bucket, u.key, u.etag
            ));
            continue;
        }
        log(&format!(
            "s3://{}/{}: starting (attempt {attempts})",
            u.bucket, u.key
        ));
        let r = process(ctx, u).await;
        let (outcome, ok) = match r {
            Ok((code, outputs)) => {
                log(&format!(
                    "s3://{}/{}: done, {} output file(s) under s3://{}/{}",
                    u.bucket,
                    u.key,
                    outputs.len(),
                    ctx.args.bucket,
                    output_base(&ctx.args, &u.key)
                ));
                (
                    Outcome {
                        status: "succeeded".into(),
                        attempts,
                        exit_code: Some(code),
                        outputs,
                        error: None,
                        at: crate::follow::time::now_ms(),
                    },
                    true,
                )
            }
            Err((code, why)) => {
                log(&format!(
                    "s3://{}/{}: failed (attempt {attempts} of {}): {why}",
                    u.bucket, u.key, ctx.args.max_attempts
                ));
                (
                    Outcome {
                        status: "failed".into(),
                        attempts,
                        exit_code: code,
                        outputs: Vec::new(),
                        error: Some(why),
                        at: crate::follow::time::now_ms(),
                    },
                    false,
                )
            }
        };
        if let Err(e) = ctx.store.lock().expect("store").record(&id, outcome) {
            log(&e);
            all_ok = false;
        }
        all_ok &= ok;
    }
    heartbeat.abort();
    if all_ok {
        delete(ctx, &receipt).await;
    } else {
        // Visible again soon (a stop makes it visible at once, for another worker).
        let delay = if ctx.task_stop.borrow().count > 0 {
            0
        } else {
            (5 * attempts).min(ctx.args.visibility_timeout.as_secs() as u32)
        };
        let _ = ctx
            .clients
            .sqs
            .change_message_visibility()
            .queue_url(&ctx.queue_url)
            .receipt_handle(&receipt)
            .visibility_timeout(delay as i32)
            .send()
            .await;
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
            sdk_error(&e)
        ));
    }
}

/// Where a key's outputs go: OUTPUT_PREFIX + key without PREFIX + `/`.
pub fn output_base(a: &OnUploadArgs, key: &str) -> String {
    let rel = key.strip_prefix(a.prefix.as_str()).unwrap_or(key);
    format!("{}{}/", a.output_prefix, rel)
}

/// One object: fetch, run, upload. `Err((exit code, why))`.
async fn process(ctx: &Ctx, u: &Upload) -> Result<(i64, Vec<String>), (Option<i64>, String)> {
    if let Some(ecs) = &ctx.ecs {
        let env = vec![
            ("S3_BUCKET".to_string(), u.bucket.clone()),
            ("S3_KEY".to_string(), u.key.clone()),
            (
                "OUTPUT_S3_PREFIX".to_string(),
                output_base(&ctx.args, &u.key),
            ),
        ];
        let job = crate::ecs::EcsJob {
            image: ctx.args.docker_image.clone(),
            shell: ctx.args.shell.clone(),
            command: ctx.args.bash_command.clone(),
            group: ctx.args.aws_cloudwatch_group.clone(),
            stream_prefix: "dockwatch".into(),
            env,
            echo: false,
        };
        let code = crate::ecs::run_task(&ctx.clients, ecs, &job, &ctx.aws, ctx.task_stop.clone())
            .await
            .map_err(|e| (None, e))?;
        return if code == 0 {
            Ok((0, Vec::new()))
        } else {
            Err((Some(code), format!("the task exited with code {code}")))
        };
    }
    let work =
        ctx.args
            .state_dir
            .join("work")
            .join(crate::follow::download::files::encode_component(&format!(
                "{}@{}",
                u.key, u.etag
            )));
    let _ = std::fs::remove_dir_all(&work);
    let (input_dir, output_dir) = (work.join("input"), work.join("output"));
    let io = |what: &str, e: std::io::Error| (None, format!("{what}: {e}"));
    std::fs::create_dir_all(&input_dir).map_err(|e| io("cannot create the work directory", e))?;
    std::fs::create_dir_all(&output_dir).map_err(|e| io("cannot create the work directory", e))?;
    // Any user in the container may write its outputs.
    {
        use std::os::unix::fs::PermissionsExt;
        let _ = std::fs::set_permissions(&output_dir, std::fs::Permissions::from_mode(0o777));
    }
    let file_name = u
        .key
        .rsplit('/')
        .next()
        .filter(|n| !n.is_empty())
        .unwrap_or("input");
    let input_file = input_dir.join(file_name);
    download(ctx, u, &input_file).await.map_err(|e| (None, e))?;

    let result = run_container(ctx, u, &input_dir, &output_dir, file_name).await;
    let code = match result {
        Ok(0) => 0,
        Ok(c) => {
            let _ = std::fs::remove_dir_all(&work);
            return Err((Some(c), format!("the container exited with code {c}")));
        }
        Err(e) => {
            let _ = std::fs::remove_dir_all(&work);
            return Err((None, e));
        }
    };
    let outputs = upload_dir(ctx, &output_dir, &output_base(&ctx.args, &u.key))
        .await
        .map_err(|e| (Some(code), e))?;
    let _ = std::fs::remove_dir_all(&work);
    Ok((code, outputs))
}

async fn download(ctx: &Ctx, u: &Upload, to: &Path) -> Result<(), String> {
    let mut req = ctx.clients.s3.get_object().bucket(&u.bucket).key(&u.key);
    if !u.etag.is_empty() {
        req = req.if_match(format!("\"{}\"", u.etag));
    }
    let obj = req.send().await.map_err(|e| {
        format!(
            "cannot download s3://{}/{}: {}",
            u.bucket,
            u.key,
            sdk_error(&e)
        )
    })?;
    let mut reader = obj.body.into_async_read();
    let mut f = tokio::fs::File::create(to)
        .await
        .map_err(|e| format!("cannot write {}: {e}", to.display()))?;
    tokio::io::copy(&mut reader, &mut f)
        .await
        .map_err(|e| format!("cannot download s3://{}/{}: {e}", u.bucket, u.key))?;
    Ok(())
}

/// The main job's pipeline for one file; the container's exit code.
async fn run_container(
    ctx: &Ctx,
    u: &Upload,
    input_dir: &Path,
    output_dir: &Path,
    file_name: &str,
) -> Result<i64, String> {
    let a = &ctx.args;
    let abs = |p: &Path| std::fs::canonicalize(p).unwrap_or_else(|_| p.to_path_buf());
    let mut argv: Vec<String> = vec![
        "dockwatch".into(),
        "run".into(),
        "--docker-image".into(),
        a.docker_image.clone(),
        "--bash-command".into(),
        a.bash_command.clone(),
        "--aws-cloudwatch-group".into(),
        a.aws_cloudwatch_group.clone(),
        "--aws-cloudwatch-stream".into(),
        event::stream_name(&u.key),
        "--shell".into(),
        a.shell.clone(),
        "--quiet".into(),
        "--pull".into(),
        format!("{:?}", a.pull).to_lowercase(),
        "--volume".into(),
        format!("{}:/input:ro", abs(input_dir).display()),
        "--volume".into(),
        format!("{}:/output", abs(output_dir).display()),
        "--env".into(),
        format!("INPUT_FILE=/input/{file_name}"),
        "--env".into(),
        "OUTPUT_DIR=/output".into(),
        "--env".into(),
        format!("S3_BUCKET={}", u.bucket),
        "--env".into(),
        format!("S3_KEY={}", u.key),
        "--state-dir".into(),
        a.state_dir.join("checkpoints").display().to_string(),
        "--spool-dir".into(),
        a.state_dir.join("spool").display().to_string(),
        "--label".into(),
        "dockwatch.on-upload=1".into(),
    ];
    for e in &a.env {
        argv.extend(["--env".into(), e.clone()]);
    }
    for l in &a.labels {
        argv.extend(["--label".into(), l.clone()]);
    }
    let mut cfg = crate::config::RunConfig::from_argv(argv)?;
    cfg.aws = ctx.aws.clone();
    let launched = crate::run::launch(&cfg, &ctx.task_stop)
        .await
        .map_err(|e| format!("{:#}", anyhow::Error::from(e)))?;
    let code = launched
        .ship(ctx.task_stop.clone())
        .await
        .map_err(|e| format!("{:#}", anyhow::Error::from(e)))?;
    if ctx.task_stop.borrow().count > 0 {
        return Err("stopped by a signal before it finished".into());
    }
    Ok(i64::from(code))
}

/// Uploads every file under `dir` to `prefix` + its relative path; returns the keys.
async fn upload_dir(ctx: &Ctx, dir: &Path, prefix: &str) -> Result<Vec<String>, String> {
    let mut files: Vec<PathBuf> = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let entries =
            std::fs::read_dir(&d).map_err(|e| format!("cannot list {}: {e}", d.display()))?;
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
    let mut keys = Vec::new();
    for f in files {
        let rel = f
            .strip_prefix(dir)
            .unwrap_or(&f)
            .to_string_lossy()
            .replace('\\', "/");
        let key = format!("{prefix}{rel}");
        let body = ByteStream::from_path(&f)
            .await
            .map_err(|e| format!("cannot read {}: {e}", f.display()))?;
        ctx.clients
            .s3
            .put_object()
            .bucket(&ctx.args.bucket)
            .key(&key)
            .body(body)
            .send()
            .await
            .map_err(|e| {
                format!(
                    "cannot upload s3://{}/{key}: {}",
                    ctx.args.bucket,
                    sdk_error(&e)
                )
            })?;
        keys.push(key);
    }
    Ok(keys)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct T {
        #[command(flatten)]
        a: OnUploadArgs,
    }

    fn args(extra: &[&str]) -> OnUploadArgs {
        let mut v = vec![
            "t",
            "--bucket",
            "b",
            "--prefix",
            "input/",
            "--output-prefix",
            "output/",
            "--docker-image",
            "i",
            "--bash-command",
            "c",
            "--aws-cloudwatch-group",
            "g",
            "--setup",
        ];
        v.extend_from_slice(extra);
        T::parse_from(v).a
    }

    #[test]
    fn outputs_go_under_the_key() {
        assert_eq!(output_base(&args(&[]), "input/a/b.csv"), "output/a/b.csv/");
    }

    #[test]
    fn validation() {
        assert!(validate(&args(&[])).is_ok());
        assert!(validate(&args(&["--concurrency", "0"])).is_err());
        assert!(validate(&args(&["--wait", "30s"])).is_err());
        let mut a = args(&[]);
        a.output_prefix = "input/out/".into();
        let e = validate(&a).unwrap_err().to_string();
        assert!(e.contains("outside --prefix"), "{e}");
    }
}
