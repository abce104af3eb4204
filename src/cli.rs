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
    --aws-access-key-id AKIA... --aws-secret-access-key ... \\
    --aws-region eu-west-1

  # Same, with credentials from the AWS chain and an AWS-compatible endpoint:
  AWS_PROFILE=dev dockwatch run --docker-image busybox --shell sh \\
    --bash-command 'seq 1 10' \\
    --aws-cloudwatch-group g --aws-cloudwatch-stream s \\
    --aws-endpoint-url http://127.0.0.1:5000

  # docker run's options: a volume, a working directory, a memory limit:
  dockwatch -v /data:/data:ro -w /data -m 512m --docker-image python:3.12 \\
    --bash-command 'python -u report.py' \\
    --aws-cloudwatch-group jobs --aws-cloudwatch-stream report

Exit status: the container's exit code; 2 for invalid arguments; 125 when
dockwatch itself failed (Docker, AWS, image); 127 when the image has no such
shell; 130/143 after SIGINT/SIGTERM stopped the container; see the README for
the full table.";

/// Ship a Docker container's stdout and stderr to AWS CloudWatch Logs.
#[derive(Debug, Parser)]
#[command(
    name = "dockwatch",
    version,
    about,
    after_help = EXAMPLES,
    args_conflicts_with_subcommands = true,
    subcommand_negates_reqs = true,
    arg_required_else_help = true
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,

    #[command(flatten)]
    pub run: RunArgs,

    /// More diagnostics on stderr (once: debug, twice: trace). RUST_LOG overrides it. It has
    /// no short form.
    #[arg(long, action = clap::ArgAction::Count, global = true)]
    pub verbose: u8,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run a container and ship its logs (the same as the top-level flags).
    #[command(after_help = EXAMPLES)]
    Run(Box<RunArgs>),
    /// Ship what an interrupted or killed run did not deliver, from its checkpoint or a spool.
    Resume(Box<ResumeArgs>),
    /// Print events of CloudWatch log groups, interleaved in time order; -f keeps following.
    Tail(Box<TailArgs>),
    /// Download log streams into local files and keep them up to date (a daemon).
    Download(Box<DownloadArgs>),
    /// Ship every selected container on this Docker host, running or started later (a
    /// daemon).
    Ship(Box<ShipArgs>),
    /// Serve the gRPC agent on this Docker host: launch, stop, list, exec, logs.
    Agent(Box<AgentArgs>),
    /// Talk to a dockwatch agent: launch, stop, ps, exec, logs.
    Remote(Box<RemoteArgs>),
    /// Run a container for each file uploaded to an S3 prefix (S3 notifications via SQS).
    OnUpload(Box<OnUploadArgs>),
    /// Serve a web page with this Docker host's containers and their logs, live.
    Web(Box<WebArgs>),
    /// Print a shell completion script, e.g. `dockwatch completions bash >
    /// /etc/bash_completion.d/dockwatch`.
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Print the manual page (roff), e.g. `dockwatch man > /usr/local/share/man/man1/dockwatch.1`
    /// (the Debian package installs it as `man dockwatch`).
    Man,
}

/// A completion script for `shell`, made from the command-line definition.
pub fn completions(shell: clap_complete::Shell) -> Vec<u8> {
    use clap::CommandFactory;
    let mut out = Vec::new();
    clap_complete::generate(shell, &mut Cli::command(), "dockwatch", &mut out);
    out
}

/// The manual page, one page for everything: the top-level command (the main job), then a
/// section per subcommand and a subsection per nested one (`remote launch`), each with its
/// description and options. One page, so it names no `dockwatch-tail(1)` pages (clap_mangen's
/// subcommand list does) that are not installed.
pub fn man_page() -> Vec<u8> {
    use clap::CommandFactory;
    let cmd = Cli::command();
    let man = clap_mangen::Man::new(cmd.clone());
    let mut out = Vec::new();
    let _ = man.render_title(&mut out);
    let _ = man.render_name_section(&mut out);
    let _ = man.render_synopsis_section(&mut out);
    let _ = man.render_description_section(&mut out);
    let _ = man.render_options_section(&mut out);
    let mut path = vec!["DOCKWATCH".to_string()];
    man_sections(&cmd, &mut path, &mut out);
    let _ = man.render_version_section(&mut out);
    out
}

/// The sections of `cmd`'s subcommands (and theirs), headed by their whole command path.
fn man_sections(cmd: &clap::Command, path: &mut Vec<String>, out: &mut Vec<u8>) {
    for sub in cmd
        .get_subcommands()
        .filter(|s| s.get_name() != "help" && !s.is_hide_set())
    {
        path.push(sub.get_name().to_uppercase());
        let heading = if path.len() == 2 { ".SH" } else { ".SS" };
        out.extend_from_slice(format!("{heading} \"{}\"\n", path.join(" ")).as_bytes());
        let mut body = Vec::new();
        let man = clap_mangen::Man::new(sub.clone());
        let _ = man.render_description_section(&mut body);
        let _ = man.render_options_section(&mut body);
        // Their own DESCRIPTION and OPTIONS headings would start new top-level sections.
        for line in String::from_utf8_lossy(&body).lines() {
            if !line.starts_with(".SH ") {
                out.extend_from_slice(line.as_bytes());
                out.push(b'\n');
            }
        }
        man_sections(sub, path, out);
        path.pop();
    }
}

/// A usage error from clap as one line, in the form every dockwatch error has:
/// `dockwatch: error: what was wrong; what to do`. clap's own rendering is 6–7 lines (the
/// message, a tip, the usage, "for more information"); this keeps the message (a list of
/// missing arguments joined with commas), the tips, and points to the `--help` of the
/// (sub)command named in `argv` (clap's message does not always say which).
pub fn usage_error_line<S: AsRef<str>>(e: &clap::Error, argv: &[S]) -> String {
    let text = e.render().to_string();
    let mut lines = text.lines();
    let mut what = lines
        .next()
        .unwrap_or("invalid arguments")
        .trim_start_matches("error: ")
        .trim_end_matches(':')
        .to_string();
    let (mut listed, mut tips) = (Vec::new(), Vec::new());
    for line in lines {
        let t = line.trim();
        if let Some(tip) = t.strip_prefix("tip: ") {
            tips.push(tip.to_string());
        } else if t.starts_with("Usage: ") || t.starts_with("For more information") {
            // The usage and the pointer to --help: replaced by the one pointer below.
        } else if line.starts_with("  ") && tips.is_empty() && !t.is_empty() {
            listed.push(t.to_string());
        }
    }
    if !listed.is_empty() {
        what = format!("{what}: {}", listed.join(", "));
    }
    let mut out = format!("dockwatch: error: {what}");
    for tip in tips {
        out.push_str("; ");
        out.push_str(&tip);
    }
    out.push_str(&format!("; see '{} --help'", command_path(argv)));
    out
}

/// `dockwatch` and the subcommands named in `argv` (after the program's name), as far as
/// they are dockwatch's: `dockwatch remote logs`.
fn command_path<S: AsRef<str>>(argv: &[S]) -> String {
    use clap::CommandFactory;
    let root = Cli::command();
    let mut path = vec![root.get_name().to_string()];
    let mut cmd = &root;
    for a in argv.iter().skip(1) {
        if let Some(sub) = cmd.find_subcommand(a.as_ref()) {
            path.push(sub.get_name().to_string());
            cmd = sub;
        }
    }
    path.join(" ")
}

/// How events are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum Format {
    /// The line as it is.
    Text,
    /// A JSON object with the line, its stream and the container id.
    Json,
}

/// What happens to output that is not valid UTF-8.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum InvalidUtf8 {
    /// Each invalid byte becomes U+FFFD (what the engine's log stores anyway).
    Replace,
    /// Each invalid byte becomes `\xNN` and each `\` becomes `\\`: reversible.
    Escape,
}

/// How the container's output is read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum ReadPath {
    /// The engine's attach stream into a disk buffer (fast); the engine's log after a crash
    /// or when the buffer is full.
    Attach,
    /// The engine's logs endpoint only.
    Logs,
}

/// How `dockwatch ship` reads each container's output.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum ShipReadPath {
    /// The engine's `json-file` log files (needs root or CAP_DAC_READ_SEARCH); the logs
    /// endpoint where they cannot be read.
    Files,
    /// The engine's logs endpoint only.
    Logs,
}

/// When to pull the image.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum PullPolicy {
    /// Pull only when the image is not present locally.
    Missing,
    /// Always pull before running.
    Always,
    /// Never pull; fail when the image is not present.
    Never,
}

/// How the command runs in its container: one group of flags for `run`, `on-upload` and
/// `remote launch`.
#[derive(Debug, Args, Clone)]
pub struct ContainerArgs {
    /// Shell that runs the command, as `SHELL -c CMD`, e.g. `--shell sh` for images without
    /// bash (`--entrypoint` is the same: the shell replaces the image's entrypoint).
    #[arg(
        long,
        visible_alias = "entrypoint",
        value_name = "SHELL",
        default_value = "bash"
    )]
    pub(crate) shell: String,

    /// Environment variable for the container, repeatable: `-e LEVEL=debug`, or `-e LEVEL`
    /// to pass this environment's value (nothing when it is unset), as docker does.
    #[arg(short = 'e', long = "env", value_name = "KEY[=VALUE]")]
    pub(crate) env: Vec<String>,

    /// File of environment variables, repeatable: `KEY=VALUE` or `KEY` lines, `#` comments;
    /// read before `-e`, as docker does.
    #[arg(long = "env-file", value_name = "FILE")]
    pub(crate) env_files: Vec<std::path::PathBuf>,

    /// Label for the container, repeatable, e.g. `--label team=data`.
    #[arg(long = "label", value_name = "KEY=VALUE")]
    pub(crate) labels: Vec<String>,

    /// When to pull the image: missing, always or never.
    #[arg(long, value_enum, default_value_t = PullPolicy::Missing)]
    pub(crate) pull: PullPolicy,
}

/// How to reach CloudWatch Logs; every field falls back to the standard AWS chain.
#[derive(Debug, Args, Clone, Default)]
pub(crate) struct AwsArgs {
    /// AWS access key id, e.g. `AKIA...`. Without it the standard AWS chain is used
    /// (AWS_ACCESS_KEY_ID, shared config and credentials files, SSO, container and instance roles).
    #[arg(long, value_name = "KEY_ID")]
    pub(crate) aws_access_key_id: Option<String>,

    /// AWS secret access key. Visible to other local users on the command line: prefer
    /// AWS_SECRET_ACCESS_KEY or a profile. Needs --aws-access-key-id.
    #[arg(long, value_name = "SECRET")]
    pub(crate) aws_secret_access_key: Option<String>,

    /// AWS session token for temporary credentials, with the two flags above.
    #[arg(long, value_name = "TOKEN")]
    pub(crate) aws_session_token: Option<String>,

    /// AWS region, e.g. `eu-west-1`. Default: AWS_REGION or the profile's region.
    #[arg(long, value_name = "REGION")]
    pub(crate) aws_region: Option<String>,

    /// Named profile from ~/.aws/config and ~/.aws/credentials, e.g. `--aws-profile dev`.
    #[arg(long, value_name = "PROFILE")]
    pub(crate) aws_profile: Option<String>,

    /// AWS-compatible endpoint for every AWS service the command calls (CloudWatch Logs; S3
    /// and SQS for on-upload; ECS with --on ecs), e.g. `http://127.0.0.1:5000`.
    /// AWS_ENDPOINT_URL works too, and AWS_ENDPOINT_URL_<SERVICE> for one service.
    #[arg(long, value_name = "URL")]
    pub(crate) aws_endpoint_url: Option<String>,
}

#[derive(Debug, Args, Clone)]
pub struct RunArgs {
    /// Image to run, e.g. `python:3.12` or `busybox`. Pulled when not present locally.
    #[arg(long, value_name = "IMAGE", required = true)]
    pub(crate) docker_image: Option<String>,

    /// Command run as `bash -c CMD` in the container, whatever the image's entrypoint,
    /// e.g. `--bash-command 'echo hello; ls /'`.
    #[arg(long, value_name = "CMD", required = true, allow_hyphen_values = true)]
    pub(crate) bash_command: Option<String>,

    /// CloudWatch Logs group; created when missing, e.g. `--aws-cloudwatch-group /dockwatch/jobs`.
    #[arg(long, value_name = "GROUP", required = true)]
    pub(crate) aws_cloudwatch_group: Option<String>,

    /// CloudWatch Logs stream in the group; created when missing, e.g. `--aws-cloudwatch-stream run-42`.
    #[arg(long, value_name = "STREAM", required = true)]
    pub(crate) aws_cloudwatch_stream: Option<String>,

    #[command(flatten)]
    pub(crate) aws: AwsArgs,

    #[command(flatten)]
    pub(crate) ecs: EcsArgs,

    #[command(flatten)]
    pub(crate) container: ContainerArgs,

    /// Do not echo the container's output on this terminal (it is still shipped), and print
    /// nothing when everything was delivered: the summary only when something was not
    /// delivered or was changed on the way, or with --verbose.
    #[arg(short, long)]
    pub(crate) quiet: bool,

    /// Keep the container after it exits instead of removing it.
    #[arg(long)]
    pub(crate) keep_container: bool,

    /// Name for the container, e.g. `--name nightly-job`. Default: chosen by Docker.
    #[arg(long, value_name = "NAME")]
    pub(crate) name: Option<String>,

    #[command(flatten)]
    pub(crate) docker_run: DockerRunArgs,

    #[command(flatten)]
    pub(crate) events: EventArgs,

    /// Allocate a pseudo-TTY for the container (stdout and stderr then arrive as one stream).
    #[arg(short, long)]
    pub(crate) tty: bool,

    /// After SIGINT/SIGTERM, how long the container gets to stop before it is killed, e.g. `10s`.
    #[arg(long, value_name = "DURATION", default_value = "10s", value_parser = parse_duration)]
    pub(crate) stop_timeout: Duration,

    /// After an interruption, how long delivery may take before what is left is written to
    /// the spool directory, e.g. `30s`.
    #[arg(long, value_name = "DURATION", default_value = "30s", value_parser = parse_duration)]
    pub(crate) flush_timeout: Duration,

    /// When AWS refuses the credentials mid-run (expired, revoked), how long shipping waits
    /// for them to be refreshed before it gives up (the container keeps running), e.g. `5m`.
    #[arg(long, value_name = "DURATION", default_value = "5m", value_parser = parse_duration)]
    pub(crate) credentials_timeout: Duration,

    /// How many PutLogEvents requests may be in flight at once.
    #[arg(long, value_name = "N", default_value_t = 4)]
    pub(crate) max_in_flight: usize,

    /// Where undelivered events are saved when delivery cannot finish, as JSON lines.
    #[arg(long, value_name = "DIR", default_value_os_t = crate::util::state_home().join("spool"))]
    pub(crate) spool_dir: std::path::PathBuf,

    /// Bytes that are not valid UTF-8: `replace` each with U+FFFD (counted), or `escape` them
    /// losslessly as `\xNN` (and every `\` as `\\`), read from the engine's attach stream.
    #[arg(long = "invalid-utf8", value_enum, default_value_t = InvalidUtf8::Replace)]
    pub(crate) invalid_utf8: InvalidUtf8,

    /// Where the checkpoint (container and delivered position) lives while a run is going on,
    /// for `dockwatch resume` after a crash; the attach path's disk buffer is kept beside it.
    #[arg(long, value_name = "DIR", default_value_os_t = crate::util::state_home().join("state"))]
    pub(crate) state_dir: std::path::PathBuf,

    /// How the output is read: `attach` (the engine's attach stream into a disk buffer, then
    /// the engine's log if the buffer fills up) or `logs` (the engine's logs endpoint only).
    #[arg(long, value_enum, default_value_t = ReadPath::Attach)]
    pub(crate) read_path: ReadPath,

    /// Largest disk buffer of the attach path, e.g. `512MiB`, `2GiB`; when it is full the rest
    /// is read from the engine's log (the container never waits).
    #[arg(long, value_name = "SIZE", default_value = "1GiB", value_parser = parse_size)]
    pub(crate) buffer_size: u64,
}

/// How events are made and sent: shared by `run` and `ship`.
#[derive(Debug, Args, Clone)]
pub(crate) struct EventArgs {
    /// Longest time an event waits in a partial batch before it is sent, e.g. `500ms`
    /// (default 200ms; `ship`: 1s).
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub(crate) flush_interval: Option<Duration>,

    /// Largest CloudWatch event in bytes, including CloudWatch's 26 bytes of overhead; longer
    /// lines are split. AWS allows 1048576 since 2025; use 262144 for endpoints with the old limit.
    #[arg(long, value_name = "BYTES", default_value_t = 1_048_576)]
    pub(crate) max_event_size: usize,

    /// Retention of a log group dockwatch creates, in days (one of CloudWatch's values: 1, 3,
    /// 5, 7, 14, 30, 60, 90, 120, 150, 180, 365, 400, 545, 731, 1096, 1827, 2192, 2557, 2922,
    /// 3288, 3653); an existing group is left as it is. Default: never expire.
    #[arg(long, value_name = "DAYS")]
    pub(crate) retention_days: Option<i32>,

    /// Send stdout to `STREAM/stdout` and stderr to `STREAM/stderr` instead of both to STREAM.
    #[arg(long)]
    pub(crate) split_streams: bool,

    /// Remove ANSI escape sequences (colours, cursor moves) from each line before shipping.
    #[arg(long)]
    pub(crate) strip_ansi: bool,

    /// A line matching this regular expression starts a new event; other lines are joined
    /// to the current one (stack traces), e.g. `--multiline-pattern '^\d{4}-\d{2}-\d{2}'`.
    #[arg(long, value_name = "REGEX")]
    pub(crate) multiline_pattern: Option<String>,

    /// With --multiline-pattern: send a held event after this long without a new line.
    #[arg(long, value_name = "DURATION", default_value = "1s", value_parser = parse_duration)]
    pub(crate) multiline_timeout: Duration,

    /// Event format: `text` (the line as it is) or `json` (`{"log":..,"stream":..,"container":..}`).
    #[arg(long, value_enum, default_value_t = Format::Text)]
    pub(crate) format: Format,
}

/// `docker run` options of the main job's container, spelt as docker spells them.
#[derive(Debug, Args, Clone, Default)]
pub(crate) struct DockerRunArgs {
    /// Bind mount, repeatable, e.g. `-v /data:/data:ro` (`-v` is `--volume`, as in docker, not
    /// `--verbose`).
    #[arg(short = 'v', long = "volume", value_name = "HOST:CONTAINER[:ro]")]
    pub(crate) volumes: Vec<String>,

    /// Working directory of the command in the container, e.g. `-w /app`.
    #[arg(short = 'w', long, value_name = "DIR")]
    pub(crate) workdir: Option<String>,

    /// User the command runs as, e.g. `-u 1000:1000` or `-u nobody`.
    #[arg(short = 'u', long, value_name = "USER[:GROUP]")]
    pub(crate) user: Option<String>,

    /// Memory limit, e.g. `-m 512m` (units b, k, m, g, t).
    #[arg(short = 'm', long, value_name = "SIZE")]
    pub(crate) memory: Option<String>,

    /// CPU limit in cores, e.g. `--cpus 1.5`.
    #[arg(long, value_name = "N")]
    pub(crate) cpus: Option<String>,

    /// Network of the container, e.g. `--network host` or a network's name.
    #[arg(long, value_name = "NETWORK")]
    pub(crate) network: Option<String>,

    /// Publish a container port on the host, repeatable, e.g. `-p 8080:80` or
    /// `-p 127.0.0.1:5353:53/udp`.
    #[arg(
        short = 'p',
        long = "publish",
        value_name = "[IP:]HOST:CONTAINER[/PROTO]"
    )]
    pub(crate) publish: Vec<String>,

    /// Forward dockwatch's standard input to the command, e.g. `-i < data.csv`; its end
    /// closes the command's input.
    #[arg(short = 'i', long)]
    pub(crate) interactive: bool,

    /// Run the shell as the container's PID 1, without the engine's init (which is on by
    /// default: without it the shell ignores SIGTERM and a stop waits for --stop-timeout).
    #[arg(long = "no-init", overrides_with = "init")]
    pub(crate) no_init: bool,

    /// Run under the engine's init (the default; `--no-init` turns it off).
    #[arg(long, overrides_with = "no_init")]
    pub(crate) init: bool,
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
  dockwatch resume --spool \\
    ~/.local/state/dockwatch/spool/3f2a9c01b2d4-20261122T101112.000Z.jsonl")]
pub struct ResumeArgs {
    /// Container id (or a prefix of it) of the run to resume; optional when only one
    /// checkpoint exists.
    #[arg(value_name = "CONTAINER", conflicts_with = "spool")]
    pub(crate) container: Option<String>,

    /// Deliver this spool file instead of resuming from a checkpoint.
    #[arg(long, value_name = "FILE")]
    pub(crate) spool: Option<std::path::PathBuf>,

    #[command(flatten)]
    pub(crate) aws: AwsArgs,

    /// Do not echo the rest of the container's output on this terminal, and print nothing
    /// when everything was delivered (as for the main job's -q).
    #[arg(short, long)]
    pub(crate) quiet: bool,

    /// Where the checkpoints are.
    #[arg(long, value_name = "DIR", default_value_os_t = crate::util::state_home().join("state"))]
    pub(crate) state_dir: std::path::PathBuf,

    /// Where undelivered events are saved when delivery cannot finish.
    #[arg(long, value_name = "DIR", default_value_os_t = crate::util::state_home().join("spool"))]
    pub(crate) spool_dir: std::path::PathBuf,

    /// After SIGINT/SIGTERM, how long the container gets to stop, e.g. `10s`.
    #[arg(long, value_name = "DURATION", default_value = "10s", value_parser = parse_duration)]
    pub(crate) stop_timeout: Duration,

    /// After an interruption, how long delivery may take, e.g. `30s`.
    #[arg(long, value_name = "DURATION", default_value = "30s", value_parser = parse_duration)]
    pub(crate) flush_timeout: Duration,

    /// When AWS refuses the credentials mid-run, how long shipping waits for them to be
    /// refreshed before it gives up, e.g. `5m`.
    #[arg(long, value_name = "DURATION", default_value = "5m", value_parser = parse_duration)]
    pub(crate) credentials_timeout: Duration,
}

/// `--tail`: a number of lines, or `all` (0, everything), as `docker logs --tail`.
fn parse_tail(s: &str) -> Result<i64, String> {
    if s.eq_ignore_ascii_case("all") {
        return Ok(0);
    }
    s.parse()
        .map_err(|_| format!("'{s}' is not a number of lines; give N, or 'all'"))
}

/// A size: bytes, or with a unit (`KiB`, `MiB`, `GiB`; `K`, `M`, `G` mean the same), e.g.
/// `512MiB`.
pub(crate) fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: u64 = num
        .parse()
        .map_err(|_| format!("{s:?} is not a size: write e.g. 512MiB or 2GiB"))?;
    let shift = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 0,
        "k" | "kb" | "kib" => 10,
        "m" | "mb" | "mib" => 20,
        "g" | "gb" | "gib" => 30,
        _ => return Err(format!("{s:?} is not a size: write e.g. 512MiB or 2GiB")),
    };
    n.checked_mul(1 << shift)
        .filter(|b| *b >= 1 << 20)
        .ok_or_else(|| format!("{s:?}: give at least 1MiB"))
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
    fn no_arguments_show_the_help() {
        let e = Cli::try_parse_from(["dockwatch"]).unwrap_err();
        assert_eq!(
            e.kind(),
            clap::error::ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand
        );
        let text = e.to_string();
        assert!(
            text.contains("Commands:") && text.contains("resume"),
            "{text}"
        );
    }

    /// Every usage error is one line in dockwatch's form, with clap's tip and the command.
    #[test]
    fn usage_errors_are_one_line() {
        let line = |args: &[&str]| usage_error_line(&Cli::try_parse_from(args).unwrap_err(), args);
        let typo = line(&["dockwatch", "--docker-imag", "x"]);
        assert!(
            typo.starts_with("dockwatch: error: unexpected argument '--docker-imag' found;"),
            "{typo}"
        );
        assert!(typo.contains("'--docker-image'"), "{typo}");
        assert!(typo.ends_with("see 'dockwatch --help'"), "{typo}");
        let missing = line(&["dockwatch", "--docker-image", "x"]);
        assert!(
            missing.contains("were not provided: --bash-command <CMD>, --aws-cloudwatch-group"),
            "{missing}"
        );
        let sub = line(&["dockwatch", "tail", "g", "--since"]);
        assert!(sub.ends_with("see 'dockwatch tail --help'"), "{sub}");
        let value = line(&["dockwatch", "tail", "g", "--format", "xml"]);
        assert!(value.contains("invalid value 'xml'"), "{value}");
        let nested = line(&["dockwatch", "remote", "logs"]);
        assert!(
            nested.ends_with("see 'dockwatch remote logs --help'"),
            "{nested}"
        );
        for l in [typo, missing, sub, value, nested] {
            assert!(!l.contains('\n'), "{l}");
        }
    }

    #[test]
    fn stream_names_with_commas_stay_whole() {
        let cli =
            Cli::try_parse_from(["dockwatch", "tail", "g", "--stream", "a,b", "--stream", "c"])
                .unwrap();
        let Some(Command::Tail(t)) = cli.command else {
            panic!("not tail")
        };
        assert_eq!(t.streams, ["a,b", "c"]);
        let cli = Cli::try_parse_from([
            "dockwatch",
            "download",
            "--stream",
            "x,y",
            "--stream-prefix",
            "p,q/",
        ])
        .unwrap();
        let Some(Command::Download(d)) = cli.command else {
            panic!("not download")
        };
        assert_eq!(
            (d.streams, d.stream_prefix),
            (vec!["x,y".to_string()], vec!["p,q/".to_string()])
        );
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

const TAIL_EXAMPLES: &str = "\
Examples:
  # The last 10 minutes of one group, then follow it:
  dockwatch tail /dockwatch/jobs -f
  # Every group under /ecs/, streams starting with web/, errors only, 2 hours:
  dockwatch tail '/ecs/*' --stream-prefix web/ --filter ERROR --since 2h
  # A time range (here: the hour before the last one), as JSON lines:
  dockwatch tail my-group --since 2h --until 1h --format json

Times: a duration back from now (30s, 10m, 2h, 7d), RFC 3339
(2026-11-23T10:00:00Z, or a date), or Unix seconds. Exit status: 0; 1 when a
group is missing or AWS fails; 2 for invalid arguments; 130/143 when
interrupted (the normal end of --follow).";

/// How `tail` prints an event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum TailFormat {
    /// `HH:MM:SS.mmm STREAM MESSAGE` (UTC).
    Short,
    /// `2026-11-23T10:00:00.123Z GROUP STREAM MESSAGE`.
    Detailed,
    /// One JSON object per event: group, stream, timestamp, time, message, eventId, ingestionTime.
    Json,
}

/// When to colour output.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum ColorWhen {
    /// When standard output is a terminal and NO_COLOR is not set.
    Auto,
    Always,
    Never,
}

#[derive(Debug, Args)]
#[command(after_help = TAIL_EXAMPLES)]
pub struct TailArgs {
    /// Log groups; a trailing `*` selects every group with that prefix, e.g. '/ecs/*'.
    #[arg(value_name = "GROUP", required = true)]
    pub(crate) groups: Vec<String>,

    /// Keep printing new events until interrupted.
    #[arg(short, long)]
    pub(crate) follow: bool,

    /// Start of the range: 10m, 2h, 7d, an RFC 3339 time or Unix seconds.
    #[arg(long, value_name = "TIME", default_value = "10m")]
    pub(crate) since: String,

    /// End of the range (not with --follow), same forms as --since.
    #[arg(long, value_name = "TIME", conflicts_with = "follow")]
    pub(crate) until: Option<String>,

    /// Only streams whose names start with this.
    #[arg(long, value_name = "PREFIX", conflicts_with = "streams")]
    pub(crate) stream_prefix: Option<String>,

    /// Only these streams (repeatable; a name may contain commas, as CloudWatch allows).
    #[arg(long = "stream", value_name = "NAME", num_args = 1..)]
    pub(crate) streams: Vec<String>,

    /// CloudWatch filter pattern, e.g. `ERROR` or '"exact phrase"'.
    #[arg(long, value_name = "PATTERN")]
    pub(crate) filter: Option<String>,

    /// How events are printed.
    #[arg(long, value_enum, default_value_t = TailFormat::Detailed)]
    pub(crate) format: TailFormat,

    /// Colour the stream names and timestamps.
    #[arg(long, value_enum, default_value_t = ColorWhen::Auto)]
    pub(crate) color: ColorWhen,

    /// With --follow, how often to ask CloudWatch for new events.
    #[arg(long, value_name = "DURATION", default_value = "1s", value_parser = parse_duration)]
    pub(crate) poll_interval: Duration,

    /// With --follow, how far back each poll looks again for events that reached CloudWatch
    /// late (their ids are remembered, so none is printed twice).
    #[arg(long, value_name = "DURATION", default_value = "30s", value_parser = parse_duration)]
    pub(crate) late_window: Duration,

    #[command(flatten)]
    pub(crate) aws: AwsArgs,
}

const DOWNLOAD_EXAMPLES: &str = "\
Examples:
  # Follow every group under /ecs/ into ./logs, one file per stream:
  dockwatch download --output-dir ./logs --group-prefix /ecs/
  # The same from a configuration file, with a metrics endpoint:
  dockwatch download --config /etc/dockwatch/download.toml \\
    --metrics-addr 127.0.0.1:9464
  # What a running (or stopped) daemon has written:
  dockwatch download --output-dir ./logs --status

Settings come from the flags, then DOCKWATCH_* environment variables, then the
--config file. SIGINT/SIGTERM: flush, save state, exit 0. SIGHUP: reload the
configuration file.";

/// How `download` writes each event into its file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub(crate) enum LineFormat {
    /// `2026-11-23T10:00:00.123Z MESSAGE`.
    Rfc3339,
    /// `1763892000123 MESSAGE` (epoch milliseconds).
    UnixMs,
    /// `MESSAGE` only.
    Message,
    /// `{"timestamp":1763892000123,"message":"..."}`: exact, whatever the message holds.
    Json,
}

#[derive(Debug, Args)]
#[command(after_help = DOWNLOAD_EXAMPLES)]
pub struct DownloadArgs {
    /// TOML configuration file (see the README); reloaded on SIGHUP.
    #[arg(long, value_name = "FILE", env = "DOCKWATCH_CONFIG")]
    pub(crate) config: Option<std::path::PathBuf>,

    /// Directory for the files and the state (`.dockwatch-download.json`).
    #[arg(long, value_name = "DIR", env = "DOCKWATCH_OUTPUT_DIR")]
    pub(crate) output_dir: Option<std::path::PathBuf>,

    /// Follow groups whose names start with this (repeatable, or separated by commas, also in
    /// DOCKWATCH_GROUP_PREFIXES; '' for all groups).
    #[arg(
        long,
        value_name = "PREFIX",
        env = "DOCKWATCH_GROUP_PREFIXES",
        value_delimiter = ','
    )]
    pub(crate) group_prefix: Vec<String>,

    /// Only streams with exactly this name (repeatable; a name may contain commas, so
    /// DOCKWATCH_STREAMS separates names with newlines).
    #[arg(
        long = "stream",
        value_name = "NAME",
        env = "DOCKWATCH_STREAMS",
        value_delimiter = '\n'
    )]
    pub(crate) streams: Vec<String>,

    /// Only streams whose names start with this (repeatable; DOCKWATCH_STREAM_PREFIXES
    /// separates prefixes with newlines).
    #[arg(
        long,
        value_name = "PREFIX",
        env = "DOCKWATCH_STREAM_PREFIXES",
        value_delimiter = '\n'
    )]
    pub(crate) stream_prefix: Vec<String>,

    /// How often to read new events, e.g. `5s` (default 5s).
    #[arg(long, value_name = "DURATION", env = "DOCKWATCH_POLL_INTERVAL", value_parser = parse_duration)]
    pub(crate) poll_interval: Option<Duration>,

    /// How often to look for new groups and streams (default 30s).
    #[arg(long, value_name = "DURATION", env = "DOCKWATCH_DISCOVERY_INTERVAL", value_parser = parse_duration)]
    pub(crate) discovery_interval: Option<Duration>,

    /// How each event is written (default rfc3339).
    #[arg(long, value_enum, value_name = "FORMAT", env = "DOCKWATCH_LINE_FORMAT")]
    pub(crate) line_format: Option<LineFormat>,

    /// Serve /healthz and Prometheus /metrics here, e.g. `127.0.0.1:9464`.
    #[arg(long, value_name = "ADDR", env = "DOCKWATCH_METRICS_ADDR")]
    pub(crate) metrics_addr: Option<std::net::SocketAddr>,

    /// Events CloudWatch accepts up to this long after their timestamp are appended within
    /// that time (default 15m; see the README's "Late events").
    #[arg(long, value_name = "DURATION", env = "DOCKWATCH_LATE_WINDOW", value_parser = parse_duration)]
    pub(crate) late_window: Option<Duration>,

    /// How often every stream is compared again with CloudWatch over the reconcile horizon,
    /// for events later than the late window (default 6h).
    #[arg(long, value_name = "DURATION", env = "DOCKWATCH_RECONCILE_INTERVAL", value_parser = parse_duration)]
    pub(crate) reconcile_interval: Option<Duration>,

    /// How far back reconciliation looks (default and most 14d: CloudWatch refuses older
    /// events).
    #[arg(long, value_name = "DURATION", env = "DOCKWATCH_RECONCILE_HORIZON", value_parser = parse_duration)]
    pub(crate) reconcile_horizon: Option<Duration>,

    /// CloudWatch requests a second at most, for all streams together (default 5: half of
    /// GetLogEvents' quota of 10 per account and Region).
    #[arg(long, value_name = "N", env = "DOCKWATCH_MAX_REQUESTS_PER_SECOND")]
    pub(crate) max_requests_per_second: Option<f64>,

    /// Print what the daemon has written so far (from its state file) and exit.
    #[arg(long)]
    pub(crate) status: bool,

    #[command(flatten)]
    pub(crate) aws: AwsArgs,
}

const SHIP_EXAMPLES: &str = "\
Examples:
  # Every container of this host, one stream each in /docker/HOST:
  dockwatch ship --group '/docker/{host}'
  # Only containers labelled app=..., a group per app, never the debug ones:
  dockwatch ship --label app --exclude-label debug=true \\
    --group '/docker/{label:app}' --stream '{container_name}/{container_id:12}'
  # From a configuration file, with a metrics endpoint:
  dockwatch ship --config /etc/dockwatch/ship.toml \\
    --metrics-addr 127.0.0.1:9465
  # What a running (or stopped) daemon is doing:
  dockwatch ship --status

Placeholders: {host} {container_name} {container_id} {container_id:N} {image}
{image_tag} {label:KEY}; {{ and }} are braces. Containers run by dockwatch run
and those labelled dockwatch.ship=false are never shipped. SIGINT/SIGTERM:
drain within --drain-timeout, save each checkpoint, exit 0 (a second: now).
SIGHUP: reload the selection from the --config file.";

/// `dockwatch ship`: the host-wide shipper.
#[derive(Debug, Args)]
#[command(after_help = SHIP_EXAMPLES)]
pub struct ShipArgs {
    /// TOML configuration file (see the README); its selection is reloaded on SIGHUP.
    #[arg(long, value_name = "FILE", env = "DOCKWATCH_CONFIG")]
    pub(crate) config: Option<std::path::PathBuf>,

    /// Only containers with this label (`KEY`) or label value (`KEY=VALUE`); repeatable,
    /// all must match.
    #[arg(long, value_name = "KEY[=VALUE]")]
    pub(crate) label: Vec<String>,

    /// Never containers with this label or label value; repeatable, any excludes.
    #[arg(long, value_name = "KEY[=VALUE]")]
    pub(crate) exclude_label: Vec<String>,

    /// Only containers whose name matches this regular expression; repeatable, any matches.
    #[arg(long, value_name = "REGEX", allow_hyphen_values = true)]
    pub(crate) name: Vec<String>,

    /// Never containers whose name matches this regular expression; repeatable.
    #[arg(long, value_name = "REGEX", allow_hyphen_values = true)]
    pub(crate) exclude_name: Vec<String>,

    /// Only containers of this image (`nginx` matches every tag, `nginx:1.27` one);
    /// repeatable, any matches.
    #[arg(long, value_name = "IMAGE")]
    pub(crate) image: Vec<String>,

    /// Log group of each container, a template, e.g. `/docker/{label:app}`; created when
    /// missing.
    #[arg(long, value_name = "TEMPLATE")]
    pub(crate) group: Option<String>,

    /// Log stream of each container, a template (default `{container_name}/{container_id:12}`).
    #[arg(long, value_name = "TEMPLATE")]
    pub(crate) stream: Option<String>,

    #[command(flatten)]
    pub(crate) events: EventArgs,

    /// PutLogEvents requests in flight at once, all containers together (default 32).
    #[arg(long, value_name = "N")]
    pub(crate) max_requests: Option<usize>,

    /// How each container's output is read (default files: the engine's json-file logs
    /// where this process can read them, else the logs endpoint).
    #[arg(long, value_enum, value_name = "PATH")]
    pub(crate) read_path: Option<ShipReadPath>,

    /// After SIGINT/SIGTERM, how long delivery of what was read may take before dockwatch
    /// quits (the rest is shipped at the next start, from each checkpoint), e.g. `10s`
    /// (default 30s).
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub(crate) drain_timeout: Option<Duration>,

    /// When AWS refuses the credentials, how long shipping waits for them to be refreshed
    /// before that container's shipping gives up until the next start, e.g. `5m`.
    #[arg(long, value_name = "DURATION", default_value = "5m", value_parser = parse_duration)]
    pub(crate) credentials_timeout: Duration,

    /// Where the checkpoint of each container and the daemon's status live.
    #[arg(long, value_name = "DIR", env = "DOCKWATCH_SHIP_STATE_DIR")]
    pub(crate) state_dir: Option<std::path::PathBuf>,

    /// Serve /healthz and Prometheus /metrics here, e.g. `127.0.0.1:9465`.
    #[arg(long, value_name = "ADDR", env = "DOCKWATCH_METRICS_ADDR")]
    pub(crate) metrics_addr: Option<std::net::SocketAddr>,

    /// Print what the daemon is doing (from its status file) and exit.
    #[arg(long)]
    pub(crate) status: bool,

    #[command(flatten)]
    pub(crate) aws: AwsArgs,
}

const WEB_EXAMPLES: &str = "\
Examples:
  # This host's containers in a browser: http://127.0.0.1:9800
  dockwatch web
  # From another machine, through SSH (the page listens on loopback only):
  ssh -L 9800:127.0.0.1:9800 docker-host  # then http://127.0.0.1:9800

SIGINT/SIGTERM stop it (exit 0); exit 2 for a bad argument, 1 when the engine cannot
be reached or the address cannot be listened on.";

#[derive(Debug, Args)]
#[command(after_help = WEB_EXAMPLES)]
pub struct WebArgs {
    /// Where to listen: a loopback address and port (the page shows every container's
    /// logs: other addresses need TLS and a token, which `web` does not have yet).
    #[arg(
        long,
        value_name = "ADDR",
        env = "DOCKWATCH_WEB_LISTEN",
        default_value = "127.0.0.1:9800"
    )]
    pub(crate) listen: String,
}

const AGENT_EXAMPLES: &str = "\
Examples:
  # On the Docker host, loopback only (the default):
  dockwatch agent
  # Reachable from other machines: TLS and a bearer token are required
  DOCKWATCH_AGENT_TOKEN_FILE=/etc/dockwatch/token \\
    dockwatch agent --listen 0.0.0.0:50051 \\
    --tls-cert /etc/dockwatch/agent.pem --tls-key /etc/dockwatch/agent.key
  # A Unix socket (permissions 0600):
  dockwatch agent --listen unix:/run/dockwatch/agent.sock

Containers launched with CloudWatch shipping use this agent's AWS settings (the
flags below or the standard chain). SIGINT/SIGTERM stop the agent (exit 0);
containers keep running. A certificate clients accept: see the README's \"TLS
certificates\" (openssl req -x509 makes a CA certificate unless told not to).";

#[derive(Debug, Args)]
#[command(after_help = AGENT_EXAMPLES)]
pub struct AgentArgs {
    /// Where to listen: HOST:PORT or unix:PATH.
    #[arg(
        long,
        value_name = "ADDR",
        env = "DOCKWATCH_AGENT_LISTEN",
        default_value = "127.0.0.1:50051"
    )]
    pub(crate) listen: String,

    /// Server certificate chain (PEM) for TLS.
    #[arg(long, value_name = "FILE", requires = "tls_key")]
    pub(crate) tls_cert: Option<std::path::PathBuf>,

    /// Private key (PEM) of the server certificate.
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    pub(crate) tls_key: Option<std::path::PathBuf>,

    /// Require client certificates signed by this CA (PEM): mutual TLS.
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    pub(crate) tls_client_ca: Option<std::path::PathBuf>,

    /// File holding the bearer token clients must send (also DOCKWATCH_AGENT_TOKEN).
    #[arg(long, value_name = "FILE", env = "DOCKWATCH_AGENT_TOKEN_FILE")]
    pub(crate) token_file: Option<std::path::PathBuf>,

    /// Listen on a non-loopback address without TLS or token (prints a warning).
    #[arg(long)]
    pub(crate) insecure: bool,

    /// Where checkpoints and spools of shipped containers go.
    #[arg(long, value_name = "DIR", default_value_os_t = crate::util::state_home().join("agent"))]
    pub(crate) state_dir: std::path::PathBuf,

    /// How often a quiet connection is checked (HTTP/2 ping and TCP keepalive); a client
    /// that does not answer within the same time again is dropped with its streams, e.g. `30s`.
    #[arg(long, value_name = "DURATION", default_value = "30s", value_parser = parse_duration)]
    pub(crate) keepalive: Duration,

    /// AWS settings for CloudWatch shipping of launched containers.
    #[command(flatten)]
    pub(crate) aws: AwsArgs,
}

const REMOTE_EXAMPLES: &str = "\
Examples:
  export DOCKWATCH_HOST=build-box:50051
  export DOCKWATCH_TOKEN_FILE=~/.dockwatch-token
  export DOCKWATCH_TLS_CA=~/agent.pem    # an agent with TLS
  dockwatch remote launch --image busybox --shell sh --name clock \\
    --command 'while true; do date; sleep 1; done'
  dockwatch remote ps
  dockwatch remote logs clock -f --tail 10 -t
  dockwatch remote exec -it clock -- sh
  dockwatch remote stop clock --rm

Exit status: 0; 1 when the agent reports an error or cannot be reached; 2 for
invalid arguments; 130 after Ctrl+C; `exec` exits with the command's exit
code.";

#[derive(Debug, Args)]
#[command(after_help = REMOTE_EXAMPLES)]
pub struct RemoteArgs {
    /// The agent: HOST[:PORT] (port 50051 by default), http(s)://HOST:PORT or unix:PATH.
    #[arg(
        long,
        value_name = "HOST",
        env = "DOCKWATCH_HOST",
        default_value = "127.0.0.1:50051",
        global = true
    )]
    pub(crate) host: String,

    /// File holding the bearer token (also DOCKWATCH_TOKEN).
    #[arg(long, value_name = "FILE", env = "DOCKWATCH_TOKEN_FILE", global = true)]
    pub(crate) token_file: Option<std::path::PathBuf>,

    /// CA certificate (PEM) to verify the agent (or its self-signed certificate); implies TLS.
    #[arg(long, value_name = "FILE", env = "DOCKWATCH_TLS_CA", global = true)]
    pub(crate) tls_ca: Option<std::path::PathBuf>,

    /// Client certificate (PEM) for mutual TLS (an agent started with --tls-client-ca).
    #[arg(
        long,
        value_name = "FILE",
        env = "DOCKWATCH_TLS_CERT",
        requires = "tls_key",
        global = true
    )]
    pub(crate) tls_cert: Option<std::path::PathBuf>,

    /// Client private key (PEM) for mutual TLS.
    #[arg(
        long,
        value_name = "FILE",
        env = "DOCKWATCH_TLS_KEY",
        requires = "tls_cert",
        global = true
    )]
    pub(crate) tls_key: Option<std::path::PathBuf>,

    /// Name to verify in the agent's certificate (default: the host).
    #[arg(long, value_name = "NAME", env = "DOCKWATCH_TLS_DOMAIN", global = true)]
    pub(crate) tls_domain: Option<String>,

    #[command(subcommand)]
    pub command: RemoteCommand,
}

#[derive(Debug, Subcommand)]
pub enum RemoteCommand {
    /// Create and start a container.
    Launch(LaunchArgs),
    /// Stop a container (and remove it with --rm).
    Stop(StopArgs),
    /// List containers.
    Ps(PsArgs),
    /// Run a command in a running container.
    Exec(ExecArgs),
    /// Print a container's logs: its stdout to stdout, its stderr to stderr, byte for byte.
    Logs(LogsArgs),
}

#[derive(Debug, Args)]
pub struct LaunchArgs {
    /// Image to run.
    #[arg(long, value_name = "IMAGE")]
    pub(crate) image: String,
    /// Command, run as `SHELL -c COMMAND`.
    #[arg(long, value_name = "CMD", allow_hyphen_values = true)]
    pub command: String,
    /// Container name.
    #[arg(long, value_name = "NAME")]
    pub(crate) name: Option<String>,
    /// Allocate a TTY.
    #[arg(short, long)]
    pub(crate) tty: bool,
    #[command(flatten)]
    pub(crate) container: ContainerArgs,
    /// Ship the container's output to this CloudWatch Logs group (with --cloudwatch-stream).
    #[arg(long, value_name = "GROUP", requires = "cloudwatch_stream")]
    pub(crate) cloudwatch_group: Option<String>,
    /// CloudWatch Logs stream for the shipped output.
    #[arg(long, value_name = "STREAM", requires = "cloudwatch_group")]
    pub(crate) cloudwatch_stream: Option<String>,
}

#[derive(Debug, Args)]
pub struct StopArgs {
    /// Container id, id prefix or name.
    pub(crate) container: String,
    /// Seconds before SIGKILL.
    #[arg(short = 't', long = "time", value_name = "SECONDS")]
    pub(crate) time: Option<u32>,
    /// Remove the container once stopped.
    #[arg(long)]
    pub(crate) rm: bool,
}

#[derive(Debug, Args)]
pub struct PsArgs {
    /// Show stopped containers too.
    #[arg(short, long)]
    pub(crate) all: bool,
}

#[derive(Debug, Args)]
pub struct ExecArgs {
    /// Keep stdin open and send it to the command.
    #[arg(short, long)]
    pub(crate) interactive: bool,
    /// Allocate a TTY (with -i: an interactive shell; this terminal goes raw meanwhile).
    #[arg(short, long)]
    pub(crate) tty: bool,
    /// Environment variable, repeatable.
    #[arg(short = 'e', long = "env", value_name = "KEY=VALUE")]
    pub(crate) env: Vec<String>,
    /// Working directory in the container.
    #[arg(short = 'w', long, value_name = "DIR")]
    pub(crate) workdir: Option<String>,
    /// Container id, id prefix or name.
    pub(crate) container: String,
    /// The command and its arguments.
    #[arg(required = true, num_args = 1.., trailing_var_arg = true, allow_hyphen_values = true)]
    pub command: Vec<String>,
}

#[derive(Debug, Args)]
#[command(allow_negative_numbers = true)]
pub struct LogsArgs {
    /// Container id, id prefix or name.
    pub(crate) container: String,
    /// Keep printing while the container runs.
    #[arg(short, long)]
    pub(crate) follow: bool,
    /// Only the last N lines (`all` or 0: all, as docker).
    #[arg(short = 'n', long, value_name = "N", value_parser = parse_tail, allow_hyphen_values = true)]
    pub(crate) tail: Option<i64>,
    /// Only logs since: 10s, 30m, 1h, 7d, RFC 3339 or Unix seconds.
    #[arg(long, value_name = "TIME")]
    pub(crate) since: Option<String>,
    /// Only logs until, same forms as --since.
    #[arg(long, value_name = "TIME")]
    pub(crate) until: Option<String>,
    /// Prefix each line with its timestamp, as `docker logs -t`.
    #[arg(short, long)]
    pub(crate) timestamps: bool,
    /// Leave out the container's stdout.
    #[arg(long)]
    pub(crate) no_stdout: bool,
    /// Leave out the container's stderr.
    #[arg(long)]
    pub(crate) no_stderr: bool,
}

/// Where containers run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Default)]
pub(crate) enum Engine {
    /// This machine's Docker engine.
    #[default]
    Local,
    /// An existing ECS cluster, on Fargate.
    Ecs,
}

/// Options for `--on ecs`.
#[derive(Debug, Args, Clone, Default)]
pub(crate) struct EcsArgs {
    /// Where the container runs: `local` (this Docker engine) or `ecs` (Fargate).
    #[arg(long = "on", value_enum, value_name = "ENGINE", default_value_t = Engine::Local)]
    pub(crate) on: Engine,

    /// ECS cluster name or ARN (with --on ecs).
    #[arg(long, value_name = "CLUSTER")]
    pub(crate) ecs_cluster: Option<String>,

    /// Subnet ids for the task (repeatable or comma-separated).
    #[arg(long, value_name = "SUBNET", value_delimiter = ',')]
    pub(crate) ecs_subnets: Vec<String>,

    /// Security group ids for the task (repeatable or comma-separated).
    #[arg(long, value_name = "SG", value_delimiter = ',')]
    pub(crate) ecs_security_groups: Vec<String>,

    /// Task execution role ARN (lets ECS pull the image and write to CloudWatch Logs).
    #[arg(long, value_name = "ARN")]
    pub(crate) ecs_execution_role: Option<String>,

    /// Task role ARN for the container's own AWS calls.
    #[arg(long, value_name = "ARN")]
    pub(crate) ecs_task_role: Option<String>,

    /// Task CPU units (256, 512, 1024, 2048, 4096, ...).
    #[arg(long, value_name = "UNITS", default_value = "256")]
    pub(crate) ecs_cpu: String,

    /// Task memory in MiB, valid for the CPU chosen (e.g. 512 with 256 CPU).
    #[arg(long, value_name = "MIB", default_value = "512")]
    pub(crate) ecs_memory: String,

    /// Give the task a public IP (needed in public subnets without a NAT to pull images).
    #[arg(long)]
    pub(crate) ecs_assign_public_ip: bool,
}

const ON_UPLOAD_EXAMPLES: &str = "\
Examples:
  # Create the queue and the bucket notification, then process every upload
  # under input/:
  dockwatch on-upload --bucket my-bucket --prefix input/ \\
    --output-prefix output/ --setup --docker-image python:3.12 \\
    --bash-command 'python /app/process.py \"$INPUT_FILE\" \"$OUTPUT_DIR\"' \\
    --aws-cloudwatch-group /dockwatch/uploads

In the container: INPUT_FILE (the object, read-only), OUTPUT_DIR (uploaded to
the output prefix under the object's key when the command exits 0), S3_BUCKET,
S3_KEY. SIGINT/SIGTERM: stop taking messages, let running tasks finish
(--grace), exit 0.";

#[derive(Debug, Args)]
#[command(after_help = ON_UPLOAD_EXAMPLES)]
pub struct OnUploadArgs {
    /// Bucket the files are uploaded to.
    #[arg(long, value_name = "BUCKET")]
    pub(crate) bucket: String,

    /// Only keys starting with this, e.g. `input/`.
    #[arg(long, value_name = "PREFIX", default_value = "")]
    pub(crate) prefix: String,

    /// Where each task's OUTPUT_DIR is uploaded: PREFIX + the input key (without --prefix) + /.
    #[arg(long, value_name = "PREFIX")]
    pub(crate) output_prefix: String,

    /// Bucket for the outputs (default: --bucket). Needed with an empty --prefix, where
    /// outputs in the same bucket would start new tasks.
    #[arg(long, value_name = "BUCKET")]
    pub(crate) output_bucket: Option<String>,

    /// Run each object once across several workers sharing the queue: claims are kept in
    /// S3 with conditional writes, e.g. `s3://my-bucket/dockwatch-claims/` (default: this
    /// host only).
    #[arg(long, value_name = "S3_URL")]
    pub(crate) claims: Option<String>,

    /// With --claims: how long a worker's claim lasts without renewal (it is renewed every
    /// third of it); a worker that dies holds its object this long.
    #[arg(long, value_name = "DURATION", default_value = "2m", value_parser = parse_duration)]
    pub(crate) lease: Duration,

    /// Image to run for each file.
    #[arg(long, value_name = "IMAGE")]
    pub(crate) docker_image: String,

    /// Command run as `bash -c CMD` for each file.
    #[arg(long, value_name = "CMD", allow_hyphen_values = true)]
    pub(crate) bash_command: String,

    /// CloudWatch Logs group; each file's task logs to a stream named after its key.
    #[arg(long, value_name = "GROUP")]
    pub(crate) aws_cloudwatch_group: String,

    /// SQS queue receiving the bucket's ObjectCreated notifications.
    #[arg(
        long,
        value_name = "URL",
        required_unless_present = "setup",
        conflicts_with = "setup"
    )]
    pub(crate) queue_url: Option<String>,

    /// Create the queue (with a dead-letter queue) and the bucket notification.
    #[arg(long)]
    pub(crate) setup: bool,

    /// Tasks at once.
    #[arg(long, value_name = "N", default_value_t = 2)]
    pub(crate) concurrency: usize,

    /// Tries per file before it is left to the queue's dead-letter policy.
    #[arg(long, value_name = "N", default_value_t = 3)]
    pub(crate) max_attempts: u32,

    /// How long a received message stays hidden; extended while its task runs.
    #[arg(long, value_name = "DURATION", default_value = "60s", value_parser = parse_duration)]
    pub(crate) visibility_timeout: Duration,

    /// Long-poll wait of each ReceiveMessage (at most 20s).
    #[arg(long, value_name = "DURATION", default_value = "20s", value_parser = parse_duration)]
    pub(crate) wait: Duration,

    /// After SIGINT/SIGTERM, how long running tasks may go on before they are stopped.
    #[arg(long, value_name = "DURATION", default_value = "30s", value_parser = parse_duration)]
    pub(crate) grace: Duration,

    /// Stop a task that runs longer than this (counted as a failed attempt); no limit when
    /// not given.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub(crate) task_timeout: Option<Duration>,

    /// How long a stopped task's container gets after SIGTERM before SIGKILL.
    #[arg(long, value_name = "DURATION", default_value = "10s", value_parser = parse_duration)]
    pub(crate) stop_timeout: Duration,

    /// Serve /healthz and Prometheus /metrics here, e.g. `127.0.0.1:9465`.
    #[arg(long, value_name = "ADDR")]
    pub(crate) metrics_addr: Option<std::net::SocketAddr>,

    /// Processed-object records and work directories.
    #[arg(long, value_name = "DIR", default_value_os_t = crate::util::state_home().join("on-upload"))]
    pub(crate) state_dir: std::path::PathBuf,

    #[command(flatten)]
    pub(crate) container: ContainerArgs,

    #[command(flatten)]
    pub(crate) ecs: EcsArgs,

    #[command(flatten)]
    pub(crate) aws: AwsArgs,
}
