//! The append path: validate and encode outside the lock, then, under it, check the head,
//! apply to a clone of the state, chain, submit to the log and update memory. sled is not
//! touched here (except to ask whether an old blob is already stored).

use std::sync::Arc;
use std::sync::atomic::Ordering;

use crate::embedded::blob::BlobAddr;
use crate::embedded::codec::{KIND_APPEND, KIND_BLOB, Rec, encode_append, encode_blob};
use crate::embedded::indexer::{AppendOp, Op};
use crate::embedded::keys::RequestHit;
use crate::embedded::{Head, Inner, PendingAppend, RunHead, keys, log_err, sled_err};
use crate::event::{Event, EventRecord, genesis_hash, record_hash};
use crate::log::Durable;
use crate::payload::{BlobRef, INLINE_BYTES_MAX, PAYLOAD_BYTES_MAX};
use crate::state::RunState;
use crate::store::limits::HistoryLimits;
use crate::store::{
    APPEND_EVENTS_MAX, AppendRequest, Appended, Error, REQUEST_DEDUP_WINDOW_MS, RequestKey,
};

/// Longest namespace accepted (its length is one byte of the run key).
pub(crate) const NAMESPACE_LEN_MAX: usize = 255;

/// An append's events, encoded, with the blobs they refer to.
pub(crate) struct Prepared {
    events: Vec<(Event, Vec<u8>)>,
    /// Blobs this append externalised: hash, data, its log record.
    new_blobs: Vec<(BlobAddr, Arc<Vec<u8>>, Vec<u8>)>,
    /// Blobs the caller's payloads already referred to (they must exist).
    old_blobs: Vec<BlobAddr>,
    /// Bytes of the blobs the events refer to (part of the history's size).
    blob_bytes: u64,
}

/// Checks the request's shape and limits, externalises large payloads and encodes the
/// attributes; all outside the store lock.
pub(crate) fn prepare(req: &mut AppendRequest) -> Result<Prepared, Error> {
    let n = req.events.len();
    if n == 0 {
        return Err(Error::Invalid("an append needs at least one event".into()));
    }
    if n > APPEND_EVENTS_MAX {
        return Err(Error::Invalid(format!(
            "{n} events in one append; the limit is APPEND_EVENTS_MAX = {APPEND_EVENTS_MAX}"
        )));
    }
    let ns = req.key.namespace.len();
    if ns == 0 || ns > NAMESPACE_LEN_MAX {
        return Err(Error::Invalid(format!(
            "namespace of {ns} bytes; it must be 1..={NAMESPACE_LEN_MAX}"
        )));
    }
    let mut new_blobs: Vec<(BlobAddr, Arc<Vec<u8>>, Vec<u8>)> = Vec::new();
    let mut old_blobs = Vec::new();
    let mut blob_bytes = 0u64;
    let mut events = Vec::with_capacity(n);
    for mut event in req.events.drain(..) {
        for p in event.payloads_mut() {
            if let Some(b) = &p.blob {
                if !p.data.is_empty() {
                    return Err(Error::Invalid(
                        "a payload has both inline data and a blob reference".into(),
                    ));
                }
                blob_bytes += b.len;
                old_blobs.push(BlobAddr::scoped(&req.key.namespace, b.hash)?);
                continue;
            }
            if p.data.len() > PAYLOAD_BYTES_MAX {
                return Err(Error::Invalid(format!(
                    "payload of {} bytes; the limit is PAYLOAD_BYTES_MAX = {PAYLOAD_BYTES_MAX}",
                    p.data.len()
                )));
            }
            if p.data.len() > INLINE_BYTES_MAX {
                let data = std::mem::take(&mut p.data);
                let hash = *blake3::hash(&data).as_bytes();
                p.blob = Some(BlobRef {
                    hash,
                    len: data.len() as u64,
                });
                blob_bytes += data.len() as u64;
                if !new_blobs.iter().any(|(a, _, _)| a.hash == hash) {
                    // Scoped to the run's namespace: a blob is read only there.
                    let addr = BlobAddr::scoped(&req.key.namespace, hash)?;
                    let record = encode_blob(&addr, &data);
                    new_blobs.push((addr, Arc::new(data), record));
                }
            }
        }
        let attrs = event.encode_attrs();
        events.push((event, attrs));
    }
    Ok(Prepared {
        events,
        new_blobs,
        old_blobs,
        blob_bytes,
    })
}

impl Inner {
    /// The part of an append under the store lock. Returns the log ticket and the result.
    pub(crate) fn commit(
        &self,
        head: &mut Head,
        req: &AppendRequest,
        p: Prepared,
        request: Option<RequestKey>,
    ) -> Result<(Durable, Appended), Error> {
        let key = &req.key;
        if let Some(q) = &request
            && let Some(hit) = self.request_hit(head, &key.namespace, q)?
            && req.time_ms.saturating_sub(hit.time_ms) <= REQUEST_DEDUP_WINDOW_MS
        {
            return Err(Error::Duplicate {
                run_id: hit.run_id,
                seq: hit.seq,
            });
        }
        let (base, bytes_before) = match head.runs.get(key).and_then(|r| r.latest()) {
            Some((s, b)) => (Some(s), b),
            None => match self.load_state(key)? {
                Some(s) => (Some(Arc::new(s.state)), s.history_bytes),
                None => (None, 0),
            },
        };
        let next = base.as_ref().map_or(1, |s| s.last_seq + 1);
        if req.expected_next_seq != next {
            return Err(Error::Conflict {
                run: key.clone(),
                expected: req.expected_next_seq,
                actual: next,
            });
        }
        let n = p.events.len() as u64;
        // A run created closed (e.g. the successor of a continue-as-new whose workflow id
        // another start took meanwhile) never holds its workflow id: no uniqueness check.
        let created_closed = p.events.iter().any(|(e, _)| e.is_terminal());
        let started_workflow_id = match (next, p.events.first()) {
            (1, Some((Event::RunStarted(a), _)))
                if !a.workflow_id.is_empty() && !created_closed =>
            {
                Some(a.workflow_id.clone())
            }
            _ => None,
        };
        if let Some(wid) = &started_workflow_id
            && let Some(run_id) = head.open_or_pending_run(&key.namespace, wid)
        {
            return Err(Error::WorkflowIdInUse {
                workflow_id: wid.clone(),
                run_id,
            });
        }
        for a in &p.old_blobs {
            if !self.blob_readable(head, a)? {
                return Err(Error::Invalid(format!(
                    "a payload refers to blob {} which is not stored in namespace {:?}",
                    hex::encode(a.hash),
                    a.namespace
                )));
            }
        }
        let illegal = |source| Error::Illegal {
            run: key.clone(),
            source,
        };
        let prev_hash = base
            .as_ref()
            .map_or_else(|| genesis_hash(key), |s| s.last_hash);
        let mut prev = prev_hash;
        let mut state: Option<RunState> = base.as_ref().map(|s| RunState::clone(s));
        let mut records = Vec::with_capacity(p.events.len());
        let mut recs: Vec<Arc<Rec>> = Vec::with_capacity(p.events.len());
        let mut bytes_after = bytes_before + p.blob_bytes;
        for (i, (event, attrs)) in p.events.into_iter().enumerate() {
            let seq = next + i as u64;
            let kind = event.kind();
            let hash = record_hash(&prev, seq, req.time_ms, kind, &attrs);
            let rec = EventRecord {
                seq,
                time_ms: req.time_ms,
                hash,
                event,
            };
            match &mut state {
                None => state = Some(RunState::start(key.clone(), &rec).map_err(illegal)?),
                Some(s) => s.apply(&rec).map_err(illegal)?,
            }
            bytes_after += attrs.len() as u64;
            recs.push(Arc::new(Rec {
                seq,
                time_ms: req.time_ms,
                kind,
                hash,
                attrs,
            }));
            records.push(rec);
            prev = hash;
        }
        // What is refused near and past the limits is the policy's decision (store::limits).
        let limits = HistoryLimits {
            events_max: self.options.history_events_max,
            bytes_max: self.options.history_bytes_max,
        };
        limits
            .check(next - 1 + n, bytes_after, records.iter().map(|r| &r.event))
            .map_err(|hit| Error::HistoryLimit {
                run: key.clone(),
                limit: hit.0,
            })?;
        let mut state =
            state.ok_or_else(|| Error::Invalid("an append needs at least one event".into()))?;
        state.history_bytes = bytes_after;
        let state = Arc::new(state);
        let Some(tx) = head.tx.clone() else {
            return Err(Error::Unavailable("the store is closed".into()));
        };

        let mut blobs = Vec::new();
        let mut log_records = Vec::with_capacity(p.new_blobs.len() + 1);
        for (addr, data, record) in p.new_blobs {
            if !self.blob_known(head, &addr)? {
                log_records.push((KIND_BLOB, record));
                blobs.push((addr, data));
            }
        }
        log_records.push((
            KIND_APPEND,
            encode_append(key, recs.iter().map(|r| r.as_ref()), request.as_ref()),
        ));
        let durable = self.log.submit(log_records).map_err(log_err)?;
        let lsn = durable.last_lsn();

        let mut backlog = 0u64;
        let first_blob_lsn = lsn - blobs.len() as u64;
        let mut ops = Vec::with_capacity(blobs.len() + 1);
        for (i, (addr, data)) in blobs.into_iter().enumerate() {
            let blob_lsn = first_blob_lsn + i as u64;
            backlog += data.len() as u64;
            head.blobs
                .insert(addr.clone(), (blob_lsn, Arc::clone(&data)));
            ops.push(Op::Blob {
                lsn: blob_lsn,
                addr,
                data,
            });
        }
        backlog += recs.iter().map(|r| r.attrs.len() as u64).sum::<u64>();
        let prev_status = base.as_ref().map(|s| s.status);
        let run = head
            .runs
            .entry(key.clone())
            .or_insert_with(RunHead::unpublished);
        run.latest = Some((Arc::clone(&state), bytes_after));
        run.pending += 1;
        run.unindexed += 1;
        if let Some(wid) = &started_workflow_id {
            head.pending_workflow_ids
                .insert((key.namespace.clone(), wid.clone()), key.run_id);
        }
        if let Some(q) = &request {
            head.requests.insert(
                (key.namespace.clone(), q.clone()),
                RequestHit {
                    run_id: key.run_id,
                    seq: next,
                    time_ms: req.time_ms,
                },
            );
        }
        head.pending.push_back(PendingAppend {
            lsn,
            key: key.clone(),
            state: Arc::clone(&state),
            history_bytes: bytes_after,
            recs: recs.clone(),
            started_workflow_id,
        });
        ops.push(Op::Append(AppendOp {
            lsn,
            key: key.clone(),
            prev_hash,
            recs,
            state: Arc::clone(&state),
            prev_status,
            prev_state: base.clone(),
            history_bytes: bytes_after,
            backlog,
            request: request.map(|q| (q, req.time_ms)),
        }));
        self.backlog_bytes.fetch_add(backlog, Ordering::Relaxed);
        for op in ops {
            if tx.send(op).is_err() {
                self.fail("the indexer thread stopped");
                break;
            }
        }
        self.records.fetch_add(n, Ordering::Relaxed);
        Ok((durable, Appended { records, state }))
    }

    /// What an earlier append with this request id led to, if any (not yet in sled, or in
    /// sled's index).
    fn request_hit(
        &self,
        head: &Head,
        namespace: &str,
        q: &RequestKey,
    ) -> Result<Option<RequestHit>, Error> {
        if let Some(hit) = head.requests.get(&(namespace.to_string(), q.clone())) {
            return Ok(Some(*hit));
        }
        match self.db.get(keys::request(namespace, q)).map_err(sled_err)? {
            None => Ok(None),
            // A damaged entry cannot prove a duplicate; the append goes ahead.
            Some(v) => Ok(keys::decode_request_value(&v)),
        }
    }

    /// Whether the blob at exactly `addr` is stored or on its way (its log record was
    /// submitted).
    pub(crate) fn blob_known(&self, head: &Head, addr: &BlobAddr) -> Result<bool, Error> {
        Ok(head.blobs.contains_key(addr)
            || self.db.contains_key(keys::blob(addr)).map_err(sled_err)?)
    }

    /// Whether a run of `addr`'s namespace may refer to the blob: stored there, or a legacy
    /// (unscoped) blob of the same hash.
    pub(crate) fn blob_readable(&self, head: &Head, addr: &BlobAddr) -> Result<bool, Error> {
        Ok(self.blob_known(head, addr)? || self.blob_known(head, &addr.legacy())?)
    }
}
