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

use aws_sdk_ecs::types::{
    AssignPublicIp, AwsVpcConfiguration, Compatibility, ContainerDefinition, ContainerOverride,
    KeyValuePair, LaunchType, LogConfiguration, LogDriver, NetworkConfiguration, NetworkMode,
    TaskOverride,
};
use tokio::sync::watch;

use crate::cli::{EcsArgs, Engine, RunArgs};
use crate::config::AwsOptions;
use crate::run::Interrupts;
use crate::trigger::{Clients, sdk_error};

/// The container's name in the task definition.
const CONTAINER: &str = "main";

/// Validated `--ecs-*` options.
#[derive(Debug, Clone)]
pub struct EcsConfig {
    pub cluster: String,
    pub subnets: Vec<String>,
    pub security_groups: Vec<String>,
    pub execution_role: String,
    pub task_role: Option<String>,
    pub cpu: String,
    pub memory: String,
    pub public_ip: bool,
}

impl EcsConfig {
    /// Each missing or malformed option is its own message.
    pub fn from_args(a: &EcsArgs) -> Result<Self, String> {
        let cluster = a
            .ecs_cluster
            .clone()
            .filter(|c| !c.is_empty())
            .ok_or("--on ecs needs --ecs-cluster NAME (an existing ECS cluster)")?;
        if a.ecs_subnets.iter().all(|s| s.is_empty()) {
            return Err(
                "--on ecs needs --ecs-subnets subnet-...: Fargate tasks run in your VPC's subnets"
                    .into(),
            );
        }
        let role = a
            .ecs_execution_role
            .clone()
            .filter(|r| !r.is_empty())
            .ok_or("--on ecs needs --ecs-execution-role ARN: Fargate needs it to pull the image and send logs to CloudWatch")?;
        if !role.starts_with("arn:") {
            return Err(format!(
                "--ecs-execution-role {role:?} is not a role ARN (arn:aws:iam::ACCOUNT:role/NAME)"
            ));
        }
        for (flag, v) in [("--ecs-cpu", &a.ecs_cpu), ("--ecs-memory", &a.ecs_memory)] {
            if v.parse::<u32>().map_or(true, |n| n == 0) {
                return Err(format!("{flag} {v:?} is not a positive number"));
            }
        }
        Ok(EcsConfig {
            cluster,
            subnets: a
                .ecs_subnets
                .iter()
                .filter(|s| !s.is_empty())
                .cloned()
                .collect(),
            security_groups: a
                .ecs_security_groups
                .iter()
                .filter(|s| !s.is_empty())
                .cloned()
                .collect(),
            execution_role: role,
            task_role: a.ecs_task_role.clone().filter(|r| !r.is_empty()),
            cpu: a.ecs_cpu.clone(),
            memory: a.ecs_memory.clone(),
            public_ip: a.ecs_assign_public_ip,
        })
    }
}

/// One container to run.
#[derive(Debug, Clone)]
pub struct EcsJob {
    pub image: String,
    pub shell: String,
    pub command: String,
    pub group: String,
    pub stream_prefix: String,
    pub env: Vec<(String, String)>,
    /// Print the container's log lines on stdout while it runs.
    pub echo: bool,
}

/// The task definition family for an image.
pub fn family(image: &str) -> String {
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
) -> Result<String, String> {
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
        .map_err(|e| {
            format!(
                "cannot register the task definition {fam}: {}",
                sdk_error(&e)
            )
        })?;
    r.task_definition()
        .and_then(|t| t.task_definition_arn())
        .map(str::to_string)
        .ok_or_else(|| "RegisterTaskDefinition returned no ARN".to_string())
}

/// Runs the job to its end; the container's exit code.
pub async fn run_task(
    c: &Clients,
    cfg: &EcsConfig,
    job: &EcsJob,
    aws: &AwsOptions,
    mut stop: watch::Receiver<Interrupts>,
) -> Result<i64, String> {
    let region = c
        .ecs
        .config()
        .region()
        .map(|r| r.to_string())
        .or(aws.region.clone())
        .unwrap_or_default();
    // The cluster must exist and be active.
    let cl = c
        .ecs
        .describe_clusters()
        .clusters(&cfg.cluster)
        .send()
        .await
        .map_err(|e| format!("cannot look up the ECS cluster: {}", sdk_error(&e)))?;
    let active = cl.clusters().iter().any(|k| k.status() == Some("ACTIVE"));
    if !active {
        return Err(format!(
            "ECS cluster '{}' not found (or not active) in {region}; create it or check --ecs-cluster and the region",
            cfg.cluster
        ));
    }
    let _ = crate::sink::client::ensure_destination(&c.logs, &job.group, "dockwatch-ecs", 3).await;
    let td = task_definition(c, cfg, job, &region).await?;
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
    let r = c
        .ecs
        .run_task()
        .cluster(&cfg.cluster)
        .task_definition(&td)
        .launch_type(LaunchType::Fargate)
        .count(1)
        .started_by("dockwatch")
        .network_configuration(
            NetworkConfiguration::builder()
                .awsvpc_configuration(net.build().map_err(|e| e.to_string())?)
                .build(),
        )
        .overrides(overrides)
        .send()
        .await
        .map_err(|e| {
            use aws_sdk_ecs::error::ProvideErrorMetadata;
            let code = e.code().unwrap_or_default().to_string();
            let msg = e.message().map_or_else(|| sdk_error(&e), str::to_string);
            if code.contains("ClusterNotFound") {
                format!(
                    "ECS cluster '{}' not found; check --ecs-cluster and the region",
                    cfg.cluster
                )
            } else if code.contains("Subnet") {
                format!("RunTask refused the subnets: {msg}; check --ecs-subnets")
            } else if code.contains("SecurityGroup") {
                format!("RunTask refused the security groups: {msg}; check --ecs-security-groups")
            } else if msg.to_lowercase().contains("role") {
                format!(
                    "RunTask refused a role: {msg}; check --ecs-execution-role and --ecs-task-role"
                )
            } else {
                format!("RunTask failed: {code} {msg}")
            }
        })?;
    if let Some(f) = r.failures().first() {
        return Err(format!(
            "RunTask failed: {} {}",
            f.reason().unwrap_or("?"),
            f.detail().unwrap_or("")
        ));
    }
    let task_arn = r
        .tasks()
        .first()
        .and_then(|t| t.task_arn())
        .ok_or("RunTask started no task")?
        .to_string();
    let task_id = task_arn.rsplit('/').next().unwrap_or(&task_arn).to_string();
    eprintln!(
        "dockwatch: started ECS task {task_id} on {} ({td}); logs: {}/{}/{CONTAINER}/{task_id}",
        cfg.cluster, job.group, job.stream_prefix
    );
    let stream = format!("{}/{CONTAINER}/{task_id}", job.stream_prefix);
    let mut token: Option<String> = None;
    let mut stop_sent = false;
    loop {
        if stop.borrow().count > 0 && !stop_sent {
            stop_sent = true;
            eprintln!("dockwatch: stopping ECS task {task_id}");
            c.ecs
                .stop_task()
                .cluster(&cfg.cluster)
                .task(&task_arn)
                .reason("dockwatch: interrupted")
                .send()
                .await
                .map_err(|e| format!("StopTask failed: {}", sdk_error(&e)))?;
        }
        let d = c
            .ecs
            .describe_tasks()
            .cluster(&cfg.cluster)
            .tasks(&task_arn)
            .send()
            .await
            .map_err(|e| format!("DescribeTasks failed: {}", sdk_error(&e)))?;
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
                return Err(format!("ECS task {task_id} stopped by a signal"));
            }
            return code.map(i64::from).ok_or_else(|| {
                format!(
                    "ECS task {task_id} stopped without an exit code: {}",
                    t.stopped_reason().unwrap_or("no reason given")
                )
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
                println!("{}", e.message().unwrap_or_default());
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
pub async fn run_main(
    a: RunArgs,
    interrupts: watch::Receiver<Interrupts>,
) -> Result<i32, crate::trigger::TriggerError> {
    use crate::trigger::TriggerError;
    debug_assert_eq!(a.ecs.on, Engine::Ecs);
    let cfg = EcsConfig::from_args(&a.ecs).map_err(TriggerError::Usage)?;
    let run = crate::config::RunConfig::from_args(a.clone())
        .map_err(|e| TriggerError::Usage(e.to_string()))?;
    let clients = Clients::build(&run.aws).await?;
    let env = a
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
    };
    match run_task(&clients, &cfg, &job, &run.aws, interrupts.clone()).await {
        Ok(code) => Ok(crate::exit_codes::from_container(code)),
        Err(e) if interrupts.borrow().count > 0 => {
            eprintln!("dockwatch: {e}");
            Ok(interrupts
                .borrow()
                .first
                .map_or(crate::exit_codes::SIGINT, |s| s.exit_code()))
        }
        Err(e) => Err(TriggerError::Failed(e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct T {
        #[command(flatten)]
        e: EcsArgs,
    }

    fn cfg(extra: &[&str]) -> Result<EcsConfig, String> {
        let mut v = vec!["t", "--on", "ecs"];
        v.extend_from_slice(extra);
        EcsConfig::from_args(&T::parse_from(v).e)
    }

    #[test]
    fn each_missing_option_has_its_message() {
        assert!(cfg(&[]).unwrap_err().contains("--ecs-cluster"));
        assert!(
            cfg(&["--ecs-cluster", "c"])
                .unwrap_err()
                .contains("--ecs-subnets")
        );
        assert!(
            cfg(&["--ecs-cluster", "c", "--ecs-subnets", "s"])
                .unwrap_err()
                .contains("--ecs-execution-role")
        );
        let role = [
            "--ecs-cluster",
            "c",
            "--ecs-subnets",
            "s",
            "--ecs-execution-role",
        ];
        let mut bad = role.to_vec();
        bad.push("admin");
        assert!(cfg(&bad).unwrap_err().contains("not a role ARN"));
        let mut ok = role.to_vec();
        ok.extend(["arn:aws:iam::123456789012:role/x", "--ecs-cpu", "zero"]);
        assert!(cfg(&ok).unwrap_err().contains("--ecs-cpu"));
        ok.truncate(ok.len() - 2);
        let c = cfg(&ok).unwrap();
        assert_eq!(
            (c.cpu.as_str(), c.memory.as_str(), c.public_ip),
            ("256", "512", false)
        );
    }

    #[test]
    fn families_are_valid_names() {
        assert_eq!(family("python:3.12"), "dockwatch-python-3-12");
        assert_eq!(
            family("registry.example.com/team/app:1"),
            "dockwatch-registry-example-com-team-app-1"
        );
    }
}
