//! How much room the store takes in the database, for the server's size gauges.

use steadfast_engine::store::Error;

use crate::{PgStore, pg_err};

/// Bytes the store's tables take, as PostgreSQL counts them (`pg_total_relation_size`: the
/// table, its TOAST and its indexes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PgSizes {
    /// The `events` table: every history, the PostgreSQL counterpart of the embedded log.
    pub events_bytes: u64,
}

impl PgStore {
    /// The sizes now. One catalog query; cheap, but not free on a busy database, so callers
    /// sample it (the server at most every `metrics::sizes::PG_SAMPLE_INTERVAL`).
    pub async fn sizes(&self) -> Result<PgSizes, Error> {
        let client = self.inner.client().await?;
        let row = client
            .query_one("SELECT pg_total_relation_size('events'::regclass)", &[])
            .await
            .map_err(pg_err)?;
        let events: i64 = row.get(0);
        Ok(PgSizes {
            events_bytes: u64::try_from(events).unwrap_or(0),
        })
    }
}
