//! Benchmark of `dockwatch web` (run with `cargo bench --bench web`, or `scripts/bench.sh`):
//! how fast the page gets a long log, next to `docker logs` reading the same container from
//! the same engine, and the server's peak memory.
//!
//! - W8: an exited container with 1,000,000 short numbered lines. The last page (500 lines)
//!   from a server started for it (`docker logs --tail 500` beside it), then every page back
//!   to the first line (2,000 requests; `docker logs` of the whole log beside it), checked to
//!   hold every line once.
//! - W9: a container writing 10,000 lines a second for 20 s, followed live (the page's
//!   server-sent events read as the browser would): lines received, and how far behind the
//!   newest line the follower was at the end.
//!
//! Timed three times where it is quick; the median is printed.

use std::io::{BufRead, BufReader, Read, Write};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

#[path = "support/measure.rs"]
mod measure;
use measure::{median, peak_rss_kib, sh};

const IMAGE: &str = "dockwatch-test:latest";

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn get(port: u16, path: &str) -> String {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    out.split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default()
}

struct Web(std::process::Child, u16);

impl Web {
    fn start() -> Web {
        let port = free_port();
        let child = Command::new(env!("CARGO_BIN_EXE_dockwatch"))
            .args(["web", "--listen", &format!("127.0.0.1:{port}")])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            std::thread::sleep(Duration::from_millis(20));
        }
        Web(child, port)
    }
}

impl Drop for Web {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn container(cmd: &str) -> String {
    let o = sh(Command::new("docker").args([
        "run",
        "-d",
        "--label",
        "dockwatch.bench=web",
        IMAGE,
        "bash",
        "-c",
        cmd,
    ]));
    String::from_utf8_lossy(&o.stdout).trim().to_string()
}

fn page(port: u16, id: &str, before: Option<&str>) -> serde_json::Value {
    let q = before.map_or(String::new(), |b| format!("&before={b}"));
    serde_json::from_str(&get(port, &format!("/api/logs/{id}?limit=500{q}"))).unwrap()
}

fn w8() {
    let id = container("seq 1 1000000");
    sh(Command::new("docker").args(["wait", &id]));
    let mut first = Vec::new();
    let mut engine_tail = Vec::new();
    for _ in 0..3 {
        let web = Web::start();
        let t = Instant::now();
        let p = page(web.1, &id, None);
        first.push(t.elapsed().as_secs_f64());
        assert_eq!(
            p["lines"].as_array().unwrap().last().unwrap()["text"],
            "1000000"
        );
        let t = Instant::now();
        sh(Command::new("docker")
            .args(["logs", "--tail", "500", &id])
            .stdout(Stdio::null()));
        engine_tail.push(t.elapsed().as_secs_f64());
    }
    let web = Web::start();
    let t = Instant::now();
    let mut p = page(web.1, &id, None);
    let (mut lines, mut next) = (p["lines"].as_array().unwrap().len(), 1_000_000u64);
    loop {
        for l in p["lines"].as_array().unwrap().iter().rev() {
            assert_eq!(
                l["text"].as_str().unwrap(),
                next.to_string(),
                "every line once"
            );
            next -= 1;
        }
        let Some(older) = p["older"].as_str().map(str::to_string) else {
            break;
        };
        p = page(web.1, &id, Some(&older));
        lines += p["lines"].as_array().unwrap().len();
    }
    let back = t.elapsed().as_secs_f64();
    assert_eq!((lines, next), (1_000_000, 0));
    let rss = peak_rss_kib(web.0.id());
    let t = Instant::now();
    sh(Command::new("docker")
        .args(["logs", &id])
        .stdout(Stdio::null()));
    let engine_all = t.elapsed().as_secs_f64();
    println!(
        "| W8 1M lines, last page | {:.0} ms | docker logs --tail 500: {:.0} ms |",
        median(first) * 1000.0,
        median(engine_tail) * 1000.0
    );
    println!(
        "| W8 1M lines, every page back to the first (2,000 × 500) | {back:.1} s ({:.0} lines/s) | docker logs (all): {engine_all:.1} s | server peak RSS {:.1} MiB |",
        1_000_000.0 / back,
        rss as f64 / 1024.0
    );
    sh(Command::new("docker").args(["rm", "-f", &id]));
}

fn w9() {
    // 10,000 lines a second: 100 lines every 10 ms, for 20 s.
    let id = container(
        "i=0; while [ $i -lt 2000 ]; do seq $((i*100+1)) $((i*100+100)); i=$((i+1)); sleep 0.01; done; sleep 30",
    );
    let web = Web::start();
    std::thread::sleep(Duration::from_millis(200));
    let p = page(web.1, &id, None);
    let after = p["after"].as_str().unwrap().to_string();
    let mut s = std::net::TcpStream::connect(("127.0.0.1", web.1)).unwrap();
    write!(
        s,
        "GET /api/follow/{id}?after={after} HTTP/1.1\r\nHost: x\r\n\r\n"
    )
    .unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut r = BufReader::new(s);
    let start = Instant::now();
    // Every line after the page, once, in order.
    let lines = p["lines"].as_array().unwrap();
    let mut next: u64 = lines.last().unwrap()["text"]
        .as_str()
        .unwrap()
        .parse::<u64>()
        .unwrap()
        + 1;
    let from = next;
    let mut lags: Vec<f64> = Vec::new();
    while start.elapsed() < Duration::from_secs(40) && next <= 200_000 {
        let mut line = String::new();
        if r.read_line(&mut line).unwrap_or(0) == 0 {
            break;
        }
        if let Some(d) = line.trim_end().strip_prefix("data: ")
            && let Ok(v) = serde_json::from_str::<serde_json::Value>(d)
            && let Some(a) = v.as_array()
        {
            for l in a {
                assert_eq!(
                    l["text"].as_str().unwrap(),
                    next.to_string(),
                    "every line once"
                );
                next += 1;
            }
            // How long after the engine took the newest line it reached the follower.
            if let Some(ms) = a.last().and_then(|l| l["ms"].as_i64()) {
                let now = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap()
                    .as_millis() as i64;
                lags.push((now - ms) as f64);
            }
        }
    }
    let took = start.elapsed().as_secs_f64();
    assert_eq!(next, 200_001, "not every line came");
    let (got, last) = (next - from, next - 1);
    let rss = peak_rss_kib(web.0.id());
    let p99 = {
        let mut l = lags.clone();
        l.sort_by(|a, b| a.partial_cmp(b).unwrap());
        l[(l.len() * 99 / 100).min(l.len() - 1)]
    };
    println!(
        "| W9 a writer of ~10,000 lines/s, followed | {got} lines after the page, each once in order, up to line {last} in {took:.1} s (the writer's own time); latency from the engine to the follower p50 {:.0} / p99 {p99:.0} ms | | server peak RSS {:.1} MiB |",
        median(lags),
        rss as f64 / 1024.0
    );
    sh(Command::new("docker").args(["rm", "-f", &id]));
}

fn main() {
    println!("| workload | dockwatch web | the engine | |");
    println!("|---|---|---|---|");
    w8();
    w9();
}
