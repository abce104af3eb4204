//! `dockwatch on-upload`: the validated options, built once from the command line.

use std::path::PathBuf;
use std::time::Duration;

use super::{
    ConfigError, ContainerSpec, EcsConfig, PullPolicy, aws_options, ecs, split_kv,
    validate_group_name,
};
use crate::aws::AwsOptions;
use crate::cli::{Engine, OnUploadArgs};

/// What `on-upload` watches and what it runs for each object.
#[derive(Debug, Clone)]
pub struct OnUploadConfig {
    pub(crate) bucket: String,
    /// Only keys starting with this.
    pub(crate) prefix: String,
    /// Where each task's outputs go: PREFIX + the key without `prefix` + `/`.
    pub(crate) output_prefix: String,
    /// The bucket of the outputs.
    pub(crate) output_bucket: String,
    /// Shared claims (several workers), or `None` for this host only.
    pub(crate) claims: Option<SharedAt>,
    /// How long a shared claim lasts without renewal.
    pub(crate) lease: Duration,
    /// A task running longer is stopped (a failed attempt).
    pub(crate) task_timeout: Option<Duration>,
    /// A stopped container's time between SIGTERM and SIGKILL.
    pub(crate) stop_timeout: Duration,
    /// Where `/metrics` and `/healthz` are served.
    pub(crate) metrics_addr: Option<std::net::SocketAddr>,
    pub(crate) image: String,
    pub(crate) shell: String,
    pub(crate) command: String,
    /// `KEY=VALUE` entries for every task, checked.
    pub(crate) env: Vec<String>,
    /// The user's labels for every task's container.
    pub(crate) labels: Vec<(String, String)>,
    pub(crate) pull: PullPolicy,
    /// Each task logs to a stream of this group named after its key.
    pub(crate) group: String,
    /// The queue; `None` with `--setup` (created then).
    pub(crate) queue_url: Option<String>,
    pub(crate) concurrency: usize,
    pub(crate) max_attempts: u32,
    pub(crate) visibility_timeout: Duration,
    pub(crate) wait: Duration,
    pub(crate) grace: Duration,
    pub(crate) state_dir: PathBuf,
    /// `--on ecs`: tasks on Fargate instead of this engine.
    pub(crate) ecs: Option<EcsConfig>,
    pub(crate) aws: AwsOptions,
}

/// Where claims live.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SharedAt {
    pub(crate) bucket: String,
    /// Ends with `/` unless empty.
    pub(crate) prefix: String,
}

impl SharedAt {
    /// `s3://BUCKET/PREFIX`.
    pub(crate) fn parse(s: &str) -> Result<Self, String> {
        let rest = s
            .strip_prefix("s3://")
            .ok_or_else(|| format!("--claims '{s}': write s3://BUCKET/PREFIX"))?;
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        if bucket.is_empty() {
            return Err(format!(
                "--claims '{s}': no bucket; write s3://BUCKET/PREFIX"
            ));
        }
        let mut prefix = prefix.to_string();
        if !prefix.is_empty() && !prefix.ends_with('/') {
            prefix.push('/');
        }
        Ok(Self {
            bucket: bucket.to_string(),
            prefix,
        })
    }
}

impl OnUploadConfig {
    pub fn from_args(a: OnUploadArgs) -> Result<Self, ConfigError> {
        check_limits(&a).map_err(|m| ConfigError::OnUpload(m.to_string()))?;
        validate_group_name(&a.aws_cloudwatch_group)?;
        // The same checks as the main job's, once, before the first message arrives.
        let env = super::container::environment(&a.container.env, &a.container.env_files)?;
        ContainerSpec::new(
            a.docker_image.clone(),
            a.container.shell.clone(),
            a.bash_command.clone(),
        )?;
        let labels = a
            .container
            .labels
            .iter()
            .map(|l| split_kv(l, "--label"))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(OnUploadConfig {
            ecs: match a.ecs.on {
                Engine::Ecs => Some(ecs::ecs_config(&a.ecs)?),
                Engine::Local => None,
            },
            aws: aws_options(a.aws)?,
            bucket: a.bucket.clone(),
            prefix: a.prefix,
            output_prefix: a.output_prefix,
            output_bucket: a.output_bucket.clone().unwrap_or(a.bucket.clone()),
            claims: a
                .claims
                .as_deref()
                .map(SharedAt::parse)
                .transpose()
                .map_err(ConfigError::OnUpload)?,
            lease: a.lease,
            task_timeout: a.task_timeout,
            stop_timeout: a.stop_timeout,
            metrics_addr: a.metrics_addr,
            image: a.docker_image,
            shell: a.container.shell,
            command: a.bash_command,
            env,
            labels,
            pull: a.container.pull.into(),
            group: a.aws_cloudwatch_group,
            queue_url: a.queue_url,
            concurrency: a.concurrency,
            max_attempts: a.max_attempts,
            visibility_timeout: a.visibility_timeout,
            wait: a.wait,
            grace: a.grace,
            state_dir: a.state_dir,
        })
    }

    /// Where a key's outputs go: OUTPUT_PREFIX + key without PREFIX + `/`.
    pub(crate) fn output_base(&self, key: &str) -> String {
        let rel = key.strip_prefix(self.prefix.as_str()).unwrap_or(key);
        format!("{}{}/", self.output_prefix, rel)
    }
}

/// The numeric and prefix rules, each with its own message.
fn check_limits(a: &OnUploadArgs) -> Result<(), &'static str> {
    if a.bucket.is_empty() {
        return Err("--bucket is empty");
    }
    if a.concurrency == 0 || a.concurrency > 64 {
        return Err("--concurrency must be 1 to 64");
    }
    if a.max_attempts == 0 {
        return Err("--max-attempts must be at least 1");
    }
    if a.wait > Duration::from_secs(20) {
        return Err("--wait must be at most 20s (SQS long polling)");
    }
    if a.visibility_timeout < Duration::from_secs(2)
        || a.visibility_timeout > Duration::from_secs(43_200)
    {
        return Err("--visibility-timeout must be between 2s and 12h");
    }
    let same_bucket = a.output_bucket.as_deref().is_none_or(|b| b == a.bucket);
    if a.output_prefix.is_empty() {
        return Err("--output-prefix is empty; give one, e.g. output/");
    }
    if same_bucket && a.output_prefix.starts_with(&a.prefix) {
        return Err(if a.prefix.is_empty() {
            "with an empty --prefix every output would start a new task: watch a prefix (--prefix input/) or put the outputs in another bucket (--output-bucket)"
        } else {
            "--output-prefix is inside --prefix, so every output would start a new task: choose an output prefix outside it, or --output-bucket"
        });
    }
    if a.output_bucket.as_deref() == Some("") {
        return Err("--output-bucket is empty");
    }
    if a.task_timeout.is_some_and(|t| t < Duration::from_secs(1)) {
        return Err("--task-timeout must be at least 1s");
    }
    if a.lease < Duration::from_secs(10) || a.lease > Duration::from_secs(12 * 3600) {
        return Err("--lease must be between 10s and 12h");
    }
    Ok(())
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
        let c = OnUploadConfig::from_args(args(&[])).unwrap();
        assert_eq!(c.output_base("input/a/b.csv"), "output/a/b.csv/");
    }

    #[test]
    fn claim_locations_parse() {
        assert_eq!(
            SharedAt::parse("s3://b/claims").unwrap(),
            SharedAt {
                bucket: "b".into(),
                prefix: "claims/".into()
            }
        );
        assert_eq!(SharedAt::parse("s3://b").unwrap().prefix, "");
        assert!(SharedAt::parse("b/claims").is_err());
        assert!(SharedAt::parse("s3:///x").is_err());
    }

    #[test]
    fn validation() {
        assert!(OnUploadConfig::from_args(args(&["--concurrency", "0"])).is_err());
        assert!(OnUploadConfig::from_args(args(&["--wait", "30s"])).is_err());
        assert!(matches!(
            OnUploadConfig::from_args(args(&["-e", "=x"])),
            Err(ConfigError::KeyValue { .. })
        ));
        // `-e NAME` passes this environment's value, as docker does.
        let path = std::env::var("PATH").unwrap();
        let c = OnUploadConfig::from_args(args(&["-e", "PATH", "-e", "DOCKWATCH_SURELY_UNSET"]))
            .unwrap();
        assert_eq!(c.env, [format!("PATH={path}")]);
        let mut a = args(&[]);
        a.output_prefix = "input/out/".into();
        let e = OnUploadConfig::from_args(a).unwrap_err().to_string();
        assert!(e.contains("outside it"), "{e}");
        // An empty prefix watches the outputs too, unless they go to another bucket.
        let mut a = args(&[]);
        a.prefix = String::new();
        let e = OnUploadConfig::from_args(a).unwrap_err().to_string();
        assert!(e.contains("--output-bucket"), "{e}");
        let mut a = args(&["--output-bucket", "elsewhere"]);
        a.prefix = String::new();
        let c = OnUploadConfig::from_args(a).unwrap();
        assert_eq!(c.output_bucket, "elsewhere");
        assert!(OnUploadConfig::from_args(args(&["--claims", "bucket/x"])).is_err());
        let c = OnUploadConfig::from_args(args(&["--claims", "s3://c/claims"])).unwrap();
        assert_eq!(c.claims.unwrap().prefix, "claims/");
    }
}
