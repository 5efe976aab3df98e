//! The futures workflow code awaits. Each one polls its slot in the run state; the executor
//! wakes it when the history resolves it. All are `Unpin` and resolve once.

use std::future::Future;
use std::marker::PhantomData;
use std::pin::Pin;
use std::task::{Context, Poll};

use serde::de::DeserializeOwned;
use steadfast_proto::v1 as pb;
use steadfast_proto::v1::command::Command as Cmd;

use super::WorkflowError;
use super::context::WorkflowContext;
use super::options::ActivityOptions;
use super::state::Resolved;
use crate::{ActivityError, payload};

enum ActivityState {
    Issued(u32),
    Failed(ActivityError),
    Done,
}

/// The result of an activity scheduled with [`WorkflowContext::activity`].
#[must_use = "the activity is scheduled either way; await it to get its result"]
pub struct ActivityFuture<O> {
    ctx: WorkflowContext,
    state: ActivityState,
    _output: PhantomData<fn() -> O>,
}

impl<O> ActivityFuture<O> {
    pub(crate) fn issued(ctx: WorkflowContext, seq: u32) -> Self {
        ActivityFuture {
            ctx,
            state: ActivityState::Issued(seq),
            _output: PhantomData,
        }
    }

    pub(crate) fn failed(ctx: WorkflowContext, e: ActivityError) -> Self {
        ActivityFuture {
            ctx,
            state: ActivityState::Failed(e),
            _output: PhantomData,
        }
    }

    /// The activity id (its command seq), 0 if the input could not be encoded.
    pub fn id(&self) -> u32 {
        match self.state {
            ActivityState::Issued(seq) => seq,
            _ => 0,
        }
    }

    /// Sets the retry policy, timeouts and task queue of this call. Call it right away,
    /// before the workflow awaits anything: the command is sent when the activation ends.
    pub fn options(self, options: ActivityOptions) -> Self {
        if let ActivityState::Issued(seq) = self.state {
            let mut state = self.ctx.state();
            if let Some(pb::Command {
                command: Some(Cmd::ScheduleActivity(cmd)),
                ..
            }) = state.pending_mut(seq)
            {
                let effect = cmd
                    .options
                    .as_ref()
                    .map(|o| o.effect())
                    .unwrap_or(pb::Effect::Unspecified);
                cmd.options = Some(options.to_proto(effect));
            }
        }
        self
    }
}

impl<O: DeserializeOwned> Future for ActivityFuture<O> {
    type Output = Result<O, ActivityError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let seq = match &mut self.state {
            ActivityState::Issued(seq) => *seq,
            ActivityState::Failed(_) => {
                let ActivityState::Failed(e) =
                    std::mem::replace(&mut self.state, ActivityState::Done)
                else {
                    unreachable!()
                };
                return Poll::Ready(Err(e));
            }
            ActivityState::Done => return Poll::Pending,
        };
        let resolved = match self.ctx.state().poll_result(seq, cx) {
            Poll::Ready(r) => r,
            Poll::Pending => return Poll::Pending,
        };
        self.state = ActivityState::Done;
        Poll::Ready(match resolved {
            Resolved::Activity(Ok(p)) => payload::decode(Some(&p)).map_err(|e| {
                ActivityError::non_retryable(format!(
                    "cannot decode the result of activity {seq}: {e}"
                ))
                .with_type("steadfast.DecodeError")
            }),
            Resolved::Activity(Err(e)) => Err(e),
            Resolved::TimerFired | Resolved::Child(_) => Err(ActivityError::non_retryable(
                "internal: not an activity result",
            )),
        })
    }
}

impl<O> Drop for ActivityFuture<O> {
    fn drop(&mut self) {
        if let ActivityState::Issued(seq) = self.state {
            self.ctx.state().forget_result(seq);
        }
    }
}

/// A durable timer started with [`WorkflowContext::sleep`].
#[must_use = "the timer is started either way; await it to wait"]
pub struct Timer {
    ctx: WorkflowContext,
    seq: u32,
    done: bool,
}

impl Timer {
    pub(crate) fn new(ctx: WorkflowContext, seq: u32) -> Self {
        Timer {
            ctx,
            seq,
            done: false,
        }
    }

    /// The timer id (its command seq).
    pub fn id(&self) -> u32 {
        self.seq
    }

    /// Whether the timer fired (its TimerFired event was applied).
    pub fn has_fired(&self) -> bool {
        self.done || self.ctx.state().is_resolved(self.seq)
    }

    /// Cancels the timer (issues CancelTimer), unless it already fired.
    pub fn cancel(self) {
        if !self.has_fired() {
            self.ctx
                .state()
                .issue(Cmd::CancelTimer(pb::CancelTimerCommand {
                    timer_id: self.seq,
                }));
        }
    }
}

impl Future for Timer {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if self.done {
            return Poll::Ready(());
        }
        let seq = self.seq;
        match self.ctx.state().poll_result(seq, cx) {
            Poll::Ready(_) => {}
            Poll::Pending => return Poll::Pending,
        }
        self.done = true;
        Poll::Ready(())
    }
}

impl Drop for Timer {
    fn drop(&mut self) {
        self.ctx.state().forget_result(self.seq);
    }
}

enum SignalState {
    Taken(pb::Payload),
    Waiting(u64),
    Done,
}

/// The next signal of one name ([`WorkflowContext::wait_signal`]).
#[must_use = "futures do nothing unless awaited"]
pub struct SignalFuture<T> {
    ctx: WorkflowContext,
    name: String,
    state: SignalState,
    _output: PhantomData<fn() -> T>,
}

impl<T> SignalFuture<T> {
    pub(crate) fn new(ctx: WorkflowContext, name: String, taken: Result<pb::Payload, u64>) -> Self {
        let state = match taken {
            Ok(p) => SignalState::Taken(p),
            Err(w) => SignalState::Waiting(w),
        };
        SignalFuture {
            ctx,
            name,
            state,
            _output: PhantomData,
        }
    }

    pub(crate) fn is_ready(&self) -> bool {
        matches!(self.state, SignalState::Taken(_))
    }
}

impl<T: DeserializeOwned> Future for SignalFuture<T> {
    type Output = Result<T, WorkflowError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let input = match &self.state {
            SignalState::Taken(_) => {
                let SignalState::Taken(p) = std::mem::replace(&mut self.state, SignalState::Done)
                else {
                    unreachable!()
                };
                p
            }
            SignalState::Waiting(w) => {
                let w = *w;
                let polled = self.ctx.state().poll_signal(w, cx);
                match polled {
                    Poll::Ready(p) => {
                        self.state = SignalState::Done;
                        p
                    }
                    Poll::Pending => return Poll::Pending,
                }
            }
            SignalState::Done => return Poll::Pending,
        };
        Poll::Ready(
            payload::decode(Some(&input)).map_err(|e| WorkflowError::Failed {
                message: format!("cannot decode signal {:?}: {e}", self.name),
                error_type: "steadfast.DecodeError".into(),
            }),
        )
    }
}

impl<T> Drop for SignalFuture<T> {
    fn drop(&mut self) {
        match std::mem::replace(&mut self.state, SignalState::Done) {
            SignalState::Taken(p) => self.ctx.state().give_back(&self.name, p),
            SignalState::Waiting(w) => self.ctx.state().drop_waiter(&self.name, w),
            SignalState::Done => {}
        }
    }
}

/// A signal raced against an optional timeout ([`WorkflowContext::wait_signal_with`]):
/// `Some(value)` when the signal came first, `None` when the timer fired first. When both
/// are in the same batch, the signal wins. A timer that lost is cancelled.
#[must_use = "futures do nothing unless awaited"]
pub struct SignalWithTimeout<T> {
    signal: SignalFuture<T>,
    timer: Option<Timer>,
}

impl<T> SignalWithTimeout<T> {
    pub(crate) fn new(signal: SignalFuture<T>, timer: Option<Timer>) -> Self {
        SignalWithTimeout { signal, timer }
    }
}

impl<T: DeserializeOwned> Future for SignalWithTimeout<T> {
    type Output = Result<Option<T>, WorkflowError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        if let Poll::Ready(r) = Pin::new(&mut self.signal).poll(cx) {
            if let Some(timer) = self.timer.take() {
                timer.cancel();
            }
            return Poll::Ready(r.map(Some));
        }
        match &mut self.timer {
            Some(timer) => match Pin::new(timer).poll(cx) {
                Poll::Ready(()) => Poll::Ready(Ok(None)),
                Poll::Pending => Poll::Pending,
            },
            None => Poll::Pending,
        }
    }
}

/// Resolves when a cancellation of the run is requested ([`WorkflowContext::cancelled`]).
#[must_use = "futures do nothing unless awaited"]
pub struct Cancelled {
    ctx: WorkflowContext,
}

impl Cancelled {
    pub(crate) fn new(ctx: WorkflowContext) -> Self {
        Cancelled { ctx }
    }
}

impl Future for Cancelled {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        self.ctx.state().poll_cancelled(cx)
    }
}
