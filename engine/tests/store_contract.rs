//! The store contract suite against the embedded store, with restarts.

use async_trait::async_trait;
use steadfast_engine::embedded::{EmbeddedOptions, EmbeddedStore};
use steadfast_engine::store::contract::{self, Backend};

struct Embedded {
    dirs: Vec<tempfile::TempDir>,
}

fn options() -> EmbeddedOptions {
    // Small segments so that tests roll and checkpoint segments too.
    EmbeddedOptions {
        log_segment_bytes: 1 << 20,
        ..EmbeddedOptions::default()
    }
}

#[async_trait]
impl Backend for Embedded {
    type Store = EmbeddedStore;

    async fn fresh(&mut self) -> EmbeddedStore {
        let dir = tempfile::tempdir().expect("tempdir");
        let (store, report) =
            EmbeddedStore::open(dir.path(), options()).expect("open a fresh store");
        assert_eq!(report.records_replayed, 0);
        self.dirs.push(dir);
        store
    }

    async fn reopen(&mut self, store: EmbeddedStore) -> EmbeddedStore {
        let dir = store.dir().to_path_buf();
        store.close().await.expect("close");
        drop(store);
        let (store, _) = EmbeddedStore::open(&dir, options()).expect("reopen");
        store
    }
}

/// A backend that restarts without a clean close and without its read models: sled's whole
/// directory is deleted after the drop, so everything the contract reads after the reopen is
/// rebuilt from the log's records (the log is the record; sled only a cache).
struct Crashing(Embedded);

#[async_trait]
impl Backend for Crashing {
    type Store = EmbeddedStore;

    async fn fresh(&mut self) -> EmbeddedStore {
        self.0.fresh().await
    }

    async fn reopen(&mut self, store: EmbeddedStore) -> EmbeddedStore {
        let dir = store.dir().to_path_buf();
        drop(store);
        std::fs::remove_dir_all(dir.join(steadfast_engine::embedded::SLED_DIR))
            .expect("delete sled");
        let (store, report) = EmbeddedStore::open(&dir, options()).expect("reopen after a drop");
        assert!(report.records_replayed > 0, "the log is replayed");
        store
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded_store_passes_the_contract() {
    contract::run_all(&mut Embedded { dirs: Vec::new() }).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded_store_passes_the_reopen_contract_without_a_clean_close() {
    contract::reopen_keeps_everything(&mut Crashing(Embedded { dirs: Vec::new() })).await;
    // A rebuild from the log drops the dropped runs again (the drop record is in the log).
    contract::closed_runs_are_dropped_for_good(&mut Crashing(Embedded { dirs: Vec::new() })).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded_store_refuses_histories_past_the_event_limit() {
    contract::run_slow(&mut Embedded { dirs: Vec::new() }).await;
}
