//! What `dockwatch ship` asks the engine about containers it did not start: the list, one
//! container's facts, and the event stream that says when one is created, starts, dies or is
//! removed.
//!
//! The event stream is not a buffer: while the connection is down, events are missed (the
//! engine replays a few from memory with `since`, none across its own restart). So the stream
//! only says "look again soon"; what is shipped is decided from the list and each container's
//! own state (`ship::reconcile`).

use std::collections::HashMap;

use bollard::Docker;
use bollard::query_parameters::{EventsOptions, InspectContainerOptions, ListContainersOptions};
use futures_util::{Stream, StreamExt};

use super::{DockerError, status_of};

/// A container as `ship` sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ContainerFacts {
    pub(crate) id: String,
    /// Without the engine's leading `/`.
    pub(crate) name: String,
    /// As created from (`Config.Image`).
    pub(crate) image: String,
    pub(crate) labels: HashMap<String, String>,
    pub(crate) running: bool,
    /// When it was created, ms since the epoch.
    pub(crate) created_ms: i64,
    /// When it last exited, as the engine says it (`State.FinishedAt`).
    pub(crate) finished_at: String,
    /// Whether it has a TTY (stdout and stderr are one stream then).
    pub(crate) tty: bool,
    /// Created but never started: its log does not exist yet.
    pub(crate) created_only: bool,
    /// Its logging driver (`HostConfig.LogConfig.Type`; empty: the engine's default).
    pub(crate) log_driver: String,
    /// The engine's log file of it (`LogPath`; empty when unknown or not a file driver).
    pub(crate) log_path: String,
}

impl ContainerFacts {
    /// What `ship`'s selection looks at.
    pub(crate) fn candidate(&self) -> crate::config::ship::Candidate<'_> {
        crate::config::ship::Candidate {
            name: &self.name,
            image: &self.image,
            labels: &self.labels,
        }
    }
}

/// The facts of one container; `None` when the engine does not know it (removed).
pub(crate) async fn inspect(
    docker: &Docker,
    id: &str,
) -> Result<Option<ContainerFacts>, DockerError> {
    let c = match docker
        .inspect_container(id, None::<InspectContainerOptions>)
        .await
    {
        Ok(c) => c,
        Err(e) if status_of(&e) == Some(404) => return Ok(None),
        Err(e) => return Err(DockerError::api("inspect container", &e)),
    };
    let config = c.config.unwrap_or_default();
    let state = c.state.unwrap_or_default();
    let log_driver = c
        .host_config
        .and_then(|h| h.log_config)
        .and_then(|l| l.typ)
        .unwrap_or_default();
    let created_ms = c
        .created
        .as_deref()
        .and_then(|t| crate::util::time::parse_time(t, 0).ok())
        .unwrap_or(0);
    Ok(Some(ContainerFacts {
        id: c.id.unwrap_or_else(|| id.to_string()),
        name: c
            .name
            .unwrap_or_default()
            .trim_start_matches('/')
            .to_string(),
        image: config.image.unwrap_or_default(),
        labels: config.labels.unwrap_or_default(),
        running: state.running.unwrap_or(false),
        created_ms,
        finished_at: state.finished_at.unwrap_or_default(),
        tty: config.tty.unwrap_or(false),
        created_only: state.status == Some(bollard::models::ContainerStateStatusEnum::CREATED),
        log_driver,
        log_path: c.log_path.unwrap_or_default(),
    }))
}

/// The ids of every container the engine has, running or not.
pub(crate) async fn list_ids(docker: &Docker) -> Result<Vec<String>, DockerError> {
    let opts = ListContainersOptions {
        all: true,
        ..Default::default()
    };
    let list = docker
        .list_containers(Some(opts))
        .await
        .map_err(|e| DockerError::api("list containers", &e))?;
    Ok(list.into_iter().filter_map(|c| c.id).collect())
}

/// What `ship` needs to know of the engine (`docker info`).
#[derive(Debug, Clone)]
pub(crate) struct EngineInfo {
    /// Its name for its host.
    pub(crate) name: String,
    /// Where it keeps its state (`/var/lib/docker`): the containers' log files are below.
    pub(crate) root_dir: std::path::PathBuf,
    /// The logging driver of containers created without one.
    pub(crate) log_driver: String,
}

pub(crate) async fn engine_info(docker: &Docker) -> Result<EngineInfo, DockerError> {
    let info = docker
        .info()
        .await
        .map_err(|e| DockerError::api("read engine info", &e))?;
    Ok(EngineInfo {
        name: info.name.unwrap_or_else(|| "docker".to_string()),
        root_dir: info
            .docker_root_dir
            .unwrap_or_else(|| "/var/lib/docker".into())
            .into(),
        log_driver: info.logging_driver.unwrap_or_else(|| "json-file".into()),
    })
}

/// What happened to a container.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Happened {
    /// Created: its log file appears at its first start, which may come at once.
    Create,
    Start,
    Die,
    Destroy,
}

/// A container event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ContainerEvent {
    pub(crate) id: String,
    pub(crate) happened: Happened,
    /// The engine's attributes: `name`, `image` and the container's labels.
    pub(crate) attributes: HashMap<String, String>,
    /// When it happened, ms since the epoch.
    pub(crate) at_ms: i64,
}

impl ContainerEvent {
    /// A created container's facts as its event tells them, for when it is removed before it
    /// could be inspected (a `--rm` container that lived a millisecond): its labels are the
    /// attributes other than `name` and `image`; its logging driver is not said.
    pub(crate) fn created_facts(&self) -> ContainerFacts {
        let mut labels = self.attributes.clone();
        let name = labels.remove("name").unwrap_or_default();
        let image = labels.remove("image").unwrap_or_default();
        ContainerFacts {
            id: self.id.clone(),
            name,
            image,
            labels,
            running: false,
            created_ms: self.at_ms,
            finished_at: String::new(),
            tty: false,
            created_only: false,
            log_driver: String::new(),
            log_path: String::new(),
        }
    }
}

/// Container starts, deaths and removals from now on; the stream ends (or yields an error)
/// when the connection to the engine does.
pub(crate) fn container_events(
    docker: &Docker,
) -> impl Stream<Item = Result<ContainerEvent, DockerError>> + use<> {
    let filters = HashMap::from([
        ("type".to_string(), vec!["container".to_string()]),
        (
            "event".to_string(),
            vec![
                "create".into(),
                "start".into(),
                "die".into(),
                "destroy".into(),
            ],
        ),
    ]);
    let opts = EventsOptions {
        filters: Some(filters),
        ..Default::default()
    };
    docker.events(Some(opts)).filter_map(|r| async move {
        match r {
            Err(e) => Some(Err(DockerError::api("read engine events", &e))),
            Ok(m) => {
                let happened = match m.action.as_deref() {
                    Some("create") => Happened::Create,
                    Some("start") => Happened::Start,
                    Some("die") => Happened::Die,
                    Some("destroy") => Happened::Destroy,
                    _ => return None,
                };
                let at_ms = m
                    .time_nano
                    .map(|n| n.div_euclid(1_000_000))
                    .or(m.time.map(|t| t * 1000))
                    .unwrap_or_else(crate::util::time::now_ms);
                let actor = m.actor?;
                let id = actor.id?;
                let attributes = actor.attributes.unwrap_or_default();
                Some(Ok(ContainerEvent {
                    id,
                    happened,
                    attributes,
                    at_ms,
                }))
            }
        }
    })
}
