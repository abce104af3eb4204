//! The whole of a container's log, from its first line to its last: downloaded (every line,
//! as text or JSON lines, not a sample) and searched (a substring or a regular expression,
//! the matches streamed to the page as they are found, with the progress).
//!
//! Both read the engine's `json-file` files from the oldest one on with the reader `dockwatch
//! ship` uses ([`LogFiles`]), or the logs endpoint where the files cannot be read; both are
//! pulled by the HTTP body, so a slow client slows the reading and nothing queues.

use std::convert::Infallible;
use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::extract::{Path, Query, State};
use axum::http::{StatusCode, header};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures_util::StreamExt;
use serde::{Deserialize, Serialize};

use super::engine::{
    ApiError, Carry, Engine, Line, Marked, engine_error, lines_event, lines_of, rest,
};
use crate::docker::files::{LogFiles, Next};
use crate::docker::logs::{self, FrameStream, LogQuery};

/// Frames read at a time.
const BATCH: usize = 1_000;
/// Matches at most, by default and in all.
const DEFAULT_MATCHES: usize = 1_000;
const MAX_MATCHES: usize = 100_000;

/// A container's whole log, being read from its start.
enum Whole {
    Files(Box<LogFiles>),
    Endpoint(FrameStream),
}

/// The container's log from its first line the engine has.
async fn open(e: &Engine, id: &str) -> Result<Whole, ApiError> {
    let (full, path) = super::engine::log_file(e, id).await?;
    if let Some(files) = super::engine::open_files(e, path)? {
        return Ok(Whole::Files(Box::new(files)));
    }
    let q = LogQuery {
        stdout: true,
        stderr: true,
        ..LogQuery::default()
    };
    Ok(Whole::Endpoint(logs::open_query(&e.docker, &full, &q)))
}

impl Whole {
    /// Up to [`BATCH`] frames; `None` at the end of what is written.
    async fn batch(&mut self) -> Result<Option<Vec<Marked>>, String> {
        let mut out = Vec::new();
        match self {
            Whole::Files(files) => {
                while out.len() < BATCH {
                    match files.next().map_err(|e| e.to_string())? {
                        Next::Frame(f, _) => out.push((f, None)),
                        Next::Idle => break,
                    }
                }
            }
            Whole::Endpoint(stream) => {
                while out.len() < BATCH {
                    match stream.next().await {
                        Some(f) => out.push((f.map_err(|e| engine_error(e).1)?, None)),
                        None => break,
                    }
                }
            }
        }
        Ok((!out.is_empty()).then_some(out))
    }
}

#[derive(Deserialize)]
pub(super) struct DownloadQuery {
    /// `text` (each line as the container wrote it) or `jsonl` (time, stream, text).
    format: Option<String>,
}

#[derive(Serialize)]
struct JsonLine<'a> {
    time: &'a str,
    stream: &'a str,
    log: &'a str,
}

fn render(lines: &[Line], json: bool) -> Bytes {
    let mut out = Vec::new();
    for l in lines {
        if json {
            let j = JsonLine {
                time: &l.t,
                stream: if l.s == "err" { "stderr" } else { "stdout" },
                log: &l.text,
            };
            out.extend_from_slice(serde_json::to_string(&j).unwrap_or_default().as_bytes());
        } else {
            out.extend_from_slice(l.text.as_bytes());
        }
        out.push(b'\n');
    }
    out.into()
}

/// Every line of the container's log, start to end, as a file to save.
pub(super) async fn download(
    State(e): State<Arc<Engine>>,
    Path(id): Path<String>,
    Query(q): Query<DownloadQuery>,
) -> Result<Response, ApiError> {
    let json = match q.format.as_deref() {
        None | Some("text") => false,
        Some("jsonl") => true,
        Some(f) => {
            return Err(ApiError(
                StatusCode::BAD_REQUEST,
                format!("format '{f}': give text or jsonl"),
            ));
        }
    };
    let whole = open(&e, &id).await?;
    let body = futures_util::stream::unfold(
        (whole, Carry::default(), false),
        move |(mut whole, mut carry, done)| async move {
            if done {
                return None;
            }
            match whole.batch().await {
                Ok(Some(frames)) => {
                    let lines = lines_of(frames, &mut carry);
                    Some((
                        Ok::<_, std::io::Error>(render(&lines, json)),
                        (whole, carry, false),
                    ))
                }
                Ok(None) => {
                    let last = rest(&mut carry);
                    Some((Ok(render(&last, json)), (whole, carry, true)))
                }
                Err(why) => Some((Err(std::io::Error::other(why)), (whole, carry, true))),
            }
        },
    );
    let short: String = id
        .chars()
        .filter(char::is_ascii_alphanumeric)
        .take(12)
        .collect();
    let name = format!("{short}.{}", if json { "jsonl" } else { "log" });
    Ok((
        [
            (
                header::CONTENT_TYPE,
                "text/plain; charset=utf-8".to_string(),
            ),
            (
                header::CONTENT_DISPOSITION,
                format!("attachment; filename=\"{name}\""),
            ),
        ],
        Body::from_stream(body),
    )
        .into_response())
}

#[derive(Deserialize)]
pub(super) struct SearchQuery {
    q: String,
    /// `1`: `q` is a regular expression.
    regex: Option<u8>,
    /// `1`: ignore case.
    i: Option<u8>,
    limit: Option<usize>,
}

/// What a line must hold to match.
enum Needle {
    Text(String),
    Lower(String),
    Regex(regex::Regex),
}

impl Needle {
    fn new(q: &SearchQuery) -> Result<Needle, ApiError> {
        if q.q.is_empty() {
            return Err(ApiError(
                StatusCode::BAD_REQUEST,
                "nothing to search for".into(),
            ));
        }
        let ignore_case = q.i == Some(1);
        if q.regex == Some(1) {
            return regex::RegexBuilder::new(&q.q)
                .case_insensitive(ignore_case)
                .size_limit(1 << 20)
                .build()
                .map(Needle::Regex)
                .map_err(|e| {
                    ApiError(
                        StatusCode::BAD_REQUEST,
                        format!("not a regular expression: {e}"),
                    )
                });
        }
        Ok(if ignore_case {
            Needle::Lower(q.q.to_lowercase())
        } else {
            Needle::Text(q.q.clone())
        })
    }

    fn matches(&self, text: &str) -> bool {
        match self {
            Needle::Text(t) => text.contains(t.as_str()),
            Needle::Lower(t) => text.to_lowercase().contains(t.as_str()),
            Needle::Regex(r) => r.is_match(text),
        }
    }
}

#[derive(Serialize)]
struct Progress {
    scanned: u64,
    matches: usize,
    /// Stopped at the limit of matches.
    truncated: bool,
}

fn progress_event(name: &str, p: &Progress) -> Result<Event, Infallible> {
    Ok(Event::default()
        .event(name)
        .data(serde_json::to_string(p).unwrap_or_default()))
}

/// The lines of the whole log that match, as server-sent events: `lines` (matches),
/// `progress` (lines scanned so far, after each batch), then `end`.
pub(super) async fn search(
    State(e): State<Arc<Engine>>,
    Path(id): Path<String>,
    Query(q): Query<SearchQuery>,
) -> Result<impl IntoResponse, ApiError> {
    let needle = Needle::new(&q)?;
    let limit = q.limit.unwrap_or(DEFAULT_MATCHES).clamp(1, MAX_MATCHES);
    let whole = open(&e, &id).await?;
    struct St {
        whole: Whole,
        needle: Needle,
        carry: Carry,
        p: Progress,
        limit: usize,
        pending: Option<Result<Event, Infallible>>,
        done: bool,
    }
    let st = St {
        whole,
        needle,
        carry: Carry::default(),
        p: Progress {
            scanned: 0,
            matches: 0,
            truncated: false,
        },
        limit,
        pending: None,
        done: false,
    };
    let stop = e.stop.clone();
    let events = futures_util::stream::unfold(st, |mut st| async move {
        if let Some(ev) = st.pending.take() {
            return Some((ev, st));
        }
        if st.done {
            return None;
        }
        let lines = match st.whole.batch().await {
            Ok(Some(frames)) => lines_of(frames, &mut st.carry),
            Ok(None) => {
                st.done = true;
                rest(&mut st.carry)
            }
            Err(why) => {
                st.done = true;
                return Some((Ok(Event::default().event("failure").data(why)), st));
            }
        };
        st.p.scanned += lines.len() as u64;
        let mut found: Vec<Line> = lines
            .into_iter()
            .filter(|l| st.needle.matches(&l.text))
            .collect();
        let room = st.limit - st.p.matches;
        if found.len() >= room {
            found.truncate(room);
            st.p.truncated = true;
            st.done = true;
        }
        st.p.matches += found.len();
        let name = if st.done { "end" } else { "progress" };
        let progress = progress_event(name, &st.p);
        if found.is_empty() {
            return Some((progress, st));
        }
        st.pending = Some(progress);
        Some((lines_event(&found), st))
    })
    .take_until(async move { stop.cancelled().await });
    Ok(Sse::new(events).keep_alive(KeepAlive::default()))
}
