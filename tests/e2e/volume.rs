//! Any amount, any kind of output, through the strict CloudWatch server: what arrived is
//! compared with what the container wrote, and no request may break a CloudWatch rule.

use crate::common::*;
use crate::strict_server::StrictServer;

fn numbered(n: usize) -> Vec<String> {
    (1..=n).map(|i| i.to_string()).collect()
}

fn assert_clean(server: &StrictServer) {
    server.with_stats(|s| {
        assert_eq!(
            s.violations, 0,
            "rule violations: {:?}",
            s.violation_messages
        );
    });
}

#[test]
fn a_million_numbered_lines_arrive_complete_in_order() {
    let server = StrictServer::start();
    let mut job = Job::new(&server.url, "seq 1 1000000");
    job.quiet_with_summary();
    let out = job.output();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let got = server.messages(&job.group, &job.stream);
    assert_eq!(got.len(), 1_000_000);
    assert!(got == numbered(1_000_000), "content or order differs");
    assert_clean(&server);
    // Batches were filled: 1M short lines need at least 100 requests, and not many more.
    server.with_stats(|s| {
        assert!(
            s.accepted_requests >= 100 && s.accepted_requests < 400,
            "{}",
            s.accepted_requests
        )
    });
}

#[test]
fn a_5_mib_line_without_newline_is_split_not_lost() {
    let server = StrictServer::start();
    let mut job = Job::new(&server.url, "head -c 5242880 /dev/zero | tr '\\0' 'a'");
    job.quiet_with_summary();
    let out = job.output();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let got = server.messages(&job.group, &job.stream);
    assert!(got.iter().all(|m| m.len() <= 1_048_576 - 26));
    assert_eq!(got.iter().map(String::len).sum::<usize>(), 5_242_880);
    assert!(got.iter().all(|m| m.bytes().all(|b| b == b'a')));
    assert_eq!(got.len(), 6); // ceil(5 MiB / (1 MiB - 26))
    assert_clean(&server);
}

#[test]
fn old_event_limit_is_a_setting() {
    let server = StrictServer::with_event_limit(262_144);
    let mut job = Job::new(
        &server.url,
        "head -c 1000000 /dev/zero | tr '\\0' 'b'; echo",
    );
    job.quiet_with_summary()
        .arg("--max-event-size")
        .arg("262144");
    let out = job.output();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let got = server.messages(&job.group, &job.stream);
    assert_eq!(got.len(), 4);
    assert_eq!(got.concat(), "b".repeat(1_000_000));
    assert_clean(&server);
}

/// 20 MiB of random bytes, written to a file in the container first so that the test can
/// copy out exactly what it wrote.
const RANDOM_20MIB: &str = "head -c 20971520 /dev/urandom > /tmp/r; cat /tmp/r";

#[test]
fn twenty_mib_of_random_bytes() {
    let server = StrictServer::start();
    // The attach path frames the container's own bytes; the logs path what the engine
    // stored (each invalid byte already U+FFFD).
    for path in ["attach", "logs"] {
        let mut job = Job::new(&server.url, RANDOM_20MIB);
        job.quiet_with_summary()
            .arg("--keep-container")
            .arg("--read-path")
            .arg(path);
        let out = job.output();
        let ids = containers_with_label(&job.label);
        let raw = if path == "logs" {
            std::process::Command::new("docker")
                .args(["logs", &ids[0]])
                .output()
                .unwrap()
                .stdout
        } else {
            let file = std::env::temp_dir().join(unique("random"));
            let cp = std::process::Command::new("docker")
                .args(["cp", &format!("{}:/tmp/r", ids[0])])
                .arg(&file)
                .status()
                .unwrap();
            assert!(cp.success());
            let raw = std::fs::read(&file).unwrap();
            let _ = std::fs::remove_file(&file);
            raw
        };
        cleanup(&job.label);
        assert_eq!(out.status.code(), Some(0), "{path}: {}", stderr(&out));
        assert!(raw.len() >= 20_971_520, "{path}: {}", raw.len());
        let got = server.messages(&job.group, &job.stream);
        let want = dockwatch::pipeline::framing::reference(1_048_576 - 26, &raw);
        assert_eq!(got.len(), want.len(), "{path}");
        assert!(got == want, "{path}: content differs");
    }
    assert_clean(&server);
}

#[test]
fn mixed_stdout_and_stderr_each_complete_and_in_order() {
    let server = StrictServer::start();
    let mut job = Job::new(
        &server.url,
        "for i in $(seq 1 20000); do echo out-$i; echo err-$i >&2; done",
    );
    job.quiet_with_summary();
    let out = job.output();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let got = server.messages(&job.group, &job.stream);
    assert_eq!(got.len(), 40_000);
    let outs: Vec<&String> = got.iter().filter(|m| m.starts_with("out-")).collect();
    let errs: Vec<&String> = got.iter().filter(|m| m.starts_with("err-")).collect();
    let want_out: Vec<String> = (1..=20000).map(|i| format!("out-{i}")).collect();
    let want_err: Vec<String> = (1..=20000).map(|i| format!("err-{i}")).collect();
    assert!(
        outs.iter()
            .map(|s| s.as_str())
            .eq(want_out.iter().map(|s| s.as_str()))
    );
    assert!(
        errs.iter()
            .map(|s| s.as_str())
            .eq(want_err.iter().map(|s| s.as_str()))
    );
    assert_clean(&server);
}

#[test]
fn tty_mode_ships_lines_without_carriage_returns() {
    let server = StrictServer::start();
    let mut job = Job::new(
        &server.url,
        "echo one; echo two >&2; printf 'p 10%%\\rp 100%%\\n'; echo 'é'",
    );
    job.arg("--tty");
    let out = job.output();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(
        server.messages(&job.group, &job.stream),
        ["one", "two", "p 10%", "p 100%", "é"]
    );
    assert_clean(&server);
}

#[test]
fn empty_lines_crlf_and_progress_bars() {
    let server = StrictServer::start();
    let mut job = Job::new(
        &server.url,
        "printf 'a\\n\\n\\nb\\r\\nc\\r\\n\\r\\n'; printf '\\r 0%%|   |\\r50%%|#  |\\r100%%|###|\\n'",
    );
    let out = job.output();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(
        server.messages(&job.group, &job.stream),
        ["a", "b", "c", " 0%|   |", "50%|#  |", "100%|###|"]
    );
    assert!(
        stderr(&out).contains("3 empty lines skipped"),
        "{}",
        stderr(&out)
    );
    assert_clean(&server);
}

#[test]
fn docker_split_long_lines_are_joined() {
    // 100 KB lines: the engine stores them as 16 KiB pieces.
    let server = StrictServer::start();
    let mut job = Job::new(
        &server.url,
        "for i in 1 2 3; do head -c 100000 /dev/zero | tr '\\0' \"$i\"; echo; done",
    );
    job.quiet_with_summary();
    let out = job.output();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let got = server.messages(&job.group, &job.stream);
    let shape: Vec<(usize, Option<char>)> =
        got.iter().map(|m| (m.len(), m.chars().next())).collect();
    assert_eq!(
        shape,
        [
            (100_000, Some('1')),
            (100_000, Some('2')),
            (100_000, Some('3'))
        ]
    );
    let want: Vec<String> = ["1", "2", "3"].iter().map(|c| c.repeat(100_000)).collect();
    assert!(got == want, "content differs");
    assert_clean(&server);
}

#[test]
fn strip_ansi_option() {
    let server = StrictServer::start();
    let mut job = Job::new(
        &server.url,
        "printf '\\033[1;31mred\\033[0m plain\\n\\033[2K\\nafter\\n'",
    );
    job.arg("--strip-ansi");
    let out = job.output();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(
        server.messages(&job.group, &job.stream),
        ["red plain", "after"]
    );
    // Without the option the codes are kept as they are.
    let mut job = Job::new(&server.url, "printf '\\033[1;31mred\\033[0m\\n'");
    let out = job.output();
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(
        server.messages(&job.group, &job.stream),
        ["\u{1b}[1;31mred\u{1b}[0m"]
    );
}

#[test]
fn multiline_pattern_joins_stack_traces() {
    let server = StrictServer::start();
    let mut job = Job::new(
        &server.url,
        "echo 'ERROR boom'; echo '  at a()'; echo '  at b()'; echo 'INFO next'; sleep 2; echo '  late line'; echo 'INFO last'",
    );
    job.arg("--multiline-pattern")
        .arg("^(ERROR|INFO)")
        .arg("--multiline-timeout")
        .arg("500ms");
    let out = job.output();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(
        server.messages(&job.group, &job.stream),
        [
            "ERROR boom\n  at a()\n  at b()",
            "INFO next",
            "  late line",
            "INFO last"
        ]
    );
    // The held "INFO next" went out on its timeout, before the late line was written.
    let events = server.events(&job.group, &job.stream);
    assert!(events[2].0 - events[1].0 >= 1500, "{events:?}");
}

#[test]
fn json_format_wraps_each_event() {
    let server = StrictServer::start();
    let mut job = Job::new(&server.url, "echo 'say \"hi\"'; sleep 0.05; echo oops >&2");
    job.arg("--format").arg("json").arg("--keep-container");
    let out = job.output();
    let id = containers_with_label(&job.label).pop().unwrap();
    cleanup(&job.label);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let got: Vec<serde_json::Value> = server
        .messages(&job.group, &job.stream)
        .iter()
        .map(|m| serde_json::from_str(m).unwrap())
        .collect();
    assert_eq!(got.len(), 2);
    assert_eq!(got[0]["log"], "say \"hi\"");
    assert_eq!(got[0]["stream"], "stdout");
    assert_eq!(got[1]["log"], "oops");
    assert_eq!(got[1]["stream"], "stderr");
    assert_eq!(got[1]["container"], id[..12]);
}

#[test]
fn split_streams_sends_stdout_and_stderr_apart() {
    let server = StrictServer::start();
    let mut job = Job::new(
        &server.url,
        "for i in $(seq 1 3000); do echo out-$i; echo err-$i >&2; done",
    );
    job.quiet_with_summary().arg("--split-streams");
    let out = job.output();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let want_out: Vec<String> = (1..=3000).map(|i| format!("out-{i}")).collect();
    let want_err: Vec<String> = (1..=3000).map(|i| format!("err-{i}")).collect();
    assert!(server.messages(&job.group, &format!("{}/stdout", job.stream)) == want_out);
    assert!(server.messages(&job.group, &format!("{}/stderr", job.stream)) == want_err);
    assert!(server.messages(&job.group, &job.stream).is_empty());
    assert_clean(&server);
}

/// Deterministic bytes for the lossless tests: random runs (every byte value, so invalid
/// UTF-8 and line ends of both kinds), backslashes, genuine U+FFFDs in short lines, and one
/// 150 KB line of "€" broken by invalid bytes, which Docker's 16 KiB split cuts inside
/// characters.
fn awkward_bytes(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed;
    let mut next = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let mut out = Vec::with_capacity(len + 200_000);
    while out.len() < len {
        match next() % 8 {
            0 => out.extend_from_slice("a\\b \u{FFFD} é\\x41\n".as_bytes()),
            1 => out.extend_from_slice(b"cut \xe2\x82 \xf0\x9f\x98 \xed\xa0\x80\r\n"),
            _ => {
                let n = (next() % 600) as usize;
                out.extend((0..n).map(|_| next() as u8));
            }
        }
    }
    for i in 0..50_000 {
        out.extend_from_slice("€".as_bytes());
        if i % 9_000 == 0 {
            out.push(0xff);
        }
    }
    out.extend_from_slice(b"\nend without newline \xc3");
    out
}

#[test]
fn escape_mode_ships_every_byte_of_both_streams() {
    let server = StrictServer::start();
    let dir = std::env::temp_dir().join(unique("dockwatch-lossless"));
    std::fs::create_dir_all(&dir).unwrap();
    let (out_bytes, err_bytes) = (awkward_bytes(7, 3 << 20), awkward_bytes(11, 1 << 20));
    std::fs::write(dir.join("out"), &out_bytes).unwrap();
    std::fs::write(dir.join("err"), &err_bytes).unwrap();
    let mut job = Job::new(&server.url, "cat /data/out & cat /data/err >&2; wait");
    job.quiet_with_summary()
        .arg("--split-streams")
        .arg("--invalid-utf8")
        .arg("escape")
        .arg("--volume")
        .arg(&format!("{}:/data:ro", dir.display()));
    let out = job.output();
    let _ = std::fs::remove_dir_all(&dir);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let max = 1_048_576 - 26;
    for (name, raw) in [("stdout", &out_bytes), ("stderr", &err_bytes)] {
        let got = server.messages(&job.group, &format!("{}/{name}", job.stream));
        let want = dockwatch::pipeline::framing::reference_escaped(max, raw);
        assert_eq!(got.len(), want.len(), "{name}");
        let differs = got.iter().zip(&want).position(|(g, w)| g != w);
        assert_eq!(differs, None, "{name}: content differs: {}", stderr(&out));
        // And the escapes decode to exactly what was written, line ends aside.
        let lines: Vec<u8> = raw
            .split(|b| *b == b'\n' || *b == b'\r')
            .flatten()
            .copied()
            .collect();
        assert_eq!(
            dockwatch::pipeline::framing::unescape_line(&got.concat()),
            lines
        );
    }
    let err = stderr(&out);
    assert!(err.contains("invalid UTF-8 bytes escaped"), "{err}");
    assert!(!err.contains("as the engine stored them"), "{err}");
    assert_clean(&server);
}

#[test]
fn escape_mode_with_a_tty() {
    let server = StrictServer::start();
    let mut job = Job::new(
        &server.url,
        "printf 'a\\377b\\\\n\\n'; printf 'c \\342\\202\\254 \\342\\202\\n' >&2; printf 'no newline \\376'",
    );
    job.quiet_with_summary()
        .arg("--tty")
        .arg("--invalid-utf8")
        .arg("escape");
    let out = job.output();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(
        server.messages(&job.group, &job.stream),
        ["a\\xffb\\\\n", "c € \\xe2\\x82", "no newline \\xfe"]
    );
    assert_clean(&server);
}

#[test]
fn escape_mode_falls_back_without_losing_a_line() {
    // On the logs path a TTY line longer than 16 KiB comes back from the engine's log with a
    // timestamp inside it, so its raw bytes cannot be matched: the tap turns off, the rest is
    // replaced, and every line still arrives. (The attach path reads the raw bytes only: see
    // `escape_mode_with_a_tty_and_a_long_line_on_the_attach_path`.)
    let server = StrictServer::start();
    let mut job = Job::new(
        &server.url,
        "printf 'first \\377\\n'; head -c 20000 /dev/zero | tr '\\0' b; echo; printf 'last \\376\\n'",
    );
    job.arg("--tty")
        .arg("--invalid-utf8")
        .arg("escape")
        .arg("--read-path")
        .arg("logs");
    let out = job.output();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let got = server.messages(&job.group, &job.stream);
    assert_eq!(got.first().map(String::as_str), Some("first \\xff"));
    assert_eq!(got.last().map(String::as_str), Some("last \u{FFFD}"));
    let bs: usize = got
        .iter()
        .map(|m| m.bytes().filter(|b| *b == b'b').count())
        .sum();
    assert_eq!(bs, 20_000);
    let err = stderr(&out);
    assert!(err.contains("as the engine stored them"), "{err}");
    assert_clean(&server);
}

#[test]
fn escape_mode_with_a_tty_and_a_long_line_on_the_attach_path() {
    let server = StrictServer::start();
    let mut job = Job::new(
        &server.url,
        "printf 'first \\377\\n'; head -c 20000 /dev/zero | tr '\\0' b; echo; printf 'last \\376\\n'",
    );
    job.arg("--tty").arg("--invalid-utf8").arg("escape");
    let out = job.output();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let got = server.messages(&job.group, &job.stream);
    assert_eq!(
        got,
        [
            "first \\xff".to_string(),
            "b".repeat(20_000),
            "last \\xfe".to_string()
        ]
    );
    assert!(!stderr(&out).contains("as the engine stored them"));
    assert_clean(&server);
}

#[test]
fn escape_mode_under_a_slow_server_waits_and_loses_nothing() {
    // The logs path: 24 MB against a server answering each request after 300 ms: the tap's
    // 16 MiB buffer fills, the container waits for the reader, and every line arrives once,
    // in order.
    let server = StrictServer::start();
    server.faults(|f| f.latency = std::time::Duration::from_millis(300));
    let mut job = Job::new(
        &server.url,
        "p=$(printf '\\377'); x=$(head -c 1000 /dev/zero | tr '\\0' x); seq 1 24000 | sed \"s/$/ $p $x/\"",
    );
    job.quiet_with_summary()
        .arg("--invalid-utf8")
        .arg("escape")
        .arg("--read-path")
        .arg("logs");
    let out = job.output();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let got = server.messages(&job.group, &job.stream);
    let err = stderr(&out);
    assert!(!err.contains("as the engine stored them"), "{err}");
    let x = "x".repeat(1000);
    let want: Vec<String> = (1..=24000).map(|i| format!("{i} \\xff {x}")).collect();
    assert_eq!(got.len(), want.len());
    assert!(got == want, "content or order differs");
    assert_clean(&server);
}
