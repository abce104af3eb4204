//! The CloudWatch Logs sink: [`client`] (building it, creating the destination), [`request`]
//! (one PutLogEvents, its JSON body from [`body`]), [`retry`] (the policy) and here the [`Shipper`], which turns the stream
//! of events into batches and keeps up to `max_in_flight` requests going.
//!
//! Flow control: the shipper takes events from a bounded channel only while it has fewer than
//! two batches waiting to be sent, so a slow or failing CloudWatch stops the reader, which
//! stops reading the engine's log (the container itself never waits: its output stays in the
//! engine's log file). Failed requests are retried, with capped exponential backoff and jitter,
//! for as long as it takes, unless the shipper is told to stop (`abort`) or a failure is fatal;
//! then everything not acknowledged is handed back, in order, as undelivered.

pub mod body;
pub mod dedupe;
pub mod request;
pub mod split;

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

use crate::aws::retry::{Action, Failure, classify};
use crate::config::ShipConfig;
use crate::docker::logs::Cursor;
use crate::ship::batcher::{Batch, Batcher, Limits};
use crate::ship::framing::Event;
use crate::ship::reader::Chunk;
use crate::util::backoff::Backoff;
use request::Rejected;

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
    /// On resume: events not sent again because CloudWatch already had them.
    pub skipped_duplicates: u64,
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

/// Called with each new delivered position: everything the container wrote up to the cursor
/// is acknowledged, `u64` events in all.
pub type OnDelivered = Box<dyn FnMut(Cursor, u64) + Send>;

/// Which events are acknowledged, in order, and which log positions that covers.
#[derive(Default)]
struct Progress {
    /// Events received so far.
    received: u64,
    /// (events received up to a clean position, that position), oldest first.
    boundaries: VecDeque<(u64, Cursor)>,
    /// Batches acknowledged out of order: seq -> events.
    done: BTreeMap<u64, u64>,
    /// The next batch to acknowledge in order.
    next_seq: u64,
    /// Events acknowledged in order.
    acked: u64,
}

impl Progress {
    /// Records an acknowledged batch; returns the newest position now fully delivered.
    fn ack(&mut self, seq: u64, events: u64) -> Option<Cursor> {
        self.done.insert(seq, events);
        while let Some(n) = self.done.remove(&self.next_seq) {
            self.acked += n;
            self.next_seq += 1;
        }
        self.advance()
    }

    /// The newest clean position whose events are all acknowledged, if it moved.
    fn advance(&mut self) -> Option<Cursor> {
        let mut newest = None;
        while self
            .boundaries
            .front()
            .is_some_and(|(n, _)| *n <= self.acked)
        {
            newest = self.boundaries.pop_front().map(|(_, c)| c);
        }
        newest
    }
}

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
    /// Told about each new delivered position (the checkpoint).
    on_delivered: Option<OnDelivered>,
    /// On resume: drops the first events when CloudWatch already has them.
    dedupe: Option<dedupe::Dedupe>,
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
            on_delivered: None,
            dedupe: None,
        }
    }

    /// Skips leading events that already stand at the end of `tail` (see [`dedupe`]).
    pub fn skip_already_delivered(mut self, tail: Vec<(i64, String)>) -> Self {
        self.dedupe = Some(dedupe::Dedupe::new(tail));
        self
    }

    /// Calls `f` after each acknowledgement that moves the delivered position.
    pub fn on_delivered(mut self, f: OnDelivered) -> Self {
        self.on_delivered = Some(f);
        self
    }

    /// Ships until `rx` closes and everything is acknowledged, or until `abort` is cancelled
    /// or a failure is fatal (then the rest comes back as undelivered).
    pub async fn run(
        mut self,
        mut rx: mpsc::Receiver<Chunk>,
        abort: CancellationToken,
    ) -> ShipReport {
        let mut progress = Progress::default();
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
                            if let Some(c) = progress.ack(batch.seq, batch.events.len() as u64)
                                && let Some(f) = self.on_delivered.as_mut()
                            {
                                f(c, progress.acked);
                            }
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
                    Some(chunk) => {
                        let deciding = self.dedupe.as_ref().is_some_and(|d| d.is_deciding());
                        let events = match self.dedupe.as_mut() {
                            Some(d) => d.feed(chunk.events),
                            None => chunk.events,
                        };
                        progress.received += events.len() as u64;
                        for e in events {
                            ready.extend(batcher.push(e));
                        }
                        // While undecided, positions cannot be counted in shipped events.
                        if let Some(c) = chunk.boundary
                            && !deciding
                        {
                            progress.boundaries.push_back((progress.received, c));
                        }
                        // A position with nothing left to deliver is delivered already.
                        if let Some(c) = progress.advance()
                            && let Some(f) = self.on_delivered.as_mut()
                        {
                            f(c, progress.acked);
                        }
                        if batcher.is_empty() {
                            flush_at = None;
                        } else if flush_at.is_none() {
                            flush_at = Some(Instant::now() + self.flush_interval);
                        }
                    }
                    None => {
                        closed = true;
                        if let Some(d) = self.dedupe.as_mut() {
                            for e in d.finish() {
                                ready.extend(batcher.push(e));
                            }
                        }
                        ready.extend(batcher.flush());
                        flush_at = None;
                    }
                },
                () = sleep_until(flush_at), if flush_at.is_some() && !stopping => {
                    // Cutting a partial batch only helps when it could go out now; under
                    // backpressure it would just turn full requests into partial ones.
                    let idle = ready.is_empty() && inflight.len() < self.max_in_flight;
                    if idle {
                        ready.extend(batcher.flush_on_timer());
                    }
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
        while let Ok(chunk) = rx.try_recv() {
            undelivered.extend(chunk.events);
        }
        report.undelivered = undelivered;
        report.stats.skipped_duplicates = self.dedupe.map_or(0, |d| d.skipped);
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
                            crate::aws::logs::ensure_destination(&client, &group, &stream, 1).await
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ship::framing::Source;

    fn cur(n: i64) -> Cursor {
        Cursor {
            ts_ns: n,
            source: Source::Stdout,
            nth: 1,
        }
    }

    #[test]
    fn delivered_position_waits_for_every_earlier_batch() {
        // Batches 0 (3 events) and 1 (2 events); clean positions after events 3 and 5.
        let mut p = Progress {
            received: 5,
            boundaries: VecDeque::from([(3, cur(1)), (5, cur(2))]),
            ..Progress::default()
        };
        assert_eq!(p.ack(1, 2), None, "batch 0 is still in flight");
        assert_eq!(p.ack(0, 3), Some(cur(2)));
        assert_eq!(p.acked, 5);
        // A position reached with no new events is delivered at once.
        p.boundaries.push_back((5, cur(3)));
        assert_eq!(p.advance(), Some(cur(3)));
        assert_eq!(p.advance(), None);
    }
}
