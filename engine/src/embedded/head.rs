//! What the store holds under its lock: the head of every open (or not yet indexed) run, the
//! appends not yet durable, and the projections (queues, timers) — and the rule that moves an
//! append from "submitted" to "shown" only once the log has synced it.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use crate::embedded::codec;
use crate::embedded::keys;
use crate::ids::{RunId, RunKey};
use crate::state::RunState;
use crate::store::RequestKey;
use crate::store::core::Core;

/// The head of a run that is open, or closed and not yet fully indexed, or has appends
/// that are not durable yet.
///
/// Two views: `state`/`tail` are what readers, pollers and the timer loop see, and hold only
/// durable records; `latest` is what appenders build on (expected-seq ordering), including
/// appends whose batch is not synced yet. Appends move from one to the other in
/// [`Head::publish`], in log order, once the log's durable lsn covers them.
pub(crate) struct RunHead {
    /// The state after the last durable (published) append; `None` while the run's first
    /// append is not durable yet.
    pub(crate) state: Option<Arc<RunState>>,
    /// Size of the history (encoded records plus referred blobs) at `state`.
    pub(crate) history_bytes: u64,
    /// Durable records not yet in sled, oldest first, contiguous up to `state.last_seq`.
    pub(crate) tail: VecDeque<Arc<codec::Rec>>,
    /// The state and size after every submitted append, durable or not, while some are not
    /// published yet.
    pub(crate) latest: Option<(Arc<RunState>, u64)>,
    /// Appends submitted and not yet published.
    pub(crate) pending: u32,
    /// Appends sent to the indexer and not yet applied.
    pub(crate) unindexed: u32,
}

impl RunHead {
    pub(crate) fn new(state: Arc<RunState>, history_bytes: u64) -> RunHead {
        RunHead {
            state: Some(state),
            history_bytes,
            tail: VecDeque::new(),
            latest: None,
            pending: 0,
            unindexed: 0,
        }
    }

    pub(crate) fn unpublished() -> RunHead {
        RunHead {
            state: None,
            history_bytes: 0,
            tail: VecDeque::new(),
            latest: None,
            pending: 0,
            unindexed: 0,
        }
    }

    /// What the next append builds on: the latest state, durable or not.
    pub(crate) fn latest(&self) -> Option<(Arc<RunState>, u64)> {
        match &self.latest {
            Some((s, b)) => Some((Arc::clone(s), *b)),
            None => self
                .state
                .as_ref()
                .map(|s| (Arc::clone(s), self.history_bytes)),
        }
    }

    /// Whether the head can be dropped: closed, durable, published and in sled.
    pub(crate) fn settled(&self) -> bool {
        self.pending == 0
            && self.unindexed == 0
            && self.state.as_ref().is_some_and(|s| !s.is_open())
    }
}

/// An append whose records are submitted to the log and not yet published to readers.
pub(crate) struct PendingAppend {
    /// Its log record's lsn: published once the log's durable lsn reaches it.
    pub(crate) lsn: u64,
    pub(crate) key: RunKey,
    pub(crate) state: Arc<RunState>,
    pub(crate) history_bytes: u64,
    pub(crate) recs: Vec<Arc<codec::Rec>>,
    /// The workflow id this append opened (RunStarted), reserved until published.
    pub(crate) started_workflow_id: Option<String>,
}

/// Everything under the store lock.
pub(crate) struct Head {
    pub(crate) core: Core,
    pub(crate) runs: HashMap<RunKey, RunHead>,
    /// Appends not yet durable, in lsn order (they are submitted under this lock).
    pub(crate) pending: VecDeque<PendingAppend>,
    /// Workflow ids of runs whose RunStarted is submitted and not yet durable: a second start
    /// must not slip in before the first is published.
    pub(crate) pending_workflow_ids: HashMap<(String, String), RunId>,
    /// Request ids of appends not yet in sled (pending or published), for deduplication.
    pub(crate) requests: HashMap<(String, RequestKey), keys::RequestHit>,
    /// Blobs submitted to the log and not yet in sled, with the lsn of their record: served
    /// only once that lsn is durable.
    pub(crate) blobs: HashMap<crate::embedded::blob::BlobAddr, (u64, Arc<Vec<u8>>)>,
    /// The indexer's queue; `None` once closed.
    pub(crate) tx: Option<super::index_queue::Sender>,
}

impl Head {
    /// Publishes every pending append whose log record is durable (`lsn <= durable_lsn`):
    /// from now on readers, pollers and timers see it. Called under the lock by every path
    /// that reads or dispatches, so that nothing unsynced is ever shown and everything synced
    /// is shown promptly.
    pub(crate) fn publish(&mut self, durable_lsn: u64) {
        while self.pending.front().is_some_and(|p| p.lsn <= durable_lsn) {
            let Some(p) = self.pending.pop_front() else {
                break;
            };
            if let Some(wid) = p.started_workflow_id {
                let k = (p.key.namespace.clone(), wid);
                if self.pending_workflow_ids.get(&k) == Some(&p.key.run_id) {
                    self.pending_workflow_ids.remove(&k);
                }
            }
            let run = self
                .runs
                .entry(p.key.clone())
                .or_insert_with(RunHead::unpublished);
            run.state = Some(Arc::clone(&p.state));
            run.history_bytes = p.history_bytes;
            run.tail.extend(p.recs);
            run.pending = run.pending.saturating_sub(1);
            if run.pending == 0 {
                run.latest = None;
            }
            self.core.upsert(p.state);
        }
    }

    /// The open run of a workflow id, counting starts that are not durable yet (for the
    /// uniqueness check of appenders only).
    pub(crate) fn open_or_pending_run(&self, namespace: &str, workflow_id: &str) -> Option<RunId> {
        self.pending_workflow_ids
            .get(&(namespace.to_string(), workflow_id.to_string()))
            .copied()
            .or_else(|| self.core.open_run_for_workflow_id(namespace, workflow_id))
    }
}
