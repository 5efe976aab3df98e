//! Retention over PostgreSQL: how fast closed runs past the period are dropped (batched
//! deletes of their rows and events), with open runs beside them, and what it does to the
//! first page of `list_runs`. Starts a throwaway PostgreSQL; prints a table.
//!
//! ```text
//! cargo bench -p steadfast-postgres --bench retention            # 20,000 closed runs
//! RETENTION_RUNS=100000 cargo bench -p steadfast-postgres --bench retention
//! ```

use std::sync::Arc;
use std::time::Instant;

use steadfast_engine::event::{self, Event};
use steadfast_engine::store::contract::{RunDriver, T0, signal};
use steadfast_engine::store::{RunFilter, Store};
use steadfast_postgres::testing::PgCluster;
use steadfast_postgres::{PgOptions, PgStore};

/// Events per closed run: RunStarted, 8 signals of ~100 bytes, RunTerminated.
const EVENTS_PER_RUN: u64 = 10;
const OPEN_RUNS: usize = 1_000;
const BATCH: usize = 1_000;
const WRITERS: usize = 16;

#[tokio::main]
async fn main() {
    let runs: usize = std::env::var("RETENTION_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20_000);
    let Some(pg) = PgCluster::start() else {
        return;
    };
    let url = pg.create_database("retention");
    let store = Arc::new(
        PgStore::connect(&url, PgOptions::default())
            .await
            .expect("connect"),
    );
    let t = Instant::now();
    let mut writers = Vec::new();
    for w in 0..WRITERS {
        let store = store.clone();
        writers.push(tokio::spawn(async move {
            for i in (w..runs).step_by(WRITERS) {
                let mut r = RunDriver::start(store.as_ref(), &format!("closed-{i}"), "q").await;
                let signals = (0..8).map(|_| signal("s", vec![b'x'; 100])).collect();
                r.append(store.as_ref(), signals).await;
                r.time_ms = T0 + 1_000;
                r.append(
                    store.as_ref(),
                    vec![Event::RunTerminated(event::RunTerminated {
                        reason: "done".into(),
                        identity: "bench".into(),
                    })],
                )
                .await;
            }
            for i in (w..OPEN_RUNS).step_by(WRITERS) {
                RunDriver::start(store.as_ref(), &format!("open-{i}"), "q").await;
            }
        }));
    }
    for w in writers {
        w.await.expect("writer");
    }
    eprintln!(
        "wrote {runs} closed runs ({} events) and {OPEN_RUNS} open runs in {:?}",
        runs as u64 * EVENTS_PER_RUN,
        t.elapsed()
    );
    let first_page = || async {
        let t = Instant::now();
        let page = store
            .list_runs("default", &RunFilter::default(), None, 50, T0)
            .await
            .expect("list");
        (t.elapsed().as_secs_f64() * 1e3, page.len())
    };
    let (before_ms, _) = first_page().await;

    let t = Instant::now();
    let mut dropped = 0;
    let mut batches = Vec::new();
    loop {
        let b = Instant::now();
        let n = store
            .drop_closed_before(T0 + 2_000, BATCH)
            .await
            .expect("drop");
        if n == 0 {
            break;
        }
        batches.push(b.elapsed().as_secs_f64() * 1e3);
        dropped += n;
    }
    let secs = t.elapsed().as_secs_f64();
    let (after_ms, left) = first_page().await;
    let open = store
        .list_runs("default", &RunFilter::default(), None, OPEN_RUNS + 10, T0)
        .await
        .expect("list")
        .len();
    assert_eq!(dropped, runs, "every closed run was dropped");
    assert_eq!(open, OPEN_RUNS, "every open run is still there");
    batches.sort_by(f64::total_cmp);
    let median = batches[batches.len() / 2];
    println!(
        "\n| closed runs dropped | events | time | runs/s | events/s | batch of {BATCH}, median | list_runs first page before / after |"
    );
    println!("|---:|---:|---:|---:|---:|---:|---:|");
    println!(
        "| {dropped} | {} | {secs:.2} s | {:.0} | {:.0} | {median:.1} ms | {before_ms:.1} / {after_ms:.1} ms ({left} runs) |",
        dropped as u64 * EVENTS_PER_RUN,
        dropped as f64 / secs,
        (dropped as u64 * EVENTS_PER_RUN) as f64 / secs,
    );
    store.close().await;
}
