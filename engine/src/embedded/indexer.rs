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

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::sync::mpsc::Receiver;

use tokio::sync::oneshot;

use crate::embedded::{Inner, keys, log_err, sled_err};
use crate::ids::RunKey;
use crate::payload::Hash;
use crate::state::{RunState, RunStatus};
use crate::store::Error;

/// Most queued operations applied in one sled batch.
pub(crate) const INDEX_BATCH_OPS_MAX: usize = 8_192;

/// One append, for the read models.
pub(crate) struct AppendOp {
    pub lsn: u64,
    pub key: RunKey,
    /// Seq and encoded record of each event.
    pub records: Vec<(u64, Arc<[u8]>)>,
    /// The run's state after the append.
    pub state: Arc<RunState>,
    /// The run's status before the append (`None`: the append created the run).
    pub prev_status: Option<RunStatus>,
    /// The history's size after the append.
    pub history_bytes: u64,
    /// Bytes this append added to the indexer backlog.
    pub backlog: u64,
}

/// Work for the indexer.
pub(crate) enum Op {
    /// Index an append.
    Append(AppendOp),
    /// Store a blob.
    Blob {
        lsn: u64,
        hash: Hash,
        data: Arc<Vec<u8>>,
    },
    /// Answer once everything queued before is in sled (read-your-writes for sled reads).
    Sync(oneshot::Sender<Result<(), Error>>),
    /// Make sled durable up to everything queued before, then checkpoint the log.
    Checkpoint(oneshot::Sender<Result<u64, Error>>),
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
    pub fn run(mut self, rx: Receiver<Op>) {
        let mut data: Vec<Op> = Vec::new();
        while let Ok(first) = rx.recv() {
            let mut ops = vec![first];
            while ops.len() < INDEX_BATCH_OPS_MAX {
                match rx.try_recv() {
                    Ok(op) => ops.push(op),
                    Err(_) => break,
                }
            }
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
        for op in ops {
            match op {
                Op::Append(a) => {
                    let run = a.key.to_bytes();
                    for (seq, rec) in &a.records {
                        bytes += rec.len() as u64;
                        batch.insert(keys::event(&run, *seq), keys::event_value(a.lsn, rec));
                    }
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
                        });
                }
                Op::Blob { hash, data, .. } => {
                    bytes += data.len() as u64;
                    batch.insert(keys::blob(hash), data.as_slice());
                }
                Op::Sync(_) | Op::Checkpoint(_) => {}
            }
        }
        let mut writes: Vec<StateWrite<'_>> = states.into_values().collect();
        writes.sort_by(|a, b| a.state.key.cmp(&b.state.key));
        write_states(&mut batch, &writes);
        batch.insert(keys::META_INDEXED_LSN, &max_lsn.to_be_bytes());
        self.inner.db.apply_batch(batch).map_err(sled_err)?;
        self.applied_lsn = max_lsn;
        self.since_checkpoint += bytes;

        let mut head = self.inner.head.lock();
        for op in ops {
            match op {
                Op::Append(a) => {
                    let last = a.records.last().map_or(0, |(s, _)| *s);
                    let done = match head.runs.get_mut(&a.key) {
                        Some(r) => {
                            while r.tail.front().is_some_and(|(s, _)| *s <= last) {
                                r.tail.pop_front();
                            }
                            r.unindexed = r.unindexed.saturating_sub(1);
                            r.unindexed == 0 && !r.state.is_open()
                        }
                        None => false,
                    };
                    if done {
                        head.runs.remove(&a.key);
                    }
                }
                Op::Blob { hash, .. } => {
                    head.blobs.remove(hash);
                }
                Op::Sync(_) | Op::Checkpoint(_) => {}
            }
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
        tracing::debug!(lsn, "store checkpoint");
        Ok(lsn)
    }
}

/// The last state of one run in a batch, and its status before the batch.
pub(crate) struct StateWrite<'a> {
    pub lsn: u64,
    pub state: &'a RunState,
    pub history_bytes: u64,
    pub prev_status: Option<RunStatus>,
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
        if !s.is_open() && changed {
            batch.remove(keys::open(&s.key.to_bytes()));
            batch.remove(keys::workflow_id(&s.key.namespace, &s.workflow_id));
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
