//! The shipping benchmark: `cargo bench --bench ship` (or `scripts/bench.sh`, which sets up
//! the engine and images first). Not a timed test: it measures and prints a table.
//!
//! Workloads, each run by the release binary against the strict CloudWatch test server
//! (in this process, on loopback), side by side with the engine's own delivery of the same
//! container's output to a client that discards it:
//! - W1: 3,000,000 short numbered lines (`seq`);
//! - W2: 512,000 lines of 1 KiB (500 MiB);
//! - W3: 10 lines/s for 30 s (latency from Docker's timestamp to CloudWatch's acceptance);
//! - W4: 1 GiB of 1 KiB lines into a server that answers each request after 1 s (memory
//!   under backpressure);
//! - W7 (W5 and W6 are the agent bench's): `dockwatch ship` on both read paths, 100
//!   containers × 10,000 lines written at once, beside the awslogs driver and the engine's
//!   attach stream (see `support/host.rs`).
//!
//! Set `DOCKWATCH_BENCH_QUICK=1` to skip W4, `DOCKWATCH_BENCH_ONLY=W2` to run one workload.
//!
//! Measured per run: the time from dockwatch's start to the server's acceptance of the last
//! event (delivered: the rates and percentages use it), the time to dockwatch's exit (after
//! removing the container), lines/s, MB/s, p50/p99 latency, peak RSS and CPU seconds of
//! dockwatch (from GNU time), events accepted and CloudWatch-rule violations. The engine's
//! times run from `docker run -d` to the end of `docker logs -f` (or of the attached run).
//!
//! The throughput workloads (W1, W2) run `DOCKWATCH_BENCH_ROUNDS` rounds (default 3), each
//! round the two engine baselines then dockwatch, and every column is the median over the
//! rounds: on two shared cores single runs vary by 15-25%.

#[path = "support/host.rs"]
mod host;
#[path = "../tests/e2e/private_engine.rs"]
mod private_engine;
#[path = "../tests/e2e/strict_server.rs"]
mod strict_server;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use private_engine::PrivateEngine;
use strict_server::StrictServer;

const IMAGE: &str = "dockwatch-test:latest";

struct Workload {
    name: &'static str,
    script: String,
    lines: u64,
    bytes: u64,
    latency: Duration,
}

fn workloads() -> Vec<Workload> {
    let kib_line = "x".repeat(1023);
    let mut w = vec![
        Workload {
            name: "W1 3M short lines",
            script: "seq 1 3000000".into(),
            lines: 3_000_000,
            bytes: (1..=3_000_000u64)
                .map(|i| i.to_string().len() as u64 + 1)
                .sum(),
            latency: Duration::ZERO,
        },
        Workload {
            name: "W2 500 MiB of 1 KiB lines",
            script: format!("yes {kib_line} | head -n 512000"),
            lines: 512_000,
            bytes: 512_000 * 1024,
            latency: Duration::ZERO,
        },
        Workload {
            name: "W3 10 lines/s for 30 s",
            script: "for i in $(seq 1 300); do echo line-$i; sleep 0.1; done".into(),
            lines: 300,
            bytes: (1..=300u64).map(|i| 6 + i.to_string().len() as u64).sum(),
            latency: Duration::ZERO,
        },
    ];
    if std::env::var_os("DOCKWATCH_BENCH_QUICK").is_none() {
        w.push(Workload {
            name: "W4 1 GiB, server answers after 1 s",
            script: format!("yes {kib_line} | head -n 1048576"),
            lines: 1_048_576,
            bytes: 1_048_576 * 1024,
            latency: Duration::from_secs(1),
        });
    }
    w
}

/// `docker run MODE` of the bench image with the same log driver dockwatch uses.
fn docker_run(mode: &str, script: &str) -> Command {
    let mut c = Command::new("docker");
    c.args([
        "run",
        mode,
        "--label",
        "dockwatch.test=bench",
        "--log-driver",
        "json-file",
        IMAGE,
    ]);
    c.args(["bash", "-c", script]);
    c
}

/// The engine alone: a detached container read with `docker logs -f` into /dev/null (the
/// same read path as dockwatch), and `docker run` attached (the engine's fastest path).
fn engine_baselines(script: &str) -> (f64, f64) {
    let t = Instant::now();
    let id = docker_run("-d", script).output().unwrap();
    let id = String::from_utf8_lossy(&id.stdout).trim().to_string();
    Command::new("docker")
        .args(["logs", "-f", &id])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .unwrap();
    let follow = t.elapsed().as_secs_f64();
    Command::new("docker")
        .args(["rm", "-f", &id])
        .stdout(Stdio::null())
        .status()
        .unwrap();

    let t = Instant::now();
    docker_run("--rm", script)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .unwrap();
    (follow, t.elapsed().as_secs_f64())
}

impl PrivateEngine {
    /// One run of `w` with the awslogs driver shipping to a fresh strict server.
    fn run_awslogs(&self, w: &Workload) -> Result<Measured, String> {
        // The server listens on the loopback of the engine's namespace: the driver runs
        // inside dockerd.
        let server = StrictServer::on_listener(self.listener()?);
        server.faults(|f| f.discard = true);
        let endpoint = format!("awslogs-endpoint={}", server.url);
        let t = Instant::now();
        let out = self
            .docker(&["run", "-d", "--network", "none", "--log-driver", "awslogs"])
            .args(["--log-opt", "awslogs-region=eu-west-1"])
            .args([
                "--log-opt",
                "awslogs-group=bench",
                "--log-opt",
                "awslogs-stream=s",
            ])
            .args([
                "--log-opt",
                "awslogs-create-group=true",
                "--log-opt",
                &endpoint,
            ])
            .args([IMAGE, "bash", "-c", &w.script])
            .output()
            .map_err(|e| e.to_string())?;
        if !out.status.success() {
            return Err(String::from_utf8_lossy(&out.stderr).trim().to_string());
        }
        let id = String::from_utf8_lossy(&out.stdout).trim().to_string();
        // The driver flushes the rest when the container stops.
        let _ = self.docker(&["wait", &id]).stdout(Stdio::null()).status();
        let deadline = Instant::now() + Duration::from_secs(600);
        while server.with_stats(|s| s.accepted_events) < w.lines && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
        let wall = t.elapsed().as_secs_f64();
        let _ = self
            .docker(&["rm", "-f", &id])
            .stdout(Stdio::null())
            .status();
        Ok(measured(&server, t, wall, f64::NAN, f64::NAN))
    }
}

/// The median of the rounds' values.
fn median(values: impl Iterator<Item = f64>) -> f64 {
    let mut v: Vec<f64> = values.collect();
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn percentile(sorted: &[i64], p: f64) -> i64 {
    sorted
        .get(((sorted.len() as f64 * p) as usize).min(sorted.len().saturating_sub(1)))
        .copied()
        .unwrap_or(0)
}

struct Measured {
    wall: f64,
    delivered: f64,
    rss_mib: f64,
    cpu_s: f64,
    accepted: u64,
    violations: u64,
    p50: i64,
    p99: i64,
    /// The container's own start to finish (the engine's times).
    container: f64,
}

/// Start to finish of a container as the engine recorded them, in seconds; the container is
/// removed.
fn container_seconds(id: &str) -> f64 {
    let out = Command::new("docker")
        .args([
            "inspect",
            "-f",
            "{{.State.StartedAt}} {{.State.FinishedAt}}",
            id,
        ])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let t: Vec<chrono::DateTime<chrono::FixedOffset>> = text
        .split_whitespace()
        .filter_map(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
        .collect();
    Command::new("docker")
        .args(["rm", "-f", id])
        .stdout(Stdio::null())
        .status()
        .unwrap();
    match t.as_slice() {
        [a, b] => (*b - *a).as_seconds_f64(),
        _ => f64::NAN,
    }
}

/// How long the workload's container takes with no reader at all: writing to /dev/null (the
/// container's own rate) or into the engine's `json-file` log (the engine's rate, what
/// dockwatch's container also pays).
fn unread_seconds(script: &str, to_dev_null: bool) -> f64 {
    let script = if to_dev_null {
        format!("{{ {script}; }} >/dev/null 2>&1")
    } else {
        script.to_string()
    };
    let id = docker_run("-d", &script).output().unwrap();
    let id = String::from_utf8_lossy(&id.stdout).trim().to_string();
    Command::new("docker")
        .args(["wait", &id])
        .stdout(Stdio::null())
        .status()
        .unwrap();
    container_seconds(&id)
}

fn run_dockwatch(w: &Workload, read_path: &str) -> Measured {
    let server = StrictServer::start();
    server.faults(|f| {
        f.discard = true;
        f.latency = w.latency;
    });
    let bin = env!("CARGO_BIN_EXE_dockwatch");
    let tmp = std::env::temp_dir().join(format!("dockwatch-bench-{}", std::process::id()));
    std::fs::create_dir_all(&tmp).unwrap();
    let time_out = tmp.join("time.txt");
    let t = Instant::now();
    let status = Command::new("/usr/bin/time")
        .args(["-f", "%M %U %S", "-o", time_out.to_str().unwrap(), bin])
        .args([
            "--docker-image",
            IMAGE,
            "--bash-command",
            &w.script,
            "--quiet",
        ])
        .args([
            "--aws-cloudwatch-group",
            "bench",
            "--aws-cloudwatch-stream",
            "s",
        ])
        .args(aws_flags(&server.url))
        .args(["--label", "dockwatch.test=bench"])
        .args([
            "--label",
            &format!("dockwatch.bench={}", std::process::id()),
        ])
        .args(["--read-path", read_path, "--keep-container"])
        .args(["--state-dir", tmp.join("state").to_str().unwrap()])
        .args(["--spool-dir", tmp.join("spool").to_str().unwrap()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .status()
        .unwrap();
    let wall = t.elapsed().as_secs_f64();
    assert!(status.success(), "{} failed: {status}", w.name);
    let time = std::fs::read_to_string(&time_out).unwrap();
    let f: Vec<f64> = time
        .split_whitespace()
        .filter_map(|x| x.parse().ok())
        .collect();
    let _ = std::fs::remove_dir_all(&tmp);
    let id = Command::new("docker")
        .args(["ps", "-aq", "--filter"])
        .arg(format!("label=dockwatch.bench={}", std::process::id()))
        .output()
        .unwrap();
    let id = String::from_utf8_lossy(&id.stdout).trim().to_string();
    let mut m = measured(&server, t, wall, f[0] / 1024.0, f[1] + f[2]);
    m.container = container_seconds(&id);
    m
}

/// The benchmark's AWS settings: test credentials, the strict server at `url`.
fn aws_flags(url: &str) -> [&str; 8] {
    [
        "--aws-access-key-id",
        "AKIDBENCH",
        "--aws-secret-access-key",
        "x",
        "--aws-region",
        "eu-west-1",
        "--aws-endpoint-url",
        url,
    ]
}

/// What the strict server saw of a run started at `t`, with the client's own figures.
fn measured(server: &StrictServer, t: Instant, wall: f64, rss_mib: f64, cpu_s: f64) -> Measured {
    let (mut lat, accepted, violations, last) = server.with_stats(|s| {
        (
            s.latencies_ms.clone(),
            s.accepted_events,
            s.violations,
            s.last_accepted,
        )
    });
    lat.sort_unstable();
    Measured {
        wall,
        delivered: last.map_or(f64::NAN, |l| l.duration_since(t).as_secs_f64()),
        rss_mib,
        cpu_s,
        accepted,
        violations,
        p50: percentile(&lat, 0.50),
        p99: percentile(&lat, 0.99),
        container: f64::NAN,
    }
}

/// A measured number, or a dash where the workload has none.
fn or_dash(v: f64, unit: &str) -> String {
    if v.is_nan() {
        "—".into()
    } else if unit == "%" {
        format!("{v:.0}%")
    } else {
        format!("{v:.1}{unit}")
    }
}

fn main() {
    // `cargo bench` passes --bench; nothing to parse.
    if Command::new("/usr/bin/time")
        .arg("true")
        .stderr(Stdio::null())
        .status()
        .is_err()
    {
        eprintln!(
            "the benchmark needs GNU time (/usr/bin/time): apt-get install time, or run scripts/bench.sh"
        );
        std::process::exit(1);
    }
    println!(
        "| workload | read path | engine: logs -f | engine: attach | dockwatch: delivered | dockwatch: exited | lines/s | MB/s | vs logs -f | vs attach | p50 / p99 latency | peak RSS | CPU s | container ran | accepted | violations |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|");
    let rounds: usize = std::env::var("DOCKWATCH_BENCH_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .filter(|n| *n > 0)
        .unwrap_or(3);
    // DOCKWATCH_BENCH_ONLY=W4 runs the workloads whose name starts with it.
    let only = std::env::var("DOCKWATCH_BENCH_ONLY").unwrap_or_default();
    // DOCKWATCH_BENCH_PATHS=attach measures one read path.
    let paths: Vec<String> = std::env::var("DOCKWATCH_BENCH_PATHS")
        .unwrap_or_else(|_| "attach,logs".into())
        .split(',')
        .map(str::to_string)
        .collect();
    // Docker's awslogs driver, on a private engine (DOCKWATCH_BENCH_AWSLOGS=0 skips it).
    let private = if std::env::var("DOCKWATCH_BENCH_AWSLOGS").as_deref() == Ok("0") {
        Err("skipped (DOCKWATCH_BENCH_AWSLOGS=0)".to_string())
    } else {
        PrivateEngine::start("bench-engine")
    };
    let mut awslogs_rows = Vec::new();
    let mut dev_null_rows = Vec::new();
    for w in workloads()
        .into_iter()
        .filter(|w| w.name.starts_with(only.as_str()))
    {
        // Baselines and rounds for the throughput workloads; W3 is paced and W4 is about
        // memory and the container's own rate: one run each.
        let throughput = w.latency.is_zero() && w.lines > 1000;
        // The awslogs driver is timed on W1-W3; W4 (1 GiB into a 1 s server) would take it an
        // hour, one request at a time.
        let with_awslogs = w.latency.is_zero();
        // W4 takes five minutes a path: the attach path only (the logs path's figure is in
        // the README from earlier runs).
        let paths: Vec<String> = if w.latency.is_zero() {
            paths.clone()
        } else {
            paths.iter().take(1).cloned().collect()
        };
        let mut runs: Vec<(f64, f64, Vec<Measured>)> = Vec::new();
        let mut driver = Vec::new();
        for _ in 0..if throughput { rounds } else { 1 } {
            let (follow, attach) = if throughput {
                engine_baselines(&w.script)
            } else {
                (f64::NAN, f64::NAN)
            };
            if let (Ok(engine), true) = (&private, with_awslogs) {
                match engine.run_awslogs(&w) {
                    Ok(m) => driver.push(m),
                    Err(e) => eprintln!("{}: the awslogs driver failed: {e}", w.name),
                }
            }
            let mut by_path = Vec::new();
            for path in &paths {
                let m = run_dockwatch(&w, path);
                assert_eq!(
                    m.accepted, w.lines,
                    "{} ({path}): not every line arrived",
                    w.name
                );
                by_path.push(m);
            }
            runs.push((follow, attach, by_path));
        }
        if !w.latency.is_zero() {
            dev_null_rows.push(format!(
                "| {} | {:.1} s | {:.1} s | {} |",
                w.name,
                unread_seconds(&w.script, true),
                unread_seconds(&w.script, false),
                paths
                    .iter()
                    .enumerate()
                    .map(|(i, p)| format!("{p}: {:.1} s", runs[0].2[i].container))
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
        }
        let (follow, attach) = (
            median(runs.iter().map(|r| r.0)),
            median(runs.iter().map(|r| r.1)),
        );
        let mut attach_path_delivered = f64::NAN;
        for (i, path) in paths.iter().enumerate() {
            let med = |f: &dyn Fn(&Measured) -> f64| median(runs.iter().map(|r| f(&r.2[i])));
            let m = Measured {
                wall: med(&|m| m.wall),
                delivered: med(&|m| m.delivered),
                rss_mib: med(&|m| m.rss_mib),
                cpu_s: med(&|m| m.cpu_s),
                accepted: runs[0].2[i].accepted,
                violations: runs.iter().map(|r| r.2[i].violations).sum(),
                p50: med(&|m| m.p50 as f64) as i64,
                p99: med(&|m| m.p99 as f64) as i64,
                container: med(&|m| m.container),
            };
            if path == "attach" {
                attach_path_delivered = m.delivered;
            }
            println!(
                "| {} | {path} | {} | {} | {:.1} s | {:.1} s | {:.0} | {:.1} | {} | {} | {} / {} ms | {:.1} MiB | {:.1} | {:.1} s | {} | {} |",
                w.name,
                or_dash(follow, " s"),
                or_dash(attach, " s"),
                m.delivered,
                m.wall,
                w.lines as f64 / m.delivered,
                w.bytes as f64 / m.delivered / 1e6,
                or_dash(follow / m.delivered * 100.0, "%"),
                or_dash(attach / m.delivered * 100.0, "%"),
                m.p50,
                m.p99,
                m.rss_mib,
                m.cpu_s,
                m.container,
                m.accepted,
                m.violations,
            );
        }
        if !driver.is_empty() {
            let delivered = median(driver.iter().map(|d| d.delivered));
            awslogs_rows.push(format!(
                "| {} | {} | {:.0} | {:.1} | {} / {} ms | {} | {} | {} | {} |",
                w.name,
                or_dash(delivered, " s"),
                w.lines as f64 / delivered,
                w.bytes as f64 / delivered / 1e6,
                median(driver.iter().map(|d| d.p50 as f64)),
                median(driver.iter().map(|d| d.p99 as f64)),
                driver.iter().map(|d| d.accepted).min().unwrap_or(0),
                driver.iter().map(|d| d.violations).sum::<u64>(),
                or_dash(attach_path_delivered, " s"),
                or_dash(delivered / attach_path_delivered * 100.0, "%"),
            ));
        }
    }
    if only.is_empty() || only.starts_with("W7") {
        host::report(&private, rounds);
    }
    if !dev_null_rows.is_empty() {
        println!();
        println!(
            "The container's own time (the engine's start to finish) beside the same container with no reader, writing to /dev/null and into the engine's log:"
        );
        println!();
        println!("| workload | to /dev/null | into the log, no reader | with dockwatch |");
        println!("|---|---|---|---|");
        for row in &dev_null_rows {
            println!("{row}");
        }
    }
    println!();
    match &private {
        Err(e) => println!("Docker's awslogs driver: not measured: {e}"),
        Ok(_) => {
            println!(
                "Docker's awslogs driver (on a private engine started by the benchmark) against the same strict server, medians:"
            );
            println!();
            println!(
                "| workload | awslogs: delivered | lines/s | MB/s | p50 / p99 latency | accepted | violations | dockwatch (attach): delivered | dockwatch speed vs awslogs |"
            );
            println!("|---|---|---|---|---|---|---|---|---|");
            for row in &awslogs_rows {
                println!("{row}");
            }
        }
    }
}
