//! An image that is not present is pulled (with progress lines when stderr is no terminal),
//! from a local registry the test starts (Debian's `docker-registry`, on loopback).

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::common::*;

struct Registry {
    child: Child,
    dir: std::path::PathBuf,
    addr: String,
}

impl Registry {
    fn start() -> Self {
        let bin = "/usr/bin/docker-registry";
        assert!(
            std::path::Path::new(bin).exists(),
            "no {bin}: scripts/test.sh installs Debian's docker-registry"
        );
        let port = free_port();
        let dir = std::env::temp_dir().join(unique("registry"));
        std::fs::create_dir_all(&dir).unwrap();
        let config = dir.join("config.yml");
        std::fs::write(
            &config,
            format!(
                "version: 0.1\nstorage:\n  filesystem:\n    rootdirectory: {}\nhttp:\n  addr: 127.0.0.1:{port}\n",
                dir.join("data").display()
            ),
        )
        .unwrap();
        let child = Command::new(bin)
            .args(["serve", config.to_str().unwrap()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        wait_for_port(port, Duration::from_secs(20));
        Self {
            child,
            dir,
            addr: format!("127.0.0.1:{port}"),
        }
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn docker(args: &[&str]) -> std::process::Output {
    let out = Command::new("docker").args(args).output().unwrap();
    assert!(out.status.success(), "docker {args:?}: {}", stderr(&out));
    out
}

#[test]
fn missing_image_is_pulled_with_progress_lines() {
    let registry = Registry::start();
    let image = format!("{}/dockwatch-pull:{}", registry.addr, unique("t"));
    docker(&["tag", IMAGE, &image]);
    docker(&["push", &image]);
    docker(&["rmi", &image]);

    let url = moto_url();
    let mut job = Job::with_image(&url, &image, "echo pulled-and-ran");
    let out = job.output();
    let _ = Command::new("docker").args(["rmi", &image]).output();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(
        stderr(&out).contains(&format!("dockwatch: pulling {image}")),
        "{}",
        stderr(&out)
    );
    assert_eq!(messages(&url, &job.group, &job.stream), ["pulled-and-ran"]);
    assert!(containers_with_label(&job.label).is_empty());
}
