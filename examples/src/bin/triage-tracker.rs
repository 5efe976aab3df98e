//! `triage-tracker`: a small local issue tracker as an MCP server over stdio, for the triage
//! agent's `--file-issues` step. Issues live in `<dir>/issues.json` (a JSON array, replaced
//! atomically on every change).
//!
//! ```text
//! triage-tracker --dir DIR
//! ```
//! Tools:
//! - `file_issue` `{title, body, priority, labels}` → `{"id": "TRK-n", ...}`: files an issue.
//!   Annotated destructive (it changes what a team sees), so a mounting worker asks a human
//!   before each call. A call with the `key` of an issue already filed returns that issue
//!   instead of filing it twice.
//! - `list_issues` `{}` → `{"issues": [...]}` (read-only).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rmcp::model::{
    CallToolRequestParams, CallToolResponse, CallToolResult, ContentBlock, ErrorData,
    ListToolsResult, PaginatedRequestParams, ServerCapabilities, ServerConfig, Tool,
    ToolAnnotations,
};
use rmcp::service::{RequestContext, RoleServer};
use rmcp::{ServerHandler, ServiceExt};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tokio::sync::Mutex;

/// One filed issue.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Issue {
    id: String,
    title: String,
    body: String,
    priority: String,
    labels: Vec<String>,
    /// The caller's deduplication key ("" when none was given).
    #[serde(default)]
    key: String,
}

#[derive(Debug, Deserialize)]
struct FileArgs {
    title: String,
    body: String,
    priority: String,
    #[serde(default)]
    labels: Vec<String>,
    #[serde(default)]
    key: String,
}

#[derive(Clone)]
struct Tracker {
    dir: Arc<PathBuf>,
    /// One change at a time: read, append, replace.
    lock: Arc<Mutex<()>>,
}

fn read_issues(path: &Path) -> std::io::Result<Vec<Issue>> {
    match std::fs::read(path) {
        Ok(b) => serde_json::from_slice(&b).map_err(std::io::Error::other),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(e) => Err(e),
    }
}

/// Replaces the file with `issues`: written to a temp file, synced, renamed over it.
fn write_issues(dir: &Path, issues: &[Issue]) -> std::io::Result<()> {
    let tmp = dir.join("issues.json.tmp");
    let bytes = serde_json::to_vec_pretty(issues).map_err(std::io::Error::other)?;
    {
        use std::io::Write;
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(&bytes)?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, dir.join("issues.json"))?;
    std::fs::File::open(dir)?.sync_all()
}

fn schema(v: Value) -> Arc<serde_json::Map<String, Value>> {
    match v {
        Value::Object(m) => Arc::new(m),
        _ => unreachable!("schemas are objects"),
    }
}

fn tools() -> Vec<Tool> {
    let mut file = Tool::new(
        "file_issue",
        "Files an issue in the team's tracker.",
        schema(json!({
            "type": "object",
            "properties": {
                "title": {"type": "string", "minLength": 1, "maxLength": 200},
                "body": {"type": "string", "maxLength": 20000},
                "priority": {"enum": ["critical", "high", "medium", "low"]},
                "labels": {"type": "array", "items": {"type": "string"}, "maxItems": 10},
                "key": {"type": "string", "maxLength": 200}
            },
            "required": ["title", "body", "priority"],
            "additionalProperties": false
        })),
    );
    file.annotations = Some(ToolAnnotations::new().destructive(true));
    let mut list = Tool::new(
        "list_issues",
        "Lists the filed issues.",
        schema(json!({"type": "object", "properties": {}})),
    );
    list.annotations = Some(ToolAnnotations::new().read_only(true));
    vec![file, list]
}

fn structured(v: Value) -> CallToolResult {
    let mut r = CallToolResult::success(vec![ContentBlock::text(v.to_string())]);
    r.structured_content = Some(v);
    r
}

impl Tracker {
    async fn file(&self, args: FileArgs) -> Result<Issue, ErrorData> {
        let _one = self.lock.lock().await;
        let path = self.dir.join("issues.json");
        let io = |e: std::io::Error| ErrorData::internal_error(format!("tracker file: {e}"), None);
        let mut issues = read_issues(&path).map_err(io)?;
        if !args.key.is_empty()
            && let Some(done) = issues.iter().find(|i| i.key == args.key)
        {
            return Ok(done.clone());
        }
        let issue = Issue {
            id: format!("TRK-{}", issues.len() + 1),
            title: args.title,
            body: args.body,
            priority: args.priority,
            labels: args.labels,
            key: args.key,
        };
        issues.push(issue.clone());
        write_issues(&self.dir, &issues).map_err(io)?;
        Ok(issue)
    }
}

impl ServerHandler for Tracker {
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
        _context: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, ErrorData> {
        let args = Value::Object(request.arguments.unwrap_or_default());
        let result = match request.name.as_ref() {
            "file_issue" => {
                let args: FileArgs = serde_json::from_value(args)
                    .map_err(|e| ErrorData::invalid_params(e.to_string(), None))?;
                let issue = self.file(args).await?;
                structured(serde_json::to_value(issue).unwrap_or_default())
            }
            "list_issues" => {
                let issues = read_issues(&self.dir.join("issues.json"))
                    .map_err(|e| ErrorData::internal_error(e.to_string(), None))?;
                structured(json!({ "issues": issues }))
            }
            other => {
                return Err(ErrorData::invalid_params(
                    format!("unknown tool {other:?}"),
                    None,
                ));
            }
        };
        Ok(result.into())
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let dir = match (args.next().as_deref(), args.next()) {
        (Some("--dir"), Some(d)) => PathBuf::from(d),
        _ => anyhow::bail!("usage: triage-tracker --dir DIR"),
    };
    std::fs::create_dir_all(&dir)?;
    let tracker = Tracker {
        dir: Arc::new(dir),
        lock: Arc::new(Mutex::new(())),
    };
    tracker
        .serve(rmcp::transport::stdio())
        .await?
        .waiting()
        .await?;
    Ok(())
}
