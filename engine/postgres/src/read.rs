//! Reads (run states, verified histories, run lists, blobs), retention and the
//! continue-as-new repair.

use steadfast_engine::embedded::{LIST_RUNS_PAGE_MAX, READ_HISTORY_PAGE_MAX};
use steadfast_engine::event::{EventRecord, TimeMs, decode_record, genesis_hash};
use steadfast_engine::ids::{RunId, RunKey};
use steadfast_engine::payload::{Hash, PAYLOAD_BYTES_MAX};
use steadfast_engine::state::{RunState, RunStatus};
use steadfast_engine::store::{Error, RunFilter};
use tokio_postgres::types::ToSql;

use crate::{Inner, codec, pg_err};

fn corrupt(key: &RunKey, seq: u64, detail: impl Into<String>) -> Error {
    Error::Corrupt {
        run: Some(key.clone()),
        seq: Some(seq),
        detail: detail.into(),
    }
}

impl Inner {
    pub(crate) async fn run_state(&self, key: &RunKey) -> Result<Option<RunState>, Error> {
        let client = self.client().await?;
        let stmt = client
            .prepare_cached(
                "SELECT state, history_bytes FROM runs WHERE namespace = $1 AND run_id = $2",
            )
            .await
            .map_err(pg_err)?;
        let row = client
            .query_opt(&stmt, &[&key.namespace, &key.run_id.0])
            .await
            .map_err(pg_err)?;
        row.map(|r| codec::decode_state(key, r.get(0), r.get(1)))
            .transpose()
    }

    pub(crate) async fn open_run_for_workflow_id(
        &self,
        namespace: &str,
        workflow_id: &str,
    ) -> Result<Option<RunId>, Error> {
        if workflow_id.is_empty() {
            return Ok(None);
        }
        let client = self.client().await?;
        let stmt = client
            .prepare_cached(
                "SELECT run_id FROM runs WHERE namespace = $1 AND workflow_id = $2 AND open \
                 AND workflow_id <> ''",
            )
            .await
            .map_err(pg_err)?;
        let row = client
            .query_opt(&stmt, &[&namespace, &workflow_id])
            .await
            .map_err(pg_err)?;
        Ok(row.map(|r| RunId(r.get(0))))
    }

    /// Newest first. Status and type are filtered by indexes; "waiting" (which depends on
    /// `now_ms`) is computed from the open runs' states, scanned page by page from the
    /// partial index of open runs.
    pub(crate) async fn list_runs(
        &self,
        namespace: &str,
        filter: &RunFilter,
        after: Option<RunId>,
        limit: usize,
        now_ms: TimeMs,
    ) -> Result<Vec<std::sync::Arc<RunState>>, Error> {
        let limit = limit.min(LIST_RUNS_PAGE_MAX);
        let client = self.client().await?;
        let mut sql = String::from(
            "SELECT run_id, state, history_bytes FROM runs WHERE namespace = $1 AND ($2::uuid IS NULL OR run_id < $2)",
        );
        let status = filter.status.map(RunStatus::as_str);
        let mut params: Vec<&(dyn ToSql + Sync)> = Vec::new();
        let ns = namespace.to_string();
        let after_id = after.map(|a| a.0);
        params.push(&ns);
        params.push(&after_id);
        if let Some(s) = &status {
            sql.push_str(&format!(" AND status = ${}", params.len() + 1));
            params.push(s);
        }
        if let Some(t) = &filter.workflow_type {
            sql.push_str(&format!(" AND workflow_type = ${}", params.len() + 1));
            params.push(t);
        }
        if filter.waiting.is_some() {
            sql.push_str(" AND open");
        }
        if let Some(w) = &filter.workflow_id {
            sql.push_str(&format!(" AND workflow_id = ${}", params.len() + 1));
            params.push(w);
        }
        if let Some(t) = &filter.started_after_ms {
            sql.push_str(&format!(" AND started_ms >= ${}", params.len() + 1));
            params.push(t);
        }
        if let Some(t) = &filter.started_before_ms {
            sql.push_str(&format!(" AND started_ms < ${}", params.len() + 1));
            params.push(t);
        }
        // A schedule's runs have workflow ids `NAME@slot` (names have no LIKE wildcards but
        // `_`); the state's schedule field decides, so a look-alike id started by hand is not
        // counted.
        let like = filter
            .schedule
            .as_ref()
            .map(|n| format!("{}@%", n.replace('_', "\\_")));
        if let Some(l) = &like {
            sql.push_str(&format!(" AND workflow_id LIKE ${}", params.len() + 1));
            params.push(l);
        }
        let searched: Vec<(i16, Vec<u8>)> = filter
            .attributes
            .iter()
            .map(|(n, v)| {
                (
                    crate::search::KIND_ATTRIBUTE,
                    steadfast_engine::search::attribute_index_value(n, v),
                )
            })
            .chain(
                filter
                    .failed_activity
                    .iter()
                    .map(|t| (crate::search::KIND_FAILED_ACTIVITY, t.as_bytes().to_vec())),
            )
            .chain(
                filter
                    .forked_from
                    .iter()
                    .map(|f| (crate::search::KIND_FORKED_FROM, f.as_bytes().to_vec())),
            )
            .collect();
        for (kind, value) in &searched {
            sql.push_str(&format!(
                " AND run_id IN (SELECT run_id FROM run_search WHERE namespace = $1 \
                 AND kind = ${} AND value = ${})",
                params.len() + 1,
                params.len() + 2
            ));
            params.push(kind);
            params.push(value);
        }
        let page = (limit.max(1) as i64).min(LIST_RUNS_PAGE_MAX as i64);
        sql.push_str(&format!(" ORDER BY run_id DESC LIMIT {page}"));
        let stmt = client.prepare_cached(&sql).await.map_err(pg_err)?;
        let mut out = Vec::new();
        let mut cursor = after_id;
        loop {
            let mut page_params = params.clone();
            page_params[1] = &cursor;
            let rows = client.query(&stmt, &page_params).await.map_err(pg_err)?;
            drop(page_params);
            let n = rows.len();
            let mut last = None;
            for r in &rows {
                let id: uuid::Uuid = r.get(0);
                last = Some(id);
                let key = RunKey::new(namespace, RunId(id));
                let s = codec::decode_state(&key, r.get(1), r.get(2))?;
                let waits = filter
                    .waiting
                    .as_ref()
                    .is_none_or(|c| s.waiting_on(now_ms).iter().any(|w| w.category() == c))
                    && filter
                        .schedule
                        .as_ref()
                        .is_none_or(|n| s.schedule.as_ref().is_some_and(|r| r.name == *n))
                    && filter
                        .build
                        .as_ref()
                        .is_none_or(|b| s.pinned_build.as_ref() == Some(b))
                    && filter
                        .text
                        .as_ref()
                        .is_none_or(|q| steadfast_engine::search::text_matches(&s, q));
                if waits {
                    out.push(std::sync::Arc::new(s));
                    if out.len() >= limit {
                        return Ok(out);
                    }
                }
            }
            // Without a waiting filter every row matched: one page is the answer.
            if (filter.waiting.is_none()
                && filter.schedule.is_none()
                && filter.build.is_none()
                && filter.text.is_none())
                || (n as i64) < page
            {
                return Ok(out);
            }
            cursor = last;
        }
    }

    /// Up to `limit` records from `from_seq`, each decoded and verified against its
    /// predecessor's hash, and the last against the run's head.
    pub(crate) async fn read_history(
        &self,
        key: &RunKey,
        from_seq: u64,
        limit: usize,
    ) -> Result<Vec<EventRecord>, Error> {
        let from = from_seq.max(1);
        let limit = limit.min(READ_HISTORY_PAGE_MAX) as u64;
        let client = self.client().await?;
        // One statement, one snapshot: the head and the records it covers.
        let stmt = client
            .prepare_cached(
                "SELECT r.next_seq, r.last_hash, e.seq, e.record FROM runs r \
                 LEFT JOIN events e ON e.namespace = r.namespace AND e.run_id = r.run_id \
                 AND e.seq >= $3 AND e.seq <= LEAST(r.next_seq - 1, $4) \
                 WHERE r.namespace = $1 AND r.run_id = $2 ORDER BY e.seq",
            )
            .await
            .map_err(pg_err)?;
        let lo = from as i64 - 1;
        let hi = (from + limit).saturating_sub(1).min(i64::MAX as u64) as i64;
        let rows = client
            .query(&stmt, &[&key.namespace, &key.run_id.0, &lo, &hi])
            .await
            .map_err(pg_err)?;
        let Some(first) = rows.first() else {
            return Err(Error::NotFound(key.clone()));
        };
        let last_seq = first.get::<_, i64>(0) as u64 - 1;
        let last_hash: Vec<u8> = first.get(1);
        if limit == 0 || from > last_seq {
            return Ok(Vec::new());
        }
        let end = last_seq.min(from + limit - 1);
        let mut prev: Hash = genesis_hash(key);
        let mut out = Vec::with_capacity((end - from + 1) as usize);
        let mut expected = if from == 1 { 1 } else { from - 1 };
        for r in &rows {
            let Some(seq) = r.get::<_, Option<i64>>(2) else {
                continue;
            };
            let seq = seq as u64;
            if seq != expected {
                return Err(corrupt(key, expected, "the event is missing"));
            }
            let bytes: Vec<u8> = r.get(3);
            let d = decode_record(&bytes)
                .map_err(|e| corrupt(key, seq, format!("[STF-C2-DECODE] {e}")))?;
            if d.key != *key || d.record.seq != seq {
                return Err(corrupt(
                    key,
                    seq,
                    format!(
                        "the stored record belongs to run {} seq {}",
                        d.key, d.record.seq
                    ),
                ));
            }
            if seq + 1 == from {
                // The record before the page: only its hash is needed (it is verified by
                // the read that covers it).
                prev = d.record.hash;
            } else {
                if !d.verifies_after(&prev) {
                    return Err(corrupt(
                        key,
                        seq,
                        "[STF-C2-HASH] the hash chain does not verify",
                    ));
                }
                prev = d.record.hash;
                out.push(d.record);
            }
            expected += 1;
        }
        if expected != end + 1 {
            return Err(corrupt(key, expected, "the event is missing"));
        }
        if end == last_seq && prev.as_slice() != last_hash.as_slice() {
            return Err(corrupt(
                key,
                last_seq,
                "the last record does not match the run's head",
            ));
        }
        Ok(out)
    }

    pub(crate) async fn put_blob(&self, namespace: &str, data: Vec<u8>) -> Result<Hash, Error> {
        let namespace = blob_namespace(namespace);
        if data.len() > PAYLOAD_BYTES_MAX {
            return Err(Error::Invalid(format!(
                "blob of {} bytes; the limit is PAYLOAD_BYTES_MAX = {PAYLOAD_BYTES_MAX}",
                data.len()
            )));
        }
        let hash = *blake3::hash(&data).as_bytes();
        let client = self.client().await?;
        let stmt = client
            .prepare_cached(
                "INSERT INTO blobs (namespace, hash, data) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING",
            )
            .await
            .map_err(pg_err)?;
        client
            .execute(&stmt, &[&namespace, &hash.as_slice(), &data])
            .await
            .map_err(pg_err)?;
        Ok(hash)
    }

    pub(crate) async fn get_blob(
        &self,
        namespace: &str,
        hash: &Hash,
    ) -> Result<Option<Vec<u8>>, Error> {
        let namespace = blob_namespace(namespace);
        let client = self.client().await?;
        // The namespace's own blob first, else a legacy one (namespace '', stored before blobs
        // were scoped), which every namespace may read.
        let stmt = client
            .prepare_cached(
                "SELECT data FROM blobs WHERE namespace IN ($1, '') AND hash = $2 \
                 ORDER BY namespace DESC LIMIT 1",
            )
            .await
            .map_err(pg_err)?;
        let Some(row) = client
            .query_opt(&stmt, &[&namespace, &hash.as_slice()])
            .await
            .map_err(pg_err)?
        else {
            return Ok(None);
        };
        let data: Vec<u8> = row.get(0);
        if blake3::hash(&data).as_bytes() != hash {
            return Err(Error::Corrupt {
                run: None,
                seq: None,
                detail: format!(
                    "[STF-C2-BLOB] blob {} does not match its hash",
                    hex::encode(hash)
                ),
            });
        }
        Ok(Some(data))
    }

    /// Drops up to `limit` runs closed before the cutoff, oldest first, with their events, in
    /// one statement (batched by `limit`; `FOR UPDATE SKIP LOCKED` lets two nodes sweep at once).
    pub(crate) async fn drop_closed_before(
        &self,
        closed_before_ms: TimeMs,
        limit: usize,
    ) -> Result<usize, Error> {
        let client = self.client().await?;
        let stmt = client
            .prepare_cached(
                "WITH d AS (SELECT namespace, run_id FROM runs WHERE NOT open AND closed_ms < $1 \
                 ORDER BY closed_ms LIMIT $2 FOR UPDATE SKIP LOCKED), \
                 e AS (DELETE FROM events USING d WHERE events.namespace = d.namespace \
                 AND events.run_id = d.run_id), \
                 s AS (DELETE FROM run_search USING d WHERE run_search.namespace = d.namespace \
                 AND run_search.run_id = d.run_id), \
                 r AS (DELETE FROM runs USING d WHERE runs.namespace = d.namespace \
                 AND runs.run_id = d.run_id RETURNING 1) \
                 SELECT count(*) FROM r",
            )
            .await
            .map_err(pg_err)?;
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let row = client
            .query_one(&stmt, &[&closed_before_ms, &limit])
            .await
            .map_err(pg_err)?;
        Ok(row.get::<_, i64>(0) as usize)
    }

    pub(crate) async fn open_runs(&self) -> Result<Vec<RunKey>, Error> {
        let client = self.client().await?;
        let rows = client
            .query(
                "SELECT r.namespace, r.run_id FROM runs r WHERE r.status = $1",
                &[&RunStatus::Running.as_str()],
            )
            .await
            .map_err(pg_err)?;
        Ok(rows
            .iter()
            .map(|r| codec::run_key(r.get(0), r.get(1)))
            .collect())
    }

    /// The runs continued as new (their successors may be missing).
    pub(crate) async fn continued_runs(&self) -> Result<Vec<RunKey>, Error> {
        let client = self.client().await?;
        let rows = client
            .query(
                "SELECT r.namespace, r.run_id FROM runs r WHERE r.status = $1",
                &[&RunStatus::ContinuedAsNew.as_str()],
            )
            .await
            .map_err(pg_err)?;
        Ok(rows
            .iter()
            .map(|r| codec::run_key(r.get(0), r.get(1)))
            .collect())
    }
}

/// The namespace a blob is stored under: the request's, empty meaning the default one (as
/// for runs). The empty namespace in the table is kept for legacy blobs (see `get_blob`).
pub(crate) fn blob_namespace(namespace: &str) -> &str {
    if namespace.is_empty() {
        steadfast_engine::ids::DEFAULT_NAMESPACE
    } else {
        namespace
    }
}
