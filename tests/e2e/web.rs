//! `dockwatch web` against the real engine: its API (pages back to the first line, live lines
//! after a page exactly once, loopback only) and its page in a real headless Chromium
//! (Debian's `chromium`, installed by scripts/test.sh): log lines shown as text, never run.

use std::io::{BufRead, BufReader, Read, Write};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::common::*;

/// A running `dockwatch web` on a free loopback port; stopped when dropped.
struct Web {
    child: Child,
    port: u16,
}

impl Web {
    fn start() -> Web {
        let port = free_port();
        let child = dockwatch()
            .args(["web", "--listen", &format!("127.0.0.1:{port}")])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start dockwatch web");
        let up = wait_until(Duration::from_secs(20), || {
            std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
        });
        assert!(up, "dockwatch web did not listen");
        Web { child, port }
    }

    /// GET `path`: (head, body).
    fn get(&self, path: &str) -> (String, String) {
        let all = http_get(self.port, path);
        let (head, body) = all.split_once("\r\n\r\n").unwrap_or((&all, ""));
        (head.to_string(), body.to_string())
    }

    fn json(&self, path: &str) -> serde_json::Value {
        let (head, body) = self.get(path);
        assert!(head.starts_with("HTTP/1.1 200"), "{path}: {head}\n{body}");
        serde_json::from_str(&body).unwrap_or_else(|e| panic!("{path}: {e}: {body}"))
    }
}

impl Drop for Web {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Removes a test's containers when it ends, also by a failed assertion.
struct Labelled(String);

impl Drop for Labelled {
    fn drop(&mut self) {
        cleanup(&self.0);
    }
}

/// `docker run -d` of the test image with `bash -c cmd`, labelled for clean-up: its id.
fn container(label: &str, cmd: &str) -> String {
    let out = Command::new("docker")
        .args(["run", "-d", "--label", &format!("dockwatch.test={label}")])
        .args([IMAGE, "bash", "-c", cmd])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

fn wait_exited(id: &str) {
    assert!(
        wait_until(Duration::from_secs(20), || {
            let out = Command::new("docker")
                .args(["inspect", "-f", "{{.State.Running}}", id])
                .output()
                .unwrap();
            String::from_utf8_lossy(&out.stdout).trim() == "false"
        }),
        "the container did not exit"
    );
}

fn texts(page: &serde_json::Value) -> Vec<String> {
    page["lines"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["text"].as_str().unwrap().to_string())
        .collect()
}

/// An HTTP/1.1 chunked body, decoded.
fn dechunk(body: &str) -> String {
    let (mut out, mut rest) = (String::new(), body);
    while let Some((size, after)) = rest.split_once("\r\n") {
        let n = usize::from_str_radix(size.trim(), 16).expect("a chunk size");
        if n == 0 {
            break;
        }
        out.push_str(&after[..n]);
        rest = &after[n + 2..];
    }
    out
}

/// A server-sent event stream read until `max_lines` lines came, its `end` event, or
/// `limit`: the texts of its `lines` events, and the `end` event's data.
fn sse_read(
    port: u16,
    path: &str,
    max_lines: usize,
    limit: Duration,
) -> (Vec<String>, Option<String>) {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: x\r\nAccept: text/event-stream\r\n\r\n"
    )
    .unwrap();
    s.set_read_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    let mut r = BufReader::new(s);
    let (mut got, start, mut event) = (Vec::new(), Instant::now(), String::new());
    while got.len() < max_lines && start.elapsed() < limit {
        let mut line = String::new();
        match r.read_line(&mut line) {
            Ok(0) => break,
            Ok(_) => {}
            Err(_) => continue,
        }
        let line = line.trim_end();
        if let Some(e) = line.strip_prefix("event: ") {
            event = e.to_string();
        } else if let Some(d) = line.strip_prefix("data: ") {
            match event.as_str() {
                "lines" => {
                    let v: serde_json::Value = serde_json::from_str(d).unwrap();
                    for l in v.as_array().unwrap() {
                        got.push(l["text"].as_str().unwrap().to_string());
                    }
                }
                "end" => return (got, Some(d.to_string())),
                _ => {}
            }
        }
    }
    (got, None)
}

fn sse_until_end(port: u16, path: &str, limit: Duration) -> (Vec<String>, String) {
    match sse_read(port, path, usize::MAX, limit) {
        (got, Some(end)) => (got, end),
        (got, None) => panic!("{path}: no end in {limit:?} ({} lines)", got.len()),
    }
}

/// Pages of 700 walk back from the end of a 3,000-line log to its first line, each line once
/// and in order; the live stream after the first page brings the next 500, each once.
#[test]
fn pages_walk_back_to_the_first_line_and_live_lines_follow_the_page_exactly_once() {
    let label = unique("web");
    let _gone = Labelled(label.clone());
    let id = container(&label, "seq 1 3000; sleep 2; seq 3001 3500; sleep 600");
    let web = Web::start();
    assert!(
        wait_until(Duration::from_secs(20), || {
            texts(&web.json(&format!("/api/logs/{id}?limit=1"))) == ["3000"]
        }),
        "the first 3000 lines were not written"
    );
    let last = web.json(&format!("/api/logs/{id}?limit=700"));
    let after = last["after"].as_str().unwrap().to_string();
    let mut got = texts(&last);
    let mut page = last;
    while let Some(older) = page["older"].as_str() {
        page = web.json(&format!("/api/logs/{id}?limit=700&before={older}"));
        let mut t = texts(&page);
        t.append(&mut got);
        got = t;
    }
    assert_eq!(page["stop"], "start", "{page}");
    let want: Vec<String> = (1..=3000).map(|i| i.to_string()).collect();
    assert!(
        got == want,
        "pages: {} lines, not 1..3000 once each",
        got.len()
    );

    let (live, _) = sse_read(
        web.port,
        &format!("/api/follow/{id}?after={after}"),
        500,
        Duration::from_secs(30),
    );
    let want: Vec<String> = (3001..=3500).map(|i| i.to_string()).collect();
    assert_eq!(live, want);

    // The whole log: downloaded, every line once in order, as text and as JSON lines.
    let all: Vec<String> = (1..=3500).map(|i| i.to_string()).collect();
    let (head, body) = web.get(&format!("/api/download/{id}"));
    assert!(head.contains("content-disposition: attachment"), "{head}");
    let body = dechunk(&body);
    let got: Vec<&str> = body.lines().collect();
    assert!(got == all, "download: {} lines", got.len());
    let (_, body) = web.get(&format!("/api/download/{id}?format=jsonl"));
    let json: Vec<serde_json::Value> = dechunk(&body)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(json.len(), 3500, "jsonl");
    assert_eq!(json[0]["log"], "1");
    assert_eq!(json[0]["stream"], "stdout");
    // Searched, the whole of it: a substring, and a regular expression.
    let (found, end) = sse_until_end(
        web.port,
        &format!("/api/search/{id}?q=350"),
        Duration::from_secs(30),
    );
    let want: Vec<String> = all.iter().filter(|t| t.contains("350")).cloned().collect();
    assert_eq!(found, want);
    assert!(
        end.contains("\"scanned\":3500") && end.contains("\"truncated\":false"),
        "{end}"
    );
    let (found, _) = sse_until_end(
        web.port,
        &format!("/api/search/{id}?regex=1&q=%5E3%5B0-9%5D%7B2%7D%24"),
        Duration::from_secs(30),
    );
    assert_eq!(found, (300..400).map(|i| i.to_string()).collect::<Vec<_>>());
    let (head, body) = web.get(&format!("/api/search/{id}?regex=1&q=%28"));
    assert!(
        head.starts_with("HTTP/1.1 400") && body.contains("not a regular expression"),
        "{head}{body}"
    );

    // The container list has it, running; the page's policy is on every answer.
    let list = web.json("/api/containers");
    let me = list
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["id"] == id.as_str())
        .expect("listed");
    assert_eq!(me["state"], "running");
    let (head, _) = web.get("/");
    assert!(
        head.contains("content-security-policy: default-src 'none'; script-src 'self'"),
        "{head}"
    );
    let (head, body) = web.get("/api/logs/nonexistent");
    assert!(head.starts_with("HTTP/1.1 404"), "{head}");
    assert!(body.contains("no container 'nonexistent'"), "{body}");
}

#[test]
fn web_listens_on_loopback_only_and_says_so_in_one_line() {
    let out = dockwatch()
        .args(["web", "--listen", "0.0.0.0:9800"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = stderr(&out);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.contains("loopback only") && err.contains("ssh -L"),
        "{err}"
    );
}

/// Debian's Chromium, headless, as this machine allows it (no sandbox as root, no network
/// beyond loopback): the DOM after the page ran, or a screenshot.
fn chromium(args: &[&str], url: &str) -> std::process::Output {
    let profile = std::env::temp_dir().join(unique("chromium"));
    let mut c = Command::new("chromium");
    c.args([
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--virtual-time-budget=10000",
    ])
    .arg(format!("--user-data-dir={}", profile.display()))
    .args(args)
    .arg(url)
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    let mut child = c
        .spawn()
        .expect("chromium: scripts/test.sh installs Debian's chromium");
    let start = Instant::now();
    loop {
        if child.try_wait().unwrap().is_some() {
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(90), "chromium hung");
        std::thread::sleep(Duration::from_millis(200));
    }
    let mut out = child.wait_with_output().unwrap();
    let _ = std::fs::remove_dir_all(&profile);
    // Its own noise on stderr (dbus, GPU) is not the page's.
    out.stderr.clear();
    out
}

/// The page in a real browser: a container's lines are rows of text — markup and an escape
/// sequence in a line are shown as characters, nothing of them runs — and a 40,000-character
/// line the engine stored in three pieces is one row.
#[test]
fn the_page_shows_log_lines_as_text_in_a_real_browser() {
    let label = unique("web-browser");
    let _gone = Labelled(label.clone());
    let id = container(
        &label,
        r#"echo 'hello from the container'; echo '<img src=x onerror="document.title=1">'; printf '\033[31mred\033[0m\n'; head -c 40000 /dev/zero | tr '\0' y; echo; echo 'to stderr' >&2"#,
    );
    wait_exited(&id);
    let web = Web::start();
    let url = format!("http://127.0.0.1:{}/#c={id}", web.port);
    let out = chromium(&["--dump-dom"], &url);
    let dom = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(dom.contains("hello from the container"), "{dom}");
    // Shown as text: escaped in the DOM, no element made of it, the title untouched.
    assert!(
        dom.contains("&lt;img src=x onerror=\"document.title=1\"&gt;"),
        "{dom}"
    );
    assert!(!dom.contains("<img"), "{dom}");
    assert!(dom.contains("<title>dockwatch</title>"), "{dom}");
    assert!(
        dom.contains("\u{1b}[31mred\u{1b}[0m") || dom.contains("[31mred"),
        "{dom}"
    );
    assert!(
        dom.contains(&"y".repeat(40_000)),
        "the long line is not one row"
    );
    assert!(dom.contains("class=\"row err\""), "stderr is marked: {dom}");
    assert!(dom.contains("the container stopped"), "{dom}");
    // A permalink with a search: the page runs it over the whole log.
    let out = chromium(&["--dump-dom"], &format!("{url}&q=HELLO"));
    let dom = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        dom.contains("Search “HELLO”: 1 match in 5 lines — the whole log"),
        "{dom}"
    );

    // The README's screenshot of the main view, made here, of a container that writes what
    // a service does.
    let demo = container(
        &label,
        r#"for i in $(seq 1 40); do echo "INFO request $i served in $((i % 7 + 2)) ms"; [ $((i % 9)) = 0 ] && echo "WARN cache miss for key user:$i"; [ $((i % 13)) = 0 ] && echo "ERROR upstream timed out after 30 s (attempt $((i / 13)))" >&2; done; echo '{"level":"info","msg":"shutting down","pending":0}'"#,
    );
    wait_exited(&demo);
    let shot = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target/web-viewer.png");
    let _ = std::fs::remove_file(&shot);
    chromium(
        &[
            &format!("--screenshot={}", shot.display()),
            "--window-size=1280,720",
            "--hide-scrollbars",
        ],
        &format!("http://127.0.0.1:{}/#c={demo}", web.port),
    );
    let mut png = Vec::new();
    std::fs::File::open(&shot)
        .and_then(|mut f| f.read_to_end(&mut png))
        .expect("a screenshot");
    assert!(png.starts_with(b"\x89PNG"), "not a PNG");
}
