//! The values event attributes are made of: options, budgets, usage, failures, and the
//! references between runs. Same encoding rule as [`super::attrs`].

use serde::{Deserialize, Serialize};
use serde_repr::{Deserialize_repr, Serialize_repr};

use super::attrs::{CommandSeq, TimeMs};
use crate::ids::RunId;
use crate::payload::Payload;

/// Retry policy of an activity; `None`/0 fields take the server's defaults.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, Default)]
pub struct RetryPolicy {
    /// Delay before the second attempt.
    pub initial_interval_ms: u64,
    /// Multiplier after each failure.
    pub backoff_coefficient: f64,
    /// Cap on the delay.
    pub maximum_interval_ms: u64,
    /// 0 = unlimited.
    pub maximum_attempts: u32,
    /// Failure types that are never retried.
    pub non_retryable_error_types: Vec<String>,
}

/// How a tool affects the world.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize_repr, Deserialize_repr, Default)]
#[repr(u8)]
pub enum Effect {
    /// Reads only.
    Read = 1,
    /// Writes with an idempotency key: safe to retry.
    #[default]
    Idempotent = 2,
    /// Writes that must not be repeated blindly: a lost attempt waits for reconciliation.
    Write = 3,
}

impl Effect {
    /// The effect of an ActivityStarted recorded before the field existed: only `write`
    /// attempts were recorded then.
    pub fn started_default() -> Effect {
        Effect::Write
    }

    /// Whether `e` is [`Effect::started_default`] (then it is not written: a trailing field
    /// at its default is left out, so records keep the older format's bytes).
    pub fn is_started_default(e: &Effect) -> bool {
        *e == Effect::Write
    }
}

/// Options of one activity, as scheduled.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, Default)]
pub struct ActivityOptions {
    /// The queue its tasks go to.
    pub task_queue: String,
    /// Retries.
    pub retry: RetryPolicy,
    /// 0 = none.
    pub schedule_to_close_ms: u64,
    /// 0 = default.
    pub start_to_close_ms: u64,
    /// 0 = none.
    pub heartbeat_ms: u64,
    /// Effect of the tool.
    pub effect: Effect,
    /// The call asked for a human decision before it runs (`run approve` / `run deny`),
    /// with this reason. Not written when absent, so options without it keep the bytes of
    /// the older format.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub approval: Option<String>,
}

/// Ceilings a run may not cross; 0 = no limit.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct Budget {
    /// Input + output tokens.
    pub max_tokens: u64,
    /// Millionths of a US dollar.
    pub max_cost_micros: u64,
    /// Activities scheduled.
    pub max_activities: u64,
    /// Wall time since the run started.
    pub max_duration_ms: u64,
}

/// Usage of one LLM call.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct Usage {
    /// Prompt tokens.
    pub input_tokens: u64,
    /// Completion tokens.
    pub output_tokens: u64,
    /// Millionths of a US dollar.
    pub cost_micros: u64,
    /// The model that answered.
    pub model: String,
}

/// Why something failed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct Failure {
    /// Human-readable message.
    pub message: String,
    /// Error type, matched against non-retryable types.
    pub error_type: String,
    /// Never retry.
    pub non_retryable: bool,
    /// Free-form details.
    pub details: String,
}

/// A budget dimension.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize_repr, Deserialize_repr)]
#[repr(u8)]
pub enum BudgetDimension {
    /// Input + output tokens.
    Tokens = 1,
    /// Cost in micro-dollars.
    Cost = 2,
    /// Activities scheduled.
    Activities = 3,
    /// Wall time.
    Duration = 4,
}

impl BudgetDimension {
    /// The name used in the API and CLI.
    pub fn as_str(self) -> &'static str {
        match self {
            BudgetDimension::Tokens => "tokens",
            BudgetDimension::Cost => "cost",
            BudgetDimension::Activities => "activities",
            BudgetDimension::Duration => "duration",
        }
    }
}

/// Why a workflow task failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize_repr, Deserialize_repr)]
#[repr(u8)]
pub enum WorkflowTaskFailCause {
    /// Not given.
    Unspecified = 0,
    /// The code did something else than its history recorded.
    Nondeterminism = 1,
    /// The workflow code panicked.
    WorkflowPanic = 2,
    /// The worker does not know this workflow type.
    UnknownWorkflowType = 3,
    /// The server refused the task's commands.
    BadCommand = 4,
}

/// Which timeout fired.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize_repr, Deserialize_repr,
)]
#[repr(u8)]
pub enum TimeoutKind {
    /// One attempt took too long.
    StartToClose = 1,
    /// All attempts together took too long.
    ScheduleToClose = 2,
    /// No heartbeat in time.
    Heartbeat = 3,
}

/// The operator's decision about a lost `write` attempt, other than complete/fail.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize_repr, Deserialize_repr)]
#[repr(u8)]
pub enum ReconcileDecision {
    /// Run the activity again.
    Retry = 1,
}

/// The parent of a child run: its run id and the command seq of its ChildRunRequested.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ParentRef {
    /// The parent run (same namespace).
    pub run_id: RunId,
    /// The parent's command that started this run.
    pub command_seq: CommandSeq,
}

/// Where a forked run came from: the original run and the last seq of the prefix it copied.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ForkRef {
    /// The original run (same namespace).
    pub run_id: RunId,
    /// The last seq copied from it (the fork's history is the original's up to here).
    pub seq: u64,
}

/// The schedule that started a run: its name and the slot (the nominal time) it fired for.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScheduleRef {
    /// The schedule's name (same namespace).
    pub name: String,
    /// The slot: the time the cadence named, before jitter.
    pub slot_ms: TimeMs,
}

/// What happens to an open child run when its parent closes (and, for `Cancel`, when the
/// parent is asked to cancel).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize_repr, Deserialize_repr, Default)]
#[repr(u8)]
pub enum ParentClosePolicy {
    /// The child is asked to cancel (cooperatively) when the parent is asked to cancel or
    /// closes.
    #[default]
    Cancel = 1,
    /// The child is terminated when the parent closes.
    Terminate = 2,
    /// The child runs on, on its own.
    Abandon = 3,
}

impl ParentClosePolicy {
    /// The name used by the API and CLI.
    pub fn as_str(self) -> &'static str {
        match self {
            ParentClosePolicy::Cancel => "cancel",
            ParentClosePolicy::Terminate => "terminate",
            ParentClosePolicy::Abandon => "abandon",
        }
    }
}

/// How a child run ended, as its parent records it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize_repr, Deserialize_repr)]
#[repr(u8)]
pub enum ChildOutcome {
    /// Returned a result.
    Completed = 1,
    /// Failed.
    Failed = 2,
    /// Ended after a cancel request.
    Cancelled = 3,
    /// Terminated.
    Terminated = 4,
    /// Hit its run timeout.
    TimedOut = 5,
    /// Continued as new (the parent is told of the first run only).
    ContinuedAsNew = 6,
}

impl ChildOutcome {
    /// The name used by the API and CLI (a run status name).
    pub fn as_str(self) -> &'static str {
        match self {
            ChildOutcome::Completed => "completed",
            ChildOutcome::Failed => "failed",
            ChildOutcome::Cancelled => "cancelled",
            ChildOutcome::Terminated => "terminated",
            ChildOutcome::TimedOut => "timed_out",
            ChildOutcome::ContinuedAsNew => "continued_as_new",
        }
    }
}

/// Size and blake3 of an activity's arguments, as shown to the human who decides.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct ArgumentsDigest {
    /// Bytes.
    pub len: u64,
    /// blake3 of the bytes.
    #[serde(with = "crate::payload::serde_bytes_array")]
    pub hash: crate::payload::Hash,
}

impl ArgumentsDigest {
    /// The digest of `p` (inline or a blob reference: no read needed).
    pub fn of(p: &Payload) -> ArgumentsDigest {
        ArgumentsDigest {
            len: p.len(),
            hash: p.data_hash(),
        }
    }
}
