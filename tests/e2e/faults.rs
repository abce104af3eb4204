//! Faults on the CloudWatch side, injected by the strict test server: every line the
//! container wrote arrives exactly once and in order, or dockwatch says what did not.

use std::process::Command;
use std::time::Duration;

use crate::common::*;
use crate::strict_server::{Faults, StrictServer};

/// `n` numbered lines, paced: a pause of 0.1 s every `every` lines.
fn paced(n: usize, every: usize) -> String {
    format!(
        "i=0; while [ $i -lt {n} ]; do i=$((i+1)); echo $i; if [ $((i % {every})) -eq 0 ]; then sleep 0.1; fi; done"
    )
}

fn numbered(n: usize) -> Vec<String> {
    (1..=n).map(|i| i.to_string()).collect()
}

/// Exactly the numbered lines, once each, in order (without printing 10,000 lines).
fn assert_exactly(got: &[String], n: usize) {
    assert_eq!(got.len(), n, "event count");
    if let Some(i) = got.iter().zip(numbered(n)).position(|(g, w)| *g != w) {
        panic!(
            "first difference at {i}: {:?}",
            &got[i..(i + 5).min(got.len())]
        );
    }
}

fn no_violations(server: &StrictServer) {
    server.with_stats(|s| assert_eq!(s.violations, 0, "{:?}", s.violation_messages));
}

#[test]
fn thirty_percent_throttled() {
    let server = StrictServer::start();
    server.faults(|f| f.throttle = 0.3);
    let mut job = Job::new(&server.url, &paced(30_000, 3_000));
    job.quiet_with_summary();
    let out = job.output();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_exactly(&server.messages(&job.group, &job.stream), 30_000);
    assert!(server.with_stats(|s| s.throttled) > 0);
    assert!(stderr(&out).contains("throttled"), "{}", stderr(&out));
    no_violations(&server);
}

#[test]
fn ten_percent_server_errors() {
    let server = StrictServer::start();
    server.faults(|f| f.server_error = 0.1);
    let mut job = Job::new(&server.url, "seq 1 200000");
    job.quiet_with_summary();
    let out = job.output();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_exactly(&server.messages(&job.group, &job.stream), 200_000);
    assert!(server.with_stats(|s| s.server_errors) > 0);
    no_violations(&server);
}

#[test]
fn one_second_latency_on_every_request() {
    let server = StrictServer::start();
    server.faults(|f| f.latency = Duration::from_secs(1));
    let mut job = Job::new(&server.url, "seq 1 100000");
    job.quiet_with_summary();
    let out = job.output();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_exactly(&server.messages(&job.group, &job.stream), 100_000);
    // Several requests in flight at once, or this would take a second per batch.
    assert!(server.with_stats(|s| s.max_concurrent) > 1);
    no_violations(&server);
}

#[test]
fn a_twenty_second_outage() {
    let server = StrictServer::start();
    let mut job = Job::new(&server.url, &paced(20_000, 500)); // ~4 s of output
    job.quiet_with_summary();
    let child = job.spawn();
    std::thread::sleep(Duration::from_millis(1500));
    server.faults(|f| f.outage = true);
    std::thread::sleep(Duration::from_secs(20));
    server.faults(|f| f.outage = false);
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_exactly(&server.messages(&job.group, &job.stream), 20_000);
    assert!(
        server.with_stats(|s| s.dropped) > 0,
        "the outage dropped nothing"
    );
    no_violations(&server);
}

#[test]
fn lost_answers_are_looked_up_not_sent_twice() {
    let server = StrictServer::start();
    server.faults(|f| f.lose_response = 0.05);
    let mut job = Job::new(&server.url, &paced(20000, 500));
    let out = job.quiet_with_summary().output();
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(0), "{err}");
    let lost = server.with_stats(|s| s.lost_responses);
    assert!(lost > 0, "no answer was lost: {err}");
    assert!(
        err.contains(&format!("{lost} lost answers found stored")),
        "the summary counts exactly the server's lost answers ({lost}): {err}"
    );
    assert!(!err.contains("may be stored twice"), "{err}");
    // Exactly once: nothing stored twice, in order.
    assert_exactly(&server.messages(&job.group, &job.stream), 20000);
    no_violations(&server);
}

#[test]
fn group_deleted_mid_run_is_recreated() {
    let server = StrictServer::start();
    let mut job = Job::new(&server.url, &paced(20_000, 500));
    job.quiet_with_summary();
    let child = job.spawn();
    std::thread::sleep(Duration::from_millis(1500));
    server.delete_group(&job.group);
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    // Everything arrived once: before the deletion (in the archive) and after it.
    assert_exactly(&server.archive(&job.group, &job.stream), 20_000);
    let after = server.messages(&job.group, &job.stream);
    assert!(
        !after.is_empty() && after.len() < 20_000,
        "{} events after recreation",
        after.len()
    );
    assert_eq!(after.last().map(String::as_str), Some("20000"));
    assert!(
        stderr(&out).contains("group/stream recreated"),
        "{}",
        stderr(&out)
    );
    no_violations(&server);
}

#[test]
fn rejected_events_are_reported() {
    let server = StrictServer::start();
    // The server's clock runs 3 hours behind: every event is "too new".
    server.faults(|f| f.clock_skew_ms = -3 * 3600 * 1000);
    let mut job = Job::new(&server.url, "seq 1 10");
    let out = job.output();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("CloudWatch rejected 10 events (too old 0, too new 10, expired 0)"),
        "{}",
        stderr(&out)
    );
    assert_eq!(server.with_stats(|s| s.rejected_events), 10);
}

#[test]
fn credentials_refused_at_start() {
    let server = StrictServer::start();
    server.faults(|f| f.deny_auth = true);
    let mut job = Job::new(&server.url, "echo never");
    let out = job.output();
    assert_eq!(out.status.code(), Some(125));
    let err = stderr(&out);
    assert!(
        err.contains("dockwatch: error: AWS refused the credentials: UnrecognizedClientException"),
        "{err}"
    );
    assert!(containers_with_label(&job.label).is_empty());
}

/// Credentials refused mid-run (`refuse` turns the fault on or off): shipping waits for
/// `--credentials-timeout`, gives up with the container still running, and `resume` with good
/// credentials follows it to the end: every line exactly once.
fn credentials_fail_mid_run_then_resume(refuse: fn(&mut Faults, bool), code: &str) {
    let server = StrictServer::start();
    let state = std::env::temp_dir().join(unique("state"));
    let spool = std::env::temp_dir().join(unique("spool"));
    // About 10 s of output.
    let mut job = Job::new(&server.url, &paced(20_000, 200));
    job.quiet_with_summary()
        .arg("--credentials-timeout")
        .arg("2s");
    job.arg("--state-dir").arg(state.to_str().unwrap());
    job.arg("--spool-dir").arg(spool.to_str().unwrap());
    let child = job.spawn();
    std::thread::sleep(Duration::from_millis(1500));
    server.faults(|f| refuse(f, true));
    let out = child.wait_with_output().unwrap();
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(125), "{err}");
    assert!(
        err.contains(
            "retrying for up to 2s (--credentials-timeout) while the container keeps running"
        ),
        "{err}"
    );
    assert!(
        err.contains(&format!(
            "dockwatch: error: delivery to CloudWatch failed: {code}"
        )),
        "{err}"
    );
    assert!(err.contains("container still running"), "{err}");
    assert!(!err.contains("test-secret-do-not-print"));
    // The container still runs, kept for resume.
    let ids = containers_with_label(&job.label);
    assert_eq!(ids.len(), 1, "{err}");
    let running = Command::new("docker")
        .args(["inspect", "-f", "{{.State.Running}}", &ids[0]])
        .output()
        .unwrap();
    assert_eq!(stdout(&running).trim(), "true", "{err}");

    server.faults(|f| refuse(f, false));
    let out = resume(&state, Some(&spool));
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_exactly(&server.messages(&job.group, &job.stream), 20_000);
    assert!(containers_with_label(&job.label).is_empty());
}

#[test]
fn credentials_refused_mid_run_keep_the_container_running_then_resume() {
    credentials_fail_mid_run_then_resume(|f, on| f.deny_auth = on, "UnrecognizedClientException");
}

#[test]
fn credentials_expired_mid_run_keep_the_container_running_then_resume() {
    credentials_fail_mid_run_then_resume(|f, on| f.expired_token = on, "ExpiredTokenException");
}
