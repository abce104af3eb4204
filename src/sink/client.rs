//! The CloudWatch Logs client: built from the flags and the standard AWS chain, and the calls
//! that make sure the destination exists.
//!
//! The SDK's own retries are off: every failure goes through [`super::retry`], so that the
//! policy is one pure function and the shipper decides how long to keep trying.

use std::time::Duration;

use aws_config::BehaviorVersion;
use aws_config::retry::RetryConfig;
use aws_config::timeout::TimeoutConfig;
use aws_sdk_cloudwatchlogs::Client;
use aws_sdk_cloudwatchlogs::config::{Credentials, Region};

use super::SinkError;
use super::retry::{Action, Backoff, Failure, classify, failure_of, is_auth};
use crate::config::AwsOptions;

/// Builds the client. Flags win over the chain; a region must come from somewhere.
pub async fn build(opts: &AwsOptions) -> Result<Client, SinkError> {
    Ok(Client::new(&sdk_config(opts).await?))
}

/// The shared AWS configuration (credentials, region, endpoint; SDK retries off) for every
/// service client dockwatch builds.
pub async fn sdk_config(opts: &AwsOptions) -> Result<aws_config::SdkConfig, SinkError> {
    let mut loader = aws_config::defaults(BehaviorVersion::latest())
        .retry_config(RetryConfig::disabled())
        .timeout_config(
            TimeoutConfig::builder()
                .connect_timeout(Duration::from_secs(5))
                .read_timeout(Duration::from_secs(30))
                .operation_attempt_timeout(Duration::from_secs(40))
                .build(),
        );
    if let Some(p) = &opts.profile {
        loader = loader.profile_name(p);
    }
    if let Some(r) = &opts.region {
        loader = loader.region(Region::new(r.clone()));
    }
    if let (Some(id), Some(secret)) = (&opts.access_key_id, &opts.secret_access_key) {
        let creds = Credentials::new(
            id.clone(),
            secret.expose().to_string(),
            opts.session_token.as_ref().map(|t| t.expose().to_string()),
            None,
            "dockwatch-command-line",
        );
        loader = loader.credentials_provider(creds);
    }
    if let Some(u) = &opts.endpoint_url {
        loader = loader.endpoint_url(u.clone());
    }
    let conf = loader.load().await;
    if conf.region().is_none() {
        return Err(SinkError::NoRegion);
    }
    Ok(conf)
}

/// The endpoint the client talks to, for messages.
pub fn endpoint_of(client: &Client, opts: &AwsOptions) -> String {
    if let Some(u) = &opts.endpoint_url {
        return u.clone();
    }
    let region = client
        .config()
        .region()
        .map_or("?".to_string(), |r| r.to_string());
    format!("CloudWatch Logs in {region}")
}

/// Creates the group and the stream when missing. `attempts` bounds retries of transient
/// failures (at start-up it is small, so a wrong endpoint fails fast).
pub async fn ensure_destination(
    client: &Client,
    group: &str,
    stream: &str,
    attempts: u32,
) -> Result<(), Failure> {
    with_retries(attempts, || async {
        match client.create_log_group().log_group_name(group).send().await {
            Ok(_) => Ok(()),
            Err(e) => {
                let f = failure_of(&e);
                if already_exists(&f) { Ok(()) } else { Err(f) }
            }
        }
    })
    .await?;
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
pub fn preflight_error(f: Failure, endpoint: String) -> SinkError {
    if matches!(f, Failure::Credentials(_)) {
        SinkError::NoCredentials
    } else if is_auth(&f) {
        SinkError::Auth {
            detail: f.to_string(),
        }
    } else {
        match f {
            Failure::Timeout(_) | Failure::Transport(_) => SinkError::Unreachable {
                endpoint,
                detail: f.to_string(),
            },
            other => SinkError::Call {
                call: "create the log group and stream",
                detail: other.to_string(),
            },
        }
    }
}

/// The stream's newest events, oldest first (at most `pages` pages of GetLogEvents, read
/// backwards). A missing group or stream has none.
pub async fn newest_events(
    client: &Client,
    group: &str,
    stream: &str,
    pages: usize,
) -> Result<Vec<(i64, String)>, Failure> {
    let mut pages_read: Vec<Vec<(i64, String)>> = Vec::new();
    let mut token: Option<String> = None;
    for _ in 0..pages {
        let r = client
            .get_log_events()
            .log_group_name(group)
            .log_stream_name(stream)
            .start_from_head(false)
            .set_next_token(token.clone())
            .send()
            .await;
        let r = match r {
            Ok(r) => r,
            Err(e) => {
                let f = failure_of(&e);
                if classify(&f) == Action::Recreate {
                    return Ok(Vec::new());
                }
                return Err(f);
            }
        };
        let page: Vec<(i64, String)> = r
            .events()
            .iter()
            .map(|e| {
                (
                    e.timestamp().unwrap_or(0),
                    e.message().unwrap_or("").to_string(),
                )
            })
            .collect();
        let next = r.next_backward_token().map(str::to_string);
        let done = page.is_empty() || next == token;
        pages_read.push(page);
        if done {
            break;
        }
        token = next;
    }
    Ok(pages_read.into_iter().rev().flatten().collect())
}
