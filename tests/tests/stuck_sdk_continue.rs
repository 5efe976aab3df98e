//! Workflow code hands over to a new run before the history limit refuses its work (issue
//! 10, point 5; promise C6), through `ctx.continue_as_new_suggested()`.
//!
//! A real `steadfast server --history-events-max 40` (soft limit 36: past it new timers are
//! refused with `[STF-LIMIT]`), and an SDK worker in this process told to suggest
//! continue-as-new from 20 events. The `looper` workflow sleeps in a loop and continues as
//! new when told, three generations long. Each run hands over at the first task whose
//! history had 20 events or more, well before the soft limit: no task is refused or failed,
//! and the chain ends completed with every step counted.

use std::time::Duration;

use anyhow::{Context, Result, ensure};
use serde::{Deserialize, Serialize};
use steadfast_proto::v1 as pb;
use steadfast_sdk::client::{Client, StartOptions};
use steadfast_sdk::worker::{Worker, WorkerOptions};
use steadfast_sdk::{WorkflowContext, WorkflowError};
use steadfast_tests::Server;

const EVENTS_MAX: u64 = 40;
const SOFT_LIMIT: u64 = 36;
const SUGGEST_AFTER: u64 = 20;
const GENERATIONS: u32 = 3;

#[derive(Serialize, Deserialize)]
struct Carry {
    generation: u32,
    steps: u32,
}

async fn looper(ctx: WorkflowContext, carry: Carry) -> Result<Carry, WorkflowError> {
    let mut steps = carry.steps;
    loop {
        if ctx.continue_as_new_suggested() {
            if carry.generation + 1 == GENERATIONS {
                return Ok(Carry {
                    generation: carry.generation,
                    steps,
                });
            }
            return Err(WorkflowError::continue_as_new(&Carry {
                generation: carry.generation + 1,
                steps,
            }));
        }
        ctx.sleep(Duration::from_millis(1)).await;
        steps += 1;
    }
}

#[test]
fn a_workflow_told_to_continue_as_new_hands_over_before_the_limit() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let max = EVENTS_MAX.to_string();
    let server = Server::start_with(
        &dir.path().join("data"),
        None,
        &["--history-events-max", &max],
    )?;
    let rt = steadfast_tests::runtime();
    rt.block_on(async {
        let mut worker = Worker::new(server.url().as_str(), WorkerOptions::default());
        worker
            .register_workflow("looper", looper)
            .continue_as_new_after_events(SUGGEST_AFTER);
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let running = tokio::spawn(worker.run_until(async {
            let _ = stopped.await;
        }));
        let client = Client::connect(server.url().as_str()).await?;
        let first = client
            .start_workflow(
                "looper",
                &Carry {
                    generation: 0,
                    steps: 0,
                },
                StartOptions::default(),
            )
            .await?
            .run_id;
        // Follows the chain to its end (or fails after 60 s).
        let result = client
            .await_result::<Carry>(&first, Duration::from_secs(60))
            .await;
        let _ = stop.send(());
        let _ = running.await;
        let result = result.context("await_result")?;
        let mut chain = vec![client.describe(&first).await?];
        while chain.last().is_some_and(|i| !i.continued_to.is_empty()) {
            let next = chain
                .last()
                .map(|i| i.continued_to.clone())
                .unwrap_or_default();
            chain.push(client.describe(&next).await.context("describe successor")?);
        }
        let last = chain.pop().expect("the first run");
        ensure!(
            last.status() == pb::RunStatus::Completed,
            "the chain ended {:?}: {last:?}",
            last.status()
        );
        ensure!(
            chain.len() + 1 == GENERATIONS as usize
                && chain
                    .iter()
                    .all(|i| i.status() == pb::RunStatus::ContinuedAsNew),
            "{} hand-overs",
            chain.len()
        );
        for info in chain.iter().chain([&last]) {
            let history = client.history(&info.run_id).await.context("history")?;
            // The hand-over came at the first task started at 20 events or more: tasks start
            // every 5 events (scheduled, started, completed, TimerStarted, TimerFired).
            let started: Vec<u64> = history
                .iter()
                .filter(|e| e.kind() == pb::EventKind::WorkflowTaskStarted)
                .map(|e| e.seq)
                .collect();
            ensure!(
                started.last() == Some(&23)
                    && started[..started.len() - 1]
                        .iter()
                        .all(|s| *s < SUGGEST_AFTER),
                "run {} handed over after tasks at {started:?}",
                info.run_id
            );
            ensure!(
                info.history_length < SOFT_LIMIT,
                "run {} reached {} events",
                info.run_id,
                info.history_length
            );
            ensure!(
                !history
                    .iter()
                    .any(|e| e.kind() == pb::EventKind::WorkflowTaskFailed),
                "a workflow task failed in run {}",
                info.run_id
            );
        }
        // Four sleeps per run (tasks at 3, 8, 13, 18 sleep; the one at 23 hands over).
        ensure!(
            result.generation + 1 == GENERATIONS && result.steps == 4 * GENERATIONS,
            "generation {} steps {}",
            result.generation,
            result.steps
        );
        Ok(())
    })
}
