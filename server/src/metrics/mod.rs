//! Prometheus metrics (`steadfast server --metrics-listen ADDR`).
//!
//! Two sources, so that nothing is counted twice and nothing is missed:
//! - **counters and latencies from appended records** ([`events`]): every change to a run
//!   is an append through [`MeteredStore`], the one place where every path passes; they are
//!   process-local (they start from zero when the process starts; Prometheus' `rate()` and
//!   `increase()` handle the reset), and recovery never appends, so a restart counts nothing
//!   again;
//! - **gauges from state** at each scrape: open runs, held runs, runs waiting by kind (read
//!   from the store's run states), log and sled sizes ([`sizes`]: the data dir, or the
//!   PostgreSQL `events` table, sampled), and the log's own counters of records and syncs.
//!
//! Label values that callers choose (workflow and activity types, models) are capped
//! ([`registry::LabelCap`]); run ids are never labels.

pub mod events;
pub mod http;
pub mod registry;
pub mod sizes;
pub mod store;

use std::collections::BTreeSet;
use std::sync::Arc;

use parking_lot::Mutex;
use steadfast_engine::event::{EventRecord, TimeMs};
use steadfast_engine::state::RunState;
use steadfast_engine::store::Store;

pub use self::sizes::StoreSizes;
pub use self::store::MeteredStore;
use registry::{CounterVec, HistogramVec};

/// [`steadfast_engine::log::RECORDS_PER_SYNC_BOUNDS`] as the histogram's bounds.
const RECORDS_PER_SYNC_BOUNDS: [f64; steadfast_engine::log::RECORDS_PER_SYNC_BOUNDS.len()] = {
    let mut out = [0.0; steadfast_engine::log::RECORDS_PER_SYNC_BOUNDS.len()];
    let mut i = 0;
    while i < out.len() {
        out[i] = steadfast_engine::log::RECORDS_PER_SYNC_BOUNDS[i] as f64;
        i += 1;
    }
    out
};

/// Most open runs read per scrape for the run gauges; past it the gauges cover the first
/// ones and `steadfast_metrics_open_runs_truncated` is 1.
pub const OPEN_RUNS_SCANNED_MAX: usize = 100_000;

/// Every waiting kind, listed at 0 when no run waits on it (`WaitingOn::category`).
pub const WAITING_KINDS: &[&str] = &[
    "activity",
    "timer",
    "signal",
    "budget",
    "child",
    "reconciliation",
    "workflow_task",
    "idle",
];

/// The metrics of one server process.
#[derive(Debug, Default)]
pub struct Metrics {
    events: Mutex<events::EventMetrics>,
}

impl Metrics {
    /// Every counter at zero.
    pub fn new() -> Metrics {
        Metrics::default()
    }

    /// Counts one durable append (see [`MeteredStore`]).
    pub fn appended(&self, records: &[EventRecord], state: &RunState, elapsed_s: f64) {
        self.events.lock().appended(records, state, elapsed_s);
    }

    /// Remembers when the open runs' pending tasks became ready, so that tasks scheduled
    /// before this process started are timed when a worker takes them. Counts nothing.
    pub async fn seed(&self, store: &dyn Store) -> anyhow::Result<()> {
        let keys = store.open_runs().await?;
        for key in keys.iter().take(OPEN_RUNS_SCANNED_MAX) {
            if let Some(s) = store.run_state(key).await? {
                self.events.lock().seed(&s);
            }
        }
        Ok(())
    }

    /// The exposition: the event counters, then the gauges read from `store` now, and the
    /// store's sizes from `sizes`.
    pub async fn render(
        &self,
        store: &dyn Store,
        sizes: Option<&StoreSizes>,
        now_ms: TimeMs,
    ) -> String {
        let mut out = String::with_capacity(16 * 1024);
        self.events.lock().render(&mut out);
        let gauges = self.run_gauges(store, now_ms).await;
        let mut open = CounterVec::gauge(
            "steadfast_runs_open",
            "Open runs, by workflow type (from the run states at scrape time).",
            &["workflow_type"],
        );
        let mut held = CounterVec::gauge(
            "steadfast_runs_held",
            "Open runs held because their code failed a workflow task (e.g. nondeterminism), by workflow type.",
            &["workflow_type"],
        );
        let mut waiting = CounterVec::gauge(
            "steadfast_runs_waiting",
            "Open runs waiting on each kind of thing (activity, timer, signal, budget, child, reconciliation, workflow_task, idle); a run waiting on two kinds counts in both.",
            &["kind"],
        );
        let mut truncated = CounterVec::gauge(
            "steadfast_metrics_open_runs_truncated",
            "1 when there were more open runs than one scrape reads (the run gauges then cover only the first ones).",
            &[],
        );
        for k in WAITING_KINDS {
            waiting.set(&[k], 0.0);
        }
        match gauges {
            Ok(g) => {
                for (t, n) in &g.open {
                    open.set(&[t], *n as f64);
                }
                for (t, n) in &g.held {
                    held.set(&[t], *n as f64);
                }
                for (k, n) in &g.waiting {
                    waiting.set(&[k], *n as f64);
                }
                truncated.set(&[], if g.truncated { 1.0 } else { 0.0 });
            }
            Err(e) => tracing::warn!(error = %e, "metrics: could not read the open runs"),
        }
        let mut total_open = CounterVec::gauge(
            "steadfast_runs_open_total",
            "Open runs held in memory by the store (all types).",
            &[],
        );
        let stats = store.stats();
        total_open.set(&[], stats.open_runs as f64);
        let mut records = CounterVec::counter(
            "steadfast_log_records_total",
            "History events written to the event log since the store was opened by this process (an append's events share one log record).",
            &[],
        );
        records.set(&[], stats.records as f64);
        let mut syncs = CounterVec::counter(
            "steadfast_log_syncs_total",
            "fdatasync calls of the event log since this process opened it (one per group-commit batch); events per sync = rate(steadfast_log_records_total) / rate(steadfast_log_syncs_total).",
            &[],
        );
        syncs.set(&[], stats.syncs as f64);
        let per_sync = stats.log.map(|log| {
            let mut h = HistogramVec::new(
                "steadfast_log_records_per_sync",
                "Log records made durable by each fdatasync of the event log (one record per append, plus one per newly stored large payload): how many concurrent appends group commit gathers into one sync.",
                &[],
                &RECORDS_PER_SYNC_BOUNDS,
            );
            h.set_buckets(&[], &log.records_per_sync, log.records as f64);
            h
        });
        for g in [
            &open,
            &held,
            &waiting,
            &truncated,
            &total_open,
            &records,
            &syncs,
        ] {
            g.render(&mut out);
        }
        if let Some(h) = per_sync {
            h.render(&mut out);
        }
        if let Some(sizes) = sizes {
            sizes.render(&mut out).await;
        }
        out
    }
    async fn run_gauges(&self, store: &dyn Store, now_ms: TimeMs) -> anyhow::Result<RunGauges> {
        let keys = store.open_runs().await?;
        let mut states = Vec::with_capacity(keys.len().min(OPEN_RUNS_SCANNED_MAX));
        for key in keys.iter().take(OPEN_RUNS_SCANNED_MAX) {
            // A run may close (or be dropped) between the two reads: then it is not open.
            if let Some(s) = store.run_state(key).await?
                && s.is_open()
            {
                states.push(s);
            }
        }
        let mut g = RunGauges {
            truncated: keys.len() > OPEN_RUNS_SCANNED_MAX,
            ..RunGauges::default()
        };
        let mut ev = self.events.lock();
        for s in &states {
            let t = ev.workflow_label(&s.workflow_type);
            *g.open.entry(t.clone()).or_default() += 1;
            if s.held.is_some() {
                *g.held.entry(t).or_default() += 1;
            }
            let kinds: BTreeSet<&'static str> =
                s.waiting_on(now_ms).iter().map(|w| w.category()).collect();
            for k in kinds {
                *g.waiting.entry(k.to_string()).or_default() += 1;
            }
        }
        Ok(g)
    }
}

#[derive(Debug, Default)]
struct RunGauges {
    open: std::collections::BTreeMap<String, u64>,
    held: std::collections::BTreeMap<String, u64>,
    waiting: std::collections::BTreeMap<String, u64>,
    truncated: bool,
}

/// What the endpoint serves: the metrics, and the store their gauges are read from.
pub struct Exporter {
    /// The counters.
    pub metrics: Arc<Metrics>,
    /// The store (the real one; reads only).
    pub store: Arc<dyn Store>,
    /// Where the log (and sled) sizes are read.
    pub sizes: Option<StoreSizes>,
}

impl Exporter {
    /// The exposition now.
    pub async fn render(&self) -> String {
        use steadfast_engine::clock::Clock;
        let now = steadfast_engine::clock::SystemClock.now_ms();
        self.metrics
            .render(self.store.as_ref(), self.sizes.as_ref(), now)
            .await
    }
}
