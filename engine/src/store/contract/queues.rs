//! Task queues: visibility, leases, release, backoff, budgets.

use crate::event::{self, ActivityOptions, Budget, BudgetDimension, Event};
use crate::ids::DEFAULT_NAMESPACE;
use crate::store::contract::fixtures::{self, RunDriver, T0};
use crate::store::{Store, Task, TaskKind};

/// A scheduled workflow task is offered once, leased until released or the state moves on,
/// and not before its `not_before_ms`.
pub async fn workflow_task_lease_and_release<S: Store>(store: S) {
    let ns = DEFAULT_NAMESPACE;
    let mut r = RunDriver::start(&store, "wt", "wq").await;
    assert_eq!(
        store
            .poll_task(ns, "wq", TaskKind::Workflow, &[], T0)
            .await
            .unwrap(),
        None,
        "no task before one is scheduled"
    );
    let scheduled_seq = r.schedule_workflow_task(&store, 0).await;
    let task = Task::Workflow {
        key: r.key.clone(),
        scheduled_seq,
    };
    assert_eq!(
        store
            .poll_task(ns, "other", TaskKind::Workflow, &[], T0)
            .await
            .unwrap(),
        None,
        "queues are separate"
    );
    assert_eq!(
        store
            .poll_task(ns, "wq", TaskKind::Activity, &[], T0)
            .await
            .unwrap(),
        None,
        "kinds are separate"
    );
    assert_eq!(
        store
            .poll_task("other-ns", "wq", TaskKind::Workflow, &[], T0)
            .await
            .unwrap(),
        None,
        "namespaces are separate"
    );
    assert_eq!(
        store
            .poll_task(ns, "wq", TaskKind::Workflow, &[], T0)
            .await
            .unwrap(),
        Some(task.clone())
    );
    assert_eq!(
        store
            .poll_task(ns, "wq", TaskKind::Workflow, &[], T0)
            .await
            .unwrap(),
        None,
        "a leased task is not offered twice"
    );
    store.release_task(&task).await.unwrap();
    assert_eq!(
        store
            .poll_task(ns, "wq", TaskKind::Workflow, &[], T0)
            .await
            .unwrap(),
        Some(task.clone()),
        "a released task comes back"
    );
    let started_seq = r.next;
    r.append(
        &store,
        vec![Event::WorkflowTaskStarted(event::WorkflowTaskStarted {
            scheduled_seq,
            worker: "w".into(),
            timeout_ms: 0,
        })],
    )
    .await;
    store.release_task(&task).await.unwrap();
    assert_eq!(
        store
            .poll_task(ns, "wq", TaskKind::Workflow, &[], T0)
            .await
            .unwrap(),
        None,
        "a started task is not offered, even when released"
    );
    r.append(
        &store,
        vec![Event::WorkflowTaskCompleted(event::WorkflowTaskCompleted {
            started_seq,
            worker: "w".into(),
        })],
    )
    .await;
    // A task scheduled for later is invisible until then, and is a wakeup.
    r.append(&store, vec![fixtures::signal("s", vec![])]).await;
    let later = r.schedule_workflow_task(&store, T0 + 2_000).await;
    assert_eq!(
        store
            .poll_task(ns, "wq", TaskKind::Workflow, &[], T0 + 1_999)
            .await
            .unwrap(),
        None
    );
    assert_eq!(store.next_wakeup_ms().await.unwrap(), Some(T0 + 2_000));
    assert_eq!(
        store
            .poll_task(ns, "wq", TaskKind::Workflow, &[], T0 + 2_000)
            .await
            .unwrap(),
        Some(Task::Workflow {
            key: r.key.clone(),
            scheduled_seq: later
        })
    );
    // Tasks of several runs come out oldest first.
    let mut a = RunDriver::start(&store, "wt-a", "fifo").await;
    let mut b = RunDriver::start(&store, "wt-b", "fifo").await;
    b.time_ms = T0 + 1;
    let sb = b.schedule_workflow_task(&store, 0).await;
    a.time_ms = T0 + 2;
    let sa = a.schedule_workflow_task(&store, 0).await;
    assert_eq!(
        store
            .poll_task(ns, "fifo", TaskKind::Workflow, &[], T0 + 5)
            .await
            .unwrap(),
        Some(Task::Workflow {
            key: b.key.clone(),
            scheduled_seq: sb
        })
    );
    assert_eq!(
        store
            .poll_task(ns, "fifo", TaskKind::Workflow, &[], T0 + 5)
            .await
            .unwrap(),
        Some(Task::Workflow {
            key: a.key.clone(),
            scheduled_seq: sa
        })
    );
}

/// Activity attempts: offered on their queue, leased, retried after backoff, parked while the
/// run is over budget and offered again once the budget is raised.
pub async fn activity_backoff_and_budget<S: Store>(store: S) {
    let ns = DEFAULT_NAMESPACE;
    let mut r = RunDriver::start(&store, "act", "wq").await;
    r.run_workflow_task(&store).await;
    let id = r.next_command();
    r.append(
        &store,
        vec![fixtures::activity(id, "aq", ActivityOptions::default())],
    )
    .await;
    let first = Task::Activity {
        key: r.key.clone(),
        id,
        attempt: 1,
    };
    assert_eq!(
        store
            .poll_task(ns, "aq", TaskKind::Activity, &[], T0)
            .await
            .unwrap(),
        Some(first.clone())
    );
    assert_eq!(
        store
            .poll_task(ns, "aq", TaskKind::Activity, &[], T0)
            .await
            .unwrap(),
        None,
        "leased"
    );
    r.append(
        &store,
        vec![fixtures::activity_failed(id, 1, Some(T0 + 500))],
    )
    .await;
    store.release_task(&first).await.unwrap();
    assert_eq!(
        store
            .poll_task(ns, "aq", TaskKind::Activity, &[], T0 + 499)
            .await
            .unwrap(),
        None,
        "backing off"
    );
    assert_eq!(store.next_wakeup_ms().await.unwrap(), Some(T0 + 500));
    let second = Task::Activity {
        key: r.key.clone(),
        id,
        attempt: 2,
    };
    assert_eq!(
        store
            .poll_task(ns, "aq", TaskKind::Activity, &[], T0 + 500)
            .await
            .unwrap(),
        Some(second.clone())
    );
    store.release_task(&second).await.unwrap();
    // Over budget: parked.
    r.append(
        &store,
        vec![Event::BudgetExceeded(event::BudgetExceeded {
            dimension: BudgetDimension::Tokens,
            limit: 10,
            used: 10,
        })],
    )
    .await;
    assert_eq!(
        store
            .poll_task(ns, "aq", TaskKind::Activity, &[], T0 + 600)
            .await
            .unwrap(),
        None,
        "a run over budget dispatches nothing"
    );
    r.append(
        &store,
        vec![Event::BudgetUpdated(event::BudgetUpdated {
            budget: Budget {
                max_tokens: 100,
                ..Budget::default()
            },
            identity: "op".into(),
        })],
    )
    .await;
    assert_eq!(
        store
            .poll_task(ns, "aq", TaskKind::Activity, &[], T0 + 600)
            .await
            .unwrap(),
        Some(second.clone()),
        "raising the budget resumes it"
    );
    // A cancel request takes it off the queue; a completion closes it.
    store.release_task(&second).await.unwrap();
    let cancel = r.next_command();
    r.append(
        &store,
        vec![Event::ActivityCancelRequested(
            event::ActivityCancelRequested {
                command_seq: cancel,
                activity_id: id,
            },
        )],
    )
    .await;
    assert_eq!(
        store
            .poll_task(ns, "aq", TaskKind::Activity, &[], T0 + 600)
            .await
            .unwrap(),
        None
    );
    let id2 = r.next_command();
    r.append(
        &store,
        vec![fixtures::activity(id2, "", ActivityOptions::default())],
    )
    .await;
    assert_eq!(
        store
            .poll_task(ns, "wq", TaskKind::Activity, &[], T0)
            .await
            .unwrap(),
        Some(Task::Activity {
            key: r.key.clone(),
            id: id2,
            attempt: 1
        }),
        "an activity without a queue uses the run's"
    );
    let done = Event::ActivityCompleted(event::ActivityCompleted {
        command_seq: id2,
        attempt: 1,
        result: crate::payload::Payload::json(b"1".to_vec()),
        duration_ms: 1,
        usage: None,
        reconciled: false,
    });
    r.append(&store, vec![done]).await;
    store
        .release_task(&Task::Activity {
            key: r.key.clone(),
            id: id2,
            attempt: 1,
        })
        .await
        .unwrap();
    assert_eq!(
        store
            .poll_task(ns, "wq", TaskKind::Activity, &[], T0)
            .await
            .unwrap(),
        None,
        "a closed activity is gone, even when released"
    );
}

/// Eager dispatch: a specific visible task can be taken once; a taken task is not offered to
/// pollers; a task not yet visible, or already leased, cannot be taken.
pub async fn take_a_specific_task<S: Store>(store: S) {
    let ns = DEFAULT_NAMESPACE;
    let mut r = RunDriver::start(&store, "eager", "wq").await;
    r.run_workflow_task(&store).await;
    let id = r.next_command();
    r.append(
        &store,
        vec![fixtures::activity(id, "aq", ActivityOptions::default())],
    )
    .await;
    let task = Task::Activity {
        key: r.key.clone(),
        id,
        attempt: 1,
    };
    assert!(
        store.take_task(&task, T0).await.unwrap(),
        "a visible task can be taken"
    );
    assert!(!store.take_task(&task, T0).await.unwrap(), "not twice");
    assert_eq!(
        store
            .poll_task(ns, "aq", TaskKind::Activity, &[], T0)
            .await
            .unwrap(),
        None,
        "a taken task is leased"
    );
    store.release_task(&task).await.unwrap();
    assert_eq!(
        store
            .poll_task(ns, "aq", TaskKind::Activity, &[], T0)
            .await
            .unwrap(),
        Some(task.clone()),
        "released, it is offered again"
    );
    assert!(
        !store.take_task(&task, T0).await.unwrap(),
        "a polled task cannot be taken"
    );
    r.append(
        &store,
        vec![fixtures::activity_failed(id, 1, Some(T0 + 500))],
    )
    .await;
    let second = Task::Activity {
        key: r.key.clone(),
        id,
        attempt: 2,
    };
    assert!(
        !store.take_task(&second, T0 + 499).await.unwrap(),
        "not before it is visible"
    );
    assert!(store.take_task(&second, T0 + 500).await.unwrap());
    let unknown = Task::Activity {
        key: r.key.clone(),
        id: id + 100,
        attempt: 1,
    };
    assert!(!store.take_task(&unknown, T0 + 500).await.unwrap());
}

/// `defer_task`: a task is not offered before `until_ms` (whether it was offered or leased),
/// is offered again from then, and its recorded attempt lives as long as the state offers
/// the task; a release offers it at once; a deferral of a task the state does not offer
/// changes nothing.
pub async fn deferred_task_waits_and_keeps_its_attempt<S: Store>(store: S) {
    let ns = DEFAULT_NAMESPACE;
    let mut r = RunDriver::start(&store, "defer", "dq").await;
    let scheduled_seq = r.schedule_workflow_task(&store, 0).await;
    let task = Task::Workflow {
        key: r.key.clone(),
        scheduled_seq,
    };
    let poll = |at| store.poll_task(ns, "dq", TaskKind::Workflow, &[], at);
    assert_eq!(
        store.task_attempt(&task).await.unwrap(),
        None,
        "never deferred"
    );
    // Deferred while offered (not leased).
    assert!(store.defer_task(&task, T0 + 1_000, 2).await.unwrap());
    assert_eq!(store.task_attempt(&task).await.unwrap(), Some(2));
    assert_eq!(poll(T0 + 999).await.unwrap(), None, "deferred");
    assert_eq!(
        poll(T0 + 1_000).await.unwrap(),
        Some(task.clone()),
        "offered from until_ms"
    );
    assert_eq!(
        store.task_attempt(&task).await.unwrap(),
        Some(2),
        "a poll keeps the attempt"
    );
    // Deferred while leased (a hand-out held for longer, then a failure's backoff).
    assert!(store.defer_task(&task, T0 + 30_000, 3).await.unwrap());
    assert_eq!(
        poll(T0 + 20_000).await.unwrap(),
        None,
        "past LEASE_MS, still deferred"
    );
    assert!(store.defer_task(&task, T0 + 25_000, 3).await.unwrap());
    assert_eq!(
        poll(T0 + 24_999).await.unwrap(),
        None,
        "deferred again, shorter"
    );
    assert_eq!(poll(T0 + 25_000).await.unwrap(), Some(task.clone()));
    assert_eq!(store.task_attempt(&task).await.unwrap(), Some(3));
    // A release offers it at once, keeping the attempt.
    assert!(store.defer_task(&task, T0 + 90_000, 4).await.unwrap());
    store.release_task(&task).await.unwrap();
    assert_eq!(
        poll(T0 + 25_001).await.unwrap(),
        Some(task.clone()),
        "released"
    );
    assert_eq!(store.task_attempt(&task).await.unwrap(), Some(4));
    // Another event that leaves the task scheduled keeps the deferral and the attempt.
    assert!(store.defer_task(&task, T0 + 40_000, 5).await.unwrap());
    r.append(&store, vec![fixtures::signal("s", vec![])]).await;
    assert_eq!(poll(T0 + 39_999).await.unwrap(), None, "still deferred");
    assert_eq!(store.task_attempt(&task).await.unwrap(), Some(5));
    // The state moving past the task drops both; a deferral of it then changes nothing.
    r.append(
        &store,
        vec![Event::WorkflowTaskStarted(event::WorkflowTaskStarted {
            scheduled_seq,
            worker: "w".into(),
            timeout_ms: 0,
        })],
    )
    .await;
    assert_eq!(store.task_attempt(&task).await.unwrap(), None, "moved on");
    assert!(!store.defer_task(&task, T0 + 50_000, 6).await.unwrap());
    assert_eq!(store.task_attempt(&task).await.unwrap(), None);
}

/// Tasks of unserved types ahead in a queue.
pub const UNSERVED_AHEAD: usize = 200;

/// A poll names the types its worker runs and gets the first visible task among them: however
/// many tasks of a type nobody polls for are ahead (here [`UNSERVED_AHEAD`]), they are neither
/// taken nor in the way (C6). A poll for no types takes the oldest of any type.
pub async fn typed_poll_passes_unserved_types<S: Store>(store: S) {
    let ns = DEFAULT_NAMESPACE;
    let workflow_of = |workflow_id: &str, workflow_type: &str| event::RunStarted {
        workflow_type: workflow_type.into(),
        ..fixtures::started(workflow_id, "shared")
    };
    let mut unserved = Vec::new();
    for i in 0..UNSERVED_AHEAD {
        let mut r =
            RunDriver::start_with(&store, workflow_of(&format!("unserved-{i}"), "unserved")).await;
        let scheduled_seq = r.schedule_workflow_task(&store, 0).await;
        unserved.push(Task::Workflow {
            key: r.key.clone(),
            scheduled_seq,
        });
    }
    let mut s = RunDriver::start_with(&store, workflow_of("served", "served")).await;
    s.time_ms = T0 + 1;
    let served = Task::Workflow {
        key: s.key.clone(),
        scheduled_seq: s.schedule_workflow_task(&store, 0).await,
    };
    let now = T0 + 10;
    let poll = |types: Vec<String>| {
        let store = &store;
        async move {
            store
                .poll_task(ns, "shared", TaskKind::Workflow, &types, now)
                .await
                .unwrap()
        }
    };
    let names = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    assert_eq!(poll(names(&["nobody"])).await, None, "no task of that type");
    assert_eq!(
        poll(names(&["served"])).await,
        Some(served.clone()),
        "the served task, past {UNSERVED_AHEAD} unserved ones"
    );
    assert_eq!(
        poll(names(&["served"])).await,
        None,
        "leased, not offered twice"
    );
    store.release_task(&served).await.unwrap();
    // Several types: the oldest among them.
    let oldest = unserved
        .iter()
        .min_by_key(|t| match t {
            Task::Workflow { key, .. } | Task::Activity { key, .. } => key.clone(),
        })
        .cloned();
    assert_eq!(
        poll(names(&["served", "unserved"])).await,
        oldest,
        "the oldest of both types"
    );
    store.release_task(oldest.as_ref().unwrap()).await.unwrap();
    assert_eq!(
        poll(Vec::new()).await,
        oldest,
        "a poll for any type takes the oldest"
    );
    // Nothing was stepped over: every unserved task is still offered, the served one too.
    let mut left = 0;
    while let Some(t) = poll(names(&["unserved"])).await {
        assert!(unserved.contains(&t), "{t:?} is one of the unserved tasks");
        left += 1;
    }
    assert_eq!(
        left,
        UNSERVED_AHEAD - 1,
        "all unserved tasks but the leased one"
    );
    assert_eq!(poll(Vec::new()).await, Some(served.clone()));
    // A specific task is still taken by eager dispatch, whatever its type.
    let oldest = oldest.unwrap();
    store.release_task(&oldest).await.unwrap();
    assert!(store.take_task(&oldest, now).await.unwrap());
    assert!(!store.take_task(&oldest, now).await.unwrap(), "taken once");

    // Activity queues filter by activity type the same way.
    let mut r = RunDriver::start(&store, "acts", "wq").await;
    r.run_workflow_task(&store).await;
    let mut events = Vec::new();
    let mut ids = Vec::new();
    for i in 0..3 {
        let id = r.next_command();
        ids.push(id);
        let mut e = fixtures::activity(id, "typed", ActivityOptions::default());
        if let Event::ActivityScheduled(a) = &mut e {
            a.activity_type = if i < 2 { "tool" } else { "llm" }.into();
        }
        events.push(e);
    }
    r.append(&store, events).await;
    assert_eq!(
        store
            .poll_task(ns, "typed", TaskKind::Activity, &names(&["llm"]), now)
            .await
            .unwrap(),
        Some(Task::Activity {
            key: r.key.clone(),
            id: ids[2],
            attempt: 1
        }),
        "the llm activity, past two tool activities"
    );
    assert_eq!(
        store
            .poll_task(ns, "typed", TaskKind::Activity, &names(&["llm"]), now)
            .await
            .unwrap(),
        None
    );
}

/// `queues_with_work` (what `task_queues_per_namespace_max` counts) names the queues of a
/// namespace that hold a task — offered, not visible yet, or leased — in name order, at most
/// `limit`; a queue whose last task is done holds no work, an activity queue counts like a
/// workflow queue, and namespaces are apart.
pub async fn queues_with_work_names_the_queues_that_hold_tasks<S: Store>(store: S) {
    let ns = DEFAULT_NAMESPACE;
    let work = |limit| store.queues_with_work(ns, limit);
    assert_eq!(
        work(10).await.unwrap(),
        Vec::<String>::new(),
        "an empty store"
    );
    let mut a = RunDriver::start(&store, "qw-a", "q-b").await;
    assert_eq!(
        work(10).await.unwrap(),
        Vec::<String>::new(),
        "a run with no task holds no queue"
    );
    let scheduled_seq = a.schedule_workflow_task(&store, 0).await;
    assert_eq!(work(10).await.unwrap(), ["q-b"]);
    // A task not visible for an hour still holds its queue.
    let mut b = RunDriver::start(&store, "qw-b", "q-a").await;
    b.schedule_workflow_task(&store, T0 + 3_600_000).await;
    assert_eq!(work(10).await.unwrap(), ["q-a", "q-b"], "in name order");
    assert_eq!(work(1).await.unwrap(), ["q-a"], "at most the limit");
    assert_eq!(work(0).await.unwrap(), Vec::<String>::new());
    assert_eq!(
        store.queues_with_work("other-ns", 10).await.unwrap(),
        Vec::<String>::new(),
        "namespaces are apart"
    );
    // Leased, the task still holds its queue.
    let leased = store
        .poll_task(ns, "q-b", TaskKind::Workflow, &[], T0)
        .await
        .unwrap();
    assert_eq!(
        leased,
        Some(Task::Workflow {
            key: a.key.clone(),
            scheduled_seq
        })
    );
    assert_eq!(
        work(10).await.unwrap(),
        ["q-a", "q-b"],
        "a leased task counts"
    );
    // Done, it holds nothing; the activity it scheduled holds the activity's queue.
    let started_seq = a.next;
    a.append(
        &store,
        vec![Event::WorkflowTaskStarted(event::WorkflowTaskStarted {
            scheduled_seq,
            worker: "w".into(),
            timeout_ms: 0,
        })],
    )
    .await;
    let id = a.next_command();
    a.append(
        &store,
        vec![
            Event::WorkflowTaskCompleted(event::WorkflowTaskCompleted {
                started_seq,
                worker: "w".into(),
            }),
            fixtures::activity(id, "q-c", ActivityOptions::default()),
        ],
    )
    .await;
    assert_eq!(work(10).await.unwrap(), ["q-a", "q-c"]);
}
