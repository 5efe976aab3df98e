//! Long polls: wait on a queue, take the first task of a type the worker runs (the store
//! filters by type), and give a task back when handing it out fails.

use std::time::Duration;

use steadfast_engine::store::{Task, TaskKind};
use tonic::Status;

use super::WorkerApi;
use crate::core::status;
use crate::service::poll_filter::WorkerRuns;
use crate::sync_match::Matched;

/// What a long poll got.
pub(super) enum Next {
    /// A task taken from the store.
    Task(Task),
    /// A new run whose first workflow task a start recorded for this poll.
    Matched(Matched),
}

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
    ///
    /// A workflow poll naming its types (`worker` set) also waits in
    /// [`crate::core::Core::waiting_polls`], where a start may hand it a new run's first task.
    #[allow(clippy::too_many_arguments)]
    pub(super) async fn next_task(
        &self,
        ns: &str,
        queue: &str,
        kind: TaskKind,
        runs: &WorkerRuns,
        build: Option<&str>,
        worker: Option<&str>,
        deadline: tokio::time::Instant,
    ) -> Result<Option<Next>, Status> {
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
            if let Some(task) = found {
                return Ok(Some(Next::Task(task)));
            }
            let now = tokio::time::Instant::now();
            if now >= deadline || self.core.notify.is_stopping() {
                return Ok(None);
            }
            let recheck = (now + Duration::from_millis(POLL_RECHECK_MS)).min(deadline);
            let mut waiting = match worker {
                Some(w) if kind == TaskKind::Workflow && !type_list.is_empty() => Some(
                    self.core
                        .waiting_polls
                        .register(ns, queue, w, type_list.clone(), build),
                ),
                _ => None,
            };
            let handed = async {
                match waiting.as_mut() {
                    Some(reg) => (&mut reg.rx).await.ok(),
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                m = handed => {
                    if let Some(m) = m {
                        return Ok(Some(Next::Matched(m)));
                    }
                    // The start that took this poll failed: poll on.
                    continue;
                }
                _ = notified => {}
                _ = tokio::time::sleep_until(recheck) => {}
                _ = self.core.notify.stopped() => return Ok(None),
            }
            if let Some(mut reg) = waiting.take()
                && !reg.withdraw()
            {
                // A start took this poll as it woke: its task is one sync away.
                if let Ok(m) = (&mut reg.rx).await {
                    return Ok(Some(Next::Matched(m)));
                }
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
