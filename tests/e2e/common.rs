//! Test harness: the real binary, the real Docker engine, a real moto server.
//!
//! `scripts/test.sh` starts moto and exports `MOTO_URL`; without it, the harness starts a
//! moto server of its own from `.dev/venv` (made by the scripts) for this test process.
//! Containers are labelled `dockwatch.test=<unique id>` so each test checks and cleans up only
//! its own.

#![allow(dead_code)]

use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use aws_sdk_cloudwatchlogs::Client;
use aws_sdk_cloudwatchlogs::config::{BehaviorVersion, Credentials, Region};

pub const IMAGE: &str = "dockwatch-test:latest";
pub const NOBASH_IMAGE: &str = "dockwatch-test-nobash:latest";
pub const REGION: &str = "eu-west-1";

pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

struct Moto {
    url: String,
    _child: Option<Child>,
}

static MOTO: OnceLock<Moto> = OnceLock::new();

/// The moto endpoint for this test process.
pub fn moto_url() -> String {
    MOTO.get_or_init(|| {
        if let Ok(url) = std::env::var("MOTO_URL") {
            return Moto { url, _child: None };
        }
        let bin = root().join(".dev/venv/bin/python");
        assert!(
            bin.exists(),
            "no MOTO_URL and no {}: run scripts/test.sh once",
            bin.display()
        );
        let port = free_port();
        let mut cmd = Command::new(bin);
        cmd.arg(root().join("scripts/moto_server.py"))
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        // A static is never dropped: the server ends with this test process instead (a
        // `cargo nextest run` without MOTO_URL left one moto per test process behind).
        // SAFETY: prctl is async-signal-safe; nothing else runs between fork and exec.
        unsafe {
            use std::os::unix::process::CommandExt;
            cmd.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM);
                Ok(())
            });
        }
        let child = cmd.spawn().expect("start moto_server");
        let url = format!("http://127.0.0.1:{port}");
        wait_for_port(port, Duration::from_secs(30));
        Moto {
            url,
            _child: Some(child),
        }
    })
    .url
    .clone()
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

pub fn wait_for_port(port: u16, limit: Duration) {
    let start = Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(start.elapsed() < limit, "nothing listens on port {port}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A name unique to this test run, usable as group, stream and label value.
pub fn unique(prefix: &str) -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!("{prefix}-{}-{nanos}", std::process::id())
}

/// `-q` keeping the summary: no echo of the container's output (large outputs would cost
/// the test the echo's time), and the summary line the test reads (`-q` alone prints nothing
/// when everything was delivered; `--verbose` keeps it, RUST_LOG keeps the diagnostics at
/// their default level).
pub trait QuietWithSummary {
    fn quiet_with_summary(&mut self) -> &mut Self;
}

impl QuietWithSummary for Command {
    fn quiet_with_summary(&mut self) -> &mut Self {
        self.args(["--quiet", "--verbose"])
            .env("RUST_LOG", "dockwatch=warn,error")
    }
}

/// The dockwatch binary, with a clean environment for AWS settings.
pub fn dockwatch() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_dockwatch"));
    for var in [
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
        "AWS_SESSION_TOKEN",
        "AWS_REGION",
        "AWS_DEFAULT_REGION",
        "AWS_PROFILE",
        "AWS_ENDPOINT_URL",
        "AWS_ENDPOINT_URL_CLOUDWATCH_LOGS",
        "RUST_LOG",
    ] {
        c.env_remove(var);
    }
    // No instance metadata service here: do not wait for it.
    c.env("AWS_EC2_METADATA_DISABLED", "true");
    // Default state and spool directories are relative: keep them out of the checkout.
    let cwd = std::env::temp_dir()
        .join("dockwatch-e2e")
        .join(format!("cwd-{}", std::process::id()));
    std::fs::create_dir_all(&cwd).expect("scratch directory");
    // Default state, spool and records (XDG_STATE_HOME/dockwatch) in the scratch directory
    // too, not in /var/lib/dockwatch of the machine running the tests.
    c.env("XDG_STATE_HOME", cwd.join("state-home"));
    c.current_dir(cwd);
    c
}

/// A main-job invocation with the contract flags, pointed at `endpoint`.
pub struct Job {
    pub group: String,
    pub stream: String,
    pub label: String,
    pub cmd: Command,
}

impl Job {
    pub fn new(endpoint: &str, bash: &str) -> Self {
        Self::with_image(endpoint, IMAGE, bash)
    }

    pub fn with_image(endpoint: &str, image: &str, bash: &str) -> Self {
        Self::named(endpoint, image, bash, &unique("grp"), &unique("str"))
    }

    pub fn named(endpoint: &str, image: &str, bash: &str, group: &str, stream: &str) -> Self {
        let (group, stream) = (group.to_string(), stream.to_string());
        let label = unique("t");
        let mut cmd = dockwatch();
        cmd.args([
            "--docker-image",
            image,
            "--bash-command",
            bash,
            "--aws-cloudwatch-group",
            &group,
            "--aws-cloudwatch-stream",
            &stream,
            "--aws-access-key-id",
            "AKIDTESTKEY",
            "--aws-secret-access-key",
            "test-secret-do-not-print",
            "--aws-region",
            REGION,
            "--aws-endpoint-url",
            endpoint,
            "--label",
            &format!("dockwatch.test={label}"),
        ]);
        Self {
            group,
            stream,
            label,
            cmd,
        }
    }

    pub fn arg(&mut self, a: &str) -> &mut Self {
        self.cmd.arg(a);
        self
    }

    pub fn args<const N: usize>(&mut self, a: [&str; N]) -> &mut Self {
        self.cmd.args(a);
        self
    }

    /// See [`QuietWithSummary`].
    pub fn quiet_with_summary(&mut self) -> &mut Self {
        self.cmd.quiet_with_summary();
        self
    }

    /// Starts it in the background: stdout discarded, stderr kept for `wait_with_output`.
    pub fn spawn(&mut self) -> std::process::Child {
        self.cmd
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start dockwatch")
    }

    pub fn output(&mut self) -> Output {
        let out = self.cmd.output().expect("run dockwatch");
        assert!(
            !String::from_utf8_lossy(&out.stderr).contains("test-secret-do-not-print"),
            "the secret was printed"
        );
        assert!(
            !String::from_utf8_lossy(&out.stderr).contains("panicked"),
            "dockwatch panicked"
        );
        out
    }
}

/// Containers carrying this test's label (running or not).
pub fn containers_with_label(label: &str) -> Vec<String> {
    let out = Command::new("docker")
        .args([
            "ps",
            "-aq",
            "--filter",
            &format!("label=dockwatch.test={label}"),
        ])
        .output()
        .expect("docker ps");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_string)
        .collect()
}

/// Removes this test's containers (after a failure).
pub fn cleanup(label: &str) {
    for id in containers_with_label(label) {
        let _ = Command::new("docker").args(["rm", "-f", &id]).output();
    }
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

pub fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

pub fn client(endpoint: &str) -> Client {
    let conf = aws_sdk_cloudwatchlogs::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new(REGION))
        .credentials_provider(Credentials::new("AKIDTESTKEY", "x", None, None, "test"))
        .endpoint_url(endpoint)
        .build();
    Client::from_conf(conf)
}

/// The log group named exactly `group`, if it exists.
pub fn log_group(endpoint: &str, group: &str) -> Option<aws_sdk_cloudwatchlogs::types::LogGroup> {
    rt().block_on(async {
        client(endpoint)
            .describe_log_groups()
            .log_group_name_prefix(group)
            .send()
            .await
            .unwrap()
            .log_groups()
            .iter()
            .find(|g| g.log_group_name() == Some(group))
            .cloned()
    })
}

/// Every event of a stream, oldest first: (timestamp, message).
pub fn read_events(endpoint: &str, group: &str, stream: &str) -> Vec<(i64, String)> {
    rt().block_on(async {
        let c = client(endpoint);
        let mut out = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let r = c
                .get_log_events()
                .log_group_name(group)
                .log_stream_name(stream)
                .start_from_head(true)
                .set_next_token(token.clone())
                .send()
                .await
                .expect("GetLogEvents");
            let events = r.events();
            for e in events {
                out.push((
                    e.timestamp().unwrap_or(0),
                    e.message().unwrap_or("").to_string(),
                ));
            }
            let next = r.next_forward_token().map(str::to_string);
            if events.is_empty() || next == token {
                break;
            }
            token = next;
        }
        out
    })
}

pub fn messages(endpoint: &str, group: &str, stream: &str) -> Vec<String> {
    read_events(endpoint, group, stream)
        .into_iter()
        .map(|(_, m)| m)
        .collect()
}

/// The messages of a stream, none when the group or stream does not exist (yet).
pub fn messages_if_any(endpoint: &str, group: &str, stream: &str) -> Vec<String> {
    let exists = rt().block_on(async {
        client(endpoint)
            .describe_log_streams()
            .log_group_name(group)
            .log_stream_name_prefix(stream)
            .send()
            .await
            .is_ok_and(|r| {
                r.log_streams()
                    .iter()
                    .any(|s| s.log_stream_name() == Some(stream))
            })
    });
    if exists {
        messages(endpoint, group, stream)
    } else {
        Vec::new()
    }
}

/// Creates a group (and optionally a stream) before the run.
pub fn precreate(endpoint: &str, group: &str, stream: Option<&str>) {
    rt().block_on(async {
        let c = client(endpoint);
        c.create_log_group()
            .log_group_name(group)
            .send()
            .await
            .expect("create group");
        if let Some(s) = stream {
            c.create_log_stream()
                .log_group_name(group)
                .log_stream_name(s)
                .send()
                .await
                .expect("create stream");
        }
    })
}

pub fn put_one(endpoint: &str, group: &str, stream: &str, ts: i64, msg: &str) {
    rt().block_on(async {
        let e = aws_sdk_cloudwatchlogs::types::InputLogEvent::builder()
            .timestamp(ts)
            .message(msg)
            .build()
            .unwrap();
        client(endpoint)
            .put_log_events()
            .log_group_name(group)
            .log_stream_name(stream)
            .log_events(e)
            .send()
            .await
            .expect("put");
    })
}

pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

/// `dockwatch resume` for a test's state directory (and spool directory), with credentials.
pub fn resume(state: &std::path::Path, spool: Option<&std::path::Path>) -> Output {
    let mut c = dockwatch();
    c.args(["resume", "--state-dir", state.to_str().unwrap()]);
    c.quiet_with_summary();
    if let Some(sp) = spool {
        c.args(["--spool-dir", sp.to_str().unwrap()]);
    }
    c.args([
        "--aws-access-key-id",
        "AKIDTESTKEY",
        "--aws-secret-access-key",
        "x",
    ]);
    c.output().expect("run dockwatch resume")
}

/// dockwatch with a HOME and AWS config files that hold nothing.
pub fn dockwatch_without_aws_config() -> Command {
    let home = std::env::temp_dir().join(unique("home"));
    std::fs::create_dir_all(&home).unwrap();
    let mut c = dockwatch();
    c.env("HOME", &home)
        .env("AWS_CONFIG_FILE", home.join("none"))
        .env("AWS_SHARED_CREDENTIALS_FILE", home.join("none"));
    c
}

/// Puts events (timestamps non-decreasing) into an existing stream, in requests of at most
/// 1,000 events.
pub fn put_many(endpoint: &str, group: &str, stream: &str, events: &[(i64, String)]) {
    rt().block_on(async {
        let c = client(endpoint);
        for chunk in events.chunks(1000) {
            let batch: Vec<_> = chunk
                .iter()
                .map(|(ts, m)| {
                    aws_sdk_cloudwatchlogs::types::InputLogEvent::builder()
                        .timestamp(*ts)
                        .message(m)
                        .build()
                        .unwrap()
                })
                .collect();
            c.put_log_events()
                .log_group_name(group)
                .log_stream_name(stream)
                .set_log_events(Some(batch))
                .send()
                .await
                .expect("put");
        }
    })
}

/// dockwatch with test credentials and region in its environment, for `tail` and `download`.
pub fn dockwatch_with_env(endpoint: &str) -> Command {
    let mut c = dockwatch();
    c.env("AWS_ACCESS_KEY_ID", "AKIDTESTKEY")
        .env("AWS_SECRET_ACCESS_KEY", "x")
        .env("AWS_REGION", REGION)
        .env("AWS_ENDPOINT_URL", endpoint);
    for v in [
        "DOCKWATCH_CONFIG",
        "DOCKWATCH_OUTPUT_DIR",
        "DOCKWATCH_GROUP_PREFIXES",
        "DOCKWATCH_STREAMS",
        "DOCKWATCH_STREAM_PREFIXES",
        "DOCKWATCH_POLL_INTERVAL",
        "DOCKWATCH_DISCOVERY_INTERVAL",
        "DOCKWATCH_LINE_FORMAT",
        "DOCKWATCH_METRICS_ADDR",
        "NO_COLOR",
    ] {
        c.env_remove(v);
    }
    c
}

/// Sends a signal to a child process.
pub fn signal(child: &Child, sig: &str) {
    let ok = Command::new("kill")
        .args([&format!("-{sig}"), &child.id().to_string()])
        .status()
        .unwrap()
        .success();
    assert!(ok, "kill -{sig}");
}

/// Waits for `cond`, polling, up to `limit`; returns whether it became true.
pub fn wait_until(limit: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    loop {
        if cond() {
            return true;
        }
        if start.elapsed() > limit {
            return false;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A plain HTTP/1.1 GET on 127.0.0.1 (the daemons' metrics endpoints): the whole answer.
pub fn http_get(port: u16, path: &str) -> String {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    out
}
