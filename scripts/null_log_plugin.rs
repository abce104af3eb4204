//! A Docker logging plugin that drains each container's FIFO and discards the entries: the
//! most the logging-plugin path (the protocol the awslogs driver's input also uses: the engine
//! writes length-prefixed protobuf `LogEntry` frames into a FIFO per container) lets a
//! container write. Measurement only, for `scripts/log_drivers.sh`; built with plain `rustc`
//! (std only) into the plugin's rootfs.
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

fn json_field<'a>(body: &'a str, key: &str) -> Option<&'a str> {
    let k = format!("\"{key}\":\"");
    let at = body.find(&k)? + k.len();
    let end = body[at..].find('"')? + at;
    Some(&body[at..end])
}

fn drain(path: String, entries: Arc<AtomicU64>) {
    let Ok(mut f) = std::fs::File::open(&path) else { return };
    let mut buf = vec![0u8; 1 << 20];
    let mut pending: Vec<u8> = Vec::new();
    let mut n_entries = 0u64;
    loop {
        let n = match f.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        pending.extend_from_slice(&buf[..n]);
        let mut at = 0;
        while pending.len() - at >= 4 {
            let len = u32::from_be_bytes(pending[at..at + 4].try_into().unwrap()) as usize;
            if pending.len() - at - 4 < len {
                break;
            }
            at += 4 + len;
            n_entries += 1;
        }
        pending.drain(..at);
    }
    entries.fetch_add(n_entries, Ordering::Relaxed);
    eprintln!("dwnull: {path}: {n_entries} entries");
}

fn serve(s: UnixStream, entries: Arc<AtomicU64>) {
    let mut r = BufReader::new(s.try_clone().unwrap());
    let mut w = s;
    loop {
        let mut line = String::new();
        if r.read_line(&mut line).unwrap_or(0) == 0 {
            return;
        }
        let path = line.split(' ').nth(1).unwrap_or("").to_string();
        let mut len = 0usize;
        loop {
            let mut h = String::new();
            if r.read_line(&mut h).unwrap_or(0) == 0 {
                return;
            }
            if h == "\r\n" {
                break;
            }
            if let Some(v) = h.to_ascii_lowercase().strip_prefix("content-length:") {
                len = v.trim().parse().unwrap_or(0);
            }
        }
        let mut body = vec![0u8; len];
        if r.read_exact(&mut body).is_err() {
            return;
        }
        let body = String::from_utf8_lossy(&body).to_string();
        let reply = match path.as_str() {
            "/Plugin.Activate" => r#"{"Implements":["LogDriver"]}"#.to_string(),
            "/LogDriver.Capabilities" => r#"{"Cap":{"ReadLogs":false}}"#.to_string(),
            "/LogDriver.StartLogging" => {
                if let Some(f) = json_field(&body, "File") {
                    let (f, e) = (f.to_string(), entries.clone());
                    std::thread::spawn(move || drain(f, e));
                }
                "{}".to_string()
            }
            _ => "{}".to_string(),
        };
        let resp = format!(
            "HTTP/1.1 200 OK\r\nContent-Type: application/vnd.docker.plugins.v1+json\r\nContent-Length: {}\r\n\r\n{}",
            reply.len(),
            reply
        );
        if w.write_all(resp.as_bytes()).is_err() {
            return;
        }
    }
}

fn main() {
    let sock = "/run/docker/plugins/dwnull.sock";
    let _ = std::fs::create_dir_all("/run/docker/plugins");
    let _ = std::fs::remove_file(sock);
    let l = UnixListener::bind(sock).expect("bind");
    let entries = Arc::new(AtomicU64::new(0));
    for s in l.incoming().flatten() {
        let e = entries.clone();
        std::thread::spawn(move || serve(s, e));
    }
}
