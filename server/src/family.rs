//! Child runs and signals between runs: what a workflow's StartChild and SignalRun commands
//! become, and the relay that carries them out.
//!
//! A child run is two appends to two histories: the parent's ChildRunRequested (which names
//! the child's run id, chosen then), and the child's RunStarted. A crash can fall between
//! them, so the creation is idempotent: it appends at expected seq 1 to the recorded run id,
//! and a conflict there (the run exists) or the workflow id held by that very run means it
//! was created before. Each step is recorded in the parent (ChildRunStarted, or
//! ChildRunStartFailed, then ChildRunClosed with the child's outcome and usage), so a child
//! is started once and its parent hears of its end once, whatever crashes.
//!
//! The relay is woken by appends that need it ([`needs_relay`]); what it does is read from
//! durable state alone (the parent's `children` and `signals_out`, the child's `parent`), so
//! losing its queue costs only time: at start the server reconciles every open run
//! ([`sweep`]), which finishes whatever a crash interrupted.

use std::collections::BTreeSet;
use std::sync::Arc;

use parking_lot::Mutex;
use steadfast_engine::event::{self as ev, Event};
use steadfast_engine::state::{ChildPhase, RunState, RunStatus};
use steadfast_engine::store::{self, RequestKey, RequestKind};
use steadfast_engine::{RunId, RunKey};
use steadfast_proto::v1 as pb;
use tonic::Status;

use crate::commands::bad;
use crate::convert;
use crate::convert_family::policy_from;
use crate::core::{Core, Updated, status};
use crate::validate;

/// Runs waiting for the relay, at most; past it, a key is dropped with a warning and the
/// next sweep finishes its work.
pub const RELAY_QUEUE_MAX: usize = 100_000;

/// The code of a child whose workflow id is held by another open run.
pub const CHILD_WORKFLOW_ID_IN_USE: &str = "STF-CHILD001";

/// Runs whose children or outgoing signals need the relay (an optimisation: every decision
/// is read again from the store).
#[derive(Default)]
pub struct Relay {
    queue: Mutex<BTreeSet<RunKey>>,
    wake: tokio::sync::Notify,
}

impl Relay {
    /// Queues `key` for the relay.
    pub fn push(&self, key: &RunKey) {
        let mut q = self.queue.lock();
        if q.len() >= RELAY_QUEUE_MAX {
            tracing::warn!(run = %key, "child relay queue full; the next sweep handles this run");
            return;
        }
        q.insert(key.clone());
        drop(q);
        self.wake.notify_one();
    }

    fn take(&self) -> Vec<RunKey> {
        std::mem::take(&mut *self.queue.lock())
            .into_iter()
            .collect()
    }
}

/// Whether an append changes something the relay acts on: a child or signal requested, a
/// cancel request or a close of a run with children, the close of a child.
pub fn needs_relay(records: &[steadfast_engine::EventRecord], s: &RunState) -> bool {
    let has_children = s.children.values().any(|c| c.is_open());
    records.iter().any(|r| match &r.event {
        Event::ChildRunRequested(_) | Event::RunSignalRequested(_) => true,
        Event::CancelRequested(_) => has_children,
        e if e.is_terminal() => has_children || s.parent.is_some(),
        _ => false,
    })
}

/// The event of a StartChild command: the child's run id is chosen now and recorded, its
/// budget resolved from the room the parent has left.
pub fn child_requested(
    s: &RunState,
    seq: u32,
    c: &pb::StartChildCommand,
    now: i64,
) -> Result<Event, Status> {
    validate::name("child workflow_type", &c.workflow_type).map_err(|e| bad(seq, e.message()))?;
    validate::opt_name("child workflow_id", &c.workflow_id).map_err(|e| bad(seq, e.message()))?;
    validate::opt_name("child task_queue", &c.task_queue).map_err(|e| bad(seq, e.message()))?;
    let input = validate::payload("child input", c.input.as_ref())?;
    let room = room_left(s, now);
    let budget = match c.budget_mode() {
        pb::ChildBudget::Unspecified | pb::ChildBudget::Inherit => room,
        pb::ChildBudget::Split => {
            let given = c
                .budget
                .as_ref()
                .map(convert::budget_from)
                .unwrap_or_default();
            split(given, room)
        }
    };
    Ok(Event::ChildRunRequested(ev::ChildRunRequested {
        command_seq: seq,
        child_run_id: RunId::new_v7(),
        workflow_type: c.workflow_type.clone(),
        workflow_id: c.workflow_id.clone(),
        task_queue: if c.task_queue.is_empty() {
            s.task_queue.clone()
        } else {
            c.task_queue.clone()
        },
        input,
        run_timeout_ms: c.run_timeout_ms,
        budget,
        parent_close_policy: policy_from(c.parent_close_policy()),
    }))
}

/// The room a run has left under each ceiling (0 = no ceiling). A ceiling already reached
/// leaves 1, not 0, which would mean "none": the child may then start one step and parks.
pub fn room_left(s: &RunState, now: i64) -> ev::Budget {
    let left = |max: u64, used: u64| {
        if max == 0 {
            0
        } else {
            max.saturating_sub(used).max(1)
        }
    };
    let b = &s.budget;
    let elapsed = now.saturating_sub(s.started_ms).max(0) as u64;
    ev::Budget {
        max_tokens: left(b.max_tokens, s.usage.tokens()),
        max_cost_micros: left(b.max_cost_micros, s.usage.cost_micros),
        max_activities: left(b.max_activities, s.usage.activities),
        max_duration_ms: left(b.max_duration_ms, elapsed),
    }
}

/// A split budget: each ceiling given, capped by the parent's room; a ceiling not given (0)
/// takes the parent's room.
pub fn split(given: ev::Budget, room: ev::Budget) -> ev::Budget {
    let cap = |g: u64, r: u64| match (g, r) {
        (0, r) => r,
        (g, 0) => g,
        (g, r) => g.min(r),
    };
    ev::Budget {
        max_tokens: cap(given.max_tokens, room.max_tokens),
        max_cost_micros: cap(given.max_cost_micros, room.max_cost_micros),
        max_activities: cap(given.max_activities, room.max_activities),
        max_duration_ms: cap(given.max_duration_ms, room.max_duration_ms),
    }
}

/// The event of a SignalRun command.
pub fn signal_requested(seq: u32, c: &pb::SignalRunCommand) -> Result<Event, Status> {
    validate::name("signal name", &c.name).map_err(|e| bad(seq, e.message()))?;
    let run_id = validate::run_id(&c.run_id).map_err(|e| bad(seq, e.message()))?;
    Ok(Event::RunSignalRequested(ev::RunSignalRequested {
        command_seq: seq,
        run_id,
        name: c.name.clone(),
        input: validate::payload("signal input", c.input.as_ref())?,
    }))
}

/// Serves the relay until the process ends.
pub async fn run(core: Arc<Core>) {
    loop {
        let keys = core.relay.take();
        if keys.is_empty() {
            core.relay.wake.notified().await;
            continue;
        }
        for key in keys {
            if let Err(e) = reconcile(&core, &key, false).await {
                // The state still says what is left to do: the next sweep retries it.
                tracing::warn!(run = %key, error = %e.message(), "child relay step failed");
            }
        }
    }
}

/// Reconciles every open run of `keys` (at start: finishes what a crash interrupted).
pub async fn sweep(core: &Core, keys: Vec<RunKey>) {
    for key in keys {
        if let Err(e) = reconcile(core, &key, true).await {
            tracing::warn!(run = %key, error = %e.message(), "child sweep step failed");
        }
    }
}

/// Does what the durable state of `key` asks for: creates requested children, delivers
/// signals, applies the parent-close policy to open children, tells a parent its child
/// closed. With `thorough`, also checks every open child and the parent of an open child
/// (what a crash may have left undone).
pub async fn reconcile(core: &Core, key: &RunKey, thorough: bool) -> Result<(), Status> {
    let s = core.state(key).await?;
    for (seq, c) in &s.children {
        if c.phase == ChildPhase::Requested
            && (s.is_open() || c.policy == ev::ParentClosePolicy::Abandon)
        {
            start_child(core, &s, *seq).await?;
        }
    }
    for seq in s.signals_out.keys() {
        deliver_signal(core, &s, *seq).await?;
    }
    let s = core.state(key).await?;
    for c in s
        .children
        .values()
        .filter(|c| c.phase == ChildPhase::Started)
    {
        let child_key = RunKey::new(key.namespace.clone(), c.run_id);
        if !s.is_open() || (s.cancel_requested && c.policy == ev::ParentClosePolicy::Cancel) {
            apply_policy(core, &s, &child_key, c.policy).await?;
        }
        if thorough
            && let Some(cs) = core.store.run_state(&child_key).await.map_err(status)?
            && !cs.is_open()
        {
            tell_parent(core, &cs).await?;
        }
    }
    if !s.is_open() {
        tell_parent(core, &s).await?;
    } else if thorough && let Some(p) = s.parent {
        let parent_key = RunKey::new(key.namespace.clone(), p.run_id);
        if let Some(ps) = core.store.run_state(&parent_key).await.map_err(status)?
            && let Some(c) = ps.children.get(&p.command_seq)
            && (!ps.is_open() || (ps.cancel_requested && c.policy == ev::ParentClosePolicy::Cancel))
        {
            apply_policy(core, &ps, key, c.policy).await?;
        }
    }
    Ok(())
}

/// With traces exported, the traceparent a child records in its RunStarted: its trace
/// continues the parent's, under the parent's span of this child (the parent's own trace may
/// continue a caller's: its RunStarted is read, cached).
async fn child_traceparent(
    core: &Core,
    parent: &RunKey,
    requested_seq: u64,
) -> Result<Option<String>, Status> {
    if !core.traceparent_to_workers {
        return Ok(None);
    }
    let given = core
        .run_traceparents
        .get(core.store.as_ref(), parent)
        .await
        .map_err(status)?;
    Ok(Some(crate::traces::spans::child_traceparent(
        parent,
        given.as_deref(),
        requested_seq,
    )))
}

/// Creates child `seq` of `parent` (or finds it: the run id was recorded when it was asked
/// for) and records the outcome in the parent.
async fn start_child(core: &Core, parent: &RunState, seq: u32) -> Result<(), Status> {
    let c = &parent.children[&seq];
    let rec = core
        .store
        .read_history(&parent.key, c.requested_seq, 1)
        .await
        .map_err(status)?;
    let Some(rec) = rec.into_iter().next() else {
        return Err(Status::internal("a requested child's record is missing"));
    };
    let rec = core.inline(&parent.key.namespace, rec).await?;
    let Event::ChildRunRequested(a) = rec.event else {
        return Err(Status::internal(format!(
            "seq {} of run {} is not the ChildRunRequested of child {seq}",
            c.requested_seq, parent.key
        )));
    };
    let child_key = RunKey::new(parent.key.namespace.clone(), a.child_run_id);
    let started = ev::RunStarted {
        workflow_type: a.workflow_type.clone(),
        workflow_id: if a.workflow_id.is_empty() {
            a.child_run_id.to_string()
        } else {
            a.workflow_id.clone()
        },
        task_queue: a.task_queue.clone(),
        input: a.input.clone(),
        run_timeout_ms: a.run_timeout_ms,
        budget: a.budget,
        continued_from: None,
        identity: format!("parent run {}", parent.key.run_id),
        random_seed: u64::from_le_bytes(
            a.child_run_id.as_bytes()[8..].try_into().expect("8 bytes"),
        ),
        parent: Some(ev::ParentRef {
            run_id: parent.key.run_id,
            command_seq: seq,
        }),
        forked_from: None,
        schedule: None,
        traceparent: child_traceparent(core, &parent.key, c.requested_seq).await?,
    };
    let outcome = match core
        .create(
            &child_key,
            crate::service::successor_events(started, None),
            None,
        )
        .await
    {
        Ok(_) => Ok(()),
        // Created before a crash (or by another node): the same run, started once.
        Err(store::Error::Conflict { .. }) => Ok(()),
        Err(store::Error::WorkflowIdInUse { run_id, .. }) if run_id == a.child_run_id => Ok(()),
        Err(store::Error::WorkflowIdInUse {
            workflow_id,
            run_id,
        }) => Err(ev::Failure {
            message: format!(
                "[{CHILD_WORKFLOW_ID_IN_USE}] workflow id {:?} already has an open run {run_id}: choose another id, or wait for that run to close",
                workflow_id.chars().take(64).collect::<String>()
            ),
            error_type: "WorkflowIdInUse".into(),
            non_retryable: true,
            details: String::new(),
        }),
        Err(e) => return Err(status(e)),
    };
    if !parent.is_open() {
        return Ok(());
    }
    let child_id = a.child_run_id;
    core.update(&parent.key, true, |s, _| {
        if !s.is_open() || s.children.get(&seq).map(|c| c.phase) != Some(ChildPhase::Requested) {
            return Ok(None);
        }
        Ok(Some(vec![match &outcome {
            Ok(()) => Event::ChildRunStarted(ev::ChildRunStarted {
                command_seq: seq,
                run_id: child_id,
            }),
            Err(f) => Event::ChildRunStartFailed(ev::ChildRunStartFailed {
                command_seq: seq,
                failure: f.clone(),
            }),
        }]))
    })
    .await?;
    // The child may have run to its end before its start was recorded here.
    if outcome.is_ok()
        && let Some(cs) = core.store.run_state(&child_key).await.map_err(status)?
        && !cs.is_open()
    {
        tell_parent(core, &cs).await?;
    }
    Ok(())
}

/// Records in the parent of the closed run `child` how it ended and what it used.
async fn tell_parent(core: &Core, child: &RunState) -> Result<(), Status> {
    let Some(p) = child.parent else {
        return Ok(());
    };
    let outcome = match child.status {
        RunStatus::Running => return Ok(()),
        RunStatus::Completed => ev::ChildOutcome::Completed,
        RunStatus::Failed => ev::ChildOutcome::Failed,
        RunStatus::Cancelled => ev::ChildOutcome::Cancelled,
        RunStatus::Terminated => ev::ChildOutcome::Terminated,
        RunStatus::TimedOut => ev::ChildOutcome::TimedOut,
        RunStatus::ContinuedAsNew => ev::ChildOutcome::ContinuedAsNew,
    };
    let result = match &child.result {
        Some(r) => Some(core.inline_payload(&child.key.namespace, r).await?),
        None => None,
    };
    let parent_key = RunKey::new(child.key.namespace.clone(), p.run_id);
    let event = Event::ChildRunClosed(ev::ChildRunClosed {
        command_seq: p.command_seq,
        outcome,
        result,
        failure: child.failure.clone(),
        usage: ev::Usage {
            input_tokens: child.usage.input_tokens,
            output_tokens: child.usage.output_tokens,
            cost_micros: child.usage.cost_micros,
            model: String::new(),
        },
        activities: child.usage.activities,
        llm_calls: child.usage.llm_calls,
    });
    let child_id = child.key.run_id;
    match core
        .update(&parent_key, true, |s, _| {
            let waiting = s.is_open()
                && s.children
                    .get(&p.command_seq)
                    .is_some_and(|c| c.run_id == child_id && c.phase == ChildPhase::Started);
            Ok(waiting.then(|| vec![event.clone()]))
        })
        .await
    {
        Ok(_) => Ok(()),
        // A parent dropped by retention has no one left to tell.
        Err(e) if e.code() == tonic::Code::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}

/// Applies `policy` to the open child `child_key` of `parent` (closed, or asked to cancel).
async fn apply_policy(
    core: &Core,
    parent: &RunState,
    child_key: &RunKey,
    policy: ev::ParentClosePolicy,
) -> Result<(), Status> {
    let why = if parent.is_open() {
        "was asked to cancel"
    } else {
        "closed"
    };
    let reason = format!(
        "parent run {} {why} (parent-close policy {})",
        parent.key.run_id,
        policy.as_str()
    );
    let identity = format!("parent run {}", parent.key.run_id);
    let r = core
        .update(child_key, true, |s, _| {
            if !s.is_open() {
                return Ok(None);
            }
            Ok(match policy {
                ev::ParentClosePolicy::Abandon => None,
                ev::ParentClosePolicy::Cancel if s.cancel_requested => None,
                ev::ParentClosePolicy::Cancel => {
                    let mut events = vec![Event::CancelRequested(ev::CancelRequested {
                        reason: reason.clone(),
                        identity: identity.clone(),
                    })];
                    events.extend(
                        s.activities
                            .keys()
                            .filter(|id| Core::is_undispatched(s, **id))
                            .map(|id| {
                                Event::ActivityCancelled(ev::ActivityCancelled { command_seq: *id })
                            }),
                    );
                    Some(events)
                }
                // Terminate waits for the parent to close; a cancel request does not end it.
                ev::ParentClosePolicy::Terminate if parent.is_open() => None,
                ev::ParentClosePolicy::Terminate => {
                    Some(vec![Event::RunTerminated(ev::RunTerminated {
                        reason: reason.clone(),
                        identity: identity.clone(),
                    })])
                }
            })
        })
        .await;
    match r {
        Ok(_) => Ok(()),
        Err(e) if e.code() == tonic::Code::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}

/// Delivers the signal asked for by command `seq` of `from` (at most once: the request id
/// names the command) and records the outcome in `from`.
async fn deliver_signal(core: &Core, from: &RunState, seq: u32) -> Result<(), Status> {
    let o = &from.signals_out[&seq];
    let rec = core
        .store
        .read_history(&from.key, o.requested_seq, 1)
        .await
        .map_err(status)?;
    let Some(rec) = rec.into_iter().next() else {
        return Err(Status::internal("a requested signal's record is missing"));
    };
    let rec = core.inline(&from.key.namespace, rec).await?;
    let Event::RunSignalRequested(a) = rec.event else {
        return Err(Status::internal(format!(
            "seq {} of run {} is not a RunSignalRequested",
            o.requested_seq, from.key
        )));
    };
    let target = RunKey::new(from.key.namespace.clone(), a.run_id);
    let request_id = format!("run-signal/{}/{seq}", from.key.run_id);
    let signal = Event::SignalReceived(ev::SignalReceived {
        name: a.name.clone(),
        input: a.input.clone(),
        identity: format!("run {}", from.key.run_id),
        request_id: request_id.clone(),
    });
    let request = RequestKey {
        kind: RequestKind::Signal,
        id: request_id,
    };
    let delivered = match core
        .update_once(&target, request, |s, _| {
            if !s.is_open() {
                return Err(Status::failed_precondition(format!(
                    "run {} is {}",
                    a.run_id,
                    s.status.as_str()
                )));
            }
            Ok(Some(vec![signal.clone()]))
        })
        .await
    {
        Ok(_) | Err(Updated::Duplicate { .. }) => Ok(()),
        Err(Updated::Refused(e))
            if matches!(
                e.code(),
                tonic::Code::NotFound | tonic::Code::FailedPrecondition
            ) =>
        {
            Err(e.message().chars().take(200).collect::<String>())
        }
        Err(Updated::Refused(e)) => return Err(e),
    };
    core.update(&from.key, true, |s, _| {
        if !s.is_open() || !s.signals_out.contains_key(&seq) {
            return Ok(None);
        }
        Ok(Some(vec![Event::RunSignalResolved(
            ev::RunSignalResolved {
                command_seq: seq,
                delivered: delivered.is_ok(),
                message: delivered.clone().err().unwrap_or_default(),
            },
        )]))
    })
    .await?;
    Ok(())
}

/// The child runs of `parent` that exist and pass `filter`, in command order (for `run list
/// --parent`: read from the parent's state, no index needed).
pub async fn children_of(
    core: &Core,
    namespace: &str,
    parent: &str,
    filter: &store::RunFilter,
) -> Result<Vec<Arc<RunState>>, Status> {
    let parent_id = validate::run_id(parent)
        .map_err(|_| Status::invalid_argument("parent_run_id is not a run id (a UUID)"))?;
    let ps = core.state(&RunKey::new(namespace, parent_id)).await?;
    let now = core.now();
    let mut out = Vec::new();
    for c in ps.children.values() {
        let Some(s) = core
            .store
            .run_state(&RunKey::new(namespace, c.run_id))
            .await
            .map_err(status)?
        else {
            continue;
        };
        let keep = filter.status.is_none_or(|st| st == s.status)
            && filter
                .workflow_type
                .as_ref()
                .is_none_or(|t| *t == s.workflow_type)
            && filter
                .waiting
                .as_ref()
                .is_none_or(|w| s.waiting_on(now).iter().any(|x| x.category() == w.as_str()))
            && filter.matches_id_and_time(&s);
        if keep {
            out.push(s);
        }
    }
    Ok(out)
}
