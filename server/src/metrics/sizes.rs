//! The store's size gauges, read at scrape: the embedded store's files in its data dir, or
//! the PostgreSQL store's `events` table (sampled, so that a fast scraper does not turn into
//! a stream of catalog queries).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use steadfast_postgres::PgStore;

use super::registry::CounterVec;

/// Least time between two size queries to PostgreSQL; scrapes in between see the last
/// sample.
pub const PG_SAMPLE_INTERVAL: Duration = Duration::from_secs(15);

/// Where the size gauges come from.
pub enum StoreSizes {
    /// The embedded store's data dir: `steadfast_log_bytes` and `steadfast_sled_bytes`.
    Embedded(PathBuf),
    /// A PostgreSQL store: `steadfast_log_bytes` is its `events` table; it has no sled.
    Postgres(PgSampler),
}

/// The PostgreSQL sizes, queried at most every [`PG_SAMPLE_INTERVAL`].
pub struct PgSampler {
    store: Arc<PgStore>,
    last: tokio::sync::Mutex<Option<(Instant, u64)>>,
}

impl PgSampler {
    /// Samples `store`.
    pub fn new(store: Arc<PgStore>) -> PgSampler {
        PgSampler {
            store,
            last: tokio::sync::Mutex::new(None),
        }
    }

    /// The `events` table's bytes: the last sample when it is recent, else a new one;
    /// `None` when the database cannot say (a gauge is no reason to fail a scrape).
    async fn events_bytes(&self) -> Option<u64> {
        // Held across the query: concurrent scrapes wait for one query, not issue several.
        let mut last = self.last.lock().await;
        if let Some((at, bytes)) = *last
            && at.elapsed() < PG_SAMPLE_INTERVAL
        {
            return Some(bytes);
        }
        match self.store.sizes().await {
            Ok(s) => {
                *last = Some((Instant::now(), s.events_bytes));
                Some(s.events_bytes)
            }
            Err(e) => {
                tracing::warn!(error = %e, "metrics: could not read the store's size");
                last.map(|(_, b)| b)
            }
        }
    }
}

impl StoreSizes {
    /// Appends the size gauges to `out`.
    pub async fn render(&self, out: &mut String) {
        let mut log = CounterVec::gauge(
            "steadfast_log_bytes",
            "Bytes of the event log: the embedded store's segment files, or the PostgreSQL store's events table (pg_total_relation_size, sampled).",
            &[],
        );
        match self {
            StoreSizes::Embedded(dir) => {
                log.set(
                    &[],
                    dir_bytes(&dir.join(steadfast_engine::embedded::LOG_DIR)) as f64,
                );
                let mut sled = CounterVec::gauge(
                    "steadfast_sled_bytes",
                    "Bytes of the sled index (a cache rebuilt from the log) on disk.",
                    &[],
                );
                sled.set(
                    &[],
                    dir_bytes(&dir.join(steadfast_engine::embedded::SLED_DIR)) as f64,
                );
                log.render(out);
                sled.render(out);
            }
            StoreSizes::Postgres(sampler) => {
                if let Some(bytes) = sampler.events_bytes().await {
                    log.set(&[], bytes as f64);
                }
                log.render(out);
            }
        }
    }
}

/// Total size of the files under `dir` (0 when it cannot be read: a gauge is no reason to
/// fail a scrape).
fn dir_bytes(dir: &Path) -> u64 {
    let mut total = 0;
    let mut stack: Vec<PathBuf> = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            match e.metadata() {
                Ok(m) if m.is_dir() => stack.push(e.path()),
                Ok(m) => total += m.len(),
                Err(_) => {}
            }
        }
    }
    total
}
