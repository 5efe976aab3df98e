//! WorkerService: long-poll task dispatch, command validation, activity results.

use std::sync::Arc;

use steadfast_engine::event::{self as ev, Effect, Event};
use steadfast_engine::ids::RunKey;
use steadfast_engine::state::{ActivityPhase, WorkflowTask};
use steadfast_engine::store::{Task, TaskKind};
use steadfast_proto::v1 as pb;
use steadfast_proto::v1::worker_service_server::WorkerService;
use tonic::{Request, Response, Status};

use crate::commands;
use crate::convert;
use crate::core::{Core, Sticky, status};
use crate::retry;
use crate::service::poll_filter::WorkerRuns;
use crate::token::{RecordRef, TaskToken, TokenKey};
use crate::validate;

mod fence;
mod queue;

use fence::current_attempt;
use queue::poll_deadline;

/// Most activity attempts handed back in one workflow task completion (eager dispatch).
const EAGER_ACTIVITIES_MAX: u32 = 16;
/// Heartbeat details are recorded in the history at most this often per activity.
const HEARTBEAT_RECORD_INTERVAL_MS: i64 = 1_000;

/// The worker service.
pub struct WorkerApi {
    core: Arc<Core>,
    tokens: TokenKey,
}

impl WorkerApi {
    /// Over `core`, signing task tokens with `tokens`.
    pub fn new(core: Arc<Core>, tokens: TokenKey) -> WorkerApi {
        WorkerApi { core, tokens }
    }
}

impl WorkerApi {
    /// Starts a polled workflow task: records WorkflowTaskStarted and builds the response.
    async fn start_workflow_task(
        &self,
        key: RunKey,
        scheduled_seq: u64,
        worker: &str,
    ) -> Result<Option<pb::PollWorkflowTaskResponse>, Status> {
        // Durable before it is handed out: a WorkflowTaskStarted lost in a crash would let its
        // seq (and a different `now()`) be given out again, and the old worker's completion
        // would be taken for the new task's.
        let appended = self
            .core
            .update(&key, true, |s, _| match &s.workflow_task {
                WorkflowTask::Scheduled {
                    scheduled_seq: q, ..
                } if *q == scheduled_seq && s.is_open() => {
                    Ok(Some(vec![Event::WorkflowTaskStarted(
                        ev::WorkflowTaskStarted {
                            scheduled_seq,
                            worker: worker.to_string(),
                        },
                    )]))
                }
                _ => Ok(None),
            })
            .await;
        let appended = match appended {
            Ok(Some(a)) => a,
            // The task moved on (stale queue entry): nothing to hand out.
            Ok(None) => return Ok(None),
            Err(e) if e.code() == tonic::Code::NotFound => return Ok(None),
            Err(e) => return Err(e),
        };
        let s = &appended.state;
        let Some(started) = appended
            .records
            .iter()
            .find(|r| matches!(r.event, Event::WorkflowTaskStarted(_)))
            .map(|r| RecordRef {
                seq: r.seq,
                hash: r.hash,
            })
        else {
            return Err(Status::internal(
                "the append did not record WorkflowTaskStarted",
            ));
        };
        let started_seq = started.seq;
        let first_seq = {
            let sticky = self.core.sticky.lock();
            match sticky.get(&key) {
                Some(st) if st.worker == worker && st.last_seq < started_seq => st.last_seq + 1,
                _ => 1,
            }
        };
        let events = self.core.history(&key, first_seq, started_seq).await?;
        self.core.sticky.lock().insert(
            key.clone(),
            Sticky {
                worker: worker.to_string(),
                last_seq: started_seq,
            },
        );
        Ok(Some(pb::PollWorkflowTaskResponse {
            task_token: TaskToken::Workflow {
                key: key.clone(),
                started,
            }
            .seal(&self.tokens),
            run_id: key.run_id.to_string(),
            workflow_type: s.workflow_type.clone(),
            events: events.iter().map(convert::event).collect(),
            first_seq,
            workflow_id: s.workflow_id.clone(),
            namespace: key.namespace.clone(),
            continue_as_new_suggested: self.core.continue_as_new_suggested(s),
        }))
    }

    /// Hands out a polled activity attempt, or parks the run on its budget.
    async fn start_activity_task(
        &self,
        key: RunKey,
        id: u32,
        attempt: u32,
        worker: &str,
        runs: &WorkerRuns,
    ) -> Result<Option<pb::PollActivityTaskResponse>, Status> {
        let s = match self.core.state(&key).await {
            Ok(s) => s,
            Err(e) if e.code() == tonic::Code::NotFound => return Ok(None),
            // The caller gives the task back: an unreadable state must not keep it leased.
            Err(e) => return Err(e),
        };
        let Some(act) = s
            .activities
            .get(&id)
            .filter(|a| a.attempt == attempt && matches!(a.phase, ActivityPhase::Ready { .. }))
        else {
            return Ok(None);
        };
        let now = self.core.now();
        if let Some(hit) = s.budget_block(id, now) {
            if s.budget_exceeded.is_none() {
                self.core
                    .update(&key, true, |s, now| {
                        Ok(match (s.budget_exceeded, s.budget_block(id, now)) {
                            (None, Some(h)) => {
                                Some(vec![Event::BudgetExceeded(ev::BudgetExceeded {
                                    dimension: h.dimension,
                                    limit: h.limit,
                                    used: h.used,
                                })])
                            }
                            _ => None,
                        })
                    })
                    .await?;
            }
            // No worker holds this attempt: drop the lease poll_task took, so that raising the
            // budget (BudgetUpdated) offers it again. Without this it stayed leased until a
            // server restart.
            self.core
                .store
                .release_task(&Task::Activity {
                    key: key.clone(),
                    id,
                    attempt,
                })
                .await
                .map_err(status)?;
            tracing::info!(run = %key, activity = id, dimension = hit.dimension.as_str(), "run parked on its budget");
            return Ok(None);
        }
        // The effect the running worker declares counts, not the one the workflow assumed.
        let effect = runs.effect(&act.activity_type);
        if effect == Effect::Write {
            // Recorded durably before the tool runs: if this attempt is lost, the run waits
            // for reconciliation instead of repeating a write blindly.
            let started = self
                .core
                .update(&key, true, |s, _| match s.activities.get(&id) {
                    Some(a)
                        if a.attempt == attempt
                            && matches!(a.phase, ActivityPhase::Ready { .. }) =>
                    {
                        Ok(Some(vec![Event::ActivityStarted(ev::ActivityStarted {
                            command_seq: id,
                            attempt,
                            worker: worker.to_string(),
                        })]))
                    }
                    _ => Ok(None),
                })
                .await?;
            if started.is_none() {
                return Ok(None);
            }
        }
        let (deadline, kind) = retry::attempt_deadline(act, now, now);
        self.core
            .store
            .set_attempt_deadline(&key, id, attempt, deadline, kind)
            .await
            .map_err(status)?;
        self.core.notify.timers_changed();
        self.core
            .dispatched
            .lock()
            .insert((key.clone(), id, attempt), now);
        let scheduled = self
            .core
            .history(&key, act.scheduled_seq, act.scheduled_seq)
            .await?;
        let (input, scheduled) = match scheduled.first() {
            Some(
                r @ steadfast_engine::EventRecord {
                    event: Event::ActivityScheduled(a),
                    ..
                },
            ) => (
                convert::payload(&a.input),
                RecordRef {
                    seq: r.seq,
                    hash: r.hash,
                },
            ),
            _ => {
                return Err(Status::data_loss(format!(
                    "run {key}: ActivityScheduled of activity {id} is missing at seq {}",
                    act.scheduled_seq
                )));
            }
        };
        Ok(Some(pb::PollActivityTaskResponse {
            task_token: TaskToken::Activity {
                key: key.clone(),
                activity_id: id,
                scheduled,
                attempt,
            }
            .seal(&self.tokens),
            run_id: key.run_id.to_string(),
            activity_id: id,
            activity_type: act.activity_type.clone(),
            input: Some(input),
            attempt,
            idempotency_key: format!("{}/{}/{}", key.namespace, key.run_id, id),
            options: Some(convert::activity_options(&act.options)),
            workflow_type: s.workflow_type.clone(),
            workflow_id: s.workflow_id.clone(),
            deadline_ms: deadline,
            namespace: key.namespace.clone(),
        }))
    }

    /// Eager dispatch: hands the worker that completed a workflow task the activities its
    /// commands scheduled, when it runs their type on the run's queue and has room. Each is
    /// taken from its queue first, so a poller can never get the same attempt.
    async fn eager_activities(
        &self,
        appended: &steadfast_engine::store::Appended,
        r: &pb::CompleteWorkflowTaskRequest,
    ) -> Result<Vec<pb::PollActivityTaskResponse>, Status> {
        let mut out = Vec::new();
        let slots = r.eager_activity_slots.min(EAGER_ACTIVITIES_MAX) as usize;
        let runs = WorkerRuns::activities(
            "eager_activity_types",
            &r.eager_activity_types,
            "eager_activities",
            &r.eager_activities,
        )?;
        let s = &appended.state;
        for rec in &appended.records {
            if out.len() >= slots {
                break;
            }
            let Event::ActivityScheduled(a) = &rec.event else {
                continue;
            };
            if a.options.task_queue != s.task_queue
                || runs.takes_any()
                || !runs.takes(&a.activity_type)
            {
                continue;
            }
            let task = Task::Activity {
                key: s.key.clone(),
                id: a.command_seq,
                attempt: 1,
            };
            if !self
                .core
                .store
                .take_task(&task, self.core.now())
                .await
                .map_err(status)?
            {
                continue;
            }
            let started = self
                .start_activity_task(s.key.clone(), a.command_seq, 1, &r.worker_id, &runs)
                .await;
            let started = match started {
                Ok(t) => t,
                Err(e) => return Err(self.release_after_error(&task, e).await),
            };
            match started {
                Some(t) => out.push(t),
                // Parked on its budget or moved on; if still offered, pollers get it back.
                None => self.core.store.release_task(&task).await.map_err(status)?,
            }
        }
        Ok(out)
    }

    fn duration_ms(&self, key: &RunKey, id: u32, attempt: u32, now: i64) -> u64 {
        self.core
            .dispatched
            .lock()
            .remove(&(key.clone(), id, attempt))
            .map(|t| now.saturating_sub(t).max(0) as u64)
            .unwrap_or(0)
    }
}

#[tonic::async_trait]
impl WorkerService for WorkerApi {
    async fn poll_workflow_task(
        &self,
        req: Request<pb::PollWorkflowTaskRequest>,
    ) -> Result<Response<pb::PollWorkflowTaskResponse>, Status> {
        let r = req.get_ref();
        let ns = validate::namespace(&r.namespace)?;
        validate::name("task_queue", &r.task_queue)?;
        validate::name("worker_id", &r.worker_id)?;
        let runs = WorkerRuns::workflows(&r.workflow_types)?;
        let deadline = poll_deadline(r.poll_timeout_ms);
        while let Some(task) = self
            .next_task(&ns, &r.task_queue, TaskKind::Workflow, &runs, deadline)
            .await?
        {
            let Task::Workflow { key, scheduled_seq } = &task else {
                continue;
            };
            match self
                .start_workflow_task(key.clone(), *scheduled_seq, &r.worker_id)
                .await
            {
                Ok(Some(resp)) => return Ok(Response::new(resp)),
                Ok(None) => {}
                Err(e) => return Err(self.release_after_error(&task, e).await),
            }
        }
        Ok(Response::new(pb::PollWorkflowTaskResponse::default()))
    }

    async fn complete_workflow_task(
        &self,
        req: Request<pb::CompleteWorkflowTaskRequest>,
    ) -> Result<Response<pb::CompleteWorkflowTaskResponse>, Status> {
        let r = req.get_ref();
        let (key, started) = self.workflow_token(&r.task_token, &r.namespace)?;
        self.check_record(&key, started, "WorkflowTaskStarted")
            .await?;
        let started_seq = started.seq;
        let mut new_run: Option<ev::RunStarted> = None;
        let eager = r.eager_activity_slots > 0;
        let appended = self
            .core
            .update_with(&key, true, !eager, |s, now| {
                match &s.workflow_task {
                    WorkflowTask::Started { started_seq: q, .. } if *q == started_seq => {}
                    _ => return Err(Status::failed_precondition(format!("workflow task {started_seq} of run {} is no longer open (it timed out or the run ended)", key.run_id))),
                }
                // An activity that no worker holds has nothing to stop: its cancellation is
                // confirmed at once, after the task's command events (a running one hears of
                // it through its heartbeat).
                let (events, continued) = commands::task_completion(s, started_seq, &r.worker_id, &r.commands, now, |s, id| self.core.is_undispatched(s, id))?;
                new_run = continued;
                Ok(Some(events))
            })
            .await?;
        if let (Some(a), Some(started)) = (&appended, new_run) {
            crate::service::continue_as_new(&self.core, &a.state, started).await?;
        }
        let activity_tasks = match &appended {
            Some(a) if eager => {
                let tasks = self.eager_activities(a, r).await;
                if let Ok(t) = &tasks {
                    tracing::debug!(run = %key, handed_out = t.len(), "eager activity dispatch");
                }
                // Pollers are woken for whatever was not handed out here, even on an error.
                let taken: Vec<u32> = tasks
                    .as_ref()
                    .map(|t| t.iter().map(|t| t.activity_id).collect())
                    .unwrap_or_default();
                self.core.activities_ready(a, &taken);
                tasks?
            }
            _ => Vec::new(),
        };
        Ok(Response::new(pb::CompleteWorkflowTaskResponse {
            activity_tasks,
        }))
    }

    async fn fail_workflow_task(
        &self,
        req: Request<pb::FailWorkflowTaskRequest>,
    ) -> Result<Response<pb::FailWorkflowTaskResponse>, Status> {
        let r = req.get_ref();
        let (key, started) = self.workflow_token(&r.task_token, &r.namespace)?;
        self.check_record(&key, started, "WorkflowTaskStarted")
            .await?;
        let started_seq = started.seq;
        self.core.sticky.lock().remove(&key);
        self.core
            .update(&key, true, |s, now| {
                let WorkflowTask::Started {
                    started_seq: q,
                    attempt,
                    ..
                } = &s.workflow_task
                else {
                    return Err(Status::failed_precondition(
                        "the workflow task is no longer open",
                    ));
                };
                if *q != started_seq {
                    return Err(Status::failed_precondition(
                        "the workflow task is no longer open",
                    ));
                }
                let attempt = attempt + 1;
                // Held, not failed: offered again with a growing delay so fixed code can pick it up.
                let delay = retry::held_task_delay_ms(attempt, self.core.held_backoff_max_ms);
                Ok(Some(vec![
                    Event::WorkflowTaskFailed(ev::WorkflowTaskFailed {
                        started_seq,
                        cause: convert::fail_cause_from(r.cause),
                        message: r.message.chars().take(4096).collect(),
                        worker: r.worker_id.clone(),
                    }),
                    Event::WorkflowTaskScheduled(ev::WorkflowTaskScheduled {
                        task_queue: s.task_queue.clone(),
                        attempt,
                        not_before_ms: now + delay,
                    }),
                ]))
            })
            .await?;
        tracing::warn!(run = %key, cause = r.cause, "workflow task failed; run held until its code succeeds");
        Ok(Response::new(pb::FailWorkflowTaskResponse {}))
    }

    async fn poll_activity_task(
        &self,
        req: Request<pb::PollActivityTaskRequest>,
    ) -> Result<Response<pb::PollActivityTaskResponse>, Status> {
        let r = req.get_ref();
        let ns = validate::namespace(&r.namespace)?;
        validate::name("task_queue", &r.task_queue)?;
        validate::name("worker_id", &r.worker_id)?;
        let runs = WorkerRuns::activities(
            "activity_types",
            &r.activity_types,
            "activities",
            &r.activities,
        )?;
        let deadline = poll_deadline(r.poll_timeout_ms);
        while let Some(task) = self
            .next_task(&ns, &r.task_queue, TaskKind::Activity, &runs, deadline)
            .await?
        {
            let Task::Activity { key, id, attempt } = &task else {
                continue;
            };
            match self
                .start_activity_task(key.clone(), *id, *attempt, &r.worker_id, &runs)
                .await
            {
                Ok(Some(resp)) => return Ok(Response::new(resp)),
                Ok(None) => {}
                Err(e) => return Err(self.release_after_error(&task, e).await),
            }
        }
        Ok(Response::new(pb::PollActivityTaskResponse::default()))
    }

    async fn complete_activity_task(
        &self,
        req: Request<pb::CompleteActivityTaskRequest>,
    ) -> Result<Response<pb::CompleteActivityTaskResponse>, Status> {
        let r = req.get_ref();
        let a = self.activity_token(&r.task_token, &r.namespace)?;
        self.check_record(&a.key, a.scheduled, "ActivityScheduled")
            .await?;
        let (key, id, attempt) = (a.key.clone(), a.id, a.attempt);
        let duration_ms = self.duration_ms(&key, id, attempt, self.core.now());
        let event = commands::activity_result_event(
            id,
            attempt,
            r.result.as_ref(),
            r.usage.as_ref(),
            duration_ms,
        );
        self.core
            .update(&key, true, |s, _| {
                current_attempt(s, &a)?;
                Ok(Some(vec![event.clone()]))
            })
            .await?;
        Ok(Response::new(pb::CompleteActivityTaskResponse {}))
    }

    async fn fail_activity_task(
        &self,
        req: Request<pb::FailActivityTaskRequest>,
    ) -> Result<Response<pb::FailActivityTaskResponse>, Status> {
        let r = req.get_ref();
        let a = self.activity_token(&r.task_token, &r.namespace)?;
        let failure = r
            .failure
            .as_ref()
            .map(convert::failure_from)
            .unwrap_or_default();
        self.check_record(&a.key, a.scheduled, "ActivityScheduled")
            .await?;
        let (key, id, attempt) = (a.key.clone(), a.id, a.attempt);
        let duration_ms = self.duration_ms(&key, id, attempt, self.core.now());
        self.core
            .update(&key, true, |s, now| {
                let act = current_attempt(s, &a)?;
                if failure.error_type == retry::CANCELLED_ERROR_TYPE && act.cancel_requested {
                    return Ok(Some(vec![Event::ActivityCancelled(
                        ev::ActivityCancelled { command_seq: id },
                    )]));
                }
                let retry_at_ms = retry::next_attempt_at(act, attempt, Some(&failure), now);
                Ok(Some(vec![Event::ActivityFailed(ev::ActivityFailed {
                    command_seq: id,
                    attempt,
                    failure: failure.clone(),
                    retry_at_ms,
                    duration_ms,
                })]))
            })
            .await?;
        Ok(Response::new(pb::FailActivityTaskResponse {}))
    }

    async fn heartbeat_activity_task(
        &self,
        req: Request<pb::HeartbeatActivityTaskRequest>,
    ) -> Result<Response<pb::HeartbeatActivityTaskResponse>, Status> {
        let r = req.get_ref();
        let a = self.activity_token(&r.task_token, &r.namespace)?;
        self.check_record(&a.key, a.scheduled, "ActivityScheduled")
            .await?;
        let (key, id, attempt) = (a.key.clone(), a.id, a.attempt);
        let s = self.core.state(&key).await?;
        let act = match current_attempt(&s, &a) {
            Ok(act) => act,
            // Closed (recorded, cancelled, or the run ended): this attempt should stop.
            Err(e) if e.code() == tonic::Code::NotFound => {
                return Ok(Response::new(pb::HeartbeatActivityTaskResponse {
                    cancel_requested: true,
                }));
            }
            // Superseded: refused, and the worker stops it.
            Err(e) => return Err(e),
        };
        // A run's cancel request marked the activities open at that moment (see the state
        // machine); activities scheduled after it, e.g. cleanup, run to completion.
        let cancel_requested = !s.is_open() || act.cancel_requested;
        let now = self.core.now();
        if act.options.heartbeat_ms > 0 {
            // The next heartbeat is due within heartbeat_ms, but never past the attempt's own end.
            let started = self
                .core
                .dispatched
                .lock()
                .get(&(key.clone(), id, attempt))
                .copied()
                .unwrap_or(now);
            let (deadline, kind) = retry::attempt_deadline(act, started, now);
            self.core
                .store
                .set_attempt_deadline(&key, id, attempt, deadline, kind)
                .await
                .map_err(status)?;
        }
        if let Some(details) = &r.details {
            let due = {
                let mut last = self.core.heartbeat_recorded.lock();
                let t = last.entry((key.clone(), id)).or_insert(i64::MIN);
                let due = now.saturating_sub(*t) >= HEARTBEAT_RECORD_INTERVAL_MS;
                if due {
                    *t = now;
                }
                due
            };
            if due && !details.data.is_empty() {
                let details = validate::payload("details", Some(details))?;
                self.core
                    .update(&key, false, |s, _| {
                        Ok(s.activities
                            .get(&id)
                            .filter(|a| a.attempt == attempt && s.is_open())
                            .map(|_| {
                                vec![Event::ActivityProgress(ev::ActivityProgress {
                                    command_seq: id,
                                    attempt,
                                    details: details.clone(),
                                })]
                            }))
                    })
                    .await?;
            }
        }
        Ok(Response::new(pb::HeartbeatActivityTaskResponse {
            cancel_requested,
        }))
    }
}
