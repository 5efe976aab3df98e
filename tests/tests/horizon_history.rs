//! Long horizons without quadratic histories (issue 4, point 6): a 500-turn agent loop
//! whose history grows linearly.
//!
//! `horizon.chat` (tests/src/bin/horizon-worker.rs) runs 500 turns, each an `llm.chat` call
//! through a `Conversation` (the offline model) and a `horizon.tool` call whose 400-byte
//! result goes back into the conversation. It pauses every 100 turns, and the test reads
//! `RunInfo.history_bytes` there (the store's count: stored event attributes plus the blobs
//! they refer to).
//!
//! Asserted:
//! - linear growth: bytes(400) / bytes(200) < 2.2 and bytes(500) / bytes(100) < 5.5, and the
//!   bytes added per 100 turns do not grow with the turn (the largest of the last four
//!   hundreds is within 15% of the smallest);
//! - the transcript reached the model whole at every call: each call's recorded prompt
//!   tokens equal the tokens of its full transcript, which the test rebuilds from the history
//!   alone (resolving every reference by the hash of an earlier input);
//! - each reference points at an input longer than the server's inline limit (stored as a
//!   blob), and the worker resolved every reference from its cache (no `GetBlob`);
//! - the naive approach would be quadratic: what its history would hold is computed from the
//!   same transcripts (each call's input with the whole transcript); naive(400) /
//!   naive(200) > 3. A real naive run of 100 turns checks that computation (within 5%).

mod horizon_common;

use std::collections::HashMap;
use std::time::Duration;

use anyhow::{Context, Result, ensure};
use horizon_common::{Stack, describe_until, waits_for_signal};
use serde_json::json;
use steadfast_proto::v1 as pb;
use steadfast_proto::v1::history_event::Attributes;
use steadfast_sdk::client::{Client, StartOptions};
use steadfast_sdk::llm::{self, ChatRequest, ChatResponse, Message, offline};

const TURNS: u32 = 500;
const EVERY: u32 = 100;
const NAIVE_TURNS: u32 = 100;

/// Every llm.chat call of a history, in order: its input bytes as the workflow sent them,
/// the transcript the model had to see, and the prompt tokens it reported.
struct Call {
    input_len: usize,
    naive_len: usize,
    full: Vec<Message>,
    input_tokens: u64,
    referenced_len: Option<usize>,
}

/// Rebuilds every call's transcript from the history alone.
fn calls(history: &[pb::HistoryEvent]) -> Result<Vec<Call>> {
    let mut by_hash: HashMap<String, (usize, Vec<Message>)> = HashMap::new();
    let mut by_id: HashMap<u32, Call> = HashMap::new();
    let mut order = Vec::new();
    for e in history {
        match &e.attributes {
            Some(Attributes::ActivityScheduled(a)) if a.activity_type == llm::ACTIVITY_NAME => {
                let bytes = &a.input.as_ref().context("input")?.data;
                let request: ChatRequest = serde_json::from_slice(bytes)?;
                let (mut full, referenced_len) =
                    match request.transcript.as_ref().and_then(|t| t.prev.clone()) {
                        None => (Vec::new(), None),
                        Some(h) => {
                            let (len, m) = by_hash
                                .get(&h)
                                .with_context(|| format!("seq {}: unknown prev {h}", e.seq))?;
                            (m.clone(), Some(*len))
                        }
                    };
                full.extend(request.messages.iter().cloned());
                let naive = ChatRequest {
                    transcript: None,
                    messages: full.clone(),
                    ..request
                };
                let naive_len = serde_json::to_vec(&naive)?.len();
                by_hash.insert(
                    hex::encode(blake3::hash(bytes).as_bytes()),
                    (bytes.len(), full.clone()),
                );
                order.push(a.command_seq);
                by_id.insert(
                    a.command_seq,
                    Call {
                        input_len: bytes.len(),
                        naive_len,
                        full,
                        input_tokens: 0,
                        referenced_len,
                    },
                );
            }
            Some(Attributes::ActivityCompleted(c)) => {
                if let Some(call) = by_id.get_mut(&c.command_seq) {
                    let r: ChatResponse =
                        serde_json::from_slice(&c.result.as_ref().context("result")?.data)?;
                    call.input_tokens = r.usage.input_tokens;
                }
            }
            _ => {}
        }
    }
    Ok(order
        .into_iter()
        .filter_map(|id| by_id.remove(&id))
        .collect())
}

fn tokens(messages: &[Message]) -> u64 {
    messages
        .iter()
        .map(|m| offline::count_tokens(m.text()))
        .sum()
}

/// Runs `horizon.chat`, pausing every `EVERY` turns; returns (turn, events, bytes) samples.
async fn run_chat(
    client: &Client,
    turns: u32,
    naive: bool,
) -> Result<(String, Vec<(u32, u64, u64)>)> {
    let input = json!({"turns": turns, "pause_every": EVERY, "naive": naive, "tool_bytes": 400});
    let run = client
        .start_workflow("horizon.chat", &input, StartOptions::default())
        .await?;
    let mut samples = Vec::new();
    let mut last_len = 0;
    for turn in (EVERY..turns).step_by(EVERY as usize) {
        let info = describe_until(client, &run.run_id, Duration::from_secs(60), "pause", |r| {
            waits_for_signal(r, "go") && r.history_length > last_len
        })
        .await?;
        last_len = info.history_length;
        samples.push((turn, info.history_length, info.history_bytes));
        client.signal(&run.run_id, "go", &()).await?;
    }
    let outcome: serde_json::Value = run.result(Duration::from_secs(60)).await?;
    ensure!(outcome["turns"] == turns, "{outcome}");
    let info = client.describe(&run.run_id).await?;
    samples.push((turns, info.history_length, info.history_bytes));
    Ok((run.run_id, samples))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_500_turn_agent_loop_grows_its_history_linearly() -> Result<()> {
    // The SDK's idea of what the server stores as a blob must be the engine's.
    const { assert!(llm::SERVER_INLINE_BYTES_MAX == steadfast_engine::payload::INLINE_BYTES_MAX) };
    let stack = Stack::start()?;
    let client = stack.client().await?;
    let started = std::time::Instant::now();
    let (run_id, samples) = run_chat(&client, TURNS, false).await?;
    let elapsed = started.elapsed();

    let history = client.history(&run_id).await?;
    let calls = calls(&history)?;
    ensure!(calls.len() == TURNS as usize, "{} calls", calls.len());
    for (i, c) in calls.iter().enumerate() {
        ensure!(
            c.input_tokens == tokens(&c.full),
            "call {}: the model saw {} tokens, its full transcript has {}",
            i + 1,
            c.input_tokens,
            tokens(&c.full)
        );
        if let Some(len) = c.referenced_len {
            ensure!(
                len > llm::SERVER_INLINE_BYTES_MAX,
                "call {}: refers to an input of {len} bytes, which the server stores inline",
                i + 1
            );
        }
    }
    let referencing = calls.iter().filter(|c| c.referenced_len.is_some()).count();
    ensure!(
        referencing >= TURNS as usize - 2,
        "{referencing} calls refer to a transcript"
    );
    ensure!(
        calls.last().map(|c| c.full.len()) == Some(2 * TURNS as usize),
        "the last call sees the whole conversation"
    );

    // What a naive history would hold: the same, but every input with the whole transcript.
    let extra_at = |turn: u32| -> i64 {
        calls[..turn as usize]
            .iter()
            .map(|c| c.naive_len as i64 - c.input_len as i64)
            .sum()
    };
    let naive_at = |turn: u32, bytes: u64| (bytes as i64 + extra_at(turn)) as u64;

    eprintln!("\n500-turn agent loop ({elapsed:.1?}): history size at each 100 turns");
    eprintln!(
        "{:>5} {:>7} {:>14} {:>15} {:>16} {:>9}",
        "turn", "events", "history bytes", "bytes per turn", "naive (computed)", "naive/ref"
    );
    let mut prev = (0u32, 0u64);
    let mut per_turn = Vec::new();
    for &(turn, events, bytes) in &samples {
        let inc = (bytes - prev.1) / u64::from(turn - prev.0);
        per_turn.push(inc);
        let naive = naive_at(turn, bytes);
        eprintln!(
            "{turn:>5} {events:>7} {bytes:>14} {inc:>15} {naive:>16} {:>8.1}x",
            naive as f64 / bytes as f64
        );
        prev = (turn, bytes);
    }
    let bytes = |turn: u32| samples.iter().find(|s| s.0 == turn).map(|s| s.2).unwrap();
    let r42 = bytes(400) as f64 / bytes(200) as f64;
    let r51 = bytes(500) as f64 / bytes(100) as f64;
    ensure!(r42 < 2.2, "bytes(400)/bytes(200) = {r42:.2}: not linear");
    ensure!(r51 < 5.5, "bytes(500)/bytes(100) = {r51:.2}: not linear");
    let later = &per_turn[1..];
    let (lo, hi) = (later.iter().min().unwrap(), later.iter().max().unwrap());
    ensure!(
        *hi as f64 <= *lo as f64 * 1.15,
        "bytes per turn grow with the turn: {per_turn:?}"
    );
    let n42 = naive_at(400, bytes(400)) as f64 / naive_at(200, bytes(200)) as f64;
    ensure!(
        n42 > 3.0,
        "the naive history should grow quadratically: {n42:.2}"
    );

    // The worker resolved every reference from its cache.
    let stats: llm::CacheStats = client
        .start_workflow("horizon.stats", &(), StartOptions::default())
        .await?
        .result(Duration::from_secs(30))
        .await?;
    eprintln!("worker transcript cache: {stats:?}");
    ensure!(stats.blobs_fetched == 0, "cold resolutions: {stats:?}");
    ensure!(stats.hits >= referencing as u64, "{stats:?}");

    // The computation of the naive size, checked against a real naive run.
    let (naive_run, naive_samples) = run_chat(&client, NAIVE_TURNS, true).await?;
    let measured = naive_samples.last().unwrap().2;
    let computed = naive_at(NAIVE_TURNS, bytes(NAIVE_TURNS));
    let off = (measured as f64 - computed as f64).abs() / measured as f64;
    eprintln!(
        "naive run of {NAIVE_TURNS} turns ({naive_run}): {measured} bytes measured, {computed} computed ({:.1}% off)",
        off * 100.0
    );
    ensure!(
        off < 0.05,
        "the naive computation is {:.1}% off",
        off * 100.0
    );
    Ok(())
}
