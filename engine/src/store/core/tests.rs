//! Unit tests of the projections, on hand-built states (no store).

use super::*;
use crate::event::{self, ActivityOptions, Budget, Event, EventRecord, record_hash};
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
        let e = Event::ActivityScheduled(event::ActivityScheduled {
            command_seq: id,
            activity_type: "a".into(),
            input: Payload::json(b"1".to_vec()),
            options: ActivityOptions {
                task_queue: queue.into(),
                ..Default::default()
            },
        });
        self.apply(T, e)
    }
}

#[test]
fn a_lease_survives_unrelated_changes_and_drops_when_the_task_moves_on() {
    let mut core = Core::new();
    let mut r = Run::start(1, "w", "q");
    core.upsert(r.schedule_wt(0));
    let task = core.poll("ns", "q", TaskKind::Workflow, T).unwrap();
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
    assert_eq!(core.poll("ns", "q", TaskKind::Workflow, T), None);
    core.release(&task);
    assert_eq!(
        core.poll("ns", "q", TaskKind::Workflow, T),
        Some(task.clone())
    );
    // The task starts: the lease is gone, and a release does not bring it back.
    core.upsert(r.apply(
        T,
        Event::WorkflowTaskStarted(event::WorkflowTaskStarted {
            scheduled_seq: 2,
            worker: "w".into(),
        }),
    ));
    core.release(&task);
    assert_eq!(core.poll("ns", "q", TaskKind::Workflow, T), None);
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
    assert!(core.poll("ns", "q", TaskKind::Workflow, T + 100).is_some());
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
    assert_eq!(core.poll("ns", "aq", TaskKind::Activity, i64::MAX), None);
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
    assert_eq!(core.poll("ns", "aq", TaskKind::Activity, i64::MAX), None);
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
    while core.poll("ns", "q", TaskKind::Workflow, T).is_some() {
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
    // Attempt 1 of activity 2 is held by a worker (its deadline is known); activity 1's
    // worker, if any, talked to a previous server process.
    core.set_attempt_deadline(&r.key(), 2, 1, T + 60_000, TimeoutKind::StartToClose);
    for id in [1, 2] {
        core.upsert(r.apply(
            T,
            Event::ActivityCancelRequested(event::ActivityCancelRequested {
                command_seq: r.state.next_command_seq,
                activity_id: id,
            }),
        ));
    }
    assert_eq!(core.poll("ns", "aq", TaskKind::Activity, i64::MAX), None);
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
    assert_eq!(core.next_wakeup_ms(), Some(T + 60_000));
}
