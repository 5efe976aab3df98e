//! No run starves behind runs of a type nobody polls for (C6). Hundreds of runs of a workflow
//! type whose worker is not deployed sit at the head of the "default" workflow queue; a run of
//! a type the test-worker runs, started after them, still completes within a bound, because a
//! poll asks the store for its worker's types only. The unserved runs stay open and
//! `run list --waiting workflow_task` names them.
//!
//! Before polls were filtered in the store, a poll stepped over at most 64 tasks of other
//! types and gave up, so this `seq` run was never handed out.

use std::time::Duration;

use anyhow::{Context, Result, ensure};
use serde_json::{Value, json};
use steadfast_proto::v1::waiting_on::What;
use steadfast_sdk::Client;
use steadfast_sdk::client::StartOptions;
use steadfast_tests::{Server, cli, runtime, start_test_worker};

/// Runs of a type no worker runs, started first.
const UNSERVED_RUNS: usize = 300;
/// Sequential steps of the served run.
const SEQ_STEPS: u64 = 100;
/// How long the served run may take once the worker is up (a debug build on a busy 2-core
/// machine; it takes about a second).
const SEQ_DONE_WITHIN: Duration = Duration::from_secs(60);

#[test]
fn a_served_run_completes_behind_hundreds_of_unserved_ones() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let server = Server::start(&dir.path().join("data"), None)?;
    let url = server.url();
    let rt = runtime();
    let client = rt.block_on(Client::connect(url.as_str()))?;
    let mut unserved = Vec::with_capacity(UNSERVED_RUNS);
    for _ in 0..UNSERVED_RUNS {
        let h =
            rt.block_on(client.start_workflow("undeployed", &json!({}), StartOptions::default()))?;
        unserved.push(h.run_id.clone());
    }
    let seq = rt.block_on(client.start_workflow(
        "seq",
        &json!({ "n": SEQ_STEPS }),
        StartOptions::default(),
    ))?;

    let _worker = start_test_worker(&url, &dir.path().join("side.log"), &[])?;
    let result: Value = rt
        .block_on(client.await_result(&seq.run_id, SEQ_DONE_WITHIN))
        .with_context(|| {
            format!("the seq run behind {UNSERVED_RUNS} unserved runs within {SEQ_DONE_WITHIN:?}")
        })?;
    let steps = result.as_array().context("seq returns a list")?;
    ensure!(
        steps.len() as u64 == SEQ_STEPS,
        "seq returned {} results",
        steps.len()
    );

    // The unserved runs were not touched: each still waits on its workflow task.
    let (code, out, err) = cli(
        &url,
        &[
            "run",
            "list",
            "--waiting",
            "workflow_task",
            "--type",
            "undeployed",
            "--limit",
            "0",
        ],
    )?;
    ensure!(code == 0, "run list --waiting workflow_task: {err}");
    let missing: Vec<&String> = unserved.iter().filter(|r| !out.contains(*r)).collect();
    ensure!(
        missing.is_empty(),
        "run list --waiting workflow_task misses {} of {UNSERVED_RUNS} unserved runs (first {})",
        missing.len(),
        missing[0]
    );
    let info = rt.block_on(client.describe(&unserved[0]))?;
    ensure!(
        info.waiting_on
            .iter()
            .any(|w| matches!(w.what, Some(What::WorkflowTask(_)))),
        "an unserved run waits on {:?}",
        info.waiting_on
    );
    Ok(())
}
