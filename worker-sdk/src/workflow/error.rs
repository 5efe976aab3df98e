//! Errors of the workflow executor ([`Error`]) and the outcome a workflow returns
//! ([`WorkflowError`]).

use crate::ActivityError;
use steadfast_proto::v1 as pb;

/// Why an activation (advancing a workflow instance over a batch of events) did not produce
/// commands. The worker reports it with FailWorkflowTask and evicts the instance; the server
/// holds the run and offers the task again later.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// The code issued different commands than the history holds (promise C4).
    #[error(
        "[STF-ND001] nondeterminism at command seq {seq}: history has {history} but the code issued {code}"
    )]
    Nondeterminism {
        /// The command seq where history and code part ways.
        seq: u32,
        /// What the history holds at `seq` ("nothing" when it holds no command there).
        history: String,
        /// What the code issued at `seq` ("nothing" when it issued no command there).
        code: String,
    },
    /// The workflow code panicked; the instance is unusable.
    #[error("[STF-WF002] workflow code panicked: {message}")]
    Panic {
        /// The panic message.
        message: String,
    },
    /// No workflow of this type is registered here.
    #[error("[STF-WF003] workflow type {0:?} is not registered on this worker")]
    UnknownWorkflowType(String),
    /// The workflow code kept waking itself without blocking.
    #[error("[STF-WF004] workflow code did not block after {0} polls in one activation")]
    Livelock(usize),
    /// The events handed to the instance are not a valid continuation of what it has seen.
    #[error("[STF-WF005] bad history: {0}")]
    BadHistory(String),
    /// The server refused the task's completion for a reason no retry fixes (a limit, a
    /// command about something that is not open, a bad name). The run is held, offered again
    /// later, and continues once fixed code or a raised limit lets it.
    #[error("[STF-WT002] the server refused the task's completion: {code}: {message}")]
    CompletionRefused {
        /// The gRPC status code name (e.g. "InvalidArgument").
        code: String,
        /// The start of the server's message ([`REFUSAL_MESSAGE_CHARS_MAX`] characters).
        message: String,
    },
    /// The workflow code ran for longer than the activation bound without yielding
    /// ([`crate::WorkerOptions::activation_timeout`]): a loop that never awaits, or a
    /// blocking call. The thread that ran it is abandoned.
    #[error(
        "[STF-WT004] workflow code did not yield within {limit_ms} ms in one activation (a loop without .await, or a blocking call)"
    )]
    DidNotYield {
        /// The bound, in milliseconds.
        limit_ms: u64,
    },
    /// The workflow is blocked, but on nothing the SDK can ever wake: no SDK future
    /// (activity, timer, signal, cancellation) was pending when it stopped, so it awaits
    /// something else (a tokio timer, a channel, `pending()`).
    #[error(
        "[STF-WT005] workflow code awaits a future that is not the SDK's and can never be woken; await only the futures of WorkflowContext (and join/select over them)"
    )]
    ForeignAwait,
    /// The instance advanced over a workflow task that then failed or timed out; it must be
    /// rebuilt from the full history. Handled inside the worker; never reported.
    #[error("cached instance is stale: workflow task started at seq {0} did not complete")]
    Stale(u64),
}

impl Error {
    /// The FailWorkflowTask cause this error is reported with.
    pub fn fail_cause(&self) -> pb::WorkflowTaskFailCause {
        match self {
            Error::Nondeterminism { .. } => pb::WorkflowTaskFailCause::Nondeterminism,
            Error::Panic { .. } | Error::Livelock(_) => pb::WorkflowTaskFailCause::WorkflowPanic,
            Error::DidNotYield { .. } | Error::ForeignAwait => {
                pb::WorkflowTaskFailCause::WorkflowBlocked
            }
            Error::CompletionRefused { .. } => pb::WorkflowTaskFailCause::CompletionRefused,
            Error::UnknownWorkflowType(_) => pb::WorkflowTaskFailCause::UnknownWorkflowType,
            Error::BadHistory(_) | Error::Stale(_) => pb::WorkflowTaskFailCause::Unspecified,
        }
    }
}

/// The longest prefix of a server's refusal message quoted in
/// [`Error::CompletionRefused`] (it may quote a name or a size; it never holds a payload).
pub const REFUSAL_MESSAGE_CHARS_MAX: usize = 200;

impl Error {
    /// The error a refused CompleteWorkflowTask is reported with.
    pub fn completion_refused(status: &tonic::Status) -> Self {
        Error::CompletionRefused {
            code: format!("{:?}", status.code()),
            message: short(status.message(), REFUSAL_MESSAGE_CHARS_MAX),
        }
    }
}

/// At most `max` characters of `s`, with an ellipsis when cut.
pub(crate) fn short(s: &str, max: usize) -> String {
    match s.char_indices().nth(max) {
        None => s.to_owned(),
        Some((cut, _)) => format!("{}...", &s[..cut]),
    }
}

/// How a workflow ends other than with its result.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum WorkflowError {
    /// The run fails (FailRun).
    #[error("workflow failed ({error_type}): {message}")]
    Failed {
        /// What went wrong, for humans.
        message: String,
        /// A machine-readable error type.
        error_type: String,
    },
    /// The run ends as cancelled (CancelRun), with an optional partial result. Only valid
    /// after a cancel request ([`crate::WorkflowContext::is_cancel_requested`]); returned
    /// without one, the run fails instead.
    #[error("workflow cancelled")]
    Cancelled {
        /// What the workflow produced before it stopped.
        partial: Option<serde_json::Value>,
    },
    /// The run ends and a new run of the same workflow starts with this input, so that the
    /// history stays bounded.
    #[error("workflow continues as new")]
    ContinueAsNew(serde_json::Value),
    /// [`WorkflowError::ContinueAsNew`], and the new run stays pinned to this run's worker
    /// build (without it, the new run goes to the task queue's current build).
    #[error("workflow continues as new on its build")]
    ContinueAsNewKeepingBuild(serde_json::Value),
}

impl WorkflowError {
    /// A failure with the default error type "Error".
    pub fn failed(message: impl Into<String>) -> Self {
        WorkflowError::Failed {
            message: message.into(),
            error_type: "Error".into(),
        }
    }

    /// Continue as new with `input`.
    pub fn continue_as_new(input: &impl serde::Serialize) -> Self {
        match serde_json::to_value(input) {
            Ok(v) => WorkflowError::ContinueAsNew(v),
            Err(e) => e.into(),
        }
    }

    /// Continue as new with `input`, the new run pinned to this run's build (see the README,
    /// "Build ids").
    pub fn continue_as_new_keeping_build(input: &impl serde::Serialize) -> Self {
        match serde_json::to_value(input) {
            Ok(v) => WorkflowError::ContinueAsNewKeepingBuild(v),
            Err(e) => e.into(),
        }
    }
}

impl From<ActivityError> for WorkflowError {
    fn from(e: ActivityError) -> Self {
        WorkflowError::Failed {
            message: e.to_string(),
            error_type: e.error_type().to_owned(),
        }
    }
}

impl From<serde_json::Error> for WorkflowError {
    fn from(e: serde_json::Error) -> Self {
        WorkflowError::Failed {
            message: format!("serialization: {e}"),
            error_type: "steadfast.SerdeError".into(),
        }
    }
}
