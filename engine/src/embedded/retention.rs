//! Retention: closed runs older than a period are dropped, open runs never.
//!
//! A drop is a record in the log first (kind 3, naming the runs), durable before anything
//! else happens, so that a rebuild of the read models from the log drops them again instead
//! of bringing them back. Then the indexer removes everything sled holds for them (state,
//! event chunks, index entries) in one batch. Until the drop record is durable and indexed,
//! the runs stay readable: nothing disappears that a crash could bring back.
//!
//! The log's space comes back when compaction rewrites segments whose records belong mostly
//! to dropped runs (see [`crate::log`]); blobs are shared by content and are kept.

use std::sync::Arc;

use crate::embedded::codec::{KIND_DROP, encode_drop};
use crate::embedded::indexer::Op;
use crate::embedded::keys::{self, StoredState};
use crate::embedded::{Inner, log_err, sled_err};
use crate::event::TimeMs;
use crate::ids::RunKey;
use crate::store::Error;

/// Adds to `batch` the removal of everything sled holds for `key`. `stored` is the run's
/// state if it could be read (its type, workflow id and close time name its index entries).
pub(crate) fn remove_run(
    db: &sled::Db,
    batch: &mut sled::Batch,
    key: &RunKey,
    stored: Option<&StoredState>,
) -> Result<(), Error> {
    let run = key.to_bytes();
    for item in db.range(keys::chunk(&run, 0)..=keys::chunk(&run, u64::MAX)) {
        let (k, _) = item.map_err(sled_err)?;
        batch.remove(k);
    }
    batch.remove(keys::state(&run));
    batch.remove(keys::open(&run));
    for status in keys::ALL_STATUSES {
        batch.remove(keys::by_status(key, status));
    }
    if let Some(s) = stored {
        let s = &s.state;
        batch.remove(keys::by_type(key, &s.workflow_type));
        if let Some(ms) = s.closed_ms {
            batch.remove(keys::closed(ms, key));
        }
        let wid = keys::workflow_id(&key.namespace, &s.workflow_id);
        if db
            .get(&wid)
            .map_err(sled_err)?
            .is_some_and(|v| v.as_ref() == key.run_id.as_bytes())
        {
            batch.remove(wid);
        }
    }
    Ok(())
}

impl Inner {
    /// Drops up to `limit` runs that closed before `closed_before_ms`; returns how many.
    pub(crate) async fn drop_closed_before(
        &self,
        closed_before_ms: TimeMs,
        limit: usize,
    ) -> Result<usize, Error> {
        // The closed-runs index is written by the indexer: let it catch up first.
        self.ask(Op::Sync).await?;
        let mut candidates = Vec::new();
        for item in self
            .db
            .range(vec![keys::CLOSED]..keys::closed_before(closed_before_ms))
        {
            if candidates.len() >= limit {
                break;
            }
            let (k, _) = item.map_err(sled_err)?;
            if let Some(key) = keys::closed_run(&k) {
                candidates.push(key);
            }
        }
        if candidates.is_empty() {
            return Ok(0);
        }
        let durable = {
            let head = self.head();
            // A run still on its way to sled stays until the next sweep.
            candidates.retain(|k| !head.runs.contains_key(k));
            if candidates.is_empty() {
                return Ok(0);
            }
            let tx = head
                .tx
                .clone()
                .ok_or_else(|| Error::Unavailable("the store is closed".into()))?;
            let durable = self
                .log
                .submit(vec![(KIND_DROP, encode_drop(&candidates))])
                .map_err(log_err)?;
            let lsn = durable.last_lsn();
            // Sent under the lock, like appends, so the indexer sees operations in lsn order.
            if tx
                .send(Op::Drop {
                    lsn,
                    keys: Arc::new(candidates.clone()),
                })
                .is_err()
            {
                self.fail("the indexer thread stopped");
            }
            drop(head);
            durable
        };
        durable.wait().await.map_err(log_err)?;
        tracing::info!(runs = candidates.len(), "retention dropped closed runs");
        Ok(candidates.len())
    }
}
