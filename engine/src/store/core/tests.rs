//! Unit tests of the projections, on hand-built states (no store).

use super::*;
use crate::event::{self, ActivityOptions, Budget, Effect, Event, EventRecord, record_hash};
use crate::payload::Payload;
use crate::state::ActivityPhase;

const T: TimeMs = 1_000_000;

/// Builds states by applying events, like a store would.
struct Run {
    state: RunState,
}

impl Run {
    fn start(n: u128, workflow_id: &str, queue: &str) -> Run {
        let key = RunKey::new("ns", RunId(uuid::Uuid::from_u128(n)));
        let started = Event::RunStarted(event::RunStarted {
            workflow_type: "wf".into(),
            workflow_id: workflow_id.into(),
            task_queue: queue.into(),
            input: Payload::json(b"{}".to_vec()),
            run_timeout_ms: 0,
            budget: Budget::default(),
            continued_from: None,
            identity: "t".into(),
            random_seed: 1,
            parent: None,
            forked_from: None,
            schedule: None,
            traceparent: None,
        });
        let rec = EventRecord {
            seq: 1,
            time_ms: T,
            hash: [1; 32],
            event: started,
        };
        Run {
            state: RunState::start(key, &rec).unwrap(),
        }
    }

    fn key(&self) -> RunKey {
        self.state.key.clone()
    }

    fn apply(&mut self, time_ms: TimeMs, event: Event) -> Arc<RunState> {
        let seq = self.state.last_seq + 1;
        let hash = record_hash(
            &self.state.last_hash,
            seq,
            time_ms,
            event.kind(),
            &event.encode_attrs(),
        );
        self.state
            .apply(&EventRecord {
                seq,
                time_ms,
                hash,
                event,
            })
            .unwrap();
        Arc::new(self.state.clone())
    }

    fn schedule_wt(&mut self, not_before_ms: TimeMs) -> Arc<RunState> {
        let q = self.state.task_queue.clone();
        self.apply(
            T,
            Event::WorkflowTaskScheduled(event::WorkflowTaskScheduled {
                task_queue: q,
                attempt: 1,
                not_before_ms,
            }),
        )
    }

    fn activity(&mut self, id: u32, queue: &str) -> Arc<RunState> {
        self.activity_with(
            id,
            ActivityOptions {
                task_queue: queue.into(),
                ..Default::default()
            },
        )
    }

    fn activity_with(&mut self, id: u32, options: ActivityOptions) -> Arc<RunState> {
        let e = Event::ActivityScheduled(event::ActivityScheduled {
            command_seq: id,
            activity_type: "a".into(),
            input: Payload::json(b"1".to_vec()),
            options,
        });
        self.apply(T, e)
    }

    /// Records that attempt `attempt` of activity `id` was handed out at `at`.
    fn started(&mut self, id: u32, attempt: u32, effect: Effect, at: TimeMs) -> Arc<RunState> {
        self.apply(
            at,
            Event::ActivityStarted(event::ActivityStarted {
                command_seq: id,
                attempt,
                worker: "w".into(),
                effect,
            }),
        )
    }
}

#[test]
fn a_lease_survives_unrelated_changes_and_drops_when_the_task_moves_on() {
    let mut core = Core::new();
    let mut r = Run::start(1, "w", "q");
    core.upsert(r.schedule_wt(0));
    let task = core.poll("ns", "q", TaskKind::Workflow, &[], T).unwrap();
    // An unrelated event (a signal) keeps the task scheduled: still leased, not offered.
    let s = r.apply(
        T,
        Event::SignalReceived(event::SignalReceived {
            name: "s".into(),
            input: Payload::default(),
            identity: String::new(),
            request_id: String::new(),
        }),
    );
    core.upsert(s);
    assert_eq!(core.poll("ns", "q", TaskKind::Workflow, &[], T), None);
    core.release(&task);
    assert_eq!(
        core.poll("ns", "q", TaskKind::Workflow, &[], T),
        Some(task.clone())
    );
    // The task starts: the lease is gone, and a release does not bring it back.
    core.upsert(r.apply(
        T,
        Event::WorkflowTaskStarted(event::WorkflowTaskStarted {
            scheduled_seq: 2,
            worker: "w".into(),
            timeout_ms: 0,
        }),
    ));
    core.release(&task);
    assert_eq!(core.poll("ns", "q", TaskKind::Workflow, &[], T), None);
    assert_eq!(core.ready_len("ns", "q", TaskKind::Workflow, T), 0);
}

#[test]
fn next_wakeup_never_reports_a_time_already_observed() {
    let mut core = Core::new();
    let mut r = Run::start(1, "w", "q");
    core.upsert(r.schedule_wt(T + 100));
    assert_eq!(core.next_wakeup_ms(), Some(T + 100));
    // The timer loop wakes at T+100: the task is visible now, no more wakeups for it.
    assert!(core.take_due(T + 100, 10).is_empty());
    assert_eq!(core.next_wakeup_ms(), None);
    // A state change re-derives the entry; it is visible already, so still no wakeup.
    core.upsert(r.apply(
        T,
        Event::SignalReceived(event::SignalReceived {
            name: "s".into(),
            input: Payload::default(),
            identity: String::new(),
            request_id: String::new(),
        }),
    ));
    assert_eq!(core.next_wakeup_ms(), None);
    assert!(
        core.poll("ns", "q", TaskKind::Workflow, &[], T + 100)
            .is_some()
    );
}

#[test]
fn a_closed_run_leaves_everything() {
    let mut core = Core::new();
    let mut r = Run::start(1, "wid", "q");
    core.upsert(r.activity(1, "aq"));
    core.upsert(r.apply(T, event_timer(2, T + 10)));
    core.set_attempt_deadline(&r.key(), 1, 1, T + 5, TimeoutKind::Heartbeat);
    assert_eq!(
        core.open_run_for_workflow_id("ns", "wid"),
        Some(r.key().run_id)
    );
    assert_eq!(core.len(), 1);
    core.upsert(r.apply(
        T,
        Event::RunTerminated(event::RunTerminated {
            reason: String::new(),
            identity: String::new(),
        }),
    ));
    assert!(core.is_empty());
    assert_eq!(core.open_run_for_workflow_id("ns", "wid"), None);
    assert_eq!(core.next_wakeup_ms(), None);
    assert!(core.take_due(i64::MAX, 10).is_empty());
    assert_eq!(
        core.poll("ns", "aq", TaskKind::Activity, &[], i64::MAX),
        None
    );
    assert!(core.queues.is_empty() && core.visibility.is_empty() && core.timers.is_empty());
}

fn event_timer(id: u32, at: TimeMs) -> Event {
    Event::TimerStarted(event::TimerStarted {
        command_seq: id,
        fire_at_ms: at,
    })
}

#[test]
fn an_outcome_unknown_write_has_no_deadline_and_is_not_offered() {
    let mut core = Core::new();
    let mut r = Run::start(1, "w", "q");
    let e = Event::ActivityScheduled(event::ActivityScheduled {
        command_seq: 1,
        activity_type: "a".into(),
        input: Payload::default(),
        options: ActivityOptions {
            task_queue: "aq".into(),
            effect: event::Effect::Write,
            ..Default::default()
        },
    });
    core.upsert(r.apply(T, e));
    core.upsert(r.apply(
        T,
        Event::ActivityStarted(event::ActivityStarted {
            command_seq: 1,
            attempt: 1,
            worker: "w".into(),
            effect: Effect::Write,
        }),
    ));
    assert_eq!(
        core.next_wakeup_ms(),
        Some(T + ACTIVITY_START_TO_CLOSE_DEFAULT_MS as i64)
    );
    let s = r.apply(
        T,
        Event::ActivityOutcomeUnknown(event::ActivityOutcomeUnknown {
            command_seq: 1,
            attempt: 1,
        }),
    );
    assert!(matches!(
        s.activities[&1].phase,
        ActivityPhase::OutcomeUnknown { .. }
    ));
    core.upsert(s);
    assert_eq!(core.next_wakeup_ms(), None);
    assert_eq!(
        core.poll("ns", "aq", TaskKind::Activity, &[], i64::MAX),
        None
    );
    core.set_attempt_deadline(&r.key(), 1, 1, T, TimeoutKind::Heartbeat);
    assert_eq!(
        core.next_wakeup_ms(),
        None,
        "no attempt deadline for a lost attempt"
    );
}

#[test]
fn open_runs_list_newest_first_within_a_namespace() {
    let mut core = Core::new();
    for n in [3u128, 1, 2] {
        core.upsert(Arc::new(Run::start(n, &format!("w{n}"), "q").state));
    }
    let mut other = Run::start(9, "w9", "q").state;
    other.key.namespace = "other".into();
    core.upsert(Arc::new(other));
    let ids = |after: Option<RunId>| {
        core.open_runs_desc("ns", after)
            .map(|s| s.key.run_id.0.as_u128())
            .collect::<Vec<_>>()
    };
    assert_eq!(ids(None), vec![3, 2, 1]);
    assert_eq!(ids(Some(RunId(uuid::Uuid::from_u128(3)))), vec![2, 1]);
    assert_eq!(
        ids(Some(RunId(uuid::Uuid::from_u128(1)))),
        Vec::<u128>::new()
    );
}

#[test]
fn ten_thousand_runs_with_tasks_and_timers() {
    let mut core = Core::new();
    let mut runs: Vec<Run> = (0..10_000u128)
        .map(|n| Run::start(n + 1, &format!("w{n}"), "q"))
        .collect();
    for (i, r) in runs.iter_mut().enumerate() {
        core.upsert(r.apply(T, event_timer(1, T + i as i64)));
        core.upsert(r.schedule_wt(0));
    }
    assert_eq!(core.len(), 10_000);
    assert_eq!(core.ready_len("ns", "q", TaskKind::Workflow, T), 10_000);
    let mut polled = 0;
    while core.poll("ns", "q", TaskKind::Workflow, &[], T).is_some() {
        polled += 1;
    }
    assert_eq!(polled, 10_000);
    let due = core.take_due(T + 4_999, 100_000);
    assert_eq!(due.len(), 5_000);
    assert_eq!(core.next_wakeup_ms(), Some(T + 5_000));
}

#[test]
fn workflow_tasks_started_before_an_open_are_due_at_once() {
    let mut core = Core::new();
    let mut r = Run::start(1, "wid", "q");
    let s = r.schedule_wt(0);
    core.upsert(s);
    let started = r.apply(
        T,
        Event::WorkflowTaskStarted(event::WorkflowTaskStarted {
            scheduled_seq: r.state.last_seq,
            worker: "w".into(),
            timeout_ms: 0,
        }),
    );
    let started_seq = started.last_seq;
    core.upsert(started);
    // In the same process the task has its full timeout.
    assert!(core.take_due(T + 1, 10).is_empty());
    core.expire_started_workflow_tasks();
    assert_eq!(
        core.take_due(T + 1, 10),
        vec![DueTimer::WorkflowTask {
            key: r.key(),
            started_seq
        }]
    );
}

#[test]
fn a_cancelled_activity_no_worker_holds_is_due_at_once() {
    let mut core = Core::new();
    let mut r = Run::start(1, "w", "q");
    core.upsert(r.activity(1, "aq"));
    core.upsert(r.activity(2, "aq"));
    // Attempt 1 of activity 2 was handed out (its start is recorded); activity 1 was not.
    core.upsert(r.started(2, 1, Effect::Read, T));
    for id in [1, 2] {
        core.upsert(r.apply(
            T,
            Event::ActivityCancelRequested(event::ActivityCancelRequested {
                command_seq: r.state.next_command_seq,
                activity_id: id,
            }),
        ));
    }
    assert_eq!(
        core.poll("ns", "aq", TaskKind::Activity, &[], i64::MAX),
        None
    );
    assert_eq!(
        core.take_due(T, 10),
        vec![DueTimer::ActivityAttempt {
            key: r.key(),
            id: 1,
            attempt: 1,
            timeout: TimeoutKind::StartToClose,
        }],
        "the unheld one is due now; the held one at its own deadline"
    );
    assert_eq!(
        core.next_wakeup_ms(),
        Some(T + ACTIVITY_START_TO_CLOSE_DEFAULT_MS as i64)
    );
}

#[test]
fn a_running_attempt_is_not_cancelled_at_once_after_a_restart() {
    // A new table (a restarted process) over a state whose attempt was started and then
    // asked to cancel: the worker may still be running it, so nothing is due before its
    // heartbeat grace (from the open) or its start-to-close (from the durable start).
    let mut r = Run::start(1, "w", "q");
    r.activity_with(
        1,
        ActivityOptions {
            task_queue: "aq".into(),
            heartbeat_ms: 2_000,
            start_to_close_ms: 30_000,
            ..Default::default()
        },
    );
    r.started(1, 1, Effect::Read, T);
    let s = r.apply(
        T + 5,
        Event::ActivityCancelRequested(event::ActivityCancelRequested {
            command_seq: r.state.next_command_seq,
            activity_id: 1,
        }),
    );
    let mut core = Core::new();
    core.upsert(s);
    core.expire_started_workflow_tasks();
    let opened = T + 10_000;
    assert!(
        core.take_due(opened, 10).is_empty(),
        "not cancelled at once"
    );
    assert_eq!(
        core.next_wakeup_ms(),
        Some(opened + 2_000),
        "heartbeat grace from the open"
    );
    let hb = DueTimer::ActivityAttempt {
        key: r.key(),
        id: 1,
        attempt: 1,
        timeout: TimeoutKind::Heartbeat,
    };
    assert_eq!(core.take_due(opened + 2_000, 10), vec![hb]);
}

#[test]
fn heartbeats_move_only_the_heartbeat_deadline_never_start_to_close() {
    let mut core = Core::new();
    let mut r = Run::start(1, "w", "q");
    core.upsert(r.activity_with(
        1,
        ActivityOptions {
            task_queue: "aq".into(),
            heartbeat_ms: 1_000,
            start_to_close_ms: 5_000,
            ..Default::default()
        },
    ));
    assert!(core.take_due(T, 10).is_empty());
    core.upsert(r.started(1, 1, Effect::Idempotent, T));
    assert_eq!(core.next_wakeup_ms(), Some(T + 1_000));
    let stc = DueTimer::ActivityAttempt {
        key: r.key(),
        id: 1,
        attempt: 1,
        timeout: TimeoutKind::StartToClose,
    };
    // Heartbeats every 900 ms: the heartbeat deadline moves, start-to-close stays.
    let mut now = T;
    while now < T + 6_000 {
        now += 900;
        core.set_attempt_deadline(&r.key(), 1, 1, now + 1_000, TimeoutKind::Heartbeat);
        // A caller cannot move start-to-close either.
        core.set_attempt_deadline(&r.key(), 1, 1, now + 60_000, TimeoutKind::StartToClose);
        let due = core.take_due(now, 10);
        if now < T + 5_000 {
            assert!(due.is_empty(), "{now}: {due:?}");
        } else {
            assert_eq!(due, vec![stc.clone()], "start-to-close at start + 5 s");
            break;
        }
    }
    assert!(now >= T + 5_000);
    // A stale attempt's heartbeat is ignored.
    core.set_attempt_deadline(&r.key(), 1, 7, T, TimeoutKind::Heartbeat);
    assert!(core.take_due(now, 10).is_empty());
}

#[test]
fn a_leaked_lease_expires_and_the_task_is_offered_again() {
    let mut core = Core::new();
    let mut r = Run::start(1, "w", "q");
    core.upsert(r.activity(1, "aq"));
    core.upsert(r.schedule_wt(0));
    let wt = core.poll("ns", "q", TaskKind::Workflow, &[], T).unwrap();
    let at = core.poll("ns", "aq", TaskKind::Activity, &[], T).unwrap();
    // Nobody releases them (a leak).
    assert_eq!(
        core.poll("ns", "q", TaskKind::Workflow, &[], T + LEASE_MS - 1),
        None
    );
    assert_eq!(
        core.poll("ns", "aq", TaskKind::Activity, &[], T + LEASE_MS - 1),
        None
    );
    assert_eq!(core.next_wakeup_ms(), Some(T + LEASE_MS));
    assert_eq!(
        core.poll("ns", "q", TaskKind::Workflow, &[], T + LEASE_MS),
        Some(wt.clone())
    );
    assert_eq!(
        core.poll("ns", "aq", TaskKind::Activity, &[], T + LEASE_MS),
        Some(at.clone())
    );
    // A release after the task was taken again does not free the new lease early... and a
    // release of the new lease gives it back once.
    core.release(&at);
    assert_eq!(
        core.poll("ns", "aq", TaskKind::Activity, &[], T + LEASE_MS),
        Some(at)
    );
    // A lease whose task started (the state moved on) leaves no expiry behind.
    let started = r.started(1, 1, Effect::Read, T + LEASE_MS);
    core.upsert(started);
    assert_eq!(
        core.expire_leases(T + 10 * LEASE_MS),
        1,
        "only the workflow task's"
    );
    assert_eq!(
        core.poll("ns", "aq", TaskKind::Activity, &[], i64::MAX),
        None
    );
}

#[test]
fn the_workflow_task_timeout_is_the_one_recorded_with_its_start() {
    let mut core = Core::new();
    let mut r = Run::start(1, "w", "q");
    core.upsert(r.schedule_wt(0));
    let s = r.apply(
        T,
        Event::WorkflowTaskStarted(event::WorkflowTaskStarted {
            scheduled_seq: r.state.last_seq,
            worker: "w".into(),
            timeout_ms: 2_500,
        }),
    );
    let started_seq = s.last_seq;
    core.upsert(s);
    assert_eq!(core.next_wakeup_ms(), Some(T + 2_500));
    assert_eq!(
        core.take_due(T + 2_500, 10),
        vec![DueTimer::WorkflowTask {
            key: r.key(),
            started_seq
        }]
    );
}

#[test]
fn attempts_in_flight_reserve_token_room() {
    let mut core = Core::new();
    let mut r = Run::start(1, "w", "q");
    r.state.budget.max_tokens = 1_000;
    for id in 1..=3 {
        core.upsert(r.activity(id, "aq"));
    }
    // Nothing in flight: one may go (it may cross the ceiling by its own usage only).
    let first = core.poll("ns", "aq", TaskKind::Activity, &[], T).unwrap();
    core.upsert(r.started(1, 1, Effect::Read, T));
    // No usage known yet: the attempt in flight reserves all the room; nothing else offered.
    assert_eq!(core.poll("ns", "aq", TaskKind::Activity, &[], T), None);
    assert_eq!(
        r.state.reservation_block(2),
        Some(event::BudgetDimension::Tokens)
    );
    let done = r.apply(
        T,
        Event::ActivityCompleted(event::ActivityCompleted {
            command_seq: 1,
            attempt: 1,
            result: Payload::default(),
            duration_ms: 1,
            usage: Some(event::Usage {
                input_tokens: 100,
                output_tokens: 0,
                cost_micros: 0,
                model: "m".into(),
            }),
            reconciled: false,
        }),
    );
    core.upsert(done);
    drop(first);
    // 100 used, mean 100: room for 9 more at the mean, so two in flight fit.
    let t2 = core.poll("ns", "aq", TaskKind::Activity, &[], T).unwrap();
    core.upsert(r.started(2, 1, Effect::Read, T));
    let t3 = core.poll("ns", "aq", TaskKind::Activity, &[], T);
    assert!(t3.is_some(), "{t2:?} in flight, 100 + 2 x 100 <= 1,000");
}
