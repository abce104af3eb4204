//! One destination or two: by default every event goes to the one stream; with
//! `--split-streams` stdout goes to `STREAM/stdout` and stderr to `STREAM/stderr`.
//!
//! With two streams a router sends each chunk's events to the shipper of their source, and
//! hands each clean position to both. A position is delivered (and checkpointed) only when
//! both shippers have acknowledged everything before it; positions are unique (see
//! [`Position`]), so they are matched by equality, in the order the router saw them. Each
//! shipper reports every position it passes with its stream's [`Mark`] there, so the joint
//! position carries one mark per stream.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::{LogService, OnDelivered, Passed, ShipReport, Shipper};
use crate::config::ShipConfig;
use crate::docker::logs::Position;
use crate::pipeline::batcher::Mark;
use crate::pipeline::framing::Source;
use crate::pipeline::reader::Chunk;

/// The stream names events go to: `[STREAM]`, or `[STREAM/stdout, STREAM/stderr]`.
pub(crate) fn stream_names(stream: &str, split: bool) -> Vec<String> {
    if split {
        vec![format!("{stream}/stdout"), format!("{stream}/stderr")]
    } else {
        vec![stream.to_string()]
    }
}

/// Called with each new delivered position, the mark of each destination stream there, and
/// the events delivered in all.
pub(crate) type OnPosition = Box<dyn FnMut(Position, &[Mark], u64) + Send>;

/// Where a destination stream continues on resume: its mark at the checkpoint's position
/// and what it holds from there on (for [`super::dedupe`]).
pub(crate) struct ResumeFrom {
    pub(crate) mark: Mark,
    pub(crate) stored: Vec<(i64, String)>,
    /// How far apart stored and framed times may be (the attach path's; see `dedupe`).
    pub(crate) tolerance_ms: i64,
}

/// Positions seen by the router, and how far each shipper has delivered.
#[derive(Default)]
struct Joint {
    /// Positions not yet delivered by both, oldest first, with each stream's mark there once
    /// known; `base` is the index of the first.
    order: VecDeque<(Position, [Option<Mark>; 2])>,
    base: u64,
    /// Per shipper: index of the newest delivered position, and events delivered.
    delivered: [Option<u64>; 2],
    events: [u64; 2],
}

impl Joint {
    /// Shipper `i` passed these positions; returns the newest position both delivered, with
    /// both marks.
    fn delivered_by(
        &mut self,
        i: usize,
        passed: &[Passed],
        events: u64,
    ) -> Option<(Position, [Mark; 2])> {
        self.events[i] = events;
        for p in passed {
            let from = self.delivered[i].map_or(0, |d| (d + 1).saturating_sub(self.base)) as usize;
            let Some(at) = self.order.iter().skip(from).position(|x| x.0 == p.cursor) else {
                continue;
            };
            let at = from + at;
            self.order[at].1[i] = Some(p.mark);
            self.delivered[i] = Some(at as u64 + self.base);
        }
        let both = self.delivered[0]?.min(self.delivered[1]?);
        if both < self.base {
            return None;
        }
        let drop = (both - self.base + 1) as usize;
        let (cursor, marks) = self.order.drain(..drop).next_back()?;
        self.base += drop as u64;
        Some((cursor, [marks[0]?, marks[1]?]))
    }
}

/// Ships everything from `rx` to one stream or two. `resume`, on resume, says where each
/// destination stream continues.
pub(crate) async fn ship<S: LogService>(
    service: S,
    cfg: &ShipConfig,
    rx: mpsc::Receiver<Chunk>,
    abort: CancellationToken,
    on_position: Option<OnPosition>,
    resume: Option<Vec<ResumeFrom>>,
) -> ShipReport {
    let names = stream_names(&cfg.stream, cfg.split_streams);
    let mut resume = resume.unwrap_or_default().into_iter();
    let make = |name: &str, from: Option<ResumeFrom>| {
        let one = ShipConfig {
            stream: name.to_string(),
            ..cfg.clone()
        };
        let s = Shipper::new(service.clone(), &one);
        match from {
            Some(r) => s.resume_after(r.mark, r.stored, r.tolerance_ms),
            None => s,
        }
    };
    if names.len() == 1 {
        let mut s = make(&names[0], resume.next());
        if let Some(mut f) = on_position {
            let one: OnDelivered = Box::new(move |passed, events| {
                if let Some(p) = passed.last() {
                    f(p.cursor, &[p.mark], events);
                }
            });
            s = s.on_delivered(one);
        }
        return s.run(rx, abort).await;
    }

    let joint = Arc::new(Mutex::new(Joint::default()));
    let on_position = Arc::new(Mutex::new(on_position));
    let mut shippers = Vec::new();
    let mut senders = Vec::new();
    for (i, name) in names.iter().enumerate() {
        let (tx, rx) = mpsc::channel::<Chunk>(16);
        senders.push(tx);
        let (joint, outer) = (joint.clone(), on_position.clone());
        let s = make(name, resume.next()).on_delivered(Box::new(move |passed, n| {
            let mut j = joint.lock().expect("not poisoned");
            if let Some((both, marks)) = j.delivered_by(i, passed, n) {
                let total = j.events.iter().sum();
                if let Some(f) = outer.lock().expect("not poisoned").as_mut() {
                    f(both, &marks, total);
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
) -> Vec<crate::pipeline::framing::Event> {
    while let Some(chunk) = rx.recv().await {
        if let Some(b) = chunk.boundary {
            joint
                .lock()
                .expect("not poisoned")
                .order
                .push_back((b, [None, None]));
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

    fn c(n: i64) -> Position {
        Position {
            messages: Some([n as u64, 0]),
            cursor: None,
            file: None,
        }
    }

    /// Shipper `i` passed positions `ns`; its mark at position n is (n, i).
    fn passed(i: usize, ns: &[i64]) -> Vec<Passed> {
        ns.iter()
            .map(|&n| Passed {
                cursor: c(n),
                mark: Mark {
                    last_ms: n,
                    tie: i as u64,
                },
            })
            .collect()
    }

    fn at(n: i64) -> Option<(Position, [Mark; 2])> {
        let m = |i| Mark { last_ms: n, tie: i };
        Some((c(n), [m(0), m(1)]))
    }

    #[test]
    fn a_position_is_delivered_when_both_streams_have_it() {
        let mut j = Joint::default();
        j.order.extend([1, 2, 3].map(|n| (c(n), [None, None])));
        assert_eq!(
            j.delivered_by(0, &passed(0, &[1, 2]), 0),
            None,
            "stderr has delivered nothing yet"
        );
        assert_eq!(j.delivered_by(1, &passed(1, &[1]), 0), at(1));
        // Each stream's own mark at the joint position, not at its newest one.
        assert_eq!(j.delivered_by(1, &passed(1, &[2, 3]), 0), at(2));
        assert_eq!(j.delivered_by(0, &passed(0, &[3]), 0), at(3));
        assert!(j.order.is_empty());
        j.order.push_back((c(4), [None, None]));
        assert_eq!(j.delivered_by(0, &passed(0, &[4]), 0), None);
        assert_eq!(j.delivered_by(1, &passed(1, &[4]), 0), at(4));
    }

    #[test]
    fn names() {
        assert_eq!(stream_names("s", false), ["s"]);
        assert_eq!(stream_names("s", true), ["s/stdout", "s/stderr"]);
    }
}
