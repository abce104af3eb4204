//! W7, `dockwatch ship` (the host-wide shipper): 100 containers each writing 10,000 short
//! lines, started in one burst, beside the same total volume from one container through the
//! same daemon, on both of ship's read paths (the engine's log files, the default, and its
//! logs endpoint), beside Docker's awslogs driver configured for the same 100 containers (on
//! the benchmark's private engine), and beside the engine's own attach stream of the one
//! container to a client that discards it. Every run ships to a fresh strict server that
//! checks and counts (discarding the events).
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

/// `n` containers × `lines` shipped by `dockwatch ship --read-path PATH` on the main engine.
pub fn with_ship(n: usize, lines: usize, read_path: &str) -> HostRun {
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
        .args(["--stream", "{container_id}", "--read-path", read_path])
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
    let gate = Gate::new(&format!("ship-{n}-{read_path}"));
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

/// The engine's attach stream of one container writing `lines` lines, to a client that
/// discards them (`docker start -a`): the gate's opening to the client's end.
pub fn attached(lines: usize) -> HostRun {
    let docker = || {
        let mut c = Command::new("docker");
        c.args(["--log-level", "error"]);
        c
    };
    let gate = Gate::new("attach");
    let label = format!("dockwatch.bench.host={}-attach", std::process::id());
    let ids = create(&docker, (1, lines), &gate, &label, &[]);
    let mut client = docker()
        .args(["start", "-a", &ids[0]])
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_secs(2));
    let (t, wall) = gate.open();
    let _ = client.wait();
    let delivered = t.elapsed().as_secs_f64();
    let ran = span(&docker, &ids, wall);
    remove(&docker, &ids);
    HostRun {
        delivered,
        ran,
        accepted: lines as u64,
        violations: 0,
        rss_mib: f64::NAN,
        cpu_s: f64::NAN,
    }
}

/// RSS (MiB) and CPU seconds over `window` of a process, from /proc.
fn rss_and_cpu(pid: u32, window: Duration) -> (f64, f64) {
    let cpu = || {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        // utime and stime: fields 14 and 15, after the parenthesised name.
        let rest = stat.rsplit(')').next().unwrap_or("");
        let f: Vec<f64> = rest
            .split_whitespace()
            .filter_map(|x| x.parse().ok())
            .collect();
        (f.get(11).unwrap_or(&0.0) + f.get(12).unwrap_or(&0.0)) / 100.0
    };
    let before = cpu();
    std::thread::sleep(window);
    let used = cpu() - before;
    let rss = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map_or(f64::NAN, |kb| kb / 1024.0);
    (rss, used)
}

/// `dockwatch ship` following `n` idle containers (running, writing nothing): its RSS and
/// the CPU it uses in 10 s, after it settled.
pub fn idle(n: usize) -> (f64, f64) {
    let server = StrictServer::start();
    let tmp = std::env::temp_dir().join(format!("dockwatch-bench-idle-{}-{n}", std::process::id()));
    std::fs::create_dir_all(&tmp).unwrap();
    let label = format!("dockwatch.bench.idle={}-{n}", std::process::id());
    let ids: Vec<String> = (0..n)
        .map(|_| {
            let out = Command::new("docker")
                .args(["run", "-d", "--network", "none", "--label", &label])
                .args([IMAGE, "bash", "-c", "echo ready; sleep 600"])
                .output()
                .unwrap();
            String::from_utf8_lossy(&out.stdout).trim().to_string()
        })
        .collect();
    let mut daemon = Command::new(env!("CARGO_BIN_EXE_dockwatch"))
        .args(["ship", "--label", &label, "--group", "bench-idle"])
        .args(crate::aws_flags(&server.url))
        .arg("--state-dir")
        .arg(tmp.join("state"))
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_for(&server, n as u64, Duration::from_secs(60));
    std::thread::sleep(Duration::from_secs(5));
    let figures = rss_and_cpu(daemon.id(), Duration::from_secs(10));
    let _ = daemon.kill();
    let _ = daemon.wait();
    let docker = || Command::new("docker");
    remove(&docker, &ids);
    let _ = std::fs::remove_dir_all(&tmp);
    figures
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
    // Rounds interleaved (each setup once per round), then the median of each column.
    let mut runs: [Vec<HostRun>; 5] = Default::default();
    let (mut drivers, mut driver_error) = (Vec::new(), None);
    for _ in 0..rounds {
        runs[0].push(attached(n * lines));
        runs[1].push(with_ship(1, n * lines, "files"));
        runs[2].push(with_ship(n, lines, "files"));
        runs[3].push(with_ship(1, n * lines, "logs"));
        runs[4].push(with_ship(n, lines, "logs"));
        match private.as_ref().map(|e| e.host_awslogs(n, lines)) {
            Ok(Ok(d)) => drivers.push(d),
            Ok(Err(e)) => driver_error = Some(e),
            Err(e) => driver_error = Some(e.clone()),
        }
    }
    let [attach, single, many, single_logs, many_logs] = runs.map(|r| medians(&r));
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
        "| setup | containers ran (gate → last exit) | delivered | delivered after the last exit | lines/s | vs the engine's attach (1 container) | vs the awslogs driver | peak RSS | per container | CPU s | accepted | violations |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|---|");
    let total = (n * lines) as f64;
    let vs_driver = |r: &HostRun| {
        driver.as_ref().map_or_else(
            |_| "—".to_string(),
            |d| format!("{:.2}×", d.delivered / r.delivered),
        )
    };
    let mib = |v: f64| {
        if v.is_nan() {
            "—".to_string()
        } else {
            format!("{v:.2} MiB")
        }
    };
    let row = |name: &str, r: &HostRun, per: usize| {
        println!(
            "| {name} | {:.1} s | {:.1} s | {:.1} s | {:.0} | {:.0}% | {} | {} | {} | {:.1} | {} | {} |",
            r.ran,
            r.delivered,
            r.delivered - r.ran,
            total / r.delivered,
            attach.delivered / r.delivered * 100.0,
            vs_driver(r),
            mib(r.rss_mib),
            mib(r.rss_mib / per as f64),
            r.cpu_s,
            r.accepted,
            r.violations
        )
    };
    row(
        "the engine's attach stream, 1 container (to /dev/null)",
        &attach,
        1,
    );
    row("dockwatch ship (files), 1 container", &single, 1);
    row(&format!("dockwatch ship (files), {n} containers"), &many, n);
    row(
        "dockwatch ship (logs endpoint), 1 container",
        &single_logs,
        1,
    );
    row(
        &format!("dockwatch ship (logs endpoint), {n} containers"),
        &many_logs,
        n,
    );
    match &driver {
        Ok(d) => row(&format!("awslogs driver, {n} containers"), d, n),
        Err(e) => println!("| awslogs driver | not measured: {e} |"),
    }
    let (rss0, cpu0) = idle(0);
    let (rss_n, cpu_n) = idle(n);
    println!();
    println!(
        "`dockwatch ship` (files) following idle containers (running, writing nothing), after it settled:"
    );
    println!();
    println!("| containers | RSS | per container above none | CPU in 10 s |");
    println!("|---|---|---|---|");
    println!("| 0 | {rss0:.1} MiB | — | {cpu0:.2} s |");
    println!(
        "| {n} | {rss_n:.1} MiB | {:.3} MiB | {cpu_n:.2} s |",
        (rss_n - rss0) / n as f64
    );
}
