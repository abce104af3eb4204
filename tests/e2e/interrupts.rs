//! Interruptions: signals at random moments, a second and a third signal, the delivery
//! deadline and its spool, and SIGKILL of dockwatch followed by `dockwatch resume`.
//! Each test compares what arrived with what the container wrote.

use std::process::{Child, Command};
use std::time::{Duration, Instant};

use crate::common::*;
use crate::strict_server::StrictServer;

/// Numbered lines forever, one every 2 ms or so.
const ENDLESS: &str =
    "i=0; while true; do i=$((i+1)); echo $i; if [ $((i % 20)) -eq 0 ]; then sleep 0.05; fi; done";

fn signal(child: &Child, sig: &str) {
    let ok = Command::new("kill")
        .args([&format!("-{sig}"), &child.id().to_string()])
        .status()
        .unwrap();
    assert!(ok.success());
}

/// The lines the engine stored for a container.
fn docker_logs(id: &str) -> Vec<String> {
    let out = Command::new("docker").args(["logs", id]).output().unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_string)
        .collect()
}

fn assert_numbered_prefix(got: &[String]) -> usize {
    for (i, g) in got.iter().enumerate() {
        assert_eq!(*g, (i + 1).to_string(), "line {i} of {}", got.len());
    }
    got.len()
}

/// A small deterministic generator for the "random" moments (no extra dependency).
/// Waits until a run's checkpoint exists in `state` (its container runs): from then on a
/// killed run has something to resume.
fn wait_for_checkpoint(state: &std::path::Path) {
    let found = wait_until(Duration::from_secs(30), || {
        std::fs::read_dir(state).is_ok_and(|d| {
            d.flatten().any(|e| {
                let n = e.file_name().to_string_lossy().into_owned();
                n.ends_with(".json") && !n.starts_with('.')
            })
        })
    });
    assert!(found, "no checkpoint appeared in {}", state.display());
}

fn moments(n: usize) -> Vec<u64> {
    let mut x: u64 = 0x2545_F491_4F6C_DD1D;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            300 + x % 2200
        })
        .collect()
}

#[test]
fn sigint_and_sigterm_at_random_moments() {
    let server = StrictServer::start();
    for (run, wait_ms) in moments(20).into_iter().enumerate() {
        let (sig, code) = if run % 2 == 0 {
            ("INT", 130)
        } else {
            ("TERM", 143)
        };
        let keep = run % 4 < 2;
        let mut job = Job::new(&server.url, ENDLESS);
        job.quiet_with_summary().arg("--stop-timeout").arg("1s");
        if keep {
            job.arg("--keep-container");
        }
        let child = job.spawn();
        std::thread::sleep(Duration::from_millis(wait_ms));
        signal(&child, sig);
        let out = child.wait_with_output().unwrap();
        let err = stderr(&out);
        assert_eq!(
            out.status.code(),
            Some(code),
            "run {run} ({sig} after {wait_ms} ms): {err}"
        );
        let got = server.messages(&job.group, &job.stream);
        let n = assert_numbered_prefix(&got);
        assert!(n > 0, "run {run}: nothing arrived");
        if keep {
            // Everything the container wrote, as the engine stored it, arrived.
            let ids = containers_with_label(&job.label);
            assert_eq!(ids.len(), 1);
            let written = docker_logs(&ids[0]);
            cleanup(&job.label);
            assert_eq!(
                written.len(),
                n,
                "run {run}: written {} vs arrived {n}",
                written.len()
            );
        } else {
            assert!(
                containers_with_label(&job.label).is_empty(),
                "run {run}: container left"
            );
        }
        assert!(err.contains("stopping the container"), "{err}");
    }
    server.with_stats(|s| assert_eq!(s.violations, 0));
}

/// Ctrl+C on a shell loop: under the engine's init (the default) the shell gets the SIGTERM
/// and the run ends at once; as PID 1 (`--no-init`) it ignores it and the stop waits for
/// --stop-timeout (10.2 s measured with the default 10 s).
#[test]
fn ctrl_c_on_a_sleep_loop_ends_at_once() {
    let server = StrictServer::start();
    let mut job = Job::new(&server.url, "while true; do echo tick; sleep 1; done");
    let child = job.spawn();
    assert!(wait_until(Duration::from_secs(30), || {
        !server.messages(&job.group, &job.stream).is_empty()
    }));
    let t0 = Instant::now();
    signal(&child, "INT");
    let out = child.wait_with_output().unwrap();
    let took = t0.elapsed();
    let err = stderr(&out);
    assert!(took < Duration::from_secs(2), "took {took:?}: {err}");
    assert_eq!(out.status.code(), Some(130), "{err}");
    assert!(err.contains("SIGKILL after 10s (--stop-timeout)"), "{err}");
    assert!(containers_with_label(&job.label).is_empty());
    assert!(
        server
            .messages(&job.group, &job.stream)
            .iter()
            .all(|m| m == "tick")
    );

    // Without the init: the grace is used up (a short one here).
    let mut job = Job::new(&server.url, "while true; do echo tick; sleep 1; done");
    job.args(["--no-init", "--stop-timeout", "3s"]);
    let child = job.spawn();
    assert!(wait_until(Duration::from_secs(30), || {
        !server.messages(&job.group, &job.stream).is_empty()
    }));
    let t0 = Instant::now();
    signal(&child, "INT");
    let out = child.wait_with_output().unwrap();
    assert!(t0.elapsed() >= Duration::from_secs(3), "{}", stderr(&out));
    assert_eq!(out.status.code(), Some(130), "{}", stderr(&out));
}

/// Two SIGINTs within a millisecond (0.3 ms apart): the second is not lost, the container is
/// killed at once instead of after its 60 s grace. (Closer than the time a thread takes to
/// wake, the kernel merges the two: a pending signal is not queued twice.)
#[test]
fn two_sigints_within_a_millisecond_both_count() {
    let server = StrictServer::start();
    for run in 0..5 {
        // A flood keeps dockwatch's runtime busy between the two signals.
        let mut job = Job::new(
            &server.url,
            "trap '' TERM; while true; do seq 1 100000; done",
        );
        let state = std::env::temp_dir().join(unique("state"));
        let spool = std::env::temp_dir().join(unique("spool"));
        job.quiet_with_summary().arg("--stop-timeout").arg("60s");
        job.arg("--state-dir").arg(state.to_str().unwrap());
        job.arg("--spool-dir").arg(spool.to_str().unwrap());
        let child = job.spawn();
        assert!(wait_until(Duration::from_secs(30), || {
            !server.messages(&job.group, &job.stream).is_empty()
        }));
        let pid = child.id();
        let t0 = Instant::now();
        let pid = pid as libc::pid_t;
        // SAFETY: kill(2) on our own child.
        unsafe {
            assert_eq!(libc::kill(pid, libc::SIGINT), 0);
            std::thread::sleep(Duration::from_micros(300));
            assert_eq!(libc::kill(pid, libc::SIGINT), 0);
        }
        let out = child.wait_with_output().unwrap();
        let took = t0.elapsed();
        cleanup(&job.label);
        let err = stderr(&out);
        assert!(
            took < Duration::from_secs(20),
            "run {run}: the second signal was lost: {err}"
        );
        assert!(err.contains("killing the container"), "run {run}: {err}");
        assert_eq!(out.status.code(), Some(130), "run {run}: {err}");
    }
}

#[test]
fn second_signal_kills_a_container_that_ignores_sigterm() {
    let server = StrictServer::start();
    let mut job = Job::new(&server.url, &format!("trap '' TERM; {ENDLESS}"));
    job.quiet_with_summary()
        .arg("--stop-timeout")
        .arg("60s")
        .arg("--keep-container");
    let child = job.spawn();
    std::thread::sleep(Duration::from_millis(800));
    let t0 = Instant::now();
    signal(&child, "INT");
    std::thread::sleep(Duration::from_millis(500));
    signal(&child, "INT");
    let out = child.wait_with_output().unwrap();
    assert!(
        t0.elapsed() < Duration::from_secs(20),
        "the second signal did not kill it"
    );
    assert_eq!(out.status.code(), Some(130), "{}", stderr(&out));
    assert!(stderr(&out).contains("killing the container"));
    let ids = containers_with_label(&job.label);
    let written = docker_logs(&ids[0]);
    cleanup(&job.label);
    let n = assert_numbered_prefix(&server.messages(&job.group, &job.stream));
    assert_eq!(n, written.len(), "still delivers everything after the kill");
}

#[test]
fn third_signal_quits_now_then_resume_delivers_the_rest() {
    let server = StrictServer::start();
    let state = std::env::temp_dir().join(unique("state"));
    let spool = std::env::temp_dir().join(unique("spool"));
    let mut job = Job::new(&server.url, "seq 1 3000; sleep 600");
    job.quiet_with_summary().arg("--stop-timeout").arg("60s");
    job.arg("--state-dir").arg(state.to_str().unwrap());
    job.arg("--spool-dir").arg(spool.to_str().unwrap());
    // CloudWatch takes no events: nothing can be delivered.
    server.faults(|f| f.outage_puts = true);
    let child = job.spawn();
    std::thread::sleep(Duration::from_millis(2500));
    for _ in 0..3 {
        signal(&child, "INT");
        std::thread::sleep(Duration::from_millis(300));
    }
    let out = child.wait_with_output().unwrap();
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(130), "{err}");
    assert!(err.contains("quitting now"), "{err}");
    assert!(err.contains("3000 events NOT delivered, saved to"), "{err}");
    assert!(
        err.contains("ship the rest with: dockwatch resume"),
        "{err}"
    );
    assert!(server.messages(&job.group, &job.stream).is_empty());
    assert_eq!(
        containers_with_label(&job.label).len(),
        1,
        "kept for resume"
    );

    // CloudWatch is back: resume ships exactly what was missing, then cleans up.
    server.faults(|f| f.outage_puts = false);
    let out = resume(&state, Some(&spool));
    // The container's code: the first signal's SIGTERM ended it (under the engine's init the
    // shell is not PID 1, so it does not ignore SIGTERM).
    assert_eq!(out.status.code(), Some(143), "{}", stderr(&out));
    assert_numbered_prefix(&server.messages(&job.group, &job.stream));
    assert_eq!(server.messages(&job.group, &job.stream).len(), 3000);
    assert!(containers_with_label(&job.label).is_empty());
    assert!(
        std::fs::read_dir(&state).map_or(true, |mut d| d.next().is_none()),
        "checkpoint left"
    );
    assert!(
        std::fs::read_dir(&spool).map_or(true, |mut d| d.next().is_none()),
        "spool left"
    );
}

#[test]
fn flush_timeout_spools_and_resume_spool_delivers() {
    let server = StrictServer::start();
    let state = std::env::temp_dir().join(unique("state"));
    let spool = std::env::temp_dir().join(unique("spool"));
    let mut job = Job::new(&server.url, "seq 1 500; sleep 600");
    job.quiet_with_summary()
        .arg("--stop-timeout")
        .arg("1s")
        .arg("--flush-timeout")
        .arg("2s");
    job.arg("--state-dir").arg(state.to_str().unwrap());
    job.arg("--spool-dir").arg(spool.to_str().unwrap());
    server.faults(|f| f.outage_puts = true);
    let child = job.spawn();
    std::thread::sleep(Duration::from_millis(1500));
    signal(&child, "TERM");
    let out = child.wait_with_output().unwrap();
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(143), "{err}");
    assert!(err.contains("--flush-timeout reached"), "{err}");
    let files: Vec<_> = std::fs::read_dir(&spool)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .collect();
    assert_eq!(files.len(), 1, "{err}");
    cleanup(&job.label);

    server.faults(|f| f.outage_puts = false);
    let out = dockwatch()
        .args(["resume", "--spool", files[0].to_str().unwrap()])
        .args([
            "--aws-access-key-id",
            "AKIDTESTKEY",
            "--aws-secret-access-key",
            "x",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let got = server.messages(&job.group, &job.stream);
    assert_eq!(assert_numbered_prefix(&got), 500);
    assert!(!files[0].exists(), "delivered spool removed");
}

#[test]
fn sigkill_then_resume_is_complete_and_duplicate_free() {
    let server = StrictServer::start();
    // Requests take a while, so some are in flight when dockwatch dies.
    server.faults(|f| f.latency = Duration::from_millis(150));
    kill_at_moments_then_resume(&server, 4);
    server.with_stats(|s| assert_eq!(s.violations, 0));
}

/// `dockwatch resume` started in the background.
fn spawn_resume(state: &std::path::Path) -> Child {
    dockwatch()
        .args(["resume", "--state-dir", state.to_str().unwrap()])
        .quiet_with_summary()
        .args([
            "--aws-access-key-id",
            "AKIDTESTKEY",
            "--aws-secret-access-key",
            "x",
        ])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap()
}

/// 30% throttled, 10% 5xx, 50 ms on every request: batches sit in backoff while later ones
/// are stored (holes past the checkpoint's position).
fn faulty_server() -> StrictServer {
    let server = StrictServer::start();
    server.faults(|f| {
        f.throttle = 0.3;
        f.server_error = 0.1;
        f.latency = Duration::from_millis(50);
    });
    server
}

const PACED_30K: &str = "i=0; while [ $i -lt 30000 ]; do i=$((i+1)); echo $i; if [ $((i % 1000)) -eq 0 ]; then sleep 0.1; fi; done";

fn assert_exactly_once(server: &StrictServer, job: &Job, what: &str) {
    let stored = server.archive(&job.group, &job.stream);
    assert_eq!(stored.len(), 30000, "{what}: duplicates or losses");
    assert_numbered_prefix(&server.messages(&job.group, &job.stream));
}

#[test]
fn sigkill_under_throttling_and_5xx_then_resume_sends_exactly_the_holes() {
    let server = faulty_server();
    kill_at_moments_then_resume(&server, 10);
    server.with_stats(|s| {
        assert_eq!(s.violations, 0);
        assert!(
            s.throttled > 0 && s.server_errors > 0,
            "the faults happened"
        );
    });
}

/// `runs` jobs of 30,000 numbered lines, each SIGKILLed at a "random" moment while it ships
/// (once its checkpoint exists: before that there is nothing to resume), then resumed: every
/// line exactly once, in order, and resume cleans up.
fn kill_at_moments_then_resume(server: &StrictServer, runs: usize) {
    for (n, wait_ms) in moments(runs).into_iter().enumerate() {
        let (job, state) = killed_while_shipping(server, wait_ms);
        let before = server.archive(&job.group, &job.stream).len();
        let out = resume(&state, None);
        let what = format!(
            "kill {n} at {wait_ms} ms ({before} stored before resume): {}",
            stderr(&out)
        );
        assert_eq!(out.status.code(), Some(0), "{what}");
        assert_exactly_once(server, &job, &what);
        assert!(
            containers_with_label(&job.label).is_empty(),
            "resume cleans up"
        );
    }
}

/// A job of 30,000 numbered lines SIGKILLed `wait_ms` after its checkpoint exists (from then
/// on a killed run has something to resume); its state directory.
fn killed_while_shipping(server: &StrictServer, wait_ms: u64) -> (Job, std::path::PathBuf) {
    let state = std::env::temp_dir().join(unique("state"));
    let mut job = Job::new(&server.url, PACED_30K);
    job.quiet_with_summary()
        .arg("--state-dir")
        .arg(state.to_str().unwrap());
    let child = job.spawn();
    wait_for_checkpoint(&state);
    std::thread::sleep(Duration::from_millis(wait_ms));
    signal(&child, "KILL");
    let _ = child.wait_with_output();
    (job, state)
}

#[test]
fn a_chain_of_kills_and_resumes_under_faults_delivers_exactly_once() {
    let server = faulty_server();
    let (job, state) = killed_while_shipping(&server, 900);
    // Each resume is killed in turn while it ships.
    for wait_ms in [700, 1100, 500] {
        let child = spawn_resume(&state);
        std::thread::sleep(Duration::from_millis(wait_ms));
        signal(&child, "KILL");
        let _ = child.wait_with_output();
    }
    let out = resume(&state, None);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_exactly_once(&server, &job, &stderr(&out));
    assert!(containers_with_label(&job.label).is_empty());
}

#[test]
fn resume_without_checkpoint_is_a_clear_error() {
    let state = std::env::temp_dir().join(unique("empty-state"));
    let out = dockwatch()
        .args(["resume", "--state-dir", state.to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(125));
    assert!(
        stderr(&out).contains("dockwatch: error: no checkpoint in"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn sigkill_then_resume_with_split_streams() {
    let server = StrictServer::start();
    server.faults(|f| f.latency = Duration::from_millis(150));
    let state = std::env::temp_dir().join(unique("state"));
    let mut job = Job::new(
        &server.url,
        "i=0; while [ $i -lt 8000 ]; do i=$((i+1)); echo $i; echo $i >&2; if [ $((i % 500)) -eq 0 ]; then sleep 0.1; fi; done",
    );
    job.quiet_with_summary()
        .arg("--split-streams")
        .arg("--state-dir")
        .arg(state.to_str().unwrap());
    let child = job.spawn();
    wait_for_checkpoint(&state);
    std::thread::sleep(Duration::from_millis(700));
    signal(&child, "KILL");
    let _ = child.wait_with_output();
    let out = resume(&state, None);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    for s in ["stdout", "stderr"] {
        let got = server.archive(&job.group, &format!("{}/{s}", job.stream));
        assert_eq!(got.len(), 8000, "{s}: {}", stderr(&out));
        assert_numbered_prefix(&got);
    }
    assert!(containers_with_label(&job.label).is_empty());
}

#[test]
fn a_signal_during_a_start_up_call_that_never_answers_ends_it_at_once() {
    // An endpoint that accepts connections and never answers: the SDK would wait for its
    // timeouts (tens of seconds per call) before failing.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let held = std::thread::spawn(move || {
        let mut conns = Vec::new();
        for c in listener.incoming().take(8) {
            conns.push(c);
        }
        std::thread::sleep(Duration::from_secs(60));
    });
    let mut job = Job::new(&url, "echo never");
    let child = job.spawn();
    std::thread::sleep(Duration::from_millis(1500));
    let t0 = Instant::now();
    signal(&child, "INT");
    let out = child.wait_with_output().unwrap();
    assert!(
        t0.elapsed() < Duration::from_secs(3),
        "took {:?} to stop",
        t0.elapsed()
    );
    assert_eq!(out.status.code(), Some(130), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("interrupted before the container started"),
        "{}",
        stderr(&out)
    );
    assert!(containers_with_label(&job.label).is_empty());
    drop(held);
}

/// `docker rm -f` of a job's container as soon as it exists (`delay` after that).
fn remove_its_container(job: &Job, delay: Duration) -> String {
    let mut ids = Vec::new();
    assert!(wait_until(Duration::from_secs(30), || {
        ids = containers_with_label(&job.label);
        !ids.is_empty()
    }));
    std::thread::sleep(delay);
    let ok = Command::new("docker")
        .args(["rm", "-f", &ids[0]])
        .output()
        .unwrap();
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    ids.remove(0)
}

#[test]
fn a_container_removed_while_shipping_is_a_clear_error_within_seconds() {
    let server = StrictServer::start();
    let state = std::env::temp_dir().join(unique("state"));
    let mut job = Job::new(
        &server.url,
        "i=0; while true; do i=$((i+1)); echo $i; sleep 0.01; done",
    );
    job.quiet_with_summary()
        .arg("--state-dir")
        .arg(state.to_str().unwrap());
    let child = job.spawn();
    assert!(wait_until(Duration::from_secs(30), || {
        server.messages(&job.group, &job.stream).len() > 50
    }));
    let err = removed_under_it(&job, child, Duration::ZERO, &state);
    assert!(
        err.contains("disappeared while its output was being shipped"),
        "{err}"
    );
    assert_numbered_prefix(&server.messages(&job.group, &job.stream));
}

/// Removes the job's container `delay` after it exists: dockwatch ends within 5 s, exit 125,
/// without a panic and with nothing left to resume. Returns its stderr.
fn removed_under_it(job: &Job, child: Child, delay: Duration, state: &std::path::Path) -> String {
    remove_its_container(job, delay);
    let removed = Instant::now();
    let out = child.wait_with_output().unwrap();
    let err = stderr(&out);
    let took = removed.elapsed();
    assert!(
        took < Duration::from_secs(5),
        "{delay:?}: took {took:?}: {err}"
    );
    assert_eq!(out.status.code(), Some(125), "{delay:?}: {err}");
    assert!(err.contains("disappeared"), "{delay:?}: {err}");
    assert!(!err.contains("panicked"), "{err}");
    assert!(
        checkpoint_files(state).is_empty(),
        "{delay:?}: nothing left to resume: {err}"
    );
    err
}

#[test]
fn a_container_removed_right_after_create_is_a_clear_error() {
    let server = StrictServer::start();
    for delay_ms in [0, 30, 150] {
        let state = std::env::temp_dir().join(unique("state"));
        let mut job = Job::new(&server.url, "sleep 0.2; echo hello; sleep 30");
        job.quiet_with_summary()
            .arg("--state-dir")
            .arg(state.to_str().unwrap());
        let child = job.spawn();
        removed_under_it(&job, child, Duration::from_millis(delay_ms), &state);
    }
}

fn checkpoint_files(state: &std::path::Path) -> Vec<std::path::PathBuf> {
    std::fs::read_dir(state)
        .map(|d| {
            d.flatten()
                .map(|e| e.path())
                .filter(|p| p.extension().is_some_and(|x| x == "json"))
                .collect()
        })
        .unwrap_or_default()
}

/// The number before " events NOT delivered" in a summary.
fn not_delivered(err: &str) -> Option<u64> {
    let at = err.find(" events NOT delivered")?;
    let digits: String = err[..at]
        .chars()
        .rev()
        .take_while(|c| c.is_ascii_digit())
        .collect();
    digits.chars().rev().collect::<String>().parse().ok()
}

/// A job whose container writes 200,000 lines and exits while CloudWatch takes nothing, so
/// that most of its output is still unread in the engine's log when dockwatch gives up.
fn exited_with_unread_output(server: &StrictServer, extra: &[&str]) -> (Job, Child) {
    let state = std::env::temp_dir().join(unique("state"));
    let spool = std::env::temp_dir().join(unique("spool"));
    let mut job = Job::new(&server.url, "seq 1 200000");
    job.quiet_with_summary();
    job.arg("--state-dir").arg(state.to_str().unwrap());
    job.arg("--spool-dir").arg(spool.to_str().unwrap());
    for a in extra {
        job.arg(a);
    }
    server.faults(|f| f.outage_puts = true);
    let child = job.spawn();
    let exited = wait_until(Duration::from_secs(30), || {
        containers_with_label(&job.label).first().is_some_and(|id| {
            let out = Command::new("docker")
                .args(["inspect", "-f", "{{.State.Running}}", id])
                .output()
                .unwrap();
            String::from_utf8_lossy(&out.stdout).trim() == "false"
        })
    });
    assert!(exited, "the container did not exit");
    std::thread::sleep(Duration::from_millis(500));
    (job, child)
}

/// The third signal quits at once: the rest of the log is counted for half a second at
/// most, so the summary says exactly 200,000, or "at least N" when counting them took longer
/// (a debug build on a loaded machine); `dockwatch resume` then ships exactly the rest.
#[test]
fn quitting_after_the_container_exited_counts_the_undelivered_events_and_resume_ships_them() {
    let server = StrictServer::start();
    let (job, child) = exited_with_unread_output(&server, &[]);
    for _ in 0..3 {
        signal(&child, "INT");
        std::thread::sleep(Duration::from_millis(300));
    }
    let out = child.wait_with_output().unwrap();
    let err = stderr(&out);
    assert_eq!(
        out.status.code(),
        Some(125),
        "undelivered events exit non-zero: {err}"
    );
    let n = not_delivered(&err).unwrap_or_else(|| panic!("no count: {err}"));
    if err.contains(&format!("at least {n} events NOT delivered")) {
        assert!(n <= 200_000, "{err}");
    } else {
        assert_eq!(n, 200_000, "{err}");
    }
    assert!(err.contains("still unread in the container's log"), "{err}");
    assert!(
        err.contains("ship the rest with: dockwatch resume"),
        "{err}"
    );
    assert!(server.messages(&job.group, &job.stream).is_empty());

    // CloudWatch is back: resume ships all of it, once, in order.
    server.faults(|f| f.outage_puts = false);
    let state = err
        .split("its checkpoint in ")
        .nth(1)
        .and_then(|r| r.split(';').next())
        .unwrap_or_else(|| panic!("no checkpoint named: {err}"));
    let out = resume(std::path::Path::new(state), None);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let want: Vec<String> = (1..=200_000).map(|i| i.to_string()).collect();
    assert!(
        server.messages(&job.group, &job.stream) == want,
        "not 1..200000 once each"
    );
    assert!(containers_with_label(&job.label).is_empty());
    cleanup(&job.label);
}

#[test]
fn the_flush_deadline_after_the_container_exited_counts_every_undelivered_event() {
    let server = StrictServer::start();
    let (job, child) = exited_with_unread_output(&server, &["--flush-timeout", "2s"]);
    signal(&child, "TERM");
    let out = child.wait_with_output().unwrap();
    let err = stderr(&out);
    assert!(err.contains("--flush-timeout reached"), "{err}");
    assert_eq!(out.status.code(), Some(125), "{err}");
    assert_eq!(not_delivered(&err), Some(200_000), "{err}");
    cleanup(&job.label);
}
