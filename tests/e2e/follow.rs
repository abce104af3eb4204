//! `dockwatch tail` and `dockwatch download`: the real binary against the moto server, real
//! files, real signals.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::common::*;
use crate::strict_server::StrictServer;

fn tail(endpoint: &str, args: &[&str]) -> std::process::Output {
    dockwatch_with_env(endpoint)
        .arg("tail")
        .args(args)
        .output()
        .expect("run dockwatch tail")
}

fn rfc3339(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .unwrap()
        .format("%Y-%m-%dT%H:%M:%S%.3fZ")
        .to_string()
}

#[test]
fn tail_merges_groups_in_time_order_in_every_format() {
    let ep = moto_url();
    let base = unique("/dwtail");
    let (ga, gb) = (format!("{base}/a"), format!("{base}/b"));
    precreate(&ep, &ga, Some("s1"));
    rt().block_on(async {
        let c = client(&ep);
        c.create_log_stream()
            .log_group_name(&ga)
            .log_stream_name("s2")
            .send()
            .await
            .unwrap();
    });
    precreate(&ep, &gb, Some("t"));
    let t0 = now_ms() - 60_000;
    put_many(&ep, &ga, "s1", &[(t0, "a1".into()), (t0 + 20, "a3".into())]);
    put_many(&ep, &ga, "s2", &[(t0 + 10, "a2".into())]);
    put_many(
        &ep,
        &gb,
        "t",
        &[(t0 + 15, "b1".into()), (t0 + 30, "b2\n".into())],
    );

    let all = format!("{base}/*");
    let o = tail(&ep, &[&all, "--since", "5m", "--color", "never"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let expected = [
        (t0, &ga, "s1", "a1"),
        (t0 + 10, &ga, "s2", "a2"),
        (t0 + 15, &gb, "t", "b1"),
        (t0 + 20, &ga, "s1", "a3"),
        (t0 + 30, &gb, "t", "b2"),
    ]
    .iter()
    .map(|(t, g, s, m)| format!("{} {g} {s} {m}\n", rfc3339(*t)))
    .collect::<String>();
    assert_eq!(stdout(&o), expected);

    // Two exact groups give the same merge; json carries every field.
    let o = tail(&ep, &[&ga, &gb, "--since", "5m", "--format", "json"]);
    let events: Vec<serde_json::Value> = stdout(&o)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let msgs: Vec<&str> = events
        .iter()
        .map(|e| e["message"].as_str().unwrap())
        .collect();
    assert_eq!(msgs, ["a1", "a2", "b1", "a3", "b2\n"]);
    assert_eq!(events[2]["group"], gb.as_str());
    assert_eq!(events[2]["stream"], "t");
    assert_eq!(events[2]["timestamp"], t0 + 15);
    assert!(!events[2]["eventId"].as_str().unwrap().is_empty());

    // Short format; stream selection by name and by prefix; a filter pattern; a range.
    let o = tail(
        &ep,
        &[&ga, "--since", "5m", "--format", "short", "--stream", "s2"],
    );
    assert_eq!(stdout(&o), format!("{} s2 a2\n", &rfc3339(t0 + 10)[11..23]));
    let o = tail(
        &ep,
        &[
            &ga,
            "--since",
            "5m",
            "--stream-prefix",
            "s",
            "--format",
            "json",
        ],
    );
    assert_eq!(stdout(&o).lines().count(), 3);
    let o = tail(&ep, &[&ga, "--since", "5m", "--stream-prefix", "zz"]);
    assert!(
        o.status.success() && stdout(&o).is_empty(),
        "{}",
        stderr(&o)
    );
    let o = tail(
        &ep,
        &[&all, "--since", "5m", "--filter", "a3", "--format", "short"],
    );
    assert_eq!(stdout(&o).lines().count(), 1, "{}", stdout(&o));
    assert!(stdout(&o).ends_with(" s1 a3\n"));
    let (from, to) = (rfc3339(t0), rfc3339(t0 + 12));
    let o = tail(
        &ep,
        &[&all, "--since", &from, "--until", &to, "--format", "short"],
    );
    let text = stdout(&o);
    let got: Vec<&str> = text
        .lines()
        .map(|l| l.rsplit(' ').next().unwrap())
        .collect();
    assert_eq!(got, ["a1", "a2"]);
    let secs = format!("{}.{:03}", (t0 + 20) / 1000, (t0 + 20) % 1000);
    let o = tail(&ep, &[&gb, "--since", &secs, "--format", "short"]);
    assert_eq!(
        stdout(&o).lines().count(),
        1,
        "since as Unix seconds: {}",
        stdout(&o)
    );

    // `| head`: a closed stdout ends tail quietly.
    let mut child = dockwatch_with_env(&ep)
        .args(["tail", &all, "--since", "5m"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take());
    let o = child.wait_with_output().unwrap();
    assert!(o.status.success(), "broken pipe: {}", stderr(&o));
    assert!(stderr(&o).is_empty(), "{}", stderr(&o));
}

#[test]
fn tail_errors_are_one_clear_line() {
    let ep = moto_url();
    let missing = unique("/dwtail-missing");
    let cases: Vec<(Vec<String>, i32, String)> = vec![
        (
            vec![missing.clone()],
            1,
            format!("log group '{missing}' not found"),
        ),
        (
            vec![format!("{missing}*")],
            1,
            format!("no log group starts with '{missing}'"),
        ),
        (
            vec!["g".into(), "--since".into(), "yesterday".into()],
            2,
            "invalid time 'yesterday'".into(),
        ),
        (
            vec![
                "g".into(),
                "--since".into(),
                "1h".into(),
                "--until".into(),
                "2h".into(),
            ],
            2,
            "is before --since".into(),
        ),
        (
            vec!["g".into(), "-f".into(), "--until".into(), "1h".into()],
            2,
            "cannot be used with".into(),
        ),
    ];
    for (args, code, text) in cases {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let o = tail(&ep, &args);
        let err = stderr(&o);
        assert_eq!(o.status.code(), Some(code), "{args:?}: {err}");
        assert!(err.contains(&text), "{args:?}: {err}");
        if code == 1 || text.starts_with("invalid time") {
            assert_eq!(
                err.trim_end().lines().count(),
                1,
                "{args:?}: one line: {err}"
            );
            assert!(err.starts_with("dockwatch: error: "), "{err}");
        }
    }
    // No region anywhere.
    let o = dockwatch_without_aws_config()
        .args(["tail", "g", "--aws-endpoint-url", &ep])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("no AWS region"), "{}", stderr(&o));
}

/// Collects a child's stdout lines on a thread.
fn collect_lines(child: &mut Child) -> Arc<Mutex<Vec<String>>> {
    let lines = Arc::new(Mutex::new(Vec::new()));
    let out = child.stdout.take().unwrap();
    let l = lines.clone();
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines() {
            let Ok(line) = line else { return };
            l.lock().unwrap().push(line);
        }
    });
    lines
}

#[test]
fn tail_follow_shows_a_running_job_once_and_in_order() {
    let ep = moto_url();
    let group = unique("/dwfollow");
    precreate(&ep, &group, None);
    let mut tail = dockwatch_with_env(&ep)
        .args(["tail", &group, "-f", "--since", "1m", "--format", "json"])
        .args(["--poll-interval", "200ms"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let lines = collect_lines(&mut tail);
    std::thread::sleep(Duration::from_millis(500));

    // The main job creates its stream while tail runs: a burst, then a trickle.
    let bash = "for i in $(seq 1 300); do echo line $i; done; sleep 1; \
                for i in $(seq 301 320); do echo line $i; sleep 0.05; done";
    let mut job = Job::named(&ep, IMAGE, bash, &group, "job");
    job.output();
    // An event that reaches CloudWatch late, with a timestamp already passed: still shown.
    rt().block_on(async {
        client(&ep)
            .create_log_stream()
            .log_group_name(&group)
            .log_stream_name("late")
            .send()
            .await
            .unwrap();
    });
    put_one(&ep, &group, "late", now_ms() - 5_000, "late event");

    let complete = wait_until(Duration::from_secs(30), || {
        lines.lock().unwrap().len() >= 321
    });
    std::thread::sleep(Duration::from_millis(800)); // more polls: nothing printed twice
    signal(&tail, "INT");
    let o = tail.wait_with_output().unwrap();
    assert_eq!(o.status.code(), Some(130), "{}", stderr(&o));
    let got: Vec<serde_json::Value> = lines
        .lock()
        .unwrap()
        .iter()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert!(complete, "only {} of 321 lines", got.len());
    let job_lines: Vec<String> = got
        .iter()
        .filter(|e| e["stream"] == "job")
        .map(|e| e["message"].as_str().unwrap().to_string())
        .collect();
    let expected: Vec<String> = (1..=320).map(|i| format!("line {i}")).collect();
    assert_eq!(job_lines, expected, "every line once, in order");
    assert_eq!(
        got.iter().filter(|e| e["message"] == "late event").count(),
        1
    );
    assert_eq!(got.len(), 321);
}

/// One downloaded file as (timestamp, message), from the json line format.
fn file_events(path: &Path) -> Vec<(i64, String)> {
    let Ok(text) = std::fs::read_to_string(path) else {
        return Vec::new();
    };
    // A last line without its newline is an append in progress (a running daemon), not yet
    // part of the file's content.
    let whole = &text[..text.rfind('\n').map_or(0, |i| i + 1)];
    whole
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l)
                .unwrap_or_else(|e| panic!("{}: bad line {l:?}: {e}", path.display()));
            (
                v["timestamp"].as_i64().unwrap(),
                v["message"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

const STATE: &str = ".dockwatch-download.json";

fn enc(name: &str) -> String {
    name.bytes()
        .enumerate()
        .map(|(i, b)| {
            if b.is_ascii_alphanumeric() || b == b'_' || b == b'-' || (b == b'.' && i > 0) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

fn file_of(dir: &Path, group: &str, stream: &str) -> PathBuf {
    dir.join(enc(group)).join(format!("{}.log", enc(stream)))
}

fn download(ep: &str, dir: &Path, prefix: &str, extra: &[&str]) -> Child {
    dockwatch_with_env(ep)
        .args(["download", "--output-dir", dir.to_str().unwrap()])
        .args(["--group-prefix", prefix, "--line-format", "json"])
        .args(["--poll-interval", "100ms", "--discovery-interval", "300ms"])
        .args(["--max-requests-per-second", "200"])
        .args(extra)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

#[test]
fn download_files_equal_their_streams_across_sigkills() {
    let ep = moto_url();
    let base = unique("/dwdl");
    let streams = [
        (format!("{base}/a"), "web/1".to_string()),
        (format!("{base}/a"), "worker".to_string()),
        (format!("{base}/b"), "x y".to_string()),
    ];
    precreate(&ep, &streams[0].0, Some(&streams[0].1));
    rt().block_on(async {
        client(&ep)
            .create_log_stream()
            .log_group_name(&streams[1].0)
            .log_stream_name(&streams[1].1)
            .send()
            .await
            .unwrap();
    });
    precreate(&ep, &streams[2].0, Some(&streams[2].1));
    let dir = std::env::temp_dir().join(unique("dwdl"));

    // A producer appends to all three streams while the daemon is killed and restarted.
    let producer = {
        let (ep, streams) = (ep.clone(), streams.clone());
        std::thread::spawn(move || {
            let t0 = now_ms() - 120_000;
            for round in 0..12i64 {
                for (k, (g, s)) in streams.iter().enumerate() {
                    let batch: Vec<(i64, String)> = (0..400i64)
                        .map(|i| {
                            let n = round * 400 + i;
                            let msg = match n % 97 {
                                0 => format!("{s} #{n} two\nlines"),
                                1 => format!("{s} #{n} ünïcødé \"quoted\" \\ back"),
                                _ => format!("{s} #{n}"),
                            };
                            (t0 + round * 1000 + i * 2 + k as i64, msg)
                        })
                        .collect();
                    put_many(&ep, g, s, &batch);
                }
                std::thread::sleep(Duration::from_millis(150));
            }
        })
    };
    let (mut kills, mut recovered, mut saved_old) = (0, 0, false);
    while !producer.is_finished() || kills < 6 || !saved_old {
        let d = download(&ep, &dir, &base, &[]);
        std::thread::sleep(Duration::from_millis(50 + rand::random::<u64>() % 400));
        signal(&d, "KILL");
        let o = d.wait_with_output().unwrap();
        recovered += stderr(&o)
            .matches("written after the last saved position")
            .count();
        kills += 1;
        // An old position, for a crash between writing a file and saving the state: from the
        // second kill on, once a run lived long enough to save one (a loaded machine can
        // kill the first runs before their first save).
        if kills >= 2 && !saved_old && dir.join(STATE).exists() {
            std::fs::copy(dir.join(STATE), dir.join("old-state")).unwrap();
            saved_old = true;
        }
    }
    producer.join().unwrap();

    // The last run catches up; its files must equal the streams exactly.
    let port = free_port();
    let addr = format!("127.0.0.1:{port}");
    let mut d = download(&ep, &dir, &base, &["--metrics-addr", &addr]);
    let expected: Vec<Vec<(i64, String)>> = streams
        .iter()
        .map(|(g, s)| read_events(&ep, g, s))
        .collect();
    assert!(expected.iter().all(|e| e.len() == 4800));
    let caught_up = wait_until(Duration::from_secs(30), || {
        streams
            .iter()
            .zip(&expected)
            .all(|((g, s), e)| file_events(&file_of(&dir, g, s)).len() >= e.len())
    });
    wait_for_port(port, Duration::from_secs(5));
    let metrics = http_get(port, "/metrics");
    let health = http_get(port, "/healthz");
    signal(&d, "TERM");
    let status = d.wait().unwrap();
    let mut err = String::new();
    std::io::Read::read_to_string(d.stderr.as_mut().unwrap(), &mut err).unwrap();
    assert!(caught_up, "the files did not catch up; daemon said:\n{err}");
    assert_eq!(status.code(), Some(0), "{err}");
    for ((g, s), e) in streams.iter().zip(&expected) {
        let got = file_events(&file_of(&dir, g, s));
        assert_eq!(got.len(), e.len(), "{g}/{s}: no gap, no duplicate");
        assert_eq!(&got, e, "{g}/{s}: same events, same order");
    }
    assert!(kills >= 6);
    eprintln!("{kills} SIGKILLs; {recovered} restart(s) cut back a partly saved file");
    assert!(
        metrics.contains(&format!(
            "dockwatch_download_events_total{{group=\"{}\",stream=\"x y\"}} 4800",
            streams[2].0
        )),
        "{metrics}"
    );
    assert!(
        metrics.contains("dockwatch_download_streams 3"),
        "{metrics}"
    );
    assert!(
        health.starts_with("HTTP/1.1 200") && health.ends_with("ok\n"),
        "{health}"
    );
    assert!(err.contains("state saved"), "{err}");

    // A crash after the files were written but before the state was saved: the state is
    // older than the files, and one file ends in half a line. The restart cuts each file back
    // to what the state covers and reads the rest again.
    std::fs::copy(dir.join("old-state"), dir.join(STATE)).unwrap();
    let f0 = file_of(&dir, &streams[0].0, &streams[0].1);
    let mut f = std::fs::OpenOptions::new().append(true).open(&f0).unwrap();
    std::io::Write::write_all(&mut f, b"{\"timestamp\":1,\"mess").unwrap();
    drop(f);
    let mut d = download(&ep, &dir, &base, &[]);
    let caught_up = wait_until(Duration::from_secs(30), || {
        streams.iter().zip(&expected).all(|((g, s), e)| {
            let p = file_of(&dir, g, s);
            std::fs::read_to_string(&p)
                .is_ok_and(|t| t.ends_with('\n') && t.lines().count() >= e.len())
                && file_events(&p).len() >= e.len()
        })
    });
    signal(&d, "TERM");
    d.wait().unwrap();
    let mut err = String::new();
    std::io::Read::read_to_string(d.stderr.as_mut().unwrap(), &mut err).unwrap();
    assert!(caught_up, "{err}");
    assert!(
        err.contains("written after the last saved position"),
        "{err}"
    );
    for ((g, s), e) in streams.iter().zip(&expected) {
        assert_eq!(
            &file_events(&file_of(&dir, g, s)),
            e,
            "{g}/{s} after recovery"
        );
    }

    // --status reads the state of the stopped daemon.
    let o = dockwatch_with_env(&ep)
        .args([
            "download",
            "--status",
            "--output-dir",
            dir.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    let out = stdout(&o);
    assert!(out.starts_with("daemon: not running"), "{out}");
    assert!(out.contains("web/1") && out.contains("4800"), "{out}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn download_reloads_on_sighup_and_keeps_files_of_deleted_streams() {
    let ep = moto_url();
    let base = unique("/dwhup");
    let (ga, gb) = (format!("{base}-a"), format!("{base}-b"));
    precreate(&ep, &ga, Some("s"));
    precreate(&ep, &gb, Some("s"));
    let dir = std::env::temp_dir().join(unique("dwhup"));
    std::fs::create_dir_all(&dir).unwrap();
    let cfg = dir.join("download.toml");
    let write_cfg = |prefix: &str| {
        std::fs::write(
            &cfg,
            format!(
                "output_dir = \"{}\"\ngroup_prefixes = [\"{prefix}\"]\npoll_interval = \"100ms\"\ndiscovery_interval = \"200ms\"\nline_format = \"message\"\n\n[aws]\nendpoint_url = \"{ep}\"\n",
                dir.join("out").display()
            ),
        )
        .unwrap();
    };
    write_cfg(&ga);
    let d = dockwatch_with_env(&ep)
        .env_remove("AWS_ENDPOINT_URL")
        .args(["download", "--config", cfg.to_str().unwrap()])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let out = dir.join("out");
    let (fa, fb) = (file_of(&out, &ga, "s"), file_of(&out, &gb, "s"));
    let read = |p: &Path| std::fs::read_to_string(p).unwrap_or_default();
    put_one(&ep, &ga, "s", now_ms(), "a-1");
    assert!(wait_until(Duration::from_secs(15), || read(&fa) == "a-1\n"));

    // A second daemon on the same directory is refused.
    let o = dockwatch_with_env(&ep)
        .args(["download", "--config", cfg.to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(stderr(&o).contains("already writing"), "{}", stderr(&o));

    // SIGHUP with group B instead of A: B starts, A stops.
    write_cfg(&gb);
    signal(&d, "HUP");
    std::thread::sleep(Duration::from_millis(700));
    put_one(&ep, &ga, "s", now_ms(), "a-2");
    put_one(&ep, &gb, "s", now_ms(), "b-1");
    assert!(wait_until(Duration::from_secs(15), || read(&fb) == "b-1\n"));
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(read(&fa), "a-1\n", "A is no longer followed");

    // A broken file on SIGHUP keeps the running configuration.
    std::fs::write(&cfg, "group_prefixes = [\"x\"]\nbogus = 1\n").unwrap();
    signal(&d, "HUP");
    std::thread::sleep(Duration::from_millis(300));
    put_one(&ep, &gb, "s", now_ms(), "b-2");
    assert!(wait_until(Duration::from_secs(15), || read(&fb) == "b-1\nb-2\n"));

    // A deleted stream: logged, file kept, the daemon goes on.
    rt().block_on(async {
        client(&ep)
            .delete_log_stream()
            .log_group_name(&gb)
            .log_stream_name("s")
            .send()
            .await
            .unwrap();
    });
    std::thread::sleep(Duration::from_millis(800));
    signal(&d, "INT");
    let o = d.wait_with_output().unwrap();
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(0), "{err}");
    assert!(err.contains("configuration reloaded"), "{err}");
    assert!(
        err.contains(&format!("no longer following {ga}/s")),
        "{err}"
    );
    assert!(
        err.contains("reload failed, keeping the previous configuration"),
        "{err}"
    );
    assert!(
        err.contains(&format!("{}:2:1: key 'bogus'", cfg.display())),
        "{err}"
    );
    assert_eq!(read(&fb), "b-1\nb-2\n", "the deleted stream's file is kept");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn download_bad_configuration_names_file_line_and_key() {
    let ep = moto_url();
    let dir = std::env::temp_dir().join(unique("dwbad"));
    std::fs::create_dir_all(&dir).unwrap();
    let cfg = dir.join("d.toml");
    std::fs::write(
        &cfg,
        "output_dir = \"/tmp/x\"\ngroup_prefixes = [\"/a\"]\npoll_interval = 5\n",
    )
    .unwrap();
    let o = dockwatch_with_env(&ep)
        .args(["download", "--config", cfg.to_str().unwrap()])
        .output()
        .unwrap();
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert_eq!(err.trim_end().lines().count(), 1, "{err}");
    assert!(
        err.starts_with(&format!(
            "dockwatch: error: {}:3:17: key 'poll_interval': invalid type: integer",
            cfg.display()
        )),
        "{err}"
    );
    let o = dockwatch_with_env(&ep)
        .args(["download", "--output-dir", dir.to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr(&o).contains("no log groups to follow"),
        "{}",
        stderr(&o)
    );
    // An I/O error says its cause once (it used to repeat "(os error 2)").
    let o = dockwatch_with_env(&ep)
        .args([
            "download",
            "--output-dir",
            "/proc/dockwatch-nope/x",
            "--group-prefix",
            "/a",
        ])
        .output()
        .unwrap();
    let err = stderr(&o);
    assert_eq!(err.trim_end().lines().count(), 1, "{err}");
    assert!(err.contains("cannot create the output directory"), "{err}");
    assert_eq!(err.matches("os error 2").count(), 1, "{err}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// A third of every kind of read (DescribeLogGroups, DescribeLogStreams, GetLogEvents) is
/// throttled or fails with 500/503, through the strict server, while the streams grow past
/// one GetLogEvents page: the daemon retries, and each file still equals its stream, with no
/// gap and no duplicate.
#[test]
fn download_under_throttling_and_server_errors_loses_and_repeats_nothing() {
    let server = StrictServer::start();
    server.faults(|f| f.read_faults = 0.4);
    let (prefix, group) = ("/dwdl-faults", "/dwdl-faults/app");
    let streams = ["one", "two", "three", "four"];
    let t0 = now_ms() - 600_000;
    let events = |s: &str, from: i64, n: i64| -> Vec<(i64, String)> {
        (from..from + n)
            .map(|i| (t0 + i, format!("{s} #{i}")))
            .collect()
    };
    for s in streams {
        server.append(group, s, events(s, 0, 12_000));
    }
    let dir = std::env::temp_dir().join(unique("dwdl-faults"));
    let d = download(&server.url, &dir, prefix, &[]);
    for round in 0..6 {
        std::thread::sleep(Duration::from_millis(300));
        for s in streams {
            server.append(group, s, events(s, 12_000 + round * 500, 500));
        }
    }
    let caught_up = wait_until(Duration::from_secs(90), || {
        streams
            .iter()
            .all(|s| file_events(&file_of(&dir, group, s)).len() >= 15_000)
    });
    signal(&d, "TERM");
    let o = d.wait_with_output().unwrap();
    assert!(caught_up, "the daemon did not catch up: {}", stderr(&o));
    for s in streams {
        let got = file_events(&file_of(&dir, group, s));
        assert_eq!(got.len(), 15_000, "{s}");
        assert!(
            got == server.events(group, s),
            "{s}: the file differs from its stream"
        );
    }
    let faults = server.with_stats(|st| st.read_faults);
    assert!(faults >= 5, "only {faults} faults were injected");
    let _ = std::fs::remove_dir_all(&dir);
}

/// `tail` over three streams past one FilterLogEvents page, with half of its reads throttled
/// or failing with 500/503: the output is every event once, merged by time.
#[test]
fn tail_under_throttling_and_server_errors_prints_every_event_once_in_order() {
    let server = StrictServer::start();
    server.faults(|f| f.read_faults = 0.5);
    let group = "/dwtail-faults/app";
    let t0 = now_ms() - 120_000;
    let streams = ["s1", "s2", "s3"];
    for (k, s) in streams.iter().enumerate() {
        let events = (0..8_000i64).map(|i| (t0 + i * 3 + k as i64, format!("{s} #{i}")));
        server.append(group, s, events);
    }
    let o = tail(&server.url, &[group, "--since", "10m", "--format", "json"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let got: Vec<(i64, String, String)> = stdout(&o)
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            (
                v["timestamp"].as_i64().unwrap(),
                v["stream"].as_str().unwrap().to_string(),
                v["message"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    let mut expected: Vec<(i64, String, String)> = streams
        .iter()
        .flat_map(|s| {
            server
                .events(group, s)
                .into_iter()
                .map(move |(t, m)| (t, s.to_string(), m))
        })
        .collect();
    expected.sort();
    assert_eq!(got.len(), 24_000);
    assert!(got == expected, "tail's output differs from the streams");
    let faults = server.with_stats(|st| st.read_faults);
    assert!(faults >= 2, "only {faults} faults were injected");
}

/// `tail -f` and `download` end within a second of SIGINT/SIGTERM whatever CloudWatch does:
/// every call throttled, or no answer at all; download saves its state first.
#[test]
fn a_stop_ends_tail_and_download_at_once_while_cloudwatch_throttles_or_is_unreachable() {
    type Fault = fn(&mut crate::strict_server::Faults);
    let faults: [(&str, Fault); 2] = [
        ("throttled", |f| f.read_faults = 1.0),
        ("unreachable", |f| f.outage = true),
    ];
    for (what, fault) in faults {
        for sig in ["INT", "TERM"] {
            let server = StrictServer::start();
            let group = unique("stop");
            server.append(&group, "s", [(now_ms(), "one".to_string())]);
            server.faults(fault);
            let dir = std::env::temp_dir().join(unique("dl"));
            let children = [
                (
                    "tail -f",
                    dockwatch_with_env(&server.url)
                        .args(["tail", "-f", &group])
                        .stdout(Stdio::null())
                        .stderr(Stdio::piped())
                        .spawn()
                        .unwrap(),
                ),
                ("download", download(&server.url, &dir, &group, &[])),
            ];
            std::thread::sleep(Duration::from_millis(2500));
            for (name, mut child) in children {
                // tail gives up on an unreachable endpoint by itself (four tries): then it
                // has ended already, with one error line.
                if child.try_wait().unwrap().is_some() {
                    let out = child.wait_with_output().unwrap();
                    let err = String::from_utf8_lossy(&out.stderr).to_string();
                    assert_eq!(
                        (name, out.status.code()),
                        ("tail -f", Some(1)),
                        "{what}: {err}"
                    );
                    assert!(err.contains("dockwatch: error: "), "{err}");
                    continue;
                }
                let t0 = std::time::Instant::now();
                signal(&child, sig);
                let out = child.wait_with_output().unwrap();
                let took = t0.elapsed();
                let err = String::from_utf8_lossy(&out.stderr).to_string();
                assert!(
                    took < Duration::from_secs(1),
                    "{name}, {what}, SIG{sig}: took {took:?}: {err}"
                );
                assert!(!err.contains("panicked"), "{err}");
                assert!(
                    !err.contains('\u{1b}'),
                    "no colour codes off a terminal: {err}"
                );
                if name == "download" {
                    assert_eq!(out.status.code(), Some(0), "{what}: {err}");
                    assert!(
                        dir.join(".dockwatch-download.json").exists(),
                        "{what}: state saved"
                    );
                } else {
                    let want = if sig == "INT" { 130 } else { 143 };
                    assert_eq!(out.status.code(), Some(want), "{what}: {err}");
                }
            }
        }
    }
}

/// `tail -f` on a quiet group (its newest event minutes old): each event once, however many
/// polls read the late window again.
#[test]
fn tail_follow_on_a_quiet_group_prints_each_event_once() {
    let server = StrictServer::start();
    let group = unique("quiet");
    let now = now_ms();
    let old: Vec<(i64, String)> = (0..20)
        .map(|i| (now - 300_000 + i * 9_000, format!("old {i}")))
        .collect();
    server.append(&group, "s", old);
    let mut tail = dockwatch_with_env(&server.url)
        .args([
            "tail",
            &group,
            "-f",
            "--since",
            "10m",
            "--poll-interval",
            "200ms",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let lines = collect_lines(&mut tail);
    std::thread::sleep(Duration::from_millis(2500)); // a dozen polls
    signal(&tail, "INT");
    let o = tail.wait_with_output().unwrap();
    assert_eq!(o.status.code(), Some(130), "{}", stderr(&o));
    let got = lines.lock().unwrap().clone();
    assert_eq!(got.len(), 20, "each event once: {got:?}");
}

/// A stream that appears while `tail -f --stream-prefix` follows is read from `--since` when
/// it is found: what it holds older than the late window is not lost.
#[test]
fn tail_follow_reads_a_stream_found_late_from_the_start() {
    let server = StrictServer::start();
    let group = unique("late-stream");
    let now = now_ms();
    server.append(&group, "web/a", [(now, "a now".to_string())]);
    let mut tail = dockwatch_with_env(&server.url)
        .args(["tail", &group, "-f", "--stream-prefix", "web/"])
        .args(["--poll-interval", "200ms", "--format", "json"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let lines = collect_lines(&mut tail);
    std::thread::sleep(Duration::from_millis(700));
    // Its events are 40-60 s older than the newest printed: past the 30 s late window.
    let late: Vec<(i64, String)> = (0..10)
        .map(|i| (now - 60_000 + i * 2_000, format!("b {i}")))
        .collect();
    server.append(&group, "web/b", late);
    let found = wait_until(Duration::from_secs(15), || {
        lines.lock().unwrap().len() >= 11
    });
    std::thread::sleep(Duration::from_millis(1000)); // more polls: nothing twice
    signal(&tail, "INT");
    let o = tail.wait_with_output().unwrap();
    let got = lines.lock().unwrap().clone();
    assert!(found, "{got:?}: {}", stderr(&o));
    assert_eq!(got.len(), 11, "{got:?}");
    let b: Vec<String> = got
        .iter()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|e| e["stream"] == "web/b")
        .map(|e| e["message"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(b, (0..10).map(|i| format!("b {i}")).collect::<Vec<_>>());
}

/// SIGKILL of `download` during a new stream's first page (killed as soon as its file
/// appears), several times, then a restart: the file equals the stream, no line twice.
#[test]
fn download_killed_during_a_new_streams_first_page_recovers_exactly() {
    let server = StrictServer::start();
    for run in 0..6 {
        let group = unique("first-page");
        let t0 = now_ms() - 600_000;
        let events: Vec<(i64, String)> = (0..30_000i64)
            .map(|i| (t0 + i / 10, format!("event {i}")))
            .collect();
        server.append(&group, "s", events.clone());
        let dir = std::env::temp_dir().join(unique("dl"));
        let file = file_of(&dir, &group, "s");
        let mut d = download(&server.url, &dir, &group, &[]);
        // Watched closely: killed within a millisecond of the first bytes.
        let t = std::time::Instant::now();
        let mut appeared = false;
        while t.elapsed() < Duration::from_secs(20) && !appeared {
            appeared = std::fs::metadata(&file).is_ok_and(|m| m.len() > 0);
            std::thread::sleep(Duration::from_micros(200));
        }
        d.kill().unwrap();
        let _ = d.wait_with_output();
        assert!(appeared, "run {run}: no file");
        let d = download(&server.url, &dir, &group, &[]);
        // Whole lines only: the daemon may be in the middle of an append.
        let lines =
            || std::fs::read(&file).map_or(0, |b| b.iter().filter(|&&c| c == b'\n').count());
        let done = wait_until(Duration::from_secs(30), || lines() >= 30_000);
        std::thread::sleep(Duration::from_millis(500));
        signal(&d, "TERM");
        let o = d.wait_with_output().unwrap();
        assert!(done, "run {run}: {}", stderr(&o));
        assert_eq!(file_events(&file), events, "run {run}: {}", stderr(&o));
    }
}

/// Events another writer adds 5 s, 10 min and 3 days older than the newest event already
/// downloaded: each is appended once — the first two by the late-window checks, the 3-day one
/// by reconciliation — counted in the metrics and logged; nothing else is written twice.
#[test]
fn download_appends_late_events_once_by_window_and_by_reconciliation() {
    let server = StrictServer::start();
    let group = unique("late");
    // History up to 30 s ago; the late window (11 min) checks time early once it is
    // 11 min / 16 = 41 s old, and for the last time once it is 11 min old.
    let newest = now_ms() - 30_000;
    let history: Vec<(i64, String)> = (0..1_200i64)
        .map(|i| (newest - 660_000 + i * 550, format!("event {i}")))
        .collect();
    server.append(&group, "s", history.clone());
    let dir = std::env::temp_dir().join(unique("dl-late"));
    let file = file_of(&dir, &group, "s");
    let port = free_port();
    let addr = format!("127.0.0.1:{port}");
    let extra = [
        "--late-window",
        "11m",
        "--reconcile-interval",
        "3s",
        "--metrics-addr",
        &addr,
    ];
    let d = download(&server.url, &dir, &group, &extra);
    assert!(
        wait_until(Duration::from_secs(20), || file_events(&file).len()
            >= history.len()),
        "history not downloaded"
    );
    let late = [
        (newest - 5_000, "late by 5 s".to_string()),
        (newest - 600_000, "late by 10 min".to_string()),
        (newest - 3 * 86_400_000, "late by 3 days".to_string()),
    ];
    server.append(&group, "s", late.clone());
    let found = wait_until(Duration::from_secs(60), || {
        file_events(&file).len() >= history.len() + late.len()
    });
    std::thread::sleep(Duration::from_secs(4)); // a reconciliation pass more: nothing new
    let metrics = http_get(port, "/metrics");
    signal(&d, "TERM");
    let o = d.wait_with_output().unwrap();
    let err = stderr(&o);
    assert!(found, "late events not all found:\n{err}");
    let got = file_events(&file);
    assert_eq!(
        &got[..history.len()],
        &history[..],
        "history first, in order"
    );
    let mut tail = got[history.len()..].to_vec();
    tail.sort();
    let mut want = late.to_vec();
    want.sort();
    assert_eq!(tail, want, "each late event once:\n{err}");
    assert!(
        metrics.contains(&format!(
            "dockwatch_download_late_events_total{{group=\"{group}\",stream=\"s\"}} 3"
        )),
        "{metrics}"
    );
    assert!(
        err.contains("found by the late-window check") && err.contains("found by reconciliation"),
        "{err}"
    );
    let requests: u64 = metrics
        .lines()
        .filter(|l| l.starts_with("dockwatch_download_requests_total{call=\"GetLogEvents\"}"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .sum();
    assert!(requests > 0, "{metrics}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// The hole found by trying it (10 of 10 times before the fix): a stream whose first events
/// are 20 s old when `download` starts, then events more than the late window late *in the
/// current hour* — 10 minutes older than the newest, older than the first one read, the
/// hour's first millisecond — and one 3 days old. With `--late-window 32s
/// --reconcile-interval 20s`, each is in the file within the window and one interval; the
/// same-hour ones used to wait for the hour to end.
#[test]
fn download_finds_events_late_in_the_current_hour_within_one_reconcile_interval() {
    let server = StrictServer::start();
    let group = unique("late-hour");
    let hour = 3_600_000;
    // The same-hour cases need some of the hour behind the newest event: at most 2 minutes
    // of waiting, in the first 2 minutes of an hour.
    while now_ms().rem_euclid(hour) < 120_000 {
        std::thread::sleep(Duration::from_secs(1));
    }
    let newest = now_ms() - 20_000;
    let history: Vec<(i64, String)> = (0..20i64)
        .map(|i| (newest - 19_000 + i * 1_000, format!("event {i}")))
        .collect();
    let first = history[0].0;
    let hour_start = newest - newest.rem_euclid(hour);
    server.append(&group, "s", history.clone());
    let dir = std::env::temp_dir().join(unique("dl-late-hour"));
    let file = file_of(&dir, &group, "s");
    let extra = ["--late-window", "32s", "--reconcile-interval", "20s"];
    let d = download(&server.url, &dir, &group, &extra);
    assert!(
        wait_until(Duration::from_secs(20), || file_events(&file).len()
            >= history.len()),
        "history not downloaded"
    );
    // Past the window: the window checks have passed all of this time.
    std::thread::sleep(Duration::from_secs(35));
    let ten_min = (newest - 600_000).max(hour_start + 1);
    let late = vec![
        (ten_min, "late by up to 10 min, this hour".to_string()),
        (first - 1, "older than the first event read".to_string()),
        (hour_start, "the hour's first millisecond".to_string()),
        (newest - 3 * 86_400_000, "late by 3 days".to_string()),
    ];
    server.append(&group, "s", late.clone());
    let put = std::time::Instant::now();
    let found = wait_until(Duration::from_secs(32 + 20 + 15), || {
        file_events(&file).len() >= history.len() + late.len()
    });
    let took = put.elapsed();
    std::thread::sleep(Duration::from_secs(2));
    signal(&d, "TERM");
    let o = d.wait_with_output().unwrap();
    let err = stderr(&o);
    let got = file_events(&file);
    assert!(
        found,
        "not all found in {took:?}: {:?}\n{err}",
        &got[history.len()..]
    );
    let mut tail = got[history.len()..].to_vec();
    tail.sort();
    let mut want = late;
    want.sort();
    assert_eq!(tail, want, "each late event once:\n{err}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// The round trip under faults: `dockwatch run` (4 requests in flight) ships 300,000 lines
/// through 30% throttling and 10% server errors — batches are accepted out of order, so
/// CloudWatch gets many events after newer ones — while `download` and `tail -f` follow the
/// stream. The file holds every line exactly once; `tail -f` printed each exactly once.
#[test]
fn run_download_and_tail_follow_see_300k_lines_exactly_once_under_faults() {
    const N: usize = 300_000;
    let server = StrictServer::start();
    server.faults(|f| {
        f.throttle = 0.3;
        f.server_error = 0.1;
    });
    let mut job = Job::new(&server.url, &format!("seq 1 {N}"));
    job.quiet_with_summary();
    let mut run = job.spawn();
    let group = job.group.clone();
    assert!(
        wait_until(Duration::from_secs(30), || !server
            .stream_names(&group)
            .is_empty()),
        "the job created no stream"
    );
    let dir = std::env::temp_dir().join(unique("dl-rt"));
    let file = file_of(&dir, &group, &job.stream);
    let port = free_port();
    let addr = format!("127.0.0.1:{port}");
    let download = dockwatch_with_env(&server.url)
        .args(["download", "--output-dir", dir.to_str().unwrap()])
        .args(["--group-prefix", &group, "--line-format", "json"])
        .args(["--poll-interval", "500ms", "--discovery-interval", "1s"])
        .args(["--late-window", "30s", "--reconcile-interval", "20s"])
        .args(["--metrics-addr", &addr])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut tail = dockwatch_with_env(&server.url)
        .args(["tail", "-f", &group, "--since", "1h", "--format", "json"])
        .args(["--poll-interval", "500ms", "--late-window", "2m"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let printed = collect_lines(&mut tail);
    let status = run.wait().unwrap();
    assert_eq!(status.code(), Some(0), "the job failed");
    let stored = server.messages(&group, &job.stream);
    assert_eq!(stored.len(), N, "CloudWatch holds every line once");
    let complete = wait_until(Duration::from_secs(120), || {
        file_events(&file).len() >= N && printed.lock().unwrap().len() >= N
    });
    std::thread::sleep(Duration::from_secs(2)); // anything extra would show now
    let metrics = http_get(port, "/metrics");
    signal(&download, "TERM");
    signal(&tail, "TERM");
    let d = download.wait_with_output().unwrap();
    let t = tail.wait_with_output().unwrap();
    let (d_err, t_err) = (stderr(&d), stderr(&t));
    let late: u64 = metrics
        .lines()
        .find(|l| l.starts_with("dockwatch_download_late_events_total{"))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
        .unwrap_or(0);
    let reads = server.with_stats(|s| s.reads.clone());
    eprintln!(
        "late events appended by download: {late}; read requests: {reads:?}; {}",
        d_err.lines().filter(|l| l.contains("late event")).count()
    );
    assert!(
        complete,
        "file {} of {N}, tail {} of {N}\ndownload:\n{d_err}\ntail:\n{t_err}",
        file_events(&file).len(),
        printed.lock().unwrap().len()
    );
    let mut in_file: Vec<u64> = file_events(&file)
        .iter()
        .map(|(_, m)| m.trim_end().parse().unwrap())
        .collect();
    assert_eq!(in_file.len(), N, "the file: no line twice\n{d_err}");
    in_file.sort_unstable();
    assert!(
        in_file.iter().copied().eq(1..=N as u64),
        "the file: every line"
    );
    let mut shown: Vec<u64> = printed
        .lock()
        .unwrap()
        .iter()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            v["message"].as_str().unwrap().trim_end().parse().unwrap()
        })
        .collect();
    assert_eq!(shown.len(), N, "tail -f: no line twice\n{t_err}");
    shown.sort_unstable();
    assert!(
        shown.iter().copied().eq(1..=N as u64),
        "tail -f: every line"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// The read side's request rates while a job writes ~1,300 lines/s into one stream:
/// `tail -f` and `download` with their defaults each stay under their shared limits (4 and
/// 5 requests a second) — and far below them. Prints the rates (the README's figures:
/// `cargo nextest run --test e2e read_request_rates --no-capture`).
#[test]
fn read_request_rates_stay_within_the_limits() {
    let server = StrictServer::start();
    let mut job = Job::new(
        &server.url,
        "i=0; while [ $i -lt 60000 ]; do i=$((i+1)); echo line $i; if [ $((i % 200)) -eq 0 ]; then sleep 0.1; fi; done",
    );
    job.quiet_with_summary();
    let mut run = job.spawn();
    let group = job.group.clone();
    assert!(wait_until(Duration::from_secs(30), || !server
        .stream_names(&group)
        .is_empty()));
    let reads = |call: &str| server.with_stats(|s| *s.reads.get(call).unwrap_or(&0)) as f64;
    const PHASE: Duration = Duration::from_secs(20);
    let before = reads("FilterLogEvents");
    let mut tail = dockwatch_with_env(&server.url)
        .args(["tail", "-f", &group, "--format", "json"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(PHASE);
    let tail_rate = (reads("FilterLogEvents") - before) / PHASE.as_secs_f64();
    signal(&tail, "TERM");
    let _ = tail.wait();
    let dir = std::env::temp_dir().join(unique("dl-rate"));
    let before = reads("GetLogEvents");
    let mut dl = dockwatch_with_env(&server.url)
        .args(["download", "--output-dir", dir.to_str().unwrap()])
        .args(["--group-prefix", &group])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(PHASE);
    let download_rate = (reads("GetLogEvents") - before) / PHASE.as_secs_f64();
    signal(&dl, "TERM");
    let _ = dl.wait();
    let lines = server.messages(&group, &job.stream).len();
    assert_eq!(run.wait().unwrap().code(), Some(0), "the job");
    cleanup(&job.label);
    eprintln!(
        "while {lines} lines were written: tail -f {tail_rate:.2} FilterLogEvents/s, download {download_rate:.2} GetLogEvents/s"
    );
    assert!(
        tail_rate > 0.0 && tail_rate <= 4.0,
        "tail -f: {tail_rate:.2}/s"
    );
    assert!(
        download_rate > 0.0 && download_rate <= 5.0,
        "download: {download_rate:.2}/s"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
