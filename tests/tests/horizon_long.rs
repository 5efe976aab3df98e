//! An agent loop of 10,000 steps completes with bounded worker memory (issue 4, point 6).
//!
//! `horizon.long` (tests/src/bin/horizon-worker.rs) is an agent loop of 10,000 steps, a step
//! being one recorded activity: each turn is one LLM call (a `Conversation`, the offline
//! model) and then the 4 tool calls it asks for, run at once (parallel tool calls, as
//! current models make them; it also keeps the test near 20 s in a debug build, where one
//! sequential step costs about 5 ms of CPU). It continues as new every 1,000 steps with a
//! short summary, as an agent with a bounded context window does: a single run of 10,000
//! steps would fit the event limit, but its conversation would grow without bound, and with
//! it every LLM call and the replay of its history after a worker restart. At every 1,000
//! steps (the start of each new run) the workflow waits for signal `go`, and the test samples
//! the worker's VmRSS there, and at the end.
//!
//! The worker caches LLM transcripts (the last one of each conversation stays until evicted);
//! that cache is bounded (64 MiB by default). The test sets it to 1 MiB, so that its bound
//! is reached within the test and any other growth would show.
//!
//! Asserted: the result says 10,000 steps in 10 runs; every run's history is about the same
//! size; the worker's RSS at step 10,000 is within 1 MiB (the cache) + 3 MiB of its RSS at
//! step 1,000, and within 2 MiB of its RSS at step 5,000 (growth with the steps would be 10
//! times, then 2 times).

mod horizon_common;

use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};
use horizon_common::{Stack, rss_kib, waits_for_signal};
use serde_json::{Value, json};
use steadfast_sdk::client::{ListOptions, StartOptions};
use steadfast_sdk::llm;

const STEPS: u64 = 10_000;
const EVERY: u64 = 1_000;
const TOOLS: u64 = 4;
const CACHE_BYTES: u64 = 1 << 20;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_steps_complete_with_bounded_worker_memory() -> Result<()> {
    let stack = Stack::start_with(&["--transcript-cache-bytes", &CACHE_BYTES.to_string()])?;
    let pid = stack.worker.pid().context("worker pid")?;
    let client = stack.client().await?;
    let started = Instant::now();
    let input = json!({"steps": STEPS, "every": EVERY, "pause_every": EVERY, "tools": TOOLS});
    let first = client
        .start_workflow("horizon.long", &input, StartOptions::default())
        .await?;
    // (steps, worker VmRSS KiB, seconds since the start)
    let mut samples: Vec<(u64, u64, f64)> = Vec::new();
    let mut paused: Vec<String> = Vec::new();
    for k in 1..STEPS / EVERY {
        let end = Instant::now() + Duration::from_secs(60);
        let run = loop {
            let (runs, _) = client
                .list(ListOptions {
                    waiting: Some("signal".into()),
                    ..Default::default()
                })
                .await?;
            if let Some(r) = runs
                .into_iter()
                .find(|r| waits_for_signal(r, "go") && !paused.contains(&r.run_id))
            {
                break r;
            }
            ensure!(Instant::now() < end, "no pause at step {}", k * EVERY);
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        samples.push((k * EVERY, rss_kib(pid)?, started.elapsed().as_secs_f64()));
        client.signal(&run.run_id, "go", &()).await?;
        paused.push(run.run_id);
    }
    let result: Value = client
        .await_result(&first.run_id, Duration::from_secs(120))
        .await?;
    samples.push((STEPS, rss_kib(pid)?, started.elapsed().as_secs_f64()));
    let elapsed = started.elapsed();
    ensure!(
        result == json!({"steps": STEPS, "runs": STEPS / EVERY}),
        "{result}"
    );

    // Every run's history is about the same size: bounded by continue-as-new.
    let mut sizes = Vec::new();
    let mut run_id = first.run_id.clone();
    loop {
        let r = client.describe(&run_id).await?;
        sizes.push((r.history_length, r.history_bytes));
        if r.continued_to.is_empty() {
            break;
        }
        run_id = r.continued_to;
    }
    ensure!(sizes.len() as u64 == STEPS / EVERY, "{} runs", sizes.len());
    let max = sizes.iter().map(|s| s.1).max().unwrap();
    let min = sizes.iter().map(|s| s.1).min().unwrap();
    ensure!(
        max as f64 <= min as f64 * 1.3,
        "history sizes per run: {sizes:?}"
    );
    let stats: llm::CacheStats = client
        .start_workflow("horizon.stats", &(), StartOptions::default())
        .await?
        .result(Duration::from_secs(30))
        .await?;

    eprintln!(
        "\n10,000-step agent loop (1 LLM call + {TOOLS} parallel tool calls per turn), \
         continue-as-new every 1,000 steps: {elapsed:.1?}"
    );
    eprintln!("{:>6} {:>14} {:>8}", "steps", "worker VmRSS", "time");
    for (steps, rss, t) in &samples {
        eprintln!("{steps:>6} {rss:>10} KiB {t:>7.1}s");
    }
    eprintln!(
        "each run's history: {} to {} events, {min} to {max} bytes",
        sizes.iter().map(|s| s.0).min().unwrap(),
        sizes.iter().map(|s| s.0).max().unwrap()
    );
    eprintln!("worker transcript cache: {stats:?}");
    ensure!(stats.bytes <= CACHE_BYTES, "{stats:?}");
    let rss_at = |steps: u64| samples.iter().find(|s| s.0 == steps).unwrap().1;
    let (at_1000, at_5000, at_end) = (rss_at(1_000), rss_at(5_000), rss_at(STEPS));
    ensure!(
        at_end <= at_1000 + CACHE_BYTES / 1024 + 3 * 1024,
        "worker RSS grew from {at_1000} KiB at step 1,000 to {at_end} KiB at step 10,000"
    );
    ensure!(
        at_end <= at_5000 + 2 * 1024,
        "worker RSS grew from {at_5000} KiB at step 5,000 to {at_end} KiB at step 10,000"
    );
    Ok(())
}
