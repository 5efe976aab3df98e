//! The gRPC services.

pub mod admin;
pub mod approval;
pub mod check;
pub mod client;
pub mod fork;
pub mod import;
pub mod poll_filter;
pub mod query;
pub mod schedule;
pub mod text_search;
pub mod update;
mod watch;
pub mod worker;

use steadfast_engine::event::{self as ev, Event};
use steadfast_engine::state::RunState;
use steadfast_engine::store::{self, AppendRequest, Appended, Store};
use steadfast_engine::{RunId, RunKey};
use tonic::Status;

use crate::core::{Core, status};

/// The first events of the run that continues another one; `pinned_build` when it keeps
/// its predecessor's build ([`crate::versioning::successor_build`]).
pub fn successor_events(started: ev::RunStarted, pinned_build: Option<String>) -> Vec<Event> {
    let queue = started.task_queue.clone();
    let mut events = vec![Event::RunStarted(started)];
    events.extend(pinned_build.map(crate::versioning::pinned));
    events.push(Event::WorkflowTaskScheduled(ev::WorkflowTaskScheduled {
        task_queue: queue,
        attempt: 1,
        not_before_ms: 0,
    }));
    events
}

/// The events of a successor whose workflow id another run took between the two appends of
/// a continue-as-new: it is created and failed at once, naming that run, so the chain
/// old -> new stays whole and nothing waits for a run that can never start.
pub fn successor_refused_events(started: ev::RunStarted, holder: RunId) -> Vec<Event> {
    let message = format!(
        "[STF-CAN001] this run continues another one, but its workflow id {:?} was taken by run {holder} before it could start",
        started.workflow_id
    );
    vec![
        Event::RunStarted(started),
        Event::RunFailed(ev::RunFailed {
            command_seq: 0,
            failure: ev::Failure {
                message,
                error_type: "WorkflowIdTaken".into(),
                non_retryable: true,
                details: String::new(),
            },
        }),
    ]
}

/// Creates the successor `key` of a continue-as-new, or — when another open run holds its
/// workflow id — creates it failed (see [`successor_refused_events`]).
pub async fn create_successor(
    store: &dyn Store,
    key: &RunKey,
    started: ev::RunStarted,
    time_ms: i64,
) -> Result<Appended, store::Error> {
    let req = |events| AppendRequest {
        key: key.clone(),
        expected_next_seq: 1,
        events,
        time_ms,
        wait_durable: true,
    };
    let build = crate::versioning::successor_build(store, &started, &key.namespace).await?;
    match store
        .append(req(successor_events(started.clone(), build)))
        .await
    {
        Err(store::Error::WorkflowIdInUse { run_id, .. }) => {
            tracing::warn!(run = %key, holder = %run_id, "the successor's workflow id is taken; it is created failed");
            store
                .append(req(successor_refused_events(started, run_id)))
                .await
        }
        r => r,
    }
}

/// Starts the run that continues `old` (whose RunContinuedAsNew names its id).
pub async fn continue_as_new(
    core: &Core,
    old: &RunState,
    started: ev::RunStarted,
) -> Result<RunId, Status> {
    let new_id = old
        .continued_to
        .ok_or_else(|| Status::internal("continued run has no successor id"))?;
    let key = RunKey::new(old.key.namespace.clone(), new_id);
    let appended = create_successor(core.store.as_ref(), &key, started, core.now())
        .await
        .map_err(status)?;
    core.after_append(&appended);
    Ok(new_id)
}

/// Hands a new run's first task, started in its first append for the poller a start took
/// ([`crate::sync_match`]), to that poller. When the poller has left meanwhile the task is
/// timed out at once, so that any worker gets it again (as if its worker had died holding
/// it); should even that fail, the task's recorded timeout does it later.
pub async fn hand_over_first_task(
    core: &Core,
    taken: crate::sync_match::Taken,
    key: RunKey,
    appended: steadfast_engine::store::Appended,
) {
    let started_seq = appended
        .records
        .iter()
        .find(|r| matches!(r.event, Event::WorkflowTaskStarted(_)))
        .map(|r| r.seq);
    if taken.hand_over(crate::sync_match::Matched {
        key: key.clone(),
        appended,
    }) {
        return;
    }
    let Some(started_seq) = started_seq else {
        return;
    };
    tracing::debug!(run = %key, "the poller left before its first task reached it; timing the task out");
    let due = steadfast_engine::store::DueTimer::WorkflowTask { key, started_seq };
    if let Err(e) = crate::timers::fire(core, &due).await {
        tracing::warn!(error = %e, "could not time out a first task no poller received; its workflow task timeout will");
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use steadfast_engine::embedded::{EmbeddedOptions, EmbeddedStore};
    use steadfast_engine::payload::Payload;

    use steadfast_engine::state::RunStatus;

    use super::*;

    fn started(workflow_id: &str) -> ev::RunStarted {
        ev::RunStarted {
            workflow_type: "agent".into(),
            workflow_id: workflow_id.into(),
            task_queue: "q".into(),
            input: Payload::json(b"{}".to_vec()),
            run_timeout_ms: 0,
            budget: Default::default(),
            continued_from: None,
            identity: "t".into(),
            random_seed: 1,
            parent: None,
            forked_from: None,
            schedule: None,
            traceparent: None,
        }
    }

    /// A start took a waiting poll, but the poll left before the task reached it: the task
    /// is timed out at once and scheduled again, so another worker gets it (no stuck run).
    #[tokio::test]
    async fn a_first_task_whose_poller_left_is_timed_out_and_offered_again() {
        use steadfast_engine::state::WorkflowTask;
        let dir = tempfile::tempdir().unwrap();
        let (store, _) = EmbeddedStore::open(dir.path(), EmbeddedOptions::default()).unwrap();
        let core = Core::new(
            Arc::new(store),
            Arc::new(steadfast_engine::clock::SystemClock),
        );
        let reg = core
            .waiting_polls
            .register("default", "q", "w-gone", vec!["agent".into()], None);
        let c = core
            .waiting_polls
            .candidate("default", "q", "agent")
            .unwrap();
        let taken = core.waiting_polls.take("default", "q", c.id).unwrap();
        drop(reg);
        let key = RunKey::new("default", RunId::new_v7());
        let mut events = successor_events(started("w"), None);
        events.push(Event::WorkflowTaskStarted(ev::WorkflowTaskStarted {
            scheduled_seq: 2,
            worker: taken.worker().to_string(),
            timeout_ms: 0,
        }));
        let a = core.create(&key, events, None).await.unwrap();
        assert!(matches!(
            a.state.workflow_task,
            WorkflowTask::Started { started_seq: 3, .. }
        ));
        hand_over_first_task(&core, taken, key.clone(), a).await;
        let history = core.store.read_history(&key, 1, 100).await.unwrap();
        assert!(
            matches!(history[3].event, Event::WorkflowTaskTimedOut(ref t) if t.started_seq == 3),
            "{history:#?}"
        );
        let s = core.state(&key).await.unwrap();
        assert!(
            matches!(s.workflow_task, WorkflowTask::Scheduled { .. }),
            "offered again: {:?}",
            s.workflow_task
        );
    }

    /// A successor whose workflow id another start took is created failed, naming the holder,
    /// instead of never being created (and failing the repair at every restart).
    #[tokio::test]
    async fn a_successor_whose_workflow_id_is_taken_is_created_failed() {
        let dir = tempfile::tempdir().unwrap();
        let (store, _) = EmbeddedStore::open(dir.path(), EmbeddedOptions::default()).unwrap();
        let holder = RunKey::new("default", RunId::new_v7());
        store
            .append(AppendRequest {
                key: holder.clone(),
                expected_next_seq: 1,
                events: successor_events(started("w"), None),
                time_ms: 1,
                wait_durable: true,
            })
            .await
            .unwrap();
        let key = RunKey::new("default", RunId::new_v7());
        let a = create_successor(&store, &key, started("w"), 2)
            .await
            .unwrap();
        assert_eq!(a.state.status, RunStatus::Failed);
        let failure = a
            .state
            .failure
            .as_ref()
            .map(|f| f.message.clone())
            .unwrap_or_default();
        assert!(failure.contains("STF-CAN001") && failure.contains(&holder.run_id.to_string()));
        // With the id free, the successor starts normally.
        let free = RunKey::new("default", RunId::new_v7());
        let a = create_successor(&store, &free, started("other"), 3)
            .await
            .unwrap();
        assert_eq!(a.state.status, RunStatus::Running);
    }
}
