//! Rebuilding one run's read models from the log, when a read finds them damaged.
//!
//! sled is a cache of the log: a read that finds a run's stored state or events damaged,
//! missing or not matching the chain does not refuse while the log can answer. It asks the
//! indexer thread (so that nothing else writes that run's keys meanwhile) to read the run's
//! records back from the log, verify them along the chain from the genesis hash, and replace
//! everything sled holds for the run — event chunks, state, index entries — in one batch.
//! Then the read is tried again.
//!
//! Only records the indexer has applied (`lsn <= applied_lsn`) are rebuilt: later ones are
//! still on their way to sled through the indexer's queue (and served from memory meanwhile),
//! so the rebuilt chunks never overlap chunks the indexer writes after.
//!
//! Cost: one pass over the log (the log has no per-run index). Damage is rare, and a slow
//! answer beats a refusal; `steadfast history verify` and the open-time checks find it early.

use crate::embedded::blob::BlobAddr;
use std::sync::Arc;

use crate::embedded::codec::{
    KIND_APPEND, KIND_BLOB, KIND_DROP, Rec, append_run_key, decode_append_request, decode_blob,
    decode_drop,
};
use crate::embedded::indexer::{StateWrite, write_chunks, write_states};
use crate::embedded::{keys, retention, sled_err};
use crate::event::genesis_hash;
use crate::ids::RunKey;
use crate::log::Record;
use crate::state::RunState;
use crate::store::Error;

/// Reads log records in lsn order: `scan(from_lsn, f)` calls `f` with every durable record
/// from `from_lsn` on.
pub(crate) type Scan<'a> =
    &'a dyn Fn(u64, &mut dyn FnMut(&Record) -> Result<(), Error>) -> Result<(), Error>;

fn corrupt(key: &RunKey, seq: Option<u64>, detail: impl Into<String>) -> Error {
    Error::Corrupt {
        run: Some(key.clone()),
        seq,
        detail: detail.into(),
    }
}

/// Replaces everything sled holds for `key` with what the log says, up to `upto_lsn`.
/// Returns the rebuilt state, or `None` when the log holds no record of the run.
pub(crate) fn rebuild_run(
    db: &sled::Db,
    key: &RunKey,
    upto_lsn: u64,
    scan: Scan<'_>,
) -> Result<Option<Arc<RunState>>, Error> {
    let run = key.to_bytes();
    let mut recs: Vec<(u64, Rec)> = Vec::new();
    let mut dropped = false;
    let mut requests = Vec::new();
    scan(1, &mut |r: &Record| {
        if r.lsn > upto_lsn {
            return Ok(());
        }
        if r.kind == KIND_DROP {
            let keys = decode_drop(&r.data)
                .map_err(|e| corrupt(key, None, format!("log record lsn {}: {e}", r.lsn)))?;
            if keys.contains(key) {
                // Retention dropped the run: its earlier records do not come back.
                recs.clear();
                requests.clear();
                dropped = true;
            }
            return Ok(());
        }
        if r.kind != KIND_APPEND || append_run_key(&r.data) != Some(&run[..]) {
            return Ok(());
        }
        let (_, got, request) = decode_append_request(&r.data)
            .map_err(|e| corrupt(key, None, format!("log record lsn {}: {e}", r.lsn)))?;
        if let (Some(q), Some(first)) = (request, got.first()) {
            requests.push((q, first.seq, first.time_ms));
        }
        recs.extend(got.into_iter().map(|rec| (r.lsn, rec)));
        Ok(())
    })?;
    if recs.is_empty() {
        if dropped {
            let mut batch = sled::Batch::default();
            let stored = crate::embedded::read::load_verified(db, key).ok().flatten();
            retention::remove_run(db, &mut batch, key, stored.as_ref())?;
            db.apply_batch(batch).map_err(sled_err)?;
        }
        return Ok(None);
    }
    let mut prev = genesis_hash(key);
    let mut state: Option<RunState> = None;
    let mut history_bytes = 0u64;
    for (i, (_, rec)) in recs.iter().enumerate() {
        let seq = i as u64 + 1;
        if rec.seq != seq {
            return Err(corrupt(
                key,
                Some(seq),
                format!("the log holds seq {} where seq {seq} belongs", rec.seq),
            ));
        }
        if !rec.verifies_after(&prev) {
            return Err(corrupt(
                key,
                Some(seq),
                "[STF-C2-HASH] the hash chain of the log's records does not verify",
            ));
        }
        prev = rec.hash;
        let mut record = rec.to_record().map_err(|e| corrupt(key, Some(seq), e))?;
        match &mut state {
            None => {
                state = Some(
                    RunState::start(key.clone(), &record)
                        .map_err(|e| corrupt(key, Some(seq), e.to_string()))?,
                )
            }
            Some(s) => s
                .apply(&record)
                .map_err(|e| corrupt(key, Some(seq), e.to_string()))?,
        }
        let blobs: u64 = record
            .event
            .payloads_mut()
            .iter()
            .filter_map(|p| p.blob.map(|b| b.len))
            .sum();
        history_bytes += rec.attrs.len() as u64 + blobs;
    }
    let Some(mut state) = state else {
        return Ok(None);
    };
    state.history_bytes = history_bytes;
    let mut batch = sled::Batch::default();
    // Whatever sled holds for the run goes: stale chunks, index entries under any status.
    for item in db.range(keys::chunk(&run, 0)..=keys::chunk(&run, u64::MAX)) {
        let (k, _) = item.map_err(sled_err)?;
        batch.remove(k);
    }
    for status in keys::ALL_STATUSES {
        batch.remove(keys::by_status(key, status));
    }
    batch.remove(keys::open(&run));
    let wid = keys::workflow_id(&key.namespace, &state.workflow_id);
    let points_here = db
        .get(&wid)
        .map_err(sled_err)?
        .is_some_and(|v| v.as_ref() == key.run_id.as_bytes());
    if points_here && !state.is_open() {
        batch.remove(wid);
    }
    for (q, seq, time_ms) in &requests {
        let hit = keys::RequestHit {
            run_id: key.run_id,
            seq: *seq,
            time_ms: *time_ms,
        };
        batch.insert(
            keys::request(&key.namespace, q),
            &keys::request_value(&hit)[..],
        );
    }
    let with_lsn: Vec<(u64, &Rec)> = recs.iter().map(|(l, r)| (*l, r)).collect();
    write_chunks(&mut batch, &run, genesis_hash(key), &with_lsn);
    let last_lsn = recs.last().map_or(0, |(l, _)| *l);
    write_states(
        &mut batch,
        &[StateWrite {
            lsn: last_lsn,
            state: &state,
            history_bytes,
            prev_status: None,
            prev_search: crate::embedded::indexer::PrevSearch::Unknown,
        }],
    );
    db.apply_batch(batch).map_err(sled_err)?;
    tracing::warn!(run = %key, events = recs.len(), "rebuilt a run's read models from the log");
    Ok(Some(Arc::new(state)))
}

/// Rewrites a blob from the log; `false` when the log holds no record of it.
pub(crate) fn rebuild_blob(db: &sled::Db, addr: &BlobAddr, scan: Scan<'_>) -> Result<bool, Error> {
    let mut found = None;
    scan(1, &mut |r: &Record| {
        if found.is_some() || r.kind != KIND_BLOB {
            return Ok(());
        }
        let (a, data) = decode_blob(&r.data).map_err(|e| Error::Corrupt {
            run: None,
            seq: None,
            detail: format!("log record lsn {}: {e}", r.lsn),
        })?;
        // decode_blob checked the data against its hash.
        if a == *addr {
            found = Some(data.to_vec());
        }
        Ok(())
    })?;
    match found {
        Some(data) => {
            db.insert(keys::blob(addr), data).map_err(sled_err)?;
            tracing::warn!(blob = %hex::encode(addr.hash), "rebuilt a blob from the log");
            Ok(true)
        }
        None => Ok(false),
    }
}
