//! `dockwatch remote`: the CLI for an agent. Connects (TCP, TLS or a Unix socket), sends the
//! bearer token, and prints results: `logs` writes the container's stdout to stdout and its
//! stderr to stderr, byte for byte; `exec` relays stdin and exits with the command's code.
//!
//! Errors are one line, `Error: ...`, like the Docker CLI's: 2 for invalid arguments, 1 for
//! everything the agent reports or a connection failure, 130/143 when interrupted.

use std::io::Write;
use std::time::Duration;

use dockwatch_proto::tonic::service::Interceptor;
use dockwatch_proto::tonic::service::interceptor::InterceptedService;
use dockwatch_proto::tonic::transport::{
    Certificate, Channel, ClientTlsConfig, Endpoint, Identity,
};
use dockwatch_proto::tonic::{self, Code, Request, Status};
use dockwatch_proto::v1::agent_client::AgentClient;
use dockwatch_proto::v1::{
    self as pb, ExecRequest, GetLogsRequest, LaunchContainerRequest, ListContainersRequest,
    StopContainerRequest, exec_request, exec_response, get_logs_response, log_status,
};

use super::read_token;
use crate::cli::{ExecArgs, LaunchArgs, LogsArgs, RemoteArgs, RemoteCommand};
use crate::exit_codes;
use crate::shutdown::Shutdown;

/// A failed remote command: its message (printed after `Error: `) and exit code.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct RemoteError {
    pub(crate) message: String,
    pub code: i32,
}

impl RemoteError {
    fn usage(m: impl Into<String>) -> Self {
        RemoteError {
            message: m.into(),
            code: exit_codes::USAGE,
        }
    }

    fn failed(m: impl Into<String>) -> Self {
        RemoteError {
            message: m.into(),
            code: exit_codes::ERROR,
        }
    }

    /// Writing our output failed: a closed pipe (`| head`) is a quiet, normal end (exit 0,
    /// no message), as with docker; anything else is an error.
    fn write(e: std::io::Error) -> Self {
        if e.kind() == std::io::ErrorKind::BrokenPipe {
            return RemoteError {
                message: String::new(),
                code: 0,
            };
        }
        RemoteError::failed(format!("cannot write the output: {e}"))
    }

    /// A gRPC status from the agent, in the user's words.
    fn from_status(peer: &Peer, s: Status) -> Self {
        let host = &peer.host;
        match s.code() {
            Code::Unavailable => Self::failed(format!(
                "cannot reach the agent at {host}: {}; check --host (or DOCKWATCH_HOST) and that `dockwatch agent` runs there",
                s.message()
            )),
            Code::Unauthenticated => Self::failed(format!(
                "the agent refused the credentials: {}",
                s.message()
            )),
            Code::InvalidArgument => Self::usage(s.message().to_string()),
            // The connection broke under the call (the agent sent no status): most often
            // plain text against a TLS agent, or TLS against a plain one. tonic says Unknown,
            // or Internal when HTTP/2 read the TLS server's answer as a broken frame ("h2
            // protocol error", seen under load); either way the transport error is the source.
            Code::Unknown | Code::Internal if std::error::Error::source(&s).is_some() => {
                if let Some(why) = std::error::Error::source(&s).and_then(tls_refusal) {
                    return Self::failed(why);
                }
                let cause =
                    std::error::Error::source(&s).map_or(String::new(), crate::aws::retry::chain);
                if peer.tls == Tls::ServerOnly {
                    // An agent with --tls-client-ca refuses a client without a certificate
                    // with an alert that a client still writing may never read (a broken
                    // pipe instead): seen in the suite.
                    return Self::failed(format!(
                        "the agent at {host} closed the TLS connection ({cause}); if it requires client certificates (--tls-client-ca), pass --tls-cert FILE --tls-key FILE"
                    ));
                }
                Self::failed(format!(
                    "the connection to the agent at {host} failed ({cause}); an agent with TLS needs --tls-ca FILE (or an https:// host), one without needs neither"
                ))
            }
            // The connection closed under the call before any answer (hyper's "operation
            // was canceled"): an agent that refused the TLS session does that too.
            Code::Cancelled if peer.tls == Tls::ServerOnly => Self::failed(format!(
                "the agent at {host} closed the connection ({}); if it requires client certificates (--tls-client-ca), pass --tls-cert FILE --tls-key FILE",
                s.message()
            )),
            Code::Cancelled => Self::failed(format!(
                "the connection to the agent at {host} closed during the call ({}); check that `dockwatch agent` still runs there",
                s.message()
            )),
            _ => Self::failed(s.message().to_string()),
        }
    }
}

/// Which agent a call went to, and how: what a failed call's message can say.
pub(crate) struct Peer {
    host: String,
    tls: Tls,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Tls {
    Plain,
    /// TLS without a client certificate.
    ServerOnly,
    Mutual,
}

impl Peer {
    fn of(a: &RemoteArgs) -> Self {
        let tls = if a.tls_cert.is_some() {
            Tls::Mutual
        } else if uses_tls(a) {
            Tls::ServerOnly
        } else {
            Tls::Plain
        };
        Peer {
            host: a.host.clone(),
            tls,
        }
    }
}

/// The connection to the agent is TLS: a CA or a certificate given, or an https:// host.
fn uses_tls(a: &RemoteArgs) -> bool {
    !a.host.starts_with("unix:")
        && (a.tls_ca.is_some() || a.tls_cert.is_some() || a.host.starts_with("https://"))
}

/// Adds the bearer token to every call.
#[derive(Clone)]
pub(crate) struct Bearer(Option<tonic::metadata::MetadataValue<tonic::metadata::Ascii>>);

impl Interceptor for Bearer {
    fn call(&mut self, mut req: Request<()>) -> Result<Request<()>, Status> {
        if let Some(v) = &self.0 {
            req.metadata_mut().insert("authorization", v.clone());
        }
        Ok(req)
    }
}

pub(crate) type Client = AgentClient<InterceptedService<Channel, Bearer>>;

/// `HOST[:PORT]` → `http(s)://HOST:PORT` (port 50051 by default).
pub(crate) fn endpoint_url(host: &str, tls: bool) -> String {
    if host.starts_with("http://") || host.starts_with("https://") {
        return host.to_string();
    }
    let has_port = if let Some(rest) = host.strip_prefix('[') {
        rest.contains("]:")
    } else {
        host.contains(':')
    };
    let scheme = if tls { "https" } else { "http" };
    if has_port {
        format!("{scheme}://{host}")
    } else {
        format!("{scheme}://{host}:50051")
    }
}

/// Connects to the agent.
pub(crate) async fn connect(a: &RemoteArgs) -> Result<Client, RemoteError> {
    let token = match (&a.token_file, std::env::var("DOCKWATCH_TOKEN")) {
        (Some(p), _) => Some(read_token(p).map_err(|e| RemoteError::usage(e.to_string()))?),
        (None, Ok(t)) if !t.trim().is_empty() => Some(t.trim().to_string()),
        _ => None,
    };
    let bearer = token
        .map(|t| {
            format!("Bearer {t}")
                .parse()
                .map_err(|_| RemoteError::usage("the token holds characters a header cannot carry"))
        })
        .transpose()?;
    let channel = if let Some(path) = a.host.strip_prefix("unix:") {
        let path = path.strip_prefix("//").unwrap_or(path).to_string();
        keepalive(Endpoint::from_static("http://localhost"))
            .connect_with_connector(UnixConnector(path))
            .await
    } else {
        let tls = uses_tls(a);
        let url = endpoint_url(&a.host, tls);
        let mut ep =
            keepalive(Endpoint::from_shared(url.clone()).map_err(|e| {
                RemoteError::usage(format!("--host '{}' is not usable: {e}", a.host))
            })?)
            .connect_timeout(Duration::from_secs(5));
        if tls {
            let mut cfg = ClientTlsConfig::new();
            let read = |p: &std::path::Path| {
                std::fs::read(p)
                    .map_err(|e| RemoteError::usage(format!("cannot read '{}': {e}", p.display())))
            };
            match &a.tls_ca {
                Some(ca) => cfg = cfg.ca_certificate(Certificate::from_pem(read(ca)?)),
                None => cfg = cfg.with_native_roots(),
            }
            if let (Some(c), Some(k)) = (&a.tls_cert, &a.tls_key) {
                cfg = cfg.identity(Identity::from_pem(read(c)?, read(k)?));
            }
            if let Some(d) = &a.tls_domain {
                cfg = cfg.domain_name(d.clone());
            }
            ep = ep
                .tls_config(cfg)
                .map_err(|e| RemoteError::usage(format!("TLS settings: {e}")))?;
        }
        ep.connect().await
    };
    let channel = channel.map_err(|e| {
        RemoteError::failed(format!(
            "cannot reach the agent at {}: {}",
            a.host,
            connect_failure(&e, uses_tls(a))
        ))
    })?;
    Ok(AgentClient::with_interceptor(channel, Bearer(bearer)))
}

/// How often a quiet connection to the agent is checked: an agent host that vanished (power
/// loss, a network split) ends a `logs -f` instead of leaving it hanging.
const KEEPALIVE: Duration = Duration::from_secs(30);

fn keepalive(ep: Endpoint) -> Endpoint {
    ep.http2_keep_alive_interval(KEEPALIVE)
        .keep_alive_timeout(KEEPALIVE)
        .keep_alive_while_idle(true)
        .tcp_keepalive(Some(KEEPALIVE))
}

/// Why connecting failed, and what to do, in one line: TLS refusals by their rustls error
/// (never its debug form), a plaintext client against a TLS agent and the other way round.
fn connect_failure(e: &tonic::transport::Error, tls: bool) -> String {
    if let Some(why) = tls_refusal(e) {
        return why;
    }
    let chain = crate::aws::retry::chain(e);
    if tls {
        format!("{chain}; check --host (or DOCKWATCH_HOST) and that `dockwatch agent` runs there")
    } else {
        format!(
            "{chain}; check --host (or DOCKWATCH_HOST) and that `dockwatch agent` runs there; if it listens with TLS, pass --tls-ca FILE (or an https:// host)"
        )
    }
}

/// The TLS error somewhere in `e`'s sources, in the user's words. An agent that requires a
/// client certificate (`--tls-client-ca`) lets a TLS 1.3 handshake without one finish and
/// refuses it with the `certificate_required` alert on the first call.
fn tls_refusal(e: &(dyn std::error::Error + 'static)) -> Option<String> {
    use rustls::CertificateError as C;
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(s) = source {
        // An io::Error's source() skips the error it wraps: look inside it too.
        let wrapped = s
            .downcast_ref::<std::io::Error>()
            .and_then(|io| io.get_ref())
            .and_then(|w| w.downcast_ref::<rustls::Error>());
        if let Some(r) = s.downcast_ref::<rustls::Error>().or(wrapped) {
            return Some(match r {
                rustls::Error::AlertReceived(rustls::AlertDescription::CertificateRequired) => {
                    "the agent requires a client certificate: pass --tls-cert FILE --tls-key FILE (a certificate signed by the agent's --tls-client-ca)".into()
                }
                rustls::Error::InvalidCertificate(c) => match c {
                    C::Other(o) if o.0.downcast_ref::<webpki::Error>() == Some(&webpki::Error::CaUsedAsEndEntity) => {
                        "the agent's TLS certificate is a CA certificate (basicConstraints CA:TRUE), which TLS clients refuse as a server's; make the agent a certificate with CA:FALSE (see the README's \"TLS certificates\")".into()
                    }
                    C::UnknownIssuer => "the agent's TLS certificate is not signed by a CA this client trusts; pass that CA (or the agent's self-signed certificate) with --tls-ca FILE".into(),
                    C::NotValidForName | C::NotValidForNameContext { .. } => "the agent's TLS certificate is not valid for this host name; connect with the name in its subjectAltName, or set --tls-domain NAME".into(),
                    C::Expired | C::ExpiredContext { .. } | C::NotValidYet | C::NotValidYetContext { .. } => "the agent's TLS certificate has expired or is not valid yet".into(),
                    other => format!("the agent's TLS certificate was refused: {other}"),
                },
                rustls::Error::InvalidMessage(_) | rustls::Error::InappropriateMessage { .. } => {
                    "the agent does not answer in TLS; connect without --tls-ca/--tls-cert and with http:// (or start the agent with --tls-cert)".into()
                }
                other => format!("TLS failed: {other}"),
            });
        }
        source = s.source();
    }
    None
}

/// Connects to the agent's Unix socket, whatever the URI.
#[derive(Clone)]
struct UnixConnector(String);

impl tower_service::Service<tonic::transport::Uri> for UnixConnector {
    type Response = hyper_util::rt::TokioIo<tokio::net::UnixStream>;
    type Error = std::io::Error;
    type Future = std::pin::Pin<
        Box<dyn std::future::Future<Output = Result<Self::Response, Self::Error>> + Send>,
    >;

    fn poll_ready(
        &mut self,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, _: tonic::transport::Uri) -> Self::Future {
        let path = self.0.clone();
        Box::pin(async move {
            let s = tokio::net::UnixStream::connect(path).await?;
            Ok(hyper_util::rt::TokioIo::new(s))
        })
    }
}

/// Runs `dockwatch remote ...`; returns the exit code.
pub async fn remote(a: RemoteArgs, shutdown: Shutdown) -> Result<i32, RemoteError> {
    // Arguments first: a bad one needs no agent.
    if let RemoteCommand::Logs(l) = &a.command {
        validate_logs(l)?;
    }
    let launch = match &a.command {
        RemoteCommand::Launch(l) => Some(launch_request(l)?),
        _ => None,
    };
    let mut client = connect(&a).await?;
    let peer = Peer::of(&a);
    let st = |s: Status| RemoteError::from_status(&peer, s);
    match a.command {
        RemoteCommand::Launch(_) => {
            let r = client
                .launch_container(launch.unwrap_or_default())
                .await
                .map_err(st)?
                .into_inner();
            crate::out!("{}", r.id);
            Ok(0)
        }
        RemoteCommand::Stop(s) => {
            let r = client
                .stop_container(StopContainerRequest {
                    container: s.container,
                    timeout_seconds: s.time,
                    remove: s.rm,
                })
                .await
                .map_err(st)?
                .into_inner();
            crate::out!("{}", crate::docker::short_id(&r.id));
            Ok(0)
        }
        RemoteCommand::Ps(p) => {
            let r = client
                .list_containers(ListContainersRequest { all: p.all })
                .await
                .map_err(st)?
                .into_inner();
            print_table(&r.containers);
            Ok(0)
        }
        RemoteCommand::Logs(l) => logs(&mut client, l, shutdown, &peer).await,
        RemoteCommand::Exec(e) => exec(&mut client, e, shutdown, &peer).await,
    }
}

/// The request of `remote launch`; the environment is built here, on the client's side, as
/// docker's client does (`-e NAME` and env files are this machine's).
fn launch_request(l: &LaunchArgs) -> Result<LaunchContainerRequest, RemoteError> {
    let env = crate::config::container::environment(&l.container.env, &l.container.env_files)
        .map_err(|e| RemoteError::usage(e.to_string()))?
        .iter()
        .filter_map(|e| e.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    Ok(LaunchContainerRequest {
        image: l.image.clone(),
        command: l.command.clone(),
        name: l.name.clone().unwrap_or_default(),
        env,
        shell: l.container.shell.clone(),
        tty: l.tty,
        cloudwatch: l
            .cloudwatch_group
            .clone()
            .map(|group| pb::CloudWatchTarget {
                group,
                stream: l.cloudwatch_stream.clone().unwrap_or_default(),
            }),
        pull: format!("{:?}", l.container.pull).to_lowercase(),
        labels: l
            .container
            .labels
            .iter()
            .map(|e| match e.split_once('=') {
                Some((k, v)) => (k.to_string(), v.to_string()),
                None => (e.clone(), String::new()),
            })
            .collect(),
    })
}

fn print_table(cs: &[pb::ContainerSummary]) {
    let head = [
        "CONTAINER ID",
        "NAME",
        "IMAGE",
        "STATE",
        "STATUS",
        "SHIPPING TO",
    ]
    .map(String::from);
    let rows: Vec<[String; 6]> = cs
        .iter()
        .map(|c| {
            [
                crate::docker::short_id(&c.id).to_string(),
                c.name.clone(),
                c.image.clone(),
                c.state.clone(),
                c.status.clone(),
                c.shipping_to.clone(),
            ]
        })
        .collect();
    let mut w = head.clone().map(|h| h.len());
    for r in &rows {
        for (w, c) in w.iter_mut().zip(r) {
            *w = (*w).max(c.chars().count());
        }
    }
    for r in std::iter::once(&head).chain(&rows) {
        let cells: Vec<String> = r.iter().zip(w).map(|(c, w)| format!("{c:<w$}")).collect();
        crate::out!("{}", cells.join("  ").trim_end());
    }
}

fn validate_logs(l: &LogsArgs) -> Result<(), RemoteError> {
    if let Some(n) = l.tail
        && n < 0
    {
        return Err(RemoteError::usage(format!(
            "--tail {n} is negative: give 0 (all) or a number of lines"
        )));
    }
    if l.no_stdout && l.no_stderr {
        return Err(RemoteError::usage(
            "--no-stdout and --no-stderr together leave nothing to show",
        ));
    }
    let now = crate::util::time::now_ms();
    for (flag, v) in [("--since", &l.since), ("--until", &l.until)] {
        if let Some(v) = v {
            crate::util::time::parse_time(v, now)
                .map_err(|e| RemoteError::usage(format!("{flag}: {e}")))?;
        }
    }
    Ok(())
}

async fn logs(
    client: &mut Client,
    l: LogsArgs,
    mut shutdown: Shutdown,
    peer: &Peer,
) -> Result<i32, RemoteError> {
    let req = GetLogsRequest {
        container: l.container,
        follow: l.follow,
        tail: l.tail,
        since: l.since.unwrap_or_default(),
        until: l.until.unwrap_or_default(),
        timestamps: l.timestamps,
        stdout: Some(!l.no_stdout),
        stderr: Some(!l.no_stderr),
    };
    let mut stream = client
        .get_logs(req)
        .await
        .map_err(|s| RemoteError::from_status(peer, s))?
        .into_inner();
    let mut out = std::io::BufWriter::with_capacity(64 * 1024, std::io::stdout().lock());
    let mut err = std::io::stderr().lock();
    let io = RemoteError::write;
    loop {
        let msg = tokio::select! {
            m = stream.message() => m,
            () = shutdown.requested() => {
                let _ = out.flush();
                return Ok(interrupted(&shutdown));
            }
        };
        let msg = match msg {
            Ok(Some(m)) => m,
            Ok(None) => {
                let _ = out.flush();
                return Err(RemoteError::failed(
                    "the agent closed the log stream before its end",
                ));
            }
            Err(s) => {
                let _ = out.flush();
                return Err(RemoteError::from_status(peer, s));
            }
        };
        match msg.msg {
            Some(get_logs_response::Msg::Entry(e)) => {
                if e.stream == pb::Stream::Stderr as i32 {
                    out.flush().map_err(io)?;
                    err.write_all(&e.data).map_err(io)?;
                } else {
                    out.write_all(&e.data).map_err(io)?;
                    if l.follow {
                        out.flush().map_err(io)?;
                    }
                }
            }
            Some(get_logs_response::Msg::Status(s)) => {
                out.flush().map_err(io)?;
                if s.code == log_status::Code::Complete as i32 {
                    return Ok(0);
                }
                return Err(RemoteError::failed(s.message));
            }
            None => {}
        }
    }
}

async fn exec(
    client: &mut Client,
    e: ExecArgs,
    mut shutdown: Shutdown,
    peer: &Peer,
) -> Result<i32, RemoteError> {
    use std::io::IsTerminal;
    // As docker: a TTY session's input must be a terminal (piped input would be echoed and
    // mangled by the container's line discipline, and its output lost with it).
    if e.tty && e.interactive && !std::io::stdin().is_terminal() {
        return Err(RemoteError::usage(
            "the input device is not a TTY: drop -t to pipe input into the command (exec -i)",
        ));
    }
    let (tx, rx) = tokio::sync::mpsc::channel::<ExecRequest>(16);
    let size = if e.tty { terminal_size() } else { None };
    let start = pb::ExecStart {
        container: e.container,
        command: e.command,
        tty: e.tty,
        stdin: e.interactive,
        env: e.env,
        workdir: e.workdir.unwrap_or_default(),
        size,
    };
    tx.send(ExecRequest {
        msg: Some(exec_request::Msg::Start(start)),
    })
    .await
    .map_err(|_| RemoteError::failed("internal: exec channel closed"))?;
    let mut inbound = client
        .exec_container(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await
        .map_err(|s| RemoteError::from_status(peer, s))?
        .into_inner();
    // This terminal goes raw for an interactive TTY session, restored on every way out.
    let _raw = if e.tty && e.interactive && std::io::stdin().is_terminal() {
        RawMode::enter()
    } else {
        None
    };
    if e.tty && size.is_some() {
        // This terminal's resizes follow to the command's (SIGWINCH, as docker does).
        if let Ok(mut winch) =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::window_change())
        {
            let tx = tx.clone();
            tokio::spawn(async move {
                while winch.recv().await.is_some() {
                    let Some(size) = terminal_size() else {
                        continue;
                    };
                    let m = ExecRequest {
                        msg: Some(exec_request::Msg::Resize(size)),
                    };
                    if tx.send(m).await.is_err() {
                        return;
                    }
                }
            });
        }
    }
    if e.interactive {
        let tx = tx.clone();
        let mut pieces = crate::util::stdin_pieces(16 * 1024)
            .map_err(|e| RemoteError::failed(format!("cannot read the standard input: {e}")))?;
        tokio::spawn(async move {
            while let Some(p) = pieces.recv().await {
                let m = ExecRequest {
                    msg: Some(exec_request::Msg::Stdin(bytes::Bytes::from(p))),
                };
                if tx.send(m).await.is_err() {
                    return;
                }
            }
            let _ = tx
                .send(ExecRequest {
                    msg: Some(exec_request::Msg::CloseStdin(true)),
                })
                .await;
        });
    }
    let mut out = std::io::stdout().lock();
    let mut err = std::io::stderr().lock();
    let io = RemoteError::write;
    loop {
        let msg = tokio::select! {
            m = inbound.message() => m,
            () = shutdown.requested() => {
                return Ok(interrupted(&shutdown));
            }
        };
        match msg {
            Ok(Some(m)) => match m.msg {
                Some(exec_response::Msg::Stdout(b)) => {
                    out.write_all(&b).and_then(|_| out.flush()).map_err(io)?
                }
                Some(exec_response::Msg::Stderr(b)) => err.write_all(&b).map_err(io)?,
                Some(exec_response::Msg::ExitCode(c)) => {
                    drop(tx);
                    return Ok(exit_codes::from_container(c));
                }
                None => {}
            },
            Ok(None) => {
                return Err(RemoteError::failed(
                    "the agent closed the exec stream without an exit code",
                ));
            }
            Err(s) => return Err(RemoteError::from_status(peer, s)),
        }
    }
}

/// The exit code after a stop signal.
fn interrupted(shutdown: &Shutdown) -> i32 {
    shutdown.exit_code().unwrap_or(exit_codes::SIGINT)
}

/// The local terminal's size, when stdout is one.
fn terminal_size() -> Option<pb::TerminalSize> {
    // SAFETY: TIOCGWINSZ fills a winsize struct we own; no other memory is touched.
    unsafe {
        let mut ws: libc::winsize = std::mem::zeroed();
        if libc::ioctl(libc::STDOUT_FILENO, libc::TIOCGWINSZ, &mut ws) == 0 && ws.ws_row > 0 {
            return Some(pb::TerminalSize {
                rows: u32::from(ws.ws_row),
                cols: u32::from(ws.ws_col),
            });
        }
    }
    None
}

/// The terminal in raw mode until dropped.
struct RawMode(libc::termios);

impl RawMode {
    fn enter() -> Option<Self> {
        // SAFETY: tcgetattr/tcsetattr on stdin with a termios struct we own.
        unsafe {
            let mut t: libc::termios = std::mem::zeroed();
            if libc::tcgetattr(libc::STDIN_FILENO, &mut t) != 0 {
                return None;
            }
            let saved = t;
            libc::cfmakeraw(&mut t);
            if libc::tcsetattr(libc::STDIN_FILENO, libc::TCSANOW, &t) != 0 {
                return None;
            }
            Some(RawMode(saved))
        }
    }
}

impl Drop for RawMode {
    fn drop(&mut self) {
        // SAFETY: restores the settings saved by `enter`.
        unsafe {
            libc::tcsetattr(libc::STDIN_FILENO, libc::TCSANOW, &self.0);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_forms() {
        assert_eq!(endpoint_url("box", false), "http://box:50051");
        assert_eq!(endpoint_url("box:7", false), "http://box:7");
        assert_eq!(endpoint_url("box", true), "https://box:50051");
        assert_eq!(endpoint_url("[::1]", false), "http://[::1]:50051");
        assert_eq!(endpoint_url("[::1]:9", false), "http://[::1]:9");
        assert_eq!(endpoint_url("https://a:1", false), "https://a:1");
    }

    #[test]
    fn statuses_become_one_line_errors_with_codes() {
        let plain = Peer {
            host: "h:1".into(),
            tls: Tls::Plain,
        };
        let e = RemoteError::from_status(&plain, Status::not_found("container 'x' not found"));
        assert_eq!((e.message.as_str(), e.code), ("container 'x' not found", 1));
        let e = RemoteError::from_status(&plain, Status::invalid_argument("tail -1 is negative"));
        assert_eq!(e.code, 2);
        let e = RemoteError::from_status(
            &plain,
            Status::unauthenticated("the bearer token is not valid"),
        );
        assert!(e.message.starts_with("the agent refused the credentials"));
        let e = RemoteError::from_status(&plain, Status::unavailable("connection refused"));
        assert!(e.message.contains("cannot reach the agent at h:1"));
        // A TLS client without a certificate whose connection is closed under the call.
        let tls = Peer {
            host: "h:1".into(),
            tls: Tls::ServerOnly,
        };
        let e = RemoteError::from_status(&tls, Status::cancelled("operation was canceled"));
        assert!(
            e.message.contains("pass --tls-cert FILE --tls-key FILE"),
            "{}",
            e.message
        );
    }
}
