//! `canary-worker`: the worker of the log canary (tests/tests/log_canary.rs). It runs an
//! agent whose secret travels through the places a real agent puts it: the LLM prompt, a
//! tool call the model asks for (its arguments), the tool's result, and the model's answer.
//!
//! ```text
//! canary-worker --addr http://127.0.0.1:PORT [--task-queue Q]
//! ```
//! Token and TLS from the environment (`STEADFAST_TOKEN`, ...); the LLM from the
//! `STEADFAST_LLM_*` variables (the canary points them at a fake OpenAI-compatible server,
//! so the HTTP client's path is covered, API key included).
//!
//! Workflow `canary.agent` `{secret}`: `llm.chat` with the secret in the system and user
//! messages and one tool (`canary_lookup`); each tool call the model answers with runs the
//! `canary.lookup` activity with the call's arguments; then `llm.chat` again with the tool
//! results. Returns `{"answer": <the second answer's text>, "tool_calls": <how many>}`.

use serde_json::{Value, json};
use steadfast_sdk::activity::{ActivityContext, ActivityError};
use steadfast_sdk::client::ClientConfig;
use steadfast_sdk::llm::{self, ChatRequest, Message, ToolSpec};
use steadfast_sdk::worker::{Worker, WorkerOptions};
use steadfast_sdk::{Effect, WorkflowContext, WorkflowError};

/// The tool the model is offered, and the activity that runs it.
const TOOL: &str = "canary_lookup";
const TOOL_ACTIVITY: &str = "canary.lookup";

fn tool_spec() -> ToolSpec {
    ToolSpec {
        name: TOOL.into(),
        description: "Looks a customer record up by its key.".into(),
        parameters: json!({
            "type": "object",
            "properties": {"key": {"type": "string"}},
            "required": ["key"],
        }),
    }
}

async fn agent(ctx: WorkflowContext, input: Value) -> Result<Value, WorkflowError> {
    let secret = input["secret"]
        .as_str()
        .ok_or_else(|| WorkflowError::failed("input needs {\"secret\": \"...\"}"))?;
    let mut messages = vec![
        Message::system(format!(
            "You are a support agent. The customer key is {secret}."
        )),
        Message::user(format!("Find the record of {secret} and summarise it.")),
    ];
    let first = llm::chat(&ctx, &ChatRequest::new(messages.clone()).tool(tool_spec())).await?;
    if first.tool_calls.is_empty() {
        return Err(WorkflowError::failed("the model asked for no tool call"));
    }
    messages.push(first.to_message());
    for call in &first.tool_calls {
        let args: Value = serde_json::from_str(&call.arguments_json)
            .map_err(|e| WorkflowError::failed(format!("tool arguments are not JSON: {e}")))?;
        let found: Value = ctx.activity(TOOL_ACTIVITY, &args).await?;
        messages.push(Message::tool_result(call.id.clone(), found.to_string()));
    }
    let second = llm::chat(&ctx, &ChatRequest::new(messages).tool(tool_spec())).await?;
    Ok(json!({"answer": second.text(), "tool_calls": first.tool_calls.len()}))
}

/// The tool: echoes the key in its result, so the result carries the secret too.
async fn lookup(_ctx: ActivityContext, args: Value) -> Result<Value, ActivityError> {
    let key = args["key"]
        .as_str()
        .ok_or_else(|| ActivityError::non_retryable("canary_lookup needs {\"key\": \"...\"}"))?;
    Ok(json!({"key": key, "record": format!("account {key}: active, plan gold")}))
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
    let mut task_queue = "canary".to_string();
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let value = it
            .next()
            .ok_or_else(|| anyhow::anyhow!("{flag} needs a value"))?;
        match flag.as_str() {
            "--addr" => addr = value,
            "--task-queue" => task_queue = value,
            other => {
                anyhow::bail!("unknown flag {other}: canary-worker --addr URL [--task-queue Q]")
            }
        }
    }
    let mut worker = Worker::new(
        ClientConfig::new(addr.as_str()).with_env_security(),
        WorkerOptions::new(task_queue),
    );
    worker
        .register_workflow("canary.agent", agent)
        .register_activity(TOOL_ACTIVITY, Effect::Read, lookup)
        .register_activity(llm::ACTIVITY_NAME, llm::ACTIVITY_EFFECT, llm::chat_activity);
    eprintln!("canary-worker polling {addr}");
    worker.run().await?;
    Ok(())
}
