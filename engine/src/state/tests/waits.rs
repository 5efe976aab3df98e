//! Timers, signals, progress, cancel requests, budgets and what an open run waits on.

use super::*;

#[test]
fn timer_started_and_fired() {
    let mut r = Run::new();
    r.task();
    let t = r.timer(T0 + 60_000);
    assert_eq!(r.state.timers.get(&t), Some(&(T0 + 60_000)));
    assert!(!r.state.unseen_events);
    assert_eq!(
        r.state.waiting_on(T0),
        vec![WaitingOn::Timer {
            id: t,
            fire_at_ms: T0 + 60_000
        }]
    );
    let s = r.ok(timer_fired(t));
    assert!(s.timers.is_empty());
    assert!(s.unseen_events);
    assert!(s.needs_workflow_task());
}

#[test]
fn timer_fired_twice_is_refused() {
    let mut r = Run::new();
    r.task();
    let t = r.timer(T0 + 1);
    r.ok(timer_fired(t));
    assert_illegal(
        &r.err(timer_fired(t)),
        7,
        EventKind::TimerFired,
        "timer 1 is not open",
    );
    assert_illegal(
        &r.err(timer_fired(7)),
        7,
        EventKind::TimerFired,
        "timer 7 is not open",
    );
}

#[test]
fn timer_cancelled() {
    let mut r = Run::new();
    r.task();
    let t = r.timer(T0 + 1);
    let keep = r.timer(T0 + 2);
    let s = r.ok(Event::TimerCancelled(TimerCancelled {
        command_seq: 3,
        timer_id: t,
    }));
    assert_eq!(s.timers.keys().copied().collect::<Vec<_>>(), vec![keep]);
    assert!(!s.unseen_events, "the code cancelled it itself");
    // A cancelled timer does not fire.
    assert_illegal(&r.err(timer_fired(t)), 8, EventKind::TimerFired, "not open");
    r.ok(timer_fired(keep));
    // Cancelling a timer that already fired or was cancelled is accepted and changes nothing
    // but the command seq: the command raced with the timer, and the workflow sees the
    // TimerFired already in its history (issue 10: such a cancel was refused, and the refused
    // completion was retried forever).
    let before = r.state.clone();
    let s = r.ok(Event::TimerCancelled(TimerCancelled {
        command_seq: 4,
        timer_id: keep,
    }));
    assert!(s.timers.is_empty());
    assert_eq!(s.unseen_events, before.unseen_events);
    assert_eq!(s.next_command_seq, 5);
    r.ok(Event::TimerCancelled(TimerCancelled {
        command_seq: 5,
        timer_id: t,
    }));
    // A cancel must still name an earlier command.
    let e = r.err(Event::TimerCancelled(TimerCancelled {
        command_seq: 6,
        timer_id: 6,
    }));
    assert_illegal(&e, 11, EventKind::TimerCancelled, "timer 6 is not open");
    let e = r.err(Event::TimerCancelled(TimerCancelled {
        command_seq: 6,
        timer_id: 40,
    }));
    assert_illegal(&e, 11, EventKind::TimerCancelled, "timer 40 is not open");
}

#[test]
fn signal_received_after_the_wait_satisfies_it() {
    let mut r = Run::new();
    r.task();
    r.now = T0 + 3;
    r.wait_signal("approve");
    assert_eq!(
        r.state.signal_waits,
        vec![SignalWait {
            command_seq: 1,
            name: "approve".into(),
            question: "approve?".into(),
            choices: vec!["yes".into(), "no".into()],
            since_ms: T0 + 3,
        }]
    );
    assert_eq!(
        r.state.waiting_on(T0 + 9),
        vec![WaitingOn::Signal {
            name: "approve".into(),
            question: "approve?".into(),
            choices: vec!["yes".into(), "no".into()],
            since_ms: T0 + 3,
        }]
    );
    assert!(!r.state.unseen_events);
    r.signal("other");
    assert_eq!(
        r.state.signal_waits.len(),
        1,
        "another name does not satisfy it"
    );
    r.signal("approve");
    assert!(r.state.signal_waits.is_empty());
    assert_eq!(r.state.signals_received.get("approve"), Some(&1));
    assert_eq!(r.state.signals_received.get("other"), Some(&1));
    assert!(r.state.unseen_events);
}

#[test]
fn signal_received_before_the_wait_satisfies_it() {
    let mut r = Run::new();
    r.signal("approve");
    assert!(r.state.unseen_events);
    r.task();
    r.wait_signal("approve");
    assert!(
        r.state.signal_waits.is_empty(),
        "the buffered signal answers the wait at once"
    );
    assert_eq!(r.state.waiting_on(T0), vec![WaitingOn::Idle]);
    // The next wait of that name is not satisfied by the same signal.
    r.wait_signal("approve");
    assert_eq!(r.state.signal_waits.len(), 1);
    assert_eq!(r.state.signal_waits_issued.get("approve"), Some(&2));
}

#[test]
fn each_signal_satisfies_one_wait() {
    let mut r = Run::new();
    r.task();
    let first = r.wait_signal("step");
    let second = r.wait_signal("step");
    r.signal("step");
    assert_eq!(
        r.state
            .signal_waits
            .iter()
            .map(|w| w.command_seq)
            .collect::<Vec<_>>(),
        vec![second]
    );
    assert_ne!(first, second);
    r.signal("step");
    assert!(r.state.signal_waits.is_empty());
    // Two early signals, then two waits: both satisfied, a third is not.
    r.signal("later");
    r.signal("later");
    r.task();
    r.wait_signal("later");
    r.wait_signal("later");
    assert!(r.state.signal_waits.is_empty());
    r.wait_signal("later");
    assert_eq!(r.state.signal_waits.len(), 1);
}

#[test]
fn progress_reported_keeps_the_last() {
    let mut r = Run::new();
    r.task();
    r.now = T0 + 1;
    r.ok(Event::ProgressReported(ProgressReported {
        command_seq: 1,
        done: 1,
        total: 4,
        message: "read".into(),
    }));
    r.now = T0 + 2;
    let s = r.ok(Event::ProgressReported(ProgressReported {
        command_seq: 2,
        done: 3,
        total: 4,
        message: "write".into(),
    }));
    assert_eq!(
        s.progress,
        Some(ProgressState {
            done: 3,
            total: 4,
            message: "write".into(),
            time_ms: T0 + 2
        })
    );
    assert!(!s.unseen_events);
}

#[test]
fn partial_result_keeps_the_last() {
    let mut r = Run::new();
    r.task();
    r.ok(partial(1, "[1]"));
    let s = r.ok(partial(2, "[1,2]"));
    assert_eq!(s.partial_result, Some(Payload::json("[1,2]")));
    assert_eq!(
        s.result, None,
        "a partial result is not the result while the run is open"
    );
}

#[test]
fn cancel_requested_once() {
    let mut r = Run::new();
    r.task();
    assert!(!r.state.unseen_events);
    let s = r.ok(cancel_requested());
    assert!(s.cancel_requested);
    assert!(s.unseen_events, "the code must see the request");
    assert_eq!(s.status, RunStatus::Running, "cancellation is cooperative");
    assert_illegal(
        &r.err(cancel_requested()),
        6,
        EventKind::CancelRequested,
        "already requested",
    );
}

#[test]
fn budget_exceeded_parks_until_updated() {
    let budget = Budget {
        max_tokens: 100,
        ..Default::default()
    };
    let mut r = Run::with(started(budget));
    let hit = BudgetHit {
        dimension: BudgetDimension::Tokens,
        limit: 100,
        used: 150,
    };
    let s = r.ok(Event::BudgetExceeded(BudgetExceeded {
        dimension: hit.dimension,
        limit: hit.limit,
        used: hit.used,
    }));
    assert_eq!(s.budget_exceeded, Some(hit));
    assert_eq!(s.waiting_on(T0), vec![WaitingOn::Budget(hit)]);
    let raised = Budget {
        max_tokens: 1_000,
        ..Default::default()
    };
    let s = r.ok(Event::BudgetUpdated(BudgetUpdated {
        budget: raised,
        identity: "op".into(),
    }));
    assert_eq!(s.budget, raised);
    assert_eq!(s.budget_exceeded, None);
    assert!(s.waiting_on(T0).is_empty());
}

#[test]
fn budget_block_for_each_dimension() {
    let unlimited = Run::new();
    assert_eq!(unlimited.state.budget_block(1, T0 + 1_000_000_000), None);

    // Tokens: input + output, blocked once the total reaches the ceiling.
    let mut r = Run::with(started(Budget {
        max_tokens: 100,
        ..Default::default()
    }));
    r.task();
    let a = r.schedule(Effect::Read);
    let b = r.schedule(Effect::Read);
    r.ok(completed(a, 1, Some(usage(60, 39, 0))));
    assert_eq!(r.state.budget_block(b, T0), None);
    let mut r2 = Run::with(started(Budget {
        max_tokens: 100,
        ..Default::default()
    }));
    r2.task();
    let a = r2.schedule(Effect::Read);
    let b = r2.schedule(Effect::Read);
    r2.ok(completed(a, 1, Some(usage(60, 40, 0))));
    assert_eq!(
        r2.state.budget_block(b, T0),
        Some(BudgetHit {
            dimension: BudgetDimension::Tokens,
            limit: 100,
            used: 100
        })
    );

    // Cost.
    let mut r = Run::with(started(Budget {
        max_cost_micros: 500,
        ..Default::default()
    }));
    r.task();
    let a = r.schedule(Effect::Read);
    let b = r.schedule(Effect::Read);
    r.ok(completed(a, 1, Some(usage(1, 1, 499))));
    assert_eq!(r.state.budget_block(b, T0), None);
    let c = r.schedule(Effect::Read);
    r.ok(completed(b, 1, Some(usage(1, 1, 2))));
    assert_eq!(
        r.state.budget_block(c, T0),
        Some(BudgetHit {
            dimension: BudgetDimension::Cost,
            limit: 500,
            used: 501
        })
    );

    // Activities: the first `max_activities` may run, the next may not.
    let mut r = Run::with(started(Budget {
        max_activities: 2,
        ..Default::default()
    }));
    r.task();
    let ids: Vec<_> = (0..3).map(|_| r.schedule(Effect::Read)).collect();
    assert_eq!(r.state.budget_block(ids[0], T0), None);
    assert_eq!(r.state.budget_block(ids[1], T0), None);
    assert_eq!(
        r.state.budget_block(ids[2], T0),
        Some(BudgetHit {
            dimension: BudgetDimension::Activities,
            limit: 2,
            used: 2
        })
    );
    assert_eq!(
        r.state.budget_block(42, T0),
        None,
        "an unknown activity has no ordinal"
    );

    // Duration: wall time since the run started.
    let r = Run::with(started(Budget {
        max_duration_ms: 1_000,
        ..Default::default()
    }));
    assert_eq!(r.state.budget_block(1, T0 + 999), None);
    assert_eq!(
        r.state.budget_block(1, T0 - 5),
        None,
        "a clock behind the start counts as zero"
    );
    assert_eq!(
        r.state.budget_block(1, T0 + 1_000),
        Some(BudgetHit {
            dimension: BudgetDimension::Duration,
            limit: 1_000,
            used: 1_000
        })
    );
}

#[test]
fn budget_updated_lifts_a_block() {
    let mut r = Run::with(started(Budget {
        max_activities: 1,
        ..Default::default()
    }));
    r.task();
    r.schedule(Effect::Read);
    let b = r.schedule(Effect::Read);
    assert!(r.state.budget_block(b, T0).is_some());
    r.ok(Event::BudgetUpdated(BudgetUpdated {
        budget: Budget {
            max_activities: 2,
            ..Default::default()
        },
        identity: "op".into(),
    }));
    assert_eq!(r.state.budget_block(b, T0), None);
}

#[test]
fn waiting_on_lists_every_category() {
    let mut r = Run::with(started(Budget {
        max_tokens: 1,
        ..Default::default()
    }));
    r.task();
    let running = r.schedule(Effect::Write);
    let lost = r.schedule(Effect::Write);
    let backoff = r.schedule(Effect::Read);
    let ready = r.schedule(Effect::Read);
    let timer = r.timer(T0 + 500);
    r.wait_signal("approve");
    r.now = T0 + 10;
    r.ok(write_started(running, 1));
    r.ok(write_started(lost, 1));
    r.ok(outcome_unknown(lost, 1));
    r.ok(failed(backoff, 1, Some(T0 + 1_000)));
    let hit = BudgetHit {
        dimension: BudgetDimension::Tokens,
        limit: 1,
        used: 1,
    };
    r.ok(Event::BudgetExceeded(BudgetExceeded {
        dimension: hit.dimension,
        limit: 1,
        used: 1,
    }));
    r.ok(Event::WorkflowTaskScheduled(WorkflowTaskScheduled {
        task_queue: "agents".into(),
        attempt: 1,
        not_before_ms: 0,
    }));

    let w = r.state.waiting_on(T0 + 20);
    let llm = || "llm.chat".to_string();
    assert_eq!(
        w,
        vec![
            WaitingOn::Budget(hit),
            WaitingOn::WorkflowTask { held_reason: None },
            WaitingOn::Activity {
                id: running,
                activity_type: llm(),
                attempt: 1,
                since_ms: T0 + 10,
                next_retry_ms: None,
                state: "running"
            },
            WaitingOn::Reconciliation {
                id: lost,
                activity_type: llm(),
                attempt: 1
            },
            WaitingOn::Activity {
                id: backoff,
                activity_type: llm(),
                attempt: 2,
                since_ms: T0,
                next_retry_ms: Some(T0 + 1_000),
                state: "backoff"
            },
            WaitingOn::Activity {
                id: ready,
                activity_type: llm(),
                attempt: 1,
                since_ms: T0,
                next_retry_ms: None,
                state: "scheduled"
            },
            WaitingOn::Timer {
                id: timer,
                fire_at_ms: T0 + 500
            },
            WaitingOn::Signal {
                name: "approve".into(),
                question: "approve?".into(),
                choices: vec!["yes".into(), "no".into()],
                since_ms: T0
            },
        ]
    );
    let categories: Vec<_> = w.iter().map(WaitingOn::category).collect();
    assert_eq!(
        categories,
        [
            "budget",
            "workflow_task",
            "activity",
            "reconciliation",
            "activity",
            "activity",
            "timer",
            "signal"
        ]
    );
}

#[test]
fn a_fresh_run_waits_on_nothing_until_its_task_is_scheduled() {
    let r = Run::new();
    assert!(r.state.waiting_on(T0).is_empty());
    assert!(
        r.state.needs_workflow_task(),
        "the server schedules it; waiting_on reports pending tasks only"
    );
}

#[test]
fn an_open_run_whose_code_waits_for_nothing_tracked_is_idle() {
    let mut r = Run::new();
    // The code completes its first task with no command: it awaits only a cancel, or a signal
    // it never issued a wait for.
    r.task();
    assert!(r.state.is_open() && !r.state.needs_workflow_task());
    let w = r.state.waiting_on(T0);
    assert_eq!(w, vec![WaitingOn::Idle]);
    assert_eq!(w[0].category(), "idle");

    // Idle only when nothing else is named: a timer replaces it...
    r.open_task();
    r.ok(Event::WorkflowTaskCompleted(WorkflowTaskCompleted {
        started_seq: r.state.last_seq,
        worker: "w1".into(),
    }));
    let timer = r.timer(T0 + 5);
    assert_eq!(
        r.state.waiting_on(T0),
        vec![WaitingOn::Timer {
            id: timer,
            fire_at_ms: T0 + 5
        }]
    );
    // ...and a signal wakes the code: its task is named, not idleness.
    r.ok(Event::SignalReceived(SignalReceived {
        name: "poke".into(),
        input: Payload::json("null"),
        identity: "op".into(),
        request_id: String::new(),
    }));
    r.ok(Event::WorkflowTaskScheduled(WorkflowTaskScheduled {
        task_queue: "agents".into(),
        attempt: 1,
        not_before_ms: 0,
    }));
    assert!(!r.state.waiting_on(T0).contains(&WaitingOn::Idle));
    // A closed run waits on nothing at all.
    r.ok(Event::RunTerminated(RunTerminated {
        reason: "stop".into(),
        identity: "op".into(),
    }));
    assert!(r.state.waiting_on(T0).is_empty());
}

#[test]
fn a_parent_waits_on_its_open_children_by_run_id_and_type() {
    let mut r = Run::new();
    r.task();
    let request = |cs: CommandSeq, n: u128| {
        Event::ChildRunRequested(ChildRunRequested {
            command_seq: cs,
            child_run_id: run_id(100 + n),
            workflow_type: format!("product-{n}"),
            workflow_id: String::new(),
            task_queue: "agents".into(),
            input: Payload::json("{}"),
            run_timeout_ms: 0,
            budget: Budget::default(),
            parent_close_policy: ParentClosePolicy::Cancel,
        })
    };
    let (a, b) = (r.cmd(), r.cmd() + 1);
    r.ok(request(a, 1));
    r.ok(request(b, 2));
    let child = |id, n: u128, state| WaitingOn::Child {
        id,
        run_id: run_id(100 + n).to_string(),
        workflow_type: format!("product-{n}"),
        state,
    };
    // Asked for: the server creates them (after any crash, at the recorded run ids).
    assert_eq!(
        r.state.waiting_on(T0),
        vec![child(a, 1, "starting"), child(b, 2, "starting")]
    );
    r.ok(Event::ChildRunStarted(ChildRunStarted {
        command_seq: a,
        run_id: run_id(101),
    }));
    r.ok(Event::ChildRunStartFailed(ChildRunStartFailed {
        command_seq: b,
        failure: failure("workflow id in use"),
    }));
    // A child that could not start is not waited on; the parent's code sees why in a task
    // (which the server schedules in the same append).
    assert!(r.state.needs_workflow_task());
    let w = r.state.waiting_on(T0);
    assert_eq!(w, [child(a, 1, "running")]);
    assert_eq!(w[0].category(), "child");
    r.task();
    assert_eq!(r.state.waiting_on(T0), vec![child(a, 1, "running")]);
    r.ok(Event::ChildRunClosed(ChildRunClosed {
        command_seq: a,
        outcome: ChildOutcome::Completed,
        result: None,
        failure: None,
        usage: Usage::default(),
        activities: 0,
        llm_calls: 0,
    }));
    // Closed: nothing left to wait on but the task that shows the parent the result.
    assert!(
        !r.state
            .waiting_on(T0)
            .iter()
            .any(|w| w.category() == "child")
    );
}
