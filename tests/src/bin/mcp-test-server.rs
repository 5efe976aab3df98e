//! `mcp-test-server`: a small MCP server over stdio (or streamable HTTP) for
//! tests/tests/mcp_tools.rs, built on rmcp's server side. One tool per effect:
//! - `lookup` (readOnlyHint) `{key}` → text `found <key>` and `{"key": <key>}` structured;
//! - `tag` (idempotentHint, not destructive) `{id, tag}` → `{"id", "tag"}`;
//! - `comment` (a write, not destructive) `{id, text, block?}` → `{"id", "comment"}`; with
//!   `block: true` it blocks until the client cancels the request;
//! - `delete` (destructiveHint) `{id}` → `{"deleted": id}`;
//! - `fail` (readOnlyHint) `{}` → a result with `isError: true` and text `no such thing`.
//!
//! ```text
//! mcp-test-server --log SIDE_FILE [--http 127.0.0.1:PORT]
//! ```
//! With `--http` it serves streamable HTTP at `http://ADDR/mcp` (rmcp's server transport,
//! sessions kept in memory: a restarted process knows none) and prints
//! `mcp-test-server listening on http://ADDR/mcp` on stderr once it accepts connections;
//! port 0 takes a free one.
//! Appends one JSON object per line to the side file, synced before it answers, so the tests
//! can count what reached the server across process deaths:
//! `{"ev":"up","pid"}` at start, `{"ev":"call","tool","args","pid"}` per call (before it
//! runs), `{"ev":"cancelled","tool","pid"}` when a blocked call is cancelled.

use std::fs::OpenOptions;
use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;

use rmcp::model::{
    CallToolRequestParams, CallToolResponse, CallToolResult, ContentBlock, ErrorData,
    ListToolsResult, PaginatedRequestParams, ServerCapabilities, ServerConfig, Tool,
    ToolAnnotations,
};
use rmcp::service::{RequestContext, RoleServer};
use rmcp::{ServerHandler, ServiceExt};
use serde_json::{Value, json};

#[derive(Clone)]
struct TestServer {
    log: Arc<PathBuf>,
}

impl TestServer {
    fn note(&self, line: Value) {
        let mut f = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&*self.log)
            .expect("open the side file");
        writeln!(f, "{line}").expect("write the side file");
        f.sync_data().expect("sync the side file");
    }
}

fn schema(v: Value) -> Arc<serde_json::Map<String, Value>> {
    match v {
        Value::Object(m) => Arc::new(m),
        _ => unreachable!("schemas are objects"),
    }
}

fn tools() -> Vec<Tool> {
    let id = json!({"type": "string", "minLength": 1});
    let mut lookup = Tool::new(
        "lookup",
        "Looks a key up.",
        schema(
            json!({"type": "object", "properties": {"key": {"type": "string"}}, "required": ["key"]}),
        ),
    );
    lookup.annotations = Some(ToolAnnotations::new().read_only(true));
    let mut tag = Tool::new(
        "tag",
        "Sets a tag on an item (setting it twice changes nothing).",
        schema(
            json!({"type": "object", "properties": {"id": id, "tag": {"type": "string"}}, "required": ["id", "tag"], "additionalProperties": false}),
        ),
    );
    tag.annotations = Some(ToolAnnotations::new().idempotent(true).destructive(false));
    let mut comment = Tool::new(
        "comment",
        "Adds a comment to an item.",
        schema(
            json!({"type": "object", "properties": {"id": id, "text": {"type": "string", "maxLength": 200}, "block": {"type": "boolean"}}, "required": ["id", "text"]}),
        ),
    );
    comment.annotations = Some(ToolAnnotations::new().destructive(false));
    let mut delete = Tool::new(
        "delete",
        "Deletes an item.",
        schema(json!({"type": "object", "properties": {"id": id}, "required": ["id"]})),
    );
    delete.annotations = Some(ToolAnnotations::new().destructive(true));
    let mut fail = Tool::new("fail", "Always fails.", schema(json!({"type": "object"})));
    fail.annotations = Some(ToolAnnotations::new().read_only(true));
    vec![lookup, tag, comment, delete, fail]
}

fn structured(v: Value) -> CallToolResult {
    let mut r = CallToolResult::success(vec![ContentBlock::text(v.to_string())]);
    r.structured_content = Some(v);
    r
}

impl ServerHandler for TestServer {
    fn get_info(&self) -> ServerConfig {
        ServerConfig::new(ServerCapabilities::builder().enable_tools().build())
    }

    async fn list_tools(
        &self,
        _request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<ListToolsResult, ErrorData> {
        Ok(ListToolsResult::with_all_items(tools()))
    }

    async fn call_tool(
        &self,
        request: CallToolRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, ErrorData> {
        let args = Value::Object(request.arguments.clone().unwrap_or_default());
        let tool = request.name.to_string();
        self.note(json!({"ev": "call", "tool": tool, "args": args, "pid": std::process::id()}));
        let result = match tool.as_str() {
            "lookup" => {
                let key = args["key"].as_str().unwrap_or_default();
                let mut r =
                    CallToolResult::success(vec![ContentBlock::text(format!("found {key}"))]);
                r.structured_content = Some(json!({"key": key}));
                r
            }
            "tag" => structured(json!({"id": args["id"], "tag": args["tag"]})),
            "comment" => {
                if args["block"] == true {
                    context.ct.cancelled().await;
                    self.note(json!({"ev": "cancelled", "tool": tool, "pid": std::process::id()}));
                    return Err(ErrorData::internal_error("cancelled", None));
                }
                structured(json!({"id": args["id"], "comment": args["text"]}))
            }
            "delete" => structured(json!({"deleted": args["id"]})),
            "fail" => CallToolResult::error(vec![ContentBlock::text("no such thing")]),
            other => {
                return Err(ErrorData::invalid_params(
                    format!("unknown tool {other}"),
                    None,
                ));
            }
        };
        Ok(result.into())
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    const USAGE: &str = "usage: mcp-test-server --log SIDE_FILE [--http 127.0.0.1:PORT]";
    let (mut log, mut http) = (None, None);
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let value = args
            .next()
            .ok_or_else(|| anyhow::anyhow!("{flag} needs a value; {USAGE}"))?;
        match flag.as_str() {
            "--log" => log = Some(PathBuf::from(value)),
            "--http" => http = Some(value),
            other => anyhow::bail!("unknown flag {other}; {USAGE}"),
        }
    }
    let Some(log) = log else {
        anyhow::bail!("{USAGE}");
    };
    let server = TestServer { log: Arc::new(log) };
    server.note(json!({"ev": "up", "pid": std::process::id()}));
    match http {
        None => {
            let running = server.serve(rmcp::transport::stdio()).await?;
            running.waiting().await?;
        }
        Some(addr) => serve_http(server, &addr).await?,
    }
    Ok(())
}

/// Serves streamable HTTP at `/mcp` until killed.
async fn serve_http(server: TestServer, addr: &str) -> anyhow::Result<()> {
    use rmcp::transport::streamable_http_server::session::local::LocalSessionManager;
    use rmcp::transport::streamable_http_server::{
        StreamableHttpServerConfig, StreamableHttpService,
    };
    let service = StreamableHttpService::new(
        move || Ok(server.clone()),
        Arc::new(LocalSessionManager::default()),
        StreamableHttpServerConfig::default(),
    );
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let bound = listener.local_addr()?;
    let app = axum::Router::new().nest_service("/mcp", service);
    eprintln!("mcp-test-server listening on http://{bound}/mcp");
    axum::serve(listener, app).await?;
    Ok(())
}
