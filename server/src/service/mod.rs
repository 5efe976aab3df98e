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

#[cfg(test)]
mod tests {
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
