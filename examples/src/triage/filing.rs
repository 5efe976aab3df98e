//! The optional last step of the triage agent (`triage --file-issues`): file the top issues in
//! a local tracker through its MCP server (`triage-tracker`, mounted by the worker as
//! `tracker`). Its `file_issue` tool is annotated destructive, so each call waits for a human's
//! approval (`steadfast run approve RUN --activity ID`); a denied one is reported, not filed.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use steadfast_sdk::mcp::{McpServer, Mounted, ToolResult};
use steadfast_sdk::{Worker, WorkflowContext, WorkflowError};

use super::report::{Facts, ThemeFacts};

/// The mount name of the tracker on the triage worker.
pub const TRACKER_SERVER: &str = "tracker";
/// The activity that files one issue (the tracker's `file_issue` tool).
pub const FILE_ISSUE_ACTIVITY: &str = "mcp.tracker.file_issue";
/// Issues filed by default: the top themes of the report.
pub const DEFAULT_TOP_ISSUES: usize = 3;
/// Example tickets quoted in an issue's body.
const EXAMPLES_IN_BODY: usize = 3;

/// What the filing step does (part of [`super::TriageInput`]).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FileIssues {
    /// How many of the top themes to file.
    #[serde(default = "default_top")]
    pub top: usize,
}

fn default_top() -> usize {
    DEFAULT_TOP_ISSUES
}

impl Default for FileIssues {
    fn default() -> Self {
        FileIssues { top: default_top() }
    }
}

/// One theme's filing: its tracker id, or why it was not filed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FiledIssue {
    /// The theme.
    pub theme: String,
    /// The tracker's id (`TRK-n`) when it was filed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// Why it was not filed (a human denied it, or the tracker failed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub not_filed: Option<String>,
}

/// The `file_issue` arguments for one theme.
#[derive(Debug, Serialize)]
struct FileIssueArgs {
    title: String,
    body: String,
    priority: String,
    labels: Vec<String>,
    /// Deduplication key of the tracker: the same theme of the same run is filed once, even
    /// when an operator retries a lost call.
    key: String,
}

fn args_for(run_id: &str, t: &ThemeFacts) -> FileIssueArgs {
    let mut body = format!(
        "{} support tickets ({:.1}% of the triaged set), mostly {} severity.\n\nProducts: {}\n\nExamples:\n",
        t.count,
        t.share * 100.0,
        t.severity,
        t.products.join(", ")
    );
    for e in t.examples.iter().take(EXAMPLES_IN_BODY) {
        body.push_str(&format!("- {}: {}\n", e.id, e.text));
    }
    body.push_str(&format!("\nFiled by the triage run {run_id}.\n"));
    FileIssueArgs {
        title: format!("Recurring support issue: {}", t.name),
        body,
        priority: match t.severity.as_str() {
            "critical" => "critical",
            "high" => "high",
            "low" => "low",
            _ => "medium",
        }
        .to_owned(),
        labels: t.products.iter().take(10).cloned().collect(),
        key: format!("{run_id}/{}", t.name),
    }
}

/// Files the top `f.top` themes of `facts`, all calls at once (so that a human sees every
/// approval together); returns each theme's outcome in report order.
pub async fn file_top_issues(
    ctx: &WorkflowContext,
    facts: &Facts,
    f: &FileIssues,
) -> Result<Vec<FiledIssue>, WorkflowError> {
    let themes: Vec<&ThemeFacts> = facts.themes.iter().take(f.top).collect();
    let calls: Vec<_> = themes
        .iter()
        .map(|t| ctx.activity::<ToolResult>(FILE_ISSUE_ACTIVITY, &args_for(ctx.run_id(), t)))
        .collect();
    let results = futures::future::join_all(calls).await;
    let mut out = Vec::with_capacity(themes.len());
    for (t, r) in themes.iter().zip(results) {
        out.push(match r {
            Ok(r) => FiledIssue {
                theme: t.name.clone(),
                id: r
                    .structured_content
                    .as_ref()
                    .and_then(|s| s["id"].as_str())
                    .map(str::to_owned),
                not_filed: None,
            },
            // Denied by a human ([STF-APPROVAL-DENIED]) or failed in the tracker.
            Err(e) => FiledIssue {
                theme: t.name.clone(),
                id: None,
                not_filed: Some(e.to_string()),
            },
        });
    }
    Ok(out)
}

/// Where the tracker binary is: beside the running one (`cargo build` puts them together).
pub fn tracker_bin() -> std::io::Result<PathBuf> {
    Ok(std::env::current_exe()?.with_file_name("triage-tracker"))
}

/// Mounts the tracker (issues in `dir`) on the triage worker.
pub async fn mount_tracker(worker: &mut Worker, dir: &Path) -> anyhow::Result<Mounted> {
    let bin = tracker_bin()?;
    let server = McpServer::stdio(
        bin.display().to_string(),
        ["--dir".to_owned(), dir.display().to_string()],
    );
    Ok(worker.mount_mcp(TRACKER_SERVER, server).await?)
}

/// What the `triage` command does when the run asks for a filing's approval: approves it
/// (`--approve-all`), or prints the command that does.
pub async fn on_approval_requested(
    client: &steadfast_sdk::Client,
    addr: &str,
    run_id: &str,
    r: &steadfast_proto::v1::ApprovalRequested,
    approve_all: bool,
) -> anyhow::Result<()> {
    let id = r.command_seq;
    if approve_all {
        client
            .approve(run_id, id, "approved by triage --approve-all", None::<&()>)
            .await?;
        eprintln!("approved filing #{id} (--approve-all)");
    } else {
        // Deny with `steadfast run deny RUN --activity ID --reason ...`; `run show RUN
        // --preview` shows the issue a filing would send (README, "The triage agent").
        eprintln!(
            "filing #{id} waits for your approval: steadfast run approve {run_id} --activity {id} --addr {addr}"
        );
    }
    Ok(())
}

/// Prints the filed issues and where the tracker keeps them.
pub fn print_filed(filed: &[FiledIssue], tracker_dir: &Path) {
    eprintln!(
        "\nFiled in the tracker ({}):",
        tracker_dir.join("issues.json").display()
    );
    for f in filed {
        match (&f.id, &f.not_filed) {
            (Some(id), _) => eprintln!("  {id}  {}", f.theme),
            (None, why) => eprintln!(
                "  not filed  {}: {}",
                f.theme,
                why.as_deref().unwrap_or("no id returned")
            ),
        }
    }
}
