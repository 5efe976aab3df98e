//! Run search: lists by workflow id and by start time, alone and with the other filters, in
//! pages.

use crate::event::{self, Event};
use crate::ids::{DEFAULT_NAMESPACE, RunId, RunKey};
use crate::state::RunStatus;
use crate::store::contract::fixtures::{self, RunDriver, T0};
use crate::store::{RunFilter, Store};

/// Seconds between the starts of the runs of the test.
const STEP_MS: i64 = 1_000;

/// Five runs started a second apart; runs 0, 2 and 4 share the workflow id "dup" (0 and 2
/// completed before the next one started, 4 is open), 1 and 3 have their own.
pub async fn list_runs_by_workflow_id_and_start_time<S: Store>(store: S) {
    let ids = ["dup", "one", "dup", "three", "dup"];
    let mut runs: Vec<RunDriver> = Vec::new();
    for (i, id) in ids.iter().enumerate() {
        let mut r = RunDriver {
            key: RunKey::new(DEFAULT_NAMESPACE, RunId::new_v7()),
            next: 1,
            command: 1,
            time_ms: T0 + i as i64 * STEP_MS,
        };
        r.append(&store, vec![Event::RunStarted(fixtures::started(id, "q"))])
            .await;
        if *id == "dup" && i < 4 {
            let cs = r.next_command();
            r.append(
                &store,
                vec![Event::RunCompleted(event::RunCompleted {
                    command_seq: cs,
                    result: crate::payload::Payload::json(b"1".to_vec()),
                })],
            )
            .await;
        }
        runs.push(r);
    }
    let id = |i: usize| runs[i].key.run_id;
    let list = |f: RunFilter, after: Option<RunId>, limit: usize| {
        let store = &store;
        async move {
            store
                .list_runs(DEFAULT_NAMESPACE, &f, after, limit, T0)
                .await
                .unwrap()
                .iter()
                .map(|s| s.key.run_id)
                .collect::<Vec<_>>()
        }
    };
    let at = |i: i64| Some(T0 + i * STEP_MS);
    let by_id = |w: &str| RunFilter {
        workflow_id: Some(w.into()),
        ..RunFilter::default()
    };
    let range = |after: Option<i64>, before: Option<i64>| RunFilter {
        started_after_ms: after,
        started_before_ms: before,
        ..RunFilter::default()
    };

    assert_eq!(
        list(by_id("dup"), None, 10).await,
        vec![id(4), id(2), id(0)],
        "every run of a workflow id, open and closed, newest first"
    );
    assert_eq!(list(by_id("one"), None, 10).await, vec![id(1)]);
    assert!(list(by_id("none"), None, 10).await.is_empty());
    // Paging keeps the filter: one at a time, each page after the last id.
    let mut paged = Vec::new();
    let mut after = None;
    loop {
        let page = list(by_id("dup"), after, 1).await;
        let Some(last) = page.last().copied() else {
            break;
        };
        paged.extend(page);
        after = Some(last);
    }
    assert_eq!(paged, vec![id(4), id(2), id(0)], "pages of a workflow id");

    assert_eq!(
        list(range(at(1), None), None, 10).await,
        vec![id(4), id(3), id(2), id(1)],
        "started at or after"
    );
    assert_eq!(
        list(range(None, at(3)), None, 10).await,
        vec![id(2), id(1), id(0)],
        "started before"
    );
    assert_eq!(
        list(range(at(1), at(3)), None, 10).await,
        vec![id(2), id(1)],
        "a window"
    );
    assert!(list(range(at(5), None), None, 10).await.is_empty());
    let page1 = list(range(at(1), None), None, 2).await;
    let page2 = list(range(at(1), None), page1.last().copied(), 2).await;
    assert_eq!(
        [page1, page2].concat(),
        vec![id(4), id(3), id(2), id(1)],
        "pages of a time range"
    );

    // With the other filters.
    let both = RunFilter {
        workflow_id: Some("dup".into()),
        ..range(at(1), None)
    };
    assert_eq!(list(both, None, 10).await, vec![id(4), id(2)]);
    let done = RunFilter {
        status: Some(RunStatus::Completed),
        workflow_id: Some("dup".into()),
        ..RunFilter::default()
    };
    assert_eq!(list(done, None, 10).await, vec![id(2), id(0)]);
    let open_late = RunFilter {
        status: Some(RunStatus::Running),
        ..range(at(2), None)
    };
    assert_eq!(list(open_late, None, 10).await, vec![id(4), id(3)]);
    let typed = RunFilter {
        workflow_type: Some("wf".into()),
        ..range(None, at(1))
    };
    assert_eq!(list(typed, None, 10).await, vec![id(0)]);
}

/// A fork names its original in RunStarted (`forked_from`); `forked_from` lists the forks of
/// one run, newest first, in pages, and no other run (not the original, not a fork of
/// another run).
pub async fn list_runs_forked_from<S: Store>(store: S) {
    let mut keys = Vec::new();
    let original = RunKey::new(DEFAULT_NAMESPACE, RunId::new_v7());
    let other = RunKey::new(DEFAULT_NAMESPACE, RunId::new_v7());
    // The original, three forks of it, and one fork of another run.
    let origins = [
        None,
        Some(original.run_id),
        Some(original.run_id),
        Some(other.run_id),
    ];
    for (i, from) in [None].into_iter().chain(origins).enumerate() {
        let key = if i == 0 {
            original.clone()
        } else {
            RunKey::new(DEFAULT_NAMESPACE, RunId::new_v7())
        };
        let mut r = RunDriver {
            key: key.clone(),
            next: 1,
            command: 1,
            time_ms: T0 + i as i64 * STEP_MS,
        };
        let mut started = fixtures::started(&format!("w{i}"), "q");
        started.forked_from = from.map(|run_id| event::ForkRef { run_id, seq: 3 });
        r.append(&store, vec![Event::RunStarted(started)]).await;
        keys.push(key);
    }
    let forks_of = |run: RunId, after: Option<RunId>, limit: usize| {
        let store = &store;
        async move {
            store
                .list_runs(
                    DEFAULT_NAMESPACE,
                    &RunFilter {
                        forked_from: Some(run),
                        ..RunFilter::default()
                    },
                    after,
                    limit,
                    T0,
                )
                .await
                .unwrap()
                .iter()
                .map(|s| s.key.run_id)
                .collect::<Vec<_>>()
        }
    };
    let id = |i: usize| keys[i].run_id;
    // keys: 0 original, 1 plain run, 2 and 3 forks of the original, 4 fork of `other`.
    assert_eq!(
        forks_of(original.run_id, None, 10).await,
        vec![id(3), id(2)]
    );
    assert_eq!(forks_of(original.run_id, None, 1).await, vec![id(3)]);
    assert_eq!(
        forks_of(original.run_id, Some(id(3)), 10).await,
        vec![id(2)]
    );
    assert_eq!(forks_of(other.run_id, None, 10).await, vec![id(4)]);
    assert!(forks_of(id(2), None, 10).await.is_empty());
}
