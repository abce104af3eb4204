//! The container to run: [`ContainerSpec`], and the `docker run` options dockwatch takes with
//! docker's own spelling and meaning (`-v`, `-w`, `-u`, `-e NAME`, `--env-file`, `-m`,
//! `--cpus`, `--network`, `-p`, `-i`, `--init`), parsed once here.
//!
//! Where docker's meaning is kept exactly: `-e NAME` and a bare `NAME` line of an env file
//! take the value from dockwatch's own environment and pass nothing when it is unset; env
//! files are read before `-e` (a later entry wins); `--memory` takes docker's units (`b`, `k`,
//! `m`, `g`, `t`, powers of 1024); `-p` takes `[IP:][HOST_PORT:]CONTAINER_PORT[/PROTO]` (an
//! empty or missing host port: the engine picks one). The engine's init is on by default, the
//! opposite of docker: under `bash -c` as PID 1 a SIGTERM is ignored and every stop waits for
//! `--stop-timeout` (measured: Ctrl+C on a sleep loop 10.2 s without, about 1 s with).

use std::path::PathBuf;

use super::{ConfigError, PullPolicy, check_env, managed_label};

/// What container to run and how.
#[derive(Debug, Clone)]
pub(crate) struct ContainerSpec {
    /// Image reference as given.
    pub(crate) image: String,
    /// The shell that runs `command` as `SHELL -c COMMAND`.
    pub(crate) shell: String,
    /// The user's command line.
    pub(crate) command: String,
    /// Container name, if the user chose one.
    pub(crate) name: Option<String>,
    /// `KEY=VALUE` environment entries.
    pub(crate) env: Vec<String>,
    /// Labels, the user's plus dockwatch's own.
    pub(crate) labels: Vec<(String, String)>,
    /// Allocate a TTY.
    pub(crate) tty: bool,
    /// When to pull.
    pub(crate) pull: PullPolicy,
    /// Bind mounts, `HOST:CONTAINER[:ro]`.
    pub(crate) binds: Vec<String>,
    /// The rest of `docker run`'s options.
    pub(crate) run: RunOptions,
}

/// `docker run` options besides the image, command, name, environment, labels and mounts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct RunOptions {
    /// Run the shell under the engine's init (tini), which passes signals on.
    pub(crate) init: bool,
    /// Working directory in the container.
    pub(crate) workdir: Option<String>,
    /// `USER[:GROUP]` the command runs as.
    pub(crate) user: Option<String>,
    /// Memory limit in bytes.
    pub(crate) memory: Option<i64>,
    /// CPU limit in billionths of a core.
    pub(crate) nano_cpus: Option<i64>,
    /// Network mode or network name.
    pub(crate) network: Option<String>,
    /// Published ports.
    pub(crate) ports: Vec<Publish>,
    /// Forward dockwatch's standard input to the command.
    pub(crate) stdin: bool,
}

impl Default for RunOptions {
    fn default() -> Self {
        RunOptions {
            init: true,
            workdir: None,
            user: None,
            memory: None,
            nano_cpus: None,
            network: None,
            ports: Vec::new(),
            stdin: false,
        }
    }
}

/// One `-p`: a container port published on the host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Publish {
    /// Host address to bind, all when `None`.
    pub(crate) host_ip: Option<String>,
    /// Host port, chosen by the engine when `None`.
    pub(crate) host_port: Option<u16>,
    pub(crate) container_port: u16,
    /// `tcp`, `udp` or `sctp`.
    pub(crate) proto: String,
}

impl Publish {
    /// The engine's key for the container side, e.g. `80/tcp`.
    pub(crate) fn key(&self) -> String {
        format!("{}/{}", self.container_port, self.proto)
    }
}

impl ContainerSpec {
    /// `SHELL -c COMMAND` in a container from `image`, labelled as dockwatch's; no name, no
    /// environment, no mounts, no TTY, pulled when missing, under the engine's init.
    pub(crate) fn new(image: String, shell: String, command: String) -> Result<Self, ConfigError> {
        if image.is_empty() {
            return Err(ConfigError::Empty("the image"));
        }
        if command.is_empty() {
            return Err(ConfigError::Empty("the command"));
        }
        if shell.trim().is_empty() {
            return Err(ConfigError::Empty("the shell"));
        }
        Ok(ContainerSpec {
            image,
            shell,
            command,
            name: None,
            env: Vec::new(),
            labels: vec![managed_label()],
            tty: false,
            pull: PullPolicy::Missing,
            binds: Vec::new(),
            run: RunOptions::default(),
        })
    }

    /// Adds `KEY=VALUE` environment entries, checked.
    pub(crate) fn with_env(mut self, env: Vec<String>) -> Result<Self, ConfigError> {
        check_env(&env)?;
        self.env.extend(env);
        Ok(self)
    }

    /// Adds a label.
    pub(crate) fn with_label(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.labels.push((key.into(), value.into()));
        self
    }
}

/// The container's environment from `--env-file`s (first) and `-e` entries, as docker builds
/// it: `KEY=VALUE` as given, a bare `KEY` from this process's environment (nothing when it is
/// unset), blank lines and `#` comments of a file skipped.
pub(crate) fn environment(env: &[String], files: &[PathBuf]) -> Result<Vec<String>, ConfigError> {
    let mut out = Vec::new();
    for f in files {
        let text = std::fs::read_to_string(f).map_err(|e| ConfigError::EnvFile {
            path: f.display().to_string(),
            reason: e.to_string(),
        })?;
        for (n, line) in text.lines().enumerate() {
            let line = line.trim_start();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let entry = entry(line).map_err(|_| ConfigError::EnvFileLine {
                path: f.display().to_string(),
                line: n + 1,
            })?;
            out.extend(entry);
        }
    }
    for e in env {
        out.extend(entry(e).map_err(|_| ConfigError::KeyValue {
            flag: "--env",
            value: e.clone(),
        })?);
    }
    Ok(out)
}

/// One entry: `KEY=VALUE`, or `KEY` taken from this process's environment.
fn entry(e: &str) -> Result<Option<String>, ()> {
    match e.split_once('=') {
        Some(("", _)) => Err(()),
        Some(_) => Ok(Some(e.to_string())),
        None if e.chars().any(char::is_whitespace) => Err(()),
        None => Ok(std::env::var_os(e).map(|v| format!("{e}={}", v.to_string_lossy()))),
    }
}

/// The raw `docker run` options, as the command line gives them.
#[derive(Debug, Default)]
pub(crate) struct RawRunOptions<'a> {
    pub(crate) no_init: bool,
    pub(crate) workdir: Option<&'a str>,
    pub(crate) user: Option<&'a str>,
    pub(crate) memory: Option<&'a str>,
    pub(crate) cpus: Option<&'a str>,
    pub(crate) network: Option<&'a str>,
    pub(crate) publish: &'a [String],
    pub(crate) interactive: bool,
}

impl RawRunOptions<'_> {
    /// Checks and converts every option.
    pub(crate) fn parse(&self) -> Result<RunOptions, ConfigError> {
        let bad =
            |flag: &'static str, value: &str, expected: &'static str| ConfigError::RunOption {
                flag,
                value: value.to_string(),
                expected,
            };
        if let Some(w) = self.workdir
            && !w.starts_with('/')
        {
            return Err(bad("--workdir", w, "an absolute path, e.g. -w /app"));
        }
        if let Some(u) = self.user
            && (u.is_empty() || u.starts_with(':') || u.ends_with(':'))
        {
            return Err(bad("--user", u, "USER or USER:GROUP, e.g. -u 1000:1000"));
        }
        if let Some(n) = self.network
            && n.is_empty()
        {
            return Err(bad("--network", n, "a network name, e.g. --network host"));
        }
        Ok(RunOptions {
            init: !self.no_init,
            workdir: self.workdir.map(str::to_string),
            user: self.user.map(str::to_string),
            memory: self
                .memory
                .map(|m| {
                    memory_bytes(m).ok_or_else(|| bad("--memory", m, "a size like 512m or 2g"))
                })
                .transpose()?,
            nano_cpus: self
                .cpus
                .map(|c| nano_cpus(c).ok_or_else(|| bad("--cpus", c, "a number of cores like 1.5")))
                .transpose()?,
            network: self.network.map(str::to_string),
            ports: self
                .publish
                .iter()
                .map(|p| {
                    publish(p).ok_or_else(|| {
                        bad(
                            "--publish",
                            p,
                            "[IP:][HOST_PORT:]CONTAINER_PORT[/tcp|udp|sctp], e.g. -p 8080:80",
                        )
                    })
                })
                .collect::<Result<_, _>>()?,
            stdin: self.interactive,
        })
    }
}

/// docker's memory sizes: a number (fractions allowed) and an optional unit `b`, `k`, `m`,
/// `g`, `t` (powers of 1024, any case, optionally followed by `b`: `512m`, `1.5GB`).
pub(crate) fn memory_bytes(s: &str) -> Option<i64> {
    let t = s.trim().to_ascii_lowercase();
    let t = t.strip_suffix('b').unwrap_or(&t);
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let shift = match unit {
        "" => 0,
        "k" => 10,
        "m" => 20,
        "g" => 30,
        "t" => 40,
        _ => return None,
    };
    let n: f64 = num.parse().ok()?;
    let bytes = n * (1u64 << shift) as f64;
    (bytes >= 1.0 && bytes < i64::MAX as f64).then_some(bytes as i64)
}

/// `--cpus`: a positive number of cores, in billionths.
fn nano_cpus(s: &str) -> Option<i64> {
    let c: f64 = s.trim().parse().ok()?;
    let nano = (c * 1e9).round();
    (c.is_finite() && nano >= 1.0 && nano < i64::MAX as f64).then_some(nano as i64)
}

/// One `-p` value.
fn publish(s: &str) -> Option<Publish> {
    let (ports, proto) = match s.rsplit_once('/') {
        Some((p, proto @ ("tcp" | "udp" | "sctp"))) => (p, proto),
        Some(_) => return None,
        None => (s, "tcp"),
    };
    let port = |p: &str| p.parse::<u16>().ok().filter(|&n| n > 0);
    let host_port = |p: &str| {
        if p.is_empty() {
            Some(None)
        } else {
            port(p).map(Some)
        }
    };
    let parts: Vec<&str> = ports.split(':').collect();
    let (host_ip, host, container) = match parts.as_slice() {
        [c] => (None, None, port(c)?),
        [h, c] => (None, host_port(h)?, port(c)?),
        [ip, h, c] if ip.parse::<std::net::IpAddr>().is_ok() => {
            (Some(ip.to_string()), host_port(h)?, port(c)?)
        }
        _ => return None,
    };
    Some(Publish {
        host_ip,
        host_port: host,
        container_port: container,
        proto: proto.to_string(),
    })
}

/// Splits `name[:tag]` / `name@digest` (the engine's create-image call, `ship`'s image rules and templates).
pub(crate) fn split_image_ref(image: &str) -> (&str, &str) {
    if image.contains('@') {
        return (image, "");
    }
    let last = image.rsplit('/').next().unwrap_or(image);
    match last.rfind(':') {
        Some(i) => {
            let at = image.len() - last.len() + i;
            (&image[..at], &image[at + 1..])
        }
        None => (image, "latest"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_in_dockers_units() {
        assert_eq!(memory_bytes("512m"), Some(512 << 20));
        assert_eq!(memory_bytes("2g"), Some(2 << 30));
        assert_eq!(memory_bytes("1.5GB"), Some(3 << 29));
        assert_eq!(memory_bytes("1024"), Some(1024));
        assert_eq!(memory_bytes("64k"), Some(64 << 10));
        assert_eq!(memory_bytes("lots"), None);
        assert_eq!(memory_bytes("5x"), None);
        assert_eq!(memory_bytes("0"), None);
        assert_eq!(memory_bytes(""), None);
    }

    #[test]
    fn cpus_in_billionths() {
        assert_eq!(nano_cpus("1.5"), Some(1_500_000_000));
        assert_eq!(nano_cpus("0.01"), Some(10_000_000));
        assert_eq!(nano_cpus("0"), None);
        assert_eq!(nano_cpus("-1"), None);
        assert_eq!(nano_cpus("inf"), None);
        assert_eq!(nano_cpus("two"), None);
    }

    #[test]
    fn publish_forms() {
        let p = publish("8080:80").unwrap();
        assert_eq!(
            (p.key(), p.host_ip, p.host_port),
            ("80/tcp".into(), None, Some(8080))
        );
        let p = publish("127.0.0.1:5353:53/udp").unwrap();
        assert_eq!(p.host_ip.as_deref(), Some("127.0.0.1"));
        assert_eq!((p.host_port, p.key()), (Some(5353), "53/udp".into()));
        let p = publish("80").unwrap();
        assert_eq!((p.host_port, p.key()), (None, "80/tcp".into()));
        let p = publish("127.0.0.1::80").unwrap();
        assert_eq!(p.host_port, None);
        for bad in [
            "",
            "x:80",
            "80/http",
            "1:2:3",
            "0:80",
            "70000:80",
            "8000-8010:80",
        ] {
            assert!(publish(bad).is_none(), "{bad}");
        }
    }

    #[test]
    fn environment_as_docker_builds_it() {
        let dir = std::env::temp_dir().join(format!("dockwatch-env-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let f = dir.join("app.env");
        std::fs::write(
            &f,
            "# comment\n\nA=1\n  B=two words\nHOME\nDOCKWATCH_SURELY_UNSET\n",
        )
        .unwrap();
        let home = std::env::var("HOME").unwrap();
        let got = environment(&["A=3".into(), "HOME".into()], std::slice::from_ref(&f)).unwrap();
        assert_eq!(
            got,
            [
                "A=1".to_string(),
                "B=two words".into(),
                format!("HOME={home}"),
                "A=3".into(),
                format!("HOME={home}"),
            ]
        );
        std::fs::write(&f, "A=1\n=x\n").unwrap();
        assert_eq!(
            environment(&[], std::slice::from_ref(&f)),
            Err(ConfigError::EnvFileLine {
                path: f.display().to_string(),
                line: 2
            })
        );
        assert!(matches!(
            environment(&[], &[dir.join("missing")]),
            Err(ConfigError::EnvFile { .. })
        ));
        assert!(environment(&["=x".into()], &[]).is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn run_options_are_checked() {
        let ok = RawRunOptions {
            workdir: Some("/app"),
            user: Some("1000:1000"),
            memory: Some("256m"),
            cpus: Some("0.5"),
            publish: &["8080:80".to_string()],
            ..Default::default()
        }
        .parse()
        .unwrap();
        assert!(ok.init);
        assert_eq!(ok.memory, Some(256 << 20));
        assert_eq!(ok.nano_cpus, Some(500_000_000));
        for raw in [
            RawRunOptions {
                workdir: Some("app"),
                ..Default::default()
            },
            RawRunOptions {
                user: Some(":1"),
                ..Default::default()
            },
            RawRunOptions {
                memory: Some("big"),
                ..Default::default()
            },
        ] {
            assert!(matches!(raw.parse(), Err(ConfigError::RunOption { .. })));
        }
        let off = RawRunOptions {
            no_init: true,
            ..Default::default()
        };
        assert!(!off.parse().unwrap().init);
    }
}
