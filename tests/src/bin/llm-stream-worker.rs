//! `llm-stream-worker`: the worker of the live-token tests (tests/tests/live_tokens.rs): one
//! `llm.chat` call whose answer the SDK streams to the run's watchers.
//!
//! ```text
//! llm-stream-worker --addr http://127.0.0.1:PORT [--task-queue Q]
//! ```
//! The LLM from the `STEADFAST_LLM_*` variables (the tests point them at a fake
//! OpenAI-compatible server that streams server-sent events).
//!
//! Workflow `live.chat` `{prompt}`: one `llm.chat` with the prompt as the user message;
//! returns `{"text": <the recorded answer's text>}`.

use serde_json::{Value, json};
use steadfast_sdk::client::ClientConfig;
use steadfast_sdk::llm::{self, ChatRequest, Message};
use steadfast_sdk::worker::{Worker, WorkerOptions};
use steadfast_sdk::{WorkflowContext, WorkflowError};

async fn chat(ctx: WorkflowContext, input: Value) -> Result<Value, WorkflowError> {
    let prompt = input["prompt"].as_str().unwrap_or("hello").to_owned();
    let answer = llm::chat(&ctx, &ChatRequest::new([Message::user(prompt)])).await?;
    Ok(json!({"text": answer.text()}))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .init();
    let mut addr = "http://127.0.0.1:7233".to_string();
    let mut task_queue = "live".to_string();
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let value = it
            .next()
            .ok_or_else(|| anyhow::anyhow!("{flag} needs a value"))?;
        match flag.as_str() {
            "--addr" => addr = value,
            "--task-queue" => task_queue = value,
            other => anyhow::bail!("unknown flag {other}: llm-worker --addr URL [--task-queue Q]"),
        }
    }
    let mut worker = Worker::new(
        ClientConfig::new(addr.as_str()).with_env_security(),
        WorkerOptions::new(task_queue),
    );
    worker
        .register_workflow("live.chat", chat)
        .register_activity(llm::ACTIVITY_NAME, llm::ACTIVITY_EFFECT, llm::chat_activity);
    eprintln!("llm-worker polling {addr}");
    worker.run().await?;
    Ok(())
}
