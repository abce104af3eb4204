//! The main job end to end: the real binary, the real Docker engine, moto as CloudWatch Logs.
//! Every test reads back what arrived with GetLogEvents.

use crate::common::*;
use crate::strict_server::StrictServer;
use std::time::Duration;

#[test]
fn the_users_example_ships_a_counter_in_order() {
    let url = moto_url();
    // The python counter, adapted to the local image (no registry here).
    let mut job = Job::new(
        &url,
        "counter=0; while [ $counter -lt 25 ]; do echo $counter; counter=$((counter + 1)); sleep 0.1; done",
    );
    let out = job.output();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let want: Vec<String> = (0..25).map(|i| i.to_string()).collect();
    let events = read_events(&url, &job.group, &job.stream);
    let got: Vec<String> = events.iter().map(|(_, m)| m.clone()).collect();
    assert_eq!(got, want);
    // Timestamps are Docker's receive times: ~100 ms apart, non-decreasing, recent.
    assert!(events.windows(2).all(|w| w[0].0 <= w[1].0));
    let span = events.last().unwrap().0 - events[0].0;
    assert!((2000..10_000).contains(&span), "span {span} ms");
    assert!((now_ms() - events[0].0).abs() < 120_000);
    // Echoed on the terminal's stdout too, and a summary on stderr.
    assert_eq!(stdout(&out).lines().collect::<Vec<_>>(), want);
    assert!(
        stderr(&out).contains("shipped 25 events"),
        "{}",
        stderr(&out)
    );
    assert!(
        containers_with_label(&job.label).is_empty(),
        "container left behind"
    );
}

#[test]
fn creates_missing_group_and_stream() {
    let url = moto_url();
    let mut job = Job::new(&url, "echo fresh");
    let out = job.output();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(messages(&url, &job.group, &job.stream), ["fresh"]);
}

#[test]
fn existing_group_missing_stream() {
    let url = moto_url();
    let mut job = Job::new(&url, "echo into-existing-group");
    precreate(&url, &job.group, None);
    let out = job.output();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(
        messages(&url, &job.group, &job.stream),
        ["into-existing-group"]
    );
}

#[test]
fn existing_group_and_stream_are_appended_to() {
    let url = moto_url();
    let mut job = Job::new(&url, "echo appended");
    precreate(&url, &job.group, Some(&job.stream));
    put_one(
        &url,
        &job.group,
        &job.stream,
        now_ms() - 60_000,
        "already there",
    );
    let out = job.output();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(
        messages(&url, &job.group, &job.stream),
        ["already there", "appended"]
    );
}

/// `-q` is silent when everything was delivered (cron mails any output), whatever the
/// container's exit code says; `--verbose` keeps the summary; what was not delivered is
/// still said.
#[test]
fn quiet_prints_nothing_when_everything_was_delivered() {
    let url = moto_url();
    // The secret in the environment: on the command line it is warned about, also with -q.
    let (group, stream, label) = (unique("grp"), unique("str"), unique("t"));
    let out = dockwatch_with_env(&url)
        .args([
            "--docker-image",
            IMAGE,
            "--bash-command",
            "seq 1 30; echo e >&2; exit 3",
        ])
        .args([
            "--aws-cloudwatch-group",
            &group,
            "--aws-cloudwatch-stream",
            &stream,
        ])
        .args(["--label", &format!("dockwatch.test={label}"), "-q"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    assert_eq!((stdout(&out), stderr(&out)), (String::new(), String::new()));
    assert_eq!(read_events(&url, &group, &stream).len(), 31);
    assert!(
        containers_with_label(&label).is_empty(),
        "container left behind"
    );

    let mut job = Job::new(&url, "seq 1 5");
    let out = job.args(["-q", "--verbose"]).output();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("shipped 5 events"),
        "{}",
        stderr(&out)
    );

    // Not everything arrived as written (the server's clock is 3 hours behind: every event
    // is refused as too new): said, also with -q.
    let server = StrictServer::start();
    server.faults(|f| f.clock_skew_ms = -3 * 3600 * 1000);
    let mut job = Job::new(&server.url, "seq 1 10");
    let out = job.arg("-q").output();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(stdout(&out).is_empty(), "{}", stdout(&out));
    let err = stderr(&out);
    assert!(err.contains("CloudWatch rejected 10 events"), "{err}");
    let (warning, summary) = err.split_once('\n').unwrap_or_default();
    assert!(warning.contains("a secret on the command line"), "{err}");
    assert_eq!(summary.lines().count(), 1, "{err}");
}

#[test]
fn stdout_and_stderr_are_both_shipped_and_echoed_to_their_own_fds() {
    let url = moto_url();
    let mut job = Job::new(
        &url,
        "echo out-1; sleep 0.05; echo err-1 >&2; sleep 0.05; echo out-2; sleep 0.05; echo err-2 >&2",
    );
    let out = job.output();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(
        messages(&url, &job.group, &job.stream),
        ["out-1", "err-1", "out-2", "err-2"]
    );
    assert_eq!(stdout(&out), "out-1\nout-2\n");
    assert!(stderr(&out).starts_with("dockwatch: warning: a secret on the command line"));
    assert!(stderr(&out).contains("err-1\nerr-2\n"), "{}", stderr(&out));
}

#[test]
fn quiet_ships_without_echo() {
    let url = moto_url();
    let mut job = Job::new(&url, "echo hidden; sleep 0.05; echo hidden-err >&2");
    job.quiet_with_summary();
    let out = job.output();
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(stdout(&out), "");
    assert!(!stderr(&out).contains("hidden-err"));
    assert_eq!(
        messages(&url, &job.group, &job.stream),
        ["hidden", "hidden-err"]
    );
}

#[test]
fn exit_codes_are_propagated() {
    let url = moto_url();
    for (cmd, code, last) in [
        ("echo ok; exit 0", 0, "ok"),
        ("echo three; exit 3", 3, "three"),
        // Killed by a signal: 128 + 9, as docker run reports it.
        // (`; exit $?` keeps bash from exec'ing the child as PID 1, which ignores signals.)
        (
            "echo killed; bash -c 'kill -9 $$' 2>/dev/null; exit $?",
            137,
            "killed",
        ),
    ] {
        let mut job = Job::new(&url, cmd);
        let out = job.output();
        assert_eq!(out.status.code(), Some(code), "{cmd}: {}", stderr(&out));
        // (The outer bash reports the kill on stderr: the engine's two copiers may store
        // that line before the echo's, so the order is not checked here.)
        let got = messages(&url, &job.group, &job.stream);
        assert!(got.iter().any(|m| m == last), "{cmd}: {got:?}");
        assert!(stderr(&out).contains(&format!("container exited with code {code}")));
        assert!(containers_with_label(&job.label).is_empty());
    }
}

#[test]
fn non_ascii_utf8_arrives_intact() {
    let url = moto_url();
    let lines = [
        "emoji 😀🚀✨",
        "CJK 日本語 中文 한국어",
        "accents é à ü ñ",
        "RTL שלום مرحبا",
    ];
    let script = lines
        .iter()
        .map(|l| format!("echo '{l}'"))
        .collect::<Vec<_>>()
        .join("; ");
    let mut job = Job::new(&url, &script);
    let out = job.output();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(messages(&url, &job.group, &job.stream), lines);
}

#[test]
fn last_line_without_newline_is_delivered() {
    let url = moto_url();
    let mut job = Job::new(&url, "echo first; printf 'no newline at the end'");
    let out = job.output();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(
        messages(&url, &job.group, &job.stream),
        ["first", "no newline at the end"]
    );
}

#[test]
fn keep_container_keeps_it() {
    let url = moto_url();
    let mut job = Job::new(&url, "echo kept");
    job.arg("--keep-container");
    let out = job.output();
    assert_eq!(out.status.code(), Some(0));
    let left = containers_with_label(&job.label);
    cleanup(&job.label);
    assert_eq!(left.len(), 1, "{}", stderr(&out));
    assert_eq!(messages(&url, &job.group, &job.stream), ["kept"]);
}

#[test]
fn run_subcommand_and_credentials_from_the_environment() {
    let url = moto_url();
    let group = unique("grp");
    let label = unique("t");
    let out = dockwatch()
        .args([
            "run",
            "--docker-image",
            IMAGE,
            "--bash-command",
            "echo via-env",
        ])
        .args([
            "--aws-cloudwatch-group",
            &group,
            "--aws-cloudwatch-stream",
            "s",
        ])
        .args(["--label", &format!("dockwatch.test={label}")])
        .env("AWS_ACCESS_KEY_ID", "AKIDENV")
        .env("AWS_SECRET_ACCESS_KEY", "env-secret")
        .env("AWS_REGION", REGION)
        .env("AWS_ENDPOINT_URL", &url)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(!stderr(&out).contains("visible to other local users"));
    assert_eq!(messages(&url, &group, "s"), ["via-env"]);
}

#[test]
fn help_and_version() {
    let out = dockwatch().arg("--help").output().unwrap();
    assert_eq!(out.status.code(), Some(0));
    let help = stdout(&out);
    for flag in [
        "--docker-image",
        "--bash-command",
        "--aws-cloudwatch-group",
        "--aws-cloudwatch-stream",
        "--aws-access-key-id",
        "--aws-secret-access-key",
        "--aws-region",
        "--aws-endpoint-url",
        "Examples:",
    ] {
        assert!(help.contains(flag), "--help lacks {flag}");
    }
    let out = dockwatch().arg("--version").output().unwrap();
    assert_eq!(out.status.code(), Some(0));
    assert!(stdout(&out).starts_with("dockwatch "));
}

/// A reader of dockwatch's stdout that pauses (a `less`, a slow CI pipe, Ctrl+S) must not hold
/// up delivery: the echo drops what the pipe cannot take, says so, and every line is shipped.
#[test]
fn a_paused_reader_of_stdout_never_stalls_delivery() {
    let server = StrictServer::start();
    // 6.9 MB: more than the pipe (64 KiB) and the echo's queue (4 MiB) hold.
    let mut job = Job::new(&server.url, "seq 1 1000000");
    let mut child = job
        .cmd
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Nobody reads stdout until all is delivered (the pipe, 64 KiB, fills at once); 40 s at
    // most, for a loaded machine: idle, it takes about 5 s.
    let all_in = wait_until(Duration::from_secs(40), || {
        server.with_stats(|s| s.accepted_events) >= 1_000_000
    });
    let delivered = server.with_stats(|s| s.accepted_events);
    // Now read: dockwatch ends.
    let mut stdout = child.stdout.take().unwrap();
    let reading = std::thread::spawn(move || {
        let mut sink = Vec::new();
        std::io::Read::read_to_end(&mut stdout, &mut sink).unwrap();
        sink.len()
    });
    let out = child.wait_with_output().unwrap();
    let echoed = reading.join().unwrap();
    let err = stderr(&out);
    assert!(
        all_in,
        "{delivered} of 1000000 delivered while stdout was paused: {err}"
    );
    assert_eq!(out.status.code(), Some(0), "{err}");
    assert!(
        err.contains("not echoed: the terminal or pipe did not keep up"),
        "{err}"
    );
    assert!(echoed > 0 && echoed < 6_888_896, "echoed {echoed} bytes");
    let got = server.messages(&job.group, &job.stream);
    assert_eq!(got.len(), 1_000_000);
}

/// `dockwatch … 2>&1 >/dev/null | head -1`: stderr closes after its first line. No panic;
/// every line delivered, the container removed, the checkpoint gone.
#[test]
fn a_closed_stderr_stops_neither_shipping_nor_clean_up() {
    let server = StrictServer::start();
    let state = std::env::temp_dir().join(unique("state"));
    let mut job = Job::new(
        &server.url,
        "seq 1 3000; echo to-stderr >&2; sleep 1; seq 3001 5000",
    );
    job.arg("--state-dir").arg(state.to_str().unwrap());
    let mut child = job
        .cmd
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Read the first line (the secret warning), then close the pipe.
    let mut err = std::io::BufReader::new(child.stderr.take().unwrap());
    let mut first = String::new();
    std::io::BufRead::read_line(&mut err, &mut first).unwrap();
    drop(err);
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(0), "exit (101 = panic)");
    assert_eq!(server.messages(&job.group, &job.stream).len(), 5001);
    assert!(
        containers_with_label(&job.label).is_empty(),
        "container removed"
    );
    assert!(!state.exists(), "nothing left behind");
}

/// A run started in `/` keeps its checkpoint under the state home (XDG_STATE_HOME here, as
/// `~/.local/state/dockwatch` or `/var/lib/dockwatch` elsewhere), never in the working
/// directory, and a clean run leaves nothing behind in either.
#[test]
fn a_run_from_the_root_directory_leaves_nothing_there() {
    let url = moto_url();
    let home = std::env::temp_dir().join(unique("state-home"));
    let before: Vec<_> = std::fs::read_dir("/")
        .unwrap()
        .flatten()
        .map(|e| e.file_name())
        .collect();
    let mut job = Job::new(&url, "echo one; sleep 1; echo two");
    job.cmd.current_dir("/").env("XDG_STATE_HOME", &home);
    let mut child = job.spawn();
    // While it runs, the checkpoint is under the state home.
    let state = home.join("dockwatch/state");
    assert!(
        wait_until(Duration::from_secs(20), || std::fs::read_dir(&state)
            .is_ok_and(|mut d| d.next().is_some())),
        "no checkpoint under {}",
        state.display()
    );
    assert_eq!(child.wait().unwrap().code(), Some(0));
    let after: Vec<_> = std::fs::read_dir("/")
        .unwrap()
        .flatten()
        .map(|e| e.file_name())
        .collect();
    let new: Vec<_> = after.iter().filter(|n| !before.contains(n)).collect();
    assert!(new.is_empty(), "left in /: {new:?}");
    assert!(
        !state.exists(),
        "a clean run removes its empty state directory"
    );
    assert_eq!(messages(&url, &job.group, &job.stream), ["one", "two"]);
    let _ = std::fs::remove_dir_all(&home);
}

/// `--retention-days` sets the retention of a group dockwatch creates, leaves an existing
/// group's alone, and a value CloudWatch would refuse is one line before anything runs.
#[test]
fn retention_days_applies_to_groups_it_creates() {
    let url = moto_url();
    let retention = |group: &str| log_group(&url, group).and_then(|g| g.retention_in_days());
    let mut job = Job::new(&url, "echo kept for a week");
    job.arg("--retention-days").arg("7");
    let out = job.output();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(retention(&job.group), Some(7));

    let existing = unique("/dw-ret");
    precreate(&url, &existing, None);
    let mut job = Job::named(&url, IMAGE, "echo x", &existing, "s");
    job.arg("--retention-days").arg("30");
    assert_eq!(job.output().status.code(), Some(0));
    assert_eq!(
        retention(&existing),
        None,
        "an existing group is left as it is"
    );

    let mut job = Job::new(&url, "echo never");
    job.arg("--retention-days").arg("8");
    let out = job.output();
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("--retention-days 8 is not a CloudWatch retention"));
    assert_eq!(
        stderr(&out).trim_end().lines().count(),
        1,
        "{}",
        stderr(&out)
    );
}
