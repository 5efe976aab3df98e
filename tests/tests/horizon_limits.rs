//! History limits refuse with a clear error that suggests continue-as-new, and change
//! nothing (issue 4, point 6; promise C5).
//!
//! An in-process server over an embedded store opened with small test limits (20 events,
//! 64 KiB; the production limits, `HISTORY_EVENTS_MAX` and `HISTORY_BYTES_MAX`, are not
//! touched). The test drives the worker API itself, so it sees exactly what a worker sees.
//!
//! - Events: a workflow task completion whose events would pass 20 is refused with
//!   RESOURCE_EXHAUSTED, `[STF-LIMIT]` and "continue-as-new"; the history (events and
//!   hashes) and the run's state are unchanged; the same task completed with ContinueAsNew
//!   instead is accepted, and the new run continues the old one.
//! - Bytes: signals of 20,000 bytes are taken while the history stays within 64 KiB
//!   (`RunInfo.history_bytes` counts them), and the one that would pass it is refused the
//!   same way, with nothing changed.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, ensure};
use steadfast_engine::embedded::{EmbeddedOptions, EmbeddedStore};
use steadfast_proto::v1 as pb;
use steadfast_proto::v1::command::Command as Cmd;
use steadfast_proto::v1::worker_service_client::WorkerServiceClient;
use steadfast_sdk::client::{Client, Error, StartOptions};
use steadfast_sdk::payload;

const EVENTS_MAX: u64 = 20;
const BYTES_MAX: u64 = 64 * 1024;

/// The refusal a caller gets at a history limit.
fn assert_limit_message(message: &str) -> Result<()> {
    ensure!(
        message.contains("[STF-LIMIT]") && message.contains("continue-as-new"),
        "not the clear limit error: {message}"
    );
    Ok(())
}

async fn poll(
    worker: &mut WorkerServiceClient<tonic::transport::Channel>,
) -> Result<pb::PollWorkflowTaskResponse> {
    let task = worker
        .poll_workflow_task(pb::PollWorkflowTaskRequest {
            build_id: String::new(),
            namespace: "default".into(),
            task_queue: "default".into(),
            worker_id: "limits-test".into(),
            workflow_types: vec!["limits".into()],
            poll_timeout_ms: 5_000,
        })
        .await?
        .into_inner();
    ensure!(!task.task_token.is_empty(), "no workflow task");
    Ok(task)
}

fn progress(seqs: std::ops::RangeInclusive<u32>) -> Vec<pb::Command> {
    seqs.map(|seq| pb::Command {
        seq,
        command: Some(Cmd::ReportProgress(pb::ReportProgressCommand {
            done: u64::from(seq),
            total: 100,
            message: "working".into(),
        })),
    })
    .collect()
}

fn complete(
    task: &pb::PollWorkflowTaskResponse,
    commands: Vec<pb::Command>,
) -> pb::CompleteWorkflowTaskRequest {
    pb::CompleteWorkflowTaskRequest {
        namespace: "default".into(),
        task_token: task.task_token.clone(),
        commands,
        worker_id: "limits-test".into(),
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn history_limits_refuse_clearly_and_change_nothing() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let options = EmbeddedOptions {
        history_events_max: EVENTS_MAX,
        history_bytes_max: BYTES_MAX,
        ..EmbeddedOptions::default()
    };
    let (store, _) = EmbeddedStore::open(dir.path(), options)?;
    let store = Arc::new(store);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}", listener.local_addr()?);
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(steadfast_server::server::serve(
        store.clone(),
        listener,
        async {
            let _ = stopped.await;
        },
    ));
    let client = Client::connect(url.as_str()).await?;
    let mut worker = WorkerServiceClient::connect(url.clone()).await?;

    // ---- the event limit
    let run = client
        .start_workflow("limits", &"events", StartOptions::default())
        .await?;
    let task = poll(&mut worker).await?;
    worker
        .complete_workflow_task(complete(&task, progress(1..=5)))
        .await?;
    client.signal(&run.run_id, "more", &()).await?;
    let task = poll(&mut worker).await?;
    let before = client.history(&run.run_id).await?;
    let described = client.describe(&run.run_id).await?;
    ensure!(
        before.len() == 12,
        "{} events before the refusal",
        before.len()
    );
    // WorkflowTaskCompleted + 10 progress events: 23 > 20.
    let refused = worker
        .complete_workflow_task(complete(&task, progress(6..=15)))
        .await
        .expect_err("an append past the event limit is refused");
    ensure!(
        refused.code() == tonic::Code::ResourceExhausted,
        "{:?}: {}",
        refused.code(),
        refused.message()
    );
    assert_limit_message(refused.message())?;
    eprintln!("refused: {}", refused.message());
    ensure!(
        client.history(&run.run_id).await? == before,
        "the refused completion changed the history"
    );
    let after = client.describe(&run.run_id).await?;
    ensure!(
        (after.history_length, after.history_bytes, after.status)
            == (
                described.history_length,
                described.history_bytes,
                described.status
            ),
        "the refused completion changed the run: {after:?}"
    );
    // What the error suggests works: the same task, completed with ContinueAsNew.
    let carry = payload::encode(&"carried state")?;
    worker
        .complete_workflow_task(complete(
            &task,
            vec![pb::Command {
                seq: 6,
                command: Some(Cmd::ContinueAsNew(pb::ContinueAsNewCommand {
                    keep_build: false,
                    input: Some(carry),
                })),
            }],
        ))
        .await
        .context("continue-as-new fits in the room left")?;
    let old = client.describe(&run.run_id).await?;
    ensure!(old.status() == pb::RunStatus::ContinuedAsNew, "{old:?}");
    let new = client.describe(&old.continued_to).await?;
    ensure!(
        new.continued_from == run.run_id && new.history_length < 5,
        "{new:?}"
    );

    // ---- the byte limit
    let run = client
        .start_workflow("limits", &"bytes", StartOptions::default())
        .await?;
    let big = "x".repeat(20_000);
    for _ in 0..3 {
        client.signal(&run.run_id, "data", &big).await?;
    }
    let before = client.history(&run.run_id).await?;
    let described = client.describe(&run.run_id).await?;
    ensure!(
        (60_000..BYTES_MAX).contains(&described.history_bytes),
        "history_bytes = {} after three 20 KB signals",
        described.history_bytes
    );
    let refused = client
        .signal(&run.run_id, "data", &big)
        .await
        .expect_err("an append past the byte limit is refused");
    let Error::ResourceExhausted(message) = &refused else {
        anyhow::bail!("expected ResourceExhausted, got {refused:?}");
    };
    assert_limit_message(message)?;
    eprintln!("refused: {message}");
    ensure!(
        client.history(&run.run_id).await? == before,
        "the refused signal changed the history"
    );
    let after = client.describe(&run.run_id).await?;
    ensure!(
        (after.history_length, after.history_bytes)
            == (described.history_length, described.history_bytes),
        "the refused signal changed the run: {after:?}"
    );
    // Small appends still fit.
    client.signal(&run.run_id, "data", &"small").await?;
    // A run at its limit can always be ended: closing appends are exempt.
    let filler = "y".repeat(4_000);
    let mut at_limit = false;
    for _ in 0..20 {
        if client.signal(&run.run_id, "data", &filler).await.is_err() {
            at_limit = true;
            break;
        }
    }
    ensure!(at_limit, "the run never reached its byte limit");
    client.terminate(&run.run_id, "at its limit").await?;
    let ended = client.describe(&run.run_id).await?;
    ensure!(
        ended.status == pb::RunStatus::Terminated as i32,
        "a run at its history limit could not be terminated: {ended:?}"
    );

    let _ = stop.send(());
    tokio::time::timeout(Duration::from_secs(10), server).await???;
    store.close().await?;
    Ok(())
}
