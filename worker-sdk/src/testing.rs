//! Build histories in code, the way the server records them: for unit tests of workflows,
//! golden histories and the replayer. Hashes are left empty (the SDK does not check the
//! chain; the server does).
//!
//! ```
//! use steadfast_sdk::testing::HistoryBuilder;
//! let mut h = HistoryBuilder::new("greet", &"world");
//! h.start_task();
//! assert_eq!(h.events().len(), 3); // RunStarted, WorkflowTaskScheduled, WorkflowTaskStarted
//! ```

use serde::Serialize;
use steadfast_proto::v1 as pb;
use steadfast_proto::v1::command::Command as Cmd;
use steadfast_proto::v1::history_event::Attributes as Ev;

use crate::payload;

/// The seed of [`HistoryBuilder::new`]'s runs.
pub const DEFAULT_SEED: u64 = 42;
/// The time of the first event of [`HistoryBuilder::new`]'s runs, ms since the epoch.
pub const START_MS: i64 = 1_700_000_000_000;

/// Appends events to a history with consecutive seqs and a clock that advances 1 ms per
/// event.
#[derive(Debug, Clone, Default)]
pub struct HistoryBuilder {
    events: Vec<pb::HistoryEvent>,
    time_ms: i64,
    last_task_started: u64,
}

impl HistoryBuilder {
    /// A history that starts run of `workflow_type` with `input` (seed [`DEFAULT_SEED`]).
    pub fn new(workflow_type: &str, input: &impl Serialize) -> Self {
        Self::with_seed(workflow_type, input, DEFAULT_SEED)
    }

    /// Like [`HistoryBuilder::new`] with a random seed of your choice.
    pub fn with_seed(workflow_type: &str, input: &impl Serialize, seed: u64) -> Self {
        let mut h = HistoryBuilder {
            events: Vec::new(),
            time_ms: START_MS,
            last_task_started: 0,
        };
        h.push(Ev::RunStarted(pb::RunStarted {
            workflow_type: workflow_type.to_owned(),
            workflow_id: "wf-1".into(),
            task_queue: "default".into(),
            input: Some(payload::encode(input).expect("test input encodes")),
            random_seed: seed,
            parent: None,
            ..Default::default()
        }));
        h
    }

    /// All events so far.
    pub fn events(&self) -> &[pb::HistoryEvent] {
        &self.events
    }

    /// The events after `seq` (what the server sends a worker that holds the run up to
    /// `seq`).
    pub fn events_after(&self, seq: u64) -> Vec<pb::HistoryEvent> {
        self.events[usize::try_from(seq)
            .unwrap_or(usize::MAX)
            .min(self.events.len())..]
            .to_vec()
    }

    /// Seq of the last event (0 when empty).
    pub fn last_seq(&self) -> u64 {
        self.events.len() as u64
    }

    /// Moves the clock forward.
    pub fn advance(&mut self, ms: i64) -> &mut Self {
        self.time_ms += ms;
        self
    }

    /// Appends one event, with the next seq and time.
    pub fn push(&mut self, attributes: Ev) -> &mut Self {
        let kind = event_kind(&attributes);
        let seq = self.events.len() as u64 + 1;
        self.events.push(pb::HistoryEvent {
            seq,
            time_ms: self.time_ms,
            hash: Vec::new(),
            kind: kind as i32,
            attributes: Some(attributes),
        });
        self.time_ms += 1;
        self
    }

    /// WorkflowTaskScheduled and WorkflowTaskStarted: a new workflow task, in flight.
    pub fn start_task(&mut self) -> &mut Self {
        self.push(Ev::WorkflowTaskScheduled(pb::WorkflowTaskScheduled {
            task_queue: "default".into(),
            attempt: 1,
            not_before_ms: 0,
        }));
        let scheduled_seq = self.last_seq();
        self.push(Ev::WorkflowTaskStarted(pb::WorkflowTaskStarted {
            scheduled_seq,
            worker: "test-worker".into(),
            ..Default::default()
        }));
        self.last_task_started = self.last_seq();
        self
    }

    /// WorkflowTaskCompleted of the task in flight, then the events of its commands, as
    /// the server appends them in one write.
    pub fn complete_task(&mut self, commands: &[pb::Command]) -> &mut Self {
        self.complete_task_with(commands, |_| Vec::new())
    }

    /// Like [`HistoryBuilder::complete_task`], with the events the server adds in reaction
    /// to a command (`react`) recorded right after that command's event, in the same write:
    /// e.g. ActivityCancelled after the ActivityCancelRequested of an activity no worker
    /// holds.
    pub fn complete_task_with(
        &mut self,
        commands: &[pb::Command],
        mut react: impl FnMut(&pb::Command) -> Vec<Ev>,
    ) -> &mut Self {
        self.push(Ev::WorkflowTaskCompleted(pb::WorkflowTaskCompleted {
            started_seq: self.last_task_started,
            worker: "test-worker".into(),
        }));
        for c in commands {
            let fire_at = self.time_ms;
            self.push(command_event(c, fire_at));
            for reaction in react(c) {
                self.push(reaction);
            }
        }
        self
    }

    /// WorkflowTaskTimedOut of the task in flight (e.g. its worker or the server went away).
    pub fn task_timed_out(&mut self) -> &mut Self {
        self.push(Ev::WorkflowTaskTimedOut(pb::WorkflowTaskTimedOut {
            started_seq: self.last_task_started,
        }))
    }

    /// ActivityStarted of activity `seq` (recorded before any attempt runs).
    pub fn activity_started(&mut self, seq: u32) -> &mut Self {
        self.push(Ev::ActivityStarted(pb::ActivityStarted {
            command_seq: seq,
            attempt: 1,
            worker: "test-worker".into(),
            ..Default::default()
        }))
    }

    /// WorkflowTaskFailed of the task in flight.
    pub fn fail_task(&mut self, cause: pb::WorkflowTaskFailCause, message: &str) -> &mut Self {
        self.push(Ev::WorkflowTaskFailed(pb::WorkflowTaskFailed {
            started_seq: self.last_task_started,
            cause: cause as i32,
            message: message.into(),
            worker: "test-worker".into(),
        }))
    }

    /// ActivityCompleted of activity `seq` with `result`.
    pub fn activity_completed(&mut self, seq: u32, result: &impl Serialize) -> &mut Self {
        self.push(Ev::ActivityCompleted(pb::ActivityCompleted {
            command_seq: seq,
            attempt: 1,
            result: Some(payload::encode(result).expect("test result encodes")),
            ..Default::default()
        }))
    }

    /// ActivityFailed of activity `seq`; `retry_at_ms` 0 makes it final.
    pub fn activity_failed(&mut self, seq: u32, message: &str, retry_at_ms: i64) -> &mut Self {
        self.push(Ev::ActivityFailed(pb::ActivityFailed {
            command_seq: seq,
            attempt: 1,
            failure: Some(pb::Failure {
                message: message.into(),
                r#type: "Error".into(),
                non_retryable: false,
                details: String::new(),
            }),
            retry_at_ms,
            duration_ms: 1,
            ..Default::default()
        }))
    }

    /// ActivityTimedOut (start-to-close) of activity `seq`; `retry_at_ms` 0 makes it final.
    pub fn activity_timed_out(&mut self, seq: u32, retry_at_ms: i64) -> &mut Self {
        self.push(Ev::ActivityTimedOut(pb::ActivityTimedOut {
            command_seq: seq,
            attempt: 1,
            timeout: pb::TimeoutKind::StartToClose as i32,
            retry_at_ms,
        }))
    }

    /// ActivityCancelled of activity `seq`.
    pub fn activity_cancelled(&mut self, seq: u32) -> &mut Self {
        self.push(Ev::ActivityCancelled(pb::ActivityCancelled {
            command_seq: seq,
        }))
    }

    /// TimerFired of timer `seq`.
    pub fn timer_fired(&mut self, seq: u32) -> &mut Self {
        self.push(Ev::TimerFired(pb::TimerFired { command_seq: seq }))
    }

    /// SignalReceived `name` with `input`.
    pub fn signal(&mut self, name: &str, input: &impl Serialize) -> &mut Self {
        self.push(Ev::SignalReceived(pb::SignalReceived {
            name: name.into(),
            input: Some(payload::encode(input).expect("test signal encodes")),
            identity: "test".into(),
            request_id: String::new(),
        }))
    }

    /// ChildRunStarted of the child requested by command `seq` (its run id as
    /// [`command_event`] records it: `child-{seq}`).
    pub fn child_started(&mut self, seq: u32) -> &mut Self {
        self.push(Ev::ChildRunStarted(pb::ChildRunStarted {
            command_seq: seq,
            run_id: format!("child-{seq}"),
        }))
    }

    /// ChildRunStartFailed of the child requested by command `seq`.
    pub fn child_start_failed(&mut self, seq: u32, message: &str) -> &mut Self {
        self.push(Ev::ChildRunStartFailed(pb::ChildRunStartFailed {
            command_seq: seq,
            failure: Some(pb::Failure {
                message: message.into(),
                r#type: "WorkflowIdInUse".into(),
                non_retryable: true,
                details: String::new(),
            }),
        }))
    }

    /// ChildRunClosed of the child of command `seq`, completed with `result`.
    pub fn child_completed(&mut self, seq: u32, result: &impl Serialize) -> &mut Self {
        self.push(Ev::ChildRunClosed(pb::ChildRunClosed {
            command_seq: seq,
            status: pb::RunStatus::Completed as i32,
            result: Some(payload::encode(result).expect("test result encodes")),
            ..Default::default()
        }))
    }

    /// ChildRunClosed of the child of command `seq`, failed with `message`.
    pub fn child_failed(&mut self, seq: u32, message: &str) -> &mut Self {
        self.push(Ev::ChildRunClosed(pb::ChildRunClosed {
            command_seq: seq,
            status: pb::RunStatus::Failed as i32,
            failure: Some(pb::Failure {
                message: message.into(),
                r#type: "Error".into(),
                non_retryable: true,
                details: String::new(),
            }),
            ..Default::default()
        }))
    }

    /// ChildRunClosed of the child of command `seq`, ended without a result (`status`:
    /// cancelled, terminated, timed out or continued as new).
    pub fn child_ended(&mut self, seq: u32, status: pb::RunStatus) -> &mut Self {
        self.push(Ev::ChildRunClosed(pb::ChildRunClosed {
            command_seq: seq,
            status: status as i32,
            ..Default::default()
        }))
    }

    /// An update asked for by a caller (`UpdateRun`).
    pub fn update(&mut self, update_id: &str, name: &str, input: &impl Serialize) -> &mut Self {
        self.push(Ev::UpdateRequested(pb::UpdateRequested {
            update_id: update_id.to_owned(),
            name: name.to_owned(),
            input: Some(payload::encode(input).expect("test input encodes")),
            identity: "test".into(),
        }))
    }

    /// RunSignalResolved of the signal to another run asked for by command `seq`.
    pub fn signal_resolved(&mut self, seq: u32, delivered: bool, message: &str) -> &mut Self {
        self.push(Ev::RunSignalResolved(pb::RunSignalResolved {
            command_seq: seq,
            delivered,
            message: message.into(),
        }))
    }

    /// CancelRequested.
    pub fn cancel_requested(&mut self) -> &mut Self {
        self.push(Ev::CancelRequested(pb::CancelRequested {
            reason: "test".into(),
            identity: "test".into(),
        }))
    }
}

/// The event the server records for an accepted command (`now_ms` dates timers).
pub fn command_event(command: &pb::Command, now_ms: i64) -> Ev {
    let seq = command.seq;
    match command.command.clone() {
        Some(Cmd::ScheduleActivity(c)) => Ev::ActivityScheduled(pb::ActivityScheduled {
            command_seq: seq,
            activity_type: c.activity_type,
            input: c.input,
            options: c.options,
        }),
        Some(Cmd::StartTimer(c)) => Ev::TimerStarted(pb::TimerStarted {
            command_seq: seq,
            fire_at_ms: now_ms.saturating_add(i64::try_from(c.duration_ms).unwrap_or(i64::MAX)),
        }),
        Some(Cmd::CancelTimer(c)) => Ev::TimerCancelled(pb::TimerCancelled {
            command_seq: seq,
            timer_id: c.timer_id,
        }),
        Some(Cmd::WaitSignal(c)) => Ev::SignalWaitStarted(pb::SignalWaitStarted {
            command_seq: seq,
            name: c.name,
            question: c.question,
            choices: c.choices,
        }),
        Some(Cmd::ReportProgress(c)) => Ev::ProgressReported(pb::ProgressReported {
            command_seq: seq,
            done: c.done,
            total: c.total,
            message: c.message,
        }),
        Some(Cmd::RecordPartialResult(c)) => Ev::PartialResultRecorded(pb::PartialResultRecorded {
            command_seq: seq,
            result: c.result,
        }),
        Some(Cmd::CancelActivity(c)) => Ev::ActivityCancelRequested(pb::ActivityCancelRequested {
            command_seq: seq,
            activity_id: c.activity_id,
        }),
        Some(Cmd::CompleteRun(c)) => Ev::RunCompleted(pb::RunCompleted {
            command_seq: seq,
            result: c.result,
        }),
        Some(Cmd::FailRun(c)) => Ev::RunFailed(pb::RunFailed {
            command_seq: seq,
            failure: c.failure,
        }),
        Some(Cmd::CancelRun(c)) => Ev::RunCancelled(pb::RunCancelled {
            command_seq: seq,
            partial_result: c.partial_result,
        }),
        Some(Cmd::ContinueAsNew(c)) => Ev::RunContinuedAsNew(pb::RunContinuedAsNew {
            command_seq: seq,
            new_run_id: format!("continued-{seq}"),
            input: c.input,
            keep_build: c.keep_build,
        }),
        Some(Cmd::StartChild(c)) => Ev::ChildRunRequested(pb::ChildRunRequested {
            command_seq: seq,
            child_run_id: format!("child-{seq}"),
            workflow_type: c.workflow_type,
            workflow_id: c.workflow_id,
            task_queue: c.task_queue,
            input: c.input,
            run_timeout_ms: c.run_timeout_ms,
            budget: c.budget,
            parent_close_policy: c.parent_close_policy,
        }),
        Some(Cmd::SignalRun(c)) => Ev::RunSignalRequested(pb::RunSignalRequested {
            command_seq: seq,
            run_id: c.run_id,
            name: c.name,
            input: c.input,
        }),
        Some(Cmd::RecordPatch(c)) => Ev::PatchMarker(pb::PatchMarker {
            command_seq: seq,
            patch_id: c.patch_id,
        }),
        Some(Cmd::UpsertSearchAttributes(c)) => {
            Ev::SearchAttributesUpserted(pb::SearchAttributesUpserted {
                command_seq: seq,
                attributes: c.attributes,
            })
        }
        Some(Cmd::CompleteUpdate(c)) => Ev::UpdateCompleted(pb::UpdateCompleted {
            command_seq: seq,
            update_id: c.update_id,
            result: c.result,
        }),
        Some(Cmd::RejectUpdate(c)) => Ev::UpdateRejected(pb::UpdateRejected {
            command_seq: seq,
            update_id: c.update_id,
            reason: c.reason,
        }),
        None => Ev::RunTimedOut(pb::RunTimedOut::default()),
    }
}

/// The kind tag of an event's attributes.
pub fn event_kind(attributes: &Ev) -> pb::EventKind {
    use pb::EventKind as K;
    match attributes {
        Ev::RunStarted(_) => K::RunStarted,
        Ev::WorkflowTaskScheduled(_) => K::WorkflowTaskScheduled,
        Ev::WorkflowTaskStarted(_) => K::WorkflowTaskStarted,
        Ev::WorkflowTaskCompleted(_) => K::WorkflowTaskCompleted,
        Ev::WorkflowTaskFailed(_) => K::WorkflowTaskFailed,
        Ev::WorkflowTaskTimedOut(_) => K::WorkflowTaskTimedOut,
        Ev::ActivityScheduled(_) => K::ActivityScheduled,
        Ev::ActivityStarted(_) => K::ActivityStarted,
        Ev::ActivityCompleted(_) => K::ActivityCompleted,
        Ev::ActivityFailed(_) => K::ActivityFailed,
        Ev::ActivityTimedOut(_) => K::ActivityTimedOut,
        Ev::ActivityCancelRequested(_) => K::ActivityCancelRequested,
        Ev::ActivityCancelled(_) => K::ActivityCancelled,
        Ev::ActivityOutcomeUnknown(_) => K::ActivityOutcomeUnknown,
        Ev::ActivityReconciled(_) => K::ActivityReconciled,
        Ev::ActivityProgress(_) => K::ActivityProgress,
        Ev::TimerStarted(_) => K::TimerStarted,
        Ev::TimerFired(_) => K::TimerFired,
        Ev::TimerCancelled(_) => K::TimerCancelled,
        Ev::SignalWaitStarted(_) => K::SignalWaitStarted,
        Ev::SignalReceived(_) => K::SignalReceived,
        Ev::ProgressReported(_) => K::ProgressReported,
        Ev::PartialResultRecorded(_) => K::PartialResultRecorded,
        Ev::CancelRequested(_) => K::CancelRequested,
        Ev::BudgetUpdated(_) => K::BudgetUpdated,
        Ev::BudgetExceeded(_) => K::BudgetExceeded,
        Ev::ActivityUsageReported(_) => K::ActivityUsageReported,
        Ev::RunCompleted(_) => K::RunCompleted,
        Ev::RunFailed(_) => K::RunFailed,
        Ev::ChildRunRequested(_) => K::ChildRunRequested,
        Ev::ChildRunStarted(_) => K::ChildRunStarted,
        Ev::ChildRunStartFailed(_) => K::ChildRunStartFailed,
        Ev::ChildRunClosed(_) => K::ChildRunClosed,
        Ev::RunSignalRequested(_) => K::RunSignalRequested,
        Ev::RunSignalResolved(_) => K::RunSignalResolved,
        Ev::PatchMarker(_) => K::PatchMarker,
        Ev::VersioningSet(_) => K::VersioningSet,
        Ev::BuildPinned(_) => K::BuildPinned,
        Ev::SearchAttributesUpserted(_) => K::SearchAttributesUpserted,
        Ev::MemoRecorded(_) => K::MemoRecorded,
        Ev::ApprovalRequested(_) => K::ApprovalRequested,
        Ev::ActivityApproved(_) => K::ActivityApproved,
        Ev::ActivityDenied(_) => K::ActivityDenied,
        Ev::RunCancelled(_) => K::RunCancelled,
        Ev::RunTerminated(_) => K::RunTerminated,
        Ev::RunTimedOut(_) => K::RunTimedOut,
        Ev::RunContinuedAsNew(_) => K::RunContinuedAsNew,
        Ev::UpdateRequested(_) => K::UpdateRequested,
        Ev::UpdateCompleted(_) => K::UpdateCompleted,
        Ev::UpdateRejected(_) => K::UpdateRejected,
    }
}

/// A run driven in memory, the way a worker and the server would drive it: each
/// [`TestRun::step`] starts a workflow task, hands the instance only the events it has not
/// seen, and records the task's commands as the server would. Add result events between
/// steps with [`TestRun::history`].
pub struct TestRun {
    history: HistoryBuilder,
    instance: crate::workflow::WorkflowInstance,
}

impl TestRun {
    /// A run of `workflow_type` with `input`, against the workflows of `registry`.
    pub fn new(
        registry: crate::workflow::Registry,
        workflow_type: &str,
        input: &impl Serialize,
    ) -> Self {
        TestRun {
            history: HistoryBuilder::new(workflow_type, input),
            instance: crate::workflow::WorkflowInstance::new(
                std::sync::Arc::new(registry),
                "run-1",
            ),
        }
    }

    /// The history, to append result events (activity results, timers, signals...).
    pub fn history(&mut self) -> &mut HistoryBuilder {
        &mut self.history
    }

    /// All events so far.
    pub fn events(&self) -> &[pb::HistoryEvent] {
        self.history.events()
    }

    /// The workflow instance.
    pub fn instance(&self) -> &crate::workflow::WorkflowInstance {
        &self.instance
    }

    /// One workflow task: start it, activate the instance with the new events, record the
    /// returned commands. Returns them.
    pub fn step(&mut self) -> Result<Vec<pb::Command>, crate::workflow::Error> {
        self.step_with(|_| Vec::new())
    }

    /// Like [`TestRun::step`], with the server's reactions to the task's commands recorded
    /// between them ([`HistoryBuilder::complete_task_with`]).
    pub fn step_with(
        &mut self,
        react: impl FnMut(&pb::Command) -> Vec<Ev>,
    ) -> Result<Vec<pb::Command>, crate::workflow::Error> {
        self.history.start_task();
        let delta = self.history.events_after(self.instance.last_seq());
        let commands = self.instance.activate(delta)?;
        self.history.complete_task_with(&commands, react);
        Ok(commands)
    }
}
