//! Python tool workers (python/steadfast_worker, the tools in tests/python/tools.py) called
//! by a Rust workflow (test-worker's `tool`), across processes: a result, a typed
//! non-retryable failure, a read/idempotent tool whose Python worker is SIGKILLed
//! mid-activity retried with the same idempotency key (quickly: through the worker session,
//! not the attempt timeout), a write tool in the same situation waiting for reconciliation,
//! and a run cancellation reaching the tool through `ctx.is_cancelled()`.
//!
//! Needs `python3` with `grpcio grpcio-tools protobuf` (`.ci/run` installs them with
//! `pip install ./python`). The package runs from the checkout (PYTHONPATH=python), so its
//! stubs come from this proto/.

mod agent_common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use agent_common::{Env, WAIT, side_lines, waiting_of};
use anyhow::{Result, ensure};
use serde_json::{Value, json};
use steadfast_proto::v1 as pb;
use steadfast_tests::{Proc, start_test_worker, wait_for, workspace_root};

const PY_QUEUE: &str = "py-tools";
const PIP_HINT: &str = "run `python3 -m pip install ./python` (CI's .ci/run does)";
/// Longer than every wait below: a retry seen within WAIT came from the worker session
/// giving the dead worker's task back, not from this timeout.
const ATTEMPT_TIMEOUT_MS: u64 = 180_000;

fn check_python() {
    let deps = Command::new("python3")
        .args(["-c", "import grpc, grpc_tools, google.protobuf"])
        .output();
    match deps {
        Err(e) => panic!("python3 is needed for the Python worker test ({e}); {PIP_HINT}"),
        Ok(o) if !o.status.success() => panic!(
            "the Python gRPC packages are missing ({}); {PIP_HINT}",
            String::from_utf8_lossy(&o.stderr).trim()
        ),
        Ok(_) => {}
    }
}

struct World {
    env: Env,
    keys: PathBuf,
    _rust: Proc,
}

impl World {
    fn start() -> Result<World> {
        World::start_with(&[])
    }

    fn start_with(server_args: &[&str]) -> Result<World> {
        agent_common::seed();
        check_python();
        let env = Env::start_with(server_args)?;
        let rust = start_test_worker(&env.url(), &env.dir.path().join("rust-side"), &[])?;
        let keys = env.dir.path().join("py-keys.jsonl");
        Ok(World {
            env,
            keys,
            _rust: rust,
        })
    }

    /// A Python tool worker on PY_QUEUE (stub cache in the test's temp dir).
    fn python(&self) -> Result<Proc> {
        let root = workspace_root();
        let mut cmd = Command::new("python3");
        cmd.args(["-m", "steadfast_worker", "--addr", &self.env.url()])
            .args([
                "--task-queue",
                PY_QUEUE,
                "--log-level",
                "warning",
                "--module",
            ])
            .arg(root.join("tests/python/tools.py"))
            .env("PYTHONPATH", root.join("python"))
            .env("STEADFAST_TEST_KEYS", &self.keys)
            .env("STEADFAST_STUB_CACHE", self.env.dir.path().join("stubs"));
        Proc::spawn("python worker", &mut cmd)
    }

    fn call(&self, tool: &str, args: Value) -> Result<String> {
        self.call_with(tool, args, &[])
    }

    fn call_with(&self, tool: &str, args: Value, run_args: &[&str]) -> Result<String> {
        let input = json!({
            "tool": tool, "task_queue": PY_QUEUE, "args": args,
            "start_to_close_ms": ATTEMPT_TIMEOUT_MS,
        });
        self.env.start_run("tool", &input.to_string(), run_args)
    }

    fn result(&self, run: &str) -> Result<Value> {
        let info = self.env.wait_closed(run)?;
        ensure!(
            info.status() == pb::RunStatus::Completed,
            "run {run} ended {:?}: {:?}",
            info.status(),
            info.failure
        );
        Ok(serde_json::from_str(
            &self.env.ok(&["run", "result", run])?,
        )?)
    }

    /// The Python side's lines of `run`.
    fn seen(&self, run: &str) -> Result<Vec<Value>> {
        Ok(side_lines(&self.keys)?
            .into_iter()
            .filter(|l| l["run"] == run)
            .collect())
    }

    fn wait_seen(&self, run: &str, n: usize) -> Result<Vec<Value>> {
        wait_for(WAIT, &format!("{n} Python attempts of {run}"), || {
            self.seen(run).ok().filter(|l| l.len() >= n)
        })
    }
}

fn touch(p: &Path) -> Result<()> {
    std::fs::write(p, b"go")?;
    Ok(())
}

#[test]
fn a_rust_workflow_calls_python_tools() -> Result<()> {
    let w = World::start()?;
    let _py = w.python()?;
    let run = w.call("lookup_order", json!({ "order": "A-17" }))?;
    let out = w.result(&run)?;
    assert_eq!(
        out["tool"],
        json!({ "order": "A-17", "status": "shipped", "by": "python" }),
        "{out}"
    );
    let seen = w.seen(&run)?;
    assert_eq!(seen.len(), 1, "{seen:?}");
    assert_eq!(seen[0]["key"], format!("default/{run}/1"), "{seen:?}");
    // No --otlp-endpoint: no trace context.
    assert_eq!(seen[0]["traceparent"], Value::Null, "{seen:?}");

    // A typed, non-retryable failure: reported with its type, never retried.
    let run = w.call("find_customer", json!({ "email": "x@example.com" }))?;
    let out = w.result(&run)?;
    assert_eq!(out["type"], "CustomerNotFound", "{out}");
    assert_eq!(out["non_retryable"], true, "{out}");
    assert!(
        out["error"]
            .as_str()
            .is_some_and(|m| m.contains("no customer")),
        "{out}"
    );
    assert_eq!(w.seen(&run)?.len(), 1, "a non-retryable failure ran once");
    Ok(())
}

/// With traces exported, the Python tool's ctx names the activity's span in the run's trace
/// (here the caller's, given at start). That the span id is the one exported is checked
/// across processes in tests/tests/traces.rs (the server computes one value for every worker).
#[test]
fn a_python_tool_sees_its_activity_s_traceparent() -> Result<()> {
    // Nothing listens on port 1: spans stay behind the cursor; the context is still given.
    let w = World::start_with(&["--otlp-endpoint", "http://127.0.0.1:1"])?;
    let _py = w.python()?;
    let (trace, caller) = ("4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7");
    let given = format!("00-{trace}-{caller}-01");
    let run = w.call_with(
        "lookup_order",
        json!({ "order": "A-18" }),
        &["--traceparent", &given],
    )?;
    w.result(&run)?;
    let seen = w.seen(&run)?;
    assert_eq!(seen.len(), 1, "{seen:?}");
    let tp = seen[0]["traceparent"].as_str().unwrap_or_default();
    let parts: Vec<&str> = tp.split('-').collect();
    assert!(
        parts.len() == 4
            && parts[0] == "00"
            && parts[1] == trace
            && parts[2].len() == 16
            && parts[2] != caller
            && parts[3] == "01",
        "the tool saw traceparent {tp:?}"
    );
    Ok(())
}

#[test]
fn a_killed_python_worker_s_idempotent_tool_is_retried_with_the_same_key() -> Result<()> {
    let w = World::start()?;
    let mut first = w.python()?;
    let gate = w.env.dir.path().join("gate");
    let run = w.call("sync_crm", json!({ "gate": gate }))?;
    w.wait_seen(&run, 1)?;
    let killed_at = Instant::now();
    first.kill9();
    touch(&gate)?;
    let _second = w.python()?;
    let out = w.result(&run)?;
    let took = killed_at.elapsed();
    let seen = w.seen(&run)?;
    assert_eq!(seen.len(), 2, "{seen:?}");
    assert_eq!(seen[0]["key"], seen[1]["key"], "the same idempotency key");
    assert_eq!(
        (seen[0]["attempt"].clone(), seen[1]["attempt"].clone()),
        (json!(1), json!(2))
    );
    assert_ne!(seen[0]["pid"], seen[1]["pid"], "{seen:?}");
    assert_eq!(out["tool"]["synced"], seen[0]["key"], "{out}");
    assert!(
        took < Duration::from_millis(ATTEMPT_TIMEOUT_MS),
        "retried after {took:?}: the worker session gave the task back, not the timeout"
    );
    Ok(())
}

#[test]
fn a_killed_python_worker_s_write_tool_waits_for_reconciliation() -> Result<()> {
    let w = World::start()?;
    let mut first = w.python()?;
    let gate = w.env.dir.path().join("gate");
    let run = w.call("charge_card", json!({ "gate": gate, "amount": 5 }))?;
    w.wait_seen(&run, 1)?;
    first.kill9();
    touch(&gate)?;
    let _second = w.python()?;
    w.env.wait_waiting(&run, "reconciliation")?;
    let show = w.env.show(&run)?;
    let rec = waiting_of(&show, "reconciliation");
    ensure!(
        rec.len() == 1 && rec[0]["activity_type"] == "charge_card" && rec[0]["attempt"] == 1,
        "{}",
        show["waiting_on"]
    );
    // Never retried blindly: still one attempt, and the operator decides.
    assert_eq!(w.seen(&run)?.len(), 1);
    let id = rec[0]["activity_id"].to_string();
    w.env
        .ok(&["run", "reconcile", &run, "--activity", &id, "--retry"])?;
    let out = w.result(&run)?;
    assert_eq!(out["tool"], json!({ "charged": 5 }), "{out}");
    let seen = w.seen(&run)?;
    assert_eq!(seen.len(), 2, "{seen:?}");
    assert_eq!(seen[0]["key"], seen[1]["key"]);
    Ok(())
}

#[test]
fn a_run_cancellation_reaches_the_python_tool() -> Result<()> {
    let w = World::start()?;
    let _py = w.python()?;
    let gate = w.env.dir.path().join("never");
    let run = w.call("charge_card", json!({ "gate": gate }))?;
    w.wait_seen(&run, 1)?;
    w.env.ok(&["run", "cancel", &run])?;
    wait_for(WAIT, "the tool to see its cancellation", || {
        w.seen(&run)
            .ok()
            .filter(|l| l.iter().any(|x| x["cancelled"] == true))
    })?;
    w.env.wait_closed(&run)?;
    Ok(())
}

/// The details a tool records with `ctx.record_heartbeat` before it waits (a job id) reach
/// the retry after its worker is SIGKILLed (`last_heartbeat_details`): the retry re-attaches
/// to the job instead of starting another.
#[test]
fn a_retry_re_attaches_to_the_job_its_killed_attempt_recorded() -> Result<()> {
    let w = World::start()?;
    let mut first = w.python()?;
    let gate = w.env.dir.path().join("gate");
    let run = w.call("generate", json!({ "gate": gate }))?;
    w.wait_seen(&run, 1)?;
    first.kill9();
    let _second = w.python()?;
    let out = w.result(&run)?;
    let seen = w.seen(&run)?;
    let created: Vec<_> = seen.iter().filter(|l| l.get("created").is_some()).collect();
    assert_eq!(created.len(), 1, "one job started, not two: {seen:?}");
    assert_eq!(seen.len(), 2, "{seen:?}");
    assert_eq!(seen[1]["attempt"], 2, "{seen:?}");
    assert_eq!(seen[1]["reattached"], created[0]["created"], "{seen:?}");
    assert_eq!(
        out["tool"],
        json!({ "job": created[0]["created"], "reattached": true }),
        "{out}"
    );
    Ok(())
}
