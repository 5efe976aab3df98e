//! ClientService: start runs and follow them.

use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use futures::Stream;
use steadfast_engine::event::{self as ev, Event};
use steadfast_engine::ids::RunKey;
use steadfast_engine::state::RunState;
use steadfast_engine::store::{self, RequestKey, RequestKind, RunFilter};
use steadfast_engine::{RunId, RunStatus};
use steadfast_proto::v1 as pb;
use steadfast_proto::v1::client_service_server::ClientService;
use tonic::{Request, Response, Status};

use crate::convert;
use crate::core::{Core, Updated, status};
use crate::validate;

/// Longest AwaitResult wait.
const AWAIT_MS_MAX: u64 = 60_000;
/// ListRuns page size when the request gives none (at most `page_size_max`).
const LIST_PAGE_DEFAULT: u32 = 100;
/// Most forks DescribeRun names (ListRuns with `forked_from` pages through all of them).
const FORKS_SHOWN_MAX: usize = 100;

/// The client service.
pub struct ClientApi {
    core: Arc<Core>,
}

impl ClientApi {
    /// Over `core`.
    pub fn new(core: Arc<Core>) -> ClientApi {
        ClientApi { core }
    }
}

/// Signals a run has received and not yet waited for.
fn pending_signals(s: &RunState) -> u64 {
    s.signals_received
        .iter()
        .map(|(name, n)| n.saturating_sub(s.signal_waits_issued.get(name).copied().unwrap_or(0)))
        .sum()
}

/// Describes a run on the wire, inlining its result.
pub async fn run_info(core: &Core, s: &RunState) -> Result<pb::RunInfo, Status> {
    let result = match &s.result {
        Some(p) => Some(core.inline_payload(&s.key.namespace, p).await?),
        None if s.is_open() => match &s.partial_result {
            Some(p) => Some(core.inline_payload(&s.key.namespace, p).await?),
            None => None,
        },
        None => None,
    };
    // "running" comes from the state: every hand-out is recorded (ActivityStarted).
    Ok(convert::run_info(s, core.now(), result))
}

/// Starts a run (or returns the open run of its workflow id). Shared with signal-with-start.
/// Waits until run `key` closes or `timeout_ms` (at most [`AWAIT_MS_MAX`]) passes, and
/// answers with its state then; `None` when the server began to stop first.
async fn wait_closed(
    core: &Core,
    key: &RunKey,
    timeout_ms: u64,
) -> Result<Option<pb::AwaitResultResponse>, Status> {
    let mut changes = core.notify.watch_run(key);
    let deadline =
        tokio::time::Instant::now() + Duration::from_millis(timeout_ms.min(AWAIT_MS_MAX));
    loop {
        let s = core.state(key).await?;
        if !s.is_open() || tokio::time::Instant::now() >= deadline {
            return Ok(Some(pb::AwaitResultResponse {
                closed: !s.is_open(),
                run: Some(run_info(core, &s).await?),
            }));
        }
        changes.changed_after(s.last_seq, deadline).await;
        if core.notify.is_stopping() {
            return Ok(None);
        }
    }
}

pub async fn start(
    core: &Core,
    r: &pb::StartWorkflowRequest,
    continued_from: Option<RunId>,
) -> Result<(RunId, bool), Status> {
    start_with(core, r, continued_from, None).await
}

/// [`start`], recording the schedule slot the run is for (the schedule loop, trigger and
/// backfill start runs through here, so a slot's run is created exactly like any other).
pub async fn start_with(
    core: &Core,
    r: &pb::StartWorkflowRequest,
    continued_from: Option<RunId>,
    schedule: Option<ev::ScheduleRef>,
) -> Result<(RunId, bool), Status> {
    let ns = validate::namespace(&r.namespace)?;
    validate::name("workflow_type", &r.workflow_type)?;
    validate::opt_name("workflow_id", &r.workflow_id)?;
    validate::opt_name("task_queue", &r.task_queue)?;
    validate::opt_name("identity", &r.identity)?;
    validate::opt_name("request_id", &r.request_id)?;
    let input = validate::payload("input", r.input.as_ref())?;
    if !r.traceparent.is_empty()
        && let Err(why) = crate::traces::spans::parse_traceparent(&r.traceparent)
    {
        return Err(Status::invalid_argument(format!(
            "traceparent {} is not a W3C traceparent: {why}; give 00-<32 hex trace id>-<16 hex span id>-<2 hex flags>, lowercase, or leave it empty",
            validate::quote(&r.traceparent)
        )));
    }
    let tagged = crate::convert_search::start_events(r)?;
    if !r.workflow_id.is_empty()
        && let Some(id) = core
            .store
            .open_run_for_workflow_id(&ns, &r.workflow_id)
            .await
            .map_err(status)?
    {
        return Ok((id, false));
    }
    let run_id = RunId::new_v7();
    let key = RunKey::new(ns.clone(), run_id);
    let task_queue = if r.task_queue.is_empty() {
        "default".to_string()
    } else {
        r.task_queue.clone()
    };
    crate::limits::queue_room(
        core.store.as_ref(),
        &ns,
        &[&task_queue],
        core.caller_limits.task_queues_per_namespace_max,
    )
    .await?;
    let workflow_id = if r.workflow_id.is_empty() {
        run_id.to_string()
    } else {
        r.workflow_id.clone()
    };
    let seed = u64::from_le_bytes(run_id.as_bytes()[8..].try_into().expect("8 bytes"));
    let mut events = vec![Event::RunStarted(ev::RunStarted {
        workflow_type: r.workflow_type.clone(),
        workflow_id,
        task_queue: task_queue.clone(),
        input,
        run_timeout_ms: r.run_timeout_ms,
        budget: r
            .budget
            .as_ref()
            .map(convert::budget_from)
            .unwrap_or_default(),
        continued_from,
        identity: r.identity.clone(),
        random_seed: seed,
        parent: None,
        forked_from: None,
        schedule,
        traceparent: (!r.traceparent.is_empty()).then(|| r.traceparent.clone()),
    })];
    events.extend(tagged);
    events.push(Event::WorkflowTaskScheduled(ev::WorkflowTaskScheduled {
        task_queue,
        attempt: 1,
        not_before_ms: 0,
    }));
    if r.auto_upgrade {
        events.insert(1, crate::versioning::auto_upgrade());
    }
    let request = (!r.request_id.is_empty()).then(|| RequestKey {
        kind: RequestKind::Start,
        id: r.request_id.clone(),
    });
    // A worker already waiting for this run's first task gets it in the same append.
    let matched = sync_match_first_task(core, &ns, &r.workflow_type, &mut events).await?;
    match core.create(&key, events, request).await {
        Ok(a) => {
            if let Some(taken) = matched {
                crate::service::hand_over_first_task(core, taken, key, a).await;
            }
            Ok((run_id, true))
        }
        Err(store::Error::WorkflowIdInUse { run_id, .. }) => Ok((run_id, false)),
        // A retry of a start that created a run: the first answer.
        Err(store::Error::Duplicate { run_id, .. }) => Ok((run_id, true)),
        Err(e) => Err(status(e)),
    }
}

/// Takes a waiting poller that would get the first task of a run created with `events`, and
/// records WorkflowTaskStarted for it after the run's WorkflowTaskScheduled; `None` (and
/// `events` unchanged) when none waits, or the task may not start yet.
async fn sync_match_first_task(
    core: &Core,
    ns: &str,
    workflow_type: &str,
    events: &mut Vec<Event>,
) -> Result<Option<crate::sync_match::Taken>, Status> {
    let Some(i) = events
        .iter()
        .position(|e| matches!(e, Event::WorkflowTaskScheduled(t) if t.not_before_ms == 0))
    else {
        return Ok(None);
    };
    let Event::WorkflowTaskScheduled(t) = &events[i] else {
        return Ok(None);
    };
    let queue = t.task_queue.clone();
    let Some(c) = core.waiting_polls.candidate(ns, &queue, workflow_type) else {
        return Ok(None);
    };
    // The keys its poll would ask the store for, read now (the queue's current build may
    // have changed since it registered). A new run is unpinned: its key is its type.
    let keys = crate::versioning::poll_keys(
        core.store.as_ref(),
        ns,
        &queue,
        &c.types,
        c.build.as_deref(),
    )
    .await?;
    let routed = steadfast_engine::store::routing::workflow_task_key(workflow_type, None);
    if !keys.contains(&routed) {
        return Ok(None);
    }
    let Some(taken) = core.waiting_polls.take(ns, &queue, c.id) else {
        return Ok(None);
    };
    events.insert(
        i + 1,
        core.workflow_task_started(i as u64 + 1, taken.worker()),
    );
    Ok(Some(taken))
}

type WatchStream = Pin<Box<dyn Stream<Item = Result<pb::WatchRunResponse, Status>> + Send>>;

#[tonic::async_trait]
impl ClientService for ClientApi {
    async fn start_workflow(
        &self,
        req: Request<pb::StartWorkflowRequest>,
    ) -> Result<Response<pb::StartWorkflowResponse>, Status> {
        let r = req.get_ref();
        crate::auth::namespace(&req, &r.namespace)?;
        let (run_id, started) = start(&self.core, r, None).await?;
        let mut resp = pb::StartWorkflowResponse {
            run_id: run_id.to_string(),
            started,
            ..Default::default()
        };
        if r.wait_result_ms > 0 {
            let key = RunKey::new(validate::namespace(&r.namespace)?, run_id);
            // The run is started whatever happens next: a stopping server answers with the
            // run id alone (the caller waits with AwaitResult elsewhere), not with an error
            // that would read as a failed start.
            if let Some(done) = wait_closed(&self.core, &key, r.wait_result_ms).await? {
                resp.closed = done.closed;
                resp.run = done.run;
            }
        }
        Ok(Response::new(resp))
    }

    async fn describe_run(
        &self,
        req: Request<pb::DescribeRunRequest>,
    ) -> Result<Response<pb::DescribeRunResponse>, Status> {
        let r = req.get_ref();
        crate::auth::namespace(&req, &r.namespace)?;
        let key = validate::run_key(&r.namespace, &r.run_id)?;
        let s = self.core.state(&key).await?;
        let forks = self
            .core
            .store
            .list_runs(
                &key.namespace,
                &RunFilter {
                    forked_from: Some(key.run_id),
                    ..RunFilter::default()
                },
                None,
                FORKS_SHOWN_MAX,
                self.core.now(),
            )
            .await
            .map_err(status)?;
        let mut run = run_info(&self.core, &s).await?;
        if r.approval_previews {
            crate::service::approval::fill_previews(&self.core, &s, &mut run).await?;
        }
        Ok(Response::new(pb::DescribeRunResponse {
            run: Some(run),
            fork_run_ids: forks.iter().map(|f| f.key.run_id.to_string()).collect(),
        }))
    }

    async fn approve_activity(
        &self,
        req: Request<pb::ApproveActivityRequest>,
    ) -> Result<Response<pb::ApproveActivityResponse>, Status> {
        Ok(Response::new(
            crate::service::approval::approve(&self.core, &req).await?,
        ))
    }

    async fn deny_activity(
        &self,
        req: Request<pb::DenyActivityRequest>,
    ) -> Result<Response<pb::DenyActivityResponse>, Status> {
        Ok(Response::new(
            crate::service::approval::deny(&self.core, &req).await?,
        ))
    }

    async fn list_runs(
        &self,
        req: Request<pb::ListRunsRequest>,
    ) -> Result<Response<pb::ListRunsResponse>, Status> {
        let r = req.get_ref();
        crate::auth::namespace(&req, &r.namespace)?;
        let ns = validate::namespace(&r.namespace)?;
        validate::opt_name("workflow_type", &r.workflow_type)?;
        let waiting = match r.waiting.as_str() {
            "" => None,
            w @ ("signal" | "activity" | "timer" | "budget" | "reconciliation" | "child"
            | "workflow_task" | "build" | "idle" | "approval") => Some(w.to_string()),
            w => {
                return Err(Status::invalid_argument(format!(
                    "waiting {} is unknown: use signal, approval, activity, timer, budget, reconciliation, child, workflow_task, build or idle",
                    validate::quote(w)
                )));
            }
        };
        validate::opt_name("workflow_id", &r.workflow_id)?;
        validate::opt_name("schedule", &r.schedule)?;
        validate::enumeration::<pb::RunStatus>(
            "status",
            r.status,
            "RUN_STATUS_UNSPECIFIED (0) to RUN_STATUS_CONTINUED_AS_NEW (7)",
        )?;
        if !r.parent_run_id.is_empty() {
            validate::run_id(&r.parent_run_id).map_err(|_| {
                Status::invalid_argument(format!(
                    "parent_run_id {} is not a UUID",
                    validate::quote(&r.parent_run_id)
                ))
            })?;
        }
        validate::opt_name("build", &r.build)?;
        validate::opt_name("failed_activity", &r.failed_activity)?;
        validate::query_text(
            "text",
            &r.text,
            steadfast_engine::search::SEARCH_TEXT_BYTES_MAX,
        )?;
        let time = |ms: i64| (ms != 0).then_some(ms);
        let (after, before) = (time(r.started_after_ms), time(r.started_before_ms));
        if let (Some(a), Some(b)) = (after, before)
            && a >= b
        {
            return Err(Status::invalid_argument(format!(
                "started_after_ms {a} is not before started_before_ms {b}: the range is empty"
            )));
        }
        let filter = RunFilter {
            status: convert::status_from(r.status),
            workflow_type: (!r.workflow_type.is_empty()).then(|| r.workflow_type.clone()),
            waiting,
            schedule: (!r.schedule.is_empty()).then(|| r.schedule.clone()),
            workflow_id: (!r.workflow_id.is_empty()).then(|| r.workflow_id.clone()),
            started_after_ms: after,
            started_before_ms: before,
            build: (!r.build.is_empty()).then(|| r.build.clone()),
            attributes: crate::convert_search::attributes_from(&r.search_attributes)
                .map_err(Status::invalid_argument)?,
            failed_activity: (!r.failed_activity.is_empty()).then(|| r.failed_activity.clone()),
            text: (!r.text.is_empty()).then(|| r.text.clone()),
            forked_from: if r.forked_from.is_empty() {
                None
            } else {
                Some(validate::run_id(&r.forked_from).map_err(|_| {
                    Status::invalid_argument(format!(
                        "forked_from {} is not a UUID",
                        validate::quote(&r.forked_from)
                    ))
                })?)
            },
        };
        if !r.parent_run_id.is_empty() {
            let runs =
                crate::family::children_of(&self.core, &ns, &r.parent_run_id, &filter).await?;
            let mut out = Vec::with_capacity(runs.len());
            for s in &runs {
                out.push(run_info(&self.core, s).await?);
            }
            return Ok(Response::new(pb::ListRunsResponse {
                runs: out,
                next_page_token: String::new(),
            }));
        }
        let after = if r.page_token.is_empty() {
            None
        } else {
            Some(validate::run_id(&r.page_token).map_err(|_| {
                Status::invalid_argument("page_token is not one this server gave out")
            })?)
        };
        let page_max = self.core.caller_limits.page_size_max as u32;
        let size = if r.page_size == 0 {
            LIST_PAGE_DEFAULT.min(page_max)
        } else {
            r.page_size.min(page_max)
        } as usize;
        let (runs, next) = if filter.text.is_some() {
            // No index: each request reads a bounded number of runs (see text_search).
            crate::service::text_search::page(
                self.core.store.as_ref(),
                &ns,
                &filter,
                after,
                size,
                self.core.now(),
                Default::default(),
            )
            .await
            .map_err(status)?
        } else {
            let runs = self
                .core
                .store
                .list_runs(&ns, &filter, after, size, self.core.now())
                .await
                .map_err(status)?;
            let next = (runs.len() == size)
                .then(|| runs.last().map(|s| s.key.run_id))
                .flatten();
            (runs, next)
        };
        let next_page_token = next.map(|id| id.to_string()).unwrap_or_default();
        let mut out = Vec::with_capacity(runs.len());
        for s in &runs {
            out.push(run_info(&self.core, s).await?);
        }
        Ok(Response::new(pb::ListRunsResponse {
            runs: out,
            next_page_token,
        }))
    }

    async fn get_history(
        &self,
        req: Request<pb::GetHistoryRequest>,
    ) -> Result<Response<pb::GetHistoryResponse>, Status> {
        let r = req.get_ref();
        crate::auth::namespace(&req, &r.namespace)?;
        let key = validate::run_key(&r.namespace, &r.run_id)?;
        let s = self.core.state(&key).await?;
        let from = r.from_seq.max(1);
        let page_max = self.core.caller_limits.page_size_max as u32;
        let size = if r.page_size == 0 {
            page_max
        } else {
            r.page_size.min(page_max)
        } as u64;
        let to = s.last_seq.min(from.saturating_add(size - 1));
        let records = self.core.history(&key, from, to).await?;
        let next_seq = if to < s.last_seq { to + 1 } else { 0 };
        Ok(Response::new(pb::GetHistoryResponse {
            events: records.iter().map(convert::event).collect(),
            next_seq,
        }))
    }

    async fn await_result(
        &self,
        req: Request<pb::AwaitResultRequest>,
    ) -> Result<Response<pb::AwaitResultResponse>, Status> {
        let r = req.get_ref();
        crate::auth::namespace(&req, &r.namespace)?;
        let key = validate::run_key(&r.namespace, &r.run_id)?;
        let done = wait_closed(&self.core, &key, r.timeout_ms).await?;
        Ok(Response::new(done.ok_or_else(stopping)?))
    }

    async fn cancel_run(
        &self,
        req: Request<pb::CancelRunRequest>,
    ) -> Result<Response<pb::CancelRunResponse>, Status> {
        let r = req.get_ref();
        crate::auth::namespace(&req, &r.namespace)?;
        let key = validate::run_key(&r.namespace, &r.run_id)?;
        validate::text("reason", &r.reason)?;
        validate::opt_name("identity", &r.identity)?;
        request_cancel(&self.core, &key, &r.reason, &r.identity).await?;
        Ok(Response::new(pb::CancelRunResponse {}))
    }

    async fn terminate_run(
        &self,
        req: Request<pb::TerminateRunRequest>,
    ) -> Result<Response<pb::TerminateRunResponse>, Status> {
        let r = req.get_ref();
        crate::auth::namespace(&req, &r.namespace)?;
        let key = validate::run_key(&r.namespace, &r.run_id)?;
        validate::text("reason", &r.reason)?;
        validate::opt_name("identity", &r.identity)?;
        self.core
            .update(&key, true, |s, _| {
                closed_check(s, "terminate")?;
                Ok(Some(vec![Event::RunTerminated(ev::RunTerminated {
                    reason: r.reason.clone(),
                    identity: r.identity.clone(),
                })]))
            })
            .await?;
        Ok(Response::new(pb::TerminateRunResponse {}))
    }

    async fn signal_run(
        &self,
        req: Request<pb::SignalRunRequest>,
    ) -> Result<Response<pb::SignalRunResponse>, Status> {
        let r = req.get_ref();
        crate::auth::namespace(&req, &r.namespace)?;
        let ns = validate::namespace(&r.namespace)?;
        validate::name("signal_name", &r.signal_name)?;
        validate::opt_name("request_id", &r.request_id)?;
        validate::opt_name("workflow_id", &r.workflow_id)?;
        validate::opt_name("identity", &r.identity)?;
        let input = validate::payload("input", r.input.as_ref())?;
        if let Some(start) = &r.signal_with_start {
            validate::start_request(start).map_err(|e| {
                Status::new(e.code(), format!("signal_with_start: {}", e.message()))
            })?;
        }
        let (run_id, started) = if !r.run_id.is_empty() {
            (validate::run_id(&r.run_id)?, false)
        } else if !r.workflow_id.is_empty() {
            match self
                .core
                .store
                .open_run_for_workflow_id(&ns, &r.workflow_id)
                .await
                .map_err(status)?
            {
                Some(id) => (id, false),
                None => match &r.signal_with_start {
                    Some(start_req) => {
                        let mut sr = start_req.clone();
                        sr.namespace = ns.clone();
                        sr.workflow_id = r.workflow_id.clone();
                        start(&self.core, &sr, None).await?
                    }
                    None => {
                        return Err(Status::not_found(format!(
                            "workflow id {} has no open run; pass signal_with_start to start one",
                            validate::quote(&r.workflow_id)
                        )));
                    }
                },
            }
        } else {
            return Err(Status::invalid_argument("give run_id or workflow_id"));
        };
        let key = RunKey::new(ns, run_id);
        let pending_max = self.core.caller_limits.pending_signals_per_run_max;
        let decide = |s: &RunState, _| {
            closed_check(s, "signal")?;
            let pending = pending_signals(s);
            if pending >= pending_max {
                return Err(crate::limits::exceeded(
                    format_args!("the run has {pending} signals it has not waited for yet"),
                    "pending_signals_per_run_max",
                    pending_max,
                ));
            }
            Ok(Some(vec![Event::SignalReceived(ev::SignalReceived {
                name: r.signal_name.clone(),
                input: input.clone(),
                identity: r.identity.clone(),
                request_id: r.request_id.clone(),
            })]))
        };
        if r.request_id.is_empty() {
            self.core.update(&key, true, decide).await?;
        } else {
            let request = RequestKey {
                kind: RequestKind::Signal,
                id: r.request_id.clone(),
            };
            match self.core.update_once(&key, request, decide).await {
                // A retry of a delivered signal: delivered once, answered like the first.
                Ok(_) | Err(Updated::Duplicate { .. }) => {}
                Err(Updated::Refused(s)) => return Err(s),
            }
        }
        Ok(Response::new(pb::SignalRunResponse {
            run_id: run_id.to_string(),
            started,
        }))
    }

    type WatchRunStream = WatchStream;

    async fn watch_run(
        &self,
        req: Request<pb::WatchRunRequest>,
    ) -> Result<Response<Self::WatchRunStream>, Status> {
        crate::auth::namespace(&req, &req.get_ref().namespace)?;
        let r = req.into_inner();
        let key = validate::run_key(&r.namespace, &r.run_id)?;
        self.core.state(&key).await?;
        let (tx, rx) = tokio::sync::mpsc::channel(256);
        tokio::spawn(super::watch::run(
            self.core.clone(),
            key,
            r.after_seq,
            r.include_deltas,
            tx,
        ));
        Ok(Response::new(Box::pin(
            tokio_stream::wrappers::ReceiverStream::new(rx),
        )))
    }

    async fn update_run(
        &self,
        req: Request<pb::UpdateRunRequest>,
    ) -> Result<Response<pb::UpdateRunResponse>, Status> {
        crate::auth::namespace(&req, &req.get_ref().namespace)?;
        let resp = super::update::update_run(&self.core, req.get_ref()).await?;
        Ok(Response::new(resp))
    }

    async fn query_run(
        &self,
        req: Request<pb::QueryRunRequest>,
    ) -> Result<Response<pb::QueryRunResponse>, Status> {
        crate::auth::namespace(&req, &req.get_ref().namespace)?;
        let resp = super::query::query_run(&self.core, req.get_ref()).await?;
        Ok(Response::new(resp))
    }

    async fn get_blob(
        &self,
        req: Request<pb::GetBlobRequest>,
    ) -> Result<Response<pb::GetBlobResponse>, Status> {
        let r = req.get_ref();
        crate::auth::namespace(&req, &r.namespace)?;
        let ns = validate::namespace(&r.namespace)?;
        let hash: [u8; 32] = r
            .hash
            .as_slice()
            .try_into()
            .map_err(|_| Status::invalid_argument("hash must be 32 bytes (blake3)"))?;
        let data = self
            .core
            .store
            .get_blob(&ns, &hash)
            .await
            .map_err(status)?
            // The same answer whether another namespace has this blob: blobs are scoped.
            .ok_or_else(|| {
                Status::not_found(format!("no blob {} in this namespace", hex::encode(hash)))
            })?;
        Ok(Response::new(pb::GetBlobResponse {
            payload: Some(pb::Payload {
                encoding: String::new(),
                data,
            }),
        }))
    }
}

/// Asks a run to cancel (CancelRun, and a schedule's cancel-previous): records
/// CancelRequested once, and cancels the activities that are not running yet so the workflow
/// can stop without waiting for them. A run already asked is left as it is.
pub async fn request_cancel(
    core: &Core,
    key: &RunKey,
    reason: &str,
    identity: &str,
) -> Result<(), Status> {
    core.update(key, true, |s, _| {
        closed_check(s, "cancel")?;
        if s.cancel_requested {
            return Ok(None);
        }
        let mut events = vec![Event::CancelRequested(ev::CancelRequested {
            reason: reason.to_string(),
            identity: identity.to_string(),
        })];
        // Running attempts hear of it through their heartbeat; the others (queued, in
        // retry backoff, parked on the budget) are cancelled now.
        events.extend(
            s.activities
                .keys()
                .filter(|id| Core::is_undispatched(s, **id))
                .map(|id| Event::ActivityCancelled(ev::ActivityCancelled { command_seq: *id })),
        );
        Ok(Some(events))
    })
    .await?;
    Ok(())
}

/// Refuses an operation on a closed run.
pub fn closed_check(s: &RunState, what: &str) -> Result<(), Status> {
    if s.status != RunStatus::Running {
        return Err(Status::failed_precondition(format!(
            "cannot {what} run {}: it is already {}",
            s.key.run_id,
            s.status.as_str()
        )));
    }
    Ok(())
}

/// What a wait that the server's shutdown cut short answers: the caller calls again (the SDK
/// retries UNAVAILABLE), reaching this server once it is back, or another node.
pub(crate) fn stopping() -> Status {
    Status::unavailable("the server is shutting down; call again")
}
