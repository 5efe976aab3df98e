//! Activities: scheduling, attempts, retries, `write` reconciliation, cancellation and C3.

use super::*;

#[test]
fn activity_scheduled_is_ready_at_once() {
    let mut r = Run::new();
    r.task();
    r.now = T0 + 7;
    let id = r.schedule(Effect::Idempotent);
    let a = r.activity(id).clone();
    assert_eq!(a.activity_type, "llm.chat");
    assert_eq!(a.options, options(Effect::Idempotent));
    assert_eq!(
        (a.scheduled_ms, a.scheduled_seq, a.attempt, a.ordinal),
        (T0 + 7, 5, 1, 1)
    );
    assert_eq!(a.phase, ActivityPhase::Ready { visible_ms: T0 + 7 });
    assert_eq!(a.last_failure, None);
    assert!(!a.cancel_requested);
    assert_eq!(r.state.usage.activities, 1);
    assert!(
        !r.state.unseen_events,
        "the code scheduled it: nothing new to see"
    );
    let id2 = r.schedule(Effect::Read);
    assert_eq!(r.activity(id2).ordinal, 2);
    assert_eq!(r.state.usage.activities, 2);
}

#[test]
fn write_activity_started_lost_reconciled_and_retried() {
    let mut r = Run::new();
    r.task();
    let id = r.schedule(Effect::Write);
    r.now = T0 + 10;
    r.ok(write_started(id, 1));
    assert_eq!(
        r.activity(id).phase,
        ActivityPhase::Started {
            since_ms: T0 + 10,
            worker: "w2".into(),
            effect: Effect::Write,
        }
    );
    assert_eq!(r.activity(id).attempt, 1);
    r.ok(Event::ActivityProgress(ActivityProgress {
        command_seq: id,
        attempt: 1,
        details: Payload::json("50"),
    }));

    r.now = T0 + 20;
    r.ok(outcome_unknown(id, 1));
    assert_eq!(
        r.activity(id).phase,
        ActivityPhase::OutcomeUnknown { since_ms: T0 + 20 }
    );
    assert!(
        !r.state.unseen_events,
        "the code waits on, the operator decides"
    );
    assert_eq!(
        r.state.waiting_on(T0 + 20),
        vec![WaitingOn::Reconciliation {
            id,
            activity_type: "llm.chat".into(),
            attempt: 1
        }]
    );

    r.now = T0 + 30;
    r.ok(reconciled(id));
    assert_eq!(
        r.activity(id).phase,
        ActivityPhase::Ready {
            visible_ms: T0 + 30
        }
    );
    assert_eq!(r.activity(id).attempt, 2);

    r.ok(write_started(id, 2));
    assert_eq!(r.activity(id).attempt, 2);
    r.ok(Event::ActivityCompleted(ActivityCompleted {
        command_seq: id,
        attempt: 2,
        result: Payload::json("1"),
        duration_ms: 1,
        usage: None,
        reconciled: false,
    }));
    assert!(!r.state.activities.contains_key(&id));
    assert!(r.state.unseen_events);
}

#[test]
fn lost_write_attempt_may_be_completed_by_the_operator() {
    let mut r = Run::new();
    r.task();
    let id = r.schedule(Effect::Write);
    r.ok(write_started(id, 1));
    r.ok(outcome_unknown(id, 1));
    r.ok(Event::ActivityCompleted(ActivityCompleted {
        command_seq: id,
        attempt: 1,
        result: Payload::json("\"it did happen\""),
        duration_ms: 0,
        usage: None,
        reconciled: true,
    }));
    assert!(r.state.activities.is_empty());
    // C3: once recorded, no second completion, not even a reconciled one.
    assert_illegal(
        &r.err(completed(id, 1, None)),
        r.state.last_seq + 1,
        EventKind::ActivityCompleted,
        "not open",
    );
}

#[test]
fn activity_phase_transitions_out_of_order_are_refused() {
    let mut r = Run::new();
    r.task();
    let id = r.schedule(Effect::Write);
    // Ready: nothing to lose or reconcile.
    assert_illegal(
        &r.err(outcome_unknown(id, 1)),
        6,
        EventKind::ActivityOutcomeUnknown,
        "no started write attempt",
    );
    assert_illegal(
        &r.err(reconciled(id)),
        6,
        EventKind::ActivityReconciled,
        "not waiting for reconciliation",
    );
    r.ok(write_started(id, 1));
    // Started: not again, and not reconciled before it is lost.
    assert_illegal(
        &r.err(write_started(id, 1)),
        7,
        EventKind::ActivityStarted,
        "not ready to start",
    );
    assert_illegal(
        &r.err(reconciled(id)),
        7,
        EventKind::ActivityReconciled,
        "not waiting for reconciliation",
    );
    r.ok(outcome_unknown(id, 1));
    // OutcomeUnknown: not started (a blind retry) and not lost twice.
    assert_illegal(
        &r.err(write_started(id, 2)),
        8,
        EventKind::ActivityStarted,
        "not ready to start",
    );
    assert_illegal(
        &r.err(outcome_unknown(id, 1)),
        8,
        EventKind::ActivityOutcomeUnknown,
        "no started write attempt",
    );
    r.ok(reconciled(id));
    assert_illegal(
        &r.err(reconciled(id)),
        9,
        EventKind::ActivityReconciled,
        "not waiting for reconciliation",
    );
}

#[test]
fn activity_completion_with_usage_adds_to_totals() {
    let mut r = Run::new();
    r.task();
    let a = r.schedule(Effect::Read);
    let b = r.schedule(Effect::Read);
    let c = r.schedule(Effect::Read);
    r.ok(completed(a, 1, Some(usage(100, 20, 300))));
    assert_eq!(
        r.state.usage,
        UsageTotals {
            input_tokens: 100,
            output_tokens: 20,
            cost_micros: 300,
            activities: 3,
            llm_calls: 1
        }
    );
    r.ok(completed(b, 1, Some(usage(1, 2, 3))));
    r.ok(completed(c, 1, None));
    assert_eq!(
        r.state.usage,
        UsageTotals {
            input_tokens: 101,
            output_tokens: 22,
            cost_micros: 303,
            activities: 3,
            llm_calls: 2
        }
    );
    assert_eq!(r.state.usage.tokens(), 123);
    assert!(r.state.activities.is_empty());
    assert!(r.state.unseen_events);
}

#[test]
fn usage_totals_saturate() {
    let mut r = Run::new();
    r.task();
    let a = r.schedule(Effect::Read);
    let b = r.schedule(Effect::Read);
    r.ok(completed(a, 1, Some(usage(u64::MAX, u64::MAX, u64::MAX))));
    r.ok(completed(b, 1, Some(usage(1, 1, 1))));
    assert_eq!(r.state.usage.input_tokens, u64::MAX);
    assert_eq!(r.state.usage.cost_micros, u64::MAX);
    assert_eq!(r.state.usage.tokens(), u64::MAX);
}

#[test]
fn activity_failure_with_retry_at_backs_off() {
    let mut r = Run::new();
    r.task();
    let id = r.schedule(Effect::Idempotent);
    r.now = T0 + 100;
    let s = r.ok(failed(id, 1, Some(T0 + 5_000)));
    let a = &s.activities[&id];
    assert_eq!(a.attempt, 2);
    assert_eq!(
        a.phase,
        ActivityPhase::Ready {
            visible_ms: T0 + 5_000
        }
    );
    assert_eq!(a.last_failure, Some(failure("nope")));
    assert!(
        !s.unseen_events,
        "a retried failure is not news to the code"
    );
    let waiting = |now| r.state.waiting_on(now);
    assert_eq!(
        waiting(T0 + 4_999),
        vec![WaitingOn::Activity {
            id,
            activity_type: "llm.chat".into(),
            attempt: 2,
            since_ms: T0,
            next_retry_ms: Some(T0 + 5_000),
            state: "backoff",
        }]
    );
    assert_eq!(
        waiting(T0 + 5_000),
        vec![WaitingOn::Activity {
            id,
            activity_type: "llm.chat".into(),
            attempt: 2,
            since_ms: T0,
            next_retry_ms: None,
            state: "scheduled",
        }]
    );
    // The next failure counts from the attempt it names.
    r.ok(failed(id, 2, Some(T0 + 9_000)));
    assert_eq!(r.activity(id).attempt, 3);
    r.ok(completed(id, 3, None));
    assert!(r.state.activities.is_empty());
}

#[test]
fn final_activity_failure_closes_it() {
    let mut r = Run::new();
    r.task();
    let id = r.schedule(Effect::Idempotent);
    let s = r.ok(failed(id, 1, None));
    assert!(!s.activities.contains_key(&id));
    assert!(s.unseen_events, "the code must see the failure");
    assert!(s.needs_workflow_task());
    // Closed: no completion, failure or retry after it.
    let n = r.state.last_seq + 1;
    assert_illegal(
        &r.err(completed(id, 1, None)),
        n,
        EventKind::ActivityCompleted,
        "activity 1 is not open",
    );
    assert_illegal(
        &r.err(failed(id, 1, None)),
        n,
        EventKind::ActivityFailed,
        "not open",
    );
    assert_illegal(
        &r.err(timed_out(id, 1, None)),
        n,
        EventKind::ActivityTimedOut,
        "not open",
    );
}

#[test]
fn activity_timeout_retries_or_closes() {
    let mut r = Run::new();
    r.task();
    let id = r.schedule(Effect::Idempotent);
    let s = r.ok(timed_out(id, 1, Some(T0 + 1_000)));
    let a = &s.activities[&id];
    assert_eq!(
        (a.attempt, &a.phase),
        (
            2,
            &ActivityPhase::Ready {
                visible_ms: T0 + 1_000
            }
        )
    );
    let f = a.last_failure.as_ref().expect("timeouts are failures");
    assert_eq!(f.error_type, "Timeout");
    assert!(f.message.contains("StartToClose"), "{}", f.message);
    assert!(!s.unseen_events);
    let s = r.ok(Event::ActivityTimedOut(ActivityTimedOut {
        command_seq: id,
        attempt: 2,
        timeout: TimeoutKind::ScheduleToClose,
        retry_at_ms: None,
    }));
    assert!(s.activities.is_empty());
    assert!(s.unseen_events);
}

#[test]
fn activity_cancel_requested_then_cancelled() {
    let mut r = Run::new();
    r.task();
    let id = r.schedule(Effect::Read);
    let cs = r.cmd();
    let s = r.ok(Event::ActivityCancelRequested(ActivityCancelRequested {
        command_seq: cs,
        activity_id: id,
    }));
    assert!(s.activities[&id].cancel_requested);
    assert_eq!(s.next_command_seq, cs + 1);
    let s = r.ok(Event::ActivityCancelled(ActivityCancelled {
        command_seq: id,
    }));
    assert!(s.activities.is_empty());
    assert!(s.unseen_events);
    assert_illegal(
        &r.err(Event::ActivityCancelled(ActivityCancelled {
            command_seq: id,
        })),
        8,
        EventKind::ActivityCancelled,
        "not open",
    );
}

#[test]
fn cancelling_a_closed_activity_is_a_no_op() {
    // The activity completed while the task that cancels it was open: the cancel is accepted
    // (the history keeps its command seq) and the workflow gets the recorded result.
    let mut r = Run::new();
    r.task();
    let id = r.schedule(Effect::Read);
    r.ok(completed(id, 1, None));
    let started = r.open_task();
    r.ok(Event::WorkflowTaskCompleted(WorkflowTaskCompleted {
        started_seq: started,
        worker: "w1".into(),
    }));
    let before = r.state.clone();
    let cs = r.cmd();
    let s = r.ok(Event::ActivityCancelRequested(ActivityCancelRequested {
        command_seq: cs,
        activity_id: id,
    }));
    assert!(s.activities.is_empty());
    assert_eq!(s.unseen_events, before.unseen_events);
    assert_eq!(s.next_command_seq, cs + 1);
    // Nothing was cancelled, so nothing can be confirmed as cancelled.
    let n = r.state.last_seq + 1;
    assert_illegal(
        &r.err(Event::ActivityCancelled(ActivityCancelled {
            command_seq: id,
        })),
        n,
        EventKind::ActivityCancelled,
        "not open",
    );
}

#[test]
fn events_for_unknown_activities_are_refused() {
    let mut r = Run::new();
    r.task();
    let id = r.schedule(Effect::Write);
    let ghost = 99;
    let n = r.state.last_seq + 1;
    let cs = r.cmd();
    let cases = [
        write_started(ghost, 1),
        completed(ghost, 1, None),
        failed(ghost, 1, Some(T0)),
        timed_out(ghost, 1, None),
        Event::ActivityCancelRequested(ActivityCancelRequested {
            command_seq: cs,
            activity_id: ghost,
        }),
        Event::ActivityCancelled(ActivityCancelled { command_seq: ghost }),
        outcome_unknown(ghost, 1),
        reconciled(ghost),
        Event::ActivityProgress(ActivityProgress {
            command_seq: ghost,
            attempt: 1,
            details: Payload::default(),
        }),
    ];
    for ev in cases {
        let k = ev.kind();
        assert_illegal(&r.err(ev), n, k, "activity 99 is not open");
    }
    // The real one is untouched and still completes.
    r.ok(completed(id, 1, None));
}

#[test]
fn a_second_completion_of_an_activity_is_refused() {
    // C3: at most one completion is ever recorded per (run, activity).
    let mut r = Run::new();
    r.task();
    let id = r.schedule(Effect::Read);
    r.ok(completed(id, 1, Some(usage(5, 5, 5))));
    let before = r.state.usage.clone();
    let n = r.state.last_seq + 1;
    assert_illegal(
        &r.err(completed(id, 1, Some(usage(5, 5, 5)))),
        n,
        EventKind::ActivityCompleted,
        "not open",
    );
    assert_illegal(
        &r.err(completed(id, 2, None)),
        n,
        EventKind::ActivityCompleted,
        "not open",
    );
    assert_eq!(r.state.usage, before, "usage is counted once");
    // Nor any other outcome after it.
    assert_illegal(
        &r.err(failed(id, 1, Some(T0))),
        n,
        EventKind::ActivityFailed,
        "not open",
    );
    assert_illegal(
        &r.err(Event::ActivityCancelled(ActivityCancelled {
            command_seq: id,
        })),
        n,
        EventKind::ActivityCancelled,
        "not open",
    );
}

#[test]
fn a_run_cancel_reaches_the_activities_open_then_not_later_cleanup() {
    let mut r = Run::new();
    r.task();
    let before = r.schedule(Effect::Read);
    let s = r.ok(Event::CancelRequested(CancelRequested {
        reason: "user".into(),
        identity: "cli".into(),
    }));
    assert!(s.cancel_requested);
    assert!(s.activities[&before].cancel_requested);
    r.task();
    let cleanup = r.schedule(Effect::Write);
    let s = &r.state;
    assert!(s.activities[&before].cancel_requested);
    assert!(
        !s.activities[&cleanup].cancel_requested,
        "cleanup scheduled after the cancel runs"
    );
}

#[test]
fn only_a_started_write_can_become_outcome_unknown() {
    // A lost read or idempotent attempt times out and is retried with the same key; only
    // a lost write waits for reconciliation.
    for effect in [Effect::Read, Effect::Idempotent] {
        let mut r = Run::new();
        r.task();
        let id = r.schedule(effect);
        r.ok(Event::ActivityStarted(ActivityStarted {
            command_seq: id,
            attempt: 1,
            worker: "w2".into(),
            effect,
        }));
        assert_illegal(
            &r.err(outcome_unknown(id, 1)),
            r.state.last_seq + 1,
            EventKind::ActivityOutcomeUnknown,
            "no started write attempt",
        );
        assert_eq!(r.state.attempts_in_flight(), 1);
    }
}

#[test]
fn a_failed_attempt_counts_its_usage() {
    let mut r = Run::new();
    r.task();
    let id = r.schedule(Effect::Read);
    r.ok(Event::ActivityFailed(ActivityFailed {
        command_seq: id,
        attempt: 1,
        failure: Failure::default(),
        retry_at_ms: Some(T0 + 1_000),
        duration_ms: 5,
        usage: Some(Usage {
            input_tokens: 100,
            output_tokens: 20,
            cost_micros: 7,
            model: "m".into(),
        }),
    }));
    assert_eq!(r.state.usage.tokens(), 120);
    assert_eq!(r.state.usage.cost_micros, 7);
    assert_eq!(
        r.state.usage.llm_calls, 0,
        "a failed call is not a completed one"
    );
}
