//! No run gets stuck on a cancel (issue 10, point 1; promise C6).
//!
//! A workflow task that cancels an activity no worker holds, then schedules another activity
//! and reports progress, used to be recorded as `WorkflowTaskCompleted, ActivityCancelRequested,
//! ActivityCancelled, ActivityScheduled, ProgressReported`: the server's confirmation split the
//! task's commands, the SDK's replay reported the ScheduleActivity as missing ([STF-ND001]) and
//! the run was held forever. Each test runs `agent-worker`'s `cancel_then_continue` with the
//! first activity in one situation, sends `go`, and requires the run to complete with the
//! task's command events in one block and no failed workflow task.
//!
//! - queued: the activity is on a queue nobody polls;
//! - backoff: it waits 10 minutes before its next attempt;
//! - after a restart: it is running on a worker when the server is SIGKILLed and restarted
//!   (the server then knows of no worker holding anything).

mod agent_common;

use anyhow::{Result, ensure};
use serde_json::Value;
use steadfast_proto::v1 as pb;
use steadfast_proto::v1::waiting_on::What;

use agent_common::{Env, seed};

fn in_backoff(r: &pb::RunInfo) -> bool {
    r.waiting_on
        .iter()
        .any(|w| matches!(&w.what, Some(What::Activity(a)) if a.state == "backoff"))
}

fn cancel_then_continue(mode: &str, restart: bool) -> Result<()> {
    seed();
    let mut env = Env::start()?;
    let _worker = env.worker()?;
    let run = env.start_run(
        "cancel_then_continue",
        &format!(r#"{{"mode":"{mode}"}}"#),
        &[],
    )?;
    match mode {
        "queued" => {
            env.wait_waiting(&run, "signal")?;
        }
        "backoff" => {
            env.wait_run(&run, "the first activity to back off", in_backoff)?;
        }
        _ => {
            env.wait_starts(&run, 1)?;
        }
    }
    if restart {
        env.server_restart()?;
    }
    steadfast_tests::retry(agent_common::WAIT, "signal go", || {
        Ok(env
            .rt
            .block_on(env.client().signal(&run, "go", &Value::Bool(true)))?)
    })?;
    let info = env.wait_closed(&run)?;
    let history = steadfast_tests::history(&env.rt, &env.url(), &run)?;
    let kinds: Vec<pb::EventKind> = history.iter().map(|e| e.kind()).collect();
    ensure!(
        info.status() == pb::RunStatus::Completed,
        "{mode}: {:?} {:?}\nhistory: {kinds:?}",
        info.status(),
        info.failure
    );
    ensure!(
        !kinds.contains(&pb::EventKind::WorkflowTaskFailed),
        "{mode}: a workflow task failed (held): {kinds:?}"
    );
    let at = kinds
        .iter()
        .position(|k| *k == pb::EventKind::ActivityCancelRequested)
        .ok_or_else(|| anyhow::anyhow!("{mode}: no ActivityCancelRequested: {kinds:?}"))?;
    ensure!(
        kinds[at - 1..at + 3]
            == [
                pb::EventKind::WorkflowTaskCompleted,
                pb::EventKind::ActivityCancelRequested,
                pb::EventKind::ActivityScheduled,
                pb::EventKind::ProgressReported,
            ],
        "{mode}: the task's command events are not one block: {kinds:?}"
    );
    let cancelled = kinds
        .iter()
        .position(|k| *k == pb::EventKind::ActivityCancelled)
        .ok_or_else(|| anyhow::anyhow!("{mode}: no ActivityCancelled: {kinds:?}"))?;
    ensure!(cancelled > at + 2, "{mode}: {kinds:?}");
    let result: Value = serde_json::from_str(&env.ok(&["run", "result", &run])?)?;
    ensure!(result["cancelled"] == 1, "{mode}: {result}");
    Ok(())
}

#[test]
fn cancelling_a_queued_activity_then_scheduling_another_completes() -> Result<()> {
    cancel_then_continue("queued", false)
}

#[test]
fn cancelling_an_activity_in_retry_backoff_then_scheduling_another_completes() -> Result<()> {
    cancel_then_continue("backoff", false)
}

#[test]
fn cancelling_a_running_activity_after_a_server_sigkill_completes() -> Result<()> {
    cancel_then_continue("running", true)
}
