//! The attach path (the default read path): the container never waits on CloudWatch, a full
//! disk buffer hands over to the engine's log with nothing lost or repeated, a crash with a
//! backlog in the buffer resumes from the log, and long lines of multi-byte text arrive
//! byte for byte.

use std::time::{Duration, Instant};

use crate::common::*;
use crate::strict_server::StrictServer;

/// 40,000 lines of 1 KiB, then a line with the container's own start and end times
/// (`$EPOCHREALTIME`, seconds).
const TIMED_FLOOD: &str = "s=$EPOCHREALTIME; yes $(printf '%01023d' 0) | head -n 40000; e=$EPOCHREALTIME; echo \"took $s $e\"";

/// Runs the timed flood against a server answering each request after `latency`: the
/// container's own seconds, dockwatch's seconds, and the events stored.
fn timed_flood(latency: Duration) -> (f64, f64, Vec<String>) {
    let server = StrictServer::start();
    server.faults(|f| f.latency = latency);
    let mut job = Job::new(&server.url, TIMED_FLOOD);
    job.quiet_with_summary();
    let t = Instant::now();
    let out = job.output();
    let took = t.elapsed().as_secs_f64();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let stored = server.archive(&job.group, &job.stream);
    let last = stored.last().cloned().unwrap_or_default();
    let times: Vec<f64> = last
        .split_whitespace()
        .skip(1)
        .filter_map(|t| t.parse().ok())
        .collect();
    assert_eq!(times.len(), 2, "the last line: {last:?}");
    (times[1] - times[0], took, stored)
}

#[test]
fn a_slow_cloudwatch_never_holds_the_container_back() {
    let (alone, _, _) = timed_flood(Duration::ZERO);
    let (slow, took, stored) = timed_flood(Duration::from_secs(1));
    // 40 MiB at four requests of 1 MiB per second: CloudWatch sets the pace of delivery...
    assert!(
        took > 6.0,
        "delivery took {took:.1} s: the server was not the bottleneck"
    );
    // ...and not the container's: it writes as fast as with a server that answers at once.
    assert!(
        slow < 2.0 * alone + 1.5,
        "the container took {slow:.2} s beside a slow server, {alone:.2} s beside a fast one"
    );
    assert_eq!(stored.len(), 40_001, "every line once");
    println!(
        "container: {alone:.2} s (fast server), {slow:.2} s (1 s per request; delivered in {took:.1} s)"
    );
}

#[test]
fn a_full_disk_buffer_hands_over_to_the_engines_log_with_nothing_lost_or_repeated() {
    let server = StrictServer::start();
    server.faults(|f| f.latency = Duration::from_millis(200));
    // stdout: 200,000 numbered lines with a 40,000-byte line (three of the engine's messages)
    // after every 50,000; stderr at the same time: e1..e30000.
    let script = "(for i in $(seq 1 100); do seq $((i*2000-1999)) $((i*2000)); if [ $((i % 25)) = 0 ]; then printf long-$i-; head -c 40000 /dev/zero | tr '\\0' L; echo; fi; done) & seq 1 30000 | sed 's/^/e/' >&2; wait";
    let mut job = Job::new(&server.url, script);
    job.quiet_with_summary()
        .arg("--split-streams")
        .arg("--buffer-size")
        .arg("1MiB");
    let out = job.output();
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(0), "{err}");
    assert!(
        err.contains("the rest from the engine's log") && err.contains("--buffer-size"),
        "the handover is in the summary: {err}"
    );
    let mut want = Vec::new();
    for i in 1..=100u64 {
        want.extend((i * 2000 - 1999..=i * 2000).map(|n| n.to_string()));
        if i % 25 == 0 {
            want.push(format!("long-{i}-{}", "L".repeat(40_000)));
        }
    }
    let got = server.archive(&job.group, &format!("{}/stdout", job.stream));
    assert_eq!(got.len(), want.len(), "stdout: {err}");
    let first_bad = got.iter().zip(&want).position(|(g, w)| g != w);
    assert_eq!(first_bad, None, "stdout differs");
    let got = server.archive(&job.group, &format!("{}/stderr", job.stream));
    let want: Vec<String> = (1..=30_000).map(|n| format!("e{n}")).collect();
    assert_eq!(got, want, "stderr");
    assert!(containers_with_label(&job.label).is_empty());
}

#[test]
fn sigkill_with_a_backlog_in_the_disk_buffer_then_resume_reads_the_rest_from_the_log() {
    let server = StrictServer::start();
    server.faults(|f| f.latency = Duration::from_millis(300));
    let state = std::env::temp_dir().join(unique("state"));
    for kill_after in [1, 40_000] {
        let mut job = Job::new(&server.url, "seq 1 200000; sleep 2");
        job.quiet_with_summary()
            .arg("--state-dir")
            .arg(state.to_str().unwrap());
        let child = job.spawn();
        assert!(wait_until(Duration::from_secs(30), || {
            server.archive(&job.group, &job.stream).len() >= kill_after
        }));
        signal(&child, "KILL");
        let _ = child.wait_with_output();
        assert!(
            state.join("buffer").exists(),
            "the killed run's buffer is still there"
        );
        let out = resume(&state, None);
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(0), "{err}");
        let got = server.archive(&job.group, &job.stream);
        assert_eq!(got.len(), 200_000, "killed after {kill_after}: {err}");
        let first_bad = got
            .iter()
            .enumerate()
            .position(|(i, g)| *g != (i + 1).to_string());
        assert_eq!(first_bad, None, "killed after {kill_after}: out of order");
        assert!(!state.exists(), "resume leaves nothing behind: {err}");
        assert!(containers_with_label(&job.label).is_empty());
    }
}

/// A 3 MB line of "€" (three bytes each): the engine's log cuts it every 16 KiB, mostly in the
/// middle of a character, and stores the halves as U+FFFD.
const EURO_LINE: &str = "yes '€€€€€€€€€€' | tr -d '\\n' | head -c 3000000; echo; echo done";

#[test]
fn long_lines_of_multibyte_text_arrive_byte_exact_on_the_attach_path() {
    let server = StrictServer::start();
    let mut job = Job::new(&server.url, EURO_LINE);
    job.quiet_with_summary();
    let out = job.output();
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(0), "{err}");
    let got = server.archive(&job.group, &job.stream);
    assert_eq!(got.last().map(String::as_str), Some("done"), "{err}");
    let line: String = got[..got.len() - 1].concat();
    assert_eq!(line.len(), 3_000_000);
    assert!(line.chars().all(|c| c == '€'), "the line arrived changed");
    assert!(!err.contains("U+FFFD"), "{err}");

    // The logs endpoint: the engine's replacement characters arrive, counted in the summary.
    let mut job = Job::new(&server.url, EURO_LINE);
    job.quiet_with_summary().arg("--read-path").arg("logs");
    let out = job.output();
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(0), "{err}");
    let got = server.archive(&job.group, &job.stream);
    let replaced = got.concat().matches('\u{FFFD}').count();
    assert!(replaced > 100, "{replaced} replaced");
    assert!(
        err.contains(&format!(
            "{replaced} U+FFFD characters as the engine's log stores them"
        )),
        "counted in the summary: {err}"
    );
}
