//! The container's life cycle: make sure the image is there (pulling it with progress),
//! create the container running `SHELL -c CMD`, start, stop, kill, inspect and remove it.
//!
//! Containers are created with the `json-file` log driver and no rotation: the engine's log
//! file is dockwatch's durable buffer, read through the logs endpoint at dockwatch's own pace
//! (see [`super::logs`]), so a slow CloudWatch never blocks the container's writes.
//!
//! Why not the `local` driver, which keeps invalid UTF-8 bytes as they are (`json-file`
//! replaces each with U+FFFD before any reader sees them): on this engine (20.10) `local`
//! loses the line that follows a line longer than 16 KiB (measured; see the README). Losing
//! lines is worse than replacing bytes.

use std::collections::HashMap;
use std::io::IsTerminal;

use bollard::Docker;
use bollard::models::{ContainerCreateBody, HostConfig, HostConfigLogConfig, PortBinding};
use bollard::query_parameters::{
    AttachContainerOptionsBuilder, ContainerArchiveInfoOptionsBuilder,
    CreateContainerOptionsBuilder, CreateImageOptionsBuilder, KillContainerOptionsBuilder,
    RemoveContainerOptionsBuilder, StopContainerOptionsBuilder,
};
use futures_util::StreamExt;

use super::{DockerError, describe, status_of};

use crate::config::container::split_image_ref;
use crate::config::{ContainerSpec, PullPolicy};

/// Makes sure `spec.image` is present, pulling it as the pull policy says.
pub(crate) async fn ensure_image(docker: &Docker, spec: &ContainerSpec) -> Result<(), DockerError> {
    let present = match docker.inspect_image(&spec.image).await {
        Ok(_) => true,
        Err(e) if status_of(&e) == Some(404) => false,
        Err(e) => {
            return Err(DockerError::api(
                format!("inspect image {}", spec.image),
                &e,
            ));
        }
    };
    match (spec.pull, present) {
        (PullPolicy::Never, false) => Err(DockerError::ImageUnavailable {
            image: spec.image.clone(),
            reason: "not present locally and --pull never".into(),
        }),
        (PullPolicy::Missing, true) | (PullPolicy::Never, true) => Ok(()),
        _ => pull(docker, &spec.image).await,
    }
}

async fn pull(docker: &Docker, image: &str) -> Result<(), DockerError> {
    let (from_image, tag) = split_image_ref(image);
    let opts = CreateImageOptionsBuilder::default()
        .from_image(from_image)
        .tag(tag)
        .build();
    let mut stream = docker.create_image(Some(opts), None, None);
    let bar = std::io::stderr().is_terminal().then(|| {
        let b = indicatif::ProgressBar::new_spinner();
        b.set_message(format!("pulling {image}"));
        b.enable_steady_tick(std::time::Duration::from_millis(120));
        b
    });
    // Per-layer progress, summed for the bar; plain lines (one per layer status) otherwise.
    let mut layers: HashMap<String, (i64, i64, String)> = HashMap::new();
    let mut result = Ok(());
    while let Some(item) = stream.next().await {
        match item {
            Ok(info) => {
                if let Some(err) = info.error_detail.and_then(|d| d.message) {
                    result = Err(err);
                    break;
                }
                let id = info.id.unwrap_or_default();
                let status = info.status.unwrap_or_default();
                let (cur, tot) = info
                    .progress_detail
                    .map(|p| (p.current.unwrap_or(0), p.total.unwrap_or(0)))
                    .unwrap_or((0, 0));
                let changed = layers.get(&id).is_none_or(|(_, _, s)| *s != status);
                layers.insert(id.clone(), (cur, tot, status.clone()));
                match &bar {
                    Some(b) => {
                        let (c, t) = layers.values().fold((0, 0), |a, l| (a.0 + l.0, a.1 + l.1));
                        b.set_message(format!(
                            "pulling {image}: {} / {} MB",
                            c / 1_000_000,
                            t / 1_000_000
                        ));
                    }
                    None if changed => {
                        crate::say!("dockwatch: pulling {image}: {id} {status}");
                    }
                    None => {}
                }
            }
            Err(e) => {
                result = Err(describe(&e));
                break;
            }
        }
    }
    if let Some(b) = bar {
        b.finish_and_clear();
    }
    result.map_err(|reason| DockerError::ImageUnavailable {
        image: image.to_string(),
        reason,
    })
}

/// Creates the container (not started) and returns its id.
pub(crate) async fn create(docker: &Docker, spec: &ContainerSpec) -> Result<String, DockerError> {
    let run = &spec.run;
    let port_bindings: HashMap<String, Option<Vec<PortBinding>>> =
        run.ports.iter().fold(HashMap::new(), |mut m, p| {
            m.entry(p.key())
                .or_insert_with(|| Some(Vec::new()))
                .get_or_insert_with(Vec::new)
                .push(PortBinding {
                    host_ip: p.host_ip.clone(),
                    host_port: Some(p.host_port.map(|n| n.to_string()).unwrap_or_default()),
                });
            m
        });
    let host_config = HostConfig {
        log_config: Some(HostConfigLogConfig {
            typ: Some("json-file".into()),
            config: Some(HashMap::new()),
        }),
        binds: (!spec.binds.is_empty()).then(|| spec.binds.clone()),
        init: Some(run.init),
        memory: run.memory,
        nano_cpus: run.nano_cpus,
        network_mode: run.network.clone(),
        port_bindings: (!port_bindings.is_empty()).then_some(port_bindings),
        ..Default::default()
    };
    let body = ContainerCreateBody {
        image: Some(spec.image.clone()),
        entrypoint: Some(vec![spec.shell.clone(), "-c".into(), spec.command.clone()]),
        cmd: Some(vec![]),
        env: Some(spec.env.clone()),
        labels: Some(spec.labels.iter().cloned().collect()),
        tty: Some(spec.tty),
        user: run.user.clone(),
        working_dir: run.workdir.clone(),
        exposed_ports: (!run.ports.is_empty()).then(|| run.ports.iter().map(|p| p.key()).collect()),
        attach_stdout: Some(false),
        attach_stderr: Some(false),
        // -i: stdin open until the one attached writer closes it (docker run -i's settings).
        open_stdin: Some(run.stdin),
        stdin_once: Some(run.stdin),
        attach_stdin: Some(run.stdin),
        host_config: Some(host_config),
        ..Default::default()
    };
    let mut opts = CreateContainerOptionsBuilder::default();
    if let Some(name) = &spec.name {
        opts = opts.name(name);
    }
    let resp = docker
        .create_container(Some(opts.build()), body)
        .await
        .map_err(|e| DockerError::api("create container", &e))?;
    Ok(resp.id)
}

/// Where a runtime (or the engine's init) looks for a program when the container's
/// environment has no `PATH`: the engine's default.
const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Makes sure the created container's filesystem has the shell, looked up as the runtime
/// will: a name with a `/` as it is, else in each absolute directory of the container's
/// `PATH`. Under the engine's init a missing shell is no start error but an exit 127 after
/// tini's own message, so this is how a run without a shell is told apart before anything is
/// created in CloudWatch. Answers the engine cannot give (an old engine, a relative path)
/// leave the decision to the start.
pub(crate) async fn check_shell(
    docker: &Docker,
    id: &str,
    spec: &ContainerSpec,
) -> Result<(), DockerError> {
    let candidates: Vec<String> = if spec.shell.contains('/') {
        if !spec.shell.starts_with('/') {
            return Ok(());
        }
        vec![spec.shell.clone()]
    } else {
        let info = docker
            .inspect_container(id, None)
            .await
            .map_err(|e| DockerError::api("inspect container", &e))?;
        let path = info
            .config
            .and_then(|c| c.env)
            .unwrap_or_default()
            .into_iter()
            .find_map(|e| e.strip_prefix("PATH=").map(str::to_string))
            .unwrap_or_else(|| DEFAULT_PATH.to_string());
        path.split(':')
            .filter(|d| d.starts_with('/'))
            .map(|d| format!("{}/{}", d.trim_end_matches('/'), spec.shell))
            .collect()
    };
    for path in candidates {
        let opts = ContainerArchiveInfoOptionsBuilder::default()
            .path(&path)
            .build();
        match docker.get_container_archive_info(id, Some(opts)).await {
            // Go's os.ModeDir: a directory of that name is no shell.
            Ok(stat) if stat.file_mode & (1 << 31) == 0 => return Ok(()),
            Ok(_) => {}
            Err(e) if status_of(&e) == Some(404) => {}
            Err(e) => {
                tracing::debug!("cannot look for {path} in the container: {}", describe(&e));
                return Ok(());
            }
        }
    }
    Err(DockerError::NoShell {
        image: spec.image.clone(),
        shell: spec.shell.clone(),
    })
}

/// Starts the container; a missing shell becomes [`DockerError::NoShell`]. Starting is
/// idempotent (the engine answers 304 when it already runs), so a broken connection is
/// retried a few times.
pub(crate) async fn start(
    docker: &Docker,
    id: &str,
    spec: &ContainerSpec,
) -> Result<(), DockerError> {
    let mut attempt = 0;
    loop {
        let err = match docker.start_container(id, None).await {
            Ok(()) => return Ok(()),
            Err(e) if status_of(&e) == Some(304) => return Ok(()),
            Err(e) => e,
        };
        let reason = describe(&err);
        let missing = reason.contains("executable file not found")
            || (reason.contains("no such file or directory") && reason.contains(&spec.shell));
        if missing {
            return Err(DockerError::NoShell {
                image: spec.image.clone(),
                shell: spec.shell.clone(),
            });
        }
        attempt += 1;
        if status_of(&err).is_some() || attempt >= 5 {
            return Err(DockerError::api("start container", &err));
        }
        tracing::warn!("starting the container failed ({reason}); trying again");
        tokio::time::sleep(std::time::Duration::from_millis(200 * attempt)).await;
    }
}

/// `-i`: attaches to the created container's stdin (before the start, as `docker run -i`
/// does) and copies this process's standard input into it until its end, which closes the
/// command's input (the container is created with `StdinOnce`); read by
/// [`crate::util::stdin_pieces`].
pub(crate) async fn forward_stdin(docker: &Docker, id: &str) -> Result<(), DockerError> {
    use tokio::io::AsyncWriteExt;
    let opts = AttachContainerOptionsBuilder::default()
        .stdin(true)
        .stream(true)
        .build();
    let attached = docker
        .attach_container(id, Some(opts))
        .await
        .map_err(|e| DockerError::api("attach to the container's stdin", &e))?;
    let mut rx = crate::util::stdin_pieces(64 * 1024).map_err(|e| DockerError::Api {
        context: "forward the standard input".into(),
        reason: e.to_string(),
    })?;
    tokio::spawn(async move {
        let mut input = attached.input;
        // The output half stays open until the input is closed: the engine reads a closed
        // connection as a detach.
        let _output = attached.output;
        while let Some(piece) = rx.recv().await {
            if input.write_all(&piece).await.is_err() {
                return;
            }
        }
        let _ = input.shutdown().await;
    });
    Ok(())
}

/// Asks the container to stop: SIGTERM, then SIGKILL after `grace`.
pub(crate) async fn stop(
    docker: &Docker,
    id: &str,
    grace: std::time::Duration,
) -> Result<(), DockerError> {
    let t = i32::try_from(grace.as_secs()).unwrap_or(i32::MAX);
    let opts = StopContainerOptionsBuilder::default().t(t).build();
    match docker.stop_container(id, Some(opts)).await {
        Ok(()) => Ok(()),
        // 304: already stopped.
        Err(e) if status_of(&e) == Some(304) => Ok(()),
        Err(e) => Err(DockerError::api("stop container", &e)),
    }
}

/// Kills the container at once.
pub(crate) async fn kill(docker: &Docker, id: &str) -> Result<(), DockerError> {
    let opts = KillContainerOptionsBuilder::default()
        .signal("SIGKILL")
        .build();
    match docker.kill_container(id, Some(opts)).await {
        Ok(()) => Ok(()),
        // 409: not running any more.
        Err(e) if status_of(&e) == Some(409) => Ok(()),
        Err(e) => Err(DockerError::api("kill container", &e)),
    }
}

/// The container's state: `Some(exit code)` once it has exited, `None` while it runs.
pub(crate) async fn exit_code(docker: &Docker, id: &str) -> Result<Option<i64>, DockerError> {
    let info = docker
        .inspect_container(id, None)
        .await
        .map_err(|e| DockerError::api("inspect container", &e))?;
    let state = info.state.unwrap_or_default();
    if state.running == Some(true) || state.restarting == Some(true) {
        return Ok(None);
    }
    Ok(Some(state.exit_code.unwrap_or(0)))
}

/// True when the engine no longer knows the container or is removing it (removed under
/// us: `docker rm -f` marks the container for removal before it kills it).
pub(crate) async fn is_gone(docker: &Docker, id: &str) -> bool {
    use bollard::models::ContainerStateStatusEnum as Status;
    match docker.inspect_container(id, None).await {
        Err(e) => status_of(&e) == Some(404),
        Ok(info) => matches!(
            info.state.and_then(|s| s.status),
            Some(Status::REMOVING | Status::DEAD)
        ),
    }
}

/// True when the container will write no more: exited, dead, being removed, or gone. A
/// container that was created and not started yet, or is restarting, has not ended.
pub(crate) async fn has_ended(docker: &Docker, id: &str) -> Result<bool, DockerError> {
    use bollard::models::ContainerStateStatusEnum as Status;
    match docker.inspect_container(id, None).await {
        Err(e) if status_of(&e) == Some(404) => Ok(true),
        Err(e) => Err(DockerError::api("inspect container", &e)),
        Ok(info) => Ok(matches!(
            info.state.and_then(|s| s.status),
            Some(Status::EXITED | Status::DEAD | Status::REMOVING)
        )),
    }
}

/// Removes the container (forcefully: it may still run after an error).
pub(crate) async fn remove(docker: &Docker, id: &str) -> Result<(), DockerError> {
    let opts = RemoveContainerOptionsBuilder::default()
        .force(true)
        .v(true)
        .build();
    match docker.remove_container(id, Some(opts)).await {
        Ok(()) => Ok(()),
        Err(e) if status_of(&e) == Some(404) => Ok(()),
        Err(e) => Err(DockerError::api("remove container", &e)),
    }
}

#[cfg(test)]
mod tests {
    use crate::config::container::split_image_ref;

    #[test]
    fn image_refs() {
        assert_eq!(split_image_ref("python"), ("python", "latest"));
        assert_eq!(split_image_ref("python:3.12"), ("python", "3.12"));
        assert_eq!(
            split_image_ref("localhost:5000/x/y"),
            ("localhost:5000/x/y", "latest")
        );
        assert_eq!(
            split_image_ref("localhost:5000/x/y:v1"),
            ("localhost:5000/x/y", "v1")
        );
        assert_eq!(
            split_image_ref("busybox@sha256:abc"),
            ("busybox@sha256:abc", "")
        );
    }
}

/// A container as `docker ps -a` lists it (as JSON too, without its labels: the web page's
/// list).
#[derive(Debug, Clone, serde::Serialize)]
pub(crate) struct Listed {
    pub(crate) id: String,
    /// Without the engine's leading `/`.
    pub(crate) name: String,
    pub(crate) image: String,
    /// `running`, `exited`, `created`, …
    pub(crate) state: String,
    /// The engine's words: `Up 3 minutes`, `Exited (3) 2 hours ago`.
    pub(crate) status: String,
    /// Seconds since the epoch.
    pub(crate) created: i64,
    #[serde(skip)]
    pub(crate) labels: std::collections::HashMap<String, String>,
}

/// The engine's containers (`all`: also those not running).
pub(crate) async fn list(docker: &Docker, all: bool) -> Result<Vec<Listed>, DockerError> {
    let opts = bollard::query_parameters::ListContainersOptionsBuilder::default()
        .all(all)
        .build();
    let list = docker
        .list_containers(Some(opts))
        .await
        .map_err(|e| DockerError::api("list containers", &e))?;
    Ok(list
        .into_iter()
        .map(|c| Listed {
            id: c.id.unwrap_or_default(),
            name: c
                .names
                .unwrap_or_default()
                .first()
                .map(|n| n.trim_start_matches('/').to_string())
                .unwrap_or_default(),
            image: c.image.unwrap_or_default(),
            state: c
                .state
                .and_then(|s| serde_json::to_value(s).ok())
                .and_then(|v| v.as_str().map(str::to_string))
                .unwrap_or_default(),
            status: c.status.unwrap_or_default(),
            created: c.created.unwrap_or(0),
            labels: c.labels.unwrap_or_default(),
        })
        .collect())
}
