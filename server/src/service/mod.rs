//! The gRPC services.

pub mod admin;
pub mod client;
pub mod poll_filter;
pub mod worker;

use steadfast_engine::event::{self as ev, Event};
use steadfast_engine::state::RunState;
use steadfast_engine::{RunId, RunKey};
use tonic::Status;

use crate::core::{Core, status};

/// The first events of the run that continues another one.
pub fn successor_events(started: ev::RunStarted) -> Vec<Event> {
    let queue = started.task_queue.clone();
    vec![
        Event::RunStarted(started),
        Event::WorkflowTaskScheduled(ev::WorkflowTaskScheduled {
            task_queue: queue,
            attempt: 1,
            not_before_ms: 0,
        }),
    ]
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
    core.create(&key, successor_events(started), None)
        .await
        .map_err(status)?;
    Ok(new_id)
}
