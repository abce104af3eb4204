//! W7, `dockwatch ship` (the host-wide shipper): 100 containers each writing 10,000 short
//! lines, started in one burst, beside the same total volume from one container through the
//! same daemon, and beside Docker's awslogs driver configured for the same 100 containers
//! (on the benchmark's private engine). Every run ships to a fresh strict server that checks
//! and counts (discarding the events).
//!
//! The burst: all containers are started first, each waiting at a gate (a file in a
//! read-only bind mount); opening the gate makes every one of them write at once. (Starting
//! 100 containers one after the other takes the engine 20-30 s on two cores; without the gate
//! that start-up, not the shipping, is what a burst measures.) Timing: from the gate's opening
//! to the server's acceptance of the last event, and to the last container's exit (the
//! engine's own time). The daemon runs under GNU time for its peak RSS and CPU seconds.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::IMAGE;
use crate::private_engine::PrivateEngine;
use crate::strict_server::StrictServer;

/// One setup's figures.
pub struct HostRun {
    pub delivered: f64,
    /// The engine's own time: the gate's opening to the last container's exit.
    pub ran: f64,
    pub accepted: u64,
    pub violations: u64,
    pub rss_mib: f64,
    pub cpu_s: f64,
}

/// Where the containers wait until they all write at once.
struct Gate {
    dir: std::path::PathBuf,
}

impl Gate {
    fn new(name: &str) -> Gate {
        let dir =
            std::env::temp_dir().join(format!("dockwatch-gate-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Gate { dir }
    }

    /// Opens it; when (the wall clock, to compare with the engine's times).
    fn open(&self) -> (Instant, chrono::DateTime<chrono::Utc>) {
        let at = (Instant::now(), chrono::Utc::now());
        std::fs::write(self.dir.join("go"), b"").unwrap();
        at
    }
}

impl Drop for Gate {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Creates `n` containers that wait at `gate`, then write `lines` lines each, with the
/// `docker` command given; their ids.
fn create(
    docker: &dyn Fn() -> Command,
    (n, lines): (usize, usize),
    gate: &Gate,
    label: &str,
    extra: &[String],
) -> Vec<String> {
    let script = format!("until [ -e /gate/go ]; do sleep 0.02; done; seq 1 {lines}");
    let mount = format!("{}:/gate:ro", gate.dir.display());
    (0..n)
        .map(|_| {
            let out = docker()
                .args(["create", "--network", "none", "--label", label])
                .args(["-v", &mount])
                .args(extra)
                .args([IMAGE, "bash", "-c", &script])
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

/// Starts them all in one command.
fn start_all(docker: &dyn Fn() -> Command, ids: &[String]) {
    let ok = docker()
        .arg("start")
        .args(ids)
        .stdout(Stdio::null())
        .status()
        .unwrap()
        .success();
    assert!(ok, "docker start");
}

/// From `from` to the last exit of `ids`, as the engine recorded it (seconds).
fn span(docker: &dyn Fn() -> Command, ids: &[String], from: chrono::DateTime<chrono::Utc>) -> f64 {
    let out = docker()
        .args([
            "inspect",
            "-f",
            "{{.State.StartedAt}} {{.State.FinishedAt}}",
        ])
        .args(ids)
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_whitespace().nth(1))
        .filter_map(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
        .map(|t| (t.with_timezone(&chrono::Utc) - from).as_seconds_f64())
        .fold(f64::NAN, f64::max)
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

/// Each column's median over the rounds.
fn medians(runs: &[HostRun]) -> HostRun {
    let m = |f: fn(&HostRun) -> f64| crate::median(runs.iter().map(f));
    HostRun {
        delivered: m(|r| r.delivered),
        ran: m(|r| r.ran),
        accepted: runs.iter().map(|r| r.accepted).min().unwrap_or(0),
        violations: runs.iter().map(|r| r.violations).sum(),
        rss_mib: m(|r| r.rss_mib),
        cpu_s: m(|r| r.cpu_s),
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
        .args(crate::aws_flags(&server.url))
        .arg("--state-dir")
        .arg(tmp.join("state"))
        // More flags for the daemon, to try settings: DOCKWATCH_BENCH_SHIP_ARGS="--max-requests 8".
        .args(
            std::env::var("DOCKWATCH_BENCH_SHIP_ARGS")
                .unwrap_or_default()
                .split_whitespace(),
        )
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
    let gate = Gate::new(&format!("ship-{n}"));
    let ids = create(
        &docker,
        (n, lines),
        &gate,
        &label,
        &["--label".into(), "dockwatch.test=bench".into()],
    );
    start_all(&docker, &ids);
    // Let the daemon follow every one of them.
    std::thread::sleep(Duration::from_secs(3));
    let (t, wall) = gate.open();
    let total = (n * lines) as u64;
    wait_for(&server, total, Duration::from_secs(600));
    let (accepted, violations, last) =
        server.with_stats(|s| (s.accepted_events, s.violations, s.last_accepted));
    // SIGTERM to dockwatch itself (GNU time's child), so that time reports.
    let _ = Command::new("pkill")
        .args(["-TERM", "-P", &daemon.id().to_string()])
        .status();
    let _ = daemon.wait();
    let ran = span(&docker, &ids, wall);
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
        let gate = Gate::new("awslogs");
        let ids = create(
            &docker,
            (n, lines),
            &gate,
            "dockwatch.bench.host=awslogs",
            &opts,
        );
        start_all(&docker, &ids);
        std::thread::sleep(Duration::from_secs(3));
        let (t, wall) = gate.open();
        wait_for(&server, (n * lines) as u64, Duration::from_secs(600));
        let (accepted, violations, last) =
            server.with_stats(|s| (s.accepted_events, s.violations, s.last_accepted));
        let ran = span(&docker, &ids, wall);
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

/// W7's table.
pub fn report(private: &Result<PrivateEngine, String>, rounds: usize) {
    let (n, lines) = (100, 10_000);
    // Rounds interleaved (one container, 100, the driver), then the median of each column.
    let (mut singles, mut manys, mut drivers) = (Vec::new(), Vec::new(), Vec::new());
    let mut driver_error = None;
    for _ in 0..rounds {
        singles.push(with_ship(1, n * lines));
        manys.push(with_ship(n, lines));
        match private.as_ref().map(|e| e.host_awslogs(n, lines)) {
            Ok(Ok(d)) => drivers.push(d),
            Ok(Err(e)) => driver_error = Some(e),
            Err(e) => driver_error = Some(e.clone()),
        }
    }
    let single = medians(&singles);
    let many = medians(&manys);
    let driver = match driver_error {
        Some(e) if drivers.is_empty() => Err(e),
        _ => Ok(medians(&drivers)),
    };
    println!();
    println!(
        "W7 `dockwatch ship`: {n} containers × {lines} lines written at once (a gate), beside the same volume from one container, medians of {rounds} rounds:"
    );
    println!();
    println!(
        "| setup | containers ran (gate → last exit) | delivered | delivered after the last exit | lines/s | vs 1 container | peak RSS | per container | CPU s | accepted | violations |"
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
        Ok(d) => println!(
            "| awslogs driver, {n} containers | {:.1} s | {:.1} s | {:.1} s | {:.0} | {:.0}% | — | — | — | {} | {} |",
            d.ran,
            d.delivered,
            d.delivered - d.ran,
            total / d.delivered,
            single.delivered / d.delivered * 100.0,
            d.accepted,
            d.violations
        ),
        Err(e) => println!("| awslogs driver | not measured: {e} |"),
    }
}
