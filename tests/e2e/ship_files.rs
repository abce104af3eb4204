//! `dockwatch ship` on the engine's own log files (the default read path): containers that
//! live a millisecond and are removed at once, rotation while `ship` runs and while it is
//! stopped, long and multi-byte lines cut by the engine, a container restarted by its policy,
//! other logging drivers, and files this process cannot read.

use std::process::{Command, Stdio};
use std::time::Duration;

use crate::common::*;
use crate::ship::{Ship, container, exited, lines};
use crate::strict_server::StrictServer;

/// The daemon's status table (`--status`).
fn status(state: &std::path::Path) -> String {
    let out = dockwatch()
        .args(["ship", "--status", "--state-dir"])
        .arg(state)
        .output()
        .unwrap();
    stdout(&out)
}

/// `docker run -d --rm` of `n` containers at once, each printing `lines` lines and exiting.
fn short_lived(label: &str, run: usize, n: usize, lines: usize) -> Vec<String> {
    let names: Vec<String> = (0..n).map(|i| format!("{label}-r{run}-{i}")).collect();
    let children: Vec<_> = names
        .iter()
        .map(|name| {
            Command::new("docker")
                .args(["run", "-d", "--rm", "--name", name, "--label"])
                .arg(format!("dockwatch.test={label}"))
                .args([
                    IMAGE,
                    "bash",
                    "-c",
                    &format!("for i in $(seq 1 {lines}); do echo {name}-$i; done"),
                ])
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    for c in children {
        let out = c.wait_with_output().unwrap();
        assert!(out.status.success(), "{}", stderr(&out));
    }
    names
}

#[test]
fn rm_containers_that_live_a_millisecond_arrive_whole_in_ten_runs_of_twenty() {
    let server = StrictServer::start();
    let label = unique("ship-rm");
    let state = std::env::temp_dir().join(&label);
    let group = format!("/e2e/{label}");
    let mut ship = Ship::start(
        &server.url,
        &label,
        &state,
        &["--group", &group, "--stream", "{container_name}"],
    );
    std::thread::sleep(Duration::from_millis(500));
    let mut all = Vec::new();
    for run in 0..10 {
        let names = short_lived(&label, run, 20, 20);
        wait_until(Duration::from_secs(15), || {
            names.iter().all(|n| server.messages(&group, n).len() >= 20)
        });
        all.extend(names);
    }
    std::thread::sleep(Duration::from_secs(1));
    let (code, log) = ship.stop();
    cleanup(&label);
    assert_eq!(code, Some(0), "{log}");
    // Never a line twice or out of order; whole for all but a rare one (the race of ship's
    // event task with a container's whole life, see the README's Limits), measured here.
    let mut whole = 0;
    for n in &all {
        let got = server.messages(&group, n);
        assert!(lines(n, 20).starts_with(&got), "{n}: {got:?}\n{log}");
        whole += usize::from(got.len() == 20);
    }
    eprintln!("--rm containers whole: {whole} of {}", all.len());
    assert!(
        whole * 100 >= all.len() * 98,
        "{whole} of {} whole\n{log}",
        all.len()
    );
    server.with_stats(|s| assert_eq!(s.violations, 0, "{:?}", s.violation_messages));
    let _ = std::fs::remove_dir_all(&state);
}

/// `n` lines of about 100 bytes, as fast as the container can write them.
fn fast_lines(prefix: &str, from: usize, to: usize) -> String {
    format!(
        "awk 'BEGIN {{ for (i = {from}; i <= {to}; i++) printf \"{prefix}-%d-%s\\n\", i, \"{}\" }}'",
        "x".repeat(80)
    )
}

fn numbered(prefix: &str, from: usize, to: usize) -> Vec<String> {
    let pad = "x".repeat(80);
    (from..=to).map(|i| format!("{prefix}-{i}-{pad}")).collect()
}

#[test]
fn rotation_while_ship_runs_loses_nothing_20_mb_at_max_size_1m_max_file_2() {
    let server = StrictServer::start();
    let label = unique("ship-rot");
    let state = std::env::temp_dir().join(&label);
    let group = format!("/e2e/{label}");
    let mut ship = Ship::start(
        &server.url,
        &label,
        &state,
        &["--group", &group, "--stream", "{container_name}"],
    );
    std::thread::sleep(Duration::from_millis(500));
    let name = format!("{label}-c");
    let n = 200_000;
    let id = container(
        &label,
        &name,
        &[],
        &["--log-opt", "max-size=1m", "--log-opt", "max-file=2"],
        &fast_lines(&name, 1, n),
    );
    let complete = wait_until(Duration::from_secs(120), || {
        server.messages(&group, &name).len() >= n
    });
    assert!(exited(&id));
    std::thread::sleep(Duration::from_secs(1));
    let (code, log) = ship.stop();
    // The engine kept 2 files of 1 MB: the rest rotated away while ship read.
    let kept = Command::new("docker")
        .args(["logs", &id])
        .output()
        .unwrap()
        .stdout
        .split(|b| *b == b'\n')
        .count();
    cleanup(&label);
    assert!(
        complete,
        "{} of {n}: {log}",
        server.messages(&group, &name).len()
    );
    assert_eq!(code, Some(0), "{log}");
    assert!(
        kept < n / 5,
        "the engine kept {kept} lines: no rotation to speak of"
    );
    assert!(
        server.messages(&group, &name) == numbered(&name, 1, n),
        "order or content"
    );
    assert!(!log.contains("rotated away"), "{log}");
    server.with_stats(|s| assert_eq!(s.violations, 0, "{:?}", s.violation_messages));
    let _ = std::fs::remove_dir_all(&state);
}

/// The gauge of a metrics exposition for `name` (the first series).
fn metric(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .find(|l| l.starts_with(&format!("{name}{{")))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

#[test]
fn rotation_while_ship_is_stopped_is_reported_with_its_exact_range() {
    let server = StrictServer::start();
    let label = unique("ship-gap");
    let state = std::env::temp_dir().join(&label);
    let gate = std::env::temp_dir().join(format!("{label}-gate"));
    std::fs::create_dir_all(&gate).unwrap();
    let group = format!("/e2e/{label}");
    let port = free_port();
    let addr = format!("127.0.0.1:{port}");
    let args = ["--group", &group, "--stream", "{container_name}"];
    let mut ship = Ship::start(&server.url, &label, &state, &args);
    let name = format!("{label}-c");
    // Phase 1 while ship runs; phase 2 (5 MB, five rotations of 1 MB with 2 files kept)
    // once the gate opens; then phase 3, and the container stays.
    let script = format!(
        "{}; until [ -e /gate/open ]; do sleep 0.1; done; {}; {}; sleep 600",
        fast_lines(&name, 1, 1000),
        fast_lines(&name, 1001, 51_000),
        fast_lines(&name, 51_001, 51_010),
    );
    let mount = format!("{}:/gate:ro", gate.display());
    let extra = [
        "-v",
        &mount,
        "--log-opt",
        "max-size=1m",
        "--log-opt",
        "max-file=2",
    ];
    container(&label, &name, &[], &extra, &script);
    assert!(wait_until(Duration::from_secs(30), || {
        server.messages(&group, &name).len() >= 1000
    }));
    let (code, log) = ship.stop();
    assert_eq!(code, Some(0), "{log}");
    std::fs::write(gate.join("open"), b"").unwrap();
    let written = wait_until(Duration::from_secs(60), || {
        let out = Command::new("docker")
            .args(["logs", "--tail", "1", &name])
            .output()
            .unwrap();
        stdout(&out).contains(&format!("{name}-51010-"))
    });
    assert!(written);
    let mut metrics = vec!["--metrics-addr", &addr];
    metrics.extend(args);
    let mut ship = Ship::start(&server.url, &label, &state, &metrics);
    let arrived = wait_until(Duration::from_secs(60), || {
        server
            .messages(&group, &name)
            .last()
            .is_some_and(|m| m.starts_with(&format!("{name}-51010-")))
    });
    wait_for_port(port, Duration::from_secs(10));
    let text = http_get(port, "/metrics");
    // The status file is replaced every 2 s.
    let mut shown = String::new();
    wait_until(Duration::from_secs(10), || {
        shown = status(&state);
        shown.contains("gap(s)")
    });
    let (code, log) = ship.stop();
    cleanup(&label);
    let _ = std::fs::remove_dir_all(&gate);
    assert!(arrived, "{log}");
    assert_eq!(code, Some(0), "{log}");
    // Delivered: phase 1, then one unbroken run to the end; nothing twice.
    let events = server.events(&group, &name);
    let got: Vec<String> = events.iter().map(|e| e.1.clone()).collect();
    assert_eq!(got[..1000], numbered(&name, 1, 1000)[..]);
    let first_after: usize = got[1000]
        .strip_prefix(&format!("{name}-"))
        .and_then(|r| r.split('-').next())
        .and_then(|n| n.parse().ok())
        .unwrap();
    assert!(
        first_after > 1001,
        "nothing rotated away: the test did not test"
    );
    assert!(
        got[1000..] == numbered(&name, first_after, 51_010)[..],
        "one gap only"
    );
    // Said once, with the range: after the last line of phase 1, before the first kept one.
    assert_eq!(log.matches("rotated away").count(), 1, "{log}");
    let rotation = metric(&text, "dockwatch_ship_rotation_gaps_total");
    assert_eq!(rotation, Some(1.0), "{text}");
    let after = metric(
        &text,
        "dockwatch_ship_rotation_lost_after_timestamp_seconds",
    )
    .unwrap();
    let before = metric(
        &text,
        "dockwatch_ship_rotation_lost_before_timestamp_seconds",
    )
    .unwrap();
    assert_eq!((after * 1000.0).round() as i64, events[999].0, "{text}");
    assert_eq!((before * 1000.0).round() as i64, events[1000].0, "{text}");
    assert!(shown.contains("1 gap(s)"), "{shown}");
    server.with_stats(|s| assert_eq!(s.violations, 0, "{:?}", s.violation_messages));
    let _ = std::fs::remove_dir_all(&state);
}

#[test]
fn lines_the_engine_cuts_arrive_as_it_stores_them_and_two_mebibytes_byte_exact() {
    let server = StrictServer::start();
    let label = unique("ship-long");
    let state = std::env::temp_dir().join(&label);
    let group = format!("/e2e/{label}");
    let mut ship = Ship::start(
        &server.url,
        &label,
        &state,
        &["--group", &group, "--stream", "{container_name}"],
    );
    // 40 KiB of two-byte characters, offset by one byte: the engine's 16 KiB cuts fall
    // inside characters. Then 2 MiB of one line.
    let multi = format!("{label}-multi");
    let script = "printf x; for i in $(seq 1 20480); do printf '\\303\\251'; done; echo";
    container(&label, &multi, &[], &[], script);
    let long = format!("{label}-long");
    container(
        &label,
        &long,
        &[],
        &[],
        "head -c 2097152 /dev/zero | tr '\\0' 'q'; echo; echo after",
    );
    let done = wait_until(Duration::from_secs(60), || {
        !server.messages(&group, &multi).is_empty()
            && server.messages(&group, &long).last().map(String::as_str) == Some("after")
    });
    std::thread::sleep(Duration::from_secs(1));
    let engine = Command::new("docker")
        .args(["logs", &multi])
        .output()
        .unwrap();
    let (code, log) = ship.stop();
    cleanup(&label);
    assert!(done, "{log}");
    assert_eq!(code, Some(0), "{log}");
    // What the engine stores (its cuts made two U+FFFD of each split character) is what
    // arrives, as `docker logs` shows it.
    let stored = String::from_utf8(engine.stdout).unwrap();
    let got = server.messages(&group, &multi).concat();
    assert_eq!(got, stored.trim_end_matches('\n'));
    assert!(got.contains('\u{FFFD}'), "no cut fell inside a character");
    assert_eq!(
        got.chars().filter(|c| *c == 'é').count() + got.matches('\u{FFFD}').count() / 2,
        20480
    );
    let long_events = server.messages(&group, &long);
    assert_eq!(long_events.last().map(String::as_str), Some("after"));
    let body = long_events[..long_events.len() - 1].concat();
    assert!(body.len() == 2_097_152 && body.bytes().all(|b| b == b'q'));
    let _ = std::fs::remove_dir_all(&state);
}

#[test]
fn a_container_restarted_by_its_policy_ships_each_run_in_order() {
    let server = StrictServer::start();
    let label = unique("ship-policy");
    let state = std::env::temp_dir().join(&label);
    let group = format!("/e2e/{label}");
    let mut ship = Ship::start(
        &server.url,
        &label,
        &state,
        &["--group", &group, "--stream", "{container_name}"],
    );
    let name = format!("{label}-c");
    // Three runs (on-failure:2), each numbering its lines after the ones before.
    let script = format!(
        "n=$(cat /tmp/n 2>/dev/null || echo 0); for i in $(seq 1 100); do echo {name}-$((n * 100 + i)); done; echo $((n + 1)) > /tmp/n; exit 1"
    );
    let id = container(&label, &name, &[], &["--restart", "on-failure:2"], &script);
    let done = wait_until(Duration::from_secs(60), || {
        server.messages(&group, &name).len() >= 300
    });
    std::thread::sleep(Duration::from_secs(1));
    let engine = Command::new("docker").args(["logs", &id]).output().unwrap();
    let (code, log) = ship.stop();
    cleanup(&label);
    assert!(done, "{log}");
    assert_eq!(code, Some(0), "{log}");
    assert_eq!(server.messages(&group, &name), lines(&name, 300));
    assert_eq!(stdout(&engine).lines().count(), 300);
    let _ = std::fs::remove_dir_all(&state);
}

#[test]
fn the_local_driver_goes_through_the_logs_endpoint_and_none_is_skipped_with_the_reason() {
    let server = StrictServer::start();
    let label = unique("ship-drivers");
    let state = std::env::temp_dir().join(&label);
    let group = format!("/e2e/{label}");
    let mut ship = Ship::start(
        &server.url,
        &label,
        &state,
        &["--group", &group, "--stream", "{container_name}"],
    );
    let local = format!("{label}-local");
    let script = format!("for i in $(seq 1 50); do echo {local}-$i; done; sleep 600");
    container(&label, &local, &[], &["--log-driver", "local"], &script);
    let none = format!("{label}-none");
    container(
        &label,
        &none,
        &[],
        &["--log-driver", "none"],
        "echo hidden; sleep 600",
    );
    let mut shown = String::new();
    let done = wait_until(Duration::from_secs(30), || {
        shown = status(&state);
        server.messages(&group, &local).len() >= 50 && shown.contains("skipped (")
    });
    let (code, log) = ship.stop();
    cleanup(&label);
    assert!(done, "{log}");
    assert_eq!(code, Some(0), "{log}");
    assert_eq!(server.messages(&group, &local), lines(&local, 50));
    assert!(!server.stream_names(&group).contains(&none));
    assert!(
        log.contains(&format!("({none}) not shipped: its logging driver is none")),
        "{log}"
    );
    let row = |name: &str| {
        shown
            .lines()
            .find(|l| l.contains(name))
            .unwrap_or("")
            .to_string()
    };
    assert!(
        row(&local).contains("logs endpoint (the local driver"),
        "{shown}"
    );
    assert!(
        row(&none).contains("skipped (its logging driver is none"),
        "{shown}"
    );
    let _ = std::fs::remove_dir_all(&state);
}

#[test]
fn files_this_process_cannot_read_fall_back_to_the_logs_endpoint_said_once() {
    let server = StrictServer::start();
    let label = unique("ship-noroot");
    let state = std::env::temp_dir().join(&label);
    std::fs::create_dir_all(&state).unwrap();
    let _ = Command::new("chmod").arg("777").arg(&state).status();
    let group = format!("/e2e/{label}");
    // As nobody, in the docker socket's group: the engine answers, its files do not open.
    let gid = Command::new("stat")
        .args(["-c", "%g", "/var/run/docker.sock"])
        .output()
        .unwrap();
    let gid = stdout(&gid).trim().to_string();
    let c = dockwatch_with_env(&server.url);
    // A copy nobody can run, wherever the checkout is.
    let program = state.join("dockwatch");
    std::fs::copy(c.get_program(), &program).unwrap();
    let mut cmd = Command::new("setpriv");
    cmd.args([
        "--reuid=65534",
        &format!("--regid={gid}"),
        "--clear-groups",
        "--",
    ])
    .arg(&program)
    .args(["ship", "--label", &format!("dockwatch.test={label}")])
    .arg("--state-dir")
    .arg(&state)
    .args(["--group", &group, "--stream", "{container_name}"])
    .env("HOME", &state)
    .env("XDG_STATE_HOME", &state)
    .current_dir(&state)
    .stdout(Stdio::null())
    .stderr(Stdio::piped());
    for (k, v) in c.get_envs() {
        match v {
            Some(v) => cmd.env(k, v),
            None => cmd.env_remove(k),
        };
    }
    let mut ship = Ship::from(cmd.spawn().unwrap());
    let name = format!("{label}-c");
    container(
        &label,
        &name,
        &[],
        &[],
        &crate::ship::script(&name, 30, "0.5"),
    );
    let mut shown = String::new();
    let done = wait_until(Duration::from_secs(30), || {
        shown = status(&state);
        server.messages(&group, &name).len() >= 30 && shown.contains("logs endpoint (")
    });
    let (code, log) = ship.stop();
    cleanup(&label);
    assert!(done, "{log}");
    assert_eq!(code, Some(0), "{log}");
    assert_eq!(server.messages(&group, &name), lines(&name, 30));
    assert_eq!(
        log.matches("reading through the engine's logs endpoint: /var/lib/docker/containers is not readable by this process (it needs root or CAP_DAC_READ_SEARCH)").count(),
        1,
        "{log}"
    );
    assert!(
        shown.contains("logs endpoint (the files are not read on this host)"),
        "{shown}"
    );
    let _ = std::fs::remove_dir_all(&state);
}
