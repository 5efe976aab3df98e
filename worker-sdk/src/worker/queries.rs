//! Queries: long-poll `PollQueryTask`, replay the run's history in a fresh instance, answer
//! with the handler the workflow registered (`RespondQueryTask`). A query writes nothing and
//! does not touch the cached instances, so it cannot disturb a workflow task in flight.

use std::sync::Arc;

use steadfast_proto::v1 as pb;
use tokio::sync::{Semaphore, watch};

use super::{POLL_SLACK, Shared, back_off, poll_succeeded, stopped};
use crate::backoff::Backoff;
use crate::workflow::{QueryError, WorkflowInstance};

/// Queries answered at once by one worker (each replays a whole history on a blocking thread).
const QUERY_SLOTS: usize = 2;

pub(super) async fn poll_query_tasks(shared: Arc<Shared>, mut stop: watch::Receiver<bool>) {
    let slots = Arc::new(Semaphore::new(QUERY_SLOTS));
    let mut backoff = Backoff::default();
    loop {
        let slot = tokio::select! {
            s = Arc::clone(&slots).acquire_owned() => match s { Ok(s) => s, Err(_) => return },
            _ = stopped(&mut stop) => return,
        };
        let mut req = tonic::Request::new(pb::PollQueryTaskRequest {
            namespace: shared.options.namespace.clone(),
            task_queue: shared.options.task_queue.clone(),
            worker_id: shared.options.worker_id.clone(),
            workflow_types: shared.workflow_types.clone(),
            poll_timeout_ms: shared.options.poll_timeout.as_millis() as u64,
        });
        req.set_timeout(shared.options.poll_timeout + POLL_SLACK);
        let mut service = shared.worker.clone();
        let polled = tokio::select! {
            r = service.poll_query_task(req) => r,
            _ = stopped(&mut stop) => return,
        };
        match polled {
            Ok(task) => {
                poll_succeeded(&shared, &mut backoff);
                let task = task.into_inner();
                if task.query_id.is_empty() {
                    continue;
                }
                let shared = Arc::clone(&shared);
                tokio::spawn(async move {
                    answer(&shared, task).await;
                    drop(slot);
                });
            }
            Err(s) if s.code() == tonic::Code::Unimplemented => {
                tracing::info!("the server does not support queries; not polling for them");
                return;
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

async fn answer(shared: &Shared, task: pb::PollQueryTaskResponse) {
    let outcome = match shared.client.history(&task.run_id).await {
        Ok(events) => {
            let registry = Arc::clone(&shared.registry);
            let (run_id, name) = (task.run_id.clone(), task.query_name.clone());
            let input = task.input.clone().unwrap_or_default();
            // Replaying runs workflow code: off the async threads.
            tokio::task::spawn_blocking(move || {
                let mut instance = WorkflowInstance::new(registry, run_id);
                match instance.activate(events) {
                    Ok(_) => instance.query(&name, &input),
                    Err(e) => Err(QueryError::Replay(e.to_string())),
                }
            })
            .await
            .unwrap_or_else(|e| Err(QueryError::Replay(format!("the replay thread failed: {e}"))))
        }
        Err(e) => Err(QueryError::Replay(format!("cannot fetch the history: {e}"))),
    };
    let mut req = pb::RespondQueryTaskRequest {
        namespace: task.namespace.clone(),
        query_id: task.query_id.clone(),
        worker_id: shared.options.worker_id.clone(),
        ..Default::default()
    };
    match outcome {
        Ok(value) => req.result = Some(value),
        Err(e) => {
            let kind = match &e {
                QueryError::Unknown { .. } => pb::QueryFailureKind::UnknownQuery,
                QueryError::Failed { .. } => pb::QueryFailureKind::HandlerFailed,
                QueryError::Replay(_) => pb::QueryFailureKind::ReplayFailed,
            };
            req.set_failure_kind(kind);
            req.failure_message = e.to_string();
        }
    }
    tracing::debug!(run = %task.run_id, query = %task.query_name, ok = req.result.is_some(), "query answered");
    if let Err(e) = shared.worker.clone().respond_query_task(req).await {
        // The caller timed out meanwhile, or the server restarted: it asks again.
        tracing::debug!(code = ?e.code(), "query answer not delivered");
    }
}
