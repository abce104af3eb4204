//! The CloudWatch Logs sink: [`client`] (building it, creating the destination), [`request`]
//! (one PutLogEvents), [`retry`] (the policy) and here the [`Shipper`], which turns the stream
//! of events into batches and keeps up to `max_in_flight` requests going.
//!
//! Flow control: the shipper takes events from a bounded channel only while it has fewer than
//! two batches waiting to be sent, so a slow or failing CloudWatch stops the reader, which
//! stops reading the engine's log (the container itself never waits: its output stays in the
//! engine's log file). Failed requests are retried, with capped exponential backoff and jitter,
//! for as long as it takes, unless the shipper is told to stop (`abort`) or a failure is fatal;
//! then everything not acknowledged is handed back, in order, as undelivered.

pub mod client;
pub mod request;
pub mod retry;

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use aws_sdk_cloudwatchlogs::Client;
use futures_util::StreamExt;
use futures_util::future::BoxFuture;
use futures_util::stream::FuturesUnordered;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::batcher::{Batch, Batcher, Limits};
use crate::config::ShipConfig;
use crate::framing::Event;
use request::Rejected;
use retry::{Action, Backoff, Failure, classify};

/// Errors reaching CloudWatch before anything is shipped.
#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    #[error("no AWS region: pass --aws-region, set AWS_REGION, or give the profile a region")]
    NoRegion,
    #[error(
        "no AWS credentials found; pass --aws-access-key-id and --aws-secret-access-key, set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or use --aws-profile"
    )]
    NoCredentials,
    #[error(
        "AWS refused the credentials: {detail}; check the access key id, secret and session token, or the profile"
    )]
    Auth { detail: String },
    #[error("cannot reach {endpoint}: {detail}; check --aws-endpoint-url and the network")]
    Unreachable { endpoint: String, detail: String },
    #[error("could not {call}: {detail}")]
    Call { call: &'static str, detail: String },
}

/// What the shipper did.
#[derive(Debug, Clone, Copy, Default)]
pub struct ShipStats {
    /// Events CloudWatch acknowledged (including rejected ones, counted apart).
    pub events: u64,
    /// Message bytes of those events.
    pub message_bytes: u64,
    /// Successful PutLogEvents requests.
    pub requests: u64,
    /// Failed tries that were tried again.
    pub retries: u64,
    /// Of those, how many were throttling.
    pub throttled: u64,
    /// Times the group or stream had to be created again.
    pub recreated: u64,
    /// Events CloudWatch refused in `rejectedLogEventsInfo`.
    pub rejected: Rejected,
}

/// The outcome of shipping.
#[derive(Debug, Default)]
pub struct ShipReport {
    pub stats: ShipStats,
    /// Events not acknowledged, in order.
    pub undelivered: Vec<Event>,
    /// The failure that stopped shipping, if one did.
    pub fatal: Option<Failure>,
}

/// Why a delivery ended without an acknowledgement.
enum NotDelivered {
    Fatal(Failure),
    Aborted,
}

/// Counters of one batch's delivery.
#[derive(Default)]
struct Delivery {
    rejected: Rejected,
    retries: u64,
    throttled: u64,
    recreated: u64,
}

type InFlight = BoxFuture<'static, (Batch, Result<Delivery, NotDelivered>, Delivery)>;

/// Ships events to one log stream.
pub struct Shipper {
    /// The SDK client (cheap to clone).
    client: Client,
    /// Destination group.
    group: Arc<str>,
    /// Destination stream.
    stream: Arc<str>,
    /// Batch limits.
    limits: Limits,
    /// Longest wait of an event in a partial batch.
    flush_interval: Duration,
    /// Requests in flight at once.
    max_in_flight: usize,
}

impl Shipper {
    pub fn new(client: Client, cfg: &ShipConfig) -> Self {
        Self {
            client,
            group: cfg.group.as_str().into(),
            stream: cfg.stream.as_str().into(),
            limits: Limits::default(),
            flush_interval: cfg.flush_interval,
            max_in_flight: cfg.max_in_flight,
        }
    }

    /// Ships until `rx` closes and everything is acknowledged, or until `abort` is cancelled
    /// or a failure is fatal (then the rest comes back as undelivered).
    pub async fn run(
        self,
        mut rx: mpsc::Receiver<Vec<Event>>,
        abort: CancellationToken,
    ) -> ShipReport {
        let stop = abort.child_token();
        let mut report = ShipReport::default();
        let mut batcher = Batcher::new(self.limits);
        let mut ready: VecDeque<Batch> = VecDeque::new();
        let mut inflight: FuturesUnordered<InFlight> = FuturesUnordered::new();
        // seq -> last millisecond of each batch in flight.
        let mut inflight_last: BTreeMap<u64, i64> = BTreeMap::new();
        let mut failed: Vec<Batch> = Vec::new();
        let mut flush_at: Option<Instant> = None;
        let mut closed = false;

        loop {
            let stopping = stop.is_cancelled();
            if !stopping {
                while inflight.len() < self.max_in_flight {
                    let Some(front) = ready.front() else { break };
                    // Equal timestamps in two concurrent requests may be stored in either
                    // order: wait for the batch that shares this one's first millisecond.
                    if inflight_last
                        .values()
                        .next_back()
                        .is_some_and(|&l| front.first_ms() <= l)
                    {
                        tracing::trace!(
                            seq = front.seq,
                            "waits for the batch sharing its first ms"
                        );
                        break;
                    }
                    tracing::debug!(
                        seq = front.seq,
                        events = front.events.len(),
                        first_ms = front.first_ms(),
                        last_ms = front.last_ms(),
                        in_flight = inflight.len(),
                        "sending"
                    );
                    let batch = ready.pop_front().expect("front exists");
                    inflight_last.insert(batch.seq, batch.last_ms());
                    inflight.push(self.deliver(batch, stop.clone()));
                }
            }
            let drained = closed && ready.is_empty() && batcher.is_empty();
            if inflight.is_empty() && (drained || stopping) {
                break;
            }
            let accept = !closed && !stopping && ready.len() < 2;
            tokio::select! {
                Some((batch, result, d)) = inflight.next(), if !inflight.is_empty() => {
                    inflight_last.remove(&batch.seq);
                    report.stats.retries += d.retries;
                    report.stats.throttled += d.throttled;
                    report.stats.recreated += d.recreated;
                    match result {
                        Ok(ok) => {
                            report.stats.requests += 1;
                            report.stats.events += batch.events.len() as u64;
                            report.stats.message_bytes += batch.message_bytes() as u64;
                            report.stats.rejected.add(ok.rejected);
                        }
                        Err(NotDelivered::Fatal(f)) => {
                            report.fatal.get_or_insert(f);
                            failed.push(batch);
                            stop.cancel();
                        }
                        Err(NotDelivered::Aborted) => failed.push(batch),
                    }
                }
                msg = rx.recv(), if accept => match msg {
                    Some(events) => {
                        for e in events {
                            ready.extend(batcher.push(e));
                        }
                        if batcher.is_empty() {
                            flush_at = None;
                        } else if flush_at.is_none() {
                            flush_at = Some(Instant::now() + self.flush_interval);
                        }
                    }
                    None => {
                        closed = true;
                        ready.extend(batcher.flush());
                        flush_at = None;
                    }
                },
                () = sleep_until(flush_at), if flush_at.is_some() && !stopping => {
                    ready.extend(batcher.flush_on_timer());
                    flush_at = (!batcher.is_empty()).then(|| Instant::now() + self.flush_interval);
                }
                () = stop.cancelled(), if !stopping => {}
            }
        }

        failed.sort_by_key(|b| b.seq);
        let mut undelivered: Vec<Event> = Vec::new();
        for b in failed.into_iter().chain(ready).chain(batcher.flush()) {
            undelivered.extend(b.events);
        }
        rx.close();
        while let Ok(events) = rx.try_recv() {
            undelivered.extend(events);
        }
        report.undelivered = undelivered;
        report
    }

    /// Sends one batch until it is acknowledged, a failure is fatal, or `stop` is cancelled.
    fn deliver(&self, batch: Batch, stop: CancellationToken) -> InFlight {
        let client = self.client.clone();
        let (group, stream) = (self.group.clone(), self.stream.clone());
        Box::pin(async move {
            let mut d = Delivery::default();
            let mut backoff = Backoff::default();
            loop {
                let result = tokio::select! {
                    r = request::put(&client, &group, &stream, &batch) => r,
                    () = stop.cancelled() => return (batch, Err(NotDelivered::Aborted), d),
                };
                let failure = match result {
                    Ok(rejected) => {
                        let done = Delivery {
                            rejected,
                            ..Delivery::default()
                        };
                        return (batch, Ok(done), d);
                    }
                    Err(f) => f,
                };
                match classify(&failure) {
                    Action::Fatal => return (batch, Err(NotDelivered::Fatal(failure)), d),
                    Action::Recreate => {
                        d.recreated += 1;
                        tracing::warn!(
                            "log group or stream missing ({failure}); creating it again"
                        );
                        if let Err(e) =
                            client::ensure_destination(&client, &group, &stream, 1).await
                        {
                            tracing::warn!("creating the destination failed: {e}");
                        }
                    }
                    Action::Retry => {
                        if matches!(&failure, Failure::Service { code: Some(c), .. } if c.contains("Throttl"))
                        {
                            d.throttled += 1;
                        }
                        tracing::debug!("PutLogEvents failed ({failure}); retrying");
                    }
                }
                d.retries += 1;
                tokio::select! {
                    () = tokio::time::sleep(backoff.next_delay()) => {}
                    () = stop.cancelled() => return (batch, Err(NotDelivered::Aborted), d),
                }
            }
        })
    }
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}
