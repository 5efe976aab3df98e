//! `mcp-worker`: the worker of tests/tests/mcp_tools.rs. It mounts `mcp-test-server` (stdio,
//! or over streamable HTTP with `--server-url`) as `test`, so its tools are activities
//! `mcp.test.lookup`, `mcp.test.tag`, `mcp.test.comment`, `mcp.test.delete` and
//! `mcp.test.fail`, and runs two workflows:
//!
//! - `mcp_call` `{tool, args, start_to_close_ms?}`: one call of activity `tool` with `args`;
//!   returns `{"result": <ToolResult>}`, or `{"error": {"type", "message"}}` when it failed
//!   (denied, invalid arguments, tool error); a cancelled run ends cancelled.
//! - `mcp_agent` `{prompt}`: an `llm.chat` loop offered the mounted tools
//!   ([`Mounted::tool_specs`]): each tool call the model makes is mapped back to its activity
//!   ([`Mounted::activity_for`]), run, and its result text sent back as a tool message, until
//!   an answer calls no tool (at most [`AGENT_TURNS_MAX`] turns); returns
//!   `{"answer": <text>, "called": [<activity>...]}`. The LLM from the `STEADFAST_LLM_*`
//!   variables.
//!
//! ```text
//! mcp-worker --addr URL (--server-bin PATH --log SIDE_FILE | --server-url URL)
//! ```
//! Prints `mounted <activity> <effect> <approval>` per tool on stderr.

use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;
use serde_json::{Value, json};
use steadfast_sdk::activity::ActivityError;
use steadfast_sdk::llm::{self, ChatRequest, Message};
use steadfast_sdk::mcp::{McpServer, Mounted, ToolResult};
use steadfast_sdk::worker::{Worker, WorkerOptions};
use steadfast_sdk::workflow::{ActivityOptions, RetryPolicy};
use steadfast_sdk::{WorkflowContext, WorkflowError};

#[derive(Debug, Deserialize)]
struct CallInput {
    tool: String,
    #[serde(default)]
    args: Value,
    #[serde(default = "default_timeout_ms")]
    start_to_close_ms: u64,
}

fn default_timeout_ms() -> u64 {
    30_000
}

async fn mcp_call(ctx: WorkflowContext, input: CallInput) -> Result<Value, WorkflowError> {
    let opts = ActivityOptions::default()
        .start_to_close(Duration::from_millis(input.start_to_close_ms))
        .retry(RetryPolicy {
            initial_interval: Some(Duration::from_millis(100)),
            ..RetryPolicy::default()
        });
    match ctx
        .activity::<ToolResult>(&input.tool, &input.args)
        .options(opts)
        .await
    {
        Ok(r) => Ok(json!({ "result": r })),
        Err(ActivityError::Failed {
            message,
            error_type,
            ..
        }) => Ok(json!({ "error": { "type": error_type, "message": message } })),
        Err(ActivityError::Cancelled) if ctx.is_cancel_requested() => {
            Err(WorkflowError::Cancelled { partial: None })
        }
        Err(e) => Err(e.into()),
    }
}

/// Model turns an `mcp_agent` run takes at most.
const AGENT_TURNS_MAX: usize = 4;

#[derive(Debug, Deserialize)]
struct AgentInput {
    prompt: String,
}

async fn mcp_agent(
    ctx: WorkflowContext,
    input: AgentInput,
    mounted: Arc<Mounted>,
) -> Result<Value, WorkflowError> {
    let mut messages = vec![Message::user(input.prompt)];
    let mut called = Vec::new();
    for _ in 0..AGENT_TURNS_MAX {
        let mut request = ChatRequest::new(messages.clone());
        request.tools = mounted.tool_specs();
        let answer = llm::chat(&ctx, &request).await?;
        if answer.tool_calls.is_empty() {
            return Ok(json!({ "answer": answer.text(), "called": called }));
        }
        messages.push(answer.to_message());
        for call in &answer.tool_calls {
            let Some(activity) = mounted.activity_for(&call.name) else {
                messages.push(Message::tool_result(
                    &call.id,
                    format!("there is no tool named {}", call.name),
                ));
                continue;
            };
            // The model's arguments as it wrote them: the activity checks them against the
            // tool's schema and refuses a mismatch before the call.
            let args: Value = serde_json::from_str(&call.arguments_json).unwrap_or(Value::Null);
            let content = match ctx.activity::<ToolResult>(activity, &args).await {
                Ok(r) => r.text(),
                Err(e) => format!("the tool failed: {e}"),
            };
            called.push(activity.to_owned());
            messages.push(Message::tool_result(&call.id, content));
        }
    }
    Err(WorkflowError::failed(format!(
        "the model still called tools after {AGENT_TURNS_MAX} turns"
    )))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let (mut addr, mut server_bin, mut log, mut server_url) = (None, None, None, None);
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let value = it
            .next()
            .ok_or_else(|| anyhow::anyhow!("{flag} needs a value"))?;
        match flag.as_str() {
            "--addr" => addr = Some(value),
            "--server-bin" => server_bin = Some(value),
            "--log" => log = Some(value),
            "--server-url" => server_url = Some(value),
            other => anyhow::bail!("unknown flag {other}"),
        }
    }
    const USAGE: &str =
        "usage: mcp-worker --addr URL (--server-bin PATH --log SIDE_FILE | --server-url URL)";
    let Some(addr) = addr else {
        anyhow::bail!("{USAGE}");
    };
    let server = match (server_bin, log, server_url) {
        (Some(bin), Some(log), None) => McpServer::stdio(bin, ["--log", log.as_str()]),
        (None, None, Some(url)) => McpServer::http(url),
        _ => anyhow::bail!("{USAGE}"),
    };
    let mut worker = Worker::new(addr.as_str(), WorkerOptions::new("default"));
    worker.register_workflow("mcp_call", mcp_call);
    let mounted = Arc::new(worker.mount_mcp("test", server).await?);
    let tools = mounted.clone();
    worker
        .register_workflow("mcp_agent", move |ctx, input| {
            mcp_agent(ctx, input, tools.clone())
        })
        .register_activity(llm::ACTIVITY_NAME, llm::ACTIVITY_EFFECT, llm::chat_activity);
    for t in mounted.tools() {
        eprintln!(
            "mounted {} {:?} {}",
            t.activity_type, t.effect, t.requires_approval
        );
    }
    eprintln!("mcp-worker polling {addr} pid {}", std::process::id());
    worker.run().await?;
    Ok(())
}
