//! The echo of the container's output on dockwatch's own stdout and stderr, apart from
//! delivery: a paused reader of dockwatch's output (a `less`, a slow CI pipe, Ctrl+S in a
//! terminal) must never hold up shipping.
//!
//! Design: the reader hands each buffered piece of output to a thread of its own over a
//! bounded channel ([`QUEUE`] pieces of up to 64 KiB, so at most ~4 MiB waits) without ever
//! waiting: when the queue is full the piece is dropped and its bytes counted, and the run's
//! summary says how much of the output was not echoed (all of it is still shipped). Blocking
//! writes on a thread, not the async runtime: a write to a paused pipe blocks for as long as
//! the pipe is paused, and the runtime's threads must not be the ones waiting. A closed
//! stdout (`| head`) ends the echo of that stream silently.

use std::io::Write;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, TrySendError, sync_channel};
use std::time::Duration;

use crate::ship::framing::Source;

/// Pieces waiting to be written, at most.
const QUEUE: usize = 64;
/// How long the end of a run waits for the echo to be written out.
const DRAIN: Duration = Duration::from_secs(2);

/// The echo thread, owned by whoever ends the run ([`Echo::finish`]).
pub(crate) struct Echo {
    tx: EchoTx,
    done: Receiver<()>,
}

/// The sending side, given to the reader.
#[derive(Clone)]
pub(crate) struct EchoTx {
    tx: SyncSender<(Source, Vec<u8>)>,
    /// Bytes dropped because the queue was full.
    dropped: Arc<AtomicU64>,
    /// Bytes queued and not written yet.
    queued: Arc<AtomicU64>,
}

impl Echo {
    /// Starts the echo thread, writing to this process's stdout and stderr.
    pub(crate) fn start() -> Self {
        Self::to(Box::new(std::io::stdout()), Box::new(std::io::stderr()))
    }

    /// Starts the echo thread writing to `out` and `err`.
    pub(crate) fn to(out: Box<dyn Write + Send>, err: Box<dyn Write + Send>) -> Self {
        let (tx, rx) = sync_channel::<(Source, Vec<u8>)>(QUEUE);
        let (done_tx, done) = sync_channel(1);
        let queued = Arc::new(AtomicU64::new(0));
        let written = queued.clone();
        std::thread::Builder::new()
            .name("dockwatch-echo".into())
            .spawn(move || {
                write_all(rx, out, err, &written);
                let _ = done_tx.send(());
            })
            .map(|_| ())
            .unwrap_or_else(|e| tracing::warn!("no echo: cannot start its thread: {e}"));
        Self {
            tx: EchoTx {
                tx,
                dropped: Arc::new(AtomicU64::new(0)),
                queued,
            },
            done,
        }
    }

    /// A sender for the reader.
    pub(crate) fn sender(&self) -> EchoTx {
        self.tx.clone()
    }

    /// Ends the echo once every sender is gone: waits up to [`DRAIN`] for what is queued to
    /// be written; returns the bytes that were not echoed (dropped, or still queued then).
    /// Blocks: call it off the async runtime.
    pub(crate) fn finish(self) -> u64 {
        let Echo { tx, done } = self;
        let (dropped, queued) = (tx.dropped.clone(), tx.queued.clone());
        drop(tx);
        if done.recv_timeout(DRAIN).is_err() {
            tracing::debug!("the echo is still blocked; its queue is left behind");
        }
        dropped.load(Ordering::Relaxed) + queued.load(Ordering::Relaxed)
    }
}

impl EchoTx {
    /// Queues a piece of output; drops it (counted) when the queue is full. Never waits.
    pub(crate) fn write(&self, source: Source, data: Vec<u8>) {
        let len = data.len() as u64;
        self.queued.fetch_add(len, Ordering::Relaxed);
        match self.tx.try_send((source, data)) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => {
                self.queued.fetch_sub(len, Ordering::Relaxed);
                self.dropped.fetch_add(len, Ordering::Relaxed);
            }
            // The thread ended (both streams closed): nothing to count.
            Err(TrySendError::Disconnected(_)) => {
                self.queued.fetch_sub(len, Ordering::Relaxed);
            }
        }
    }
}

fn write_all(
    rx: Receiver<(Source, Vec<u8>)>,
    mut out: Box<dyn Write>,
    mut err: Box<dyn Write>,
    queued: &AtomicU64,
) {
    let (mut out_ok, mut err_ok) = (true, true);
    for (source, data) in rx {
        queued.fetch_sub(data.len() as u64, Ordering::Relaxed);
        let (w, ok) = match source {
            Source::Stdout => (&mut out, &mut out_ok),
            Source::Stderr => (&mut err, &mut err_ok),
        };
        // A closed stream (EPIPE) stops its echo; shipping is not affected.
        if *ok && (w.write_all(&data).is_err() || w.flush().is_err()) {
            *ok = false;
        }
        if !out_ok && !err_ok {
            return;
        }
    }
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
        for _ in 0..1000 {
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
        assert_eq!(written + dropped, 1_000_000);
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
