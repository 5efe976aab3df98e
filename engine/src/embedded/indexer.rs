//! The indexer thread: applies durable log records to sled, in log order, off the
//! acknowledgement path.
//!
//! It is fed under the store lock, so it sees records in lsn order. It takes what is queued
//! (up to [`INDEX_BATCH_OPS_MAX`]), waits until the log has synced all of it (sled must never
//! hold a record the log could still lose in a crash: recovery would take that for lost
//! data), writes it as one atomic sled batch (coalescing run states: one write per run per
//! batch), then drops the indexed records from the in-memory tails that serve reads until
//! then. It also runs checkpoints, so that "everything up to lsn L is in sled" is simply "the
//! indexer applied L".

use crate::embedded::blob::BlobAddr;
use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use tokio::sync::oneshot;

use crate::embedded::codec::{Rec, encode_chunk};
use crate::embedded::{Inner, keys, log_err, read, rebuild, retention, sled_err};
use crate::ids::RunKey;
use crate::payload::Hash;
use crate::state::{RunState, RunStatus};
use crate::store::{Error, RequestKey};

/// Most queued operations applied in one sled batch.
pub(crate) const INDEX_BATCH_OPS_MAX: usize = 16_384;
/// How long the indexer gathers operations into one sled batch.
pub(crate) const INDEX_GATHER_MS: u64 = 50;
/// Most events in one sled chunk.
pub(crate) const CHUNK_EVENTS_MAX: usize = 64;
/// Attribute bytes after which a chunk is closed (sled stores mid-sized values best).
pub(crate) const CHUNK_BYTES_MAX: usize = 8192;

/// One append, for the read models.
pub(crate) struct AppendOp {
    pub lsn: u64,
    pub key: RunKey,
    /// Hash of the record before the first one (the genesis for seq 1).
    pub prev_hash: Hash,
    /// The events.
    pub recs: Vec<Arc<Rec>>,
    /// The run's state after the append.
    pub state: Arc<RunState>,
    /// The run's status before the append (`None`: the append created the run).
    pub prev_status: Option<RunStatus>,
    /// The run's state before the append (`None`: the append created the run).
    pub prev_state: Option<Arc<RunState>>,
    /// The history's size after the append.
    pub history_bytes: u64,
    /// Bytes this append added to the indexer backlog.
    pub backlog: u64,
    /// The request id it carries, with the append's time (deduplication index).
    pub request: Option<(RequestKey, i64)>,
}

/// Work for the indexer.
pub(crate) enum Op {
    /// Index an append.
    Append(AppendOp),
    /// Store a blob.
    Blob {
        lsn: u64,
        addr: BlobAddr,
        data: Arc<Vec<u8>>,
    },
    /// Answer once everything queued before is in sled (read-your-writes for sled reads).
    Sync(oneshot::Sender<Result<(), Error>>),
    /// Make sled durable up to everything queued before, then checkpoint the log.
    Checkpoint(oneshot::Sender<Result<u64, Error>>),
    /// Remove dropped runs (retention) once their drop record (at `lsn`) is durable.
    Drop { lsn: u64, keys: Arc<Vec<RunKey>> },
    /// Rebuild a run's read models from the log (a read found them damaged).
    RepairRun(RunKey, oneshot::Sender<Result<bool, Error>>),
    /// Rewrite a blob from the log (a read found it damaged).
    RepairBlob(BlobAddr, oneshot::Sender<Result<bool, Error>>),
}

impl Op {
    /// Whether someone waits for this operation's answer (it ends the gathering).
    pub(crate) fn is_control(&self) -> bool {
        matches!(
            self,
            Op::Sync(_) | Op::Checkpoint(_) | Op::RepairRun(..) | Op::RepairBlob(..)
        )
    }
}

pub(crate) struct Indexer {
    inner: Arc<Inner>,
    /// Every log record up to here is applied to sled.
    applied_lsn: u64,
    /// Log bytes indexed since the last checkpoint.
    since_checkpoint: u64,
}

impl Indexer {
    pub fn new(inner: Arc<Inner>, applied_lsn: u64) -> Indexer {
        Indexer {
            inner,
            applied_lsn,
            since_checkpoint: 0,
        }
    }

    /// The thread body; returns when every sender is gone and the queue is drained.
    pub fn run(mut self, rx: crate::embedded::index_queue::Receiver) {
        let mut data: Vec<Op> = Vec::new();
        // Gather for a while: larger batches make larger chunks (less disk per event) and
        // fewer sled writes. Nothing waits on the indexer but `Sync` and `Checkpoint`, which
        // end the gathering at once.
        let gather = std::time::Duration::from_millis(INDEX_GATHER_MS);
        while let Some(ops) = rx.recv_batch(gather) {
            for op in ops {
                match op {
                    Op::Sync(reply) => {
                        let r = self.flush(&mut data);
                        let _ = reply.send(r);
                    }
                    Op::Checkpoint(reply) => {
                        let r = self.flush(&mut data).and_then(|()| self.checkpoint());
                        let _ = reply.send(r);
                    }
                    Op::Drop { lsn, keys } => {
                        let r = self
                            .flush(&mut data)
                            .and_then(|()| self.drop_runs(lsn, &keys));
                        if let Err(e) = r {
                            self.inner.fail(&e.to_string());
                        }
                    }
                    Op::RepairRun(key, reply) => {
                        let r = self.flush(&mut data).and_then(|()| {
                            let scan = |from: u64,
                                        f: &mut dyn FnMut(
                                &crate::log::Record,
                            )
                                -> Result<(), Error>| {
                                self.inner.scan_log(from, f)
                            };
                            rebuild::rebuild_run(&self.inner.db, &key, self.applied_lsn, &scan)
                                .map(|s| s.is_some())
                        });
                        let _ = reply.send(r);
                    }
                    Op::RepairBlob(addr, reply) => {
                        let r = self.flush(&mut data).and_then(|()| {
                            let scan = |from: u64,
                                        f: &mut dyn FnMut(
                                &crate::log::Record,
                            )
                                -> Result<(), Error>| {
                                self.inner.scan_log(from, f)
                            };
                            rebuild::rebuild_blob(&self.inner.db, &addr, &scan)
                        });
                        let _ = reply.send(r);
                    }
                    op => data.push(op),
                }
            }
            if let Err(e) = self.flush(&mut data) {
                tracing::error!(error = %e, "indexer failed");
            }
            if self.since_checkpoint >= self.inner.options.checkpoint_every_bytes
                && let Err(e) = self.checkpoint()
            {
                tracing::error!(error = %e, "periodic checkpoint failed");
            }
        }
    }

    fn flush(&mut self, data: &mut Vec<Op>) -> Result<(), Error> {
        if data.is_empty() {
            return self.inner.check_failed();
        }
        let ops = std::mem::take(data);
        let backlog: u64 = ops
            .iter()
            .map(|op| if let Op::Append(a) = op { a.backlog } else { 0 })
            .sum();
        let r = self.apply(&ops);
        if let Err(e) = &r {
            self.inner.fail(&e.to_string());
        }
        self.inner
            .backlog_bytes
            .fetch_sub(backlog, Ordering::Relaxed);
        self.inner.backlog_drained.notify_waiters();
        r
    }

    fn apply(&mut self, ops: &[Op]) -> Result<(), Error> {
        self.inner.check_failed()?;
        let max_lsn = ops.iter().filter_map(|op| match op {
            Op::Append(a) => Some(a.lsn),
            Op::Blob { lsn, .. } => Some(*lsn),
            _ => None,
        });
        let Some(max_lsn) = max_lsn.max() else {
            return Ok(());
        };
        let log = &self.inner.log;
        if log.durable_lsn() < max_lsn {
            // A barrier resolves once everything submitted before it is synced.
            log.submit(Vec::new())
                .map_err(log_err)?
                .wait_blocking()
                .map_err(log_err)?;
        }
        let mut batch = sled::Batch::default();
        let mut bytes = 0u64;
        let mut states: HashMap<&RunKey, StateWrite<'_>> = HashMap::new();
        // Each run's state before this batch, for the search index entries that changed.
        let mut before: HashMap<&RunKey, Option<&RunState>> = HashMap::new();
        // Each run's events of this batch, in order, with the hash before the first.
        let mut runs: HashMap<&RunKey, RunEvents<'_>> = HashMap::new();
        for op in ops {
            match op {
                Op::Append(a) => {
                    let run = runs
                        .entry(&a.key)
                        .or_insert_with(|| (a.prev_hash, Vec::new()));
                    for r in &a.recs {
                        bytes += r.attrs.len() as u64;
                        run.1.push((a.lsn, r));
                    }
                    if let Some((q, time_ms)) = &a.request {
                        let hit = keys::RequestHit {
                            run_id: a.key.run_id,
                            seq: a.recs.first().map_or(0, |r| r.seq),
                            time_ms: *time_ms,
                        };
                        batch.insert(
                            keys::request(&a.key.namespace, q),
                            &keys::request_value(&hit)[..],
                        );
                    }
                    before.entry(&a.key).or_insert(a.prev_state.as_deref());
                    states
                        .entry(&a.key)
                        .and_modify(|w| {
                            w.lsn = a.lsn;
                            w.state = &a.state;
                            w.history_bytes = a.history_bytes;
                        })
                        .or_insert(StateWrite {
                            lsn: a.lsn,
                            state: &a.state,
                            history_bytes: a.history_bytes,
                            prev_status: a.prev_status,
                            prev_search: PrevSearch::Unknown,
                        });
                }
                Op::Blob { addr, data, .. } => {
                    bytes += data.len() as u64;
                    batch.insert(keys::blob(addr), data.as_slice());
                }
                _ => {}
            }
        }
        let mut chunks = 0;
        for (key, (prev, recs)) in &runs {
            chunks += write_chunks(&mut batch, &key.to_bytes(), *prev, recs);
        }
        let c = &self.inner.index;
        c.batches.fetch_add(1, Ordering::Relaxed);
        c.chunks.fetch_add(chunks, Ordering::Relaxed);
        c.events.fetch_add(
            runs.values().map(|(_, r)| r.len() as u64).sum(),
            Ordering::Relaxed,
        );
        let mut writes: Vec<StateWrite<'_>> = states.into_values().collect();
        for w in &mut writes {
            w.prev_search = match before.get(&w.state.key).copied().flatten() {
                Some(p) => PrevSearch::of(p, w.state),
                None => PrevSearch::Unknown,
            };
        }
        writes.sort_by(|a, b| a.state.key.cmp(&b.state.key));
        write_states(&mut batch, &writes);
        batch.insert(keys::META_INDEXED_LSN, &keys::indexed_lsn_value(max_lsn));
        self.inner.db.apply_batch(batch).map_err(sled_err)?;
        self.applied_lsn = max_lsn;
        self.since_checkpoint += bytes;

        // Publishing first puts every durable record (all of these are) into the tails, so
        // that the ones now in sled can leave them.
        let mut head = self.inner.head();
        for op in ops {
            match op {
                Op::Append(a) => {
                    let last = a.recs.last().map_or(0, |r| r.seq);
                    let done = match head.runs.get_mut(&a.key) {
                        Some(r) => {
                            while r.tail.front().is_some_and(|t| t.seq <= last) {
                                r.tail.pop_front();
                            }
                            r.unindexed = r.unindexed.saturating_sub(1);
                            r.settled()
                        }
                        None => false,
                    };
                    if done {
                        head.runs.remove(&a.key);
                    }
                    if let Some((q, _)) = &a.request {
                        head.requests.remove(&(a.key.namespace.clone(), q.clone()));
                    }
                }
                Op::Blob { addr, .. } => {
                    head.blobs.remove(addr);
                }
                _ => {}
            }
        }
        Ok(())
    }

    /// Removes everything sled holds for runs dropped by retention, in one batch that also
    /// moves the indexed lsn past the drop record.
    fn drop_runs(&mut self, lsn: u64, dropped: &[RunKey]) -> Result<(), Error> {
        self.inner.check_failed()?;
        let log = &self.inner.log;
        if log.durable_lsn() < lsn {
            log.submit(Vec::new())
                .map_err(log_err)?
                .wait_blocking()
                .map_err(log_err)?;
        }
        let db = &self.inner.db;
        let mut batch = sled::Batch::default();
        let mut dead = HashMap::new();
        for key in dropped {
            let stored = read::load_verified(db, key).ok().flatten();
            retention::count_dead(db, log, key, &mut dead)?;
            batch.insert(keys::dropped(&key.to_bytes()), &lsn.to_be_bytes());
            retention::remove_run(db, &mut batch, key, stored.as_ref())?;
        }
        retention::add_dead(db, &mut batch, &dead)?;
        batch.insert(keys::META_INDEXED_LSN, &keys::indexed_lsn_value(lsn));
        db.apply_batch(batch).map_err(sled_err)?;
        self.applied_lsn = lsn;
        // Space comes back once a segment is mostly garbage.
        let fraction = self.inner.options.compact_dead_fraction;
        if fraction > 0.0 {
            let reclaimed = retention::compact_sparse(db, log, fraction)?;
            self.inner
                .index
                .reclaimed_bytes
                .fetch_add(reclaimed, Ordering::Relaxed);
        }
        Ok(())
    }

    /// sled flushed and its files fsynced, then the log checkpointed at the applied lsn.
    fn checkpoint(&mut self) -> Result<u64, Error> {
        self.inner.check_failed()?;
        let lsn = self.applied_lsn;
        self.inner.db.flush().map_err(sled_err)?;
        fsync_tree(&self.inner.dir.join(super::SLED_DIR))
            .map_err(|e| Error::Unavailable(format!("fsync of the read models: {e}")))?;
        self.inner.log.checkpoint(lsn).map_err(log_err)?;
        self.since_checkpoint = 0;
        self.inner.index.checkpoints.fetch_add(1, Ordering::Relaxed);
        tracing::debug!(lsn, "store checkpoint");
        Ok(lsn)
    }
}

/// Adds consecutive events of one run as chunks of at most [`CHUNK_EVENTS_MAX`] events and
/// about [`CHUNK_BYTES_MAX`] attribute bytes.
pub(crate) fn write_chunks(
    batch: &mut sled::Batch,
    run: &[u8],
    mut prev: Hash,
    recs: &[(u64, &Rec)],
) -> u64 {
    let mut start = 0;
    let mut chunks = 0;
    while start < recs.len() {
        let mut end = start;
        let mut size = 0;
        while end < recs.len()
            && end - start < CHUNK_EVENTS_MAX
            && (end == start || size + recs[end].1.attrs.len() <= CHUNK_BYTES_MAX)
        {
            size += recs[end].1.attrs.len();
            end += 1;
        }
        let chunk = &recs[start..end];
        batch.insert(keys::chunk(run, chunk[0].1.seq), encode_chunk(&prev, chunk));
        prev = chunk[chunk.len() - 1].1.hash;
        start = end;
        chunks += 1;
    }
    chunks
}

/// One run's events in a batch (with the lsn of each), and the hash before the first.
type RunEvents<'a> = (Hash, Vec<(u64, &'a Rec)>);

/// The last state of one run in a batch, and its status before the batch.
pub(crate) struct StateWrite<'a> {
    pub lsn: u64,
    pub state: &'a RunState,
    pub history_bytes: u64,
    pub prev_status: Option<RunStatus>,
    /// The run's search index entries before the batch.
    pub prev_search: PrevSearch,
}

/// A run's search index entries (`a` keys) before a write.
pub(crate) enum PrevSearch {
    /// The same as after it (nothing to write: the common case, checked without building
    /// any key).
    Unchanged,
    /// These keys.
    Keys(Vec<Vec<u8>>),
    /// Not known (a new run, a rebuild): every key of the state is written.
    Unknown,
}

impl PrevSearch {
    /// The entries of `prev` as they compare with `next`'s.
    pub(crate) fn of(prev: &RunState, next: &RunState) -> PrevSearch {
        let same = prev.workflow_id == next.workflow_id
            && prev.schedule == next.schedule
            && prev.search_attributes == next.search_attributes
            && prev.failed_activity_types == next.failed_activity_types;
        if same {
            PrevSearch::Unchanged
        } else {
            PrevSearch::Keys(keys::search_keys(prev))
        }
    }
}

/// Adds run states and the index entries that change with them to a batch. sled batches are
/// maps (the last write of a key wins), so removals are added before insertions: a run that
/// closes and a new run of the same workflow id in one batch leave the new run's entry.
pub(crate) fn write_states(batch: &mut sled::Batch, writes: &[StateWrite<'_>]) {
    for w in writes {
        let s = w.state;
        let changed = w.prev_status != Some(s.status);
        if let (true, Some(p)) = (changed, w.prev_status) {
            batch.remove(keys::by_status(&s.key, p));
        }
        // Only a run that was open held the workflow id's entry; a run created closed never
        // did, and must not remove the entry of the open run that has the id.
        if !s.is_open() && changed && w.prev_status.is_some() {
            batch.remove(keys::open(&s.key.to_bytes()));
            batch.remove(keys::workflow_id(&s.key.namespace, &s.workflow_id));
        }
        if !s.is_open()
            && w.prev_status.is_none_or(|p| !p.is_closed())
            && let Some(ms) = s.closed_ms
        {
            batch.insert(keys::closed(ms, &s.key), &[]);
        }
    }
    for w in writes {
        let s = w.state;
        let run = s.key.to_bytes();
        batch.insert(
            keys::state(&run),
            keys::state_value(w.lsn, w.history_bytes, s),
        );
        if w.prev_status != Some(s.status) {
            batch.insert(keys::by_status(&s.key, s.status), &[]);
        }
        match &w.prev_search {
            PrevSearch::Unchanged => {}
            PrevSearch::Unknown => {
                for k in keys::search_keys(s) {
                    batch.insert(k, &[]);
                }
            }
            PrevSearch::Keys(old) => {
                // Index keys end with the run id: no other run shares them, so a removal
                // here never hides another run's insertion.
                let new = keys::search_keys(s);
                for k in old.iter().filter(|k| !new.contains(k)) {
                    batch.remove(k.as_slice());
                }
                for k in new.into_iter().filter(|k| !old.contains(k)) {
                    batch.insert(k, &[]);
                }
            }
        }
        if w.prev_status.is_none() {
            batch.insert(keys::by_type(&s.key, &s.workflow_type), &[]);
            if s.is_open() {
                batch.insert(keys::open(&run), &[]);
                batch.insert(
                    keys::workflow_id(&s.key.namespace, &s.workflow_id),
                    s.key.run_id.as_bytes(),
                );
            }
        }
    }
}

/// fsyncs every file and directory under `root`, then `root` itself and its parent (sled
/// 0.34's own flush uses `sync_file_range`, which does not make data durable).
pub(crate) fn fsync_tree(root: &Path) -> std::io::Result<()> {
    fn walk(dir: &Path) -> std::io::Result<()> {
        for entry in std::fs::read_dir(dir)? {
            let entry = entry?;
            let path = entry.path();
            if entry.file_type()?.is_dir() {
                walk(&path)?;
            } else {
                std::fs::File::open(&path)?.sync_all()?;
            }
        }
        std::fs::File::open(dir)?.sync_all()
    }
    walk(root)?;
    if let Some(parent) = root.parent() {
        std::fs::File::open(parent)?.sync_all()?;
    }
    Ok(())
}
