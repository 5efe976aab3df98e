//! A start that waits for the result (`StartWorkflowRequest.wait_result_ms`, the SDK's
//! `Client::execute_workflow`): a run that closes within the wait is answered in the start's
//! own response; one that does not is answered open when the wait ends, and its waiter goes
//! on with AwaitResult; an open run of the same workflow id is waited on instead of a new one.

use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use steadfast_proto::v1 as pb;
use steadfast_sdk::client::{Client, Error, StartOptions};
use steadfast_tests::raw::{QUEUE, Raw, json};
use steadfast_tests::{Server, runtime};

const NS: &str = "default";

fn start_req(
    workflow_type: &str,
    workflow_id: &str,
    wait_result_ms: u64,
) -> pb::StartWorkflowRequest {
    pb::StartWorkflowRequest {
        namespace: NS.into(),
        workflow_type: workflow_type.into(),
        workflow_id: workflow_id.into(),
        task_queue: QUEUE.into(),
        input: Some(json("null")),
        wait_result_ms,
        ..Default::default()
    }
}

/// Starts through `raw`; the answer and how long it took.
async fn start(
    raw: &Raw,
    workflow_type: &str,
    workflow_id: &str,
    wait_result_ms: u64,
) -> Result<(pb::StartWorkflowResponse, Duration)> {
    let t = Instant::now();
    let resp = raw
        .client
        .clone()
        .start_workflow(start_req(workflow_type, workflow_id, wait_result_ms))
        .await?
        .into_inner();
    Ok((resp, t.elapsed()))
}

/// A raw worker that completes the next run of `workflow_type` with `result` after `delay`;
/// the id of the run it completed.
fn complete_next(
    raw: &Raw,
    workflow_type: &'static str,
    result: &'static str,
    delay: Duration,
) -> tokio::task::JoinHandle<Result<String>> {
    let mut raw = raw.clone();
    tokio::spawn(async move {
        let task = raw.expect_workflow(NS, &[workflow_type], 10_000).await?;
        tokio::time::sleep(delay).await;
        let complete = pb::Command {
            seq: 1,
            command: Some(pb::command::Command::CompleteRun(pb::CompleteRunCommand {
                result: Some(json(result)),
            })),
        };
        raw.complete_workflow(NS, &task.task_token, vec![complete])
            .await?;
        Ok(task.run_id)
    })
}

fn result_of(run: &pb::RunInfo) -> Result<String> {
    let payload = run
        .result
        .as_ref()
        .context("a completed run with no result")?;
    Ok(String::from_utf8(payload.data.clone())?)
}

#[test]
fn a_start_that_waits_answers_with_the_closed_run() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let server = Server::start(dir.path(), None)?;
    runtime().block_on(async {
        let raw = Raw::connect(&server.url()).await?;
        let worker = complete_next(&raw, "wf.quick", "\"done\"", Duration::ZERO);
        let (resp, _) = start(&raw, "wf.quick", "", 10_000).await?;
        let completed = worker.await??;
        ensure!(resp.started && resp.run_id == completed, "{resp:?}");
        ensure!(resp.closed, "the run closed within the wait: {resp:?}");
        let run = resp.run.context("a waited start answers with the run")?;
        ensure!(run.status == pb::RunStatus::Completed as i32, "{run:?}");
        ensure!(result_of(&run)? == "\"done\"", "{run:?}");

        // Without a wait the start answers at once, with the run id alone.
        let (resp, _) = start(&raw, "wf.nowait", "", 0).await?;
        ensure!(
            resp.started && !resp.closed && resp.run.is_none(),
            "{resp:?}"
        );
        Ok(())
    })
}

#[test]
fn a_run_that_outlives_the_wait_is_answered_open_and_the_sdk_follows_it() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let server = Server::start(dir.path(), None)?;
    runtime().block_on(async {
        let raw = Raw::connect(&server.url()).await?;
        // Nobody runs it: the wait ends with the run open.
        let (resp, took) = start(&raw, "wf.idle", "", 300).await?;
        ensure!(
            took >= Duration::from_millis(300),
            "answered before the wait ended: {took:?}"
        );
        ensure!(resp.started && !resp.closed, "{resp:?}");
        let run = resp.run.context("an open run is described too")?;
        ensure!(
            run.status == pb::RunStatus::Running as i32 && run.run_id == resp.run_id,
            "{run:?}"
        );

        let client = Client::connect(server.url()).await?;
        let options = || StartOptions {
            task_queue: Some(QUEUE.into()),
            ..Default::default()
        };
        // The SDK: a run that closes within the timeout gives its result...
        let worker = complete_next(&raw, "wf.sdk", "{\"n\":7}", Duration::ZERO);
        let out: serde_json::Value = client
            .execute_workflow("wf.sdk", &(), options(), Duration::from_secs(10))
            .await?;
        worker.await??;
        ensure!(out == serde_json::json!({"n": 7}), "{out}");
        // ...one that outlives it is a timeout, the run still open.
        match client
            .execute_workflow::<serde_json::Value>(
                "wf.never",
                &(),
                options(),
                Duration::from_millis(300),
            )
            .await
        {
            Err(Error::Timeout) => {}
            other => bail!("a run nobody runs gave {other:?}"),
        }
        Ok(())
    })
}

#[test]
fn an_open_run_of_the_same_workflow_id_is_waited_on() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let server = Server::start(dir.path(), None)?;
    runtime().block_on(async {
        let raw = Raw::connect(&server.url()).await?;
        let (first, _) = start(&raw, "wf.same", "order-17", 0).await?;
        ensure!(first.started, "{first:?}");
        // Nobody runs it: the second start waits on that run, and answers with it, open.
        let (again, took) = start(&raw, "wf.same", "order-17", 300).await?;
        ensure!(
            !again.started && again.run_id == first.run_id,
            "a second run was started for an open workflow id: {again:?}"
        );
        ensure!(
            took >= Duration::from_millis(300),
            "answered before the wait ended: {took:?}"
        );
        let run = again.run.context("no run")?;
        ensure!(!again.closed && run.run_id == first.run_id, "{run:?}");
        ensure!(run.status == pb::RunStatus::Running as i32, "{run:?}");
        Ok(())
    })
}

/// A server that begins to stop during a waited start answers at once with the run id alone
/// (the run is started: the caller waits for it with AwaitResult elsewhere), instead of holding
/// the shutdown for the wait or failing a start that happened.
#[test]
fn a_server_that_stops_during_the_wait_answers_with_the_run_id() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let mut server = Server::start(dir.path(), None)?;
    let pid = server.proc.pid().context("the server's pid")?;
    let resp = runtime().block_on(async {
        let raw = Raw::connect(&server.url()).await?;
        let mut client = raw.client.clone();
        let start = tokio::spawn(async move {
            client
                .start_workflow(start_req("wf.stop", "stop-1", 60_000))
                .await
        });
        // The run is listed once the start's append is durable: its handler is then in (or
        // entering) the wait.
        let until = Instant::now() + Duration::from_secs(10);
        loop {
            let page = raw
                .client
                .clone()
                .list_runs(pb::ListRunsRequest {
                    namespace: NS.into(),
                    workflow_id: "stop-1".into(),
                    ..Default::default()
                })
                .await?
                .into_inner();
            if !page.runs.is_empty() {
                break;
            }
            ensure!(Instant::now() < until, "the started run was never listed");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        // SAFETY: kill(2) on the server process this test started; no memory is touched.
        unsafe { libc::kill(pid as i32, libc::SIGTERM) };
        // An answer, not the connection cut at the end of the shutdown's grace period.
        anyhow::Ok(
            start
                .await?
                .context("the waited start during a shutdown")?
                .into_inner(),
        )
    })?;
    ensure!(
        resp.started && !resp.run_id.is_empty() && !resp.closed && resp.run.is_none(),
        "{resp:?}"
    );
    ensure!(
        server.proc.terminate(Duration::from_secs(10)),
        "the server did not stop by itself"
    );
    Ok(())
}
