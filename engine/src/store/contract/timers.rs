//! The timer index: timers, activity deadlines, run deadlines, workflow-task timeouts.

use crate::event::{self, ActivityOptions, Effect, Event, TimeoutKind};
use crate::store::contract::fixtures::{self, RunDriver, T0};
use crate::store::core::{ACTIVITY_START_TO_CLOSE_DEFAULT_MS, WORKFLOW_TASK_TIMEOUT_MS_DEFAULT};
use crate::store::{DueTimer, Store};

/// A timer is due at its time, taken once, and back after the run's state next changes if
/// its event was not appended.
pub async fn timers_fire_and_come_back<S: Store>(store: S) {
    assert_eq!(store.next_wakeup_ms().await.unwrap(), None);
    let mut r = RunDriver::start(&store, "timer", "q").await;
    let id = r.next_command();
    r.append(&store, vec![fixtures::timer_started(id, T0 + 100)])
        .await;
    assert_eq!(store.next_wakeup_ms().await.unwrap(), Some(T0 + 100));
    assert!(store.take_due_timers(T0 + 99, 10).await.unwrap().is_empty());
    let due = DueTimer::Timer {
        key: r.key.clone(),
        id,
    };
    assert_eq!(
        store.take_due_timers(T0 + 100, 10).await.unwrap(),
        vec![due.clone()]
    );
    assert!(
        store
            .take_due_timers(T0 + 100, 10)
            .await
            .unwrap()
            .is_empty(),
        "taken once"
    );
    r.append(&store, vec![fixtures::signal("s", vec![])]).await;
    assert_eq!(
        store.take_due_timers(T0 + 100, 10).await.unwrap(),
        vec![due],
        "back after a state change"
    );
    r.append(
        &store,
        vec![Event::TimerFired(event::TimerFired { command_seq: id })],
    )
    .await;
    assert!(
        store
            .take_due_timers(T0 + 1_000, 10)
            .await
            .unwrap()
            .is_empty(),
        "a fired timer is gone"
    );
    // Limits and order.
    let mut ids = Vec::new();
    for i in 0..5 {
        let id = r.next_command();
        r.append(&store, vec![fixtures::timer_started(id, T0 + 200 - i)])
            .await;
        ids.push(id);
    }
    let first = store.take_due_timers(T0 + 1_000, 2).await.unwrap();
    assert_eq!(
        first,
        vec![
            DueTimer::Timer {
                key: r.key.clone(),
                id: ids[4]
            },
            DueTimer::Timer {
                key: r.key.clone(),
                id: ids[3]
            }
        ],
        "earliest first, at most `limit`"
    );
    assert_eq!(
        store.take_due_timers(T0 + 1_000, 10).await.unwrap().len(),
        3
    );
}

/// Schedule-to-close, start-to-close of started attempts (from their durable start),
/// heartbeat deadlines moved by heartbeats, run deadlines and workflow-task timeouts are all in
/// the index.
pub async fn deadlines_of_activities_runs_and_tasks<S: Store>(store: S) {
    let mut attrs = fixtures::started("deadlines", "q");
    attrs.run_timeout_ms = 500_000;
    let mut r = RunDriver::start_with(&store, attrs).await;
    let key = r.key.clone();
    assert!(
        store
            .take_due_timers(T0 + 499_999, 10)
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(
        store.take_due_timers(T0 + 500_000, 10).await.unwrap(),
        vec![DueTimer::Run { key: key.clone() }]
    );

    r.run_workflow_task(&store).await;
    let a = r.next_command();
    r.append(
        &store,
        vec![fixtures::activity(
            a,
            "aq",
            ActivityOptions {
                schedule_to_close_ms: 1_000,
                heartbeat_ms: 300,
                ..Default::default()
            },
        )],
    )
    .await;
    let w = r.next_command();
    r.append(
        &store,
        vec![fixtures::activity(
            w,
            "aq",
            ActivityOptions {
                effect: Effect::Write,
                ..Default::default()
            },
        )],
    )
    .await;
    // A deadline for an attempt that was never started is ignored: deadlines come from the
    // durable start.
    store
        .set_attempt_deadline(&key, a, 1, T0 + 1, TimeoutKind::Heartbeat)
        .await
        .unwrap();
    r.time_ms = T0 + 10;
    r.append(
        &store,
        vec![
            Event::ActivityStarted(event::ActivityStarted {
                command_seq: w,
                attempt: 1,
                worker: "w".into(),
                effect: Effect::Write,
            }),
            Event::ActivityStarted(event::ActivityStarted {
                command_seq: a,
                attempt: 1,
                worker: "w".into(),
                effect: Effect::Read,
            }),
        ],
    )
    .await;
    store
        .set_attempt_deadline(&key, a, 1, T0 + 400, TimeoutKind::Heartbeat)
        .await
        .unwrap();
    store
        .set_attempt_deadline(&key, a, 1, T0 + 5_000, TimeoutKind::StartToClose)
        .await
        .unwrap();
    store
        .set_attempt_deadline(&key, a, 7, T0 + 1, TimeoutKind::Heartbeat)
        .await
        .unwrap();
    assert_eq!(
        store.next_wakeup_ms().await.unwrap(),
        Some(T0 + 400),
        "a heartbeat moves the heartbeat deadline; start-to-close is not moved; a stale attempt is ignored"
    );
    let due = store.take_due_timers(T0 + 1_000, 10).await.unwrap();
    assert_eq!(
        due,
        vec![
            DueTimer::ActivityAttempt {
                key: key.clone(),
                id: a,
                attempt: 1,
                timeout: TimeoutKind::Heartbeat
            },
            DueTimer::ActivityScheduleToClose {
                key: key.clone(),
                id: a
            },
        ]
    );
    let stc = T0 + 10 + ACTIVITY_START_TO_CLOSE_DEFAULT_MS as i64;
    assert!(store.take_due_timers(stc - 1, 10).await.unwrap().is_empty());
    assert_eq!(
        store.take_due_timers(stc, 10).await.unwrap(),
        vec![
            DueTimer::ActivityAttempt {
                key: key.clone(),
                id: a,
                attempt: 1,
                timeout: TimeoutKind::StartToClose
            },
            DueTimer::ActivityAttempt {
                key: key.clone(),
                id: w,
                attempt: 1,
                timeout: TimeoutKind::StartToClose
            },
        ],
        "start-to-close of both started attempts: the durable start plus the timeout"
    );
    // A new attempt drops the old attempt's deadline.
    store
        .set_attempt_deadline(&key, a, 1, T0 + 2_000, TimeoutKind::Heartbeat)
        .await
        .unwrap();
    r.append(&store, vec![fixtures::activity_failed(a, 1, Some(T0 + 20))])
        .await;
    let due = store.take_due_timers(T0 + 2_000, 10).await.unwrap();
    assert!(
        !due.iter()
            .any(|d| matches!(d, DueTimer::ActivityAttempt { id, .. } if *id == a)),
        "{due:?}"
    );

    // A workflow task held too long.
    let scheduled_seq = r.schedule_workflow_task(&store, 0).await;
    let started_seq = r.next;
    r.time_ms = T0 + 100_000;
    r.append(
        &store,
        vec![Event::WorkflowTaskStarted(event::WorkflowTaskStarted {
            scheduled_seq,
            worker: "w".into(),
            timeout_ms: 0,
        })],
    )
    .await;
    let at = T0 + 100_000 + WORKFLOW_TASK_TIMEOUT_MS_DEFAULT as i64;
    let due = store.take_due_timers(at - 1, 100).await.unwrap();
    assert!(!due.contains(&DueTimer::WorkflowTask {
        key: key.clone(),
        started_seq
    }));
    let due = store.take_due_timers(at, 100).await.unwrap();
    assert!(
        due.contains(&DueTimer::WorkflowTask {
            key: key.clone(),
            started_seq
        }),
        "{due:?}"
    );
    // A closed run has no deadlines.
    r.append(
        &store,
        vec![Event::WorkflowTaskTimedOut(event::WorkflowTaskTimedOut {
            started_seq,
        })],
    )
    .await;
    r.append(
        &store,
        vec![Event::RunTerminated(event::RunTerminated {
            reason: "t".into(),
            identity: "t".into(),
        })],
    )
    .await;
    assert!(
        store
            .take_due_timers(i64::MAX, 100)
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(store.next_wakeup_ms().await.unwrap(), None);
}
