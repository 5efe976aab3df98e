//! The append path: one transaction per append.
//!
//! In order: the request id is claimed (a row keyed by it; a live one means a duplicate), and
//! the run's head row locked (`FOR UPDATE`), both in one round trip; the head must be at the
//! expected seq (else [`Error::Conflict`]); the events are applied to the state with the
//! engine's state machine, chained and checked against the limits; then the events, the head
//! (next seq, last hash, state), new blobs and the run's derived task and timer rows are
//! written in one pipelined round trip, and the transaction commits. Two nodes can never both
//! extend a history: the second one waits for the row lock and then finds the head moved; two
//! starts of one new run collide on the primary key, two open runs of one workflow id on a
//! partial unique index.

use std::collections::BTreeSet;
use std::sync::Arc;

use steadfast_engine::event::{Event, EventRecord, encode_record, genesis_hash, record_hash};
use steadfast_engine::payload::{BlobRef, Hash, INLINE_BYTES_MAX, PAYLOAD_BYTES_MAX};
use steadfast_engine::state::{ActivityPhase, RunState};
use steadfast_engine::store::core::derive_for_tables;
use steadfast_engine::store::limits::HistoryLimits;
use steadfast_engine::store::{
    APPEND_EVENTS_MAX, AppendRequest, Appended, Change, Error, REQUEST_DEDUP_WINDOW_MS, RequestKey,
};
use tokio_postgres::types::ToSql;

use crate::codec;
use crate::derived::{Heartbeats, heartbeating, load_heartbeats, write_derived};
use crate::{Inner, pg_err};

/// Longest namespace accepted (as in the embedded store, whose keys hold its length in a byte).
pub const NAMESPACE_LEN_MAX: usize = 255;

/// An append's events, encoded, with the blobs they refer to.
struct Prepared {
    events: Vec<(Event, Vec<u8>)>,
    new_blobs: Vec<(Hash, Vec<u8>)>,
    old_blobs: Vec<Hash>,
    blob_bytes: u64,
}

/// Checks the request's shape and limits, externalises large payloads and encodes the
/// attributes (the embedded store's rules, so both backends store the same records).
fn prepare(req: &mut AppendRequest) -> Result<Prepared, Error> {
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
    let mut p = Prepared {
        events: Vec::with_capacity(n),
        new_blobs: Vec::new(),
        old_blobs: Vec::new(),
        blob_bytes: 0,
    };
    for mut event in req.events.drain(..) {
        for payload in event.payloads_mut() {
            if let Some(b) = &payload.blob {
                if !payload.data.is_empty() {
                    return Err(Error::Invalid(
                        "a payload has both inline data and a blob reference".into(),
                    ));
                }
                p.blob_bytes += b.len;
                p.old_blobs.push(b.hash);
                continue;
            }
            if payload.data.len() > PAYLOAD_BYTES_MAX {
                return Err(Error::Invalid(format!(
                    "payload of {} bytes; the limit is PAYLOAD_BYTES_MAX = {PAYLOAD_BYTES_MAX}",
                    payload.data.len()
                )));
            }
            if payload.data.len() > INLINE_BYTES_MAX {
                let data = std::mem::take(&mut payload.data);
                let hash = *blake3::hash(&data).as_bytes();
                payload.blob = Some(BlobRef {
                    hash,
                    len: data.len() as u64,
                });
                p.blob_bytes += data.len() as u64;
                if !p.new_blobs.iter().any(|(h, _)| *h == hash) {
                    p.new_blobs.push((hash, data));
                }
            }
        }
        let attrs = event.encode_attrs();
        p.events.push((event, attrs));
    }
    Ok(p)
}

impl Inner {
    /// One append (see the module doc). Returns what it wrote and the changes to announce.
    pub(crate) async fn append(
        &self,
        mut req: AppendRequest,
        request: Option<RequestKey>,
    ) -> Result<(Appended, Vec<Change>), Error> {
        let p = prepare(&mut req)?;
        let key = &req.key;
        let ns = &key.namespace;
        let run = &key.run_id.0;
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(pg_err)?;
        if !req.wait_durable {
            // Losing this append in a crash is harmless (AppendRequest::wait_durable).
            tx.batch_execute("SET LOCAL synchronous_commit = off")
                .await
                .map_err(pg_err)?;
        }
        let head_stmt = tx
            .prepare_cached(
                "SELECT next_seq, state, history_bytes FROM runs \
                 WHERE namespace = $1 AND run_id = $2 FOR UPDATE",
            )
            .await
            .map_err(pg_err)?;
        let head_params: [&(dyn ToSql + Sync); 2] = [ns, run];
        let head = tx.query_opt(&head_stmt, &head_params);
        let first_seq = req.expected_next_seq as i64;
        let claimed = async {
            let Some(q) = &request else {
                return Ok(None);
            };
            let stmt = tx
                .prepare_cached(
                    "INSERT INTO requests (namespace, kind, id, run_id, seq, time_ms) \
                     VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (namespace, kind, id) DO UPDATE \
                     SET run_id = EXCLUDED.run_id, seq = EXCLUDED.seq, time_ms = EXCLUDED.time_ms \
                     WHERE requests.time_ms < EXCLUDED.time_ms - $7 RETURNING 1",
                )
                .await?;
            let kind = i16::from(q.kind.code());
            tx.query_opt(
                &stmt,
                &[
                    ns,
                    &kind,
                    &q.id,
                    run,
                    &first_seq,
                    &req.time_ms,
                    &REQUEST_DEDUP_WINDOW_MS,
                ],
            )
            .await
            .map(Some)
        };
        let (claimed, head) = futures::try_join!(claimed, head).map_err(pg_err)?;
        if let (Some(None), Some(q)) = (&claimed, &request) {
            let row = tx
                .query_one(
                    "SELECT run_id, seq FROM requests WHERE namespace = $1 AND kind = $2 AND id = $3",
                    &[ns, &i16::from(q.kind.code()), &q.id],
                )
                .await
                .map_err(pg_err)?;
            return Err(Error::Duplicate {
                run_id: steadfast_engine::ids::RunId(row.get(0)),
                seq: row.get::<_, i64>(1) as u64,
            });
        }
        let (base, bytes_before) = match &head {
            None => (None, 0),
            Some(row) => {
                let s = codec::decode_state(key, row.get(1), row.get(2))?;
                let next_seq: i64 = row.get(0);
                if s.last_seq + 1 != next_seq as u64 {
                    return Err(Error::Corrupt {
                        run: Some(key.clone()),
                        seq: Some(s.last_seq),
                        detail: format!(
                            "the run's head says next seq {next_seq}, its state last seq {}",
                            s.last_seq
                        ),
                    });
                }
                let b = s.history_bytes;
                (Some(s), b)
            }
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
            && let Some(run_id) = self.open_run_in(&tx, ns, wid).await?
        {
            return Err(Error::WorkflowIdInUse {
                workflow_id: wid.clone(),
                run_id,
            });
        }
        if !p.old_blobs.is_empty() {
            let hashes: Vec<&[u8]> = p.old_blobs.iter().map(|h| h.as_slice()).collect();
            let rows = tx
                .query(
                    "SELECT hash FROM blobs WHERE namespace IN ($1, '') AND hash = ANY($2)",
                    &[&crate::read::blob_namespace(ns), &hashes],
                )
                .await
                .map_err(pg_err)?;
            let known: BTreeSet<Vec<u8>> = rows.iter().map(|r| r.get(0)).collect();
            if let Some(h) = p.old_blobs.iter().find(|h| !known.contains(h.as_slice())) {
                return Err(Error::Invalid(format!(
                    "a payload refers to blob {} which is not stored",
                    hex::encode(h)
                )));
            }
        }

        let illegal = |source| Error::Illegal {
            run: key.clone(),
            source,
        };
        let mut prev = base
            .as_ref()
            .map_or_else(|| genesis_hash(key), |s| s.last_hash);
        let mut state: Option<RunState> = base.clone();
        let mut records = Vec::with_capacity(p.events.len());
        let mut encoded: Vec<Vec<u8>> = Vec::with_capacity(p.events.len());
        let mut bytes_after = bytes_before + p.blob_bytes;
        for (i, (event, attrs)) in p.events.into_iter().enumerate() {
            let seq = next + i as u64;
            let hash = record_hash(&prev, seq, req.time_ms, event.kind(), &attrs);
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
            encoded.push(encode_record(key, &rec, &attrs));
            records.push(rec);
            prev = hash;
        }
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

        // The head first: a new run's insert may collide (another node created it, or holds
        // the workflow id), which decides the answer before anything else is written.
        let state_bytes = codec::encode_state(&state);
        let next_seq = (state.last_seq + 1) as i64;
        let status = state.status.as_str();
        let open = state.is_open();
        let hash = state.last_hash.as_slice();
        let hb = bytes_after as i64;
        if base.is_none() {
            let stmt = tx
                .prepare_cached(
                    "INSERT INTO runs (namespace, run_id, workflow_id, workflow_type, status, \
                     open, next_seq, last_hash, state, history_bytes, started_ms, closed_ms) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12) \
                     ON CONFLICT DO NOTHING",
                )
                .await
                .map_err(pg_err)?;
            let inserted = tx
                .execute(
                    &stmt,
                    &[
                        ns,
                        run,
                        &state.workflow_id,
                        &state.workflow_type,
                        &status,
                        &open,
                        &next_seq,
                        &hash,
                        &state_bytes,
                        &hb,
                        &state.started_ms,
                        &state.closed_ms,
                    ],
                )
                .await
                .map_err(pg_err)?;
            if inserted == 0 {
                drop(tx);
                return Err(self.explain_collision(key, started_workflow_id).await);
            }
        } else {
            let stmt = tx
                .prepare_cached(
                    "UPDATE runs SET status = $3, open = $4, next_seq = $5, last_hash = $6, \
                     state = $7, history_bytes = $8, closed_ms = $9 \
                     WHERE namespace = $1 AND run_id = $2",
                )
                .await
                .map_err(pg_err)?;
            tx.execute(
                &stmt,
                &[
                    ns,
                    run,
                    &status,
                    &open,
                    &next_seq,
                    &hash,
                    &state_bytes,
                    &hb,
                    &state.closed_ms,
                ],
            )
            .await
            .map_err(pg_err)?;
        }

        crate::search::write(&tx, base.as_ref(), &state).await?;

        let heartbeats = if base.as_ref().is_some_and(heartbeating) || heartbeating(&state) {
            load_heartbeats(&tx, key).await?
        } else {
            Heartbeats::new()
        };
        let old = base
            .as_ref()
            .map(|s| derive_for_tables(s, &heartbeats))
            .unwrap_or_default();
        let new = derive_for_tables(&state, &heartbeats);
        let mut changes = Vec::new();

        let events_stmt = tx
            .prepare_cached(
                "INSERT INTO events (namespace, run_id, seq, record) \
                 SELECT $1, $2, * FROM unnest($3::bigint[], $4::bytea[])",
            )
            .await
            .map_err(pg_err)?;
        let seqs: Vec<i64> = records.iter().map(|r| r.seq as i64).collect();
        let events_params: [&(dyn ToSql + Sync); 4] = [ns, run, &seqs, &encoded];
        let events = tx.execute(&events_stmt, &events_params);
        let blobs = async {
            if p.new_blobs.is_empty() {
                return Ok(0);
            }
            let stmt = tx
                .prepare_cached(
                    "INSERT INTO blobs (namespace, hash, data) \
                     SELECT $1, * FROM unnest($2::bytea[], $3::bytea[]) ON CONFLICT DO NOTHING",
                )
                .await?;
            let hashes: Vec<&[u8]> = p.new_blobs.iter().map(|(h, _)| h.as_slice()).collect();
            let datas: Vec<&[u8]> = p.new_blobs.iter().map(|(_, d)| d.as_slice()).collect();
            // Scoped to the run's namespace: a blob is read only there.
            let blob_ns = crate::read::blob_namespace(ns);
            tx.execute(&stmt, &[&blob_ns, &hashes, &datas]).await
        };
        let stale_heartbeats = async {
            let stale: Vec<(i64, i64)> = heartbeats
                .keys()
                .filter(|(id, attempt)| {
                    !state.activities.get(id).is_some_and(|a| {
                        a.attempt == *attempt && matches!(a.phase, ActivityPhase::Started { .. })
                    })
                })
                .map(|(id, a)| (i64::from(*id), i64::from(*a)))
                .collect();
            if stale.is_empty() {
                return Ok(0);
            }
            let ids: Vec<i64> = stale.iter().map(|s| s.0).collect();
            let attempts: Vec<i64> = stale.iter().map(|s| s.1).collect();
            tx.execute(
                "DELETE FROM heartbeats WHERE namespace = $1 AND run_id = $2 AND (id, attempt) \
                 IN (SELECT * FROM unnest($3::bigint[], $4::bigint[]))",
                &[ns, run, &ids, &attempts],
            )
            .await
        };
        let derived = write_derived(&tx, key, old, new, true, &mut changes);
        let (_, _, _, ()) = futures::try_join!(
            async { events.await.map_err(pg_err) },
            async { blobs.await.map_err(pg_err) },
            async { stale_heartbeats.await.map_err(pg_err) },
            derived
        )?;
        tx.commit().await.map_err(pg_err)?;
        changes.push(Change::RunChanged {
            key: key.clone(),
            last_seq: state.last_seq,
        });
        self.count_records(n);
        Ok((
            Appended {
                records,
                state: Arc::new(state),
            },
            changes,
        ))
    }

    /// The open run of a workflow id, inside a transaction.
    async fn open_run_in(
        &self,
        tx: &deadpool_postgres::Transaction<'_>,
        namespace: &str,
        workflow_id: &str,
    ) -> Result<Option<steadfast_engine::ids::RunId>, Error> {
        let stmt = tx
            .prepare_cached(
                "SELECT run_id FROM runs WHERE namespace = $1 AND workflow_id = $2 AND open \
                 AND workflow_id <> ''",
            )
            .await
            .map_err(pg_err)?;
        let row = tx
            .query_opt(&stmt, &[&namespace, &workflow_id])
            .await
            .map_err(pg_err)?;
        Ok(row.map(|r| steadfast_engine::ids::RunId(r.get(0))))
    }

    /// Why a new run's insert found its row taken: another writer created the run first
    /// (a conflict at seq 1), or another open run holds the workflow id.
    async fn explain_collision(
        &self,
        key: &steadfast_engine::ids::RunKey,
        workflow_id: Option<String>,
    ) -> Error {
        if let Some(wid) = workflow_id {
            match self.open_run_for_workflow_id(&key.namespace, &wid).await {
                Ok(Some(run_id)) if run_id != key.run_id => {
                    return Error::WorkflowIdInUse {
                        workflow_id: wid,
                        run_id,
                    };
                }
                Err(e) => return e,
                _ => {}
            }
        }
        match self.run_state(key).await {
            Ok(Some(s)) => Error::Conflict {
                run: key.clone(),
                expected: 1,
                actual: s.last_seq + 1,
            },
            Ok(None) => Error::Unavailable(format!(
                "creating run {key} collided with a row that is gone now; retry"
            )),
            Err(e) => e,
        }
    }
}
