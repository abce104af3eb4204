//! The Docker engine's connection drops mid-run: dockwatch reopens the log stream after the
//! last frame it had, with no gap and no duplicate.
//!
//! The test never touches the engine itself (it may not be ours): it puts a Unix-socket proxy
//! between dockwatch (`DOCKER_HOST`) and the engine's socket, and cuts every connection
//! through it while the container writes.

use std::io::{Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::common::*;
use crate::strict_server::StrictServer;

/// A proxy whose connections can all be cut at once.
struct Proxy {
    path: std::path::PathBuf,
    conns: Arc<Mutex<Vec<UnixStream>>>,
    cuts: Arc<AtomicU64>,
}

impl Proxy {
    fn start(upstream: &str) -> Self {
        let path = std::env::temp_dir().join(format!("{}.sock", unique("docker-proxy")));
        let listener = UnixListener::bind(&path).unwrap();
        let conns: Arc<Mutex<Vec<UnixStream>>> = Arc::default();
        let upstream = upstream.to_string();
        let c = conns.clone();
        std::thread::spawn(move || {
            for client in listener.incoming().flatten() {
                let Ok(server) = UnixStream::connect(&upstream) else {
                    continue;
                };
                c.lock().unwrap().push(client.try_clone().unwrap());
                c.lock().unwrap().push(server.try_clone().unwrap());
                pipe(client.try_clone().unwrap(), server.try_clone().unwrap());
                pipe(server, client);
            }
        });
        Self {
            path,
            conns,
            cuts: Arc::default(),
        }
    }

    fn cut_all(&self) {
        for s in self.conns.lock().unwrap().drain(..) {
            let _ = s.shutdown(std::net::Shutdown::Both);
        }
        self.cuts.fetch_add(1, Ordering::SeqCst);
    }
}

fn pipe(mut from: UnixStream, mut to: UnixStream) {
    std::thread::spawn(move || {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            match from.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if to.write_all(&buf[..n]).is_err() {
                        break;
                    }
                }
            }
        }
        let _ = to.shutdown(std::net::Shutdown::Write);
    });
}

#[test]
fn log_stream_reconnects_after_the_engine_connection_drops() {
    let upstream = std::env::var("DOCKER_HOST")
        .ok()
        .and_then(|h| h.strip_prefix("unix://").map(str::to_string))
        .unwrap_or_else(|| "/var/run/docker.sock".to_string());
    let proxy = Proxy::start(&upstream);
    let server = StrictServer::start();
    let mut job = Job::new(
        &server.url,
        "i=0; while [ $i -lt 20000 ]; do i=$((i+1)); echo $i; if [ $((i % 500)) -eq 0 ]; then sleep 0.1; fi; done",
    );
    job.quiet_with_summary();
    job.cmd
        .env("DOCKER_HOST", format!("unix://{}", proxy.path.display()));
    let child = job.spawn();
    // Cut while the log is being followed (events arriving), not while the container is
    // still being set up.
    let start = std::time::Instant::now();
    while server.messages(&job.group, &job.stream).is_empty() {
        assert!(start.elapsed() < Duration::from_secs(30), "nothing arrived");
        std::thread::sleep(Duration::from_millis(50));
    }
    for _ in 0..3 {
        proxy.cut_all();
        std::thread::sleep(Duration::from_millis(700));
    }
    let out = child.wait_with_output().unwrap();
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(0), "{err}");
    let got = server.messages(&job.group, &job.stream);
    assert_eq!(got.len(), 20_000, "{err}");
    for (i, g) in got.iter().enumerate() {
        assert_eq!(*g, (i + 1).to_string(), "at {i}");
    }
    assert_eq!(proxy.cuts.load(Ordering::SeqCst), 3);
    assert!(containers_with_label(&job.label).is_empty(), "{err}");
    let _ = std::fs::remove_file(&proxy.path);
}
