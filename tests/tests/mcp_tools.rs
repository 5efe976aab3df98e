//! MCP tools as activities, across processes: `mcp-worker` mounts `mcp-test-server` (an MCP
//! server over stdio, rmcp's server side) and a Rust workflow calls its tools. Results are
//! recorded; each tool's effect comes from its annotations; bad arguments are refused before
//! the call (the server's side file proves it was never called); a destructive tool waits for
//! approval and then runs once; a write whose worker is SIGKILLed mid-call waits for
//! reconciliation and is not retried; a dead server process is started again by the next
//! call; a cancelled activity cancels its call on the server.
//!
//! Over streamable HTTP (`mcp-test-server --http`, mounted with `McpServer::http`): a read
//! tool's result, a bad argument refused before the call, and a session re-established after
//! the HTTP server is killed and started again on the same port.
//!
//! Offered to a model: a workflow's `llm.chat` loop against a fake OpenAI-compatible server
//! (written here) gets the mounted tools as tool definitions, runs the tool the model calls as
//! its activity, and sends the result back.

mod agent_common;

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use agent_common::{Env, WAIT, side_lines, waiting_of};
use anyhow::{Context, Result, ensure};
use serde_json::{Value, json};
use steadfast_proto::v1 as pb;
use steadfast_proto::v1::history_event::Attributes as A;
use steadfast_tests::{Proc, bin, wait_for};

/// Kills, on drop, every `mcp-test-server` the side file says was started (a worker that
/// was SIGKILLed leaves its child behind until the child reads EOF).
struct ServerPids(std::path::PathBuf);

impl Drop for ServerPids {
    fn drop(&mut self) {
        for pid in up_pids(&self.0) {
            // SAFETY: kill(2) with a pid this test's processes started; a gone pid is ESRCH.
            unsafe {
                libc::kill(pid as i32, libc::SIGKILL);
            }
        }
    }
}

fn up_pids(side: &std::path::Path) -> Vec<u64> {
    side_lines(side)
        .unwrap_or_default()
        .iter()
        .filter(|l| l["ev"] == "up")
        .filter_map(|l| l["pid"].as_u64())
        .collect()
}

fn start_worker(env: &Env) -> Result<Proc> {
    let mut cmd = Command::new(bin("mcp-worker"));
    cmd.args(["--addr", &env.url(), "--server-bin"])
        .arg(bin("mcp-test-server"))
        .arg("--log")
        .arg(&env.side);
    Proc::spawn("mcp-worker", &mut cmd)
}

/// `mcp-test-server --http` on `port` (0: a free one); returns it and its URL once it
/// listens.
fn start_http_server(env: &Env, port: u16) -> Result<(Proc, String)> {
    let mut cmd = Command::new(bin("mcp-test-server"));
    cmd.arg("--log")
        .arg(&env.side)
        .args(["--http", &format!("127.0.0.1:{port}")])
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let mut proc = Proc::spawn("mcp-test-server --http", &mut cmd)?;
    let stderr = proc.take_stderr().context("server stderr")?;
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            match line.strip_prefix("mcp-test-server listening on ") {
                Some(url) => {
                    let _ = tx.send(url.trim().to_string());
                }
                None => eprintln!("[mcp http] {line}"),
            }
        }
    });
    let url = rx
        .recv_timeout(WAIT)
        .context("mcp-test-server --http did not report its address (or exited: port taken?)")?;
    Ok((proc, url))
}

/// [`start_http_server`] on `port` again after a kill: the port may take a moment to be free.
fn restart_http_server(env: &Env, port: u16) -> Result<(Proc, String)> {
    let mut last = None;
    for _ in 0..50 {
        match start_http_server(env, port) {
            Ok(s) => return Ok(s),
            Err(e) => last = Some(e),
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    Err(last.unwrap_or_else(|| anyhow::anyhow!("no restart")))
}

fn start_http_worker(env: &Env, url: &str, envs: &[(&str, String)]) -> Result<Proc> {
    let mut cmd = Command::new(bin("mcp-worker"));
    cmd.args(["--addr", &env.url(), "--server-url", url])
        .envs(envs.iter().map(|(k, v)| (k, v)));
    Proc::spawn("mcp-worker", &mut cmd)
}

fn call(env: &Env, tool: &str, args: Value) -> Result<String> {
    env.start_run(
        "mcp_call",
        &json!({ "tool": tool, "args": args }).to_string(),
        &[],
    )
}

fn result(env: &Env, run: &str) -> Result<Value> {
    let info = env.wait_closed(run)?;
    ensure!(
        info.status() == pb::RunStatus::Completed,
        "run {run} ended {:?}: {:?}",
        info.status(),
        info.failure
    );
    Ok(serde_json::from_str(&env.ok(&["run", "result", run])?)?)
}

/// The side file's `call` lines of `tool`.
fn calls(env: &Env, tool: &str) -> Result<Vec<Value>> {
    Ok(env
        .side_lines()?
        .into_iter()
        .filter(|l| l["ev"] == "call" && l["tool"] == tool)
        .collect())
}

fn history(env: &Env, run: &str) -> Result<Vec<pb::HistoryEvent>> {
    Ok(env.rt.block_on(env.client().history(run))?)
}

/// The effect recorded when the run's (only) activity started.
fn started_effect(env: &Env, run: &str) -> Result<pb::Effect> {
    history(env, run)?
        .iter()
        .find_map(|e| match &e.attributes {
            Some(A::ActivityStarted(s)) => Some(s.effect()),
            _ => None,
        })
        .context("an ActivityStarted")
}

#[test]
fn tools_run_as_activities_with_their_effects_and_checked_arguments() -> Result<()> {
    agent_common::seed();
    let env = Env::start()?;
    let _pids = ServerPids(env.side.clone());
    let _worker = start_worker(&env)?;

    let lookup = call(&env, "mcp.test.lookup", json!({ "key": "k1" }))?;
    let out = result(&env, &lookup)?;
    ensure!(
        out["result"]["structuredContent"] == json!({ "key": "k1" })
            && out["result"]["content"][0] == json!({ "type": "text", "text": "found k1" }),
        "the tool's result is the activity's: {out}"
    );
    ensure!(started_effect(&env, &lookup)? == pb::Effect::Read);
    let tag = call(
        &env,
        "mcp.test.tag",
        json!({ "id": "A-1", "tag": "urgent" }),
    )?;
    ensure!(
        result(&env, &tag)?["result"]["structuredContent"]
            == json!({ "id": "A-1", "tag": "urgent" })
    );
    ensure!(started_effect(&env, &tag)? == pb::Effect::Idempotent);
    let comment = call(
        &env,
        "mcp.test.comment",
        json!({ "id": "A-1", "text": "seen" }),
    )?;
    ensure!(result(&env, &comment)?["result"]["structuredContent"]["comment"] == "seen");
    ensure!(started_effect(&env, &comment)? == pb::Effect::Write);
    ensure!(
        env.show(&comment)?["waiting_on"]
            .as_array()
            .is_none_or(Vec::is_empty),
        "a non-destructive write does not ask for approval"
    );

    // Bad arguments: refused before the call, naming the field; never sent to the server.
    let bad = [
        ("mcp.test.tag", json!({ "id": 5, "tag": "x" }), "\"/id\""),
        ("mcp.test.tag", json!({ "id": "A-1" }), "\"tag\" is missing"),
        (
            "mcp.test.tag",
            json!({ "id": "A-1", "tag": "x", "colour": "red" }),
            "\"/colour\"",
        ),
        (
            "mcp.test.comment",
            json!({ "id": "A-1", "text": "x".repeat(201) }),
            "\"/text\"",
        ),
    ];
    for (tool, args, names) in bad {
        let run = call(&env, tool, args)?;
        let out = result(&env, &run)?;
        let msg = out["error"]["message"].as_str().unwrap_or_default();
        ensure!(
            out["error"]["type"] == "mcp.InvalidArguments"
                && msg.contains("[STF-MCP-ARGS]")
                && msg.contains(names),
            "{tool}: {out}"
        );
        let failed: Vec<pb::ActivityFailed> = history(&env, &run)?
            .into_iter()
            .filter_map(|e| match e.attributes {
                Some(A::ActivityFailed(f)) => Some(f),
                _ => None,
            })
            .collect();
        ensure!(
            failed.len() == 1 && failed[0].failure.as_ref().is_some_and(|f| f.non_retryable),
            "one attempt, not retried: {failed:?}"
        );
    }
    ensure!(
        calls(&env, "tag")?.len() == 1 && calls(&env, "comment")?.len() == 1,
        "the server saw only the good calls: {:?}",
        env.side_lines()?
    );

    // isError: a typed failure with the tool's text.
    let fail = call(&env, "mcp.test.fail", json!({}))?;
    let out = result(&env, &fail)?;
    ensure!(
        out["error"]["type"] == "mcp.ToolError"
            && out["error"]["message"]
                .as_str()
                .is_some_and(|m| m.contains("[STF-MCP-TOOL]") && m.contains("no such thing")),
        "{out}"
    );

    // The server process dies: the next call starts it again.
    let first = up_pids(&env.side);
    ensure!(first.len() == 1, "one server process so far: {first:?}");
    // SAFETY: kill(2) on the pid of the server process this test's worker started.
    unsafe {
        libc::kill(first[0] as i32, libc::SIGKILL);
    }
    let again = call(&env, "mcp.test.lookup", json!({ "key": "k2" }))?;
    ensure!(result(&env, &again)?["result"]["structuredContent"] == json!({ "key": "k2" }));
    let pids = up_pids(&env.side);
    ensure!(
        pids.len() == 2 && pids[1] != pids[0],
        "a new server process: {pids:?}"
    );
    Ok(())
}

#[test]
fn a_destructive_tool_waits_for_approval_and_then_runs_once() -> Result<()> {
    agent_common::seed();
    let env = Env::start()?;
    let _pids = ServerPids(env.side.clone());
    let _worker = start_worker(&env)?;
    let run = call(&env, "mcp.test.delete", json!({ "id": "A-9" }))?;
    env.wait_waiting(&run, "approval")?;
    let show = env.show(&run)?;
    let a = waiting_of(&show, "approval");
    ensure!(
        a.len() == 1
            && a[0]["activity_type"] == "mcp.test.delete"
            && a[0]["declared_by"].as_str().is_some_and(|w| !w.is_empty()),
        "{}",
        show["waiting_on"]
    );
    ensure!(
        calls(&env, "delete")?.is_empty(),
        "nothing runs before a decision"
    );
    let id = a[0]["activity_id"].as_u64().context("activity_id")? as u32;
    env.rt.block_on(
        env.client()
            .approve(&run, id, "ok to delete", None::<&Value>),
    )?;
    ensure!(result(&env, &run)?["result"]["structuredContent"] == json!({ "deleted": "A-9" }));
    let deletes = calls(&env, "delete")?;
    ensure!(deletes.len() == 1, "{deletes:?}");
    Ok(())
}

#[test]
fn a_write_whose_worker_dies_mid_call_waits_for_reconciliation() -> Result<()> {
    agent_common::seed();
    let env = Env::start()?;
    let _pids = ServerPids(env.side.clone());
    let mut first = start_worker(&env)?;
    let run = call(
        &env,
        "mcp.test.comment",
        json!({ "id": "A-2", "text": "half", "block": true }),
    )?;
    wait_for(WAIT, "the blocking call to reach the server", || {
        calls(&env, "comment").ok().filter(|c| c.len() == 1)
    })?;
    first.kill9();
    // A worker is there all along: a blind retry would have somewhere to run.
    let _second = start_worker(&env)?;
    env.wait_waiting(&run, "reconciliation")?;
    let show = env.show(&run)?;
    let rec = waiting_of(&show, "reconciliation");
    ensure!(
        rec.len() == 1 && rec[0]["activity_type"] == "mcp.test.comment" && rec[0]["attempt"] == 1,
        "{}",
        show["waiting_on"]
    );
    // The second worker's server is up (it mounted at start) and saw no call.
    wait_for(WAIT, "the second worker's server", || {
        (up_pids(&env.side).len() == 2).then_some(())
    })?;
    ensure!(
        calls(&env, "comment")?.len() == 1,
        "the write was not retried"
    );
    ensure!(
        !history(&env, &run)?
            .iter()
            .any(|e| matches!(&e.attributes, Some(A::ActivityTimedOut(_)))),
        "a lost write does not time out into a retry"
    );
    Ok(())
}

#[test]
fn a_cancelled_activity_cancels_its_call_on_the_server() -> Result<()> {
    agent_common::seed();
    let env = Env::start()?;
    let _pids = ServerPids(env.side.clone());
    let _worker = start_worker(&env)?;
    let run = call(
        &env,
        "mcp.test.comment",
        json!({ "id": "A-3", "text": "long", "block": true }),
    )?;
    wait_for(WAIT, "the blocking call to reach the server", || {
        calls(&env, "comment").ok().filter(|c| c.len() == 1)
    })?;
    env.rt.block_on(env.client().cancel(&run, "stop"))?;
    wait_for(WAIT, "notifications/cancelled to reach the server", || {
        env.side_lines()
            .ok()?
            .into_iter()
            .find(|l| l["ev"] == "cancelled" && l["tool"] == "comment")
    })?;
    let info = env.wait_closed(&run)?;
    ensure!(
        info.status() == pb::RunStatus::Cancelled,
        "{:?}",
        info.status()
    );
    Ok(())
}

#[test]
fn tools_over_streamable_http_and_a_session_re_established_after_the_server_restarts() -> Result<()>
{
    let seed = agent_common::seed();
    let env = Env::start()?;
    let (mut server, url) = start_http_server(&env, 0)?;
    let port: u16 = url
        .trim_start_matches("http://127.0.0.1:")
        .trim_end_matches("/mcp")
        .parse()
        .with_context(|| format!("the port of {url}"))?;
    let _worker = start_http_worker(&env, &url, &[])?;
    let key = format!("k-{seed:x}");

    let lookup = call(&env, "mcp.test.lookup", json!({ "key": key }))?;
    let out = result(&env, &lookup)?;
    ensure!(
        out["result"]["structuredContent"] == json!({ "key": key })
            && out["result"]["content"][0]
                == json!({ "type": "text", "text": format!("found {key}") }),
        "the tool's result over HTTP is the activity's: {out}"
    );
    ensure!(started_effect(&env, &lookup)? == pb::Effect::Read);

    // A bad argument: refused in the worker, never sent over HTTP.
    let bad = call(&env, "mcp.test.tag", json!({ "id": 5, "tag": "x" }))?;
    let out = result(&env, &bad)?;
    ensure!(
        out["error"]["type"] == "mcp.InvalidArguments"
            && out["error"]["message"]
                .as_str()
                .is_some_and(|m| m.contains("[STF-MCP-ARGS]") && m.contains("\"/id\"")),
        "{out}"
    );
    ensure!(
        calls(&env, "tag")?.is_empty(),
        "the bad call reached the server"
    );

    // The HTTP server dies and comes back on the same port, knowing no session: the next
    // call gets a new one.
    let first_pid = server.pid().context("server pid")?;
    server.kill9();
    let (_server, again_url) = restart_http_server(&env, port)?;
    ensure!(again_url == url, "{again_url} != {url}");
    let again = call(&env, "mcp.test.lookup", json!({ "key": "after" }))?;
    let out = result(&env, &again)?;
    ensure!(
        out["result"]["structuredContent"] == json!({ "key": "after" }),
        "{out}"
    );
    let attempts: Vec<u32> = history(&env, &again)?
        .iter()
        .filter_map(|e| match &e.attributes {
            Some(A::ActivityStarted(s)) => Some(s.attempt),
            _ => None,
        })
        .collect();
    eprintln!("[mcp http] attempts of the call after the restart: {attempts:?}");
    let lookups = calls(&env, "lookup")?;
    ensure!(
        lookups.len() == 2
            && lookups[0]["pid"] == first_pid
            && lookups[1]["pid"] != first_pid
            && lookups[1]["args"] == json!({ "key": "after" }),
        "one call on each server process: {lookups:?}"
    );
    Ok(())
}

/// A fake OpenAI-compatible chat API: the first request is answered with a call of
/// `tool_name` with `arguments`, every later one with `final_text`. Every request body is
/// kept. Stopped (threads joined) on drop.
struct FakeModel {
    addr: SocketAddr,
    requests: Arc<Mutex<Vec<Value>>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl FakeModel {
    fn start(tool_name: &str, arguments: Value, final_text: &str) -> Result<FakeModel> {
        let listener = TcpListener::bind("127.0.0.1:0")?;
        let addr = listener.local_addr()?;
        let requests: Arc<Mutex<Vec<Value>>> = Arc::default();
        let stop = Arc::new(AtomicBool::new(false));
        let (log, stopped) = (requests.clone(), stop.clone());
        let (tool_name, final_text) = (tool_name.to_string(), final_text.to_string());
        let thread = std::thread::spawn(move || {
            for stream in listener.incoming() {
                if stopped.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(stream) = stream else { continue };
                if let Err(e) = answer(stream, &log, &tool_name, &arguments, &final_text) {
                    eprintln!("[fake model] {e:#}");
                }
            }
        });
        Ok(FakeModel {
            addr,
            requests,
            stop,
            thread: Some(thread),
        })
    }

    fn base_url(&self) -> String {
        format!("http://{}/v1", self.addr)
    }
}

impl Drop for FakeModel {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(self.addr);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn answer(
    stream: TcpStream,
    log: &Mutex<Vec<Value>>,
    tool_name: &str,
    arguments: &Value,
    final_text: &str,
) -> Result<()> {
    let (_, body) = steadfast_tests::http::read_request(&stream)?;
    let asked: Value = serde_json::from_slice(&body)?;
    let turn = {
        let mut log = log.lock().unwrap();
        log.push(asked);
        log.len()
    };
    let message = if turn == 1 {
        json!({"role": "assistant", "content": null, "tool_calls": [{"id": "call_1",
            "type": "function", "function": {"name": tool_name, "arguments": arguments.to_string()}}]})
    } else {
        json!({"role": "assistant", "content": final_text})
    };
    let finish = if turn == 1 { "tool_calls" } else { "stop" };
    let reply =
        json!({"id": format!("c{turn}"), "object": "chat.completion", "model": "fake-model",
        "choices": [{"index": 0, "message": message, "finish_reason": finish}],
        "usage": {"prompt_tokens": 20, "completion_tokens": 5}})
        .to_string();
    let mut out = stream;
    write!(
        out,
        "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{reply}",
        reply.len()
    )?;
    out.flush()?;
    Ok(())
}

#[test]
fn a_model_offered_the_mounted_tools_calls_one_and_gets_its_result() -> Result<()> {
    let seed = agent_common::seed();
    let env = Env::start()?;
    let (_server, url) = start_http_server(&env, 0)?;
    let key = format!("order-{seed:x}");
    let model = FakeModel::start(
        "test__lookup",
        json!({ "key": key }),
        "The order was found.",
    )?;
    let _worker = start_http_worker(
        &env,
        &url,
        &[
            ("STEADFAST_LLM_BASE_URL", model.base_url()),
            ("STEADFAST_LLM_MODEL", "fake-model".into()),
        ],
    )?;
    let run = env.start_run(
        "mcp_agent",
        &json!({ "prompt": "Where is my order?" }).to_string(),
        &[],
    )?;
    let out = result(&env, &run)?;
    ensure!(
        out == json!({ "answer": "The order was found.", "called": ["mcp.test.lookup"] }),
        "{out}"
    );
    let lookups = calls(&env, "lookup")?;
    ensure!(
        lookups.len() == 1 && lookups[0]["args"] == json!({ "key": key }),
        "the model's arguments reached the tool once: {lookups:?}"
    );

    let asked = model.requests.lock().unwrap().clone();
    ensure!(asked.len() == 2, "two model turns: {asked:?}");
    // Turn 1: every mounted tool offered, with the server's description and input schema.
    let tools = asked[0]["tools"].as_array().context("no tools offered")?;
    let names: Vec<&str> = tools
        .iter()
        .filter_map(|t| t["function"]["name"].as_str())
        .collect();
    ensure!(
        names
            == [
                "test__lookup",
                "test__tag",
                "test__comment",
                "test__delete",
                "test__fail"
            ],
        "{names:?}"
    );
    ensure!(tools.iter().all(|t| t["type"] == "function"), "{tools:?}");
    ensure!(
        tools[0]["function"]["description"] == "Looks a key up."
            && tools[0]["function"]["parameters"]
                == json!({"type": "object", "properties": {"key": {"type": "string"}}, "required": ["key"]}),
        "{}",
        tools[0]
    );
    ensure!(
        tools[1]["function"]["parameters"]["additionalProperties"] == false,
        "{}",
        tools[1]
    );
    // Turn 2: the same tools, the model's call, and the tool's result under the call's id.
    ensure!(
        asked[1]["tools"] == asked[0]["tools"],
        "the tools changed between turns"
    );
    let messages = asked[1]["messages"].as_array().context("messages")?;
    let call_msg = messages
        .iter()
        .find(|m| m["role"] == "assistant")
        .context("the model's tool call was not sent back")?;
    ensure!(
        call_msg["tool_calls"][0]["id"] == "call_1"
            && call_msg["tool_calls"][0]["function"]["name"] == "test__lookup",
        "{call_msg}"
    );
    let tool_msg = messages
        .iter()
        .find(|m| m["role"] == "tool")
        .context("no tool result message")?;
    ensure!(
        tool_msg["tool_call_id"] == "call_1" && tool_msg["content"] == format!("found {key}"),
        "{tool_msg}"
    );
    Ok(())
}
