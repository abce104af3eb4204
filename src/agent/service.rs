//! The agent's gRPC service: each call turned into engine calls.
//!
//! - LaunchContainer: with a CloudWatch target, the container is created and started by
//!   [`crate::pipeline::job::launch`] and shipped by [`crate::pipeline::job::Launched::ship`] in a task the agent
//!   tracks — the main job's own pipeline (checkpoint and spool in `--state-dir`); the
//!   container is kept after it exits so its logs stay readable. Without one, just created
//!   and started.
//! - GetLogs: a stream mapped straight from the engine's logs endpoint, no task and no
//!   queue in between: the engine is read only as fast as the client reads (HTTP/2 flow
//!   control), and a client that goes away drops the stream, which closes the engine
//!   connection at once.
//! - ExecContainer: the engine's attach stream out, a task pumping the client's messages in.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bollard::Docker;
use bollard::container::LogOutput;
use bollard::exec::{CreateExecOptions, ResizeExecOptions, StartExecOptions, StartExecResults};
use bollard::models::ContainerInspectResponse;
use bytes::Bytes;
use dockwatch_proto::tonic::{self, Request, Response, Status, Streaming};
use dockwatch_proto::v1::agent_server::Agent;
use dockwatch_proto::v1::{
    self as pb, ExecRequest, ExecResponse, GetLogsRequest, GetLogsResponse, LaunchContainerRequest,
    LaunchContainerResponse, ListContainersRequest, ListContainersResponse, LogEntry, LogStatus,
    StopContainerRequest, StopContainerResponse, exec_request, exec_response, get_logs_response,
    log_status,
};
use futures_util::{Stream, StreamExt};
use tokio::io::AsyncWriteExt;
use tokio::sync::watch;
use tokio_util::task::TaskTracker;

use crate::config::{ConfigError, ContainerSpec, PullPolicy, RunConfig, ShipConfig};
use crate::docker::{self, DockerError, container, logs, short_id, status_of};
use crate::pipeline::framing::Source;
use crate::pipeline::job::{self, RunError};
use crate::shutdown::Shutdown;

/// Label on every container the agent launches.
pub(crate) const AGENT_LABEL: &str = "dockwatch.agent";
/// Label naming where a launched container's output is shipped (`GROUP/STREAM`).
pub(crate) const SHIPPING_LABEL: &str = "dockwatch.cloudwatch";

type BoxStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>>;

/// Who made a call, for the audit log: set by the server's interceptor.
#[derive(Debug, Clone)]
pub(crate) struct Identity(pub String);

/// The service's state.
pub(crate) struct AgentService {
    /// The engine.
    docker: Docker,
    /// AWS settings for shipping launched containers.
    aws: crate::aws::AwsOptions,
    /// Checkpoints and spools of shipped containers.
    state_dir: PathBuf,
    /// Shipping tasks, so shutdown can say what it leaves.
    tracker: TaskTracker,
    /// Per shipped container id: turns true when its shipping task ended.
    shipping: Arc<Mutex<HashMap<String, watch::Receiver<bool>>>>,
    /// GetLogs streams open now (the drop of a stream is logged).
    pub(crate) open_log_streams: Arc<AtomicUsize>,
    /// The agent's stop: open log streams end with a status when it comes.
    stop: crate::shutdown::Shutdown,
}

impl AgentService {
    pub(crate) fn new(
        docker: Docker,
        aws: crate::aws::AwsOptions,
        state_dir: PathBuf,
        tracker: TaskTracker,
        stop: crate::shutdown::Shutdown,
    ) -> Self {
        AgentService {
            docker,
            aws,
            state_dir,
            tracker,
            shipping: Arc::default(),
            open_log_streams: Arc::default(),
            stop,
        }
    }

    /// The container by id, id prefix or name; NOT_FOUND in Docker's words otherwise.
    async fn resolve(&self, name: &str) -> Result<ContainerInspectResponse, Status> {
        if name.is_empty() {
            return Err(Status::invalid_argument("no container given"));
        }
        match self.docker.inspect_container(name, None).await {
            Ok(info) => Ok(info),
            Err(e) if status_of(&e) == Some(404) => {
                Err(Status::not_found(format!("container '{name}' not found")))
            }
            Err(e) => Err(engine_status(DockerError::api("inspect container", &e))),
        }
    }
}

impl AgentService {
    /// Launches `spec` with the main job's pipeline shipping it to `ship` in a tracked task;
    /// the container is kept after it exits so its logs stay readable.
    async fn launch_shipped(
        &self,
        spec: ContainerSpec,
        ship: ShipConfig,
    ) -> Result<String, Status> {
        let target = format!("{}/{}", ship.group, ship.stream);
        let mut cfg = RunConfig::managed(spec, self.aws.clone(), ship, &self.state_dir);
        cfg.keep_container = true;
        let launched = job::launch(&cfg, &Shutdown::never())
            .await
            .map_err(|e| match e {
                RunError::Docker(d) => engine_status(d),
                other => Status::failed_precondition(crate::util::chain(&other)),
            })?;
        let id = launched.id.clone();
        let (done_tx, done_rx) = watch::channel(false);
        self.shipping
            .lock()
            .expect("shipping lock")
            .insert(id.clone(), done_rx);
        let sid = short_id(&id).to_string();
        self.tracker.spawn(async move {
            match launched.ship(Shutdown::never()).await {
                Ok(code) => crate::say!(
                    "dockwatch agent: container {sid} exited with code {code}; its output is in {target}"
                ),
                Err(e) => crate::say!(
                    "dockwatch agent: shipping container {sid} to {target} failed: {}",
                    crate::util::chain(&e)
                ),
            }
            let _ = done_tx.send(true);
        });
        Ok(id)
    }
}

/// An engine failure as a gRPC status.
fn engine_status(e: DockerError) -> Status {
    match &e {
        DockerError::ImageUnavailable { .. } => Status::failed_precondition(e.to_string()),
        DockerError::NoShell { .. } => Status::failed_precondition(e.to_string()),
        DockerError::Unreachable { .. } | DockerError::PermissionDenied { .. } => {
            Status::unavailable(e.to_string())
        }
        _ => Status::internal(e.to_string()),
    }
}

/// One audit line on stderr: when, peer, identity, call, target. Never secrets.
fn audit<T>(req: &Request<T>, call: &str, detail: &str) {
    audit_line(
        req.remote_addr(),
        req.extensions().get::<Identity>(),
        call,
        detail,
    );
}

fn audit_line(peer: Option<SocketAddr>, who: Option<&Identity>, call: &str, detail: &str) {
    let peer = peer.map_or_else(|| "unix-socket".to_string(), |a| a.to_string());
    let who = who.map_or("anonymous", |i| i.0.as_str());
    crate::say!(
        "dockwatch agent: audit {} peer={peer} identity={who} call={call} {detail}",
        crate::util::time::format_rfc3339_ms(crate::util::time::now_ms())
    );
}

#[tonic::async_trait]
impl Agent for AgentService {
    async fn launch_container(
        &self,
        request: Request<LaunchContainerRequest>,
    ) -> Result<Response<LaunchContainerResponse>, Status> {
        let r = request.get_ref();
        if r.image.is_empty() {
            return Err(Status::invalid_argument("no image given"));
        }
        if r.command.is_empty() {
            return Err(Status::invalid_argument("no command given"));
        }
        let pull = if r.pull.is_empty() {
            PullPolicy::Missing
        } else {
            r.pull
                .parse()
                .map_err(|e: ConfigError| Status::invalid_argument(e.to_string()))?
        };
        let shell = if r.shell.is_empty() { "bash" } else { &r.shell };
        let mut env: Vec<String> = r.env.iter().map(|(k, v)| format!("{k}={v}")).collect();
        env.sort();
        let mut env_keys: Vec<&str> = r.env.keys().map(String::as_str).collect();
        env_keys.sort();
        let target = r
            .cloudwatch
            .as_ref()
            .filter(|c| !c.group.is_empty() || !c.stream.is_empty());
        audit(
            &request,
            "LaunchContainer",
            &format!(
                "image={:?} name={:?} env_keys={:?} cloudwatch={}",
                r.image,
                r.name,
                env_keys,
                target.map_or("-".into(), |c| format!("{}/{}", c.group, c.stream))
            ),
        );
        let invalid = |e: ConfigError| Status::invalid_argument(e.to_string());
        let mut spec = ContainerSpec::new(r.image.clone(), shell.to_string(), r.command.clone())
            .and_then(|s| s.with_env(env))
            .map_err(invalid)?
            .with_label(AGENT_LABEL, "true");
        for (k, v) in &r.labels {
            spec = spec.with_label(k, v);
        }
        spec.name = (!r.name.is_empty()).then(|| r.name.clone());
        spec.tty = r.tty;
        spec.pull = pull;
        let id = match target {
            Some(cw) => {
                let ship = ShipConfig::new(cw.group.clone(), cw.stream.clone()).map_err(invalid)?;
                self.launch_shipped(
                    spec.with_label(SHIPPING_LABEL, format!("{}/{}", cw.group, cw.stream)),
                    ship,
                )
                .await?
            }
            None => {
                container::ensure_image(&self.docker, &spec)
                    .await
                    .map_err(engine_status)?;
                let id = container::create(&self.docker, &spec)
                    .await
                    .map_err(engine_status)?;
                let started = async {
                    container::check_shell(&self.docker, &id, &spec).await?;
                    container::start(&self.docker, &id, &spec).await
                };
                if let Err(e) = started.await {
                    let _ = container::remove(&self.docker, &id).await;
                    return Err(engine_status(e));
                }
                id
            }
        };
        let name = self
            .resolve(&id)
            .await
            .ok()
            .and_then(|i| i.name)
            .map(|n| n.trim_start_matches('/').to_string())
            .unwrap_or_default();
        Ok(Response::new(LaunchContainerResponse { id, name }))
    }

    async fn stop_container(
        &self,
        request: Request<StopContainerRequest>,
    ) -> Result<Response<StopContainerResponse>, Status> {
        let r = request.get_ref();
        let info = self.resolve(&r.container).await?;
        let id = info.id.clone().unwrap_or_default();
        let grace = Duration::from_secs(u64::from(r.timeout_seconds.unwrap_or(10)));
        audit(
            &request,
            "StopContainer",
            &format!("container={} remove={}", short_id(&id), r.remove),
        );
        container::stop(&self.docker, &id, grace)
            .await
            .map_err(engine_status)?;
        let exit_code = container::exit_code(&self.docker, &id)
            .await
            .map_err(engine_status)?
            .unwrap_or(-1);
        let mut removed = false;
        if r.remove {
            // Let the shipping task read the last lines before the log goes with the container.
            let done = self.shipping.lock().expect("shipping lock").remove(&id);
            if let Some(mut done) = done {
                let _ = tokio::time::timeout(Duration::from_secs(60), done.wait_for(|d| *d)).await;
            }
            container::remove(&self.docker, &id)
                .await
                .map_err(engine_status)?;
            removed = true;
        }
        Ok(Response::new(StopContainerResponse {
            id,
            exit_code,
            removed,
        }))
    }

    async fn list_containers(
        &self,
        request: Request<ListContainersRequest>,
    ) -> Result<Response<ListContainersResponse>, Status> {
        let list = crate::docker::container::list(&self.docker, request.get_ref().all)
            .await
            .map_err(engine_status)?;
        let containers = list
            .into_iter()
            .map(|c| pb::ContainerSummary {
                shipping_to: c.labels.get(SHIPPING_LABEL).cloned().unwrap_or_default(),
                id: c.id,
                name: c.name,
                image: c.image,
                state: c.state,
                status: c.status,
                created: c.created,
            })
            .collect();
        Ok(Response::new(ListContainersResponse { containers }))
    }

    type ExecContainerStream = BoxStream<ExecResponse>;

    /// The exec is created, started and sized here; its input pump ([`exec_input`]), its
    /// output ([`exec_output`]) and its exit code ([`exec_exit_code`]) follow it.
    async fn exec_container(
        &self,
        request: Request<Streaming<ExecRequest>>,
    ) -> Result<Response<Self::ExecContainerStream>, Status> {
        let peer = request.remote_addr();
        let identity = request.extensions().get::<Identity>().cloned();
        let mut inbound = request.into_inner();
        let first = inbound.message().await?;
        let Some(ExecRequest {
            msg: Some(exec_request::Msg::Start(start)),
        }) = first
        else {
            return Err(Status::invalid_argument(
                "the first message of ExecContainer must be `start`",
            ));
        };
        if start.command.is_empty() {
            return Err(Status::invalid_argument("no command given"));
        }
        let info = self.resolve(&start.container).await?;
        let id = info.id.clone().unwrap_or_default();
        if info.state.and_then(|s| s.running) != Some(true) {
            return Err(Status::failed_precondition(format!(
                "container '{}' is not running",
                start.container
            )));
        }
        {
            audit_line(
                peer,
                identity.as_ref(),
                "ExecContainer",
                &format!(
                    "container={} command={:?} tty={}",
                    short_id(&id),
                    start.command.first().map(String::as_str).unwrap_or(""),
                    start.tty
                ),
            );
        }
        let exec = self
            .docker
            .create_exec(
                &id,
                CreateExecOptions {
                    attach_stdin: Some(start.stdin),
                    attach_stdout: Some(true),
                    attach_stderr: Some(true),
                    tty: Some(start.tty),
                    cmd: Some(start.command.clone()),
                    env: (!start.env.is_empty()).then(|| start.env.clone()),
                    working_dir: (!start.workdir.is_empty()).then(|| start.workdir.clone()),
                    ..Default::default()
                },
            )
            .await
            .map_err(|e| engine_status(DockerError::api("create exec", &e)))?;
        let started = self
            .docker
            .start_exec(
                &exec.id,
                Some(StartExecOptions {
                    detach: false,
                    tty: start.tty,
                    output_capacity: None,
                }),
            )
            .await
            .map_err(|e| engine_status(DockerError::api("start exec", &e)))?;
        let StartExecResults::Attached { output, input } = started else {
            return Err(Status::internal("the engine did not attach the exec"));
        };
        if let Some(size) = start.size.filter(|s| s.rows > 0 && s.cols > 0) {
            let _ = self.docker.resize_exec(&exec.id, resize(size)).await;
        }
        let pump = tokio::spawn(exec_input(
            inbound,
            input,
            self.docker.clone(),
            exec.id.clone(),
        ));
        let abort = AbortOnDrop(pump.abort_handle());
        let out = output.filter_map(|r| std::future::ready(exec_output(r)));
        let docker = self.docker.clone();
        let exit = futures_util::stream::once(async move {
            let _abort = abort;
            exec_exit_code(&docker, &exec.id).await
        });
        Ok(Response::new(Box::pin(out.chain(exit))))
    }

    type GetLogsStream = BoxStream<GetLogsResponse>;

    async fn get_logs(
        &self,
        request: Request<GetLogsRequest>,
    ) -> Result<Response<Self::GetLogsStream>, Status> {
        let r = request.into_inner();
        let q = log_query(&r, crate::util::time::now_ms())?;
        let info = self.resolve(&r.container).await?;
        let id = info.id.unwrap_or_default();
        let frames = logs::open_query(&self.docker, &id, &q);
        let guard = StreamGuard::new(self.open_log_streams.clone(), short_id(&id).to_string());
        let st = LogsState {
            frames,
            timestamps: r.timestamps,
            sent: 0,
            done: false,
            guard,
            stop: self.stop.clone(),
        };
        let stream = futures_util::stream::unfold(st, |mut st| async move {
            if st.done {
                return None;
            }
            let next = tokio::select! {
                f = st.frames.next() => Some(f),
                () = st.stop.requested() => None,
            };
            let Some(next) = next else {
                // The agent is stopping: the stream ends with a status, not a cut.
                st.done = true;
                st.guard.finished = true;
                let msg = get_logs_response::Msg::Status(LogStatus {
                    code: log_status::Code::Error as i32,
                    message: "the agent is stopping".into(),
                    entries_sent: st.sent,
                });
                return Some((Ok(GetLogsResponse { msg: Some(msg) }), st));
            };
            let msg = match next {
                Some(Ok(f)) => {
                    st.sent += 1;
                    let data = if st.timestamps {
                        let mut b = logs::format_rfc3339_nano(f.ts_ns).into_bytes();
                        b.push(b' ');
                        b.extend_from_slice(&f.data);
                        Bytes::from(b)
                    } else {
                        f.data
                    };
                    get_logs_response::Msg::Entry(LogEntry {
                        data,
                        stream: match f.source {
                            Source::Stdout => pb::Stream::Stdout as i32,
                            Source::Stderr => pb::Stream::Stderr as i32,
                        },
                        timestamp_unix_nanos: f.ts_ns,
                    })
                }
                Some(Err(e)) => {
                    st.done = true;
                    st.guard.finished = true;
                    get_logs_response::Msg::Status(LogStatus {
                        code: log_status::Code::Error as i32,
                        message: format!("reading the logs failed: {e}"),
                        entries_sent: st.sent,
                    })
                }
                None => {
                    st.done = true;
                    st.guard.finished = true;
                    get_logs_response::Msg::Status(LogStatus {
                        code: log_status::Code::Complete as i32,
                        message: "all logs sent".into(),
                        entries_sent: st.sent,
                    })
                }
            };
            Some((Ok(GetLogsResponse { msg: Some(msg) }), st))
        });
        Ok(Response::new(Box::pin(stream)))
    }
}

/// Validates GetLogs options into an engine query. Pure but for `now_ms`.
pub(crate) fn log_query(r: &GetLogsRequest, now_ms: i64) -> Result<logs::LogQuery, Status> {
    let tail = match r.tail {
        Some(n) if n < 0 => {
            return Err(Status::invalid_argument(format!(
                "tail {n} is negative: give 0 (all) or a number of lines"
            )));
        }
        Some(0) | None => None,
        Some(n) => Some(n as u64),
    };
    let (stdout, stderr) = (r.stdout.unwrap_or(true), r.stderr.unwrap_or(true));
    if !stdout && !stderr {
        return Err(Status::invalid_argument(
            "both stdout and stderr are excluded: nothing to show",
        ));
    }
    let time = |s: &str, what: &str| -> Result<Option<i64>, Status> {
        if s.is_empty() {
            return Ok(None);
        }
        crate::util::time::parse_time_ns(s, now_ms.saturating_mul(1_000_000))
            .map(Some)
            .map_err(|e| Status::invalid_argument(format!("{what}: {e}")))
    };
    let since_ns = time(&r.since, "since")?;
    let until_ns = time(&r.until, "until")?;
    if let (Some(s), Some(u)) = (since_ns, until_ns)
        && u < s
    {
        return Err(Status::invalid_argument("until is before since"));
    }
    Ok(logs::LogQuery {
        follow: r.follow,
        tail,
        since_ns,
        until_ns,
        stdout,
        stderr,
    })
}

fn resize(s: pb::TerminalSize) -> ResizeExecOptions {
    ResizeExecOptions {
        height: u16::try_from(s.rows).unwrap_or(u16::MAX),
        width: u16::try_from(s.cols).unwrap_or(u16::MAX),
    }
}

struct LogsState {
    stop: crate::shutdown::Shutdown,
    frames: logs::FrameStream,
    timestamps: bool,
    sent: u64,
    done: bool,
    guard: StreamGuard,
}

/// Counts open GetLogs streams; logs a stream dropped before it was complete (the client
/// cancelled or went away: the engine connection is closed with it).
struct StreamGuard {
    open: Arc<AtomicUsize>,
    container: String,
    finished: bool,
}

impl StreamGuard {
    fn new(open: Arc<AtomicUsize>, container: String) -> Self {
        open.fetch_add(1, Ordering::Relaxed);
        StreamGuard {
            open,
            container,
            finished: false,
        }
    }
}

impl Drop for StreamGuard {
    fn drop(&mut self) {
        let left = self.open.fetch_sub(1, Ordering::Relaxed) - 1;
        if !self.finished {
            crate::say!(
                "dockwatch agent: logs of {} cancelled by the client; engine stream closed ({left} open)",
                self.container
            );
        }
    }
}

/// Client -> command: stdin bytes, its close, terminal resizes; stdin is closed when the
/// client's stream ends.
async fn exec_input(
    mut inbound: Streaming<ExecRequest>,
    mut input: std::pin::Pin<Box<dyn tokio::io::AsyncWrite + Send>>,
    docker: bollard::Docker,
    exec_id: String,
) {
    let mut stdin_open = true;
    while let Ok(Some(m)) = inbound.message().await {
        match m.msg {
            Some(exec_request::Msg::Stdin(b))
                if stdin_open
                    && (input.write_all(&b).await.is_err() || input.flush().await.is_err()) =>
            {
                stdin_open = false;
            }
            Some(exec_request::Msg::CloseStdin(true)) if stdin_open => {
                let _ = input.shutdown().await;
                stdin_open = false;
            }
            Some(exec_request::Msg::Resize(s)) if s.rows > 0 && s.cols > 0 => {
                let _ = docker.resize_exec(&exec_id, resize(s)).await;
            }
            _ => {}
        }
    }
    if stdin_open {
        let _ = input.shutdown().await;
    }
}

/// Command -> client: one piece of the exec's output as its response.
fn exec_output(
    r: Result<LogOutput, bollard::errors::Error>,
) -> Option<Result<ExecResponse, Status>> {
    match r {
        Ok(LogOutput::StdOut { message } | LogOutput::Console { message }) => {
            Some(Ok(ExecResponse {
                msg: Some(exec_response::Msg::Stdout(message)),
            }))
        }
        Ok(LogOutput::StdErr { message }) => Some(Ok(ExecResponse {
            msg: Some(exec_response::Msg::Stderr(message)),
        })),
        Ok(LogOutput::StdIn { .. }) => None,
        Err(e) => Some(Err(Status::internal(format!(
            "exec stream broke: {}",
            docker::describe(&e)
        )))),
    }
}

/// The exec's exit code, the last response: the output ends a moment before the engine marks
/// the exec finished, so it is asked for up to 5 s.
async fn exec_exit_code(docker: &bollard::Docker, exec_id: &str) -> Result<ExecResponse, Status> {
    for _ in 0..100 {
        match docker.inspect_exec(exec_id).await {
            Ok(i) if i.running != Some(true) => {
                return Ok(ExecResponse {
                    msg: Some(exec_response::Msg::ExitCode(i.exit_code.unwrap_or(-1))),
                });
            }
            Ok(_) => tokio::time::sleep(Duration::from_millis(50)).await,
            Err(e) => {
                return Err(Status::internal(format!(
                    "cannot read the exit code: {}",
                    docker::describe(&e)
                )));
            }
        }
    }
    Err(Status::internal("the command did not finish"))
}

/// Aborts a task when dropped.
struct AbortOnDrop(tokio::task::AbortHandle);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req() -> GetLogsRequest {
        GetLogsRequest {
            container: "c".into(),
            ..Default::default()
        }
    }

    #[test]
    fn log_options_are_validated() {
        let now = 1_763_892_000_000;
        let q = log_query(&req(), now).unwrap();
        assert_eq!(
            (q.tail, q.stdout, q.stderr, q.since_ns),
            (None, true, true, None)
        );
        let q = log_query(
            &GetLogsRequest {
                tail: Some(100),
                since: "10s".into(),
                stderr: Some(false),
                follow: true,
                ..req()
            },
            now,
        )
        .unwrap();
        assert_eq!(q.tail, Some(100));
        assert_eq!(q.since_ns, Some((now - 10_000) * 1_000_000));
        assert!(!q.stderr && q.stdout && q.follow);
        assert_eq!(
            log_query(
                &GetLogsRequest {
                    tail: Some(0),
                    ..req()
                },
                now
            )
            .unwrap()
            .tail,
            None
        );
        let bad = |r: GetLogsRequest| log_query(&r, now).unwrap_err();
        assert!(
            bad(GetLogsRequest {
                tail: Some(-1),
                ..req()
            })
            .message()
            .contains("negative")
        );
        assert!(
            bad(GetLogsRequest {
                since: "soon".into(),
                ..req()
            })
            .message()
            .contains("invalid time 'soon'")
        );
        assert!(
            bad(GetLogsRequest {
                stdout: Some(false),
                stderr: Some(false),
                ..req()
            })
            .message()
            .contains("both stdout and stderr")
        );
        assert_eq!(
            bad(GetLogsRequest {
                since: "1h".into(),
                until: "2h".into(),
                ..req()
            })
            .code(),
            tonic::Code::InvalidArgument
        );
    }
}
