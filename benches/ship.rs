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
//!   under backpressure). Set `DOCKWATCH_BENCH_QUICK=1` to skip W4, `DOCKWATCH_BENCH_ONLY=W2`
//!   to run one workload.
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

#[path = "../tests/support/strict_server.rs"]
mod strict_server;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

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

struct Measured {
    wall: f64,
    delivered: f64,
    rss_mib: f64,
    cpu_s: f64,
    accepted: u64,
    violations: u64,
    p50: i64,
    p99: i64,
}

fn run_dockwatch(w: &Workload) -> Measured {
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
        .args(["--label", "dockwatch.test=bench"])
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
    let (mut lat, accepted, violations, last) = server.with_stats(|s| {
        (
            s.latencies_ms.clone(),
            s.accepted_events,
            s.violations,
            s.last_accepted,
        )
    });
    let delivered = last.map_or(f64::NAN, |l| l.duration_since(t).as_secs_f64());
    lat.sort_unstable();
    let pct = |p: f64| {
        lat.get(((lat.len() as f64 * p) as usize).min(lat.len().saturating_sub(1)))
            .copied()
            .unwrap_or(0)
    };
    let _ = std::fs::remove_dir_all(&tmp);
    Measured {
        wall,
        delivered,
        rss_mib: f[0] / 1024.0,
        cpu_s: f[1] + f[2],
        accepted,
        violations,
        p50: pct(0.50),
        p99: pct(0.99),
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
        "| workload | engine: logs -f | engine: attach | dockwatch: delivered | dockwatch: exited | lines/s | MB/s | vs logs -f | vs attach | p50 / p99 latency | peak RSS | CPU s | accepted | violations |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|");
    let rounds: usize = std::env::var("DOCKWATCH_BENCH_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .filter(|n| *n > 0)
        .unwrap_or(3);
    // DOCKWATCH_BENCH_ONLY=W4 runs the workloads whose name starts with it.
    let only = std::env::var("DOCKWATCH_BENCH_ONLY").unwrap_or_default();
    for w in workloads()
        .into_iter()
        .filter(|w| w.name.starts_with(only.as_str()))
    {
        // Baselines and rounds for the throughput workloads; W3 is paced and W4 is about
        // memory: one run each.
        let throughput = w.latency.is_zero() && w.lines > 1000;
        let mut runs = Vec::new();
        for _ in 0..if throughput { rounds } else { 1 } {
            let (follow, attach) = if throughput {
                engine_baselines(&w.script)
            } else {
                (f64::NAN, f64::NAN)
            };
            let m = run_dockwatch(&w);
            assert_eq!(m.accepted, w.lines, "{}: not every line arrived", w.name);
            runs.push((follow, attach, m));
        }
        let med = |f: &dyn Fn(&(f64, f64, Measured)) -> f64| {
            let mut v: Vec<f64> = runs.iter().map(f).collect();
            v.sort_by(f64::total_cmp);
            v[v.len() / 2]
        };
        let (follow, attach) = (med(&|r| r.0), med(&|r| r.1));
        let m = Measured {
            wall: med(&|r| r.2.wall),
            delivered: med(&|r| r.2.delivered),
            rss_mib: med(&|r| r.2.rss_mib),
            cpu_s: med(&|r| r.2.cpu_s),
            accepted: runs[0].2.accepted,
            violations: runs.iter().map(|r| r.2.violations).sum(),
            p50: med(&|r| r.2.p50 as f64) as i64,
            p99: med(&|r| r.2.p99 as f64) as i64,
        };
        println!(
            "| {} | {} | {} | {:.1} s | {:.1} s | {:.0} | {:.1} | {} | {} | {} / {} ms | {:.1} MiB | {:.1} | {} | {} |",
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
            m.accepted,
            m.violations,
        );
    }
}
