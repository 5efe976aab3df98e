//! Worker versioning: a run pinned to a build is polled only by that build's workers, an
//! unpinned one by the queue's current build (or anyone when none is set), and the current
//! build survives a restart ([`crate::store::routing`]).

use super::Backend;
use super::fixtures::{self, RunDriver, T0};
use crate::event::{self, Event};
use crate::ids::{DEFAULT_NAMESPACE, RunKey};
use crate::store::routing::workflow_poll_keys;
use crate::store::{RunFilter, Store, Task, TaskKind};

/// Polls `q` for "wf" as a worker of `build` with the queue's stored current build.
async fn poll<S: Store>(store: &S, build: Option<&str>) -> Option<Task> {
    let current = store.queue_build(DEFAULT_NAMESPACE, "q").await.unwrap();
    let keys = workflow_poll_keys(&["wf".to_string()], build, current.as_deref());
    if keys.is_empty() {
        return None;
    }
    store
        .poll_task(DEFAULT_NAMESPACE, "q", TaskKind::Workflow, &keys, T0 + 10)
        .await
        .unwrap()
}

/// A run whose first task a worker of build `build` completed (BuildPinned before the
/// completion, as the server records it), with its next workflow task scheduled.
async fn pinned_run<S: Store>(store: &S, workflow_id: &str, build: &str) -> Task {
    let mut r = RunDriver::start(store, workflow_id, "q").await;
    let scheduled_seq = r.schedule_workflow_task(store, 0).await;
    let started_seq = r.next;
    r.append(
        store,
        vec![Event::WorkflowTaskStarted(event::WorkflowTaskStarted {
            scheduled_seq,
            worker: "w".into(),
            timeout_ms: 0,
        })],
    )
    .await;
    r.append(
        store,
        vec![
            Event::BuildPinned(event::BuildPinned {
                build_id: build.into(),
            }),
            Event::WorkflowTaskCompleted(event::WorkflowTaskCompleted {
                started_seq,
                worker: "w".into(),
            }),
        ],
    )
    .await;
    let scheduled_seq = r.schedule_workflow_task(store, 0).await;
    Task::Workflow {
        key: r.key.clone(),
        scheduled_seq,
    }
}

pub async fn workflow_tasks_go_to_their_build<S: Store>(store: S) {
    let on_a = pinned_run(&store, "pinned-a", "A").await;
    // Neither another build nor a worker without one takes a task pinned to A.
    assert_eq!(poll(&store, Some("B")).await, None, "B took A's task");
    assert_eq!(
        poll(&store, None).await,
        None,
        "a worker without a build took A's task"
    );
    assert_eq!(poll(&store, Some("A")).await, Some(on_a.clone()));
    store.release_task(&on_a).await.unwrap();

    // An unpinned run: anyone while no current build is set, then only the current build.
    let mut r = RunDriver::start(&store, "fresh", "q").await;
    let fresh = Task::Workflow {
        key: r.key.clone(),
        scheduled_seq: r.schedule_workflow_task(&store, 0).await,
    };
    assert_eq!(poll(&store, Some("B")).await, Some(fresh.clone()));
    store.release_task(&fresh).await.unwrap();
    store
        .set_queue_build(DEFAULT_NAMESPACE, "q", Some("C"))
        .await
        .unwrap();
    assert_eq!(poll(&store, Some("B")).await, None, "B is not current");
    assert_eq!(poll(&store, None).await, None, "no build is not current");
    assert_eq!(poll(&store, Some("C")).await, Some(fresh.clone()));
    // A's worker still gets A's run, though C is current.
    assert_eq!(poll(&store, Some("A")).await, Some(on_a.clone()));

    // Auto-upgrading runs are never pinned: the current build takes each of their tasks.
    let mut auto = RunDriver::start(&store, "auto", "q").await;
    auto.append(
        &store,
        vec![Event::VersioningSet(event::VersioningSet {
            pinned_build: String::new(),
            auto_upgrade: true,
        })],
    )
    .await;
    let auto_task = Task::Workflow {
        key: auto.key.clone(),
        scheduled_seq: auto.schedule_workflow_task(&store, 0).await,
    };
    assert_eq!(poll(&store, Some("A")).await, None);
    assert_eq!(poll(&store, Some("C")).await, Some(auto_task));
    // A continue-as-new successor that kept its build is pinned from its first task.
    let mut kept = RunDriver::start_with(&store, fixtures::started("kept", "q")).await;
    kept.append(
        &store,
        vec![Event::VersioningSet(event::VersioningSet {
            pinned_build: "A".into(),
            auto_upgrade: false,
        })],
    )
    .await;
    let kept_task = Task::Workflow {
        key: kept.key.clone(),
        scheduled_seq: kept.schedule_workflow_task(&store, 0).await,
    };
    assert_eq!(poll(&store, Some("C")).await, None);
    assert_eq!(poll(&store, Some("A")).await, Some(kept_task));

    // `run list --build A`: exactly the runs pinned to A.
    let filter = RunFilter {
        build: Some("A".into()),
        ..RunFilter::default()
    };
    let mut listed: Vec<RunKey> = store
        .list_runs(DEFAULT_NAMESPACE, &filter, None, 100, T0 + 10)
        .await
        .unwrap()
        .iter()
        .map(|s| s.key.clone())
        .collect();
    listed.sort();
    let Task::Workflow { key: a_key, .. } = on_a else {
        unreachable!("a workflow task")
    };
    let mut want = vec![a_key, kept.key.clone()];
    want.sort();
    assert_eq!(listed, want, "runs pinned to A");
}

pub async fn queue_builds_are_durable<B: Backend>(backend: &mut B) {
    let store = backend.fresh().await;
    assert_eq!(
        store.queue_build(DEFAULT_NAMESPACE, "q").await.unwrap(),
        None
    );
    store
        .set_queue_build(DEFAULT_NAMESPACE, "q", Some("v1"))
        .await
        .unwrap();
    store
        .set_queue_build(DEFAULT_NAMESPACE, "q", Some("v2"))
        .await
        .unwrap();
    store
        .set_queue_build("other", "q", Some("x"))
        .await
        .unwrap();
    let store = backend.reopen(store).await;
    assert_eq!(
        store
            .queue_build(DEFAULT_NAMESPACE, "q")
            .await
            .unwrap()
            .as_deref(),
        Some("v2")
    );
    assert_eq!(
        store.queue_build("other", "q").await.unwrap().as_deref(),
        Some("x"),
        "builds are per namespace"
    );
    store
        .set_queue_build(DEFAULT_NAMESPACE, "q", None)
        .await
        .unwrap();
    let store = backend.reopen(store).await;
    assert_eq!(
        store.queue_build(DEFAULT_NAMESPACE, "q").await.unwrap(),
        None
    );
}
