//! The embedded store's search indexes in a data dir written before they existed: the open
//! backfills them once from the stored run states, so a filter on an attribute, a workflow id
//! or a failed activity finds the runs stored before.

mod support;

use steadfast_engine::embedded::{EmbeddedOptions, EmbeddedStore};
use steadfast_engine::event::{self, Event};
use steadfast_engine::ids::{RunId, RunKey};
use steadfast_engine::search::SearchValue;
use steadfast_engine::store::{AppendRequest, RunFilter, Store};

fn options() -> EmbeddedOptions {
    EmbeddedOptions {
        sled_segment_bytes: 512 << 10,
        ..EmbeddedOptions::default()
    }
}

fn tagged(customer: &str) -> Event {
    Event::SearchAttributesUpserted(event::SearchAttributesUpserted {
        command_seq: 0,
        attributes: [(
            "customer".to_string(),
            SearchValue::Keyword(customer.into()),
        )]
        .into(),
    })
}

async fn list(store: &EmbeddedStore, f: RunFilter) -> Vec<RunId> {
    store
        .list_runs("default", &f, None, 100, 0)
        .await
        .unwrap()
        .iter()
        .map(|s| s.key.run_id)
        .collect()
}

#[tokio::test]
async fn search_indexes_are_backfilled_for_runs_stored_before_them() {
    let dir = tempfile::tempdir().unwrap();
    let mut ids = Vec::new();
    {
        let (store, _) = EmbeddedStore::open(dir.path(), options()).unwrap();
        for (wid, customer) in [("w-1", "acme"), ("w-2", "globex"), ("w-3", "acme")] {
            let key = RunKey::new("default", RunId::new_v7());
            store
                .append(AppendRequest {
                    key: key.clone(),
                    expected_next_seq: 1,
                    events: vec![support::started(wid), tagged(customer)],
                    time_ms: 1_000,
                    wait_durable: true,
                })
                .await
                .unwrap();
            ids.push(key.run_id);
        }
        // Everything in sled, so that the reopen replays nothing from the log.
        store.checkpoint().await.unwrap();
        store.close().await.unwrap();
    }
    // Make it a data dir from before the indexes: no `a` keys, no marker.
    {
        let db = sled::Config::new()
            .path(dir.path().join("sled"))
            .segment_size(512 << 10)
            .open()
            .unwrap();
        let stale: Vec<_> = db.scan_prefix([b'a']).keys().map(Result::unwrap).collect();
        assert!(stale.len() >= 6, "the store wrote search entries");
        for k in stale {
            db.remove(k).unwrap();
        }
        db.remove(b"msearch_index").unwrap();
        db.flush().unwrap();
    }
    let (store, _) = EmbeddedStore::open(dir.path(), options()).unwrap();
    let acme = RunFilter {
        attributes: vec![("customer".into(), SearchValue::Keyword("acme".into()))],
        ..RunFilter::default()
    };
    assert_eq!(list(&store, acme).await, vec![ids[2], ids[0]]);
    let by_id = RunFilter {
        workflow_id: Some("w-2".into()),
        ..RunFilter::default()
    };
    assert_eq!(list(&store, by_id).await, vec![ids[1]]);
    store.close().await.unwrap();
}
