//! Durable appends per second through the embedded store, and bytes on disk per event.
//!
//! `cargo bench -p steadfast-engine --bench append` prints a table. Each appender appends to
//! its own run, one event (a signal with a ~100-byte payload) per append, waiting for
//! durability (C1). Env: `BENCH_SECS` (default 5) per row, `BENCH_APPENDERS` (default
//! "1,16,256").

use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use steadfast_engine::embedded::{EmbeddedOptions, EmbeddedStore};
use steadfast_engine::event::{self, Budget, Event};
use steadfast_engine::ids::{RunId, RunKey};
use steadfast_engine::payload::Payload;
use steadfast_engine::store::{AppendRequest, Store};

const PAYLOAD: &[u8] = br#"{"step":"classify","ticket":"T-10293","label":"billing","confidence":0.93,"note":"ok padding.."}"#;

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

fn started() -> Event {
    Event::RunStarted(event::RunStarted {
        workflow_type: "bench".into(),
        workflow_id: String::new(),
        task_queue: "q".into(),
        input: Payload::json(b"{}".to_vec()),
        run_timeout_ms: 0,
        budget: Budget::default(),
        continued_from: None,
        identity: "bench".into(),
        random_seed: 1,
        parent: None,
        forked_from: None,
        schedule: None,
        traceparent: None,
    })
}

fn signal() -> Event {
    Event::SignalReceived(event::SignalReceived {
        name: "step".into(),
        input: Payload::json(PAYLOAD.to_vec()),
        identity: "bench".into(),
        request_id: String::new(),
    })
}

/// Allocated bytes of every file under `dir` (what `du` reports).
fn du(dir: &Path) -> u64 {
    let mut total = 0;
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            match e.metadata() {
                Ok(m) if m.is_dir() => total += du(&e.path()),
                Ok(m) => total += m.blocks() * 512,
                Err(_) => {}
            }
        }
    }
    total
}

struct Row {
    appenders: usize,
    events: u64,
    secs: f64,
    p50_us: u64,
    p99_us: u64,
    syncs: u64,
    bytes_per_event: f64,
    sled_bytes_per_event: f64,
}

async fn run(appenders: usize, secs: u64) -> anyhow::Result<Row> {
    let dir = tempfile::tempdir()?;
    let (store, _) = EmbeddedStore::open(dir.path(), EmbeddedOptions::default())?;
    let store = Arc::new(store);
    let mut keys = Vec::new();
    for _ in 0..appenders {
        let key = RunKey::new("default", RunId::new_v7());
        store
            .append(AppendRequest {
                key: key.clone(),
                expected_next_seq: 1,
                events: vec![started()],
                time_ms: now_ms(),
                wait_durable: true,
            })
            .await?;
        keys.push(key);
    }
    let syncs0 = store.stats().syncs;
    let t0 = Instant::now();
    let until = t0 + Duration::from_secs(secs);
    let mut tasks = Vec::new();
    for key in keys {
        let store = Arc::clone(&store);
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::with_capacity(1 << 16);
            let mut next = 2;
            while Instant::now() < until {
                let t = Instant::now();
                let req = AppendRequest {
                    key: key.clone(),
                    expected_next_seq: next,
                    events: vec![signal()],
                    time_ms: now_ms(),
                    wait_durable: true,
                };
                store.append(req).await?;
                lat.push(t.elapsed().as_micros() as u64);
                next += 1;
            }
            anyhow::Ok(lat)
        }));
    }
    let mut lat = Vec::new();
    for t in tasks {
        lat.extend(t.await??);
    }
    let elapsed = t0.elapsed().as_secs_f64();
    let syncs = store.stats().syncs - syncs0;
    lat.sort_unstable();
    let pct = |p: f64| {
        lat.get(((lat.len() as f64 * p) as usize).min(lat.len().saturating_sub(1)))
            .copied()
            .unwrap_or(0)
    };
    let events = lat.len() as u64;
    let ix = store.index_stats();
    eprintln!(
        "  indexer: {} batches, {:.1} events/batch, {:.1} events/chunk, backlog {} B at the end, {} checkpoints",
        ix.batches,
        ix.events as f64 / ix.batches.max(1) as f64,
        ix.events as f64 / ix.chunks.max(1) as f64,
        ix.backlog_bytes,
        ix.checkpoints
    );
    store.checkpoint().await?;
    store.close().await?;
    drop(store);
    let total_events = (events + appenders as u64) as f64;
    Ok(Row {
        appenders,
        events,
        secs: elapsed,
        p50_us: pct(0.5),
        p99_us: pct(0.99),
        syncs,
        bytes_per_event: du(dir.path()) as f64 / total_events,
        sled_bytes_per_event: du(&dir.path().join("sled")) as f64 / total_events,
    })
}

/// Opens a store holding `runs` open runs (each started, with a workflow task scheduled),
/// left without a checkpoint as by a kill; returns the open time and its report.
async fn restart(
    runs: usize,
) -> anyhow::Result<(Duration, steadfast_engine::embedded::OpenReport)> {
    let dir = tempfile::tempdir()?;
    {
        let (store, _) = EmbeddedStore::open(dir.path(), EmbeddedOptions::default())?;
        let store = Arc::new(store);
        let mut tasks = Vec::new();
        for chunk in 0..16 {
            let store = Arc::clone(&store);
            tasks.push(tokio::spawn(async move {
                for _ in 0..runs / 16 + usize::from(chunk < runs % 16) {
                    let key = RunKey::new("default", RunId::new_v7());
                    let scheduled = Event::WorkflowTaskScheduled(event::WorkflowTaskScheduled {
                        task_queue: "q".into(),
                        attempt: 1,
                        not_before_ms: 0,
                    });
                    store
                        .append(AppendRequest {
                            key,
                            expected_next_seq: 1,
                            events: vec![started(), scheduled],
                            time_ms: now_ms(),
                            wait_durable: true,
                        })
                        .await?;
                }
                anyhow::Ok(())
            }));
        }
        for t in tasks {
            t.await??;
        }
    }
    let t0 = Instant::now();
    let (store, report) = EmbeddedStore::open(dir.path(), EmbeddedOptions::default())?;
    let elapsed = t0.elapsed();
    anyhow::ensure!(
        store.stats().open_runs == runs as u64,
        "all runs are open again"
    );
    Ok((elapsed, report))
}

fn main() -> anyhow::Result<()> {
    let secs: u64 = std::env::var("BENCH_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(5);
    let counts: Vec<usize> = std::env::var("BENCH_APPENDERS")
        .unwrap_or_else(|_| "1,16,256".into())
        .split(',')
        .filter_map(|s| s.trim().parse().ok())
        .collect();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    println!(
        "durable appends, 1 event (~{} B payload) per append, wait_durable = true, {secs} s per row",
        PAYLOAD.len()
    );
    println!(
        "{:>9} {:>10} {:>12} {:>9} {:>9} {:>12} {:>11} {:>12}",
        "appenders",
        "events",
        "events/s",
        "p50 us",
        "p99 us",
        "events/sync",
        "B/event",
        "sled B/ev"
    );
    for n in counts {
        let r = rt.block_on(run(n, secs))?;
        println!(
            "{:>9} {:>10} {:>12.0} {:>9} {:>9} {:>12.1} {:>11.0} {:>12.0}",
            r.appenders,
            r.events,
            r.events as f64 / r.secs,
            r.p50_us,
            r.p99_us,
            r.events as f64 / r.syncs.max(1) as f64,
            r.bytes_per_event,
            r.sled_bytes_per_event
        );
    }
    let runs = 10_000;
    let (t, report) = rt.block_on(restart(runs))?;
    println!(
        "restart with {runs} open runs, no checkpoint (the whole log replayed): {} ms ({} records replayed)",
        t.as_millis(),
        report.records_replayed
    );
    Ok(())
}
