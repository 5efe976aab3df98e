//! sled is a cache of the log (issue "the log is the record"): its whole directory may be
//! deleted, rolled back to an earlier copy, or left behind by a crash, and the store reopens
//! with every acknowledged event, rebuilding what it needs from the log.
//!
//! Seeded: each test prints its seed; `TEST_SEED=<n>` replays one.

use std::collections::BTreeMap;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use steadfast_engine::embedded::{EmbeddedOptions, EmbeddedStore};
use steadfast_engine::event::{Event, EventRecord};
use steadfast_engine::ids::RunKey;
use steadfast_engine::state::RunStatus;
use steadfast_engine::store::{AppendRequest, RunFilter, Store};

mod support;
use support::{copy_dir, run_id, seed, signal, started, terminated};

fn options() -> EmbeddedOptions {
    EmbeddedOptions {
        log_segment_bytes: 64 << 10,
        sled_segment_bytes: 512 << 10,
        ..EmbeddedOptions::default()
    }
}

type Model = BTreeMap<RunKey, Vec<EventRecord>>;

async fn append(
    store: &EmbeddedStore,
    key: &RunKey,
    next: u64,
    events: Vec<Event>,
) -> Vec<EventRecord> {
    store
        .append(AppendRequest {
            key: key.clone(),
            expected_next_seq: next,
            events,
            time_ms: 1_000 + next as i64,
            wait_durable: true,
        })
        .await
        .unwrap()
        .records
}

/// `runs` runs with a few signals each; every other one is closed.
async fn write_runs(store: &EmbeddedStore, rng: &mut StdRng, model: &mut Model, runs: usize) {
    for i in 0..runs {
        let key = RunKey::new("default", run_id(rng));
        let wid = format!("w-{}", key.run_id);
        let mut recs = append(store, &key, 1, vec![started(&wid)]).await;
        for _ in 0..rng.gen_range(1..6) {
            let next = recs.len() as u64 + 1;
            recs.extend(append(store, &key, next, vec![signal(rng)]).await);
        }
        if i % 2 == 0 {
            let next = recs.len() as u64 + 1;
            recs.extend(append(store, &key, next, vec![terminated()]).await);
        }
        model.insert(key, recs);
    }
}

/// Every run reads back exactly as acknowledged; lists and workflow ids agree.
async fn check(store: &EmbeddedStore, model: &Model, what: &str) {
    for (key, want) in model {
        let got = store
            .read_history(key, 1, 100_000)
            .await
            .unwrap_or_else(|e| panic!("{what}: {key}: {e}"));
        assert_eq!(&got, want, "{what}: history of {key}");
        let state = store.run_state(key).await.unwrap().unwrap();
        assert_eq!(state.last_seq, want.len() as u64, "{what}: state of {key}");
        let wid = format!("w-{}", key.run_id);
        let open = store
            .open_run_for_workflow_id("default", &wid)
            .await
            .unwrap();
        assert_eq!(
            open.is_some(),
            state.is_open(),
            "{what}: workflow id of {key}"
        );
    }
    let mut listed = 0;
    let mut after = None;
    loop {
        let page = store
            .list_runs("default", &RunFilter::default(), after, 100, 0)
            .await
            .unwrap();
        if page.is_empty() {
            break;
        }
        listed += page.len();
        after = page.last().map(|s| s.key.run_id);
    }
    assert_eq!(listed, model.len(), "{what}: listed runs");
    let filter = RunFilter {
        status: Some(RunStatus::Terminated),
        ..RunFilter::default()
    };
    let closed = store
        .list_runs("default", &filter, None, 1_000, 0)
        .await
        .unwrap();
    let want = model
        .values()
        .filter(|h| matches!(h.last().map(|r| &r.event), Some(Event::RunTerminated(_))))
        .count();
    assert_eq!(closed.len(), want, "{what}: terminated runs listed");
}

/// A checkpoint (and a clean close, which checkpoints) keeps the log: deleting the whole
/// sled directory afterwards loses nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleted_read_models_are_rebuilt_from_the_log() {
    let mut rng = StdRng::seed_from_u64(seed("deleted_read_models"));
    let dir = tempfile::tempdir().unwrap();
    let mut model = Model::new();
    {
        let (store, _) = EmbeddedStore::open(dir.path(), options()).unwrap();
        write_runs(&store, &mut rng, &mut model, 40).await;
        store.checkpoint().await.unwrap();
        write_runs(&store, &mut rng, &mut model, 20).await;
        store.close().await.unwrap();
    }
    std::fs::remove_dir_all(dir.path().join("sled")).unwrap();
    let (store, report) = EmbeddedStore::open(dir.path(), options()).unwrap();
    let events: usize = model.values().map(Vec::len).sum();
    assert!(
        report.records_replayed as usize >= events,
        "replayed {} log records for {events} events",
        report.records_replayed
    );
    check(&store, &model, "sled deleted").await;
    // It keeps working on the rebuilt read models.
    write_runs(&store, &mut rng, &mut model, 5).await;
    store.close().await.unwrap();
    drop(store);
    let (store, _) = EmbeddedStore::open(dir.path(), options()).unwrap();
    check(&store, &model, "after the rebuild and a restart").await;
}

/// sled rolled back to an earlier copy of itself (a backup restored, or a crash that lost its
/// later writes): the log brings it forward.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_models_rolled_back_are_brought_forward() {
    let mut rng = StdRng::seed_from_u64(seed("rolled_back_read_models"));
    let dir = tempfile::tempdir().unwrap();
    let old = tempfile::tempdir().unwrap();
    let mut model = Model::new();
    {
        let (store, _) = EmbeddedStore::open(dir.path(), options()).unwrap();
        write_runs(&store, &mut rng, &mut model, 20).await;
        store.close().await.unwrap();
    }
    copy_dir(&dir.path().join("sled"), old.path());
    {
        let (store, _) = EmbeddedStore::open(dir.path(), options()).unwrap();
        write_runs(&store, &mut rng, &mut model, 20).await;
        // Runs of the first part move on too (some close).
        let keys: Vec<RunKey> = model.keys().cloned().collect();
        for key in keys.iter().take(10) {
            let h = model.get_mut(key).unwrap();
            if matches!(h.last().map(|r| &r.event), Some(Event::RunTerminated(_))) {
                continue;
            }
            let next = h.len() as u64 + 1;
            h.extend(append(&store, key, next, vec![terminated()]).await);
        }
        store.close().await.unwrap();
    }
    std::fs::remove_dir_all(dir.path().join("sled")).unwrap();
    copy_dir(old.path(), &dir.path().join("sled"));
    let (store, report) = EmbeddedStore::open(dir.path(), options()).unwrap();
    assert!(report.records_replayed > 0);
    check(&store, &model, "sled rolled back").await;
}
