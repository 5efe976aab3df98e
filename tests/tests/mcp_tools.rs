//! MCP tools as activities, across processes: `mcp-worker` mounts `mcp-test-server` (an MCP
//! server over stdio, rmcp's server side) and a Rust workflow calls its tools. Results are
//! recorded; each tool's effect comes from its annotations; bad arguments are refused before
//! the call (the server's side file proves it was never called); a destructive tool waits for
//! approval and then runs once; a write whose worker is SIGKILLed mid-call waits for
//! reconciliation and is not retried; a dead server process is started again by the next
//! call; a cancelled activity cancels its call on the server.

mod agent_common;

use std::process::Command;

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
