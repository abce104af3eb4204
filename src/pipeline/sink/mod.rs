//! The CloudWatch Logs sink: [`client`] (building it, creating the destination), [`request`]
//! (one PutLogEvents, its JSON body from [`body`]), [`retry`] (the policy) and here the [`Shipper`], which turns the stream
//! of events into batches and keeps up to `max_in_flight` requests going.
//!
//! Flow control: the shipper takes events from a bounded channel only while no full batch
//! waits to be sent, so a slow or failing CloudWatch stops the reader, which stops reading
//! the disk buffer or the engine's log (the container itself never waits: its output stays
//! there).
//!
//! When a partial batch goes: at once when the pipeline is quiet (nothing in flight, waiting
//! or in the channel, and no request started within a quarter of `flush_interval`), so a
//! lone line is not held for the timer (W3, a line every 100 ms: p99 from 301 ms to a few
//! ms); when the pipeline becomes quiet later (the answer came), a quarter interval after
//! the last request started (a W3 run had p99 297 ms: lines that came while a request was
//! out waited for the whole interval); otherwise `flush_interval` after its first event,
//! gathering what follows. A trickle makes at most about four requests per interval (20/s
//! at the default 200 ms); a flood fills whole batches. Failed requests are retried, with capped exponential backoff and jitter,
//! for as long as it takes, unless the shipper is told to stop (`abort`) or a failure is fatal;
//! then everything not acknowledged is handed back, in order, as undelivered.
//!
//! How far ahead: a batch is sent only while fewer than [`MAX_AHEAD`] batches separate it
//! from the oldest unacknowledged one, so that a batch stuck in backoff bounds what a crash
//! leaves acknowledged past the checkpoint's position (resume reads that much back).
//!
//! Refused credentials (expired, revoked): retried like a throttle for up to
//! `credentials_timeout` (the SDK's refreshing providers get their chance; the container keeps
//! running, its output waits in the engine's log), then fatal. Said once when it starts.
//!
//! Lost answers: CloudWatch has no idempotency key, so a timeout or a broken connection after
//! a request was sent leaves it unknown whether the batch was stored. Before sending it again
//! the shipper reads the stream over the batch's milliseconds (retrying the read for as long
//! as the put would be retried): the `lead` events before the batch that share its first
//! millisecond, then exactly the batch, means stored (acknowledged without a second send);
//! only the lead means not stored (sent again); anything else is uncertain: it is sent again
//! and counted as possibly stored twice, as is a batch handed back while still unresolved.

pub(crate) mod body;
pub(crate) mod budget;
pub(crate) mod dedupe;
pub(crate) mod request;
pub(crate) mod split;

use crate::util::sleep_until;
use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use futures_util::future::BoxFuture;
use futures_util::stream::FuturesUnordered;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::aws::retry::{Action, Failure, classify, is_auth};
use crate::config::ShipConfig;
use crate::docker::logs::Position;
use crate::pipeline::batcher::{Batch, Batcher, Limits, Mark};
use crate::pipeline::framing::Event;
use crate::pipeline::reader::Chunk;
use crate::util::backoff::Backoff;
use body::Sealed;
pub(crate) use request::LogService;
use request::Rejected;

/// What the shipper did.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct ShipStats {
    /// Events CloudWatch acknowledged (including rejected ones, counted apart).
    pub(crate) events: u64,
    /// Message bytes of those events.
    pub(crate) message_bytes: u64,
    /// Successful PutLogEvents requests.
    pub(crate) requests: u64,
    /// Failed tries that were tried again.
    pub(crate) retries: u64,
    /// Of those, how many were throttling.
    pub(crate) throttled: u64,
    /// Times the group or stream had to be created again.
    pub(crate) recreated: u64,
    /// Events CloudWatch refused in `rejectedLogEventsInfo`.
    pub(crate) rejected: Rejected,
    /// On resume: events not sent again because CloudWatch already had them.
    pub(crate) skipped_duplicates: u64,
    /// On resume: stored events past the position that matched nothing framed again.
    pub(crate) unrecognised: u64,
    /// Requests whose answer was lost, found stored by reading the stream back.
    pub(crate) lost_answers: u64,
    /// Events that may be stored twice: sent again, or handed back, after a lost answer that
    /// reading the stream could not settle.
    pub(crate) maybe_twice: u64,
}

impl ShipStats {
    /// Adds another shipper's counts (split streams).
    pub(crate) fn add(&mut self, b: &ShipStats) {
        self.events += b.events;
        self.message_bytes += b.message_bytes;
        self.requests += b.requests;
        self.retries += b.retries;
        self.throttled += b.throttled;
        self.recreated += b.recreated;
        self.rejected.add(b.rejected);
        self.skipped_duplicates += b.skipped_duplicates;
        self.unrecognised += b.unrecognised;
        self.lost_answers += b.lost_answers;
        self.maybe_twice += b.maybe_twice;
    }
}

/// The outcome of shipping.
#[derive(Debug, Default)]
pub(crate) struct ShipReport {
    pub(crate) stats: ShipStats,
    /// Events not acknowledged, in order.
    pub(crate) undelivered: Vec<Event>,
    /// The failure that stopped shipping, if one did.
    pub(crate) fatal: Option<Failure>,
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
    lost_answers: u64,
    maybe_twice: u64,
}

type InFlight = BoxFuture<'static, (Sealed, Result<Delivery, NotDelivered>, Delivery)>;

/// A log position now delivered, and what of the stream precedes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Passed {
    pub(crate) cursor: Position,
    pub(crate) mark: Mark,
}

/// Called when delivered positions moved: every position passed, oldest first (everything
/// the container wrote up to each is in CloudWatch), and the events delivered in all.
pub(crate) type OnDelivered = Box<dyn FnMut(&[Passed], u64) + Send>;

/// Full batches waiting for a request slot before the shipper takes more events: one is
/// enough to keep every slot busy (the next is cut from events in memory as soon as it is
/// sent), and each batch waiting is up to 1 MiB of events.
const READY_BATCHES: usize = 1;

/// Batches sent at most ahead of the oldest unacknowledged one.
pub(crate) const MAX_AHEAD: u64 = 16;

/// Which events are acknowledged, in order, and which log positions that covers.
#[derive(Default)]
struct Progress {
    /// Events received so far.
    received: u64,
    /// (events received up to a clean position, that position), oldest first.
    boundaries: VecDeque<(u64, Passed)>,
    /// Batches acknowledged out of order: seq -> events.
    done: BTreeMap<u64, u64>,
    /// The next batch to acknowledge in order.
    next_seq: u64,
    /// Events acknowledged in order.
    acked: u64,
}

impl Progress {
    /// Records an acknowledged batch; returns the positions now fully delivered.
    fn ack(&mut self, seq: u64, events: u64) -> Vec<Passed> {
        self.done.insert(seq, events);
        while let Some(n) = self.done.remove(&self.next_seq) {
            self.acked += n;
            self.next_seq += 1;
        }
        self.advance()
    }

    /// The clean positions whose events are all acknowledged now, oldest first.
    fn advance(&mut self) -> Vec<Passed> {
        let mut passed = Vec::new();
        while self
            .boundaries
            .front()
            .is_some_and(|(n, _)| *n <= self.acked)
        {
            passed.extend(self.boundaries.pop_front().map(|(_, p)| p));
        }
        passed
    }
}

/// What one [`Shipper::run`] holds while it ships.
struct Flow {
    progress: Progress,
    report: ShipReport,
    batcher: Batcher,
    /// On resume: what CloudWatch holds past the checkpoint, skipped.
    already: Option<dedupe::AlreadyStored>,
    /// Full batches waiting for a request slot.
    ready: VecDeque<Batch>,
    inflight: FuturesUnordered<InFlight>,
    /// seq -> last millisecond of each batch in flight.
    inflight_last: BTreeMap<u64, i64>,
    /// Batches not delivered (a fatal failure, a stop).
    failed: Vec<Sealed>,
    /// Buffers of acknowledged bodies, for the next ones (see `body`).
    spare: Vec<Vec<u8>>,
    flush_at: Option<Instant>,
    last_sent: Option<Instant>,
    /// The reader is done: no more chunks.
    closed: bool,
}

impl Flow {
    fn new(batcher: Batcher) -> Self {
        Flow {
            progress: Progress::default(),
            report: ShipReport::default(),
            batcher,
            already: None,
            ready: VecDeque::new(),
            inflight: FuturesUnordered::new(),
            inflight_last: BTreeMap::new(),
            failed: Vec::new(),
            spare: Vec::new(),
            flush_at: None,
            last_sent: None,
            closed: false,
        }
    }

    /// The reader's channel closed: what the batcher holds is cut into batches.
    fn close(&mut self) {
        self.closed = true;
        if let Some(a) = self.already.as_mut() {
            a.finish();
        }
        self.ready.extend(self.batcher.flush());
        self.flush_at = None;
    }

    /// The report: statistics, and every event not delivered in log order (failed batches,
    /// ready ones, the batcher's, what is still in the channel).
    fn report(mut self, mut rx: mpsc::Receiver<Chunk>) -> ShipReport {
        self.failed.sort_by_key(|b| b.seq);
        let mut undelivered: Vec<Event> = self.failed.iter().flat_map(Sealed::events).collect();
        for b in self.ready.into_iter().chain(self.batcher.flush()) {
            undelivered.extend(b.events);
        }
        rx.close();
        while let Ok(chunk) = rx.try_recv() {
            undelivered.extend(chunk.events);
        }
        self.report.undelivered = undelivered;
        self.report.stats.skipped_duplicates = skipped(&self.already);
        self.report.stats.unrecognised = self.already.map_or(0, |a| a.unrecognised);
        self.report
    }
}

/// Ships events to one log stream through `S` (the SDK client, or a fake in tests).
pub(crate) struct Shipper<S> {
    /// The service (cheap to clone).
    service: S,
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
    /// On resume: where the batcher continues, and what CloudWatch holds past it.
    resume: Option<(Mark, dedupe::AlreadyStored)>,
    /// How long refused credentials are retried.
    credentials_timeout: Duration,
    /// Since when every answer refused the credentials (shared by the requests in flight).
    refused_since: Arc<std::sync::Mutex<Option<Instant>>>,
}

impl<S: LogService> Shipper<S> {
    pub(crate) fn new(service: S, cfg: &ShipConfig) -> Self {
        Self {
            service,
            group: cfg.group.as_str().into(),
            stream: cfg.stream.as_str().into(),
            limits: Limits::default(),
            flush_interval: cfg.flush_interval,
            max_in_flight: cfg.max_in_flight,
            on_delivered: None,
            resume: None,
            credentials_timeout: cfg.credentials_timeout,
            refused_since: Arc::default(),
        }
    }

    /// Smaller batches than CloudWatch's (tests).
    #[cfg(test)]
    fn with_limits(mut self, limits: Limits) -> Self {
        self.limits = limits;
        self
    }

    /// Continues after a position whose mark is `mark`, skipping the events CloudWatch
    /// holds past it (`stored`, read from `mark.last_ms` on, times matched up to
    /// `tolerance_ms` apart; see [`dedupe`]).
    pub(crate) fn resume_after(
        mut self,
        mark: Mark,
        stored: Vec<(i64, String)>,
        tolerance_ms: i64,
    ) -> Self {
        self.resume = Some((
            mark,
            dedupe::AlreadyStored::after(mark, stored).within(tolerance_ms),
        ));
        self
    }

    /// Calls `f` after each acknowledgement that moves the delivered position.
    pub(crate) fn on_delivered(mut self, f: OnDelivered) -> Self {
        self.on_delivered = Some(f);
        self
    }

    /// Ships until `rx` closes and everything is acknowledged, or until `abort` is cancelled
    /// or a failure is fatal (then the rest comes back as undelivered).
    ///
    /// One `select!` loop over an answer, a chunk, the flush timer and a stop; what the arms
    /// share (the batcher, the ready queue, the requests in flight, the progress) is a
    /// [`Flow`], one method per arm. Its behaviour is pinned by the in-process tests below
    /// (`service`).
    pub(crate) async fn run(
        mut self,
        mut rx: mpsc::Receiver<Chunk>,
        abort: CancellationToken,
    ) -> ShipReport {
        let stop = abort.child_token();
        let mut f = Flow::new(Batcher::new(self.limits));
        if let Some((mark, stored)) = self.resume.take() {
            f.batcher = f.batcher.after(mark);
            f.already = Some(stored);
        }
        loop {
            let stopping = stop.is_cancelled();
            if !stopping {
                self.send_ready(&mut f, &stop);
            }
            let drained = f.closed && f.ready.is_empty() && f.batcher.is_empty();
            if f.inflight.is_empty() && (drained || stopping) {
                break;
            }
            // A partial batch waiting while the pipeline is quiet (its request answered,
            // nothing else waiting) goes a quarter interval after the last request started,
            // not at its full interval.
            if let Some(at) = f.flush_at
                && f.inflight.is_empty()
                && f.ready.is_empty()
                && rx.is_empty()
            {
                let soon = f.last_sent.map_or(at, |t| t + self.flush_interval / 4);
                f.flush_at = Some(at.min(soon));
            }
            let accept = !f.closed && !stopping && f.ready.len() < READY_BATCHES;
            tokio::select! {
                Some((batch, result, d)) = f.inflight.next(), if !f.inflight.is_empty() => {
                    self.answered(&mut f, batch, result, d, &stop);
                }
                msg = rx.recv(), if accept => match msg {
                    Some(chunk) => self.received(&mut f, chunk, rx.is_empty()),
                    None => f.close(),
                },
                () = sleep_until(f.flush_at), if f.flush_at.is_some() && !stopping => {
                    // Cutting a partial batch only helps when it could go out now; under
                    // backpressure it would just turn full requests into partial ones.
                    let idle = f.ready.is_empty() && f.inflight.len() < self.max_in_flight;
                    if idle {
                        f.ready.extend(f.batcher.flush_on_timer());
                    }
                    f.flush_at =
                        (!f.batcher.is_empty()).then(|| Instant::now() + self.flush_interval);
                }
                () = stop.cancelled(), if !stopping => {}
            }
        }
        f.report(rx)
    }

    /// Sends ready batches while a request slot is free, at most [`MAX_AHEAD`] batches past
    /// the oldest unacknowledged one.
    fn send_ready(&self, f: &mut Flow, stop: &CancellationToken) {
        while f.inflight.len() < self.max_in_flight {
            let Some(front) = f.ready.front() else { break };
            if front.seq >= f.progress.next_seq + MAX_AHEAD {
                break;
            }
            // Equal timestamps in two concurrent requests may be stored in either order:
            // wait for the batch that shares this one's first millisecond.
            if f.inflight_last
                .values()
                .next_back()
                .is_some_and(|&l| front.first_ms() <= l)
            {
                tracing::trace!(seq = front.seq, "waits for the batch sharing its first ms");
                break;
            }
            tracing::debug!(
                seq = front.seq,
                events = front.events.len(),
                first_ms = front.first_ms(),
                last_ms = front.last_ms(),
                in_flight = f.inflight.len(),
                "sending"
            );
            let batch = f.ready.pop_front().expect("front exists");
            f.last_sent = Some(Instant::now());
            f.inflight_last.insert(batch.seq, batch.last_ms());
            let buf = f.spare.pop().unwrap_or_default();
            f.inflight.push(self.deliver(batch, buf, stop.clone()));
        }
    }

    /// A request's answer: acknowledged (the delivered position may move), or failed.
    fn answered(
        &mut self,
        f: &mut Flow,
        batch: Sealed,
        result: Result<Delivery, NotDelivered>,
        d: Delivery,
        stop: &CancellationToken,
    ) {
        f.inflight_last.remove(&batch.seq);
        let stats = &mut f.report.stats;
        stats.retries += d.retries;
        stats.throttled += d.throttled;
        stats.recreated += d.recreated;
        stats.lost_answers += d.lost_answers;
        stats.maybe_twice += d.maybe_twice;
        match result {
            Ok(ok) => {
                let passed = f.progress.ack(batch.seq, batch.count as u64);
                self.tell(&passed, f.progress.acked + skipped(&f.already));
                let stats = &mut f.report.stats;
                stats.requests += 1;
                stats.events += batch.count as u64;
                stats.message_bytes += batch.message_bytes as u64;
                stats.rejected.add(ok.rejected);
                if f.spare.len() < self.max_in_flight
                    && let Some(buf) = batch.into_buffer()
                {
                    f.spare.push(buf);
                }
            }
            Err(NotDelivered::Fatal(failure)) => {
                f.report.fatal.get_or_insert(failure);
                f.failed.push(batch);
                stop.cancel();
            }
            Err(NotDelivered::Aborted) => f.failed.push(batch),
        }
    }

    /// A chunk of events from the reader: into batches (on resume, past those CloudWatch
    /// holds already), its clean position noted, the flush timer set. `channel_empty`: the
    /// channel has nothing more waiting.
    fn received(&mut self, f: &mut Flow, chunk: Chunk, channel_empty: bool) {
        for mut e in chunk.events {
            if let Some(a) = f.already.as_mut().filter(|a| a.is_matching()) {
                if let Some(stored) = a.take(f.batcher.adjusted(e.ts_ms), &e.message) {
                    // CloudWatch has it. Batches stay contiguous in the log, as a lost
                    // answer's lookup needs.
                    f.ready.extend(f.batcher.flush());
                    f.batcher.observe(stored);
                    continue;
                }
                // A hole: stored before CloudWatch's next event.
                if let Some(limit) = a.before_next() {
                    e.ts_ms = e.ts_ms.min(limit);
                }
            }
            f.progress.received += 1;
            f.ready.extend(f.batcher.push(e));
        }
        if let Some(cursor) = chunk.boundary {
            let passed = Passed {
                cursor,
                mark: f.batcher.mark(),
            };
            f.progress
                .boundaries
                .push_back((f.progress.received, passed));
        }
        // A position with nothing left to deliver is delivered already.
        let passed = f.progress.advance();
        self.tell(&passed, f.progress.acked + skipped(&f.already));
        if f.batcher.is_empty() {
            f.flush_at = None;
        } else if f.flush_at.is_none() {
            let quiet = f.inflight.is_empty()
                && f.ready.is_empty()
                && channel_empty
                && f.last_sent
                    .is_none_or(|t| t.elapsed() >= self.flush_interval / 4);
            if quiet {
                f.ready.extend(f.batcher.flush_on_timer());
            }
            f.flush_at = (!f.batcher.is_empty()).then(|| Instant::now() + self.flush_interval);
        }
    }

    /// Tells `on_delivered` about the positions passed.
    fn tell(&mut self, passed: &[Passed], events: u64) {
        if let (false, Some(f)) = (passed.is_empty(), self.on_delivered.as_mut()) {
            f(passed, events);
        }
    }

    /// Sends one batch until it is acknowledged, a failure is fatal, or `stop` is cancelled.
    /// From here on the batch is its body only ([`Sealed`]).
    fn deliver(&self, batch: Batch, buf: Vec<u8>, stop: CancellationToken) -> InFlight {
        let service = self.service.clone();
        let (group, stream) = (self.group.clone(), self.stream.clone());
        let batch = Sealed::new(&group, &stream, batch, buf);
        let (refused_since, patience) = (self.refused_since.clone(), self.credentials_timeout);
        Box::pin(async move {
            let mut d = Delivery::default();
            let mut backoff = Backoff::default();
            loop {
                let result = tokio::select! {
                    r = service.put(&group, &stream, &batch) => r,
                    () = stop.cancelled() => return (batch, Err(NotDelivered::Aborted), d),
                };
                let failure = match result {
                    Ok(rejected) => {
                        refused_since.lock().expect("not poisoned").take();
                        let done = Delivery {
                            rejected,
                            ..Delivery::default()
                        };
                        return (batch, Ok(done), d);
                    }
                    Err(f) => f,
                };
                match classify(&failure) {
                    // Refused credentials wait like a throttle until --credentials-timeout.
                    Action::Fatal
                        if is_auth(&failure)
                            && !refused_too_long(&refused_since, patience, &failure) =>
                    {
                        tracing::debug!("credentials refused ({failure}); retrying");
                    }
                    Action::Fatal => return (batch, Err(NotDelivered::Fatal(failure)), d),
                    Action::Retry if failure.is_ambiguous() => {
                        d.retries += 1;
                        tracing::debug!("PutLogEvents failed ({failure}); was it stored?");
                        let n = batch.count as u64;
                        match lookup(&service, &group, &stream, &batch, &stop).await {
                            Some(Lookup::Stored) => {
                                d.lost_answers += 1;
                                return (batch, Ok(Delivery::default()), d);
                            }
                            Some(Lookup::Missing) => {}
                            Some(Lookup::Unsure) => d.maybe_twice += n,
                            None => {
                                d.maybe_twice += n;
                                return (batch, Err(NotDelivered::Aborted), d);
                            }
                        }
                        // The lookup waited already: send again now.
                        continue;
                    }
                    Action::Recreate => {
                        d.recreated += 1;
                        tracing::warn!(
                            "log group or stream missing ({failure}); creating it again"
                        );
                        if let Err(e) = service.recreate(&group, &stream).await {
                            tracing::warn!("creating the destination failed: {e}");
                        }
                    }
                    Action::Retry => {
                        if failure.is_throttling() {
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

/// Credentials refused: true once they have been for longer than `patience` (then the
/// failure is fatal). The first refusal is said once, with the deadline.
fn refused_too_long(
    since: &std::sync::Mutex<Option<Instant>>,
    patience: Duration,
    failure: &Failure,
) -> bool {
    let mut since = since.lock().expect("not poisoned");
    match *since {
        Some(t) => t.elapsed() > patience,
        None => {
            *since = Some(Instant::now());
            crate::say!(
                "dockwatch: AWS refused the credentials ({failure}); retrying for up to {} (--credentials-timeout) while the container keeps running",
                humantime::format_duration(patience)
            );
            false
        }
    }
}

/// Events skipped on resume as already in CloudWatch.
fn skipped(already: &Option<dedupe::AlreadyStored>) -> u64 {
    already.as_ref().map_or(0, |a| a.skipped)
}

/// What reading the stream says of a batch whose answer was lost.
#[derive(Debug, PartialEq, Eq)]
enum Lookup {
    Stored,
    Missing,
    Unsure,
}

/// First wait before reading a batch back: gives the service time to make a write readable.
const LOOKUP_FIRST_WAIT: Duration = Duration::from_secs(1);

/// Reads the batch's milliseconds back until a read succeeds; `None` when stopped first.
async fn lookup<S: LogService>(
    service: &S,
    group: &str,
    stream: &str,
    batch: &Sealed,
    stop: &CancellationToken,
) -> Option<Lookup> {
    let mut backoff = Backoff::new(LOOKUP_FIRST_WAIT, Duration::from_secs(20));
    loop {
        tokio::select! {
            () = tokio::time::sleep(backoff.next_delay().max(LOOKUP_FIRST_WAIT)) => {}
            () = stop.cancelled() => return None,
        }
        let read = tokio::select! {
            r = service.read(group, stream, batch.first_ms, batch.last_ms + 1) => r,
            () = stop.cancelled() => return None,
        };
        match read {
            Ok(window) => return Some(settle(batch, &window)),
            Err(f) => tracing::debug!("reading the stream back failed ({f}); trying again"),
        }
    }
}

/// Stored when the window holds the batch's lead and then exactly the batch; missing when
/// it holds only the lead (see the module doc).
fn settle(batch: &Sealed, window: &[(i64, String)]) -> Lookup {
    let lead = batch.lead as usize;
    let same = |(s, e): (&(i64, String), &Event)| s.0 == e.ts_ms && s.1 == e.message;
    if window.len() == lead {
        Lookup::Missing
    } else if window.len() == lead + batch.count
        && window[lead..].iter().zip(&batch.events()).all(same)
    {
        Lookup::Stored
    } else {
        Lookup::Unsure
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline::framing::Source;

    fn cur(n: i64) -> Position {
        Position {
            messages: Some([n as u64, 0]),
            cursor: None,
            file: None,
        }
    }

    fn passed(n: i64) -> Passed {
        Passed {
            cursor: cur(n),
            mark: Mark::default(),
        }
    }

    #[test]
    fn delivered_position_waits_for_every_earlier_batch() {
        // Batches 0 (3 events) and 1 (2 events); clean positions after events 3 and 5.
        let mut p = Progress {
            received: 5,
            boundaries: VecDeque::from([(3, passed(1)), (5, passed(2))]),
            ..Progress::default()
        };
        assert_eq!(p.ack(1, 2), [], "batch 0 is still in flight");
        assert_eq!(p.ack(0, 3), [passed(1), passed(2)]);
        assert_eq!(p.acked, 5);
        // A position reached with no new events is delivered at once.
        p.boundaries.push_back((5, passed(3)));
        assert_eq!(p.advance(), [passed(3)]);
        assert_eq!(p.advance(), []);
    }

    /// The shipper in-process, against a fake CloudWatch, on paused time: request order, the
    /// flush timer and the accounting of what was not delivered.
    mod service {
        use std::sync::Mutex;

        use super::*;

        /// How the fake answers one PutLogEvents.
        #[derive(Clone)]
        enum Answer {
            Accept,
            Fail(Failure),
            /// Stored, then the connection breaks before the answer.
            StoreThenBreak,
        }

        #[derive(Default)]
        struct State {
            /// Answers for the next calls, in order; `Accept` when empty.
            script: VecDeque<Answer>,
            /// Wait before answering a batch, by its seq.
            delay_of: Option<fn(u64) -> Duration>,
            /// Accepted batches: (when, seq, messages).
            accepted: Vec<(Instant, u64, Vec<String>)>,
            /// The stream as stored, in arrival order: (timestamp, message).
            stream: Vec<(i64, String)>,
            reads: u64,
            calls: u64,
            recreated: u64,
        }

        #[derive(Clone, Default)]
        struct Fake(Arc<Mutex<State>>);

        impl Fake {
            fn scripted(answers: impl IntoIterator<Item = Answer>) -> Self {
                let f = Fake::default();
                f.0.lock().unwrap().script.extend(answers);
                f
            }
            fn accepted_seqs(&self) -> Vec<u64> {
                self.0
                    .lock()
                    .unwrap()
                    .accepted
                    .iter()
                    .map(|a| a.1)
                    .collect()
            }
            fn accepted_messages(&self) -> Vec<String> {
                let st = self.0.lock().unwrap();
                let mut by_seq: Vec<_> = st.accepted.iter().collect();
                by_seq.sort_by_key(|a| a.1);
                by_seq.iter().flat_map(|a| a.2.clone()).collect()
            }
        }

        impl LogService for Fake {
            fn put(
                &self,
                _group: &str,
                _stream: &str,
                batch: &Sealed,
            ) -> impl std::future::Future<Output = Result<Rejected, Failure>> + Send {
                let this = self.clone();
                let seq = batch.seq;
                let events: Vec<(i64, String)> = batch
                    .events()
                    .into_iter()
                    .map(|e| (e.ts_ms, e.message))
                    .collect();
                let messages: Vec<String> = events.iter().map(|e| e.1.clone()).collect();
                async move {
                    let (answer, delay) = {
                        let mut st = this.0.lock().unwrap();
                        st.calls += 1;
                        let a = st.script.pop_front().unwrap_or(Answer::Accept);
                        (a, st.delay_of.map_or(Duration::ZERO, |d| d(seq)))
                    };
                    tokio::time::sleep(delay).await;
                    if let Answer::Fail(f) = answer {
                        return Err(f);
                    }
                    let mut st = this.0.lock().unwrap();
                    st.accepted.push((Instant::now(), seq, messages));
                    st.stream.extend(events);
                    match answer {
                        Answer::StoreThenBreak => {
                            Err(Failure::Transport("connection reset".into()))
                        }
                        _ => Ok(Rejected::default()),
                    }
                }
            }

            fn recreate(
                &self,
                _group: &str,
                _stream: &str,
            ) -> impl std::future::Future<Output = Result<(), Failure>> + Send {
                self.0.lock().unwrap().recreated += 1;
                std::future::ready(Ok(()))
            }

            fn read(
                &self,
                _group: &str,
                _stream: &str,
                from_ms: i64,
                to_ms: i64,
            ) -> impl std::future::Future<Output = Result<Vec<(i64, String)>, Failure>> + Send
            {
                let mut st = self.0.lock().unwrap();
                st.reads += 1;
                std::future::ready(Ok(stored_order(&st.stream, from_ms, to_ms)))
            }
        }

        /// A stream's events in `from..to` as CloudWatch returns them: by timestamp, then
        /// arrival.
        fn stored_order(stream: &[(i64, String)], from: i64, to: i64) -> Vec<(i64, String)> {
            let mut v: Vec<(i64, String)> = stream
                .iter()
                .filter(|e| (from..to).contains(&e.0))
                .cloned()
                .collect();
            v.sort_by_key(|e| e.0);
            v
        }

        fn service_error(code: &str, status: u16) -> Failure {
            Failure::Service {
                code: Some(code.into()),
                status,
                message: String::new(),
            }
        }

        fn config(max_in_flight: usize) -> ShipConfig {
            ShipConfig {
                max_in_flight,
                ..ShipConfig::new("g".into(), "s".into()).unwrap()
            }
        }

        fn shipper(fake: &Fake, max_in_flight: usize) -> Shipper<Fake> {
            Shipper::new(fake.clone(), &config(max_in_flight)).with_limits(Limits {
                max_events: 10,
                ..Limits::default()
            })
        }

        /// `n` events, one millisecond apart, in chunks of ten with a clean position after
        /// each chunk.
        fn chunks(n: usize) -> Vec<Chunk> {
            let events: Vec<Event> = (0..n)
                .map(|i| Event {
                    ts_ms: 1_000 + i as i64,
                    message: format!("line {i}"),
                    source: Source::Stdout,
                })
                .collect();
            events
                .chunks(10)
                .enumerate()
                .map(|(i, c)| Chunk {
                    events: c.to_vec(),
                    boundary: Some(cur(i as i64 + 1)),
                })
                .collect()
        }

        fn messages(n: usize) -> Vec<String> {
            (0..n).map(|i| format!("line {i}")).collect()
        }

        /// Sends the chunks, then closes the channel unless `keep_open`.
        fn feed(chunks: Vec<Chunk>, keep_open: bool) -> mpsc::Receiver<Chunk> {
            let (tx, rx) = mpsc::channel(64);
            for c in chunks {
                tx.try_send(c).unwrap();
            }
            if keep_open {
                std::mem::forget(tx);
            }
            rx
        }

        #[tokio::test(start_paused = true)]
        async fn the_position_moves_only_over_batches_all_acknowledged() {
            let fake = Fake::default();
            // Later batches are answered sooner: acknowledgements arrive out of order.
            fake.0.lock().unwrap().delay_of = Some(|seq| Duration::from_millis(500 - 100 * seq));
            let seen = Arc::new(Mutex::new(Vec::new()));
            let (check, log) = (fake.clone(), seen.clone());
            let s = shipper(&fake, 4).on_delivered(Box::new(move |passed, events| {
                let c = passed.last().unwrap().cursor;
                // Everything up to the position is acknowledged, in order.
                let mut acked = check.accepted_seqs();
                acked.sort();
                let whole = events / 10;
                assert!(acked.len() as u64 >= whole);
                assert_eq!(acked[..whole as usize], (0..whole).collect::<Vec<_>>()[..]);
                log.lock()
                    .unwrap()
                    .push((c.messages.unwrap()[0] as i64, events));
            }));
            let report = s
                .run(feed(chunks(40), false), CancellationToken::new())
                .await;
            assert_ne!(
                fake.accepted_seqs(),
                [0, 1, 2, 3],
                "answers came out of order"
            );
            assert_eq!(fake.accepted_messages(), messages(40));
            let seen = seen.lock().unwrap().clone();
            assert_eq!(seen.last(), Some(&(4, 40)));
            assert!(seen.windows(2).all(|w| w[0].0 < w[1].0 && w[0].1 <= w[1].1));
            assert_eq!((report.stats.events, report.stats.requests), (40, 4));
            assert!(report.undelivered.is_empty() && report.fatal.is_none());
        }

        #[tokio::test(start_paused = true)]
        async fn a_quiet_pipeline_sends_at_once_and_a_trickle_waits_a_quarter_interval() {
            let fake = Fake::default();
            let t0 = Instant::now();
            let s = shipper(&fake, 4);
            let (tx, rx) = mpsc::channel(4);
            let run = tokio::spawn(s.run(rx, CancellationToken::new()));
            let mut all = chunks(8).into_iter().flat_map(|c| c.events);
            let mut send = async |n: usize| {
                let events: Vec<Event> = all.by_ref().take(n).collect();
                tx.send(Chunk {
                    events,
                    boundary: None,
                })
                .await
                .unwrap();
                tokio::task::yield_now().await;
            };
            // Three lines into a quiet pipeline: all but the newest millisecond go at once
            // (that one may still get company and must not race this request).
            send(3).await;
            tokio::time::sleep(Duration::from_millis(1)).await;
            {
                let st = fake.0.lock().unwrap();
                assert_eq!(st.accepted.len(), 1, "sent at once");
                assert_eq!(st.accepted[0].0 - t0, Duration::ZERO);
                assert_eq!(st.accepted[0].2, messages(2));
            }
            // The held line (the newest millisecond of that cut) goes a quarter interval after
            // the request, the pipeline being quiet again.
            tokio::time::sleep(Duration::from_millis(49)).await;
            assert_eq!(fake.0.lock().unwrap().accepted.len(), 1, "not before 50 ms");
            tokio::time::sleep(Duration::from_millis(2)).await;
            {
                let st = fake.0.lock().unwrap();
                assert_eq!(st.accepted.len(), 2);
                assert_eq!(st.accepted[1].0 - t0, Duration::from_millis(50));
                assert_eq!(st.accepted[1].2, ["line 2"]);
            }
            // A line 10 ms after that request: it waits until 50 ms after it.
            tokio::time::sleep(Duration::from_millis(9)).await;
            send(1).await;
            tokio::time::sleep(Duration::from_millis(39)).await;
            assert_eq!(
                fake.0.lock().unwrap().accepted.len(),
                2,
                "held until 100 ms"
            );
            tokio::time::sleep(Duration::from_millis(2)).await;
            {
                let st = fake.0.lock().unwrap();
                assert_eq!(st.accepted.len(), 3);
                assert_eq!(st.accepted[2].0 - t0, Duration::from_millis(100));
                assert_eq!(st.accepted[2].2, ["line 3"]);
            }
            // A line that comes while a request is out (answers take 150 ms now) goes when
            // the answer comes and 50 ms have passed since that request: not at 200 ms.
            fake.0.lock().unwrap().delay_of = Some(|_| Duration::from_millis(150));
            tokio::time::sleep(Duration::from_millis(100)).await;
            let sent_at = Instant::now();
            send(1).await; // quiet: sent at once, answered 150 ms later
            tokio::time::sleep(Duration::from_millis(20)).await;
            send(1).await; // a request is out: waits for its answer
            tokio::time::sleep(Duration::from_millis(129)).await;
            assert_eq!(
                fake.0.lock().unwrap().accepted.len(),
                3,
                "the first is still out"
            );
            tokio::time::sleep(Duration::from_millis(2)).await;
            assert_eq!(
                fake.0.lock().unwrap().accepted.len(),
                4,
                "answered at 150 ms"
            );
            // The waiting line went out as the answer came (150 ms > 50 ms after the
            // request): accepted 150 ms later, at 300 ms, not 170 + 200 + 150.
            tokio::time::sleep(Duration::from_millis(150)).await;
            {
                let st = fake.0.lock().unwrap();
                assert_eq!(st.accepted.len(), 5);
                assert_eq!(st.accepted[4].0 - sent_at, Duration::from_millis(300));
                assert_eq!(st.accepted[4].2, ["line 5"]);
            }
            fake.0.lock().unwrap().delay_of = None;
            // A line long after: quiet again, sent at once.
            tokio::time::sleep(Duration::from_secs(5)).await;
            let before = Instant::now();
            send(1).await;
            tokio::time::sleep(Duration::from_millis(1)).await;
            let st = fake.0.lock().unwrap();
            assert_eq!(st.accepted.len(), 6);
            assert_eq!(st.accepted[5].0, before);
            drop(st);
            run.abort();
        }

        #[tokio::test(start_paused = true)]
        async fn an_abort_hands_back_every_unacknowledged_event_in_order() {
            let throttled = service_error("ThrottlingException", 400);
            let fake = Fake::scripted(std::iter::repeat_n(Answer::Fail(throttled), 1000));
            let abort = CancellationToken::new();
            let s = shipper(&fake, 2);
            let run = tokio::spawn(s.run(feed(chunks(35), true), abort.clone()));
            tokio::time::sleep(Duration::from_secs(30)).await;
            abort.cancel();
            let report = run.await.unwrap();
            let back: Vec<String> = report
                .undelivered
                .iter()
                .map(|e| e.message.clone())
                .collect();
            assert_eq!(back, messages(35));
            assert!(report.fatal.is_none());
            assert!(report.stats.retries > 2);
            assert_eq!(report.stats.throttled, report.stats.retries);
            assert_eq!(report.stats.events, 0);
        }

        #[tokio::test(start_paused = true)]
        async fn a_fatal_failure_stops_and_hands_back_the_rest() {
            let invalid = service_error("InvalidParameterException", 400);
            let fake = Fake::scripted([Answer::Accept, Answer::Fail(invalid.clone())]);
            let report = shipper(&fake, 1)
                .run(feed(chunks(30), false), CancellationToken::new())
                .await;
            assert_eq!(report.fatal, Some(invalid));
            assert_eq!(report.stats.events, 10);
            let back: Vec<String> = report
                .undelivered
                .iter()
                .map(|e| e.message.clone())
                .collect();
            assert_eq!(back, messages(30)[10..]);
        }

        fn stream_messages(fake: &Fake) -> Vec<String> {
            let st = fake.0.lock().unwrap();
            stored_order(&st.stream, i64::MIN, i64::MAX)
                .into_iter()
                .map(|e| e.1)
                .collect()
        }

        #[tokio::test(start_paused = true)]
        async fn a_lost_answer_of_a_stored_batch_is_not_sent_again() {
            let fake = Fake::scripted([Answer::Accept, Answer::StoreThenBreak]);
            let report = shipper(&fake, 1)
                .run(feed(chunks(30), false), CancellationToken::new())
                .await;
            assert_eq!(stream_messages(&fake), messages(30), "each event once");
            assert_eq!(report.stats.lost_answers, 1);
            assert_eq!(report.stats.maybe_twice, 0);
            assert_eq!(report.stats.events, 30);
            assert!(fake.0.lock().unwrap().reads >= 1);
        }

        #[tokio::test(start_paused = true)]
        async fn a_lost_request_is_sent_again_once() {
            let reset = Failure::Transport("connection reset".into());
            let fake = Fake::scripted([Answer::Fail(reset)]);
            let report = shipper(&fake, 2)
                .run(feed(chunks(30), false), CancellationToken::new())
                .await;
            assert_eq!(stream_messages(&fake), messages(30));
            assert_eq!(
                (report.stats.lost_answers, report.stats.maybe_twice),
                (0, 0)
            );
        }

        #[tokio::test(start_paused = true)]
        async fn a_lost_answer_among_equal_lines_is_settled_by_the_lead() {
            // Every event the same line at the same millisecond: batch 1 looks exactly like
            // batch 0, so only the count of what precedes it (its lead) tells them apart.
            let same: Vec<Chunk> = (0..2)
                .map(|_| Chunk {
                    events: (0..10)
                        .map(|_| Event {
                            ts_ms: 5,
                            message: "tick".into(),
                            source: Source::Stdout,
                        })
                        .collect(),
                    boundary: None,
                })
                .collect();
            let reset = Failure::Transport("connection reset".into());
            let fake = Fake::scripted([Answer::Accept, Answer::Fail(reset)]);
            let report = shipper(&fake, 1)
                .run(feed(same, false), CancellationToken::new())
                .await;
            assert_eq!(stream_messages(&fake).len(), 20, "not taken for stored");
            assert_eq!(report.stats.lost_answers, 0);
        }

        #[tokio::test(start_paused = true)]
        async fn a_stuck_batch_holds_back_at_most_max_ahead_batches() {
            let fake = Fake::default();
            // Batch 0 is answered only after a minute; the others at once.
            fake.0.lock().unwrap().delay_of =
                Some(|seq| Duration::from_secs(if seq == 0 { 60 } else { 0 }));
            let run = tokio::spawn(
                shipper(&fake, 4).run(feed(chunks(400), false), CancellationToken::new()),
            );
            tokio::time::sleep(Duration::from_secs(30)).await;
            let sent = fake.accepted_seqs();
            assert_eq!(sent.len() as u64, MAX_AHEAD - 1, "{sent:?}");
            let report = run.await.unwrap();
            assert_eq!(fake.accepted_messages(), messages(400));
            assert!(report.undelivered.is_empty());
        }

        #[tokio::test(start_paused = true)]
        async fn resume_sends_exactly_the_holes() {
            // A first run stored batches 0, 2 and 3 of 5 (batch 1 was still being retried
            // when dockwatch died); it checkpointed nothing past the start.
            let all = chunks(50);
            let first = Fake::default();
            {
                let mut st = first.0.lock().unwrap();
                for (i, c) in all.iter().enumerate() {
                    if [0, 2, 3].contains(&i) {
                        st.stream
                            .extend(c.events.iter().map(|e| (e.ts_ms, e.message.clone())));
                    }
                }
            }
            let stored = stored_order(&first.0.lock().unwrap().stream, 0, i64::MAX);
            let report = shipper(&first, 4)
                .resume_after(Mark { last_ms: 0, tie: 0 }, stored, 0)
                .run(feed(chunks(50), false), CancellationToken::new())
                .await;
            assert_eq!(stream_messages(&first), messages(50), "each event once");
            assert_eq!(report.stats.skipped_duplicates, 30);
            assert_eq!(report.stats.events, 20);
            assert_eq!(report.stats.unrecognised, 0);
        }

        #[tokio::test(start_paused = true)]
        async fn refused_credentials_are_retried_until_the_deadline_then_fatal() {
            let denied = service_error("ExpiredTokenException", 400);
            // Refused for 20 s, then good again: delivered, nothing lost.
            let fake = Fake::default();
            let until = Instant::now() + Duration::from_secs(20);
            let script = std::iter::repeat_n(Answer::Fail(denied.clone()), 200);
            fake.0.lock().unwrap().script.extend(script);
            let s = shipper(&fake, 1);
            let fake2 = fake.clone();
            let heal = tokio::spawn(async move {
                tokio::time::sleep_until(until).await;
                fake2.0.lock().unwrap().script.clear();
            });
            let report = s
                .run(feed(chunks(30), false), CancellationToken::new())
                .await;
            heal.await.unwrap();
            assert!(report.fatal.is_none(), "{:?}", report.fatal);
            assert_eq!(fake.accepted_messages(), messages(30));
            // Refused for ever: fatal once --credentials-timeout (5 minutes) passed.
            let fake = Fake::scripted(std::iter::repeat_n(Answer::Fail(denied.clone()), 10_000));
            let t0 = Instant::now();
            let report = shipper(&fake, 1)
                .run(feed(chunks(30), false), CancellationToken::new())
                .await;
            assert_eq!(report.fatal, Some(denied));
            let waited = t0.elapsed();
            assert!(
                waited >= Duration::from_secs(300) && waited < Duration::from_secs(340),
                "{waited:?}"
            );
            assert_eq!(report.undelivered.len(), 30);
        }

        #[tokio::test(start_paused = true)]
        async fn a_deleted_stream_is_created_again_and_nothing_is_lost() {
            let missing = service_error("ResourceNotFoundException", 400);
            let fake = Fake::scripted([Answer::Fail(missing)]);
            let report = shipper(&fake, 4)
                .run(feed(chunks(20), false), CancellationToken::new())
                .await;
            assert_eq!(fake.0.lock().unwrap().recreated, 1);
            assert_eq!(report.stats.recreated, 1);
            assert_eq!(fake.accepted_messages(), messages(20));
            assert!(report.undelivered.is_empty());
        }
    }
}
