//! Validated configuration: the raw [`crate::cli`] arguments turned, once, into values the rest
//! of the program can trust (CloudWatch names checked against AWS's rules, key/value pairs
//! split, limits in range, secrets wrapped so they never print). Nothing below this module
//! sees a clap type.
//!
//! Commands that launch the main job for someone else (the agent's LaunchContainer,
//! on-upload's tasks) build a [`RunConfig`] directly with [`RunConfig::managed`], from the
//! same defaults the command line has ([`ShipConfig::new`]); a test checks the two agree.
//!
//! [`container`] holds the container to run and `docker run`'s options, [`ecs`] the `--on ecs`
//! options, [`on_upload`] the `on-upload` command's.

use regex::Regex;
use std::path::PathBuf;
use std::time::Duration;

use crate::aws::limits::{EVENT_OVERHEAD, MAX_BATCH_BYTES};
use crate::aws::{AwsOptions, Secret};
use crate::cli::{self, AwsArgs, Format, RunArgs};

pub(crate) mod container;
pub mod ecs;
pub(crate) mod file;
pub mod on_upload;
pub(crate) mod ship;

pub(crate) use container::ContainerSpec;

pub use ecs::EcsConfig;
pub use on_upload::OnUploadConfig;
pub(crate) use on_upload::SharedAt;

/// An invalid argument: exit code 2, one line saying what is wrong and what to do.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ConfigError {
    #[error(
        "invalid --volume {0:?}: write HOST_PATH:CONTAINER_PATH[:ro], both absolute, e.g. /data:/data:ro"
    )]
    Volume(String),
    #[error(
        "invalid log group name {name:?}: {reason}; use 1-512 characters of A-Z a-z 0-9 . _ / # -, not starting with aws/"
    )]
    GroupName { name: String, reason: &'static str },
    #[error("invalid log stream name {name:?}: {reason}; use 1-512 characters without ':' or '*'")]
    StreamName { name: String, reason: &'static str },
    #[error(
        "--aws-secret-access-key needs --aws-access-key-id (and the other way round); give both, or neither to use the AWS credential chain"
    )]
    IncompleteKeys,
    #[error(
        "--aws-session-token needs --aws-access-key-id and --aws-secret-access-key; give all three, or use AWS_SESSION_TOKEN"
    )]
    TokenWithoutKeys,
    #[error("invalid region {0:?}: expected something like eu-west-1")]
    Region(String),
    #[error("invalid endpoint URL {0:?}: expected http://HOST[:PORT] or https://HOST[:PORT]")]
    Endpoint(String),
    #[error(
        "invalid {flag} value {value:?}: expected KEY=VALUE, or KEY to pass this environment's value"
    )]
    KeyValue { flag: &'static str, value: String },
    #[error("--max-event-size {0} is out of range: use 1050 to 1048576 bytes")]
    MaxEventSize(usize),
    #[error("--max-in-flight {0} is out of range: use 1 to 64")]
    MaxInFlight(usize),
    #[error("--flush-interval must be between 1ms and 1h")]
    FlushInterval,
    #[error("{0} must not be empty")]
    Empty(&'static str),
    #[error("pull policy {0:?} is not one of missing, always, never")]
    Pull(String),
    #[error("{0}")]
    Ecs(String),
    #[error(
        "--retention-days {0} is not a CloudWatch retention: use 1, 3, 5, 7, 14, 30, 60, 90, 120, 150, 180, 365, 400, 545, 731, 1096, 1827, 2192, 2557, 2922, 3288 or 3653"
    )]
    RetentionDays(i32),
    #[error("{0}")]
    OnUpload(String),
    #[error("cannot read --env-file {path}: {reason}")]
    EnvFile { path: String, reason: String },
    #[error("invalid --env-file {path}, line {line}: expected KEY=VALUE or KEY")]
    EnvFileLine { path: String, line: usize },
    #[error("invalid {flag} value {value:?}: expected {expected}")]
    RunOption {
        flag: &'static str,
        value: String,
        expected: &'static str,
    },
    #[error("invalid --multiline-pattern {pattern:?}: {reason}")]
    Multiline { pattern: String, reason: String },
}

/// Validates the AWS flags.
pub(crate) fn aws_options(a: AwsArgs) -> Result<AwsOptions, ConfigError> {
    match (&a.aws_access_key_id, &a.aws_secret_access_key) {
        (Some(_), None) | (None, Some(_)) => return Err(ConfigError::IncompleteKeys),
        (None, None) if a.aws_session_token.is_some() => {
            return Err(ConfigError::TokenWithoutKeys);
        }
        _ => {}
    }
    if let Some(r) = &a.aws_region {
        validate_region(r)?;
    }
    if let Some(u) = &a.aws_endpoint_url {
        validate_endpoint(u)?;
    }
    Ok(AwsOptions {
        access_key_id: a.aws_access_key_id,
        secret_access_key: a.aws_secret_access_key.map(Secret::new),
        session_token: a.aws_session_token.map(Secret::new),
        region: a.aws_region,
        profile: a.aws_profile,
        endpoint_url: a.aws_endpoint_url,
    })
}

/// When to pull the image.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) enum PullPolicy {
    /// Only when the image is not present locally.
    #[default]
    Missing,
    /// Always, before running.
    Always,
    /// Never; fail when the image is not present.
    Never,
}

impl From<cli::PullPolicy> for PullPolicy {
    fn from(p: cli::PullPolicy) -> Self {
        match p {
            cli::PullPolicy::Missing => PullPolicy::Missing,
            cli::PullPolicy::Always => PullPolicy::Always,
            cli::PullPolicy::Never => PullPolicy::Never,
        }
    }
}

impl std::str::FromStr for PullPolicy {
    type Err = ConfigError;
    /// The names the command line uses: `missing`, `always`, `never` (any case).
    fn from_str(s: &str) -> Result<Self, ConfigError> {
        match s.to_ascii_lowercase().as_str() {
            "missing" => Ok(PullPolicy::Missing),
            "always" => Ok(PullPolicy::Always),
            "never" => Ok(PullPolicy::Never),
            _ => Err(ConfigError::Pull(s.to_string())),
        }
    }
}

/// Where and how events are shipped.
#[derive(Debug, Clone)]
pub(crate) struct ShipConfig {
    /// Log group name (validated).
    pub(crate) group: String,
    /// Log stream name (validated).
    pub(crate) stream: String,
    /// Largest event including the 26-byte overhead.
    pub(crate) max_event_size: usize,
    /// Longest wait of an event in a partial batch.
    pub(crate) flush_interval: Duration,
    /// Requests in flight at once.
    pub(crate) max_in_flight: usize,
    /// stdout to `STREAM/stdout`, stderr to `STREAM/stderr`.
    pub(crate) split_streams: bool,
    /// How long refused credentials are retried before delivery gives up.
    pub(crate) credentials_timeout: Duration,
    /// Retention set on a group dockwatch creates.
    pub(crate) retention_days: Option<i32>,
}

/// The retention periods CloudWatch accepts, in days.
const RETENTION_DAYS: [i32; 22] = [
    1, 3, 5, 7, 14, 30, 60, 90, 120, 150, 180, 365, 400, 545, 731, 1096, 1827, 2192, 2557, 2922,
    3288, 3653,
];

/// The command line's defaults for shipping (`--max-event-size`, `--flush-interval`,
/// `--max-in-flight`), for configurations built without one.
pub(crate) const DEFAULT_MAX_EVENT_SIZE: usize = 1_048_576;
pub(crate) const DEFAULT_FLUSH_INTERVAL: Duration = Duration::from_millis(200);
pub(crate) const DEFAULT_MAX_IN_FLIGHT: usize = 4;
/// `--stop-timeout` and `--flush-timeout` defaults.
pub(crate) const DEFAULT_STOP_TIMEOUT: Duration = Duration::from_secs(10);
pub(crate) const DEFAULT_FLUSH_TIMEOUT: Duration = Duration::from_secs(30);
/// `--credentials-timeout` default.
pub(crate) const DEFAULT_CREDENTIALS_TIMEOUT: Duration = Duration::from_secs(300);

impl ShipConfig {
    /// Shipping to `group`/`stream` with the command line's defaults; the names are checked.
    pub(crate) fn new(group: String, stream: String) -> Result<Self, ConfigError> {
        validate_group_name(&group)?;
        validate_stream_name(&stream)?;
        Ok(ShipConfig {
            group,
            stream,
            max_event_size: DEFAULT_MAX_EVENT_SIZE,
            flush_interval: DEFAULT_FLUSH_INTERVAL,
            max_in_flight: DEFAULT_MAX_IN_FLIGHT,
            split_streams: false,
            credentials_timeout: DEFAULT_CREDENTIALS_TIMEOUT,
            retention_days: None,
        })
    }

    /// Largest message body in bytes.
    pub(crate) fn max_message_bytes(&self) -> usize {
        self.max_event_size - EVENT_OVERHEAD
    }
}

/// Settings of the transforms.
#[derive(Debug, Clone, Default)]
pub(crate) struct TransformConfig {
    pub(crate) strip_ansi: bool,
    pub(crate) multiline: Option<(Regex, Duration)>,
    pub(crate) json: bool,
    /// Container id shown in JSON events.
    pub(crate) container: String,
    /// Framing escapes invalid UTF-8 (and backslashes) instead of replacing it, and the run
    /// reads the raw bytes from the attach stream (`--invalid-utf8 escape`).
    pub(crate) escape_invalid_utf8: bool,
}

impl TransformConfig {
    pub(crate) fn is_noop(&self) -> bool {
        !self.strip_ansi && self.multiline.is_none() && !self.json
    }
}

/// How the main job reads the container's output.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ReadPath {
    /// The attach stream into a disk buffer of at most this many bytes (`ship::buffer`).
    Attach { buffer_bytes: u64 },
    /// The logs endpoint only.
    Logs,
}

/// `--buffer-size` default.
pub(crate) const DEFAULT_BUFFER_BYTES: u64 = 1 << 30;

/// The validated configuration of the main job.
#[derive(Debug, Clone)]
pub struct RunConfig {
    pub(crate) container: ContainerSpec,
    pub(crate) aws: AwsOptions,
    pub(crate) ship: ShipConfig,
    /// Echo the container's output on our stdout/stderr.
    pub(crate) echo: bool,
    /// `-q` without `--verbose`: the summary only when something was not delivered or was
    /// changed on the way (a run that delivered everything prints nothing).
    pub(crate) quiet: bool,
    /// Keep the container after it exits.
    pub(crate) keep_container: bool,
    /// Grace period given to `docker stop` after the first signal.
    pub(crate) stop_timeout: Duration,
    /// Deadline for delivery once an interruption began.
    pub(crate) flush_timeout: Duration,
    /// Directory for the spool of undelivered events.
    pub(crate) spool_dir: PathBuf,
    /// Directory for the checkpoint.
    pub(crate) state_dir: PathBuf,
    /// Optional transforms between framing and batching.
    pub(crate) transforms: TransformConfig,
    /// How the output is read.
    pub(crate) read_path: ReadPath,
    /// `--on ecs`: run on this ECS cluster instead of the local engine.
    pub ecs: Option<EcsConfig>,
}

/// Label put on every container dockwatch creates.
pub(crate) const MANAGED_LABEL: &str = "dockwatch.managed";

impl RunConfig {
    /// The main job for a container that another command launches (the agent, on-upload):
    /// the command line's defaults, output not echoed, checkpoints in `STATE/checkpoints` and
    /// spools in `STATE/spool`.
    pub(crate) fn managed(
        container: ContainerSpec,
        aws: AwsOptions,
        ship: ShipConfig,
        state: &std::path::Path,
    ) -> Self {
        RunConfig {
            container,
            aws,
            ship,
            echo: false,
            quiet: true,
            keep_container: false,
            stop_timeout: DEFAULT_STOP_TIMEOUT,
            flush_timeout: DEFAULT_FLUSH_TIMEOUT,
            spool_dir: state.join("spool"),
            state_dir: state.join("checkpoints"),
            transforms: TransformConfig::default(),
            read_path: ReadPath::Attach {
                buffer_bytes: DEFAULT_BUFFER_BYTES,
            },
            ecs: None,
        }
    }

    /// The main job from its command line; `verbose` is the global `--verbose` (which keeps
    /// the summary that `-q` would leave out).
    pub fn from_cli(a: RunArgs, verbose: bool) -> Result<Self, ConfigError> {
        let mut cfg = Self::from_args(a)?;
        cfg.quiet &= !verbose;
        Ok(cfg)
    }

    pub(crate) fn from_args(a: RunArgs) -> Result<Self, ConfigError> {
        let image = non_empty(a.docker_image, "--docker-image")?;
        let command = a.bash_command.ok_or(ConfigError::Empty("--bash-command"))?;
        let group = non_empty(a.aws_cloudwatch_group, "--aws-cloudwatch-group")?;
        let stream = non_empty(a.aws_cloudwatch_stream, "--aws-cloudwatch-stream")?;
        validate_group_name(&group)?;
        validate_stream_name(&stream)?;
        if a.events.split_streams {
            validate_stream_name(&format!("{stream}/stdout"))?;
        }
        if a.container.shell.trim().is_empty() {
            return Err(ConfigError::Empty("--shell"));
        }

        let aws = aws_options(a.aws)?;
        for v in &a.docker_run.volumes {
            validate_bind(v)?;
        }
        let env = container::environment(&a.container.env, &a.container.env_files)?;
        let d = &a.docker_run;
        let run = container::RawRunOptions {
            no_init: d.no_init,
            workdir: d.workdir.as_deref(),
            user: d.user.as_deref(),
            memory: d.memory.as_deref(),
            cpus: d.cpus.as_deref(),
            network: d.network.as_deref(),
            publish: &d.publish,
            interactive: d.interactive,
        }
        .parse()?;
        let mut labels = a
            .container
            .labels
            .iter()
            .map(|l| split_kv(l, "--label"))
            .collect::<Result<Vec<_>, _>>()?;
        labels.push(managed_label());

        if !(1..=64).contains(&a.max_in_flight) {
            return Err(ConfigError::MaxInFlight(a.max_in_flight));
        }
        let (ship, mut transforms) = events_of(&a.events, (group, stream), DEFAULT_FLUSH_INTERVAL)?;

        Ok(RunConfig {
            container: ContainerSpec {
                image,
                shell: a.container.shell,
                command,
                name: a.name,
                env,
                labels,
                tty: a.tty,
                pull: a.container.pull.into(),
                binds: a.docker_run.volumes,
                run,
            },
            aws,
            ship: ShipConfig {
                max_in_flight: a.max_in_flight,
                credentials_timeout: a.credentials_timeout,
                ..ship
            },
            echo: !a.quiet,
            quiet: a.quiet,
            keep_container: a.keep_container,
            stop_timeout: a.stop_timeout,
            flush_timeout: a.flush_timeout,
            spool_dir: a.spool_dir,
            state_dir: a.state_dir,
            transforms: {
                transforms.escape_invalid_utf8 = a.invalid_utf8 == crate::cli::InvalidUtf8::Escape;
                transforms
            },
            read_path: match a.read_path {
                cli::ReadPath::Attach => ReadPath::Attach {
                    buffer_bytes: a.buffer_size,
                },
                cli::ReadPath::Logs => ReadPath::Logs,
            },
            ecs: match a.ecs.on {
                cli::Engine::Ecs => Some(ecs::ecs_config(&a.ecs)?),
                cli::Engine::Local => None,
            },
        })
    }
}

/// `dockwatch resume`: which run to finish, and how.
#[derive(Debug, Clone)]
pub struct ResumeConfig {
    /// Container id or prefix of the checkpoint; optional when there is one.
    pub(crate) container: Option<String>,
    /// Deliver this spool file instead of resuming a checkpoint.
    pub(crate) spool: Option<PathBuf>,
    /// AWS settings; region and endpoint fall back to the checkpoint's.
    pub(crate) aws: AwsOptions,
    pub(crate) echo: bool,
    /// As [`RunConfig::quiet`].
    pub(crate) quiet: bool,
    pub(crate) state_dir: PathBuf,
    pub(crate) spool_dir: PathBuf,
    pub(crate) stop_timeout: Duration,
    pub(crate) flush_timeout: Duration,
    /// How long refused credentials are retried before delivery gives up.
    pub(crate) credentials_timeout: Duration,
}

impl ResumeConfig {
    /// `verbose`: as for [`RunConfig::from_cli`].
    pub fn from_args(a: cli::ResumeArgs, verbose: bool) -> Result<Self, ConfigError> {
        Ok(ResumeConfig {
            quiet: a.quiet && !verbose,
            container: a.container,
            spool: a.spool,
            aws: aws_options(a.aws)?,
            echo: !a.quiet,
            state_dir: a.state_dir,
            spool_dir: a.spool_dir,
            stop_timeout: a.stop_timeout,
            flush_timeout: a.flush_timeout,
            credentials_timeout: a.credentials_timeout,
        })
    }
}

/// Shipping to `group`/`stream` (checked) and the transforms, from the event flags `run`
/// and `ship` share (`flush_interval` when none is given); the rest of [`ShipConfig`] at its
/// defaults.
pub(crate) fn events_of(
    a: &cli::EventArgs,
    (group, stream): (String, String),
    flush_interval: Duration,
) -> Result<(ShipConfig, TransformConfig), ConfigError> {
    if !(EVENT_OVERHEAD + 1024..=MAX_BATCH_BYTES).contains(&a.max_event_size) {
        return Err(ConfigError::MaxEventSize(a.max_event_size));
    }
    let flush_interval = a.flush_interval.unwrap_or(flush_interval);
    if flush_interval < Duration::from_millis(1) || flush_interval > Duration::from_secs(3600) {
        return Err(ConfigError::FlushInterval);
    }
    if let Some(d) = a.retention_days.filter(|d| !RETENTION_DAYS.contains(d)) {
        return Err(ConfigError::RetentionDays(d));
    }
    let ship = ShipConfig {
        max_event_size: a.max_event_size,
        flush_interval,
        split_streams: a.split_streams,
        retention_days: a.retention_days,
        ..ShipConfig::new(group, stream)?
    };
    let transforms = TransformConfig {
        strip_ansi: a.strip_ansi,
        multiline: multiline(a.multiline_pattern.as_deref(), a.multiline_timeout)?,
        json: a.format == Format::Json,
        container: String::new(),
        escape_invalid_utf8: false,
    };
    Ok((ship, transforms))
}

/// Compiles `--multiline-pattern`.
pub(crate) fn multiline(
    pattern: Option<&str>,
    timeout: Duration,
) -> Result<Option<(regex::Regex, Duration)>, ConfigError> {
    pattern
        .map(|p| {
            regex::Regex::new(p)
                .map(|re| (re, timeout))
                .map_err(|e| ConfigError::Multiline {
                    pattern: p.to_string(),
                    reason: e
                        .to_string()
                        .lines()
                        .last()
                        .unwrap_or("")
                        .trim()
                        .to_string(),
                })
        })
        .transpose()
}

/// Every `KEY=VALUE` of `--env`, checked.
pub(crate) fn check_env(env: &[String]) -> Result<(), ConfigError> {
    for e in env {
        split_kv(e, "--env")?;
    }
    Ok(())
}

/// dockwatch's label on every container it creates.
pub(crate) fn managed_label() -> (String, String) {
    (MANAGED_LABEL.to_string(), "true".to_string())
}

fn non_empty(v: Option<String>, flag: &'static str) -> Result<String, ConfigError> {
    match v {
        Some(s) if !s.is_empty() => Ok(s),
        _ => Err(ConfigError::Empty(flag)),
    }
}

/// CloudWatch's rule for log group names (CreateLogGroup in the API reference): 1-512
/// characters of `[A-Za-z0-9._/#-]`, not starting with `aws/` (reserved for AWS services).
pub(crate) fn validate_group_name(name: &str) -> Result<(), ConfigError> {
    let err = |reason| ConfigError::GroupName {
        name: name.to_string(),
        reason,
    };
    if name.is_empty() {
        return Err(err("it is empty"));
    }
    if name.len() > 512 {
        return Err(err("it is longer than 512 characters"));
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'/' | b'#' | b'-'))
    {
        return Err(err("it contains a character CloudWatch does not allow"));
    }
    if name.starts_with("aws/") {
        return Err(err(
            "names starting with 'aws/' are reserved for AWS services",
        ));
    }
    Ok(())
}

/// CloudWatch's rule for log stream names: 1-512 characters, no `:` and no `*`.
pub(crate) fn validate_stream_name(name: &str) -> Result<(), ConfigError> {
    let err = |reason| ConfigError::StreamName {
        name: name.to_string(),
        reason,
    };
    if name.is_empty() {
        return Err(err("it is empty"));
    }
    if name.chars().count() > 512 {
        return Err(err("it is longer than 512 characters"));
    }
    if name.contains([':', '*']) {
        return Err(err("it contains ':' or '*'"));
    }
    if name.chars().any(char::is_control) {
        return Err(err("it contains a control character"));
    }
    Ok(())
}

fn validate_region(r: &str) -> Result<(), ConfigError> {
    let ok = !r.is_empty()
        && r.len() <= 64
        && r.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && r.contains('-');
    if ok {
        Ok(())
    } else {
        Err(ConfigError::Region(r.to_string()))
    }
}

fn validate_endpoint(u: &str) -> Result<(), ConfigError> {
    let rest = u
        .strip_prefix("http://")
        .or_else(|| u.strip_prefix("https://"))
        .ok_or_else(|| ConfigError::Endpoint(u.to_string()))?;
    if rest.is_empty() || rest.starts_with('/') || rest.contains(char::is_whitespace) {
        return Err(ConfigError::Endpoint(u.to_string()));
    }
    Ok(())
}

fn split_kv(s: &str, flag: &'static str) -> Result<(String, String), ConfigError> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
        _ => Err(ConfigError::KeyValue {
            flag,
            value: s.to_string(),
        }),
    }
}

/// `HOST:CONTAINER[:ro|rw]` with absolute paths.
fn validate_bind(v: &str) -> Result<(), ConfigError> {
    let parts: Vec<&str> = v.split(':').collect();
    let ok = matches!(parts.as_slice(),
        [h, c] | [h, c, "ro" | "rw"] if h.starts_with('/') && c.starts_with('/'));
    if ok {
        Ok(())
    } else {
        Err(ConfigError::Volume(v.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::Cli;
    use clap::Parser;
    use std::path::Path;

    fn args(extra: &[&str]) -> RunArgs {
        let mut v = vec![
            "dockwatch",
            "--docker-image",
            "img",
            "--bash-command",
            "true",
            "--aws-cloudwatch-group",
            "grp",
            "--aws-cloudwatch-stream",
            "str",
        ];
        v.extend_from_slice(extra);
        Cli::try_parse_from(v).unwrap().run
    }

    #[test]
    fn group_names() {
        assert!(validate_group_name("/aws/ecs/my-app_1.0#x").is_ok());
        assert!(validate_group_name("").is_err());
        assert!(validate_group_name("a b").is_err());
        assert!(validate_group_name("a:b").is_err());
        assert!(validate_group_name(&"a".repeat(512)).is_ok());
        assert!(validate_group_name(&"a".repeat(513)).is_err());
        assert!(validate_group_name("aws/x").is_err());
        assert!(validate_group_name("/aws/lambda/f").is_ok());
        assert!(validate_group_name("my-aws/x").is_ok());
    }

    #[test]
    fn stream_names() {
        assert!(validate_stream_name("my stream/2024 é").is_ok());
        assert!(validate_stream_name("a:b").is_err());
        assert!(validate_stream_name("a*").is_err());
        assert!(validate_stream_name("").is_err());
        assert!(validate_stream_name(&"é".repeat(512)).is_ok());
        assert!(validate_stream_name(&"a".repeat(513)).is_err());
    }

    #[test]
    fn keys_must_come_in_pairs() {
        let e = RunConfig::from_args(args(&["--aws-access-key-id", "AK"])).unwrap_err();
        assert_eq!(e, ConfigError::IncompleteKeys);
        let e = RunConfig::from_args(args(&["--aws-session-token", "T"])).unwrap_err();
        assert_eq!(e, ConfigError::TokenWithoutKeys);
    }

    #[test]
    fn secrets_never_print() {
        let c = RunConfig::from_args(args(&[
            "--aws-access-key-id",
            "AKIDEXAMPLE",
            "--aws-secret-access-key",
            "wJalrXUtnFEMI-very-secret",
            "--aws-session-token",
            "session-token-secret",
        ]))
        .unwrap();
        let dbg = format!("{c:?}");
        assert!(!dbg.contains("very-secret"), "{dbg}");
        assert!(!dbg.contains("session-token-secret"), "{dbg}");
        assert!(c.aws.secret_on_command_line());
    }

    #[test]
    fn bad_values_are_rejected() {
        assert!(matches!(
            RunConfig::from_args(args(&["--aws-region", "EU WEST"])),
            Err(ConfigError::Region(_))
        ));
        assert!(matches!(
            RunConfig::from_args(args(&["--aws-endpoint-url", "localhost:5000"])),
            Err(ConfigError::Endpoint(_))
        ));
        assert!(matches!(
            RunConfig::from_args(args(&["-e", "=x"])),
            Err(ConfigError::KeyValue { .. })
        ));
        // `-e NAME` passes this environment's value, as docker does.
        let path = std::env::var("PATH").unwrap();
        let c =
            RunConfig::from_args(args(&["-e", "PATH", "-e", "DOCKWATCH_SURELY_UNSET"])).unwrap();
        assert_eq!(c.container.env, [format!("PATH={path}")]);
        assert!(matches!(
            RunConfig::from_args(args(&["--max-event-size", "100"])),
            Err(ConfigError::MaxEventSize(100))
        ));
        assert!(matches!(
            RunConfig::from_args(args(&["--max-in-flight", "0"])),
            Err(ConfigError::MaxInFlight(0))
        ));
    }

    #[test]
    fn multiline_pattern_is_compiled() {
        let c = RunConfig::from_args(args(&["--multiline-pattern", "^\\S", "--format", "json"]))
            .unwrap();
        assert!(c.transforms.multiline.is_some() && c.transforms.json);
        let e = RunConfig::from_args(args(&["--multiline-pattern", "(unclosed"])).unwrap_err();
        assert!(matches!(e, ConfigError::Multiline { .. }), "{e}");
    }

    #[test]
    fn built_configurations_have_the_command_line_defaults() {
        let parsed = RunConfig::from_args(args(&[])).unwrap();
        let spec = ContainerSpec::new("img".into(), "bash".into(), "true".into()).unwrap();
        let ship = ShipConfig::new("grp".into(), "str".into()).unwrap();
        let built = RunConfig::managed(spec, AwsOptions::default(), ship, Path::new("/s"));
        let (p, b) = (&parsed.ship, &built.ship);
        assert_eq!(
            (
                p.max_event_size,
                p.flush_interval,
                p.max_in_flight,
                p.split_streams,
                p.credentials_timeout
            ),
            (
                b.max_event_size,
                b.flush_interval,
                b.max_in_flight,
                b.split_streams,
                b.credentials_timeout
            )
        );
        assert_eq!(
            (parsed.stop_timeout, parsed.flush_timeout),
            (built.stop_timeout, built.flush_timeout)
        );
        assert_eq!(parsed.container.labels, built.container.labels);
        assert_eq!(parsed.container.pull, built.container.pull);
        assert_eq!(built.state_dir, Path::new("/s/checkpoints"));
    }

    #[test]
    fn a_built_configuration_checks_names() {
        assert!(matches!(
            ShipConfig::new("a b".into(), "s".into()),
            Err(ConfigError::GroupName { .. })
        ));
        assert!(ContainerSpec::new(String::new(), "bash".into(), "x".into()).is_err());
        assert!(matches!(
            "sometimes".parse::<PullPolicy>(),
            Err(ConfigError::Pull(_))
        ));
        assert_eq!("Always".parse::<PullPolicy>().unwrap(), PullPolicy::Always);
    }

    #[test]
    fn managed_label_is_added() {
        let c = RunConfig::from_args(args(&["--label", "a=b"])).unwrap();
        assert!(c.container.labels.contains(&("a".into(), "b".into())));
        assert!(c.container.labels.iter().any(|(k, _)| k == MANAGED_LABEL));
    }
}
