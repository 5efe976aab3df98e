//! Building blocks of the contract tests: a driver that appends to one run, and events.

use crate::event::{self, ActivityOptions, Budget, CommandSeq, Event, TimeMs};
use crate::ids::{DEFAULT_NAMESPACE, RunId, RunKey};
use crate::payload::Payload;
use crate::store::{AppendRequest, Appended, Error, Store};

/// The time the contract tests start at.
pub const T0: TimeMs = 1_700_000_000_000;

/// Appends to one run, tracking its next seq and command seq.
#[derive(Debug, Clone)]
pub struct RunDriver {
    /// The run.
    pub key: RunKey,
    /// The next seq.
    pub next: u64,
    /// The next command seq.
    pub command: CommandSeq,
    /// The time stamped on appends.
    pub time_ms: TimeMs,
}

impl RunDriver {
    /// Starts a run of type "wf" in the default namespace at [`T0`].
    pub async fn start<S: Store + ?Sized>(store: &S, workflow_id: &str, queue: &str) -> RunDriver {
        RunDriver::start_with(store, started(workflow_id, queue)).await
    }

    /// Starts a run with these RunStarted attributes.
    pub async fn start_with<S: Store + ?Sized>(store: &S, attrs: event::RunStarted) -> RunDriver {
        let mut r = RunDriver {
            key: RunKey::new(DEFAULT_NAMESPACE, RunId::new_v7()),
            next: 1,
            command: 1,
            time_ms: T0,
        };
        r.append(store, vec![Event::RunStarted(attrs)]).await;
        r
    }

    /// Appends at the next seq, durably; panics on refusal.
    pub async fn append<S: Store + ?Sized>(&mut self, store: &S, events: Vec<Event>) -> Appended {
        let what = format!(
            "{:?}",
            events.iter().map(|e| e.kind().name()).collect::<Vec<_>>()
        );
        match self.try_append(store, events).await {
            Ok(a) => a,
            Err(e) => panic!(
                "append {what} to {} at seq {} refused: {e}",
                self.key, self.next
            ),
        }
    }

    /// Appends at the next seq, durably; advances on success.
    pub async fn try_append<S: Store + ?Sized>(
        &mut self,
        store: &S,
        events: Vec<Event>,
    ) -> Result<Appended, Error> {
        let n = events.len() as u64;
        let a = store
            .append(AppendRequest {
                key: self.key.clone(),
                expected_next_seq: self.next,
                events,
                time_ms: self.time_ms,
                wait_durable: true,
            })
            .await?;
        self.next += n;
        Ok(a)
    }

    /// Takes the next command seq.
    pub fn next_command(&mut self) -> CommandSeq {
        self.command += 1;
        self.command - 1
    }

    /// Appends WorkflowTaskScheduled; returns its seq.
    pub async fn schedule_workflow_task<S: Store + ?Sized>(
        &mut self,
        store: &S,
        not_before_ms: TimeMs,
    ) -> u64 {
        let seq = self.next;
        let queue = store
            .run_state(&self.key)
            .await
            .unwrap()
            .map(|s| s.task_queue.clone())
            .unwrap_or_default();
        self.append(
            store,
            vec![Event::WorkflowTaskScheduled(event::WorkflowTaskScheduled {
                task_queue: queue,
                attempt: 1,
                not_before_ms,
            })],
        )
        .await;
        seq
    }

    /// Schedules, starts and completes a workflow task, so that command events may follow.
    pub async fn run_workflow_task<S: Store + ?Sized>(&mut self, store: &S) {
        let scheduled_seq = self.schedule_workflow_task(store, 0).await;
        let started_seq = self.next;
        self.append(
            store,
            vec![Event::WorkflowTaskStarted(event::WorkflowTaskStarted {
                scheduled_seq,
                worker: "w".into(),
                timeout_ms: 0,
            })],
        )
        .await;
        self.append(
            store,
            vec![Event::WorkflowTaskCompleted(event::WorkflowTaskCompleted {
                started_seq,
                worker: "w".into(),
            })],
        )
        .await;
    }
}

/// RunStarted attributes of type "wf".
pub fn started(workflow_id: &str, queue: &str) -> event::RunStarted {
    event::RunStarted {
        workflow_type: "wf".into(),
        workflow_id: workflow_id.into(),
        task_queue: queue.into(),
        input: Payload::json(b"{}".to_vec()),
        run_timeout_ms: 0,
        budget: Budget::default(),
        continued_from: None,
        identity: "contract".into(),
        random_seed: 7,
        parent: None,
        forked_from: None,
        schedule: None,
        traceparent: None,
    }
}

/// A signal with a JSON payload of these bytes.
pub fn signal(name: &str, data: Vec<u8>) -> Event {
    Event::SignalReceived(event::SignalReceived {
        name: name.into(),
        input: Payload::json(data),
        identity: "contract".into(),
        request_id: String::new(),
    })
}

/// A timer.
pub fn timer_started(command_seq: CommandSeq, fire_at_ms: TimeMs) -> Event {
    Event::TimerStarted(event::TimerStarted {
        command_seq,
        fire_at_ms,
    })
}

/// An activity on `queue`.
pub fn activity(command_seq: CommandSeq, queue: &str, options: ActivityOptions) -> Event {
    Event::ActivityScheduled(event::ActivityScheduled {
        command_seq,
        activity_type: "tool".into(),
        input: Payload::json(b"{\"q\":1}".to_vec()),
        options: ActivityOptions {
            task_queue: queue.into(),
            ..options
        },
    })
}

/// A failed attempt, retried at `retry_at_ms`.
pub fn activity_failed(
    command_seq: CommandSeq,
    attempt: u32,
    retry_at_ms: Option<TimeMs>,
) -> Event {
    Event::ActivityFailed(event::ActivityFailed {
        command_seq,
        attempt,
        failure: event::Failure {
            message: "boom".into(),
            error_type: "E".into(),
            ..Default::default()
        },
        retry_at_ms,
        duration_ms: 1,
        usage: None,
    })
}
