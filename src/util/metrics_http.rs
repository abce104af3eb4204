//! The monitoring endpoint of the daemons (`download`, `on-upload`): `GET /healthz` and
//! Prometheus text at `GET /metrics`, from whatever the daemon keeps in an
//! [`Exposition`] behind a mutex (held only to render).

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio_util::sync::CancellationToken;

/// What a daemon shows.
pub(crate) trait Exposition {
    /// Prometheus text exposition format.
    fn render(&self) -> String;
    /// `Err(why)` when `/healthz` should answer 503.
    fn health(&self, now_ms: i64) -> Result<(), &'static str>;
}

/// Label values escaped as the text format requires.
pub(crate) fn escape(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// Binds `addr` and serves until `shutdown`. Binding errors are returned at once.
pub(crate) async fn serve<M: Exposition + Send + 'static>(
    addr: SocketAddr,
    metrics: Arc<Mutex<M>>,
    shutdown: CancellationToken,
) -> std::io::Result<tokio::task::JoinHandle<()>> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    Ok(tokio::spawn(async move {
        loop {
            let conn = tokio::select! {
                _ = shutdown.cancelled() => return,
                c = listener.accept() => c,
            };
            let Ok((stream, _)) = conn else { continue };
            let m = metrics.clone();
            tokio::spawn(async move {
                let svc = service_fn(move |req: Request<Incoming>| {
                    let m = m.clone();
                    async move { Ok::<_, Infallible>(answer(&req, &m)) }
                });
                let _ = http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    }))
}

fn answer<M: Exposition>(req: &Request<Incoming>, m: &Mutex<M>) -> Response<Full<Bytes>> {
    let reply = |status: StatusCode, ctype: &str, body: String| {
        Response::builder()
            .status(status)
            .header("content-type", ctype)
            .body(Full::new(Bytes::from(body)))
            .expect("valid response")
    };
    let m = m.lock().expect("metrics lock");
    match req.uri().path() {
        "/metrics" => reply(
            StatusCode::OK,
            "text/plain; version=0.0.4; charset=utf-8",
            m.render(),
        ),
        "/healthz" => match m.health(crate::util::time::now_ms()) {
            Ok(()) => reply(StatusCode::OK, "text/plain", "ok\n".into()),
            Err(why) => reply(
                StatusCode::SERVICE_UNAVAILABLE,
                "text/plain",
                format!("{why}\n"),
            ),
        },
        _ => reply(StatusCode::NOT_FOUND, "text/plain", "not found\n".into()),
    }
}
