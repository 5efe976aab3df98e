//! Child runs, signals to other runs and patch markers: engine events <-> wire (the part of
//! [`crate::convert`] for issue 18's events).

use steadfast_engine::RunId;
use steadfast_engine::event::{self as ev, Event};
use steadfast_engine::state::{ChildPhase, RunState};
use steadfast_proto::v1 as pb;
use steadfast_proto::v1::history_event::Attributes as A;

use crate::convert::{budget, budget_from, failure, failure_from, payload, payload_from};

/// The wire policy.
pub fn policy(p: ev::ParentClosePolicy) -> pb::ParentClosePolicy {
    match p {
        ev::ParentClosePolicy::Cancel => pb::ParentClosePolicy::Cancel,
        ev::ParentClosePolicy::Terminate => pb::ParentClosePolicy::Terminate,
        ev::ParentClosePolicy::Abandon => pb::ParentClosePolicy::Abandon,
    }
}

/// The engine policy (unspecified = cancel).
pub fn policy_from(p: pb::ParentClosePolicy) -> ev::ParentClosePolicy {
    match p {
        pb::ParentClosePolicy::Unspecified | pb::ParentClosePolicy::Cancel => {
            ev::ParentClosePolicy::Cancel
        }
        pb::ParentClosePolicy::Terminate => ev::ParentClosePolicy::Terminate,
        pb::ParentClosePolicy::Abandon => ev::ParentClosePolicy::Abandon,
    }
}

fn outcome(o: ev::ChildOutcome) -> pb::RunStatus {
    match o {
        ev::ChildOutcome::Completed => pb::RunStatus::Completed,
        ev::ChildOutcome::Failed => pb::RunStatus::Failed,
        ev::ChildOutcome::Cancelled => pb::RunStatus::Cancelled,
        ev::ChildOutcome::Terminated => pb::RunStatus::Terminated,
        ev::ChildOutcome::TimedOut => pb::RunStatus::TimedOut,
        ev::ChildOutcome::ContinuedAsNew => pb::RunStatus::ContinuedAsNew,
    }
}

fn outcome_from(s: pb::RunStatus) -> Option<ev::ChildOutcome> {
    Some(match s {
        pb::RunStatus::Completed => ev::ChildOutcome::Completed,
        pb::RunStatus::Failed => ev::ChildOutcome::Failed,
        pb::RunStatus::Cancelled => ev::ChildOutcome::Cancelled,
        pb::RunStatus::Terminated => ev::ChildOutcome::Terminated,
        pb::RunStatus::TimedOut => ev::ChildOutcome::TimedOut,
        pb::RunStatus::ContinuedAsNew => ev::ChildOutcome::ContinuedAsNew,
        pb::RunStatus::Unspecified | pb::RunStatus::Running => return None,
    })
}

/// The parent of a RunStarted, to wire.
pub fn parent(p: &Option<ev::ParentRef>) -> Option<pb::ParentRef> {
    p.map(|p| pb::ParentRef {
        run_id: p.run_id.to_string(),
        command_seq: p.command_seq,
    })
}

/// The parent of a wire RunStarted; `Err` names what is wrong.
pub fn parent_from(p: &Option<pb::ParentRef>) -> Result<Option<ev::ParentRef>, &'static str> {
    match p {
        None => Ok(None),
        Some(p) => Ok(Some(ev::ParentRef {
            run_id: RunId::parse(&p.run_id).map_err(|_| "bad parent run id")?,
            command_seq: p.command_seq,
        })),
    }
}

/// One of this module's events to wire; `None` for every other event.
pub fn to_wire(e: &Event) -> Option<A> {
    Some(match e {
        Event::ChildRunRequested(a) => A::ChildRunRequested(pb::ChildRunRequested {
            command_seq: a.command_seq,
            child_run_id: a.child_run_id.to_string(),
            workflow_type: a.workflow_type.clone(),
            workflow_id: a.workflow_id.clone(),
            task_queue: a.task_queue.clone(),
            input: Some(payload(&a.input)),
            run_timeout_ms: a.run_timeout_ms,
            budget: Some(budget(&a.budget)),
            parent_close_policy: policy(a.parent_close_policy) as i32,
        }),
        Event::ChildRunStarted(a) => A::ChildRunStarted(pb::ChildRunStarted {
            command_seq: a.command_seq,
            run_id: a.run_id.to_string(),
        }),
        Event::ChildRunStartFailed(a) => A::ChildRunStartFailed(pb::ChildRunStartFailed {
            command_seq: a.command_seq,
            failure: Some(failure(&a.failure)),
        }),
        Event::ChildRunClosed(a) => A::ChildRunClosed(pb::ChildRunClosed {
            command_seq: a.command_seq,
            status: outcome(a.outcome) as i32,
            result: a.result.as_ref().map(payload),
            failure: a.failure.as_ref().map(failure),
            usage: Some(pb::Usage {
                input_tokens: a.usage.input_tokens,
                output_tokens: a.usage.output_tokens,
                cost_micros: a.usage.cost_micros,
                model: String::new(),
                activities: a.activities,
                llm_calls: a.llm_calls,
            }),
        }),
        Event::RunSignalRequested(a) => A::RunSignalRequested(pb::RunSignalRequested {
            command_seq: a.command_seq,
            run_id: a.run_id.to_string(),
            name: a.name.clone(),
            input: Some(payload(&a.input)),
        }),
        Event::RunSignalResolved(a) => A::RunSignalResolved(pb::RunSignalResolved {
            command_seq: a.command_seq,
            delivered: a.delivered,
            message: a.message.clone(),
        }),
        Event::PatchMarker(a) => A::PatchMarker(pb::PatchMarker {
            command_seq: a.command_seq,
            patch_id: a.patch_id.clone(),
        }),
        Event::UpdateRequested(a) => A::UpdateRequested(pb::UpdateRequested {
            update_id: a.update_id.clone(),
            name: a.name.clone(),
            input: Some(payload(&a.input)),
            identity: a.identity.clone(),
        }),
        Event::UpdateCompleted(a) => A::UpdateCompleted(pb::UpdateCompleted {
            command_seq: a.command_seq,
            update_id: a.update_id.clone(),
            result: Some(payload(&a.result)),
        }),
        Event::UpdateRejected(a) => A::UpdateRejected(pb::UpdateRejected {
            command_seq: a.command_seq,
            update_id: a.update_id.clone(),
            reason: a.reason.clone(),
        }),
        Event::VersioningSet(a) => A::VersioningSet(pb::VersioningSet {
            pinned_build: a.pinned_build.clone(),
            auto_upgrade: a.auto_upgrade,
        }),
        Event::BuildPinned(a) => A::BuildPinned(pb::BuildPinned {
            build_id: a.build_id.clone(),
        }),
        _ => return None,
    })
}

fn rid(s: &str, what: &'static str) -> Result<RunId, String> {
    RunId::parse(s).map_err(|_| format!("bad {what}"))
}

fn opt_payload(p: &Option<pb::Payload>) -> steadfast_engine::payload::Payload {
    p.as_ref()
        .map(payload_from)
        .unwrap_or_else(|| steadfast_engine::payload::Payload::json(b"null".to_vec()))
}

/// One of this module's wire events back to an engine event; `None` for every other event,
/// `Some(Err)` naming what is wrong.
pub fn from_wire(a: &A) -> Option<Result<Event, String>> {
    let r = (|| -> Result<Event, String> {
        Ok(match a {
            A::ChildRunRequested(a) => Event::ChildRunRequested(ev::ChildRunRequested {
                command_seq: a.command_seq,
                child_run_id: rid(&a.child_run_id, "child run id")?,
                workflow_type: a.workflow_type.clone(),
                workflow_id: a.workflow_id.clone(),
                task_queue: a.task_queue.clone(),
                input: opt_payload(&a.input),
                run_timeout_ms: a.run_timeout_ms,
                budget: a.budget.as_ref().map(budget_from).unwrap_or_default(),
                parent_close_policy: policy_from(a.parent_close_policy()),
            }),
            A::ChildRunStarted(a) => Event::ChildRunStarted(ev::ChildRunStarted {
                command_seq: a.command_seq,
                run_id: rid(&a.run_id, "child run id")?,
            }),
            A::ChildRunStartFailed(a) => Event::ChildRunStartFailed(ev::ChildRunStartFailed {
                command_seq: a.command_seq,
                failure: a.failure.as_ref().map(failure_from).unwrap_or_default(),
            }),
            A::ChildRunClosed(a) => {
                let u = a.usage.clone().unwrap_or_default();
                Event::ChildRunClosed(ev::ChildRunClosed {
                    command_seq: a.command_seq,
                    outcome: outcome_from(a.status()).ok_or("a child closed with no status")?,
                    result: a.result.as_ref().map(payload_from),
                    failure: a.failure.as_ref().map(failure_from),
                    usage: ev::Usage {
                        input_tokens: u.input_tokens,
                        output_tokens: u.output_tokens,
                        cost_micros: u.cost_micros,
                        model: String::new(),
                    },
                    activities: u.activities,
                    llm_calls: u.llm_calls,
                })
            }
            A::RunSignalRequested(a) => Event::RunSignalRequested(ev::RunSignalRequested {
                command_seq: a.command_seq,
                run_id: rid(&a.run_id, "target run id")?,
                name: a.name.clone(),
                input: opt_payload(&a.input),
            }),
            A::RunSignalResolved(a) => Event::RunSignalResolved(ev::RunSignalResolved {
                command_seq: a.command_seq,
                delivered: a.delivered,
                message: a.message.clone(),
            }),
            A::PatchMarker(a) => Event::PatchMarker(ev::PatchMarker {
                command_seq: a.command_seq,
                patch_id: a.patch_id.clone(),
            }),
            A::UpdateRequested(a) => Event::UpdateRequested(ev::UpdateRequested {
                update_id: a.update_id.clone(),
                name: a.name.clone(),
                input: opt_payload(&a.input),
                identity: a.identity.clone(),
            }),
            A::UpdateCompleted(a) => Event::UpdateCompleted(ev::UpdateCompleted {
                command_seq: a.command_seq,
                update_id: a.update_id.clone(),
                result: opt_payload(&a.result),
            }),
            A::UpdateRejected(a) => Event::UpdateRejected(ev::UpdateRejected {
                command_seq: a.command_seq,
                update_id: a.update_id.clone(),
                reason: a.reason.clone(),
            }),
            A::VersioningSet(a) => Event::VersioningSet(ev::VersioningSet {
                pinned_build: a.pinned_build.clone(),
                auto_upgrade: a.auto_upgrade,
            }),
            A::BuildPinned(a) => Event::BuildPinned(ev::BuildPinned {
                build_id: a.build_id.clone(),
            }),
            _ => return Err(String::new()),
        })
    })();
    match r {
        Err(e) if e.is_empty() => None,
        r => Some(r),
    }
}

/// The children of a run, for RunInfo, in command order.
pub fn children(s: &RunState) -> Vec<pb::ChildRun> {
    s.children
        .iter()
        .map(|(seq, c)| pb::ChildRun {
            command_seq: *seq,
            run_id: c.run_id.to_string(),
            workflow_type: c.workflow_type.clone(),
            workflow_id: c.workflow_id.clone(),
            parent_close_policy: policy(c.policy) as i32,
            state: match c.phase {
                ChildPhase::Requested => "requested".into(),
                ChildPhase::Started => "running".into(),
                ChildPhase::StartFailed => "start_failed".into(),
                ChildPhase::Closed(o) => o.as_str().into(),
            },
        })
        .collect()
}
