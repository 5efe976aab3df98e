//! A crash between the two appends of a continue-as-new: the old run names a successor that
//! was never created. `EmbeddedStore::missing_successors` finds it, across a reopen, with
//! everything needed to create it.

use steadfast_engine::embedded::{EmbeddedOptions, EmbeddedStore};
use steadfast_engine::event::*;
use steadfast_engine::payload::Payload;
use steadfast_engine::store::{AppendRequest, Store};
use steadfast_engine::{Event, RunId, RunKey};

fn started(workflow_id: &str) -> Event {
    Event::RunStarted(RunStarted {
        workflow_type: "agent".into(),
        workflow_id: workflow_id.into(),
        task_queue: "q".into(),
        input: Payload::json(b"{\"turn\":0}".to_vec()),
        run_timeout_ms: 60_000,
        budget: Budget {
            max_tokens: 500,
            ..Default::default()
        },
        continued_from: None,
        identity: "test".into(),
        random_seed: 7,
        parent: None,
        forked_from: None,
        schedule: None,
        traceparent: None,
    })
}

async fn append(store: &EmbeddedStore, key: &RunKey, next: u64, events: Vec<Event>) {
    store
        .append(AppendRequest {
            key: key.clone(),
            expected_next_seq: next,
            events,
            time_ms: 1_000,
            wait_durable: true,
        })
        .await
        .unwrap();
}

/// Starts `key`, runs one workflow task and ends it with continue-as-new to `new_id`.
async fn continued(
    store: &EmbeddedStore,
    key: &RunKey,
    workflow_id: &str,
    new_id: RunId,
    input: &[u8],
) {
    let scheduled = Event::WorkflowTaskScheduled(WorkflowTaskScheduled {
        task_queue: "q".into(),
        attempt: 1,
        not_before_ms: 0,
    });
    append(store, key, 1, vec![started(workflow_id), scheduled]).await;
    append(
        store,
        key,
        3,
        vec![Event::WorkflowTaskStarted(WorkflowTaskStarted {
            scheduled_seq: 2,
            worker: "w".into(),
            timeout_ms: 0,
        })],
    )
    .await;
    let completed = Event::WorkflowTaskCompleted(WorkflowTaskCompleted {
        started_seq: 3,
        worker: "w".into(),
    });
    let cont = Event::RunContinuedAsNew(RunContinuedAsNew {
        keep_build: false,
        command_seq: 1,
        new_run_id: new_id,
        input: Payload::json(input.to_vec()),
    });
    append(store, key, 4, vec![completed, cont]).await;
}

#[tokio::test]
async fn a_continued_run_without_its_successor_is_found_across_a_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let old = RunKey::new("default", RunId::new_v7());
    let new_id = RunId::new_v7();
    {
        let (store, _) = EmbeddedStore::open(dir.path(), EmbeddedOptions::default()).unwrap();
        continued(&store, &old, "w1", new_id, b"{\"turn\":1}").await;
        // Another run that continued properly is not reported.
        let ok_old = RunKey::new("other-ns", RunId::new_v7());
        let ok_new = RunId::new_v7();
        continued(&store, &ok_old, "w2", ok_new, b"1").await;
        append(
            &store,
            &RunKey::new("other-ns", ok_new),
            1,
            vec![started("w2")],
        )
        .await;
        // The crash: the successor of `old` is never created.
        store.close().await.unwrap();
    }
    let (store, _) = EmbeddedStore::open(dir.path(), EmbeddedOptions::default()).unwrap();
    let missing = store.missing_successors().await.unwrap();
    assert_eq!(missing.len(), 1, "{missing:?}");
    let (key, s) = &missing[0];
    assert_eq!(key, &RunKey::new("default", new_id));
    assert_eq!(
        (
            s.workflow_type.as_str(),
            s.workflow_id.as_str(),
            s.task_queue.as_str()
        ),
        ("agent", "w1", "q")
    );
    assert_eq!(s.input.data, b"{\"turn\":1}");
    assert_eq!(s.continued_from, Some(old.run_id));
    assert_eq!((s.run_timeout_ms, s.budget.max_tokens), (60_000, 500));
    // Once created, it is no longer missing.
    append(&store, key, 1, vec![Event::RunStarted(s.clone())]).await;
    assert!(store.missing_successors().await.unwrap().is_empty());
    store.close().await.unwrap();
}

/// ContinueAsNew racing a start: between the old run's RunContinuedAsNew and its successor's
/// RunStarted, another start took the workflow id. The successor is then created closed
/// (RunStarted + RunFailed): the store accepts it without the uniqueness check (a closed run
/// never holds the id), the open run keeps the id — also after a rebuild from the log — and
/// the continued run no longer counts as missing its successor.
#[tokio::test]
async fn a_successor_created_closed_leaves_the_workflow_id_to_the_open_run() {
    let dir = tempfile::tempdir().unwrap();
    let old = RunKey::new("default", RunId::new_v7());
    let new_id = RunId::new_v7();
    let holder = RunKey::new("default", RunId::new_v7());
    {
        let (store, _) = EmbeddedStore::open(dir.path(), EmbeddedOptions::default()).unwrap();
        continued(&store, &old, "agent-1", new_id, b"{\"turn\":1}").await;
        append(&store, &holder, 1, vec![started("agent-1")]).await;
        let successor = RunKey::new("default", new_id);
        let refused = store
            .append(AppendRequest {
                key: successor.clone(),
                expected_next_seq: 1,
                events: vec![started("agent-1")],
                time_ms: 1_000,
                wait_durable: true,
            })
            .await;
        assert!(matches!(
            refused,
            Err(steadfast_engine::store::Error::WorkflowIdInUse { run_id, .. }) if run_id == holder.run_id
        ));
        let failed = Event::RunFailed(RunFailed {
            command_seq: 0,
            failure: Failure {
                message: "workflow id taken".into(),
                error_type: "WorkflowIdTaken".into(),
                non_retryable: true,
                details: String::new(),
            },
        });
        append(&store, &successor, 1, vec![started("agent-1"), failed]).await;
        assert_eq!(
            store
                .open_run_for_workflow_id("default", "agent-1")
                .await
                .unwrap(),
            Some(holder.run_id)
        );
        store.close().await.unwrap();
    }
    for rebuild in [false, true] {
        if rebuild {
            std::fs::remove_dir_all(dir.path().join("sled")).unwrap();
        }
        let (store, _) = EmbeddedStore::open(dir.path(), EmbeddedOptions::default()).unwrap();
        assert_eq!(
            store
                .open_run_for_workflow_id("default", "agent-1")
                .await
                .unwrap(),
            Some(holder.run_id),
            "rebuild: {rebuild}"
        );
        assert!(store.missing_successors().await.unwrap().is_empty());
        store.close().await.unwrap();
    }
}
