//! `llm-worker`: the worker of the re-attach tests (tests/tests/reattach.rs): the SDK's own
//! `llm.chat` activity, configured from the `STEADFAST_LLM_*` environment (the tests point it
//! at a fake Responses API in background mode), and one workflow that calls it.
//!
//! ```text
//! llm-worker --addr http://127.0.0.1:PORT
//! ```
//! Workflow `chat` (input: a `ChatRequest`): one `llm::chat_with` call with the SDK's
//! options, except that a lost attempt is noticed after 2 s without a heartbeat and retried
//! after 200 ms, so that the tests wait seconds, not minutes; returns the `ChatResponse`.
//! Logs go to stderr (`RUST_LOG`), which the tests read.

use std::time::Duration;

use steadfast_sdk::llm::{self, ChatRequest, ChatResponse};
use steadfast_sdk::worker::{Worker, WorkerOptions};
use steadfast_sdk::workflow::RetryPolicy;
use steadfast_sdk::{WorkflowContext, WorkflowError};

async fn chat(ctx: WorkflowContext, request: ChatRequest) -> Result<ChatResponse, WorkflowError> {
    let options = llm::chat_options()
        .heartbeat_timeout(Duration::from_secs(2))
        .retry(RetryPolicy {
            initial_interval: Some(Duration::from_millis(200)),
            backoff_coefficient: Some(1.0),
            maximum_interval: None,
            maximum_attempts: 5,
            non_retryable_error_types: llm::NON_RETRYABLE_TYPES
                .iter()
                .map(|t| t.to_string())
                .collect(),
        });
    Ok(llm::chat_with(&ctx, &request, options).await?)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_writer(std::io::stderr)
        .init();
    let mut addr = None;
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        match flag.as_str() {
            "--addr" => addr = args.next(),
            other => anyhow::bail!("unknown flag {other:?} (usage: llm-worker --addr URL)"),
        }
    }
    let addr = addr.ok_or_else(|| anyhow::anyhow!("--addr URL is required"))?;
    // A bad LLM configuration stops the worker at start, not at its first call.
    llm::shared_client()?;
    let mut worker = Worker::new(addr.as_str(), WorkerOptions::new("default"));
    worker.register_workflow("chat", chat).register_activity(
        llm::ACTIVITY_NAME,
        llm::ACTIVITY_EFFECT,
        llm::chat_activity,
    );
    eprintln!("llm-worker polling {addr} pid {}", std::process::id());
    worker.run().await?;
    Ok(())
}
