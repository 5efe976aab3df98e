//! A held run retries without growing its history (issue 10, point 3; promise C6).
//!
//! The first failure of a run's workflow task is recorded (the run shows as held, with the
//! cause); later attempts are transient: handing one out and failing it with the same cause
//! append nothing, and the attempt that completes records what it was sent
//! (`[WorkflowTaskStarted, WorkflowTaskCompleted, commands...]`). A real `steadfast server`,
//! driven through the raw worker API (to fail tasks and hold stale tokens as a skeptical
//! worker would) and by `test-worker` (the fixed code, which must replay the result).

use std::time::Duration;

use anyhow::{Context, Result, ensure};
use serde_json::json;
use steadfast_proto::v1 as pb;
use steadfast_proto::v1::command::Command as Cmd;
use steadfast_proto::v1::history_event::Attributes;
use steadfast_proto::v1::waiting_on::What;
use steadfast_sdk::client::{Client, StartOptions};
use steadfast_tests::raw::{QUEUE, Raw, json as payload};
use steadfast_tests::{Server, cli, describe, runtime, side, start_test_worker, wait_for};

const NS: &str = "default";

/// Fails a workflow task with `cause`.
async fn fail(
    raw: &mut Raw,
    token: &str,
    cause: pb::WorkflowTaskFailCause,
    message: &str,
) -> std::result::Result<(), tonic::Status> {
    raw.worker
        .fail_workflow_task(pb::FailWorkflowTaskRequest {
            build_id: String::new(),
            namespace: NS.into(),
            task_token: token.into(),
            cause: cause as i32,
            message: message.into(),
            worker_id: "raw-workflow-worker".into(),
        })
        .await
        .map(|_| ())
}

async fn length(raw: &mut Raw, run: &str) -> Result<u64> {
    Ok(raw.history(NS, run).await?.len() as u64)
}

fn held_reason(run: &pb::RunInfo) -> Option<String> {
    run.waiting_on.iter().find_map(|w| match &w.what {
        Some(What::WorkflowTask(t)) if !t.held_reason.is_empty() => Some(t.held_reason.clone()),
        _ => None,
    })
}

/// What a hand-out sent: the last event is a WorkflowTaskStarted; its seq and time.
fn sent_start(task: &pb::PollWorkflowTaskResponse) -> Result<(u64, i64)> {
    let last = task.events.last().context("a task with no events")?;
    ensure!(
        matches!(last.attributes, Some(Attributes::WorkflowTaskStarted(_))),
        "a task's events end with its WorkflowTaskStarted: {last:?}"
    );
    Ok((last.seq, last.time_ms))
}

const ND: pb::WorkflowTaskFailCause = pb::WorkflowTaskFailCause::Nondeterminism;
const PANIC: pb::WorkflowTaskFailCause = pb::WorkflowTaskFailCause::WorkflowPanic;

#[test]
fn a_held_run_retries_without_growing_its_history_and_fixed_code_finishes_it() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let side_file = dir.path().join("side");
    let server = Server::start_with(
        &dir.path().join("data"),
        None,
        &["--held-run-backoff-max-ms", "250"],
    )?;
    let url = server.url();
    let rt = runtime();
    let client = rt.block_on(Client::connect(url.clone()))?;
    let input = json!({ "first_ms": 0, "second_ms": 1_500, "start_to_close_ms": 5_000 });
    let options = StartOptions {
        task_queue: Some(QUEUE.into()),
        ..Default::default()
    };
    let run = rt
        .block_on(client.start_workflow("nondet", &input, options))?
        .run_id;
    let mut raw = rt.block_on(Raw::connect(&url))?;

    // The first failure is recorded: the run is held and shows why.
    let task = rt.block_on(raw.expect_workflow(NS, &["nondet"], 5_000))?;
    rt.block_on(fail(
        &mut raw,
        &task.task_token,
        ND,
        "[STF-ND001] raw: first",
    ))?;
    let held_at = rt.block_on(length(&mut raw, &run))?;
    let reason = held_reason(&describe(&rt, &url, &run)?).context("held after a failure")?;
    ensure!(reason.contains("first"), "{reason}");

    // 50 more attempts fail with the same cause: handed out (each with a Started the history
    // does not hold) and failed, and the history does not grow at all.
    for i in 0..50 {
        let task = rt.block_on(raw.expect_workflow(NS, &["nondet"], 5_000))?;
        let (seq, _) = sent_start(&task)?;
        ensure!(
            seq == held_at + 1 && task.first_seq == 1,
            "attempt {i}: sent a Started at seq {seq} after the whole history of {held_at}"
        );
        rt.block_on(fail(
            &mut raw,
            &task.task_token,
            ND,
            "[STF-ND001] raw: again",
        ))?;
    }
    ensure!(
        rt.block_on(length(&mut raw, &run))? == held_at,
        "50 failed attempts with the cause shown appended nothing"
    );
    let info = describe(&rt, &url, &run)?;
    ensure!(info.status() == pb::RunStatus::Running, "held, not failed");
    let reason = held_reason(&info).context("still held")?;
    ensure!(
        reason.contains("first"),
        "the reason shown is the recorded one: {reason}"
    );

    // A code alternating between two causes has each change recorded, a bounded number of
    // times: the reason shown follows it, then stops growing the history.
    let mut causes = Vec::new();
    for i in 0..20 {
        let task = rt.block_on(raw.expect_workflow(NS, &["nondet"], 5_000))?;
        let (cause, message) = if i % 2 == 0 {
            (PANIC, "[STF-WF002] raw: panic")
        } else {
            (ND, "[STF-ND001] raw: again")
        };
        rt.block_on(fail(&mut raw, &task.task_token, cause, message))?;
        if i == 0 {
            let reason = held_reason(&describe(&rt, &url, &run)?).context("held")?;
            ensure!(reason.contains("panic"), "a new cause is shown: {reason}");
        }
        causes.push(rt.block_on(length(&mut raw, &run))?);
    }
    let grown = rt.block_on(length(&mut raw, &run))? - held_at;
    eprintln!("history lengths while causes alternate: {causes:?}");
    ensure!(
        grown == 9,
        "three more recorded failures of three events each (4 at most per held run), not {grown}"
    );

    // Fixed code completes the held task; a second worker replays the whole history cold.
    let mut fixed =
        start_test_worker(&url, &side_file, &["--variant", "a", "--task-queue", QUEUE])?;
    wait_for(
        Duration::from_secs(20),
        "the second activity to start",
        || {
            let ex = side::executions(&side_file, &run).ok()?;
            ex.iter().any(|e| e.activity_id == 2).then_some(())
        },
    )?;
    fixed.kill9();
    let _replayer =
        start_test_worker(&url, &side_file, &["--variant", "a", "--task-queue", QUEUE])?;
    let result: Vec<u32> = rt
        .block_on(client.await_result(&run, Duration::from_secs(40)))
        .context("the run's result once fixed code polls")?;
    ensure!(result == vec![0, 1], "{result:?}");

    // The transient completion recorded what its worker was sent, right after the history
    // it saw: Started then Completed, with no failure in between.
    let events = rt.block_on(raw.history(NS, &run))?;
    let completed = events
        .iter()
        .position(|e| matches!(e.attributes, Some(Attributes::WorkflowTaskCompleted(_))))
        .context("a completed workflow task")?;
    ensure!(
        completed as u64 == held_at + grown + 1,
        "the first completion follows the held history and its Started (at index {completed})"
    );
    ensure!(
        matches!(
            events[completed - 1].attributes,
            Some(Attributes::WorkflowTaskStarted(_))
        ),
        "{:?}",
        events[completed - 1]
    );
    // The whole history verifies and folds offline.
    let (code, out, err) = cli(&url, &["history", "replay", &run])?;
    ensure!(code == 0, "history replay: {out}\n{err}");
    Ok(())
}

#[test]
fn only_the_current_transient_attempt_completes_and_only_on_the_history_it_saw() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let server = Server::start_with(
        &dir.path().join("data"),
        None,
        &[
            "--held-run-backoff-max-ms",
            "250",
            "--workflow-task-timeout",
            "300ms",
        ],
    )?;
    let url = server.url();
    let rt = runtime();
    let run = rt.block_on(async {
        let mut raw = Raw::connect(&url).await?;
        let run = raw.start(NS, "stale").await?;
        let task = raw.expect_workflow(NS, &["stale"], 5_000).await?;
        fail(&mut raw, &task.task_token, ND, "[STF-ND001] raw").await?;
        let held_at = length(&mut raw, &run).await?;

        // Attempt A goes silent: its hold expires after the workflow-task timeout and attempt
        // B is handed out. A can no longer complete (nor fail); B can.
        let a = raw.expect_workflow(NS, &["stale"], 5_000).await?;
        let b = raw.expect_workflow(NS, &["stale"], 5_000).await?;
        let progress = |msg: &str| pb::Command {
            seq: 1,
            command: Some(Cmd::ReportProgress(pb::ReportProgressCommand {
                done: 1,
                total: 2,
                message: msg.into(),
            })),
        };
        let refused = raw
            .complete_workflow(NS, &a.task_token, vec![progress("stale")])
            .await
            .expect_err("a superseded transient attempt's completion is refused");
        ensure!(
            refused.code() == tonic::Code::FailedPrecondition
                && refused.message().contains("superseded"),
            "{refused:?}"
        );
        let refused = fail(&mut raw, &a.task_token, PANIC, "stale")
            .await
            .expect_err("a superseded transient attempt's failure is refused");
        ensure!(
            refused.code() == tonic::Code::FailedPrecondition,
            "{refused:?}"
        );
        ensure!(length(&mut raw, &run).await? == held_at, "nothing recorded");

        // B saw the history up to `held_at`; a signal arrives before it completes: its
        // completion would record a Started after an event its code never saw, so it is
        // refused and the task is offered again at once, with the signal.
        raw.client
            .signal_run(pb::SignalRunRequest {
                namespace: NS.into(),
                run_id: run.clone(),
                signal_name: "poke".into(),
                input: Some(payload("1")),
                ..Default::default()
            })
            .await?;
        let refused = raw
            .complete_workflow(NS, &b.task_token, vec![progress("b")])
            .await
            .expect_err("a completion on a history that moved on is refused");
        ensure!(refused.code() == tonic::Code::NotFound, "{refused:?}");
        let c = raw.expect_workflow(NS, &["stale"], 1_000).await?;
        let (seq, time_ms) = sent_start(&c)?;
        ensure!(seq == held_at + 2, "C saw the signal: Started at {seq}");
        raw.complete_workflow(NS, &c.task_token, vec![progress("c")])
            .await
            .map_err(|s| anyhow::anyhow!("the current attempt completes: {s:?}"))?;

        // Recorded as sent: the Started at the seq and time C was given, then its completion.
        let events = raw.history(NS, &run).await?;
        let started = &events[seq as usize - 1];
        ensure!(
            started.seq == seq
                && started.time_ms == time_ms
                && matches!(started.attributes, Some(Attributes::WorkflowTaskStarted(_))),
            "{started:?}"
        );
        ensure!(
            matches!(
                events[seq as usize].attributes,
                Some(Attributes::WorkflowTaskCompleted(_))
            ),
            "{:?}",
            events[seq as usize]
        );
        ensure!(
            events.len() as u64 == held_at + 4,
            "signal, Started, Completed, ProgressReported: {}",
            events.len()
        );
        let info = Client::connect(url.as_str()).await?.describe(&run).await?;
        ensure!(held_reason(&info).is_none(), "no longer held");
        Ok(run)
    })?;
    let (code, out, err) = cli(&url, &["history", "replay", &run])?;
    ensure!(code == 0, "history replay: {out}\n{err}");
    Ok(())
}

#[test]
fn a_held_run_at_its_history_limit_can_still_be_fixed_and_continue_as_new() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let server = Server::start_with(
        &dir.path().join("data"),
        None,
        &[
            "--history-events-max",
            "50",
            "--held-run-backoff-max-ms",
            "250",
        ],
    )?;
    let url = server.url();
    let rt = runtime();
    rt.block_on(async {
        let mut raw = Raw::connect(&url).await?;
        let client = Client::connect(url.as_str()).await?;
        let run = raw.start(NS, "near-limit").await?;
        // Signals bring the history near its hard limit (50) before the task is failed.
        while length(&mut raw, &run).await? < 44 {
            client.signal(&run, "fill", &"x").await?;
        }
        let task = raw.expect_workflow(NS, &["near-limit"], 5_000).await?;
        fail(&mut raw, &task.task_token, ND, "[STF-ND001] raw").await?;
        let held_at = length(&mut raw, &run).await?;
        // Before, each retry added three events: 30 retries would have passed the limit and
        // its finishing reserve, and no fixed code could have started a task.
        for _ in 0..30 {
            let t = raw.expect_workflow(NS, &["near-limit"], 5_000).await?;
            fail(&mut raw, &t.task_token, ND, "[STF-ND001] raw").await?;
        }
        ensure!(length(&mut raw, &run).await? == held_at, "nothing appended");
        let fixed = raw.expect_workflow(NS, &["near-limit"], 5_000).await?;
        ensure!(fixed.continue_as_new_suggested, "past the soft limit");
        raw.complete_workflow(
            NS,
            &fixed.task_token,
            vec![pb::Command {
                seq: 1,
                command: Some(Cmd::ContinueAsNew(pb::ContinueAsNewCommand {
                    keep_build: false,
                    input: Some(payload("\"fresh\"")),
                })),
            }],
        )
        .await
        .map_err(|s| anyhow::anyhow!("fixed code continues the run as new: {s:?}"))?;
        let info = client.describe(&run).await?;
        ensure!(
            info.status() == pb::RunStatus::ContinuedAsNew,
            "{:?}",
            info.status()
        );
        Ok(())
    })
}
