//! Sync match on start: a worker already waiting in a long poll gets a new run's first
//! workflow task from the start itself — WorkflowTaskStarted is recorded in the run's first
//! append (one append instead of two) and the poll answers with the durable records — and
//! only a poll that would have got the task from the store is matched.

use std::time::Duration;

use anyhow::{Context, Result, bail, ensure};
use steadfast_proto::v1 as pb;
use steadfast_proto::v1::history_event::Attributes as A;
use steadfast_tests::metrics::{sample, scrape};
use steadfast_tests::raw::{QUEUE, Raw};
use steadfast_tests::ui::free_port;
use steadfast_tests::{Server, runtime};

const NS: &str = "default";

/// A JSON string input of 4 KiB.
fn big_input() -> pb::Payload {
    steadfast_tests::raw::json(&format!("\"{}\"", "x".repeat(4096)))
}

/// A server with its metrics endpoint on a free port; that port.
fn server_with_metrics(dir: &std::path::Path) -> Result<(Server, u16)> {
    let port = free_port()?;
    let metrics = format!("127.0.0.1:{port}");
    Ok((
        Server::start_with(dir, None, &["--metrics-listen", &metrics])?,
        port,
    ))
}

/// Appends to run histories so far.
fn appends(port: u16) -> Result<f64> {
    sample(&scrape(port)?, "steadfast_appends_total").context("steadfast_appends_total")
}

fn complete_run() -> pb::Command {
    pb::Command {
        seq: 1,
        command: Some(pb::command::Command::CompleteRun(pb::CompleteRunCommand {
            result: Some(steadfast_tests::raw::json("\"done\"")),
        })),
    }
}

/// Starts a run while a poll of `types` waits; the appends the start and the poll took, and
/// the poll's answer.
async fn start_while_polling(
    raw: &Raw,
    port: u16,
    types: &'static [&'static str],
    workflow_type: &str,
) -> Result<(String, f64, Option<pb::PollWorkflowTaskResponse>)> {
    let mut poller = raw.clone();
    let poll = tokio::spawn(async move { poller.poll_workflow(NS, types, 3_000).await });
    // The poll waits once it found the queue empty.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let before = appends(port)?;
    // Larger than a payload kept inline in the log: the poll must get it inline all the same.
    let run = raw
        .client
        .clone()
        .start_workflow(pb::StartWorkflowRequest {
            namespace: NS.into(),
            workflow_type: workflow_type.into(),
            task_queue: QUEUE.into(),
            input: Some(big_input()),
            ..Default::default()
        })
        .await?
        .into_inner()
        .run_id;
    let got = poll.await??;
    let after = appends(port)?;
    Ok((run, after - before, got))
}

#[test]
fn a_waiting_poll_gets_a_new_runs_first_task_in_the_starts_own_append() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let (server, port) = server_with_metrics(dir.path())?;
    let rt = runtime();
    rt.block_on(async {
        let raw = Raw::connect(&server.url()).await?;
        // A poll registers again each time it re-checks the queue: a start landing in that
        // instant takes the store's path. Some of a few tries must match.
        let mut matched = None;
        for _ in 0..5 {
            let (run, appended, got) =
                start_while_polling(&raw, port, &["wf.sync"], "wf.sync").await?;
            let task = got.context("the waiting poll got no task")?;
            ensure!(task.run_id == run, "the poll got another run's task");
            ensure!(
                appended == 1.0 || appended == 2.0,
                "{appended} appends for a start and a hand-out"
            );
            if appended == 1.0 {
                matched = Some((run, task));
                break;
            }
        }
        let Some((run, task)) = matched else {
            bail!(
                "no start handed its first task to the waiting poll (every one took two appends)"
            );
        };
        // The poll's answer: the run's first three records, ending with the task's start.
        let kinds: Vec<_> = task
            .events
            .iter()
            .map(|e| (e.seq, e.attributes.clone()))
            .collect();
        ensure!(task.first_seq == 1 && kinds.len() == 3, "{kinds:?}");
        match &kinds[0].1 {
            Some(A::RunStarted(s)) => ensure!(
                s.input.as_ref().map(|p| &p.data) == Some(&big_input().data),
                "the start's input is not inline in the poll's answer: {} bytes",
                s.input.as_ref().map_or(0, |p| p.data.len())
            ),
            other => bail!("first record {other:?}"),
        }
        ensure!(
            matches!(kinds[1].1, Some(A::WorkflowTaskScheduled(_))),
            "{kinds:?}"
        );
        match &kinds[2].1 {
            Some(A::WorkflowTaskStarted(s)) => {
                ensure!(
                    s.worker == "raw-workflow-worker" && s.scheduled_seq == 2,
                    "{s:?}"
                )
            }
            other => bail!("third record {other:?}"),
        }
        // The history holds exactly what was handed out, and the token completes the run.
        let mut raw2 = raw.clone();
        let history = raw2.history(NS, &run).await?;
        ensure!(history.len() == 3, "{history:#?}");
        ensure!(
            history.iter().zip(&task.events).all(|(h, t)| h == t),
            "the poll's events are not the history's"
        );
        raw2.complete_workflow(NS, &task.task_token, vec![complete_run()])
            .await?;
        let history = raw2.history(NS, &run).await?;
        ensure!(
            matches!(
                history.last().and_then(|e| e.attributes.as_ref()),
                Some(A::RunCompleted(_))
            ),
            "{history:#?}"
        );
        Ok(())
    })
}

#[test]
fn a_poll_for_other_types_is_not_matched_and_the_task_waits_in_the_queue() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let (server, port) = server_with_metrics(dir.path())?;
    let rt = runtime();
    rt.block_on(async {
        let raw = Raw::connect(&server.url()).await?;
        let (run, appended, got) =
            start_while_polling(&raw, port, &["wf.other"], "wf.sync").await?;
        ensure!(got.is_none(), "a poll for other types got {got:?}");
        ensure!(appended == 1.0, "{appended} appends for the start alone");
        let mut raw2 = raw.clone();
        let history = raw2.history(NS, &run).await?;
        ensure!(history.len() == 2, "not started: {history:#?}");
        // The task is where a poll of its type finds it.
        let task = raw2.expect_workflow(NS, &["wf.sync"], 5_000).await?;
        ensure!(task.run_id == run);
        Ok(())
    })
}

#[test]
fn a_start_on_another_queue_is_not_matched() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let server = Server::start(dir.path(), None)?;
    let rt = runtime();
    rt.block_on(async {
        let raw = Raw::connect(&server.url()).await?;
        let mut poller = raw.clone();
        let poll = tokio::spawn(async move { poller.poll_workflow(NS, &["wf.sync"], 1_500).await });
        tokio::time::sleep(Duration::from_millis(300)).await;
        let other = raw
            .client
            .clone()
            .start_workflow(pb::StartWorkflowRequest {
                namespace: NS.into(),
                workflow_type: "wf.sync".into(),
                task_queue: format!("{QUEUE}-other"),
                input: Some(steadfast_tests::raw::json("null")),
                ..Default::default()
            })
            .await?
            .into_inner();
        let got = poll.await??;
        ensure!(got.is_none(), "a poll of queue {QUEUE} got {got:?}");
        let history = raw.clone().history(NS, &other.run_id).await?;
        ensure!(history.len() == 2, "not started: {history:#?}");
        Ok(())
    })
}
