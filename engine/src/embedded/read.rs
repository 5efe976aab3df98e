//! Reads: run states, histories (verified against the chain), run lists and blobs.
//!
//! Read-your-writes without waiting for the indexer: the records of a run that are not in
//! sled yet are in its in-memory tail. A read snapshots the tail first, then reads sled: a
//! record leaves the tail only after the indexer wrote it to sled, so every record is in one
//! of the two.

use std::sync::Arc;

use crate::embedded::indexer::Op;
use crate::embedded::keys::{self, StoredState};
use crate::embedded::{Inner, sled_err};
use crate::event::{EventRecord, TimeMs, decode_record, genesis_hash};
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
    /// A run's state from sled, with its lsn and history size.
    pub(crate) fn load_state(&self, key: &RunKey) -> Result<Option<StoredState>, Error> {
        match self
            .db
            .get(keys::state(&key.to_bytes()))
            .map_err(sled_err)?
        {
            None => Ok(None),
            Some(v) => keys::decode_state(key, &v).map(Some),
        }
    }

    pub(crate) fn run_state(&self, key: &RunKey) -> Result<Option<Arc<RunState>>, Error> {
        if let Some(r) = self.head.lock().runs.get(key) {
            return Ok(Some(Arc::clone(&r.state)));
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
        let snapshot = self.head.lock().runs.get(key).map(|r| {
            let tail: Vec<(u64, Arc<[u8]>)> = r
                .tail
                .iter()
                .filter(|(s, _)| *s + 1 >= from)
                .cloned()
                .collect();
            (r.state.last_seq, r.state.last_hash, tail)
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
        let start = from - 1;
        let tail_first = tail.first().map_or(u64::MAX, |(s, _)| *s);
        // Raw records of seq `start..=end` (seq 0 is the genesis: nothing to read).
        let mut raw: Vec<(u64, Arc<[u8]>)> = Vec::with_capacity((end - start + 1) as usize);
        let sled_end = end.min(tail_first.saturating_sub(1));
        let sled_start = start.max(1);
        if sled_start <= sled_end {
            let run = key.to_bytes();
            let mut expected = sled_start;
            for item in self
                .db
                .range(keys::event(&run, sled_start)..=keys::event(&run, sled_end))
            {
                let (k, v) = item.map_err(|e| match sled_err(e) {
                    Error::Corrupt { detail, .. } => corrupt(key, expected, detail),
                    e => e,
                })?;
                let seq = k
                    .len()
                    .checked_sub(8)
                    .and_then(|i| k[i..].try_into().ok())
                    .map(u64::from_be_bytes);
                if seq != Some(expected) {
                    return Err(corrupt(
                        key,
                        expected,
                        "the event is missing from the read models",
                    ));
                }
                let (_, rec) = keys::split_event_value(&v)
                    .ok_or_else(|| corrupt(key, expected, "stored event is truncated"))?;
                raw.push((expected, Arc::from(rec)));
                expected += 1;
            }
            if expected <= sled_end {
                return Err(corrupt(
                    key,
                    expected,
                    "the event is missing from the read models",
                ));
            }
        }
        raw.extend(
            tail.into_iter()
                .filter(|(s, _)| *s >= start.max(1) && *s <= end),
        );
        let mut prev = genesis_hash(key);
        let mut out = Vec::with_capacity((end - from + 1) as usize);
        let mut expected = start.max(1);
        for (seq, bytes) in raw {
            if seq != expected {
                return Err(corrupt(key, expected, "the event is missing"));
            }
            let d = decode_record(&bytes).map_err(|e| corrupt(key, seq, e.to_string()))?;
            if d.key != *key || d.record.seq != seq {
                return Err(corrupt(
                    key,
                    seq,
                    format!("stored record is {} seq {}", d.key, d.record.seq),
                ));
            }
            if seq >= from {
                if !d.verifies_after(&prev) {
                    return Err(corrupt(
                        key,
                        seq,
                        "[STF-C2-HASH] the hash chain does not verify: the record was altered or its predecessor is damaged",
                    ));
                }
                out.push(d.record.clone());
            }
            prev = d.record.hash;
            expected += 1;
        }
        if expected != end + 1 {
            return Err(corrupt(key, expected, "the event is missing"));
        }
        if end == last_seq && prev != last_hash {
            return Err(corrupt(
                key,
                last_seq,
                "the last record does not match the run state's hash",
            ));
        }
        Ok(out)
    }

    pub(crate) async fn list_runs(
        &self,
        namespace: &str,
        filter: &RunFilter,
        after: Option<RunId>,
        limit: usize,
        now_ms: TimeMs,
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
        };
        // Open runs are all in memory.
        if filter.waiting.is_some() || filter.status == Some(RunStatus::Running) {
            let head = self.head.lock();
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
        let (prefix, is_state) = match (&filter.status, &filter.workflow_type) {
            (Some(st), _) => (keys::by_status_prefix(namespace, *st), false),
            (None, Some(t)) => (keys::by_type_prefix(namespace, t), false),
            (None, None) => (keys::state_prefix(namespace), true),
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
            let state = if is_state {
                Some(Arc::new(keys::decode_state(&key, &v)?.state))
            } else {
                self.run_state(&key)?
            };
            match state {
                Some(s) if matches(&s) => out.push(s),
                Some(_) => {}
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

    pub(crate) fn get_blob(&self, hash: &Hash) -> Result<Option<Vec<u8>>, Error> {
        if let Some(b) = self.head.lock().blobs.get(hash) {
            return Ok(Some(b.as_ref().clone()));
        }
        let Some(v) = self.db.get(keys::blob(hash)).map_err(sled_err)? else {
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
