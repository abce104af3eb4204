//! `--on ecs`: the validated ECS/Fargate options.

use super::ConfigError;
use crate::cli::EcsArgs;

/// Validated `--ecs-*` options.
#[derive(Debug, Clone)]
pub struct EcsConfig {
    pub(crate) cluster: String,
    pub(crate) subnets: Vec<String>,
    pub(crate) security_groups: Vec<String>,
    pub(crate) execution_role: String,
    pub(crate) task_role: Option<String>,
    pub(crate) cpu: String,
    pub(crate) memory: String,
    pub(crate) public_ip: bool,
}

/// Validates the `--ecs-*` flags; each missing or malformed option is its own message.
pub(crate) fn ecs_config(a: &EcsArgs) -> Result<EcsConfig, ConfigError> {
    check(a).map_err(ConfigError::Ecs)
}

fn check(a: &EcsArgs) -> Result<EcsConfig, String> {
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
    fargate_size(
        a.ecs_cpu.parse().unwrap_or(0),
        a.ecs_memory.parse().unwrap_or(0),
    )?;
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

/// Fargate's task sizes: CPU units, and the memory (MiB) each allows as (from, to, step).
const FARGATE_SIZES: [(u32, u32, u32, u32); 7] = [
    (256, 512, 2048, 512),
    (512, 1024, 4096, 1024),
    (1024, 2048, 8192, 1024),
    (2048, 4096, 16384, 1024),
    (4096, 8192, 30720, 1024),
    (8192, 16384, 61440, 4096),
    (16384, 32768, 122880, 8192),
];

/// Refuses a CPU/memory pair Fargate would refuse (after a round trip), saying what fits.
fn fargate_size(cpu: u32, memory: u32) -> Result<(), String> {
    let Some(&(_, from, to, step)) = FARGATE_SIZES.iter().find(|s| s.0 == cpu) else {
        return Err(format!(
            "--ecs-cpu {cpu} is not a Fargate size: use 256, 512, 1024, 2048, 4096, 8192 or 16384"
        ));
    };
    // 256 CPU also allows 1024 and 2048 (512 steps from 512).
    if memory < from || memory > to || !(memory - from).is_multiple_of(step) {
        return Err(format!(
            "--ecs-memory {memory} does not fit --ecs-cpu {cpu} on Fargate: give {from} to {to} MiB in steps of {step}"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fargate_sizes_follow_the_table() {
        assert!(fargate_size(256, 512).is_ok());
        assert!(fargate_size(256, 2048).is_ok());
        assert!(fargate_size(256, 4096).unwrap_err().contains("512 to 2048"));
        assert!(fargate_size(1024, 3072).is_ok());
        assert!(fargate_size(1024, 3000).is_err());
        assert!(fargate_size(8192, 20480).is_ok());
        assert!(fargate_size(8192, 18432).is_err(), "4096 steps");
        assert!(
            fargate_size(300, 512)
                .unwrap_err()
                .contains("not a Fargate size")
        );
    }
    use clap::Parser;

    #[derive(Parser)]
    struct T {
        #[command(flatten)]
        e: EcsArgs,
    }

    fn cfg(extra: &[&str]) -> Result<EcsConfig, String> {
        let mut v = vec!["t", "--on", "ecs"];
        v.extend_from_slice(extra);
        check(&T::parse_from(v).e)
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
}
