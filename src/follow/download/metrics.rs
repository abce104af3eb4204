//! The daemon's monitoring endpoint: `GET /healthz` and Prometheus text at `GET /metrics`.
//!
//! Metrics (labels `group`, `stream` where per stream):
//! - `dockwatch_download_streams` — streams followed now;
//! - `dockwatch_download_events_total`, `dockwatch_download_bytes_total` — written per stream;
//! - `dockwatch_download_lag_seconds` — newest event CloudWatch reports for the stream minus
//!   the newest one written (0 when caught up);
//! - `dockwatch_download_last_success_timestamp_seconds` — end of the last poll round that
//!   had no error;
//! - `dockwatch_download_late_events_total` — per stream, events CloudWatch accepted after
//!   newer ones had been written, found by the late-window checks or reconciliation and
//!   appended;
//! - `dockwatch_download_polls_total`, `dockwatch_download_errors_total` (failed calls,
//!   retried ones included);
//! - `dockwatch_download_requests_total{call}` — CloudWatch requests sent (retries included;
//!   `rate()` of it is the request rate), and `dockwatch_download_max_requests_per_second`,
//!   the limit all streams share.
//!
//! `/healthz` answers 200 `ok` while polls succeed, 503 when the last success is older than
//! three poll intervals plus a minute.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::{Arc, Mutex};

pub(crate) use crate::util::metrics_http::serve;
use crate::util::metrics_http::{Exposition, escape};

/// One stream's counters.
#[derive(Debug, Clone, Default)]
pub(crate) struct StreamMetrics {
    pub(crate) events: u64,
    pub(crate) bytes: u64,
    pub(crate) lag_ms: i64,
    pub(crate) late_events: u64,
}

/// Everything the endpoint shows; updated by the daemon.
#[derive(Debug, Default)]
pub(crate) struct Metrics {
    /// Per (group, stream) currently followed.
    pub(crate) streams: BTreeMap<(String, String), StreamMetrics>,
    /// Epoch ms of the last poll round without error; 0: none yet.
    pub(crate) last_success_ms: i64,
    pub(crate) polls: u64,
    pub(crate) errors: u64,
    /// Poll interval, for `/healthz`.
    pub(crate) poll_interval_ms: i64,
    /// Requests sent, per call.
    pub(crate) requests: Option<std::sync::Arc<crate::follow::source::Requests>>,
    /// The shared request limit.
    pub(crate) max_requests_per_second: f64,
}

pub(crate) type Shared = Arc<Mutex<Metrics>>;

impl Metrics {
    /// Prometheus text exposition format.
    pub(crate) fn render(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(s, "# HELP dockwatch_download_streams Streams followed now.");
        let _ = writeln!(s, "# TYPE dockwatch_download_streams gauge");
        let _ = writeln!(s, "dockwatch_download_streams {}", self.streams.len());
        let per = [
            (
                "events_total",
                "counter",
                "Events written to the stream's file.",
            ),
            (
                "bytes_total",
                "counter",
                "Message bytes written to the stream's file.",
            ),
            (
                "lag_seconds",
                "gauge",
                "Newest event in CloudWatch minus newest event written.",
            ),
            (
                "late_events_total",
                "counter",
                "Events found late (behind newer ones) and appended.",
            ),
        ];
        for (name, kind, help) in per {
            let _ = writeln!(s, "# HELP dockwatch_download_{name} {help}");
            let _ = writeln!(s, "# TYPE dockwatch_download_{name} {kind}");
            for ((g, st), m) in &self.streams {
                let v = match name {
                    "events_total" => m.events.to_string(),
                    "bytes_total" => m.bytes.to_string(),
                    "late_events_total" => m.late_events.to_string(),
                    _ => format!("{:.3}", m.lag_ms.max(0) as f64 / 1000.0),
                };
                let _ = writeln!(
                    s,
                    "dockwatch_download_{name}{{group=\"{}\",stream=\"{}\"}} {v}",
                    escape(g),
                    escape(st)
                );
            }
        }
        let _ = writeln!(
            s,
            "# HELP dockwatch_download_last_success_timestamp_seconds End of the last poll round without error."
        );
        let _ = writeln!(
            s,
            "# TYPE dockwatch_download_last_success_timestamp_seconds gauge"
        );
        let _ = writeln!(
            s,
            "dockwatch_download_last_success_timestamp_seconds {:.3}",
            self.last_success_ms as f64 / 1000.0
        );
        let _ = writeln!(s, "# HELP dockwatch_download_polls_total Poll rounds.");
        let _ = writeln!(s, "# TYPE dockwatch_download_polls_total counter");
        let _ = writeln!(s, "dockwatch_download_polls_total {}", self.polls);
        let _ = writeln!(
            s,
            "# HELP dockwatch_download_errors_total Failed CloudWatch calls."
        );
        let _ = writeln!(s, "# TYPE dockwatch_download_errors_total counter");
        let _ = writeln!(s, "dockwatch_download_errors_total {}", self.errors);
        let _ = writeln!(
            s,
            "# HELP dockwatch_download_requests_total CloudWatch requests sent, retries included."
        );
        let _ = writeln!(s, "# TYPE dockwatch_download_requests_total counter");
        if let Some(r) = &self.requests {
            for (call, n) in r.snapshot() {
                let _ = writeln!(
                    s,
                    "dockwatch_download_requests_total{{call=\"{call}\"}} {n}"
                );
            }
        }
        let _ = writeln!(
            s,
            "# HELP dockwatch_download_max_requests_per_second The request limit all streams share."
        );
        let _ = writeln!(s, "# TYPE dockwatch_download_max_requests_per_second gauge");
        let _ = writeln!(
            s,
            "dockwatch_download_max_requests_per_second {}",
            self.max_requests_per_second
        );
        s
    }

    /// Healthy while polls succeed.
    pub(crate) fn healthy(&self, now_ms: i64) -> bool {
        self.last_success_ms > 0
            && now_ms - self.last_success_ms <= 3 * self.poll_interval_ms + 60_000
    }
}

impl Exposition for Metrics {
    fn render(&self) -> String {
        Metrics::render(self)
    }

    fn health(&self, now_ms: i64) -> Result<(), &'static str> {
        if self.healthy(now_ms) {
            Ok(())
        } else {
            Err("no successful poll recently")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_prometheus_text() {
        let mut m = Metrics {
            last_success_ms: 1_500,
            polls: 3,
            errors: 1,
            poll_interval_ms: 1000,
            ..Default::default()
        };
        m.streams.insert(
            ("/g".into(), "a\"b".into()),
            StreamMetrics {
                events: 7,
                bytes: 70,
                lag_ms: 2500,
                late_events: 3,
            },
        );
        let t = m.render();
        assert!(t.contains("dockwatch_download_streams 1\n"));
        assert!(
            t.contains("dockwatch_download_late_events_total{group=\"/g\",stream=\"a\\\"b\"} 3\n")
        );
        assert!(t.contains("dockwatch_download_events_total{group=\"/g\",stream=\"a\\\"b\"} 7\n"));
        assert!(
            t.contains("dockwatch_download_lag_seconds{group=\"/g\",stream=\"a\\\"b\"} 2.500\n")
        );
        assert!(t.contains("dockwatch_download_last_success_timestamp_seconds 1.500\n"));
        assert!(t.contains("dockwatch_download_errors_total 1\n"));
        assert!(m.healthy(2_000));
        assert!(!m.healthy(1_500 + 63_001));
        assert!(!Metrics::default().healthy(1));
    }
}
