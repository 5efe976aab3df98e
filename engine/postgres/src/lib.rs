//! A PostgreSQL [`Store`] for Steadfast: several stateless server nodes over one database.
//!
//! # Durability
//! An append is one PostgreSQL transaction, and it is acknowledged once that transaction has
//! committed: durable means *committed* here, as PostgreSQL defines it. With the server's
//! default `synchronous_commit = on`, a commit returns after its WAL record is flushed to disk
//! (and, with synchronous replication, to the standbys the setting names), so promise C1
//! (acknowledged means durable, across a power cut) holds as far as PostgreSQL's own does.
//! With `synchronous_commit = off` (or `fsync = off`) on the server, a database, a role or a
//! connection, PostgreSQL acknowledges commits before they are on disk: a crash of the database
//! host can then lose the last few hundred milliseconds of acknowledged appends, which breaks
//! C1 (a run whose start was acknowledged may be gone; an activity whose completion was
//! recorded may run again). Do not run Steadfast against such a setting. The only commits this
//! store makes with `synchronous_commit = off` are appends that ask for it
//! ([`AppendRequest::wait_durable`] false: records whose loss is harmless).
//!
//! # Use
//! ```no_run
//! # async fn f() -> Result<(), steadfast_engine::store::Error> {
//! use steadfast_postgres::{PgOptions, PgStore};
//! let store = PgStore::connect(
//!     "postgres://steadfast@db.internal:5432/steadfast",
//!     PgOptions { node_id: "node-a".into(), ..PgOptions::default() },
//! )
//! .await?;
//! // ... serve with it (it implements steadfast_engine::store::Store) ...
//! store.close().await;
//! # Ok(()) }
//! ```
//! Give every node its own, stable `node_id` (the default is the host name). Nodes over one
//! database share everything durable; what one node holds only in memory is a lease on a task
//! it is handing out and a claim on a deadline it is firing, both of which expire
//! ([`LEASE_MS`](steadfast_engine::store::core::LEASE_MS), [`TIMER_CLAIM_MS`]).
//!
//! # Tests
//! `cargo test -p steadfast-postgres` starts a throwaway cluster per test binary
//! ([`testing::PgCluster`]) from `PG_BIN`, `pg_config --bindir` or `/usr/lib/postgresql/*/bin`,
//! and skips (printing why) when PostgreSQL is not installed.
//!
//! # Layout
//! - `runs`: one row per run (its head: next seq, last hash, the folded state).
//! - `events`: the history, keyed by (namespace, run, seq), each record carrying its blake3
//!   chain hash, verified on every read ([`Error::Corrupt`] names run and seq).
//! - `tasks`, `timers`, `heartbeats`: the queues and deadlines, *derived* from the run states
//!   by the engine's own rules ([`derive_for_tables`](steadfast_engine::store::core::derive_for_tables))
//!   in the append's transaction; claimed with `FOR UPDATE SKIP LOCKED` and leases that expire.
//! - `blobs`, `requests`: content-addressed payloads and request-id deduplication.
//!
//! Module by module: `schema` (versioned migrations), `append`, `read`, `queues`, `timers`,
//! `notify` (LISTEN/NOTIFY between nodes, off the write path).

#![warn(missing_docs)]

mod append;
mod codec;
mod derived;
mod live;
mod notify;
mod queue_builds;
mod queues;
mod read;
mod schedules;
mod schema;
mod search;
mod sizes;
#[doc(hidden)]
pub mod testing;
mod timers;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};

use async_trait::async_trait;
use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod};
use steadfast_engine::event::{CommandSeq, EventRecord, RunStarted, TimeMs, TimeoutKind};
use steadfast_engine::ids::{RunId, RunKey};
use steadfast_engine::payload::Hash;
use steadfast_engine::state::RunState;
use steadfast_engine::store::{
    AppendRequest, Appended, Change, DueTimer, Error, RequestKey, RunFilter, Store, StoreStats,
    StoredSchedule, Task, TaskKind,
};

pub use append::NAMESPACE_LEN_MAX;
pub use schema::SCHEMA_VERSION;
pub use sizes::PgSizes;
pub use timers::TIMER_CLAIM_MS;

/// How to connect a [`PgStore`].
#[derive(Debug, Clone)]
pub struct PgOptions {
    /// Connections in the pool.
    pub pool_size: usize,
    /// This node's name, stable across its restarts: the leases and timer claims it held are
    /// given back when it connects again (the requests that held them died with it). Two live
    /// nodes must not share one.
    pub node_id: String,
    /// Most events one history may hold ([`steadfast_engine::store::HISTORY_EVENTS_MAX`]).
    pub history_events_max: u64,
    /// Most bytes one history may hold ([`steadfast_engine::store::HISTORY_BYTES_MAX`]).
    pub history_bytes_max: u64,
    /// Listen for other nodes' changes and announce ours (LISTEN/NOTIFY).
    pub notify: bool,
}

impl Default for PgOptions {
    fn default() -> Self {
        PgOptions {
            pool_size: 16,
            node_id: default_node_id(),
            history_events_max: steadfast_engine::store::HISTORY_EVENTS_MAX,
            history_bytes_max: steadfast_engine::store::HISTORY_BYTES_MAX,
            notify: true,
        }
    }
}

/// The host name, as a default node id.
fn default_node_id() -> String {
    std::fs::read_to_string("/etc/hostname")
        .ok()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "steadfast".into())
}

/// The PostgreSQL store. Cheap to share behind an `Arc`; [`PgStore::close`] stops its
/// background tasks.
pub struct PgStore {
    inner: Arc<Inner>,
    notifier: notify::Notifier,
}

pub(crate) struct Inner {
    pool: Pool,
    options: PgOptions,
    /// The latest `now_ms` a poll, take or timer sweep passed: tasks visible by then need no
    /// wakeup (as in [`steadfast_engine::store::core::Core`]).
    now_seen_ms: AtomicI64,
    records: AtomicU64,
    closed: AtomicBool,
}

/// A database error as a store error: the caller retries later.
pub(crate) fn pg_err(e: tokio_postgres::Error) -> Error {
    let detail = match e.as_db_error() {
        Some(db) => format!("PostgreSQL: {} ({})", db.message(), db.code().code()),
        None => format!("PostgreSQL: {e}"),
    };
    Error::Unavailable(detail)
}

impl PgStore {
    /// Connects to `url` (`postgres://user:password@host:port/database`), migrates the schema
    /// (refusing one newer than this build), gives back the leases and timer claims this node
    /// held before a restart, and starts listening for other nodes' changes.
    pub async fn connect(url: &str, options: PgOptions) -> Result<PgStore, Error> {
        let config: tokio_postgres::Config = url.parse().map_err(|e| {
            let shown: String = url.chars().take(24).collect();
            Error::Invalid(format!(
                "not a PostgreSQL URL ({e}): {shown:?}...; expected postgres://user@host:port/database"
            ))
        })?;
        if options.pool_size == 0 {
            return Err(Error::Invalid("pool_size must be at least 1".into()));
        }
        let manager = Manager::from_config(
            config.clone(),
            tokio_postgres::NoTls,
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(manager)
            .max_size(options.pool_size)
            .build()
            .map_err(|e| Error::Unavailable(format!("cannot build the connection pool: {e}")))?;
        let inner = Arc::new(Inner {
            pool,
            options,
            now_seen_ms: AtomicI64::new(TimeMs::MIN),
            records: AtomicU64::new(0),
            closed: AtomicBool::new(false),
        });
        {
            let mut client = inner.client().await?;
            schema::migrate(&mut client).await?;
            let node = &inner.options.node_id;
            client
                .execute(
                    "UPDATE tasks SET lease_until_ms = 0, lease_owner = NULL WHERE lease_owner = $1",
                    &[node],
                )
                .await
                .map_err(pg_err)?;
            client
                .execute(
                    "UPDATE timers SET claimed_until_ms = 0, claim_owner = NULL \
                     WHERE claim_owner = $1",
                    &[node],
                )
                .await
                .map_err(pg_err)?;
        }
        let notifier = notify::Notifier::start(config, inner.pool.clone(), inner.options.notify);
        Ok(PgStore { inner, notifier })
    }

    /// Stops the background tasks and closes the pool. Later calls fail with
    /// [`Error::Unavailable`].
    pub async fn close(&self) {
        self.inner.closed.store(true, Ordering::Relaxed);
        self.notifier.stop().await;
        self.inner.pool.close();
    }

    /// A 32-byte secret every node over this database shares (e.g. the key that signs task
    /// tokens): made from the OS's random source by the first node that asks, then read.
    pub async fn shared_secret(&self, name: &str) -> Result<[u8; 32], Error> {
        use rand::RngCore;
        let mut fresh = [0u8; 32];
        rand::rngs::OsRng.fill_bytes(&mut fresh);
        let client = self.inner.client().await?;
        client
            .execute(
                "INSERT INTO settings (name, value) VALUES ($1, $2) ON CONFLICT (name) DO NOTHING",
                &[&name, &fresh.as_slice()],
            )
            .await
            .map_err(pg_err)?;
        let row = client
            .query_one("SELECT value FROM settings WHERE name = $1", &[&name])
            .await
            .map_err(pg_err)?;
        let value: Vec<u8> = row.get(0);
        value.try_into().map_err(|v: Vec<u8>| Error::Corrupt {
            run: None,
            seq: None,
            detail: format!("shared secret {name:?} has {} bytes, not 32", v.len()),
        })
    }

    /// The keys of every open run (as [`steadfast_engine::embedded::EmbeddedStore::open_runs`]).
    pub async fn open_runs(&self) -> Result<Vec<RunKey>, Error> {
        self.inner.open_runs().await
    }

    /// Runs continued as new whose successor does not exist, with the RunStarted that
    /// creates it (as [`steadfast_engine::embedded::EmbeddedStore::missing_successors`]).
    pub async fn missing_successors(&self) -> Result<Vec<(RunKey, RunStarted)>, Error> {
        let continued = self.inner.continued_runs().await?;
        steadfast_engine::store::successor::missing_of(self, continued).await
    }
}

impl Inner {
    pub(crate) async fn client(&self) -> Result<deadpool_postgres::Object, Error> {
        if self.closed.load(Ordering::Relaxed) {
            return Err(Error::Unavailable("the store is closed".into()));
        }
        self.pool
            .get()
            .await
            .map_err(|e| Error::Unavailable(format!("no PostgreSQL connection: {e}")))
    }

    pub(crate) fn count_records(&self, n: u64) {
        self.records.fetch_add(n, Ordering::Relaxed);
    }

    pub(crate) fn observe(&self, now_ms: TimeMs) {
        self.now_seen_ms.fetch_max(now_ms, Ordering::Relaxed);
    }
}

impl std::fmt::Debug for PgStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgStore")
            .field("node_id", &self.inner.options.node_id)
            .finish_non_exhaustive()
    }
}

#[async_trait]
impl Store for PgStore {
    async fn append(&self, req: AppendRequest) -> Result<Appended, Error> {
        let (appended, changes) = self.inner.append(req, None).await?;
        self.notifier.announce(changes);
        Ok(appended)
    }

    async fn append_once(
        &self,
        req: AppendRequest,
        request: RequestKey,
    ) -> Result<Appended, Error> {
        if request.id.is_empty() || request.id.len() > steadfast_engine::store::REQUEST_ID_BYTES_MAX
        {
            return Err(Error::Invalid(format!(
                "a request id must be 1..={} bytes, not {}",
                steadfast_engine::store::REQUEST_ID_BYTES_MAX,
                request.id.len()
            )));
        }
        let (appended, changes) = self.inner.append(req, Some(request)).await?;
        self.notifier.announce(changes);
        Ok(appended)
    }

    async fn run_state(&self, key: &RunKey) -> Result<Option<Arc<RunState>>, Error> {
        Ok(self.inner.run_state(key).await?.map(Arc::new))
    }

    async fn open_run_for_workflow_id(
        &self,
        namespace: &str,
        workflow_id: &str,
    ) -> Result<Option<RunId>, Error> {
        self.inner
            .open_run_for_workflow_id(namespace, workflow_id)
            .await
    }

    async fn list_runs(
        &self,
        namespace: &str,
        filter: &RunFilter,
        after: Option<RunId>,
        limit: usize,
        now_ms: TimeMs,
    ) -> Result<Vec<Arc<RunState>>, Error> {
        self.inner
            .list_runs(namespace, filter, after, limit, now_ms)
            .await
    }

    async fn read_history(
        &self,
        key: &RunKey,
        from_seq: u64,
        limit: usize,
    ) -> Result<Vec<EventRecord>, Error> {
        self.inner.read_history(key, from_seq, limit).await
    }

    async fn poll_task(
        &self,
        namespace: &str,
        queue: &str,
        kind: TaskKind,
        types: &[String],
        now_ms: TimeMs,
    ) -> Result<Option<Task>, Error> {
        self.inner
            .poll_task(namespace, queue, kind, types, now_ms)
            .await
    }

    async fn queues_with_work(&self, namespace: &str, limit: usize) -> Result<Vec<String>, Error> {
        self.inner.queues_with_work(namespace, limit).await
    }

    async fn take_task(&self, task: &Task, now_ms: TimeMs) -> Result<bool, Error> {
        self.inner.take_task(task, now_ms).await
    }

    async fn release_task(&self, task: &Task) -> Result<(), Error> {
        let released = self.inner.release_task(task).await?;
        if let Some(change) = released {
            self.notifier.announce(vec![change]);
        }
        Ok(())
    }

    async fn defer_task(&self, task: &Task, until_ms: TimeMs, attempt: u32) -> Result<bool, Error> {
        self.inner.defer_task(task, until_ms, attempt).await
    }

    async fn task_attempt(&self, task: &Task) -> Result<Option<u32>, Error> {
        self.inner.task_attempt(task).await
    }

    async fn set_attempt_deadline(
        &self,
        key: &RunKey,
        id: CommandSeq,
        attempt: u32,
        deadline_ms: TimeMs,
        timeout: TimeoutKind,
    ) -> Result<(), Error> {
        let changes = self
            .inner
            .set_attempt_deadline(key, id, attempt, deadline_ms, timeout)
            .await?;
        self.notifier.announce(changes);
        Ok(())
    }

    async fn take_due_timers(&self, now_ms: TimeMs, limit: usize) -> Result<Vec<DueTimer>, Error> {
        self.inner.take_due_timers(now_ms, limit).await
    }

    async fn next_wakeup_ms(&self) -> Result<Option<TimeMs>, Error> {
        self.inner.next_wakeup_ms().await
    }

    async fn put_blob(&self, namespace: &str, data: Vec<u8>) -> Result<Hash, Error> {
        self.inner.put_blob(namespace, data).await
    }

    async fn get_blob(&self, namespace: &str, hash: &Hash) -> Result<Option<Vec<u8>>, Error> {
        self.inner.get_blob(namespace, hash).await
    }

    async fn checkpoint(&self) -> Result<u64, Error> {
        // PostgreSQL checkpoints itself; every committed append is already durable.
        Ok(0)
    }

    async fn drop_closed_before(
        &self,
        closed_before_ms: TimeMs,
        limit: usize,
    ) -> Result<usize, Error> {
        self.inner.drop_closed_before(closed_before_ms, limit).await
    }

    async fn open_runs(&self) -> Result<Vec<RunKey>, Error> {
        PgStore::open_runs(self).await
    }

    async fn missing_successors(&self) -> Result<Vec<(RunKey, RunStarted)>, Error> {
        PgStore::missing_successors(self).await
    }

    async fn put_schedule(
        &self,
        namespace: &str,
        name: &str,
        expected_version: u64,
        data: Vec<u8>,
    ) -> Result<u64, Error> {
        self.inner
            .put_schedule(namespace, name, expected_version, data)
            .await
    }

    async fn delete_schedule(
        &self,
        namespace: &str,
        name: &str,
        expected_version: u64,
    ) -> Result<(), Error> {
        self.inner
            .delete_schedule(namespace, name, expected_version)
            .await
    }

    async fn get_schedule(
        &self,
        namespace: &str,
        name: &str,
    ) -> Result<Option<StoredSchedule>, Error> {
        self.inner.get_schedule(namespace, name).await
    }

    async fn list_schedules(&self, namespace: Option<&str>) -> Result<Vec<StoredSchedule>, Error> {
        self.inner.list_schedules(namespace).await
    }

    async fn set_queue_build(
        &self,
        namespace: &str,
        queue: &str,
        build: Option<&str>,
    ) -> Result<(), Error> {
        self.inner.set_queue_build(namespace, queue, build).await
    }

    async fn queue_build(&self, namespace: &str, queue: &str) -> Result<Option<String>, Error> {
        self.inner.queue_build(namespace, queue).await
    }

    fn stats(&self) -> StoreStats {
        StoreStats {
            records: self.inner.records.load(Ordering::Relaxed),
            syncs: 0,
            open_runs: 0,
            log: None,
        }
    }

    fn changes(&self) -> Option<tokio::sync::broadcast::Receiver<Change>> {
        self.notifier.subscribe()
    }

    async fn relay_live(&self, text: &[steadfast_engine::store::LiveText]) {
        self.notifier.relay_live(text).await
    }
}
