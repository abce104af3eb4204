//! What `dockwatch ship` shows of itself: Prometheus `/metrics` and `/healthz` on
//! `--metrics-addr`, and a status file (`STATE/status.json`, replaced every few seconds)
//! that `ship --status` prints, running or not.
//!
//! Metrics (labels `container` (12 characters), `name`, `group`, `stream` where per container):
//! - `dockwatch_ship_containers_followed` — containers being shipped now;
//! - `dockwatch_ship_events_total` — events delivered per container (live);
//! - `dockwatch_ship_bytes_total`, `dockwatch_ship_retries_total`,
//!   `dockwatch_ship_throttled_total` — per container, added when a follow of it ends (its
//!   exit, a stop);
//! - `dockwatch_ship_last_event_timestamp_seconds` — newest delivered event's timestamp;
//! - `dockwatch_ship_lag_seconds` — now minus that, for containers followed now: the delivery
//!   lag of a container that writes steadily (it grows for a quiet one too);
//! - `dockwatch_ship_rotation_gaps_total`, `dockwatch_ship_rotation_lost_files_total` — per
//!   container, gaps found in its log files (output rotated away before anything read it:
//!   while `ship` was stopped, or more files behind than it holds) and whole files among them;
//!   `dockwatch_ship_rotation_lost_after_timestamp_seconds` and `…_before_timestamp_seconds`:
//!   the latest gap's range (the last event delivered before it, the first read after it);
//! - `dockwatch_ship_removed_undrained_total` — containers removed before their log was read
//!   to the end (what they wrote after the last line read is gone with the engine's log);
//! - `dockwatch_ship_failures_total` — follows that failed and were tried again;
//! - `dockwatch_ship_engine_up` — 1 while the engine's event stream is connected;
//! - `dockwatch_ship_max_requests` — the PutLogEvents budget all containers share.
//!
//! `/healthz` answers 503 while the engine has been unreachable for over a minute.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::util::metrics_http::{Exposition, escape};
use crate::util::time::{format_rfc3339_ms, now_ms};

/// The status file's name in the state directory.
pub(crate) const STATUS_FILE: &str = "status.json";
/// The lock file that says a daemon holds the state directory.
pub(crate) const LOCK_FILE: &str = ".lock";

/// One container as shown.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub(crate) struct Shown {
    pub(crate) name: String,
    pub(crate) group: String,
    pub(crate) stream: String,
    /// following, drained, stopped, failed, skipped (a removed container is dropped).
    pub(crate) state: String,
    /// Delivered by follows that ended.
    pub(crate) events_before: u64,
    /// Delivered by the follow going on.
    pub(crate) events_now: u64,
    pub(crate) bytes: u64,
    pub(crate) retries: u64,
    pub(crate) throttled: u64,
    /// Newest delivered event's timestamp (ms), 0: none.
    pub(crate) last_ms: i64,
    /// How it is read: files, logs endpoint (why), skipped (why).
    #[serde(default)]
    pub(crate) read: String,
    /// Gaps found in its log: output rotated away before it was read.
    #[serde(default)]
    pub(crate) lost_gaps: u64,
    /// Whole rotated files among them.
    #[serde(default)]
    pub(crate) lost_files: u64,
    /// The latest gap: after the delivered event at this time (ms, 0: unknown)...
    #[serde(default)]
    pub(crate) lost_after_ms: i64,
    /// ...and before the first one read after it.
    #[serde(default)]
    pub(crate) lost_before_ms: i64,
}

impl Shown {
    pub(crate) fn events(&self) -> u64 {
        self.events_before + self.events_now
    }
}

/// Everything shown; the daemon keeps it behind a mutex.
#[derive(Debug, Default, Serialize, Deserialize)]
pub(crate) struct Status {
    pub(crate) pid: u32,
    pub(crate) host: String,
    pub(crate) started_ms: i64,
    pub(crate) saved_ms: i64,
    pub(crate) engine_up: bool,
    /// Since when the engine has been unreachable (ms), 0: it is not.
    pub(crate) engine_down_since_ms: i64,
    pub(crate) max_requests: usize,
    /// How the host's containers are read (said at start).
    #[serde(default)]
    pub(crate) read_note: String,
    pub(crate) removed_undrained: u64,
    pub(crate) failures: u64,
    /// By full container id.
    pub(crate) containers: BTreeMap<String, Shown>,
}

impl Status {
    pub(crate) fn followed(&self) -> usize {
        self.containers
            .values()
            .filter(|c| c.state == "following")
            .count()
    }

    /// Replaces the status file (atomically).
    pub(crate) fn save(&mut self, dir: &Path) -> std::io::Result<()> {
        self.saved_ms = now_ms();
        let bytes = serde_json::to_vec_pretty(self).map_err(std::io::Error::other)?;
        crate::util::durable::replace(&dir.join(STATUS_FILE), &bytes)
    }
}

/// A per-container metric's value at a time (ms); none: not shown.
type Value = fn(&Shown, i64) -> Option<f64>;

impl Exposition for Status {
    fn render(&self) -> String {
        let mut s = String::new();
        let now = now_ms();
        let _ = writeln!(s, "# TYPE dockwatch_ship_containers_followed gauge");
        let _ = writeln!(s, "dockwatch_ship_containers_followed {}", self.followed());
        let _ = writeln!(s, "# TYPE dockwatch_ship_engine_up gauge");
        let _ = writeln!(s, "dockwatch_ship_engine_up {}", u8::from(self.engine_up));
        let _ = writeln!(s, "# TYPE dockwatch_ship_max_requests gauge");
        let _ = writeln!(s, "dockwatch_ship_max_requests {}", self.max_requests);
        let _ = writeln!(s, "# TYPE dockwatch_ship_removed_undrained_total counter");
        let _ = writeln!(
            s,
            "dockwatch_ship_removed_undrained_total {}",
            self.removed_undrained
        );
        let _ = writeln!(s, "# TYPE dockwatch_ship_failures_total counter");
        let _ = writeln!(s, "dockwatch_ship_failures_total {}", self.failures);
        let per: [(&str, &str, Value); 10] = [
            ("events_total", "counter", |c, _| Some(c.events() as f64)),
            ("bytes_total", "counter", |c, _| Some(c.bytes as f64)),
            ("retries_total", "counter", |c, _| Some(c.retries as f64)),
            ("throttled_total", "counter", |c, _| {
                Some(c.throttled as f64)
            }),
            ("last_event_timestamp_seconds", "gauge", |c, _| {
                (c.last_ms > 0).then(|| c.last_ms as f64 / 1000.0)
            }),
            ("lag_seconds", "gauge", |c, now| {
                (c.state == "following" && c.last_ms > 0)
                    .then(|| (now - c.last_ms).max(0) as f64 / 1000.0)
            }),
            ("rotation_gaps_total", "counter", |c, _| {
                Some(c.lost_gaps as f64)
            }),
            ("rotation_lost_files_total", "counter", |c, _| {
                Some(c.lost_files as f64)
            }),
            ("rotation_lost_after_timestamp_seconds", "gauge", |c, _| {
                (c.lost_gaps > 0 && c.lost_after_ms > 0).then(|| c.lost_after_ms as f64 / 1000.0)
            }),
            ("rotation_lost_before_timestamp_seconds", "gauge", |c, _| {
                (c.lost_gaps > 0 && c.lost_before_ms > 0).then(|| c.lost_before_ms as f64 / 1000.0)
            }),
        ];
        for (name, kind, value) in per {
            let _ = writeln!(s, "# TYPE dockwatch_ship_{name} {kind}");
            for (id, c) in &self.containers {
                if let Some(v) = value(c, now) {
                    let _ = writeln!(
                        s,
                        "dockwatch_ship_{name}{{container=\"{}\",name=\"{}\",group=\"{}\",stream=\"{}\"}} {v}",
                        crate::docker::short_id(id),
                        escape(&c.name),
                        escape(&c.group),
                        escape(&c.stream)
                    );
                }
            }
        }
        s
    }

    fn health(&self, now_ms: i64) -> Result<(), &'static str> {
        if self.engine_down_since_ms > 0 && now_ms - self.engine_down_since_ms > 60_000 {
            return Err("the Docker engine has been unreachable for over a minute");
        }
        Ok(())
    }
}

/// `ship --status`: the status file, and whether a daemon holds the directory.
pub(crate) fn print(dir: &Path) -> std::io::Result<()> {
    let path = dir.join(STATUS_FILE);
    let text = match std::fs::read(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            crate::out!("no ship status in {} yet", dir.display());
            return Ok(());
        }
        Err(e) => return Err(e),
    };
    let st: Status = serde_json::from_slice(&text).map_err(std::io::Error::other)?;
    let running = crate::util::lock::DirLock::is_held(dir, LOCK_FILE);
    crate::out!(
        "daemon: {} (pid {}) on {}; status saved {} ({:.0} s ago); {} of {} container(s) followed; engine {}",
        if running { "running" } else { "not running" },
        st.pid,
        st.host,
        format_rfc3339_ms(st.saved_ms),
        (now_ms() - st.saved_ms).max(0) as f64 / 1000.0,
        st.followed(),
        st.containers.len(),
        if st.engine_up {
            "connected"
        } else {
            "unreachable"
        }
    );
    if !st.read_note.is_empty() {
        crate::out!("{}", st.read_note);
    }
    let rows: Vec<[String; 9]> = st
        .containers
        .iter()
        .map(|(id, c)| {
            [
                crate::docker::short_id(id).to_string(),
                c.name.clone(),
                c.state.clone(),
                c.group.clone(),
                c.stream.clone(),
                c.events().to_string(),
                if c.last_ms > 0 {
                    format_rfc3339_ms(c.last_ms)
                } else {
                    "-".into()
                },
                if c.read.is_empty() {
                    "-".into()
                } else {
                    c.read.clone()
                },
                lost(c),
            ]
        })
        .collect();
    let head = [
        "CONTAINER",
        "NAME",
        "STATE",
        "GROUP",
        "STREAM",
        "EVENTS",
        "LAST EVENT",
        "READ",
        "LOST TO ROTATION",
    ];
    for line in crate::util::table(head, &rows) {
        crate::out!("{line}");
    }
    Ok(())
}

/// A container's gaps as `--status` shows them: none, or how many and the latest's range.
fn lost(c: &Shown) -> String {
    if c.lost_gaps == 0 {
        return "-".into();
    }
    let at = |ms: i64| {
        if ms > 0 {
            format_rfc3339_ms(ms)
        } else {
            "?".into()
        }
    };
    format!(
        "{} gap(s), latest {} .. {}",
        c.lost_gaps,
        at(c.lost_after_ms),
        at(c.lost_before_ms)
    )
}
