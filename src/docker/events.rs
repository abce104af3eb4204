//! What `dockwatch ship` asks the engine about containers it did not start: the list, one
//! container's facts, and the event stream that says when one starts, dies or is removed.
//!
//! The event stream is not a buffer: while the connection is down, events are missed (the
//! engine replays a few from memory with `since`, none across its own restart). So the stream
//! only says "look again soon"; what is shipped is decided from the list and each container's
//! own state (`host::reconcile`).

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
}

impl ContainerFacts {
    /// What `ship`'s selection looks at.
    pub(crate) fn candidate(&self) -> crate::config::host::Candidate<'_> {
        crate::config::host::Candidate {
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

/// The engine's name for its host (`docker info`'s Name).
pub(crate) async fn host_name(docker: &Docker) -> Result<String, DockerError> {
    let info = docker
        .info()
        .await
        .map_err(|e| DockerError::api("read engine info", &e))?;
    Ok(info.name.unwrap_or_else(|| "docker".to_string()))
}

/// What happened to a container.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Happened {
    Start,
    Die,
    Destroy,
}

/// A container event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ContainerEvent {
    pub(crate) id: String,
    pub(crate) happened: Happened,
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
            vec!["start".into(), "die".into(), "destroy".into()],
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
                    Some("start") => Happened::Start,
                    Some("die") => Happened::Die,
                    Some("destroy") => Happened::Destroy,
                    _ => return None,
                };
                let id = m.actor.and_then(|a| a.id)?;
                Some(Ok(ContainerEvent { id, happened }))
            }
        }
    })
}
