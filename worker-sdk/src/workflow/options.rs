//! Options of the things workflow code asks for: activities and signal waits.

use std::time::Duration;
use steadfast_proto::v1 as pb;

/// Retry policy of an activity. `None` / zero fields mean "server default".
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RetryPolicy {
    /// Delay before the second attempt (server default 1 s).
    pub initial_interval: Option<Duration>,
    /// Multiplier of the delay after each failed attempt (server default 2.0).
    pub backoff_coefficient: Option<f64>,
    /// Cap on the delay (server default 100 x the initial interval).
    pub maximum_interval: Option<Duration>,
    /// 0 = unlimited (bounded by schedule-to-close), 1 = no retries.
    pub maximum_attempts: u32,
    /// Failure types that are never retried.
    pub non_retryable_error_types: Vec<String>,
}

impl RetryPolicy {
    /// A policy that makes exactly one attempt.
    pub fn no_retries() -> Self {
        RetryPolicy {
            maximum_attempts: 1,
            ..Default::default()
        }
    }

    pub(crate) fn to_proto(&self) -> pb::RetryPolicy {
        pb::RetryPolicy {
            initial_interval_ms: self.initial_interval.map(ms).unwrap_or(0),
            backoff_coefficient: self.backoff_coefficient.unwrap_or(0.0),
            maximum_interval_ms: self.maximum_interval.map(ms).unwrap_or(0),
            maximum_attempts: self.maximum_attempts,
            non_retryable_error_types: self.non_retryable_error_types.clone(),
        }
    }
}

/// Options of one activity call, given with [`crate::workflow::ActivityFuture::options`].
///
/// The activity's [`crate::Effect`] is not here: it is declared where the activity is
/// registered, and the SDK fills it in.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ActivityOptions {
    /// Task queue of the activity; defaults to the run's.
    pub task_queue: Option<String>,
    /// Retry policy; defaults to the server's.
    pub retry: Option<RetryPolicy>,
    /// Total time across all attempts; none by default.
    pub schedule_to_close_timeout: Option<Duration>,
    /// Time of one attempt; server default 60 s.
    pub start_to_close_timeout: Option<Duration>,
    /// Ask a human before the call runs (`steadfast run approve` / `run deny`), with this
    /// reason; none by default. The run waits on `approval` meanwhile.
    pub approval: Option<String>,
    /// Maximum time between heartbeats; none by default.
    pub heartbeat_timeout: Option<Duration>,
}

impl ActivityOptions {
    /// Sets the retry policy.
    pub fn retry(mut self, retry: RetryPolicy) -> Self {
        self.retry = Some(retry);
        self
    }

    /// Sets the time of one attempt.
    pub fn start_to_close(mut self, timeout: Duration) -> Self {
        self.start_to_close_timeout = Some(timeout);
        self
    }

    /// Sets the total time across all attempts.
    pub fn schedule_to_close(mut self, timeout: Duration) -> Self {
        self.schedule_to_close_timeout = Some(timeout);
        self
    }

    /// Sets the maximum time between heartbeats.
    pub fn heartbeat_timeout(mut self, timeout: Duration) -> Self {
        self.heartbeat_timeout = Some(timeout);
        self
    }

    /// This call waits for a human's approval before it runs; `reason` is shown to them
    /// (`run list --waiting approval`). A denial is an [`crate::ActivityError`] for which
    /// `is_approval_denied()` holds.
    pub fn requires_approval(mut self, reason: impl Into<String>) -> Self {
        self.approval = Some(reason.into());
        self
    }

    /// Sets the task queue.
    pub fn task_queue(mut self, queue: impl Into<String>) -> Self {
        self.task_queue = Some(queue.into());
        self
    }

    pub(crate) fn to_proto(&self, effect: pb::Effect) -> pb::ActivityOptions {
        pb::ActivityOptions {
            task_queue: self.task_queue.clone().unwrap_or_default(),
            retry: self.retry.as_ref().map(RetryPolicy::to_proto),
            schedule_to_close_timeout_ms: self.schedule_to_close_timeout.map(ms).unwrap_or(0),
            start_to_close_timeout_ms: self.start_to_close_timeout.map(ms).unwrap_or(0),
            heartbeat_timeout_ms: self.heartbeat_timeout.map(ms).unwrap_or(0),
            effect: effect as i32,
            requires_approval: self.approval.is_some(),
            approval_reason: self.approval.clone().unwrap_or_default(),
        }
    }
}

/// A signal wait that tells the user what the run waits for
/// ([`crate::WorkflowContext::wait_signal_with`]).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct WaitSignalOptions {
    /// The question shown to whoever answers ("Approve a refund of $120?").
    pub question: String,
    /// The expected answers, if the set is closed.
    pub choices: Vec<String>,
    /// Give up waiting after this long (a durable timer raced against the signal).
    pub timeout: Option<Duration>,
}

impl WaitSignalOptions {
    /// A wait with a question.
    pub fn question(question: impl Into<String>) -> Self {
        WaitSignalOptions {
            question: question.into(),
            ..Default::default()
        }
    }

    /// Sets the expected answers.
    pub fn choices<S: Into<String>>(mut self, choices: impl IntoIterator<Item = S>) -> Self {
        self.choices = choices.into_iter().map(Into::into).collect();
        self
    }

    /// Sets the timeout.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }
}

pub(crate) fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}
