//! `on-upload`'s start-up checks, before any message is taken: credentials found, the queue
//! exists and can be read, the buckets exist. Each failure is one line and exit code 2 (the
//! arguments or the account need changing) or 1 (AWS could not be reached); a queue without a
//! dead-letter policy gets one warning.

use std::time::Duration;

use aws_sdk_sqs::types::QueueAttributeName;

use super::{TriggerError, log};
use crate::aws::logs::preflight_error;
use crate::aws::retry::{Failure, failure_of};
use crate::aws::{AwsError, Clients};

/// Each check's time limit (the SDK's own timeouts are longer).
const LIMIT: Duration = Duration::from_secs(10);

/// The credentials can be loaded (a missing chain otherwise shows as retries for ever, or as
/// an instance-metadata error on a laptop).
pub(crate) async fn credentials(c: &Clients, ep: &str) -> Result<(), TriggerError> {
    let r = tokio::time::timeout(LIMIT, c.sqs.list_queues().max_results(1).send()).await;
    match r {
        Err(_) => Err(unreachable(ep, "ListQueues did not answer".into())),
        Ok(Ok(_)) => Ok(()),
        // Not allowed to list queues is fine: the queue itself is checked next.
        Ok(Err(e)) => aws_failure(ep, failure_of(&e)).map_or(Ok(()), Err),
    }
}

/// The queue exists and can be read; says whether it has a dead-letter policy.
pub(crate) async fn queue(c: &Clients, ep: &str, url: &str) -> Result<bool, TriggerError> {
    if !(url.starts_with("https://") || url.starts_with("http://")) {
        return Err(TriggerError::Check(format!(
            "--queue-url '{url}' is not a queue URL; give one like https://sqs.REGION.amazonaws.com/ACCOUNT/NAME"
        )));
    }
    let call = c
        .sqs
        .get_queue_attributes()
        .queue_url(url)
        .attribute_names(QueueAttributeName::RedrivePolicy)
        .send();
    let attrs = match tokio::time::timeout(LIMIT, call).await {
        Err(_) => return Err(unreachable(ep, "GetQueueAttributes did not answer".into())),
        Ok(Ok(a)) => a,
        Ok(Err(e)) => {
            if e.as_service_error()
                .is_some_and(|s| s.is_queue_does_not_exist() || s.is_invalid_address())
            {
                return Err(TriggerError::Check(format!(
                    "the queue {url} does not exist; check --queue-url (or let --setup create one)"
                )));
            }
            return Err(call_failure(
                ep,
                failure_of(&e),
                format!("read the queue {url}"),
            ));
        }
    };
    Ok(attrs
        .attributes()
        .is_some_and(|a| a.contains_key(&QueueAttributeName::RedrivePolicy)))
}

/// The one warning for a queue without a dead-letter policy.
pub(crate) fn warn_no_dead_letters(url: &str) {
    log(&format!(
        "warning: {url} has no dead-letter queue (redrive policy): a message that keeps failing comes back until the queue's retention ends; --setup makes one"
    ));
}

/// The bucket exists and can be reached.
pub(crate) async fn bucket(
    c: &Clients,
    ep: &str,
    bucket: &str,
    what: &str,
) -> Result<(), TriggerError> {
    let call = c.s3.head_bucket().bucket(bucket).send();
    match tokio::time::timeout(LIMIT, call).await {
        Err(_) => Err(unreachable(ep, "HeadBucket did not answer".into())),
        Ok(Ok(_)) => Ok(()),
        Ok(Err(e)) => {
            let status = e.raw_response().map(|r| r.status().as_u16());
            if e.as_service_error().is_some_and(|s| s.is_not_found()) || status == Some(404) {
                return Err(TriggerError::Check(format!(
                    "the {what} s3://{bucket} does not exist; create it (or let --setup create the input bucket)"
                )));
            }
            if status == Some(403) {
                return Err(TriggerError::Check(format!(
                    "not allowed to use the {what} s3://{bucket} (403); check the bucket's name and the credentials' permissions"
                )));
            }
            Err(call_failure(
                ep,
                failure_of(&e),
                format!("check the {what} s3://{bucket}"),
            ))
        }
    }
}

fn unreachable(ep: &str, detail: String) -> TriggerError {
    TriggerError::Aws(AwsError::Unreachable {
        endpoint: ep.to_string(),
        detail,
    })
}

/// A failure about AWS as a whole (no credentials, refused credentials, unreachable), in the
/// start-up error's words; `None` for one about the resource asked for.
fn aws_failure(ep: &str, f: Failure) -> Option<TriggerError> {
    let general = matches!(
        f,
        Failure::Credentials(_) | Failure::Timeout(_) | Failure::Transport(_)
    ) || crate::aws::retry::is_auth(&f);
    general.then(|| TriggerError::Aws(preflight_error(f, ep.to_string())))
}

fn call_failure(ep: &str, f: Failure, what: String) -> TriggerError {
    let detail = format!("cannot {what}: {f}");
    aws_failure(ep, f).unwrap_or(TriggerError::Check(detail))
}
