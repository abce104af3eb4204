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
    /// Quiet connections are pinged this often, and dropped when a ping is not answered
    /// within the same time.
    pub(crate) keepalive: Duration,
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
            keepalive: a.keepalive.max(Duration::from_millis(100)),
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
            .and_then(|certs| certs.first().map(|c| fingerprint(c.as_ref())));
        let Some(expected) = &self.token else {
            let who = cert.map_or("local".to_string(), |h| format!("client-cert:{h}"));
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
                    format!("bearer-token+client-cert:{h}")
                });
                req.extensions_mut().insert(Identity(who));
                Ok(req)
            }
            Some(_) => Err(Status::unauthenticated("the bearer token is not valid")),
        }
    }
}

/// A certificate's SHA-256 fingerprint as `openssl x509 -noout -fingerprint -sha256` prints
/// it after `=`: upper-case hex pairs joined by colons.
pub(crate) fn fingerprint(der: &[u8]) -> String {
    use sha2::Digest;
    let d = sha2::Sha256::digest(der);
    let hex: Vec<String> = d.iter().map(|b| format!("{b:02X}")).collect();
    hex.join(":")
}

/// Whether a DER certificate says `basicConstraints: CA:TRUE`. `openssl req -x509` makes
/// such certificates by default, and TLS clients (rustls, and browsers) refuse a CA
/// certificate as a server's own ("CaUsedAsEndEntity"). DER leaves `cA` out when it is false,
/// so the extension's value starting with `BOOLEAN TRUE` is CA:TRUE.
pub(crate) fn is_ca_certificate(der: &[u8]) -> bool {
    // OID 2.5.29.19 (basicConstraints), then an optional `critical` BOOLEAN TRUE, then the
    // OCTET STRING holding SEQUENCE { cA BOOLEAN, ... }.
    const OID: [u8; 5] = [0x06, 0x03, 0x55, 0x1d, 0x13];
    let Some(at) = der.windows(OID.len()).position(|w| w == OID) else {
        return false;
    };
    let mut rest = &der[at + OID.len()..];
    if rest.starts_with(&[0x01, 0x01, 0xff]) {
        rest = &rest[3..];
    }
    matches!(rest, [0x04, _, 0x30, _, 0x01, 0x01, 0xff, ..])
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
    // v1alpha too: older grpcurl and grpcui ask for it.
    let reflection_v1alpha = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(dockwatch_proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1alpha()
        .map_err(|e| AgentError::Server(format!("reflection: {e}")))?;

    let router = server_builder(&cfg)?
        .add_service(health_service)
        .add_service(reflection)
        .add_service(reflection_v1alpha)
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
            let incoming = bind_tcp(addr, &cfg).await?;
            tokio::select! {
                r = router.serve_with_incoming_shutdown(incoming, stop) => r,
                () = deadline => Ok(()),
            }
        }
        Listen::Unix(path) => {
            let listener = bind_unix(path, &cfg.listen).await?;
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

/// The server's transport settings: keepalive, and TLS when configured.
fn server_builder(cfg: &AgentConfig) -> Result<Server, AgentError> {
    // A client that vanished without closing (power loss, a network split) is found by the
    // HTTP/2 ping going unanswered; its streams and their engine connections are dropped.
    let builder = Server::builder()
        .http2_keepalive_interval(Some(cfg.keepalive))
        .http2_keepalive_timeout(Some(cfg.keepalive));
    let Some((cert, key, ca)) = &cfg.tls else {
        return Ok(builder);
    };
    warn_if_ca(cert);
    let mut tls = ServerTlsConfig::new().identity(TlsIdentity::from_pem(cert, key));
    if let Some(ca) = ca {
        tls = tls.client_ca_root(Certificate::from_pem(ca));
    }
    builder
        .tls_config(tls)
        .map_err(|e| AgentError::Usage(format!("invalid TLS certificate or key: {e}")))
}

/// Listens on `addr` (TCP keepalive on, as the HTTP/2 ping) and says how.
async fn bind_tcp(
    addr: &std::net::SocketAddr,
    cfg: &AgentConfig,
) -> Result<dockwatch_proto::tonic::transport::server::TcpIncoming, AgentError> {
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
    Ok(
        dockwatch_proto::tonic::transport::server::TcpIncoming::from(listener)
            .with_nodelay(Some(true))
            .with_keepalive(Some(cfg.keepalive))
            .with_keepalive_interval(Some(cfg.keepalive))
            .with_keepalive_retries(Some(3)),
    )
}

/// Listens on the Unix socket `path`, mode 0600, taking over a socket left by an agent that
/// died (refused while another one answers there).
async fn bind_unix(
    path: &std::path::Path,
    listen: &Listen,
) -> Result<tokio::net::UnixListener, AgentError> {
    if path.exists() {
        if tokio::net::UnixStream::connect(path).await.is_ok() {
            return Err(AgentError::Listen {
                addr: listen.to_string(),
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
    let listener = tokio::net::UnixListener::bind(path).map_err(|source| AgentError::Listen {
        addr: listen.to_string(),
        source,
    })?;
    use std::os::unix::fs::PermissionsExt;
    let _ = std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600));
    crate::say!("dockwatch agent: listening on {listen}");
    Ok(listener)
}

/// Says at start that clients will refuse the agent's certificate when it is a CA's.
fn warn_if_ca(pem: &[u8]) {
    use rustls::pki_types::{CertificateDer, pem::PemObject};
    if let Ok(cert) = CertificateDer::from_pem_slice(pem)
        && is_ca_certificate(&cert)
    {
        crate::say!(
            "dockwatch agent: warning: the TLS certificate is a CA certificate (basicConstraints CA:TRUE, openssl req -x509's default); clients refuse it as a server certificate. Make one with -addext basicConstraints=critical,CA:FALSE (see the README's \"TLS certificates\")"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use dockwatch_proto::tonic::metadata::MetadataValue;

    #[test]
    fn fingerprint_is_openssls() {
        // `printf abc | sha256sum`, in openssl's notation.
        assert_eq!(
            fingerprint(b"abc"),
            "BA:78:16:BF:8F:01:CF:EA:41:41:40:DE:5D:AE:22:23:B0:03:61:A3:96:17:7A:9C:B4:10:FF:61:F2:00:15:AD"
        );
    }

    #[test]
    fn a_ca_certificate_is_recognised() {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut ca = rcgen::CertificateParams::new(vec!["localhost".into()]).unwrap();
        ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        assert!(is_ca_certificate(ca.self_signed(&key).unwrap().der()));
        let mut leaf = rcgen::CertificateParams::new(vec!["localhost".into()]).unwrap();
        leaf.is_ca = rcgen::IsCa::ExplicitNoCa;
        assert!(!is_ca_certificate(leaf.self_signed(&key).unwrap().der()));
        let plain = rcgen::CertificateParams::new(vec!["localhost".into()]).unwrap();
        assert!(!is_ca_certificate(plain.self_signed(&key).unwrap().der()));
    }

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
