//! [`Error`]: what went wrong for a client call, grouped by what the caller does next.

use tonic::Code;

/// A client call that did not succeed.
///
/// What to do next: [`Error::Unavailable`] — retry later ([`Error::is_retryable`]);
/// [`Error::NotFound`], [`Error::InvalidArgument`], [`Error::FailedPrecondition`] — fix the
/// request; `Run*` — the run itself ended without a result; [`Error::Timeout`] — wait
/// longer or come back later.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// No such run (or workflow id, or namespace).
    #[error("not found: {0}")]
    NotFound(String),
    /// The request is malformed; the message says what to fix.
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// The request is valid but not now (e.g. the run is closed).
    #[error("refused: {0}")]
    FailedPrecondition(String),
    /// A limit was hit (payload size, rate).
    #[error("resource exhausted: {0}")]
    ResourceExhausted(String),
    /// The server could not be reached or is restarting: retry.
    #[error("server unavailable: {0}")]
    Unavailable(String),
    /// The server answered with an error this SDK does not classify.
    #[error("server error ({code:?}): {message}")]
    Server {
        /// The gRPC status code.
        code: Code,
        /// The server's message.
        message: String,
    },
    /// No token, or one the server does not know (UNAUTHENTICATED): set
    /// [`ClientConfig::token`](super::ClientConfig::token) or `STEADFAST_TOKEN`.
    #[error("not authenticated: {0}")]
    Unauthenticated(String),
    /// The token is known but its role or namespaces do not allow this call
    /// (PERMISSION_DENIED): use a token bound to this namespace with the right role.
    #[error("permission denied: {0}")]
    PermissionDenied(String),
    /// A TLS file named in the configuration cannot be read.
    #[error("TLS: {0}")]
    Tls(String),
    /// The address in the configuration is not usable.
    #[error("bad server address {addr:?}: {message}")]
    BadAddress {
        /// The address.
        addr: String,
        /// Why.
        message: String,
    },
    /// The run did not close within the time given.
    #[error("timed out waiting for the run")]
    Timeout,
    /// The run failed.
    #[error("run failed ({error_type}): {message}")]
    RunFailed {
        /// The failure message.
        message: String,
        /// The failure type.
        error_type: String,
    },
    /// The run was cancelled; it may have left a partial result.
    #[error("run cancelled")]
    RunCancelled {
        /// The partial result, if the workflow recorded one.
        partial: Option<serde_json::Value>,
    },
    /// The run was terminated.
    #[error("run terminated: {reason}")]
    RunTerminated {
        /// Why, as given to terminate.
        reason: String,
        /// The last partial result, if any.
        partial: Option<serde_json::Value>,
    },
    /// The run hit its run timeout.
    #[error("run timed out")]
    RunTimedOut {
        /// The last partial result, if any.
        partial: Option<serde_json::Value>,
    },
    /// The workflow registered no query handler of this name ([STF-QUERY001]): fix the name.
    #[error("unknown query: {0}")]
    UnknownQuery(String),
    /// The query handler failed, or its worker could not replay the run ([STF-QUERY002]).
    #[error("query failed: {0}")]
    QueryFailed(String),
    /// The update's validator refused it ([STF-UPDATE001]); the run did not change.
    #[error("update rejected: {0}")]
    UpdateRejected(String),
    /// A payload could not be encoded, or a result decoded as the type asked for.
    #[error("payload: {0}")]
    Payload(#[from] serde_json::Error),
}

impl Error {
    /// Whether retrying the same call later may succeed.
    pub fn is_retryable(&self) -> bool {
        matches!(self, Error::Unavailable(_) | Error::Timeout)
    }
}

impl From<tonic::Status> for Error {
    fn from(s: tonic::Status) -> Self {
        let message = s.message().to_owned();
        if message.starts_with("[STF-QUERY001]") {
            return Error::UnknownQuery(message);
        }
        if message.starts_with("[STF-UPDATE001]") {
            return Error::UpdateRejected(message);
        }
        if message.starts_with("[STF-QUERY002]") {
            return Error::QueryFailed(message);
        }
        match s.code() {
            Code::NotFound => Error::NotFound(message),
            Code::InvalidArgument | Code::OutOfRange => Error::InvalidArgument(message),
            Code::FailedPrecondition | Code::AlreadyExists | Code::Aborted => {
                Error::FailedPrecondition(message)
            }
            Code::ResourceExhausted => Error::ResourceExhausted(message),
            Code::Unavailable | Code::DeadlineExceeded | Code::Cancelled => {
                Error::Unavailable(message)
            }
            // A connection reset mid-call surfaces as Unknown with a transport message.
            Code::Unknown if message.contains("transport") || message.contains("connection") => {
                Error::Unavailable(message)
            }
            Code::Unauthenticated => Error::Unauthenticated(message),
            Code::PermissionDenied => Error::PermissionDenied(message),
            code => Error::Server { code, message },
        }
    }
}
