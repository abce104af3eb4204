//! Retry policy: what a failed CloudWatch call means ([`classify`], a pure function) and how
//! long to wait before the next try ([`Backoff`], capped exponential with full jitter).

use std::error::Error as StdError;

use aws_sdk_cloudwatchlogs::error::{ProvideErrorMetadata, SdkError};

/// A failed call, reduced to what the policy needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failure {
    /// The service answered with an error.
    Service {
        code: Option<String>,
        status: u16,
        message: String,
    },
    /// No answer in time.
    Timeout(String),
    /// The connection failed or broke (refused, reset, DNS, TLS).
    Transport(String),
    /// No credentials could be found or loaded.
    Credentials(String),
    /// The request could not be built (a bug or invalid input).
    Construction(String),
}

/// What to do about a failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Action {
    /// Wait and send the same request again.
    Retry,
    /// The group or stream is gone: create it, then send again.
    Recreate,
    /// Give up: retrying cannot help.
    Fatal,
}

/// Error codes that mean the credentials are not accepted.
const AUTH_CODES: &[&str] = &[
    "UnrecognizedClientException",
    "InvalidSignatureException",
    "IncompleteSignature",
    "ExpiredTokenException",
    "ExpiredToken",
    "AccessDeniedException",
    "AccessDenied",
    "MissingAuthenticationToken",
    "InvalidClientTokenId",
    "SignatureDoesNotMatch",
];

/// Error codes worth another try.
const TRANSIENT_CODES: &[&str] = &[
    "ThrottlingException",
    "Throttling",
    "TooManyRequestsException",
    "RequestLimitExceeded",
    "LimitExceededException",
    "ServiceUnavailableException",
    "ServiceUnavailable",
    "InternalFailure",
    "InternalServerError",
    "RequestTimeout",
    "RequestTimeoutException",
];

/// The policy. Pure: the same failure always gets the same answer.
pub(crate) fn classify(f: &Failure) -> Action {
    match f {
        Failure::Timeout(_) | Failure::Transport(_) => Action::Retry,
        Failure::Credentials(_) | Failure::Construction(_) => Action::Fatal,
        Failure::Service { code, status, .. } => {
            let code = code.as_deref().unwrap_or("");
            if code == "ResourceNotFoundException" {
                Action::Recreate
            } else if AUTH_CODES.contains(&code) {
                Action::Fatal
            } else if TRANSIENT_CODES.contains(&code) || *status == 429 || *status >= 500 {
                Action::Retry
            } else {
                Action::Fatal
            }
        }
    }
}

/// Error codes that mean the request was throttled (counted apart in the summary).
const THROTTLING_CODES: &[&str] = &[
    "ThrottlingException",
    "Throttling",
    "TooManyRequestsException",
    "RequestLimitExceeded",
];

impl Failure {
    /// True when the request may have been applied although no answer came (a timeout, a
    /// broken connection): sending it again could store it twice.
    pub(crate) fn is_ambiguous(&self) -> bool {
        matches!(self, Failure::Timeout(_) | Failure::Transport(_))
    }

    /// True when CloudWatch throttled the request.
    pub(crate) fn is_throttling(&self) -> bool {
        matches!(self, Failure::Service { code: Some(c), .. } if THROTTLING_CODES.contains(&c.as_str()))
    }
}

/// True when the failure says the credentials were refused.
pub(crate) fn is_auth(f: &Failure) -> bool {
    matches!(f, Failure::Service { code: Some(c), .. } if AUTH_CODES.contains(&c.as_str()))
        || matches!(f, Failure::Credentials(_))
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Failure::Service {
                code,
                status,
                message,
            } => {
                write!(f, "{} (HTTP {status})", code.as_deref().unwrap_or("error"))?;
                if !message.is_empty() {
                    write!(f, ": {}", first_line(message))?;
                }
                Ok(())
            }
            Failure::Timeout(m) => write!(f, "timed out: {m}"),
            Failure::Transport(m) => write!(f, "connection failed: {m}"),
            Failure::Credentials(m) => write!(f, "no usable AWS credentials: {m}"),
            Failure::Construction(m) => write!(f, "could not build the request: {m}"),
        }
    }
}

/// A service message in one line: AWS's signature errors carry the whole canonical request
/// (20 lines) after their first; the first says what is wrong. At most 300 characters.
fn first_line(message: &str) -> String {
    let line = message.lines().next().unwrap_or("").trim_end();
    let mut cut: String = line.chars().take(300).collect();
    if cut.len() < line.len() || message.lines().nth(1).is_some() {
        cut.push_str(" …");
    }
    cut
}

pub(crate) use crate::util::chain;

/// Reduces an SDK error to a [`Failure`].
pub(crate) fn failure_of<E, R>(err: &SdkError<E, R>) -> Failure
where
    E: ProvideErrorMetadata + StdError + 'static,
    R: std::fmt::Debug + HasStatus,
{
    let text = chain(err);
    let looks_like_credentials = text.contains("credentials") || text.contains("Credentials");
    match err {
        SdkError::ServiceError(s) => Failure::Service {
            code: s.err().code().map(str::to_string),
            status: s.raw().status(),
            message: s.err().message().unwrap_or_default().to_string(),
        },
        SdkError::TimeoutError(_) => Failure::Timeout(text),
        SdkError::DispatchFailure(d) if d.is_timeout() => Failure::Timeout(text),
        SdkError::DispatchFailure(_) if looks_like_credentials => Failure::Credentials(text),
        SdkError::DispatchFailure(_) => Failure::Transport(text),
        SdkError::ResponseError(r) => {
            let status = r.raw().status();
            if status >= 500 || status == 429 {
                Failure::Service {
                    code: None,
                    status,
                    message: text,
                }
            } else {
                Failure::Transport(text)
            }
        }
        SdkError::ConstructionFailure(_) if looks_like_credentials => Failure::Credentials(text),
        _ => Failure::Construction(text),
    }
}

/// Access to an HTTP status, so [`failure_of`] stays generic over the response type.
pub(crate) trait HasStatus {
    fn status(&self) -> u16;
}

impl HasStatus for aws_smithy_runtime_api::http::Response {
    fn status(&self) -> u16 {
        self.status().as_u16()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_service_message_is_said_in_one_line() {
        let f = Failure::Service {
            code: Some("InvalidSignatureException".into()),
            status: 400,
            message: "The request signature we calculated does not match.\n\nThe Canonical String for this request should have been\n'POST\n/\n'".into(),
        };
        let text = f.to_string();
        assert_eq!(
            text,
            "InvalidSignatureException (HTTP 400): The request signature we calculated does not match. …"
        );
    }

    fn svc(code: &str, status: u16) -> Failure {
        Failure::Service {
            code: Some(code.into()),
            status,
            message: String::new(),
        }
    }

    #[test]
    fn transient_failures_are_retried() {
        for f in [
            svc("ThrottlingException", 400),
            svc("ServiceUnavailableException", 503),
            svc("SomethingNew", 500),
            Failure::Service {
                code: None,
                status: 502,
                message: String::new(),
            },
            svc("Whatever", 429),
            Failure::Timeout("t".into()),
            Failure::Transport("reset".into()),
        ] {
            assert_eq!(classify(&f), Action::Retry, "{f:?}");
        }
    }

    #[test]
    fn missing_destination_is_recreated() {
        assert_eq!(
            classify(&svc("ResourceNotFoundException", 400)),
            Action::Recreate
        );
    }

    #[test]
    fn auth_and_invalid_requests_are_fatal() {
        for f in [
            svc("UnrecognizedClientException", 400),
            svc("InvalidSignatureException", 400),
            svc("ExpiredTokenException", 400),
            svc("AccessDeniedException", 400),
            svc("InvalidParameterException", 400),
            Failure::Credentials("none".into()),
            Failure::Construction("bad".into()),
        ] {
            assert_eq!(classify(&f), Action::Fatal, "{f:?}");
        }
        assert!(is_auth(&svc("UnrecognizedClientException", 400)));
        assert!(!is_auth(&svc("InvalidParameterException", 400)));
    }
}
