//! Run search at scale in the embedded store: `list_runs` first and deep pages, unfiltered
//! and filtered, at 10k, 100k and 1M runs.
//!
//! `cargo bench -p steadfast-engine --bench search` prints a table (the median of
//! [`REPEATS`] calls per cell, in ms). The runs are written through the store directly (not
//! over gRPC) by [`WRITERS`] concurrent appenders, each run in one append: RunStarted (workflow
//! id `ticket-NNNNNNN`, every 1000th with the schedule "nightly"), a search attribute
//! `customer=cK` (K = i mod 1000, so each value has 1 run in 1000) and RunCompleted. The store
//! grows from one size to the next. Env: `BENCH_RUNS` (default "10000,100000,1000000").
//!
//! Filters that use an index (workflow id, attribute, schedule) read only the runs they return;
//! the free-text filter has no index and reads runs newest first until the page is full, so it
//! is shown for contrast with a value only the oldest run has (the worst case).

use std::sync::Arc;
use std::time::Instant;

use steadfast_engine::embedded::{EmbeddedOptions, EmbeddedStore};
use steadfast_engine::event::{self, Budget, Event, ScheduleRef};
use steadfast_engine::ids::{RunId, RunKey};
use steadfast_engine::payload::Payload;
use steadfast_engine::search::SearchValue;
use steadfast_engine::store::{AppendRequest, RunFilter, Store};

/// Concurrent appenders while the runs are written.
const WRITERS: usize = 64;
/// Calls per cell; the median is shown.
const REPEATS: usize = 5;
/// Runs per page.
const PAGE: usize = 100;
/// Distinct values of the `customer` attribute.
const CUSTOMERS: usize = 1000;

fn run_events(i: usize) -> Vec<Event> {
    vec![
        Event::RunStarted(event::RunStarted {
            workflow_type: "bench".into(),
            workflow_id: format!("ticket-{i:07}"),
            task_queue: "q".into(),
            input: Payload::json(b"{}".to_vec()),
            run_timeout_ms: 0,
            budget: Budget::default(),
            continued_from: None,
            identity: "bench".into(),
            random_seed: 1,
            parent: None,
            forked_from: None,
            schedule: i.is_multiple_of(1000).then(|| ScheduleRef {
                name: "nightly".into(),
                slot_ms: i as i64,
            }),
            traceparent: None,
        }),
        Event::SearchAttributesUpserted(event::SearchAttributesUpserted {
            command_seq: 0,
            attributes: [(
                "customer".to_string(),
                SearchValue::Keyword(format!("c{}", i % CUSTOMERS)),
            )]
            .into(),
        }),
        Event::RunCompleted(event::RunCompleted {
            command_seq: 1,
            result: Payload::json(b"1".to_vec()),
        }),
    ]
}

/// Writes runs `from..to` (in order of `i` per writer); returns their ids.
async fn write(store: &Arc<EmbeddedStore>, from: usize, to: usize) -> anyhow::Result<Vec<RunId>> {
    let mut tasks = Vec::new();
    for w in 0..WRITERS {
        let store = Arc::clone(store);
        tasks.push(tokio::spawn(async move {
            let mut ids = Vec::new();
            for i in (from + w..to).step_by(WRITERS) {
                let key = RunKey::new("default", RunId::new_v7());
                store
                    .append(AppendRequest {
                        key: key.clone(),
                        expected_next_seq: 1,
                        events: run_events(i),
                        time_ms: 1_777_593_600_000 + i as i64,
                        wait_durable: true,
                    })
                    .await?;
                ids.push((i, key.run_id));
            }
            anyhow::Ok(ids)
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await??);
    }
    all.sort_by_key(|(i, _)| *i);
    Ok(all.into_iter().map(|(_, id)| id).collect())
}

/// Median ms of [`REPEATS`] calls, and how many runs the call returned.
async fn time(
    store: &EmbeddedStore,
    filter: &RunFilter,
    after: Option<RunId>,
) -> anyhow::Result<(f64, usize)> {
    let mut ms = Vec::new();
    let mut n = 0;
    for _ in 0..REPEATS {
        let t = Instant::now();
        n = store
            .list_runs("default", filter, after, PAGE, 0)
            .await?
            .len();
        ms.push(t.elapsed().as_secs_f64() * 1000.0);
    }
    ms.sort_by(f64::total_cmp);
    Ok((ms[ms.len() / 2], n))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let sizes: Vec<usize> = std::env::var("BENCH_RUNS")
        .unwrap_or_else(|_| "10000,100000,1000000".into())
        .split(',')
        .filter_map(|s| s.trim().parse().ok())
        .collect();
    let dir = tempfile::tempdir()?;
    let (store, _) = EmbeddedStore::open(dir.path(), EmbeddedOptions::default())?;
    let store = Arc::new(store);
    let mut ids: Vec<RunId> = Vec::new();
    println!(
        "| runs | query | matches | first page ms | deep page ms |\n|---:|---|---:|---:|---:|"
    );
    for &n in &sizes {
        let t = Instant::now();
        let more = write(&store, ids.len(), n).await?;
        ids.extend(more);
        store.checkpoint().await?;
        eprintln!(
            "{n} runs written in {:.1} s (and indexed)",
            t.elapsed().as_secs_f64()
        );
        // Newest first: a deep page starts after the run halfway through.
        let mut sorted = ids.clone();
        sorted.sort();
        let middle = sorted[sorted.len() / 2];
        let customer = |k: usize| RunFilter {
            attributes: vec![("customer".into(), SearchValue::Keyword(format!("c{k}")))],
            ..RunFilter::default()
        };
        let rows: Vec<(&str, String, RunFilter, Option<RunId>)> = vec![
            ("none", format!("{n}"), RunFilter::default(), Some(middle)),
            (
                "workflow id (the oldest run's)",
                "1".into(),
                RunFilter {
                    workflow_id: Some("ticket-0000000".into()),
                    ..RunFilter::default()
                },
                None,
            ),
            (
                "attribute customer=c7",
                format!("{}", n / CUSTOMERS),
                customer(7),
                Some(middle),
            ),
            (
                "schedule nightly",
                format!("{}", n / 1000),
                RunFilter {
                    schedule: Some("nightly".into()),
                    ..RunFilter::default()
                },
                Some(middle),
            ),
            (
                "text (no index; the oldest run's id)",
                "1".into(),
                RunFilter {
                    text: Some("ticket-0000000".into()),
                    ..RunFilter::default()
                },
                None,
            ),
        ];
        for (name, matches, filter, deep) in rows {
            let (first, got) = time(&store, &filter, None).await?;
            anyhow::ensure!(got > 0, "{name}: the first page is empty");
            let deep = match deep {
                Some(after) => format!("{:.2}", time(&store, &filter, Some(after)).await?.0),
                None => "-".into(),
            };
            println!("| {n} | {name} | {matches} | {first:.2} | {deep} |");
        }
    }
    Ok(())
}
