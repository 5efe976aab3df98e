//! Runs one activity attempt: calls the function, heartbeats while it runs, passes a
//! cancellation on, and reports the outcome (retrying while the server is unreachable).

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use crate::client::Transport;
use steadfast_proto::v1 as pb;
use steadfast_proto::v1::worker_service_client::WorkerServiceClient;
use tokio::time::Instant;
use tracing::Instrument;

use super::{Activities, ActivityContext, ActivityError, ActivityInfo};
use crate::backoff::{Backoff, is_transient};
use crate::client::Client;

/// How the runtime behaves; part of [`crate::WorkerOptions`].
#[derive(Debug, Clone)]
pub(crate) struct RuntimeConfig {
    pub(crate) namespace: String,
    pub(crate) worker_id: String,
    /// Every running attempt heartbeats at least this often.
    pub(crate) heartbeat_interval: Duration,
    /// How long a cancelled activity may take to stop before it is reported cancelled.
    pub(crate) cancel_grace: Duration,
    /// How long to keep trying to report an outcome while the server is unreachable.
    pub(crate) report_timeout: Duration,
    /// Handed to every attempt's context ([`ActivityContext::client`]).
    pub(crate) client: Option<Client>,
    /// Set when this worker also runs workflows: a completion asks for its run's next
    /// workflow task (eager workflow task) while a workflow slot is free.
    pub(crate) eager_workflow: Option<EagerWorkflow>,
}

/// What a completion needs to ask for an eager workflow task, and where the task goes.
#[derive(Debug, Clone)]
pub(crate) struct EagerWorkflow {
    pub(crate) task_queue: String,
    pub(crate) workflow_types: Vec<String>,
    pub(crate) build_id: String,
    /// The worker's workflow slots: one is taken before asking and goes with the task.
    pub(crate) slots: Arc<tokio::sync::Semaphore>,
}

/// A workflow task handed back with an activity completion, with the slot it holds: the
/// caller runs it at once, on the same task (each hand-off to another task costs a wake-up).
pub(crate) type EagerTask = (
    pb::PollWorkflowTaskResponse,
    tokio::sync::OwnedSemaphorePermit,
);

/// The three calls an attempt makes; a trait so that tests can stand in for the server.
pub(crate) trait ActivityTransport: Clone + Send + Sync + 'static {
    fn heartbeat(
        &self,
        req: pb::HeartbeatActivityTaskRequest,
    ) -> impl Future<Output = Result<pb::HeartbeatActivityTaskResponse, tonic::Status>> + Send;
    fn complete(
        &self,
        req: pb::CompleteActivityTaskRequest,
    ) -> impl Future<Output = Result<pb::CompleteActivityTaskResponse, tonic::Status>> + Send;
    fn fail(
        &self,
        req: pb::FailActivityTaskRequest,
    ) -> impl Future<Output = Result<(), tonic::Status>> + Send;
    /// Live output; a stand-in that does not care drops it.
    fn publish_deltas(
        &self,
        _req: pb::PublishActivityDeltasRequest,
    ) -> impl Future<Output = Result<pb::PublishActivityDeltasResponse, tonic::Status>> + Send {
        async { Ok(pb::PublishActivityDeltasResponse::default()) }
    }
}

impl ActivityTransport for WorkerServiceClient<Transport> {
    async fn heartbeat(
        &self,
        req: pb::HeartbeatActivityTaskRequest,
    ) -> Result<pb::HeartbeatActivityTaskResponse, tonic::Status> {
        Ok(self
            .clone()
            .heartbeat_activity_task(req)
            .await?
            .into_inner())
    }

    async fn complete(
        &self,
        req: pb::CompleteActivityTaskRequest,
    ) -> Result<pb::CompleteActivityTaskResponse, tonic::Status> {
        self.clone()
            .complete_activity_task(req)
            .await
            .map(|r| r.into_inner())
    }

    async fn fail(&self, req: pb::FailActivityTaskRequest) -> Result<(), tonic::Status> {
        self.clone().fail_activity_task(req).await.map(|_| ())
    }

    async fn publish_deltas(
        &self,
        req: pb::PublishActivityDeltasRequest,
    ) -> Result<pb::PublishActivityDeltasResponse, tonic::Status> {
        Ok(self
            .clone()
            .publish_activity_deltas(req)
            .await?
            .into_inner())
    }
}

/// Runs the attempt `task` to its end and reports the outcome.
pub(crate) async fn run_attempt<T: ActivityTransport>(
    transport: &T,
    config: &RuntimeConfig,
    activities: &Activities,
    task: pb::PollActivityTaskResponse,
) -> Option<EagerTask> {
    let ctx = ActivityContext::for_attempt(
        ActivityInfo {
            namespace: task.namespace,
            run_id: task.run_id,
            workflow_id: task.workflow_id,
            workflow_type: task.workflow_type,
            activity_id: task.activity_id,
            activity_type: task.activity_type,
            attempt: task.attempt,
            idempotency_key: task.idempotency_key,
            deadline_ms: task.deadline_ms,
            traceparent: (!task.traceparent.is_empty()).then_some(task.traceparent),
        },
        config.client.clone(),
        task.input.as_ref(),
        task.last_heartbeat_details,
    );
    let info = ctx.info();
    let span = tracing::debug_span!(
        "activity",
        run = %info.run_id,
        id = info.activity_id,
        r#type = %info.activity_type,
        attempt = info.attempt,
    );
    let token = task.task_token;
    let input = task.input;
    ctx.set_recorder(recorder(transport, config, &token));
    async {
        let input_bytes = input.as_ref().map_or(0, |p| p.data.len());
        tracing::debug!(input_bytes, "activity attempt starts");
        let outcome = match activities.get(&info.activity_type) {
            Some(f) => {
                let attempt = f(ctx.clone(), input);
                let outcome = supervise(transport, config, &ctx, &token, attempt).await;
                // Before the outcome: a watcher sees all the output, then the result.
                super::publish::flush_all(transport, config, &ctx, &token).await;
                outcome
            }
            None => Err(ActivityError::retryable(format!(
                "activity type {:?} is not registered on worker {}",
                info.activity_type, config.worker_id
            ))
            .with_type("steadfast.UnknownActivityType")),
        };
        report(transport, config, &token, outcome, ctx.take_usage()).await
    }
    .instrument(span)
    .await
}

/// Waits for the attempt while heartbeating; returns its outcome, or Cancelled when it
/// outlives its cancellation by the grace period.
async fn supervise<T: ActivityTransport>(
    transport: &T,
    config: &RuntimeConfig,
    ctx: &ActivityContext,
    token: &str,
    attempt: futures::future::BoxFuture<'static, Result<pb::Payload, ActivityError>>,
) -> Result<pb::Payload, ActivityError> {
    let mut handle = tokio::spawn(attempt);
    // The first tick one interval from now. (`interval` plus awaiting its immediate first
    // tick cost every attempt up to a millisecond: a timer due now still fires on the timer
    // driver's next turn.)
    let mut ticker = tokio::time::interval_at(
        tokio::time::Instant::now() + config.heartbeat_interval,
        config.heartbeat_interval,
    );
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut give_up_at: Option<Instant> = None;
    let mut publish_at: Option<Instant> = None;
    loop {
        let publish = async {
            match publish_at {
                Some(at) => tokio::time::sleep_until(at).await,
                None => ctx.shared.deltas.ready().await,
            }
        };
        let grace = async {
            match give_up_at {
                Some(at) => tokio::time::sleep_until(at).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            joined = &mut handle => {
                return match joined {
                    Ok(outcome) => outcome,
                    Err(e) if e.is_panic() => Err(ActivityError::retryable(format!(
                        "activity panicked: {}",
                        panic_message(e.into_panic())
                    ))
                    .with_type("steadfast.Panic")),
                    Err(_) => Err(ActivityError::Cancelled),
                };
            }
            _ = ticker.tick() => {
                if heartbeat(transport, config, ctx, token).await && give_up_at.is_none() {
                    tracing::debug!("activity cancellation requested");
                    ctx.cancel();
                    give_up_at = Some(Instant::now() + config.cancel_grace);
                }
            }
            _ = publish => {
                let Some(_) = publish_at.take() else {
                    publish_at = Some(Instant::now() + super::DELTA_BATCH_INTERVAL);
                    continue;
                };
                let stop = super::publish::flush_once(transport, config, ctx, token).await;
                if !ctx.shared.deltas.is_empty() {
                    publish_at = Some(Instant::now() + super::DELTA_BATCH_INTERVAL);
                }
                if stop && give_up_at.is_none() {
                    tracing::debug!("activity cancellation requested");
                    ctx.cancel();
                    give_up_at = Some(Instant::now() + config.cancel_grace);
                }
            }
            _ = grace => {
                tracing::warn!(grace_ms = config.cancel_grace.as_millis() as u64, "cancelled activity did not stop in time; abandoned");
                handle.abort();
                return Err(ActivityError::Cancelled);
            }
        }
    }
}

/// Bound of one `record_heartbeat` call: the server answers once the record is durable.
const RECORD_TIMEOUT: Duration = Duration::from_secs(30);

/// What [`ActivityContext::record_heartbeat`] calls: one heartbeat with `record = true`.
fn recorder<T: ActivityTransport>(
    transport: &T,
    config: &RuntimeConfig,
    token: &str,
) -> super::context::Recorder {
    let (transport, namespace, token) = (
        transport.clone(),
        config.namespace.clone(),
        token.to_owned(),
    );
    std::sync::Arc::new(move |details| {
        let req = pb::HeartbeatActivityTaskRequest {
            namespace: namespace.clone(),
            task_token: token.clone(),
            details: Some(details),
            record: true,
        };
        let transport = transport.clone();
        Box::pin(async move {
            match tokio::time::timeout(RECORD_TIMEOUT, transport.heartbeat(req)).await {
                Ok(r) => r,
                Err(_) => Err(tonic::Status::deadline_exceeded(format!(
                    "no answer within {} s",
                    RECORD_TIMEOUT.as_secs()
                ))),
            }
        })
    })
}

/// Sends one heartbeat; true when the attempt should stop.
async fn heartbeat<T: ActivityTransport>(
    transport: &T,
    config: &RuntimeConfig,
    ctx: &ActivityContext,
    token: &str,
) -> bool {
    let details = ctx.take_details();
    let req = pb::HeartbeatActivityTaskRequest {
        namespace: config.namespace.clone(),
        task_token: token.to_owned(),
        details,
        record: false,
    };
    // Bounded, so that a server that hangs does not hold the attempt's supervision.
    match tokio::time::timeout(config.heartbeat_interval * 4, transport.heartbeat(req)).await {
        Ok(Ok(r)) => r.cancel_requested,
        Ok(Err(s)) if is_transient(&s) => {
            tracing::debug!(code = ?s.code(), "heartbeat failed; the server may be restarting");
            false
        }
        // Details over a limit lose that heartbeat, not the attempt.
        Ok(Err(s)) if s.code() == tonic::Code::ResourceExhausted => {
            tracing::warn!(
                message = s.message(),
                "heartbeat refused; its details are dropped"
            );
            false
        }
        // The server no longer knows this attempt (closed, superseded, bad token): stop.
        Ok(Err(s)) => {
            tracing::debug!(code = ?s.code(), message = s.message(), "heartbeat refused; stopping the attempt");
            true
        }
        Err(_) => false,
    }
}

/// Error type of an attempt whose result the server refused to even receive (the request
/// was over its size limit); the same type the server gives results over its payload limit.
pub const RESULT_REFUSED_ERROR_TYPE: &str = "ResultRefused";

/// The failure reported instead of a result the server refused for its size: a request
/// over the server's limit is refused before anything is recorded, so without it the
/// attempt would time out and run again, and return the same result again, forever.
/// `None` when the refusal is not about size.
pub(crate) fn oversized_result_failure(
    result: &pb::Payload,
    refusal: &tonic::Status,
) -> Option<ActivityError> {
    let code = refusal.code();
    let message = refusal.message();
    let about_size = matches!(
        code,
        tonic::Code::ResourceExhausted | tonic::Code::OutOfRange
    ) && message.to_ascii_lowercase().contains("too large");
    if !about_size {
        return None;
    }
    // tonic says "... found N bytes, the limit is: M bytes", the server "the limit is
    // request_bytes_max = M bytes": name M when it is there.
    let limit = message
        .split("the limit is")
        .nth(1)
        .and_then(|rest| {
            let digits: String = rest
                .chars()
                .skip_while(|c| !c.is_ascii_digit())
                .take_while(char::is_ascii_digit)
                .collect();
            digits.parse::<u64>().ok()
        })
        .map_or_else(
            || "the server's request limit".to_owned(),
            |m| format!("{m} bytes per request"),
        );
    let who = if code == tonic::Code::OutOfRange && message.contains("encoded") {
        "this worker's"
    } else {
        "the server's"
    };
    Some(
        ActivityError::non_retryable(format!(
            "[STF-PAYLOAD] the activity's result is {} bytes; the limit is {limit} ({who} gRPC message limit), so it cannot be recorded and a retry would return it again: store large results elsewhere and return a reference",
            result.data.len()
        ))
        .with_type(RESULT_REFUSED_ERROR_TYPE),
    )
}

/// Reports the outcome, retrying while the server is unreachable. A result refused for its
/// size is reported as a non-retryable `[STF-PAYLOAD]` failure instead.
async fn report<T: ActivityTransport>(
    transport: &T,
    config: &RuntimeConfig,
    token: &str,
    outcome: Result<pb::Payload, ActivityError>,
    usage: Option<pb::Usage>,
) -> Option<EagerTask> {
    let mut outcome = outcome;
    let give_up_at = Instant::now() + config.report_timeout;
    let mut backoff = Backoff::default();
    // A free workflow slot, held from the ask to the task's end (or dropped if none comes).
    let mut eager = config.eager_workflow.as_ref().and_then(|e| {
        let permit = Arc::clone(&e.slots).try_acquire_owned().ok()?;
        Some((e, permit))
    });
    let mut handed = None;
    loop {
        let sent = match &outcome {
            Ok(result) => {
                let ask = eager.as_ref().map(|(e, _)| *e);
                transport
                    .complete(pb::CompleteActivityTaskRequest {
                        namespace: config.namespace.clone(),
                        task_token: token.to_owned(),
                        result: Some(result.clone()),
                        usage: usage.clone(),
                        worker_id: config.worker_id.clone(),
                        eager_workflow_task: ask.is_some(),
                        task_queue: ask.map(|e| e.task_queue.clone()).unwrap_or_default(),
                        workflow_types: ask.map(|e| e.workflow_types.clone()).unwrap_or_default(),
                        build_id: ask.map(|e| e.build_id.clone()).unwrap_or_default(),
                    })
                    .await
                    .map(|resp| {
                        if let (Some(task), Some((_, permit))) = (resp.workflow_task, eager.take())
                            && !task.task_token.is_empty()
                        {
                            handed = Some((task, permit));
                        }
                    })
            }
            Err(e) => {
                transport
                    .fail(pb::FailActivityTaskRequest {
                        namespace: config.namespace.clone(),
                        task_token: token.to_owned(),
                        failure: Some(e.to_failure()),
                        worker_id: config.worker_id.clone(),
                        // A failed LLM call may have generated (and been billed for) tokens:
                        // they count against the run's budget too.
                        usage: usage.clone(),
                    })
                    .await
            }
        };
        match sent {
            Ok(()) => {
                match &outcome {
                    Ok(p) => tracing::debug!(result_bytes = p.data.len(), "activity completed"),
                    Err(e) => tracing::debug!(error_type = e.error_type(), "activity failed"),
                }
                return handed;
            }
            Err(s) if is_transient(&s) && Instant::now() < give_up_at => {
                tokio::time::sleep(backoff.next_delay()).await;
            }
            Err(s) if outcome.is_ok() => {
                let failure = outcome
                    .as_ref()
                    .ok()
                    .and_then(|r| oversized_result_failure(r, &s));
                match failure {
                    Some(f) => {
                        let bytes = outcome.as_ref().map_or(0, |r| r.data.len());
                        tracing::warn!(
                            result_bytes = bytes,
                            code = ?s.code(),
                            "activity result refused for its size; reporting the attempt failed ([STF-PAYLOAD])"
                        );
                        outcome = Err(f);
                    }
                    None => {
                        tracing::warn!(code = ?s.code(), message = s.message(), "activity outcome not recorded");
                        return None;
                    }
                }
            }
            Err(s) => {
                tracing::warn!(code = ?s.code(), message = s.message(), "activity outcome not recorded");
                return None;
            }
        }
    }
}

fn panic_message(p: Box<dyn std::any::Any + Send>) -> String {
    match p.downcast::<String>() {
        Ok(s) => *s,
        Err(p) => p
            .downcast_ref::<&str>()
            .map(|s| (*s).to_owned())
            .unwrap_or_else(|| "(a non-string panic payload)".into()),
    }
}
