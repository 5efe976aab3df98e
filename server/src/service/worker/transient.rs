//! Transient workflow-task attempts: a held run retries without growing its history (issue 10).
//!
//! A run whose code fails its workflow task is *held*: the first failure is recorded
//! (WorkflowTaskFailed, then a WorkflowTaskScheduled offered after a backoff), so `run show`
//! names the cause. Every later attempt of that task is transient, as in Temporal:
//!
//! - **hand-out** appends nothing. The worker gets the whole history and a WorkflowTaskStarted
//!   at the next seq, stamped with the hand-out time, that is not in the history (its hash is
//!   zero). The store keeps the task away from pollers for the workflow-task timeout and
//!   records the attempt number ([`Store::defer_task`]): a worker that goes silent simply
//!   lets that expire, and the task is offered again.
//! - **failure** with the cause already shown appends nothing: the task is deferred by the
//!   held-run backoff. A different cause is recorded (Started, Failed, a new Scheduled) so the
//!   shown reason stays true, at most [`HELD_FAILURES_RECORDED_MAX`] times between two
//!   completed tasks.
//! - **completion** records what the worker was sent: `[WorkflowTaskStarted (as sent, at the
//!   hand-out time), WorkflowTaskCompleted, commands...]` in one append, so the history is an
//!   ordinary, replayable one. It is accepted only from the current attempt (the store's
//!   attempt number), and only while the history still ends where the worker's copy did: a
//!   Started recorded after events its code never saw would make replay differ from the
//!   live run, so then the completion is refused (NOT_FOUND: the attempt is gone) and the
//!   task is offered again at once with the new events.
//!
//! The attempt number and the deferral are an optimisation, lost in a restart (the task is
//! then offered at once and numbering starts again from the recorded attempt); what may be
//! recorded is always fenced by the history (the scheduled record and the last seq seen).
//!
//! [`Store::defer_task`]: steadfast_engine::store::Store::defer_task

use steadfast_engine::event::{self as ev, Event, EventRecord};
use steadfast_engine::ids::RunKey;
use steadfast_engine::state::{HELD_FAILURES_RECORDED_MAX, RunState, WorkflowTask};
use steadfast_engine::store::{Task, TaskKind};
use steadfast_proto::v1 as pb;
use tonic::Status;

use super::WorkerApi;
use crate::commands;
use crate::convert;
use crate::core::{Core, Sticky, simulate, status};
use crate::retry;
use crate::token::{RecordRef, TaskToken};
use crate::versioning;

/// A transient attempt, as its token names it.
pub(crate) struct TransientRef {
    pub(crate) key: RunKey,
    /// The task's WorkflowTaskScheduled.
    pub(crate) scheduled: RecordRef,
    /// The last seq of the history the worker was sent.
    pub(crate) seen_seq: u64,
    /// The hand-out time: the time of the WorkflowTaskStarted the worker was sent.
    pub(crate) issued_ms: i64,
    /// The attempt.
    pub(crate) attempt: u32,
}

impl TransientRef {
    fn task(&self) -> Task {
        Task::Workflow {
            key: self.key.clone(),
            scheduled_seq: self.scheduled.seq,
        }
    }
}

/// Whether the next hand-out of `s`'s scheduled workflow task `scheduled_seq` is transient:
/// the run is held (its last recorded workflow task failed).
pub(super) fn is_transient(s: &RunState, scheduled_seq: u64) -> bool {
    s.is_open()
        && s.held.is_some()
        && matches!(s.workflow_task, WorkflowTask::Scheduled { scheduled_seq: q, .. } if q == scheduled_seq)
}

/// The WorkflowTaskStarted a transient attempt is sent, and that its completion records.
fn started_event(scheduled_seq: u64, worker: &str, timeout_ms: u64) -> Event {
    Event::WorkflowTaskStarted(ev::WorkflowTaskStarted {
        scheduled_seq,
        worker: worker.to_string(),
        timeout_ms,
    })
}

fn no_longer_open(t: &TransientRef) -> Status {
    Status::failed_precondition(format!(
        "the workflow task scheduled at seq {} of run {} is no longer open (another attempt completed it, or the run ended)",
        t.scheduled.seq, t.key.run_id
    ))
}

impl WorkerApi {
    /// Hands out a transient attempt of `s`'s scheduled task (leased by the caller's poll).
    /// `None` when the state moved on meanwhile.
    pub(super) async fn start_transient_task(
        &self,
        s: &RunState,
        scheduled_seq: u64,
        worker: &str,
    ) -> Result<Option<pb::PollWorkflowTaskResponse>, Status> {
        let key = s.key.clone();
        let WorkflowTask::Scheduled {
            attempt: recorded, ..
        } = s.workflow_task
        else {
            return Ok(None);
        };
        let task = Task::Workflow {
            key: key.clone(),
            scheduled_seq,
        };
        let store = &self.core.store;
        let attempt = match store.task_attempt(&task).await.map_err(status)? {
            Some(n) => n.saturating_add(1),
            None => recorded,
        };
        let now = self.core.now();
        let timeout_ms = self.core.workflow_task_timeout_ms;
        // Held as long as a recorded task may be held: a silent worker's attempt expires then.
        let until = retry::after_ms(now, timeout_ms);
        if !store
            .defer_task(&task, until, attempt)
            .await
            .map_err(status)?
        {
            return Ok(None);
        }
        let mut events = self.core.history(&key, 1, s.last_seq).await?;
        let (Some(scheduled), Some(last)) = (
            events.iter().find(|r| r.seq == scheduled_seq),
            events.last(),
        ) else {
            return Err(Status::internal(
                "the history does not hold the scheduled workflow task",
            ));
        };
        let scheduled = RecordRef {
            seq: scheduled.seq,
            hash: scheduled.hash,
        };
        let seen_seq = last.seq;
        events.push(EventRecord {
            seq: seen_seq + 1,
            time_ms: now,
            // Not in the history (yet): a completion records it, with its real hash.
            hash: [0; 32],
            event: started_event(scheduled_seq, worker, timeout_ms),
        });
        // The worker's copy ends with a Started the history may never hold: no sticky batch
        // may build on it until a completion records it.
        self.core.sticky.lock().remove(&key);
        tracing::debug!(run = %key, attempt, "transient workflow task attempt handed out");
        Ok(Some(pb::PollWorkflowTaskResponse {
            task_token: TaskToken::TransientWorkflow {
                key: key.clone(),
                scheduled,
                seen_seq,
                issued_ms: now,
                attempt,
            }
            .seal(&self.tokens),
            run_id: key.run_id.to_string(),
            workflow_type: s.workflow_type.clone(),
            events: events.iter().map(convert::event).collect(),
            first_seq: 1,
            workflow_id: s.workflow_id.clone(),
            namespace: key.namespace.clone(),
            continue_as_new_suggested: self.core.continue_as_new_suggested(s),
        }))
    }

    /// Refuses a transient attempt that is not the task's current one: only the attempt
    /// handed out last may report (a stale worker's report changes nothing).
    async fn check_current(&self, t: &TransientRef) -> Result<(), Status> {
        self.check_record(&t.key, t.scheduled, "WorkflowTaskScheduled")
            .await?;
        let current = self
            .core
            .store
            .task_attempt(&t.task())
            .await
            .map_err(status)?;
        if current == Some(t.attempt) {
            return Ok(());
        }
        Err(Status::failed_precondition(match current {
            Some(n) => format!(
                "attempt {} of the workflow task of run {} is superseded: attempt {n} was handed out since, and only its outcome is recorded; drop this task",
                t.attempt, t.key.run_id
            ),
            None => format!(
                "attempt {} of the workflow task of run {} is no longer current (the task moved on, or the server restarted since it was handed out); drop this task",
                t.attempt, t.key.run_id
            ),
        }))
    }

    /// CompleteWorkflowTask of a transient attempt.
    pub(super) async fn complete_transient(
        &self,
        r: &pb::CompleteWorkflowTaskRequest,
        t: TransientRef,
        build: Option<&str>,
    ) -> Result<pb::CompleteWorkflowTaskResponse, Status> {
        self.check_current(&t).await?;
        let timeout_ms = self.core.workflow_task_timeout_ms;
        let mut new_run: Option<ev::RunStarted> = None;
        // The run's queue, when the history moved past what the attempt saw.
        let mut moved_on: Option<String> = None;
        let appended = self
            .core
            .update_stamped(&t.key, t.issued_ms, |s, now| {
                moved_on = None;
                if !is_transient(s, t.scheduled.seq) {
                    return Err(no_longer_open(&t));
                }
                if s.last_seq != t.seen_seq {
                    moved_on = Some(s.task_queue.clone());
                    return Err(Status::not_found(format!(
                        "attempt {} of the workflow task of run {} is gone: events arrived after it was handed out (seq {} is the last it saw, the history is at {}); the task is offered again with them",
                        t.attempt, t.key.run_id, t.seen_seq, s.last_seq
                    )));
                }
                let started = started_event(t.scheduled.seq, &r.worker_id, timeout_ms);
                let with_start = simulate(s, std::slice::from_ref(&started), now)
                    .map_err(|e| Status::failed_precondition(e.to_string()))?;
                let (events, continued) = commands::task_completion(
                    &with_start,
                    t.seen_seq + 1,
                    &r.worker_id,
                    &r.commands,
                    now,
                    Core::is_undispatched,
                )?;
                new_run = continued;
                let mut all = Vec::with_capacity(events.len() + 2);
                all.push(started);
                // Before the completion, so the task's command events stay one block after it.
                all.extend(versioning::pin_on_completion(s, build));
                all.extend(events);
                Ok(Some(all))
            })
            .await;
        let appended = match appended {
            Ok(a) => a,
            Err(e) => {
                if let Some(queue) = moved_on {
                    // Offered again at once: the next attempt sees the new events.
                    self.core
                        .store
                        .release_task(&t.task())
                        .await
                        .map_err(status)?;
                    self.core
                        .notify
                        .task_ready(&t.key.namespace, &queue, TaskKind::Workflow);
                }
                return Err(e);
            }
        };
        if let (Some(a), Some(started)) = (&appended, new_run) {
            crate::service::continue_as_new(&self.core, &a.state, started).await?;
        }
        self.core.sticky.lock().insert(
            t.key.clone(),
            Sticky::new(r.worker_id.clone(), t.seen_seq + 1),
        );
        tracing::info!(run = %t.key, attempt = t.attempt, "held run's workflow task completed; no longer held");
        Ok(pb::CompleteWorkflowTaskResponse {
            activity_tasks: Vec::new(),
        })
    }

    /// FailWorkflowTask of a transient attempt: deferred by the held-run backoff, recorded
    /// only when its cause differs from the one shown (a bounded number of times).
    pub(super) async fn fail_transient(
        &self,
        r: &pb::FailWorkflowTaskRequest,
        t: TransientRef,
        build: Option<&str>,
    ) -> Result<(), Status> {
        self.check_current(&t).await?;
        let cause = convert::fail_cause_from(r.cause);
        let s = self.core.state(&t.key).await?;
        if !is_transient(&s, t.scheduled.seq) {
            return Err(no_longer_open(&t));
        }
        let next = t.attempt.saturating_add(1);
        let delay = retry::held_task_delay_ms(next, self.core.held_backoff_max_ms);
        let shown = s.held.as_ref();
        let record = shown.is_none_or(|h| {
            h.cause != format!("{cause:?}") && h.recorded < HELD_FAILURES_RECORDED_MAX
        });
        if !record {
            let until = self.core.now().saturating_add(delay);
            self.core
                .store
                .defer_task(&t.task(), until, t.attempt)
                .await
                .map_err(status)?;
            self.core.notify.timers_changed();
            tracing::debug!(run = %t.key, attempt = t.attempt, delay_ms = delay, "held run's transient attempt failed again; not recorded");
            return Ok(());
        }
        let timeout_ms = self.core.workflow_task_timeout_ms;
        self.core
            .update(&t.key, true, |s, now| {
                if !is_transient(s, t.scheduled.seq) {
                    return Err(no_longer_open(&t));
                }
                Ok(Some(vec![
                    started_event(t.scheduled.seq, &r.worker_id, timeout_ms),
                    Event::WorkflowTaskFailed(ev::WorkflowTaskFailed {
                        started_seq: s.last_seq + 1,
                        cause,
                        message: super::failure_message(s, r, build),
                        worker: r.worker_id.clone(),
                    }),
                    Event::WorkflowTaskScheduled(ev::WorkflowTaskScheduled {
                        task_queue: s.task_queue.clone(),
                        attempt: next,
                        not_before_ms: now.saturating_add(delay),
                    }),
                ]))
            })
            .await?;
        tracing::warn!(run = %t.key, cause = r.cause, "held run's workflow task failed with another cause; recorded");
        Ok(())
    }
}
