//! "Waiting on": what an open run waits for, said plainly.

use serde::{Deserialize, Serialize};

use super::{ActivityPhase, BudgetHit, ChildPhase, RunState, WorkflowTask};
use crate::event::{ArgumentsDigest, CommandSeq, TimeMs};

/// One thing an open run waits for.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum WaitingOn {
    /// An activity attempt.
    Activity {
        /// Activity id.
        id: CommandSeq,
        /// Activity type.
        activity_type: String,
        /// Current or next attempt.
        attempt: u32,
        /// Since when (scheduled, or started for `write` attempts).
        since_ms: TimeMs,
        /// Set while backing off before the next attempt.
        next_retry_ms: Option<TimeMs>,
        /// "scheduled", "running" or "backoff".
        state: &'static str,
    },
    /// A durable timer.
    Timer {
        /// Timer id.
        id: CommandSeq,
        /// Due time.
        fire_at_ms: TimeMs,
    },
    /// A signal, often a human's answer.
    Signal {
        /// Signal name.
        name: String,
        /// The question the workflow attached.
        question: String,
        /// The choices it offered.
        choices: Vec<String>,
        /// Since when.
        since_ms: TimeMs,
    },
    /// A budget ceiling: raise it to resume.
    Budget(BudgetHit),
    /// A child run this run started and that has not closed: `run show CHILD` says what the
    /// child waits on.
    Child {
        /// The command that started it.
        id: CommandSeq,
        /// Its run id.
        run_id: String,
        /// Its workflow type.
        workflow_type: String,
        /// "starting" (asked for, not created yet) or "running".
        state: &'static str,
    },
    /// A `write` attempt whose outcome is unknown: an operator must reconcile it.
    Reconciliation {
        /// Activity id.
        id: CommandSeq,
        /// Activity type.
        activity_type: String,
        /// The lost attempt.
        attempt: u32,
    },
    /// An activity that waits for a human decision: `run approve` / `run deny`.
    Approval {
        /// Activity id.
        id: CommandSeq,
        /// Activity type (the tool).
        activity_type: String,
        /// The attempt that waits.
        attempt: u32,
        /// Why: the reason the call gave, or the worker's declaration.
        reason: String,
        /// The worker whose registration asked ("" = the call did).
        declared_by: String,
        /// Size and hash of the arguments (the arguments themselves only on request).
        arguments: ArgumentsDigest,
        /// Since when.
        since_ms: TimeMs,
    },
    /// The workflow code itself (a pending task, or held after its code failed).
    WorkflowTask {
        /// Why the run is held, when it is.
        held_reason: Option<String>,
    },
    /// A workflow task of a run pinned to a build: only a worker of that build takes it
    /// (start one, or fix the code of that build).
    Build {
        /// The build id.
        build: String,
    },
    /// Nothing the server tracks: the code has seen every event and waits for something it
    /// issued no command for (only for a cancel, say, or a signal it never waited for with a
    /// command). A signal or a cancel request wakes it; a cancel (if the code honours it) or a
    /// terminate ends it. Named so that no open run waits on nothing (C6).
    Idle,
}

impl WaitingOn {
    /// The filter name used by `run list --waiting`.
    pub fn category(&self) -> &'static str {
        match self {
            WaitingOn::Activity { .. } => "activity",
            WaitingOn::Timer { .. } => "timer",
            WaitingOn::Signal { .. } => "signal",
            WaitingOn::Budget(_) => "budget",
            WaitingOn::Child { .. } => "child",
            WaitingOn::Reconciliation { .. } => "reconciliation",
            WaitingOn::Approval { .. } => "approval",
            WaitingOn::WorkflowTask { .. } => "workflow_task",
            WaitingOn::Build { .. } => "build",
            WaitingOn::Idle => "idle",
        }
    }
}

impl RunState {
    /// What the run waits for at `now_ms`; empty when closed. An open run names at least one
    /// thing ([`WaitingOn::Idle`] when nothing else), except in the instant between events
    /// its code has not seen and the workflow task the server schedules for them.
    pub fn waiting_on(&self, now_ms: TimeMs) -> Vec<WaitingOn> {
        let mut out = Vec::new();
        if !self.is_open() {
            return out;
        }
        if let Some(hit) = self.budget_exceeded {
            out.push(WaitingOn::Budget(hit));
        }
        if let Some(h) = &self.held {
            out.push(WaitingOn::WorkflowTask {
                held_reason: Some(format!("{}: {}", h.cause, h.message)),
            });
        } else if let (WorkflowTask::Scheduled { .. }, Some(build)) =
            (&self.workflow_task, self.routed_build())
        {
            out.push(WaitingOn::Build {
                build: build.to_string(),
            });
        } else if self.workflow_task != WorkflowTask::Idle {
            out.push(WaitingOn::WorkflowTask { held_reason: None });
        }
        for (id, a) in &self.activities {
            let w = match &a.phase {
                ActivityPhase::Ready { visible_ms } if *visible_ms > now_ms => {
                    WaitingOn::Activity {
                        id: *id,
                        activity_type: a.activity_type.clone(),
                        attempt: a.attempt,
                        since_ms: a.scheduled_ms,
                        next_retry_ms: Some(*visible_ms),
                        state: "backoff",
                    }
                }
                ActivityPhase::Ready { .. } => WaitingOn::Activity {
                    id: *id,
                    activity_type: a.activity_type.clone(),
                    attempt: a.attempt,
                    since_ms: a.scheduled_ms,
                    next_retry_ms: None,
                    state: "scheduled",
                },
                ActivityPhase::Started { since_ms, .. } => WaitingOn::Activity {
                    id: *id,
                    activity_type: a.activity_type.clone(),
                    attempt: a.attempt,
                    since_ms: *since_ms,
                    next_retry_ms: None,
                    state: "running",
                },
                ActivityPhase::AwaitingApproval {
                    since_ms,
                    reason,
                    declared_by,
                    arguments,
                } => WaitingOn::Approval {
                    id: *id,
                    activity_type: a.activity_type.clone(),
                    attempt: a.attempt,
                    reason: reason.clone(),
                    declared_by: declared_by.clone(),
                    arguments: *arguments,
                    since_ms: *since_ms,
                },
                ActivityPhase::OutcomeUnknown { .. } => WaitingOn::Reconciliation {
                    id: *id,
                    activity_type: a.activity_type.clone(),
                    attempt: a.attempt,
                },
            };
            out.push(w);
        }
        for (id, at) in &self.timers {
            out.push(WaitingOn::Timer {
                id: *id,
                fire_at_ms: *at,
            });
        }
        for (id, c) in &self.children {
            let state = match c.phase {
                ChildPhase::Requested => "starting",
                ChildPhase::Started => "running",
                ChildPhase::StartFailed | ChildPhase::Closed(_) => continue,
            };
            out.push(WaitingOn::Child {
                id: *id,
                run_id: c.run_id.to_string(),
                workflow_type: c.workflow_type.clone(),
                state,
            });
        }
        for w in &self.signal_waits {
            out.push(WaitingOn::Signal {
                name: w.name.clone(),
                question: w.question.clone(),
                choices: w.choices.clone(),
                since_ms: w.since_ms,
            });
        }
        // With unseen events and no task the server schedules one in the same append, so
        // that state is never what a reader sees; anything else with nothing listed is idle.
        if out.is_empty() && !self.unseen_events {
            out.push(WaitingOn::Idle);
        }
        out
    }
}
