//! Reads: run states, histories (verified against the chain), run lists and blobs.
//!
//! Read-your-writes without waiting for the indexer: the records of a run that are not in
//! sled yet are in its in-memory tail. A read snapshots the tail first, then reads sled: a
//! record leaves the tail only after the indexer wrote it to sled, so every record is in one
//! of the two.

use crate::embedded::blob::BlobAddr;
use std::sync::Arc;

use crate::embedded::codec::{Rec, decode_chunk};
use crate::embedded::indexer::Op;
use crate::embedded::keys::{self, StoredState};
use crate::embedded::{Inner, sled_err};
use crate::event::{EventRecord, TimeMs, genesis_hash};
use crate::ids::{RunId, RunKey};
use crate::payload::Hash;
use crate::state::{RunState, RunStatus};
use crate::store::{Error, RunFilter};

/// Most records one `read_history` call returns.
pub const READ_HISTORY_PAGE_MAX: usize = 10_000;
/// Most runs one `list_runs` call returns.
pub const LIST_RUNS_PAGE_MAX: usize = 1_000;

fn corrupt(key: &RunKey, seq: u64, detail: impl Into<String>) -> Error {
    Error::Corrupt {
        run: Some(key.clone()),
        seq: Some(seq),
        detail: detail.into(),
    }
}

impl Inner {
    /// A run's state from sled, with its lsn and history size, verified (see
    /// [`load_verified`]).
    pub(crate) fn load_state(&self, key: &RunKey) -> Result<Option<StoredState>, Error> {
        load_verified(&self.db, key)
    }

    pub(crate) fn run_state(&self, key: &RunKey) -> Result<Option<Arc<RunState>>, Error> {
        if let Some(s) = self.head().runs.get(key).and_then(|r| r.state.clone()) {
            return Ok(Some(s));
        }
        Ok(self.load_state(key)?.map(|s| Arc::new(s.state)))
    }

    pub(crate) fn read_history(
        &self,
        key: &RunKey,
        from_seq: u64,
        limit: usize,
    ) -> Result<Vec<EventRecord>, Error> {
        let from = from_seq.max(1);
        let limit = limit.min(READ_HISTORY_PAGE_MAX) as u64;
        // The tail first, then sled (see the module doc).
        let snapshot = self.head().runs.get(key).and_then(|r| {
            let state = r.state.as_ref()?;
            let tail: Vec<Arc<Rec>> = r
                .tail
                .iter()
                .filter(|t| t.seq + 1 >= from)
                .cloned()
                .collect();
            Some((state.last_seq, state.last_hash, tail))
        });
        let (last_seq, last_hash, tail) = match snapshot {
            Some(s) => s,
            None => match self.load_state(key)? {
                Some(s) => (s.state.last_seq, s.state.last_hash, Vec::new()),
                None => return Err(Error::NotFound(key.clone())),
            },
        };
        if limit == 0 || from > last_seq {
            return Ok(Vec::new());
        }
        let end = last_seq.min(from + limit - 1);
        let tail_first = tail.first().map_or(u64::MAX, |t| t.seq);
        let sled_end = end.min(tail_first - 1);
        // `prev` is the hash before `from`; `recs` the verified records from `from` on.
        let (mut prev, mut recs) = if from <= sled_end {
            self.sled_records(key, from, sled_end)?
        } else if from == 1 {
            (genesis_hash(key), Vec::new())
        } else if from > tail_first {
            let t = tail
                .iter()
                .find(|t| t.seq == from - 1)
                .ok_or_else(|| corrupt(key, from - 1, "the event is missing from memory"))?;
            (t.hash, Vec::new())
        } else {
            let (_, before) = self.sled_records(key, from - 1, from - 1)?;
            (
                before.last().map(|r| r.hash).ok_or_else(|| {
                    corrupt(key, from - 1, "the event is missing from the read models")
                })?,
                Vec::new(),
            )
        };
        let mut next = from + recs.len() as u64;
        if let Some(r) = recs.last() {
            prev = r.hash;
        }
        let tail_from = next;
        for t in tail.iter().filter(|t| t.seq >= tail_from && t.seq <= end) {
            if t.seq != next {
                return Err(corrupt(key, next, "the event is missing"));
            }
            if !t.verifies_after(&prev) {
                return Err(corrupt(
                    key,
                    t.seq,
                    "[STF-C2-HASH] the hash chain does not verify",
                ));
            }
            prev = t.hash;
            recs.push(Rec::clone(t));
            next += 1;
        }
        if next != end + 1 {
            return Err(corrupt(key, next, "the event is missing"));
        }
        if end == last_seq && prev != last_hash {
            return Err(corrupt(
                key,
                last_seq,
                "the last record does not match the run state's hash",
            ));
        }
        recs.iter()
            .map(|r| r.to_record().map_err(|e| corrupt(key, r.seq, e)))
            .collect()
    }

    pub(crate) fn sled_records(
        &self,
        key: &RunKey,
        lo: u64,
        hi: u64,
    ) -> Result<(Hash, Vec<Rec>), Error> {
        sled_records(&self.db, key, lo, hi)
    }

    pub(crate) async fn list_runs(
        &self,
        namespace: &str,
        filter: &RunFilter,
        after: Option<RunId>,
        limit: usize,
        now_ms: TimeMs,
        bogus: &std::collections::HashSet<RunKey>,
    ) -> Result<Vec<Arc<RunState>>, Error> {
        let limit = limit.min(LIST_RUNS_PAGE_MAX);
        let matches = |s: &RunState| {
            filter.status.is_none_or(|st| s.status == st)
                && filter
                    .workflow_type
                    .as_ref()
                    .is_none_or(|t| s.workflow_type == *t)
                && filter
                    .waiting
                    .as_ref()
                    .is_none_or(|c| s.waiting_on(now_ms).iter().any(|w| w.category() == c))
                && filter
                    .schedule
                    .as_ref()
                    .is_none_or(|n| s.schedule.as_ref().is_some_and(|r| r.name == *n))
                && filter.matches_id_and_time(s)
        };
        // Open runs are all in memory.
        if filter.waiting.is_some() || filter.status == Some(RunStatus::Running) {
            let head = self.head();
            return Ok(head
                .core
                .open_runs_desc(namespace, after)
                .filter(|s| matches(s))
                .take(limit)
                .cloned()
                .collect());
        }
        // Read-your-writes for sled: wait until the indexer applied everything queued.
        self.ask(Op::Sync).await?;
        // The most selective index the filter names; every filter is checked on each state.
        let searched = crate::embedded::search::index_prefix(namespace, filter);
        let by_search = searched.is_some();
        let (prefix, is_state) = match (searched, &filter.status, &filter.workflow_type) {
            (Some(p), _, _) => (p, false),
            (None, Some(st), _) => (keys::by_status_prefix(namespace, *st), false),
            (None, None, Some(t)) => (keys::by_type_prefix(namespace, t), false),
            (None, None, None) => (keys::state_prefix(namespace), true),
        };
        let mut hi = prefix.clone();
        match after {
            Some(id) => hi.extend_from_slice(id.as_bytes()),
            None => hi.extend_from_slice(&[0xff; 17]),
        }
        let mut out = Vec::new();
        for item in self.db.range(prefix.clone()..hi).rev() {
            if out.len() >= limit {
                break;
            }
            let (k, v) = item.map_err(sled_err)?;
            if k.len() != prefix.len() + 16 {
                continue;
            }
            let Some(run_id) = keys::trailing_run_id(&k) else {
                continue;
            };
            let key = RunKey::new(namespace, run_id);
            if bogus.contains(&key) {
                continue;
            }
            let state = if is_state {
                Some(Arc::new(keys::decode_state(&key, &v)?.state))
            } else if by_search {
                // sled holds everything queued before the Sync above: its state (checked
                // by its checksum, as in the scan of all states) is the run's as of this
                // list, read with one lookup.
                match self
                    .db
                    .get(keys::state(&key.to_bytes()))
                    .map_err(sled_err)?
                {
                    Some(v) => Some(Arc::new(keys::decode_state(&key, &v)?.state)),
                    None => None,
                }
            } else {
                self.run_state(&key)?
            };
            match state {
                Some(s) if matches(&s) => out.push(s),
                Some(_) => {}
                // A search entry may outlive its run's state when a repaired run was then
                // dropped (see `embedded::search`): it names nothing, and is skipped.
                None if by_search => {}
                None => {
                    return Err(Error::Corrupt {
                        run: Some(key),
                        seq: None,
                        detail: "an index names a run whose state is missing".into(),
                    });
                }
            }
        }
        Ok(out)
    }

    /// The blob at exactly `addr` (no fallback to a legacy blob: the caller decides).
    pub(crate) fn get_blob(&self, addr: &BlobAddr) -> Result<Option<Vec<u8>>, Error> {
        let hash = &addr.hash;
        if let Some((lsn, b)) = self.head().blobs.get(addr) {
            // A blob whose record is not durable yet is not shown.
            if *lsn > self.log.durable_lsn() {
                return Ok(None);
            }
            return Ok(Some(b.as_ref().clone()));
        }
        let Some(v) = self.db.get(keys::blob(addr)).map_err(sled_err)? else {
            return Ok(None);
        };
        if blake3::hash(&v).as_bytes() != hash {
            return Err(Error::Corrupt {
                run: None,
                seq: None,
                detail: format!(
                    "[STF-C2-BLOB] blob {} does not match its hash",
                    hex::encode(hash)
                ),
            });
        }
        Ok(Some(v.to_vec()))
    }
}

/// A run's state from sled, checked: its own checksum, and its last seq and hash against the
/// end of the run's stored chain (the last chunk, whose hashes verify along it). So a state
/// that is damaged, or older or newer than the events beside it, is never served.
pub(crate) fn load_verified(db: &sled::Db, key: &RunKey) -> Result<Option<StoredState>, Error> {
    let run = key.to_bytes();
    let Some(v) = db.get(keys::state(&run)).map_err(sled_err)? else {
        return Ok(None);
    };
    let stored = keys::decode_state(key, &v)?;
    let last_seq = stored.state.last_seq;
    let last = db
        .range(keys::chunk(&run, 0)..=keys::chunk(&run, u64::MAX))
        .next_back()
        .transpose()
        .map_err(sled_err)?;
    let Some((k, v)) = last else {
        return Err(corrupt(key, last_seq, "the run state has no stored events"));
    };
    let first_seq = keys::chunk_seq(&run, &k)
        .ok_or_else(|| corrupt(key, last_seq, "malformed event key in the read models"))?;
    let chunk = decode_chunk(key, first_seq, &v)?;
    let end = chunk.recs.last().map(|(_, r)| (r.seq, r.hash));
    if end != Some((last_seq, stored.state.last_hash)) {
        return Err(corrupt(
            key,
            last_seq,
            format!(
                "the run state (last seq {last_seq}) does not match the stored chain, which ends at seq {}",
                end.map_or(0, |(s, _)| s)
            ),
        ));
    }
    Ok(Some(stored))
}

/// Records `lo..=hi` of a run from sled, verified, with the hash before `lo`. Fails, naming
/// the run and seq, if any of them is missing or damaged.
pub(crate) fn sled_records(
    db: &sled::Db,
    key: &RunKey,
    lo: u64,
    hi: u64,
) -> Result<(Hash, Vec<Rec>), Error> {
    let run = key.to_bytes();
    let sled_corrupt = |seq: u64| {
        move |e: sled::Error| match sled_err(e) {
            Error::Corrupt { detail, .. } => corrupt(key, seq, detail),
            e => e,
        }
    };
    // The chunk holding `lo` is the last one starting at or before it.
    let first = db
        .range(keys::chunk(&run, 0)..=keys::chunk(&run, lo))
        .next_back()
        .transpose()
        .map_err(sled_corrupt(lo))?;
    let (k, v) =
        first.ok_or_else(|| corrupt(key, lo, "the event is missing from the read models"))?;
    let first_seq = keys::chunk_seq(&run, &k)
        .ok_or_else(|| corrupt(key, lo, "the event is missing from the read models"))?;
    let chunk = decode_chunk(key, first_seq, &v)?;
    if chunk.last_seq() < lo {
        return Err(corrupt(
            key,
            lo,
            "the event is missing from the read models",
        ));
    }
    let skip = (lo - first_seq) as usize;
    let prev = if skip == 0 {
        chunk.prev
    } else {
        chunk.recs[skip - 1].1.hash
    };
    let mut out: Vec<Rec> = chunk.recs.into_iter().skip(skip).map(|(_, r)| r).collect();
    let mut next = lo + out.len() as u64;
    if next <= hi {
        for item in db.range(keys::chunk(&run, next)..=keys::chunk(&run, hi)) {
            let (k, v) = item.map_err(sled_corrupt(next))?;
            if keys::chunk_seq(&run, &k) != Some(next) {
                return Err(corrupt(
                    key,
                    next,
                    "the event is missing from the read models",
                ));
            }
            let chunk = decode_chunk(key, next, &v)?;
            if out.last().map(|r| r.hash) != Some(chunk.prev) {
                return Err(corrupt(
                    key,
                    next,
                    "[STF-C2-HASH] the hash chain breaks between stored chunks",
                ));
            }
            next += chunk.recs.len() as u64;
            out.extend(chunk.recs.into_iter().map(|(_, r)| r));
        }
    }
    if next <= hi {
        return Err(corrupt(
            key,
            next,
            "the event is missing from the read models",
        ));
    }
    out.truncate((hi - lo + 1) as usize);
    Ok((prev, out))
}
