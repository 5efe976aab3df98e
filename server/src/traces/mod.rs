//! OpenTelemetry traces from the log (`steadfast server --otlp-endpoint URL`).
//!
//! Spans are a function of each run's history ([`spans`]), built when the event that closes
//! an operation is appended (the append hook of [`crate::metrics::MeteredStore`] marks the
//! run; the exporter task reads its history and sends the spans closed since the run's
//! export cursor). The cursor ([`cursor`]) is durable, so a restart re-sends only what the
//! collector had not acknowledged, and a re-sent span has the same ids and content.
//! Export is off the append path: the hook only marks the run (and, for a run first seen by
//! this process, records it durably in the cursor).

pub mod cursor;
pub mod given;
pub mod otlp;
pub mod spans;

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use parking_lot::Mutex;
use steadfast_engine::event::EventRecord;
use steadfast_engine::ids::RunKey;
use steadfast_engine::store::Store;
use tokio::sync::Notify;

use self::cursor::Cursor;

/// Most spans in one OTLP request.
pub const SPANS_PER_REQUEST_MAX: usize = 512;
/// Records read per history page when building a run's spans.
pub const HISTORY_PAGE: usize = 1000;
/// How long one OTLP request may take.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// First wait after the collector refused or could not be reached; doubles up to
/// [`RETRY_BACKOFF_MAX`].
pub const RETRY_BACKOFF_MIN: Duration = Duration::from_millis(200);
/// Longest wait between two tries.
pub const RETRY_BACKOFF_MAX: Duration = Duration::from_secs(30);
/// Most runs whose open operations the exporter keeps between exports (a few hundred bytes
/// each); a run past it is read again from seq 1 at its next export.
pub const BUILDERS_MAX: usize = 10_000;

/// The exporter of one server process.
pub struct Tracer {
    url: String,
    cursor: Mutex<Cursor>,
    dirty: Mutex<BTreeMap<RunKey, ()>>,
    wake: Notify,
    /// Per run exported by this process and still open: its operations open at its cursor.
    builders: Mutex<HashMap<RunKey, spans::SpanBuilder>>,
    /// History records read by the exporter since start (each should be read about once).
    records_read: std::sync::atomic::AtomicU64,
}

impl Tracer {
    /// Opens the cursor in `dir`, checks `endpoint`, and marks every run that may have
    /// spans not yet acknowledged: those in the cursor and the open runs of `store`.
    pub async fn open(endpoint: &str, dir: &Path, store: &dyn Store) -> anyhow::Result<Tracer> {
        let url = otlp::traces_url(endpoint);
        let parsed = reqwest::Url::parse(&url).map_err(|e| {
            let short: String = endpoint.chars().take(64).collect();
            anyhow::anyhow!(
                "--otlp-endpoint {short:?} is not a URL ({e}): give the collector's OTLP/HTTP base, e.g. http://127.0.0.1:4318"
            )
        })?;
        if !matches!(parsed.scheme(), "http" | "https") {
            anyhow::bail!(
                "--otlp-endpoint must be http:// or https:// (OTLP over HTTP with JSON), not {}://",
                parsed.scheme()
            );
        }
        let mut cursor = Cursor::open(dir)
            .with_context(|| format!("opening the trace export cursor in {}", dir.display()))?;
        for key in store
            .open_runs()
            .await
            .context("reading the open runs for the trace exporter")?
        {
            cursor
                .track(&key)
                .with_context(|| format!("writing {}", cursor.path().display()))?;
        }
        let dirty = cursor.acked.keys().map(|k| (k.clone(), ())).collect();
        Ok(Tracer {
            url,
            cursor: Mutex::new(cursor),
            dirty: Mutex::new(dirty),
            wake: Notify::new(),
            builders: Mutex::new(HashMap::new()),
            records_read: std::sync::atomic::AtomicU64::new(0),
        })
    }

    /// The hook: `records` were appended to `key` (durably). Marks the run for export.
    pub fn appended(&self, key: &RunKey, records: &[EventRecord]) {
        if records.is_empty() {
            return;
        }
        if let Err(e) = self.cursor.lock().track(key) {
            // Its spans are still sent by this process; only a crash before they are would
            // lose them.
            tracing::error!(run = %key, error = %e, "traces: could not record the run in the export cursor");
        }
        self.dirty.lock().insert(key.clone(), ());
        self.wake.notify_one();
    }

    /// Sends spans until the process stops.
    pub async fn run(self: Arc<Self>, store: Arc<dyn Store>) {
        let client = match reqwest::Client::builder().timeout(REQUEST_TIMEOUT).build() {
            Ok(c) => c,
            Err(e) => {
                tracing::error!(error = %e, "traces: cannot build the HTTP client; no spans are exported");
                return;
            }
        };
        let mut backoff = RETRY_BACKOFF_MIN;
        loop {
            let batch = std::mem::take(&mut *self.dirty.lock());
            if batch.is_empty() {
                self.wake.notified().await;
                continue;
            }
            let mut failed = false;
            for key in batch.into_keys() {
                if failed {
                    self.dirty.lock().insert(key, ());
                    continue;
                }
                if let Err(e) = self.export_run(&client, store.as_ref(), &key).await {
                    tracing::warn!(run = %key, error = %e, retry_ms = backoff.as_millis() as u64, "traces: export failed; retrying");
                    self.dirty.lock().insert(key, ());
                    failed = true;
                }
            }
            if failed {
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(RETRY_BACKOFF_MAX);
            } else {
                backoff = RETRY_BACKOFF_MIN;
            }
        }
    }

    /// Sends the spans of `key` closed since its cursor. The history is read from where the
    /// last export of this process stopped (the run's open operations kept in a
    /// [`SpanBuilder`]); only a run without one (first export since start, or evicted) is read
    /// from seq 1, skipping the spans the cursor says were acknowledged.
    async fn export_run(
        &self,
        client: &reqwest::Client,
        store: &dyn Store,
        key: &RunKey,
    ) -> anyhow::Result<()> {
        let Some(acked) = self.cursor.lock().acked.get(key).copied() else {
            return Ok(());
        };
        let cached = self.builders.lock().remove(key);
        // A builder is only ever stored at the cursor's seq; anything else is rebuilt.
        let mut b = cached
            .filter(|b| b.fed_seq() == acked)
            .unwrap_or_else(|| spans::SpanBuilder::new(key.clone()));
        let mut todo = Vec::new();
        let mut done = false;
        loop {
            let page = store
                .read_history(key, b.fed_seq() + 1, HISTORY_PAGE)
                .await?;
            self.records_read
                .fetch_add(page.len() as u64, std::sync::atomic::Ordering::Relaxed);
            let n = page.len();
            for r in &page {
                b.feed(r, &mut todo);
                done = r.event.is_terminal();
            }
            if n < HISTORY_PAGE {
                break;
            }
        }
        let last_seq = b.fed_seq();
        if last_seq == 0 {
            // Dropped by retention (or never written): nothing left to send.
            self.cursor.lock().ack(key, 0, true)?;
            return Ok(());
        }
        if last_seq <= acked && !done {
            self.keep(key, b);
            return Ok(());
        }
        todo.retain(|s| s.closed_seq > acked);
        for chunk in todo.chunks(SPANS_PER_REQUEST_MAX) {
            let resp = client
                .post(&self.url)
                .header("content-type", "application/json")
                .body(otlp::encode(chunk))
                .send()
                .await
                .context("sending spans to the OTLP collector")?;
            let status = resp.status();
            if !status.is_success() {
                anyhow::bail!("the OTLP collector answered {status}");
            }
        }
        self.cursor.lock().ack(key, last_seq, done)?;
        if !done {
            self.keep(key, b);
        }
        Ok(())
    }

    /// Keeps a run's builder for its next export; past [`BUILDERS_MAX`] runs one is dropped
    /// (its run is then read from seq 1 once more).
    fn keep(&self, key: &RunKey, b: spans::SpanBuilder) {
        let mut builders = self.builders.lock();
        if builders.len() >= BUILDERS_MAX
            && let Some(evict) = builders.keys().next().cloned()
        {
            builders.remove(&evict);
        }
        builders.insert(key.clone(), b);
    }
}

/// Opens the tracer and spawns its exporter task.
pub async fn start(
    endpoint: &str,
    dir: &Path,
    store: Arc<dyn Store>,
) -> anyhow::Result<(Arc<Tracer>, tokio::task::JoinHandle<()>)> {
    let tracer = Arc::new(Tracer::open(endpoint, dir, store.as_ref()).await?);
    tracing::info!(url = %tracer.url, "exporting traces over OTLP/HTTP");
    let task = tokio::spawn(tracer.clone().run(store));
    Ok((tracer, task))
}

#[cfg(test)]
mod tests;
