//! Command-line surface: the raw clap arguments, exactly as the user typed them.
//!
//! Nothing here is trusted by the rest of the program: [`crate::config`] turns these raw
//! values into a validated [`crate::config::RunConfig`] before any logic sees them.
//!
//! The main job is reachable two ways: with its flags at the top level (the user's contract,
//! `dockwatch --docker-image IMG --bash-command CMD ...`) and as `dockwatch run ...`.

use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};

const EXAMPLES: &str = "\
Examples:
  # Run a container and ship its stdout and stderr to CloudWatch Logs:
  dockwatch --docker-image python:3.12 \\
    --bash-command 'pip install tqdm && python -u train.py' \\
    --aws-cloudwatch-group my-group --aws-cloudwatch-stream run-1 \\
    --aws-access-key-id AKIA... --aws-secret-access-key ... --aws-region eu-west-1

  # Same, with credentials from the standard AWS chain and an AWS-compatible endpoint:
  AWS_PROFILE=dev dockwatch run --docker-image busybox --bash-command 'seq 1 10' \\
    --aws-cloudwatch-group g --aws-cloudwatch-stream s --aws-endpoint-url http://127.0.0.1:5000

Exit status: the container's exit code; 2 for invalid arguments; 125 when dockwatch itself
failed (Docker, AWS, image); 127 when the image has no such shell; 130/143 after SIGINT/SIGTERM
stopped the container; see the README for the full table.";

/// Ship a Docker container's stdout and stderr to AWS CloudWatch Logs.
#[derive(Debug, Parser)]
#[command(
    name = "dockwatch",
    version,
    about,
    after_help = EXAMPLES,
    args_conflicts_with_subcommands = true,
    subcommand_negates_reqs = true
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,

    #[command(flatten)]
    pub run: RunArgs,

    /// More diagnostics on stderr (-v: debug, -vv: trace). RUST_LOG overrides it.
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    pub verbose: u8,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run a container and ship its logs (the same as the top-level flags).
    #[command(after_help = EXAMPLES)]
    Run(Box<RunArgs>),
    /// Ship what an interrupted or killed run did not deliver, from its checkpoint or a spool.
    Resume(Box<ResumeArgs>),
}

/// How events are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    /// The line as it is.
    Text,
    /// A JSON object with the line, its stream and the container id.
    Json,
}

/// When to pull the image.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum PullPolicy {
    /// Pull only when the image is not present locally.
    Missing,
    /// Always pull before running.
    Always,
    /// Never pull; fail when the image is not present.
    Never,
}

/// How to reach CloudWatch Logs; every field falls back to the standard AWS chain.
#[derive(Debug, Args, Clone, Default)]
pub struct AwsArgs {
    /// AWS access key id, e.g. `AKIA...`. Without it the standard AWS chain is used
    /// (AWS_ACCESS_KEY_ID, shared config and credentials files, SSO, container and instance roles).
    #[arg(long, value_name = "KEY_ID")]
    pub aws_access_key_id: Option<String>,

    /// AWS secret access key. Visible to other local users on the command line: prefer
    /// AWS_SECRET_ACCESS_KEY or a profile. Needs --aws-access-key-id.
    #[arg(long, value_name = "SECRET")]
    pub aws_secret_access_key: Option<String>,

    /// AWS session token for temporary credentials, with the two flags above.
    #[arg(long, value_name = "TOKEN")]
    pub aws_session_token: Option<String>,

    /// AWS region, e.g. `eu-west-1`. Default: AWS_REGION or the profile's region.
    #[arg(long, value_name = "REGION")]
    pub aws_region: Option<String>,

    /// Named profile from ~/.aws/config and ~/.aws/credentials, e.g. `--aws-profile dev`.
    #[arg(long, value_name = "PROFILE")]
    pub aws_profile: Option<String>,

    /// AWS-compatible endpoint for CloudWatch Logs, e.g. `http://127.0.0.1:5000`
    /// (AWS_ENDPOINT_URL and AWS_ENDPOINT_URL_CLOUDWATCH_LOGS work too).
    #[arg(long, value_name = "URL")]
    pub aws_endpoint_url: Option<String>,
}

#[derive(Debug, Args, Clone)]
pub struct RunArgs {
    /// Image to run, e.g. `python:3.12` or `busybox`. Pulled when not present locally.
    #[arg(long, value_name = "IMAGE", required = true)]
    pub docker_image: Option<String>,

    /// Command run as `bash -c CMD` in the container, whatever the image's entrypoint,
    /// e.g. `--bash-command 'echo hello; ls /'`.
    #[arg(long, value_name = "CMD", required = true, allow_hyphen_values = true)]
    pub bash_command: Option<String>,

    /// CloudWatch Logs group; created when missing, e.g. `--aws-cloudwatch-group /dockwatch/jobs`.
    #[arg(long, value_name = "GROUP", required = true)]
    pub aws_cloudwatch_group: Option<String>,

    /// CloudWatch Logs stream in the group; created when missing, e.g. `--aws-cloudwatch-stream run-42`.
    #[arg(long, value_name = "STREAM", required = true)]
    pub aws_cloudwatch_stream: Option<String>,

    #[command(flatten)]
    pub aws: AwsArgs,

    /// Shell that runs the command, as `SHELL -c CMD`, e.g. `--shell sh` for images without bash.
    #[arg(long, value_name = "SHELL", default_value = "bash")]
    pub shell: String,

    /// Do not echo the container's output on this terminal (it is still shipped).
    #[arg(short, long)]
    pub quiet: bool,

    /// Keep the container after it exits instead of removing it.
    #[arg(long)]
    pub keep_container: bool,

    /// Name for the container, e.g. `--name nightly-job`. Default: chosen by Docker.
    #[arg(long, value_name = "NAME")]
    pub name: Option<String>,

    /// Environment variable for the container, repeatable, e.g. `-e LEVEL=debug`.
    #[arg(short = 'e', long = "env", value_name = "KEY=VALUE")]
    pub env: Vec<String>,

    /// Label for the container, repeatable, e.g. `--label team=data`.
    #[arg(long = "label", value_name = "KEY=VALUE")]
    pub labels: Vec<String>,

    /// Allocate a pseudo-TTY for the container (stdout and stderr then arrive as one stream).
    #[arg(short, long)]
    pub tty: bool,

    /// When to pull the image.
    #[arg(long, value_enum, default_value_t = PullPolicy::Missing)]
    pub pull: PullPolicy,

    /// After SIGINT/SIGTERM, how long the container gets to stop before it is killed, e.g. `10s`.
    #[arg(long, value_name = "DURATION", default_value = "10s", value_parser = parse_duration)]
    pub stop_timeout: Duration,

    /// After an interruption, how long delivery may take before what is left is written to
    /// the spool directory, e.g. `30s`.
    #[arg(long, value_name = "DURATION", default_value = "30s", value_parser = parse_duration)]
    pub flush_timeout: Duration,

    /// Longest time an event waits in a partial batch before it is sent, e.g. `200ms`.
    #[arg(long, value_name = "DURATION", default_value = "200ms", value_parser = parse_duration)]
    pub flush_interval: Duration,

    /// Largest CloudWatch event in bytes, including CloudWatch's 26 bytes of overhead; longer
    /// lines are split. AWS allows 1048576 since 2025; use 262144 for endpoints with the old limit.
    #[arg(long, value_name = "BYTES", default_value_t = 1_048_576)]
    pub max_event_size: usize,

    /// How many PutLogEvents requests may be in flight at once.
    #[arg(long, value_name = "N", default_value_t = 4)]
    pub max_in_flight: usize,

    /// Where undelivered events are saved when delivery cannot finish, as JSON lines.
    #[arg(long, value_name = "DIR", default_value = ".dockwatch-spool")]
    pub spool_dir: std::path::PathBuf,

    /// Send stdout to `STREAM/stdout` and stderr to `STREAM/stderr` instead of both to STREAM.
    #[arg(long)]
    pub split_streams: bool,

    /// Remove ANSI escape sequences (colours, cursor moves) from each line before shipping.
    #[arg(long)]
    pub strip_ansi: bool,

    /// A line matching this regular expression starts a new event; other lines are joined
    /// to the current one (stack traces), e.g. `--multiline-pattern '^\d{4}-\d{2}-\d{2}'`.
    #[arg(long, value_name = "REGEX")]
    pub multiline_pattern: Option<String>,

    /// With --multiline-pattern: send a held event after this long without a new line.
    #[arg(long, value_name = "DURATION", default_value = "1s", value_parser = parse_duration)]
    pub multiline_timeout: Duration,

    /// Event format: `text` (the line as it is) or `json` (`{"log":..,"stream":..,"container":..}`).
    #[arg(long, value_enum, default_value_t = Format::Text)]
    pub format: Format,

    /// Where the checkpoint (container and delivered position) lives while a run is going on,
    /// for `dockwatch resume` after a crash.
    #[arg(long, value_name = "DIR", default_value = ".dockwatch-state")]
    pub state_dir: std::path::PathBuf,
}

/// `dockwatch resume`: finish the delivery of a run that did not complete.
#[derive(Debug, Args, Clone)]
#[command(after_help = "\
Examples:
  # dockwatch was killed mid-run: ship exactly the rest, then clean up
  dockwatch resume
  # several interrupted runs: name the container (id or prefix)
  dockwatch resume 3f2a9c
  # deliver a spool file written when delivery could not finish in time
  dockwatch resume --spool .dockwatch-spool/3f2a9c01b2d4-20261122T101112.000Z.jsonl")]
pub struct ResumeArgs {
    /// Container id (or a prefix of it) of the run to resume; optional when only one
    /// checkpoint exists.
    #[arg(value_name = "CONTAINER", conflicts_with = "spool")]
    pub container: Option<String>,

    /// Deliver this spool file instead of resuming from a checkpoint.
    #[arg(long, value_name = "FILE")]
    pub spool: Option<std::path::PathBuf>,

    #[command(flatten)]
    pub aws: AwsArgs,

    /// Do not echo the rest of the container's output on this terminal.
    #[arg(short, long)]
    pub quiet: bool,

    /// Where the checkpoints are.
    #[arg(long, value_name = "DIR", default_value = ".dockwatch-state")]
    pub state_dir: std::path::PathBuf,

    /// Where undelivered events are saved when delivery cannot finish.
    #[arg(long, value_name = "DIR", default_value = ".dockwatch-spool")]
    pub spool_dir: std::path::PathBuf,

    /// After SIGINT/SIGTERM, how long the container gets to stop, e.g. `10s`.
    #[arg(long, value_name = "DURATION", default_value = "10s", value_parser = parse_duration)]
    pub stop_timeout: Duration,

    /// After an interruption, how long delivery may take, e.g. `30s`.
    #[arg(long, value_name = "DURATION", default_value = "30s", value_parser = parse_duration)]
    pub flush_timeout: Duration,
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s).map_err(|e| format!("{e} (examples: 500ms, 10s, 2m)"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn clap_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn contract_flags_parse_at_top_level() {
        let cli = Cli::try_parse_from([
            "dockwatch",
            "--docker-image",
            "python",
            "--bash-command",
            "echo hi",
            "--aws-cloudwatch-group",
            "g",
            "--aws-cloudwatch-stream",
            "s",
            "--aws-access-key-id",
            "AK",
            "--aws-secret-access-key",
            "SK",
            "--aws-region",
            "eu-west-1",
        ])
        .unwrap();
        assert!(cli.command.is_none());
        assert_eq!(cli.run.docker_image.as_deref(), Some("python"));
        assert_eq!(cli.run.bash_command.as_deref(), Some("echo hi"));
        assert_eq!(cli.run.aws.aws_region.as_deref(), Some("eu-west-1"));
    }

    #[test]
    fn run_subcommand_parses() {
        let cli = Cli::try_parse_from([
            "dockwatch",
            "run",
            "--docker-image",
            "i",
            "--bash-command",
            "-x",
            "--aws-cloudwatch-group",
            "g",
            "--aws-cloudwatch-stream",
            "s",
        ])
        .unwrap();
        match cli.command {
            Some(Command::Run(args)) => assert_eq!(args.bash_command.as_deref(), Some("-x")),
            Some(other) => panic!("unexpected {other:?}"),
            None => panic!("no subcommand"),
        }
    }

    #[test]
    fn missing_required_flag_is_a_usage_error() {
        let err = Cli::try_parse_from(["dockwatch", "--docker-image", "i"]).unwrap_err();
        assert_eq!(err.exit_code(), 2);
    }
}
