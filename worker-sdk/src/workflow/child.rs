//! Child runs and signals to other runs, from workflow code: [`WorkflowContext::child`],
//! [`WorkflowContext::signal_run`].

use std::future::Future;
use std::marker::PhantomData;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use serde::Serialize;
use serde::de::DeserializeOwned;
use steadfast_proto::v1 as pb;
use steadfast_proto::v1::command::Command as Cmd;

use super::WorkflowError;
use super::context::WorkflowContext;
use super::options::ms;
use super::state::Resolved;
use crate::payload;

/// What happens to an open child run when its parent closes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ParentClosePolicy {
    /// The child is asked to cancel when the parent is asked to cancel, or closes.
    #[default]
    Cancel,
    /// The child is terminated when the parent closes.
    Terminate,
    /// The child runs on, on its own.
    Abandon,
}

/// How a child's budget is set. Either way the child's usage is added to the parent's when
/// the child closes, and counts against the parent's ceilings from then on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ChildBudget {
    /// The child's ceilings are the room the parent has left when it starts the child.
    #[default]
    Inherit,
    /// The child's ceilings are these (0 = the parent's room), each capped by the parent's
    /// room.
    Split {
        /// Input + output tokens.
        max_tokens: u64,
        /// Millionths of a US dollar.
        max_cost_micros: u64,
        /// Activities.
        max_activities: u64,
        /// Wall time.
        max_duration: Option<Duration>,
    },
}

/// Options of a child run.
#[derive(Debug, Clone, Default)]
pub struct ChildOptions {
    /// Workflow id (default: the child's run id). At most one open run per workflow id: a
    /// child whose id is in use fails to start ([`ChildError::StartFailed`]).
    pub workflow_id: Option<String>,
    /// Task queue of its workflow tasks (default: the parent's).
    pub task_queue: Option<String>,
    /// Run timeout (default: none).
    pub run_timeout: Option<Duration>,
    /// What happens to it when the parent closes (default: cancel).
    pub parent_close_policy: ParentClosePolicy,
    /// Its budget (default: inherit the parent's room).
    pub budget: ChildBudget,
}

impl ChildOptions {
    /// Sets the workflow id.
    pub fn workflow_id(mut self, id: impl Into<String>) -> Self {
        self.workflow_id = Some(id.into());
        self
    }

    /// Sets the parent-close policy.
    pub fn parent_close_policy(mut self, p: ParentClosePolicy) -> Self {
        self.parent_close_policy = p;
        self
    }

    /// Sets the budget.
    pub fn budget(mut self, b: ChildBudget) -> Self {
        self.budget = b;
        self
    }

    /// Sets the task queue.
    pub fn task_queue(mut self, q: impl Into<String>) -> Self {
        self.task_queue = Some(q.into());
        self
    }

    fn apply(&self, c: &mut pb::StartChildCommand) {
        c.workflow_id = self.workflow_id.clone().unwrap_or_default();
        c.task_queue = self.task_queue.clone().unwrap_or_default();
        c.run_timeout_ms = self.run_timeout.map(ms).unwrap_or(0);
        c.parent_close_policy = match self.parent_close_policy {
            ParentClosePolicy::Cancel => pb::ParentClosePolicy::Cancel,
            ParentClosePolicy::Terminate => pb::ParentClosePolicy::Terminate,
            ParentClosePolicy::Abandon => pb::ParentClosePolicy::Abandon,
        } as i32;
        match self.budget {
            ChildBudget::Inherit => {
                c.budget_mode = pb::ChildBudget::Inherit as i32;
                c.budget = None;
            }
            ChildBudget::Split {
                max_tokens,
                max_cost_micros,
                max_activities,
                max_duration,
            } => {
                c.budget_mode = pb::ChildBudget::Split as i32;
                c.budget = Some(pb::Budget {
                    max_tokens,
                    max_cost_micros,
                    max_activities,
                    max_duration_ms: max_duration.map(ms).unwrap_or(0),
                });
            }
        }
    }
}

/// How a child run (or a signal to another run) did not give a result.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChildError {
    /// The child could not be created (its workflow id has an open run, say).
    #[error("child run did not start: {message}")]
    StartFailed {
        /// Why.
        message: String,
    },
    /// The child failed.
    #[error("child run failed ({error_type}): {message}")]
    Failed {
        /// Why.
        message: String,
        /// Its error type.
        error_type: String,
    },
    /// The child ended as cancelled, terminated, timed out or continued as new (the status
    /// name), without a result.
    #[error("child run ended {0}")]
    Ended(String),
    /// A signal to another run was not delivered (the run is closed or unknown).
    #[error("signal not delivered: {0}")]
    NotDelivered(String),
    /// The input could not be encoded, or the result decoded.
    #[error("child run payload: {0}")]
    Payload(String),
}

impl From<ChildError> for WorkflowError {
    fn from(e: ChildError) -> Self {
        let error_type = match &e {
            ChildError::Failed { error_type, .. } => error_type.clone(),
            _ => "steadfast.ChildError".into(),
        };
        WorkflowError::Failed {
            message: e.to_string(),
            error_type,
        }
    }
}

enum ChildState {
    Issued(u32),
    Failed(ChildError),
    Done,
}

/// A child run started with [`WorkflowContext::child`]: await it for its result, or call
/// [`ChildRun::start`] to wait only until it exists (detached).
#[must_use = "the child is started either way; await it for its result, or .start() it"]
pub struct ChildRun<O> {
    ctx: WorkflowContext,
    state: ChildState,
    _output: PhantomData<fn() -> O>,
}

impl<O> ChildRun<O> {
    pub(crate) fn new(ctx: WorkflowContext, workflow_type: &str, input: pb::Payload) -> Self {
        let mut state = ctx.state();
        let seq = state.issue_waiting(Cmd::StartChild(pb::StartChildCommand {
            workflow_type: workflow_type.to_owned(),
            input: Some(input),
            ..Default::default()
        }));
        state.expect_child_start(seq);
        drop(state);
        ChildRun {
            ctx,
            state: ChildState::Issued(seq),
            _output: PhantomData,
        }
    }

    pub(crate) fn failed(ctx: WorkflowContext, e: ChildError) -> Self {
        ChildRun {
            ctx,
            state: ChildState::Failed(e),
            _output: PhantomData,
        }
    }

    /// The command seq that started it (0 if its input could not be encoded).
    pub fn id(&self) -> u32 {
        match self.state {
            ChildState::Issued(seq) => seq,
            _ => 0,
        }
    }

    /// Sets the child's options. Call it right away, before the workflow awaits anything:
    /// the command is sent when the activation ends.
    pub fn with_options(self, options: ChildOptions) -> Self {
        if let ChildState::Issued(seq) = self.state
            && let Some(pb::Command {
                command: Some(Cmd::StartChild(c)),
                ..
            }) = self.ctx.state().pending_mut(seq)
        {
            options.apply(c);
        }
        self
    }

    /// Detaches: resolves to the child's run id once it exists; its result is not awaited
    /// (the parent-close policy still applies; use [`ParentClosePolicy::Abandon`] for a
    /// child that outlives its parent).
    pub fn start(mut self) -> ChildStart {
        match std::mem::replace(&mut self.state, ChildState::Done) {
            ChildState::Issued(seq) => {
                self.ctx.state().forget_result(seq);
                ChildStart {
                    ctx: self.ctx.clone(),
                    seq,
                    failed: None,
                }
            }
            ChildState::Failed(e) => ChildStart {
                ctx: self.ctx.clone(),
                seq: 0,
                failed: Some(e),
            },
            ChildState::Done => ChildStart {
                ctx: self.ctx.clone(),
                seq: 0,
                failed: Some(ChildError::Payload("already awaited".into())),
            },
        }
    }
}

impl<O: DeserializeOwned> Future for ChildRun<O> {
    type Output = Result<O, ChildError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let seq = match &self.state {
            ChildState::Issued(seq) => *seq,
            ChildState::Failed(_) => {
                let ChildState::Failed(e) = std::mem::replace(&mut self.state, ChildState::Done)
                else {
                    unreachable!()
                };
                return Poll::Ready(Err(e));
            }
            ChildState::Done => return Poll::Pending,
        };
        let resolved = match self.ctx.state().poll_result(seq, cx) {
            Poll::Ready(r) => r,
            Poll::Pending => return Poll::Pending,
        };
        self.state = ChildState::Done;
        Poll::Ready(match resolved {
            Resolved::Child(Ok(p)) => payload::decode(Some(&p)).map_err(|e| {
                ChildError::Payload(format!("cannot decode the result of child {seq}: {e}"))
            }),
            Resolved::Child(Err(e)) => Err(e),
            _ => Err(ChildError::Payload("internal: not a child result".into())),
        })
    }
}

impl<O> Drop for ChildRun<O> {
    fn drop(&mut self) {
        if let ChildState::Issued(seq) = self.state {
            self.ctx.state().forget_result(seq);
        }
    }
}

/// A detached child ([`ChildRun::start`]): resolves to its run id once it exists.
#[must_use = "the child is started either way; await it for its run id"]
pub struct ChildStart {
    ctx: WorkflowContext,
    seq: u32,
    failed: Option<ChildError>,
}

impl Future for ChildStart {
    type Output = Result<String, ChildError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        if let Some(e) = self.failed.take() {
            return Poll::Ready(Err(e));
        }
        if self.seq == 0 {
            return Poll::Pending;
        }
        self.ctx.state().poll_child_start(self.seq, cx)
    }
}

/// A signal to another run ([`WorkflowContext::signal_run`]): resolves once the server
/// delivered it (or found it could not).
#[must_use = "the signal is sent either way; await it to know it was delivered"]
pub struct SignalSent {
    ctx: WorkflowContext,
    seq: u32,
    failed: Option<ChildError>,
}

impl SignalSent {
    pub(crate) fn issue(
        ctx: WorkflowContext,
        run_id: &str,
        name: &str,
        input: &(impl Serialize + ?Sized),
    ) -> SignalSent {
        match payload::encode(input) {
            Ok(input) => {
                let seq = ctx
                    .state()
                    .issue_waiting(Cmd::SignalRun(pb::SignalRunCommand {
                        run_id: run_id.to_owned(),
                        name: name.to_owned(),
                        input: Some(input),
                    }));
                SignalSent {
                    ctx,
                    seq,
                    failed: None,
                }
            }
            Err(e) => SignalSent {
                ctx,
                seq: 0,
                failed: Some(ChildError::Payload(format!(
                    "cannot encode the input of signal {name}: {e}"
                ))),
            },
        }
    }
}

impl Future for SignalSent {
    type Output = Result<(), ChildError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        if let Some(e) = self.failed.take() {
            return Poll::Ready(Err(e));
        }
        if self.seq == 0 {
            return Poll::Pending;
        }
        let seq = self.seq;
        match self.ctx.state().poll_result(seq, cx) {
            Poll::Ready(Resolved::Child(Ok(_))) => Poll::Ready(Ok(())),
            Poll::Ready(Resolved::Child(Err(e))) => Poll::Ready(Err(e)),
            Poll::Ready(_) => Poll::Ready(Err(ChildError::Payload(
                "internal: not a signal result".into(),
            ))),
            Poll::Pending => Poll::Pending,
        }
    }
}

impl Drop for SignalSent {
    fn drop(&mut self) {
        if self.seq != 0 {
            self.ctx.state().forget_result(self.seq);
        }
    }
}

impl WorkflowContext {
    /// Starts child run `workflow_type` with `input` (issues StartChild now); await the
    /// returned [`ChildRun`] for its result, or [`ChildRun::start`] it detached. Adjust it
    /// with [`ChildRun::with_options`]. The child is created once, whatever crashes; its usage
    /// is added to this run's when it closes.
    pub fn child<O: DeserializeOwned>(
        &self,
        workflow_type: &str,
        input: &(impl Serialize + ?Sized),
    ) -> ChildRun<O> {
        match payload::encode(input) {
            Ok(p) => ChildRun::new(self.clone(), workflow_type, p),
            Err(e) => ChildRun::failed(
                self.clone(),
                ChildError::Payload(format!("cannot encode the input of {workflow_type}: {e}")),
            ),
        }
    }

    /// Sends signal `name` with `input` to run `run_id` of this namespace (issues SignalRun
    /// now; delivered once).
    pub fn signal_run(
        &self,
        run_id: &str,
        name: &str,
        input: &(impl Serialize + ?Sized),
    ) -> SignalSent {
        SignalSent::issue(self.clone(), run_id, name, input)
    }
}
