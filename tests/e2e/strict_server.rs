//! A strict, fault-injecting CloudWatch Logs server for tests and benchmarks.
//!
//! It speaks the JSON 1.1 protocol the AWS SDK uses (`POST /`, `X-Amz-Target:
//! Logs_20140328.<Operation>`) on loopback, and rejects every PutLogEvents rule violation the
//! way AWS does (`InvalidParameterException`), counting each: more than 10,000 events or
//! 1,048,576 bytes (message bytes + 26 per event), an event over the event limit, an empty
//! message, timestamps out of order or spanning more than 24 hours. Events over 2 hours in
//! the future or older than 14 days are reported in `rejectedLogEventsInfo`. What it accepts is
//! recorded per stream in arrival order, and [`StrictServer::events`] returns a stream as a
//! reader sees it: ordered by timestamp, then by arrival.
//!
//! Faults (changed at any time through [`StrictServer::faults`]): a share of requests
//! throttled, a share answered 500/503, latency on every request, an outage that drops every
//! connection, deleting a group, and a share of read requests (DescribeLogGroups,
//! DescribeLogStreams, GetLogEvents, FilterLogEvents) throttled or failed.

#![allow(dead_code)]

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Incoming};
use hyper::{Request, Response};
use serde_json::{Value, json};

/// A PutLogEvents request, parsed without building a JSON tree per event.
#[derive(serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct PutInput<'a> {
    #[serde(default)]
    log_group_name: String,
    #[serde(default)]
    log_stream_name: String,
    #[serde(default, borrow)]
    log_events: Vec<InEvent<'a>>,
}

/// An event; the message borrows from the request body unless it has escapes.
#[derive(serde::Deserialize)]
struct InEvent<'a> {
    timestamp: Option<i64>,
    #[serde(borrow)]
    message: Option<std::borrow::Cow<'a, str>>,
}

/// Faults to inject; all off by default.
#[derive(Debug, Clone, Default)]
pub struct Faults {
    /// Share of PutLogEvents answered ThrottlingException (0.0-1.0).
    pub throttle: f64,
    /// Share of PutLogEvents answered 500 or 503.
    pub server_error: f64,
    /// Delay before every answer.
    pub latency: Duration,
    /// Drop every connection without an answer.
    pub outage: bool,
    /// Drop PutLogEvents requests only (the destination can still be created).
    pub outage_puts: bool,
    /// Refuse every request's credentials (UnrecognizedClientException).
    pub deny_auth: bool,
    /// Added to the server's clock when judging events too old or too new.
    pub clock_skew_ms: i64,
    /// Check and count events but do not keep them (benchmarks).
    pub discard: bool,
    /// Share of read requests (DescribeLogGroups, DescribeLogStreams, Get/FilterLogEvents) answered
    /// with a fault: ThrottlingException, 500 or 503 in turn.
    pub read_faults: f64,
    /// Share of accepted PutLogEvents whose answer is lost: stored, then the connection is
    /// dropped (the ambiguous failure CloudWatch's lack of an idempotency key allows).
    pub lose_response: f64,
    /// Answer PutLogEvents with ExpiredTokenException (credentials that expired mid-run).
    pub expired_token: bool,
}

/// What the server saw.
#[derive(Debug, Default)]
pub struct Stats {
    pub put_requests: u64,
    pub accepted_requests: u64,
    pub throttled: u64,
    pub server_errors: u64,
    pub dropped: u64,
    /// Requests refused for breaking a PutLogEvents rule.
    pub violations: u64,
    pub violation_messages: Vec<String>,
    /// Most requests in flight at once.
    pub max_concurrent: u64,
    /// Events rejected in rejectedLogEventsInfo.
    pub rejected_events: u64,
    /// For each accepted event: arrival time less its timestamp, in ms.
    pub latencies_ms: Vec<i64>,
    /// Read requests answered with a fault (`read_faults`).
    pub read_faults: u64,
    /// Accepted PutLogEvents whose answer was dropped (`lose_response`).
    pub lost_responses: u64,
    /// Events accepted in all.
    pub accepted_events: u64,
    /// Message bytes accepted in all.
    pub accepted_bytes: u64,
    /// Requests per call other than PutLogEvents (faults included).
    pub reads: HashMap<String, u64>,
    /// When the last accepted request was answered.
    pub last_accepted: Option<std::time::Instant>,
    current: u64,
}

#[derive(Debug, Default)]
struct Group {
    streams: HashMap<String, Vec<(i64, String)>>,
}

#[derive(Debug)]
struct State {
    groups: HashMap<String, Group>,
    /// Every event ever accepted, per (group, stream), kept when a group is deleted.
    archive: HashMap<(String, String), Vec<(i64, String)>>,
    faults: Faults,
    stats: Stats,
    max_event_bytes: usize,
    rng: u64,
}

pub struct StrictServer {
    pub url: String,
    state: Arc<Mutex<State>>,
    _rt: tokio::runtime::Runtime,
}

impl StrictServer {
    /// Starts a server with AWS's current event limit (1 MiB).
    pub fn start() -> Self {
        Self::with_event_limit(1_048_576)
    }

    pub fn with_event_limit(max_event_bytes: usize) -> Self {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        Self::serve(listener, max_event_bytes)
    }

    /// Serves on a listener made elsewhere (the benchmark binds one inside another network
    /// namespace), with AWS's current event limit.
    pub fn on_listener(listener: std::net::TcpListener) -> Self {
        Self::serve(listener, 1_048_576)
    }

    fn serve(listener: std::net::TcpListener, max_event_bytes: usize) -> Self {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let state = Arc::new(Mutex::new(State {
            groups: HashMap::new(),
            archive: HashMap::new(),
            faults: Faults::default(),
            stats: Stats::default(),
            max_event_bytes,
            rng: 0x9E37_79B9_7F4A_7C15,
        }));
        listener.set_nonblocking(true).unwrap();
        let listener = {
            let _guard = rt.enter();
            tokio::net::TcpListener::from_std(listener).unwrap()
        };
        let url = format!("http://{}", listener.local_addr().unwrap());
        let st = state.clone();
        rt.spawn(async move {
            loop {
                let Ok((sock, _)) = listener.accept().await else {
                    continue;
                };
                if st.lock().unwrap().faults.outage {
                    st.lock().unwrap().stats.dropped += 1;
                    drop(sock);
                    continue;
                }
                let st = st.clone();
                tokio::spawn(async move {
                    let svc = hyper::service::service_fn(move |req| handle(st.clone(), req));
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(sock), svc)
                        .await;
                });
            }
        });
        Self {
            url,
            state,
            _rt: rt,
        }
    }

    /// Appends events to a stream as if PutLogEvents had accepted them, creating the group
    /// and the stream when missing (tests of the reading side).
    pub fn append(
        &self,
        group: &str,
        stream: &str,
        events: impl IntoIterator<Item = (i64, String)>,
    ) {
        let mut s = self.state.lock().unwrap();
        let events: Vec<(i64, String)> = events.into_iter().collect();
        s.archive
            .entry((group.to_string(), stream.to_string()))
            .or_default()
            .extend(events.iter().cloned());
        s.groups
            .entry(group.to_string())
            .or_default()
            .streams
            .entry(stream.to_string())
            .or_default()
            .extend(events);
    }

    /// Changes the faults.
    pub fn faults(&self, f: impl FnOnce(&mut Faults)) {
        f(&mut self.state.lock().unwrap().faults);
    }

    pub fn with_stats<T>(&self, f: impl FnOnce(&Stats) -> T) -> T {
        f(&self.state.lock().unwrap().stats)
    }

    /// Deletes a group and its streams, as DeleteLogGroup does.
    pub fn delete_group(&self, group: &str) {
        self.state.lock().unwrap().groups.remove(group);
    }

    /// The stream's events as a reader sees them: by timestamp, then by arrival.
    pub fn events(&self, group: &str, stream: &str) -> Vec<(i64, String)> {
        let s = self.state.lock().unwrap();
        let mut ev = s
            .groups
            .get(group)
            .and_then(|g| g.streams.get(stream))
            .cloned()
            .unwrap_or_default();
        ev.sort_by_key(|e| e.0); // stable: arrival order within a timestamp
        ev
    }

    /// Everything ever accepted for the stream, as [`Self::events`] orders it, including
    /// events of a group deleted since.
    pub fn archive(&self, group: &str, stream: &str) -> Vec<String> {
        let s = self.state.lock().unwrap();
        let mut ev = s
            .archive
            .get(&(group.to_string(), stream.to_string()))
            .cloned()
            .unwrap_or_default();
        ev.sort_by_key(|e| e.0);
        ev.into_iter().map(|e| e.1).collect()
    }

    pub fn messages(&self, group: &str, stream: &str) -> Vec<String> {
        self.events(group, stream)
            .into_iter()
            .map(|e| e.1)
            .collect()
    }

    pub fn stream_names(&self, group: &str) -> Vec<String> {
        let s = self.state.lock().unwrap();
        let mut v: Vec<String> = s
            .groups
            .get(group)
            .map(|g| g.streams.keys().cloned().collect())
            .unwrap_or_default();
        v.sort();
        v
    }
}

fn error(status: u16, typ: &str, message: &str) -> Response<Full<Bytes>> {
    let body = json!({"__type": typ, "message": message}).to_string();
    Response::builder()
        .status(status)
        .header("content-type", "application/x-amz-json-1.1")
        .header("x-amzn-requestid", "strict-server")
        .body(Full::new(Bytes::from(body)))
        .unwrap()
}

fn ok(v: Value) -> Response<Full<Bytes>> {
    Response::builder()
        .status(200)
        .header("content-type", "application/x-amz-json-1.1")
        .header("x-amzn-requestid", "strict-server")
        .body(Full::new(Bytes::from(v.to_string())))
        .unwrap()
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

/// Tracks requests in flight.
struct Concurrent(Arc<Mutex<State>>);
impl Concurrent {
    fn enter(st: &Arc<Mutex<State>>) -> Self {
        let mut s = st.lock().unwrap();
        s.stats.current += 1;
        s.stats.max_concurrent = s.stats.max_concurrent.max(s.stats.current);
        Concurrent(st.clone())
    }
}
impl Drop for Concurrent {
    fn drop(&mut self) {
        self.0.lock().unwrap().stats.current -= 1;
    }
}

async fn handle(
    st: Arc<Mutex<State>>,
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, std::io::Error> {
    let _c = Concurrent::enter(&st);
    let target = req
        .headers()
        .get("x-amz-target")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    let op = target.rsplit('.').next().unwrap_or("").to_string();
    let body = match req.into_body().collect().await {
        Ok(b) => b.to_bytes(),
        Err(e) => return Err(std::io::Error::other(e)),
    };
    // Dropped when the outage holds before or after the latency.
    let dropping = || {
        let s = st.lock().unwrap();
        s.faults.outage || (s.faults.outage_puts && op == "PutLogEvents")
    };
    let latency = st.lock().unwrap().faults.latency;
    let dropped_before = dropping();
    if !latency.is_zero() {
        tokio::time::sleep(latency).await;
    }
    if dropped_before || dropping() {
        st.lock().unwrap().stats.dropped += 1;
        // An error from the service closes the connection without an answer.
        return Err(std::io::Error::other("outage"));
    }
    if st.lock().unwrap().faults.deny_auth {
        return Ok(error(
            400,
            "UnrecognizedClientException",
            "The security token included in the request is invalid.",
        ));
    }
    if op == "PutLogEvents" {
        let input: PutInput = match serde_json::from_slice(&body) {
            Ok(v) => v,
            Err(e) => return Ok(error(400, "SerializationException", &e.to_string())),
        };
        let mut s = st.lock().unwrap();
        if s.faults.expired_token {
            return Ok(error(
                400,
                "ExpiredTokenException",
                "The security token included in the request is expired",
            ));
        }
        let resp = put(&mut s, input);
        if resp.status() == 200
            && s.faults.lose_response > 0.0
            && roll(&mut s) < s.faults.lose_response
        {
            s.stats.lost_responses += 1;
            return Err(std::io::Error::other("answer lost"));
        }
        return Ok(resp);
    }
    let input: Value = match serde_json::from_slice(&body) {
        Ok(v) => v,
        Err(e) => return Ok(error(400, "SerializationException", &e.to_string())),
    };
    let mut s = st.lock().unwrap();
    *s.stats.reads.entry(op.clone()).or_default() += 1;
    if matches!(
        op.as_str(),
        "DescribeLogGroups" | "DescribeLogStreams" | "GetLogEvents" | "FilterLogEvents"
    ) && let Some(fault) = read_fault(&mut s)
    {
        return Ok(fault);
    }
    let resp = match op.as_str() {
        "CreateLogGroup" => {
            let name = input["logGroupName"].as_str().unwrap_or("").to_string();
            match s.groups.entry(name) {
                std::collections::hash_map::Entry::Occupied(_) => error(
                    400,
                    "ResourceAlreadyExistsException",
                    "The specified log group already exists",
                ),
                std::collections::hash_map::Entry::Vacant(v) => {
                    v.insert(Group::default());
                    ok(json!({}))
                }
            }
        }
        "CreateLogStream" => {
            let g = input["logGroupName"].as_str().unwrap_or("");
            let name = input["logStreamName"].as_str().unwrap_or("").to_string();
            match s.groups.get_mut(g) {
                None => error(
                    400,
                    "ResourceNotFoundException",
                    "The specified log group does not exist.",
                ),
                Some(grp) if grp.streams.contains_key(&name) => error(
                    400,
                    "ResourceAlreadyExistsException",
                    "The specified log stream already exists",
                ),
                Some(grp) => {
                    grp.streams.insert(name, Vec::new());
                    ok(json!({}))
                }
            }
        }
        "GetLogEvents" => get(&s, &input),
        "FilterLogEvents" => filter(&s, &input),
        "DescribeLogGroups" => {
            let prefix = input["logGroupNamePrefix"].as_str().unwrap_or("");
            let mut names: Vec<&String> =
                s.groups.keys().filter(|g| g.starts_with(prefix)).collect();
            names.sort();
            let groups: Vec<Value> = names
                .into_iter()
                .map(|g| json!({"logGroupName": g}))
                .collect();
            ok(json!({"logGroups": groups}))
        }
        "DescribeLogStreams" => {
            let g = input["logGroupName"].as_str().unwrap_or("");
            let prefix = input["logStreamNamePrefix"].as_str().unwrap_or("");
            match s.groups.get(g) {
                None => error(
                    400,
                    "ResourceNotFoundException",
                    "The specified log group does not exist.",
                ),
                Some(grp) => {
                    let mut names: Vec<(&String, Option<i64>)> = grp
                        .streams
                        .iter()
                        .filter(|(n, _)| n.starts_with(prefix))
                        .map(|(n, ev)| (n, ev.iter().map(|e| e.0).max()))
                        .collect();
                    names.sort();
                    let streams: Vec<Value> = names
                        .into_iter()
                        .map(|(n, last)| json!({"logStreamName": n, "lastEventTimestamp": last}))
                        .collect();
                    ok(json!({"logStreams": streams}))
                }
            }
        }
        _ => error(
            400,
            "UnknownOperationException",
            &format!("not implemented: {op}"),
        ),
    };
    Ok(resp)
}

/// A reproducible fault decision in [0, 1) (xorshift).
fn roll(s: &mut State) -> f64 {
    s.rng ^= s.rng << 13;
    s.rng ^= s.rng >> 7;
    s.rng ^= s.rng << 17;
    (s.rng % 10_000) as f64 / 10_000.0
}

/// The fault a read request gets, if any (`read_faults`).
fn read_fault(s: &mut State) -> Option<Response<Full<Bytes>>> {
    if roll(s) >= s.faults.read_faults {
        return None;
    }
    s.stats.read_faults += 1;
    Some(match s.stats.read_faults % 3 {
        0 => throttled(),
        n => server_error(n == 2),
    })
}

fn throttled() -> Response<Full<Bytes>> {
    error(400, "ThrottlingException", "Rate exceeded")
}

/// A 503 (`unavailable`) or a 500.
fn server_error(unavailable: bool) -> Response<Full<Bytes>> {
    if unavailable {
        error(
            503,
            "ServiceUnavailableException",
            "The service is unavailable",
        )
    } else {
        error(500, "InternalFailure", "internal failure")
    }
}

fn put(s: &mut State, input: PutInput<'_>) -> Response<Full<Bytes>> {
    s.stats.put_requests += 1;
    let roll = roll(s);
    if roll < s.faults.throttle {
        s.stats.throttled += 1;
        return throttled();
    }
    if roll < s.faults.throttle + s.faults.server_error {
        s.stats.server_errors += 1;
        return server_error(s.stats.server_errors.is_multiple_of(2));
    }
    let (g, st) = (
        input.log_group_name.as_str(),
        input.log_stream_name.as_str(),
    );
    let events = input.log_events;
    if let Err(msg) = check(&events, s.max_event_bytes) {
        s.stats.violations += 1;
        s.stats.violation_messages.push(msg.clone());
        return error(400, "InvalidParameterException", &msg);
    }
    let now = now_ms() + s.faults.clock_skew_ms;
    let Some(stream) = s.groups.get_mut(g).and_then(|grp| grp.streams.get_mut(st)) else {
        return error(
            400,
            "ResourceNotFoundException",
            "The specified log group or stream does not exist.",
        );
    };
    let discard = s.faults.discard;
    let mut discarded: Vec<(i64, usize)> = Vec::new();
    let (mut too_new_start, mut too_old_end) = (None, None);
    let n = events.len();
    for (i, e) in events.into_iter().enumerate() {
        let ts = e.timestamp.unwrap_or(0);
        if ts > now + 2 * 3600 * 1000 {
            too_new_start.get_or_insert(i);
            continue;
        }
        if ts < now - 14 * 24 * 3600 * 1000 {
            too_old_end = Some(i + 1);
            continue;
        }
        let message = e.message.unwrap_or_default();
        if discard {
            // Benchmarks: count, do not keep.
            discarded.push((ts, message.len()));
        } else {
            stream.push((ts, message.into_owned()));
        }
    }
    let rejected = rejected_count(too_new_start, too_old_end, n);
    let arrived = now_ms();
    let new: Vec<(i64, usize)> = if discard {
        discarded
    } else {
        stream[stream.len() - (n - rejected)..]
            .iter()
            .map(|(t, m)| (*t, m.len()))
            .collect()
    };
    let accepted: Vec<(i64, String)> = if discard {
        Vec::new()
    } else {
        stream[stream.len() - (n - rejected)..].to_vec()
    };
    s.stats.rejected_events += rejected as u64;
    s.stats.accepted_events += new.len() as u64;
    s.stats.accepted_bytes += new.iter().map(|(_, l)| *l as u64).sum::<u64>();
    s.stats
        .latencies_ms
        .extend(new.iter().map(|(ts, _)| arrived - ts));
    if !discard {
        s.archive
            .entry((g.to_string(), st.to_string()))
            .or_default()
            .extend(accepted);
    }
    s.stats.accepted_requests += 1;
    s.stats.last_accepted = Some(std::time::Instant::now());
    let mut out = json!({"nextSequenceToken": "0"});
    if too_new_start.is_some() || too_old_end.is_some() {
        let mut info = serde_json::Map::new();
        if let Some(i) = too_new_start {
            info.insert("tooNewLogEventStartIndex".into(), json!(i));
        }
        if let Some(i) = too_old_end {
            info.insert("tooOldLogEventEndIndex".into(), json!(i));
        }
        out["rejectedLogEventsInfo"] = Value::Object(info);
    }
    ok(out)
}

/// Every rule of a PutLogEvents request; the message says which one broke.
fn check(events: &[InEvent<'_>], max_event_bytes: usize) -> Result<(), String> {
    if events.is_empty() || events.len() > 10_000 {
        return Err(format!(
            "{} events: a request holds 1 to 10000",
            events.len()
        ));
    }
    let mut total = 0usize;
    let mut prev: Option<i64> = None;
    let (mut min, mut max) = (i64::MAX, i64::MIN);
    for (i, e) in events.iter().enumerate() {
        let msg = e
            .message
            .as_deref()
            .ok_or(format!("event {i}: no message"))?;
        let ts = e.timestamp.ok_or(format!("event {i}: no timestamp"))?;
        if msg.is_empty() {
            return Err(format!("event {i}: empty message"));
        }
        let size = msg.len() + 26;
        if size > max_event_bytes {
            return Err(format!(
                "event {i}: {size} bytes, over the {max_event_bytes}-byte event limit"
            ));
        }
        total += size;
        if let Some(p) = prev
            && ts < p
        {
            return Err(format!(
                "event {i}: timestamps out of order ({ts} after {p})"
            ));
        }
        prev = Some(ts);
        min = min.min(ts);
        max = max.max(ts);
    }
    if total > 1_048_576 {
        return Err(format!("{total} bytes: over the 1048576-byte batch limit"));
    }
    if max - min > 24 * 3600 * 1000 {
        return Err("the batch spans more than 24 hours".into());
    }
    Ok(())
}

fn rejected_count(too_new_start: Option<usize>, too_old_end: Option<usize>, n: usize) -> usize {
    let old = too_old_end.unwrap_or(0);
    let new = too_new_start.map_or(0, |i| n - i.max(old));
    old + new
}

/// GetLogEvents, enough for readers: events by timestamp, pages of at most 10,000 from the
/// head (`startFromHead`) or from the tail backwards; tokens are `f-TS:N` / `b-TS:N`
/// positions in (timestamp, arrival) order.
/// FilterLogEvents: the group's events (of the named streams, or all) from `startTime` to
/// `endTime` (both inclusive, as AWS), ordered by time across streams; `filterPattern` is taken
/// as a plain substring. Pages of `limit` (10,000 by default) with an offset token.
fn filter(s: &State, input: &Value) -> Response<Full<Bytes>> {
    let g = input["logGroupName"].as_str().unwrap_or("");
    let Some(grp) = s.groups.get(g) else {
        return error(
            400,
            "ResourceNotFoundException",
            "The specified log group does not exist.",
        );
    };
    let names: Option<Vec<&str>> = input["logStreamNames"]
        .as_array()
        .map(|a| a.iter().filter_map(Value::as_str).collect());
    let start = input["startTime"].as_i64().unwrap_or(i64::MIN);
    let end = input["endTime"].as_i64().unwrap_or(i64::MAX);
    let pattern = input["filterPattern"].as_str().unwrap_or("");
    let mut ev: Vec<(i64, &str, usize, &str)> = grp
        .streams
        .iter()
        .filter(|(n, _)| names.as_ref().is_none_or(|ns| ns.contains(&n.as_str())))
        .flat_map(|(n, evs)| {
            evs.iter()
                .enumerate()
                .map(move |(i, (t, m))| (*t, n.as_str(), i, m.as_str()))
        })
        .filter(|(t, _, _, m)| (start..=end).contains(t) && m.contains(pattern))
        .collect();
    ev.sort();
    let limit = input["limit"].as_u64().unwrap_or(10_000).min(10_000) as usize;
    let lo: usize = input["nextToken"]
        .as_str()
        .and_then(|t| t.strip_prefix("p-")?.parse().ok())
        .unwrap_or(0)
        .min(ev.len());
    let hi = (lo + limit).min(ev.len());
    let events: Vec<Value> = ev[lo..hi]
        .iter()
        .map(|(t, n, i, m)| {
            json!({"logStreamName": n, "timestamp": t, "message": m, "ingestionTime": t,
                   "eventId": format!("{n}-{i}")})
        })
        .collect();
    let mut out = json!({ "events": events });
    if hi < ev.len() {
        out["nextToken"] = json!(format!("p-{hi}"));
    }
    ok(out)
}

fn get(s: &State, input: &Value) -> Response<Full<Bytes>> {
    let g = input["logGroupName"].as_str().unwrap_or("");
    let st = input["logStreamName"].as_str().unwrap_or("");
    let Some(stream) = s.groups.get(g).and_then(|grp| grp.streams.get(st)) else {
        return error(
            400,
            "ResourceNotFoundException",
            "The specified log group or stream does not exist.",
        );
    };
    // startTime inclusive, endTime exclusive, as CloudWatch. A token is a position in the
    // stream's order (timestamp, then arrival), as CloudWatch's are: an event that arrives
    // later with an older timestamp than a forward token's position is behind it, and a
    // reader going forward never sees it.
    let from = input["startTime"].as_i64().unwrap_or(i64::MIN);
    let to = input["endTime"].as_i64().unwrap_or(i64::MAX);
    let mut ev: Vec<((i64, i64), &str)> = stream
        .iter()
        .enumerate()
        .filter(|(_, e)| (from..to).contains(&e.0))
        .map(|(i, e)| ((e.0, i as i64), e.1.as_str()))
        .collect();
    ev.sort_by_key(|e| e.0);
    let limit = input["limit"].as_u64().unwrap_or(10_000).min(10_000) as usize;
    let position = |t: &str| -> Option<(i64, i64)> {
        let (ts, i) = t.get(2..)?.split_once(':')?;
        Some((ts.parse().ok()?, i.parse().ok()?))
    };
    let token = input["nextToken"].as_str();
    let from_head = input["startFromHead"].as_bool().unwrap_or(false);
    let (lo, hi) = match token.map(|t| (t.starts_with("f-"), position(t))) {
        Some((true, Some(p))) => {
            let lo = ev.partition_point(|e| e.0 <= p);
            (lo, (lo + limit).min(ev.len()))
        }
        Some((false, Some(p))) => {
            let hi = ev.partition_point(|e| e.0 < p);
            (hi.saturating_sub(limit), hi)
        }
        Some((_, None)) => {
            return error(
                400,
                "InvalidParameterException",
                "The specified nextToken is invalid.",
            );
        }
        None if from_head => (0, limit.min(ev.len())),
        None => (ev.len().saturating_sub(limit), ev.len()),
    };
    let key = |p: (i64, i64)| format!("{}:{}", p.0, p.1);
    let forward = match ev.get(lo..hi).and_then(|s| s.last()) {
        Some(e) => format!("f-{}", key(e.0)),
        None => match token {
            Some(t) if t.starts_with("f-") => t.to_string(),
            _ if hi == 0 => format!("f-{}", key((i64::MIN, -1))),
            _ => format!("f-{}", key(ev[hi - 1].0)),
        },
    };
    let backward = match ev.get(lo..hi).and_then(|s| s.first()) {
        Some(e) => format!("b-{}", key(e.0)),
        None => format!("b-{}", key((i64::MIN, -1))),
    };
    let events: Vec<Value> = ev[lo..hi]
        .iter()
        .map(|((t, _), m)| json!({"timestamp": t, "message": m, "ingestionTime": t}))
        .collect();
    ok(json!({
        "events": events,
        "nextForwardToken": forward,
        "nextBackwardToken": backward,
    }))
}
