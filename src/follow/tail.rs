//! `dockwatch tail`: events of one or more log groups, interleaved in time order, on stdout.
//!
//! Reading: FilterLogEvents per group (and per chunk of at most 100 stream names when streams
//! are selected), each already in time order; the groups are merged by timestamp holding one
//! page per query, so memory does not grow with the range.
//!
//! Following: every `--poll-interval`, each query runs again from `newest`, the newest
//! timestamp printed so far; every quarter of `--late-window` (and on the first poll) it runs
//! from `newest - late_window` instead. Event ids seen inside the window are remembered, so an
//! event is printed once, and an event that reached CloudWatch late (a shipper's requests in
//! flight, a retried batch, a producer catching up) but whose timestamp is still inside the
//! window is printed when a window read finds it (within a quarter of the window) instead of
//! being lost; one later than the window is not shown (`download` finds those). Reading the
//! window only four times per window length, not at every poll, keeps the request rate near
//! the data rate: each event is read about five times, not `late_window / poll_interval`.
//! Each poll prints what it found in time order. New groups (prefix selections) and new
//! streams (`--stream-prefix`) are looked for every ten polls; without a stream selection,
//! FilterLogEvents covers new streams by itself.

use std::collections::{HashMap, VecDeque};
use std::io::{IsTerminal, Write};
use std::time::Duration;

use super::FollowError;
use super::source::{Event, FilterQuery, GroupSpec, Patience, RateLimit, Reader};
use crate::aws::AwsOptions;
use crate::aws::logs;
use crate::cli::{ColorWhen, TailArgs, TailFormat};
use crate::shutdown::Shutdown;
use crate::util::time::{format_rfc3339_ms, now_ms, parse_time};

/// FilterLogEvents takes at most this many stream names.
const MAX_STREAM_NAMES: usize = 100;
/// Polls between two looks for new groups and streams.
const DISCOVERY_EVERY: u32 = 10;
/// Requests a second at most: FilterLogEvents allows 5 per account and Region, shared with
/// every other reader there.
const READS_PER_SECOND: f64 = 4.0;
/// Remembered ids past which those older than the late window are forgotten.
const PRUNE_AT: usize = 50_000;

/// Validated `tail` arguments.
#[derive(Debug, Clone)]
pub(crate) struct TailConfig {
    pub(crate) groups: Vec<GroupSpec>,
    pub(crate) follow: bool,
    /// Inclusive start, epoch ms.
    pub(crate) since: i64,
    /// Inclusive end, epoch ms.
    pub(crate) until: Option<i64>,
    pub(crate) stream_prefix: Option<String>,
    pub(crate) streams: Vec<String>,
    pub(crate) filter: Option<String>,
    pub(crate) format: TailFormat,
    pub(crate) color: bool,
    pub(crate) poll_interval: Duration,
    pub(crate) late_window: Duration,
    pub(crate) aws: AwsOptions,
}

impl TailConfig {
    /// Checks the arguments; `now` anchors relative times.
    pub(crate) fn from_args(
        a: TailArgs,
        now: i64,
        stdout_is_tty: bool,
    ) -> Result<Self, FollowError> {
        let aws =
            crate::config::aws_options(a.aws).map_err(|e| FollowError::Usage(e.to_string()))?;
        let since = parse_time(&a.since, now)?;
        let until = a.until.as_deref().map(|u| parse_time(u, now)).transpose()?;
        if let Some(u) = until
            && u < since
        {
            return Err(FollowError::Usage(format!(
                "--until ({}) is before --since ({}); swap them",
                format_rfc3339_ms(u),
                format_rfc3339_ms(since)
            )));
        }
        if a.groups.iter().any(|g| g.is_empty()) {
            return Err(FollowError::Usage(
                "empty log group name; give a name, or '*' for every group".into(),
            ));
        }
        if a.streams.iter().any(|s| s.is_empty()) {
            return Err(FollowError::Usage("empty --stream name".into()));
        }
        if a.poll_interval.is_zero() {
            return Err(FollowError::Usage(
                "--poll-interval must be more than 0, e.g. 1s".into(),
            ));
        }
        let color = match a.color {
            ColorWhen::Always => true,
            ColorWhen::Never => false,
            ColorWhen::Auto => stdout_is_tty && std::env::var_os("NO_COLOR").is_none(),
        };
        Ok(TailConfig {
            groups: a.groups.iter().map(|g| GroupSpec::parse(g)).collect(),
            follow: a.follow,
            since,
            until,
            stream_prefix: a.stream_prefix,
            streams: a.streams,
            filter: a.filter.filter(|f| !f.is_empty()),
            format: a.format,
            color,
            poll_interval: a.poll_interval,
            late_window: a.late_window,
            aws,
        })
    }
}

/// Runs `dockwatch tail`; returns the exit code.
pub async fn tail(args: TailArgs, shutdown: Shutdown) -> Result<i32, FollowError> {
    let cfg = TailConfig::from_args(args, now_ms(), std::io::stdout().is_terminal())?;
    let mut out = Printer::new(cfg.format, cfg.color);
    // A stop ends every wait at once, also one inside a retried call (throttling, an
    // unreachable endpoint): printing is synchronous, so dropping the work at an await point
    // leaves no half line.
    let mut stop = shutdown.clone();
    let work = async {
        let sdk = logs::build(&cfg.aws).await.map_err(FollowError::from)?;
        let reader = Reader::new(
            sdk,
            Patience::Tries(4),
            RateLimit::per_second(READS_PER_SECOND),
        );
        Tail::new(&cfg, &reader).run(&mut out, shutdown).await
    };
    let r = tokio::select! {
        r = work => r,
        () = stop.requested() => Ok(stop.exit_code().unwrap_or(crate::exit_codes::SIGINT)),
    };
    match r {
        Ok(code) => {
            out.flush_quietly();
            Ok(code)
        }
        Err(TailStop::BrokenPipe) => Ok(0),
        Err(TailStop::Error(e)) => {
            out.flush_quietly();
            Err(e)
        }
    }
}

enum TailStop {
    /// The reader of our stdout went away (`| head`): a normal end.
    BrokenPipe,
    Error(FollowError),
}

impl From<FollowError> for TailStop {
    fn from(e: FollowError) -> Self {
        TailStop::Error(e)
    }
}

impl From<std::io::Error> for TailStop {
    fn from(e: std::io::Error) -> Self {
        if e.kind() == std::io::ErrorKind::BrokenPipe {
            TailStop::BrokenPipe
        } else {
            TailStop::Error(FollowError::Io {
                what: "cannot write to",
                path: "standard output".into(),
                source: e,
            })
        }
    }
}

/// One FilterLogEvents query and its unread page.
struct Query {
    /// Index of the group in `Tail::groups`, for printing and merge ties.
    group: usize,
    query: FilterQuery,
    buf: VecDeque<Event>,
    token: Option<String>,
    done: bool,
}

struct Tail<'a> {
    cfg: &'a TailConfig,
    reader: &'a Reader,
    /// Groups resolved so far, in the order first seen.
    groups: Vec<String>,
}

impl<'a> Tail<'a> {
    fn new(cfg: &'a TailConfig, reader: &'a Reader) -> Self {
        Tail {
            cfg,
            reader,
            groups: Vec::new(),
        }
    }

    /// Resolves the group selection (exact names must exist) and builds the queries.
    async fn discover(&mut self, first: bool) -> Result<Vec<(usize, FilterQuery)>, FollowError> {
        let mut names: Vec<String> = Vec::new();
        for spec in &self.cfg.groups {
            match spec {
                GroupSpec::Exact(g) => {
                    let exists = self
                        .reader
                        .group_exists(g)
                        .await
                        .map_err(|f| FollowError::call("look up the log group", f))?;
                    if !exists && first {
                        return Err(FollowError::GroupNotFound(g.clone()));
                    }
                    if exists {
                        names.push(g.clone());
                    }
                }
                GroupSpec::Prefix(p) => {
                    let found = self
                        .reader
                        .groups_with_prefix(p)
                        .await
                        .map_err(|f| FollowError::call("list log groups", f))?;
                    if found.is_empty() && first && !self.cfg.follow {
                        return Err(FollowError::NoGroupMatches(p.clone()));
                    }
                    names.extend(found);
                }
            }
        }
        let mut queries = Vec::new();
        for name in names {
            let idx = match self.groups.iter().position(|g| *g == name) {
                Some(i) => i,
                None => {
                    self.groups.push(name.clone());
                    self.groups.len() - 1
                }
            };
            if queries
                .iter()
                .any(|(i, _): &(usize, FilterQuery)| *i == idx)
            {
                continue; // named twice
            }
            let base = FilterQuery {
                group: name.clone(),
                streams: None,
                start: Some(self.cfg.since),
                end: self.cfg.until,
                pattern: self.cfg.filter.clone(),
            };
            let streams: Option<Vec<String>> = if !self.cfg.streams.is_empty() {
                Some(self.cfg.streams.clone())
            } else if let Some(p) = &self.cfg.stream_prefix {
                let found = self
                    .reader
                    .streams(&name, Some(p))
                    .await
                    .map_err(|f| FollowError::call("list log streams", f))?
                    .unwrap_or_default();
                Some(found.into_iter().map(|s| s.name).collect())
            } else {
                None
            };
            match streams {
                None => queries.push((idx, base)),
                Some(list) => {
                    for chunk in list.chunks(MAX_STREAM_NAMES) {
                        let mut q = base.clone();
                        q.streams = Some(chunk.to_vec());
                        queries.push((idx, q));
                    }
                }
            }
        }
        Ok(queries)
    }

    async fn run(&mut self, out: &mut Printer, mut shutdown: Shutdown) -> Result<i32, TailStop> {
        let window = i64::try_from(self.cfg.late_window.as_millis()).unwrap_or(i64::MAX);
        let mut queries = self.discover(true).await?;
        // Ids of printed events still inside the late window (follow only): the first poll
        // reads again from `newest - window`, however old `newest` is (a quiet group).
        let mut seen: HashMap<(usize, String), i64> = HashMap::new();
        let mut prune_at = PRUNE_AT;
        let mut newest = i64::MIN;

        // The range up to now: merged by time, one page per query in memory.
        let mut open: Vec<Query> = queries
            .iter()
            .map(|(g, q)| Query {
                group: *g,
                query: q.clone(),
                buf: VecDeque::new(),
                token: None,
                done: false,
            })
            .collect();
        loop {
            let stop = shutdown.exit_code();
            if let Some(code) = stop {
                return Ok(code);
            }
            for q in open.iter_mut() {
                self.fill(q).await?;
            }
            let Some(i) = (0..open.len())
                .filter(|&i| !open[i].buf.is_empty())
                .min_by_key(|&i| (open[i].buf[0].timestamp, open[i].group))
            else {
                break;
            };
            let (g, ev) = (open[i].group, open[i].buf.pop_front().expect("non-empty"));
            newest = newest.max(ev.timestamp);
            if self.cfg.follow {
                seen.insert((g, event_key(&ev)), ev.timestamp);
                if seen.len() >= prune_at {
                    let cutoff = newest.saturating_sub(window);
                    seen.retain(|_, ts| *ts >= cutoff);
                    prune_at = seen.len() * 2 + PRUNE_AT;
                }
            }
            out.print(&self.groups[g], &ev)?;
        }
        out.flush()?;
        if !self.cfg.follow {
            return Ok(0);
        }

        let mut polls = 0u32;
        let mut known = named_streams(&queries);
        let rescan_every = self.cfg.late_window / 4;
        let mut last_rescan: Option<tokio::time::Instant> = None;
        loop {
            tokio::select! {
                _ = tokio::time::sleep(self.cfg.poll_interval) => {}
                _ = shutdown.changed() => {}
            }
            if let Some(code) = shutdown.exit_code() {
                return Ok(code);
            }
            polls += 1;
            let rescan = last_rescan.is_none_or(|t| t.elapsed() >= rescan_every);
            if rescan {
                last_rescan = Some(tokio::time::Instant::now());
            }
            let from = match (newest, rescan) {
                (i64::MIN, _) => self.cfg.since,
                (n, true) => self.cfg.since.max(n.saturating_sub(window)),
                (n, false) => self.cfg.since.max(n),
            };
            let mut polled: Vec<(usize, FilterQuery)> = queries
                .iter()
                .map(|(g, q)| {
                    let mut q = q.clone();
                    q.start = Some(from);
                    (*g, q)
                })
                .collect();
            if polls.is_multiple_of(DISCOVERY_EVERY) {
                queries = self.discover(false).await?;
                // A stream found now is read from --since once: what it holds may be older
                // than the late window.
                polled.extend(catch_up(&queries, &mut known));
            }
            let mut fresh: Vec<(usize, Event)> = Vec::new();
            for (g, q) in &polled {
                let mut token = None;
                loop {
                    let (events, next) = self
                        .reader
                        .filter_page(q, token.clone())
                        .await
                        .map_err(|f| FollowError::call("read log events", f))?;
                    for ev in events {
                        let key = (*g, event_key(&ev));
                        if let std::collections::hash_map::Entry::Vacant(v) = seen.entry(key) {
                            v.insert(ev.timestamp);
                            fresh.push((*g, ev));
                        }
                    }
                    if next.is_none() || next == token {
                        break;
                    }
                    token = next;
                }
            }
            fresh.sort_by_key(|(g, e)| (e.timestamp, *g));
            for (g, ev) in &fresh {
                newest = newest.max(ev.timestamp);
                out.print(&self.groups[*g], ev)?;
            }
            out.flush()?;
            let cutoff = newest.saturating_sub(window);
            seen.retain(|_, ts| *ts >= cutoff);
        }
    }

    /// Reads pages until the query has an event buffered or is exhausted.
    async fn fill(&self, q: &mut Query) -> Result<(), FollowError> {
        while q.buf.is_empty() && !q.done {
            let (events, next) = self
                .reader
                .filter_page(&q.query, q.token.clone())
                .await
                .map_err(|f| FollowError::call("read log events", f))?;
            q.buf.extend(events);
            q.done = next.is_none() || next == q.token;
            q.token = next;
        }
        Ok(())
    }
}

/// The (group, stream) pairs the queries name.
fn named_streams(queries: &[(usize, FilterQuery)]) -> std::collections::HashSet<(usize, String)> {
    queries
        .iter()
        .flat_map(|(g, q)| q.streams.iter().flatten().map(move |s| (*g, s.clone())))
        .collect()
}

/// Queries for the streams in `queries` not in `known` (now added), each from the query's own
/// start (`--since`), chunked as FilterLogEvents wants.
fn catch_up(
    queries: &[(usize, FilterQuery)],
    known: &mut std::collections::HashSet<(usize, String)>,
) -> Vec<(usize, FilterQuery)> {
    let mut out = Vec::new();
    for (g, q) in queries {
        let Some(streams) = &q.streams else { continue };
        let new: Vec<String> = streams
            .iter()
            .filter(|s| known.insert((*g, (*s).clone())))
            .cloned()
            .collect();
        for chunk in new.chunks(MAX_STREAM_NAMES) {
            let mut c = q.clone();
            c.streams = Some(chunk.to_vec());
            out.push((*g, c));
        }
    }
    out
}

/// What identifies an event: CloudWatch's id, or its content when an endpoint gives none.
fn event_key(e: &Event) -> String {
    if e.id.is_empty() {
        format!("{}\u{0}{}\u{0}{}", e.stream, e.timestamp, e.message)
    } else {
        e.id.clone()
    }
}

/// Formats events onto stdout.
struct Printer {
    out: std::io::BufWriter<std::io::Stdout>,
    format: TailFormat,
    color: bool,
}

const PALETTE: [&str; 6] = ["32", "33", "34", "35", "36", "31"];

impl Printer {
    fn new(format: TailFormat, color: bool) -> Self {
        Printer {
            out: std::io::BufWriter::with_capacity(64 * 1024, std::io::stdout()),
            format,
            color,
        }
    }

    fn print(&mut self, group: &str, e: &Event) -> std::io::Result<()> {
        let line = render(self.format, self.color, group, e);
        self.out.write_all(line.as_bytes())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.out.flush()
    }

    fn flush_quietly(&mut self) {
        let _ = self.out.flush();
    }
}

/// One event as a line (with its `\n`).
pub(crate) fn render(format: TailFormat, color: bool, group: &str, e: &Event) -> String {
    let msg = e.message.strip_suffix('\n').unwrap_or(&e.message);
    let paint = |code: &str, s: &str| {
        if color {
            format!("\x1b[{code}m{s}\x1b[0m")
        } else {
            s.to_string()
        }
    };
    let stream_color =
        PALETTE[(crate::util::fnv1a(e.stream.as_bytes()) % PALETTE.len() as u64) as usize];
    match format {
        TailFormat::Short => {
            let t = format_rfc3339_ms(e.timestamp);
            let hms = t.get(11..23).unwrap_or(&t);
            format!(
                "{} {} {msg}\n",
                paint("2", hms),
                paint(stream_color, &e.stream)
            )
        }
        TailFormat::Detailed => format!(
            "{} {} {} {msg}\n",
            paint("2", &format_rfc3339_ms(e.timestamp)),
            group,
            paint(stream_color, &e.stream)
        ),
        TailFormat::Json => {
            let v = serde_json::json!({
                "group": group,
                "stream": e.stream,
                "timestamp": e.timestamp,
                "time": format_rfc3339_ms(e.timestamp),
                "message": e.message,
                "eventId": e.id,
                "ingestionTime": e.ingestion_time,
            });
            format!("{v}\n")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(msg: &str) -> Event {
        Event {
            stream: "web/1".into(),
            timestamp: 1_763_892_000_123,
            ingestion_time: 1_763_892_000_200,
            id: "42".into(),
            message: msg.into(),
        }
    }

    #[test]
    fn formats() {
        assert_eq!(
            render(TailFormat::Detailed, false, "/g", &ev("hello\n")),
            "2025-11-23T10:00:00.123Z /g web/1 hello\n"
        );
        assert_eq!(
            render(TailFormat::Short, false, "/g", &ev("hello")),
            "10:00:00.123 web/1 hello\n"
        );
        let j: serde_json::Value =
            serde_json::from_str(&render(TailFormat::Json, false, "/g", &ev("a\"b\n"))).unwrap();
        assert_eq!(j["message"], "a\"b\n");
        assert_eq!(j["group"], "/g");
        assert_eq!(j["timestamp"], 1_763_892_000_123i64);
        assert_eq!(j["eventId"], "42");
    }

    #[test]
    fn colour_only_when_asked() {
        let plain = render(TailFormat::Short, false, "/g", &ev("x"));
        let coloured = render(TailFormat::Short, true, "/g", &ev("x"));
        assert!(!plain.contains('\x1b'));
        assert!(coloured.contains("\x1b[2m10:00:00.123\x1b[0m"));
    }
}
