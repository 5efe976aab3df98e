//! Promise C4: code that does not replay its history is caught, named and held, and the run
//! carries on when fixed code arrives.
//!
//! `nondet` with `--variant a` schedules `step` then `step`; `--variant b` schedules `step`
//! then `other`. Variant a records both schedules and is SIGKILLed inside the second
//! activity; a variant b worker replays the history (a signal gives it a workflow task) and
//! must report nondeterminism at command seq 2 (history: `step`, code: `other`). The run is
//! then held: running, waiting on its workflow task with the error as the held reason, not
//! failed. A variant a worker then replays it cleanly and the run completes.

use std::time::Duration;

use anyhow::{Context, Result};
use serde_json::{Value, json};
use steadfast_proto::v1 as pb;
use steadfast_proto::v1::history_event::Attributes;
use steadfast_proto::v1::waiting_on::What;
use steadfast_sdk::client::{Client, StartOptions};
use steadfast_tests::{Server, cli, describe, history, runtime, side, start_test_worker, wait_for};

/// The run's held reason, if it is held.
fn held_reason(run: &pb::RunInfo) -> Option<String> {
    run.waiting_on.iter().find_map(|w| match &w.what {
        Some(What::WorkflowTask(t)) if !t.held_reason.is_empty() => Some(t.held_reason.clone()),
        _ => None,
    })
}

#[test]
fn nondeterministic_code_holds_the_run_until_fixed_code_arrives() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let side_file = dir.path().join("side");
    let server = Server::start(&dir.path().join("data"), None)?;
    let url = server.url();
    let rt = runtime();
    let client = rt.block_on(Client::connect(url.clone()))?;

    // Variant a records `step` (done) and `step` (scheduled), then dies inside the second.
    let mut a = start_test_worker(&url, &side_file, &["--variant", "a"])?;
    let input = json!({ "first_ms": 0, "second_ms": 1_500, "start_to_close_ms": 2_000 });
    let run = rt
        .block_on(client.start_workflow("nondet", &input, StartOptions::default()))?
        .run_id;
    wait_for(
        Duration::from_secs(20),
        "the second activity to start",
        || {
            let ex = side::executions(&side_file, &run).ok()?;
            ex.iter().any(|e| e.activity_id == 2).then_some(())
        },
    )?;
    a.kill9();

    // Variant b replays it: a signal makes a workflow task.
    let mut b = start_test_worker(&url, &side_file, &["--variant", "b"])?;
    rt.block_on(client.signal(&run, "poke", &json!("replay, please")))?;
    let reason = wait_for(Duration::from_secs(20), "the run to be held", || {
        held_reason(&describe(&rt, &url, &run).ok()?)
    })?;
    b.kill9();
    eprintln!("held: {reason}");
    // "[STF-ND001] nondeterminism at command seq 2: history has <what> but the code issued
    // <what>": the stable code, the seq, and each side's activity type on its own side.
    assert!(
        reason.contains("STF-ND001") && reason.contains("seq 2"),
        "the held reason names the error code and the seq: {reason}"
    );
    let (history_side, code_side) = reason
        .split_once("but the code issued")
        .with_context(|| format!("the held reason says what the code did: {reason}"))?;
    let history_side = history_side
        .split_once("history has")
        .with_context(|| format!("the held reason says what the history has: {reason}"))?
        .1;
    assert!(
        history_side.contains("step") && !history_side.contains("other"),
        "the history has `step` at seq 2: {reason}"
    );
    assert!(
        code_side.contains("other"),
        "the code issued `other` at seq 2: {reason}"
    );
    let info = describe(&rt, &url, &run)?;
    assert_eq!(info.status(), pb::RunStatus::Running, "held, not failed");

    // The CLI shows the same: running, waiting on its workflow task, with the reason.
    let (code, out, err) = cli(&url, &["run", "show", &run, "--json"])?;
    assert_eq!(code, 0, "run show: {err}");
    let shown: Value = serde_json::from_str(&out).context("run show --json")?;
    assert_eq!(shown["status"], "running", "{shown}");
    let waiting = shown["waiting_on"].as_array().context("waiting_on")?;
    assert!(
        waiting.iter().any(|w| w["kind"] == "workflow_task"
            && w["held_reason"]
                .as_str()
                .is_some_and(|r| r.contains("STF-ND001") && r.contains("seq 2"))),
        "run show --json waiting_on: {waiting:?}"
    );

    // The history records the failed task with its cause, and no end of the run.
    let events = history(&rt, &url, &run)?;
    let failed: Vec<&pb::WorkflowTaskFailed> = events
        .iter()
        .filter_map(|e| match &e.attributes {
            Some(Attributes::WorkflowTaskFailed(f)) => Some(f),
            _ => None,
        })
        .collect();
    assert!(!failed.is_empty(), "a WorkflowTaskFailed is recorded");
    for f in &failed {
        assert_eq!(
            f.cause,
            pb::WorkflowTaskFailCause::Nondeterminism as i32,
            "{f:?}"
        );
        assert!(f.message.contains("seq 2"), "{f:?}");
    }
    assert!(
        !events.iter().any(|e| matches!(
            e.attributes,
            Some(Attributes::RunFailed(_)) | Some(Attributes::RunCompleted(_))
        )),
        "the run did not end"
    );

    // Fixed code (variant a again) picks the held task up and finishes the run.
    let _fixed = start_test_worker(&url, &side_file, &["--variant", "a"])?;
    let result: Vec<u32> = rt
        .block_on(client.await_result(&run, Duration::from_secs(40)))
        .context("the run's result once fixed code polls")?;
    assert_eq!(result, vec![0, 1]);
    let info = describe(&rt, &url, &run)?;
    assert_eq!(held_reason(&info), None, "no longer held");
    Ok(())
}
