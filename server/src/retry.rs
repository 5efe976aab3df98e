//! Activity retry decisions and option defaults, as pure functions of time.

use steadfast_engine::event::{ActivityOptions, Failure, TimeMs, TimeoutKind};
use steadfast_engine::state::ActivityState;

/// Start-to-close timeout when none is given.
pub const DEFAULT_START_TO_CLOSE_MS: u64 = 60_000;
/// First retry delay when none is given.
pub const DEFAULT_INITIAL_INTERVAL_MS: u64 = 1_000;
/// Backoff multiplier when none is given.
pub const DEFAULT_BACKOFF: f64 = 2.0;
/// Error type of an attempt that ended because it was cancelled.
pub const CANCELLED_ERROR_TYPE: &str = "Cancelled";

/// Fills the server defaults into options as scheduled (so the history records what applies).
pub fn with_defaults(mut o: ActivityOptions, run_queue: &str) -> ActivityOptions {
    if o.task_queue.is_empty() {
        o.task_queue = run_queue.to_string();
    }
    if o.start_to_close_ms == 0 {
        o.start_to_close_ms = DEFAULT_START_TO_CLOSE_MS;
    }
    if o.retry.initial_interval_ms == 0 {
        o.retry.initial_interval_ms = DEFAULT_INITIAL_INTERVAL_MS;
    }
    if !(o.retry.backoff_coefficient >= 1.0 && o.retry.backoff_coefficient.is_finite()) {
        o.retry.backoff_coefficient = DEFAULT_BACKOFF;
    }
    if o.retry.maximum_interval_ms == 0 {
        o.retry.maximum_interval_ms = o.retry.initial_interval_ms.saturating_mul(100);
    }
    o
}

/// Default of the longest delay before a held run's workflow task is offered again
/// (`steadfast server --held-run-backoff-max-ms`).
pub const HELD_BACKOFF_MAX_MS_DEFAULT: u64 = 10_000;
/// First delay before a held run's workflow task is offered again.
pub const HELD_BACKOFF_FIRST_MS: i64 = 250;

/// Delay before workflow task attempt `attempt` of a held run (its code failed the previous
/// one): doubling from [`HELD_BACKOFF_FIRST_MS`], at most `max_ms`.
pub fn held_task_delay_ms(attempt: u32, max_ms: u64) -> i64 {
    let doublings = attempt.clamp(1, 40) - 1;
    HELD_BACKOFF_FIRST_MS
        .saturating_mul(1i64 << doublings)
        .min(i64::try_from(max_ms).unwrap_or(i64::MAX))
}

/// `t` plus `ms`, saturating. Durations are u64 on the wire; a cast to i64 wrapped huge ones
/// into the past, so an attempt timed out at once and was retried forever (issue 10).
pub fn after_ms(t: TimeMs, ms: u64) -> TimeMs {
    t.saturating_add(i64::try_from(ms).unwrap_or(i64::MAX))
}

/// The deadline of an attempt that started at `started`, seen at `now` (its hand-out or a
/// heartbeat): start-to-close, capped by schedule-to-close, or the next heartbeat when that
/// comes first.
pub fn attempt_deadline(
    act: &ActivityState,
    started: TimeMs,
    now: TimeMs,
) -> (TimeMs, TimeoutKind) {
    let o = &act.options;
    let mut end = after_ms(started, o.start_to_close_ms);
    if o.schedule_to_close_ms > 0 {
        end = end.min(after_ms(act.scheduled_ms, o.schedule_to_close_ms));
    }
    if o.heartbeat_ms > 0 {
        let next = after_ms(now, o.heartbeat_ms);
        if next < end {
            return (next, TimeoutKind::Heartbeat);
        }
    }
    (end, TimeoutKind::StartToClose)
}

/// Delay before attempt `attempt + 1` after attempt `attempt` failed.
pub fn backoff_ms(o: &ActivityOptions, attempt: u32) -> u64 {
    let base = o.retry.initial_interval_ms as f64
        * o.retry
            .backoff_coefficient
            .powi(attempt.saturating_sub(1).min(64) as i32);
    (base.min(o.retry.maximum_interval_ms as f64)).max(0.0) as u64
}

/// When the next attempt is due after `attempt` failed with `failure` at `now`, or `None`
/// when this failure is final (non-retryable, attempts exhausted, out of total time).
pub fn next_attempt_at(
    act: &ActivityState,
    attempt: u32,
    failure: Option<&Failure>,
    now: TimeMs,
) -> Option<TimeMs> {
    let o = &act.options;
    // The workflow asked to cancel it: whatever ended this attempt, there is no next one.
    if act.cancel_requested {
        return None;
    }
    if let Some(f) = failure
        && (f.non_retryable
            || f.error_type == CANCELLED_ERROR_TYPE
            || o.retry
                .non_retryable_error_types
                .iter()
                .any(|t| t == &f.error_type))
    {
        return None;
    }
    if o.retry.maximum_attempts > 0 && attempt >= o.retry.maximum_attempts {
        return None;
    }
    let at = after_ms(now, backoff_ms(o, attempt));
    if o.schedule_to_close_ms > 0 && at >= after_ms(act.scheduled_ms, o.schedule_to_close_ms) {
        return None;
    }
    Some(at)
}

#[cfg(test)]
mod tests {
    use super::*;
    use steadfast_engine::state::ActivityPhase;

    fn act(o: ActivityOptions) -> ActivityState {
        ActivityState {
            activity_type: "t".into(),
            options: with_defaults(o, "q"),
            scheduled_ms: 0,
            scheduled_seq: 5,
            attempt: 1,
            phase: ActivityPhase::Ready { visible_ms: 0 },
            last_failure: None,
            ordinal: 1,
            cancel_requested: false,
            approved: false,
            approved_input_seq: None,
        }
    }

    #[test]
    fn exponential_backoff_capped() {
        let a = act(ActivityOptions::default());
        assert_eq!(backoff_ms(&a.options, 1), 1_000);
        assert_eq!(backoff_ms(&a.options, 2), 2_000);
        assert_eq!(backoff_ms(&a.options, 3), 4_000);
        assert_eq!(backoff_ms(&a.options, 40), 100_000);
        assert_eq!(next_attempt_at(&a, 1, None, 10), Some(1_010));
    }

    #[test]
    fn huge_durations_saturate_instead_of_wrapping_into_the_past() {
        let now = 1_700_000_000_000;
        assert_eq!(after_ms(now, u64::MAX), i64::MAX);
        assert_eq!(after_ms(now, 5), now + 5);
        let mut a = act(ActivityOptions {
            start_to_close_ms: u64::MAX,
            schedule_to_close_ms: u64::MAX,
            ..Default::default()
        });
        assert_eq!(
            attempt_deadline(&a, now, now),
            (i64::MAX, TimeoutKind::StartToClose),
            "before: now + (u64::MAX as i64) = now - 1, timed out at once"
        );
        a.options.heartbeat_ms = u64::MAX;
        assert_eq!(attempt_deadline(&a, now, now).0, i64::MAX);
        a.options.heartbeat_ms = 1_000;
        assert_eq!(
            attempt_deadline(&a, now, now + 10),
            (now + 1_010, TimeoutKind::Heartbeat)
        );
        // A huge retry interval backs off (far) into the future, never into the past.
        a.options.schedule_to_close_ms = 0;
        a.options.retry.initial_interval_ms = u64::MAX;
        a.options.retry.maximum_interval_ms = u64::MAX;
        let at = next_attempt_at(&a, 1, None, now).unwrap();
        assert!(at > now, "{at}");
    }

    #[test]
    fn held_runs_back_off_up_to_the_setting() {
        let d: Vec<i64> = (1..=8).map(|a| held_task_delay_ms(a, 10_000)).collect();
        assert_eq!(d, [250, 500, 1_000, 2_000, 4_000, 8_000, 10_000, 10_000]);
        assert_eq!(held_task_delay_ms(12, 600_000), 512_000);
        assert_eq!(held_task_delay_ms(u32::MAX, u64::MAX), 250 << 39);
        assert_eq!(held_task_delay_ms(0, 100), 100);
    }

    #[test]
    fn deadlines_of_ordinary_attempts() {
        let now = 10_000;
        let mut a = act(ActivityOptions {
            start_to_close_ms: 5_000,
            schedule_to_close_ms: 3_000,
            ..Default::default()
        });
        assert_eq!(
            attempt_deadline(&a, now, now),
            (3_000, TimeoutKind::StartToClose),
            "schedule-to-close caps it"
        );
        a.options.schedule_to_close_ms = 0;
        a.options.heartbeat_ms = 1_000;
        assert_eq!(
            attempt_deadline(&a, now, now + 4_500),
            (15_000, TimeoutKind::StartToClose),
            "the next heartbeat would come after the end"
        );
    }

    #[test]
    fn an_activity_being_cancelled_is_not_retried() {
        let mut a = act(ActivityOptions::default());
        assert!(next_attempt_at(&a, 1, None, 0).is_some());
        a.cancel_requested = true;
        assert_eq!(next_attempt_at(&a, 1, None, 0), None);
    }

    #[test]
    fn final_failures() {
        let mut o = ActivityOptions::default();
        o.retry.maximum_attempts = 3;
        o.retry.non_retryable_error_types = vec!["BadRequest".into()];
        let a = act(o);
        assert_eq!(next_attempt_at(&a, 3, None, 0), None);
        assert!(next_attempt_at(&a, 2, None, 0).is_some());
        let f = Failure {
            error_type: "BadRequest".into(),
            ..Default::default()
        };
        assert_eq!(next_attempt_at(&a, 1, Some(&f), 0), None);
        let f = Failure {
            non_retryable: true,
            ..Default::default()
        };
        assert_eq!(next_attempt_at(&a, 1, Some(&f), 0), None);
        let o = ActivityOptions {
            schedule_to_close_ms: 1_500,
            ..Default::default()
        };
        assert_eq!(next_attempt_at(&act(o), 1, None, 600), None);
    }
}
