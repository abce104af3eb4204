//! One destination or two: by default every event goes to the one stream; with
//! `--split-streams` stdout goes to `STREAM/stdout` and stderr to `STREAM/stderr`.
//!
//! With two streams a router sends each chunk's events to the shipper of their source, and
//! hands each clean log position to both. A position is delivered (and checkpointed) only when
//! both shippers have acknowledged everything before it; positions are unique (see
//! [`Cursor`]), so they are matched by equality, in the order the router saw them.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::{LogService, OnDelivered, ShipReport, Shipper};
use crate::config::ShipConfig;
use crate::docker::logs::Cursor;
use crate::ship::framing::Source;
use crate::ship::reader::Chunk;

/// The stream names events go to: `[STREAM]`, or `[STREAM/stdout, STREAM/stderr]`.
pub(crate) fn stream_names(stream: &str, split: bool) -> Vec<String> {
    if split {
        vec![format!("{stream}/stdout"), format!("{stream}/stderr")]
    } else {
        vec![stream.to_string()]
    }
}

/// Positions seen by the router, and how far each shipper has delivered.
#[derive(Default)]
struct Joint {
    /// Positions not yet delivered by both, oldest first; `base` is the index of the first.
    order: VecDeque<Cursor>,
    base: u64,
    /// Per shipper: index of the newest delivered position, and events delivered.
    delivered: [Option<u64>; 2],
    events: [u64; 2],
}

impl Joint {
    /// Shipper `i` delivered up to `c`; returns the newest position both delivered.
    fn delivered_by(&mut self, i: usize, c: Cursor, events: u64) -> Option<Cursor> {
        let pos = self.order.iter().position(|x| *x == c)? as u64 + self.base;
        self.delivered[i] = Some(pos);
        self.events[i] = events;
        let both = self.delivered[0]?.min(self.delivered[1]?);
        if both < self.base {
            return None;
        }
        let drop = (both - self.base + 1) as usize;
        let newest = self.order.drain(..drop).next_back();
        self.base += drop as u64;
        newest
    }
}

/// Ships everything from `rx` to one stream or two. `tails`, on resume, are the newest
/// events of each destination stream (for [`super::dedupe`]).
pub(crate) async fn ship<S: LogService>(
    service: S,
    cfg: &ShipConfig,
    rx: mpsc::Receiver<Chunk>,
    abort: CancellationToken,
    on_delivered: Option<OnDelivered>,
    tails: Option<Vec<Vec<(i64, String)>>>,
) -> ShipReport {
    let names = stream_names(&cfg.stream, cfg.split_streams);
    let mut tails = tails.unwrap_or_default().into_iter();
    let make = |name: &str, tail: Option<Vec<(i64, String)>>| {
        let one = ShipConfig {
            stream: name.to_string(),
            ..cfg.clone()
        };
        let s = Shipper::new(service.clone(), &one);
        match tail {
            Some(t) => s.skip_already_delivered(t),
            None => s,
        }
    };
    if names.len() == 1 {
        let mut s = make(&names[0], tails.next());
        if let Some(f) = on_delivered {
            s = s.on_delivered(f);
        }
        return s.run(rx, abort).await;
    }

    let joint = Arc::new(Mutex::new(Joint::default()));
    let on_delivered = Arc::new(Mutex::new(on_delivered));
    let mut shippers = Vec::new();
    let mut senders = Vec::new();
    for (i, name) in names.iter().enumerate() {
        let (tx, rx) = mpsc::channel::<Chunk>(16);
        senders.push(tx);
        let (joint, outer) = (joint.clone(), on_delivered.clone());
        let s = make(name, tails.next()).on_delivered(Box::new(move |c, n| {
            let mut j = joint.lock().expect("not poisoned");
            if let Some(both) = j.delivered_by(i, c, n) {
                let total = j.events.iter().sum();
                if let Some(f) = outer.lock().expect("not poisoned").as_mut() {
                    f(both, total);
                }
            }
        }));
        shippers.push(tokio::spawn(s.run(rx, abort.clone())));
    }
    let rest = route(rx, senders, joint.clone()).await;
    let mut report = ShipReport::default();
    for s in shippers {
        let r = s.await.unwrap_or_default();
        report.stats.add(&r.stats);
        report.undelivered.extend(r.undelivered);
        if report.fatal.is_none() {
            report.fatal = r.fatal;
        }
    }
    report.undelivered.extend(rest);
    report.undelivered.sort_by_key(|e| e.ts_ms);
    report
}

/// The router: each chunk's events to the shipper of their source, its clean position to
/// both (and to `joint`, in the order seen). Returns the events it could not hand on.
async fn route(
    mut rx: mpsc::Receiver<Chunk>,
    senders: Vec<mpsc::Sender<Chunk>>,
    joint: Arc<Mutex<Joint>>,
) -> Vec<crate::ship::framing::Event> {
    while let Some(chunk) = rx.recv().await {
        if let Some(b) = chunk.boundary {
            joint.lock().expect("not poisoned").order.push_back(b);
        }
        let (out, err): (Vec<_>, Vec<_>) = chunk
            .events
            .into_iter()
            .partition(|e| e.source == Source::Stdout);
        let a = senders[0]
            .send(Chunk {
                events: out,
                boundary: chunk.boundary,
            })
            .await;
        let b = senders[1]
            .send(Chunk {
                events: err,
                boundary: chunk.boundary,
            })
            .await;
        if a.is_err() || b.is_err() {
            break;
        }
    }
    rx.close();
    let mut rest = Vec::new();
    while let Ok(chunk) = rx.try_recv() {
        rest.extend(chunk.events);
    }
    rest
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(n: i64) -> Cursor {
        Cursor {
            ts_ns: n,
            source: Source::Stdout,
            nth: 1,
        }
    }

    #[test]
    fn a_position_is_delivered_when_both_streams_have_it() {
        let mut j = Joint::default();
        j.order.extend([c(1), c(2), c(3)]);
        assert_eq!(
            j.delivered_by(0, c(2), 0),
            None,
            "stderr has delivered nothing yet"
        );
        assert_eq!(j.delivered_by(1, c(1), 0), Some(c(1)));
        assert_eq!(j.delivered_by(1, c(3), 0), Some(c(2)));
        assert_eq!(j.delivered_by(0, c(3), 0), Some(c(3)));
        assert!(j.order.is_empty());
        j.order.push_back(c(4));
        assert_eq!(j.delivered_by(0, c(4), 0), None);
        assert_eq!(j.delivered_by(1, c(4), 0), Some(c(4)));
    }

    #[test]
    fn names() {
        assert_eq!(stream_names("s", false), ["s"]);
        assert_eq!(stream_names("s", true), ["s/stdout", "s/stderr"]);
    }
}
