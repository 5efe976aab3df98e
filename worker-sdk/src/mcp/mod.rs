//! MCP servers' tools as activities (cargo feature `mcp`).
//!
//! A worker mounts an MCP server (a child process over stdio, or a streamable HTTP endpoint);
//! at mount it lists the server's tools and registers each as activity `mcp.<server>.<tool>`:
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use steadfast_sdk::mcp::McpServer;
//! use steadfast_sdk::worker::{Worker, WorkerOptions};
//!
//! let mut worker = Worker::new("http://127.0.0.1:7233", WorkerOptions::new("tools"));
//! let tracker = worker
//!     .mount_mcp("tracker", McpServer::stdio("tracker-mcp", ["--dir", "/var/issues"]))
//!     .await?;
//! let specs = tracker.tool_specs(); // for llm::ChatRequest::tools
//! worker.run().await?;
//! # Ok(()) }
//! ```
//!
//! - **Effect** from the tool's annotations: `readOnlyHint` → [`Effect::Read`],
//!   `idempotentHint` → [`Effect::Idempotent`], otherwise [`Effect::Write`] (a lost write
//!   waits for reconciliation). [`McpServer::effect`] overrides it per tool.
//! - **Approval**: a destructive write (`destructiveHint`, which MCP defaults to true for a
//!   tool that is not read-only) waits for a human's approval before it runs;
//!   [`McpServer::require_approval`] / [`McpServer::no_approval`] override it per tool,
//!   [`McpServer::approve_destructive`] for the whole server.
//! - **Arguments** are checked against the tool's `inputSchema` before the call ([`schema`]);
//!   a mismatch fails the activity, not retryable, with type [`INVALID_ARGUMENTS_TYPE`] and a
//!   message `[STF-MCP-ARGS] ...` naming the field; the tool is not called.
//! - **Result**: a [`ToolResult`] (`content`, `structuredContent`); `isError` fails the
//!   activity with type [`TOOL_ERROR_TYPE`] (not retryable) and the tool's text.
//! - **Sessions**: a server process that died is started again by the next call. A call whose
//!   session broke while it was out fails: a `read`/`idempotent` tool's with the retryable
//!   [`UNAVAILABLE_TYPE`], a `write` tool's with the non-retryable [`OUTCOME_UNKNOWN_TYPE`]
//!   (the write may have happened: the workflow decides, as an operator would for a lost
//!   write).
//! - **Cancellation**: a cancelled activity drops its call, and the server is sent
//!   `notifications/cancelled` for it.

pub mod schema;
mod session;
mod tool;

use std::collections::HashMap;
use std::sync::Arc;

pub use session::CONNECT_TIMEOUT;
pub use tool::{
    INVALID_ARGUMENTS_TYPE, McpTool, OUTCOME_UNKNOWN_TYPE, PROTOCOL_TYPE,
    TOOL_ERROR_MESSAGE_CHARS_MAX, TOOL_ERROR_TYPE, ToolResult, UNAVAILABLE_TYPE, activity_name,
    effect_of,
};

use crate::Effect;
use crate::llm::ToolSpec;
use crate::worker::Worker;
use session::Session;

/// Longest server name accepted by [`Worker::mount_mcp`].
pub const SERVER_NAME_CHARS_MAX: usize = 64;

/// Why a server could not be mounted.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The mount name is not usable in an activity name.
    #[error(
        "MCP server name {0:?} is not valid: use 1 to {SERVER_NAME_CHARS_MAX} letters, digits, '_' or '-'"
    )]
    BadName(String),
    /// Another server is already mounted under this name on the worker.
    #[error("an MCP server named {0:?} is already mounted on this worker")]
    Duplicate(String),
    /// The server could not be started or did not complete the MCP handshake.
    #[error("cannot connect to MCP server {server:?}: {message}")]
    Connect {
        /// The mount name.
        server: String,
        /// What went wrong.
        message: String,
    },
    /// The server did not answer `tools/list`.
    #[error("MCP server {server:?} did not list its tools: {message}")]
    ListTools {
        /// The mount name.
        server: String,
        /// What went wrong.
        message: String,
    },
}

/// How to reach an MCP server.
#[derive(Debug, Clone)]
pub(crate) enum Transport {
    /// A child process speaking MCP over its stdin/stdout (stderr is the worker's).
    Stdio {
        command: String,
        args: Vec<String>,
        env: Vec<(String, String)>,
    },
    /// A streamable HTTP endpoint (`http://host:port/mcp`).
    Http { url: String },
}

/// An MCP server to mount on a worker, with per-tool overrides of what its annotations say.
#[derive(Debug, Clone)]
pub struct McpServer {
    pub(crate) transport: Transport,
    approve_destructive: bool,
    approvals: HashMap<String, bool>,
    effects: HashMap<String, Effect>,
}

impl McpServer {
    /// A server started as a child process (`command args...`), speaking MCP on stdio. It is
    /// started at mount, and again by the next call after it died.
    pub fn stdio<I, S>(command: impl Into<String>, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        Self::with(Transport::Stdio {
            command: command.into(),
            args: args.into_iter().map(Into::into).collect(),
            env: Vec::new(),
        })
    }

    /// A server at a streamable HTTP endpoint, e.g. `http://127.0.0.1:8000/mcp`.
    pub fn http(url: impl Into<String>) -> Self {
        Self::with(Transport::Http { url: url.into() })
    }

    fn with(transport: Transport) -> Self {
        McpServer {
            transport,
            approve_destructive: true,
            approvals: HashMap::new(),
            effects: HashMap::new(),
        }
    }

    /// An environment variable for a stdio server's process (no effect over HTTP).
    pub fn env(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        if let Transport::Stdio { env, .. } = &mut self.transport {
            env.push((key.into(), value.into()));
        }
        self
    }

    /// Whether destructive writes wait for approval (default: true).
    pub fn approve_destructive(mut self, on: bool) -> Self {
        self.approve_destructive = on;
        self
    }

    /// Every call of `tool` waits for a human's approval, whatever its annotations say.
    pub fn require_approval(mut self, tool: impl Into<String>) -> Self {
        self.approvals.insert(tool.into(), true);
        self
    }

    /// Calls of `tool` never wait for approval, whatever its annotations say.
    pub fn no_approval(mut self, tool: impl Into<String>) -> Self {
        self.approvals.insert(tool.into(), false);
        self
    }

    /// The effect of `tool`, instead of the one its annotations imply (annotations are hints
    /// from the server, which you may not trust).
    pub fn effect(mut self, tool: impl Into<String>, effect: Effect) -> Self {
        self.effects.insert(tool.into(), effect);
        self
    }

    /// Whether calls of a tool with these effect and annotations wait for approval.
    fn requires_approval(&self, tool: &str, effect: Effect, destructive: bool) -> bool {
        match self.approvals.get(tool) {
            Some(on) => *on,
            None => self.approve_destructive && effect == Effect::Write && destructive,
        }
    }
}

/// A server mounted on a worker: its tools as registered.
#[derive(Debug, Clone)]
pub struct Mounted {
    server: String,
    tools: Vec<McpTool>,
}

impl Mounted {
    /// The mount name.
    pub fn server(&self) -> &str {
        &self.server
    }

    /// The tools registered as activities, in the server's order.
    pub fn tools(&self) -> &[McpTool] {
        &self.tools
    }

    /// The tool registered as activity `activity_type`.
    pub fn tool(&self, activity_type: &str) -> Option<&McpTool> {
        self.tools.iter().find(|t| t.activity_type == activity_type)
    }

    /// The tools as tool definitions for `llm.chat` ([`crate::llm::ChatRequest::tools`]):
    /// each named [`McpTool::function_name`] (model APIs allow no dots in function names),
    /// with its description and input schema. Map a tool call back with
    /// [`Mounted::activity_for`]. The definitions are data in the workflow's history: a
    /// server that changes its tools changes what a new run sends, like a prompt change.
    pub fn tool_specs(&self) -> Vec<ToolSpec> {
        self.tools.iter().map(McpTool::tool_spec).collect()
    }

    /// The activity type of the tool a model called by its function name.
    pub fn activity_for(&self, function_name: &str) -> Option<&str> {
        self.tools
            .iter()
            .find(|t| t.function_name == function_name)
            .map(|t| t.activity_type.as_str())
    }
}

fn name_ok(name: &str) -> bool {
    (1..=SERVER_NAME_CHARS_MAX).contains(&name.chars().count())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
}

/// Mounts `server` on `worker` as `name` (see [`Worker::mount_mcp`]).
pub(crate) async fn mount(
    worker: &mut Worker,
    name: &str,
    server: McpServer,
) -> Result<Mounted, Error> {
    if !name_ok(name) {
        return Err(Error::BadName(name.chars().take(40).collect()));
    }
    let prefix = format!("mcp.{name}.");
    if worker
        .activity_types()
        .iter()
        .any(|t| t.starts_with(&prefix))
    {
        return Err(Error::Duplicate(name.to_owned()));
    }
    let session = Arc::new(Session::new(name.to_owned(), server.clone()));
    let listed = session.list_tools().await?;
    let mut tools = Vec::with_capacity(listed.len());
    for t in listed {
        let Some(tool) = McpTool::from_listed(name, &server, &t) else {
            tracing::warn!(
                server = name,
                tool_name_bytes = t.name.len(),
                "MCP tool name not usable as an activity name; skipped"
            );
            continue;
        };
        tool::register(worker, Arc::clone(&session), tool.clone());
        tools.push(tool);
    }
    tracing::info!(server = name, tools = tools.len(), "MCP server mounted");
    Ok(Mounted {
        server: name.to_owned(),
        tools,
    })
}

#[cfg(test)]
mod tests;
