//! The tool-to-activity mapping, without a server: effects and approvals from annotations,
//! the argument check, results and failures.

use std::borrow::Cow;
use std::sync::Arc;

use rmcp::model::{CallToolResult, ContentBlock, Tool, ToolAnnotations};
use serde_json::{Value, json};

use super::session::CallError;
use super::tool::{call_failure, tool_error};
use super::*;
use crate::activity::ActivityError;

fn tool(name: &str, annotations: Option<ToolAnnotations>) -> Tool {
    let schema = json!({
        "type": "object",
        "properties": {"title": {"type": "string"}, "n": {"type": "integer"}},
        "required": ["title"]
    });
    let Value::Object(schema) = schema else {
        unreachable!()
    };
    let mut t = Tool::new(
        Cow::Owned(name.to_owned()),
        "files an issue",
        Arc::new(schema),
    );
    t.annotations = annotations;
    t
}

fn mounted(server: &McpServer, t: &Tool) -> McpTool {
    McpTool::from_listed("tracker", server, t).expect("a usable name")
}

fn failure_type(e: &ActivityError) -> (&str, bool) {
    match e {
        ActivityError::Failed {
            error_type,
            non_retryable,
            ..
        } => (error_type, *non_retryable),
        other => panic!("{other:?}"),
    }
}

#[test]
fn effects_and_approvals_follow_the_annotations() {
    let s = McpServer::stdio("x", Vec::<String>::new());
    let read = mounted(
        &s,
        &tool("search", Some(ToolAnnotations::new().read_only(true))),
    );
    let idem = mounted(
        &s,
        &tool(
            "tag",
            Some(ToolAnnotations::new().idempotent(true).destructive(false)),
        ),
    );
    let write = mounted(
        &s,
        &tool("comment", Some(ToolAnnotations::new().destructive(false))),
    );
    let destructive = mounted(
        &s,
        &tool("delete", Some(ToolAnnotations::new().destructive(true))),
    );
    let bare = mounted(&s, &tool("file", None));
    assert_eq!((read.effect, read.requires_approval), (Effect::Read, false));
    assert_eq!(
        (idem.effect, idem.requires_approval),
        (Effect::Idempotent, false)
    );
    assert_eq!(
        (write.effect, write.requires_approval),
        (Effect::Write, false)
    );
    assert_eq!(
        (destructive.effect, destructive.requires_approval),
        (Effect::Write, true)
    );
    // No annotations: a write, destructive by MCP's default.
    assert_eq!((bare.effect, bare.requires_approval), (Effect::Write, true));
    assert_eq!(read.activity_type, "mcp.tracker.search");
    assert_eq!(read.function_name, "tracker__search");

    // Overrides.
    let s = McpServer::stdio("x", Vec::<String>::new())
        .no_approval("delete")
        .require_approval("search")
        .effect("file", Effect::Idempotent);
    assert!(
        !mounted(
            &s,
            &tool("delete", Some(ToolAnnotations::new().destructive(true)))
        )
        .requires_approval
    );
    assert!(
        mounted(
            &s,
            &tool("search", Some(ToolAnnotations::new().read_only(true)))
        )
        .requires_approval
    );
    let f = mounted(&s, &tool("file", None));
    assert_eq!((f.effect, f.requires_approval), (Effect::Idempotent, false));
    let s = McpServer::stdio("x", Vec::<String>::new()).approve_destructive(false);
    assert!(!mounted(&s, &tool("delete", None)).requires_approval);
    // Names that cannot be activity names are skipped.
    assert!(McpTool::from_listed("t", &s, &tool("has space", None)).is_none());
}

#[test]
fn arguments_are_checked_before_the_call() {
    let s = McpServer::stdio("x", Vec::<String>::new());
    let t = mounted(&s, &tool("file", None));
    assert!(t.check_arguments(json!({"title": "a", "n": 2})).is_ok());
    let e = t.check_arguments(json!({"title": 7})).unwrap_err();
    assert_eq!(failure_type(&e), (INVALID_ARGUMENTS_TYPE, true));
    let msg = e.to_string();
    assert!(
        msg.contains("[STF-MCP-ARGS]")
            && msg.contains("\"/title\"")
            && msg.contains("mcp.tracker.file"),
        "{msg}"
    );
    let e = t.check_arguments(json!(null)).unwrap_err();
    assert!(e.to_string().contains("\"title\" is missing"), "{e}");
    let open = McpTool {
        input_schema: json!({}),
        ..t
    };
    assert!(
        open.check_arguments(json!(null))
            .is_ok_and(|m| m.is_empty())
    );
    assert!(
        open.check_arguments(json!([1]))
            .unwrap_err()
            .to_string()
            .contains("got an array")
    );
}

#[test]
fn results_and_failures_are_typed() {
    let s = McpServer::stdio("x", Vec::<String>::new());
    let write = mounted(&s, &tool("file", None));
    let read = mounted(
        &s,
        &tool("search", Some(ToolAnnotations::new().read_only(true))),
    );
    let mut r = CallToolResult::success(vec![ContentBlock::text("one"), ContentBlock::text("two")]);
    r.structured_content = Some(json!({"id": 3}));
    let out = ToolResult::from_mcp(r);
    assert_eq!(out.text(), "one\ntwo");
    let wire = serde_json::to_value(&out).unwrap();
    assert_eq!(wire["structuredContent"], json!({"id": 3}));
    assert_eq!(wire["content"][0], json!({"type": "text", "text": "one"}));
    assert_eq!(serde_json::from_value::<ToolResult>(wire).unwrap(), out);

    let long = ToolResult {
        content: vec![json!({"type": "text", "text": "x".repeat(5_000)})],
        structured_content: None,
    };
    let e = tool_error(&write, &long);
    assert_eq!(failure_type(&e), (TOOL_ERROR_TYPE, true));
    assert!(e.to_string().len() < TOOL_ERROR_MESSAGE_CHARS_MAX + 200);

    let lost = || CallError::Lost("Transport closed".into());
    assert_eq!(
        failure_type(&call_failure(&write, lost())),
        (OUTCOME_UNKNOWN_TYPE, true)
    );
    assert_eq!(
        failure_type(&call_failure(&read, lost())),
        (UNAVAILABLE_TYPE, false)
    );
    let refused = call_failure(
        &read,
        CallError::Connect(Error::Connect {
            server: "tracker".into(),
            message: "gone".into(),
        }),
    );
    assert_eq!(failure_type(&refused), (UNAVAILABLE_TYPE, false));
    assert_eq!(
        failure_type(&call_failure(
            &write,
            CallError::Protocol("unknown tool (-32602)".into())
        )),
        (PROTOCOL_TYPE, true)
    );
}

#[test]
fn tool_specs_map_back_to_activities() {
    let s = McpServer::stdio("x", Vec::<String>::new());
    let m = Mounted {
        server: "tracker".into(),
        tools: vec![mounted(&s, &tool("file.issue", None))],
    };
    let specs = m.tool_specs();
    assert_eq!(specs[0].name, "tracker__file_issue");
    assert_eq!(specs[0].parameters["required"], json!(["title"]));
    assert_eq!(
        m.activity_for("tracker__file_issue"),
        Some("mcp.tracker.file.issue")
    );
    assert_eq!(m.activity_for("nope"), None);
}

#[test]
fn bad_server_names_are_refused() {
    assert!(name_ok("tracker") && name_ok("a-b_9"));
    assert!(!name_ok("") && !name_ok("a.b") && !name_ok("a b") && !name_ok(&"x".repeat(65)));
}
