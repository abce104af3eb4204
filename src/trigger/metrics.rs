//! What `on-upload --metrics-addr` shows (served by [`crate::util::metrics_http`]):
//! - `dockwatch_on_upload_tasks_running` — tasks running now;
//! - `dockwatch_on_upload_tasks_total{outcome}` — ended tasks: `succeeded`, `failed`,
//!   `acknowledged` (deleted or replaced before it ran);
//! - `dockwatch_on_upload_retries_total` — attempts after an object's first;
//! - `dockwatch_on_upload_dead_lettered_total` — messages left to the dead-letter policy;
//! - `dockwatch_on_upload_skipped_duplicates_total` — copies of objects already processed;
//! - `dockwatch_on_upload_queue_wait_seconds_sum` / `_count` — from a message's sending to
//!   its task's start.
//!
//! `/healthz` answers 200 while ReceiveMessage succeeds, 503 when it has not for three
//! long-poll waits plus a minute.

use std::fmt::Write as _;
use std::sync::{Arc, Mutex};

use crate::util::metrics_http::Exposition;

/// The counters; updated by the tasks and the receive loop.
#[derive(Debug, Default)]
pub(crate) struct Metrics {
    pub(crate) running: u64,
    pub(crate) succeeded: u64,
    pub(crate) failed: u64,
    pub(crate) acknowledged: u64,
    pub(crate) retries: u64,
    pub(crate) dead_lettered: u64,
    pub(crate) skipped_duplicates: u64,
    pub(crate) queue_wait_ms_sum: u64,
    pub(crate) queue_wait_count: u64,
    /// Epoch ms of the last successful ReceiveMessage.
    pub(crate) last_receive_ms: i64,
    /// The long-poll wait, for `/healthz`.
    pub(crate) wait_ms: i64,
}

pub(crate) type Shared = Arc<Mutex<Metrics>>;

impl Exposition for Metrics {
    fn render(&self) -> String {
        let mut s = String::new();
        let mut one = |name: &str, kind: &str, help: &str, v: String| {
            let _ = writeln!(s, "# HELP dockwatch_on_upload_{name} {help}");
            let _ = writeln!(s, "# TYPE dockwatch_on_upload_{name} {kind}");
            let _ = writeln!(s, "dockwatch_on_upload_{name} {v}");
        };
        one(
            "tasks_running",
            "gauge",
            "Tasks running now.",
            self.running.to_string(),
        );
        one(
            "retries_total",
            "counter",
            "Attempts after an object's first.",
            self.retries.to_string(),
        );
        one(
            "dead_lettered_total",
            "counter",
            "Messages left to the queue's dead-letter policy.",
            self.dead_lettered.to_string(),
        );
        one(
            "skipped_duplicates_total",
            "counter",
            "Copies of objects already processed.",
            self.skipped_duplicates.to_string(),
        );
        one(
            "queue_wait_seconds_sum",
            "counter",
            "Seconds from a message's sending to its task's start, summed.",
            format!("{:.3}", self.queue_wait_ms_sum as f64 / 1000.0),
        );
        one(
            "queue_wait_seconds_count",
            "counter",
            "Tasks started (the count of queue_wait_seconds_sum).",
            self.queue_wait_count.to_string(),
        );
        let _ = writeln!(
            s,
            "# HELP dockwatch_on_upload_tasks_total Ended tasks by outcome."
        );
        let _ = writeln!(s, "# TYPE dockwatch_on_upload_tasks_total counter");
        for (o, n) in [
            ("succeeded", self.succeeded),
            ("failed", self.failed),
            ("acknowledged", self.acknowledged),
        ] {
            let _ = writeln!(s, "dockwatch_on_upload_tasks_total{{outcome=\"{o}\"}} {n}");
        }
        s
    }

    fn health(&self, now_ms: i64) -> Result<(), &'static str> {
        if self.last_receive_ms > 0 && now_ms - self.last_receive_ms <= 3 * self.wait_ms + 60_000 {
            Ok(())
        } else {
            Err("no successful ReceiveMessage recently")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_and_tells_health() {
        let m = Metrics {
            running: 2,
            succeeded: 5,
            queue_wait_ms_sum: 1500,
            queue_wait_count: 3,
            last_receive_ms: 1_000,
            wait_ms: 20_000,
            ..Default::default()
        };
        let t = m.render();
        assert!(t.contains("dockwatch_on_upload_tasks_running 2\n"), "{t}");
        assert!(t.contains("dockwatch_on_upload_tasks_total{outcome=\"succeeded\"} 5\n"));
        assert!(t.contains("dockwatch_on_upload_queue_wait_seconds_sum 1.500\n"));
        assert!(m.health(2_000).is_ok());
        assert!(m.health(1_000 + 121_000).is_err());
        assert!(Metrics::default().health(1).is_err());
    }
}
