//! [`Error`]: why an LLM call produced no answer, grouped by what the caller does next
//! (retry later, or give up), and its mapping to an [`ActivityError`] so that the
//! activity's retry policy does the right thing.

use crate::ActivityError;

/// Failure type: the API answered 429 (retried).
pub const RATE_LIMITED_TYPE: &str = "LlmRateLimited";
/// Failure type: the API answered 5xx (retried).
pub const SERVER_ERROR_TYPE: &str = "LlmServerError";
/// Failure type: the API could not be reached, or did not answer in time (retried).
pub const UNAVAILABLE_TYPE: &str = "LlmUnavailable";
/// Failure type: the API answered 2xx with a body that is not a chat completion (retried:
/// usually a proxy or a truncated answer).
pub const INVALID_RESPONSE_TYPE: &str = "LlmInvalidResponse";
/// Failure type: the API refused the request (400, 404, 413, 422, ...; never retried).
pub const BAD_REQUEST_TYPE: &str = "LlmBadRequest";
/// Failure type: the API refused the credentials (401, 403; never retried).
pub const AUTH_TYPE: &str = "LlmAuth";
/// Failure type: the worker's LLM configuration is invalid (never retried).
pub const CONFIG_TYPE: &str = "LlmConfig";
/// Failure type: the request refers to an earlier transcript that cannot be resolved (the
/// blob is missing, damaged or not a chat request; never retried).
pub const TRANSCRIPT_TYPE: &str = "LlmTranscript";

/// The failure types an `llm.chat` activity never retries.
pub const NON_RETRYABLE_TYPES: &[&str] =
    &[BAD_REQUEST_TYPE, AUTH_TYPE, CONFIG_TYPE, TRANSCRIPT_TYPE];

/// Why an LLM call produced no answer. Messages carry the HTTP status and the API's own
/// error message, never the prompt or the API key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// HTTP 429: too many requests or tokens; try again later.
    #[error("LLM API rate limit (HTTP {status}): {message}")]
    RateLimited {
        /// The HTTP status.
        status: u16,
        /// The API's error message (and its Retry-After, if any).
        message: String,
    },
    /// HTTP 5xx (or 408): the API failed; try again later.
    #[error("LLM API server error (HTTP {status}): {message}")]
    Server {
        /// The HTTP status.
        status: u16,
        /// The API's error message.
        message: String,
    },
    /// No answer: connection refused or reset, DNS, TLS, or the timeout elapsed.
    #[error("LLM API unavailable: {0}")]
    Unavailable(String),
    /// A 2xx answer that is not a chat completion (malformed JSON, no choices).
    #[error("LLM API returned an invalid response: {0}")]
    InvalidResponse(String),
    /// HTTP 401 or 403: the key is missing, wrong or not allowed.
    #[error("LLM API refused the credentials (HTTP {status}): {message}")]
    Auth {
        /// The HTTP status.
        status: u16,
        /// The API's error message.
        message: String,
    },
    /// Any other 4xx: the request itself is wrong (unknown model, bad tool schema, ...).
    #[error("LLM API refused the request (HTTP {status}): {message}")]
    BadRequest {
        /// The HTTP status.
        status: u16,
        /// The API's error message.
        message: String,
    },
    /// The LLM settings of this worker are invalid.
    #[error("invalid LLM configuration: {0}")]
    Config(String),
    /// The request refers to an earlier transcript ([`super::TranscriptRef`]) that cannot be
    /// resolved: not found on the server, damaged, or not a chat request.
    #[error("cannot resolve the conversation transcript: {0}")]
    Transcript(String),
    /// A background response ended `failed` (or was cancelled at the provider): typed by its
    /// error code like the HTTP statuses (`rate_limit_exceeded` as a rate limit,
    /// `invalid_*` and image errors as a refused request, anything else as a server error).
    #[error("LLM background response {status} ({code}): {message}")]
    Job {
        /// `failed` or `cancelled`.
        status: String,
        /// The provider's error code (`server_error`, `invalid_prompt`, ...).
        code: String,
        /// The provider's error message.
        message: String,
    },
    /// The response id of a background generation could not be recorded in the run's
    /// history before waiting on it (the generation was cancelled; retried).
    #[error("the background response id was not recorded: {0}")]
    NotRecorded(String),
    /// The activity was cancelled; its background generation was cancelled at the provider.
    #[error("the LLM call was cancelled")]
    Cancelled,
}

impl Error {
    /// The error for an HTTP status that is not a success, with the API's message.
    pub fn from_status(status: u16, message: String) -> Self {
        match status {
            429 => Error::RateLimited { status, message },
            408 | 500..=599 => Error::Server { status, message },
            401 | 403 => Error::Auth { status, message },
            _ => Error::BadRequest { status, message },
        }
    }

    /// The failure type reported to the server (matched by the retry policy).
    pub fn error_type(&self) -> &'static str {
        match self {
            Error::RateLimited { .. } => RATE_LIMITED_TYPE,
            Error::Server { .. } => SERVER_ERROR_TYPE,
            Error::Unavailable(_) => UNAVAILABLE_TYPE,
            Error::InvalidResponse(_) => INVALID_RESPONSE_TYPE,
            Error::Auth { .. } => AUTH_TYPE,
            Error::BadRequest { .. } => BAD_REQUEST_TYPE,
            Error::Config(_) => CONFIG_TYPE,
            Error::Transcript(_) => TRANSCRIPT_TYPE,
            Error::Job { code, .. } => match code.as_str() {
                "rate_limit_exceeded" => RATE_LIMITED_TYPE,
                c if c.starts_with("invalid_") || c.contains("image") => BAD_REQUEST_TYPE,
                _ => SERVER_ERROR_TYPE,
            },
            Error::NotRecorded(_) => crate::activity::NOT_RECORDED_TYPE,
            Error::Cancelled => crate::activity::CANCELLED_TYPE,
        }
    }

    /// Whether trying the same request again may succeed.
    pub fn is_retryable(&self) -> bool {
        !NON_RETRYABLE_TYPES.contains(&self.error_type())
    }
}

impl From<Error> for ActivityError {
    fn from(e: Error) -> Self {
        if e == Error::Cancelled {
            return ActivityError::Cancelled;
        }
        let activity_error = if e.is_retryable() {
            ActivityError::retryable(e.to_string())
        } else {
            ActivityError::non_retryable(e.to_string())
        };
        activity_error.with_type(e.error_type())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_map_to_what_the_retry_policy_needs() {
        let cases = [
            (429, RATE_LIMITED_TYPE, true),
            (500, SERVER_ERROR_TYPE, true),
            (502, SERVER_ERROR_TYPE, true),
            (503, SERVER_ERROR_TYPE, true),
            (408, SERVER_ERROR_TYPE, true),
            (400, BAD_REQUEST_TYPE, false),
            (404, BAD_REQUEST_TYPE, false),
            (422, BAD_REQUEST_TYPE, false),
            (401, AUTH_TYPE, false),
            (403, AUTH_TYPE, false),
        ];
        for (status, ty, retryable) in cases {
            let e = Error::from_status(status, "m".into());
            assert_eq!(
                (e.error_type(), e.is_retryable()),
                (ty, retryable),
                "{status}"
            );
            let ActivityError::Failed {
                error_type,
                non_retryable,
                message,
            } = ActivityError::from(e)
            else {
                panic!("not Failed")
            };
            assert_eq!((error_type.as_str(), non_retryable), (ty, !retryable));
            assert!(message.contains(&status.to_string()) && message.contains('m'));
        }
        assert!(Error::Unavailable("x".into()).is_retryable());
        assert!(Error::InvalidResponse("x".into()).is_retryable());
        assert!(!Error::Config("x".into()).is_retryable());
        assert!(!Error::Transcript("x".into()).is_retryable());
        let job = |code: &str| Error::Job {
            status: "failed".into(),
            code: code.into(),
            message: "m".into(),
        };
        for (code, ty) in [
            ("server_error", SERVER_ERROR_TYPE),
            ("rate_limit_exceeded", RATE_LIMITED_TYPE),
            ("invalid_prompt", BAD_REQUEST_TYPE),
            ("image_too_large", BAD_REQUEST_TYPE),
            ("vector_store_timeout", SERVER_ERROR_TYPE),
        ] {
            assert_eq!(job(code).error_type(), ty, "{code}");
        }
        assert!(!job("invalid_prompt").is_retryable());
        assert!(job("server_error").is_retryable());
        assert!(Error::NotRecorded("x".into()).is_retryable());
        assert!(matches!(
            ActivityError::from(Error::Cancelled),
            ActivityError::Cancelled
        ));
    }
}
