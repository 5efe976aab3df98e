//! Starting a run, the order of a history, and the terminal events.

use super::*;

#[test]
fn run_started_opens_the_run() {
    let budget = Budget {
        max_tokens: 10,
        max_cost_micros: 20,
        max_activities: 3,
        max_duration_ms: 40,
    };
    let mut a = started(budget);
    a.continued_from = Some(run_id(9));
    let r = Run::with(a);
    let s = &r.state;
    assert_eq!(s.key, r.key);
    assert_eq!(
        (
            s.workflow_type.as_str(),
            s.workflow_id.as_str(),
            s.task_queue.as_str()
        ),
        ("triage", "ticket-42", "agents")
    );
    assert_eq!(s.status, RunStatus::Running);
    assert!(s.is_open());
    assert_eq!(s.started_ms, T0);
    assert_eq!(s.closed_ms, None);
    assert_eq!(s.last_seq, 1);
    assert_eq!(s.last_hash, r.records[0].hash);
    assert_eq!(s.run_timeout_ms, 60_000);
    assert_eq!(s.run_deadline_ms(), Some(T0 + 60_000));
    assert_eq!(s.budget, budget);
    assert_eq!(s.usage, UsageTotals::default());
    assert_eq!(s.next_command_seq, 1);
    assert_eq!(s.workflow_task, WorkflowTask::Idle);
    assert!(s.unseen_events, "the code has not seen RunStarted yet");
    assert!(s.needs_workflow_task());
    assert_eq!(s.continued_from, Some(run_id(9)));
    assert_eq!(s.continued_to, None);
    assert_eq!(
        (s.result.as_ref(), s.failure.as_ref(), s.held.as_ref()),
        (None, None, None)
    );
}

#[test]
fn no_run_timeout_means_no_deadline() {
    let mut a = started(Budget::default());
    a.run_timeout_ms = 0;
    assert_eq!(Run::with(a).state.run_deadline_ms(), None);
}

#[test]
fn first_event_must_be_run_started() {
    let key = RunKey::new("default", run_id(1));
    let g = genesis_hash(&key);
    let rec = make(&g, 1, T0, Event::TimerFired(TimerFired { command_seq: 1 }));
    assert_order(
        &RunState::start(key.clone(), &rec).unwrap_err(),
        1,
        "TimerFired",
    );
    assert_order(
        &RunState::from_history(key.clone(), &[rec]).unwrap_err(),
        1,
        "TimerFired",
    );
}

#[test]
fn run_started_must_be_seq_1() {
    let key = RunKey::new("default", run_id(1));
    let rec = make(
        &genesis_hash(&key),
        2,
        T0,
        Event::RunStarted(started(Budget::default())),
    );
    assert_order(&RunState::start(key, &rec).unwrap_err(), 2, "RunStarted");
}

#[test]
fn empty_history_has_no_state() {
    let key = RunKey::new("default", run_id(1));
    assert!(matches!(
        RunState::from_history(key, &[]),
        Err(ApplyError::Order { seq: 0, .. })
    ));
}

#[test]
fn run_started_only_at_seq_1() {
    let mut r = Run::new();
    let e = r.err(Event::RunStarted(started(Budget::default())));
    assert_order(&e, 2, "RunStarted");
}

#[test]
fn seq_gap_or_repeat_is_refused() {
    let mut r = Run::new();
    let ev = cancel_requested();
    for seq in [0, 1, 3, 100] {
        let rec = r.at_seq(seq, ev.clone());
        let e = r.err_rec(&rec);
        assert_order(&e, seq, "CancelRequested");
        assert!(e.to_string().contains("expected seq 2"), "{e}");
    }
    r.ok(ev);
}

#[test]
fn from_history_equals_applying_one_by_one() {
    let mut r = Run::new();
    r.task();
    let a = r.schedule(Effect::Idempotent);
    let t = r.timer(T0 + 10);
    r.ok(completed(a, 1, Some(usage(1, 2, 3))));
    r.ok(timer_fired(t));
    let s = RunState::from_history(r.key.clone(), &r.records).unwrap();
    assert_eq!(s, r.state);
    // A refused record in the middle of a history names its seq.
    let mut bad = r.records.clone();
    bad.push(make(
        &r.state.last_hash,
        r.state.last_seq + 1,
        r.now,
        timer_fired(t),
    ));
    assert_illegal(
        &RunState::from_history(r.key.clone(), &bad).unwrap_err(),
        r.state.last_seq + 1,
        EventKind::TimerFired,
        "not open",
    );
}

/// A run with open work of every kind and a partial result, ready for a terminal event.
fn busy_run() -> Run {
    let mut r = Run::new();
    r.task();
    r.schedule(Effect::Read);
    r.timer(T0 + 100);
    r.wait_signal("approve");
    r.ok(partial(4, "\"so far\""));
    r.open_task();
    r.now = T0 + 777;
    r
}

/// Applies a terminal event to a fresh busy run and checks what every terminal event does.
fn close_with(event: Event, status: RunStatus) -> RunState {
    let mut r = busy_run();
    if event.command_seq().is_some() {
        // Terminal commands follow the task that issued them.
        let started_seq = r.state.last_seq;
        r.ok(Event::WorkflowTaskCompleted(WorkflowTaskCompleted {
            started_seq,
            worker: "w1".into(),
        }));
    }
    let s = r.ok(event).clone();
    assert_eq!(s.status, status);
    assert!(!s.is_open());
    assert_eq!(s.closed_ms, Some(T0 + 777));
    assert_eq!(s.workflow_task, WorkflowTask::Idle);
    assert!(!s.needs_workflow_task());
    assert!(
        s.waiting_on(T0 + 777).is_empty(),
        "a closed run waits on nothing"
    );
    s
}

#[test]
fn run_completed() {
    let s = close_with(
        Event::RunCompleted(RunCompleted {
            command_seq: 5,
            result: Payload::json("42"),
        }),
        RunStatus::Completed,
    );
    assert_eq!(s.result, Some(Payload::json("42")));
    assert_eq!(s.failure, None);
}

#[test]
fn run_failed_keeps_the_partial_result() {
    let s = close_with(
        Event::RunFailed(RunFailed {
            command_seq: 5,
            failure: failure("fatal"),
        }),
        RunStatus::Failed,
    );
    assert_eq!(s.failure, Some(failure("fatal")));
    assert_eq!(s.result, Some(Payload::json("\"so far\"")));
    let s = close_with(
        Event::RunFailed(RunFailed {
            command_seq: 0,
            failure: failure("server"),
        }),
        RunStatus::Failed,
    );
    assert_eq!(s.failure, Some(failure("server")));
}

#[test]
fn run_cancelled_with_its_own_or_the_recorded_partial_result() {
    let own = Event::RunCancelled(RunCancelled {
        command_seq: 5,
        partial_result: Some(Payload::json("\"final words\"")),
    });
    assert_eq!(
        close_with(own, RunStatus::Cancelled).result,
        Some(Payload::json("\"final words\""))
    );
    let none = Event::RunCancelled(RunCancelled {
        command_seq: 5,
        partial_result: None,
    });
    assert_eq!(
        close_with(none, RunStatus::Cancelled).result,
        Some(Payload::json("\"so far\""))
    );
}

#[test]
fn run_terminated_and_timed_out_keep_the_partial_result() {
    let s = close_with(
        Event::RunTerminated(RunTerminated {
            reason: "stuck".into(),
            identity: "op".into(),
        }),
        RunStatus::Terminated,
    );
    assert_eq!(s.result, Some(Payload::json("\"so far\"")));
    let s = close_with(
        Event::RunTimedOut(RunTimedOut {
            run_timeout_ms: 60_000,
        }),
        RunStatus::TimedOut,
    );
    assert_eq!(s.result, Some(Payload::json("\"so far\"")));
    // Without a partial result there is no result.
    let mut r = Run::new();
    let s = r.ok(Event::RunTimedOut(RunTimedOut {
        run_timeout_ms: 60_000,
    }));
    assert_eq!(s.result, None);
}

#[test]
fn continue_as_new_links_both_runs() {
    let next = run_id(2);
    let s = close_with(
        Event::RunContinuedAsNew(RunContinuedAsNew {
            keep_build: false,
            command_seq: 5,
            new_run_id: next,
            input: Payload::json("{}"),
        }),
        RunStatus::ContinuedAsNew,
    );
    assert_eq!(s.continued_to, Some(next));
    // The new run points back.
    let mut a = started(Budget::default());
    a.continued_from = Some(s.key.run_id);
    let key = RunKey::new("default", next);
    let rec = make(&genesis_hash(&key), 1, T0 + 777, Event::RunStarted(a));
    let new = RunState::start(key, &rec).unwrap();
    assert_eq!(new.continued_from, Some(s.key.run_id));
    assert_eq!(new.next_command_seq, 1, "command seqs start over");
}

#[test]
fn nothing_follows_a_terminal_event() {
    let terminals = [
        (
            Event::RunCompleted(RunCompleted {
                command_seq: 5,
                result: Payload::default(),
            }),
            "completed",
        ),
        (
            Event::RunFailed(RunFailed {
                command_seq: 0,
                failure: failure("x"),
            }),
            "failed",
        ),
        (
            Event::RunCancelled(RunCancelled {
                command_seq: 5,
                partial_result: None,
            }),
            "cancelled",
        ),
        (
            Event::RunTerminated(RunTerminated {
                reason: String::new(),
                identity: String::new(),
            }),
            "terminated",
        ),
        (
            Event::RunTimedOut(RunTimedOut { run_timeout_ms: 1 }),
            "timed_out",
        ),
        (
            Event::RunContinuedAsNew(RunContinuedAsNew {
                keep_build: false,
                command_seq: 5,
                new_run_id: run_id(2),
                input: Payload::default(),
            }),
            "continued_as_new",
        ),
    ];
    for (terminal, status) in terminals {
        let mut r = busy_run();
        let started_seq = r.state.last_seq;
        r.ok(Event::WorkflowTaskCompleted(WorkflowTaskCompleted {
            started_seq,
            worker: "w1".into(),
        }));
        r.ok(terminal.clone());
        let n = r.state.last_seq + 1;
        let after = [
            terminal.clone(),
            Event::RunTerminated(RunTerminated {
                reason: String::new(),
                identity: String::new(),
            }),
            Event::WorkflowTaskScheduled(WorkflowTaskScheduled {
                task_queue: "q".into(),
                attempt: 1,
                not_before_ms: 0,
            }),
            completed(1, 1, None),
            timer_fired(2),
            Event::SignalReceived(SignalReceived {
                name: "approve".into(),
                input: Payload::default(),
                identity: String::new(),
                request_id: String::new(),
            }),
            cancel_requested(),
            Event::BudgetUpdated(BudgetUpdated {
                budget: Budget::default(),
                identity: String::new(),
            }),
            Event::TimerStarted(TimerStarted {
                command_seq: 6,
                fire_at_ms: T0,
            }),
        ];
        for ev in after {
            let k = ev.kind().name();
            match r.err(ev) {
                ApplyError::Closed {
                    seq,
                    kind,
                    status: st,
                } => assert_eq!((seq, kind, st), (n, k, status)),
                other => panic!("expected Closed, got {other:?}"),
            }
        }
        // A seq gap is reported as such even on a closed run.
        let rec = r.at_seq(n + 1, cancel_requested());
        assert_order(&r.err_rec(&rec), n + 1, "CancelRequested");
    }
}

#[test]
fn status_names_round_trip() {
    for s in [
        RunStatus::Running,
        RunStatus::Completed,
        RunStatus::Failed,
        RunStatus::Cancelled,
        RunStatus::Terminated,
        RunStatus::TimedOut,
        RunStatus::ContinuedAsNew,
    ] {
        assert_eq!(RunStatus::parse(s.as_str()), Some(s));
        assert_eq!(s.is_closed(), s != RunStatus::Running);
    }
    assert_eq!(RunStatus::parse("done"), None);
}

#[test]
fn a_huge_run_timeout_saturates_instead_of_passing_at_once() {
    // Before, `u64::MAX as i64` was -1: the run's deadline was before its start and the run
    // timed out at once.
    let mut a = started(Budget::default());
    a.run_timeout_ms = u64::MAX;
    assert_eq!(Run::with(a).state.run_deadline_ms(), Some(i64::MAX));
}
