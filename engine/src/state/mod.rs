//! The run state machine: `apply(&EventRecord)` folds a history into a [`RunState`].
//!
//! Pure: no I/O, no clock (time comes from the records, or is passed in). An event that is not
//! legal in the current state is a typed [`ApplyError`], never a panic, and leaves the state
//! unchanged, so the store can validate a batch before it reaches the log.

mod apply;
mod waiting;

#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

pub use waiting::WaitingOn;

use crate::event::{
    ActivityOptions, ArgumentsDigest, Budget, BudgetDimension, ChildOutcome, CommandSeq, Effect,
    Failure, ForkRef, ParentClosePolicy, ParentRef, ScheduleRef, TimeMs, Usage,
};
use crate::ids::{RunId, RunKey};
use crate::payload::{Hash, Payload};

/// How many timed-out attempts a run remembers as able to report their usage late: a bound on
/// the state's size when workers die without ever reporting (the oldest are forgotten first).
pub const TIMED_OUT_ATTEMPTS_KEPT_MAX: usize = 256;

/// Where a run is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum RunStatus {
    /// Open.
    Running,
    /// Returned a result.
    Completed,
    /// Failed.
    Failed,
    /// Ended after a cancel request.
    Cancelled,
    /// Ended by force.
    Terminated,
    /// Hit its run timeout.
    TimedOut,
    /// Handed over to a new run.
    ContinuedAsNew,
}

impl RunStatus {
    /// Whether the run has ended.
    pub fn is_closed(self) -> bool {
        self != RunStatus::Running
    }

    /// The name used by the API and CLI.
    pub fn as_str(self) -> &'static str {
        match self {
            RunStatus::Running => "running",
            RunStatus::Completed => "completed",
            RunStatus::Failed => "failed",
            RunStatus::Cancelled => "cancelled",
            RunStatus::Terminated => "terminated",
            RunStatus::TimedOut => "timed_out",
            RunStatus::ContinuedAsNew => "continued_as_new",
        }
    }

    /// Parses [`RunStatus::as_str`].
    pub fn parse(s: &str) -> Option<RunStatus> {
        Some(match s {
            "running" => RunStatus::Running,
            "completed" => RunStatus::Completed,
            "failed" => RunStatus::Failed,
            "cancelled" => RunStatus::Cancelled,
            "terminated" => RunStatus::Terminated,
            "timed_out" => RunStatus::TimedOut,
            "continued_as_new" => RunStatus::ContinuedAsNew,
            _ => return None,
        })
    }
}

/// The run's workflow task.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum WorkflowTask {
    /// None pending.
    Idle,
    /// Waiting for a worker.
    Scheduled {
        /// Seq of WorkflowTaskScheduled.
        scheduled_seq: u64,
        /// Attempt.
        attempt: u32,
        /// Not offered before this time.
        not_before_ms: TimeMs,
        /// When it was scheduled.
        since_ms: TimeMs,
    },
    /// A worker holds it.
    Started {
        /// Seq of WorkflowTaskScheduled.
        scheduled_seq: u64,
        /// Seq of WorkflowTaskStarted.
        started_seq: u64,
        /// Attempt.
        attempt: u32,
        /// Worker id.
        worker: String,
        /// When it started.
        since_ms: TimeMs,
        /// How long the worker may hold it (0 = the default); from WorkflowTaskStarted.
        #[serde(default)]
        timeout_ms: u64,
    },
}

/// Where one activity is.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ActivityPhase {
    /// Attempt `attempt` may be dispatched from `visible_ms` on.
    Ready {
        /// When it becomes visible to workers.
        visible_ms: TimeMs,
    },
    /// Attempt `attempt` was handed out (ActivityStarted, recorded durably before it ran):
    /// a worker runs it. Its deadlines are functions of `since_ms` and the options.
    Started {
        /// When.
        since_ms: TimeMs,
        /// Worker id.
        worker: String,
        /// The effect the worker declared: what happens if the attempt is lost.
        #[serde(default = "Effect::started_default")]
        effect: Effect,
    },
    /// Attempt `attempt` waits for a human decision (ApprovalRequested): not offered to
    /// workers, no deadline but schedule-to-close, until `run approve` or `run deny`.
    AwaitingApproval {
        /// When it was asked.
        since_ms: TimeMs,
        /// Why (the call's reason, or the worker's declaration).
        reason: String,
        /// The worker whose registration asked ("" = the call did).
        declared_by: String,
        /// Size and hash of the arguments.
        arguments: ArgumentsDigest,
    },
    /// A `write` attempt was lost; an operator must decide.
    OutcomeUnknown {
        /// When it was found lost.
        since_ms: TimeMs,
    },
}

/// An open activity.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ActivityState {
    /// Activity type.
    pub activity_type: String,
    /// Options as scheduled (task queue resolved).
    pub options: ActivityOptions,
    /// When it was scheduled.
    pub scheduled_ms: TimeMs,
    /// Seq of ActivityScheduled (where its input is).
    pub scheduled_seq: u64,
    /// The current (or next) attempt, from 1.
    pub attempt: u32,
    /// Phase.
    pub phase: ActivityPhase,
    /// The last attempt's failure.
    pub last_failure: Option<Failure>,
    /// 1-based position among the run's activities (for the activity budget).
    pub ordinal: u64,
    /// Cancellation was requested: by the workflow (ActivityCancelRequested), or by the run's
    /// cancel request while this activity was open.
    pub cancel_requested: bool,
    /// A human approved it (ActivityApproved): no attempt of it waits for approval again.
    /// Absent in states stored before it existed.
    #[serde(default)]
    pub approved: bool,
    /// Seq of the ActivityApproved whose edited arguments its attempts run with (instead of
    /// the scheduled input).
    #[serde(default)]
    pub approved_input_seq: Option<u64>,
}

impl ActivityState {
    /// Whether an attempt of it must wait for a human decision before it is handed to a
    /// worker that declared (`worker_requires`) or not that the type needs one.
    pub fn needs_approval(&self, worker_requires: bool) -> bool {
        !self.approved && (worker_requires || self.options.approval.is_some())
    }
}

/// An open wait for a signal.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignalWait {
    /// Command seq.
    pub command_seq: CommandSeq,
    /// Signal name.
    pub name: String,
    /// Question for the human.
    pub question: String,
    /// Choices offered.
    pub choices: Vec<String>,
    /// Since when.
    pub since_ms: TimeMs,
}

/// Usage totals of a run.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct UsageTotals {
    /// Prompt tokens.
    pub input_tokens: u64,
    /// Completion tokens.
    pub output_tokens: u64,
    /// Millionths of a US dollar.
    pub cost_micros: u64,
    /// Activities scheduled.
    pub activities: u64,
    /// Activities completed with usage (LLM calls).
    pub llm_calls: u64,
}

impl UsageTotals {
    /// Adds what one attempt reported (a completed or a failed LLM call).
    pub fn add(&mut self, u: &Usage) {
        self.input_tokens = self.input_tokens.saturating_add(u.input_tokens);
        self.output_tokens = self.output_tokens.saturating_add(u.output_tokens);
        self.cost_micros = self.cost_micros.saturating_add(u.cost_micros);
    }

    /// Input + output tokens.
    pub fn tokens(&self) -> u64 {
        self.input_tokens.saturating_add(self.output_tokens)
    }
}

/// The last progress the workflow reported.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProgressState {
    /// Units done.
    pub done: u64,
    /// Units in all.
    pub total: u64,
    /// Current step.
    pub message: String,
    /// When.
    pub time_ms: TimeMs,
}

/// Why the run is held (its last workflow task failed).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Held {
    /// Cause name.
    pub cause: String,
    /// Details.
    pub message: String,
    /// Failed workflow tasks recorded since the run's code last completed one. A held run's
    /// later attempts are transient (recorded only when one completes), so this stays small:
    /// the server records a failure again only when its cause differs from the one shown,
    /// and at most [`HELD_FAILURES_RECORDED_MAX`] times. 0 in states stored before it existed.
    #[serde(default)]
    pub recorded: u32,
}

/// Most failed workflow tasks the server records for one held run between two completed
/// tasks (the first failure, then one per change of cause): past it, failures of the
/// transient attempts are not recorded, whatever their cause, so that a run whose code
/// alternates between two errors does not grow its history per retry.
pub const HELD_FAILURES_RECORDED_MAX: u32 = 4;

/// A budget ceiling that was hit.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BudgetHit {
    /// Which.
    pub dimension: BudgetDimension,
    /// Ceiling.
    pub limit: u64,
    /// Used.
    pub used: u64,
}

/// Where a child run is, as its parent knows it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ChildPhase {
    /// Requested: the server creates it (after any crash, with the recorded run id).
    Requested,
    /// Created and open.
    Started,
    /// Could not be created.
    StartFailed,
    /// Closed, with how.
    Closed(ChildOutcome),
}

/// A child run of a parent.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChildState {
    /// Its run id (chosen when requested).
    pub run_id: RunId,
    /// Workflow type.
    pub workflow_type: String,
    /// Workflow id as requested ("" = its run id).
    pub workflow_id: String,
    /// Seq of the ChildRunRequested (where its input and options are).
    pub requested_seq: u64,
    /// What happens to it when the parent closes.
    pub policy: ParentClosePolicy,
    /// Where it is.
    pub phase: ChildPhase,
}

impl ChildState {
    /// Whether the child may still be running (requested or started).
    pub fn is_open(&self) -> bool {
        matches!(self.phase, ChildPhase::Requested | ChildPhase::Started)
    }
}

/// A signal to another run, asked for and not delivered yet.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OutgoingSignal {
    /// The target run.
    pub run_id: RunId,
    /// Signal name.
    pub name: String,
    /// Seq of the RunSignalRequested (where its input is).
    pub requested_seq: u64,
}

/// Everything known about a run, folded from its history.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RunState {
    /// Whose state.
    pub key: RunKey,
    /// Workflow type.
    pub workflow_type: String,
    /// Workflow id.
    pub workflow_id: String,
    /// Task queue.
    pub task_queue: String,
    /// Status.
    pub status: RunStatus,
    /// When it started.
    pub started_ms: TimeMs,
    /// When it ended.
    pub closed_ms: Option<TimeMs>,
    /// Seq of the last event.
    pub last_seq: u64,
    /// Hash of the last event.
    pub last_hash: Hash,
    /// 0 = none.
    pub run_timeout_ms: u64,
    /// Ceilings.
    pub budget: Budget,
    /// Totals.
    pub usage: UsageTotals,
    /// The seq the next workflow command must carry.
    pub next_command_seq: CommandSeq,
    /// The workflow task.
    pub workflow_task: WorkflowTask,
    /// Events arrived that the workflow code has not seen yet.
    pub unseen_events: bool,
    /// Set while the last workflow task failed.
    pub held: Option<Held>,
    /// Open activities by id.
    pub activities: BTreeMap<CommandSeq, ActivityState>,
    /// Open timers: id -> due time.
    pub timers: BTreeMap<CommandSeq, TimeMs>,
    /// Open signal waits.
    pub signal_waits: Vec<SignalWait>,
    /// Signals received so far, by name.
    pub signals_received: BTreeMap<String, u64>,
    /// Signals waited for so far, by name.
    pub signal_waits_issued: BTreeMap<String, u64>,
    /// A cancel was requested.
    pub cancel_requested: bool,
    /// Set while parked on a budget.
    pub budget_exceeded: Option<BudgetHit>,
    /// Last progress.
    pub progress: Option<ProgressState>,
    /// Last partial result.
    pub partial_result: Option<Payload>,
    /// Final result (or the partial result a stopped run ended with).
    pub result: Option<Payload>,
    /// Failure of a failed run.
    pub failure: Option<Failure>,
    /// The run this one continues.
    pub continued_from: Option<RunId>,
    /// The run that continues this one.
    pub continued_to: Option<RunId>,
    /// Attempts that timed out while a worker ran them and have not reported their usage yet
    /// (ActivityUsageReported), as (activity, attempt): a late report of one of these is
    /// counted once; any other late report is refused. The oldest are forgotten past
    /// [`TIMED_OUT_ATTEMPTS_KEPT_MAX`]. Absent in states stored before it existed.
    #[serde(default)]
    pub timed_out_attempts: BTreeSet<(CommandSeq, u32)>,
    /// The run that started this one as its child.
    #[serde(default)]
    pub parent: Option<ParentRef>,
    /// The run and seq this run was forked from (`run fork` / `run reset`).
    #[serde(default)]
    pub forked_from: Option<ForkRef>,
    /// Child runs this run asked for, by command seq: open and closed (what `run show`
    /// lists).
    #[serde(default)]
    pub children: BTreeMap<CommandSeq, ChildState>,
    /// Signals to other runs asked for and not delivered yet, by command seq.
    #[serde(default)]
    pub signals_out: BTreeMap<CommandSeq, OutgoingSignal>,
    /// Size of the history as the store counts it against its byte limit
    /// ([`crate::store::HISTORY_BYTES_MAX`]): the stored attributes of every event plus the
    /// length of every blob an event refers to. Set by the store, not by `apply` (it depends
    /// on the storage encoding); 0 in a state folded outside a store. Not part of the
    /// state's own encoding: the store keeps it beside the state.
    #[serde(skip)]
    pub history_bytes: u64,
    /// The schedule that started this run, and its slot (`run list --schedule`).
    #[serde(default)]
    pub schedule: Option<ScheduleRef>,
    /// Updates asked for (`UpdateRequested`), by request id, and where each stands: a
    /// request id is applied once per run. Absent in states stored before it existed.
    #[serde(default)]
    pub updates: BTreeMap<String, UpdatePhase>,
    /// Search attributes ([`crate::search`]): set at start and upserted by the workflow.
    #[serde(default)]
    pub search_attributes: crate::search::SearchAttributes,
    /// The memo set at start (JSON).
    #[serde(default)]
    pub memo: Option<Payload>,
    /// Types of the activities whose last attempt failed or timed out (no retry left), at
    /// most [`crate::search::FAILED_ACTIVITY_TYPES_KEPT_MAX`] (`run list --failed-activity`).
    #[serde(default)]
    pub failed_activity_types: BTreeSet<String>,
    /// The worker build it is pinned to: set by [`crate::event::BuildPinned`] with its first
    /// completed workflow task (or from the start by [`crate::event::VersioningSet`]); `None`
    /// while unpinned. See [`RunState::routed_build`].
    #[serde(default)]
    pub pinned_build: Option<String>,
    /// Started with auto-upgrade: never pinned.
    #[serde(default)]
    pub auto_upgrade: bool,
    /// It continued as new asking its successor to keep [`RunState::pinned_build`].
    #[serde(default)]
    pub successor_keeps_build: bool,
}

impl RunState {
    /// The build its workflow tasks must go to: the pinned one (never for an auto-upgrading
    /// run). `None`: the task queue's current build takes them.
    pub fn routed_build(&self) -> Option<&str> {
        self.pinned_build.as_deref().filter(|_| !self.auto_upgrade)
    }
}

/// Where one update stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum UpdatePhase {
    /// Recorded; the workflow has not answered yet.
    Requested,
    /// The handler answered (UpdateCompleted).
    Completed,
    /// The validator refused it (UpdateRejected).
    Rejected,
}

/// An event that is not legal in the run's current state.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ApplyError {
    /// The first event of a history must be RunStarted, and only the first.
    #[error("seq {seq}: {kind} {detail}")]
    Order {
        /// Seq of the event.
        seq: u64,
        /// Its kind.
        kind: &'static str,
        /// What is wrong.
        detail: String,
    },
    /// The run is closed; nothing may follow its terminal event.
    #[error("seq {seq}: {kind} after the run closed ({status})")]
    Closed {
        /// Seq of the event.
        seq: u64,
        /// Its kind.
        kind: &'static str,
        /// Final status.
        status: &'static str,
    },
    /// The event does not fit the state (unknown activity, wrong command seq...).
    #[error("seq {seq}: {kind} is not legal now: {detail}")]
    Illegal {
        /// Seq of the event.
        seq: u64,
        /// Its kind.
        kind: &'static str,
        /// What is wrong.
        detail: String,
    },
}

impl RunState {
    /// Whether the run is open.
    pub fn is_open(&self) -> bool {
        !self.status.is_closed()
    }

    /// Whether a workflow task should be scheduled now: the code has unseen events and no
    /// task is pending.
    pub fn needs_workflow_task(&self) -> bool {
        self.is_open() && self.unseen_events && self.workflow_task == WorkflowTask::Idle
    }

    /// The ceiling that dispatching activity `id` at `now_ms` would cross, if any.
    pub fn budget_block(&self, id: CommandSeq, now_ms: TimeMs) -> Option<BudgetHit> {
        let b = &self.budget;
        let u = &self.usage;
        let hit = |dimension, limit: u64, used: u64| {
            Some(BudgetHit {
                dimension,
                limit,
                used,
            })
        };
        if b.max_tokens > 0 && u.tokens() >= b.max_tokens {
            return hit(BudgetDimension::Tokens, b.max_tokens, u.tokens());
        }
        if b.max_cost_micros > 0 && u.cost_micros >= b.max_cost_micros {
            return hit(BudgetDimension::Cost, b.max_cost_micros, u.cost_micros);
        }
        if let Some(a) = self
            .activities
            .get(&id)
            .filter(|a| b.max_activities > 0 && a.ordinal > b.max_activities)
        {
            return hit(BudgetDimension::Activities, b.max_activities, a.ordinal - 1);
        }
        if b.max_duration_ms > 0 {
            let used = now_ms.saturating_sub(self.started_ms).max(0) as u64;
            if used >= b.max_duration_ms {
                return hit(BudgetDimension::Duration, b.max_duration_ms, used);
            }
        }
        None
    }

    /// Attempts handed out and not yet over (ActivityStarted recorded, no outcome yet).
    pub fn attempts_in_flight(&self) -> u64 {
        self.activities
            .values()
            .filter(|a| matches!(a.phase, ActivityPhase::Started { .. }))
            .count() as u64
    }

    /// The token or cost ceiling that the attempts in flight have reserved, so that activity
    /// `id` must wait for one of them to end before it is dispatched (it is not offered
    /// meanwhile; the run is not parked: the ceiling is not crossed yet).
    ///
    /// Usage is known only once an attempt reports it, so a dispatch reserves an estimate:
    /// the mean usage of the LLM calls completed so far, or, before any, all the room left.
    /// A dispatch is allowed when nothing is in flight (below the ceiling, one attempt may
    /// cross it by its own usage, as before) or when the used amount plus the estimate for
    /// every attempt in flight and this one stays within the ceiling. So once used plus
    /// reserved reaches a ceiling, at most one attempt is in flight, and N concurrent
    /// dispatches cannot cross a ceiling by N calls. Runs without token or cost ceilings
    /// are never held here.
    pub fn reservation_block(&self, id: CommandSeq) -> Option<BudgetDimension> {
        // Checked first: without these ceilings nothing is counted (O(1) per activity).
        if self.budget.max_tokens == 0 && self.budget.max_cost_micros == 0 {
            return None;
        }
        let in_flight = self
            .activities
            .iter()
            .filter(|(i, a)| **i != id && matches!(a.phase, ActivityPhase::Started { .. }))
            .count() as u64;
        if in_flight == 0 {
            return None;
        }
        let b = &self.budget;
        let u = &self.usage;
        let dims = [
            (BudgetDimension::Tokens, b.max_tokens, u.tokens()),
            (BudgetDimension::Cost, b.max_cost_micros, u.cost_micros),
        ];
        for (dimension, ceiling, used) in dims {
            if ceiling == 0 {
                continue;
            }
            let room = ceiling.saturating_sub(used);
            let estimate = if u.llm_calls > 0 {
                used.div_ceil(u.llm_calls)
            } else {
                room
            };
            if estimate.saturating_mul(in_flight + 1) > room {
                return Some(dimension);
            }
        }
        None
    }

    /// Whether attempt `attempt` of activity `id` timed out while it ran and may still report
    /// what it used (one ActivityUsageReported, counted like a completion's usage).
    pub fn accepts_late_usage(&self, id: CommandSeq, attempt: u32) -> bool {
        self.is_open() && self.timed_out_attempts.contains(&(id, attempt))
    }

    /// When the run timeout elapses, if it has one.
    pub fn run_deadline_ms(&self) -> Option<TimeMs> {
        // Saturating: `as i64` wrapped a huge timeout into the past (timed out at once).
        (self.run_timeout_ms > 0).then(|| {
            self.started_ms
                .saturating_add(i64::try_from(self.run_timeout_ms).unwrap_or(i64::MAX))
        })
    }
}
