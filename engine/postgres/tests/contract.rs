//! The store contract suite, unchanged, against PostgreSQL: a fresh database per store, and a
//! restart is a new connection (with the same node id) to the same database.

use async_trait::async_trait;
use steadfast_engine::store::contract::{self, Backend};
use steadfast_postgres::testing::PgCluster;
use steadfast_postgres::{PgOptions, PgStore};

struct Pg {
    cluster: &'static PgCluster,
    /// The database of the store last made by `fresh` (the suite reopens that one).
    url: Option<String>,
}

fn options() -> PgOptions {
    PgOptions {
        node_id: "contract".into(),
        pool_size: 4,
        ..PgOptions::default()
    }
}

#[async_trait]
impl Backend for Pg {
    type Store = PgStore;

    async fn fresh(&mut self) -> PgStore {
        let url = self.cluster.create_database("contract");
        let store = PgStore::connect(&url, options()).await.expect("connect");
        self.url = Some(url);
        store
    }

    async fn reopen(&mut self, store: PgStore) -> PgStore {
        store.close().await;
        drop(store);
        let url = self.url.as_deref().expect("a fresh store first");
        PgStore::connect(url, options()).await.expect("reconnect")
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_passes_the_contract() {
    let Some(cluster) = PgCluster::shared() else {
        return;
    };
    let started = std::time::Instant::now();
    contract::run_all(&mut Pg { cluster, url: None }).await;
    eprintln!("[pg] contract suite passed in {:?}", started.elapsed());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_passes_the_slow_contract() {
    let Some(cluster) = PgCluster::shared() else {
        return;
    };
    let started = std::time::Instant::now();
    contract::run_slow(&mut Pg { cluster, url: None }).await;
    eprintln!("[pg] slow contract passed in {:?}", started.elapsed());
}
