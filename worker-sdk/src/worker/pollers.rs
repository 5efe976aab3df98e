//! The poll loops and what happens to each task they bring.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use steadfast_proto::v1 as pb;
use steadfast_proto::v1::worker_service_client::WorkerServiceClient;
use tokio::sync::{Semaphore, watch};
use tracing::Instrument;

use super::workflow_thread::{Outcome, WorkflowThreads};

#[path = "check_mode.rs"]
mod check_mode;
#[path = "queries.rs"]
mod queries;
use super::{Error, WorkerOptions};
use crate::activity::Activities;
use crate::activity::runtime::{EagerWorkflow, RuntimeConfig, run_attempt};
use crate::backoff::{Backoff, is_transient};
use crate::client::{Client, ClientConfig, Transport};
use crate::workflow::{self, Registry, command_kind};

/// Open polls per kind at most (each also needs a free slot).
const POLLERS_MAX: usize = 8;
/// Slack over the poll timeout before a poll that got no answer counts as lost.
const POLL_SLACK: Duration = Duration::from_secs(10);
/// Most activity slots offered with one workflow task completion (eager dispatch).
const EAGER_SLOTS_MAX: usize = 8;

struct Shared {
    /// Set while polls fail, so that an outage is logged once, not once per poller.
    outage: AtomicBool,
    options: WorkerOptions,
    worker: WorkerServiceClient<Transport>,
    client: Client,
    threads: WorkflowThreads,
    /// The workflows, for the fresh instances that answer queries.
    registry: Arc<Registry>,
    activities: Activities,
    runtime: RuntimeConfig,
    workflow_types: Vec<String>,
    activity_types: Vec<String>,
    /// The activities this worker runs with their effects, sent with every activity poll
    /// and eager offer: the server believes the effect declared by the worker that runs an
    /// attempt (an undeclared one is a `write`).
    declarations: Vec<pb::ActivityDeclaration>,
    /// Slots of running activity attempts, shared by the pollers and eager dispatch.
    act_slots: Arc<Semaphore>,
}

pub(super) async fn run(
    config: ClientConfig,
    options: WorkerOptions,
    workflows: Registry,
    activities: Activities,
    shutdown: impl Future<Output = ()>,
) -> Result<(), Error> {
    let channel = config.lazy_transport()?;
    let workflow_types = workflows.workflow_types();
    let activity_types = activities.names();
    let declarations = activities.declarations();
    let registry = Arc::new(workflows);
    let threads = WorkflowThreads::start(
        Arc::clone(&registry),
        options.workflow_threads,
        options.cache_size,
        options.activation_timeout,
    )?;
    let client = Client::with_channel(config.clone(), channel.clone());
    let wf_slots = Arc::new(Semaphore::new(options.max_concurrent_workflow_tasks.max(1)));
    // Workflow tasks handed back with activity completions (eager workflow tasks): run by
    // the activity's own task once its outcome is recorded ([`run_activity`]).
    let eager_workflow =
        (!workflow_types.is_empty() && !options.check_mode).then(|| EagerWorkflow {
            task_queue: options.task_queue.clone(),
            workflow_types: workflow_types.clone(),
            build_id: options.build_id.clone(),
            slots: Arc::clone(&wf_slots),
        });
    let shared = Arc::new(Shared {
        outage: AtomicBool::new(false),
        worker: WorkerServiceClient::new(channel)
            .max_decoding_message_size(config.max_message_bytes)
            .max_encoding_message_size(config.max_message_bytes),
        client: client.clone(),
        threads,
        registry,
        activities,
        runtime: RuntimeConfig {
            namespace: options.namespace.clone(),
            worker_id: options.worker_id.clone(),
            heartbeat_interval: options.heartbeat_interval,
            cancel_grace: options.cancel_grace,
            report_timeout: options.report_timeout,
            client: Some(client),
            eager_workflow,
        },
        workflow_types,
        activity_types,
        declarations,
        act_slots: Arc::new(Semaphore::new(options.max_concurrent_activities.max(1))),
        options,
    });
    tracing::info!(
        worker = %shared.options.worker_id,
        queue = %shared.options.task_queue,
        workflows = shared.workflow_types.len(),
        activities = shared.activity_types.len(),
        "worker starting"
    );

    if shared.options.check_mode {
        return run_check_mode(shared, shutdown).await;
    }
    // Open before any task is taken, and kept until every task in flight is done: while it is
    // open the server knows this worker lives.
    let session = tokio::spawn(keep_session(Arc::clone(&shared)));
    let (stop_tx, stop_rx) = watch::channel(false);
    let act_slots = Arc::clone(&shared.act_slots);
    let mut loops = tokio::task::JoinSet::new();
    if !shared.workflow_types.is_empty() {
        for _ in 0..shared
            .options
            .max_concurrent_workflow_tasks
            .clamp(1, POLLERS_MAX)
        {
            loops.spawn(poll_workflow_tasks(
                Arc::clone(&shared),
                Arc::clone(&wf_slots),
                stop_rx.clone(),
            ));
        }
        loops.spawn(queries::poll_query_tasks(
            Arc::clone(&shared),
            stop_rx.clone(),
        ));
    }
    if !shared.activity_types.is_empty() {
        for _ in 0..shared
            .options
            .max_concurrent_activities
            .clamp(1, POLLERS_MAX)
        {
            loops.spawn(poll_activity_tasks(
                Arc::clone(&shared),
                Arc::clone(&act_slots),
                stop_rx.clone(),
            ));
        }
    }

    shutdown.await;
    tracing::info!(worker = %shared.options.worker_id, "worker stopping: no new polls, finishing tasks in flight");
    let _ = stop_tx.send(true);
    while loops.join_next().await.is_some() {}
    // Every task in flight holds a slot: having all of them back means all are done.
    let drained = async {
        let _ = wf_slots
            .acquire_many(shared.options.max_concurrent_workflow_tasks.max(1) as u32)
            .await;
        let _ = act_slots
            .acquire_many(shared.options.max_concurrent_activities.max(1) as u32)
            .await;
    };
    if tokio::time::timeout(shared.options.shutdown_timeout, drained)
        .await
        .is_err()
    {
        tracing::warn!(
            "worker stopped with tasks still in flight; the server will offer them again"
        );
    }
    session.abort();
    tracing::info!(worker = %shared.options.worker_id, "worker stopped");
    Ok(())
}

/// Check mode: only the check poller, no session (the worker holds no task for the server to
/// take back when it dies).
async fn run_check_mode(
    shared: Arc<Shared>,
    shutdown: impl Future<Output = ()>,
) -> Result<(), Error> {
    if shared.workflow_types.is_empty() {
        return Err(Error::NothingRegistered);
    }
    let (stop_tx, stop_rx) = watch::channel(false);
    let poller = tokio::spawn(check_mode::poll_check_tasks(Arc::clone(&shared), stop_rx));
    tracing::info!(worker = %shared.options.worker_id, queue = %shared.options.task_queue, "worker in check mode: it takes no workflow or activity tasks");
    shutdown.await;
    let _ = stop_tx.send(true);
    let _ = poller.await;
    tracing::info!(worker = %shared.options.worker_id, "worker stopped");
    Ok(())
}

/// Keeps this worker's session open (`WorkerSession`), opening it again after it breaks (a
/// server restart, a network blip). The server learns from it that the worker lives: when the
/// process dies its connection closes, and the server gives back the workflow tasks and
/// activity attempts it held within about a second instead of waiting for their timeouts.
async fn keep_session(shared: Arc<Shared>) {
    let mut backoff = Backoff::default();
    loop {
        let req = pb::WorkerSessionRequest {
            namespace: shared.options.namespace.clone(),
            worker_id: shared.options.worker_id.clone(),
            task_queues: vec![shared.options.task_queue.clone()],
        };
        match shared.worker.clone().worker_session(req).await {
            Ok(resp) => {
                let mut stream = resp.into_inner();
                while let Ok(Some(_)) = stream.message().await {
                    backoff = Backoff::default();
                }
                tracing::debug!(worker = %shared.options.worker_id, "worker session ended; opening it again");
            }
            Err(s) if s.code() == tonic::Code::Unimplemented => {
                tracing::info!(
                    "the server has no worker sessions; a dead worker's tasks wait for their timeouts"
                );
                return;
            }
            Err(s) => {
                tracing::debug!(code = ?s.code(), "worker session not opened; trying again");
            }
        }
        tokio::time::sleep(backoff.next_delay()).await;
    }
}

async fn stopped(stop: &mut watch::Receiver<bool>) {
    // A dropped sender also means stop.
    let _ = stop.wait_for(|s| *s).await;
}

/// A poll succeeded: the server is reachable (again).
fn poll_succeeded(shared: &Shared, backoff: &mut Backoff) {
    backoff.reset();
    if shared.outage.swap(false, Ordering::Relaxed) {
        tracing::info!("server reachable again; polling");
    }
}

/// Waits out a backoff after a failed poll; false when stopped meanwhile.
async fn back_off(
    shared: &Shared,
    backoff: &mut Backoff,
    status: &tonic::Status,
    stop: &mut watch::Receiver<bool>,
) -> bool {
    let delay = backoff.next_delay();
    if !shared.outage.swap(true, Ordering::Relaxed) {
        tracing::warn!(
            code = ?status.code(),
            message = status.message(),
            "polls fail; retrying with backoff until the server is back"
        );
    }
    tokio::select! {
        _ = tokio::time::sleep(delay) => true,
        _ = stopped(stop) => false,
    }
}

/// The loop every poller runs: take a slot (bounded concurrency), long-poll, hand the task to
/// `handle` on its own task (which frees the slot when done), back off while the server is
/// unreachable. `poll` returns `None` for an empty poll (the long poll timed out).
async fn poll_loop<T, P, PFut, H, HFut>(
    shared: Arc<Shared>,
    slots: Arc<Semaphore>,
    mut stop: watch::Receiver<bool>,
    poll: P,
    handle: H,
) where
    P: Fn(&Shared) -> PFut,
    PFut: Future<Output = Result<Option<T>, tonic::Status>>,
    H: Fn(Arc<Shared>, T) -> HFut,
    HFut: Future<Output = ()> + Send + 'static,
{
    let mut backoff = Backoff::default();
    loop {
        let slot = tokio::select! {
            s = Arc::clone(&slots).acquire_owned() => match s { Ok(s) => s, Err(_) => return },
            _ = stopped(&mut stop) => return,
        };
        let polled = tokio::select! {
            r = poll(&shared) => r,
            _ = stopped(&mut stop) => return,
        };
        match polled {
            Ok(None) => poll_succeeded(&shared, &mut backoff),
            Ok(Some(task)) => {
                poll_succeeded(&shared, &mut backoff);
                let work = handle(Arc::clone(&shared), task);
                tokio::spawn(async move {
                    work.await;
                    drop(slot);
                });
            }
            Err(status) => {
                drop(slot);
                if !back_off(&shared, &mut backoff, &status, &mut stop).await {
                    return;
                }
            }
        }
    }
}

async fn poll_workflow_tasks(
    shared: Arc<Shared>,
    slots: Arc<Semaphore>,
    stop: watch::Receiver<bool>,
) {
    let poll = |shared: &Shared| {
        let mut req = tonic::Request::new(pb::PollWorkflowTaskRequest {
            namespace: shared.options.namespace.clone(),
            task_queue: shared.options.task_queue.clone(),
            worker_id: shared.options.worker_id.clone(),
            workflow_types: shared.workflow_types.clone(),
            poll_timeout_ms: shared.options.poll_timeout.as_millis() as u64,
            build_id: shared.options.build_id.clone(),
        });
        req.set_timeout(shared.options.poll_timeout + POLL_SLACK);
        let mut service = shared.worker.clone();
        async move {
            let task = service.poll_workflow_task(req).await?.into_inner();
            Ok((!task.task_token.is_empty()).then_some(task))
        }
    };
    let handle =
        |shared: Arc<Shared>, task| async move { handle_workflow_task(&shared, task).await };
    poll_loop(shared, slots, stop, poll, handle).await;
}

async fn handle_workflow_task(shared: &Arc<Shared>, task: pb::PollWorkflowTaskResponse) {
    let span = tracing::debug_span!(
        "workflow_task",
        run = %task.run_id,
        r#type = %task.workflow_type,
        first_seq = task.first_seq,
        events = task.events.len(),
    );
    advance_workflow(shared, task).instrument(span).await;
}

async fn advance_workflow(shared: &Arc<Shared>, task: pb::PollWorkflowTaskResponse) {
    let run_id = task.run_id.clone();
    let token = task.task_token.clone();
    let first_seq = task.first_seq;
    let mut outcome = shared.threads.activate(task, None).await;
    if let Outcome::NeedHistory(task) = outcome {
        let before = first_seq.saturating_sub(1);
        match shared.client.history_range(&run_id, 1, before).await {
            Ok(earlier) if earlier.len() as u64 == before => {
                tracing::debug!(events = before, "run not cached; replaying its history");
                outcome = shared.threads.activate(task, Some(earlier)).await;
            }
            Ok(earlier) => {
                outcome = Outcome::Failed(workflow::Error::BadHistory(format!(
                    "GetHistory returned {} events before seq {first_seq}, expected {before}",
                    earlier.len()
                )));
            }
            Err(e) => {
                // The task times out on the server and is offered again.
                tracing::warn!(error = %e, "cannot fetch the history to replay; task left to time out");
                return;
            }
        }
    }
    match outcome {
        Outcome::Completed(commands) => {
            let kinds: Vec<&str> = commands.iter().map(command_kind).collect();
            tracing::debug!(commands = ?kinds, "workflow task completed");
            // Eager dispatch: offer free activity slots; the server hands back the attempts
            // these commands schedule, saving each one an activity poll.
            // As many slots as the commands schedule activities this worker runs: a slot
            // offered and not used is held away from the pollers for the call's round trip.
            let wanted = commands
                .iter()
                .filter(|c| match &c.command {
                    Some(pb::command::Command::ScheduleActivity(a)) => {
                        shared.activity_types.contains(&a.activity_type)
                    }
                    _ => false,
                })
                .count()
                .min(EAGER_SLOTS_MAX);
            let mut permits = Vec::new();
            if !shared.activity_types.is_empty() {
                while permits.len() < wanted {
                    match Arc::clone(&shared.act_slots).try_acquire_owned() {
                        Ok(p) => permits.push(p),
                        Err(_) => break,
                    }
                }
            }
            let req = pb::CompleteWorkflowTaskRequest {
                namespace: shared.options.namespace.clone(),
                task_token: token.clone(),
                commands,
                worker_id: shared.options.worker_id.clone(),
                build_id: shared.options.build_id.clone(),
                eager_activity_types: if permits.is_empty() {
                    Vec::new()
                } else {
                    shared.activity_types.clone()
                },
                eager_activity_slots: permits.len() as u32,
                eager_activities: if permits.is_empty() {
                    Vec::new()
                } else {
                    shared.declarations.clone()
                },
            };
            let sent = with_retries(shared, |mut w| {
                let req = req.clone();
                async move { w.complete_workflow_task(req).await.map(|r| r.into_inner()) }
            })
            .await;
            if let Ok(resp) = &sent {
                for task in resp.activity_tasks.iter().cloned() {
                    let Some(permit) = permits.pop() else { break };
                    let shared = Arc::clone(shared);
                    tokio::spawn(async move {
                        run_activity(shared, task).await;
                        drop(permit);
                    });
                }
            }
            drop(permits);
            match sent {
                Ok(_) => {}
                // Gone already (the run closed, the task timed out): nothing to report.
                Err(s) if s.code() == tonic::Code::NotFound || is_transient(&s) => {
                    tracing::warn!(code = ?s.code(), message = s.message(), "workflow task completion not recorded; the task will be offered again");
                    shared.threads.evict(&run_id);
                }
                Err(s) => {
                    // A refusal that a retry would only repeat: report it, typed, so that the
                    // run shows it waits on its own code, instead of letting the task time out
                    // and loop. The cached instance is ahead of the history: drop it.
                    shared.threads.evict(&run_id);
                    report_failure(shared, token, &workflow::Error::completion_refused(&s)).await;
                }
            }
        }
        Outcome::Failed(e) => {
            shared.threads.evict(&run_id);
            report_failure(shared, token, &e).await;
        }
        Outcome::NeedHistory(_) => {
            tracing::warn!("the workflow thread asked for history twice; task left to time out");
            shared.threads.evict(&run_id);
        }
    }
}

/// Reports a workflow task that produced no completion (or whose completion was refused)
/// with FailWorkflowTask: the server holds the run and offers the task again later.
async fn report_failure(shared: &Shared, token: String, e: &workflow::Error) {
    tracing::warn!(error = %e, "workflow task failed; the run is held until its code succeeds");
    let req = pb::FailWorkflowTaskRequest {
        namespace: shared.options.namespace.clone(),
        task_token: token,
        cause: e.fail_cause() as i32,
        message: e.to_string(),
        worker_id: shared.options.worker_id.clone(),
        build_id: shared.options.build_id.clone(),
    };
    let sent = with_retries(shared, |mut w| {
        let req = req.clone();
        async move { w.fail_workflow_task(req).await.map(|_| ()) }
    })
    .await;
    if let Err(s) = sent {
        tracing::warn!(code = ?s.code(), message = s.message(), "workflow task failure not recorded");
    }
}

/// Calls the server, retrying transient errors (a restart) for up to the report timeout.
async fn with_retries<T, F, Fut>(shared: &Shared, call: F) -> Result<T, tonic::Status>
where
    F: Fn(WorkerServiceClient<Transport>) -> Fut,
    Fut: Future<Output = Result<T, tonic::Status>>,
{
    let give_up_at = tokio::time::Instant::now() + shared.options.report_timeout;
    let mut backoff = Backoff::default();
    loop {
        match call(shared.worker.clone()).await {
            Err(s) if is_transient(&s) && tokio::time::Instant::now() < give_up_at => {
                tokio::time::sleep(backoff.next_delay()).await;
            }
            other => return other,
        }
    }
}

async fn poll_activity_tasks(
    shared: Arc<Shared>,
    slots: Arc<Semaphore>,
    stop: watch::Receiver<bool>,
) {
    let poll = |shared: &Shared| {
        let mut req = tonic::Request::new(pb::PollActivityTaskRequest {
            namespace: shared.options.namespace.clone(),
            task_queue: shared.options.task_queue.clone(),
            worker_id: shared.options.worker_id.clone(),
            activity_types: shared.activity_types.clone(),
            poll_timeout_ms: shared.options.poll_timeout.as_millis() as u64,
            activities: shared.declarations.clone(),
        });
        req.set_timeout(shared.options.poll_timeout + POLL_SLACK);
        let mut service = shared.worker.clone();
        async move {
            let task = service.poll_activity_task(req).await?.into_inner();
            Ok((!task.task_token.is_empty()).then_some(task))
        }
    };
    let handle = |shared: Arc<Shared>, task| run_activity(shared, task);
    poll_loop(shared, slots, stop, poll, handle).await;
}

/// Runs an activity attempt to its reported end, then the workflow task its completion may
/// have brought back (eager workflow task), on this same task: a hand-off to another task
/// would cost a wake-up on the step's critical path. A plain fn returning a boxed `Send`
/// future, because a workflow task may hand out activities that bring back workflow tasks:
/// the concrete type ends that recursion.
fn run_activity(
    shared: Arc<Shared>,
    task: pb::PollActivityTaskResponse,
) -> futures::future::BoxFuture<'static, ()> {
    Box::pin(async move {
        let eager = run_attempt(&shared.worker, &shared.runtime, &shared.activities, task).await;
        if let Some((workflow_task, slot)) = eager {
            handle_workflow_task(&shared, workflow_task).await;
            drop(slot);
        }
    })
}
