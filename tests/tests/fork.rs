//! `run fork` and `run reset` against a real server and worker (issue 14, point 3).
//!
//! A 6-step `seq` run completes; it is forked at the boundary after step 3 (the
//! WorkflowTaskCompleted that scheduled step 4, found in the history): the fork completes with
//! the same result, and the side file shows steps 1-3 executed once in all (by the original)
//! and steps 4-6 once per run. Bad arguments get a clear message and a non-zero exit. A reset
//! of an open run terminates it, its reason naming the new run.

use std::time::Duration;

use anyhow::{Context, Result};
use serde_json::json;
use steadfast_proto::v1 as pb;
use steadfast_proto::v1::history_event::Attributes;
use steadfast_sdk::client::{Client, StartOptions};
use steadfast_tests::{Server, cli, describe, history, runtime, side, start_test_worker, wait_for};

const STEPS: u32 = 6;

/// Executions of each activity id of `run`, from the side file.
fn executions(side_file: &std::path::Path, run: &str) -> Result<Vec<u32>> {
    let mut counts = vec![0; STEPS as usize];
    for e in side::executions(side_file, run)? {
        counts[(e.activity_id - 1) as usize] += 1;
    }
    Ok(counts)
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

fn closed(rt: &tokio::runtime::Runtime, url: &str, run: &str) -> Option<pb::RunInfo> {
    let info = describe(rt, url, run).ok()?;
    (info.status != pb::RunStatus::Running as i32).then_some(info)
}

#[test]
fn fork_reuses_the_recorded_steps_and_reset_terminates_the_original() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let side_file = dir.path().join("side");
    let server = Server::start(&dir.path().join("data"), None)?;
    let url = server.url();
    let rt = runtime();
    let client = rt.block_on(Client::connect(url.clone()))?;
    let _worker = start_test_worker(&url, &side_file, &[])?;

    let run = rt
        .block_on(client.start_workflow("seq", &json!({ "n": STEPS }), StartOptions::default()))?
        .run_id;
    let done = wait_for(Duration::from_secs(60), "the original to complete", || {
        closed(&rt, &url, &run)
    })?;
    assert_eq!(done.status, pb::RunStatus::Completed as i32);
    assert_eq!(executions(&side_file, &run)?, vec![1; STEPS as usize]);

    let events = history(&rt, &url, &run)?;
    let at = task_scheduling(&events, 4).context("the task that scheduled step 4")?;
    let (code, out, err) = cli(&url, &["run", "fork", &run, "--at", &at.to_string()])?;
    assert_eq!(code, 0, "fork: {err}");
    let fork = out.trim().to_string();
    eprintln!("fork {fork} at seq {at}: {err}");
    assert!(err.contains(&format!("up to seq {}", at + 1)), "{err}");

    let forked = wait_for(Duration::from_secs(60), "the fork to complete", || {
        closed(&rt, &url, &fork)
    })?;
    assert_eq!(forked.status, pb::RunStatus::Completed as i32);
    assert_eq!(
        forked.result, done.result,
        "the same steps give the same result"
    );
    assert_eq!(forked.forked_from_run_id, run);
    assert_eq!(forked.forked_from_seq, at + 1);
    // Steps 1-3 came from the history; step 4 (scheduled at the boundary) and 5-6 ran.
    assert_eq!(executions(&side_file, &fork)?, vec![0, 0, 0, 1, 1, 1]);
    assert_eq!(executions(&side_file, &run)?, vec![1; STEPS as usize]);
    let fork_events = history(&rt, &url, &fork)?;
    for (a, b) in events.iter().zip(&fork_events).skip(1).take(at as usize) {
        assert_eq!(
            (a.seq, a.time_ms, &a.attributes),
            (b.seq, b.time_ms, &b.attributes),
            "the prefix is the original's, seq for seq"
        );
    }
    let (code, out, _) = cli(&url, &["run", "show", &fork])?;
    assert_eq!(code, 0);
    assert!(out.contains("forked from") && out.contains(&run), "{out}");
    // Both ways: the original names its fork (run show, --json, run list --forked-from).
    let (code, out, _) = cli(&url, &["run", "show", &run])?;
    assert_eq!(code, 0);
    let forks_line = out
        .lines()
        .find(|l| l.starts_with("forks "))
        .with_context(|| format!("no forks line in {out}"))?;
    assert!(forks_line.contains(&fork), "{forks_line}");
    let (code, out, _) = cli(&url, &["run", "show", &run, "--json"])?;
    assert_eq!(code, 0);
    let v: serde_json::Value = serde_json::from_str(&out)?;
    assert_eq!(v["forks"], serde_json::json!([fork.clone()]), "{out}");
    let (code, out, _) = cli(&url, &["run", "list", "--forked-from", &run])?;
    assert_eq!(code, 0);
    assert!(out.contains(&fork), "{out}");
    assert_eq!(
        out.lines().filter(|l| l.contains(&run)).count(),
        0,
        "only forks are listed, not the original: {out}"
    );
    let (code, _, err) = cli(&url, &["run", "list", "--forked-from", "not-a-run"])?;
    assert_ne!(code, 0);
    assert!(err.contains("forked_from"), "{err}");

    // Bad arguments: a clear message and a non-zero exit, nothing created.
    let unknown = "01900000-0000-7000-8000-0000000000aa";
    for (args, says) in [
        (vec!["run", "fork", unknown, "--at", "3"], "not found"),
        (vec!["run", "fork", &run, "--at", "0"], "at least 1"),
        (vec!["run", "fork", &run, "--at", "100000"], "past the end"),
        (vec!["run", "fork", "not-a-run", "--at", "3"], "run"),
        (vec!["run", "reset", &run, "--at", "3"], "already completed"),
    ] {
        let (code, out, err) = cli(&url, &args)?;
        assert_ne!(code, 0, "{args:?} must fail: {out}");
        assert!(out.trim().is_empty(), "{args:?} prints no run id: {out}");
        assert!(err.contains(says), "{args:?}: {err}");
    }
    let last = events.last().map(|e| e.seq).unwrap_or(0);
    let (code, _, err) = cli(&url, &["run", "fork", &run, "--at", &last.to_string()])?;
    assert_ne!(code, 0, "a fork inside the closing task is refused");
    assert!(err.contains("closed the run"), "{err}");

    // Reset: an open run (its one activity sleeps long) is terminated, naming the new run.
    let slow = rt
        .block_on(client.start_workflow(
            "seq",
            &json!({ "n": 2, "sleep_ms": 600_000, "start_to_close_ms": 900_000 }),
            StartOptions::default(),
        ))?
        .run_id;
    wait_for(Duration::from_secs(30), "the first step to start", || {
        side::executions(&side_file, &slow)
            .ok()
            .filter(|e| !e.is_empty())
    })?;
    let slow_events = history(&rt, &url, &slow)?;
    let at = task_scheduling(&slow_events, 1).context("the first task")?;
    let (code, out, err) = cli(&url, &["run", "reset", &slow, "--at", &at.to_string()])?;
    assert_eq!(code, 0, "reset: {err}");
    let reset = out.trim().to_string();
    let original = describe(&rt, &url, &slow)?;
    assert_eq!(original.status, pb::RunStatus::Terminated as i32);
    let reason = history(&rt, &url, &slow)?
        .iter()
        .find_map(|e| match &e.attributes {
            Some(Attributes::RunTerminated(t)) => Some(t.reason.clone()),
            _ => None,
        })
        .context("RunTerminated")?;
    assert!(reason.contains(&reset), "{reason}");
    let (code, out, _) = cli(&url, &["run", "show", &slow])?;
    assert_eq!(code, 0);
    assert!(
        out.lines()
            .any(|l| l.starts_with("forks ") && l.contains(&reset)),
        "the reset original names its reset: {out}"
    );
    let info = describe(&rt, &url, &reset)?;
    assert_eq!(info.forked_from_run_id, slow);
    assert_eq!(
        info.workflow_id, original.workflow_id,
        "a reset keeps the workflow id"
    );
    // Step 1 was only scheduled at the boundary: the reset runs it again.
    wait_for(Duration::from_secs(30), "the reset's first step", || {
        side::executions(&side_file, &reset)
            .ok()
            .filter(|e| !e.is_empty())
    })?;
    Ok(())
}
