//! `horizon-worker`: the worker of the long-horizon tests (tests/tests/horizon_*.rs).
//!
//! ```text
//! horizon-worker --addr http://127.0.0.1:PORT [--task-queue Q] [--transcript-cache-bytes N]
//! ```
//! The LLM is the built-in offline model (`llm.chat` registered with
//! `LlmClient::offline()`), so the transcript references are resolved by the real activity.
//!
//! Workflows (inputs are JSON objects; every field has a default):
//! - `horizon.chat` `{turns, pause_every, naive, tool_bytes}`: an agent loop of `turns`
//!   turns, each one LLM call then one `horizon.tool` call whose result goes back into the
//!   conversation. With `naive` it re-sends the whole transcript with `llm::chat` on every
//!   call (what the history would hold without references); otherwise it uses a
//!   `Conversation`. Every `pause_every` turns it waits for signal `go`, so that a test can
//!   measure the history at that turn. Result: [`ChatOutcome`].
//! - `horizon.handover` `{steps, every, done, conv}`: `steps` LLM calls in one
//!   `Conversation` (a user message "step i", then the call), continuing as new every
//!   `every` calls and carrying the conversation into the next run's input; `conv` and
//!   `done` go on with a conversation. Result: [`ChatOutcome`], with the conversation.
//! - `horizon.long` `{steps, every, pause_every, tools, done, summary}`: an agent loop of
//!   `steps` steps (a step is one recorded activity). Each turn is one LLM call (a fresh
//!   `Conversation` per run, seeded with a summary, as an agent with a bounded context does)
//!   and then the `tools` tool calls it asks for, run at once; it continues as new once a
//!   run made `every` steps, and waits for signal `go` at every multiple of `pause_every`
//!   steps (RSS samples). Result: `{"steps", "runs"}`.
//!
//! - `horizon.stats`: this worker's transcript cache counters (`llm::CacheStats`).
//!
//! Activities: `llm.chat`; `horizon.tool` `{turn, bytes}` (a deterministic text of `bytes`
//! bytes); `horizon.stats` (this process's transcript cache counters).

use std::time::Duration;

use clap::Parser;
use serde::{Deserialize, Serialize};
use serde_json::json;
use steadfast_sdk::activity::{ActivityContext, ActivityError};
use steadfast_sdk::llm::{self, ChatRequest, Conversation, LlmClient, Message};
use steadfast_sdk::worker::{Worker, WorkerOptions};
use steadfast_sdk::workflow::{ActivityOptions, RetryPolicy};
use steadfast_sdk::{Effect, WorkflowContext, WorkflowError};

#[derive(Parser)]
#[command(about = "The worker of the Steadfast long-horizon tests")]
struct Args {
    /// Server address.
    #[arg(long, env = "STEADFAST_ADDR", default_value = "http://127.0.0.1:7233")]
    addr: String,
    /// Task queue to poll.
    #[arg(long, default_value = "default")]
    task_queue: String,
    /// Most bytes of LLM transcripts cached (default: the SDK's).
    #[arg(long)]
    transcript_cache_bytes: Option<u64>,
}

/// The agent's system prompt (none of the offline model's task prompts: it answers with its
/// fixed short reply).
pub const SYSTEM_PROMPT: &str = "You are a research agent. Work step by step: call the \
     search tool, read what it returns, decide what to look up next. Keep going until told \
     to stop.";

/// What `horizon.chat` and `horizon.handover` return.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct ChatOutcome {
    /// Turns (LLM calls) made.
    pub turns: u32,
    /// Messages in the conversation at the end.
    pub messages: u64,
    /// Prompt tokens of the last call: the offline model counts every message it was
    /// given, so this proves the full transcript reached it.
    pub last_input_tokens: u64,
    /// `horizon.handover`: the conversation at the end, to go on with in another run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub conv: Option<Conversation>,
}

fn tool_options() -> ActivityOptions {
    ActivityOptions::default()
        .start_to_close(Duration::from_secs(20))
        .retry(RetryPolicy {
            initial_interval: Some(Duration::from_millis(100)),
            maximum_interval: Some(Duration::from_millis(500)),
            ..Default::default()
        })
}

#[derive(Debug, Serialize, Deserialize)]
struct ToolInput {
    turn: u32,
    bytes: usize,
}

/// A search result of exactly `bytes` bytes that names its turn.
fn tool_text(turn: u32, bytes: usize) -> String {
    let mut s = format!("search result {turn}: ");
    let filler = "the archive lists three related reports and one dataset; ";
    while s.len() < bytes {
        s.push_str(filler);
    }
    s.truncate(bytes);
    s
}

async fn tool(_: ActivityContext, input: ToolInput) -> Result<String, ActivityError> {
    Ok(tool_text(input.turn, input.bytes))
}

async fn stats(_: ActivityContext, _: ()) -> Result<llm::CacheStats, ActivityError> {
    Ok(llm::cache_stats())
}

// ---------------------------------------------------------------- horizon.chat

#[derive(Debug, Deserialize)]
#[serde(default)]
struct ChatInput {
    turns: u32,
    pause_every: u32,
    naive: bool,
    tool_bytes: usize,
}

impl Default for ChatInput {
    fn default() -> Self {
        ChatInput {
            turns: 10,
            pause_every: 0,
            naive: false,
            tool_bytes: 400,
        }
    }
}

fn start_messages() -> [Message; 2] {
    [
        Message::system(SYSTEM_PROMPT),
        Message::user("Find everything published about long-horizon agents."),
    ]
}

async fn chat_loop(ctx: WorkflowContext, input: ChatInput) -> Result<ChatOutcome, WorkflowError> {
    let mut conv = Conversation::new(ChatRequest::new(start_messages()));
    let mut naive: Vec<Message> = start_messages().into();
    let mut last_input_tokens = 0;
    for turn in 1..=input.turns {
        let answer = if input.naive {
            let a = llm::chat(&ctx, &ChatRequest::new(naive.clone())).await?;
            naive.push(a.to_message());
            a
        } else {
            conv.chat(&ctx).await?
        };
        last_input_tokens = answer.usage.input_tokens;
        let call_id = format!("call-{turn}");
        let found: String = ctx
            .activity(
                "horizon.tool",
                &ToolInput {
                    turn,
                    bytes: input.tool_bytes,
                },
            )
            .options(tool_options())
            .await?;
        if input.naive {
            naive.push(Message::tool_result(call_id, found));
        } else {
            conv.tool_result(call_id, found);
        }
        if input.pause_every > 0 && turn % input.pause_every == 0 && turn < input.turns {
            let () = ctx.wait_signal("go").await?;
        }
    }
    Ok(ChatOutcome {
        turns: input.turns,
        messages: if input.naive {
            naive.len() as u64
        } else {
            conv.len()
        },
        last_input_tokens,
        conv: None,
    })
}

// ---------------------------------------------------------------- horizon.handover

#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(default)]
struct HandoverInput {
    steps: u32,
    every: u32,
    done: u32,
    conv: Option<Conversation>,
    last_input_tokens: u64,
}

async fn handover(
    ctx: WorkflowContext,
    mut input: HandoverInput,
) -> Result<ChatOutcome, WorkflowError> {
    let mut conv = input
        .conv
        .take()
        .unwrap_or_else(|| Conversation::new(ChatRequest::new([Message::system(SYSTEM_PROMPT)])));
    let mut in_this_run = 0;
    while input.done < input.steps {
        if input.every > 0 && in_this_run == input.every {
            input.conv = Some(conv);
            return Err(WorkflowError::continue_as_new(&input));
        }
        input.done += 1;
        in_this_run += 1;
        conv.user(format!("step {}", input.done));
        input.last_input_tokens = conv.chat(&ctx).await?.usage.input_tokens;
    }
    Ok(ChatOutcome {
        turns: input.done,
        messages: conv.len(),
        last_input_tokens: input.last_input_tokens,
        conv: Some(conv),
    })
}

// ---------------------------------------------------------------- horizon.long

#[derive(Debug, Serialize, Deserialize)]
#[serde(default)]
struct LongInput {
    steps: u64,
    every: u64,
    pause_every: u64,
    tools: u64,
    done: u64,
    paused_at: u64,
    runs: u64,
    summary: String,
}

impl Default for LongInput {
    fn default() -> Self {
        LongInput {
            steps: 100,
            every: 0,
            pause_every: 0,
            tools: 1,
            done: 0,
            paused_at: 0,
            runs: 1,
            summary: "Nothing found yet.".into(),
        }
    }
}

async fn long(
    ctx: WorkflowContext,
    mut input: LongInput,
) -> Result<serde_json::Value, WorkflowError> {
    let mut conv = Conversation::new(ChatRequest::new([
        Message::system(SYSTEM_PROMPT),
        Message::user(format!("So far: {}", input.summary)),
    ]));
    let tools = input.tools.max(1);
    let mut in_this_run = 0;
    while input.done < input.steps {
        if input.every > 0 && in_this_run >= input.every {
            input.runs += 1;
            input.summary = format!("{} steps done; the last answer was noted.", input.done);
            return Err(WorkflowError::continue_as_new(&input));
        }
        if input.pause_every > 0
            && input.done > 0
            && input.done.is_multiple_of(input.pause_every)
            && input.paused_at != input.done
        {
            let () = ctx.wait_signal("go").await?;
            input.paused_at = input.done;
        }
        // One turn: the model, then the tool calls it asked for, at once.
        conv.chat(&ctx).await?;
        let n = tools.min(input.steps - input.done - 1);
        let calls: Vec<_> = (0..n)
            .map(|i| {
                ctx.activity::<String>(
                    "horizon.tool",
                    &ToolInput {
                        turn: (input.done + 1 + i) as u32,
                        bytes: 200,
                    },
                )
                .options(tool_options())
            })
            .collect();
        for (i, found) in futures::future::join_all(calls)
            .await
            .into_iter()
            .enumerate()
        {
            conv.tool_result(format!("call-{}", input.done + 1 + i as u64), found?);
        }
        input.done += 1 + n;
        in_this_run += 1 + n;
    }
    Ok(json!({"steps": input.done, "runs": input.runs}))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let args = Args::parse();
    if let Some(bytes) = args.transcript_cache_bytes {
        llm::set_cache_bytes_max(bytes);
    }
    let mut worker = Worker::new(args.addr.as_str(), WorkerOptions::new(args.task_queue));
    worker
        .register_workflow("horizon.chat", chat_loop)
        .register_workflow("horizon.handover", handover)
        .register_workflow("horizon.long", long)
        .register_workflow("horizon.stats", |ctx: WorkflowContext, _: ()| async move {
            Ok(ctx
                .activity::<llm::CacheStats>("horizon.stats", &())
                .await?)
        })
        .register_activity("horizon.tool", Effect::Read, tool)
        .register_activity("horizon.stats", Effect::Read, stats);
    llm::register(&mut worker, LlmClient::offline());
    eprintln!(
        "horizon-worker polling {} pid {}",
        args.addr,
        std::process::id()
    );
    worker.run().await?;
    Ok(())
}
