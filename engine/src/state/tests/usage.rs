//! Late usage: an attempt that timed out while it ran reports what it used, once, and it is
//! counted without changing the activity's outcome (issue 9, point 6).

use super::*;

fn started(id: CommandSeq, attempt: u32) -> Event {
    Event::ActivityStarted(ActivityStarted {
        command_seq: id,
        attempt,
        worker: "w2".into(),
        effect: Effect::Idempotent,
    })
}

fn late(id: CommandSeq, attempt: u32, u: Usage) -> Event {
    Event::ActivityUsageReported(ActivityUsageReported {
        command_seq: id,
        attempt,
        usage: u,
    })
}

#[test]
fn a_timed_out_attempt_reports_its_usage_once_without_changing_the_outcome() {
    let mut r = Run::with(super::started(Budget {
        max_tokens: 150,
        ..Budget::default()
    }));
    r.task();
    let id = r.schedule(Effect::Idempotent);
    r.ok(started(id, 1));
    r.ok(timed_out(id, 1, Some(T0 + 1_000)));
    assert!(r.state.accepts_late_usage(id, 1));
    let before = r.activity(id).clone();

    let n = r.state.last_seq + 1;
    r.ok(late(id, 1, usage(100, 60, 9)));
    assert_eq!(r.state.usage.tokens(), 160);
    assert_eq!(r.state.usage.cost_micros, 9);
    assert_eq!(r.state.usage.llm_calls, 0, "not a completed call");
    assert_eq!(
        r.activity(id),
        &before,
        "the outcome (a retry) is unchanged"
    );
    assert!(!r.state.unseen_events, "nothing for the workflow code");
    assert!(!r.state.accepts_late_usage(id, 1));
    assert_eq!(
        r.state.budget_block(id, T0).map(|h| h.dimension),
        Some(BudgetDimension::Tokens),
        "counted in the budget like a completion's usage"
    );

    // A second report of the same attempt is refused.
    assert_illegal(
        &r.err(late(id, 1, usage(1, 1, 1))),
        n + 1,
        EventKind::ActivityUsageReported,
        "already reported",
    );
}

#[test]
fn only_an_attempt_that_timed_out_while_running_may_report_late() {
    let mut r = Run::new();
    r.task();
    let id = r.schedule(Effect::Idempotent);
    let n = r.state.last_seq + 1;
    // Never started, never timed out.
    assert_illegal(
        &r.err(late(id, 1, usage(1, 0, 0))),
        n,
        EventKind::ActivityUsageReported,
        "did not time out",
    );
    r.ok(started(id, 1));
    // Running: its usage comes with its outcome.
    assert_illegal(
        &r.err(late(id, 1, usage(1, 0, 0))),
        n + 1,
        EventKind::ActivityUsageReported,
        "did not time out",
    );
    r.ok(failed(id, 1, Some(T0 + 5)));
    // Failed: its usage came with the failure.
    assert_illegal(
        &r.err(late(id, 1, usage(1, 0, 0))),
        n + 2,
        EventKind::ActivityUsageReported,
        "did not time out",
    );
    // Attempt 2 times out while backing off (schedule-to-close): it never ran.
    r.ok(Event::ActivityTimedOut(ActivityTimedOut {
        command_seq: id,
        attempt: 2,
        timeout: TimeoutKind::ScheduleToClose,
        retry_at_ms: None,
    }));
    assert!(!r.state.accepts_late_usage(id, 2));
    assert_illegal(
        &r.err(late(id, 2, usage(1, 0, 0))),
        n + 3,
        EventKind::ActivityUsageReported,
        "did not time out",
    );
}

#[test]
fn a_final_timeout_still_takes_the_late_usage() {
    let mut r = Run::new();
    r.task();
    let id = r.schedule(Effect::Read);
    r.ok(started(id, 1));
    r.ok(timed_out(id, 1, None));
    assert!(r.state.activities.is_empty(), "the activity is closed");
    r.ok(late(id, 1, usage(7, 3, 2)));
    assert_eq!(r.state.usage.tokens(), 10);
    assert!(r.state.activities.is_empty());
}

#[test]
fn the_oldest_timed_out_attempts_are_forgotten_past_the_bound() {
    let mut r = Run::new();
    r.task();
    let id = r.schedule(Effect::Idempotent);
    let attempts = TIMED_OUT_ATTEMPTS_KEPT_MAX as u32 + 1;
    for attempt in 1..=attempts {
        r.ok(started(id, attempt));
        r.ok(timed_out(id, attempt, Some(T0)));
    }
    assert_eq!(
        r.state.timed_out_attempts.len(),
        TIMED_OUT_ATTEMPTS_KEPT_MAX
    );
    assert!(
        !r.state.accepts_late_usage(id, 1),
        "the oldest is forgotten"
    );
    assert!(r.state.accepts_late_usage(id, 2));
    assert!(r.state.accepts_late_usage(id, attempts));
    // And the fold of the history gives the same state (the bound is deterministic).
    let folded = RunState::from_history(r.key.clone(), &r.records).expect("legal history");
    assert_eq!(folded, r.state);
}

#[test]
fn a_closed_run_takes_no_late_usage() {
    let mut r = Run::new();
    r.task();
    let id = r.schedule(Effect::Read);
    r.ok(started(id, 1));
    r.ok(timed_out(id, 1, None));
    r.ok(Event::RunTerminated(RunTerminated {
        reason: "done".into(),
        identity: "op".into(),
    }));
    assert!(!r.state.accepts_late_usage(id, 1));
}
