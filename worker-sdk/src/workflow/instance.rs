//! [`WorkflowInstance`]: one run's workflow future and the executor that advances it over
//! batches of history events.
//!
//! An activation walks a batch in history order. Result events resolve futures; command
//! events are matched against the commands the code issued at the same seq. At every
//! workflow task the history shows as completed (and at the end of the batch, the current
//! task) the workflow is polled until it blocks, with `now()` set to that task's start. The
//! commands issued that the history does not hold yet are the activation's output.
//!
//! Cost: one pass over the batch, O(1) work per event, so a cached instance advanced with
//! only the new events pays nothing for the events it saw before.

use std::collections::HashSet;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll, Wake, Waker};

use futures::future::LocalBoxFuture;
use steadfast_proto::v1 as pb;
use steadfast_proto::v1::command::Command as Cmd;
use steadfast_proto::v1::history_event::Attributes as Ev;

use super::child::ChildError;
use super::commands::{command_seq, describe_command, describe_event, matches};
use super::context::{Inner, WorkflowContext};
use super::handlers::{QueryError, UpdateFuture, UpdateRequest, UpdateStart};
use super::patch::markers_by_task;
use super::state::{Resolved, RunState};
use super::{Error, Registry, WorkflowError};
use crate::{ActivityError, payload};

/// Polls of the workflow future in one activation before it counts as a livelock.
pub const MAX_POLLS_PER_ACTIVATION: usize = 100_000;

/// The longest prefix of a panic message reported ([`Error::Panic`]).
pub const PANIC_MESSAGE_CHARS_MAX: usize = 500;

/// When the poll of workflow code in progress on a thread began, for a watchdog on another
/// thread: ms since `base`, plus one; 0 while no workflow code runs.
#[derive(Debug)]
pub(crate) struct PollClock {
    base: std::time::Instant,
    since: std::sync::atomic::AtomicU64,
}

impl PollClock {
    pub(crate) fn new() -> Self {
        PollClock {
            base: std::time::Instant::now(),
            since: std::sync::atomic::AtomicU64::new(0),
        }
    }

    fn now(&self) -> u64 {
        u64::try_from(self.base.elapsed().as_millis()).unwrap_or(u64::MAX - 1) + 1
    }

    fn enter(&self) {
        self.since.store(self.now(), Ordering::Release);
    }

    fn leave(&self) {
        self.since.store(0, Ordering::Release);
    }

    /// How long the workflow code now running has run without yielding.
    pub(crate) fn running_for(&self) -> Option<std::time::Duration> {
        match self.since.load(Ordering::Acquire) {
            0 => None,
            since => Some(std::time::Duration::from_millis(
                self.now().saturating_sub(since),
            )),
        }
    }
}

/// What a history says where it has no command.
const NOTHING: &str = "nothing";

/// The waker of the top-level future: it only raises a flag, and the executor polls again
/// while the flag is up.
#[derive(Default)]
struct WakeFlag(AtomicBool);

impl Wake for WakeFlag {
    fn wake(self: Arc<Self>) {
        self.0.store(true, Ordering::Release);
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.0.store(true, Ordering::Release);
    }
}

struct Running {
    ctx: WorkflowContext,
    /// `None` once the workflow returned.
    future: Option<LocalBoxFuture<'static, Result<pb::Payload, WorkflowError>>>,
    /// Update handlers running, by update id, in the order they started.
    updates: Vec<(String, UpdateFuture)>,
}

/// One run's workflow code, advanced activation by activation. `!Send`: keep it on one
/// thread.
pub struct WorkflowInstance {
    registry: Arc<Registry>,
    run_id: String,
    running: Option<Running>,
    flag: Arc<WakeFlag>,
    waker: Waker,
    /// Seq of the last event applied.
    last_seq: u64,
    /// Seq of the WorkflowTaskStarted the code was last polled at.
    last_task_started: u64,
    /// Between a WorkflowTaskCompleted and the next WorkflowTaskStarted: the commands of the
    /// completed task are recorded in there, possibly interleaved with events the server
    /// added in reaction to them.
    in_command_block: bool,
    /// Commands the history confirmed, kept only when asked (the replayer's report).
    confirmed: Option<Vec<pb::Command>>,
    /// Set by the first error; the instance must be dropped.
    failed: Option<Error>,
    polls: u64,
    clock: Option<Arc<PollClock>>,
}

impl Drop for WorkflowInstance {
    fn drop(&mut self) {
        // The workflow future's destructors are user code (Drop of whatever it holds): a
        // panic there must not take the workflow thread, and its other runs, down with it.
        if let Some(running) = self.running.take() {
            let _ = catch_unwind(AssertUnwindSafe(move || drop(running)));
        }
    }
}

impl WorkflowInstance {
    /// An instance of run `run_id` that has seen no event yet; its workflow type is read
    /// from the RunStarted event.
    pub fn new(registry: Arc<Registry>, run_id: impl Into<String>) -> Self {
        let flag = Arc::new(WakeFlag::default());
        WorkflowInstance {
            registry,
            run_id: run_id.into(),
            running: None,
            waker: Waker::from(Arc::clone(&flag)),
            flag,
            last_seq: 0,
            last_task_started: 0,
            in_command_block: false,
            confirmed: None,
            failed: None,
            polls: 0,
            clock: None,
        }
    }

    /// Marks every poll of the workflow code on `clock`, for a watchdog on another thread.
    pub(crate) fn set_poll_clock(&mut self, clock: Arc<PollClock>) {
        self.clock = Some(clock);
    }

    /// Keeps every command the history confirms, for [`WorkflowInstance::confirmed_commands`].
    pub fn record_commands(&mut self) {
        self.confirmed.get_or_insert_with(Vec::new);
    }

    /// The commands the history confirmed so far, if recording
    /// ([`WorkflowInstance::record_commands`]).
    pub fn confirmed_commands(&self) -> &[pb::Command] {
        self.confirmed.as_deref().unwrap_or_default()
    }

    /// The run id.
    pub fn run_id(&self) -> &str {
        &self.run_id
    }

    /// Seq of the last event applied (0 before any).
    pub fn last_seq(&self) -> u64 {
        self.last_seq
    }

    /// Whether the workflow returned (its terminal command is issued).
    pub fn is_finished(&self) -> bool {
        self.running.as_ref().is_some_and(|r| r.future.is_none())
    }

    /// How many times the workflow future was polled, over the instance's life.
    pub fn polls(&self) -> u64 {
        self.polls
    }

    /// Applies the next events of the run (seq `last_seq() + 1` onward) and advances the
    /// code. Returns the commands the history does not hold yet: the workflow task's
    /// completion. After an error the instance is unusable and must be dropped.
    pub fn activate(&mut self, events: Vec<pb::HistoryEvent>) -> Result<Vec<pb::Command>, Error> {
        if let Some(e) = &self.failed {
            return Err(e.clone());
        }
        match self.activate_inner(events) {
            Ok(()) => Ok(self.new_commands()),
            Err(e) => {
                self.failed = Some(e.clone());
                if let Some(r) = &mut self.running {
                    // Drop the workflow future now; its destructors may panic too.
                    let future = r.future.take();
                    let _ = catch_unwind(AssertUnwindSafe(move || drop(future)));
                }
                Err(e)
            }
        }
    }

    /// Answers query `name` with the handler the workflow registered, from the state the
    /// instance reached. Reads only: nothing is issued, the instance stays usable.
    pub fn query(&self, name: &str, input: &pb::Payload) -> Result<pb::Payload, QueryError> {
        if let Some(e) = &self.failed {
            return Err(QueryError::Replay(e.to_string()));
        }
        let Some(running) = &self.running else {
            return Err(QueryError::Replay("the run has not started".into()));
        };
        // Borrowed for the handler's whole run: a handler registering another one panics
        // (caught), instead of changing the set it runs from.
        let queries = running.ctx.inner.queries.borrow();
        queries.answer(name, input)
    }

    /// The change ids the code asked `ctx.patched` about so far, each with whether this run
    /// takes the new branch (the history holds its marker, or the point was passed live).
    pub fn patch_decisions(&self) -> Vec<(String, bool)> {
        match &self.running {
            Some(r) => r.ctx.state().patches.asked(),
            None => Vec::new(),
        }
    }

    /// Checks that a history ending here is complete: the commands of its last completed
    /// task were all recorded. Used by the replayer at the end of a closed history.
    pub fn finish_history(&mut self) -> Result<(), Error> {
        self.end_command_block()
    }

    fn new_commands(&self) -> Vec<pb::Command> {
        match &self.running {
            Some(r) => r.ctx.state().pending.iter().cloned().collect(),
            None => Vec::new(),
        }
    }

    fn activate_inner(&mut self, events: Vec<pb::HistoryEvent>) -> Result<(), Error> {
        // The tasks this batch shows as completed; only at those (and at the batch's end) is
        // the code polled, as it was when the history was written. Ascending, like the
        // events that name them.
        let completed: Vec<u64> = events
            .iter()
            .filter_map(|e| match &e.attributes {
                Some(Ev::WorkflowTaskCompleted(c)) => Some(c.started_seq),
                _ => None,
            })
            .collect();
        let mut next_completed = 0usize;
        // Taken before the events are consumed: `patched()` must know, while a recorded task
        // runs, whether that task's command block holds its marker.
        let mut markers = markers_by_task(&events);
        let count = events.len();
        let mut polled_last = false;
        for (i, event) in events.into_iter().enumerate() {
            if event.seq != self.last_seq + 1 {
                return Err(Error::BadHistory(format!(
                    "expected event seq {}, got {}",
                    self.last_seq + 1,
                    event.seq
                )));
            }
            self.last_seq = event.seq;
            polled_last = false;
            let Some(attributes) = event.attributes else {
                // An event kind this SDK does not know: nothing to resolve.
                continue;
            };
            if let Some(seq) = command_seq(&attributes) {
                self.match_command(seq, &attributes)?;
                continue;
            }
            // A non-command event does not end the command block: the server may record its
            // own reaction to a command (an activity no worker holds is cancelled at once)
            // between that command's event and the next one. Such events are results, applied
            // in history order; the code sees them at the next task start, as it did live.
            match attributes {
                Ev::RunStarted(started) => self.start(started)?,
                Ev::WorkflowTaskStarted(_) => {
                    // No command of the previous task can come after the next task started.
                    self.end_command_block()?;
                    while next_completed < completed.len() && completed[next_completed] < event.seq
                    {
                        next_completed += 1;
                    }
                    let completes = completed.get(next_completed) == Some(&event.seq);
                    if completes || i + 1 == count {
                        let recorded =
                            completes.then(|| markers.remove(&event.seq).unwrap_or_default());
                        self.poll_at(event.seq, event.time_ms, recorded)?;
                        polled_last = true;
                    }
                }
                Ev::WorkflowTaskCompleted(c) => {
                    if c.started_seq != self.last_task_started {
                        return Err(Error::Stale(c.started_seq));
                    }
                    self.in_command_block = true;
                }
                Ev::WorkflowTaskFailed(f) if f.started_seq == self.last_task_started => {
                    return Err(Error::Stale(f.started_seq));
                }
                Ev::WorkflowTaskTimedOut(t) if t.started_seq == self.last_task_started => {
                    return Err(Error::Stale(t.started_seq));
                }
                other => self.apply_result(other)?,
            }
        }
        if !polled_last {
            // A history that does not end with a task start (the replayer's input): show the
            // code what came after its last task, as the next task would.
            self.end_command_block()?;
            let time_ms = self
                .running
                .as_ref()
                .map(|r| r.ctx.state().now_ms)
                .unwrap_or(0);
            // What the code does now goes past the history: a new task, live.
            self.poll_at(self.last_task_started, time_ms, None)?;
        }
        Ok(())
    }

    fn start(&mut self, started: pb::RunStarted) -> Result<(), Error> {
        if self.running.is_some() {
            return Err(Error::BadHistory("a second RunStarted".into()));
        }
        let f = self
            .registry
            .workflow(&started.workflow_type)
            .ok_or_else(|| Error::UnknownWorkflowType(started.workflow_type.clone()))?
            .clone();
        let workflow_id = if started.workflow_id.is_empty() {
            self.run_id.clone()
        } else {
            started.workflow_id
        };
        let ctx = WorkflowContext::new(Inner {
            run_id: self.run_id.clone(),
            workflow_id,
            workflow_type: started.workflow_type,
            state: RunState::new(
                started.random_seed,
                Arc::clone(self.registry.effects()),
                self.registry.continue_as_new_threshold(),
            )
            .into(),
            queries: Default::default(),
            updates: Default::default(),
        });
        let future = catch_unwind(AssertUnwindSafe(|| f(ctx.clone(), started.input)))
            .map_err(|p| panic_error(&*p))?;
        self.running = Some(Running {
            ctx,
            future: Some(future),
            updates: Vec::new(),
        });
        Ok(())
    }

    fn running(&self) -> Result<&Running, Error> {
        self.running
            .as_ref()
            .ok_or_else(|| Error::BadHistory("the history does not start with RunStarted".into()))
    }

    fn match_command(&mut self, seq: u32, event: &Ev) -> Result<(), Error> {
        let running = self.running()?;
        let mut state = running.ctx.state();
        let front_seq = state.pending.front().map(|c| c.seq);
        match front_seq {
            Some(s) if s == seq => {
                let command = state.pending.front().and_then(|c| c.command.as_ref());
                if !command.is_some_and(|c| matches(c, event)) {
                    return Err(Error::Nondeterminism {
                        seq,
                        history: describe_event(event),
                        code: describe_command(&state.pending[0]),
                    });
                }
                let command = state.pending.pop_front();
                drop(state);
                if let (Some(confirmed), Some(c)) = (&mut self.confirmed, command) {
                    confirmed.push(c);
                }
                Ok(())
            }
            Some(s) if s < seq => Err(Error::Nondeterminism {
                seq: s,
                history: NOTHING.into(),
                code: describe_command(&state.pending[0]),
            }),
            _ => Err(Error::Nondeterminism {
                seq,
                history: describe_event(event),
                code: NOTHING.into(),
            }),
        }
    }

    /// The commands of a task follow its WorkflowTaskCompleted (in seq order, possibly
    /// interleaved with server-made events); when the next task starts or the history ends,
    /// every command the code issued in that task must have been recorded.
    fn end_command_block(&mut self) -> Result<(), Error> {
        if !std::mem::take(&mut self.in_command_block) {
            return Ok(());
        }
        let running = self.running()?;
        let state = running.ctx.state();
        match state.pending.front() {
            None => Ok(()),
            Some(c) => Err(Error::Nondeterminism {
                seq: c.seq,
                history: NOTHING.into(),
                code: describe_command(c),
            }),
        }
    }

    fn apply_result(&mut self, event: Ev) -> Result<(), Error> {
        let running = match &self.running {
            Some(r) => r,
            // Workflow-task bookkeeping before RunStarted would be a bad history, but it is
            // harmless: there is nothing to resolve.
            None => return Ok(()),
        };
        let mut state = running.ctx.state();
        match event {
            Ev::ActivityCompleted(e) => {
                let result = e.result.unwrap_or_default();
                state.resolve(e.command_seq, Resolved::Activity(Ok(result)));
            }
            Ev::ActivityFailed(e) if e.retry_at_ms == 0 => {
                let error = ActivityError::from_failure(e.failure.as_ref());
                state.resolve(e.command_seq, Resolved::Activity(Err(error)));
            }
            Ev::ActivityTimedOut(e) if e.retry_at_ms == 0 => {
                state.resolve(
                    e.command_seq,
                    Resolved::Activity(Err(ActivityError::TimedOut)),
                );
            }
            Ev::ActivityCancelled(e) => {
                state.resolve(
                    e.command_seq,
                    Resolved::Activity(Err(ActivityError::Cancelled)),
                );
            }
            Ev::TimerFired(e) => state.resolve(e.command_seq, Resolved::TimerFired),
            Ev::ChildRunStarted(e) => state.child_started(e.command_seq, Ok(e.run_id)),
            Ev::ChildRunStartFailed(e) => {
                let message = e.failure.map(|f| f.message).unwrap_or_default();
                let err = ChildError::StartFailed { message };
                state.child_started(e.command_seq, Err(err.clone()));
                state.resolve(e.command_seq, Resolved::Child(Err(err)));
            }
            Ev::ChildRunClosed(e) => {
                let status = e.status();
                let r = match status {
                    pb::RunStatus::Completed => Ok(e.result.unwrap_or_default()),
                    pb::RunStatus::Failed => {
                        let f = e.failure.unwrap_or_default();
                        Err(ChildError::Failed {
                            message: f.message,
                            error_type: f.r#type,
                        })
                    }
                    other => Err(ChildError::Ended(
                        other
                            .as_str_name()
                            .trim_start_matches("RUN_STATUS_")
                            .to_ascii_lowercase(),
                    )),
                };
                state.resolve(e.command_seq, Resolved::Child(r));
            }
            Ev::RunSignalResolved(e) => {
                let r = if e.delivered {
                    Ok(pb::Payload::default())
                } else {
                    Err(ChildError::NotDelivered(e.message))
                };
                state.resolve(e.command_seq, Resolved::Child(r));
            }
            Ev::SignalReceived(e) => state.signal_received(&e.name, e.input.unwrap_or_default()),
            Ev::CancelRequested(_) => state.request_cancel(),
            Ev::UpdateRequested(e) => {
                drop(state);
                running
                    .ctx
                    .inner
                    .updates
                    .borrow_mut()
                    .requested
                    .push_back(UpdateRequest {
                        update_id: e.update_id,
                        name: e.name,
                        input: e.input.unwrap_or_default(),
                    });
            }
            // Informational: retries, attempts, progress, budgets, task bookkeeping.
            _ => {}
        }
        Ok(())
    }

    /// Polls the workflow until it blocks, as the task started at `task_started` (at
    /// `time_ms`) would. `recorded`: the patch markers of the task's command block when the
    /// history holds its completion, `None` when the task is live.
    fn poll_at(
        &mut self,
        task_started: u64,
        time_ms: i64,
        recorded: Option<HashSet<String>>,
    ) -> Result<(), Error> {
        self.last_task_started = task_started;
        let Some(running) = &mut self.running else {
            return Err(Error::BadHistory(
                "the history does not start with RunStarted".into(),
            ));
        };
        {
            let mut state = running.ctx.state();
            state.now_ms = time_ms;
            state.history_events = task_started;
            state.patches.begin_task(recorded);
        }
        if running.future.is_none() {
            return Ok(());
        }
        let mut cx = Context::from_waker(&self.waker);
        for _ in 0..MAX_POLLS_PER_ACTIVATION {
            let Some(future) = running.future.as_mut() else {
                return Ok(());
            };
            self.flag.0.store(false, Ordering::Release);
            self.polls += 1;
            if let Some(c) = &self.clock {
                c.enter();
            }
            let polled = catch_unwind(AssertUnwindSafe(|| future.as_mut().poll(&mut cx)));
            if let Some(c) = &self.clock {
                c.leave();
            }
            match polled {
                Ok(Poll::Ready(outcome)) => {
                    // Dropped here, inside the guard: the future's destructors are user code.
                    let done = running.future.take();
                    catch_unwind(AssertUnwindSafe(move || drop(done)))
                        .map_err(|p| panic_error(&*p))?;
                    finish(&running.ctx, outcome);
                    return Ok(());
                }
                Ok(Poll::Pending) => {
                    // Updates run beside the workflow, after it in every round: a fixed order,
                    // so a replay issues their commands at the same seqs.
                    let advanced = advance_updates(
                        &running.ctx,
                        &mut running.updates,
                        &self.clock,
                        &self.waker,
                    )?;
                    if advanced || self.flag.0.load(Ordering::Acquire) {
                        continue;
                    }
                    if !running.ctx.state().can_be_woken() {
                        return Err(Error::ForeignAwait);
                    }
                    return Ok(());
                }
                Err(p) => return Err(panic_error(&*p)),
            }
        }
        Err(Error::Livelock(MAX_POLLS_PER_ACTIVATION))
    }
}

/// Starts (or rejects) the updates delivered since the last round and polls the running
/// handlers once; a handler that returned answers its update. True when anything started or
/// finished (the workflow may have more to do).
fn advance_updates(
    ctx: &WorkflowContext,
    updates: &mut Vec<(String, UpdateFuture)>,
    clock: &Option<Arc<PollClock>>,
    waker: &Waker,
) -> Result<bool, Error> {
    let mut advanced = false;
    loop {
        let req = ctx.inner.updates.borrow_mut().requested.pop_front();
        let Some(req) = req else { break };
        advanced = true;
        let started = catch_unwind(AssertUnwindSafe(|| ctx.inner.updates.borrow().start(&req)))
            .map_err(|p| panic_error(&*p))?;
        match started {
            UpdateStart::Run(f) => updates.push((req.update_id, f)),
            UpdateStart::Reject(reason) => {
                ctx.state()
                    .issue(Cmd::RejectUpdate(pb::RejectUpdateCommand {
                        update_id: req.update_id,
                        reason,
                    }));
            }
        }
    }
    let mut cx = Context::from_waker(waker);
    let mut i = 0;
    while i < updates.len() {
        // Polled with the workflow's waker: any result they wait for raises the same flag.
        let polled = {
            let (_, f) = &mut updates[i];
            if let Some(c) = clock {
                c.enter();
            }
            let r = catch_unwind(AssertUnwindSafe(|| f.as_mut().poll(&mut cx)));
            if let Some(c) = clock {
                c.leave();
            }
            r.map_err(|p| panic_error(&*p))?
        };
        match polled {
            Poll::Ready(outcome) => {
                let (update_id, _) = updates.remove(i);
                advanced = true;
                let command = match outcome {
                    Ok(result) => Cmd::CompleteUpdate(pb::CompleteUpdateCommand {
                        update_id,
                        result: Some(result),
                    }),
                    Err(reason) => Cmd::RejectUpdate(pb::RejectUpdateCommand { update_id, reason }),
                };
                ctx.state().issue(command);
            }
            Poll::Pending => i += 1,
        }
    }
    Ok(advanced)
}

/// Issues the terminal command for what the workflow returned.
fn finish(ctx: &WorkflowContext, outcome: Result<pb::Payload, WorkflowError>) {
    let mut state = ctx.state();
    let fail = |message: String, error_type: String| {
        Cmd::FailRun(pb::FailRunCommand {
            failure: Some(pb::Failure {
                message,
                r#type: error_type,
                non_retryable: true,
                details: String::new(),
            }),
        })
    };
    let command = match outcome {
        Ok(result) => Cmd::CompleteRun(pb::CompleteRunCommand {
            result: Some(result),
        }),
        Err(WorkflowError::Failed {
            message,
            error_type,
        }) => fail(message, error_type),
        Err(WorkflowError::Cancelled { partial }) if state.cancel_requested() => {
            match partial.as_ref().map(payload::encode).transpose() {
                Ok(partial_result) => Cmd::CancelRun(pb::CancelRunCommand { partial_result }),
                Err(e) => fail(
                    format!("cannot encode the partial result: {e}"),
                    "steadfast.EncodeError".into(),
                ),
            }
        }
        Err(WorkflowError::Cancelled { .. }) => fail(
            "the workflow returned Cancelled, but no cancellation was requested".into(),
            "steadfast.CancelledWithoutRequest".into(),
        ),
        Err(WorkflowError::ContinueAsNew(input)) => continue_as_new(&input, false, fail),
        Err(WorkflowError::ContinueAsNewKeepingBuild(input)) => continue_as_new(&input, true, fail),
    };
    state.issue(command);
}

/// The ContinueAsNew command (or the failure to encode its input).
fn continue_as_new(
    input: &serde_json::Value,
    keep_build: bool,
    fail: impl Fn(String, String) -> Cmd,
) -> Cmd {
    match payload::encode(input) {
        Ok(input) => Cmd::ContinueAsNew(pb::ContinueAsNewCommand {
            input: Some(input),
            keep_build,
        }),
        Err(e) => fail(
            format!("cannot encode the new input: {e}"),
            "steadfast.EncodeError".into(),
        ),
    }
}

/// The error for a panic in workflow code, with its message cut to
/// [`PANIC_MESSAGE_CHARS_MAX`] characters.
pub(crate) fn panic_error(p: &(dyn std::any::Any + Send)) -> Error {
    let message = if let Some(s) = p.downcast_ref::<&str>() {
        s
    } else if let Some(s) = p.downcast_ref::<String>() {
        s.as_str()
    } else {
        "(a non-string panic payload)"
    };
    Error::Panic {
        message: super::error::short(message, PANIC_MESSAGE_CHARS_MAX),
    }
}
