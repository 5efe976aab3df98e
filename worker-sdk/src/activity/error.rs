//! [`ActivityError`]: how an activity ends without a result, on both sides of the wire.

use steadfast_proto::v1 as pb;

/// The failure type reported when an activity stops because it was cancelled.
pub const CANCELLED_TYPE: &str = "Cancelled";
/// The failure type of an activity a human denied (`steadfast run deny`): never retried;
/// see [`ActivityError::is_approval_denied`].
pub const APPROVAL_DENIED_TYPE: &str = "ApprovalDenied";
/// The default failure type of [`ActivityError::retryable`] and
/// [`ActivityError::non_retryable`].
pub const DEFAULT_ERROR_TYPE: &str = "Error";

/// The outcome of an activity that did not produce a result.
///
/// Activity code returns it to fail an attempt; workflow code receives it when the activity
/// failed for good (retries exhausted, non-retryable, timed out or cancelled).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ActivityError {
    /// The activity returned an error.
    #[error("activity failed ({error_type}): {message}")]
    Failed {
        /// What went wrong, for humans.
        message: String,
        /// The error type, matched against the retry policy's non-retryable types.
        error_type: String,
        /// When true the server does not retry this failure.
        non_retryable: bool,
    },
    /// The activity's attempts timed out and no retry is left.
    #[error("activity timed out")]
    TimedOut,
    /// The activity was cancelled.
    #[error("activity cancelled")]
    Cancelled,
}

impl ActivityError {
    /// A failure that the server retries according to the activity's retry policy.
    pub fn retryable(message: impl Into<String>) -> Self {
        ActivityError::Failed {
            message: message.into(),
            error_type: DEFAULT_ERROR_TYPE.to_owned(),
            non_retryable: false,
        }
    }

    /// A failure that is never retried.
    pub fn non_retryable(message: impl Into<String>) -> Self {
        ActivityError::Failed {
            message: message.into(),
            error_type: DEFAULT_ERROR_TYPE.to_owned(),
            non_retryable: true,
        }
    }

    /// Sets the error type of a [`ActivityError::Failed`] (no effect on other variants).
    pub fn with_type(mut self, ty: impl Into<String>) -> Self {
        if let ActivityError::Failed { error_type, .. } = &mut self {
            *error_type = ty.into();
        }
        self
    }

    /// Whether a human denied the activity before it ran (`run deny`); the message holds
    /// `[STF-APPROVAL-DENIED]`, who denied it and their reason.
    pub fn is_approval_denied(&self) -> bool {
        self.error_type() == APPROVAL_DENIED_TYPE
    }

    /// The error type as reported on the wire.
    pub fn error_type(&self) -> &str {
        match self {
            ActivityError::Failed { error_type, .. } => error_type,
            ActivityError::TimedOut => "TimedOut",
            ActivityError::Cancelled => CANCELLED_TYPE,
        }
    }

    /// The failure reported to the server for this error.
    pub fn to_failure(&self) -> pb::Failure {
        match self {
            ActivityError::Failed {
                message,
                error_type,
                non_retryable,
            } => pb::Failure {
                message: message.clone(),
                r#type: error_type.clone(),
                non_retryable: *non_retryable,
                details: String::new(),
            },
            ActivityError::TimedOut => pb::Failure {
                message: "activity timed out".into(),
                r#type: "TimedOut".into(),
                non_retryable: false,
                details: String::new(),
            },
            ActivityError::Cancelled => pb::Failure {
                message: "activity cancelled".into(),
                r#type: CANCELLED_TYPE.into(),
                non_retryable: true,
                details: String::new(),
            },
        }
    }

    /// Reads a recorded failure back.
    pub fn from_failure(failure: Option<&pb::Failure>) -> Self {
        match failure {
            Some(f) if f.r#type == CANCELLED_TYPE => ActivityError::Cancelled,
            Some(f) => ActivityError::Failed {
                message: f.message.clone(),
                error_type: f.r#type.clone(),
                non_retryable: f.non_retryable,
            },
            None => ActivityError::Failed {
                message: "activity failed (no failure recorded)".into(),
                error_type: DEFAULT_ERROR_TYPE.into(),
                non_retryable: false,
            },
        }
    }
}
