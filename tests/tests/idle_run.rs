//! An open run whose code waits for nothing the server tracks names it (issue 10, C6): a raw
//! worker completes the run's first task with no command, as code that awaits only a cancel
//! would. `DescribeRun` says the run is idle, `ListRuns --waiting idle` finds it, and a cancel
//! request wakes it.

use anyhow::{Context, Result, ensure};
use steadfast_proto::v1 as pb;
use steadfast_proto::v1::waiting_on::What;
use steadfast_tests::raw::Raw;
use steadfast_tests::{Server, runtime};

const NS: &str = "default";
const POLL_MS: u64 = 10_000;

#[test]
fn a_run_whose_code_waits_for_nothing_tracked_is_idle() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let server = Server::start(dir.path(), None)?;
    runtime().block_on(async {
        let mut raw = Raw::connect(&server.url()).await?;
        let run = raw.start(NS, "idle").await?;
        let task = raw.expect_workflow(NS, &["idle"], POLL_MS).await?;
        raw.complete_workflow(NS, &task.task_token, Vec::new())
            .await?;

        let describe = pb::DescribeRunRequest {
            namespace: NS.into(),
            run_id: run.clone(),
            ..Default::default()
        };
        let info = raw
            .client
            .describe_run(describe.clone())
            .await?
            .into_inner()
            .run
            .context("run info")?;
        ensure!(info.status == pb::RunStatus::Running as i32);
        ensure!(
            info.waiting_on.len() == 1 && matches!(info.waiting_on[0].what, Some(What::Idle(_))),
            "waiting on {:?}",
            info.waiting_on
        );
        let listed = raw
            .client
            .list_runs(pb::ListRunsRequest {
                namespace: NS.into(),
                waiting: "idle".into(),
                ..Default::default()
            })
            .await?
            .into_inner();
        ensure!(
            listed.runs.iter().any(|r| r.run_id == run),
            "run list --waiting idle misses the run"
        );

        // A cancel request wakes its code: the run waits on its workflow task, not idle.
        raw.client
            .cancel_run(pb::CancelRunRequest {
                namespace: NS.into(),
                run_id: run.clone(),
                reason: "stop".into(),
                ..Default::default()
            })
            .await?;
        let info = raw
            .client
            .describe_run(describe)
            .await?
            .into_inner()
            .run
            .context("run info")?;
        ensure!(
            info.waiting_on
                .iter()
                .all(|w| !matches!(w.what, Some(What::Idle(_))))
                && info
                    .waiting_on
                    .iter()
                    .any(|w| matches!(w.what, Some(What::WorkflowTask(_)))),
            "after a cancel request: {:?}",
            info.waiting_on
        );
        anyhow::Ok(())
    })
}
