//! Benchmark of the agent's GetLogs (run with `cargo bench --bench agent`, or
//! `scripts/bench.sh`): how fast `dockwatch remote logs` delivers a container's log through a
//! real agent on loopback, next to `docker logs` reading the same container from the same
//! engine, and the agent's peak memory.
//!
//! - W5: 1,000,000 short numbered lines (an exited container), all of them.
//! - W6: 200,000 lines of 1 KiB (about 200 MiB), all of them.
//!
//! Each is timed three times; the median is printed. The output goes to /dev/null; the
//! line count is checked once through a pipe so a fast wrong answer cannot pass.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

#[path = "support/measure.rs"]
mod measure;
use measure::{median, peak_rss_kib, sh};

const IMAGE: &str = "dockwatch-test:latest";

fn time(mut f: impl FnMut()) -> f64 {
    let t = Instant::now();
    f();
    t.elapsed().as_secs_f64()
}

fn main() {
    let bin = env!("CARGO_BIN_EXE_dockwatch");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let host = format!("127.0.0.1:{port}");
    let state = std::env::temp_dir().join(format!("dockwatch-bench-agent-{}", std::process::id()));
    let mut agent = Command::new(bin)
        .args([
            "agent",
            "--listen",
            &host,
            "--state-dir",
            state.to_str().unwrap(),
        ])
        .stderr(Stdio::null())
        .spawn()
        .expect("start the agent");
    let start = Instant::now();
    while std::net::TcpStream::connect(&host).is_err() {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "the agent did not start"
        );
        std::thread::sleep(Duration::from_millis(50));
    }

    let workloads = [
        ("W5 1M short lines", "seq 1 1000000", 1_000_000usize),
        (
            "W6 200k lines of 1 KiB",
            "yes \"$(head -c 1023 /dev/zero | tr '\\0' x)\" | head -n 200000",
            200_000,
        ),
    ];
    println!(
        "| workload | docker logs | dockwatch remote logs | vs docker logs | lines/s | MB/s | agent peak RSS |"
    );
    println!("|---|---|---|---|---|---|---|");
    for (name, script, lines) in workloads {
        let id = String::from_utf8(
            sh(Command::new("docker").args([
                "run",
                "-d",
                "--label",
                "dockwatch.test=bench",
                "--log-driver",
                "json-file",
                IMAGE,
                "bash",
                "-c",
                script,
            ]))
            .stdout,
        )
        .unwrap()
        .trim()
        .to_string();
        sh(Command::new("docker").args(["wait", &id]));
        // Correctness once: every line arrives.
        let o = sh(Command::new(bin).args(["remote", "--host", &host, "logs", &id]));
        assert_eq!(
            o.stdout.iter().filter(|b| **b == b'\n').count(),
            lines,
            "{name}"
        );
        let bytes = o.stdout.len() as f64;
        let engine = median(
            (0..3)
                .map(|_| {
                    time(|| {
                        sh(Command::new("docker")
                            .args(["logs", &id])
                            .stdout(Stdio::null()));
                    })
                })
                .collect(),
        );
        let ours = median(
            (0..3)
                .map(|_| {
                    time(|| {
                        sh(Command::new(bin)
                            .args(["remote", "--host", &host, "logs", &id])
                            .stdout(Stdio::null()));
                    })
                })
                .collect(),
        );
        println!(
            "| {name} | {engine:.2} s | {ours:.2} s | {:.0}% | {:.0} | {:.1} | {:.1} MiB |",
            100.0 * engine / ours,
            lines as f64 / ours,
            bytes / ours / 1e6,
            peak_rss_kib(agent.id()) as f64 / 1024.0
        );
        let _ = Command::new("docker").args(["rm", "-f", &id]).output();
    }
    let _ = agent.kill();
    let _ = agent.wait();
    let _ = std::fs::remove_dir_all(&state);
}
