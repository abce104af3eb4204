//! W5, `dockwatch ship` (the host-wide shipper): 100 containers each writing 10,000 short
//! lines, started in one burst, beside the same total volume from one container through the
//! same daemon, and beside Docker's awslogs driver configured for the same 100 containers
//! (on the benchmark's private engine). Every run ships to a fresh strict server that checks
//! and counts (discarding the events).
//!
//! Timing: from `docker start` of the created containers to the server's acceptance of the
//! last event. The daemon runs under GNU time for its peak RSS and CPU seconds.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::IMAGE;
use crate::private_engine::PrivateEngine;
use crate::strict_server::StrictServer;

/// One setup's figures.
pub struct HostRun {
    pub delivered: f64,
    /// The engine's own span: the first container's start to the last one's exit.
    pub ran: f64,
    pub accepted: u64,
    pub violations: u64,
    pub rss_mib: f64,
    pub cpu_s: f64,
}

/// Creates `n` containers writing `lines` lines each with the `docker` command given; their
/// ids.
fn create(
    docker: &dyn Fn() -> Command,
    n: usize,
    lines: usize,
    label: &str,
    extra: &[String],
) -> Vec<String> {
    (0..n)
        .map(|_| {
            let out = docker()
                .args(["create", "--network", "none", "--label", label])
                .args(extra)
                .args([IMAGE, "bash", "-c", &format!("seq 1 {lines}")])
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
            String::from_utf8_lossy(&out.stdout).trim().to_string()
        })
        .collect()
}

/// Starts them all in one command; when it began.
fn start_all(docker: &dyn Fn() -> Command, ids: &[String]) -> Instant {
    let t = Instant::now();
    let ok = docker()
        .arg("start")
        .args(ids)
        .stdout(Stdio::null())
        .status()
        .unwrap()
        .success();
    assert!(ok, "docker start");
    t
}

/// The first start to the last exit of `ids`, as the engine recorded them (seconds).
fn span(docker: &dyn Fn() -> Command, ids: &[String]) -> f64 {
    let out = docker()
        .args([
            "inspect",
            "-f",
            "{{.State.StartedAt}} {{.State.FinishedAt}}",
        ])
        .args(ids)
        .output()
        .unwrap();
    let (mut first, mut last) = (None, None);
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let t: Vec<_> = line
            .split_whitespace()
            .filter_map(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
            .collect();
        if let [a, b] = t.as_slice() {
            first = Some(first.map_or(*a, |f: chrono::DateTime<_>| f.min(*a)));
            last = Some(last.map_or(*b, |l: chrono::DateTime<_>| l.max(*b)));
        }
    }
    match (first, last) {
        (Some(a), Some(b)) => (b - a).as_seconds_f64(),
        _ => f64::NAN,
    }
}

fn remove(docker: &dyn Fn() -> Command, ids: &[String]) {
    let _ = docker()
        .args(["rm", "-f"])
        .args(ids)
        .stdout(Stdio::null())
        .status();
}

fn wait_for(server: &StrictServer, total: u64, limit: Duration) {
    let deadline = Instant::now() + limit;
    while server.with_stats(|s| s.accepted_events) < total && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// `n` containers × `lines` shipped by `dockwatch ship` on the main engine.
pub fn with_ship(n: usize, lines: usize) -> HostRun {
    let server = StrictServer::start();
    server.faults(|f| f.discard = true);
    let tmp = std::env::temp_dir().join(format!("dockwatch-bench-host-{}-{n}", std::process::id()));
    std::fs::create_dir_all(&tmp).unwrap();
    let label = format!("dockwatch.bench.host={}-{n}", std::process::id());
    let time_out = tmp.join("time.txt");
    let mut daemon = Command::new("/usr/bin/time")
        .args(["-f", "%M %U %S", "-o", time_out.to_str().unwrap()])
        .arg(env!("CARGO_BIN_EXE_dockwatch"))
        .args(["ship", "--label", &label, "--group", "bench-host"])
        .args(["--stream", "{container_id}"])
        .args([
            "--aws-access-key-id",
            "AKIDBENCH",
            "--aws-secret-access-key",
            "x",
        ])
        .args([
            "--aws-region",
            "eu-west-1",
            "--aws-endpoint-url",
            &server.url,
        ])
        .arg("--state-dir")
        .arg(tmp.join("state"))
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let docker = || {
        let mut c = Command::new("docker");
        c.args(["--log-level", "error"]);
        c
    };
    let ids = create(
        &docker,
        n,
        lines,
        &label,
        &["--label".into(), "dockwatch.test=bench".into()],
    );
    // Let the daemon see them created (it follows them from their start).
    std::thread::sleep(Duration::from_secs(2));
    let t = start_all(&docker, &ids);
    let total = (n * lines) as u64;
    wait_for(&server, total, Duration::from_secs(600));
    let (accepted, violations, last) =
        server.with_stats(|s| (s.accepted_events, s.violations, s.last_accepted));
    // SIGTERM to dockwatch itself (GNU time's child), so that time reports.
    let _ = Command::new("pkill")
        .args(["-TERM", "-P", &daemon.id().to_string()])
        .status();
    let _ = daemon.wait();
    let ran = span(&docker, &ids);
    remove(&docker, &ids);
    let f: Vec<f64> = std::fs::read_to_string(&time_out)
        .unwrap_or_default()
        .split_whitespace()
        .filter_map(|x| x.parse().ok())
        .collect();
    let _ = std::fs::remove_dir_all(&tmp);
    HostRun {
        delivered: last.map_or(f64::NAN, |l| l.duration_since(t).as_secs_f64()),
        ran,
        accepted,
        violations,
        rss_mib: f.first().map_or(f64::NAN, |k| k / 1024.0),
        cpu_s: f.get(1).zip(f.get(2)).map_or(f64::NAN, |(u, s)| u + s),
    }
}

impl PrivateEngine {
    /// The same containers with the awslogs driver, one stream each, on the private engine.
    pub fn host_awslogs(&self, n: usize, lines: usize) -> Result<HostRun, String> {
        let server = StrictServer::on_listener(self.listener()?);
        server.faults(|f| f.discard = true);
        let docker = || self.docker(&[]);
        let opts: Vec<String> = [
            "--log-driver",
            "awslogs",
            "--log-opt",
            "awslogs-region=eu-west-1",
            "--log-opt",
            "awslogs-group=bench-host",
            "--log-opt",
            "awslogs-create-group=true",
            "--log-opt",
        ]
        .into_iter()
        .map(String::from)
        .chain([format!("awslogs-endpoint={}", server.url)])
        .collect();
        let ids = create(&docker, n, lines, "dockwatch.bench.host=awslogs", &opts);
        let t = start_all(&docker, &ids);
        wait_for(&server, (n * lines) as u64, Duration::from_secs(600));
        let (accepted, violations, last) =
            server.with_stats(|s| (s.accepted_events, s.violations, s.last_accepted));
        let ran = span(&docker, &ids);
        remove(&docker, &ids);
        Ok(HostRun {
            delivered: last.map_or(f64::NAN, |l| l.duration_since(t).as_secs_f64()),
            ran,
            accepted,
            violations,
            rss_mib: f64::NAN,
            cpu_s: f64::NAN,
        })
    }
}

/// W5's table.
pub fn report(private: &Result<PrivateEngine, String>) {
    let (n, lines) = (100, 10_000);
    let single = with_ship(1, n * lines);
    let many = with_ship(n, lines);
    let driver = private.as_ref().map(|e| e.host_awslogs(n, lines));
    println!();
    println!(
        "W5 `dockwatch ship`: {n} containers × {lines} lines started in one burst, beside the same volume from one container:"
    );
    println!();
    println!(
        "| setup | containers ran (first start → last exit) | delivered | delivered after the last exit | lines/s | vs 1 container | peak RSS | per container | CPU s | accepted | violations |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|");
    let total = (n * lines) as f64;
    let row = |name: &str, r: &HostRun, per: usize| {
        println!(
            "| {name} | {:.1} s | {:.1} s | {:.1} s | {:.0} | {:.0}% | {:.1} MiB | {:.2} MiB | {:.1} | {} | {} |",
            r.ran,
            r.delivered,
            r.delivered - r.ran,
            total / r.delivered,
            single.delivered / r.delivered * 100.0,
            r.rss_mib,
            r.rss_mib / per as f64,
            r.cpu_s,
            r.accepted,
            r.violations
        )
    };
    row("dockwatch ship, 1 container", &single, 1);
    row(&format!("dockwatch ship, {n} containers"), &many, n);
    match driver {
        Ok(Ok(d)) => println!(
            "| awslogs driver, {n} containers | {:.1} s | {:.1} s | {:.1} s | {:.0} | {:.0}% | — | — | — | {} | {} |",
            d.ran,
            d.delivered,
            d.delivered - d.ran,
            total / d.delivered,
            single.delivered / d.delivered * 100.0,
            d.accepted,
            d.violations
        ),
        Ok(Err(e)) => println!("| awslogs driver | failed: {e} |"),
        Err(e) => println!("| awslogs driver | not measured: {e} |"),
    }
}
