//! AWS plumbing beneath every command: the options that say how to reach AWS, one SDK
//! configuration for every service client ([`sdk_config`], [`Clients`]), the retry policy
//! ([`retry`]: what a failure means), CloudWatch Logs' limits ([`limits`]) and the CloudWatch
//! Logs calls several commands share ([`logs`]).
//!
//! Credentials come from the flags when given, otherwise from the standard chain; a secret is
//! a [`Secret`] from the moment it is read, so it never prints.

pub(crate) mod limits;
pub(crate) mod logs;
pub(crate) mod retry;

use std::fmt;
use std::time::Duration;

use aws_config::BehaviorVersion;
use aws_config::retry::RetryConfig;
use aws_config::timeout::TimeoutConfig;
use aws_sdk_cloudwatchlogs::config::{Credentials, Region};

/// A credential that must never be printed: `Debug` and `Display` show `***`.
#[derive(Clone, PartialEq, Eq)]
pub(crate) struct Secret(String);

impl Secret {
    pub(crate) fn new(s: impl Into<String>) -> Self {
        Self(s.into())
    }
    /// The secret itself; only for handing to the AWS SDK.
    pub(crate) fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

/// How dockwatch reaches CloudWatch Logs. Fields left `None` fall back to the AWS chain.
#[derive(Debug, Clone, Default)]
pub(crate) struct AwsOptions {
    /// Static key id from `--aws-access-key-id` (with `secret_access_key`).
    pub(crate) access_key_id: Option<String>,
    /// Static secret from `--aws-secret-access-key`.
    pub(crate) secret_access_key: Option<Secret>,
    /// Session token for temporary static credentials.
    pub(crate) session_token: Option<Secret>,
    /// Region from `--aws-region`; otherwise the chain's.
    pub(crate) region: Option<String>,
    /// Profile name from `--aws-profile`.
    pub(crate) profile: Option<String>,
    /// Endpoint override from `--aws-endpoint-url`.
    pub(crate) endpoint_url: Option<String>,
}

/// Errors reaching AWS before any work is done: the user's to fix.
#[derive(Debug, thiserror::Error)]
pub enum AwsError {
    #[error("no AWS region: pass --aws-region, set AWS_REGION, or give the profile a region")]
    NoRegion,
    #[error(
        "no AWS credentials found; pass --aws-access-key-id and --aws-secret-access-key, set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or use --aws-profile"
    )]
    NoCredentials,
    #[error(
        "AWS refused the credentials: {detail}; check the access key id, secret and session token, or the profile"
    )]
    Auth { detail: String },
    #[error("cannot reach {endpoint}: {detail}; check --aws-endpoint-url and the network")]
    Unreachable { endpoint: String, detail: String },
    #[error("could not {call}: {detail}")]
    Call { call: &'static str, detail: String },
    /// A server error without an AWS error code at start-up: seen from a local endpoint
    /// asked for a region it does not serve (moto answers an HTML page, HTTP 500).
    #[error(
        "could not {call}: {endpoint} answered HTTP {status} without an AWS error; check --aws-region (an AWS-compatible endpoint may not serve that region) and --aws-endpoint-url"
    )]
    NotAws {
        call: &'static str,
        endpoint: String,
        status: u16,
    },
    #[error(
        "AWS profile '{0}' not found in ~/.aws/config or ~/.aws/credentials (or AWS_CONFIG_FILE / AWS_SHARED_CREDENTIALS_FILE); check its name (aws configure list-profiles)"
    )]
    NoProfile(String),
}

impl AwsError {
    /// The user can fix it in the arguments or the environment (exit code 2).
    pub fn is_usage(&self) -> bool {
        matches!(
            self,
            AwsError::NoRegion | AwsError::NoCredentials | AwsError::NoProfile(_)
        )
    }
}

impl AwsOptions {
    /// True when a secret was typed on the command line (and so is visible in `ps`).
    pub(crate) fn secret_on_command_line(&self) -> bool {
        self.secret_access_key.is_some()
    }
}

/// The shared AWS configuration (credentials, region, endpoint; SDK retries off) for every
/// service client dockwatch builds.
pub(crate) async fn sdk_config(opts: &AwsOptions) -> Result<aws_config::SdkConfig, AwsError> {
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
        if !profile_exists(p) {
            return Err(AwsError::NoProfile(p.clone()));
        }
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
        return Err(AwsError::NoRegion);
    }
    Ok(conf)
}

/// Whether a section for `profile` is in the shared config (`[profile NAME]`, or
/// `[default]`) or credentials (`[NAME]`) file, where the AWS CLI looks for them. Without the
/// check a misspelt profile shows up as "no AWS region".
fn profile_exists(profile: &str) -> bool {
    if profile == "default" {
        return true; // the SDK's own default, with or without a file
    }
    let home = std::env::var_os("HOME").map(std::path::PathBuf::from);
    let file = |var: &str, default: &str| {
        std::env::var_os(var)
            .map(std::path::PathBuf::from)
            .or_else(|| home.as_ref().map(|h| h.join(default)))
    };
    let sections = |path: Option<std::path::PathBuf>| -> Vec<String> {
        path.and_then(|p| std::fs::read_to_string(p).ok())
            .map(|t| {
                t.lines()
                    .filter_map(|l| l.trim().strip_prefix('[')?.strip_suffix(']').map(str::trim))
                    .map(|n| n.strip_prefix("profile ").unwrap_or(n).trim().to_string())
                    .collect()
            })
            .unwrap_or_default()
    };
    let mut all = sections(file("AWS_CONFIG_FILE", ".aws/config"));
    all.extend(sections(file(
        "AWS_SHARED_CREDENTIALS_FILE",
        ".aws/credentials",
    )));
    all.iter().any(|n| n == profile)
}

/// The service clients, built once from one AWS configuration.
#[derive(Clone)]
pub(crate) struct Clients {
    pub(crate) s3: aws_sdk_s3::Client,
    pub(crate) sqs: aws_sdk_sqs::Client,
    pub(crate) ecs: aws_sdk_ecs::Client,
    pub(crate) logs: aws_sdk_cloudwatchlogs::Client,
}

impl Clients {
    pub(crate) async fn build(aws: &AwsOptions) -> Result<Self, AwsError> {
        let conf = sdk_config(aws).await?;
        // AWS-compatible endpoints serve buckets by path, not by host name.
        let s3 = aws_sdk_s3::config::Builder::from(&conf)
            .force_path_style(aws.endpoint_url.is_some())
            .build();
        Ok(Clients {
            s3: aws_sdk_s3::Client::from_conf(s3),
            sqs: aws_sdk_sqs::Client::new(&conf),
            ecs: aws_sdk_ecs::Client::new(&conf),
            logs: aws_sdk_cloudwatchlogs::Client::new(&conf),
        })
    }
}
