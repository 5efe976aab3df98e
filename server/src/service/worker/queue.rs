//! Long polls: wait on a queue, take the first task of a type the worker runs (stepping over
//! and giving back others), and give a task back when handing it out fails.

use std::time::Duration;

use steadfast_engine::ids::RunKey;
use steadfast_engine::state::RunState;
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
/// Most tasks of other types one poll steps over (leasing them for a moment) before it waits:
/// a queue shared by workers of different types is served, at a bounded cost per poll.
const POLL_SKIP_MAX: usize = 64;

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
    /// deadline passes.
    pub(super) async fn next_task(
        &self,
        ns: &str,
        queue: &str,
        kind: TaskKind,
        runs: &WorkerRuns,
        deadline: tokio::time::Instant,
    ) -> Result<Option<Task>, Status> {
        let notify = self.core.notify.queue(ns, queue, kind);
        let mut skipped_before: Vec<Task> = Vec::new();
        loop {
            let notified = notify.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let (found, skipped) = self.sweep(ns, queue, kind, runs).await?;
            if found.is_some() {
                return Ok(found);
            }
            // A wake-up this poller took for a task it does not run is passed on, once per
            // task, to a poller that may run it.
            if skipped.iter().any(|t| !skipped_before.contains(t)) {
                notify.notify_one();
            }
            skipped_before = skipped;
            let now = tokio::time::Instant::now();
            if now >= deadline {
                return Ok(None);
            }
            let recheck = (now + Duration::from_millis(POLL_RECHECK_MS)).min(deadline);
            tokio::select! {
                _ = notified => {}
                _ = tokio::time::sleep_until(recheck) => {}
            }
        }
    }

    /// Takes the first visible task that `runs` takes, stepping over (and giving back) at most
    /// [`POLL_SKIP_MAX`] of other types. Returns it and the tasks stepped over.
    async fn sweep(
        &self,
        ns: &str,
        queue: &str,
        kind: TaskKind,
        runs: &WorkerRuns,
    ) -> Result<(Option<Task>, Vec<Task>), Status> {
        let mut skipped = Vec::new();
        let found = loop {
            if skipped.len() >= POLL_SKIP_MAX {
                break Ok(None);
            }
            let task = match self
                .core
                .store
                .poll_task(ns, queue, kind, self.core.now())
                .await
            {
                Ok(Some(t)) => t,
                Ok(None) => break Ok(None),
                Err(e) => break Err(status(e)),
            };
            if runs.takes_any() {
                break Ok(Some(task));
            }
            let type_name = match self.core.store.run_state(task_key(&task)).await {
                Ok(Some(s)) => task_type(&s, &task),
                // Gone or unreadable: hand it on, the start finds out and drops it.
                _ => None,
            };
            match type_name {
                Some(t) if !runs.takes(&t) => skipped.push(task),
                _ => break Ok(Some(task)),
            }
        };
        for t in &skipped {
            self.core.store.release_task(t).await.map_err(status)?;
        }
        Ok((found?, skipped))
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

fn task_key(t: &Task) -> &RunKey {
    match t {
        Task::Workflow { key, .. } | Task::Activity { key, .. } => key,
    }
}

/// The workflow or activity type of a task, when the state still has it.
fn task_type(s: &RunState, t: &Task) -> Option<String> {
    match t {
        Task::Workflow { .. } => Some(s.workflow_type.clone()),
        Task::Activity { id, .. } => s.activities.get(id).map(|a| a.activity_type.clone()),
    }
}
