//! Checking an upgrade before it is deployed: `CheckWorkflows` (admin) parks a check until a
//! worker started in check mode on the queue takes it (`PollCheckTask`, handed the open runs
//! of the workflow types it registers), replays them against its code and reports
//! (`RespondCheckTask`). Parked like queries ([`crate::query::Broker`]): nothing is written,
//! so a check lost in a restart costs the caller a retry.

use std::time::Duration;

use steadfast_engine::state::RunStatus;
use steadfast_engine::store::RunFilter;
use steadfast_proto::v1 as pb;
use tonic::Status;

use crate::core::{Core, status};
use crate::query::{Broker, Parkable, Unanswered};
use crate::validate;

/// How long a caller waits for a check-mode worker's report when it gives no timeout.
pub const CHECK_TIMEOUT_MS_DEFAULT: u64 = 60_000;
/// The longest a caller may wait (a check replays every open run of the queue's types).
pub const CHECK_TIMEOUT_MS_MAX: u64 = 600_000;
/// Most open runs handed to one check; the rest are counted, not listed.
pub const CHECK_RUNS_MAX: usize = 10_000;
/// Most characters of a worker's failure message passed on to the caller.
pub const CHECK_FAILURE_CHARS_MAX: usize = 1_000;
/// Stable code: no check-mode worker took the check (DEADLINE_EXCEEDED).
pub const CODE_NO_CHECK_WORKER: &str = "[STF-CHECK001]";
/// Stable code: the check-mode worker could not check (FAILED_PRECONDITION).
pub const CODE_CHECK_FAILED: &str = "[STF-CHECK002]";

/// Runs listed per store page while gathering a check's runs.
const LIST_PAGE: usize = 500;
/// Default and longest check poll.
const POLL_MS_DEFAULT: u64 = 20_000;
const POLL_MS_MAX: u64 = 60_000;

/// A parked check as the broker keeps it.
#[derive(Debug, Clone)]
pub struct CheckTask {
    id: String,
    namespace: String,
}

impl Parkable for CheckTask {
    fn id(&self) -> &str {
        &self.id
    }
    fn namespace(&self) -> &str {
        &self.namespace
    }
    /// Any check-mode worker of the queue checks the types it registers.
    fn for_types(&self, _types: &[String]) -> bool {
        true
    }
}

/// A check-mode worker's answer: its report, or why it could not check.
pub type CheckAnswer = Result<pb::CheckReport, String>;

/// The checks parked on this node.
pub type Checks = Broker<CheckTask, CheckAnswer>;

fn timeout(ms: u64) -> Duration {
    Duration::from_millis(match ms {
        0 => CHECK_TIMEOUT_MS_DEFAULT,
        ms => ms.min(CHECK_TIMEOUT_MS_MAX),
    })
}

/// `CheckWorkflows`: waits for a check-mode worker of the queue to report.
pub async fn check_workflows(
    core: &Core,
    r: &pb::CheckWorkflowsRequest,
) -> Result<pb::CheckWorkflowsResponse, Status> {
    let ns = validate::namespace(&r.namespace)?;
    validate::name("task_queue", &r.task_queue)?;
    let wait = timeout(r.timeout_ms);
    let task = CheckTask {
        id: uuid::Uuid::now_v7().to_string(),
        namespace: ns,
    };
    tracing::info!(queue = %r.task_queue, "workflow check parked");
    match core.checks.ask(task, &r.task_queue, wait).await? {
        Ok(Ok(report)) => Ok(pb::CheckWorkflowsResponse {
            report: Some(report),
        }),
        Ok(Err(message)) => {
            let message: String = message.chars().take(CHECK_FAILURE_CHARS_MAX).collect();
            Err(Status::failed_precondition(format!(
                "{CODE_CHECK_FAILED} the check-mode worker could not check: {message}"
            )))
        }
        Err(Unanswered::NotTaken) => Err(Status::deadline_exceeded(format!(
            "{CODE_NO_CHECK_WORKER} no worker in check mode took the check of task queue {} within {} ms: start a worker of the new code on that queue with STEADFAST_CHECK_MODE=1 (or WorkerOptions::check_mode), then run the check again",
            validate::quote(&r.task_queue),
            wait.as_millis()
        ))),
        Err(Unanswered::NotAnswered) => Err(Status::deadline_exceeded(format!(
            "the check-mode worker that took the check of task queue {} did not report within {} ms: give a longer timeout",
            validate::quote(&r.task_queue),
            wait.as_millis()
        ))),
    }
}

/// The open runs of `types` on `queue`, at most [`CHECK_RUNS_MAX`], and how many more there
/// are.
async fn open_runs(
    core: &Core,
    namespace: &str,
    queue: &str,
    types: &[String],
) -> Result<(Vec<pb::CheckRun>, u64), Status> {
    let mut runs = Vec::new();
    let mut more = 0u64;
    for ty in types {
        let filter = RunFilter {
            status: Some(RunStatus::Running),
            workflow_type: Some(ty.clone()),
            ..Default::default()
        };
        let mut after = None;
        loop {
            let page = core
                .store
                .list_runs(namespace, &filter, after, LIST_PAGE, core.now())
                .await
                .map_err(status)?;
            for s in &page {
                if s.task_queue != queue {
                    continue;
                }
                if runs.len() < CHECK_RUNS_MAX {
                    runs.push(pb::CheckRun {
                        run_id: s.key.run_id.to_string(),
                        workflow_type: s.workflow_type.clone(),
                    });
                } else {
                    more += 1;
                }
            }
            if page.len() < LIST_PAGE {
                break;
            }
            after = page.last().map(|s| s.key.run_id);
        }
    }
    Ok((runs, more))
}

/// `PollCheckTask`: the oldest parked check of the worker's queue, with the runs to replay.
pub async fn poll_check_task(
    core: &Core,
    r: &pb::PollCheckTaskRequest,
) -> Result<pb::PollCheckTaskResponse, Status> {
    let ns = validate::namespace(&r.namespace)?;
    validate::name("task_queue", &r.task_queue)?;
    validate::name("worker_id", &r.worker_id)?;
    validate::type_names(
        "workflow_types",
        r.workflow_types.iter().map(String::as_str),
    )?;
    if r.workflow_types.is_empty() {
        return Err(Status::invalid_argument(
            "workflow_types is empty: a check-mode worker names the workflow types it registers",
        ));
    }
    let ms = match r.poll_timeout_ms {
        0 => POLL_MS_DEFAULT,
        ms => ms.min(POLL_MS_MAX),
    };
    let deadline = tokio::time::Instant::now() + Duration::from_millis(ms);
    // A stopping server answers at once (empty) instead of holding its shutdown.
    let polled = tokio::select! {
        t = core.checks.poll(&ns, &r.task_queue, &r.workflow_types, deadline) => t,
        _ = core.notify.stopped() => None,
    };
    let Some(task) = polled else {
        return Ok(pb::PollCheckTaskResponse::default());
    };
    match open_runs(core, &ns, &r.task_queue, &r.workflow_types).await {
        Ok((runs, runs_not_listed)) => {
            tracing::info!(check = %task.id, runs = runs.len(), runs_not_listed, "workflow check taken");
            Ok(pb::PollCheckTaskResponse {
                check_id: task.id,
                namespace: ns,
                runs,
                runs_not_listed,
            })
        }
        Err(e) => {
            // The caller learns why, rather than waiting for its timeout.
            let _ = core.checks.answer(
                &ns,
                &task.id,
                Err(format!(
                    "the server could not list the open runs: {}",
                    e.message()
                )),
            );
            Err(e)
        }
    }
}

/// `RespondCheckTask`: a check-mode worker's report.
pub fn respond_check_task(
    core: &Core,
    r: &pb::RespondCheckTaskRequest,
) -> Result<pb::RespondCheckTaskResponse, Status> {
    let ns = validate::namespace(&r.namespace)?;
    validate::name("check_id", &r.check_id)?;
    validate::opt_name("worker_id", &r.worker_id)?;
    let answer = match (&r.report, r.failure_message.is_empty()) {
        (Some(report), true) => Ok(report.clone()),
        (None, false) => Err(r.failure_message.clone()),
        _ => {
            return Err(Status::invalid_argument(
                "give either a report or a failure_message",
            ));
        }
    };
    core.checks.answer(&ns, &r.check_id, answer)?;
    Ok(pb::RespondCheckTaskResponse {})
}
