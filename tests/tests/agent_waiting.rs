//! "Waiting on", said plainly, across processes: every open run says what it waits for (an
//! activity with its attempt and state, a retry backoff with its next retry, a timer with
//! its due time, a signal with its question and choices); `run list --waiting signal` is the
//! inbox of runs waiting on a human and `run signal` answers one; signal-with-start starts a
//! run that sees the signal.

mod agent_common;

use std::collections::BTreeSet;

use agent_common::{Env, waiting_of};
use anyhow::{Context, Result, ensure};
use serde_json::{Value, json};
use steadfast_proto::v1 as pb;
use steadfast_proto::v1::waiting_on::What;

/// The run ids of `run list --waiting KIND --json`.
fn listed(env: &Env, kind: &str) -> Result<BTreeSet<String>> {
    let out = env.ok(&["run", "list", "--waiting", kind, "--json"])?;
    out.lines()
        .map(|l| {
            let v: Value = serde_json::from_str(l)?;
            Ok(v["run_id"].as_str().context("run_id")?.to_string())
        })
        .collect()
}

fn set(ids: &[&String]) -> BTreeSet<String> {
    ids.iter().map(|s| s.to_string()).collect()
}

/// The single activity wait of a run.
fn activity_wait(r: &pb::RunInfo) -> Result<pb::WaitActivity> {
    let acts: Vec<_> = r
        .waiting_on
        .iter()
        .filter_map(|w| match &w.what {
            Some(What::Activity(a)) => Some(a.clone()),
            _ => None,
        })
        .collect();
    ensure!(
        acts.len() == 1,
        "one activity wait expected: {:?}",
        r.waiting_on
    );
    Ok(acts[0].clone())
}

#[test]
fn every_open_run_says_what_it_waits_on_and_the_inbox_lists_the_human_ones() -> Result<()> {
    agent_common::seed();
    let env = Env::start()?;
    let _worker = env.worker()?;

    // An activity no worker polls for: scheduled, attempt 1.
    let scheduled = env.start_run(
        "tool_call",
        r#"{"tool":"read_tool","task_queue":"nobody-polls-this"}"#,
        &[],
    )?;
    // An activity that fails and backs off for 10 minutes before attempt 2.
    let backoff = env.start_run(
        "tool_call",
        r#"{"tool":"flaky","retry_initial_ms":600000}"#,
        &[],
    )?;
    // An activity that is running (its worker is inside it).
    let running = env.start_run(
        "tool_call",
        r#"{"tool":"read_tool","hang_ms":600000,"hang_attempts":1,"start_to_close_ms":900000}"#,
        &[],
    )?;
    // A durable timer of an hour.
    let timer = env.start_run("sleeper", r#"{"ms":3600000}"#, &[])?;
    // Two humans' questions.
    let ask_refund = json!({"question": "Refund $120 to ticket 7?", "choices": ["yes", "no"]});
    let ask_deploy =
        json!({"question": "Deploy the fix to prod?", "choices": ["deploy", "wait", "abort"]});
    let h1 = env.start_run("human", &ask_refund.to_string(), &[])?;
    let h2 = env.start_run("human", &ask_deploy.to_string(), &[])?;

    let r = env.wait_run(&scheduled, "activity scheduled", |r| {
        activity_wait(r).is_ok()
    })?;
    let a = activity_wait(&r)?;
    ensure!(
        a.activity_type == "read_tool"
            && a.attempt == 1
            && a.state == "scheduled"
            && a.next_retry_ms == 0,
        "{a:?}"
    );

    let r = env.wait_run(&backoff, "the flaky activity to back off", |r| {
        activity_wait(r).is_ok_and(|a| a.state == "backoff")
    })?;
    let a = activity_wait(&r)?;
    let failed_at = env.starts(&backoff)?[0]["t_us"].as_i64().context("t_us")? / 1000;
    ensure!(
        a.activity_type == "flaky" && a.attempt == 2,
        "after one failure the run waits on attempt 2: {a:?}"
    );
    let wait_ms = a.next_retry_ms - failed_at;
    ensure!(
        (590_000..=610_000).contains(&wait_ms),
        "next retry {} ms after the failure, expected ~600000: {a:?}",
        wait_ms
    );

    env.wait_starts(&running, 1)?;
    let r = env.wait_run(&running, "the activity to be running", |r| {
        activity_wait(r).is_ok_and(|a| a.state == "running")
    })?;
    let a = activity_wait(&r)?;
    ensure!(
        a.activity_type == "read_tool" && a.attempt == 1 && a.since_ms >= r.started_ms,
        "{a:?}"
    );

    let r = env.wait_waiting(&timer, "timer")?;
    let Some(What::Timer(t)) = r.waiting_on.iter().find_map(|w| w.what.clone()) else {
        anyhow::bail!("timer wait expected first: {:?}", r.waiting_on);
    };
    let in_ms = t.fire_at_ms - r.started_ms;
    ensure!(
        (3_600_000..3_660_000).contains(&in_ms),
        "the timer fires {in_ms} ms after the start, expected an hour"
    );

    env.wait_waiting(&h1, "signal")?;
    env.wait_waiting(&h2, "signal")?;
    // `run show --json` says it with the question and choices.
    let show = env.show(&h1)?;
    let sig = waiting_of(&show, "signal");
    ensure!(
        sig.len() == 1
            && sig[0]["name"] == "approve"
            && sig[0]["question"] == ask_refund["question"]
            && sig[0]["choices"] == ask_refund["choices"],
        "{}",
        show["waiting_on"]
    );
    let timer_show = env.show(&timer)?;
    ensure!(
        waiting_of(&timer_show, "timer").len() == 1,
        "{}",
        timer_show["waiting_on"]
    );

    // Each filter lists exactly the runs waiting on that.
    ensure!(listed(&env, "signal")? == set(&[&h1, &h2]), "signal");
    ensure!(
        listed(&env, "activity")? == set(&[&scheduled, &backoff, &running]),
        "activity"
    );
    ensure!(listed(&env, "timer")? == set(&[&timer]), "timer");
    ensure!(listed(&env, "budget")?.is_empty(), "budget");
    ensure!(listed(&env, "reconciliation")?.is_empty(), "reconciliation");

    // The inbox: one row per question, with its choices.
    let inbox = env.ok(&["run", "list", "--waiting", "signal"])?;
    let rows: Vec<&str> = inbox.lines().skip(1).collect();
    ensure!(rows.len() == 2, "two questions expected:\n{inbox}");
    for (run, ask) in [(&h1, &ask_refund), (&h2, &ask_deploy)] {
        let row = rows
            .iter()
            .find(|r| r.starts_with(run.as_str()))
            .with_context(|| format!("inbox lacks {run}:\n{inbox}"))?;
        let choices: Vec<&str> = ask["choices"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(Value::as_str)
            .collect();
        ensure!(
            row.contains("approve")
                && row.ends_with(ask["question"].as_str().unwrap())
                && row.contains(&choices.join("|")),
            "inbox row: {row}"
        );
    }

    // Answer the first; it completes with that answer, and leaves the inbox.
    let out = env.ok(&["run", "signal", &h1, "approve", "--input", r#""yes""#])?;
    ensure!(out.trim() == h1, "run signal prints the run id: {out}");
    let closed = env.wait_closed(&h1)?;
    ensure!(closed.status() == pb::RunStatus::Completed, "{closed:?}");
    let result: Value = serde_json::from_str(&env.ok(&["run", "result", &h1])?)?;
    ensure!(
        result == json!({"question": ask_refund["question"], "answer": "yes"}),
        "{result}"
    );
    ensure!(
        listed(&env, "signal")? == set(&[&h2]),
        "the answered run left the inbox"
    );
    Ok(())
}

#[test]
fn signal_with_start_starts_a_run_that_sees_the_signal() -> Result<()> {
    agent_common::seed();
    let env = Env::start()?;
    let _worker = env.worker()?;
    let start_input = r#"{"question":"Ship release 1.2?","choices":["ship it","hold"]}"#;
    let signal = |wid: &str, answer: &str| -> Result<(String, String)> {
        let input = serde_json::to_string(answer)?;
        let (code, out, err) = env.cli(&[
            "run",
            "signal",
            "--workflow-id",
            wid,
            "approve",
            "--input",
            &input,
            "--start",
            "human",
            "--start-input",
            start_input,
        ])?;
        ensure!(code == 0, "run signal exited {code}: {err}");
        Ok((out.trim().to_string(), err))
    };

    // No open run of the workflow id: one is started, and it sees the signal.
    let (run, err) = signal("release-1.2", "ship it")?;
    ensure!(
        err.contains("started run"),
        "stderr says it started a run: {err}"
    );
    let closed = env.wait_closed(&run)?;
    ensure!(closed.status() == pb::RunStatus::Completed, "{closed:?}");
    ensure!(closed.workflow_id == "release-1.2", "{closed:?}");
    let result: Value = serde_json::from_str(&env.ok(&["run", "result", &run])?)?;
    ensure!(
        result == json!({"question": "Ship release 1.2?", "answer": "ship it"}),
        "{result}"
    );

    // An open run of the workflow id gets the signal; nothing new starts.
    let open = env.start_run(
        "human",
        r#"{"question":"Roll back?"}"#,
        &["--workflow-id", "release-1.3"],
    )?;
    env.wait_waiting(&open, "signal")?;
    let (got, err) = signal("release-1.3", "hold")?;
    ensure!(got == open, "the open run got it: {got} vs {open}");
    ensure!(!err.contains("started run"), "{err}");
    env.wait_closed(&open)?;
    let result: Value = serde_json::from_str(&env.ok(&["run", "result", &open])?)?;
    ensure!(
        result == json!({"question": "Roll back?", "answer": "hold"}),
        "{result}"
    );

    // The first workflow id's run is closed: a new signal-with-start starts a second run.
    let (again, _) = signal("release-1.2", "hold")?;
    ensure!(again != run, "a closed run is not signalled");
    env.wait_closed(&again)?;
    let result: Value = serde_json::from_str(&env.ok(&["run", "result", &again])?)?;
    ensure!(result["answer"] == "hold", "{result}");
    Ok(())
}
