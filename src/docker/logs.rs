//! Reading a container's output through the engine's logs endpoint, with timestamps.
//!
//! Why the logs endpoint and not attach: attach is faster (see `shared/notes`), but it is not a
//! buffer: a reader that stops reading blocks the container's writes. The logs endpoint reads
//! the engine's log file, so when CloudWatch is slow dockwatch simply reads later, the container
//! never blocks and dockwatch's memory stays bounded. It also gives each line the time Docker
//! received it, and lets a reader reopen the log after a dropped connection, a restart of the
//! engine or of dockwatch, and continue exactly after the last frame it had.
//!
//! Each frame the engine sends is one log message of the json-file driver:
//! `RFC3339NANO-TIMESTAMP SPACE BYTES`, where the bytes end with `\n` unless Docker split a long
//! line (16 KiB pieces) or the output ended without a newline.
//!
//! Position: a [`Cursor`] names the last frame read by its timestamp, its source and its rank
//! among that source's frames with the same timestamp. Reopening "after the cursor" reads the
//! log again, skips up to that frame and yields what follows. Matching the frame's position
//! rather than comparing timestamps keeps stdout/stderr frames whose timestamps are slightly
//! out of file order, and the rank tells apart the pieces of one long line, which Docker
//! stamps all alike.

use std::pin::Pin;

use bollard::Docker;
use bollard::container::LogOutput;
use bollard::query_parameters::LogsOptions;
use bytes::Bytes;
use futures_util::{Stream, StreamExt};

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use super::DockerError;
use crate::docker::Source;

/// One log message of the container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Frame {
    pub(crate) source: Source,
    /// When Docker received it, in nanoseconds since the Unix epoch.
    pub(crate) ts_ns: i64,
    /// The bytes, without the timestamp prefix.
    pub(crate) data: Bytes,
}

impl Frame {
    pub(crate) fn ts_ms(&self) -> i64 {
        self.ts_ns.div_euclid(1_000_000)
    }
}

/// A position in the container's log: the last frame read, named by its timestamp, its source
/// and how many frames of that source carried exactly that timestamp up to it (Docker gives all
/// 16 KiB pieces of one long line the same timestamp, so the timestamp alone is ambiguous).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Cursor {
    pub(crate) ts_ns: i64,
    pub(crate) source: Source,
    /// 1 for the first frame of `source` with timestamp `ts_ns`, 2 for the next, ...
    pub(crate) nth: u64,
}

/// A point in the container's output that both read paths can name (see
/// `docker::messages`): after the first `messages[0]` stdout and `messages[1]` stderr
/// messages of the engine's log, the last of them named by `cursor` when the logs endpoint
/// read it. The attach path has no engine timestamps, so no cursor; a checkpoint written
/// before messages were counted has a cursor only. Both absent: the beginning. When the
/// engine's log files were read (`docker::files`), `file` names the same point in them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct Position {
    pub(crate) messages: Option<[u64; 2]>,
    pub(crate) cursor: Option<Cursor>,
    pub(crate) file: Option<FileMark>,
}

/// A point in the container's log files (`docker::files`): after the record ending at byte
/// `offset` of the file whose first line hashes to `first_line`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct FileMark {
    pub(crate) first_line: u64,
    pub(crate) offset: u64,
}

impl Position {
    /// The beginning of the output (a new run).
    pub(crate) const START: Position = Position {
        messages: Some([0, 0]),
        cursor: None,
        file: None,
    };

    /// Counts one more message of `source`, when messages are counted.
    pub(crate) fn count(&mut self, source: Source, n: u64) {
        if let Some(m) = &mut self.messages {
            m[source.index()] += n;
        }
    }

    /// How to reopen the log after this position: after the cursor when there is one (the
    /// engine's log is read from its start and skipped up to that frame), else from the start
    /// skipping the counted messages.
    pub(crate) fn reopen(&self) -> (Option<Cursor>, Skip) {
        match (self.cursor, self.messages) {
            (Some(c), _) => (Some(c), Skip::default()),
            (None, Some(m)) => (None, Skip(m)),
            (None, None) => (None, Skip::default()),
        }
    }
}

/// Messages of each source still to pass over before the position is reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct Skip(pub(crate) [u64; 2]);

impl Skip {
    /// True when a frame of `source` is one to pass over (and counts it).
    pub(crate) fn take(&mut self, source: Source) -> bool {
        let left = &mut self.0[source.index()];
        if *left == 0 {
            return false;
        }
        *left -= 1;
        true
    }
}

/// Keeps the cursor of a stream of frames up to date.
#[derive(Debug, Default, Clone)]
pub(crate) struct CursorTracker {
    /// Per source: last timestamp and how many frames had it.
    last: [(i64, u64); 2],
    cursor: Option<Cursor>,
}

impl CursorTracker {
    /// A tracker continuing after `start` (resume): frames of `start`'s timestamp and source
    /// keep counting from its rank.
    pub(crate) fn starting_at(start: Option<Cursor>) -> Self {
        let mut t = Self {
            cursor: start,
            ..Self::default()
        };
        if let Some(c) = start {
            t.last[c.source.index()] = (c.ts_ns, c.nth);
        }
        t
    }

    /// Records a frame read after the current position.
    pub(crate) fn advance(&mut self, f: &Frame) {
        let slot = &mut self.last[f.source.index()];
        if slot.1 > 0 && slot.0 == f.ts_ns {
            slot.1 += 1;
        } else {
            *slot = (f.ts_ns, 1);
        }
        self.cursor = Some(Cursor {
            ts_ns: f.ts_ns,
            source: f.source,
            nth: slot.1,
        });
    }

    pub(crate) fn cursor(&self) -> Option<Cursor> {
        self.cursor
    }
}

pub(crate) type FrameStream = Pin<Box<dyn Stream<Item = Result<Frame, DockerError>> + Send>>;

/// What to read.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct ReadPlan {
    /// Keep the stream open while the container runs.
    pub(crate) follow: bool,
    /// Only the last N frames (`None`: all).
    pub(crate) tail: Option<u64>,
}

/// Finds a cursor in a stream of frames. Within one source timestamps never go back, so the
/// cursor's frame is the `nth` frame of its source with its timestamp, counted from the first
/// one; a window that starts inside that run (a `tail` read) cannot count, and does not match.
struct Seek {
    target: Cursor,
    /// The frames seen so far start at or before the run's first frame.
    anchored: bool,
    /// Frames of the run seen so far.
    count: u64,
}

impl Seek {
    /// True for the cursor's own frame.
    fn is_target(&mut self, f: &Frame) -> bool {
        if f.source != self.target.source {
            return false;
        }
        if f.ts_ns == self.target.ts_ns {
            if self.anchored {
                self.count += 1;
                return self.count == self.target.nth;
            }
        } else if f.ts_ns < self.target.ts_ns {
            self.anchored = true;
            self.count = 0;
        } else {
            // Past the run without reaching the cursor: the window did not hold it.
            self.anchored = false;
        }
        false
    }
}

/// Opens the container's log stream. With a cursor, frames up to and including the cursor's
/// frame are skipped. The flag returned turns true once the cursor's frame was seen (at once
/// without a cursor): a stream that ends with it false had not reached the cursor, and the
/// caller widens the read (a larger tail).
pub(crate) fn open(
    docker: &Docker,
    id: &str,
    plan: ReadPlan,
    after: Option<Cursor>,
) -> (FrameStream, Arc<AtomicBool>) {
    let found = Arc::new(AtomicBool::new(after.is_none()));
    let found2 = found.clone();
    let opts = LogsOptions {
        follow: plan.follow,
        stdout: true,
        stderr: true,
        since: 0,
        until: 0,
        timestamps: true,
        tail: plan
            .tail
            .map_or_else(|| "all".to_string(), |n| n.to_string()),
    };
    // (source, bytes) messages: straight from the Unix socket when there is one (see
    // raw_logs), else through bollard.
    let raw: Pin<Box<dyn Stream<Item = Result<LogOutput, DockerError>> + Send>> =
        match unix_socket() {
            Some(socket) => {
                let v = docker.client_version();
                let query = format!(
                    "/v{}.{}/containers/{id}/logs?follow={}&stdout=1&stderr=1&timestamps=1&tail={}",
                    v.major_version, v.minor_version, plan.follow as u8, opts.tail
                );
                Box::pin(raw_stream(socket, query))
            }
            None => Box::pin(
                docker
                    .logs(id, Some(opts))
                    .map(|r| r.map_err(|e| DockerError::api("read container logs", &e))),
            ),
        };
    let mut seek = after.map(|target| Seek {
        target,
        anchored: plan.tail.is_none(),
        count: 0,
    });
    let frames = raw.filter_map(move |item| {
        let out = match item {
            Err(e) => Some(Err(e)),
            Ok(out) => match parse(out) {
                Err(e) => Some(Err(e)),
                Ok(None) => None,
                Ok(Some(frame)) => match &mut seek {
                    Some(s) => {
                        if s.is_target(&frame) {
                            seek = None;
                            found2.store(true, Ordering::Release);
                        }
                        None
                    }
                    None => Some(Ok(frame)),
                },
            },
        };
        std::future::ready(out)
    });
    (Box::pin(frames), found)
}

/// What a `docker logs`-style read asks of the engine (the agent's GetLogs).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct LogQuery {
    /// Keep the stream open while the container runs.
    pub(crate) follow: bool,
    /// Only the last N messages (`None`: all).
    pub(crate) tail: Option<u64>,
    /// Only messages at or after this time, epoch nanoseconds.
    pub(crate) since_ns: Option<i64>,
    /// Only messages at or before this time, epoch nanoseconds.
    pub(crate) until_ns: Option<i64>,
    pub(crate) stdout: bool,
    pub(crate) stderr: bool,
}

/// Opens the container's log with `docker logs` options: every frame with its source and
/// timestamp, binary-safe. Dropping the stream closes the engine connection at once.
pub(crate) fn open_query(docker: &Docker, id: &str, q: &LogQuery) -> FrameStream {
    let tail = q.tail.map_or_else(|| "all".to_string(), |n| n.to_string());
    let raw: Pin<Box<dyn Stream<Item = Result<LogOutput, DockerError>> + Send>> = match unix_socket(
    ) {
        Some(socket) => {
            let v = docker.client_version();
            let mut query = format!(
                "/v{}.{}/containers/{id}/logs?follow={}&stdout={}&stderr={}&timestamps=1&tail={tail}",
                v.major_version, v.minor_version, q.follow as u8, q.stdout as u8, q.stderr as u8
            );
            // The engine takes `SECONDS.NANOSECONDS`.
            let engine_time = |ns: i64| {
                format!(
                    "{}.{:09}",
                    ns.div_euclid(1_000_000_000),
                    ns.rem_euclid(1_000_000_000)
                )
            };
            if let Some(ns) = q.since_ns {
                query.push_str(&format!("&since={}", engine_time(ns)));
            }
            if let Some(ns) = q.until_ns {
                query.push_str(&format!("&until={}", engine_time(ns)));
            }
            Box::pin(raw_stream(socket, query))
        }
        None => {
            // bollard takes whole seconds: round the range outwards, then trim below.
            let secs = |ns: i64, up: bool| {
                let s = if up {
                    ns.div_euclid(1_000_000_000) + i64::from(ns.rem_euclid(1_000_000_000) > 0)
                } else {
                    ns.div_euclid(1_000_000_000)
                };
                i32::try_from(s.max(0)).unwrap_or(i32::MAX)
            };
            let opts = LogsOptions {
                follow: q.follow,
                stdout: q.stdout,
                stderr: q.stderr,
                since: q.since_ns.map_or(0, |n| secs(n, false)),
                until: q.until_ns.map_or(0, |n| secs(n, true)),
                timestamps: true,
                tail: tail.clone(),
            };
            Box::pin(
                docker
                    .logs(id, Some(opts))
                    .map(|r| r.map_err(|e| DockerError::api("read container logs", &e))),
            )
        }
    };
    let (since, until) = (q.since_ns, q.until_ns);
    let frames = raw.filter_map(move |item| {
        let out = match item {
            Err(e) => Some(Err(e)),
            Ok(out) => match parse(out) {
                Err(e) => Some(Err(e)),
                Ok(None) => None,
                Ok(Some(f)) => {
                    let inside =
                        since.is_none_or(|s| f.ts_ns >= s) && until.is_none_or(|u| f.ts_ns <= u);
                    inside.then_some(Ok(f))
                }
            },
        };
        std::future::ready(out)
    });
    Box::pin(frames)
}

/// The time as `docker logs -t` prints it (the engine's `RFC3339NanoFixed`):
/// `2026-11-23T10:00:00.123400000Z`, always nine digits.
pub(crate) fn format_rfc3339_nano(ts_ns: i64) -> String {
    let secs = ts_ns.div_euclid(1_000_000_000);
    let nanos = ts_ns.rem_euclid(1_000_000_000) as u32;
    let Some(dt) = chrono::DateTime::from_timestamp(secs, nanos) else {
        return ts_ns.to_string();
    };
    // Always nine digits, as `docker logs -t` prints (Docker's RFC3339NanoFixed), so the
    // columns line up and the text equals the engine's.
    format!("{}.{nanos:09}Z", dt.format("%Y-%m-%dT%H:%M:%S"))
}

/// The engine's Unix socket, when `DOCKER_HOST` names one (or is unset).
pub(crate) fn unix_socket() -> Option<String> {
    match std::env::var("DOCKER_HOST") {
        Err(_) => Some("/var/run/docker.sock".to_string()),
        Ok(h) => h.strip_prefix("unix://").map(str::to_string),
    }
}

/// The log messages read by [`super::raw_logs::RawLogs`], as bollard's `LogOutput`s.
fn raw_stream(
    socket: String,
    query: String,
) -> impl Stream<Item = Result<LogOutput, DockerError>> + Send {
    enum St {
        Start(String, String),
        Open(super::raw_logs::RawLogs),
        Done,
    }
    futures_util::stream::unfold(St::Start(socket, query), |st| async move {
        let mut logs = match st {
            St::Start(socket, query) => match super::raw_logs::RawLogs::open(&socket, &query).await
            {
                Ok(l) => l,
                Err(e) => return Some((Err(e), St::Done)),
            },
            St::Open(l) => l,
            St::Done => return None,
        };
        match logs.next().await {
            None => None,
            Some(Err(e)) => Some((Err(e), St::Done)),
            Some(Ok((source, message))) => {
                let out = match source {
                    Source::Stdout => LogOutput::StdOut { message },
                    Source::Stderr => LogOutput::StdErr { message },
                };
                Some((Ok(out), St::Open(logs)))
            }
        }
    })
}

/// True when an error from [`open`] means the stream itself broke (worth reopening after
/// the cursor), as opposed to an answer from the engine ([`DockerError::Answered`]).
pub(crate) fn is_transport_error(e: &DockerError) -> bool {
    matches!(e, DockerError::Api { .. })
}

fn parse(out: LogOutput) -> Result<Option<Frame>, DockerError> {
    let (source, msg) = match out {
        LogOutput::StdOut { message } | LogOutput::Console { message } => (Source::Stdout, message),
        LogOutput::StdErr { message } => (Source::Stderr, message),
        LogOutput::StdIn { .. } => return Ok(None),
    };
    let space = memchr::memchr(b' ', &msg[..msg.len().min(64)]).ok_or_else(|| bad_frame(&msg))?;
    let ts_ns = parse_timestamp(&msg[..space]).ok_or_else(|| bad_frame(&msg))?;
    Ok(Some(Frame {
        source,
        ts_ns,
        data: msg.slice(space + 1..),
    }))
}

fn bad_frame(msg: &[u8]) -> DockerError {
    DockerError::Api {
        context: "read container logs".into(),
        reason: format!(
            "a log frame without a timestamp: {:?}",
            String::from_utf8_lossy(&msg[..msg.len().min(80)])
        ),
    }
}

/// Parses Docker's RFC 3339 timestamps (`2024-05-01T10:11:12.123456789Z`, fraction optional
/// and of any length, `Z` or a `+hh:mm` offset) into nanoseconds since the Unix epoch.
pub(crate) fn parse_timestamp(s: &[u8]) -> Option<i64> {
    fn num(s: &[u8]) -> Option<i64> {
        if s.is_empty() || !s.iter().all(u8::is_ascii_digit) {
            return None;
        }
        Some(s.iter().fold(0i64, |a, d| a * 10 + i64::from(d - b'0')))
    }
    if s.len() < 20
        || s[4] != b'-'
        || s[7] != b'-'
        || s[10] != b'T'
        || s[13] != b':'
        || s[16] != b':'
    {
        return None;
    }
    let (y, mo, d) = (num(&s[0..4])?, num(&s[5..7])?, num(&s[8..10])?);
    let (h, mi, sec) = (num(&s[11..13])?, num(&s[14..16])?, num(&s[17..19])?);
    if !(1..=12).contains(&mo) || !(1..=31).contains(&d) || h > 23 || mi > 59 || sec > 60 {
        return None;
    }
    let mut rest = &s[19..];
    let mut nanos = 0i64;
    if rest.first() == Some(&b'.') {
        let digits = rest[1..].iter().take_while(|b| b.is_ascii_digit()).count();
        if digits == 0 || digits > 9 {
            return None;
        }
        nanos = num(&rest[1..1 + digits])? * 10i64.pow(9 - digits as u32);
        rest = &rest[1 + digits..];
    }
    let offset_secs = match rest {
        b"Z" | b"z" => 0,
        [sign @ (b'+' | b'-'), oh1, oh2, b':', om1, om2] => {
            let v = num(&[*oh1, *oh2])? * 3600 + num(&[*om1, *om2])? * 60;
            if *sign == b'+' { v } else { -v }
        }
        _ => return None,
    };
    let days = days_from_civil(y, mo, d);
    let secs = days * 86_400 + h * 3600 + mi * 60 + sec - offset_secs;
    Some(secs * 1_000_000_000 + nanos)
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// Describes a join error of the reader task (bollard panics on an engine error frame).
pub(crate) fn describe_join(e: &tokio::task::JoinError) -> String {
    if e.is_panic() {
        "the log reader failed on an unexpected frame from the engine".into()
    } else {
        e.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_nano_fixed_like_docker_logs() {
        let t = parse_timestamp(b"2026-11-23T10:00:00.123400000Z").unwrap();
        assert_eq!(format_rfc3339_nano(t), "2026-11-23T10:00:00.123400000Z");
        let t = parse_timestamp(b"2026-11-23T10:00:00Z").unwrap();
        assert_eq!(format_rfc3339_nano(t), "2026-11-23T10:00:00.000000000Z");
        let t = parse_timestamp(b"2026-11-23T10:00:00.000000001Z").unwrap();
        assert_eq!(format_rfc3339_nano(t), "2026-11-23T10:00:00.000000001Z");
    }
    use chrono::DateTime;

    fn fr(source: Source, ts_ns: i64) -> Frame {
        Frame {
            source,
            ts_ns,
            data: Bytes::from_static(b"x"),
        }
    }

    /// Positions after the cursor, as `open` would yield them.
    fn after(frames: &[Frame], target: Cursor, anchored: bool) -> Option<usize> {
        let mut s = Seek {
            target,
            anchored,
            count: 0,
        };
        frames.iter().position(|f| s.is_target(f)).map(|i| i + 1)
    }

    #[test]
    fn cursor_ranks_identical_timestamps() {
        use Source::*;
        let log = [
            fr(Stdout, 1),
            fr(Stdout, 5),
            fr(Stderr, 4),
            fr(Stdout, 5),
            fr(Stdout, 5),
            fr(Stdout, 9),
        ];
        let mut t = CursorTracker::default();
        let mut cursors = Vec::new();
        for f in &log {
            t.advance(f);
            cursors.push(t.cursor().unwrap());
        }
        assert_eq!(
            cursors[4],
            Cursor {
                ts_ns: 5,
                source: Stdout,
                nth: 3
            }
        );
        assert_eq!(
            cursors[2],
            Cursor {
                ts_ns: 4,
                source: Stderr,
                nth: 1
            }
        );
        // Every cursor is found again at its own place in a full read.
        for (i, c) in cursors.iter().enumerate() {
            assert_eq!(after(&log, *c, true), Some(i + 1), "{c:?}");
        }
        // A tail window that starts inside the run of ts 5 cannot place rank 3.
        assert_eq!(after(&log[3..], cursors[4], false), None);
        // A window that holds the run's start can.
        assert_eq!(after(&log[0..], cursors[4], false), Some(5));
    }

    #[test]
    fn timestamps_match_chrono() {
        for s in [
            "2024-05-01T10:11:12.123456789Z",
            "2024-05-01T10:11:12.1Z",
            "2024-05-01T10:11:12Z",
            "1970-01-01T00:00:00Z",
            "2000-02-29T23:59:59.000000001Z",
            "2026-11-22T22:49:00.5+02:00",
            "1969-12-31T23:59:59.9Z",
        ] {
            let want = DateTime::parse_from_rfc3339(s)
                .unwrap()
                .timestamp_nanos_opt()
                .unwrap();
            assert_eq!(parse_timestamp(s.as_bytes()), Some(want), "{s}");
        }
    }

    #[test]
    fn bad_timestamps() {
        for s in [
            "",
            "hello world",
            "2024-13-01T00:00:00Z",
            "2024-05-01T10:11:12.Z",
            "2024-05-01 10:11:12Z",
        ] {
            assert_eq!(parse_timestamp(s.as_bytes()), None, "{s}");
        }
    }

    #[test]
    fn frames_parse() {
        let f = parse(LogOutput::StdErr {
            message: Bytes::from_static(b"1970-01-01T00:00:01.5Z hi\n"),
        })
        .unwrap()
        .unwrap();
        assert_eq!(f.source, Source::Stderr);
        assert_eq!(f.ts_ns, 1_500_000_000);
        assert_eq!(f.ts_ms(), 1500);
        assert_eq!(&f.data[..], b"hi\n");
        assert!(
            parse(LogOutput::StdOut {
                message: Bytes::from_static(b"no timestamp")
            })
            .is_err()
        );
    }
}
