//! Retention: closed runs past the period are dropped for good; open runs never.

use crate::event::{self, Event};
use crate::store::contract::Backend;
use crate::store::contract::fixtures::{RunDriver, T0};
use crate::store::{Error, RunFilter, Store};

fn terminated() -> Event {
    Event::RunTerminated(event::RunTerminated {
        reason: "done".into(),
        identity: "t".into(),
    })
}

/// Runs closed before the cutoff go (reads say not found, lists and workflow ids forget
/// them), runs closed after it and open runs stay, and a restart does not bring them back.
pub async fn closed_runs_are_dropped_for_good<B: Backend>(backend: &mut B) {
    let store = backend.fresh().await;
    let mut old = Vec::new();
    for i in 0..5 {
        let mut r = RunDriver::start(&store, &format!("old-{i}"), "q").await;
        r.time_ms = T0 + 1_000;
        r.append(&store, vec![terminated()]).await;
        old.push(r);
    }
    let mut recent = RunDriver::start(&store, "recent", "q").await;
    recent.time_ms = T0 + 50_000;
    recent.append(&store, vec![terminated()]).await;
    let open = RunDriver::start(&store, "open", "q").await;

    // A limit bounds one sweep.
    let n = store.drop_closed_before(T0 + 10_000, 3).await.unwrap();
    assert_eq!(n, 3, "the limit bounds a sweep");
    let n = store.drop_closed_before(T0 + 10_000, 100).await.unwrap();
    assert_eq!(n, 2, "the rest of the expired runs");
    assert_eq!(store.drop_closed_before(T0 + 10_000, 100).await.unwrap(), 0);

    for r in &old {
        assert!(
            store.run_state(&r.key).await.unwrap().is_none(),
            "dropped state"
        );
        assert!(
            matches!(
                store.read_history(&r.key, 1, 10).await,
                Err(Error::NotFound(_))
            ),
            "a dropped history reads as not found"
        );
        let wid = format!("old-{}", r.key.run_id);
        assert!(
            store
                .open_run_for_workflow_id("default", &wid)
                .await
                .unwrap()
                .is_none()
        );
    }
    assert_eq!(
        store.read_history(&recent.key, 1, 10).await.unwrap().len(),
        2
    );
    assert_eq!(store.read_history(&open.key, 1, 10).await.unwrap().len(), 1);
    let listed = store
        .list_runs("default", &RunFilter::default(), None, 100, T0)
        .await
        .unwrap();
    let mut ids: Vec<_> = listed.iter().map(|s| s.key.clone()).collect();
    ids.sort();
    let mut want = vec![recent.key.clone(), open.key.clone()];
    want.sort();
    assert_eq!(ids, want, "lists forget dropped runs");
    // Open runs are never dropped, whatever the cutoff.
    assert_eq!(store.drop_closed_before(i64::MAX, 100).await.unwrap(), 1);
    assert!(store.run_state(&open.key).await.unwrap().is_some());
    let store = backend.reopen(store).await;
    for r in &old {
        assert!(
            store.run_state(&r.key).await.unwrap().is_none(),
            "a restart does not bring a dropped run back"
        );
    }
    assert!(store.run_state(&recent.key).await.unwrap().is_none());
    assert_eq!(store.read_history(&open.key, 1, 10).await.unwrap().len(), 1);
}
