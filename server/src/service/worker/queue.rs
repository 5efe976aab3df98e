//! Long polls: wait on a queue, take the first task of a type the worker runs (the store
//! filters by type), and give a task back when handing it out fails.

use std::time::Duration;

use steadfast_engine::store::{Task, TaskKind};
use tonic::Status;

use super::WorkerApi;
use crate::core::status;
use crate::service::poll_filter::WorkerRuns;

/// Default and longest long-poll.
const POLL_MS_DEFAULT: u64 = 20_000;
const POLL_MS_MAX: u64 = 60_000;
/// Re-check queues at least this often (tasks become visible by time, e.g. after backoff).
const POLL_RECHECK_MS: u64 = 100;

pub(super) fn poll_deadline(ms: u64) -> tokio::time::Instant {
    let ms = if ms == 0 {
        POLL_MS_DEFAULT
    } else {
        ms.min(POLL_MS_MAX)
    };
    tokio::time::Instant::now() + Duration::from_millis(ms)
}

impl WorkerApi {
    /// Takes the next task of a queue that `runs` takes, waiting until one comes or the
    /// deadline passes. The store filters by type, so tasks of types this worker does not run
    /// are never taken, however many of them are ahead in the queue.
    pub(super) async fn next_task(
        &self,
        ns: &str,
        queue: &str,
        kind: TaskKind,
        runs: &WorkerRuns,
        build: Option<&str>,
        deadline: tokio::time::Instant,
    ) -> Result<Option<Task>, Status> {
        let notify = self.core.notify.queue(ns, queue, kind);
        let type_list = runs.type_list();
        loop {
            let notified = notify.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            // Read each round: the queue's current build may change during a long poll.
            let types = match kind {
                TaskKind::Workflow if !type_list.is_empty() => {
                    crate::versioning::poll_keys(
                        self.core.store.as_ref(),
                        ns,
                        queue,
                        &type_list,
                        build,
                    )
                    .await?
                }
                _ => type_list.clone(),
            };
            // No key at all (a worker without a build, on a queue with a current build): an
            // empty list would mean "any type" to the store, so nothing is asked.
            let found = if types.is_empty() && !type_list.is_empty() {
                None
            } else {
                self.core
                    .store
                    .poll_task(ns, queue, kind, &types, self.core.now())
                    .await
                    .map_err(status)?
            };
            if found.is_some() {
                return Ok(found);
            }
            let now = tokio::time::Instant::now();
            if now >= deadline || self.core.notify.is_stopping() {
                return Ok(None);
            }
            let recheck = (now + Duration::from_millis(POLL_RECHECK_MS)).min(deadline);
            tokio::select! {
                _ = notified => {}
                _ = tokio::time::sleep_until(recheck) => {}
                _ = self.core.notify.stopped() => return Ok(None),
            }
        }
    }

    /// Gives a task back to its queue after an error, so that the error does not keep it
    /// leased (and away from every worker) until the run changes or the server restarts.
    pub(super) async fn release_after_error(&self, task: &Task, e: Status) -> Status {
        if let Err(re) = self.core.store.release_task(task).await {
            tracing::warn!(error = %re, "could not release a task after an error");
        }
        e
    }
}
