//! `dockwatch ship`: the host-wide shipper, against the real engine, moto and the strict
//! server. Every daemon here selects only its own test's containers (`--label
//! dockwatch.test=ID`): tests run side by side on one engine.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::common::*;
use crate::strict_server::StrictServer;

/// A `ship` daemon for this test's containers.
pub(crate) struct Ship {
    pub(crate) child: Child,
}

impl Ship {
    pub(crate) fn start(endpoint: &str, label: &str, state: &Path, extra: &[&str]) -> Ship {
        let mut c = dockwatch_with_env(endpoint);
        c.args(["ship", "--label", &format!("dockwatch.test={label}")])
            .arg("--state-dir")
            .arg(state)
            .args(extra)
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        Ship {
            child: c.spawn().expect("start ship"),
        }
    }

    /// A daemon started otherwise, ended with the test however the test ends.
    pub(crate) fn from(child: Child) -> Ship {
        Ship { child }
    }

    /// SIGTERM, then its exit code and what it logged.
    pub(crate) fn stop(&mut self) -> (Option<i32>, String) {
        signal(&self.child, "TERM");
        wait_with_limit(&mut self.child, Duration::from_secs(60))
    }

    /// SIGKILL: no drain, no last save.
    pub(crate) fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A failed assertion must not leave a daemon behind.
impl Drop for Ship {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            self.kill();
        }
    }
}

/// Waits for the child (killing it past `limit`); its code and stderr.
pub(crate) fn wait_with_limit(child: &mut Child, limit: Duration) -> (Option<i32>, String) {
    let start = Instant::now();
    loop {
        if let Some(s) = child.try_wait().unwrap() {
            let mut err = String::new();
            if let Some(mut e) = child.stderr.take() {
                use std::io::Read;
                let _ = e.read_to_string(&mut err);
            }
            assert!(!err.contains("panicked"), "{err}");
            return (s.code(), err);
        }
        if start.elapsed() > limit {
            let _ = child.kill();
            panic!("ship did not end within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// `docker run -d` with this test's label and `labels`; the container's id.
pub(crate) fn container(
    label: &str,
    name: &str,
    labels: &[&str],
    extra: &[&str],
    script: &str,
) -> String {
    let mut c = Command::new("docker");
    c.args(["run", "-d", "--name", name, "--label"])
        .arg(format!("dockwatch.test={label}"));
    for l in labels {
        c.args(["--label", l]);
    }
    let out = c
        .args(extra)
        .args([IMAGE, "bash", "-c", script])
        .output()
        .expect("docker run");
    assert!(out.status.success(), "{}", stderr(&out));
    stdout(&out).trim().to_string()
}

pub(crate) fn exited(id: &str) -> bool {
    let out = Command::new("docker")
        .args(["inspect", "-f", "{{.State.Running}}", id])
        .output()
        .unwrap();
    stdout(&out).trim() == "false"
}

pub(crate) fn lines(prefix: &str, n: usize) -> Vec<String> {
    (1..=n).map(|i| format!("{prefix}-{i}")).collect()
}

pub(crate) fn script(prefix: &str, n: usize, wait_first: &str) -> String {
    format!("sleep {wait_first}; for i in $(seq 1 {n}); do echo {prefix}-$i; done")
}

#[test]
fn ships_the_selected_containers_before_and_after_its_start_to_their_templated_streams() {
    let endpoint = moto_url();
    let label = unique("ship-sel");
    let state = std::env::temp_dir().join(&label);
    let group = |app: &str| format!("/e2e/{label}/{app}");
    // Ten before the start (still running then), ten after: web selected, db excluded by
    // debug=true, none without the app label.
    let kinds = [
        ("web", vec!["app=web"]),
        ("web", vec!["app=web"]),
        ("web", vec!["app=web"]),
        ("web", vec!["app=web"]),
        ("db", vec!["app=db", "debug=true"]),
        ("db", vec!["app=db", "debug=true"]),
        ("db", vec!["app=db", "debug=true"]),
        ("none", vec![]),
        ("none", vec![]),
        ("web", vec!["app=web", "debug=false"]),
    ];
    let mut started = Vec::new();
    for (i, (kind, labels)) in kinds.iter().enumerate() {
        let name = format!("{label}-before-{i}");
        let id = container(&label, &name, labels, &[], &script(&name, 50, "8"));
        started.push((name, *kind, id));
    }
    let mut ship = Ship::start(
        &endpoint,
        &label,
        &state,
        &[
            "--label",
            "app",
            "--exclude-label",
            "debug=true",
            "--group",
            &format!("/e2e/{label}/{{label:app}}"),
            "--stream",
            "{container_name}/{container_id:12}",
            // The logs endpoint (the files path is the default everywhere else).
            "--read-path",
            "logs",
        ],
    );
    std::thread::sleep(Duration::from_secs(1));
    for (i, (kind, labels)) in kinds.iter().enumerate() {
        let name = format!("{label}-after-{i}");
        let id = container(&label, &name, labels, &[], &script(&name, 50, "0.2"));
        started.push((name, *kind, id));
    }
    let shipped: Vec<_> = started.iter().filter(|(_, k, _)| *k == "web").collect();
    let complete = wait_until(Duration::from_secs(60), || {
        shipped.iter().all(|(name, _, id)| {
            let stream = format!("{name}/{}", &id[..12]);
            messages_if_any(&endpoint, &group("web"), &stream).len() >= 50
        })
    });
    let (code, log) = ship.stop();
    cleanup(&label);
    assert!(complete, "not every selected container arrived: {log}");
    assert_eq!(code, Some(0), "{log}");
    for (name, _, id) in &shipped {
        let stream = format!("{name}/{}", &id[..12]);
        assert_eq!(
            messages(&endpoint, &group("web"), &stream),
            lines(name, 50),
            "{stream}: exactly once, in order"
        );
    }
    assert!(
        log_group(&endpoint, &group("db")).is_none(),
        "excluded containers were shipped"
    );
    let _ = std::fs::remove_dir_all(&state);
}

/// Each of `ids` streams (`NAME/ID12` in `group`) equals `lines(NAME, n)` on the strict server.
pub(crate) fn all_complete(
    server: &StrictServer,
    group: &str,
    ids: &[(String, String)],
    n: usize,
) -> bool {
    ids.iter().all(|(name, id)| {
        server
            .messages(group, &format!("{name}/{}", &id[..12]))
            .len()
            >= n
    })
}

pub(crate) fn assert_exact(server: &StrictServer, group: &str, ids: &[(String, String)], n: usize) {
    for (name, id) in ids {
        let got = server.messages(group, &format!("{name}/{}", &id[..12]));
        assert_eq!(got.len(), n, "{name}: {} events for {n} lines", got.len());
        assert!(
            got == lines(name, n),
            "{name}: not exactly its lines in order"
        );
    }
    server.with_stats(|s| assert_eq!(s.violations, 0, "{:?}", s.violation_messages));
}

/// A flood: `n` lines, a pause every `every`.
fn flood(prefix: &str, n: usize, every: usize) -> String {
    format!(
        "i=0; while [ $i -lt {n} ]; do i=$((i+1)); echo {prefix}-$i; if [ $((i % {every})) -eq 0 ]; then sleep 0.05; fi; done"
    )
}

#[test]
fn sigkill_five_times_during_a_flood_from_ten_containers_loses_and_repeats_nothing() {
    let server = StrictServer::start();
    let label = unique("ship-kill");
    let state = std::env::temp_dir().join(&label);
    let group = format!("/e2e/{label}");
    let n = 30_000;
    let args = [
        "--group",
        &group,
        "--stream",
        "{container_name}/{container_id:12}",
    ];
    let mut ship = Ship::start(&server.url, &label, &state, &args);
    let mut ids = Vec::new();
    for i in 0..10 {
        let name = format!("{label}-{i}");
        let id = container(&label, &name, &[], &[], &flood(&name, n, 1000));
        ids.push((name, id));
    }
    for _ in 0..5 {
        std::thread::sleep(Duration::from_millis(700));
        ship.kill();
        ship = Ship::start(&server.url, &label, &state, &args);
    }
    let complete = wait_until(Duration::from_secs(120), || {
        all_complete(&server, &group, &ids, n)
    });
    // A moment more: anything sent twice would arrive now.
    std::thread::sleep(Duration::from_secs(1));
    let (code, log) = ship.stop();
    cleanup(&label);
    assert!(complete, "{log}");
    assert_eq!(code, Some(0), "{log}");
    assert_exact(&server, &group, &ids, n);
    let _ = std::fs::remove_dir_all(&state);
}

#[test]
fn thirty_percent_throttling_and_a_ten_second_outage_lose_nothing_and_slow_no_container() {
    let server = StrictServer::start();
    let label = unique("ship-fault");
    let state = std::env::temp_dir().join(&label);
    let group = format!("/e2e/{label}");
    let n = 20_000;
    let mut ship = Ship::start(
        &server.url,
        &label,
        &state,
        &[
            "--group",
            &group,
            "--stream",
            "{container_name}/{container_id:12}",
        ],
    );
    std::thread::sleep(Duration::from_millis(500));
    server.faults(|f| {
        f.throttle = 0.3;
        f.outage_puts = true;
    });
    let outage = Instant::now();
    let mut ids = Vec::new();
    for i in 0..10 {
        let name = format!("{label}-{i}");
        let id = container(
            &label,
            &name,
            &[],
            &[],
            &format!("for i in $(seq 1 {n}); do echo {name}-$i; done"),
        );
        ids.push((name, id));
    }
    let all_exited = wait_until(Duration::from_secs(9), || {
        ids.iter().all(|(_, id)| exited(id))
    });
    let exited_after = outage.elapsed();
    std::thread::sleep(Duration::from_secs(10).saturating_sub(outage.elapsed()));
    server.faults(|f| f.outage_puts = false);
    let complete = wait_until(Duration::from_secs(120), || {
        all_complete(&server, &group, &ids, n)
    });
    std::thread::sleep(Duration::from_secs(1));
    let (code, log) = ship.stop();
    cleanup(&label);
    assert!(
        all_exited,
        "the containers waited on CloudWatch: still running {exited_after:?} into the outage"
    );
    assert!(complete, "{log}");
    assert_eq!(code, Some(0), "{log}");
    assert_exact(&server, &group, &ids, n);
    assert!(server.with_stats(|s| s.throttled) > 0);
    let _ = std::fs::remove_dir_all(&state);
}

#[test]
fn one_millisecond_containers_arrive_whole_also_those_removed_at_once() {
    let endpoint = moto_url();
    let label = unique("ship-short");
    let state = std::env::temp_dir().join(&label);
    let group = format!("/e2e/{label}");
    let mut ship = Ship::start(
        &endpoint,
        &label,
        &state,
        &["--group", &group, "--stream", "{container_name}"],
    );
    std::thread::sleep(Duration::from_millis(500));
    let (mut kept, mut removed) = (Vec::new(), Vec::new());
    for i in 0..10 {
        let name = format!("{label}-k{i}");
        container(
            &label,
            &name,
            &[],
            &[],
            &format!("echo {name}-1; printf {name}-2"),
        );
        kept.push(name);
        let name = format!("{label}-rm{i}");
        container(
            &label,
            &name,
            &[],
            &["--rm"],
            &format!("echo {name}-1; printf {name}-2"),
        );
        removed.push(name);
    }
    let complete = wait_until(Duration::from_secs(30), || {
        kept.iter()
            .chain(&removed)
            .all(|n| messages_if_any(&endpoint, &group, n).len() >= 2)
    });
    std::thread::sleep(Duration::from_secs(2));
    let (code, log) = ship.stop();
    cleanup(&label);
    assert!(complete, "{log}");
    assert_eq!(code, Some(0), "{log}");
    for n in &kept {
        assert_eq!(messages(&endpoint, &group, n), lines(n, 2), "{n}");
    }
    // Their log files were held from their creation: all of it, also of those removed.
    for n in &removed {
        assert_eq!(messages_if_any(&endpoint, &group, n), lines(n, 2), "{n}");
    }
    let _ = std::fs::remove_dir_all(&state);
}

#[test]
fn sighup_reloads_the_selection_and_status_and_metrics_show_each_container() {
    let endpoint = moto_url();
    let label = unique("ship-hup");
    let state = std::env::temp_dir().join(&label);
    std::fs::create_dir_all(&state).unwrap();
    let config = state.join("ship.toml");
    let group = format!("/e2e/{label}");
    let write = |app: &str| {
        std::fs::write(
            &config,
            format!(
                "label = [\"dockwatch.test={label}\", \"app={app}\"]\ngroup = \"{group}\"\nstream = \"{{container_name}}\"\n"
            ),
        )
        .unwrap()
    };
    write("a");
    let port = free_port();
    let mut c = dockwatch_with_env(&endpoint);
    c.args(["ship", "--config"])
        .arg(&config)
        .arg("--state-dir")
        .arg(&state)
        .args(["--metrics-addr", &format!("127.0.0.1:{port}")])
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let mut ship = Ship::from(c.spawn().unwrap());
    wait_for_port(port, Duration::from_secs(20));
    let a1 = format!("{label}-a1");
    container(&label, &a1, &["app=a"], &[], &script(&a1, 3, "0"));
    assert!(wait_until(Duration::from_secs(20), || messages_if_any(
        &endpoint, &group, &a1
    )
    .len()
        == 3));
    write("b");
    signal(&ship.child, "HUP");
    std::thread::sleep(Duration::from_secs(1));
    let (a2, b1) = (format!("{label}-a2"), format!("{label}-b1"));
    container(&label, &a2, &["app=a"], &[], &script(&a2, 3, "0"));
    container(&label, &b1, &["app=b"], &[], &script(&b1, 3, "0"));
    assert!(wait_until(Duration::from_secs(20), || messages_if_any(
        &endpoint, &group, &b1
    )
    .len()
        == 3));
    let want = format!("name=\"{b1}\",group=\"{group}\",stream=\"{b1}\"}} 3");
    let mut metrics = String::new();
    wait_until(Duration::from_secs(10), || {
        metrics = http_get(port, "/metrics");
        metrics.contains(&want)
    });
    let health = http_get(port, "/healthz");
    std::thread::sleep(Duration::from_secs(3));
    let status = dockwatch()
        .args(["ship", "--status", "--state-dir"])
        .arg(&state)
        .output()
        .unwrap();
    let (code, log) = ship.stop();
    cleanup(&label);
    assert_eq!(code, Some(0), "{log}");
    assert!(log.contains("selection reloaded"), "{log}");
    assert!(log_group(&endpoint, &group).is_some());
    assert!(
        messages_if_any(&endpoint, &group, &a2).is_empty(),
        "a container no longer selected was shipped"
    );
    assert!(metrics.contains(&want), "{metrics}");
    assert!(metrics.contains("dockwatch_ship_engine_up 1"), "{metrics}");
    assert!(health.starts_with("HTTP/1.1 200"), "{health}");
    let status = stdout(&status);
    assert!(status.contains("daemon: running"), "{status}");
    assert!(status.contains(&a1) && status.contains(&b1), "{status}");
    assert!(status.contains("drained"), "{status}");
    let _ = std::fs::remove_dir_all(&state);
}

#[test]
fn bad_templates_and_missing_settings_are_one_line_usage_errors() {
    for (args, want) in [
        (
            vec!["ship", "--group", "/g/{nope}"],
            "unknown placeholder {nope}",
        ),
        (vec!["ship"], "no log group"),
        (
            vec!["ship", "--group", "g", "--stream", "a:{container_name}"],
            "':' or '*'",
        ),
        (
            vec!["ship", "--group", "g", "--label", "=x"],
            "give KEY or KEY=VALUE",
        ),
    ] {
        let out = dockwatch_with_env("http://127.0.0.1:9")
            .args(&args)
            .output()
            .unwrap();
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert_eq!(err.lines().count(), 1, "{args:?}: {err}");
        assert!(err.contains(want), "{args:?}: {err}");
    }
}

#[test]
fn an_engine_restart_resumes_every_container_nothing_lost_nothing_twice() {
    let server = StrictServer::start();
    let mut engine = crate::private_engine::PrivateEngine::start("ship-restart").unwrap();
    let label = unique("ship-restart");
    let state = std::env::temp_dir().join(&label);
    let group = format!("/e2e/{label}");
    let mut c = dockwatch_with_env(&server.url);
    c.env("DOCKER_HOST", &engine.host)
        .args(["ship", "--group", &group, "--stream", "{container_name}"])
        .arg("--state-dir")
        .arg(&state)
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let mut ship = Ship::from(c.spawn().unwrap());
    // Restarted by the engine when it comes back: a second run of the script, appended to
    // the same log.
    let names: Vec<String> = (0..3).map(|i| format!("r{i}")).collect();
    for n in &names {
        let out = engine
            .docker(&["run", "-d", "--name", n, "--network", "none", "--restart", "always"])
            .args([
                IMAGE,
                "bash",
                "-c",
                "i=0; while [ $i -lt 300 ]; do i=$((i+1)); echo $HOSTNAME-$i; sleep 0.01; done; sleep 600",
            ])
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", stderr(&out));
    }
    assert!(wait_until(Duration::from_secs(30), || {
        names.iter().all(|n| server.messages(&group, n).len() >= 50)
    }));
    engine.restart().unwrap();
    let logs = |n: &str| -> Vec<String> {
        let out = engine.docker(&["logs", n]).output().unwrap();
        stdout(&out).lines().map(str::to_string).collect()
    };
    // Both runs written (the second from 1 again), and all of it delivered.
    let done = wait_until(Duration::from_secs(90), || {
        names.iter().all(|n| {
            let l = logs(n);
            l.len() > 300
                && l.last().is_some_and(|x| x.ends_with("-300"))
                && server.messages(&group, n).len() >= l.len()
        })
    });
    std::thread::sleep(Duration::from_secs(1));
    let (code, log) = ship.stop();
    assert!(done, "{log}");
    assert_eq!(code, Some(0), "{log}");
    for n in &names {
        assert_eq!(
            server.messages(&group, n),
            logs(n),
            "{n}: the stream is its log"
        );
    }
    assert!(log.contains("the Docker engine is unreachable"), "{log}");
    let _ = std::fs::remove_dir_all(&state);
}

#[test]
fn refused_credentials_end_ship_at_start_and_a_missing_server_is_waited_for() {
    let server = StrictServer::start();
    server.faults(|f| f.deny_auth = true);
    let label = unique("ship-auth");
    let state = std::env::temp_dir().join(&label);
    let out = dockwatch_with_env(&server.url)
        .args([
            "ship",
            "--group",
            "/g",
            "--label",
            &format!("dockwatch.test={label}"),
        ])
        .arg("--state-dir")
        .arg(&state)
        .output()
        .unwrap();
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("credentials"), "{err}");
    assert!(
        !err.contains("AKIDTESTKEY"),
        "no credential in the message: {err}"
    );

    // Nothing listens there: said once, then waited for; SIGTERM ends it at once.
    let port = free_port();
    let mut ship = Ship::start(
        &format!("http://127.0.0.1:{port}"),
        &label,
        &state,
        &["--group", "/g"],
    );
    std::thread::sleep(Duration::from_secs(2));
    let t = Instant::now();
    let (code, log) = ship.stop();
    assert_eq!(code, Some(0), "{log}");
    assert!(t.elapsed() < Duration::from_secs(5), "{log}");
    assert!(log.contains("shipping starts when it answers"), "{log}");
    let _ = std::fs::remove_dir_all(&state);
}
