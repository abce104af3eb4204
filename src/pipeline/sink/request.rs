//! One PutLogEvents request: a [`Batch`] in, what CloudWatch accepted and rejected out.

use aws_sdk_cloudwatchlogs::Client;
use aws_smithy_types::body::SdkBody;

const CONTENT_LENGTH: &str = "content-length";
/// Most events read to look a batch up.
const LOOKUP_EVENTS: usize = 100_000;

use super::body::Sealed;
use crate::aws::retry::{Failure, failure_of};

/// Events CloudWatch refused, by reason (from `rejectedLogEventsInfo`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Rejected {
    /// Older than the group's retention or 14 days.
    pub(crate) too_old: u64,
    /// More than 2 hours in the future.
    pub(crate) too_new: u64,
    /// Past the group's retention.
    pub(crate) expired: u64,
}

impl Rejected {
    pub(crate) fn total(&self) -> u64 {
        self.too_old + self.too_new + self.expired
    }
    pub(crate) fn add(&mut self, o: Rejected) {
        self.too_old += o.too_old;
        self.too_new += o.too_new;
        self.expired += o.expired;
    }
}

/// What the shipper needs from CloudWatch Logs: one PutLogEvents, and creating a missing
/// destination again. The SDK client is the real one; tests give the shipper a fake that
/// answers in any order, fails on purpose and records what it was sent.
pub(crate) trait LogService: Clone + Send + Sync + 'static {
    /// Sends the batch once: what CloudWatch rejected, or why it failed.
    fn put(
        &self,
        group: &str,
        stream: &str,
        batch: &Sealed,
    ) -> impl std::future::Future<Output = Result<Rejected, Failure>> + Send;

    /// Creates the group and stream again (they were deleted while shipping); one try.
    fn recreate(
        &self,
        group: &str,
        stream: &str,
    ) -> impl std::future::Future<Output = Result<(), Failure>> + Send;

    /// The stream's events with timestamps in `from_ms..to_ms`, in CloudWatch's order (to
    /// find out whether a batch whose answer was lost was stored).
    fn read(
        &self,
        group: &str,
        stream: &str,
        from_ms: i64,
        to_ms: i64,
    ) -> impl std::future::Future<Output = Result<Vec<(i64, String)>, Failure>> + Send;
}

impl LogService for Client {
    fn put(
        &self,
        group: &str,
        stream: &str,
        batch: &Sealed,
    ) -> impl std::future::Future<Output = Result<Rejected, Failure>> + Send {
        put(self, group, stream, batch)
    }

    fn recreate(
        &self,
        group: &str,
        stream: &str,
    ) -> impl std::future::Future<Output = Result<(), Failure>> + Send {
        crate::aws::logs::ensure_destination(self, group, stream, 1, None)
    }

    async fn read(
        &self,
        group: &str,
        stream: &str,
        from_ms: i64,
        to_ms: i64,
    ) -> Result<Vec<(i64, String)>, Failure> {
        // A batch holds at most 10,000 events; what shares its first millisecond before it
        // is bounded by the same rule.
        let (events, _) = crate::aws::logs::events_between(
            self,
            group,
            stream,
            from_ms,
            Some(to_ms),
            LOOKUP_EVENTS,
        )
        .await?;
        Ok(events)
    }
}

/// Sends the batch once.
///
/// The body is dockwatch's own ([`super::body`]): the SDK is given the operation without
/// events and its body is replaced before signing, so the signature, endpoint, credentials and
/// response parsing stay the SDK's.
pub(crate) async fn put(
    client: &Client,
    group: &str,
    stream: &str,
    batch: &Sealed,
) -> Result<Rejected, Failure> {
    let body = batch.body.clone();
    let out = client
        .put_log_events()
        .log_group_name(group)
        .log_stream_name(stream)
        .customize()
        .mutate_request(move |req| {
            req.headers_mut()
                .insert(CONTENT_LENGTH, body.len().to_string());
            *req.body_mut() = SdkBody::from(body.clone());
        })
        .send()
        .await
        .map_err(|e| failure_of(&e))?;
    Ok(rejected_counts(
        batch.count,
        out.rejected_log_events_info().map(|r| {
            (
                r.too_new_log_event_start_index(),
                r.too_old_log_event_end_index(),
                r.expired_log_event_end_index(),
            )
        }),
    ))
}

/// Counts the rejected events from the three indexes AWS returns: `tooNewLogEventStartIndex`
/// (first too-new event, inclusive), `tooOldLogEventEndIndex` and `expiredLogEventEndIndex`
/// (end of the too-old / expired prefix, exclusive).
pub(crate) fn rejected_counts(
    n: usize,
    info: Option<(Option<i32>, Option<i32>, Option<i32>)>,
) -> Rejected {
    let clamp = |i: i32| (i.max(0) as usize).min(n) as u64;
    match info {
        None => Rejected::default(),
        Some((new_start, old_end, expired_end)) => {
            let expired = expired_end.map_or(0, clamp);
            let old_end = old_end.map_or(0, clamp).max(expired);
            let too_old = old_end - expired;
            let too_new = new_start.map_or(0, |i| n as u64 - clamp(i).max(old_end));
            Rejected {
                too_old,
                too_new,
                expired,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejected_indexes() {
        assert_eq!(rejected_counts(10, None), Rejected::default());
        let r = rejected_counts(10, Some((Some(8), Some(3), None)));
        assert_eq!(
            r,
            Rejected {
                too_old: 3,
                too_new: 2,
                expired: 0
            }
        );
        let r = rejected_counts(10, Some((None, Some(4), Some(2))));
        assert_eq!(
            r,
            Rejected {
                too_old: 2,
                too_new: 0,
                expired: 2
            }
        );
        assert_eq!(r.total(), 4);
        // Out-of-range indexes never count more than the batch.
        assert_eq!(
            rejected_counts(5, Some((Some(-1), Some(99), None))).total(),
            5
        );
    }
}
