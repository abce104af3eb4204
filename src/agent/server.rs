//! `dockwatch agent`: the gRPC server — listen policy, TLS (rustls, optionally mutual), the
//! bearer-token check, the standard health service, server reflection and shutdown.
//!
//! Shutdown is passed in (the signal watch from `main`): the first SIGINT/SIGTERM stops
//! accepting calls and ends open streams; containers keep running; shipping tasks still
//! running are reported with how to resume them.

use std::time::Duration;

use dockwatch_proto::tonic::service::Interceptor;
use dockwatch_proto::tonic::transport::{
    Certificate, Identity as TlsIdentity, Server, ServerTlsConfig,
};
use dockwatch_proto::tonic::{Request, Status};
use dockwatch_proto::v1::agent_server::AgentServer;
use subtle::ConstantTimeEq;
use tokio_util::task::TaskTracker;

use super::service::{AgentService, Identity};
use super::{AgentError, Exposure, Listen, listen_policy, read_token};
use crate::cli::AgentArgs;
use crate::shutdown::Shutdown;

/// PEM certificate chain, key, and the client CA for mutual TLS.
pub(crate) type TlsFiles = (Vec<u8>, Vec<u8>, Option<Vec<u8>>);

/// Validated agent settings.
pub(crate) struct AgentConfig {
    pub(crate) listen: Listen,
    /// TLS material, when TLS is on.
    pub(crate) tls: Option<TlsFiles>,
    /// The bearer token clients must send.
    pub(crate) token: Option<String>,
    pub(crate) exposure: Exposure,
    pub(crate) state_dir: std::path::PathBuf,
    /// AWS settings for shipping launched containers.
    pub(crate) aws: crate::aws::AwsOptions,
}

impl AgentConfig {
    pub(crate) fn from_args(a: AgentArgs) -> Result<Self, AgentError> {
        let listen = Listen::parse(&a.listen)?;
        let read = |what: &'static str, p: &std::path::Path| {
            std::fs::read(p).map_err(|source| AgentError::ReadFile {
                what,
                path: p.to_path_buf(),
                source,
            })
        };
        let tls = match (&a.tls_cert, &a.tls_key) {
            (Some(c), Some(k)) => Some((
                read("the TLS certificate", c)?,
                read("the TLS key", k)?,
                a.tls_client_ca
                    .as_deref()
                    .map(|p| read("the client CA", p))
                    .transpose()?,
            )),
            _ => None,
        };
        let token = match (&a.token_file, std::env::var("DOCKWATCH_AGENT_TOKEN")) {
            (Some(p), _) => Some(read_token(p)?),
            (None, Ok(t)) if !t.trim().is_empty() => Some(t.trim().to_string()),
            _ => None,
        };
        let exposure = listen_policy(&listen, tls.is_some(), token.is_some(), a.insecure)?;
        let aws =
            crate::config::aws_options(a.aws).map_err(|e| AgentError::Usage(e.to_string()))?;
        Ok(AgentConfig {
            listen,
            tls,
            token,
            exposure,
            state_dir: a.state_dir,
            aws,
        })
    }
}

/// Checks `authorization: Bearer TOKEN` (constant-time) and records who called.
#[derive(Clone)]
pub(crate) struct TokenCheck {
    /// The expected token; `None`: no token required.
    token: Option<String>,
}

impl Interceptor for TokenCheck {
    fn call(&mut self, mut req: Request<()>) -> Result<Request<()>, Status> {
        let cert = req
            .peer_certs()
            .and_then(|certs| certs.first().map(|c| crate::util::fnv1a(c.as_ref())));
        let Some(expected) = &self.token else {
            let who = cert.map_or("local".to_string(), |h| format!("client-cert:{h:016x}"));
            req.extensions_mut().insert(Identity(who));
            return Ok(req);
        };
        let got = req
            .metadata()
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::trim);
        match got {
            None => Err(Status::unauthenticated(
                "no bearer token: this agent requires one (dockwatch remote --token-file FILE or DOCKWATCH_TOKEN)",
            )),
            Some(t) if bool::from(t.as_bytes().ct_eq(expected.as_bytes())) => {
                let who = cert.map_or("bearer-token".to_string(), |h| {
                    format!("bearer-token+client-cert:{h:016x}")
                });
                req.extensions_mut().insert(Identity(who));
                Ok(req)
            }
            Some(_) => Err(Status::unauthenticated("the bearer token is not valid")),
        }
    }
}

/// How long open calls get to end after a stop signal.
const DRAIN: Duration = Duration::from_secs(2);

/// Runs the agent until a stop signal; returns the exit code.
///
/// Long on purpose: the listen policy, TLS and token, the two transports (TCP and Unix
/// socket) and the shutdown that waits for shipping tasks are read best in sequence.
pub async fn serve(args: AgentArgs, mut shutdown: Shutdown) -> Result<i32, AgentError> {
    let cfg = AgentConfig::from_args(args)?;
    if cfg.exposure == Exposure::Insecure {
        crate::say!(
            "dockwatch agent: WARNING: listening on {} without TLS and token (--insecure): anyone who can reach it controls the Docker engine, i.e. root on this host",
            cfg.listen
        );
    }
    let docker = crate::docker::connect(Duration::from_secs(120)).await?;
    let tracker = TaskTracker::new();
    let service = AgentService::new(
        docker,
        cfg.aws.clone(),
        cfg.state_dir.clone(),
        tracker.clone(),
        shutdown.clone(),
    );
    let agent = AgentServer::with_interceptor(
        service,
        TokenCheck {
            token: cfg.token.clone(),
        },
    );
    let (health, health_service) = tonic_health::server::health_reporter();
    health.set_serving::<AgentServer<AgentService>>().await;
    let reflection = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(dockwatch_proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1()
        .map_err(|e| AgentError::Server(format!("reflection: {e}")))?;

    let mut builder = Server::builder();
    if let Some((cert, key, ca)) = &cfg.tls {
        let mut tls = ServerTlsConfig::new().identity(TlsIdentity::from_pem(cert, key));
        if let Some(ca) = ca {
            tls = tls.client_ca_root(Certificate::from_pem(ca));
        }
        builder = builder
            .tls_config(tls)
            .map_err(|e| AgentError::Usage(format!("invalid TLS certificate or key: {e}")))?;
    }
    let router = builder
        .add_service(health_service)
        .add_service(reflection)
        .add_service(agent);
    let stop = {
        let mut s = shutdown.clone();
        async move { s.requested().await }
    };
    // After the first signal, open calls get DRAIN to end (log streams end at once with a
    // status; an exec or a slow client may not); then, or at a second signal, the server is
    // dropped with whatever is still open.
    let deadline = async move {
        shutdown.requested().await;
        tokio::select! {
            _ = tokio::time::sleep(DRAIN) => crate::say!(
                "dockwatch agent: calls still open after {DRAIN:?}; closing them"
            ),
            () = shutdown.reached(crate::shutdown::Stop::Kill) => {}
        }
    };
    let result = match &cfg.listen {
        Listen::Tcp(addr) => {
            let listener = tokio::net::TcpListener::bind(addr)
                .await
                .map_err(|source| AgentError::Listen {
                    addr: addr.to_string(),
                    source,
                })?;
            crate::say!(
                "dockwatch agent: listening on {}{} ({})",
                addr,
                if cfg.tls.is_some() { " with TLS" } else { "" },
                if cfg.token.is_some() {
                    "token required"
                } else {
                    "no token"
                }
            );
            tokio::select! {
                r = router.serve_with_incoming_shutdown(
                    tokio_stream::wrappers::TcpListenerStream::new(listener),
                    stop,
                ) => r,
                () = deadline => Ok(()),
            }
        }
        Listen::Unix(path) => {
            if path.exists() {
                // A socket left by an agent that died; refuse if one still answers.
                if tokio::net::UnixStream::connect(path).await.is_ok() {
                    return Err(AgentError::Listen {
                        addr: cfg.listen.to_string(),
                        source: std::io::Error::new(
                            std::io::ErrorKind::AddrInUse,
                            "another agent answers on this socket",
                        ),
                    });
                }
                let _ = std::fs::remove_file(path);
            }
            if let Some(dir) = path.parent() {
                let _ = std::fs::create_dir_all(dir);
            }
            let listener =
                tokio::net::UnixListener::bind(path).map_err(|source| AgentError::Listen {
                    addr: cfg.listen.to_string(),
                    source,
                })?;
            use std::os::unix::fs::PermissionsExt;
            let _ = std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600));
            crate::say!("dockwatch agent: listening on {}", cfg.listen);
            let r = tokio::select! {
                r = router.serve_with_incoming_shutdown(
                    tokio_stream::wrappers::UnixListenerStream::new(listener),
                    stop,
                ) => r,
                () = deadline => Ok(()),
            };
            let _ = std::fs::remove_file(path);
            r
        }
    };
    result.map_err(|e| AgentError::Server(format!("the gRPC server failed: {e}")))?;
    tracker.close();
    let left = tracker.len();
    if left > 0 {
        crate::say!(
            "dockwatch agent: stopped; {left} container(s) still run and are no longer shipped; continue with: dockwatch resume --state-dir {}",
            cfg.state_dir.join("checkpoints").display()
        );
    } else {
        crate::say!("dockwatch agent: stopped");
    }
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use dockwatch_proto::tonic::metadata::MetadataValue;

    fn call(check: &mut TokenCheck, auth: Option<&str>) -> Result<String, Status> {
        let mut req = Request::new(());
        if let Some(a) = auth {
            req.metadata_mut()
                .insert("authorization", MetadataValue::try_from(a).unwrap());
        }
        check
            .call(req)
            .map(|r| r.extensions().get::<Identity>().unwrap().0.clone())
    }

    #[test]
    fn bearer_token_is_checked() {
        let mut open = TokenCheck { token: None };
        assert_eq!(call(&mut open, None).unwrap(), "local");
        let mut c = TokenCheck {
            token: Some("s3cret".into()),
        };
        assert_eq!(call(&mut c, Some("Bearer s3cret")).unwrap(), "bearer-token");
        let e = call(&mut c, None).unwrap_err();
        assert_eq!(e.code(), dockwatch_proto::tonic::Code::Unauthenticated);
        assert!(e.message().contains("no bearer token"));
        let e = call(&mut c, Some("Bearer nope")).unwrap_err();
        assert!(e.message().contains("not valid") && !e.message().contains("s3cret"));
        assert!(
            call(&mut c, Some("s3cret")).is_err(),
            "the scheme is required"
        );
    }
}
