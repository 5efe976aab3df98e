//! One MCP tool as an activity: its name, effect and approval from the annotations, the
//! argument check before the call, and its result or failure.

use std::sync::Arc;

use rmcp::model::{CallToolResult, Tool, ToolAnnotations};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::McpServer;
use super::schema;
use super::session::{CallError, Session};
use crate::Effect;
use crate::activity::{ActivityContext, ActivityError};
use crate::llm::ToolSpec;
use crate::worker::Worker;

/// Failure type of a call whose arguments do not match the tool's input schema (not
/// retryable; the tool was not called). Its message starts with `[STF-MCP-ARGS]`.
pub const INVALID_ARGUMENTS_TYPE: &str = "mcp.InvalidArguments";
/// Failure type of a tool result with `isError: true` (not retryable); the message holds the
/// tool's text, from `[STF-MCP-TOOL]`.
pub const TOOL_ERROR_TYPE: &str = "mcp.ToolError";
/// Failure type of a call that could not reach the server, or of a `read`/`idempotent` call
/// whose session broke while it was out (retryable: the next attempt reconnects).
pub const UNAVAILABLE_TYPE: &str = "mcp.Unavailable";
/// Failure type of a `write` call whose session broke while it was out: the write may have
/// happened, so it is not retried (`[STF-MCP-LOST]`).
pub const OUTCOME_UNKNOWN_TYPE: &str = "mcp.OutcomeUnknown";
/// Failure type of a JSON-RPC error answered by the server (unknown tool, invalid params):
/// not retryable.
pub const PROTOCOL_TYPE: &str = "mcp.ProtocolError";
/// How much of a tool's error text goes into the failure message.
pub const TOOL_ERROR_MESSAGE_CHARS_MAX: usize = 2_000;
/// Longest tool name that becomes an activity (MCP allows 128 characters).
const TOOL_NAME_CHARS_MAX: usize = 128;

/// A mounted tool, as registered.
#[derive(Debug, Clone, PartialEq)]
pub struct McpTool {
    /// The tool's name on its server.
    pub name: String,
    /// The activity it is registered as: `mcp.<server>.<tool>`.
    pub activity_type: String,
    /// Its name as an LLM function (`<server>__<tool>`, only `[A-Za-z0-9_-]`).
    pub function_name: String,
    /// What it does, for a model.
    pub description: String,
    /// Its `inputSchema`.
    pub input_schema: Value,
    /// Its effect (from the annotations, or the mount's override).
    pub effect: Effect,
    /// Whether each call waits for a human's approval.
    pub requires_approval: bool,
}

/// The activity type of `tool` mounted as `server`: `mcp.<server>.<tool>`.
pub fn activity_name(server: &str, tool: &str) -> String {
    format!("mcp.{server}.{tool}")
}

/// The effect the annotations imply: `readOnlyHint` → read, `idempotentHint` → idempotent,
/// anything else (no annotations included) → write.
pub fn effect_of(annotations: Option<&ToolAnnotations>) -> Effect {
    match annotations {
        Some(a) if a.read_only_hint == Some(true) => Effect::Read,
        Some(a) if a.idempotent_hint == Some(true) => Effect::Idempotent,
        _ => Effect::Write,
    }
}

fn tool_name_ok(name: &str) -> bool {
    (1..=TOOL_NAME_CHARS_MAX).contains(&name.chars().count())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
}

impl McpTool {
    /// The tool as `server` mounts it; `None` when its name cannot be an activity name.
    pub(crate) fn from_listed(server: &str, mount: &McpServer, t: &Tool) -> Option<McpTool> {
        let name = t.name.to_string();
        if !tool_name_ok(&name) {
            return None;
        }
        let effect = mount
            .effects
            .get(&name)
            .copied()
            .unwrap_or_else(|| effect_of(t.annotations.as_ref()));
        // MCP: destructiveHint defaults to true when the tool is not read-only.
        let destructive = t
            .annotations
            .as_ref()
            .is_none_or(ToolAnnotations::is_destructive);
        Some(McpTool {
            activity_type: activity_name(server, &name),
            function_name: format!("{server}__{}", name.replace('.', "_")),
            description: t.description.as_deref().unwrap_or_default().to_owned(),
            input_schema: Value::Object((*t.input_schema).clone()),
            requires_approval: mount.requires_approval(&name, effect, destructive),
            effect,
            name,
        })
    }

    /// This tool as a tool definition for `llm.chat`.
    pub fn tool_spec(&self) -> ToolSpec {
        ToolSpec {
            name: self.function_name.clone(),
            description: self.description.clone(),
            parameters: self.input_schema.clone(),
        }
    }

    /// The arguments of a call as the tool takes them (an object; `null` is `{}`), or the
    /// failure that refuses them before the call.
    pub(crate) fn check_arguments(
        &self,
        input: Value,
    ) -> Result<serde_json::Map<String, Value>, ActivityError> {
        let refuse = |m: schema::Mismatch| {
            ActivityError::non_retryable(format!(
                "[STF-MCP-ARGS] {}: {m}; the tool was not called: fix the arguments to match its input schema",
                self.activity_type
            ))
            .with_type(INVALID_ARGUMENTS_TYPE)
        };
        let input = match input {
            Value::Null => Value::Object(Default::default()),
            v => v,
        };
        schema::check(&self.input_schema, &input).map_err(refuse)?;
        match input {
            Value::Object(map) => Ok(map),
            other => Err(refuse(schema::Mismatch {
                path: String::new(),
                problem: format!("tool arguments are an object, got {}", kind(&other)),
            })),
        }
    }
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// What a tool returned: the activity's result.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct ToolResult {
    /// The content blocks as MCP sends them (`{"type":"text","text":...}`, images, ...).
    #[serde(default)]
    pub content: Vec<Value>,
    /// The tool's structured result, when it gives one.
    #[serde(
        rename = "structuredContent",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub structured_content: Option<Value>,
}

impl ToolResult {
    /// The text blocks, joined by newlines.
    pub fn text(&self) -> String {
        self.content
            .iter()
            .filter(|b| b["type"] == "text")
            .filter_map(|b| b["text"].as_str())
            .collect::<Vec<_>>()
            .join("\n")
    }

    pub(crate) fn from_mcp(r: CallToolResult) -> Self {
        ToolResult {
            content: r
                .content
                .iter()
                .filter_map(|b| serde_json::to_value(b).ok())
                .collect(),
            structured_content: r.structured_content,
        }
    }
}

/// The failure of a call, typed by what the workflow does next.
pub(crate) fn call_failure(tool: &McpTool, e: CallError) -> ActivityError {
    match e {
        CallError::Connect(e) => ActivityError::retryable(format!(
            "{}: {e}; nothing was sent, a retry reconnects",
            tool.activity_type
        ))
        .with_type(UNAVAILABLE_TYPE),
        CallError::Protocol(m) => ActivityError::non_retryable(format!(
            "{}: the MCP server refused the call: {m}",
            tool.activity_type
        ))
        .with_type(PROTOCOL_TYPE),
        CallError::Lost(m) if tool.effect == Effect::Write => ActivityError::non_retryable(format!(
            "[STF-MCP-LOST] {}: the MCP session broke during the call ({m}); the write may or may not have happened, so it is not retried: check the tool's side and decide in the workflow",
            tool.activity_type
        ))
        .with_type(OUTCOME_UNKNOWN_TYPE),
        CallError::Lost(m) => ActivityError::retryable(format!(
            "{}: the MCP session broke during the call ({m}); a retry reconnects",
            tool.activity_type
        ))
        .with_type(UNAVAILABLE_TYPE),
    }
}

/// The failure of a result with `isError: true`.
pub(crate) fn tool_error(tool: &McpTool, result: &ToolResult) -> ActivityError {
    let text = result.text();
    let shown: String = text.chars().take(TOOL_ERROR_MESSAGE_CHARS_MAX).collect();
    let more = if shown.len() < text.len() { "..." } else { "" };
    ActivityError::non_retryable(format!(
        "[STF-MCP-TOOL] {} returned an error: {shown}{more}",
        tool.activity_type
    ))
    .with_type(TOOL_ERROR_TYPE)
}

/// Registers `tool` on `worker`, calling it through `session`.
pub(crate) fn register(worker: &mut Worker, session: Arc<Session>, tool: McpTool) {
    let name = tool.activity_type.clone();
    let effect = tool.effect;
    let approval = tool.requires_approval;
    let tool = Arc::new(tool);
    worker.register_activity(
        name.clone(),
        effect,
        move |ctx: ActivityContext, input: Value| {
            let session = Arc::clone(&session);
            let tool = Arc::clone(&tool);
            async move { call(&ctx, &session, &tool, input).await }
        },
    );
    if approval {
        worker.require_approval(name);
    }
}

async fn call(
    ctx: &ActivityContext,
    session: &Session,
    tool: &McpTool,
    input: Value,
) -> Result<ToolResult, ActivityError> {
    let arguments = tool.check_arguments(input)?;
    // Dropping the call on a cancellation sends the server notifications/cancelled.
    let outcome = tokio::select! {
        r = session.call(&tool.name, arguments) => r,
        () = ctx.cancelled() => {
            tracing::debug!(tool = %tool.activity_type, "MCP call cancelled");
            return Err(ActivityError::Cancelled);
        }
    };
    let result = outcome.map_err(|e| call_failure(tool, e))?;
    let is_error = result.is_error == Some(true);
    let result = ToolResult::from_mcp(result);
    if is_error {
        return Err(tool_error(tool, &result));
    }
    Ok(result)
}
