//! The search index of the PostgreSQL store: `run_search` rows (schema v4), written in the
//! append's transaction beside the run's row, so a filter on a search attribute or a failed
//! activity type reads the runs that have it, not every run of the namespace. Workflow ids
//! are served by an index on `runs`.

use std::collections::BTreeSet;

use deadpool_postgres::Transaction;
use steadfast_engine::search::attribute_index_value;
use steadfast_engine::state::RunState;
use steadfast_engine::store::Error;
use steadfast_engine::{RunId, RunKey};

use crate::pg_err;

/// `run_search.kind` of a search attribute (`value` = name len | name | type | value).
pub(crate) const KIND_ATTRIBUTE: i16 = 3;
/// `run_search.kind` of a failed activity type (`value` = the type).
pub(crate) const KIND_FAILED_ACTIVITY: i16 = 4;
/// `run_search.kind` of a fork (`value` = the original run's id, 16 bytes).
pub(crate) const KIND_FORKED_FROM: i16 = 5;

/// The `run_search` rows of a run's state, as (kind, value).
pub(crate) fn entries(s: &RunState) -> BTreeSet<(i16, Vec<u8>)> {
    let mut out = BTreeSet::new();
    for (n, v) in &s.search_attributes {
        out.insert((KIND_ATTRIBUTE, attribute_index_value(n, v)));
    }
    for t in &s.failed_activity_types {
        out.insert((KIND_FAILED_ACTIVITY, t.as_bytes().to_vec()));
    }
    if let Some(f) = &s.forked_from {
        out.insert((KIND_FORKED_FROM, f.run_id.as_bytes().to_vec()));
    }
    out
}

/// Writes the fork rows of every stored run (the v4 migration of a database whose runs
/// predate `run_search`), in `tx`. A state that does not decode is skipped: reading that run
/// reports its damage.
pub(crate) async fn backfill_forks(tx: &tokio_postgres::Transaction<'_>) -> Result<(), Error> {
    let rows = tx
        .query(
            "SELECT namespace, run_id, state, history_bytes FROM runs",
            &[],
        )
        .await
        .map_err(pg_err)?;
    let mut forks = 0u64;
    for row in rows {
        let ns: String = row.get(0);
        let key = RunKey::new(&ns, RunId(row.get(1)));
        let Ok(s) = crate::codec::decode_state(&key, row.get(2), row.get(3)) else {
            continue;
        };
        let Some(f) = s.forked_from else { continue };
        tx.execute(
            "INSERT INTO run_search (namespace, kind, value, run_id) VALUES ($1, $2, $3, $4) \
             ON CONFLICT DO NOTHING",
            &[
                &ns,
                &KIND_FORKED_FROM,
                &f.run_id.as_bytes().to_vec(),
                &key.run_id.0,
            ],
        )
        .await
        .map_err(pg_err)?;
        forks += 1;
    }
    if forks > 0 {
        tracing::info!(
            forks,
            "PostgreSQL search index: forks of runs stored before v4 indexed"
        );
    }
    Ok(())
}

/// Brings a run's `run_search` rows from what `prev` implies to what `next` does, in the
/// append's transaction. Nothing is sent when they are the same (the common case).
pub(crate) async fn write(
    tx: &Transaction<'_>,
    prev: Option<&RunState>,
    next: &RunState,
) -> Result<(), Error> {
    let unchanged = prev.is_some_and(|p| {
        p.search_attributes == next.search_attributes
            && p.failed_activity_types == next.failed_activity_types
            && p.forked_from == next.forked_from
    });
    if unchanged {
        return Ok(());
    }
    let old = prev.map(entries).unwrap_or_default();
    let new = entries(next);
    let ns = &next.key.namespace;
    let run = &next.key.run_id.0;
    for (kind, value) in old.difference(&new) {
        let stmt = tx
            .prepare_cached(
                "DELETE FROM run_search WHERE namespace = $1 AND kind = $2 AND value = $3 \
                 AND run_id = $4",
            )
            .await
            .map_err(pg_err)?;
        tx.execute(&stmt, &[ns, kind, value, run])
            .await
            .map_err(pg_err)?;
    }
    for (kind, value) in new.difference(&old) {
        let stmt = tx
            .prepare_cached(
                "INSERT INTO run_search (namespace, kind, value, run_id) VALUES ($1, $2, $3, $4) \
                 ON CONFLICT DO NOTHING",
            )
            .await
            .map_err(pg_err)?;
        tx.execute(&stmt, &[ns, kind, value, run])
            .await
            .map_err(pg_err)?;
    }
    Ok(())
}
