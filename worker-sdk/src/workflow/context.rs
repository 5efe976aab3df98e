//! [`WorkflowContext`]: everything deterministic workflow code may ask for.

use std::cell::RefCell;
use std::rc::Rc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::Serialize;
use serde::de::DeserializeOwned;
use steadfast_proto::v1 as pb;
use steadfast_proto::v1::command::Command as Cmd;

use super::WorkflowError;
use super::awaitables::{ActivityFuture, Cancelled, SignalFuture, SignalWithTimeout, Timer};
use super::handlers::{QueryHandlers, UpdateHandlers};
use super::options::{ActivityOptions, WaitSignalOptions, ms};
use super::state::RunState;
use crate::{ActivityError, payload};

pub(crate) struct Inner {
    pub(crate) run_id: String,
    pub(crate) workflow_id: String,
    pub(crate) workflow_type: String,
    pub(crate) state: RefCell<RunState>,
    pub(crate) queries: RefCell<QueryHandlers>,
    pub(crate) updates: RefCell<UpdateHandlers>,
}

/// The handle workflow code uses instead of the outside world: activities, timers,
/// signals, progress, time and randomness, all recorded in or derived from the history so
/// that a replay takes the same path.
///
/// Cheap to clone; `!Send` (a workflow runs on one thread, driven by the SDK's executor).
/// Commands are numbered 1, 2, 3... in the order the code issues them: a method that issues
/// one does so when it is called, not when its future is first polled.
#[derive(Clone)]
pub struct WorkflowContext {
    pub(crate) inner: Rc<Inner>,
}

impl WorkflowContext {
    pub(crate) fn new(inner: Inner) -> Self {
        WorkflowContext {
            inner: Rc::new(inner),
        }
    }

    pub(crate) fn state(&self) -> std::cell::RefMut<'_, RunState> {
        self.inner.state.borrow_mut()
    }

    /// Registers query handler `name`: `steadfast run query RUN name [--input JSON]`,
    /// [`crate::Client::query`] or gRPC `QueryRun` call it with the decoded input and get its
    /// answer. A query is answered by a worker from the instance replayed up to the run's
    /// last recorded step; nothing is written to the history, so the handler must only read
    /// (share state with the workflow through an `Rc<RefCell<..>>`). Register handlers before
    /// the workflow's first await so that every replay has them; registering a name again
    /// replaces the handler.
    ///
    /// ```no_run
    /// # use std::{cell::Cell, rc::Rc};
    /// # use steadfast_sdk::workflow::{WorkflowContext, WorkflowError};
    /// async fn steps(ctx: WorkflowContext, n: u32) -> Result<u32, WorkflowError> {
    ///     let done = Rc::new(Cell::new(0u32));
    ///     let seen = Rc::clone(&done);
    ///     ctx.on_query("progress", move |_: ()| seen.get());
    ///     for i in 0..n {
    ///         let _: u32 = ctx.activity("step", &i).await?;
    ///         done.set(i + 1);
    ///     }
    ///     Ok(done.get())
    /// }
    /// ```
    pub fn on_query<I, O>(&self, name: &str, handler: impl Fn(I) -> O + 'static)
    where
        I: DeserializeOwned,
        O: Serialize,
    {
        self.inner.queries.borrow_mut().insert(name, handler);
    }

    /// Registers update handler `name`: `steadfast run update RUN name --input JSON`,
    /// [`crate::Client::update`] or gRPC `UpdateRun` deliver an input through the history
    /// (UpdateRequested); the handler runs as workflow code (it may run activities, sleep,
    /// change the state the workflow reads) and its result is recorded (UpdateCompleted) and
    /// answered to the caller. Register before the workflow's first await; an update of a
    /// name with no handler is rejected. Keep the workflow running until its updates are
    /// answered: commands after the run's terminal one are refused.
    pub fn on_update<I, O, F, Fut>(&self, name: &str, handler: F)
    where
        I: DeserializeOwned + 'static,
        O: Serialize + 'static,
        F: Fn(I) -> Fut + 'static,
        Fut: std::future::Future<Output = Result<O, WorkflowError>> + 'static,
    {
        self.inner
            .updates
            .borrow_mut()
            .insert::<I, O, F, Fut>(name, None, handler);
    }

    /// Like [`WorkflowContext::on_update`], with a validator that runs first, reading only:
    /// `Err(reason)` rejects the update (UpdateRejected, the caller gets
    /// `[STF-UPDATE001]` with the reason) and the handler never runs, so the workflow is
    /// unchanged.
    pub fn on_update_validated<I, O, V, F, Fut>(&self, name: &str, validator: V, handler: F)
    where
        I: DeserializeOwned + 'static,
        O: Serialize + 'static,
        V: Fn(&I) -> Result<(), String> + 'static,
        F: Fn(I) -> Fut + 'static,
        Fut: std::future::Future<Output = Result<O, WorkflowError>> + 'static,
    {
        self.inner.updates.borrow_mut().insert::<I, O, F, Fut>(
            name,
            Some(Box::new(validator)),
            handler,
        );
    }

    /// The id of this run.
    pub fn run_id(&self) -> &str {
        &self.inner.run_id
    }

    /// The workflow id of this run (the run id when the caller chose none).
    pub fn workflow_id(&self) -> &str {
        &self.inner.workflow_id
    }

    /// The workflow type of this run.
    pub fn workflow_type(&self) -> &str {
        &self.inner.workflow_type
    }

    /// Schedules activity `name` with `input` (issues ScheduleActivity now); await the
    /// future for its result. Adjust it with [`ActivityFuture::options`]. The activity id,
    /// for [`WorkflowContext::cancel_activity`], is [`ActivityFuture::id`].
    ///
    /// The activity's effect is the one registered for `name` on this worker
    /// ([`crate::Worker::register_activity`] or
    /// [`crate::Worker::declare_activity_effect`]); unknown names are sent unspecified, which
    /// the server treats as idempotent.
    pub fn activity<O: DeserializeOwned>(
        &self,
        name: &str,
        input: &(impl Serialize + ?Sized),
    ) -> ActivityFuture<O> {
        let input = match payload::encode(input) {
            Ok(p) => p,
            Err(e) => {
                return ActivityFuture::failed(
                    self.clone(),
                    ActivityError::non_retryable(format!("cannot encode the input of {name}: {e}"))
                        .with_type("steadfast.EncodeError"),
                );
            }
        };
        let mut state = self.state();
        let effect = state.effect_of(name);
        let seq = state.issue_waiting(Cmd::ScheduleActivity(pb::ScheduleActivityCommand {
            activity_type: name.to_owned(),
            input: Some(input),
            options: Some(ActivityOptions::default().to_proto(effect)),
        }));
        drop(state);
        ActivityFuture::issued(self.clone(), seq)
    }

    /// Requests the cancellation of activity `id` (its command seq). The activity's future
    /// then resolves with [`ActivityError::Cancelled`] once the server confirms it, or with
    /// its result if it finished first.
    pub fn cancel_activity(&self, id: u32) {
        self.state()
            .issue(Cmd::CancelActivity(pb::CancelActivityCommand {
                activity_id: id,
            }));
    }

    /// A durable timer: resolves after `duration` (issues StartTimer now).
    pub fn sleep(&self, duration: Duration) -> Timer {
        let seq = self
            .state()
            .issue_waiting(Cmd::StartTimer(pb::StartTimerCommand {
                duration_ms: ms(duration),
            }));
        Timer::new(self.clone(), seq)
    }

    /// Waits for the next signal `name`, decoded as `T`. Signals that arrived before the
    /// wait are buffered per name and taken oldest first; when none is buffered, a
    /// WaitSignal command tells the server what the run waits on.
    pub fn wait_signal<T: DeserializeOwned>(&self, name: &str) -> SignalFuture<T> {
        self.wait_signal_inner(name, &WaitSignalOptions::default())
    }

    /// Like [`WorkflowContext::wait_signal`], with a question and choices shown to whoever
    /// answers, and an optional timeout: resolves to `None` when the timeout fires first.
    pub fn wait_signal_with<T: DeserializeOwned>(
        &self,
        name: &str,
        options: WaitSignalOptions,
    ) -> SignalWithTimeout<T> {
        let signal = self.wait_signal_inner::<T>(name, &options);
        let timer = match options.timeout {
            Some(t) if !signal.is_ready() => Some(self.sleep(t)),
            _ => None,
        };
        SignalWithTimeout::new(signal, timer)
    }

    fn wait_signal_inner<T: DeserializeOwned>(
        &self,
        name: &str,
        options: &WaitSignalOptions,
    ) -> SignalFuture<T> {
        let mut state = self.state();
        let taken = state.take_signal(name);
        if taken.is_err() {
            state.issue(Cmd::WaitSignal(pb::WaitSignalCommand {
                name: name.to_owned(),
                question: options.question.clone(),
                choices: options.choices.clone(),
            }));
        }
        drop(state);
        SignalFuture::new(self.clone(), name.to_owned(), taken)
    }

    /// Reports progress (a ReportProgress command; nothing to await).
    pub fn progress(&self, done: u64, total: u64, message: impl Into<String>) {
        self.state()
            .issue(Cmd::ReportProgress(pb::ReportProgressCommand {
                done,
                total,
                message: message.into(),
            }));
    }

    /// Records a partial result, kept if the run is cancelled, terminated or stopped by its
    /// budget (a RecordPartialResult command).
    pub fn set_partial_result(&self, value: &impl Serialize) -> Result<(), WorkflowError> {
        let result = payload::encode(value)?;
        self.state()
            .issue(Cmd::RecordPartialResult(pb::RecordPartialResultCommand {
                result: Some(result),
            }));
        Ok(())
    }

    /// The time of the current workflow task (when its WorkflowTaskStarted was recorded),
    /// the same on every replay.
    pub fn now(&self) -> SystemTime {
        let ms = self.now_ms();
        if ms >= 0 {
            UNIX_EPOCH + Duration::from_millis(ms as u64)
        } else {
            UNIX_EPOCH - Duration::from_millis(ms.unsigned_abs())
        }
    }

    /// [`WorkflowContext::now`] in milliseconds since the Unix epoch.
    pub fn now_ms(&self) -> i64 {
        self.state().now_ms
    }

    /// A deterministic random number, seeded from the run (the same sequence on replay).
    pub fn random(&self) -> u64 {
        self.state().rng.next_u64()
    }

    /// A deterministic random (version 4) UUID.
    pub fn uuid(&self) -> uuid::Uuid {
        let mut state = self.state();
        let hi = state.rng.next_u64();
        let lo = state.rng.next_u64();
        let mut bytes = [0u8; 16];
        bytes[..8].copy_from_slice(&hi.to_le_bytes());
        bytes[8..].copy_from_slice(&lo.to_le_bytes());
        uuid::Builder::from_random_bytes(bytes).into_uuid()
    }

    /// Whether this run should continue as new: its history had at least
    /// [`super::Registry::continue_as_new_after_events`] events (default
    /// [`super::CONTINUE_AS_NEW_AFTER_EVENTS_DEFAULT`]) when the current workflow task
    /// started. Deterministic: derived from the history, so every replay of a task gets the
    /// answer the task got live. Check it between steps of a long loop and return
    /// [`WorkflowError::continue_as_new`] with the state to carry over.
    ///
    /// The server also computes a suggestion (past 90% of its history limits, events or
    /// bytes) and sends it with each task; it is not in the history, so the code is not shown
    /// it. A worker that receives it while this answers false logs a warning naming this
    /// setting.
    pub fn continue_as_new_suggested(&self) -> bool {
        let state = self.state();
        state.history_events >= state.continue_as_new_after_events
    }

    /// The history length the code sees: events in the history when the current workflow
    /// task started (the same on every replay).
    pub fn history_length(&self) -> u64 {
        self.state().history_events
    }

    /// Whether a cancellation of this run was requested (a CancelRequested event).
    pub fn is_cancel_requested(&self) -> bool {
        self.state().cancel_requested()
    }

    /// Resolves once a cancellation of this run is requested. The workflow may then clean
    /// up and return [`WorkflowError::Cancelled`] with a partial result.
    pub fn cancelled(&self) -> Cancelled {
        Cancelled::new(self.clone())
    }
}
