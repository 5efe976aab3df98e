//! `mcp-worker`: the worker of tests/tests/mcp_tools.rs. It mounts `mcp-test-server` (stdio)
//! as `test`, so its tools are activities `mcp.test.lookup`, `mcp.test.tag`,
//! `mcp.test.comment`, `mcp.test.delete` and `mcp.test.fail`, and runs one workflow:
//!
//! - `mcp_call` `{tool, args, start_to_close_ms?}`: one call of activity `tool` with `args`;
//!   returns `{"result": <ToolResult>}`, or `{"error": {"type", "message"}}` when it failed
//!   (denied, invalid arguments, tool error); a cancelled run ends cancelled.
//!
//! ```text
//! mcp-worker --addr URL --server-bin PATH --log SIDE_FILE
//! ```
//! Prints `mounted <activity> <effect> <approval>` per tool on stderr.

use std::time::Duration;

use serde::Deserialize;
use serde_json::{Value, json};
use steadfast_sdk::activity::ActivityError;
use steadfast_sdk::mcp::{McpServer, ToolResult};
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

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let (mut addr, mut server_bin, mut log) = (None, None, None);
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let value = it
            .next()
            .ok_or_else(|| anyhow::anyhow!("{flag} needs a value"))?;
        match flag.as_str() {
            "--addr" => addr = Some(value),
            "--server-bin" => server_bin = Some(value),
            "--log" => log = Some(value),
            other => anyhow::bail!("unknown flag {other}"),
        }
    }
    let (Some(addr), Some(server_bin), Some(log)) = (addr, server_bin, log) else {
        anyhow::bail!("usage: mcp-worker --addr URL --server-bin PATH --log SIDE_FILE");
    };
    let mut worker = Worker::new(addr.as_str(), WorkerOptions::new("default"));
    worker.register_workflow("mcp_call", mcp_call);
    let mounted = worker
        .mount_mcp(
            "test",
            McpServer::stdio(server_bin, ["--log", log.as_str()]),
        )
        .await?;
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
