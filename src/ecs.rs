//! `--on ecs`: run the container on an existing ECS cluster (Fargate) instead of the local
//! engine, and follow it from here.
//!
//! 1. Task definition: family `dockwatch-<image>`, one container `main` with entry point
//!    `SHELL -c`, the awslogs log driver pointed at the group and stream prefix, the CPU,
//!    memory and roles asked for. The family's newest revision is reused when it is exactly
//!    that; otherwise a new revision is registered.
//! 2. RunTask on Fargate (awsvpc: subnets, security groups, public IP or not) with the command
//!    and environment as overrides.
//! 3. Until the task stops: DescribeTasks every 2 s, and the container's CloudWatch stream
//!    (`PREFIX/main/TASK-ID`) read forward and echoed. The exit code is the container's.
//!    A stop signal calls StopTask and waits for the task to stop.

use std::time::Duration;

use aws_sdk_ecs::operation::run_task::RunTaskError;
use aws_sdk_ecs::types::{
    AssignPublicIp, AwsVpcConfiguration, Compatibility, ContainerDefinition, ContainerOverride,
    KeyValuePair, LaunchType, LogConfiguration, LogDriver, NetworkConfiguration, NetworkMode,
    TaskOverride,
};

use crate::aws::retry::chain;
use crate::aws::{AwsError, AwsOptions, Clients};
use crate::config::{EcsConfig, RunConfig};
use crate::shutdown::Shutdown;

/// Why a task could not run to its end.
#[derive(Debug, thiserror::Error)]
pub enum EcsError {
    #[error(transparent)]
    Aws(#[from] AwsError),
    #[error(
        "ECS cluster '{cluster}' not found (or not active) in {region}; create it or check --ecs-cluster and the region"
    )]
    ClusterNotFound { cluster: String, region: String },
    #[error(
        "RunTask refused its parameters: {message}; check --ecs-subnets, --ecs-security-groups, --ecs-cpu and --ecs-memory"
    )]
    InvalidParameters { message: String },
    #[error(
        "RunTask was refused: {message}; check --ecs-execution-role, --ecs-task-role and the caller's permissions"
    )]
    Refused { message: String },
    #[error("could not {call}: {detail}")]
    Call { call: &'static str, detail: String },
    #[error("RunTask failed: {reason} {detail}")]
    TaskFailure { reason: String, detail: String },
    #[error("RunTask started no task")]
    NoTask,
    #[error("ECS task {0} stopped by a signal")]
    Stopped(String),
    #[error("ECS task {task} stopped without an exit code: {reason}")]
    NoExitCode { task: String, reason: String },
}

impl EcsError {
    fn call(call: &'static str, e: &(dyn std::error::Error + 'static)) -> Self {
        EcsError::Call {
            call,
            detail: chain(e),
        }
    }

    /// A RunTask error by its typed variant, or, for EC2's codes that the ECS model does not
    /// list (a subnet or security group that does not exist), by that code.
    fn run_task(cluster: &str, e: aws_sdk_ecs::error::SdkError<RunTaskError>) -> Self {
        use aws_sdk_ecs::error::ProvideErrorMetadata;
        let message = e.message().map_or_else(|| chain(&e), str::to_string);
        let code = e.code().unwrap_or_default();
        let ec2_network = code.starts_with("InvalidSubnetID") || code.starts_with("InvalidGroup");
        match e.as_service_error() {
            Some(RunTaskError::ClusterNotFoundException(_)) => EcsError::ClusterNotFound {
                cluster: cluster.to_string(),
                region: "this region".into(),
            },
            Some(RunTaskError::InvalidParameterException(_)) => {
                EcsError::InvalidParameters { message }
            }
            _ if ec2_network => EcsError::InvalidParameters { message },
            Some(RunTaskError::AccessDeniedException(_) | RunTaskError::ClientException(_)) => {
                EcsError::Refused { message }
            }
            Some(_) => EcsError::Call {
                call: "run the ECS task",
                detail: format!("{code}: {message}"),
            },
            None => EcsError::call("run the ECS task", &e),
        }
    }
}

/// The container's name in the task definition.
const CONTAINER: &str = "main";

/// One container to run.
#[derive(Debug, Clone)]
pub(crate) struct EcsJob {
    pub(crate) image: String,
    pub(crate) shell: String,
    pub(crate) command: String,
    pub(crate) group: String,
    pub(crate) stream_prefix: String,
    pub(crate) env: Vec<(String, String)>,
    /// Print the container's log lines on stdout while it runs.
    pub(crate) echo: bool,
    /// RunTask's idempotency token (at most 64 characters): a request sent again with the
    /// same token starts no second task.
    pub(crate) client_token: Option<String>,
    /// What the task is for, in the start line (on-upload: the object).
    pub(crate) purpose: Option<String>,
}

/// The task definition family for an image.
pub(crate) fn family(image: &str) -> String {
    let s: String = image
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '-'
            }
        })
        .take(200)
        .collect();
    format!("dockwatch-{s}")
}

fn container_definition(cfg: &EcsConfig, job: &EcsJob, region: &str) -> ContainerDefinition {
    let log = LogConfiguration::builder()
        .log_driver(LogDriver::Awslogs)
        .options("awslogs-group", &job.group)
        .options("awslogs-region", region)
        .options("awslogs-stream-prefix", &job.stream_prefix)
        .options("awslogs-create-group", "true")
        .build()
        .expect("log driver set");
    // A soft memory reservation of the whole task (the hard limits are the task's).
    ContainerDefinition::builder()
        .name(CONTAINER)
        .image(&job.image)
        .essential(true)
        .memory_reservation(cfg.memory.parse().unwrap_or(512))
        .entry_point(&job.shell)
        .entry_point("-c")
        .log_configuration(log)
        .build()
}

/// Reuses the family's newest revision when it is what we need; registers one otherwise.
async fn task_definition(
    c: &Clients,
    cfg: &EcsConfig,
    job: &EcsJob,
    region: &str,
) -> Result<String, EcsError> {
    let fam = family(&job.image);
    let want = container_definition(cfg, job, region);
    if let Ok(r) = c
        .ecs
        .describe_task_definition()
        .task_definition(&fam)
        .send()
        .await
        && let Some(td) = r.task_definition()
    {
        let same = td.container_definitions().first().is_some_and(|d| {
            d.image() == want.image()
                && d.memory_reservation() == want.memory_reservation()
                && d.entry_point() == want.entry_point()
                && d.log_configuration() == want.log_configuration()
        }) && td.cpu() == Some(cfg.cpu.as_str())
            && td.memory() == Some(cfg.memory.as_str())
            && td.execution_role_arn() == Some(cfg.execution_role.as_str())
            && td.task_role_arn() == cfg.task_role.as_deref();
        if same && let Some(arn) = td.task_definition_arn() {
            return Ok(arn.to_string());
        }
    }
    let r = c
        .ecs
        .register_task_definition()
        .family(&fam)
        .requires_compatibilities(Compatibility::Fargate)
        .network_mode(NetworkMode::Awsvpc)
        .cpu(&cfg.cpu)
        .memory(&cfg.memory)
        .execution_role_arn(&cfg.execution_role)
        .set_task_role_arn(cfg.task_role.clone())
        .container_definitions(want)
        .send()
        .await
        .map_err(|e| EcsError::call("register the task definition", &e))?;
    r.task_definition()
        .and_then(|t| t.task_definition_arn())
        .map(str::to_string)
        .ok_or(EcsError::Call {
            call: "register the task definition",
            detail: format!("the answer for {fam} has no ARN"),
        })
}

/// Runs the job to its end; the container's exit code.
pub(crate) async fn run_task(
    c: &Clients,
    cfg: &EcsConfig,
    job: &EcsJob,
    aws: &AwsOptions,
    stop: Shutdown,
) -> Result<i64, EcsError> {
    let region = c
        .ecs
        .config()
        .region()
        .map(|r| r.to_string())
        .or(aws.region.clone())
        .unwrap_or_default();
    check_cluster(c, cfg, &region).await?;
    let _ =
        crate::aws::logs::ensure_destination(&c.logs, &job.group, "dockwatch-ecs", 3, None).await;
    let td = task_definition(c, cfg, job, &region).await?;
    let task_arn = start_task(c, cfg, job, &td).await?;
    follow_task(c, cfg, job, &td, &task_arn, stop).await
}

/// The cluster must exist and be active.
async fn check_cluster(c: &Clients, cfg: &EcsConfig, region: &str) -> Result<(), EcsError> {
    let cl = c
        .ecs
        .describe_clusters()
        .clusters(&cfg.cluster)
        .send()
        .await
        .map_err(|e| EcsError::call("look up the ECS cluster", &e))?;
    let active = cl.clusters().iter().any(|k| k.status() == Some("ACTIVE"));
    if !active {
        return Err(EcsError::ClusterNotFound {
            cluster: cfg.cluster.clone(),
            region: region.to_string(),
        });
    }
    Ok(())
}

/// RunTask on Fargate with the job's command and environment; the task's ARN.
async fn start_task(
    c: &Clients,
    cfg: &EcsConfig,
    job: &EcsJob,
    td: &str,
) -> Result<String, EcsError> {
    let net = AwsVpcConfiguration::builder()
        .set_subnets(Some(cfg.subnets.clone()))
        .assign_public_ip(if cfg.public_ip {
            AssignPublicIp::Enabled
        } else {
            AssignPublicIp::Disabled
        })
        // Always sent (empty: the VPC's default group); some AWS-compatible servers need it.
        .set_security_groups(Some(cfg.security_groups.clone()));

    let overrides = TaskOverride::builder()
        .container_overrides(
            ContainerOverride::builder()
                .name(CONTAINER)
                .command(&job.command)
                .set_environment(Some(
                    job.env
                        .iter()
                        .map(|(k, v)| KeyValuePair::builder().name(k).value(v).build())
                        .collect(),
                ))
                .build(),
        )
        .build();
    let request = c
        .ecs
        .run_task()
        .cluster(&cfg.cluster)
        .task_definition(td)
        .launch_type(LaunchType::Fargate)
        .count(1)
        .started_by(started_by(job))
        .set_client_token(job.client_token.clone())
        .network_configuration(
            NetworkConfiguration::builder()
                .awsvpc_configuration(
                    net.build()
                        .map_err(|e| EcsError::call("build the network configuration", &e))?,
                )
                .build(),
        )
        .overrides(overrides);
    // An answer lost after the request was sent (a dropped connection, a timeout, a body
    // that cannot be read) may hide a task that started: the same request with the same
    // client token returns that task instead of starting a second one, so it is sent again.
    let mut tries = 0;
    let r = loop {
        tries += 1;
        match request.clone().send().await {
            Ok(r) => break r,
            Err(e) if tries < 4 && job.client_token.is_some() && e.as_service_error().is_none() => {
                crate::say!(
                    "dockwatch: RunTask's answer was lost ({}); asking again with the same client token",
                    chain(&e)
                );
                tokio::time::sleep(Duration::from_millis(500 * tries)).await;
            }
            Err(e) if e.as_service_error().is_none() && job.client_token.is_some() => {
                // Still no answer: a task may run that nobody follows. It is found by its
                // startedBy (unique to this token) and stopped.
                stop_unconfirmed(c, cfg, job).await;
                return Err(EcsError::run_task(&cfg.cluster, e));
            }
            Err(e) => return Err(EcsError::run_task(&cfg.cluster, e)),
        }
    };
    if let Some(f) = r.failures().first() {
        return Err(EcsError::TaskFailure {
            reason: f.reason().unwrap_or("?").to_string(),
            detail: f.detail().unwrap_or("").to_string(),
        });
    }
    r.tasks()
        .first()
        .and_then(|t| t.task_arn())
        .map(str::to_string)
        .ok_or(EcsError::NoTask)
}

/// The task's `startedBy`: `dockwatch`, and with a client token a suffix unique to it
/// (at most 36 characters), so a task whose start was never confirmed can be found.
fn started_by(job: &EcsJob) -> String {
    match &job.client_token {
        Some(t) => format!("dockwatch-{:016x}", crate::util::fnv1a(t.as_bytes())),
        None => "dockwatch".into(),
    }
}

/// Stops the tasks started for `job` whose RunTask answer never arrived.
async fn stop_unconfirmed(c: &Clients, cfg: &EcsConfig, job: &EcsJob) {
    let Ok(list) = c
        .ecs
        .list_tasks()
        .cluster(&cfg.cluster)
        .started_by(started_by(job))
        .send()
        .await
    else {
        return;
    };
    for arn in list.task_arns() {
        crate::say!("dockwatch: stopping ECS task {arn}: its start was never confirmed");
        let _ = c
            .ecs
            .stop_task()
            .cluster(&cfg.cluster)
            .task(arn)
            .reason("dockwatch: RunTask's answer was lost")
            .send()
            .await;
    }
}

/// Until the task stops: its state every 2 s, its log echoed; a stop asked for is passed on
/// as StopTask. The container's exit code.
async fn follow_task(
    c: &Clients,
    cfg: &EcsConfig,
    job: &EcsJob,
    td: &str,
    task_arn: &str,
    mut stop: Shutdown,
) -> Result<i64, EcsError> {
    let task_id = task_arn.rsplit('/').next().unwrap_or(task_arn).to_string();
    crate::say!(
        "dockwatch: started ECS task {task_id}{} on {} ({td}); logs: {}/{}/{CONTAINER}/{task_id}",
        job.purpose
            .as_deref()
            .map(|p| format!(" for {p}"))
            .unwrap_or_default(),
        cfg.cluster,
        job.group,
        job.stream_prefix
    );
    let stream = format!("{}/{CONTAINER}/{task_id}", job.stream_prefix);
    let mut token: Option<String> = None;
    let mut stop_sent = false;
    loop {
        if stop.is_requested() && !stop_sent {
            stop_sent = true;
            crate::say!("dockwatch: stopping ECS task {task_id}");
            c.ecs
                .stop_task()
                .cluster(&cfg.cluster)
                .task(task_arn)
                .reason("dockwatch: interrupted")
                .send()
                .await
                .map_err(|e| EcsError::call("stop the ECS task", &e))?;
        }
        let d = c
            .ecs
            .describe_tasks()
            .cluster(&cfg.cluster)
            .tasks(task_arn)
            .send()
            .await
            .map_err(|e| EcsError::call("describe the ECS task", &e))?;
        let task = d.tasks().first().cloned();
        echo_logs(c, job, &stream, &mut token).await;
        if let Some(t) = &task
            && t.last_status() == Some("STOPPED")
        {
            echo_logs(c, job, &stream, &mut token).await;
            let code = t
                .containers()
                .iter()
                .find(|k| k.name() == Some(CONTAINER))
                .and_then(|k| k.exit_code());
            if stop_sent {
                return Err(EcsError::Stopped(task_id));
            }
            return code.map(i64::from).ok_or_else(|| EcsError::NoExitCode {
                task: task_id.clone(),
                reason: t.stopped_reason().unwrap_or("no reason given").to_string(),
            });
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs(2)) => {}
            _ = stop.changed() => {}
        }
    }
}

/// Prints what the task's stream has gained since `token`.
async fn echo_logs(c: &Clients, job: &EcsJob, stream: &str, token: &mut Option<String>) {
    loop {
        let r = c
            .logs
            .get_log_events()
            .log_group_name(&job.group)
            .log_stream_name(stream)
            .start_from_head(true)
            .set_next_token(token.clone())
            .send()
            .await;
        let Ok(r) = r else { return };
        let n = r.events().len();
        if job.echo {
            for e in r.events() {
                crate::out!("{}", e.message().unwrap_or_default());
            }
        }
        let next = r.next_forward_token().map(str::to_string);
        if n == 0 || next == *token {
            *token = next;
            return;
        }
        *token = next;
    }
}

/// `dockwatch run --on ecs`: the main job on Fargate; returns the exit code.
pub async fn run_main(run: RunConfig, cfg: EcsConfig, shutdown: Shutdown) -> Result<i32, EcsError> {
    let clients = Clients::build(&run.aws).await?;
    let env = run
        .container
        .env
        .iter()
        .filter_map(|e| {
            e.split_once('=')
                .map(|(k, v)| (k.to_string(), v.to_string()))
        })
        .collect();
    let job = EcsJob {
        image: run.container.image.clone(),
        shell: run.container.shell.clone(),
        command: run.container.command.clone(),
        group: run.ship.group.clone(),
        stream_prefix: run.ship.stream.clone(),
        env,
        echo: run.echo,
        client_token: Some(format!("dockwatch-{:016x}", rand::random::<u64>())),
        purpose: None,
    };
    match run_task(&clients, &cfg, &job, &run.aws, shutdown.clone()).await {
        Ok(code) => Ok(crate::exit_codes::from_container(code)),
        Err(e) if shutdown.is_requested() => {
            crate::say!("dockwatch: {e}");
            Ok(shutdown.exit_code().unwrap_or(crate::exit_codes::SIGINT))
        }
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn families_are_valid_names() {
        assert_eq!(family("python:3.12"), "dockwatch-python-3-12");
        assert_eq!(
            family("registry.example.com/team/app:1"),
            "dockwatch-registry-example-com-team-app-1"
        );
    }
}
