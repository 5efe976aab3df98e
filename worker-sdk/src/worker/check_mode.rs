//! Check mode ([`super::WorkerOptions::check_mode`]): the worker takes no workflow or
//! activity tasks; it long-polls `PollCheckTask`, replays every open run the server hands it
//! against its code (fresh instances, nothing sent back but the report) and answers with
//! `RespondCheckTask`. See [`crate::check`].

use std::sync::Arc;

use steadfast_proto::v1 as pb;
use tokio::sync::watch;

use super::{POLL_SLACK, Shared, back_off, poll_succeeded, stopped};
use crate::backoff::Backoff;
use crate::check::CheckReport;
use crate::replay::Replayer;
use crate::workflow;

pub(super) async fn poll_check_tasks(shared: Arc<Shared>, mut stop: watch::Receiver<bool>) {
    let mut backoff = Backoff::default();
    loop {
        let mut req = tonic::Request::new(pb::PollCheckTaskRequest {
            namespace: shared.options.namespace.clone(),
            task_queue: shared.options.task_queue.clone(),
            worker_id: shared.options.worker_id.clone(),
            workflow_types: shared.workflow_types.clone(),
            poll_timeout_ms: shared.options.poll_timeout.as_millis() as u64,
        });
        req.set_timeout(shared.options.poll_timeout + POLL_SLACK);
        let mut service = shared.worker.clone();
        let polled = tokio::select! {
            r = service.poll_check_task(req) => r,
            _ = stopped(&mut stop) => return,
        };
        match polled {
            Ok(task) => {
                poll_succeeded(&shared, &mut backoff);
                let task = task.into_inner();
                if task.check_id.is_empty() {
                    continue;
                }
                // One check at a time; a stop waits for it (the caller is waiting too).
                check(&shared, task).await;
            }
            Err(s) if s.code() == tonic::Code::Unimplemented => {
                tracing::warn!(
                    "the server does not support workflow checks; check mode does nothing"
                );
                return;
            }
            Err(status) => {
                if !back_off(&shared, &mut backoff, &status, &mut stop).await {
                    return;
                }
            }
        }
    }
}

async fn check(shared: &Shared, task: pb::PollCheckTaskResponse) {
    let replayer = Replayer::from_registry(Arc::clone(&shared.registry));
    let mut report = CheckReport::for_types(shared.workflow_types.iter().cloned());
    for run in &task.runs {
        let outcome = match shared.client.history(&run.run_id).await {
            Ok(events) => {
                let (replayer, run_id) = (replayer.clone(), run.run_id.clone());
                // Replaying runs workflow code: off the async threads.
                tokio::task::spawn_blocking(move || replayer.check_run(&run_id, events))
                    .await
                    .unwrap_or_else(|e| {
                        Err(workflow::Error::Panic {
                            message: format!("the replay thread failed: {e}"),
                        })
                    })
            }
            Err(e) => Err(workflow::Error::BadHistory(format!(
                "cannot fetch the history: {e}"
            ))),
        };
        report.add(&run.run_id, &run.workflow_type, outcome);
    }
    tracing::info!(
        check = %task.check_id,
        runs = task.runs.len(),
        diverged = report.diverged(),
        "workflow check done"
    );
    let req = pb::RespondCheckTaskRequest {
        namespace: task.namespace.clone(),
        check_id: task.check_id.clone(),
        worker_id: shared.options.worker_id.clone(),
        report: Some(report.to_proto(&shared.options.worker_id, task.runs_not_listed)),
        failure_message: String::new(),
    };
    if let Err(e) = shared.worker.clone().respond_check_task(req).await {
        // The caller timed out meanwhile, or the server restarted: it asks again.
        tracing::warn!(code = ?e.code(), "workflow check report not delivered");
    }
}
