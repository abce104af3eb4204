//! A request budget shared by many shippers (`dockwatch ship`: one per container): every
//! PutLogEvents waits for one of `limit` permits, so the host as a whole never has more
//! requests in flight than CloudWatch's quota allows, however many containers it follows.
//!
//! Fairness: tokio's semaphore serves waiters in order, so a stream that sends a lot cannot
//! starve a quiet one; a stream whose requests are retried holds a permit only while one of
//! its requests is on the wire (backoff sleeps happen outside `put`), so one slow stream does
//! not stall the others. Reads (a lost answer's lookup) and re-creating a destination are
//! rare and not counted.

use std::sync::Arc;

use tokio::sync::Semaphore;

use super::body::Sealed;
use super::request::{LogService, Rejected};
use crate::aws::retry::Failure;

/// `S` with its PutLogEvents counted against a shared budget.
#[derive(Clone)]
pub(crate) struct Budgeted<S> {
    inner: S,
    permits: Arc<Semaphore>,
}

impl<S> Budgeted<S> {
    /// `inner`, sharing `permits` with every other clone.
    pub(crate) fn new(inner: S, permits: Arc<Semaphore>) -> Self {
        Budgeted { inner, permits }
    }
}

impl<S: LogService> LogService for Budgeted<S> {
    async fn put(&self, group: &str, stream: &str, batch: &Sealed) -> Result<Rejected, Failure> {
        // The semaphore is never closed: acquiring only waits.
        let _permit = self.permits.acquire().await;
        self.inner.put(group, stream, batch).await
    }

    fn recreate(
        &self,
        group: &str,
        stream: &str,
    ) -> impl std::future::Future<Output = Result<(), Failure>> + Send {
        self.inner.recreate(group, stream)
    }

    fn read(
        &self,
        group: &str,
        stream: &str,
        from_ms: i64,
        to_ms: i64,
    ) -> impl std::future::Future<Output = Result<Vec<(i64, String)>, Failure>> + Send {
        self.inner.read(group, stream, from_ms, to_ms)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    use super::*;
    use crate::pipeline::batcher::Batch;
    use crate::pipeline::framing::{Event, Source};

    /// Counts the puts on the wire at once; each takes 10 ms.
    #[derive(Clone, Default)]
    struct Slow {
        now: Arc<AtomicUsize>,
        most: Arc<AtomicUsize>,
    }

    impl LogService for Slow {
        async fn put(&self, _: &str, _: &str, _: &Sealed) -> Result<Rejected, Failure> {
            let n = self.now.fetch_add(1, Ordering::SeqCst) + 1;
            self.most.fetch_max(n, Ordering::SeqCst);
            tokio::time::sleep(Duration::from_millis(10)).await;
            self.now.fetch_sub(1, Ordering::SeqCst);
            Ok(Rejected::default())
        }
        async fn recreate(&self, _: &str, _: &str) -> Result<(), Failure> {
            Ok(())
        }
        async fn read(
            &self,
            _: &str,
            _: &str,
            _: i64,
            _: i64,
        ) -> Result<Vec<(i64, String)>, Failure> {
            Ok(Vec::new())
        }
    }

    #[tokio::test(start_paused = true)]
    async fn requests_of_all_shippers_together_stay_within_the_budget() {
        let slow = Slow::default();
        let permits = Arc::new(Semaphore::new(3));
        let event = Event {
            ts_ms: 1,
            message: "x".into(),
            source: Source::Stdout,
        };
        let mut tasks = Vec::new();
        for i in 0..20 {
            let service = Budgeted::new(slow.clone(), permits.clone());
            let batch = Batch {
                seq: 0,
                events: vec![event.clone()],
                bytes: crate::pipeline::batcher::event_size(&event),
                lead: 0,
            };
            let sealed = Sealed::new("g", &format!("s{i}"), batch, Vec::new());
            tasks.push(tokio::spawn(async move {
                service.put("g", "s", &sealed).await.unwrap();
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
        assert_eq!(slow.most.load(Ordering::SeqCst), 3);
    }
}
