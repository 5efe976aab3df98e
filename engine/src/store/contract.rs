//! The contract every [`Store`] passes: one suite, run against every backend (the embedded
//! store in `engine/tests/store_contract.rs`; a PostgreSQL crate calls [`run_all`] too).
//!
//! Public but hidden from the docs: it is test code (it panics on the first broken promise),
//! shipped in the library so that backends in other crates can run it.

mod attributes;
mod builds;
pub mod fixtures;
mod history;
mod queues;
mod requests;
mod retention;
mod schedules;
mod search;
mod size;
mod timers;

use async_trait::async_trait;

use crate::store::Store;

pub use fixtures::{RunDriver, T0, signal};
pub use requests::request_ids_deduplicate_durably;
pub use retention::closed_runs_are_dropped_for_good;
pub use schedules::schedules_compare_and_set_durably;

/// A backend under test: makes fresh stores and restarts them.
#[async_trait]
pub trait Backend: Send {
    /// The store type.
    type Store: Store;
    /// A fresh, empty store.
    async fn fresh(&mut self) -> Self::Store;
    /// Closes `store` and opens it again on the same data, as after a restart.
    async fn reopen(&mut self, store: Self::Store) -> Self::Store;
}

/// Runs every contract test, each on a fresh store. Panics on the first broken promise.
pub async fn run_all<B: Backend>(backend: &mut B) {
    history::create_and_append(backend.fresh().await).await;
    history::conflict_is_typed(backend.fresh().await).await;
    history::illegal_events_store_nothing(backend.fresh().await).await;
    history::limits_are_refused(backend.fresh().await).await;
    history::workflow_id_unique_while_open(backend.fresh().await).await;
    history::read_history_pages(backend.fresh().await).await;
    history::verify_history_of_intact_runs(backend.fresh().await).await;
    history::list_runs_filters_and_pages(backend.fresh().await).await;
    search::list_runs_by_workflow_id_and_start_time(backend.fresh().await).await;
    search::list_runs_forked_from(backend.fresh().await).await;
    attributes::attributes_memo_and_failed_activities(backend).await;
    history::blobs_dedupe_and_inline(backend.fresh().await).await;
    history::blobs_are_scoped_by_namespace(backend.fresh().await).await;
    schedules::runs_are_listed_by_schedule(backend.fresh().await).await;
    queues::workflow_task_lease_and_release(backend.fresh().await).await;
    queues::activity_backoff_and_budget(backend.fresh().await).await;
    queues::take_a_specific_task(backend.fresh().await).await;
    queues::deferred_task_waits_and_keeps_its_attempt(backend.fresh().await).await;
    queues::typed_poll_passes_unserved_types(backend.fresh().await).await;
    builds::workflow_tasks_go_to_their_build(backend.fresh().await).await;
    queues::queues_with_work_names_the_queues_that_hold_tasks(backend.fresh().await).await;
    timers::timers_fire_and_come_back(backend.fresh().await).await;
    timers::deadlines_of_activities_runs_and_tasks(backend.fresh().await).await;
    reopen_keeps_everything(backend).await;
    size::history_bytes_are_counted(backend).await;
    retention::closed_runs_are_dropped_for_good(backend).await;
    requests::request_ids_deduplicate_durably(backend).await;
    schedules::schedules_compare_and_set_durably(backend).await;
    builds::queue_builds_are_durable(backend).await;
}

/// Runs the suite's one slow test: the history event limit (100,000 events).
pub async fn run_slow<B: Backend>(backend: &mut B) {
    history::history_event_limit(backend.fresh().await).await;
}

/// State built before a restart is all there after it: histories, states, queues (leases are
/// lost: the task is offered again), timers, workflow ids, lists and blobs.
pub async fn reopen_keeps_everything<B: Backend>(backend: &mut B) {
    use crate::event::Event;
    use crate::store::{RunFilter, TaskKind};

    let store = backend.fresh().await;
    let mut a = RunDriver::start(&store, "wf-a", "q").await;
    a.schedule_workflow_task(&store, 0).await;
    let task = store
        .poll_task("default", "q", TaskKind::Workflow, &[], T0)
        .await
        .unwrap();
    assert!(task.is_some(), "the workflow task is offered");
    let mut b = RunDriver::start(&store, "wf-b", "q").await;
    b.run_workflow_task(&store).await;
    let timer = b.next_command();
    b.append(&store, vec![fixtures::timer_started(timer, T0 + 5_000)])
        .await;
    let big = vec![b'x'; 3_000];
    b.append(&store, vec![fixtures::signal("go", big.clone())])
        .await;
    let blob = store
        .put_blob("default", b"standalone blob".repeat(100))
        .await
        .unwrap();
    let mut c = RunDriver::start(&store, "wf-c", "q").await;
    c.append(
        &store,
        vec![Event::RunTerminated(crate::event::RunTerminated {
            reason: "test".into(),
            identity: "t".into(),
        })],
    )
    .await;
    let before: Vec<_> = [&a, &b, &c].iter().map(|r| r.key.clone()).collect();
    let histories = futures_read_all(&store, &before).await;

    let store = backend.reopen(store).await;
    assert_eq!(
        futures_read_all(&store, &before).await,
        histories,
        "histories survive a restart"
    );
    for r in [&a, &b, &c] {
        let s = store
            .run_state(&r.key)
            .await
            .unwrap()
            .expect("state survives");
        assert_eq!(s.last_seq, r.next - 1);
    }
    assert_eq!(
        store
            .open_run_for_workflow_id("default", "wf-a")
            .await
            .unwrap(),
        Some(a.key.run_id)
    );
    assert_eq!(
        store
            .open_run_for_workflow_id("default", "wf-c")
            .await
            .unwrap(),
        None
    );
    let task = store
        .poll_task("default", "q", TaskKind::Workflow, &[], T0)
        .await
        .unwrap();
    assert_eq!(
        task,
        Some(crate::store::Task::Workflow {
            key: a.key.clone(),
            scheduled_seq: 2
        }),
        "a lease lost in a restart means the task is offered again"
    );
    assert_eq!(store.next_wakeup_ms().await.unwrap(), Some(T0 + 5_000));
    let due = store.take_due_timers(T0 + 5_000, 10).await.unwrap();
    assert_eq!(
        due,
        vec![crate::store::DueTimer::Timer {
            key: b.key.clone(),
            id: timer
        }]
    );
    assert_eq!(
        store.get_blob("default", &blob).await.unwrap(),
        Some(b"standalone blob".repeat(100))
    );
    let all = store
        .list_runs("default", &RunFilter::default(), None, 10, T0)
        .await
        .unwrap();
    assert_eq!(all.len(), 3);
    let closed = store
        .list_runs(
            "default",
            &RunFilter {
                status: Some(crate::state::RunStatus::Terminated),
                ..Default::default()
            },
            None,
            10,
            T0,
        )
        .await
        .unwrap();
    assert_eq!(
        closed.iter().map(|s| s.key.clone()).collect::<Vec<_>>(),
        vec![c.key.clone()]
    );
    // And it keeps working: the open run takes more events.
    b.append(&store, vec![fixtures::signal("more", b"{}".to_vec())])
        .await;
    let h = store.read_history(&b.key, 1, 100).await.unwrap();
    assert_eq!(h.len() as u64, b.next - 1);
    let last = h.last().map(|r| r.event.clone());
    let Some(Event::SignalReceived(s)) = last else {
        panic!("last event is the signal")
    };
    let inlined = crate::store::inline_payload(
        &store,
        &b.key.namespace,
        &h[h.len() - 2].event.clone().payloads_mut()[0].clone(),
    )
    .await
    .unwrap();
    assert_eq!(inlined.data, big);
    assert_eq!(s.name, "more");
}

async fn futures_read_all<S: Store>(
    store: &S,
    keys: &[crate::ids::RunKey],
) -> Vec<Vec<crate::event::EventRecord>> {
    let mut out = Vec::new();
    for k in keys {
        out.push(store.read_history(k, 1, 1_000).await.unwrap());
    }
    out
}
