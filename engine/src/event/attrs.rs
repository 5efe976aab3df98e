//! The attributes of each event kind.
//!
//! Encoding rule (pinned by the snapshot test): each struct is a msgpack array of its fields in
//! declaration order. Fields are only ever appended, and every appended field carries
//! `#[serde(default)]`, so records written by older versions keep decoding. An appended field
//! is left out when it is at its default (`skip_serializing_if`; only ever on trailing
//! fields), so records that do not use it keep the exact bytes of the older format.

use serde::{Deserialize, Serialize};

pub use super::run_started::RunStarted;
pub use super::values::*;
use crate::ids::RunId;
use crate::payload::Payload;

/// A command's sequence number: 1, 2, 3... in the order the workflow code issued commands.
/// Activity and timer ids are their command seqs.
pub type CommandSeq = u32;

/// Milliseconds since the Unix epoch.
pub type TimeMs = i64;

macro_rules! attrs {
    ($( $(#[$m:meta])* pub struct $name:ident { $( $(#[$fm:meta])* pub $f:ident : $t:ty ),* $(,)? } )*) => {
        $(
            $(#[$m])*
            #[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
            pub struct $name { $( $(#[$fm])* pub $f: $t ),* }
        )*
    };
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

/// Whether a trailing field is at its default 0 (then it is not written).
fn is_zero(v: &u64) -> bool {
    *v == 0
}

fn is_false(v: &bool) -> bool {
    !*v
}
