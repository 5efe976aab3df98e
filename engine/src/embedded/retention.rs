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

use std::collections::HashMap;
use std::sync::Arc;

use crate::embedded::codec::{
    KIND_APPEND, KIND_DROP, append_run_key, decode_chunk, decode_drop, encode_drop,
};
use crate::embedded::indexer::Op;
use crate::embedded::keys::{self, StoredState};
use crate::embedded::{Inner, log_err, sled_err};
use crate::event::TimeMs;
use crate::ids::RunKey;
use crate::log::Log;
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
        for k in keys::search_keys(s) {
            batch.remove(k);
        }
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

/// Bytes a record of a dropped run is counted as in its segment's garbage (its attributes
/// plus the per-event and per-frame overhead, roughly): an estimate that decides when a
/// segment is worth rewriting, never what is kept.
const RECORD_OVERHEAD_BYTES: u64 = 48;

/// Adds to `dead` (per log segment) the bytes of `key`'s stored events, read from sled's
/// chunks (which carry each event's lsn).
pub(crate) fn count_dead(
    db: &sled::Db,
    log: &Log,
    key: &RunKey,
    dead: &mut HashMap<u64, u64>,
) -> Result<(), Error> {
    let run = key.to_bytes();
    for item in db.range(keys::chunk(&run, 0)..=keys::chunk(&run, u64::MAX)) {
        let (k, v) = item.map_err(sled_err)?;
        let Some(first_seq) = keys::chunk_seq(&run, &k) else {
            continue;
        };
        // A damaged chunk only makes the estimate smaller.
        let Ok(chunk) = decode_chunk(key, first_seq, &v) else {
            continue;
        };
        for (lsn, rec) in &chunk.recs {
            if let Some(segment) = log.segment_of(*lsn) {
                *dead.entry(segment).or_default() += rec.attrs.len() as u64 + RECORD_OVERHEAD_BYTES;
            }
        }
    }
    Ok(())
}

/// Adds the counted garbage to the `g` entries in `batch`.
pub(crate) fn add_dead(
    db: &sled::Db,
    batch: &mut sled::Batch,
    dead: &HashMap<u64, u64>,
) -> Result<(), Error> {
    for (segment, bytes) in dead {
        let k = keys::dead(*segment);
        let before = db
            .get(&k)
            .map_err(sled_err)?
            .and_then(|v| keys::decode_u64(&v))
            .unwrap_or(0);
        batch.insert(k, &(before + bytes).to_be_bytes());
    }
    Ok(())
}

/// Whether the log's drop record at the lsn sled remembers for `run` really names it: what
/// compaction deletes is decided by the log, never by a cache entry alone.
fn dropped_by_the_log(db: &sled::Db, log: &Log, run: &[u8]) -> bool {
    let Some(lsn) = db
        .get(keys::dropped(run))
        .ok()
        .flatten()
        .and_then(|v| keys::decode_u64(&v))
    else {
        return false;
    };
    let Some(key) = RunKey::from_bytes(run) else {
        return false;
    };
    let Ok(mut reader) = log.read_from(lsn) else {
        return false;
    };
    match reader.next() {
        Some(Ok(r)) if r.lsn == lsn && r.kind == KIND_DROP => {
            decode_drop(&r.data).is_ok_and(|keys| keys.contains(&key))
        }
        _ => false,
    }
}

/// Rewrites every sealed log segment whose garbage (records of dropped runs) is at least
/// `fraction` of its size, keeping everything else (appends of live runs, blobs, drop
/// records). Returns the bytes given back.
pub(crate) fn compact_sparse(db: &sled::Db, log: &Log, fraction: f64) -> Result<u64, Error> {
    let mut reclaimed = 0u64;
    for seg in log.segments() {
        if !seg.sealed {
            continue;
        }
        let dead = db
            .get(keys::dead(seg.first_lsn))
            .map_err(sled_err)?
            .and_then(|v| keys::decode_u64(&v))
            .unwrap_or(0);
        if dead == 0 || (dead as f64) < fraction * seg.file_bytes as f64 {
            continue;
        }
        let mut verdicts: HashMap<Vec<u8>, bool> = HashMap::new();
        let mut keep = |r: &crate::log::Record| {
            if r.kind != KIND_APPEND {
                return true;
            }
            let Some(run) = append_run_key(&r.data) else {
                return true;
            };
            let dropped = *verdicts
                .entry(run.to_vec())
                .or_insert_with(|| dropped_by_the_log(db, log, run));
            !dropped
        };
        let report = log.compact(seg.first_lsn, &mut keep).map_err(log_err)?;
        db.insert(keys::dead(seg.first_lsn), &0u64.to_be_bytes())
            .map_err(sled_err)?;
        reclaimed += report.bytes_before.saturating_sub(report.bytes_after);
        tracing::info!(
            segment = seg.first_lsn,
            bytes_before = report.bytes_before,
            bytes_after = report.bytes_after,
            records_dropped = report.records_dropped,
            "compacted a log segment"
        );
    }
    Ok(reclaimed)
}
