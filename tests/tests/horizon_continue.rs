//! Continue-as-new end to end (issue 4, point 6).
//!
//! `horizon.handover` (tests/src/bin/horizon-worker.rs) makes 30 LLM calls in one
//! `Conversation`, continuing as new every 10 calls and carrying the conversation (a
//! reference to its last stored input plus the messages after it) into the next run's input.
//!
//! Asserted:
//! - three runs, one workflow id, linked both ways: each run's `continued_to` names the next,
//!   whose `continued_from` names it; the first two ended `continued_as_new`, the last
//!   `completed`;
//! - `Client::await_result` and `steadfast run result` on the first run id both follow the
//!   chain to the final result;
//! - the conversation went on across runs: the last call's prompt tokens are those of the
//!   whole 30-step conversation, and the later runs' first calls refer to inputs stored by
//!   the run before (a run's input stays small: it carries a reference, not the transcript);
//! - the cold path: a new worker process (empty transcript cache) goes on with the final
//!   conversation in a fourth run; it resolves the chain with `GetBlob`, one blob per link,
//!   and its model sees the whole 40-step conversation.

mod horizon_common;

use std::time::Duration;

use anyhow::{Context, Result, ensure};
use horizon_common::{Stack, start_worker};
use serde_json::{Value, json};
use steadfast_proto::v1 as pb;
use steadfast_proto::v1::history_event::Attributes;
use steadfast_sdk::client::StartOptions;
use steadfast_sdk::llm::{self, ChatRequest, offline};
use steadfast_tests::cli;

const STEPS: u64 = 30;
const EVERY: u64 = 10;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn continue_as_new_hands_over_and_the_result_follows_the_chain() -> Result<()> {
    let mut stack = Stack::start()?;
    let client = stack.client().await?;
    let options = StartOptions {
        workflow_id: Some("handover-1".into()),
        ..Default::default()
    };
    let first = client
        .start_workflow(
            "horizon.handover",
            &json!({"steps": STEPS, "every": EVERY}),
            options,
        )
        .await?;
    let result: Value = client
        .await_result(&first.run_id, Duration::from_secs(60))
        .await?;

    // The chain, both ways.
    let mut runs: Vec<pb::RunInfo> = vec![client.describe(&first.run_id).await?];
    while !runs.last().unwrap().continued_to.is_empty() {
        let next = client.describe(&runs.last().unwrap().continued_to).await?;
        runs.push(next);
        ensure!(runs.len() <= 10, "the chain does not end");
    }
    ensure!(runs.len() as u64 == STEPS / EVERY, "{} runs", runs.len());
    for (i, r) in runs.iter().enumerate() {
        ensure!(r.workflow_id == "handover-1", "run {i}: {}", r.workflow_id);
        let expected = if i + 1 < runs.len() {
            pb::RunStatus::ContinuedAsNew
        } else {
            pb::RunStatus::Completed
        };
        ensure!(r.status() == expected, "run {i}: {:?}", r.status());
        if i > 0 {
            ensure!(
                r.continued_from == runs[i - 1].run_id,
                "run {i} continues {:?}, expected {}",
                r.continued_from,
                runs[i - 1].run_id
            );
        } else {
            ensure!(r.continued_from.is_empty());
        }
    }

    // The same final result, by the SDK and by the CLI, from the first run id.
    ensure!(result["turns"] == STEPS, "{result}");
    ensure!(result["messages"] == 1 + 2 * STEPS, "{result}");
    let (code, stdout, stderr) = cli(&stack.server.url(), &["run", "result", &first.run_id])?;
    ensure!(code == 0, "run result exited {code}: {stderr}");
    let printed: Value = serde_json::from_str(stdout.trim())
        .with_context(|| format!("run result printed {stdout:?}"))?;
    ensure!(printed == result, "CLI {printed} vs SDK {result}");
    ensure!(
        stderr.contains("continued as new"),
        "the CLI says it followed the chain: {stderr}"
    );

    // The conversation went on across the runs: the last call saw all 30 steps.
    let first_history = client.history(&first.run_id).await?;
    let system = first_history
        .iter()
        .find_map(|e| match &e.attributes {
            Some(Attributes::ActivityScheduled(a)) if a.activity_type == llm::ACTIVITY_NAME => {
                let r: ChatRequest = serde_json::from_slice(&a.input.as_ref()?.data).ok()?;
                r.messages.first().cloned()
            }
            _ => None,
        })
        .context("the first call's system prompt")?;
    let reply = offline::complete(&[offline::Message::new("user", "step 1")]);
    let expected_tokens = |steps: u64| {
        offline::count_tokens(system.text())
            + (1..=steps)
                .map(|i| offline::count_tokens(&format!("step {i}")))
                .sum::<u64>()
            + (steps - 1) * offline::count_tokens(&reply)
    };
    ensure!(
        result["last_input_tokens"] == expected_tokens(STEPS),
        "the last call saw {} tokens; the whole conversation has {}",
        result["last_input_tokens"],
        expected_tokens(STEPS)
    );
    for r in &runs[1..] {
        let history = client.history(&r.run_id).await?;
        let input_len = history
            .iter()
            .find_map(|e| match &e.attributes {
                Some(Attributes::RunStarted(s)) => s.input.as_ref().map(|p| p.data.len()),
                _ => None,
            })
            .context("RunStarted input")?;
        ensure!(
            input_len < 2 * llm::SERVER_INLINE_BYTES_MAX,
            "run {} starts with {input_len} bytes of input: the conversation should be carried by reference",
            r.run_id
        );
        let first_call = history
            .iter()
            .find_map(|e| match &e.attributes {
                Some(Attributes::ActivityScheduled(a)) if a.activity_type == llm::ACTIVITY_NAME => {
                    serde_json::from_slice::<ChatRequest>(&a.input.as_ref()?.data).ok()
                }
                _ => None,
            })
            .context("a call in the continued run")?;
        let t = first_call.transcript.context("a conversation request")?;
        ensure!(
            t.prev.is_some() && t.prev_messages > 0,
            "run {}: its first call refers to the transcript stored before: {t:?}",
            r.run_id
        );
    }
    eprintln!(
        "continue-as-new: {} runs of workflow id handover-1, result {}",
        runs.len(),
        json!({"turns": result["turns"], "messages": result["messages"], "last_input_tokens": result["last_input_tokens"]})
    );

    // The cold path: a fresh worker goes on with the conversation.
    stack.worker.kill9();
    stack.worker = start_worker(&stack.server.url(), &[])?;
    let more: Value = client
        .start_workflow(
            "horizon.handover",
            &json!({"steps": STEPS + 10, "done": STEPS, "conv": result["conv"]}),
            StartOptions::default(),
        )
        .await?
        .result(Duration::from_secs(60))
        .await?;
    ensure!(
        more["last_input_tokens"] == expected_tokens(STEPS + 10),
        "after a cold start the model saw {} tokens; the whole conversation has {}",
        more["last_input_tokens"],
        expected_tokens(STEPS + 10)
    );
    let stats: llm::CacheStats = client
        .start_workflow("horizon.stats", &(), StartOptions::default())
        .await?
        .result(Duration::from_secs(30))
        .await?;
    eprintln!("new worker's transcript cache: {stats:?}");
    ensure!(
        stats.misses == 1 && stats.blobs_fetched >= 10 && stats.hits >= 8,
        "one cold resolution walking the chain, then warm: {stats:?}"
    );
    Ok(())
}
