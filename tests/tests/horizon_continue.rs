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
//!   the run before (a run's input stays small: it carries a reference, not the transcript).

mod horizon_common;

use std::time::Duration;

use anyhow::{Context, Result, ensure};
use horizon_common::Stack;
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
    let stack = Stack::start()?;
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
    let expected_tokens = offline::count_tokens(system.text())
        + (1..=STEPS)
            .map(|i| offline::count_tokens(&format!("step {i}")))
            .sum::<u64>()
        + (STEPS - 1) * offline::count_tokens(&reply);
    ensure!(
        result["last_input_tokens"] == expected_tokens,
        "the last call saw {} tokens; the whole conversation has {expected_tokens}",
        result["last_input_tokens"]
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
        "continue-as-new: {} runs of workflow id handover-1, result {result}",
        runs.len()
    );
    Ok(())
}
