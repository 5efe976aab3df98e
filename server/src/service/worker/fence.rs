//! What a task token is checked against before a worker is believed: the request's
//! namespace, the record it names (same seq, same hash) and, for activities, the current
//! attempt. The format and signature are [`crate::token`]'s.

use steadfast_engine::event::{self as ev, Event, Usage};
use steadfast_engine::ids::RunKey;
use steadfast_engine::state::{ActivityState, RunState};
use tonic::{Request, Status};

use super::WorkerApi;
use crate::core::status;
use crate::token::{RecordRef, TaskToken};
use crate::validate;

/// A workflow task, as its token names it.
pub(super) enum WorkflowTaskRef {
    /// Handed out with a recorded WorkflowTaskStarted.
    Recorded {
        /// The run.
        key: RunKey,
        /// Its WorkflowTaskStarted.
        started: RecordRef,
    },
    /// A held run's transient attempt (nothing recorded for it yet).
    Transient(super::transient::TransientRef),
}

/// An activity attempt, as its token names it.
pub(super) struct AttemptRef {
    pub(super) key: RunKey,
    pub(super) id: u32,
    pub(super) scheduled: RecordRef,
    pub(super) attempt: u32,
}

impl WorkerApi {
    /// Opens a token and checks that it belongs to the request's namespace. A genuine token
    /// of another namespace is PERMISSION_DENIED (a tenant's worker holding another tenant's
    /// task is a boundary crossing, not a malformed request), decided from the token alone,
    /// before anything is read: the answer is the same whether its run exists, and names
    /// neither the run nor the namespace.
    fn open_token(&self, text: &str, namespace: &str) -> Result<TaskToken, Status> {
        let token = TaskToken::open(text, &self.tokens)?;
        let ns = validate::namespace(namespace)?;
        if token.key().namespace != ns {
            return Err(Status::permission_denied(
                "task_token was not given out in this request's namespace: a task is completed only in the namespace it came from",
            ));
        }
        Ok(token)
    }

    pub(super) fn workflow_token(
        &self,
        text: &str,
        namespace: &str,
    ) -> Result<WorkflowTaskRef, Status> {
        match self.open_token(text, namespace)? {
            TaskToken::Workflow { key, started } => Ok(WorkflowTaskRef::Recorded { key, started }),
            TaskToken::TransientWorkflow {
                key,
                scheduled,
                seen_seq,
                issued_ms,
                attempt,
            } => Ok(WorkflowTaskRef::Transient(super::transient::TransientRef {
                key,
                scheduled,
                seen_seq,
                issued_ms,
                attempt,
            })),
            TaskToken::Activity { .. } => Err(Status::invalid_argument(
                "task_token is an activity task's token; this call takes a workflow task's",
            )),
        }
    }

    pub(super) fn activity_token(&self, text: &str, namespace: &str) -> Result<AttemptRef, Status> {
        match self.open_token(text, namespace)? {
            TaskToken::Activity {
                key,
                activity_id,
                scheduled,
                attempt,
            } => Ok(AttemptRef {
                key,
                id: activity_id,
                scheduled,
                attempt,
            }),
            TaskToken::Workflow { .. } | TaskToken::TransientWorkflow { .. } => {
                Err(Status::invalid_argument(
                    "task_token is a workflow task's token; this call takes an activity task's",
                ))
            }
        }
    }

    /// Checks that the record a token names is in the history as it was handed out: same
    /// seq, same hash. A seq that now holds another record (the server lost the one handed
    /// out, or the history was replaced) makes the task stale.
    pub(super) async fn check_record(
        &self,
        key: &RunKey,
        rec: RecordRef,
        what: &str,
    ) -> Result<Event, Status> {
        // Records this node handed out or appended for the run's sticky worker are durable
        // and never change: a match there is a match in the history.
        let known = self
            .core
            .sticky
            .lock()
            .get(key)
            .and_then(|st| st.record(rec.seq, &rec.hash))
            .map(|r| r.event.clone());
        if let Some(event) = known {
            return Ok(event);
        }
        let page = self
            .core
            .store
            .read_history(key, rec.seq, 1)
            .await
            .map_err(status)?;
        match page.first() {
            Some(r) if r.seq == rec.seq && r.hash == rec.hash => Ok(r.event.clone()),
            _ => Err(Status::failed_precondition(format!(
                "the {what} at seq {} of run {} that this task_token names is not in the history: the task is stale (the server lost it in a crash, or the history was replaced); drop it",
                rec.seq, key.run_id
            ))),
        }
    }
}

impl WorkerApi {
    /// Refuses a workflow task of run `key` when the caller's token may not use the run's
    /// task queue. The state is read only for a token limited to some queues.
    pub(super) async fn check_run_queue<T>(
        &self,
        req: &Request<T>,
        key: &RunKey,
    ) -> Result<(), Status> {
        if !crate::auth::limits_queues(req) {
            return Ok(());
        }
        let s = self.core.state(key).await?;
        crate::auth::task_queue(req, &s.task_queue)
    }
}

/// Refuses an activity attempt whose ActivityScheduled (`scheduled`, as
/// [`WorkerApi::check_record`] returned it) routed it to a queue the caller's token may not
/// use. From the record, not the state: a closed activity's queue is still known.
pub(super) fn check_activity_queue<T>(req: &Request<T>, scheduled: &Event) -> Result<(), Status> {
    match scheduled {
        Event::ActivityScheduled(e) => crate::auth::task_queue(req, &e.options.task_queue),
        _ => Err(Status::failed_precondition(
            "the record this task_token names is not an ActivityScheduled: the task is stale; drop it",
        )),
    }
}

fn open_activity(s: &RunState, id: u32) -> Result<&ActivityState, Status> {
    s.activities.get(&id).ok_or_else(|| Status::not_found(format!("activity {id} of run {} is already closed (its result was recorded or it was cancelled)", s.key.run_id)))
}

/// The activity a token names, when the attempt it names is the current one. A superseded
/// attempt is refused: only the current attempt's outcome is recorded.
pub(super) fn current_attempt<'s>(
    s: &'s RunState,
    a: &AttemptRef,
) -> Result<&'s ActivityState, Status> {
    if !s.is_open() {
        return Err(Status::not_found(format!("run {} is closed", s.key.run_id)));
    }
    let act = open_activity(s, a.id)?;
    if act.scheduled_seq != a.scheduled.seq {
        return Err(Status::failed_precondition(format!(
            "activity {} of run {} is not the one this task_token names (scheduled at seq {}, not {}); drop this task",
            a.id, s.key.run_id, act.scheduled_seq, a.scheduled.seq
        )));
    }
    if act.attempt != a.attempt {
        return Err(Status::failed_precondition(format!(
            "attempt {} of activity {} is superseded: attempt {} is current, and only its outcome is recorded",
            a.attempt, a.id, act.attempt
        )));
    }
    Ok(act)
}

/// What the report of a refused attempt still records: the usage of an attempt that timed
/// out while it ran (an LLM call that did run and was billed), once, as
/// ActivityUsageReported. The activity's outcome is not touched, and the reporter is still
/// told its attempt is superseded. `None` for any other refused report, or without usage.
pub(super) fn late_usage(s: &RunState, a: &AttemptRef, usage: Option<&Usage>) -> Option<Event> {
    let usage = usage?;
    s.accepts_late_usage(a.id, a.attempt).then(|| {
        Event::ActivityUsageReported(ev::ActivityUsageReported {
            command_seq: a.id,
            attempt: a.attempt,
            usage: usage.clone(),
        })
    })
}
