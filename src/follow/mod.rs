//! The way back: from CloudWatch Logs to a terminal ([`tail`]) and to local files
//! ([`download`], a daemon that resumes exactly where it stopped).
//!
//! ```text
//! source (DescribeLogGroups/Streams, FilterLogEvents, GetLogEvents, retry policy)
//!   -> tail     (merge by time, print; follow: poll a trailing window, dedupe by event id)
//!   -> download (one file per stream; state saved after the data it covers is on disk)
//! ```

pub mod download;
pub(crate) mod source;
pub mod tail;

use crate::aws::AwsError;
use crate::aws::retry::{Failure, is_auth};
use crate::exit_codes;

/// What can stop `tail` or `download`.
#[derive(Debug, thiserror::Error)]
pub enum FollowError {
    #[error(transparent)]
    Aws(#[from] AwsError),
    #[error(
        "log group '{0}' not found; check the name and region, or write '{0}*' to follow every group with that prefix"
    )]
    GroupNotFound(String),
    #[error("no log group starts with '{0}'; check the prefix and region")]
    NoGroupMatches(String),
    #[error("could not {call}: {failure}")]
    Call { call: String, failure: Failure },
    #[error(transparent)]
    Time(#[from] crate::util::time::InvalidTime),
    #[error("{0}")]
    Usage(String),
    #[error(transparent)]
    Config(#[from] crate::config::file::ConfigFileError),
    #[error("{what} '{path}': {source}")]
    Io {
        what: &'static str,
        path: std::path::PathBuf,
        source: std::io::Error,
    },
    #[error(
        "another dockwatch download is already writing to '{0}' (its lock is held); stop it or choose another --output-dir"
    )]
    Locked(std::path::PathBuf),
    #[error("state file '{path}' is unreadable: {detail}; move it away to start over")]
    BadState {
        path: std::path::PathBuf,
        detail: String,
    },
}

impl FollowError {
    /// A failed call, with the credentials case made plain.
    pub(crate) fn call(call: impl Into<String>, failure: Failure) -> Self {
        if matches!(failure, Failure::Credentials(_)) {
            return FollowError::Aws(AwsError::NoCredentials);
        }
        if is_auth(&failure) {
            return FollowError::Aws(AwsError::Auth {
                detail: failure.to_string(),
            });
        }
        FollowError::Call {
            call: call.into(),
            failure,
        }
    }

    /// The process exit code: 2 for what the user can fix in the arguments or the
    /// configuration, 1 for everything else.
    pub fn exit_code(&self) -> i32 {
        match self {
            FollowError::Aws(e) if e.is_usage() => exit_codes::USAGE,
            FollowError::Time(_) | FollowError::Usage(_) | FollowError::Config(_) => {
                exit_codes::USAGE
            }
            _ => exit_codes::ERROR,
        }
    }
}
