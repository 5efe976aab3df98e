//! Retention: a loop that drops closed runs older than the period (`--retention`).
//!
//! The store does the work ([`Store::drop_closed_before`]: a durable drop record, then the
//! read models forget the runs); this loop only decides when. It sweeps every quarter of the
//! period (between [`SWEEP_EVERY_MIN`] and [`SWEEP_EVERY_MAX`]), a bounded number of runs per
//! call, until nothing more is due.

use std::sync::Arc;
use std::time::Duration;

use steadfast_engine::clock::Clock;
use steadfast_engine::store::Store;

/// Runs one drop call removes at most.
pub const SWEEP_RUNS_MAX: usize = 1_000;
/// Shortest time between two sweeps.
pub const SWEEP_EVERY_MIN: Duration = Duration::from_millis(100);
/// Longest time between two sweeps.
pub const SWEEP_EVERY_MAX: Duration = Duration::from_secs(60);

/// How often a retention of `period` sweeps.
pub fn sweep_every(period: Duration) -> Duration {
    (period / 4).clamp(SWEEP_EVERY_MIN, SWEEP_EVERY_MAX)
}

/// Sweeps forever; stop it by aborting the task.
pub async fn run(store: Arc<dyn Store>, period: Duration, clock: impl Clock) {
    let every = sweep_every(period);
    let period_ms = i64::try_from(period.as_millis()).unwrap_or(i64::MAX);
    loop {
        tokio::time::sleep(every).await;
        let cutoff = clock.now_ms().saturating_sub(period_ms);
        loop {
            match store.drop_closed_before(cutoff, SWEEP_RUNS_MAX).await {
                Ok(n) if n == SWEEP_RUNS_MAX => continue,
                Ok(_) => break,
                Err(e) => {
                    tracing::warn!(error = %e, "retention sweep failed; trying again later");
                    break;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sweeps_are_bounded_both_ways() {
        assert_eq!(sweep_every(Duration::from_millis(1)), SWEEP_EVERY_MIN);
        assert_eq!(sweep_every(Duration::from_secs(8)), Duration::from_secs(2));
        assert_eq!(
            sweep_every(Duration::from_secs(30 * 86_400)),
            SWEEP_EVERY_MAX
        );
    }
}
