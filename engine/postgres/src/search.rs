//! The search index of the PostgreSQL store: `run_search` rows (schema v4), written in the
//! append's transaction beside the run's row, so a filter on a search attribute or a failed
//! activity type reads the runs that have it, not every run of the namespace. Workflow ids
//! are served by an index on `runs`.

use std::collections::BTreeSet;

use deadpool_postgres::Transaction;
use steadfast_engine::search::attribute_index_value;
use steadfast_engine::state::RunState;
use steadfast_engine::store::Error;

use crate::pg_err;

/// `run_search.kind` of a search attribute (`value` = name len | name | type | value).
pub(crate) const KIND_ATTRIBUTE: i16 = 3;
/// `run_search.kind` of a failed activity type (`value` = the type).
pub(crate) const KIND_FAILED_ACTIVITY: i16 = 4;

/// The `run_search` rows of a run's state, as (kind, value).
pub(crate) fn entries(s: &RunState) -> BTreeSet<(i16, Vec<u8>)> {
    let mut out = BTreeSet::new();
    for (n, v) in &s.search_attributes {
        out.insert((KIND_ATTRIBUTE, attribute_index_value(n, v)));
    }
    for t in &s.failed_activity_types {
        out.insert((KIND_FAILED_ACTIVITY, t.as_bytes().to_vec()));
    }
    out
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
