//! Exponential backoff with jitter, for reconnecting to a server that went away.

use std::time::Duration;

use rand::Rng;

/// First delay after a failure.
pub(crate) const BACKOFF_INITIAL: Duration = Duration::from_millis(50);
/// Longest delay between two tries.
pub(crate) const BACKOFF_MAX: Duration = Duration::from_secs(2);

/// Delays that double from [`BACKOFF_INITIAL`] to [`BACKOFF_MAX`], each drawn uniformly
/// from its upper half so that many workers do not retry in step.
#[derive(Debug, Default)]
pub(crate) struct Backoff {
    failures: u32,
}

impl Backoff {
    /// The delay before the next try; counts a failure.
    pub(crate) fn next_delay(&mut self) -> Duration {
        let exp = BACKOFF_INITIAL.saturating_mul(1u32 << self.failures.min(16));
        self.failures = self.failures.saturating_add(1);
        let ceiling = exp.min(BACKOFF_MAX);
        let half = ceiling / 2;
        half + rand::thread_rng().gen_range(Duration::ZERO..=half)
    }

    /// Consecutive failures so far.
    pub(crate) fn failures(&self) -> u32 {
        self.failures
    }

    /// A success: start again from the shortest delay.
    pub(crate) fn reset(&mut self) {
        self.failures = 0;
    }
}

/// Whether a gRPC error means "try again later" (the server is down, restarting or busy),
/// as opposed to a refusal that a retry would only repeat. RESOURCE_EXHAUSTED is transient
/// only when it names no limit: "the limit is 1000", "[STF-LIMIT]" or "too large" will be
/// refused again however long one waits.
pub(crate) fn is_transient(status: &tonic::Status) -> bool {
    use tonic::Code;
    match status.code() {
        Code::Unavailable
        | Code::Unknown
        | Code::DeadlineExceeded
        | Code::Aborted
        | Code::Cancelled => true,
        Code::ResourceExhausted => !names_a_limit(status.message()),
        _ => false,
    }
}

/// Whether a RESOURCE_EXHAUSTED message is about a fixed limit rather than momentary load.
fn names_a_limit(message: &str) -> bool {
    let m = message.to_ascii_lowercase();
    m.contains("limit") || m.contains("too large") || m.contains("stf-limit")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusals_no_retry_fixes_are_not_transient() {
        use tonic::{Code, Status};
        for transient in [
            Status::unavailable("connection refused"),
            Status::deadline_exceeded("poll"),
            Status::aborted("conflict"),
            Status::resource_exhausted("server busy, try again"),
        ] {
            assert!(is_transient(&transient), "{transient:?}");
        }
        for permanent in [
            Status::invalid_argument("activity 1 is not open"),
            Status::failed_precondition("workflow task 7 is no longer open"),
            Status::out_of_range("duration"),
            Status::resource_exhausted("1001 commands in one task; the limit is 1000"),
            Status::resource_exhausted(
                "commands[0].input is 3145728 bytes; the limit is 2097152 bytes",
            ),
            Status::resource_exhausted("[STF-LIMIT] history of run r holds 100000 events"),
            Status::resource_exhausted("grpc: message length too large"),
            Status::new(Code::PermissionDenied, "no"),
            Status::not_found("run"),
        ] {
            assert!(!is_transient(&permanent), "{permanent:?}");
        }
    }

    #[test]
    fn grows_to_the_cap_and_resets() {
        let mut b = Backoff::default();
        let first = b.next_delay();
        assert!(first >= BACKOFF_INITIAL / 2 && first <= BACKOFF_INITIAL);
        for _ in 0..40 {
            assert!(b.next_delay() <= BACKOFF_MAX);
        }
        assert!(b.next_delay() >= BACKOFF_MAX / 2);
        b.reset();
        assert_eq!(b.failures(), 0);
        assert!(b.next_delay() <= BACKOFF_INITIAL);
    }
}
