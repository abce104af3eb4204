//! CloudWatch Logs calls shared by the commands: the client, the calls that make sure a
//! destination exists, a stream's events in a time range (resume, lost answers), and start-up failures in the words
//! the user sees.
//!
//! The SDK's own retries are off (see [`super::sdk_config`]): every failure goes through
//! [`super::retry`], so that the policy is one pure function and each caller decides how long
//! to keep trying.

use std::time::Duration;

use aws_sdk_cloudwatchlogs::Client;

use super::retry::{Action, Failure, classify, failure_of, is_auth};
use super::{AwsError, AwsOptions};
use crate::util::backoff::Backoff;

/// Builds the client. Flags win over the chain; a region must come from somewhere.
pub(crate) async fn build(opts: &AwsOptions) -> Result<Client, AwsError> {
    Ok(Client::new(&super::sdk_config(opts).await?))
}

/// The endpoint the client talks to, for messages.
pub(crate) fn endpoint_of(client: &Client, opts: &AwsOptions) -> String {
    if let Some(u) = &opts.endpoint_url {
        return u.clone();
    }
    let region = client
        .config()
        .region()
        .map_or("?".to_string(), |r| r.to_string());
    format!("CloudWatch Logs in {region}")
}

/// Creates the group and the stream when missing; a group created here gets `retention`
/// days. `attempts` bounds retries of transient failures (at start-up it is small, so a
/// wrong endpoint fails fast).
pub(crate) async fn ensure_destination(
    client: &Client,
    group: &str,
    stream: &str,
    attempts: u32,
    retention: Option<i32>,
) -> Result<(), Failure> {
    let created = std::sync::atomic::AtomicBool::new(false);
    with_retries(attempts, || async {
        match client.create_log_group().log_group_name(group).send().await {
            Ok(_) => {
                created.store(true, std::sync::atomic::Ordering::Relaxed);
                Ok(())
            }
            Err(e) => {
                let f = failure_of(&e);
                if already_exists(&f) { Ok(()) } else { Err(f) }
            }
        }
    })
    .await?;
    if let Some(days) = retention
        && created.load(std::sync::atomic::Ordering::Relaxed)
    {
        with_retries(attempts, || async {
            client
                .put_retention_policy()
                .log_group_name(group)
                .retention_in_days(days)
                .send()
                .await
                .map(|_| ())
                .map_err(|e| failure_of(&e))
        })
        .await?;
    }
    with_retries(attempts, || async {
        match client
            .create_log_stream()
            .log_group_name(group)
            .log_stream_name(stream)
            .send()
            .await
        {
            Ok(_) => Ok(()),
            Err(e) => {
                let f = failure_of(&e);
                if already_exists(&f) { Ok(()) } else { Err(f) }
            }
        }
    })
    .await
}

fn already_exists(f: &Failure) -> bool {
    matches!(f, Failure::Service { code: Some(c), .. } if c == "ResourceAlreadyExistsException")
}

async fn with_retries<F, Fut>(attempts: u32, mut call: F) -> Result<(), Failure>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<(), Failure>>,
{
    let mut backoff = Backoff::new(Duration::from_millis(200), Duration::from_secs(2));
    loop {
        match call().await {
            Ok(()) => return Ok(()),
            Err(f) if classify(&f) == Action::Retry && backoff.attempts() + 1 < attempts => {
                tokio::time::sleep(backoff.next_delay()).await;
            }
            Err(f) => return Err(f),
        }
    }
}

/// Turns a start-up failure into the error the user sees.
pub(crate) fn preflight_error(f: Failure, endpoint: String) -> AwsError {
    if matches!(f, Failure::Credentials(_)) {
        AwsError::NoCredentials
    } else if is_auth(&f) {
        AwsError::Auth {
            detail: f.to_string(),
        }
    } else {
        match f {
            Failure::Timeout(_) | Failure::Transport(_) => AwsError::Unreachable {
                endpoint,
                detail: f.to_string(),
            },
            Failure::Service {
                code: None, status, ..
            } if status >= 500 => AwsError::NotAws {
                call: "create the log group and stream",
                endpoint,
                status,
            },
            other => AwsError::Call {
                call: "create the log group and stream",
                detail: other.to_string(),
            },
        }
    }
}

/// The stream's events with timestamps in `from_ms..to_ms` (to the end without `to_ms`), in
/// CloudWatch's order, at most about `max_events`; the flag is false when there were more. A
/// missing stream holds nothing.
pub(crate) async fn events_between(
    client: &Client,
    group: &str,
    stream: &str,
    from_ms: i64,
    to_ms: Option<i64>,
    max_events: usize,
) -> Result<(Vec<(i64, String)>, bool), Failure> {
    let mut events: Vec<(i64, String)> = Vec::new();
    let mut token: Option<String> = None;
    loop {
        let r = client
            .get_log_events()
            .log_group_name(group)
            .log_stream_name(stream)
            .start_from_head(true)
            .start_time(from_ms.max(0))
            .set_end_time(to_ms)
            .set_next_token(token.clone())
            .send()
            .await;
        let r = match r {
            Ok(r) => r,
            Err(e) => {
                let f = failure_of(&e);
                if classify(&f) == Action::Recreate {
                    return Ok((Vec::new(), true));
                }
                return Err(f);
            }
        };
        let before = events.len();
        events.extend(r.events().iter().map(|e| {
            (
                e.timestamp().unwrap_or(0),
                e.message().unwrap_or("").to_string(),
            )
        }));
        let next = r.next_forward_token().map(str::to_string);
        if events.len() == before || next.is_none() || next == token {
            return Ok((events, true));
        }
        if events.len() >= max_events {
            return Ok((events, false));
        }
        token = next;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_server_error_without_an_aws_code_at_start_points_at_the_region_and_endpoint() {
        let f = Failure::Service {
            code: None,
            status: 500,
            message: "<!DOCTYPE HTML PUBLIC \"-//W3C//DTD HTML 3.2 Final//EN\">".into(),
        };
        let e = preflight_error(f, "http://127.0.0.1:5000".into());
        assert!(matches!(e, AwsError::NotAws { status: 500, .. }), "{e:?}");
        let text = e.to_string();
        assert!(text.contains("check --aws-region"), "{text}");
        assert!(!text.contains("DOCTYPE"), "{text}");
        // With an AWS error code it is the service's own word.
        let f = Failure::Service {
            code: Some("InvalidParameterException".into()),
            status: 400,
            message: "bad name".into(),
        };
        let e = preflight_error(f, "e".into());
        assert!(
            e.to_string()
                .contains("InvalidParameterException (HTTP 400): bad name")
        );
    }
}
