//! The attributes of each event kind.
//!
//! Encoding rule (pinned by the snapshot test): each struct is a msgpack array of its fields in
//! declaration order. Fields are only ever appended, and every appended field carries
//! `#[serde(default)]`, so records written by older versions keep decoding. An appended field
//! is left out when it is at its default (`skip_serializing_if`; only ever on trailing
//! fields), so records that do not use it keep the exact bytes of the older format.

use serde::{Deserialize, Serialize};
use serde_repr::{Deserialize_repr, Serialize_repr};

use crate::ids::RunId;
use crate::payload::Payload;

/// A command's sequence number: 1, 2, 3... in the order the workflow code issued commands.
/// Activity and timer ids are their command seqs.
pub type CommandSeq = u32;

/// Milliseconds since the Unix epoch.
pub type TimeMs = i64;

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

/// Whether a trailing field is at its default 0 (then it is not written).
fn is_zero(v: &u64) -> bool {
    *v == 0
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

macro_rules! attrs {
    ($( $(#[$m:meta])* pub struct $name:ident { $( $(#[$fm:meta])* pub $f:ident : $t:ty ),* $(,)? } )*) => {
        $(
            $(#[$m])*
            #[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
            pub struct $name { $( $(#[$fm])* pub $f: $t ),* }
        )*
    };
}

/// A run began.
#[derive(Clone, Debug, PartialEq, Deserialize)]
pub struct RunStarted {
    /// Workflow type.
    pub workflow_type: String,
    /// Caller-chosen id (or the run id).
    pub workflow_id: String,
    /// Queue of its workflow tasks and default for activities.
    pub task_queue: String,
    /// Input.
    pub input: Payload,
    /// 0 = none.
    pub run_timeout_ms: u64,
    /// Ceilings.
    pub budget: Budget,
    /// The run this one continues (continue-as-new).
    pub continued_from: Option<RunId>,
    /// Who started it.
    pub identity: String,
    /// Seed of the workflow's deterministic randomness.
    pub random_seed: u64,
    /// The run that started this one as its child, and the command that did. Not written
    /// when absent (see the `Serialize` impl), so a run without a parent has the bytes of the
    /// older format.
    #[serde(default)]
    pub parent: Option<ParentRef>,
    /// The run and the seq this run was forked from (`run fork` / `run reset`): its
    /// history up to that seq is the original's. Not written when absent, so a run that
    /// is not a fork has the bytes of the older format.
    #[serde(default)]
    pub forked_from: Option<ForkRef>,
    /// The schedule that started this run, and the slot it fired for. Not written when
    /// absent, so a run no schedule started has the bytes of the older format.
    #[serde(default)]
    pub schedule: Option<ScheduleRef>,
    /// The W3C traceparent given at StartWorkflow (validated by the server): the run's trace
    /// continues the caller's. Not written when absent, so a run started without one has the
    /// bytes of the older format.
    #[serde(default)]
    pub traceparent: Option<String>,
}

/// Fields are written in order, as a msgpack array, so an optional field can only be left
/// out at the end: the trailing `None`s among `parent`, `forked_from`, `schedule` and
/// `traceparent` are not written (a run with none of them has the older format's bytes), and
/// a `None` before a `Some` is written as nil, so that every field keeps its position.
impl Serialize for RunStarted {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct;
        let tail = if self.traceparent.is_some() {
            4
        } else if self.schedule.is_some() {
            3
        } else if self.forked_from.is_some() {
            2
        } else {
            usize::from(self.parent.is_some())
        };
        let mut st = s.serialize_struct("RunStarted", 9 + tail)?;
        st.serialize_field("workflow_type", &self.workflow_type)?;
        st.serialize_field("workflow_id", &self.workflow_id)?;
        st.serialize_field("task_queue", &self.task_queue)?;
        st.serialize_field("input", &self.input)?;
        st.serialize_field("run_timeout_ms", &self.run_timeout_ms)?;
        st.serialize_field("budget", &self.budget)?;
        st.serialize_field("continued_from", &self.continued_from)?;
        st.serialize_field("identity", &self.identity)?;
        st.serialize_field("random_seed", &self.random_seed)?;
        if tail >= 1 {
            st.serialize_field("parent", &self.parent)?;
        } else {
            st.skip_field("parent")?;
        }
        if tail >= 2 {
            st.serialize_field("forked_from", &self.forked_from)?;
        } else {
            st.skip_field("forked_from")?;
        }
        if tail >= 3 {
            st.serialize_field("schedule", &self.schedule)?;
        } else {
            st.skip_field("schedule")?;
        }
        if tail >= 4 {
            st.serialize_field("traceparent", &self.traceparent)?;
        } else {
            st.skip_field("traceparent")?;
        }
        st.end()
    }
}

attrs! {
    /// The run has new events for its code.
    pub struct WorkflowTaskScheduled {
        /// Queue.
        pub task_queue: String,
        /// 1 normally; more after failed tasks.
        pub attempt: u32,
        /// Not offered to workers before this time (backoff after a failed task); 0 = now.
        #[serde(default)]
        pub not_before_ms: TimeMs,
    }
    /// A worker took the workflow task; ends the batch of events its code sees.
    pub struct WorkflowTaskStarted {
        /// The WorkflowTaskScheduled it answers.
        pub scheduled_seq: u64,
        /// Worker id.
        pub worker: String,
        /// How long the worker may hold the task before it is timed out (the server's
        /// `--workflow-task-timeout` when it was handed out); 0 = the default,
        /// [`crate::store::core::WORKFLOW_TASK_TIMEOUT_MS_DEFAULT`]. Recorded so that the
        /// deadline is a function of the history, the same on every node and after a restart.
        /// Not written when 0, so a record without it has the bytes of the older format.
        #[serde(default, skip_serializing_if = "is_zero")]
        pub timeout_ms: u64,
    }
    /// The worker returned the task's commands; their events follow it.
    pub struct WorkflowTaskCompleted {
        /// The WorkflowTaskStarted it answers.
        pub started_seq: u64,
        /// Worker id.
        pub worker: String,
    }
    /// The workflow code failed on this task (the run is held, not failed).
    pub struct WorkflowTaskFailed {
        /// The WorkflowTaskStarted it answers.
        pub started_seq: u64,
        /// Why.
        pub cause: WorkflowTaskFailCause,
        /// Details (for nondeterminism: seq, history, code).
        pub message: String,
        /// Worker id.
        pub worker: String,
    }
    /// The worker holding the task went silent.
    pub struct WorkflowTaskTimedOut {
        /// The WorkflowTaskStarted it answers.
        pub started_seq: u64,
    }
    /// The workflow asked for an activity.
    pub struct ActivityScheduled {
        /// Command seq = activity id.
        pub command_seq: CommandSeq,
        /// Activity type (tool or LLM call name).
        pub activity_type: String,
        /// Input.
        pub input: Payload,
        /// Options.
        pub options: ActivityOptions,
    }
    /// An attempt was handed to a worker, recorded durably before it runs (every effect;
    /// before the `effect` field existed only `write` attempts were recorded). Its record
    /// time is when the attempt started: its start-to-close deadline is that time plus the
    /// options' `start_to_close_ms`, and a worker's heartbeats never move it.
    pub struct ActivityStarted {
        /// Activity id.
        pub command_seq: CommandSeq,
        /// Attempt, from 1.
        pub attempt: u32,
        /// Worker id.
        pub worker: String,
        /// The effect the worker running the attempt declared: a lost `write` attempt waits
        /// for reconciliation, others are retried. Absent in older records, which were all
        /// `write` attempts. Not written for `write`, so such a record has the bytes of the
        /// older format.
        #[serde(
            default = "Effect::started_default",
            skip_serializing_if = "Effect::is_started_default"
        )]
        pub effect: Effect,
    }
    /// The activity's result.
    pub struct ActivityCompleted {
        /// Activity id.
        pub command_seq: CommandSeq,
        /// Attempt that produced it.
        pub attempt: u32,
        /// Result.
        pub result: Payload,
        /// Time of the attempt.
        pub duration_ms: u64,
        /// For LLM calls.
        pub usage: Option<Usage>,
        /// Supplied by an operator.
        pub reconciled: bool,
    }
    /// An attempt failed.
    pub struct ActivityFailed {
        /// Activity id.
        pub command_seq: CommandSeq,
        /// Attempt.
        pub attempt: u32,
        /// Why.
        pub failure: Failure,
        /// When the next attempt is due; `None` = final.
        pub retry_at_ms: Option<TimeMs>,
        /// Time of the attempt.
        pub duration_ms: u64,
        /// What the failed attempt used (an LLM call that failed after generating); counted
        /// in the run's usage and budget like a completion's. Not written when absent.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub usage: Option<Usage>,
    }
    /// An attempt (or the whole activity) timed out.
    pub struct ActivityTimedOut {
        /// Activity id.
        pub command_seq: CommandSeq,
        /// Attempt.
        pub attempt: u32,
        /// Which timeout.
        pub timeout: TimeoutKind,
        /// When the next attempt is due; `None` = final.
        pub retry_at_ms: Option<TimeMs>,
    }
    /// What an attempt that had already timed out used, reported late by its worker (an LLM
    /// call that did run). Counted in the run's usage and budget like a completion's; the
    /// activity's outcome is unchanged. At most one per timed-out attempt.
    pub struct ActivityUsageReported {
        /// Activity id.
        pub command_seq: CommandSeq,
        /// The attempt that timed out.
        pub attempt: u32,
        /// What it used.
        pub usage: Usage,
    }
    /// The workflow asked to cancel an activity.
    pub struct ActivityCancelRequested {
        /// This command's seq.
        pub command_seq: CommandSeq,
        /// The activity.
        pub activity_id: CommandSeq,
    }
    /// The activity ended as cancelled.
    pub struct ActivityCancelled {
        /// Activity id.
        pub command_seq: CommandSeq,
    }
    /// A `write` attempt was lost (its worker went silent): the run waits for reconciliation.
    pub struct ActivityOutcomeUnknown {
        /// Activity id.
        pub command_seq: CommandSeq,
        /// Attempt.
        pub attempt: u32,
    }
    /// An operator decided a lost attempt's fate (retry).
    pub struct ActivityReconciled {
        /// Activity id.
        pub command_seq: CommandSeq,
        /// Decision.
        pub decision: ReconcileDecision,
        /// Operator.
        pub identity: String,
    }
    /// Heartbeat details of a running attempt.
    pub struct ActivityProgress {
        /// Activity id.
        pub command_seq: CommandSeq,
        /// Attempt.
        pub attempt: u32,
        /// Details.
        pub details: Payload,
    }
    /// A durable timer.
    pub struct TimerStarted {
        /// Timer id.
        pub command_seq: CommandSeq,
        /// Due time.
        pub fire_at_ms: TimeMs,
    }
    /// A timer fired.
    pub struct TimerFired {
        /// Timer id.
        pub command_seq: CommandSeq,
    }
    /// The workflow cancelled a timer.
    pub struct TimerCancelled {
        /// This command's seq.
        pub command_seq: CommandSeq,
        /// The timer.
        pub timer_id: CommandSeq,
    }
    /// The workflow waits for a signal (possibly a human's answer).
    pub struct SignalWaitStarted {
        /// Command seq.
        pub command_seq: CommandSeq,
        /// Signal name.
        pub name: String,
        /// Question for the human.
        pub question: String,
        /// Choices offered.
        pub choices: Vec<String>,
    }
    /// A signal arrived.
    pub struct SignalReceived {
        /// Signal name.
        pub name: String,
        /// Input.
        pub input: Payload,
        /// Sender.
        pub identity: String,
        /// Deduplication key.
        pub request_id: String,
    }
    /// Workflow progress.
    pub struct ProgressReported {
        /// Command seq.
        pub command_seq: CommandSeq,
        /// Units done.
        pub done: u64,
        /// Units in all.
        pub total: u64,
        /// Current step.
        pub message: String,
    }
    /// The result so far, kept if the run is stopped early.
    pub struct PartialResultRecorded {
        /// Command seq.
        pub command_seq: CommandSeq,
        /// The partial result.
        pub result: Payload,
    }
    /// Someone asked the run to cancel (cooperatively).
    pub struct CancelRequested {
        /// Why.
        pub reason: String,
        /// Who.
        pub identity: String,
    }
    /// The run's budget changed.
    pub struct BudgetUpdated {
        /// The new ceilings.
        pub budget: Budget,
        /// Who.
        pub identity: String,
    }
    /// The run hit a ceiling: nothing more is dispatched until the budget is raised.
    pub struct BudgetExceeded {
        /// Which ceiling.
        pub dimension: BudgetDimension,
        /// The ceiling.
        pub limit: u64,
        /// Used so far.
        pub used: u64,
    }
    /// The run completed.
    pub struct RunCompleted {
        /// Command seq.
        pub command_seq: CommandSeq,
        /// Result.
        pub result: Payload,
    }
    /// The run failed.
    pub struct RunFailed {
        /// Command seq (0 when the server failed it).
        pub command_seq: CommandSeq,
        /// Why.
        pub failure: Failure,
    }
    /// The run ended as cancelled.
    pub struct RunCancelled {
        /// Command seq.
        pub command_seq: CommandSeq,
        /// What it produced before stopping.
        pub partial_result: Option<Payload>,
    }
    /// The run was terminated.
    pub struct RunTerminated {
        /// Why.
        pub reason: String,
        /// Who.
        pub identity: String,
    }
    /// The run hit its run timeout.
    pub struct RunTimedOut {
        /// The run timeout that elapsed.
        pub run_timeout_ms: u64,
    }
    /// The run handed over to a new run.
    pub struct RunContinuedAsNew {
        /// Command seq.
        pub command_seq: CommandSeq,
        /// The new run.
        pub new_run_id: RunId,
        /// Its input.
        pub input: Payload,
        /// The new run keeps this run's pinned build (else it starts unpinned and goes to the
        /// queue's current build). Not written when false, so a record without it has the
        /// bytes of the older format.
        #[serde(default, skip_serializing_if = "is_false")]
        pub keep_build: bool,
    }
    /// The workflow asked for a child run. The child's run id is chosen here and recorded
    /// before the child exists, so that every creation attempt (after any crash) creates, or
    /// finds, the same run: a child is started once.
    pub struct ChildRunRequested {
        /// Command seq.
        pub command_seq: CommandSeq,
        /// The child's run id.
        pub child_run_id: RunId,
        /// Workflow type.
        pub workflow_type: String,
        /// Workflow id ("" = the child's run id).
        pub workflow_id: String,
        /// Queue of its workflow tasks.
        pub task_queue: String,
        /// Input.
        pub input: Payload,
        /// 0 = none.
        pub run_timeout_ms: u64,
        /// The child's ceilings, resolved from the parent's at request time.
        pub budget: Budget,
        /// What happens to it when the parent closes.
        pub parent_close_policy: ParentClosePolicy,
    }
    /// The child run was created.
    pub struct ChildRunStarted {
        /// The ChildRunRequested it answers.
        pub command_seq: CommandSeq,
        /// The child.
        pub run_id: RunId,
    }
    /// The child run could not be created (its workflow id has an open run, say).
    pub struct ChildRunStartFailed {
        /// The ChildRunRequested it answers.
        pub command_seq: CommandSeq,
        /// Why.
        pub failure: Failure,
    }
    /// The child run closed; its usage is added to the parent's.
    pub struct ChildRunClosed {
        /// The ChildRunRequested it answers.
        pub command_seq: CommandSeq,
        /// How it ended.
        pub outcome: ChildOutcome,
        /// Its result (completed), or partial result.
        pub result: Option<Payload>,
        /// Its failure (failed).
        pub failure: Option<Failure>,
        /// Its LLM usage (tokens and cost; `model` empty).
        pub usage: Usage,
        /// Activities it scheduled.
        pub activities: u64,
        /// LLM calls it completed.
        pub llm_calls: u64,
    }
    /// The workflow asked to signal another run.
    pub struct RunSignalRequested {
        /// Command seq.
        pub command_seq: CommandSeq,
        /// The run to signal (same namespace).
        pub run_id: RunId,
        /// Signal name.
        pub name: String,
        /// Input.
        pub input: Payload,
    }
    /// The signal asked for by RunSignalRequested was delivered, or could not be.
    pub struct RunSignalResolved {
        /// The RunSignalRequested it answers.
        pub command_seq: CommandSeq,
        /// Whether the target recorded it.
        pub delivered: bool,
        /// Why not, when not.
        pub message: String,
    }
    /// New code passed `patched(patch_id)` here: this run takes the patched branch.
    pub struct PatchMarker {
        /// Command seq.
        pub command_seq: CommandSeq,
        /// The change id.
        pub patch_id: String,
    }
    /// A caller asked for update `name` (`UpdateRun`); the workflow's validator and handler
    /// decide. `update_id` is the caller's request id: one update per id per run.
    pub struct UpdateRequested {
        /// The request id.
        pub update_id: String,
        /// The handler's name.
        pub name: String,
        /// The handler's input.
        pub input: Payload,
        /// Who asked.
        pub identity: String,
    }
    /// The update handler returned: its answer, given to the caller (and to every retry).
    pub struct UpdateCompleted {
        /// Command seq.
        pub command_seq: CommandSeq,
        /// The request id.
        pub update_id: String,
        /// The handler's result.
        pub result: Payload,
    }
    /// The update's validator (or a missing handler) refused it; the workflow did not change.
    pub struct UpdateRejected {
        /// Command seq.
        pub command_seq: CommandSeq,
        /// The request id.
        pub update_id: String,
        /// Why.
        pub reason: String,
    }
    /// Search attributes set or changed ([`crate::search`]): by the caller at start
    /// (`command_seq` 0, in the append that creates the run) or by the workflow
    /// (`upsert_search_attributes`, a command). Values given replace the ones of the same
    /// names; the others stay.
    pub struct SearchAttributesUpserted {
        /// Command seq; 0 = set by the caller when the run started.
        pub command_seq: CommandSeq,
        /// Name -> value.
        pub attributes: crate::search::SearchAttributes,
    }
    /// The run's memo: free-form JSON the caller set at start, shown by `run show`
    /// ([`crate::search::MEMO_BYTES_MAX`]).
    pub struct MemoRecorded {
        /// The memo (JSON, always inline).
        pub memo: Payload,
    }
    /// How the run's workflow tasks choose a worker build, set right after RunStarted (a
    /// run without it is pinned by its first completed workflow task). `pinned_build`
    /// non-empty: pinned from the start (a continue-as-new successor that kept its
    /// predecessor's build). `auto_upgrade`: never pinned; every workflow task goes to the
    /// task queue's current build.
    pub struct VersioningSet {
        /// The build the run is pinned to ("" = none yet).
        pub pinned_build: String,
        /// Never pinned.
        pub auto_upgrade: bool,
    }
    /// An activity that needs a human decision was about to be handed out: it waits for
    /// `run approve` or `run deny`, and nothing is dispatched meanwhile. Asked at most once
    /// per activity: an approved activity's retries run without asking again.
    pub struct ApprovalRequested {
        /// Activity id.
        pub command_seq: CommandSeq,
        /// The attempt that waits.
        pub attempt: u32,
        /// Why: the reason the workflow gave with the call, or the worker's declaration.
        pub reason: String,
        /// The worker whose registration asked for it ("" = the call's options did).
        pub declared_by: String,
        /// Size and hash of the arguments the decision is about.
        pub arguments: ArgumentsDigest,
    }
    /// A human approved the activity: it is dispatched (with `input` instead of the
    /// scheduled arguments when they edited them).
    pub struct ActivityApproved {
        /// Activity id.
        pub command_seq: CommandSeq,
        /// Who approved (the token's name when auth is on).
        pub identity: String,
        /// Their comment.
        pub comment: String,
        /// The arguments as edited before approval; `None` = as scheduled.
        pub input: Option<Payload>,
    }
    /// A human denied the activity. The ActivityFailed that follows in the same append
    /// (type `ApprovalDenied`, non-retryable) is what the workflow sees.
    pub struct ActivityDenied {
        /// Activity id.
        pub command_seq: CommandSeq,
        /// Who denied (the token's name when auth is on).
        pub identity: String,
        /// Why.
        pub reason: String,
    }
    /// The run is pinned to a worker build from here on: recorded just before the first
    /// WorkflowTaskCompleted of a build-declaring worker, in the same append (before it, so
    /// that the task's command events stay one block after the completion). Its workflow
    /// tasks then go only to workers of that build.
    pub struct BuildPinned {
        /// The build id.
        pub build_id: String,
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

fn is_false(v: &bool) -> bool {
    !*v
}

#[cfg(test)]
mod run_started_tests {
    use super::*;
    use crate::event::{Event, EventKind};

    fn base() -> RunStarted {
        RunStarted {
            workflow_type: "wf".into(),
            workflow_id: "id".into(),
            task_queue: "q".into(),
            input: Payload::json(b"{}".to_vec()),
            run_timeout_ms: 0,
            budget: Budget::default(),
            continued_from: None,
            identity: "t".into(),
            random_seed: 1,
            parent: None,
            forked_from: None,
            schedule: None,
            traceparent: None,
        }
    }

    /// Every combination of the optional fields reads back as written: a `None` before a
    /// `Some` must not shift the later fields into its place (a fork without a parent once
    /// read back as a run with a parent, a scheduled run not at all).
    #[test]
    fn optional_fields_keep_their_places() {
        let parent = ParentRef {
            run_id: RunId::new_v7(),
            command_seq: 3,
        };
        let fork = ForkRef {
            run_id: RunId::new_v7(),
            seq: 7,
        };
        let sched = ScheduleRef {
            name: "nightly".into(),
            slot_ms: 1_700_000_000_000,
        };
        let plain = Event::RunStarted(base()).encode_attrs();
        let tp = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
        for mask in 0u8..16 {
            let mut r = base();
            r.parent = (mask & 1 != 0).then_some(parent);
            r.forked_from = (mask & 2 != 0).then_some(fork);
            r.schedule = (mask & 4 != 0).then(|| sched.clone());
            r.traceparent = (mask & 8 != 0).then(|| tp.to_string());
            let bytes = Event::RunStarted(r.clone()).encode_attrs();
            let back = Event::decode_attrs(EventKind::RunStarted, &bytes)
                .unwrap_or_else(|e| panic!("mask {mask}: {e}"));
            assert_eq!(back, Event::RunStarted(r), "mask {mask}");
            if mask == 0 {
                assert_eq!(bytes, plain);
            }
        }
    }
}
