//! CloudWatch Logs' published limits, as constants every stage checks against.

/// CloudWatch's per-event overhead in the batch size.
pub(crate) const EVENT_OVERHEAD: usize = 26;
/// CloudWatch's largest PutLogEvents request, in counted bytes.
pub(crate) const MAX_BATCH_BYTES: usize = 1_048_576;
/// CloudWatch's largest number of events in one request.
pub(crate) const MAX_BATCH_EVENTS: usize = 10_000;
/// CloudWatch's largest time span of one request.
pub(crate) const MAX_BATCH_SPAN_MS: i64 = 24 * 3600 * 1000;
