//! The echo of the container's output on dockwatch's own stdout and stderr, apart from
//! delivery: a paused reader of dockwatch's output (a `less`, a slow CI pipe, Ctrl+S in a
//! terminal) must never hold up shipping.
//!
//! Design: the reader hands each buffered piece of output to a thread of its own through a
//! queue bounded in bytes ([`BUDGET`], 4 MiB; small pieces of one stream are joined) without
//! ever waiting: when the budget is spent the piece is dropped and its bytes counted, and the
//! run's summary says how much of the output was not echoed (all of it is still shipped). A
//! bound in pieces was tried first: the reader hands over many small pieces, and 64 of them
//! filled while the thread waited to be scheduled, dropping output even to /dev/null. Blocking
//! writes on a thread, not the async runtime: a write to a paused pipe blocks for as long as
//! the pipe is paused, and the runtime's threads must not be the ones waiting. A closed
//! stdout (`| head`) ends the echo of that stream silently.

use std::collections::VecDeque;
use std::io::Write;
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use crate::pipeline::framing::Source;

/// Bytes waiting to be written, at most.
const BUDGET: usize = 4 << 20;
/// Pieces of one stream are joined up to this size (the reader hands over many small ones).
const PIECE: usize = 64 * 1024;
/// How long the end of a run waits for the echo to be written out.
const DRAIN: Duration = Duration::from_secs(2);

/// What the reader and the echo thread share.
#[derive(Default)]
struct Queue {
    pieces: VecDeque<(Source, Vec<u8>)>,
    /// Bytes in `pieces`.
    bytes: usize,
    /// Bytes dropped because the budget was spent.
    dropped: u64,
    /// No more pieces will come.
    closed: bool,
    /// The thread is done (everything written, or both streams closed).
    done: bool,
}

type Shared = Arc<(Mutex<Queue>, Condvar)>;

/// The echo thread, owned by whoever ends the run ([`Echo::finish`]).
pub(crate) struct Echo {
    shared: Shared,
}

/// The sending side, given to the reader.
#[derive(Clone)]
pub(crate) struct EchoTx {
    shared: Shared,
}

impl Echo {
    /// Starts the echo thread, writing to this process's stdout and stderr.
    pub(crate) fn start() -> Self {
        Self::to(Box::new(std::io::stdout()), Box::new(std::io::stderr()))
    }

    /// Starts the echo thread writing to `out` and `err`.
    pub(crate) fn to(out: Box<dyn Write + Send>, err: Box<dyn Write + Send>) -> Self {
        let shared: Shared = Arc::default();
        let theirs = shared.clone();
        let started = std::thread::Builder::new()
            .name("dockwatch-echo".into())
            .spawn(move || write_all(&theirs, out, err));
        if let Err(e) = started {
            tracing::warn!("no echo: cannot start its thread: {e}");
            shared.0.lock().expect("not poisoned").done = true;
        }
        Self { shared }
    }

    /// A sender for the reader.
    pub(crate) fn sender(&self) -> EchoTx {
        EchoTx {
            shared: self.shared.clone(),
        }
    }

    /// Ends the echo: waits up to [`DRAIN`] for what is queued to be written; returns the
    /// bytes that were not echoed (dropped, or still queued then). Blocks: call it off the
    /// async runtime.
    pub(crate) fn finish(self) -> u64 {
        let (lock, cv) = &*self.shared;
        let mut q = lock.lock().expect("not poisoned");
        q.closed = true;
        cv.notify_all();
        let (q, _) = cv
            .wait_timeout_while(q, DRAIN, |q| !q.done)
            .expect("not poisoned");
        if !q.done {
            tracing::debug!("the echo is still blocked; its queue is left behind");
        }
        q.dropped + q.bytes as u64
    }
}

impl EchoTx {
    /// Queues a piece of output; drops it (counted) when [`BUDGET`] bytes are waiting
    /// already. Never waits for the terminal.
    pub(crate) fn write(&self, source: Source, data: Vec<u8>) {
        let (lock, cv) = &*self.shared;
        let mut q = lock.lock().expect("not poisoned");
        if q.done {
            return;
        }
        if q.bytes + data.len() > BUDGET {
            q.dropped += data.len() as u64;
            return;
        }
        q.bytes += data.len();
        match q.pieces.back_mut() {
            Some((s, piece)) if *s == source && piece.len() + data.len() <= PIECE => {
                piece.extend_from_slice(&data);
            }
            _ => q.pieces.push_back((source, data)),
        }
        cv.notify_one();
    }
}

fn write_all(shared: &Shared, mut out: Box<dyn Write>, mut err: Box<dyn Write>) {
    let (lock, cv) = &**shared;
    let (mut out_ok, mut err_ok) = (true, true);
    loop {
        let next = {
            let q = lock.lock().expect("not poisoned");
            let mut q = cv
                .wait_while(q, |q| q.pieces.is_empty() && !q.closed)
                .expect("not poisoned");
            match q.pieces.pop_front() {
                Some(p) => {
                    q.bytes -= p.1.len();
                    Some(p)
                }
                None => None,
            }
        };
        let Some((source, data)) = next else { break };
        let (w, ok) = match source {
            Source::Stdout => (&mut out, &mut out_ok),
            Source::Stderr => (&mut err, &mut err_ok),
        };
        // A closed stream (EPIPE) stops its echo; shipping is not affected.
        if *ok && (w.write_all(&data).is_err() || w.flush().is_err()) {
            *ok = false;
        }
        if !out_ok && !err_ok {
            break;
        }
    }
    let mut q = lock.lock().expect("not poisoned");
    q.done = true;
    // What a closed terminal will never take is not "not echoed for slowness".
    if !out_ok && !err_ok {
        q.bytes = 0;
        q.pieces.clear();
    }
    cv.notify_all();
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    /// A writer that blocks until released, then records.
    #[derive(Clone)]
    struct Gate(Arc<(Mutex<bool>, std::sync::Condvar)>, Arc<Mutex<Vec<u8>>>);

    impl Write for Gate {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            let (open, cv) = &*self.0;
            let mut g = open.lock().unwrap();
            while !*g {
                g = cv.wait(g).unwrap();
            }
            self.1.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn a_blocked_terminal_never_blocks_the_writer_and_drops_are_counted() {
        let gate = Gate(Arc::default(), Arc::default());
        let echo = Echo::to(Box::new(gate.clone()), Box::new(std::io::sink()));
        let tx = echo.sender();
        let started = std::time::Instant::now();
        for _ in 0..10_000 {
            tx.write(Source::Stdout, vec![b'x'; 1000]);
        }
        drop(tx);
        assert!(
            started.elapsed() < Duration::from_secs(1),
            "writes waited for the terminal"
        );
        // Release the terminal: what was queued is written, the rest was counted.
        *gate.0.0.lock().unwrap() = true;
        gate.0.1.notify_all();
        let dropped = echo.finish();
        let written = gate.1.lock().unwrap().len() as u64;
        assert_eq!(written + dropped, 10_000_000);
        assert!(
            dropped > 0 && written > 0,
            "{written} written, {dropped} dropped"
        );
    }

    #[test]
    fn a_closed_stdout_ends_its_echo_quietly() {
        struct Closed;
        impl Write for Closed {
            fn write(&mut self, _: &[u8]) -> std::io::Result<usize> {
                Err(std::io::ErrorKind::BrokenPipe.into())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let echo = Echo::to(Box::new(Closed), Box::new(Closed));
        let tx = echo.sender();
        tx.write(Source::Stdout, b"a".to_vec());
        tx.write(Source::Stderr, b"b".to_vec());
        drop(tx);
        assert_eq!(echo.finish(), 0);
    }
}
