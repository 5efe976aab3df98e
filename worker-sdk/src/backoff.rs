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
/// as opposed to a refusal that a retry would only repeat.
pub(crate) fn is_transient(status: &tonic::Status) -> bool {
    use tonic::Code;
    matches!(
        status.code(),
        Code::Unavailable
            | Code::Unknown
            | Code::DeadlineExceeded
            | Code::Aborted
            | Code::Cancelled
            | Code::ResourceExhausted
    )
}

#[cfg(test)]
mod tests {
    use super::*;

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
