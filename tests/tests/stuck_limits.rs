//! A history limit never makes a run unrecoverable (issue 10, point 5; promise C6).
//!
//! A real `steadfast server --history-events-max 50` process (soft limit 45, finishing reserve
//! up to 55; see `steadfast_engine::store::limits`), driven through the raw worker API so the
//! test sees exactly what a worker sees:
//!
//! - past the soft limit, workflow tasks carry `continue_as_new_suggested` and a task that
//!   schedules new work is refused with `[STF-LIMIT]` naming the soft limit;
//! - signals are taken up to the hard limit, then refused with `[STF-LIMIT]`;
//! - past the hard limit, the result of an activity scheduled earlier is still recorded, a
//!   workflow task can still be scheduled and started (before, both were refused and the run
//!   was stuck), and that task continues the run as new.

use std::time::Duration;

use anyhow::{Result, ensure};
use steadfast_proto::v1 as pb;
use steadfast_proto::v1::command::Command as Cmd;
use steadfast_proto::v1::worker_service_client::WorkerServiceClient;
use steadfast_sdk::client::{Client, Error, StartOptions};
use steadfast_sdk::payload;
use steadfast_tests::Server;
use tonic::transport::Channel;

/// Past the hard limit the run needs five more events to finish: the activity's start and
/// result (every attempt's start is recorded, issue 9), the task's completion, and the next
/// task's schedule and start. At 40 the reserve (10%) held only four.
const EVENTS_MAX: u64 = 50;

fn assert_limit(message: &str, threshold: &str) -> Result<()> {
    ensure!(
        message.contains("[STF-LIMIT]")
            && message.contains(threshold)
            && message.contains("continue-as-new"),
        "not the limit error naming {threshold:?}: {message}"
    );
    Ok(())
}

async fn poll(worker: &mut WorkerServiceClient<Channel>) -> Result<pb::PollWorkflowTaskResponse> {
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
    ensure!(!task.task_token.is_empty(), "no workflow task was offered");
    Ok(task)
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

fn schedule(seq: u32) -> pb::Command {
    pb::Command {
        seq,
        command: Some(Cmd::ScheduleActivity(pb::ScheduleActivityCommand {
            activity_type: "work".into(),
            input: None,
            options: None,
        })),
    }
}

async fn length(client: &Client, run: &str) -> Result<u64> {
    Ok(client.describe(run).await?.history_length)
}

#[test]
fn a_run_at_its_history_limit_can_still_continue_as_new() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let max = EVENTS_MAX.to_string();
    let server = Server::start_with(
        &dir.path().join("data"),
        None,
        &["--history-events-max", &max],
    )?;
    let rt = steadfast_tests::runtime();
    rt.block_on(async {
        let client = Client::connect(server.url().as_str()).await?;
        let mut worker = WorkerServiceClient::connect(server.url()).await?;
        let run = client
            .start_workflow("limits", &"fill", StartOptions::default())
            .await?;
        let run = run.run_id;
        let task = poll(&mut worker).await?;
        ensure!(
            !task.continue_as_new_suggested,
            "a new run is far from its limit"
        );
        worker
            .complete_workflow_task(complete(&task, vec![schedule(1)]))
            .await?;
        // Past the soft limit (45): the next task is told, and new work is refused.
        while length(&client, &run).await? < 46 {
            client.signal(&run, "fill", &"x").await?;
        }
        let task = poll(&mut worker).await?;
        ensure!(
            task.continue_as_new_suggested,
            "past the soft limit, not suggested"
        );
        let refused = worker
            .complete_workflow_task(complete(&task, vec![schedule(2)]))
            .await
            .expect_err("new work past the soft limit is refused");
        ensure!(
            refused.code() == tonic::Code::ResourceExhausted,
            "{refused:?}"
        );
        assert_limit(refused.message(), "soft limit of 45 events")?;
        // Signals fill the history up to the hard limit, and no further.
        let refused = loop {
            match client.signal(&run, "fill", &"x").await {
                Ok(()) => ensure!(length(&client, &run).await? <= EVENTS_MAX),
                Err(e) => break e,
            }
        };
        let Error::ResourceExhausted(message) = &refused else {
            anyhow::bail!("expected ResourceExhausted, got {refused:?}");
        };
        assert_limit(message, "limit of 50 events")?;
        ensure!(length(&client, &run).await? == EVENTS_MAX);
        // Past the hard limit: the activity scheduled earlier still reports its result...
        let act = worker
            .poll_activity_task(pb::PollActivityTaskRequest {
                namespace: "default".into(),
                task_queue: "default".into(),
                worker_id: "limits-test".into(),
                activity_types: vec!["work".into()],
                poll_timeout_ms: 5_000,
                ..Default::default()
            })
            .await?
            .into_inner();
        ensure!(act.activity_id == 1, "{act:?}");
        worker
            .complete_activity_task(pb::CompleteActivityTaskRequest {
                namespace: "default".into(),
                task_token: act.task_token,
                result: Some(payload::encode(&"done")?),
                worker_id: "limits-test".into(),
                ..Default::default()
            })
            .await?;
        // ...the open task completes (with no new work), the next one is scheduled and
        // started...
        worker
            .complete_workflow_task(complete(&task, vec![]))
            .await?;
        let task = poll(&mut worker).await?;
        ensure!(task.continue_as_new_suggested);
        // ...and continues the run as new.
        worker
            .complete_workflow_task(complete(
                &task,
                vec![pb::Command {
                    seq: 2,
                    command: Some(Cmd::ContinueAsNew(pb::ContinueAsNewCommand {
                        keep_build: false,
                        input: Some(payload::encode(&"carried")?),
                    })),
                }],
            ))
            .await?;
        let old = client.describe(&run).await?;
        ensure!(old.status() == pb::RunStatus::ContinuedAsNew, "{old:?}");
        ensure!(old.history_length > EVENTS_MAX, "{}", old.history_length);
        let new = client.describe(&old.continued_to).await?;
        ensure!(
            new.continued_from == run && new.status() == pb::RunStatus::Running,
            "{new:?}"
        );
        let task = tokio::time::timeout(Duration::from_secs(10), poll(&mut worker)).await??;
        ensure!(task.run_id == old.continued_to && !task.continue_as_new_suggested);
        Ok(())
    })
}
