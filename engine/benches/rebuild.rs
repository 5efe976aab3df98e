//! How long the embedded store takes to rebuild its read models (sled) from the log.
//!
//! `cargo bench -p steadfast-engine --bench rebuild` writes `BENCH_EVENTS` events (default
//! 1,000,000: runs of 20 events, ~100-byte payloads, 256 appenders, every append durable),
//! closes the store, deletes the sled directory and opens the store again, timing the open:
//! every log record is read back, verified and re-applied. It also times a plain reopen (sled
//! intact) and prints a table.

use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use steadfast_engine::embedded::{EmbeddedOptions, EmbeddedStore};
use steadfast_engine::event::{self, Budget, Event};
use steadfast_engine::ids::{RunId, RunKey};
use steadfast_engine::payload::Payload;
use steadfast_engine::store::{AppendRequest, Store};

const PAYLOAD: &[u8] = br#"{"step":"classify","ticket":"T-10293","label":"billing","confidence":0.93,"note":"ok padding.."}"#;
const EVENTS_PER_RUN: u64 = 20;
const APPENDERS: usize = 256;

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

async fn write(store: Arc<EmbeddedStore>, runs: u64) -> anyhow::Result<()> {
    let next = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let mut tasks = Vec::new();
    for _ in 0..APPENDERS {
        let store = Arc::clone(&store);
        let next = Arc::clone(&next);
        tasks.push(tokio::spawn(async move {
            loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if i >= runs {
                    return anyhow::Ok(());
                }
                let key = RunKey::new("default", RunId::new_v7());
                for seq in 1..=EVENTS_PER_RUN {
                    let event = if seq == 1 { started() } else { signal() };
                    store
                        .append(AppendRequest {
                            key: key.clone(),
                            expected_next_seq: seq,
                            events: vec![event],
                            time_ms: 1_700_000_000_000 + seq as i64,
                            wait_durable: true,
                        })
                        .await?;
                }
            }
        }));
    }
    for t in tasks {
        t.await??;
    }
    Ok(())
}

fn main() -> anyhow::Result<()> {
    let events: u64 = std::env::var("BENCH_EVENTS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1_000_000);
    let runs = events.div_ceil(EVENTS_PER_RUN);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let dir = tempfile::tempdir()?;
    let t = Instant::now();
    rt.block_on(async {
        let (store, _) = EmbeddedStore::open(dir.path(), EmbeddedOptions::default())?;
        let store = Arc::new(store);
        write(Arc::clone(&store), runs).await?;
        store.close().await?;
        anyhow::Ok(())
    })?;
    let write_secs = t.elapsed().as_secs_f64();
    let log_bytes = du(&dir.path().join("log"));
    let sled_bytes = du(&dir.path().join("sled"));

    let t = Instant::now();
    let (store, report) = EmbeddedStore::open(dir.path(), EmbeddedOptions::default())?;
    let reopen = t.elapsed();
    drop(store);
    std::fs::remove_dir_all(dir.path().join("sled"))?;
    let t = Instant::now();
    let (store, rebuilt) = EmbeddedStore::open(dir.path(), EmbeddedOptions::default())?;
    let rebuild = t.elapsed();
    drop(store);
    let n = runs * EVENTS_PER_RUN;
    println!(
        "| events | runs | write s | log B/event | sled B/event | reopen (sled intact) | rebuild (sled deleted) | rebuild events/s |"
    );
    println!("|---|---|---|---|---|---|---|---|");
    println!(
        "| {n} | {runs} | {write_secs:.1} | {:.0} | {:.0} | {} ms ({} records replayed) | {} ms ({} records) | {:.0} |",
        log_bytes as f64 / n as f64,
        sled_bytes as f64 / n as f64,
        reopen.as_millis(),
        report.records_replayed,
        rebuild.as_millis(),
        rebuilt.records_replayed,
        n as f64 / rebuild.as_secs_f64(),
    );
    Ok(())
}
