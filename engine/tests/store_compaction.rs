//! Retention gives the log's space back: once most records of a sealed segment belong to runs
//! retention dropped, the segment is rewritten without them (compaction). Live runs, blobs and
//! drop records stay; a restart and a rebuild of sled from the compacted log agree.
//!
//! Seeded: prints its seed; `TEST_SEED=<n>` replays it.

use std::collections::BTreeMap;
use std::path::Path;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use steadfast_engine::embedded::{EmbeddedOptions, EmbeddedStore};
use steadfast_engine::event::{self, Event, EventRecord};
use steadfast_engine::ids::{RunId, RunKey};
use steadfast_engine::payload::Payload;
use steadfast_engine::store::{AppendRequest, Error, Store};

mod support;
use support::{seed, started};

fn options() -> EmbeddedOptions {
    EmbeddedOptions {
        log_segment_bytes: 64 << 10,
        sled_segment_bytes: 512 << 10,
        ..EmbeddedOptions::default()
    }
}

fn log_bytes(dir: &Path) -> u64 {
    std::fs::read_dir(dir.join("log"))
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.path().extension().is_some_and(|x| x == "seg"))
        .map(|e| e.metadata().unwrap().len())
        .sum()
}

fn signal(rng: &mut StdRng) -> Event {
    let data: Vec<u8> = (0..rng.gen_range(100..400))
        .map(|_| rng.gen_range(b'a'..=b'z'))
        .collect();
    Event::SignalReceived(event::SignalReceived {
        name: "s".into(),
        input: Payload::json(data),
        identity: "c".into(),
        request_id: String::new(),
    })
}

async fn append(
    store: &EmbeddedStore,
    key: &RunKey,
    next: u64,
    events: Vec<Event>,
    time_ms: i64,
) -> Vec<EventRecord> {
    store
        .append(AppendRequest {
            key: key.clone(),
            expected_next_seq: next,
            events,
            time_ms,
            wait_durable: true,
        })
        .await
        .unwrap()
        .records
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropped_runs_give_their_log_space_back() {
    let mut rng = StdRng::seed_from_u64(seed("store_compaction"));
    let dir = tempfile::tempdir().unwrap();
    let (store, _) = EmbeddedStore::open(dir.path(), options()).unwrap();
    // 60 runs closed early (to be dropped), then 15 that stay (5 open).
    let mut keep: BTreeMap<RunKey, Vec<EventRecord>> = BTreeMap::new();
    let mut doomed = Vec::new();
    for i in 0..75 {
        let key = RunKey::new(
            "default",
            RunId(uuid::Builder::from_random_bytes(rng.r#gen()).into_uuid()),
        );
        // The runs to drop first, so that whole sealed segments become garbage (compaction
        // rewrites a segment once half of it is), then the runs that stay.
        let old = i < 60;
        let t = if old { 1_000 } else { 50_000 };
        let mut h = append(&store, &key, 1, vec![started("")], t).await;
        for _ in 0..8 {
            let next = h.len() as u64 + 1;
            h.extend(append(&store, &key, next, vec![signal(&mut rng)], t).await);
        }
        if old || i % 3 != 0 {
            let next = h.len() as u64 + 1;
            let end = Event::RunTerminated(event::RunTerminated {
                reason: "done".into(),
                identity: "c".into(),
            });
            h.extend(append(&store, &key, next, vec![end], t).await);
        }
        if old {
            doomed.push(key);
        } else {
            keep.insert(key, h);
        }
    }
    let before = log_bytes(dir.path());
    let mut dropped = 0;
    loop {
        let n = store.drop_closed_before(10_000, 16).await.unwrap();
        if n == 0 {
            break;
        }
        dropped += n;
    }
    assert_eq!(dropped, doomed.len());
    // Compaction runs in the indexer after the drops: wait for it through a checkpoint.
    store.checkpoint().await.unwrap();
    let after = log_bytes(dir.path());
    let stats = store.index_stats();
    eprintln!(
        "log {before} B -> {after} B after dropping {dropped} of 75 runs ({} B reclaimed)",
        stats.reclaimed_bytes
    );
    // The dropped runs' records fill the first segments completely: those are rewritten to
    // almost nothing (~73% of the log goes in practice; how much of the mixed segment after
    // them goes depends on the seeded payload sizes, hence the 60% bound).
    assert!(
        after * 10 <= before * 4 && stats.reclaimed_bytes > 0,
        "the log should have shrunk by at least 60%: {before} -> {after}"
    );
    let check = |store: EmbeddedStore, what: &'static str| {
        let keep = keep.clone();
        let doomed = doomed.clone();
        async move {
            for (key, want) in &keep {
                let got = store.read_history(key, 1, 10_000).await.unwrap();
                assert_eq!(&got, want, "{what}: {key}");
            }
            for key in &doomed {
                assert!(
                    matches!(
                        store.read_history(key, 1, 10).await,
                        Err(Error::NotFound(_))
                    ),
                    "{what}: a dropped run came back"
                );
            }
            store
        }
    };
    let store = check(store, "after compaction").await;
    store.close().await.unwrap();
    drop(store);
    let (store, _) = EmbeddedStore::open(dir.path(), options()).unwrap();
    let store = check(store, "after a restart").await;
    store.close().await.unwrap();
    drop(store);
    std::fs::remove_dir_all(dir.path().join("sled")).unwrap();
    let (store, _) = EmbeddedStore::open(dir.path(), options()).unwrap();
    check(store, "after a rebuild from the compacted log").await;
}
