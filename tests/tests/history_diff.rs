//! `steadfast history diff` against a real server and worker (issue 14, point 4).
//!
//! Two `seq` runs whose inputs differ (the steps' sleep) diverge at the first command: the
//! same activity type with a different input hash. A fork of a 3-step run at the task that
//! scheduled step 3, with input n=5, has the same first three commands and diverges at the
//! fourth: the original completes, the fork schedules step 4. A fork with the input unchanged
//! issues the same commands: exit 0. Bad run ids get a clear message and a non-zero exit.

use std::time::Duration;

use anyhow::{Context, Result};
use serde_json::{Value, json};
use steadfast_proto::v1 as pb;
use steadfast_proto::v1::history_event::Attributes;
use steadfast_sdk::client::{Client, StartOptions};
use steadfast_tests::{Server, cli, describe, history, runtime, start_test_worker, wait_for};

fn completed(rt: &tokio::runtime::Runtime, url: &str, run: &str) -> Result<()> {
    let info = wait_for(Duration::from_secs(60), "the run to close", || {
        describe(rt, url, run)
            .ok()
            .filter(|i| i.status != pb::RunStatus::Running as i32)
    })?;
    anyhow::ensure!(
        info.status == pb::RunStatus::Completed as i32,
        "run {run} ended {}",
        info.status
    );
    Ok(())
}

/// The seq of the WorkflowTaskCompleted whose command schedules activity `id`.
fn task_scheduling(events: &[pb::HistoryEvent], id: u32) -> Option<u64> {
    let at = events.iter().position(
        |e| matches!(&e.attributes, Some(Attributes::ActivityScheduled(a)) if a.command_seq == id),
    )?;
    events[..at]
        .iter()
        .rev()
        .find(|e| matches!(e.attributes, Some(Attributes::WorkflowTaskCompleted(_))))
        .map(|e| e.seq)
}

fn diff_json(url: &str, a: &str, b: &str) -> Result<(i32, Value)> {
    let (code, out, err) = cli(url, &["history", "diff", a, b, "--json"])?;
    let v: Value = serde_json::from_str(out.trim()).with_context(|| format!("{out}\n{err}"))?;
    Ok((code, v))
}

#[test]
fn diff_names_the_first_divergence_of_runs_and_forks() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let server = Server::start(&dir.path().join("data"), None)?;
    let url = server.url();
    let rt = runtime();
    let client = rt.block_on(Client::connect(url.clone()))?;
    let _worker = start_test_worker(&url, &dir.path().join("side"), &[])?;
    let start = |input: Value| -> Result<String> {
        Ok(rt
            .block_on(client.start_workflow("seq", &input, StartOptions::default()))?
            .run_id)
    };

    let a = start(json!({ "n": 3 }))?;
    let b = start(json!({ "n": 3, "sleep_ms": 1 }))?;
    completed(&rt, &url, &a)?;
    completed(&rt, &url, &b)?;

    // Different inputs: the first command differs in its input only.
    let (code, v) = diff_json(&url, &a, &b)?;
    assert_eq!(code, 1, "runs that differ exit 1: {v}");
    assert_eq!(v["identical"], false);
    let first = &v["first_divergence"];
    assert_eq!(first["index"], 1, "{v}");
    for side in ["a", "b"] {
        assert_eq!(first[side]["kind"], "ScheduleActivity", "{v}");
        assert_eq!(first[side]["name"], "step", "{v}");
        assert_eq!(first[side]["workflow_task"], 1, "{v}");
    }
    assert_ne!(first["a"]["input"]["blake3"], first["b"]["input"]["blake3"]);
    assert!(
        first["a"]["input"].get("value").is_none(),
        "no payloads unless asked"
    );
    let differs = &v["activities"][0]["differs"];
    assert!(
        differs
            .as_array()
            .is_some_and(|d| d.contains(&json!("input"))),
        "{v}"
    );
    // The same on a terminal; --show-payloads prints the inputs.
    let (code, text, err) = cli(&url, &["history", "diff", &a, &b])?;
    assert_eq!(code, 1, "{err}");
    eprintln!("history diff {a} {b}:\n{text}");
    assert!(text.contains("first divergence at command 1"), "{text}");
    assert!(!text.contains("sleep_ms"), "{text}");
    let (_, shown, _) = cli(&url, &["history", "diff", &a, &b, "--show-payloads"])?;
    assert!(shown.contains(r#""sleep_ms":1"#), "{shown}");

    // A fork of A at the task that scheduled step 3, with n=5: diverges at the 4th command.
    let events = history(&rt, &url, &a)?;
    let at = task_scheduling(&events, 3).context("the task that scheduled step 3")?;
    let fork_with = |input: Option<&str>| -> Result<String> {
        let at = at.to_string();
        let mut args = vec!["run", "fork", &a, "--at", &at];
        if let Some(i) = input {
            args.extend(["--input", i]);
        }
        let (code, out, err) = cli(&url, &args)?;
        anyhow::ensure!(code == 0, "fork: {err}");
        Ok(out.trim().to_string())
    };
    let longer = fork_with(Some(r#"{"n":5}"#))?;
    completed(&rt, &url, &longer)?;
    let (_, text, _) = cli(&url, &["history", "diff", &a, &longer])?;
    eprintln!("history diff {a} {longer}:\n{text}");
    let (code, v) = diff_json(&url, &a, &longer)?;
    assert_eq!(code, 1, "{v}");
    let first = &v["first_divergence"];
    assert_eq!(first["index"], 4, "{v}");
    assert_eq!(first["a"]["kind"], "CompleteRun", "{v}");
    assert_eq!(first["b"]["kind"], "ScheduleActivity", "{v}");
    assert_eq!(first["b"]["name"], "step", "{v}");
    assert_eq!(v["b"]["activities"], 5, "{v}");
    for i in 0..3 {
        assert_eq!(
            v["activities"][i]["a"]["input"], v["activities"][i]["b"]["input"],
            "the forked prefix: {v}"
        );
        assert_eq!(
            v["activities"][i]["a"]["result"],
            v["activities"][i]["b"]["result"]
        );
    }
    assert_eq!(v["activities"][3]["differs"], json!(["missing"]), "{v}");

    // A fork with the input unchanged issues the same commands.
    let same = fork_with(None)?;
    completed(&rt, &url, &same)?;
    let (code, v) = diff_json(&url, &a, &same)?;
    assert_eq!(code, 0, "{v}");
    assert_eq!(v["identical"], true);
    assert_eq!(v["first_divergence"], Value::Null);
    let (code, text, _) = cli(&url, &["history", "diff", &a, &same])?;
    assert_eq!(code, 0);
    assert!(text.contains("same commands: 4 in both"), "{text}");

    // Bad run ids: a clear message, a non-zero exit, nothing on stdout.
    let unknown = "01900000-0000-7000-8000-0000000000aa";
    for (args, code_want, says) in [
        (vec!["history", "diff", &a, unknown], 1, "not found"),
        (vec!["history", "diff", "not-a-run", &a], 2, "not a run id"),
    ] {
        let (code, out, err) = cli(&url, &args)?;
        assert_eq!(code, code_want, "{args:?}: {err}");
        assert!(out.trim().is_empty(), "{args:?}: {out}");
        assert!(err.contains(says), "{args:?}: {err}");
    }
    Ok(())
}
