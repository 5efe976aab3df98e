//! Tools typed by effect, with a SIGKILLed worker: a `write` attempt whose outcome was lost is
//! never retried blindly, the run waits for reconciliation, and `steadfast run reconcile`
//! decides (`--complete`, `--retry`, `--fail`); `read` and `idempotent` attempts in the same
//! situation are retried by themselves, with the same idempotency key.

mod agent_common;

use std::collections::BTreeSet;

use agent_common::{Env, waiting_of};
use anyhow::{Context, Result, ensure};
use serde_json::{Value, json};
use steadfast_proto::v1 as pb;
use steadfast_proto::v1::history_event::Attributes as A;

/// A call of `tool` that hangs on its first attempt, with a 2 s attempt timeout.
fn hanging(tool: &str) -> String {
    json!({
        "tool": tool, "hang_ms": 600_000, "hang_attempts": 1, "start_to_close_ms": 2_000,
        "retry_initial_ms": 100,
    })
    .to_string()
}

fn history(env: &Env, run: &str) -> Result<Vec<pb::HistoryEvent>> {
    Ok(env.rt.block_on(env.client().history(run))?)
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

#[test]
fn a_lost_write_waits_for_reconciliation_and_the_operator_decides() -> Result<()> {
    agent_common::seed();
    let env = Env::start()?;
    let mut first = env.worker()?;
    let complete = env.start_run("tool_call", &hanging("write_tool"), &[])?;
    let retry = env.start_run("tool_call", &hanging("write_tool"), &[])?;
    let fail = env.start_run("tool_call", &hanging("write_tool"), &[])?;
    let runs = [&complete, &retry, &fail];
    for run in runs {
        env.wait_starts(run, 1)?;
    }
    // Every write is inside its tool: kill the worker, and give the runs a new one at once, so
    // that a blind retry would have somewhere to run.
    first.kill9();
    let _second = env.worker()?;

    for run in runs {
        env.wait_waiting(run, "reconciliation")?;
        let show = env.show(run)?;
        ensure!(show["status"] == "running", "{}", show["status"]);
        let rec = waiting_of(&show, "reconciliation");
        let start = &env.starts(run)?[0];
        ensure!(
            rec.len() == 1
                && rec[0]["activity_id"] == start["id"]
                && rec[0]["activity_type"] == "write_tool"
                && rec[0]["attempt"] == 1,
            "{}",
            show["waiting_on"]
        );
        ensure!(
            waiting_of(&show, "activity").is_empty(),
            "a lost write is not an activity to run: {}",
            show["waiting_on"]
        );
    }
    let out = env.ok(&["run", "list", "--waiting", "reconciliation", "--json"])?;
    let listed: BTreeSet<String> = out
        .lines()
        .map(|l| {
            Ok(serde_json::from_str::<Value>(l)?["run_id"]
                .as_str()
                .context("run_id")?
                .into())
        })
        .collect::<Result<_>>()?;
    ensure!(
        listed == runs.iter().map(|r| r.to_string()).collect(),
        "run list --waiting reconciliation: {listed:?}"
    );
    // Nothing ran a second time, although a worker was there all along.
    for run in runs {
        ensure!(env.starts(run)?.len() == 1, "run {run}'s write ran again");
    }
    let id = env.starts(&complete)?[0]["id"].to_string();

    // Only a lost write can be reconciled.
    let (code, _, err) =
        env.cli(&["run", "reconcile", &complete, "--activity", "99", "--retry"])?;
    ensure!(code == 1 && err.contains("not open"), "exit {code}: {err}");

    // --complete: the attempt happened; the workflow gets the operator's value.
    env.ok(&[
        "run",
        "reconcile",
        &complete,
        "--activity",
        &id,
        "--complete",
        r#"{"ok":true}"#,
    ])?;
    ensure!(result(&env, &complete)? == json!({"tool": {"ok": true}}));
    ensure!(env.starts(&complete)?.len() == 1, "the write ran again");
    let events = history(&env, &complete)?;
    ensure!(
        events
            .iter()
            .any(|e| matches!(&e.attributes, Some(A::ActivityOutcomeUnknown(u)) if u.attempt == 1)),
        "ActivityOutcomeUnknown is recorded"
    );
    ensure!(
        events
            .iter()
            .any(|e| matches!(&e.attributes, Some(A::ActivityCompleted(c)) if c.reconciled)),
        "the completion is recorded as reconciled"
    );
    ensure!(
        !events
            .iter()
            .any(|e| matches!(&e.attributes, Some(A::ActivityTimedOut(_)))),
        "a lost write does not time out into a retry"
    );

    // --retry: the attempt did not happen; attempt 2 runs, with the same idempotency key.
    let id = env.starts(&retry)?[0]["id"].to_string();
    env.ok(&["run", "reconcile", &retry, "--activity", &id, "--retry"])?;
    let r = result(&env, &retry)?;
    let starts = env.starts(&retry)?;
    ensure!(starts.len() == 2, "one more execution: {starts:?}");
    ensure!(
        starts[0]["attempt"] == 1
            && starts[1]["attempt"] == 2
            && starts[0]["key"] == starts[1]["key"],
        "{starts:?}"
    );
    ensure!(
        r["tool"]["attempt"] == 2 && r["tool"]["key"] == starts[0]["key"],
        "{r}"
    );

    // --fail: the attempt failed; the workflow gets the failure.
    let id = env.starts(&fail)?[0]["id"].to_string();
    env.ok(&[
        "run",
        "reconcile",
        &fail,
        "--activity",
        &id,
        "--fail",
        "refund API said no",
    ])?;
    ensure!(result(&env, &fail)? == json!({"error": "refund API said no"}));
    ensure!(env.starts(&fail)?.len() == 1, "the write ran again");
    Ok(())
}

#[test]
fn lost_reads_and_idempotent_writes_are_retried_with_the_same_key() -> Result<()> {
    agent_common::seed();
    let env = Env::start()?;
    let mut first = env.worker()?;
    let idem = env.start_run("tool_call", &hanging("idem_tool"), &[])?;
    let read = env.start_run("tool_call", &hanging("read_tool"), &[])?;
    for run in [&idem, &read] {
        env.wait_starts(run, 1)?;
    }
    first.kill9();
    let _second = env.worker()?;
    for run in [&idem, &read] {
        let r = result(&env, run)?;
        let starts = env.starts(run)?;
        ensure!(
            starts.len() == 2,
            "run {run}: two executions expected: {starts:?}"
        );
        ensure!(
            starts[0]["attempt"] == 1
                && starts[1]["attempt"] == 2
                && starts[0]["key"] == starts[1]["key"]
                && starts[0]["pid"] != starts[1]["pid"],
            "{starts:?}"
        );
        ensure!(r["tool"]["attempt"] == 2, "{r}");
        let events = history(&env, run)?;
        ensure!(
            events
                .iter()
                .any(|e| matches!(&e.attributes, Some(A::ActivityTimedOut(t)) if t.attempt == 1)),
            "attempt 1 timed out into a retry"
        );
        ensure!(
            !events
                .iter()
                .any(|e| matches!(&e.attributes, Some(A::ActivityOutcomeUnknown(_)))),
            "a lost read or idempotent attempt is retried, never waits for reconciliation"
        );
        // Every attempt is recorded as started before it runs (issue 9), with the effect its
        // worker declared: not a write, so losing it meant a retry.
        let started: Vec<_> = events
            .iter()
            .filter_map(|e| match &e.attributes {
                Some(A::ActivityStarted(s)) => Some((s.attempt, s.effect)),
                _ => None,
            })
            .collect();
        ensure!(
            started.len() == 2
                && started
                    .iter()
                    .all(|(_, effect)| *effect != pb::Effect::Write as i32),
            "run {run}: attempts 1 and 2 recorded as started, not as writes: {started:?}"
        );
    }
    Ok(())
}

#[test]
fn a_write_running_when_the_server_crashes_also_waits_for_reconciliation() -> Result<()> {
    agent_common::seed();
    let mut env = Env::start()?;
    let mut first = env.worker()?;
    let run = env.start_run("tool_call", &hanging("write_tool"), &[])?;
    env.wait_starts(&run, 1)?;
    // Both go down while the write runs; the deadline of the attempt is rebuilt from the
    // history (ActivityStarted) after the restart.
    first.kill9();
    env.server_restart()?;
    let _second = env.worker()?;
    env.wait_waiting(&run, "reconciliation")?;
    let show = env.show(&run)?;
    let rec = waiting_of(&show, "reconciliation");
    ensure!(
        rec.len() == 1 && rec[0]["attempt"] == 1,
        "{}",
        show["waiting_on"]
    );
    ensure!(env.starts(&run)?.len() == 1, "the write ran again");
    // Still waiting after another crash: the decision is the operator's.
    env.server_restart()?;
    let show = env.show(&run)?;
    ensure!(
        waiting_of(&show, "reconciliation").len() == 1,
        "{}",
        show["waiting_on"]
    );
    let id = rec[0]["activity_id"].to_string();
    env.ok(&["run", "reconcile", &run, "--activity", &id, "--retry"])?;
    let r = result(&env, &run)?;
    ensure!(r["tool"]["attempt"] == 2, "{r}");
    ensure!(env.starts(&run)?.len() == 2);
    Ok(())
}
