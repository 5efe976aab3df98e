//! The query calls: `QueryRun` (client) parks a query until `PollQueryTask` (worker) takes it
//! and `RespondQueryTask` answers it. See [`crate::query`].

use std::time::Duration;

use steadfast_proto::v1 as pb;
use tonic::Status;

use crate::core::Core;
use crate::query::{self, Answer, QueryTask, Unanswered};
use crate::validate;

/// Default and longest query poll.
const POLL_MS_DEFAULT: u64 = 20_000;
const POLL_MS_MAX: u64 = 60_000;

/// `QueryRun`: asks the run's code through a worker, waits for the answer.
pub async fn query_run(
    core: &Core,
    r: &pb::QueryRunRequest,
) -> Result<pb::QueryRunResponse, Status> {
    let key = validate::run_key(&r.namespace, &r.run_id)?;
    validate::name("query_name", &r.query_name)?;
    let input = validate::payload("input", r.input.as_ref())?;
    // Closed runs are queried too: a worker replays their final history.
    let s = core.state(&key).await?;
    let timeout = query::timeout(r.timeout_ms);
    let task = QueryTask {
        id: uuid::Uuid::now_v7().to_string(),
        key: key.clone(),
        workflow_type: s.workflow_type.clone(),
        name: r.query_name.clone(),
        input: crate::convert::payload(&input),
    };
    tracing::debug!(run = %key.run_id, query = %r.query_name, input_bytes = task.input.data.len(), "query parked");
    match core.queries.ask(task, &s.task_queue, timeout).await? {
        Ok(Answer::Value(result)) => Ok(pb::QueryRunResponse {
            result: Some(result),
        }),
        Ok(Answer::Failed { kind, message }) => {
            Err(query::failure_status(&r.query_name, kind, &message))
        }
        Err(unanswered) => Err(Status::deadline_exceeded(format!(
            "{} query {} of run {} within {} ms: is a worker of workflow type {} polling task queue {}?",
            match unanswered {
                Unanswered::NotTaken => "no worker took",
                Unanswered::NotAnswered => "the worker that took it did not answer",
            },
            validate::quote(&r.query_name),
            key.run_id,
            timeout.as_millis(),
            validate::quote(&s.workflow_type),
            validate::quote(&s.task_queue),
        ))),
    }
}

/// `PollQueryTask`: the oldest parked query of the worker's queue and types.
pub async fn poll_query_task(
    core: &Core,
    r: &pb::PollQueryTaskRequest,
) -> Result<pb::PollQueryTaskResponse, Status> {
    let ns = validate::namespace(&r.namespace)?;
    validate::name("task_queue", &r.task_queue)?;
    validate::name("worker_id", &r.worker_id)?;
    validate::type_names(
        "workflow_types",
        r.workflow_types.iter().map(String::as_str),
    )?;
    let ms = match r.poll_timeout_ms {
        0 => POLL_MS_DEFAULT,
        ms => ms.min(POLL_MS_MAX),
    };
    let deadline = tokio::time::Instant::now() + Duration::from_millis(ms);
    // A stopping server answers at once (empty) instead of holding its shutdown.
    let polled = tokio::select! {
        t = core.queries.poll(&ns, &r.task_queue, &r.workflow_types, deadline) => t,
        _ = core.notify.stopped() => None,
    };
    let Some(task) = polled else {
        return Ok(pb::PollQueryTaskResponse::default());
    };
    Ok(pb::PollQueryTaskResponse {
        query_id: task.id,
        namespace: task.key.namespace,
        run_id: task.key.run_id.to_string(),
        workflow_type: task.workflow_type,
        query_name: task.name,
        input: Some(task.input),
    })
}

/// `RespondQueryTask`: a worker's answer.
pub fn respond_query_task(
    core: &Core,
    r: &pb::RespondQueryTaskRequest,
) -> Result<pb::RespondQueryTaskResponse, Status> {
    let ns = validate::namespace(&r.namespace)?;
    validate::name("query_id", &r.query_id)?;
    validate::opt_name("worker_id", &r.worker_id)?;
    validate::enumeration::<pb::QueryFailureKind>(
        "failure_kind",
        r.failure_kind,
        "QUERY_FAILURE_KIND_UNSPECIFIED (0) to QUERY_FAILURE_KIND_REPLAY_FAILED (3)",
    )?;
    validate::free_text("failure_message", &r.failure_message)?;
    let answer = match r.failure_kind() {
        pb::QueryFailureKind::Unspecified => {
            let result = validate::payload("result", r.result.as_ref())?;
            Answer::Value(crate::convert::payload(&result))
        }
        kind => Answer::Failed {
            kind,
            message: r.failure_message.clone(),
        },
    };
    core.queries.answer(&ns, &r.query_id, answer)?;
    Ok(pb::RespondQueryTaskResponse {})
}
