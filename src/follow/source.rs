//! Reading CloudWatch Logs back: which groups and streams match, and their events, page by
//! page, with throttling and transient failures retried under one policy
//! ([`crate::aws::retry::classify`], the same pure function the shipper uses).
//!
//! Calls used: DescribeLogGroups (by prefix), DescribeLogStreams (by prefix), FilterLogEvents
//! (`tail`: interleaved across streams, filter patterns) and GetLogEvents (`download`: one
//! stream, forward tokens that resume exactly; time ranges for `download`'s checks).
//!
//! Every request, retries included, passes one [`RateLimit`] shared by all the streams a
//! command reads: CloudWatch's read quotas (GetLogEvents 10, FilterLogEvents 5 requests per
//! second) are per account and Region, not per stream, so a reader must not spend them all.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;

use aws_sdk_cloudwatchlogs::Client;

use crate::aws::retry::{Action, Failure, classify, failure_of};
use crate::util::backoff::Backoff;

/// A group named on the command line or in the configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum GroupSpec {
    /// This group, which must exist.
    Exact(String),
    /// Every group whose name starts with this (written `PREFIX*`).
    Prefix(String),
}

impl GroupSpec {
    /// `/ecs/*` is a prefix; anything else is one group.
    pub(crate) fn parse(s: &str) -> Self {
        match s.strip_suffix('*') {
            Some(p) => GroupSpec::Prefix(p.to_string()),
            None => GroupSpec::Exact(s.to_string()),
        }
    }
}

impl std::fmt::Display for GroupSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            GroupSpec::Exact(g) => f.write_str(g),
            GroupSpec::Prefix(p) => write!(f, "{p}*"),
        }
    }
}

/// One log event as read back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Event {
    /// Stream it belongs to.
    pub(crate) stream: String,
    /// Event time, epoch milliseconds.
    pub(crate) timestamp: i64,
    /// When CloudWatch ingested it, epoch milliseconds (0 when not reported).
    pub(crate) ingestion_time: i64,
    /// CloudWatch's id (FilterLogEvents only; empty from GetLogEvents).
    pub(crate) id: String,
    /// The message.
    pub(crate) message: String,
}

/// A stream and what DescribeLogStreams says about it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct StreamInfo {
    pub(crate) name: String,
    /// Timestamp of its newest event, when known.
    pub(crate) last_event: Option<i64>,
}

/// One page of GetLogEvents.
#[derive(Debug)]
pub(crate) struct StreamPage {
    pub(crate) events: Vec<Event>,
    /// Where the next read starts; equal to the token sent when the stream has nothing more.
    pub(crate) next_forward_token: Option<String>,
}

impl StreamPage {
    /// A GetLogEvents answer for `stream`.
    fn of(
        stream: &str,
        r: &aws_sdk_cloudwatchlogs::operation::get_log_events::GetLogEventsOutput,
    ) -> Self {
        StreamPage {
            events: r
                .events()
                .iter()
                .map(|e| Event {
                    stream: stream.to_string(),
                    timestamp: e.timestamp().unwrap_or(0),
                    ingestion_time: e.ingestion_time().unwrap_or(0),
                    id: String::new(),
                    message: e.message().unwrap_or_default().to_string(),
                })
                .collect(),
            next_forward_token: r.next_forward_token().map(str::to_string),
        }
    }
}

/// How long a reader keeps trying a call that failed for a transient reason.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Patience {
    /// Until it works (a daemon). Throttling is always waited out.
    Forever,
    /// This many tries for network failures (a command someone is watching); throttling and
    /// 5xx answers are still waited out, since the endpoint is there.
    Tries(u32),
}

/// At most `per_second` requests a second, spaced evenly, for everyone holding a clone.
#[derive(Debug, Clone)]
pub(crate) struct RateLimit {
    gap: Duration,
    next: Arc<Mutex<Option<Instant>>>,
}

impl RateLimit {
    pub(crate) fn per_second(per_second: f64) -> Self {
        Self {
            gap: Duration::from_secs_f64(1.0 / per_second.max(0.01)),
            next: Arc::new(Mutex::new(None)),
        }
    }

    /// Waits for this request's turn (cancel-safe: a turn given up is simply not used).
    pub(crate) async fn turn(&self) {
        let at = {
            let mut next = self.next.lock().expect("rate limit lock");
            let now = Instant::now();
            let at = next.map_or(now, |n| n.max(now));
            *next = Some(at + self.gap);
            at
        };
        tokio::time::sleep_until(at).await;
    }
}

/// Requests sent per call (retries included), for metrics.
#[derive(Debug, Default)]
pub(crate) struct Requests {
    pub(crate) describe_log_groups: AtomicU64,
    pub(crate) describe_log_streams: AtomicU64,
    pub(crate) get_log_events: AtomicU64,
    pub(crate) filter_log_events: AtomicU64,
}

impl Requests {
    fn of(&self, call: &str) -> &AtomicU64 {
        match call {
            "DescribeLogGroups" => &self.describe_log_groups,
            "DescribeLogStreams" => &self.describe_log_streams,
            "FilterLogEvents" => &self.filter_log_events,
            _ => &self.get_log_events,
        }
    }

    /// (call, requests) for every call.
    pub(crate) fn snapshot(&self) -> [(&'static str, u64); 4] {
        let g = |a: &AtomicU64| a.load(Ordering::Relaxed);
        [
            ("DescribeLogGroups", g(&self.describe_log_groups)),
            ("DescribeLogStreams", g(&self.describe_log_streams)),
            ("GetLogEvents", g(&self.get_log_events)),
            ("FilterLogEvents", g(&self.filter_log_events)),
        ]
    }
}

/// A CloudWatch Logs client with the retry policy and the rate limit for reading.
#[derive(Clone)]
pub(crate) struct Reader {
    /// The SDK client (its own retries off).
    client: Client,
    /// How long to retry.
    patience: Patience,
    /// Shared by every request.
    limit: RateLimit,
    /// Failed tries so far (throttling included), for metrics.
    retries: Arc<AtomicU64>,
    /// Requests sent, for metrics.
    requests: Arc<Requests>,
}

impl Reader {
    pub(crate) fn new(client: Client, patience: Patience, limit: RateLimit) -> Self {
        Self {
            client,
            patience,
            limit,
            retries: Arc::new(AtomicU64::new(0)),
            requests: Arc::new(Requests::default()),
        }
    }

    /// Failed tries so far.
    pub(crate) fn retries(&self) -> u64 {
        self.retries.load(Ordering::Relaxed)
    }

    /// Requests sent so far, per call.
    pub(crate) fn requests(&self) -> Arc<Requests> {
        self.requests.clone()
    }

    /// Runs `call` until it succeeds, fails for good, or patience runs out.
    async fn retrying<T, F, Fut>(&self, what: &str, mut call: F) -> Result<T, Failure>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<T, Failure>>,
    {
        let mut backoff = Backoff::new(Duration::from_millis(250), Duration::from_secs(20));
        let mut network_failures = 0u32;
        loop {
            self.limit.turn().await;
            self.requests.of(what).fetch_add(1, Ordering::Relaxed);
            let f = match call().await {
                Ok(v) => return Ok(v),
                Err(f) => f,
            };
            if classify(&f) != Action::Retry {
                return Err(f);
            }
            let network = matches!(f, Failure::Transport(_) | Failure::Timeout(_));
            if network {
                network_failures += 1;
                if let Patience::Tries(n) = self.patience
                    && network_failures >= n
                {
                    return Err(f);
                }
            }
            self.retries.fetch_add(1, Ordering::Relaxed);
            let wait = backoff.next_delay();
            // A daemon says every network failure; a command someone watches says only
            // long waits (its last failure is the error it ends with).
            let daemon = self.patience == Patience::Forever;
            if (network && daemon) || backoff.attempts() > 3 {
                tracing::warn!("{what}: {f}; trying again in {wait:.1?}");
            } else {
                tracing::info!("{what}: {f}; trying again in {wait:.1?}");
            }
            tokio::time::sleep(wait).await;
        }
    }

    /// Names of the groups starting with `prefix` (all groups for an empty prefix).
    pub(crate) async fn groups_with_prefix(&self, prefix: &str) -> Result<Vec<String>, Failure> {
        let mut out = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let page = self
                .retrying("DescribeLogGroups", || {
                    let mut req = self
                        .client
                        .describe_log_groups()
                        .set_next_token(token.clone());
                    if !prefix.is_empty() {
                        req = req.log_group_name_prefix(prefix);
                    }
                    async move { req.send().await.map_err(|e| failure_of(&e)) }
                })
                .await?;
            out.extend(
                page.log_groups()
                    .iter()
                    .filter_map(|g| g.log_group_name().map(str::to_string))
                    .filter(|g| g.starts_with(prefix)),
            );
            match page.next_token() {
                Some(t) if Some(t) != token.as_deref() => token = Some(t.to_string()),
                _ => break,
            }
        }
        Ok(out)
    }

    /// Whether the group exists.
    pub(crate) async fn group_exists(&self, group: &str) -> Result<bool, Failure> {
        Ok(self
            .groups_with_prefix(group)
            .await?
            .iter()
            .any(|g| g == group))
    }

    /// The streams of `group` whose names start with `prefix`, by name. `Ok(None)` when the
    /// group does not exist.
    pub(crate) async fn streams(
        &self,
        group: &str,
        prefix: Option<&str>,
    ) -> Result<Option<Vec<StreamInfo>>, Failure> {
        let mut out = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let r = self
                .retrying("DescribeLogStreams", || {
                    let req = self
                        .client
                        .describe_log_streams()
                        .log_group_name(group)
                        .set_log_stream_name_prefix(prefix.map(str::to_string))
                        .set_next_token(token.clone());
                    async move { req.send().await.map_err(|e| failure_of(&e)) }
                })
                .await;
            let page = match r {
                Ok(p) => p,
                Err(f) if classify(&f) == Action::Recreate => return Ok(None),
                Err(f) => return Err(f),
            };
            out.extend(page.log_streams().iter().filter_map(|s| {
                Some(StreamInfo {
                    name: s.log_stream_name()?.to_string(),
                    last_event: s.last_event_timestamp(),
                })
            }));
            match page.next_token() {
                Some(t) if Some(t) != token.as_deref() => token = Some(t.to_string()),
                _ => break,
            }
        }
        Ok(Some(out))
    }

    /// One page of FilterLogEvents over `group`. Returns the events and the token for the
    /// next page (`None`: no more).
    pub(crate) async fn filter_page(
        &self,
        q: &FilterQuery,
        token: Option<String>,
    ) -> Result<(Vec<Event>, Option<String>), Failure> {
        let r = self
            .retrying("FilterLogEvents", || {
                // AWS always interleaves streams by time (the flag is ignored since 2019);
                // AWS-compatible endpoints such as moto still need to be asked.
                #[allow(deprecated)]
                let req = self
                    .client
                    .filter_log_events()
                    .interleaved(true)
                    .log_group_name(&q.group)
                    .set_log_stream_names(q.streams.clone())
                    .set_start_time(q.start)
                    .set_end_time(q.end)
                    .set_filter_pattern(q.pattern.clone())
                    .set_next_token(token.clone());
                async move { req.send().await.map_err(|e| failure_of(&e)) }
            })
            .await?;
        let events = r
            .events()
            .iter()
            .map(|e| Event {
                stream: e.log_stream_name().unwrap_or_default().to_string(),
                timestamp: e.timestamp().unwrap_or(0),
                ingestion_time: e.ingestion_time().unwrap_or(0),
                id: e.event_id().unwrap_or_default().to_string(),
                message: e.message().unwrap_or_default().to_string(),
            })
            .collect();
        let next = r.next_token().map(str::to_string).filter(|t| !t.is_empty());
        Ok((events, next))
    }

    /// One page of GetLogEvents, oldest first, from `token` (or from the head, or from
    /// `start` when given without a token).
    pub(crate) async fn stream_page(
        &self,
        group: &str,
        stream: &str,
        token: Option<&str>,
        start: Option<i64>,
    ) -> Result<StreamPage, Failure> {
        let start = if token.is_none() { start } else { None };
        self.get_page(group, stream, (start, None), token).await
    }
}

impl Reader {
    /// One page of GetLogEvents over the events with timestamps in `[from, to)`, oldest
    /// first, from `token` (the page before's `next_forward_token`) or from `from`.
    pub(crate) async fn range_page(
        &self,
        group: &str,
        stream: &str,
        (from, to): (i64, i64),
        token: Option<&str>,
    ) -> Result<StreamPage, Failure> {
        self.get_page(group, stream, (Some(from.max(0)), Some(to.max(0))), token)
            .await
    }

    /// GetLogEvents from the head, within `[start, end)` where given, from `token`.
    async fn get_page(
        &self,
        group: &str,
        stream: &str,
        (start, end): (Option<i64>, Option<i64>),
        token: Option<&str>,
    ) -> Result<StreamPage, Failure> {
        let r = self
            .retrying("GetLogEvents", || {
                let req = self
                    .client
                    .get_log_events()
                    .log_group_name(group)
                    .log_stream_name(stream)
                    .start_from_head(true)
                    .set_start_time(start)
                    .set_end_time(end)
                    .set_next_token(token.map(str::to_string));
                async move { req.send().await.map_err(|e| failure_of(&e)) }
            })
            .await?;
        Ok(StreamPage::of(stream, &r))
    }
}

/// What FilterLogEvents is asked.
#[derive(Debug, Clone, Default)]
pub(crate) struct FilterQuery {
    pub(crate) group: String,
    /// At most 100 stream names, or `None` for every stream of the group.
    pub(crate) streams: Option<Vec<String>>,
    /// Inclusive, epoch ms.
    pub(crate) start: Option<i64>,
    /// Inclusive, epoch ms.
    pub(crate) end: Option<i64>,
    /// CloudWatch filter pattern.
    pub(crate) pattern: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn the_rate_limit_spaces_requests_for_every_holder() {
        let limit = RateLimit::per_second(4.0);
        let other = limit.clone();
        let t0 = Instant::now();
        for _ in 0..3 {
            limit.turn().await;
            other.turn().await;
        }
        // Six turns at 4 a second: the first at once, the sixth 1.25 s later.
        assert_eq!(t0.elapsed(), Duration::from_millis(1250));
    }

    #[test]
    fn a_trailing_star_makes_a_prefix() {
        assert_eq!(
            GroupSpec::parse("/ecs/*"),
            GroupSpec::Prefix("/ecs/".into())
        );
        assert_eq!(GroupSpec::parse("*"), GroupSpec::Prefix(String::new()));
        assert_eq!(
            GroupSpec::parse("/ecs/a"),
            GroupSpec::Exact("/ecs/a".into())
        );
        assert_eq!(GroupSpec::parse("/ecs/*").to_string(), "/ecs/*");
    }
}
