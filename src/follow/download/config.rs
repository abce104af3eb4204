//! The download daemon's settings: a TOML file (`--config`), overridden by `DOCKWATCH_*`
//! environment variables, overridden by flags (clap resolves flag-over-environment; this
//! module lays both over the file). Reloaded on SIGHUP.
//!
//! ```toml
//! output_dir = "/var/lib/dockwatch/logs"
//! group_prefixes = ["/ecs/", "/dockwatch/"]   # "" follows every group
//! streams = ["web-1"]                          # optional: exact stream names
//! stream_prefixes = ["worker/"]                # optional: stream name prefixes
//! poll_interval = "5s"
//! discovery_interval = "30s"
//! line_format = "rfc3339"                      # rfc3339 | unix-ms | message | json
//! metrics_addr = "127.0.0.1:9464"
//! late_window = "15m"                          # late events appended within this
//! reconcile_interval = "6h"                    # and the rest found by reconciliation
//! reconcile_horizon = "14d"
//! max_requests_per_second = 5                  # all streams together
//!
//! [aws]
//! region = "eu-west-1"
//! profile = "logs-reader"
//! endpoint_url = "http://127.0.0.1:5000"
//! ```
//!
//! A bad file is reported as `FILE:LINE:COLUMN: key 'KEY': what is wrong`.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use super::ledger::Schedule;
use crate::aws::AwsOptions;
use crate::cli::{DownloadArgs, LineFormat};
use crate::config::file::{ConfigFileError, duration};
use crate::follow::FollowError;

/// The file's contents; every key optional.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    output_dir: Option<PathBuf>,
    group_prefixes: Option<Vec<String>>,
    streams: Option<Vec<String>>,
    stream_prefixes: Option<Vec<String>>,
    #[serde(default, deserialize_with = "duration")]
    poll_interval: Option<Duration>,
    #[serde(default, deserialize_with = "duration")]
    discovery_interval: Option<Duration>,
    line_format: Option<LineFormat>,
    metrics_addr: Option<SocketAddr>,
    #[serde(default, deserialize_with = "duration")]
    late_window: Option<Duration>,
    #[serde(default, deserialize_with = "duration")]
    reconcile_interval: Option<Duration>,
    #[serde(default, deserialize_with = "duration")]
    reconcile_horizon: Option<Duration>,
    max_requests_per_second: Option<f64>,
    #[serde(default)]
    aws: crate::config::file::FileAws,
}

/// Which streams of a followed group are downloaded.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct StreamSelection {
    /// Exact names.
    pub(crate) names: Vec<String>,
    /// Name prefixes.
    pub(crate) prefixes: Vec<String>,
}

impl StreamSelection {
    /// Everything when nothing is listed.
    pub(crate) fn matches(&self, stream: &str) -> bool {
        (self.names.is_empty() && self.prefixes.is_empty())
            || self.names.iter().any(|n| n == stream)
            || self.prefixes.iter().any(|p| stream.starts_with(p.as_str()))
    }
}

/// Validated daemon settings.
#[derive(Debug, Clone)]
pub(crate) struct DownloadConfig {
    pub(crate) output_dir: PathBuf,
    pub(crate) group_prefixes: Vec<String>,
    pub(crate) streams: StreamSelection,
    pub(crate) poll_interval: Duration,
    pub(crate) discovery_interval: Duration,
    pub(crate) line_format: LineFormat,
    pub(crate) metrics_addr: Option<SocketAddr>,
    /// When late events are checked for (the ledger's schedule).
    pub(crate) schedule: Schedule,
    /// CloudWatch requests a second, all streams together.
    pub(crate) max_requests_per_second: f64,
    pub(crate) aws: AwsOptions,
}

/// CloudWatch refuses events older than this.
const MAX_HORIZON: Duration = Duration::from_secs(14 * 24 * 3600);

impl DownloadConfig {
    /// Reads the file (if any) and lays the environment and flags over it.
    pub(crate) fn load(args: &DownloadArgs) -> Result<Self, FollowError> {
        let file = match &args.config {
            Some(p) => parse_file(p)?,
            None => FileConfig::default(),
        };
        Self::merge(args, file)
    }

    /// Only the output directory (for `--status`): the rest need not be valid.
    pub(crate) fn output_dir_only(args: &DownloadArgs) -> Result<PathBuf, FollowError> {
        let file = match &args.config {
            Some(p) => parse_file(p)?,
            None => FileConfig::default(),
        };
        args.output_dir
            .clone()
            .or(file.output_dir)
            .ok_or_else(no_output_dir)
    }

    fn merge(args: &DownloadArgs, file: FileConfig) -> Result<Self, FollowError> {
        let schedule = schedule(args, &file)?;
        let output_dir = args
            .output_dir
            .clone()
            .or(file.output_dir)
            .ok_or_else(no_output_dir)?;
        let group_prefixes = if args.group_prefix.is_empty() {
            file.group_prefixes.unwrap_or_default()
        } else {
            args.group_prefix.clone()
        };
        if let Some(bad) = group_prefixes.iter().find_map(|p| bad_group_prefix(p)) {
            return Err(FollowError::Usage(bad));
        }
        if group_prefixes.is_empty() {
            return Err(FollowError::Usage(
                "no log groups to follow: pass --group-prefix PREFIX (repeatable; '' for every group), set DOCKWATCH_GROUP_PREFIXES, or group_prefixes in the configuration file".into(),
            ));
        }
        let pick = |flag: &Vec<String>, file: Option<Vec<String>>| {
            if flag.is_empty() {
                file.unwrap_or_default()
            } else {
                flag.clone()
            }
        };
        let streams = StreamSelection {
            names: pick(&args.streams, file.streams),
            prefixes: pick(&args.stream_prefix, file.stream_prefixes),
        };
        if streams.names.iter().any(String::is_empty) {
            return Err(FollowError::Usage(
                "empty stream name in the stream list".into(),
            ));
        }
        let poll_interval = args
            .poll_interval
            .or(file.poll_interval)
            .unwrap_or(Duration::from_secs(5));
        let discovery_interval = args
            .discovery_interval
            .or(file.discovery_interval)
            .unwrap_or(Duration::from_secs(30));
        if poll_interval.is_zero() || discovery_interval.is_zero() {
            return Err(FollowError::Usage(
                "--poll-interval and --discovery-interval must be more than 0".into(),
            ));
        }
        let max_requests_per_second = args
            .max_requests_per_second
            .or(file.max_requests_per_second)
            .unwrap_or(5.0);
        if !(0.1..=1000.0).contains(&max_requests_per_second) {
            return Err(FollowError::Usage(format!(
                "--max-requests-per-second {max_requests_per_second}: give a number from 0.1 to 1000 (CloudWatch allows 10 GetLogEvents a second per account and Region)"
            )));
        }
        let aws_args = file.aws.under(&args.aws);
        let aws =
            crate::config::aws_options(aws_args).map_err(|e| FollowError::Usage(e.to_string()))?;
        Ok(DownloadConfig {
            output_dir,
            group_prefixes,
            streams,
            poll_interval,
            discovery_interval,
            line_format: args
                .line_format
                .or(file.line_format)
                .unwrap_or(LineFormat::Rfc3339),
            metrics_addr: args.metrics_addr.or(file.metrics_addr),
            schedule,
            max_requests_per_second,
            aws,
        })
    }
}

/// Why a group prefix can match no log group, if it cannot: a character CloudWatch never
/// allows in a group name (`[A-Za-z0-9._/#-]`). Prefixes are separated by commas (the flag
/// and DOCKWATCH_GROUP_PREFIXES alike); a newline, as the stream variables use, is caught
/// here instead of silently following nothing.
fn bad_group_prefix(prefix: &str) -> Option<String> {
    let bad = prefix
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '/' | '#' | '-')))?;
    Some(format!(
        "group prefix {prefix:?} holds {bad:?}, which no log group name has: separate prefixes with commas (--group-prefix a,b or DOCKWATCH_GROUP_PREFIXES=a,b) or repeat --group-prefix"
    ))
}

/// The late window and reconciliation settings, checked.
fn schedule(args: &DownloadArgs, file: &FileConfig) -> Result<Schedule, FollowError> {
    let window = args
        .late_window
        .or(file.late_window)
        .unwrap_or(Duration::from_secs(15 * 60));
    let every = args
        .reconcile_interval
        .or(file.reconcile_interval)
        .unwrap_or(Duration::from_secs(6 * 3600));
    let horizon = args
        .reconcile_horizon
        .or(file.reconcile_horizon)
        .unwrap_or(MAX_HORIZON);
    if window < Duration::from_secs(10) || window > Duration::from_secs(24 * 3600) {
        return Err(FollowError::Usage(format!(
            "--late-window {}: give 10s to 24h (late events are appended within this time)",
            humantime::format_duration(window)
        )));
    }
    if every.is_zero() || horizon.is_zero() || horizon > MAX_HORIZON {
        return Err(FollowError::Usage(format!(
            "--reconcile-interval must be more than 0 and --reconcile-horizon from 1s to 14d (CloudWatch refuses older events); got {} and {}",
            humantime::format_duration(every),
            humantime::format_duration(horizon)
        )));
    }
    let ms = |d: Duration| d.as_millis().min(i64::MAX as u128) as i64;
    Ok(Schedule {
        window_ms: ms(window),
        reconcile_every_ms: ms(every),
        horizon_ms: ms(horizon),
    })
}

fn no_output_dir() -> FollowError {
    FollowError::Usage(
        "no output directory: pass --output-dir DIR, set DOCKWATCH_OUTPUT_DIR, or output_dir in the configuration file".into(),
    )
}

fn parse_file(path: &Path) -> Result<FileConfig, ConfigFileError> {
    crate::config::file::parse(path)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct T {
        #[command(flatten)]
        a: DownloadArgs,
    }

    fn args(extra: &[&str]) -> DownloadArgs {
        let mut v = vec!["t"];
        v.extend_from_slice(extra);
        T::parse_from(v).a
    }

    fn write(text: &str) -> (tempdir::Dir, PathBuf) {
        let d = tempdir::Dir::new();
        let p = d.0.join("download.toml");
        std::fs::write(&p, text).unwrap();
        (d, p)
    }

    mod tempdir {
        pub(crate) struct Dir(pub std::path::PathBuf);
        impl Dir {
            pub(crate) fn new() -> Self {
                let p = std::env::temp_dir().join(format!(
                    "dockwatch-cfg-{}-{}",
                    std::process::id(),
                    rand::random::<u64>()
                ));
                std::fs::create_dir_all(&p).unwrap();
                Dir(p)
            }
        }
        impl Drop for Dir {
            fn drop(&mut self) {
                let _ = std::fs::remove_dir_all(&self.0);
            }
        }
    }

    #[test]
    fn file_values_and_flag_overrides() {
        let (_d, p) = write(
            "output_dir = \"/tmp/out\"\ngroup_prefixes = [\"/ecs/\"]\npoll_interval = \"2s\"\nline_format = \"json\"\n[aws]\nregion = \"eu-west-1\"\n",
        );
        let ps = p.to_str().unwrap();
        let c = DownloadConfig::load(&args(&["--config", ps])).unwrap();
        assert_eq!(c.output_dir, PathBuf::from("/tmp/out"));
        assert_eq!(c.group_prefixes, vec!["/ecs/".to_string()]);
        assert_eq!(c.poll_interval, Duration::from_secs(2));
        assert_eq!(c.discovery_interval, Duration::from_secs(30));
        assert_eq!(c.line_format, LineFormat::Json);
        assert_eq!(c.aws.region.as_deref(), Some("eu-west-1"));
        let c = DownloadConfig::load(&args(&[
            "--config",
            ps,
            "--output-dir",
            "/x",
            "--group-prefix",
            "a,b",
            "--poll-interval",
            "1s",
        ]))
        .unwrap();
        assert_eq!(c.output_dir, PathBuf::from("/x"));
        assert_eq!(c.group_prefixes, vec!["a".to_string(), "b".to_string()]);
        assert_eq!(c.poll_interval, Duration::from_secs(1));
    }

    #[test]
    fn group_prefixes_are_separated_by_commas_and_anything_else_is_refused() {
        let c = DownloadConfig::load(&args(&[
            "--output-dir",
            "/x",
            "--group-prefix",
            "/a/,/b/",
            "--group-prefix",
            "",
        ]))
        .unwrap();
        assert_eq!(c.group_prefixes, ["/a/", "/b/", ""]);
        for bad in ["/a/\n/b/", "/a/ /b/", "/a/;/b/"] {
            let e = DownloadConfig::load(&args(&["--output-dir", "/x", "--group-prefix", bad]))
                .unwrap_err()
                .to_string();
            assert!(e.contains("separate prefixes with commas"), "{e}");
        }
    }

    #[test]
    fn errors_name_file_line_and_key() {
        let (_d, p) =
            write("output_dir = \"/tmp/out\"\ngroup_prefixes = [\"/a\"]\npoll_intervl = \"2s\"\n");
        let e = DownloadConfig::load(&args(&["--config", p.to_str().unwrap()]))
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with(&format!(
                "{}:3:1: key 'poll_intervl': unknown field",
                p.display()
            )),
            "{e}"
        );

        let (_d, p) =
            write("output_dir = \"/o\"\ngroup_prefixes = [\"/a\"]\n\n[aws]\nregion = 5\n");
        let e = DownloadConfig::load(&args(&["--config", p.to_str().unwrap()]))
            .unwrap_err()
            .to_string();
        assert!(e.contains(":5:10: key 'aws.region': invalid type"), "{e}");

        let (_d, p) = write("poll_interval = \"soon\"\n");
        let e = DownloadConfig::load(&args(&["--config", p.to_str().unwrap()]))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains(":1:17: key 'poll_interval': 'soon' is not a duration"),
            "{e}"
        );

        let (_d, p) = write("output_dir = [\n");
        let e = DownloadConfig::load(&args(&["--config", p.to_str().unwrap()]))
            .unwrap_err()
            .to_string();
        assert!(e.starts_with(&format!("{}:", p.display())), "{e}");
        assert!(!e.contains('\n'), "one line: {e}");
    }

    #[test]
    fn missing_essentials_are_usage_errors() {
        let e = DownloadConfig::load(&args(&["--group-prefix", "/a"])).unwrap_err();
        assert!(e.to_string().contains("no output directory"), "{e}");
        let e = DownloadConfig::load(&args(&["--output-dir", "/o"])).unwrap_err();
        assert!(e.to_string().contains("no log groups to follow"), "{e}");
        assert_eq!(e.exit_code(), crate::exit_codes::USAGE);
        let e = DownloadConfig::load(&args(&["--config", "/nonexistent/d.toml"])).unwrap_err();
        assert!(
            e.to_string()
                .contains("cannot read configuration file '/nonexistent/d.toml'"),
            "{e}"
        );
    }

    #[test]
    fn stream_selection() {
        let all = StreamSelection::default();
        assert!(all.matches("anything"));
        let s = StreamSelection {
            names: vec!["web".into()],
            prefixes: vec!["worker/".into()],
        };
        assert!(s.matches("web"));
        assert!(!s.matches("web2"));
        assert!(s.matches("worker/3"));
        assert!(!s.matches("other"));
    }
}
