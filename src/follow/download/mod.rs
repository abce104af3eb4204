//! `dockwatch download`: a daemon that keeps one local file per CloudWatch log stream up to
//! date, and resumes exactly where it stopped.
//!
//! Each round: look for groups and streams when the discovery interval has passed
//! (DescribeLogGroups by prefix, DescribeLogStreams), then read every followed stream forward
//! with GetLogEvents from its saved token, append the page to the stream's file, `fsync`, and
//! save the position ([`state`] holds the design: invariants and recovery). Then the late-event
//! checks that are due run for every stream ([`checks`], design in [`ledger`]), under the one
//! request limit all streams share. Between rounds it sleeps the poll interval.
//!
//! Failures are never fatal except the local disk's: throttling and network failures are
//! retried with backoff (and counted in the metrics); a deleted stream is marked `gone` and
//! its file kept; a stream that appears again is appended to from its head. SIGINT/SIGTERM end
//! the daemon with every file and the state on disk (exit 0); SIGHUP reloads the
//! configuration (the output directory, AWS settings and metrics address need a restart).

mod checks;
pub(crate) mod config;
pub(crate) mod files;
pub(crate) mod ledger;
pub(crate) mod metrics;
pub(crate) mod state;

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use tokio_util::sync::CancellationToken;

use self::config::DownloadConfig;
use self::metrics::{Metrics, StreamMetrics};
use self::state::{DirLock, State, StreamState};
use super::FollowError;
use super::source::{Patience, RateLimit, Reader};
use crate::aws::logs;
use crate::aws::retry::{Action, Failure, classify};
use crate::cli::DownloadArgs;
use crate::shutdown::Shutdown;
use crate::util::time::{format_rfc3339_ms, now_ms};

/// At most this many pages of one stream per round, so one busy stream does not starve the
/// others.
const MAX_PAGES_PER_ROUND: usize = 50;

type Key = (String, String);

/// Runs `dockwatch download` (or `--status`); returns the exit code.
///
/// Long on purpose: the daemon's one loop (a round, a wait, SIGHUP, a stop) and its set-up and
/// last save around it, which share the state lock and the metrics server's handle.
pub async fn download(args: DownloadArgs, mut shutdown: Shutdown) -> Result<i32, FollowError> {
    if args.status {
        return status(&args);
    }
    let cfg = DownloadConfig::load(&args)?;
    let (_lock, state) = open_output(&cfg.output_dir)?;
    let sdk = tokio::select! {
        r = logs::build(&cfg.aws) => r?,
        _ = shutdown.changed() => return Ok(0),
    };
    let reader = Reader::new(
        sdk,
        Patience::Forever,
        RateLimit::per_second(cfg.max_requests_per_second),
    );
    let metrics: metrics::Shared = Arc::new(Mutex::new(Metrics {
        poll_interval_ms: cfg.poll_interval.as_millis() as i64,
        requests: Some(reader.requests()),
        max_requests_per_second: cfg.max_requests_per_second,
        ..Default::default()
    }));
    let stop_metrics = CancellationToken::new();
    if let Some(addr) = cfg.metrics_addr {
        metrics::serve(addr, metrics.clone(), stop_metrics.clone())
            .await
            .map_err(|source| FollowError::Io {
                what: "cannot listen for metrics on",
                path: addr.to_string().into(),
                source,
            })?;
        log(&format!("metrics on http://{addr}/metrics"));
    }
    let mut hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).map_err(
        |source| FollowError::Io {
            what: "cannot listen for",
            path: "SIGHUP".into(),
            source,
        },
    )?;
    log(&format!(
        "downloading groups starting with {} into {} (poll every {:?})",
        cfg.group_prefixes
            .iter()
            .map(|p| format!("'{p}'"))
            .collect::<Vec<_>>()
            .join(", "),
        cfg.output_dir.display(),
        cfg.poll_interval
    ));
    let mut d = Daemon {
        cfg,
        reader,
        state,
        active: BTreeSet::new(),
        newest: HashMap::new(),
        last_discovery: None,
        metrics,
        soft_errors: 0,
        caught_up: Default::default(),
    };
    // Fail fast, before running for good, when AWS refuses us outright. A stop meanwhile
    // (discovery retries for ever while AWS throttles or cannot be reached) ends it at once.
    let first = tokio::select! {
        r = d.discover() => Some(r),
        _ = shutdown.changed() => None,
    };
    let Some(first) = first else {
        stop_metrics.cancel();
        d.state.save()?;
        log("stopped before the first round; state saved");
        return Ok(0);
    };
    if let Err(e) = first {
        if matches!(e, FollowError::Aws(_)) {
            stop_metrics.cancel();
            return Err(e);
        }
        log(&format!("{e:#}; trying again"));
    }

    let rounds = d.rounds(&args, &mut shutdown, &mut hup).await;
    stop_metrics.cancel();
    d.state.save()?;
    let stop_code = rounds?;
    log(&format!(
        "stopped: {} stream(s), state saved in {}",
        d.state.streams.len(),
        d.cfg.output_dir.join(state::STATE_FILE).display()
    ));
    Ok(stop_code)
}

/// The output directory, created when missing and locked for this process, and the state
/// saved in it (recovered from a crash first: what recovery did is logged).
fn open_output(dir: &std::path::Path) -> Result<(crate::util::lock::DirLock, State), FollowError> {
    std::fs::create_dir_all(dir).map_err(|source| FollowError::Io {
        what: "cannot create the output directory",
        path: dir.to_path_buf(),
        source,
    })?;
    let lock = DirLock::acquire(dir)?;
    let mut state = State::load(dir)?;
    for note in state.recover()? {
        log(&note);
    }
    state.save()?;
    Ok((lock, state))
}

impl Daemon {
    /// Rounds, each followed by the poll interval, until a stop (exit code 0) or a round's
    /// error; SIGHUP reloads the configuration, between rounds or during one.
    async fn rounds(
        &mut self,
        args: &DownloadArgs,
        shutdown: &mut Shutdown,
        hup: &mut tokio::signal::unix::Signal,
    ) -> Result<i32, FollowError> {
        enum Wake {
            Done(Result<(), FollowError>),
            Stop,
            Reload,
        }
        loop {
            if shutdown.is_requested() {
                return Ok(0);
            }
            let w = tokio::select! {
                r = self.round() => Wake::Done(r),
                _ = shutdown.changed() => Wake::Stop,
                _ = hup.recv() => Wake::Reload,
            };
            match w {
                Wake::Done(Err(e)) => return Err(e),
                Wake::Stop => return Ok(0),
                Wake::Reload => {
                    self.reload(args);
                    continue;
                }
                Wake::Done(Ok(())) => {}
            }
            let w = tokio::select! {
                _ = tokio::time::sleep(self.cfg.poll_interval) => Wake::Done(Ok(())),
                _ = shutdown.changed() => Wake::Stop,
                _ = hup.recv() => Wake::Reload,
            };
            match w {
                Wake::Stop => return Ok(0),
                Wake::Reload => self.reload(args),
                Wake::Done(_) => {}
            }
        }
    }
}

/// The daemon's log line, on stderr (systemd's journal adds the time).
fn log(msg: &str) {
    crate::say!("dockwatch download: {msg}");
}

struct Daemon {
    /// Settings in force (replaced on SIGHUP).
    cfg: DownloadConfig,
    /// CloudWatch, with patience forever.
    reader: Reader,
    /// Positions, saved after every page written.
    state: State,
    /// Streams followed now.
    active: BTreeSet<Key>,
    /// Newest event timestamp CloudWatch reported per stream (for the lag metric).
    newest: HashMap<Key, i64>,
    /// When groups and streams were last looked for.
    last_discovery: Option<Instant>,
    /// What `/metrics` shows.
    metrics: metrics::Shared,
    /// Failed calls that were not retried inside the reader.
    soft_errors: u64,
    /// Streams whose last forward read reached the end: every time before now has been
    /// passed (the checks may look up to now, not only up to the newest event written).
    caught_up: std::collections::HashSet<Key>,
}

impl Daemon {
    /// One poll round: discovery when due, then every followed stream.
    async fn round(&mut self) -> Result<(), FollowError> {
        let mut ok = true;
        let due = self
            .last_discovery
            .is_none_or(|t| t.elapsed() >= self.cfg.discovery_interval);
        if due && let Err(e) = self.discover().await {
            ok = false;
            self.soft_errors += 1;
            log(&format!("{e:#}"));
        }
        // New events first, for every stream; then the late-event checks, which may take
        // a while under the request limit.
        let keys: Vec<Key> = self.active.iter().cloned().collect();
        for key in &keys {
            let r = self.poll_stream(key).await;
            ok &= self.soft(key, r)?;
        }
        self.count_round(ok);
        for key in &keys {
            let r = self.check_stream(key).await;
            self.soft(key, r)?;
        }
        Ok(())
    }

    /// A stream's failure: the local disk's ends the daemon, others are logged and counted.
    fn soft(&mut self, key: &Key, r: Result<(), FollowError>) -> Result<bool, FollowError> {
        match r {
            Ok(()) => Ok(true),
            Err(e @ (FollowError::Io { .. } | FollowError::BadState { .. })) => Err(e),
            Err(e) => {
                self.soft_errors += 1;
                log(&format!("{}/{}: {e:#}", key.0, key.1));
                Ok(false)
            }
        }
    }

    fn count_round(&self, ok: bool) {
        let mut m = self.metrics.lock().expect("metrics lock");
        m.polls += 1;
        m.errors = self.reader.retries() + self.soft_errors;
        if ok {
            m.last_success_ms = now_ms();
        }
    }

    /// Finds the groups and streams the configuration selects; starts and stops following.
    async fn discover(&mut self) -> Result<(), FollowError> {
        let mut found: BTreeSet<Key> = BTreeSet::new();
        let mut groups: BTreeSet<String> = BTreeSet::new();
        for p in &self.cfg.group_prefixes {
            let gs = self
                .reader
                .groups_with_prefix(p)
                .await
                .map_err(|f| FollowError::call("list log groups", f))?;
            groups.extend(gs);
        }
        for g in &groups {
            let Some(streams) = self
                .reader
                .streams(g, None)
                .await
                .map_err(|f| FollowError::call(format!("list the streams of '{g}'"), f))?
            else {
                continue; // deleted meanwhile
            };
            for s in streams {
                if self.cfg.streams.matches(&s.name) {
                    let key = (g.clone(), s.name.clone());
                    if let Some(t) = s.last_event {
                        self.newest.insert(key.clone(), t);
                    }
                    found.insert(key);
                }
            }
        }
        self.last_discovery = Some(Instant::now());
        for key in found.difference(&self.active) {
            let st = self
                .state
                .streams
                .entry(key.clone())
                .or_insert_with(|| StreamState {
                    group: key.0.clone(),
                    stream: key.1.clone(),
                    file: files::relative_path(&key.0, &key.1),
                    format: Some(self.cfg.line_format),
                    ledger: Some(ledger::Ledger::new()),
                    ..Default::default()
                });
            if st.gone {
                st.gone = false;
                st.token = None;
                log(&format!(
                    "{}/{} exists again: appending it from its start to {}",
                    key.0,
                    key.1,
                    st.file.display()
                ));
            } else {
                log(&format!(
                    "following {}/{} -> {}",
                    key.0,
                    key.1,
                    self.cfg.output_dir.join(&st.file).display()
                ));
            }
        }
        for key in self.active.difference(&found) {
            log(&format!("no longer following {}/{}", key.0, key.1));
        }
        // A new stream's entry is saved before its file's first byte (a file of it that
        // exists already was not written under this state: cut back to nothing).
        for key in found.difference(&self.active) {
            if let Some(note) = self.state.check(key)? {
                log(&note);
            }
        }
        self.state.save()?;
        self.active = found;
        self.publish();
        Ok(())
    }

    /// Reads one stream forward and appends what is new to its file.
    ///
    /// Long on purpose: the page loop writes the file and then the state in the order the
    /// state module's invariants need; keeping it in one function keeps that order visible.
    async fn poll_stream(&mut self, key: &Key) -> Result<(), FollowError> {
        self.caught_up.remove(key);
        for _ in 0..MAX_PAGES_PER_ROUND {
            let Some(st) = self.state.streams.get(key).cloned() else {
                return Ok(());
            };
            let start = if st.token.is_none() {
                st.last_timestamp
            } else {
                None
            };
            let page = match self
                .reader
                .stream_page(&key.0, &key.1, st.token.as_deref(), start)
                .await
            {
                Ok(p) => p,
                Err(f) if classify(&f) == Action::Recreate => {
                    log(&format!(
                        "{}/{} was deleted in CloudWatch; its file is kept",
                        key.0, key.1
                    ));
                    if let Some(s) = self.state.streams.get_mut(key) {
                        s.gone = true;
                        s.token = None;
                    }
                    self.active.remove(key);
                    self.state.save()?;
                    self.publish();
                    return Ok(());
                }
                Err(f) if st.token.is_some() && is_bad_token(&f) => {
                    log(&format!(
                        "{}/{}: CloudWatch no longer accepts the saved position ({f}); resuming from the last event's time",
                        key.0, key.1
                    ));
                    if let Some(s) = self.state.streams.get_mut(key) {
                        s.token = None;
                    }
                    continue;
                }
                Err(f) => return Err(FollowError::call("read log events", f)),
            };
            let mut events = page.events;
            if st.token.is_none()
                && let Some(lt) = st.last_timestamp
            {
                // Token-less resumption: drop what the file already has.
                let mut skip = st.at_last_timestamp;
                events.retain(|e| {
                    if e.timestamp < lt {
                        return false;
                    }
                    if e.timestamp == lt && skip > 0 {
                        skip -= 1;
                        return false;
                    }
                    true
                });
            }
            // An event in time a check has already read may be in the file already (the
            // check found it first): it is written only if the file does not hold it.
            let events = self.not_yet_written(key, events)?;
            let same_token = page.next_forward_token == st.token;
            if events.is_empty() {
                if !same_token
                    && page.next_forward_token.is_some()
                    && let Some(s) = self.state.streams.get_mut(key)
                {
                    s.token = page.next_forward_token.clone();
                    self.state.save()?;
                }
                if same_token || page.next_forward_token.is_none() {
                    self.caught_up.insert(key.clone());
                    break;
                }
                continue;
            }
            // The file must be what the entry says before anything is appended.
            if let Some(note) = self.state.check(key)? {
                log(&note);
                self.state.save()?;
                continue;
            }
            // From here to the save: no await (state invariant 2).
            let format = st.format.unwrap_or(self.cfg.line_format);
            let (buf, lines) = files::render_lines(format, &events);
            let len = self.append(key, &buf)?;
            let now = now_ms();
            let s = self.state.streams.get_mut(key).expect("present");
            let base = s.offset;
            let ledger = s.ledger.get_or_insert_with(ledger::Ledger::new);
            for (e, (start, end, fp)) in events.iter().zip(lines) {
                ledger.record(e.timestamp, fp, (base + start, base + end), Some(now));
            }
            s.offset = len;
            s.events += events.len() as u64;
            for e in &events {
                s.bytes += e.message.len() as u64;
                if s.last_timestamp == Some(e.timestamp) {
                    s.at_last_timestamp += 1;
                } else {
                    s.last_timestamp = Some(e.timestamp);
                    s.at_last_timestamp = 1;
                }
            }
            s.token = page.next_forward_token;
            self.state.save()?;
            self.publish_one(key);
            if same_token {
                self.caught_up.insert(key.clone());
                break;
            }
        }
        Ok(())
    }

    /// Re-reads the configuration (SIGHUP).
    fn reload(&mut self, args: &DownloadArgs) {
        match DownloadConfig::load(args) {
            Err(e) => log(&format!(
                "reload failed, keeping the previous configuration: {e:#}"
            )),
            Ok(mut new) => {
                if new.output_dir != self.cfg.output_dir {
                    log("output_dir cannot change while running: restart to use the new one");
                    new.output_dir = self.cfg.output_dir.clone();
                }
                if new.metrics_addr != self.cfg.metrics_addr {
                    log("metrics_addr cannot change while running: restart to use the new one");
                    new.metrics_addr = self.cfg.metrics_addr;
                }
                if format!("{:?}", new.aws) != format!("{:?}", self.cfg.aws) {
                    log("AWS settings cannot change while running: restart to use the new ones");
                    new.aws = self.cfg.aws.clone();
                }
                self.metrics.lock().expect("metrics lock").poll_interval_ms =
                    new.poll_interval.as_millis() as i64;
                self.cfg = new;
                self.last_discovery = None;
                log("configuration reloaded");
            }
        }
    }

    /// Replaces the per-stream metrics with the followed streams.
    fn publish(&self) {
        let mut m = self.metrics.lock().expect("metrics lock");
        m.streams.clear();
        drop(m);
        for key in &self.active {
            self.publish_one(key);
        }
    }

    fn publish_one(&self, key: &Key) {
        let Some(s) = self.state.streams.get(key) else {
            return;
        };
        let newest = self.newest.get(key).copied().unwrap_or(i64::MIN);
        let written = s.last_timestamp.unwrap_or(i64::MIN);
        let lag_ms = if newest == i64::MIN || written >= newest {
            0
        } else if written == i64::MIN {
            now_ms().saturating_sub(newest).max(0)
        } else {
            newest - written
        };
        let mut m = self.metrics.lock().expect("metrics lock");
        if self.active.contains(key) {
            m.streams.insert(
                key.clone(),
                StreamMetrics {
                    events: s.events,
                    bytes: s.bytes,
                    lag_ms,
                    late_events: s.late_events,
                },
            );
        }
    }
}

/// CloudWatch refuses a token it no longer knows with InvalidParameterException.
fn is_bad_token(f: &Failure) -> bool {
    matches!(f, Failure::Service { code: Some(c), message, .. }
        if c == "InvalidParameterException" && message.to_ascii_lowercase().contains("token"))
}

/// `download --status`: what the state file says, and whether a daemon holds the directory.
fn status(args: &DownloadArgs) -> Result<i32, FollowError> {
    let dir = DownloadConfig::output_dir_only(args)?;
    if !dir.join(state::STATE_FILE).exists() {
        crate::out!("no download state in {} yet", dir.display());
        return Ok(0);
    }
    let st = State::load(&dir)?;
    let running = DirLock::is_held(&dir);
    let age = (now_ms() - st.saved_at).max(0) as f64 / 1000.0;
    crate::out!(
        "daemon: {}; state saved {} ({age:.0} s ago); {} stream(s) in {}",
        if running { "running" } else { "not running" },
        format_rfc3339_ms(st.saved_at),
        st.streams.len(),
        dir.display()
    );
    let rows: Vec<[String; 6]> = st
        .streams
        .values()
        .map(|s| {
            [
                s.group.clone(),
                format!("{}{}", s.stream, if s.gone { " (deleted)" } else { "" }),
                s.events.to_string(),
                s.bytes.to_string(),
                s.last_timestamp.map_or("-".into(), format_rfc3339_ms),
                s.file.display().to_string(),
            ]
        })
        .collect();
    let head = ["GROUP", "STREAM", "EVENTS", "BYTES", "LAST EVENT", "FILE"];
    for line in crate::util::table(head, &rows) {
        crate::out!("{line}");
    }
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recognises_a_refused_token() {
        let f = |code: &str, msg: &str| Failure::Service {
            code: Some(code.into()),
            status: 400,
            message: msg.into(),
        };
        assert!(is_bad_token(&f(
            "InvalidParameterException",
            "The specified nextToken is invalid."
        )));
        assert!(!is_bad_token(&f(
            "InvalidParameterException",
            "limit too big"
        )));
        assert!(!is_bad_token(&f("ThrottlingException", "token bucket")));
    }
}
