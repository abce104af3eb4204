//! A second, private Docker engine for what must not be done to the shared one: the
//! benchmark's awslogs driver (it takes its credentials from the daemon's environment) and
//! the tests that restart an engine. It has its own data root, exec root, socket, pid file and
//! containerd, in a network namespace of its own; no bridge, no iptables; it is stopped and its
//! directory removed when dropped. Shared by `benches/ship.rs` and the e2e suite.

#![allow(dead_code)]

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// The test and benchmark image, loaded into the private engine.
const IMAGE: &str = "dockwatch-test:latest";

pub struct PrivateEngine {
    dir: std::path::PathBuf,
    /// `unix://...`, for DOCKER_HOST.
    pub host: String,
    daemon: std::process::Child,
}

impl PrivateEngine {
    /// Starts one, named `name` (its directory in the temporary directory), with the image.
    pub fn start(name: &str) -> Result<Self, String> {
        let dir = std::env::temp_dir().join(format!("dockwatch-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
        let sock = dir.join("docker.sock");
        let host = format!("unix://{}", sock.display());
        let daemon = Self::spawn(&dir, &host)?;
        let engine = Self { dir, host, daemon };
        engine.wait_ready()?;
        engine.load_image()?;
        Ok(engine)
    }

    /// Stops the engine (its containers stop with it) and starts it again on the same
    /// directories: what `systemctl restart docker` does.
    pub fn restart(&mut self) -> Result<(), String> {
        self.stop_daemon();
        self.daemon = Self::spawn(&self.dir, &self.host)?;
        self.wait_ready()
    }

    fn spawn(dir: &std::path::Path, host: &str) -> Result<std::process::Child, String> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.join("dockerd.log"))
            .map_err(|e| e.to_string())?;
        // In a network namespace of its own: with `--bridge=none` dockerd deletes `docker0`,
        // which in the host's namespace would break the engine everything else runs on.
        let daemon = Command::new("unshare")
            .args([
                "--net",
                "--",
                "sh",
                "-c",
                "ip link set lo up && exec dockerd \"$@\"",
                "dockerd",
            ])
            .arg("--data-root")
            .arg(dir.join("root"))
            .arg("--exec-root")
            .arg(dir.join("exec"))
            .arg("--pidfile")
            .arg(dir.join("dockerd.pid"))
            .args(["-H", host])
            .args(["--bridge=none", "--iptables=false", "--ip-masq=false"])
            .args(["--ip-forward=false", "--storage-driver", "vfs"])
            .env("AWS_ACCESS_KEY_ID", "AKIDBENCH")
            .env("AWS_SECRET_ACCESS_KEY", "x")
            .env("AWS_EC2_METADATA_DISABLED", "true")
            .stdout(log.try_clone().map_err(|e| e.to_string())?)
            .stderr(log)
            .spawn()
            .map_err(|e| format!("unshare --net dockerd: {e}"))?;
        Ok(daemon)
    }

    fn wait_ready(&self) -> Result<(), String> {
        let deadline = Instant::now() + Duration::from_secs(60);
        while !self
            .docker(&["version"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
        {
            if Instant::now() > deadline {
                return Err(format!(
                    "it did not answer in 60 s (see {})",
                    self.dir.join("dockerd.log").display()
                ));
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        Ok(())
    }

    fn load_image(&self) -> Result<(), String> {
        // The bench image, moved from the main engine.
        let mut save = Command::new("docker")
            .args(["save", IMAGE])
            .stdout(Stdio::piped())
            .spawn()
            .map_err(|e| e.to_string())?;
        let loaded = self
            .docker(&["load", "-q"])
            .stdin(save.stdout.take().unwrap())
            .stdout(Stdio::null())
            .status()
            .map_err(|e| e.to_string())?;
        save.wait().map_err(|e| e.to_string())?;
        if !loaded.success() {
            return Err("could not load the image into it".into());
        }
        Ok(())
    }

    /// A loopback listener inside the engine's network namespace, bound by a thread that
    /// joins the namespace and ends (the socket stays there).
    pub fn listener(&self) -> Result<std::net::TcpListener, String> {
        let ns = std::fs::File::open(format!("/proc/{}/ns/net", self.daemon.id()))
            .map_err(|e| format!("the engine's network namespace: {e}"))?;
        std::thread::spawn(move || {
            use std::os::fd::AsRawFd;
            // SAFETY: setns on this short-lived thread only; `ns` is an open namespace file.
            if unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
                return Err(std::io::Error::last_os_error());
            }
            std::net::TcpListener::bind("127.0.0.1:0")
        })
        .join()
        .map_err(|_| "the namespace thread panicked".to_string())?
        .map_err(|e| format!("listening in the engine's network namespace: {e}"))
    }

    /// The docker CLI for this engine.
    pub fn docker(&self, args: &[&str]) -> Command {
        let mut c = Command::new("docker");
        c.args(["-H", &self.host]).args(args);
        c
    }

    /// SIGTERM: dockerd stops its containers and its containerd, then exits.
    fn stop_daemon(&mut self) {
        let _ = Command::new("kill")
            .arg(self.daemon.id().to_string())
            .status();
        let _ = self.daemon.wait();
    }
}

impl Drop for PrivateEngine {
    fn drop(&mut self) {
        self.stop_daemon();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
