//! OpenTelemetry traces from the log (issue 16, point 2), across processes: a server with
//! `--otlp-endpoint` pointing at a small OTLP/HTTP collector in this test; an LLM-like run
//! (two `llm` calls reporting usage) and a tool run whose first attempt dies with a worker
//! SIGKILL (it times out and is retried), then a server SIGKILL and restart while the tool
//! run is open. Checks: every distinct span id arrives with one content only (a re-sent span
//! is identical), each operation has exactly one span, the attempts are events with their
//! outcomes, the LLM spans carry the GenAI attributes and the cost, activity code sees its
//! span's traceparent, and a run started with a traceparent continues the caller's trace.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::path::Path;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, Result, bail, ensure};
use serde_json::{Value, json};
use steadfast_tests::{Proc, Server, bin, cli, wait_for};

const WAIT: Duration = Duration::from_secs(60);

/// Every span the collector received, in arrival order.
type Received = Arc<Mutex<Vec<Value>>>;

/// An OTLP/HTTP JSON collector on a free loopback port: answers every POST with 200 and
/// keeps the spans. Runs on a thread for the rest of the test process.
fn collector() -> Result<(u16, Received)> {
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let port = listener.local_addr()?.port();
    let got: Received = Arc::default();
    let sink = got.clone();
    std::thread::spawn(move || {
        for conn in listener.incoming().flatten() {
            let sink = sink.clone();
            std::thread::spawn(move || {
                let _ = serve(conn, &sink);
            });
        }
    });
    Ok((port, got))
}

fn serve(conn: std::net::TcpStream, sink: &Received) -> Result<()> {
    let mut out = conn.try_clone()?;
    let mut r = BufReader::new(conn);
    loop {
        let mut line = String::new();
        if r.read_line(&mut line)? == 0 {
            return Ok(());
        }
        let request_line = line.trim().to_string();
        let mut len = 0usize;
        let mut json_type = false;
        loop {
            let mut h = String::new();
            r.read_line(&mut h)?;
            let h = h.trim().to_ascii_lowercase();
            if h.is_empty() {
                break;
            }
            if let Some(v) = h.strip_prefix("content-length:") {
                len = v.trim().parse()?;
            }
            if h.starts_with("content-type:") && h.contains("application/json") {
                json_type = true;
            }
        }
        let mut body = vec![0; len];
        r.read_exact(&mut body)?;
        let ok = request_line.starts_with("POST /v1/traces ") && json_type;
        if ok {
            let v: Value = serde_json::from_slice(&body)?;
            let mut sink = sink.lock().unwrap();
            for rs in v["resourceSpans"].as_array().into_iter().flatten() {
                for ss in rs["scopeSpans"].as_array().into_iter().flatten() {
                    sink.extend(ss["spans"].as_array().into_iter().flatten().cloned());
                }
            }
        }
        let (status, reply) = if ok {
            ("200 OK", "{}")
        } else {
            (
                "400 Bad Request",
                "{\"error\":\"expected POST /v1/traces with JSON\"}",
            )
        };
        write!(
            out,
            "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{reply}",
            reply.len()
        )?;
    }
}

fn worker(addr: &str, side: &Path) -> Result<Proc> {
    let mut cmd = Command::new(bin("agent-worker"));
    cmd.args(["--addr", addr, "--task-queue", "default", "--log"])
        .arg(side);
    Proc::spawn("agent-worker", &mut cmd)
}

fn ok(addr: &str, args: &[&str]) -> Result<String> {
    let (code, out, err) = cli(addr, args)?;
    ensure!(code == 0, "steadfast {args:?} exited {code}: {out} {err}");
    Ok(out)
}

fn status(addr: &str, run: &str) -> Option<String> {
    let out = ok(addr, &["run", "show", run, "--json"]).ok()?;
    let v: Value = serde_json::from_str(&out).ok()?;
    v["status"].as_str().map(str::to_lowercase)
}

fn attr(span: &Value, key: &str) -> Option<Value> {
    span["attributes"]
        .as_array()?
        .iter()
        .find(|a| a["key"] == key)
        .map(|a| a["value"].clone())
}

/// The distinct spans by id; fails when one id arrived with two contents.
fn distinct(got: &Received) -> Result<BTreeMap<String, Value>> {
    let mut by_id: BTreeMap<String, Value> = BTreeMap::new();
    for s in got.lock().unwrap().iter() {
        let id = s["spanId"].as_str().context("span without id")?.to_string();
        if let Some(old) = by_id.get(&id) {
            ensure!(
                old == s,
                "span {id} arrived twice with different contents:\n{old}\n{s}"
            );
        }
        by_id.insert(id, s.clone());
    }
    Ok(by_id)
}

/// The spans of the trace whose root names `run`, once the root arrived.
fn trace_of(got: &Received, run: &str) -> Result<Vec<Value>> {
    let spans = wait_for(WAIT, &format!("the root span of run {run}"), || {
        let d = distinct(got).ok()?;
        let root = d
            .values()
            .find(|s| attr(s, "steadfast.run_id") == Some(json!({ "stringValue": run })))?
            .clone();
        Some(
            d.into_values()
                .filter(|s| s["traceId"] == root["traceId"])
                .collect::<Vec<_>>(),
        )
    })?;
    Ok(spans)
}

fn names(spans: &[Value]) -> BTreeMap<String, usize> {
    let mut n = BTreeMap::new();
    for s in spans {
        *n.entry(s["name"].as_str().unwrap_or("").to_string())
            .or_default() += 1;
    }
    n
}

#[test]
fn spans_from_the_log_once_across_a_worker_kill_and_a_server_restart() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let (port, got) = collector()?;
    let endpoint = format!("http://127.0.0.1:{port}");
    let mut server = Server::start_with(
        &dir.path().join("data"),
        None,
        &["--otlp-endpoint", &endpoint],
    )?;
    let addr = server.url();
    let side = dir.path().join("side.jsonl");
    let mut w1 = worker(&addr, &side)?;

    // An LLM run: two calls, each reporting usage.
    let llm_input = r#"{"steps":2,"input_tokens":60,"output_tokens":40,"cost_micros":1500,"model":"fake-model"}"#;
    let llm_run = ok(&addr, &["run", "start", "llm_agent", "--input", llm_input])?
        .trim()
        .to_string();
    wait_for(WAIT, "the llm run to complete", || {
        (status(&addr, &llm_run)? == "completed").then_some(())
    })?;

    // A tool run whose first attempt hangs: kill its worker inside it.
    let tool_input = r#"{"tool":"read_tool","hang_ms":600000,"hang_attempts":1,"start_to_close_ms":2000,"retry_initial_ms":100}"#;
    let tool_run = ok(&addr, &["run", "start", "tool_call", "--input", tool_input])?
        .trim()
        .to_string();
    wait_for(WAIT, "the tool's first attempt to start", || {
        let text = std::fs::read_to_string(&side).ok()?;
        text.lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .any(|l| l["ev"] == "start" && l["run"] == tool_run.as_str())
            .then_some(())
    })?;
    w1.kill9();
    // The LLM run's spans are acknowledged before the server dies; the tool run is open.
    let llm_spans = trace_of(&got, &llm_run)?;
    server.crash_and_restart()?;
    let _w2 = worker(&addr, &side)?;
    wait_for(WAIT, "the tool run to complete", || {
        (status(&addr, &tool_run)? == "completed").then_some(())
    })?;
    let tool_spans = trace_of(&got, &tool_run)?;

    // A run started with the caller's trace context continues it; a malformed one is refused.
    let (caller_trace, caller_span) = ("4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7");
    let given = format!("00-{caller_trace}-{caller_span}-01");
    let (code, _, err) = cli(
        &addr,
        &["run", "start", "tool_call", "--traceparent", "00-XYZ-1-01"],
    )?;
    ensure!(
        code != 0 && err.contains("traceparent") && err.contains("W3C"),
        "a malformed traceparent: exit {code}, {err}"
    );
    let traced_run = ok(
        &addr,
        &[
            "run",
            "start",
            "tool_call",
            "--input",
            r#"{"tool":"read_tool"}"#,
            "--traceparent",
            &given,
        ],
    )?
    .trim()
    .to_string();
    wait_for(WAIT, "the traced run to complete", || {
        (status(&addr, &traced_run)? == "completed").then_some(())
    })?;
    let traced_spans = trace_of(&got, &traced_run)?;
    let n = names(&traced_spans);
    ensure!(n.get("run tool_call") == Some(&1), "{n:?}");
    ensure!(n.get("activity read_tool") == Some(&1), "{n:?}");
    let traced_root = traced_spans
        .iter()
        .find(|s| s["name"] == "run tool_call")
        .unwrap();
    ensure!(
        traced_root["traceId"] == caller_trace && traced_root["parentSpanId"] == caller_span,
        "the root does not continue the caller's span: {traced_root}"
    );
    let traced_tool = traced_spans
        .iter()
        .find(|s| s["name"] == "activity read_tool")
        .unwrap();
    let want_tp = format!(
        "00-{caller_trace}-{}-01",
        traced_tool["spanId"].as_str().context("no span id")?
    );
    let seen: Vec<Value> = std::fs::read_to_string(&side)?
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|l| l["ev"] == "start" && l["run"] == traced_run.as_str())
        .map(|l| l["traceparent"].clone())
        .collect();
    ensure!(
        seen == vec![json!(want_tp)],
        "traceparents the traced tool saw: {seen:?}, want {want_tp}"
    );

    // The LLM run: a root, one span per workflow task and per call.
    let n = names(&llm_spans);
    ensure!(n.get("run llm_agent") == Some(&1), "{n:?}");
    ensure!(n.get("activity llm") == Some(&2), "{n:?}");
    ensure!(n.get("workflow_task") == Some(&3), "{n:?}");
    let root = llm_spans
        .iter()
        .find(|s| s["name"] == "run llm_agent")
        .unwrap();
    for s in &llm_spans {
        if s["name"] != "run llm_agent" {
            ensure!(
                s["parentSpanId"] == root["spanId"],
                "not under the root: {s}"
            );
        }
        if s["name"] == "activity llm" {
            ensure!(
                attr(s, "gen_ai.request.model") == Some(json!({"stringValue": "fake-model"})),
                "{s}"
            );
            ensure!(
                attr(s, "gen_ai.usage.input_tokens") == Some(json!({"intValue": "60"})),
                "{s}"
            );
            ensure!(
                attr(s, "gen_ai.usage.output_tokens") == Some(json!({"intValue": "40"})),
                "{s}"
            );
            ensure!(attr(s, "gen_ai.system").is_some(), "{s}");
            ensure!(
                attr(s, "steadfast.cost_usd") == Some(json!({"doubleValue": 0.0015})),
                "{s}"
            );
        }
    }

    // The tool run: one activity span, its two attempts as events.
    let n = names(&tool_spans);
    ensure!(n.get("activity read_tool") == Some(&1), "{n:?}");
    ensure!(n.get("run tool_call") == Some(&1), "{n:?}");
    let tool = tool_spans
        .iter()
        .find(|s| s["name"] == "activity read_tool")
        .unwrap();
    let outcomes: Vec<(Value, Value)> = tool["events"]
        .as_array()
        .context("no events")?
        .iter()
        .map(|e| {
            (
                attr(e, "steadfast.attempt").unwrap_or_default(),
                attr(e, "steadfast.outcome").unwrap_or_default(),
            )
        })
        .collect();
    let want = vec![
        (
            json!({"intValue": "1"}),
            json!({"stringValue": "timed_out"}),
        ),
        (
            json!({"intValue": "2"}),
            json!({"stringValue": "completed"}),
        ),
    ];
    if outcomes != want {
        bail!("attempts of the tool span: {outcomes:?}");
    }
    ensure!(tool["status"]["code"] == 1, "{tool}");

    // Both attempts' code saw the activity span's context (the one the collector got).
    let want_tp = format!(
        "00-{}-{}-01",
        tool["traceId"].as_str().context("no trace id")?,
        tool["spanId"].as_str().context("no span id")?
    );
    let seen: Vec<Value> = std::fs::read_to_string(&side)?
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|l| l["ev"] == "start" && l["run"] == tool_run.as_str())
        .map(|l| l["traceparent"].clone())
        .collect();
    ensure!(
        seen == vec![json!(want_tp), json!(want_tp)],
        "traceparents the tool's attempts saw: {seen:?}, want {want_tp} twice"
    );

    // No span id came with two contents (checked by `distinct`), and nothing arrived that
    // is not one of these two runs' spans.
    let all = distinct(&got)?;
    ensure!(
        all.len() == llm_spans.len() + tool_spans.len() + traced_spans.len(),
        "{} distinct spans, {} + {} + {} expected",
        all.len(),
        llm_spans.len(),
        tool_spans.len(),
        traced_spans.len()
    );
    Ok(())
}

/// A child run's trace continues its parent's: the parent's trace has a `child child` span
/// (under the parent's root) from the request to the child's close, and the child's root span
/// is in the same trace, under that span, covered by it.
#[test]
fn a_child_run_continues_its_parents_trace() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let (port, got) = collector()?;
    let endpoint = format!("http://127.0.0.1:{port}");
    let server = Server::start_with(
        &dir.path().join("data"),
        None,
        &["--otlp-endpoint", &endpoint],
    )?;
    let addr = server.url();
    let _worker = steadfast_tests::start_test_worker(&addr, &dir.path().join("side"), &[])?;
    let parent = ok(
        &addr,
        &["run", "start", "parent", "--input", r#"{"xs":[5]}"#],
    )?
    .trim()
    .to_string();
    // The child waits for signal `go`: find it, and let it finish.
    let child = wait_for(WAIT, "the child run to exist", || {
        let out = ok(&addr, &["run", "list", "--type", "child", "--json"]).ok()?;
        out.lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .find_map(|r| r["run_id"].as_str().map(str::to_string))
    })?;
    wait_for(WAIT, "the signal to be accepted", || {
        ok(&addr, &["run", "signal", &child, "go", "--input", "true"]).ok()
    })?;
    wait_for(WAIT, "the parent to complete", || {
        (status(&addr, &parent)? == "completed").then_some(())
    })?;
    // The child closed before the parent: once the parent's root arrived, wait for the
    // child's root in the same trace.
    let is_root_of =
        |s: &Value, run: &str| attr(s, "steadfast.run_id") == Some(json!({ "stringValue": run }));
    let parent_spans = wait_for(WAIT, "the child's root in the parent's trace", || {
        let spans = trace_of(&got, &parent).ok()?;
        spans.iter().any(|s| is_root_of(s, &child)).then_some(spans)
    })?;
    let n = names(&parent_spans);
    ensure!(n.get("run parent") == Some(&1), "{n:?}");
    ensure!(n.get("child child") == Some(&1), "{n:?}");
    ensure!(n.get("run child") == Some(&1), "{n:?}");
    let parent_root = parent_spans
        .iter()
        .find(|s| is_root_of(s, &parent))
        .context("the parent's root")?;
    let child_root = parent_spans
        .iter()
        .find(|s| s["name"] == "run child")
        .context("the child's root")?;
    let child_span = parent_spans
        .iter()
        .find(|s| s["name"] == "child child")
        .context("the parent's child span")?;
    ensure!(
        child_span["parentSpanId"] == parent_root["spanId"],
        "the child span is not under the parent's root: {child_span}"
    );
    ensure!(
        attr(child_span, "steadfast.child_run_id") == Some(json!({ "stringValue": child })),
        "{child_span}"
    );
    ensure!(
        attr(child_span, "steadfast.outcome") == Some(json!({ "stringValue": "completed" })),
        "{child_span}"
    );
    ensure!(
        child_root["traceId"] == parent_root["traceId"]
            && child_root["parentSpanId"] == child_span["spanId"],
        "the child's root does not continue the parent's child span:\n{child_root}\n{child_span}"
    );
    let ns = |s: &Value, k: &str| -> Result<u128> {
        Ok(s[k].as_str().context("no time")?.parse::<u128>()?)
    };
    ensure!(
        ns(child_span, "startTimeUnixNano")? <= ns(child_root, "startTimeUnixNano")?
            && ns(child_span, "endTimeUnixNano")? >= ns(child_root, "endTimeUnixNano")?,
        "the child span does not cover the child run:\n{child_span}\n{child_root}"
    );
    // Every span of the child's own operations is under the child's root, in the same trace.
    for s in &parent_spans {
        if s["name"] == "workflow_task" && s["parentSpanId"] != parent_root["spanId"] {
            ensure!(s["parentSpanId"] == child_root["spanId"], "{s}");
        }
    }
    Ok(())
}
