//! The Docker source: connecting to the engine, the container's life cycle
//! ([`container`]) and reading its output through the logs endpoint ([`logs`]).
//!
//! Errors are classified here into what the user can act on (engine unreachable, permission
//! denied, image missing, shell missing) so that `main` can print one clear line.

pub(crate) mod attach;
pub(crate) mod container;
pub(crate) mod events;
pub(crate) mod files;
pub(crate) mod logs;
pub(crate) mod messages;
pub(crate) mod raw_logs;

use std::time::Duration;

use bollard::Docker;

/// A container id as people read it: its first 12 characters, as `docker ps` prints it.
pub(crate) fn short_id(id: &str) -> &str {
    &id[..12.min(id.len())]
}

/// Which output of the container a line came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Source {
    Stdout,
    Stderr,
}

impl Source {
    /// 0 for stdout, 1 for stderr: the slot of per-source arrays.
    pub(crate) fn index(self) -> usize {
        match self {
            Source::Stdout => 0,
            Source::Stderr => 1,
        }
    }

    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Source::Stdout => "stdout",
            Source::Stderr => "stderr",
        }
    }
}

/// Something went wrong talking to Docker.
#[derive(Debug, thiserror::Error)]
pub enum DockerError {
    #[error("cannot reach the Docker engine at {host}: {reason}; start dockerd or set DOCKER_HOST")]
    Unreachable { host: String, reason: String },
    #[error(
        "permission denied on the Docker socket {host}; run as root or join the 'docker' group"
    )]
    PermissionDenied { host: String },
    #[error(
        "image {image:?} is not available: {reason}; check the name, or pull it with 'docker pull'"
    )]
    ImageUnavailable { image: String, reason: String },
    #[error(
        "image {image:?} has no {shell:?} executable; use an image that has it, or choose another with --shell (e.g. --shell sh)"
    )]
    NoShell { image: String, shell: String },
    /// The container is gone while its output was being read (`docker rm -f`, or an engine
    /// that lost it): what it wrote after the last line read is gone with it.
    #[error(
        "container {id} disappeared while its output was being shipped (removed, or lost by the engine); what it wrote after the last line read is gone"
    )]
    ContainerGone { id: String },
    /// The engine answered with an error status: a decision of the engine's, not a broken
    /// connection.
    #[error("Docker: {context}: {message} (HTTP {status})")]
    Answered {
        context: String,
        status: u16,
        message: String,
    },
    /// The request or its stream failed without an answer (connection refused or broken, a
    /// malformed stream).
    #[error("Docker: {context}: {reason}")]
    Api { context: String, reason: String },
}

impl DockerError {
    pub(crate) fn api(context: impl Into<String>, err: &bollard::errors::Error) -> Self {
        match err {
            bollard::errors::Error::DockerResponseServerError {
                status_code,
                message,
            } => DockerError::Answered {
                context: context.into(),
                status: *status_code,
                message: message.trim().to_string(),
            },
            _ => DockerError::Api {
                context: context.into(),
                reason: describe(err),
            },
        }
    }
}

/// A short description of a bollard error: the engine's own message when there is one.
pub(crate) fn describe(err: &bollard::errors::Error) -> String {
    use bollard::errors::Error as E;
    match err {
        E::DockerResponseServerError {
            status_code,
            message,
        } => {
            format!("{} (HTTP {status_code})", message.trim())
        }
        other => {
            let mut s = other.to_string();
            let mut src = std::error::Error::source(other);
            while let Some(e) = src {
                s.push_str(": ");
                s.push_str(&e.to_string());
                src = e.source();
            }
            s
        }
    }
}

/// The status code of an engine error response, if that is what it is.
pub(crate) fn status_of(err: &bollard::errors::Error) -> Option<u16> {
    match err {
        bollard::errors::Error::DockerResponseServerError { status_code, .. } => Some(*status_code),
        _ => None,
    }
}

/// Where the engine is, as the user would name it.
pub(crate) fn docker_host() -> String {
    std::env::var("DOCKER_HOST").unwrap_or_else(|_| "unix:///var/run/docker.sock".to_string())
}

/// Connects to the engine named by `DOCKER_HOST` (or the local socket) and negotiates the API
/// version, so that older engines (API 1.41 here) are spoken to in their own version.
/// `request_timeout` bounds each request that is not a stream.
pub(crate) async fn connect(request_timeout: Duration) -> Result<Docker, DockerError> {
    let host = docker_host();
    let docker = Docker::connect_with_defaults()
        .map_err(|e| DockerError::Unreachable {
            host: host.clone(),
            reason: describe(&e),
        })?
        .with_timeout(request_timeout);
    docker.negotiate_version().await.map_err(|e| {
        if io_error_kind(&e) == Some(std::io::ErrorKind::PermissionDenied) {
            DockerError::PermissionDenied { host: host.clone() }
        } else {
            DockerError::Unreachable {
                host: host.clone(),
                reason: describe(&e),
            }
        }
    })
}

/// The kind of the I/O error under `err`, if one caused it (the socket's permissions).
fn io_error_kind(err: &(dyn std::error::Error + 'static)) -> Option<std::io::ErrorKind> {
    let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(err);
    while let Some(c) = cause {
        if let Some(io) = c.downcast_ref::<std::io::Error>() {
            return Some(io.kind());
        }
        cause = c.source();
    }
    None
}
