//! The embedded store: the segment log makes the promise, sled serves the reads.
//!
//! - **Durability** ([`crate::log`] in `dir/log`): an append is one log record (blob records
//!   go before the first append that refers to them); `append` returns after the log's group
//!   commit synced it (with `wait_durable`).
//! - **Memory**: under one lock, the head of every open run (its state, its history size and
//!   the encoded records not yet in sled) and the [`Core`] projections (queues, leases,
//!   timers). Reads see every acknowledged append: the not-yet-indexed tail is served from
//!   memory.
//! - **Read models** (sled 0.34 in `dir/sled`, key layout in `keys.rs`): written by the
//!   indexer thread (`indexer.rs`) after the log, never on the acknowledgement path.
//! - **Checkpoints**: sled flushed and fsynced, then the log drops what sled now covers;
//!   periodically (every [`EmbeddedOptions::checkpoint_every_bytes`]), on
//!   [`Store::checkpoint`] and on [`EmbeddedStore::close`].
//! - **Recovery** (`recover.rs`): the log after the checkpoint is re-applied to sled with
//!   every chain verified; sled holding more than the log (lost acknowledged records) is
//!   refused, naming the run and seq.
//!
//! Appends see each other's effects before they are durable (the lock is released before
//! the sync), as with any group commit: a later durable append implies every earlier one.

mod append;
pub(crate) mod blob;
pub(crate) mod codec;
mod errors;
mod head;
mod index_queue;
mod indexer;
mod keys;
mod queue_builds;
mod read;
mod rebuild;
mod recover;
mod repair;
mod retention;
mod schedules;
mod search;
mod verify;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use async_trait::async_trait;
use parking_lot::Mutex;
use tokio::sync::oneshot;

use crate::event::{CommandSeq, EventRecord, TimeMs, TimeoutKind};
use crate::ids::{RunId, RunKey};
use crate::log::{self, Log, TornTail};
use crate::payload::Hash;
use crate::state::RunState;

use crate::store::{
    AppendRequest, Appended, DueTimer, Error, RequestKey, RunFilter, Store, StoreStats,
    StoredSchedule, Task, TaskKind, VerifiedHistory,
};

pub(crate) use errors::{log_err, log_err_named, sled_err};
pub(crate) use head::{Head, PendingAppend, RunHead};
use indexer::Op;
pub use read::{LIST_RUNS_PAGE_MAX, READ_HISTORY_PAGE_MAX};

/// Subdirectory of the segment log.
pub const LOG_DIR: &str = "log";
/// Subdirectory of sled.
pub const SLED_DIR: &str = "sled";
/// Bytes queued for the indexer beyond which appends wait for it (bounds memory when sled
/// cannot keep up with the log).
pub const INDEX_BACKLOG_BYTES_MAX: u64 = 64 << 20;

/// Damaged runs one `list_runs` call rebuilds from the log before it gives up.
const LIST_REPAIRS_MAX: usize = 8;

/// How to open an [`EmbeddedStore`].
#[derive(Debug, Clone)]
pub struct EmbeddedOptions {
    /// Size of each preallocated log segment.
    pub log_segment_bytes: u64,
    /// Upper bound of one group-commit write.
    pub log_max_batch_bytes: usize,
    /// Log bytes indexed between two automatic checkpoints (bounds replay time on open).
    pub checkpoint_every_bytes: u64,
    /// sled's page cache.
    pub sled_cache_bytes: u64,
    /// sled's segment size (a power of two; fixed when the store is created: sled refuses to
    /// open with another). Larger segments halve sled's space overhead for this workload.
    pub sled_segment_bytes: usize,
    /// sled's background flush period; `None` = only at checkpoints (sled's flush is not
    /// durable anyway; the log is).
    pub sled_flush_every_ms: Option<u64>,
    /// Most events one history may hold ([`crate::store::HISTORY_EVENTS_MAX`]; smaller
    /// only in tests of the refusal).
    pub history_events_max: u64,
    /// Most bytes one history may hold, as counted in [`RunState::history_bytes`]
    /// ([`crate::store::HISTORY_BYTES_MAX`]; smaller only in tests of the refusal).
    pub history_bytes_max: u64,
    /// The file system the log runs on (the OS's; tests simulate power cuts with
    /// [`crate::log::sim::SimVfs`]). sled always runs on the OS's.
    #[doc(hidden)]
    pub log_vfs: Option<Arc<dyn crate::log::vfs::Vfs>>,
    /// A sealed log segment is rewritten (compacted) once the records of runs dropped by
    /// retention make up at least this fraction of it; 0 turns compaction off.
    pub compact_dead_fraction: f64,
}

impl Default for EmbeddedOptions {
    fn default() -> Self {
        EmbeddedOptions {
            log_segment_bytes: 16 << 20,
            log_max_batch_bytes: log::DEFAULT_MAX_BATCH_BYTES,
            checkpoint_every_bytes: 32 << 20,
            sled_cache_bytes: 64 << 20,
            sled_segment_bytes: 8 << 20,
            sled_flush_every_ms: Some(1_000),
            history_events_max: crate::store::HISTORY_EVENTS_MAX,
            history_bytes_max: crate::store::HISTORY_BYTES_MAX,
            log_vfs: None,
            compact_dead_fraction: 0.5,
        }
    }
}

/// What [`EmbeddedStore::open`] found and did.
#[derive(Debug, Clone)]
pub struct OpenReport {
    /// Log records after the checkpoint re-applied to the read models.
    pub records_replayed: u64,
    /// The incomplete (never acknowledged) last log batch that was cut, if any.
    pub torn_tail: Option<TornTail>,
    /// Open runs loaded into memory.
    pub runs_open: u64,
    /// The log's checkpoint lsn at open.
    pub checkpoint_lsn: u64,
    /// Why the read models (sled) were dropped and rebuilt from the log at open, if they
    /// were (missing, damaged, or not matching the log).
    pub read_models_rebuilt: Option<String>,
    /// Time from the call to serving.
    pub elapsed: Duration,
}

/// The embedded store (segment log + sled). Share it with `Arc`; [`EmbeddedStore::close`]
/// checkpoints, dropping it without closing is like a crash of the read models (the log
/// already holds every acknowledged append).
pub struct EmbeddedStore {
    inner: Arc<Inner>,
    indexer: Mutex<Option<JoinHandle<()>>>,
}

pub(crate) struct Inner {
    dir: PathBuf,
    schedules: schedules::Schedules,
    queue_builds: queue_builds::QueueBuilds,
    options: EmbeddedOptions,
    log: Log,
    db: sled::Db,
    head: Mutex<Head>,
    backlog_bytes: AtomicU64,
    backlog_drained: tokio::sync::Notify,
    failed: Mutex<Option<String>>,
    records: AtomicU64,
    index: IndexCounters,
}

/// Counters of the indexer.
#[derive(Debug, Default)]
pub(crate) struct IndexCounters {
    pub batches: AtomicU64,
    pub events: AtomicU64,
    pub chunks: AtomicU64,
    pub checkpoints: AtomicU64,
    pub reclaimed_bytes: AtomicU64,
}

/// What the indexer did since open (for benchmarks and logs).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct IndexStats {
    /// sled batches applied.
    pub batches: u64,
    /// Events written to sled.
    pub events: u64,
    /// Chunks written to sled.
    pub chunks: u64,
    /// Checkpoints taken.
    pub checkpoints: u64,
    /// Log bytes given back by compaction.
    pub reclaimed_bytes: u64,
    /// Bytes queued for the indexer now.
    pub backlog_bytes: u64,
}

impl Inner {
    /// Makes the store refuse everything from now on (an I/O failure of the indexer).
    pub(crate) fn fail(&self, message: &str) {
        let mut f = self.failed.lock();
        if f.is_none() {
            tracing::error!(
                error = message,
                "embedded store failed; refusing further requests"
            );
            *f = Some(message.to_string());
        }
        drop(f);
        self.backlog_drained.notify_waiters();
    }

    pub(crate) fn check_failed(&self) -> Result<(), Error> {
        match &*self.failed.lock() {
            None => Ok(()),
            Some(m) => Err(Error::Unavailable(format!("the store failed earlier: {m}"))),
        }
    }

    /// Waits while the indexer is too far behind.
    async fn wait_backlog(&self) -> Result<(), Error> {
        loop {
            let notified = self.backlog_drained.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            self.check_failed()?;
            if self.backlog_bytes.load(Ordering::Relaxed) <= INDEX_BACKLOG_BYTES_MAX {
                return Ok(());
            }
            notified.await;
        }
    }

    /// Sends a control operation to the indexer and waits for its answer.
    async fn ask<T>(
        &self,
        op: impl FnOnce(oneshot::Sender<Result<T, Error>>) -> Op,
    ) -> Result<T, Error> {
        let (tx, rx) = oneshot::channel();
        {
            let head = self.head.lock();
            let sender = head
                .tx
                .as_ref()
                .ok_or_else(|| Error::Unavailable("the store is closed".into()))?;
            sender
                .send(op(tx))
                .map_err(|_| Error::Unavailable("the indexer thread stopped".into()))?;
        }
        rx.await
            .map_err(|_| Error::Unavailable("the indexer thread stopped".into()))?
    }

    /// Calls `f` with every durable log record from `from` on, in lsn order, verified.
    pub(crate) fn scan_log(
        &self,
        from: u64,
        f: &mut dyn FnMut(&log::Record) -> Result<(), Error>,
    ) -> Result<(), Error> {
        for r in self.log.read_from(from).map_err(log_err)? {
            f(&r.map_err(|e| log_err_named(&self.db, e))?)?;
        }
        Ok(())
    }

    /// Runs `read`; if it finds the run's read models damaged, rebuilds them from the log and
    /// runs it once more. A refusal stands only when the log cannot answer either.
    async fn repairing<T>(
        &self,
        key: &RunKey,
        read: impl Fn() -> Result<T, Error>,
    ) -> Result<T, Error> {
        match read() {
            Err(e @ Error::Corrupt { .. }) => {
                tracing::warn!(run = %key, error = %e, "damaged read models; rebuilding the run from the log");
                match self.ask(|tx| Op::RepairRun(key.clone(), tx)).await {
                    Ok(true) => read(),
                    Ok(false) => Err(e),
                    Err(r) => {
                        tracing::error!(run = %key, error = %r, "rebuilding a run from the log failed");
                        Err(e)
                    }
                }
            }
            r => r,
        }
    }

    /// Locks the head after publishing every append that became durable: the one way in
    /// for readers, pollers and the timer loop (nothing unsynced is ever shown).
    pub(crate) fn head(&self) -> parking_lot::MutexGuard<'_, Head> {
        let mut head = self.head.lock();
        head.publish(self.log.durable_lsn());
        head
    }

    /// Waits until everything submitted to the log so far is durable, and publishes it.
    async fn barrier(&self) -> Result<(), Error> {
        let ticket = self.log.submit(Vec::new()).map_err(log_err)?;
        ticket.wait().await.map_err(log_err)?;
        drop(self.head());
        Ok(())
    }

    async fn append(
        &self,
        mut req: AppendRequest,
        request: Option<RequestKey>,
    ) -> Result<Appended, Error> {
        self.check_failed()?;
        let prepared = append::prepare(&mut req)?;
        self.wait_backlog().await?;
        let committed = {
            let mut head = self.head();
            self.commit(&mut head, &req, prepared, request)
        };
        let (durable, appended) = match committed {
            Ok(c) => c,
            // A refusal that an unsynced append may explain (it moved the run on, closed it or
            // made an event illegal, grew it to a limit, or holds the workflow id) is answered
            // only once that append is durable and published: the caller then re-reads a state
            // that a crash cannot take back.
            Err(
                e @ (Error::Conflict { .. }
                | Error::Illegal { .. }
                | Error::HistoryLimit { .. }
                | Error::WorkflowIdInUse { .. }
                | Error::Duplicate { .. }),
            ) => {
                let unsynced = !self.head.lock().pending.is_empty();
                if unsynced {
                    self.barrier().await?;
                }
                return Err(e);
            }
            Err(e) => return Err(e),
        };
        if req.wait_durable {
            durable.wait().await.map_err(log_err)?;
            drop(self.head());
        }
        Ok(appended)
    }

    async fn put_blob(&self, namespace: &str, data: Vec<u8>) -> Result<Hash, Error> {
        self.check_failed()?;
        if data.len() > crate::payload::PAYLOAD_BYTES_MAX {
            return Err(Error::Invalid(format!(
                "blob of {} bytes; the limit is PAYLOAD_BYTES_MAX = {}",
                data.len(),
                crate::payload::PAYLOAD_BYTES_MAX
            )));
        }
        let hash = *blake3::hash(&data).as_bytes();
        let addr = blob::BlobAddr::scoped(namespace, hash)?;
        let record = codec::encode_blob(&addr, &data);
        let durable = {
            let mut head = self.head();
            if self.blob_known(&head, &addr)? {
                // Stored or on its way: wait for whatever wrote it to be durable.
                self.log.submit(Vec::new()).map_err(log_err)?
            } else {
                let tx = head
                    .tx
                    .clone()
                    .ok_or_else(|| Error::Unavailable("the store is closed".into()))?;
                let durable = self
                    .log
                    .submit(vec![(codec::KIND_BLOB, record)])
                    .map_err(log_err)?;
                let data = Arc::new(data);
                head.blobs
                    .insert(addr.clone(), (durable.last_lsn(), Arc::clone(&data)));
                if tx
                    .send(Op::Blob {
                        lsn: durable.last_lsn(),
                        addr,
                        data,
                    })
                    .is_err()
                {
                    self.fail("the indexer thread stopped");
                }
                durable
            }
        };
        durable.wait().await.map_err(log_err)?;
        Ok(hash)
    }
}

impl EmbeddedStore {
    /// The blob at exactly `addr`; a damaged sled copy is rewritten from the log once.
    async fn get_blob_at(&self, addr: &blob::BlobAddr) -> Result<Option<Vec<u8>>, Error> {
        match self.inner.get_blob(addr) {
            Err(e @ Error::Corrupt { .. }) => {
                let repair = addr.clone();
                match self.inner.ask(|tx| Op::RepairBlob(repair, tx)).await {
                    Ok(true) => self.inner.get_blob(addr),
                    _ => Err(e),
                }
            }
            r => r,
        }
    }

    /// Opens (or creates) the store in `dir`: recovers the log, re-applies it to the read
    /// models with every chain verified, and loads the open runs. Refuses corruption with
    /// [`Error::Corrupt`] naming the run and seq when they are known.
    pub fn open(
        dir: impl AsRef<Path>,
        options: EmbeddedOptions,
    ) -> Result<(EmbeddedStore, OpenReport), Error> {
        recover::open(dir.as_ref(), options)
    }

    /// Checkpoints, stops the indexer and closes the log. Later calls fail with
    /// [`Error::Unavailable`].
    pub async fn close(&self) -> Result<(), Error> {
        let checkpoint = self.inner.ask(Op::Checkpoint).await.map(|_| ());
        self.stop_indexer();
        let closed = self.inner.log.shutdown().map_err(log_err);
        checkpoint.and(closed)
    }

    /// Counters of the indexer since open.
    pub fn index_stats(&self) -> IndexStats {
        let c = &self.inner.index;
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        IndexStats {
            batches: get(&c.batches),
            events: get(&c.events),
            chunks: get(&c.chunks),
            checkpoints: get(&c.checkpoints),
            reclaimed_bytes: get(&c.reclaimed_bytes),
            backlog_bytes: get(&self.inner.backlog_bytes),
        }
    }

    /// The data directory.
    pub fn dir(&self) -> &Path {
        &self.inner.dir
    }

    fn stop_indexer(&self) {
        self.inner.head.lock().tx = None;
        let handle = self.indexer.lock().take();
        if let Some(handle) = handle
            && handle.join().is_err()
        {
            self.inner.fail("the indexer thread panicked");
        }
    }
}

impl Drop for EmbeddedStore {
    fn drop(&mut self) {
        self.stop_indexer();
    }
}

impl std::fmt::Debug for EmbeddedStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EmbeddedStore")
            .field("dir", &self.inner.dir)
            .finish_non_exhaustive()
    }
}

#[async_trait]
impl Store for EmbeddedStore {
    async fn append(&self, req: AppendRequest) -> Result<Appended, Error> {
        self.inner.append(req, None).await
    }

    async fn append_once(
        &self,
        req: AppendRequest,
        request: RequestKey,
    ) -> Result<Appended, Error> {
        if request.id.is_empty() || request.id.len() > crate::store::REQUEST_ID_BYTES_MAX {
            return Err(Error::Invalid(format!(
                "a request id must be 1..={} bytes, not {}",
                crate::store::REQUEST_ID_BYTES_MAX,
                request.id.len()
            )));
        }
        self.inner.append(req, Some(request)).await
    }

    async fn run_state(&self, key: &RunKey) -> Result<Option<Arc<RunState>>, Error> {
        self.inner.check_failed()?;
        self.inner
            .repairing(key, || self.inner.run_state(key))
            .await
    }

    async fn open_run_for_workflow_id(
        &self,
        namespace: &str,
        workflow_id: &str,
    ) -> Result<Option<RunId>, Error> {
        self.inner.check_failed()?;
        Ok(self
            .inner
            .head
            .lock()
            .core
            .open_run_for_workflow_id(namespace, workflow_id))
    }

    async fn list_runs(
        &self,
        namespace: &str,
        filter: &RunFilter,
        after: Option<RunId>,
        limit: usize,
        now_ms: TimeMs,
    ) -> Result<Vec<Arc<RunState>>, Error> {
        self.inner.check_failed()?;
        // A damaged run state met on the way is rebuilt from the log and the page read again
        // (a bounded number of times: each try repairs a different run or fails).
        let mut tries = 0;
        let mut bogus = std::collections::HashSet::new();
        loop {
            let r = self
                .inner
                .list_runs(namespace, filter, after, limit, now_ms, &bogus)
                .await;
            match r {
                Err(Error::Corrupt {
                    run: Some(ref key), ..
                }) if tries < LIST_REPAIRS_MAX => {
                    tries += 1;
                    // The log has no such run: the index entry itself is damaged; leave it
                    // out of the answer (the log is the record).
                    if !self.inner.ask(|tx| Op::RepairRun(key.clone(), tx)).await? {
                        tracing::warn!(run = %key, "an index entry names a run the log does not hold; ignored");
                        bogus.insert(key.clone());
                    }
                }
                r => return r,
            }
        }
    }

    async fn read_history(
        &self,
        key: &RunKey,
        from_seq: u64,
        limit: usize,
    ) -> Result<Vec<EventRecord>, Error> {
        self.inner.check_failed()?;
        self.inner
            .repairing(key, || self.inner.read_history(key, from_seq, limit))
            .await
    }

    async fn verify_history(&self, key: &RunKey) -> Result<VerifiedHistory, Error> {
        let state = self
            .run_state(key)
            .await?
            .ok_or_else(|| Error::NotFound(key.clone()))?;
        let found =
            verify::verify_in_log(&self.inner, key, state.last_seq, state.last_hash).await?;
        // The copy reads are served from must agree with the log too (a damaged one is
        // rebuilt from the log on the way).
        crate::store::verify_by_reading(self, key).await?;
        Ok(found)
    }

    async fn poll_task(
        &self,
        namespace: &str,
        queue: &str,
        kind: TaskKind,
        types: &[String],
        now_ms: TimeMs,
    ) -> Result<Option<Task>, Error> {
        self.inner.check_failed()?;
        Ok(self
            .inner
            .head
            .lock()
            .core
            .poll(namespace, queue, kind, types, now_ms))
    }

    async fn queues_with_work(&self, namespace: &str, limit: usize) -> Result<Vec<String>, Error> {
        self.inner.check_failed()?;
        Ok(self.inner.head().core.queues_with_work(namespace, limit))
    }

    async fn take_task(&self, task: &Task, now_ms: TimeMs) -> Result<bool, Error> {
        Ok(self.inner.head().core.take(task, now_ms))
    }

    async fn release_task(&self, task: &Task) -> Result<(), Error> {
        self.inner.head().core.release(task);
        Ok(())
    }

    async fn defer_task(&self, task: &Task, until_ms: TimeMs, attempt: u32) -> Result<bool, Error> {
        Ok(self.inner.head().core.defer(task, until_ms, attempt))
    }

    async fn task_attempt(&self, task: &Task) -> Result<Option<u32>, Error> {
        Ok(self.inner.head().core.attempt(task))
    }

    async fn set_attempt_deadline(
        &self,
        key: &RunKey,
        id: CommandSeq,
        attempt: u32,
        deadline_ms: TimeMs,
        timeout: TimeoutKind,
    ) -> Result<(), Error> {
        self.inner
            .head()
            .core
            .set_attempt_deadline(key, id, attempt, deadline_ms, timeout);
        Ok(())
    }

    async fn take_due_timers(&self, now_ms: TimeMs, limit: usize) -> Result<Vec<DueTimer>, Error> {
        self.inner.check_failed()?;
        Ok(self.inner.head().core.take_due(now_ms, limit))
    }

    async fn next_wakeup_ms(&self) -> Result<Option<TimeMs>, Error> {
        Ok(self.inner.head().core.next_wakeup_ms())
    }

    async fn put_blob(&self, namespace: &str, data: Vec<u8>) -> Result<Hash, Error> {
        self.inner.put_blob(namespace, data).await
    }

    async fn get_blob(&self, namespace: &str, hash: &Hash) -> Result<Option<Vec<u8>>, Error> {
        self.inner.check_failed()?;
        let addr = blob::BlobAddr::scoped(namespace, *hash)?;
        // The namespace's own blob, else a legacy (unscoped) one of the same hash.
        match self.get_blob_at(&addr).await? {
            Some(data) => Ok(Some(data)),
            None => self.get_blob_at(&addr.legacy()).await,
        }
    }

    async fn checkpoint(&self) -> Result<u64, Error> {
        self.inner.check_failed()?;
        self.inner.ask(Op::Checkpoint).await
    }

    async fn drop_closed_before(
        &self,
        closed_before_ms: TimeMs,
        limit: usize,
    ) -> Result<usize, Error> {
        self.inner.check_failed()?;
        self.inner.drop_closed_before(closed_before_ms, limit).await
    }

    async fn open_runs(&self) -> Result<Vec<RunKey>, Error> {
        EmbeddedStore::open_runs(self).await
    }

    async fn missing_successors(&self) -> Result<Vec<(RunKey, crate::event::RunStarted)>, Error> {
        EmbeddedStore::missing_successors(self).await
    }

    async fn put_schedule(
        &self,
        namespace: &str,
        name: &str,
        expected_version: u64,
        data: Vec<u8>,
    ) -> Result<u64, Error> {
        self.inner
            .schedules
            .put(namespace, name, expected_version, data)
    }

    async fn delete_schedule(
        &self,
        namespace: &str,
        name: &str,
        expected_version: u64,
    ) -> Result<(), Error> {
        self.inner
            .schedules
            .delete(namespace, name, expected_version)
    }

    async fn get_schedule(
        &self,
        namespace: &str,
        name: &str,
    ) -> Result<Option<StoredSchedule>, Error> {
        self.inner.schedules.get(namespace, name)
    }

    async fn list_schedules(&self, namespace: Option<&str>) -> Result<Vec<StoredSchedule>, Error> {
        self.inner.schedules.list(namespace)
    }

    async fn set_queue_build(
        &self,
        namespace: &str,
        queue: &str,
        build: Option<&str>,
    ) -> Result<(), Error> {
        self.inner.queue_builds.set(namespace, queue, build)
    }

    async fn queue_build(&self, namespace: &str, queue: &str) -> Result<Option<String>, Error> {
        Ok(self.inner.queue_builds.get(namespace, queue))
    }

    fn stats(&self) -> StoreStats {
        let log = self.inner.log.stats();
        StoreStats {
            records: self.inner.records.load(Ordering::Relaxed),
            syncs: log.syncs,
            open_runs: self.inner.head().core.len() as u64,
            log: Some(log),
        }
    }
}
