//! `dockwatch ship`'s settings: which containers ([`Selection`]), where each goes
//! ([`Template`] for its group and stream), and how (the event flags `run` has too).
//!
//! A TOML file (`--config`) with the flags laid over it (a flag given replaces the file's
//! value; lists are replaced whole). SIGHUP reloads the selection only ([`HostConfig::reload`]);
//! the rest needs a restart.
//!
//! ```toml
//! label = ["app"]                  # containers with the label app, any value
//! exclude_label = ["debug=true"]
//! name = ["^web-"]                 # regular expressions on the container name
//! exclude_name = ["-tmp$"]
//! image = ["nginx", "redis:7"]     # every tag of nginx, one of redis
//! group = "/docker/{label:app}"
//! stream = "{host}/{container_name}/{container_id:12}"
//! max_requests = 32
//! drain_timeout = "30s"
//! state_dir = "/var/lib/dockwatch/ship"
//! metrics_addr = "127.0.0.1:9465"
//!
//! [aws]
//! region = "eu-west-1"
//! endpoint_url = "http://127.0.0.1:5000"
//! ```
//!
//! Templates are checked at start by rendering them with sample values: a name CloudWatch
//! would refuse whatever the container (a `:` in a stream template) is a usage error then; a
//! name that only some containers make invalid (a label value with a space in a group) is a
//! logged skip of that container.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use regex::Regex;
use serde::Deserialize;

use super::file::{ConfigFileError, duration};
use super::{ConfigError, ShipConfig, TransformConfig, aws_options, events_of};
use crate::aws::AwsOptions;
use crate::cli::ShipArgs;

/// Label that keeps a container out of every selection when it is `false`.
pub(crate) const SHIP_LABEL: &str = "dockwatch.ship";
/// The stream template without `--stream`.
pub(crate) const DEFAULT_STREAM: &str = "{container_name}/{container_id:12}";
/// `--max-requests` default: PutLogEvents in flight for the whole host.
pub(crate) const DEFAULT_MAX_REQUESTS: usize = 32;
/// `--flush-interval` default under `ship`: a host's containers multiply the requests a
/// trickle makes (a partial batch goes at most about four times an interval per container), and
/// in a burst of 100 containers (W7) partial batches cost delivery 10-20% at 200 ms (measured:
/// 80-89% of one container's rate at 200 ms, 109% at 1 s). A lone line still goes at once.
pub(crate) const DEFAULT_FLUSH_INTERVAL: Duration = Duration::from_secs(1);
/// `--drain-timeout` default.
pub(crate) const DEFAULT_DRAIN_TIMEOUT: Duration = Duration::from_secs(30);
/// Requests in flight per container (a share of `--max-requests`): two keep one stream busy
/// while an answer travels; more would only hold more batches in memory per container.
pub(crate) const PER_CONTAINER_IN_FLIGHT: usize = 2;

/// What `ship` reads of the file; every key optional.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    label: Option<Vec<String>>,
    exclude_label: Option<Vec<String>>,
    name: Option<Vec<String>>,
    exclude_name: Option<Vec<String>>,
    image: Option<Vec<String>>,
    group: Option<String>,
    stream: Option<String>,
    max_requests: Option<usize>,
    read_path: Option<String>,
    #[serde(default, deserialize_with = "duration")]
    drain_timeout: Option<Duration>,
    state_dir: Option<PathBuf>,
    metrics_addr: Option<SocketAddr>,
    #[serde(default)]
    aws: super::file::FileAws,
}

/// Why `ship`'s settings cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum HostConfigError {
    #[error(transparent)]
    File(#[from] ConfigFileError),
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("{0}")]
    Usage(String),
}

/// The validated settings of `dockwatch ship`.
#[derive(Debug, Clone)]
pub(crate) struct HostConfig {
    pub(crate) selection: Selection,
    pub(crate) group: Template,
    pub(crate) stream: Template,
    /// Every container's shipping settings; group and stream are replaced per container.
    pub(crate) ship: ShipConfig,
    pub(crate) transforms: TransformConfig,
    /// PutLogEvents in flight, all containers together.
    pub(crate) max_requests: usize,
    /// Read the engine's log files where they can be read (else the logs endpoint).
    pub(crate) read_files: bool,
    pub(crate) drain_timeout: Duration,
    pub(crate) state_dir: PathBuf,
    pub(crate) metrics_addr: Option<SocketAddr>,
    pub(crate) aws: AwsOptions,
    /// The file the selection is reloaded from.
    pub(crate) file: Option<PathBuf>,
}

impl HostConfig {
    /// Reads the file (if any) and lays the flags over it.
    pub(crate) fn load(args: &ShipArgs) -> Result<Self, HostConfigError> {
        let file = read(args.config.as_deref())?;
        let selection = Selection::merge(args, &file)?;
        let group = args
            .group
            .clone()
            .or(file.group)
            .ok_or_else(|| HostConfigError::Usage("no log group: pass --group TEMPLATE, e.g. --group '/docker/{host}', or group in the configuration file".into()))?;
        let stream = args
            .stream
            .clone()
            .or(file.stream)
            .unwrap_or_else(|| DEFAULT_STREAM.to_string());
        let (group, stream) = (Template::parse(&group)?, Template::parse(&stream)?);
        let sample = Facts::sample();
        let names = (
            group.render(&sample).map_err(HostConfigError::Usage)?,
            stream.render(&sample).map_err(HostConfigError::Usage)?,
        );
        let (ship, transforms) =
            events_of(&args.events, names, DEFAULT_FLUSH_INTERVAL).map_err(|e| {
                HostConfigError::Usage(format!("{e} (from the templates with sample values)"))
            })?;
        if ship.split_streams {
            super::validate_stream_name(&format!("{}/stdout", ship.stream))?;
        }
        let max_requests = args
            .max_requests
            .or(file.max_requests)
            .unwrap_or(DEFAULT_MAX_REQUESTS);
        if !(1..=1024).contains(&max_requests) {
            return Err(HostConfigError::Usage(format!(
                "--max-requests {max_requests}: give 1 to 1024 (PutLogEvents in flight for the whole host)"
            )));
        }
        let aws_args = file.aws.under(&args.aws);
        Ok(HostConfig {
            selection,
            group,
            stream,
            ship: ShipConfig {
                max_in_flight: PER_CONTAINER_IN_FLIGHT,
                credentials_timeout: args.credentials_timeout,
                ..ship
            },
            transforms,
            max_requests,
            read_files: read_files(args.read_path, file.read_path.as_deref())?,
            drain_timeout: args
                .drain_timeout
                .or(file.drain_timeout)
                .unwrap_or(DEFAULT_DRAIN_TIMEOUT),
            state_dir: state_dir(args, file.state_dir),
            metrics_addr: args.metrics_addr.or(file.metrics_addr),
            aws: aws_options(aws_args)?,
            file: args.config.clone(),
        })
    }

    /// The selection again from the file and the flags (SIGHUP).
    pub(crate) fn reload(&self, args: &ShipArgs) -> Result<Selection, HostConfigError> {
        let file = read(self.file.as_deref())?;
        Selection::merge(args, &file)
    }
}

/// The read path: the flag, else the file's `read_path`, else files.
fn read_files(
    flag: Option<crate::cli::ShipReadPath>,
    file: Option<&str>,
) -> Result<bool, HostConfigError> {
    use crate::cli::ShipReadPath;
    match (flag, file) {
        (Some(p), _) => Ok(p == ShipReadPath::Files),
        (None, None | Some("files")) => Ok(true),
        (None, Some("logs")) => Ok(false),
        (None, Some(other)) => Err(HostConfigError::Usage(format!(
            "read_path = {other:?} in the configuration file: give \"files\" or \"logs\""
        ))),
    }
}

/// Only the state directory (for `--status`): the rest need not be valid.
pub(crate) fn status_dir(args: &ShipArgs) -> Result<PathBuf, HostConfigError> {
    let file = read(args.config.as_deref())?;
    Ok(state_dir(args, file.state_dir))
}

fn state_dir(args: &ShipArgs, file: Option<PathBuf>) -> PathBuf {
    args.state_dir
        .clone()
        .or(file)
        .unwrap_or_else(|| crate::util::state_home().join("ship"))
}

fn read(path: Option<&Path>) -> Result<FileConfig, ConfigFileError> {
    match path {
        Some(p) => super::file::parse(p),
        None => Ok(FileConfig::default()),
    }
}

/// `KEY` or `KEY=VALUE`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct LabelRule {
    key: String,
    value: Option<String>,
}

impl LabelRule {
    fn parse(s: &str, flag: &str) -> Result<Self, HostConfigError> {
        let (key, value) = match s.split_once('=') {
            Some((k, v)) => (k, Some(v.to_string())),
            None => (s, None),
        };
        if key.is_empty() {
            return Err(HostConfigError::Usage(format!(
                "{flag} '{s}': give KEY or KEY=VALUE, e.g. {flag} app=web"
            )));
        }
        Ok(LabelRule {
            key: key.to_string(),
            value,
        })
    }

    fn holds(&self, labels: &HashMap<String, String>) -> bool {
        match (labels.get(&self.key), &self.value) {
            (Some(_), None) => true,
            (Some(v), Some(want)) => v == want,
            (None, _) => false,
        }
    }
}

/// Which containers are shipped. Empty lists select everything; containers that `dockwatch
/// run` (and the agent, on-upload) started are never selected (they are shipped by their
/// own job), nor those labelled `dockwatch.ship=false`.
#[derive(Debug, Clone, Default)]
pub(crate) struct Selection {
    labels: Vec<LabelRule>,
    exclude_labels: Vec<LabelRule>,
    names: Vec<Regex>,
    exclude_names: Vec<Regex>,
    images: Vec<String>,
}

/// What the selection looks at.
pub(crate) struct Candidate<'a> {
    /// Without the engine's leading `/`.
    pub(crate) name: &'a str,
    /// As the container was created from (`Config.Image`).
    pub(crate) image: &'a str,
    pub(crate) labels: &'a HashMap<String, String>,
}

impl Selection {
    fn merge(args: &ShipArgs, file: &FileConfig) -> Result<Self, HostConfigError> {
        let pick = |flag: &Vec<String>, file: &Option<Vec<String>>| {
            if flag.is_empty() {
                file.clone().unwrap_or_default()
            } else {
                flag.clone()
            }
        };
        let labels = |v: Vec<String>, flag: &str| {
            v.iter()
                .map(|s| LabelRule::parse(s, flag))
                .collect::<Result<Vec<_>, _>>()
        };
        let regexes = |v: Vec<String>, flag: &str| {
            v.iter()
                .map(|s| {
                    Regex::new(s).map_err(|e| {
                        let why = e.to_string();
                        let why = why.lines().last().unwrap_or("").trim().to_string();
                        HostConfigError::Usage(format!(
                            "{flag} '{s}' is not a regular expression: {why}"
                        ))
                    })
                })
                .collect::<Result<Vec<_>, _>>()
        };
        Ok(Selection {
            labels: labels(pick(&args.label, &file.label), "--label")?,
            exclude_labels: labels(
                pick(&args.exclude_label, &file.exclude_label),
                "--exclude-label",
            )?,
            names: regexes(pick(&args.name, &file.name), "--name")?,
            exclude_names: regexes(
                pick(&args.exclude_name, &file.exclude_name),
                "--exclude-name",
            )?,
            images: pick(&args.image, &file.image),
        })
    }

    /// Whether the container is shipped.
    pub(crate) fn matches(&self, c: &Candidate) -> bool {
        let own = c
            .labels
            .get(super::MANAGED_LABEL)
            .is_some_and(|v| v == "true")
            || c.labels.get(SHIP_LABEL).is_some_and(|v| v == "false");
        !own && self.labels.iter().all(|r| r.holds(c.labels))
            && !self.exclude_labels.iter().any(|r| r.holds(c.labels))
            && (self.names.is_empty() || self.names.iter().any(|r| r.is_match(c.name)))
            && !self.exclude_names.iter().any(|r| r.is_match(c.name))
            && (self.images.is_empty() || self.images.iter().any(|i| image_matches(i, c.image)))
    }
}

/// `nginx` matches every tag and digest of nginx; `nginx:1.27` only that one.
fn image_matches(rule: &str, image: &str) -> bool {
    if rule == image {
        return true;
    }
    let (repo, _) = super::container::split_image_ref(image);
    let rule_has_tag = super::container::split_image_ref(rule).0 != rule;
    !rule_has_tag && repo == rule
}

/// What a container's destination is made of.
pub(crate) struct Facts<'a> {
    pub(crate) host: &'a str,
    pub(crate) name: &'a str,
    pub(crate) id: &'a str,
    pub(crate) image: &'a str,
    pub(crate) labels: &'a HashMap<String, String>,
    /// Sample values (start-up check): a missing label renders as `label`.
    pub(crate) sample: bool,
}

impl Facts<'static> {
    /// Values that any container could have: a template whose result CloudWatch refuses
    /// with these refuses it for every container.
    fn sample() -> Self {
        static LABELS: std::sync::LazyLock<HashMap<String, String>> =
            std::sync::LazyLock::new(HashMap::new);
        Facts {
            host: "host",
            name: "name",
            id: "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
            image: "image:tag",
            labels: &LABELS,
            sample: true,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    Text(String),
    Host,
    Name,
    Id(Option<usize>),
    Image,
    ImageTag,
    Label(String),
}

/// A group or stream name with placeholders, parsed once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Template {
    source: String,
    parts: Vec<Part>,
}

impl Template {
    pub(crate) fn parse(s: &str) -> Result<Self, HostConfigError> {
        let bad = |why: String| HostConfigError::Usage(format!("template '{s}': {why}"));
        let mut parts = Vec::new();
        let mut text = String::new();
        let mut rest = s;
        while let Some(c) = rest.chars().next() {
            rest = &rest[c.len_utf8()..];
            match c {
                '{' if rest.starts_with('{') => {
                    text.push('{');
                    rest = &rest[1..];
                }
                '}' if rest.starts_with('}') => {
                    text.push('}');
                    rest = &rest[1..];
                }
                '}' => return Err(bad("a '}' without '{' (write }} for a brace)".into())),
                '{' => {
                    let end = rest
                        .find('}')
                        .ok_or_else(|| bad("a '{' without '}' (write {{ for a brace)".into()))?;
                    let name = &rest[..end];
                    rest = &rest[end + 1..];
                    if !text.is_empty() {
                        parts.push(Part::Text(std::mem::take(&mut text)));
                    }
                    parts.push(placeholder(name).map_err(bad)?);
                }
                c => text.push(c),
            }
        }
        if !text.is_empty() {
            parts.push(Part::Text(text));
        }
        Ok(Template {
            source: s.to_string(),
            parts,
        })
    }

    /// The template as written.
    pub(crate) fn source(&self) -> &str {
        &self.source
    }

    /// The name for one container, or why there is none (a label it does not have).
    pub(crate) fn render(&self, f: &Facts) -> Result<String, String> {
        let mut out = String::new();
        for p in &self.parts {
            match p {
                Part::Text(t) => out.push_str(t),
                Part::Host => out.push_str(f.host),
                Part::Name => out.push_str(f.name),
                Part::Id(n) => out.push_str(&f.id[..n.unwrap_or(f.id.len()).min(f.id.len())]),
                Part::Image => out.push_str(super::container::split_image_ref(f.image).0),
                Part::ImageTag => out.push_str(super::container::split_image_ref(f.image).1),
                Part::Label(k) => match f.labels.get(k) {
                    Some(v) => out.push_str(v),
                    None if f.sample => out.push_str("label"),
                    None => return Err(format!("it has no label '{k}' for '{}'", self.source)),
                },
            }
        }
        Ok(out)
    }
}

fn placeholder(name: &str) -> Result<Part, String> {
    Ok(match name {
        "host" => Part::Host,
        "container_name" => Part::Name,
        "container_id" => Part::Id(None),
        "image" => Part::Image,
        "image_tag" => Part::ImageTag,
        _ => {
            if let Some(n) = name.strip_prefix("container_id:") {
                match n.parse::<usize>() {
                    Ok(n) if n > 0 => Part::Id(Some(n)),
                    _ => {
                        return Err(format!(
                            "{{{name}}}: give a length, e.g. {{container_id:12}}"
                        ));
                    }
                }
            } else if let Some(k) = name.strip_prefix("label:").filter(|k| !k.is_empty()) {
                Part::Label(k.to_string())
            } else {
                return Err(format!(
                    "unknown placeholder {{{name}}}; use {{host}}, {{container_name}}, {{container_id}}, {{container_id:N}}, {{image}}, {{image_tag}} or {{label:KEY}}"
                ));
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct T {
        #[command(flatten)]
        a: ShipArgs,
    }

    fn args(extra: &[&str]) -> ShipArgs {
        let mut v = vec!["t"];
        v.extend_from_slice(extra);
        T::parse_from(v).a
    }

    fn labels(kv: &[(&str, &str)]) -> HashMap<String, String> {
        kv.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn picks(sel: &Selection, name: &str, image: &str, kv: &[(&str, &str)]) -> bool {
        sel.matches(&Candidate {
            name,
            image,
            labels: &labels(kv),
        })
    }

    #[test]
    fn selection_by_label_name_and_image() {
        let c = HostConfig::load(&args(&[
            "--group",
            "g",
            "--label",
            "app",
            "--label",
            "tier=web",
            "--exclude-label",
            "debug=true",
            "--name",
            "^web-",
            "--exclude-name",
            "-tmp$",
            "--image",
            "nginx",
            "--image",
            "redis:7",
        ]))
        .unwrap();
        let s = &c.selection;
        let ok = [("app", "x"), ("tier", "web")];
        assert!(picks(s, "web-1", "nginx:1.27", &ok));
        assert!(picks(s, "web-1", "redis:7", &ok));
        assert!(!picks(s, "web-1", "redis:6", &ok), "another tag");
        assert!(!picks(s, "web-1", "nginxx", &ok));
        assert!(!picks(s, "db-1", "nginx", &ok), "name");
        assert!(!picks(s, "web-1-tmp", "nginx", &ok), "excluded name");
        assert!(!picks(s, "web-1", "nginx", &[("app", "x")]), "every label");
        assert!(!picks(s, "web-1", "nginx", &[("app", "x"), ("tier", "db")]));
        let debug = [("app", "x"), ("tier", "web"), ("debug", "true")];
        assert!(!picks(s, "web-1", "nginx", &debug));
    }

    #[test]
    fn everything_but_dockwatch_own_and_opted_out_containers() {
        let s = Selection::default();
        assert!(picks(&s, "a", "busybox", &[]));
        assert!(!picks(&s, "a", "busybox", &[("dockwatch.managed", "true")]));
        assert!(!picks(&s, "a", "busybox", &[("dockwatch.ship", "false")]));
        assert!(picks(&s, "a", "busybox", &[("dockwatch.ship", "true")]));
    }

    fn facts<'a>(labels: &'a HashMap<String, String>) -> Facts<'a> {
        Facts {
            host: "h1",
            name: "web-1",
            id: "abcdef0123456789",
            image: "registry.local/team/app:2.0",
            labels,
            sample: false,
        }
    }

    #[test]
    fn templates_render_each_placeholder() {
        let l = labels(&[("app", "shop")]);
        let t = Template::parse(
            "/{host}/{label:app}/{container_name}/{container_id:4}/{container_id}/{image}/{image_tag}/{{x}}",
        )
        .unwrap();
        assert_eq!(
            t.render(&facts(&l)).unwrap(),
            "/h1/shop/web-1/abcd/abcdef0123456789/registry.local/team/app/2.0/{x}"
        );
        let missing = Template::parse("{label:team}").unwrap();
        let e = missing.render(&facts(&l)).unwrap_err();
        assert!(e.contains("no label 'team'"), "{e}");
    }

    #[test]
    fn bad_templates_are_usage_errors_at_start() {
        for (t, want) in [
            ("{nope}", "unknown placeholder {nope}"),
            ("{container_id:x}", "give a length"),
            ("a{b", "without '}'"),
            ("a}b", "without '{'"),
            ("{label:}", "unknown placeholder"),
        ] {
            let e = Template::parse(t).unwrap_err().to_string();
            assert!(e.contains(want), "{t}: {e}");
        }
        let e = HostConfig::load(&args(&["--group", "g", "--stream", "a:{container_name}"]))
            .unwrap_err()
            .to_string();
        assert!(e.contains("':' or '*'"), "{e}");
        let e = HostConfig::load(&args(&[])).unwrap_err().to_string();
        assert!(e.contains("no log group"), "{e}");
        let e = HostConfig::load(&args(&["--group", "g", "--name", "("]))
            .unwrap_err()
            .to_string();
        assert!(e.contains("--name '(' is not a regular expression"), "{e}");
    }

    #[test]
    fn the_file_gives_the_selection_and_flags_replace_it() {
        let dir = std::env::temp_dir().join(format!("dockwatch-host-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("ship.toml");
        std::fs::write(
            &p,
            "label = [\"app=web\"]\ngroup = \"/d/{host}\"\nmax_requests = 8\ndrain_timeout = \"5s\"\n",
        )
        .unwrap();
        let ps = p.to_str().unwrap();
        let c = HostConfig::load(&args(&["--config", ps])).unwrap();
        assert_eq!(c.max_requests, 8);
        assert_eq!(c.drain_timeout, Duration::from_secs(5));
        assert!(picks(&c.selection, "n", "i", &[("app", "web")]));
        assert!(!picks(&c.selection, "n", "i", &[("app", "db")]));
        let flags = args(&["--config", ps, "--label", "app=db"]);
        let c = HostConfig::load(&flags).unwrap();
        assert!(picks(&c.selection, "n", "i", &[("app", "db")]));
        std::fs::write(
            &p,
            "label = [\"app=db\"]\ngroup = \"/d\"\nmax_requests = 8\n",
        )
        .unwrap();
        let s = c.reload(&args(&["--config", ps])).unwrap();
        assert!(picks(&s, "n", "i", &[("app", "db")]));
        std::fs::write(&p, "labell = []\n").unwrap();
        let e = c.reload(&args(&["--config", ps])).unwrap_err().to_string();
        assert!(e.contains(":1:1: key 'labell'"), "{e}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
