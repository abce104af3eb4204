//! The gRPC agent on a Docker host and the remote CLI that talks to it.
//!
//! ```text
//! remote (CLI: channel, token, TLS; prints logs byte for byte)
//!   == gRPC (proto/dockwatch/agent/v1/agent.proto, crate dockwatch-proto) ==>
//! server  (listen policy, TLS, bearer token, health, reflection, shutdown)
//!   -> service (LaunchContainer, StopContainer, ListContainers, ExecContainer, GetLogs)
//!   -> docker  (the engine; GetLogs streams straight from the logs endpoint)
//! ```
//!
//! Security model: the Docker socket is root on the host, so the agent listens on loopback
//! or a Unix socket (mode 0600) unless told otherwise, and anywhere else it needs TLS and a
//! bearer token, or an explicit `--insecure` ([`listen_policy`]). Every mutating call is
//! logged (when, peer, identity, call, target) without secrets.

pub mod remote;
pub mod server;
pub(crate) mod service;

use std::net::SocketAddr;
use std::path::PathBuf;

use crate::exit_codes;

/// Where the agent listens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Listen {
    Tcp(SocketAddr),
    Unix(PathBuf),
}

impl Listen {
    /// `HOST:PORT` (an IP address) or `unix:PATH`.
    pub(crate) fn parse(s: &str) -> Result<Self, AgentError> {
        if let Some(p) = s.strip_prefix("unix:") {
            let p = p.strip_prefix("//").unwrap_or(p);
            if p.is_empty() {
                return Err(AgentError::Usage(
                    "--listen unix: needs a path, e.g. unix:/run/dockwatch/agent.sock".into(),
                ));
            }
            return Ok(Listen::Unix(PathBuf::from(p)));
        }
        if let Ok(a) = s.parse::<SocketAddr>() {
            return Ok(Listen::Tcp(a));
        }
        // A host name: `localhost` is loopback (IPv4, which every client tries); another
        // name is resolved once, preferring IPv4 as `docker -H` does.
        let bad = || {
            AgentError::Usage(format!(
                "--listen '{s}' is not HOST:PORT or unix:PATH, e.g. 127.0.0.1:50051, localhost:50051 or 0.0.0.0:50051"
            ))
        };
        let (host, port) = s.rsplit_once(':').ok_or_else(bad)?;
        let port: u16 = port.parse().map_err(|_| bad())?;
        if host.eq_ignore_ascii_case("localhost") {
            return Ok(Listen::Tcp(SocketAddr::from(([127, 0, 0, 1], port))));
        }
        use std::net::ToSocketAddrs;
        let addrs: Vec<SocketAddr> = (host, port).to_socket_addrs().map_err(|_| bad())?.collect();
        addrs
            .iter()
            .find(|a| a.is_ipv4())
            .or(addrs.first())
            .copied()
            .map(Listen::Tcp)
            .ok_or_else(bad)
    }

    /// Loopback and Unix sockets are reachable only from this machine.
    pub(crate) fn is_local(&self) -> bool {
        match self {
            Listen::Unix(_) => true,
            Listen::Tcp(a) => a.ip().is_loopback(),
        }
    }
}

impl std::fmt::Display for Listen {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Listen::Tcp(a) => write!(f, "{a}"),
            Listen::Unix(p) => write!(f, "unix:{}", p.display()),
        }
    }
}

/// What the listen policy decided.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Exposure {
    /// Only this machine can connect.
    Local,
    /// Other machines can connect, with TLS and a token.
    Protected,
    /// Other machines can connect without protection: warn loudly.
    Insecure,
}

/// The rule: beyond loopback, TLS and a token, or `--insecure`. Pure.
pub(crate) fn listen_policy(
    listen: &Listen,
    tls: bool,
    token: bool,
    insecure: bool,
) -> Result<Exposure, AgentError> {
    if listen.is_local() {
        return Ok(Exposure::Local);
    }
    if tls && token {
        return Ok(Exposure::Protected);
    }
    if insecure {
        return Ok(Exposure::Insecure);
    }
    let missing = match (tls, token) {
        (false, false) => {
            "TLS (--tls-cert, --tls-key) and a token (--token-file or DOCKWATCH_AGENT_TOKEN)"
        }
        (false, true) => "TLS (--tls-cert, --tls-key)",
        _ => "a token (--token-file or DOCKWATCH_AGENT_TOKEN)",
    };
    Err(AgentError::Usage(format!(
        "listening on {listen} exposes the Docker engine (root on this host) to the network: add {missing}, or pass --insecure to accept the risk"
    )))
}

/// Why the agent or the remote CLI stopped.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error("{0}")]
    Usage(String),
    #[error("cannot read {what} '{path}': {source}")]
    ReadFile {
        what: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        addr: String,
        source: std::io::Error,
    },
    #[error(transparent)]
    Docker(#[from] crate::docker::DockerError),
    #[error("{0}")]
    Server(String),
}

impl AgentError {
    pub fn exit_code(&self) -> i32 {
        match self {
            AgentError::Usage(_) | AgentError::ReadFile { .. } => exit_codes::USAGE,
            _ => exit_codes::ERROR,
        }
    }
}

/// Reads a token file: the first line, trimmed; empty is an error.
pub(crate) fn read_token(path: &std::path::Path) -> Result<String, AgentError> {
    let text = std::fs::read_to_string(path).map_err(|source| AgentError::ReadFile {
        what: "the token file",
        path: path.to_path_buf(),
        source,
    })?;
    let t = text.lines().next().unwrap_or("").trim().to_string();
    if t.is_empty() {
        return Err(AgentError::Usage(format!(
            "the token file '{}' is empty",
            path.display()
        )));
    }
    Ok(t)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_listen_addresses() {
        assert_eq!(
            Listen::parse("127.0.0.1:50051").unwrap(),
            Listen::Tcp("127.0.0.1:50051".parse().unwrap())
        );
        assert_eq!(
            Listen::parse("unix:/run/a.sock").unwrap(),
            Listen::Unix("/run/a.sock".into())
        );
        assert_eq!(
            Listen::parse("unix:///run/a.sock").unwrap(),
            Listen::Unix("/run/a.sock".into())
        );
        assert_eq!(
            Listen::parse("localhost:50051").unwrap(),
            Listen::Tcp("127.0.0.1:50051".parse().unwrap())
        );
        assert!(Listen::parse("localhost").is_err());
        assert!(Listen::parse("localhost:http").is_err());
        assert!(Listen::parse("no-such-host.invalid:1").is_err());
        assert!(Listen::parse("unix:").is_err());
        assert!(Listen::parse("[::1]:5").unwrap().is_local());
        assert!(!Listen::parse("0.0.0.0:5").unwrap().is_local());
    }

    #[test]
    fn beyond_loopback_needs_tls_and_token_or_insecure() {
        let local = Listen::parse("127.0.0.1:1").unwrap();
        let open = Listen::parse("0.0.0.0:1").unwrap();
        assert_eq!(
            listen_policy(&local, false, false, false).unwrap(),
            Exposure::Local
        );
        assert_eq!(
            listen_policy(&open, true, true, false).unwrap(),
            Exposure::Protected
        );
        assert_eq!(
            listen_policy(&open, false, false, true).unwrap(),
            Exposure::Insecure
        );
        for (tls, token) in [(false, false), (true, false), (false, true)] {
            let e = listen_policy(&open, tls, token, false)
                .unwrap_err()
                .to_string();
            assert!(e.contains("--insecure"), "{e}");
            assert_eq!(e.contains("TLS"), !tls, "{e}");
            assert_eq!(e.contains("token"), !token, "{e}");
        }
    }
}
