//! `dockwatch web`: this Docker host's containers and their logs in a browser.
//!
//! # What it serves
//! - `/`, `/app.js`, `/app.css`: the page, embedded in the binary (no build step, no CDN).
//! - `/api/containers`: every container, running or exited (JSON).
//! - `/api/logs/{id}?before=MARK&limit=N`: a page of the container's log, oldest first,
//!   read backwards from the engine's `json-file` files ([`crate::docker::files::page`]):
//!   the last page of a long log comes at once and scrolling goes back to its first line
//!   without reading the rest. Where the files cannot be read (not root, another driver),
//!   the last lines through the logs endpoint (`tail`), and no paging.
//! - `/api/follow/{id}?after=MARK`: the lines after a page, live, as server-sent events
//!   (`lines`: a JSON array of lines), read from the files by the same reader as `dockwatch
//!   ship` ([`crate::docker::files::LogFiles`]), or through the logs endpoint.
//! - `/api/download/{id}?format=text|jsonl`: every line of the log, first to last.
//! - `/api/search/{id}?q=TEXT[&regex=1][&i=1]`: the whole log searched, the matches streamed
//!   as server-sent events with the progress ([`history`]).
//!
//! # Invariants
//! - **Bounded, never silently dropped**: a follower's events are produced as the browser
//!   takes them (the SSE body pulls from the reader; nothing is queued between them), so a
//!   paused or slow browser holds the server's reading, never its memory, and misses
//!   nothing; the page itself keeps a bounded window of rows and fetches older ones again.
//! - **Log lines are data**: the page sets them as text (`textContent`), never as markup, and
//!   every response carries a strict Content-Security-Policy (scripts and styles from this
//!   origin only, no inline code, no frames).
//! - **Loopback only**: every container's output is readable here, so the address must be a
//!   loopback one until the page has TLS and a token (as the agent).

mod engine;
mod history;

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

use crate::cli::WebArgs;
use crate::docker::DockerError;
use crate::exit_codes;
use crate::shutdown::Shutdown;

#[derive(Debug, thiserror::Error)]
pub enum WebError {
    #[error("{0}")]
    Usage(String),
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error(transparent)]
    Docker(#[from] DockerError),
    #[error("the web server failed: {0}")]
    Server(std::io::Error),
}

impl WebError {
    pub fn exit_code(&self) -> i32 {
        match self {
            WebError::Usage(_) => exit_codes::USAGE,
            _ => exit_codes::ERROR,
        }
    }
}

/// The validated `--listen`: a loopback address.
fn listen_addr(s: &str) -> Result<SocketAddr, WebError> {
    let addr: SocketAddr = s
        .parse()
        .or_else(|_| {
            // `localhost:PORT`.
            s.strip_prefix("localhost:")
                .and_then(|p| p.parse::<u16>().ok())
                .map(|p| SocketAddr::from(([127, 0, 0, 1], p)))
                .ok_or(())
        })
        .map_err(|()| {
            WebError::Usage(format!(
                "--listen '{s}' is not an address: give IP:PORT, e.g. 127.0.0.1:9800"
            ))
        })?;
    if !addr.ip().is_loopback() {
        return Err(WebError::Usage(format!(
            "--listen {addr}: the page shows every container's logs, so it listens on loopback only (no TLS or token yet); reach it from elsewhere through SSH: ssh -L 9800:127.0.0.1:9800 HOST"
        )));
    }
    Ok(addr)
}

/// After the first signal, open requests get this long.
const DRAIN: std::time::Duration = std::time::Duration::from_secs(2);

const INDEX: &str = include_str!("assets/index.html");
const APP_JS: &str = include_str!("assets/app.js");
const APP_CSS: &str = include_str!("assets/app.css");

/// Scripts and styles of this origin only, no inline code, no plugins, no frames: a log line
/// that reaches the page as markup by mistake still runs nothing.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

fn asset(body: &'static str, kind: &'static str) -> Response {
    ([(header::CONTENT_TYPE, kind)], body).into_response()
}

/// Every response: the policy above, no sniffing, no referrer, not cached.
async fn secure_headers(req: axum::extract::Request, next: axum::middleware::Next) -> Response {
    let mut res = next.run(req).await;
    let h = res.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    res
}

fn router(state: Arc<engine::Engine>) -> Router {
    Router::new()
        .route(
            "/",
            get(|| async { asset(INDEX, "text/html; charset=utf-8") }),
        )
        .route(
            "/app.js",
            get(|| async { asset(APP_JS, "text/javascript; charset=utf-8") }),
        )
        .route(
            "/app.css",
            get(|| async { asset(APP_CSS, "text/css; charset=utf-8") }),
        )
        .route("/api/containers", get(engine::containers))
        .route("/api/logs/{id}", get(engine::logs))
        .route("/api/follow/{id}", get(engine::follow))
        .route("/api/download/{id}", get(history::download))
        .route("/api/search/{id}", get(history::search))
        .layer(axum::middleware::from_fn(secure_headers))
        .with_state(state)
}

/// Runs `dockwatch web` until SIGINT/SIGTERM (exit 0).
pub async fn web(args: WebArgs, mut shutdown: Shutdown) -> Result<i32, WebError> {
    let addr = listen_addr(&args.listen)?;
    let docker = tokio::select! {
        r = crate::docker::connect(std::time::Duration::from_secs(60)) => r?,
        () = shutdown.requested() => return Ok(0),
    };
    let stop = tokio_util::sync::CancellationToken::new();
    let engine = Arc::new(engine::Engine::new(docker, stop.clone()));
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|source| WebError::Listen { addr, source })?;
    crate::say!("dockwatch web: http://{addr}");
    // The first signal ends the live streams and lets open requests finish, for DRAIN at
    // most; a second one quits at once.
    let requested = {
        let (stop, mut s) = (stop.clone(), shutdown.clone());
        async move {
            s.requested().await;
            stop.cancel();
        }
    };
    let serve = axum::serve(listener, router(engine)).with_graceful_shutdown(requested);
    tokio::select! {
        r = serve => r.map_err(WebError::Server)?,
        () = async {
            stop.cancelled().await;
            tokio::select! {
                () = tokio::time::sleep(DRAIN) => {}
                () = shutdown.reached(crate::shutdown::Stop::Kill) => {}
            }
        } => {}
    }
    crate::say!("dockwatch web: stopped");
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_loopback_addresses_are_listened_on() {
        assert!(listen_addr("127.0.0.1:9800").is_ok());
        assert!(listen_addr("[::1]:9800").is_ok());
        assert_eq!(
            listen_addr("localhost:7").unwrap(),
            SocketAddr::from(([127, 0, 0, 1], 7))
        );
        let e = listen_addr("0.0.0.0:9800").unwrap_err();
        assert!(matches!(e, WebError::Usage(_)));
        assert!(e.to_string().contains("loopback only"), "{e}");
        assert!(matches!(listen_addr("nowhere"), Err(WebError::Usage(_))));
    }
}
