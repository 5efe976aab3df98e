//! WorkerService: long-poll task dispatch, command validation, activity results.

use std::sync::Arc;

use steadfast_engine::event::{self as ev, Event, TimeoutKind};
use steadfast_engine::ids::RunKey;
use steadfast_engine::state::{ActivityPhase, ActivityState, RunState, WorkflowTask};
use steadfast_engine::store::{Appended, Task, TaskKind};
use steadfast_proto::v1 as pb;
use steadfast_proto::v1::worker_service_server::WorkerService;
use tonic::{Request, Response, Status};
use tracing::Instrument;

use crate::commands;
use crate::convert;
use crate::core::{
    Core, EagerStart, HeartbeatRecorded, Sticky, records_in_memory, simulate, status,
};
use crate::retry;
use crate::service::poll_filter::WorkerRuns;
use crate::token::{RecordRef, TaskToken, TokenKey};
use crate::validate;
use crate::versioning;

mod deltas;
mod dispatch;
mod fence;
mod inflight;
mod queue;
pub mod session;
mod transient;

use fence::{WorkflowTaskRef, current_attempt};
use queue::{Next, poll_deadline};

/// Most activity attempts handed back in one workflow task completion (eager dispatch).
const EAGER_ACTIVITIES_MAX: u32 = 16;
/// Heartbeat details are recorded in the history at most this often per activity.
const HEARTBEAT_RECORD_INTERVAL_MS: i64 = 1_000;
/// How many heartbeats of one attempt may ask to be recorded at once (`record`), past the
/// sampling above; more are sampled like the others (a history does not grow without bound
/// because a worker asks).
pub const HEARTBEAT_FORCED_RECORDS_MAX: u32 = 8;

/// The worker service.
pub struct WorkerApi {
    core: Arc<Core>,
    tokens: TokenKey,
    sessions: Arc<session::Sessions>,
    polls: Arc<inflight::PollsInFlight>,
}

impl WorkerApi {
    /// Over `core`, signing task tokens with `tokens`.
    pub fn new(core: Arc<Core>, tokens: TokenKey) -> WorkerApi {
        WorkerApi {
            core,
            tokens,
            sessions: Arc::default(),
            polls: Arc::default(),
        }
    }

    /// The worker sessions, for the server to [`session::Sessions::close`] them when it
    /// shuts down.
    pub fn sessions(&self) -> Arc<session::Sessions> {
        self.sessions.clone()
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
        // A held run's later attempts are transient: nothing is recorded until one completes.
        match self.core.state(&key).await {
            Ok(s) if transient::is_transient(&s, scheduled_seq) => {
                return self.start_transient_task(&s, scheduled_seq, worker).await;
            }
            Ok(_) => {}
            Err(e) if e.code() == tonic::Code::NotFound => return Ok(None),
            Err(e) => return Err(e),
        }
        // Durable before it is handed out: a WorkflowTaskStarted lost in a crash would let its
        // seq (and a different `now()`) be given out again, and the old worker's completion
        // would be taken for the new task's.
        let appended = self
            .core
            .update(&key, true, |s, _| match &s.workflow_task {
                WorkflowTask::Scheduled {
                    scheduled_seq: q, ..
                } if *q == scheduled_seq && s.is_open() => Ok(Some(vec![
                    self.core.workflow_task_started(scheduled_seq, worker),
                ])),
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
        match self.hand_out_workflow_task(&key, &appended, worker).await? {
            Some(resp) => Ok(Some(resp)),
            None => Err(Status::internal(
                "the append did not record WorkflowTaskStarted",
            )),
        }
    }

    /// The eager workflow task an activity completion asks for (see
    /// `CompleteActivityTaskRequest.eager_workflow_task`), with the type keys the worker's own
    /// poll would read; `None` when it asks for none, or may not poll that queue. The fields
    /// are checked whether or not it asks: a bad value is refused, never ignored.
    async fn eager_start(
        &self,
        req: &Request<pb::CompleteActivityTaskRequest>,
    ) -> Result<Option<EagerStart>, Status> {
        let r = req.get_ref();
        if !r.task_queue.is_empty() {
            validate::name("task_queue", &r.task_queue)?;
        }
        WorkerRuns::workflows(&r.workflow_types)?;
        let build = versioning::worker_build("build_id", &r.build_id)?;
        versioning::check_poll(&r.workflow_types, build)?;
        // A worker that names no types would take any type: that is the poll's business, not
        // a shortcut's.
        if !r.eager_workflow_task || r.workflow_types.is_empty() || r.worker_id.is_empty() {
            return Ok(None);
        }
        validate::name("task_queue", &r.task_queue)?;
        if crate::auth::task_queue(req, &r.task_queue).is_err() {
            return Ok(None);
        }
        let ns = validate::namespace(&r.namespace)?;
        let keys = versioning::poll_keys(
            self.core.store.as_ref(),
            &ns,
            &r.task_queue,
            &r.workflow_types,
            build,
        )
        .await?;
        Ok(Some(EagerStart {
            worker: r.worker_id.clone(),
            task_queue: r.task_queue.clone(),
            keys,
        }))
    }

    /// The task to send for the WorkflowTaskStarted that `appended` (durable) recorded for
    /// `worker`, if it recorded one: its token, and the history since what that worker was
    /// last sent of the run.
    async fn hand_out_workflow_task(
        &self,
        key: &RunKey,
        appended: &Appended,
        worker: &str,
    ) -> Result<Option<pb::PollWorkflowTaskResponse>, Status> {
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
            return Ok(None);
        };
        let key = key.clone();
        let started_seq = started.seq;
        // What the worker lacks is often just what its own last completion and this append
        // recorded (an eager task for the worker that has the run cached): sent from those
        // durable records instead of read back.
        let (first_seq, events) = {
            let sticky = self.core.sticky.lock();
            let (first_seq, kept) = match sticky.get(&key) {
                Some(st) if st.worker == worker && st.last_seq < started_seq => {
                    (st.last_seq + 1, st.after.as_slice())
                }
                _ => (1, &[][..]),
            };
            let records = records_in_memory(kept, &appended.records, first_seq, started_seq)
                .map(|rs| rs.into_iter().cloned().collect::<Vec<_>>());
            (first_seq, records)
        };
        let events: Vec<pb::HistoryEvent> = match events {
            Some(records) => {
                // Workers get large payloads inline, as from a read (`Core::history`).
                let mut events = Vec::with_capacity(records.len());
                for r in records {
                    events.push(convert::event(&self.core.inline(&key.namespace, r).await?));
                }
                events
            }
            None => {
                let read = self.core.history(&key, first_seq, started_seq).await?;
                read.iter().map(convert::event).collect()
            }
        };
        let mut sticky = Sticky::new(worker, started_seq);
        sticky.handed = appended
            .records
            .iter()
            .find(|r| r.seq == started_seq)
            .cloned();
        self.core.sticky.lock().insert(key.clone(), sticky);
        Ok(Some(pb::PollWorkflowTaskResponse {
            task_token: TaskToken::Workflow {
                key: key.clone(),
                started,
            }
            .seal(&self.tokens),
            run_id: key.run_id.to_string(),
            workflow_type: s.workflow_type.clone(),
            events,
            first_seq,
            workflow_id: s.workflow_id.clone(),
            namespace: key.namespace.clone(),
            continue_as_new_suggested: self.core.continue_as_new_suggested(s),
        }))
    }
}

#[tonic::async_trait]
impl WorkerService for WorkerApi {
    type WorkerSessionStream = session::SessionStream;

    async fn worker_session(
        &self,
        req: Request<pb::WorkerSessionRequest>,
    ) -> Result<Response<Self::WorkerSessionStream>, Status> {
        crate::auth::namespace(&req, &req.get_ref().namespace)?;
        for q in &req.get_ref().task_queues {
            crate::auth::task_queue(&req, q)?;
        }
        let stream = session::open(self.core.clone(), self.sessions.clone(), req.get_ref())?;
        Ok(Response::new(stream))
    }

    async fn poll_query_task(
        &self,
        req: Request<pb::PollQueryTaskRequest>,
    ) -> Result<Response<pb::PollQueryTaskResponse>, Status> {
        crate::auth::namespace(&req, &req.get_ref().namespace)?;
        crate::auth::task_queue(&req, &req.get_ref().task_queue)?;
        let resp = crate::service::query::poll_query_task(&self.core, req.get_ref()).await?;
        Ok(Response::new(resp))
    }

    async fn respond_query_task(
        &self,
        req: Request<pb::RespondQueryTaskRequest>,
    ) -> Result<Response<pb::RespondQueryTaskResponse>, Status> {
        crate::auth::namespace(&req, &req.get_ref().namespace)?;
        let resp = crate::service::query::respond_query_task(&self.core, req.get_ref())?;
        Ok(Response::new(resp))
    }

    async fn poll_check_task(
        &self,
        req: Request<pb::PollCheckTaskRequest>,
    ) -> Result<Response<pb::PollCheckTaskResponse>, Status> {
        crate::auth::namespace(&req, &req.get_ref().namespace)?;
        crate::auth::task_queue(&req, &req.get_ref().task_queue)?;
        let resp = crate::service::check::poll_check_task(&self.core, req.get_ref()).await?;
        Ok(Response::new(resp))
    }

    async fn respond_check_task(
        &self,
        req: Request<pb::RespondCheckTaskRequest>,
    ) -> Result<Response<pb::RespondCheckTaskResponse>, Status> {
        crate::auth::namespace(&req, &req.get_ref().namespace)?;
        let resp = crate::service::check::respond_check_task(&self.core, req.get_ref())?;
        Ok(Response::new(resp))
    }

    async fn publish_activity_deltas(
        &self,
        req: Request<pb::PublishActivityDeltasRequest>,
    ) -> Result<Response<pb::PublishActivityDeltasResponse>, Status> {
        Ok(Response::new(deltas::publish(self, &req).await?))
    }

    async fn poll_workflow_task(
        &self,
        req: Request<pb::PollWorkflowTaskRequest>,
    ) -> Result<Response<pb::PollWorkflowTaskResponse>, Status> {
        let r = req.get_ref();
        crate::auth::namespace(&req, &r.namespace)?;
        crate::auth::task_queue(&req, &r.task_queue)?;
        let ns = validate::namespace(&r.namespace)?;
        validate::name("task_queue", &r.task_queue)?;
        validate::name("worker_id", &r.worker_id)?;
        let runs = WorkerRuns::workflows(&r.workflow_types)?;
        let build = versioning::worker_build("build_id", &r.build_id)?;
        versioning::check_poll(&r.workflow_types, build)?;
        let _slot = self.polls.enter(
            inflight::Caller::of(&req, &r.worker_id),
            self.core.caller_limits.polls_in_flight_per_connection_max,
        )?;
        let deadline = poll_deadline(r.poll_timeout_ms);
        while let Some(next) = self
            .next_task(
                &ns,
                &r.task_queue,
                TaskKind::Workflow,
                &runs,
                build,
                Some(&r.worker_id),
                deadline,
            )
            .await?
        {
            let task = match next {
                Next::Task(task) => task,
                Next::Matched(m) => {
                    return match self
                        .hand_out_workflow_task(&m.key, &m.appended, &r.worker_id)
                        .await?
                    {
                        Some(resp) => Ok(Response::new(resp)),
                        None => Err(Status::internal(
                            "the start did not record WorkflowTaskStarted",
                        )),
                    };
                }
            };
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
        crate::auth::namespace(&req, &r.namespace)?;
        validate::namespace(&r.namespace)?;
        validate::opt_name("worker_id", &r.worker_id)?;
        validate::commands(&r.commands)?;
        let eager_runs = WorkerRuns::activities(
            "eager_activity_types",
            &r.eager_activity_types,
            "eager_activities",
            &r.eager_activities,
        )?;
        let build = versioning::worker_build("build_id", &r.build_id)?;
        let (key, started) = match self.workflow_token(&r.task_token, &r.namespace)? {
            WorkflowTaskRef::Recorded { key, started } => (key, started),
            WorkflowTaskRef::Transient(t) => {
                self.check_run_queue(&req, &t.key).await?;
                return Ok(Response::new(self.complete_transient(r, t, build).await?));
            }
        };
        self.check_record(&key, started, "WorkflowTaskStarted")
            .await?;
        self.check_run_queue(&req, &key).await?;
        crate::limits::queue_room(
            self.core.store.as_ref(),
            &key.namespace,
            &commands::named_queues(&r.commands),
            self.core.caller_limits.task_queues_per_namespace_max,
        )
        .await?;
        let started_seq = started.seq;
        let mut new_run: Option<ev::RunStarted> = None;
        let slots = r.eager_activity_slots.min(EAGER_ACTIVITIES_MAX) as usize;
        let eager = slots > 0;
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
                let (mut events, continued) = commands::task_completion(s, started_seq, &r.worker_id, &r.commands, now, Core::is_undispatched)?;
                new_run = continued;
                // Before the completion, so the task's command events stay one block after it.
                if let Some(pin) = versioning::pin_on_completion(s, build) {
                    events.insert(0, pin);
                }
                if eager {
                    // The attempts this worker takes at once are recorded as started in the
                    // same append as the completion: one sync, and no poller can get them.
                    let after = simulate(s, &events, now)
                        .map_err(|e| Status::failed_precondition(e.to_string()))?;
                    let starts = dispatch::eager_starts(&after, &events, slots, &r.worker_id, &eager_runs, now);
                    events.extend(starts);
                }
                Ok(Some(events))
            })
            .await?;
        if let Some(a) = &appended
            && let Some(st) = self.core.sticky.lock().get_mut(&key)
        {
            if st.last_seq == started_seq {
                st.keep_after(&r.worker_id, &a.records);
            } else {
                st.after.clear();
            }
        }
        if let (Some(a), Some(started)) = (&appended, new_run) {
            crate::service::continue_as_new(&self.core, &a.state, started).await?;
        }
        let activity_tasks = match &appended {
            Some(a) if eager => {
                // Pollers are woken for what was not started here.
                let taken: Vec<u32> = a
                    .records
                    .iter()
                    .filter_map(|r| match &r.event {
                        Event::ActivityStarted(e) => Some(e.command_seq),
                        _ => None,
                    })
                    .collect();
                self.core.activities_ready(a, &taken);
                let tasks = self.eager_tasks(a).await?;
                tracing::debug!(run = %key, handed_out = tasks.len(), "eager activity dispatch");
                tasks
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
        crate::auth::namespace(&req, &r.namespace)?;
        validate::namespace(&r.namespace)?;
        validate::opt_name("worker_id", &r.worker_id)?;
        validate::enumeration::<pb::WorkflowTaskFailCause>(
            "cause",
            r.cause,
            "WORKFLOW_TASK_FAIL_CAUSE_UNSPECIFIED (0) to WORKFLOW_TASK_FAIL_CAUSE_WORKFLOW_BLOCKED (6)",
        )?;
        validate::free_text("message", &r.message)?;
        let build = versioning::worker_build("build_id", &r.build_id)?;
        let (key, started) = match self.workflow_token(&r.task_token, &r.namespace)? {
            WorkflowTaskRef::Recorded { key, started } => (key, started),
            WorkflowTaskRef::Transient(t) => {
                self.check_run_queue(&req, &t.key).await?;
                self.fail_transient(r, t, build).await?;
                return Ok(Response::new(pb::FailWorkflowTaskResponse {}));
            }
        };
        self.check_record(&key, started, "WorkflowTaskStarted")
            .await?;
        self.check_run_queue(&req, &key).await?;
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
                        message: failure_message(s, r, build),
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
        crate::auth::namespace(&req, &r.namespace)?;
        crate::auth::task_queue(&req, &r.task_queue)?;
        let ns = validate::namespace(&r.namespace)?;
        validate::name("task_queue", &r.task_queue)?;
        validate::name("worker_id", &r.worker_id)?;
        let runs = WorkerRuns::activities(
            "activity_types",
            &r.activity_types,
            "activities",
            &r.activities,
        )?;
        let _slot = self.polls.enter(
            inflight::Caller::of(&req, &r.worker_id),
            self.core.caller_limits.polls_in_flight_per_connection_max,
        )?;
        let deadline = poll_deadline(r.poll_timeout_ms);
        while let Some(next) = self
            .next_task(
                &ns,
                &r.task_queue,
                TaskKind::Activity,
                &runs,
                None,
                None,
                deadline,
            )
            .await?
        {
            let Next::Task(task) = next else {
                continue;
            };
            match self.start_activity_task(&task, &r.worker_id, &runs).await {
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
        crate::auth::namespace(&req, &r.namespace)?;
        validate::namespace(&r.namespace)?;
        validate::opt_name("worker_id", &r.worker_id)?;
        validate::usage("usage", r.usage.as_ref())?;
        let eager = self.eager_start(&req).await?;
        let a = self.activity_token(&r.task_token, &r.namespace)?;
        let scheduled = self
            .check_record(&a.key, a.scheduled, "ActivityScheduled")
            .await?;
        fence::check_activity_queue(&req, &scheduled)?;
        let (key, id, attempt) = (a.key.clone(), a.id, a.attempt);
        let span = activity_span(&key, &scheduled, id, attempt);
        let mut event =
            commands::activity_result_event(id, attempt, r.result.as_ref(), r.usage.as_ref(), 0);
        let usage = r.usage.as_ref().map(convert::usage_from);
        let mut refused = None;
        let appended = self
            .core
            .update_eager(&key, eager.as_ref(), |s, now| {
                refused = None;
                let act = match current_attempt(s, &a) {
                    Ok(act) => act,
                    Err(e) => return refuse_keeping_usage(s, &a, usage.as_ref(), e, &mut refused),
                };
                match &mut event {
                    Event::ActivityCompleted(e) => e.duration_ms = attempt_duration_ms(act, now),
                    Event::ActivityFailed(e) => e.duration_ms = attempt_duration_ms(act, now),
                    _ => {}
                }
                Ok(Some(vec![event.clone()]))
            })
            .instrument(span)
            .await;
        let appended = refused_after_usage(&key, appended, refused)?;
        // Watchers read the outcome from the history now.
        self.core.live.finish(&key, id);
        let workflow_task = match (&eager, &appended) {
            (Some(e), Some(a)) => self.hand_out_workflow_task(&key, a, &e.worker).await?,
            _ => None,
        };
        Ok(Response::new(pb::CompleteActivityTaskResponse {
            workflow_task,
        }))
    }

    async fn fail_activity_task(
        &self,
        req: Request<pb::FailActivityTaskRequest>,
    ) -> Result<Response<pb::FailActivityTaskResponse>, Status> {
        let r = req.get_ref();
        crate::auth::namespace(&req, &r.namespace)?;
        validate::namespace(&r.namespace)?;
        validate::opt_name("worker_id", &r.worker_id)?;
        if let Some(f) = &r.failure {
            validate::failure("failure", f)?;
        }
        validate::usage("usage", r.usage.as_ref())?;
        let a = self.activity_token(&r.task_token, &r.namespace)?;
        let failure = r
            .failure
            .as_ref()
            .map(convert::failure_from)
            .unwrap_or_default();
        let usage = r.usage.as_ref().map(convert::usage_from);
        let scheduled = self
            .check_record(&a.key, a.scheduled, "ActivityScheduled")
            .await?;
        fence::check_activity_queue(&req, &scheduled)?;
        let (key, id, attempt) = (a.key.clone(), a.id, a.attempt);
        let span = activity_span(&key, &scheduled, id, attempt);
        let mut refused = None;
        let appended = self
            .core
            .update(&key, true, |s, now| {
                refused = None;
                let act = match current_attempt(s, &a) {
                    Ok(act) => act,
                    Err(e) => return refuse_keeping_usage(s, &a, usage.as_ref(), e, &mut refused),
                };
                let duration_ms = attempt_duration_ms(act, now);
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
                    usage: usage.clone(),
                })]))
            })
            .instrument(span)
            .await;
        refused_after_usage(&key, appended, refused)?;
        // Watchers read the outcome from the history now.
        self.core.live.finish(&key, id);
        Ok(Response::new(pb::FailActivityTaskResponse {}))
    }

    async fn heartbeat_activity_task(
        &self,
        req: Request<pb::HeartbeatActivityTaskRequest>,
    ) -> Result<Response<pb::HeartbeatActivityTaskResponse>, Status> {
        let r = req.get_ref();
        crate::auth::namespace(&req, &r.namespace)?;
        validate::namespace(&r.namespace)?;
        // Checked whether or not these details are due to be recorded: a heartbeat that would
        // be refused later is refused now.
        let details = match &r.details {
            Some(d) if d.data.is_empty() => {
                validate::opt_name("details.encoding", &d.encoding)?;
                None
            }
            Some(d) => Some(validate::payload("details", Some(d))?),
            None => None,
        };
        let a = self.activity_token(&r.task_token, &r.namespace)?;
        let scheduled = self
            .check_record(&a.key, a.scheduled, "ActivityScheduled")
            .await?;
        fence::check_activity_queue(&req, &scheduled)?;
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
            // Moves only the heartbeat deadline; start-to-close stays the durable start plus
            // the timeout (the store never lets a heartbeat extend it).
            self.core
                .store
                .set_attempt_deadline(
                    &key,
                    id,
                    attempt,
                    retry::after_ms(now, act.options.heartbeat_ms),
                    TimeoutKind::Heartbeat,
                )
                .await
                .map_err(status)?;
        }
        if let Some(details) = details {
            let due = {
                let mut last = self.core.heartbeat_recorded.lock();
                let t = last.entry((key.clone(), id)).or_insert(HeartbeatRecorded {
                    at_ms: i64::MIN,
                    attempt,
                    forced: 0,
                });
                if t.attempt != attempt {
                    (t.attempt, t.forced) = (attempt, 0);
                }
                let forced = r.record && t.forced < HEARTBEAT_FORCED_RECORDS_MAX;
                if forced {
                    t.forced += 1;
                }
                let due = forced || now.saturating_sub(t.at_ms) >= HEARTBEAT_RECORD_INTERVAL_MS;
                if due {
                    t.at_ms = now;
                }
                due
            };
            if due {
                // Waited for like every record: no seq is ever given to a record a crash can
                // take back (it would go to another event after the restart).
                self.core
                    .update(&key, true, |s, _| {
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

/// The message a WorkflowTaskFailed records: the worker's, cut to
/// [`FAILURE_MESSAGE_CHARS_MAX`], and for a nondeterminism failure of a pinned run the build
/// it needs when the failing worker runs another one.
pub(super) fn failure_message(
    s: &RunState,
    r: &pb::FailWorkflowTaskRequest,
    build: Option<&str>,
) -> String {
    let mut m: String = r.message.chars().take(FAILURE_MESSAGE_CHARS_MAX).collect();
    if convert::fail_cause_from(r.cause) == ev::WorkflowTaskFailCause::Nondeterminism
        && let Some(hint) = versioning::nondeterminism_hint(s, build)
    {
        m.push_str(&hint);
    }
    m
}

/// Most characters of a worker's failure message that are recorded.
pub const FAILURE_MESSAGE_CHARS_MAX: usize = 4096;

/// The decision for a report the fence refused (`e`): the attempt's late usage, when it timed
/// out while it ran and reports usage (recorded, then `e` is still answered), else `e`.
fn refuse_keeping_usage(
    s: &RunState,
    a: &fence::AttemptRef,
    usage: Option<&ev::Usage>,
    e: Status,
    refused: &mut Option<Status>,
) -> crate::core::Decision {
    match fence::late_usage(s, a, usage) {
        Some(late) => {
            *refused = Some(e);
            Ok(Some(vec![late]))
        }
        None => Err(e),
    }
}

/// The answer to a report after [`refuse_keeping_usage`]: the fence's refusal even when the
/// late usage was recorded (the attempt is still superseded), or the update's own outcome.
fn refused_after_usage(
    key: &RunKey,
    appended: Result<Option<steadfast_engine::store::Appended>, Status>,
    refused: Option<Status>,
) -> Result<Option<steadfast_engine::store::Appended>, Status> {
    match (appended, refused) {
        (Ok(_), Some(refused)) => {
            tracing::info!(run = %key, "late usage of a timed-out attempt recorded");
            Err(refused)
        }
        (Err(e), Some(refused)) => {
            // The usage could not be recorded (e.g. the history is past its hard limit): the
            // reporter is still told its attempt is superseded, which is what it acts on.
            tracing::warn!(run = %key, error = %e, "late usage of a timed-out attempt not recorded");
            Err(refused)
        }
        (r, None) => r,
    }
}

/// How long attempt `act` has run at `now`, from its durable start.
fn attempt_duration_ms(act: &ActivityState, now: i64) -> u64 {
    match &act.phase {
        ActivityPhase::Started { since_ms, .. } => now.saturating_sub(*since_ms).max(0) as u64,
        _ => 0,
    }
}

/// The span of a worker's report on one attempt of an activity: the run change it makes logs
/// inside it, so `--log-format json` lines carry the activity (its type and id) and attempt
/// beside the run's fields. Never the payloads.
fn activity_span(key: &RunKey, scheduled: &Event, id: u32, attempt: u32) -> tracing::Span {
    let activity = match scheduled {
        Event::ActivityScheduled(a) => a.activity_type.as_str(),
        _ => "",
    };
    tracing::debug_span!(
        "activity_report",
        run = %key.run_id,
        activity,
        activity_id = id,
        attempt,
    )
}
