//! The local engine as a source of the page: its containers, a page of a container's log,
//! and its live lines. Reading is the project's own: the `json-file` pages of
//! [`crate::docker::files::page`], the followed files of [`LogFiles`], the logs endpoint of
//! [`crate::docker::logs::open_query`] where the files cannot be read.

use std::convert::Infallible;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use bollard::Docker;
use futures_util::{Stream, StreamExt};
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use crate::docker::files::page::{self, PageEnd};
use crate::docker::files::{FileMark, LogFiles, Next, Watcher};
use crate::docker::logs::{self, Frame, LogQuery, Position};
use crate::docker::{DockerError, Source};

/// Lines in one page at most.
const MAX_PAGE: usize = 5_000;
/// Lines in one server-sent event at most (a flood arrives in few, large events).
const MAX_EVENT_LINES: usize = 1_000;
/// A follower with nothing new looks again this often (a wake-up can be missed when two
/// followers watch one file), and says it is alive (the browser's `EventSource` keeps the
/// connection).
const IDLE_CHECK: Duration = Duration::from_millis(500);

pub(super) struct Engine {
    pub(super) docker: Docker,
    /// The host's file watcher, when inotify could be started.
    pub(super) watcher: Option<Watcher>,
    /// Cancelled at shutdown: ends every live stream.
    pub(super) stop: CancellationToken,
}

impl Engine {
    pub(super) fn new(docker: Docker, stop: CancellationToken) -> Self {
        Engine {
            docker,
            watcher: Watcher::start().ok(),
            stop,
        }
    }
}

/// An API error: its status and one line of text.
pub(super) struct ApiError(pub(super) StatusCode, pub(super) String);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.0, self.1).into_response()
    }
}

pub(super) fn engine_error(e: DockerError) -> ApiError {
    ApiError(StatusCode::BAD_GATEWAY, e.to_string())
}

/// Every container, running or exited, newest first.
pub(super) async fn containers(
    State(e): State<Arc<Engine>>,
) -> Result<Json<Vec<crate::docker::container::Listed>>, ApiError> {
    let mut out = crate::docker::container::list(&e.docker, true)
        .await
        .map_err(engine_error)?;
    // Newest first, as `docker ps -a`.
    out.sort_by(|a, b| b.created.cmp(&a.created).then(a.name.cmp(&b.name)));
    Ok(Json(out))
}

/// One line of the log as the page shows it.
#[derive(Serialize, Debug, Clone, PartialEq, Eq)]
pub(super) struct Line {
    /// The engine's time, RFC 3339 with nanoseconds.
    pub(super) t: String,
    /// Milliseconds since the epoch (for the page's clock).
    pub(super) ms: i64,
    /// `out` or `err`.
    pub(super) s: &'static str,
    /// The text, without its newline; bytes that are not UTF-8 as U+FFFD.
    pub(super) text: String,
    /// The log position before it (a page ending here shows what came before), when the
    /// files are read.
    #[serde(skip_serializing_if = "Option::is_none")]
    b: Option<String>,
}

/// A frame and the file position before it, when known.
pub(super) type Marked = (Frame, Option<FileMark>);

/// The unfinished line of each stream (stdout, stderr), waiting for its next piece.
pub(super) type Carry = [Option<Marked>; 2];

/// Frames into lines: the pieces of a line the engine cut (16 KiB) are joined, per stream
/// (the other stream's lines may come between them: its copier runs at the same time); a
/// line's position is its first piece's. An unfinished line waits in `carry`.
pub(super) fn lines_of(frames: impl IntoIterator<Item = Marked>, carry: &mut Carry) -> Vec<Line> {
    let mut out = Vec::new();
    for (f, before) in frames {
        let slot = &mut carry[f.source.index()];
        let (f, before) = match slot.take() {
            Some((mut held, at)) => {
                let mut data = held.data.to_vec();
                data.extend_from_slice(&f.data);
                held.data = data.into();
                (held, at)
            }
            None => (f, before),
        };
        if f.data.last() == Some(&b'\n') {
            out.push(line(&(f, before)));
        } else {
            *slot = Some((f, before));
        }
    }
    out
}

/// The unfinished lines, at the end of what there is to read, oldest first.
pub(super) fn rest(carry: &mut Carry) -> Vec<Line> {
    let mut held: Vec<Marked> = carry.iter_mut().filter_map(Option::take).collect();
    held.sort_by_key(|(f, _)| f.ts_ns);
    held.iter().map(line).collect()
}

pub(super) fn line((f, before): &Marked) -> Line {
    let text = f.data.strip_suffix(b"\n").unwrap_or(&f.data);
    Line {
        t: logs::format_rfc3339_nano(f.ts_ns),
        ms: f.ts_ms(),
        s: match f.source {
            Source::Stdout => "out",
            Source::Stderr => "err",
        },
        text: String::from_utf8_lossy(text).into_owned(),
        b: before.map(mark_text),
    }
}

/// `after=` for a log with no line yet: follow from its first file's start.
const FROM_START: &str = "start";

/// A file mark as the page carries it: `FIRSTLINEHASH:OFFSET`.
fn mark_text(m: FileMark) -> String {
    format!("{:x}:{}", m.first_line, m.offset)
}

fn parse_mark(s: &str) -> Result<FileMark, ApiError> {
    let bad = || {
        ApiError(
            StatusCode::BAD_REQUEST,
            format!("not a log position: '{s}'"),
        )
    };
    let (h, o) = s.split_once(':').ok_or_else(bad)?;
    Ok(FileMark {
        first_line: u64::from_str_radix(h, 16).map_err(|_| bad())?,
        offset: o.parse().map_err(|_| bad())?,
    })
}

#[derive(Deserialize)]
pub(super) struct PageQuery {
    /// The page ends before this mark (none: at the end of the log).
    before: Option<String>,
    limit: Option<usize>,
}

#[derive(Serialize)]
pub(super) struct PageView {
    lines: Vec<Line>,
    /// Where the page further back ends; none at the first line the engine has.
    older: Option<String>,
    /// Why there is nothing further back: `start`, `compressed` (a gzipped rotated file),
    /// `rotated` (the position rotated away), `endpoint` (only the last lines, through the
    /// logs endpoint); none when there is more.
    stop: Option<&'static str>,
    /// Follow from here: a file mark (`after=`), and the newest line's time (`since=`, for a
    /// follower that reads through the logs endpoint).
    after: Option<String>,
    since: Option<String>,
}

/// The container's full id, and its log file when it has a `json-file` log this process can
/// read.
pub(super) async fn log_file(e: &Engine, id: &str) -> Result<(String, Option<PathBuf>), ApiError> {
    let facts = crate::docker::events::inspect(&e.docker, id)
        .await
        .map_err(engine_error)?
        .ok_or_else(|| ApiError(StatusCode::NOT_FOUND, format!("no container '{id}'")))?;
    let path = (!facts.log_path.is_empty() && facts.log_driver == "json-file")
        .then(|| PathBuf::from(&facts.log_path))
        .filter(|p| std::fs::File::open(p).is_ok());
    Ok((facts.id, path))
}

/// The log's files, held and read from the oldest one by [`LogFiles`]; `None` without a
/// readable file or a file watcher (the logs endpoint then).
pub(super) fn open_files(e: &Engine, path: Option<PathBuf>) -> Result<Option<LogFiles>, ApiError> {
    let (Some(path), Some(watcher)) = (path, &e.watcher) else {
        return Ok(None);
    };
    LogFiles::open(watcher, &path)
        .map(Some)
        .map_err(|err| ApiError(StatusCode::INTERNAL_SERVER_ERROR, err.to_string()))
}

pub(super) async fn logs(
    State(e): State<Arc<Engine>>,
    Path(id): Path<String>,
    Query(q): Query<PageQuery>,
) -> Result<Json<PageView>, ApiError> {
    let limit = q.limit.unwrap_or(500).clamp(1, MAX_PAGE);
    let before = q.before.as_deref().map(parse_mark).transpose()?;
    let (full, path) = log_file(&e, &id).await?;
    let Some(path) = path else {
        return Ok(Json(endpoint_page(&e, &full, limit).await?));
    };
    let page = tokio::task::spawn_blocking(move || page::page_before(&path, before, limit))
        .await
        .map_err(|err| ApiError(StatusCode::INTERNAL_SERVER_ERROR, err.to_string()))?
        .map_err(|err| ApiError(StatusCode::INTERNAL_SERVER_ERROR, err.to_string()))?;
    let Some(page) = page else {
        return Ok(Json(PageView {
            lines: Vec::new(),
            older: None,
            stop: Some("rotated"),
            after: None,
            since: None,
        }));
    };
    let older = page.entries.first().map(|x| mark_text(x.before));
    let after = page.entries.last().map(|x| mark_text(x.after));
    // Also by time, for a follower that cannot read the files (no inotify here).
    let since = page.entries.iter().map(|x| x.frame.ts_ns).max();
    let stop = match page.end {
        PageEnd::More => None,
        PageEnd::Start => Some("start"),
        PageEnd::Compressed => Some("compressed"),
    };
    let mut carry = Carry::default();
    let mut lines = lines_of(
        page.entries.into_iter().map(|x| (x.frame, Some(x.before))),
        &mut carry,
    );
    lines.extend(rest(&mut carry));
    Ok(Json(PageView {
        lines,
        older: if stop.is_none() { older } else { None },
        stop,
        // An empty log: follow from its start.
        after: after.or_else(|| Some(FROM_START.to_string())),
        since: since.map(|n| n.to_string()),
    }))
}

/// The last `limit` messages through the logs endpoint (the files cannot be read here).
async fn endpoint_page(e: &Engine, id: &str, limit: usize) -> Result<PageView, ApiError> {
    let q = LogQuery {
        tail: Some(limit as u64),
        stdout: true,
        stderr: true,
        ..LogQuery::default()
    };
    let mut frames = Vec::new();
    let mut stream = logs::open_query(&e.docker, id, &q);
    while let Some(f) = stream.next().await {
        frames.push(f.map_err(engine_error)?);
    }
    let since = frames.last().map(|f| f.ts_ns.to_string());
    let mut carry = Carry::default();
    let mut lines = lines_of(frames.into_iter().map(|f| (f, None)), &mut carry);
    lines.extend(rest(&mut carry));
    Ok(PageView {
        lines,
        older: None,
        stop: Some("endpoint"),
        after: None,
        since,
    })
}

#[derive(Deserialize)]
pub(super) struct FollowQuery {
    /// After this file mark (from a page's `after`).
    after: Option<String>,
    /// After this time, ns (from an endpoint page's `since`).
    since: Option<String>,
}

type Events = futures_util::stream::BoxStream<'static, Result<Event, Infallible>>;

pub(super) async fn follow(
    State(e): State<Arc<Engine>>,
    Path(id): Path<String>,
    Query(q): Query<FollowQuery>,
) -> Result<impl IntoResponse, ApiError> {
    let (full, path) = log_file(&e, &id).await?;
    let events: Events = match (q.after.as_deref(), open_files(&e, path)?) {
        (Some(after), Some(files)) => {
            let mark = (after != FROM_START)
                .then(|| parse_mark(after))
                .transpose()?;
            follow_files(files, mark, e.docker.clone(), full).boxed()
        }
        _ => {
            let since = q
                .since
                .as_deref()
                .map(|s| s.parse::<i64>())
                .transpose()
                .map_err(|_| ApiError(StatusCode::BAD_REQUEST, "since: not a time".into()))?;
            follow_endpoint(&e.docker, &full, since).boxed()
        }
    };
    let stop = e.stop.clone();
    let events: Events = events
        .take_until(async move { stop.cancelled().await })
        .boxed();
    Ok(Sse::new(events).keep_alive(KeepAlive::new().interval(Duration::from_secs(15))))
}

pub(super) fn lines_event(lines: &[Line]) -> Result<Event, Infallible> {
    Ok(Event::default()
        .event("lines")
        .data(serde_json::to_string(lines).unwrap_or_else(|_| "[]".into())))
}

/// The lines after `mark`, as they are written, through rotations; a stretch rotated away
/// before it was read is said (`gap` events), never skipped silently. Each event is produced
/// when the browser takes the one before: a slow browser slows the reading, nothing queues.
/// Once the container `id` is not running and everything is read: an `end` event, and the
/// stream ends.
fn follow_files(
    mut files: LogFiles,
    mark: Option<FileMark>,
    docker: Docker,
    id: String,
) -> impl Stream<Item = Result<Event, Infallible>> {
    let position = Position {
        file: mark,
        ..Position::default()
    };
    let started = files.start_after(&position);
    struct St {
        files: LogFiles,
        carry: Carry,
        /// The position after the last record read.
        at: Option<FileMark>,
        failed: Option<String>,
        docker: Docker,
        id: String,
        /// The container was seen stopped after an idle read: one more read, then the end.
        stopped: bool,
        /// When it was last asked whether the container ended.
        checked: Option<Instant>,
        ended: bool,
    }
    let st = St {
        files,
        carry: Carry::default(),
        at: mark,
        failed: started.err().map(|e| e.to_string()),
        docker,
        id,
        stopped: false,
        checked: None,
        ended: false,
    };
    futures_util::stream::unfold(st, |mut st| async move {
        if st.ended {
            return None;
        }
        if let Some(why) = st.failed.take() {
            return Some((Ok(Event::default().event("failure").data(why)), st));
        }
        loop {
            let lost = st.files.take_lost();
            if !lost.is_empty() {
                let text = lost
                    .iter()
                    .map(|l| format!("{} file(s) of this log were not read: {}", l.files, l.why))
                    .collect::<Vec<_>>()
                    .join("; ");
                return Some((Ok(Event::default().event("gap").data(text)), st));
            }
            let mut frames = Vec::new();
            let mut idle = false;
            while frames.len() < MAX_EVENT_LINES {
                match st.files.next() {
                    Ok(Next::Frame(f, after)) => {
                        frames.push((f, st.at));
                        st.at = Some(after);
                    }
                    Ok(Next::Idle) => {
                        idle = true;
                        break;
                    }
                    Err(e) => {
                        st.failed = Some(e.to_string());
                        break;
                    }
                }
            }
            let lines = lines_of(frames, &mut st.carry);
            if !lines.is_empty() {
                return Some((lines_event(&lines), st));
            }
            if let Some(why) = st.failed.take() {
                return Some((Ok(Event::default().event("failure").data(why)), st));
            }
            if idle {
                if st.stopped {
                    // Everything it wrote is read.
                    let last = rest(&mut st.carry);
                    st.ended = true;
                    if !last.is_empty() {
                        return Some((lines_event(&last), st));
                    }
                    return Some((
                        Ok(Event::default().event("end").data("the container stopped")),
                        st,
                    ));
                }
                // Ended? Asked at once when the reader first has nothing (an exited
                // container's page ends without waiting), then at each quiet check.
                if st.checked.is_none_or(|t| t.elapsed() >= IDLE_CHECK) {
                    st.checked = Some(Instant::now());
                    st.stopped = crate::docker::container::has_ended(&st.docker, &st.id)
                        .await
                        .unwrap_or(false);
                    if st.stopped {
                        continue;
                    }
                }
                tokio::select! {
                    () = st.files.changed() => {}
                    () = tokio::time::sleep(IDLE_CHECK) => {}
                }
            }
        }
    })
}

/// The lines after `since_ns` through the logs endpoint, followed while the container runs.
fn follow_endpoint(
    docker: &Docker,
    id: &str,
    since_ns: Option<i64>,
) -> impl Stream<Item = Result<Event, Infallible>> + use<> {
    let q = LogQuery {
        follow: true,
        since_ns: since_ns.map(|n| n + 1),
        stdout: true,
        stderr: true,
        ..LogQuery::default()
    };
    let mut carry = Carry::default();
    logs::open_query(docker, id, &q)
        .ready_chunks(MAX_EVENT_LINES)
        .filter_map(move |chunk| {
            let mut frames = Vec::new();
            let mut failed = None;
            for f in chunk {
                match f {
                    Ok(f) => frames.push((f, None)),
                    Err(e) => failed = Some(e.to_string()),
                }
            }
            let lines = lines_of(frames, &mut carry);
            let ev = match (lines.is_empty(), failed) {
                (false, _) => Some(lines_event(&lines)),
                (true, Some(why)) => Some(Ok(Event::default().event("failure").data(why))),
                (true, None) => None,
            };
            std::future::ready(ev)
        })
        // The stream ends when the container stops. (An event without data is not
        // dispatched by a browser.)
        .chain(futures_util::stream::once(async {
            Ok(Event::default().event("end").data("the container stopped"))
        }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(source: Source, ts: i64, data: &str) -> Marked {
        let mark = FileMark {
            first_line: 7,
            offset: ts as u64,
        };
        let f = Frame {
            source,
            ts_ns: ts,
            data: bytes::Bytes::copy_from_slice(data.as_bytes()),
        };
        (f, Some(mark))
    }

    #[test]
    fn pieces_of_a_cut_line_are_one_line_and_marks_round_trip() {
        let mut carry = Carry::default();
        let got = lines_of(
            [
                frame(Source::Stdout, 1, "aa"),
                // The other stream between two pieces of a line.
                frame(Source::Stderr, 1, "between\n"),
                frame(Source::Stdout, 1, "bb\n"),
                frame(Source::Stderr, 2, "<img src=x onerror=alert(1)>\n"),
                frame(Source::Stdout, 3, "cc"),
            ],
            &mut carry,
        );
        let texts: Vec<(&str, &str)> = got.iter().map(|l| (l.s, l.text.as_str())).collect();
        assert_eq!(
            texts,
            [
                ("err", "between"),
                ("out", "aabb"),
                ("err", "<img src=x onerror=alert(1)>")
            ]
        );
        // The open piece waits for the rest, across calls.
        let more = lines_of([frame(Source::Stdout, 4, "dd\n")], &mut carry);
        assert_eq!(more[0].text, "ccdd");
        // At the position of its first piece.
        assert_eq!(more[0].b.as_deref(), Some("7:3"));
        assert!(carry.iter().all(Option::is_none));
        let mut carry = Carry::default();
        lines_of([frame(Source::Stdout, 9, "open")], &mut carry);
        assert_eq!(rest(&mut carry)[0].text, "open");
        let m = FileMark {
            first_line: 0xdead_beef,
            offset: 42,
        };
        assert_eq!(parse_mark(&mark_text(m)).ok(), Some(m));
        assert!(parse_mark("x").is_err());
    }
}
