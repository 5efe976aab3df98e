//! Workflow tasks and the command seqs of the events their commands produce.

use super::*;

#[test]
fn workflow_task_scheduled_started_completed() {
    let mut r = Run::new();
    r.now = T0 + 1;
    let s = r.ok(Event::WorkflowTaskScheduled(WorkflowTaskScheduled {
        task_queue: "agents".into(),
        attempt: 1,
        not_before_ms: T0 + 50,
    }));
    assert_eq!(
        s.workflow_task,
        WorkflowTask::Scheduled {
            scheduled_seq: 2,
            attempt: 1,
            not_before_ms: T0 + 50,
            since_ms: T0 + 1
        }
    );
    assert!(
        s.unseen_events,
        "scheduling does not show the events to the code"
    );
    assert!(!s.needs_workflow_task(), "one task at a time");
    assert_eq!(
        s.waiting_on(T0),
        vec![WaitingOn::WorkflowTask { held_reason: None }]
    );

    r.now = T0 + 2;
    let s = r.ok(Event::WorkflowTaskStarted(WorkflowTaskStarted {
        scheduled_seq: 2,
        worker: "w1".into(),
        timeout_ms: 0,
    }));
    assert_eq!(
        s.workflow_task,
        WorkflowTask::Started {
            scheduled_seq: 2,
            started_seq: 3,
            attempt: 1,
            worker: "w1".into(),
            since_ms: T0 + 2,
            timeout_ms: 0,
        }
    );
    assert!(
        !s.unseen_events,
        "the started task carries every event so far"
    );
    assert!(!s.needs_workflow_task());

    let s = r.ok(Event::WorkflowTaskCompleted(WorkflowTaskCompleted {
        started_seq: 3,
        worker: "w1".into(),
    }));
    assert_eq!(s.workflow_task, WorkflowTask::Idle);
    assert!(!s.unseen_events);
    assert!(!s.needs_workflow_task());
    assert_eq!(
        s.waiting_on(T0),
        vec![WaitingOn::Idle],
        "open, its code waits for nothing tracked: named, not empty"
    );
}

#[test]
fn workflow_task_attempt_zero_counts_as_one() {
    let mut r = Run::new();
    let s = r.ok(Event::WorkflowTaskScheduled(WorkflowTaskScheduled {
        task_queue: "q".into(),
        attempt: 0,
        not_before_ms: 0,
    }));
    assert!(matches!(
        s.workflow_task,
        WorkflowTask::Scheduled { attempt: 1, .. }
    ));
}

#[test]
fn events_during_a_started_task_need_another_task() {
    let mut r = Run::new();
    let started_seq = r.open_task();
    r.signal("approve");
    assert!(r.state.unseen_events);
    assert!(
        !r.state.needs_workflow_task(),
        "the open task must finish first"
    );
    r.ok(Event::WorkflowTaskCompleted(WorkflowTaskCompleted {
        started_seq,
        worker: "w1".into(),
    }));
    assert!(
        r.state.needs_workflow_task(),
        "the signal arrived after the task's batch"
    );
}

#[test]
fn workflow_task_failed_holds_the_run_until_a_task_completes() {
    let mut r = Run::new();
    let started_seq = r.open_task();
    let s = r.ok(Event::WorkflowTaskFailed(WorkflowTaskFailed {
        started_seq,
        cause: WorkflowTaskFailCause::Nondeterminism,
        message: "seq 1: history has timer, code scheduled activity".into(),
        worker: "w1".into(),
    }));
    assert_eq!(s.workflow_task, WorkflowTask::Idle);
    assert_eq!(s.status, RunStatus::Running, "held, not failed");
    let held = s.held.clone().expect("held");
    assert_eq!(held.cause, "Nondeterminism");
    assert_eq!(held.recorded, 1, "the first recorded failure");
    assert!(s.unseen_events);
    assert!(s.needs_workflow_task(), "the task is retried");
    match &s.waiting_on(T0)[..] {
        [
            WaitingOn::WorkflowTask {
                held_reason: Some(why),
            },
        ] => {
            assert!(why.starts_with("Nondeterminism: seq 1"), "{why}")
        }
        other => panic!("{other:?}"),
    }
    // Each recorded failure counts (the server bounds them per held run)...
    let again = r.open_task();
    let s = r.ok(Event::WorkflowTaskFailed(WorkflowTaskFailed {
        started_seq: again,
        cause: WorkflowTaskFailCause::WorkflowPanic,
        message: "boom".into(),
        worker: "w1".into(),
    }));
    let held = s.held.clone().expect("held");
    assert_eq!((held.cause.as_str(), held.recorded), ("WorkflowPanic", 2));
    // ...a retried task that is still open keeps the run held...
    let started_seq = r.open_task();
    assert!(r.state.held.is_some());
    assert!(matches!(
        &r.state.waiting_on(T0)[..],
        [WaitingOn::WorkflowTask {
            held_reason: Some(_)
        }]
    ));
    // ...and its completion releases it.
    let s = r.ok(Event::WorkflowTaskCompleted(WorkflowTaskCompleted {
        started_seq,
        worker: "w1".into(),
    }));
    assert_eq!(s.held, None);
}

#[test]
fn workflow_task_timed_out_reschedules() {
    let mut r = Run::new();
    let started_seq = r.open_task();
    let s = r.ok(Event::WorkflowTaskTimedOut(WorkflowTaskTimedOut {
        started_seq,
    }));
    assert_eq!(s.workflow_task, WorkflowTask::Idle);
    assert!(s.unseen_events);
    assert!(s.needs_workflow_task());
    assert_eq!(s.held, None, "a lost worker is not the code's fault");
}

#[test]
fn second_workflow_task_while_one_is_pending_is_refused() {
    let mut r = Run::new();
    let sched = || {
        Event::WorkflowTaskScheduled(WorkflowTaskScheduled {
            task_queue: "q".into(),
            attempt: 1,
            not_before_ms: 0,
        })
    };
    r.ok(sched());
    assert_illegal(
        &r.err(sched()),
        3,
        EventKind::WorkflowTaskScheduled,
        "already pending",
    );
    r.ok(Event::WorkflowTaskStarted(WorkflowTaskStarted {
        scheduled_seq: 2,
        worker: "w".into(),
        timeout_ms: 0,
    }));
    assert_illegal(
        &r.err(sched()),
        4,
        EventKind::WorkflowTaskScheduled,
        "already pending",
    );
}

#[test]
fn workflow_task_started_without_a_scheduled_task_is_refused() {
    let mut r = Run::new();
    let start = |scheduled_seq| {
        Event::WorkflowTaskStarted(WorkflowTaskStarted {
            scheduled_seq,
            worker: "w".into(),
            timeout_ms: 0,
        })
    };
    assert_illegal(
        &r.err(start(1)),
        2,
        EventKind::WorkflowTaskStarted,
        "no scheduled workflow task",
    );
    r.ok(Event::WorkflowTaskScheduled(WorkflowTaskScheduled {
        task_queue: "q".into(),
        attempt: 1,
        not_before_ms: 0,
    }));
    // The wrong scheduled seq.
    assert_illegal(
        &r.err(start(1)),
        3,
        EventKind::WorkflowTaskStarted,
        "at seq 1",
    );
    r.ok(start(2));
    // Started twice.
    assert_illegal(
        &r.err(start(2)),
        4,
        EventKind::WorkflowTaskStarted,
        "no scheduled workflow task",
    );
}

#[test]
fn workflow_task_outcomes_need_the_started_task() {
    let outcomes = |started_seq: u64| {
        vec![
            Event::WorkflowTaskCompleted(WorkflowTaskCompleted {
                started_seq,
                worker: "w".into(),
            }),
            Event::WorkflowTaskFailed(WorkflowTaskFailed {
                started_seq,
                cause: WorkflowTaskFailCause::WorkflowPanic,
                message: "boom".into(),
                worker: "w".into(),
            }),
            Event::WorkflowTaskTimedOut(WorkflowTaskTimedOut { started_seq }),
        ]
    };
    let mut r = Run::new();
    // No task at all.
    for ev in outcomes(2) {
        let k = ev.kind();
        assert_illegal(&r.err(ev), 2, k, "no started workflow task");
    }
    // Scheduled but not started.
    r.ok(Event::WorkflowTaskScheduled(WorkflowTaskScheduled {
        task_queue: "q".into(),
        attempt: 1,
        not_before_ms: 0,
    }));
    for ev in outcomes(2) {
        let k = ev.kind();
        assert_illegal(&r.err(ev), 3, k, "no started workflow task");
    }
    // Started, but the outcome names another task.
    r.ok(Event::WorkflowTaskStarted(WorkflowTaskStarted {
        scheduled_seq: 2,
        worker: "w".into(),
        timeout_ms: 0,
    }));
    for ev in outcomes(2) {
        let k = ev.kind();
        assert_illegal(&r.err(ev), 4, k, "at seq 2");
    }
    for ev in outcomes(3) {
        let mut fork = Run {
            key: r.key.clone(),
            state: r.state.clone(),
            records: r.records.clone(),
            now: r.now,
        };
        fork.ok(ev);
    }
}

#[test]
fn every_command_event_advances_the_command_seq() {
    let mut r = Run::new();
    r.task();
    let a = r.schedule(Effect::Read);
    assert_eq!(a, 1);
    let t = r.timer(T0 + 5);
    assert_eq!(t, 2);
    r.ok(Event::TimerCancelled(TimerCancelled {
        command_seq: 3,
        timer_id: t,
    }));
    r.wait_signal("go");
    r.ok(Event::ProgressReported(ProgressReported {
        command_seq: 5,
        done: 1,
        total: 2,
        message: "half".into(),
    }));
    r.ok(partial(6, "1"));
    r.ok(Event::ActivityCancelRequested(ActivityCancelRequested {
        command_seq: 7,
        activity_id: a,
    }));
    assert_eq!(r.cmd(), 8);
    // Events that are not commands leave it alone.
    r.ok(Event::ActivityCancelled(ActivityCancelled {
        command_seq: a,
    }));
    r.signal("go");
    r.ok(cancel_requested());
    assert_eq!(r.cmd(), 8);
    r.ok(Event::RunCompleted(RunCompleted {
        command_seq: 8,
        result: Payload::json("1"),
    }));
}

#[test]
fn command_seq_out_of_order_is_refused() {
    let mut r = Run::new();
    r.task();
    r.schedule(Effect::Read);
    let timer = |command_seq| {
        Event::TimerStarted(TimerStarted {
            command_seq,
            fire_at_ms: T0,
        })
    };
    for cs in [0, 1, 3, u32::MAX] {
        let e = r.err(timer(cs));
        assert_illegal(
            &e,
            6,
            EventKind::TimerStarted,
            &format!("command seq {cs}, expected 2"),
        );
    }
    // Terminal commands are checked as well.
    let e = r.err(Event::RunCompleted(RunCompleted {
        command_seq: 5,
        result: Payload::default(),
    }));
    assert_illegal(&e, 6, EventKind::RunCompleted, "expected 2");
    r.ok(timer(2));
}

#[test]
fn command_events_while_a_workflow_task_is_open_are_refused() {
    let mut r = Run::new();
    let commands = |cs: CommandSeq| {
        vec![
            Event::ActivityScheduled(ActivityScheduled {
                command_seq: cs,
                activity_type: "t".into(),
                input: Payload::default(),
                options: options(Effect::Read),
            }),
            Event::TimerStarted(TimerStarted {
                command_seq: cs,
                fire_at_ms: T0,
            }),
            Event::SignalWaitStarted(SignalWaitStarted {
                command_seq: cs,
                name: "s".into(),
                question: String::new(),
                choices: vec![],
            }),
            Event::ProgressReported(ProgressReported {
                command_seq: cs,
                done: 0,
                total: 0,
                message: String::new(),
            }),
            partial(cs, "0"),
            Event::RunCompleted(RunCompleted {
                command_seq: cs,
                result: Payload::default(),
            }),
            Event::RunFailed(RunFailed {
                command_seq: cs,
                failure: failure("x"),
            }),
            Event::RunCancelled(RunCancelled {
                command_seq: cs,
                partial_result: None,
            }),
            Event::RunContinuedAsNew(RunContinuedAsNew {
                keep_build: false,
                command_seq: cs,
                new_run_id: run_id(2),
                input: Payload::default(),
            }),
        ]
    };
    r.ok(Event::WorkflowTaskScheduled(WorkflowTaskScheduled {
        task_queue: "q".into(),
        attempt: 1,
        not_before_ms: 0,
    }));
    for ev in commands(1) {
        let k = ev.kind();
        assert_illegal(&r.err(ev), 3, k, "not an open task");
    }
    r.ok(Event::WorkflowTaskStarted(WorkflowTaskStarted {
        scheduled_seq: 2,
        worker: "w".into(),
        timeout_ms: 0,
    }));
    for ev in commands(1) {
        let k = ev.kind();
        assert_illegal(&r.err(ev), 4, k, "not an open task");
    }
}

#[test]
fn server_side_run_failure_and_cancel_are_not_commands() {
    // command_seq 0 marks a failure or cancellation decided by the server, which may happen
    // while a workflow task is open and does not consume a command seq.
    let mut r = Run::new();
    r.open_task();
    let mut fork = Run {
        key: r.key.clone(),
        state: r.state.clone(),
        records: r.records.clone(),
        now: r.now,
    };
    let s = r.ok(Event::RunFailed(RunFailed {
        command_seq: 0,
        failure: failure("budget"),
    }));
    assert_eq!(s.status, RunStatus::Failed);
    assert_eq!(s.next_command_seq, 1);
    let s = fork.ok(Event::RunCancelled(RunCancelled {
        command_seq: 0,
        partial_result: None,
    }));
    assert_eq!(s.status, RunStatus::Cancelled);
    assert_eq!(s.next_command_seq, 1);
}
