//! An activity result over the payload limit fails that activity clearly, once (issue 10,
//! point 4; promise C6).
//!
//! `agent-worker`'s `huge_result` returns 3 MiB (the limit is 2 MiB). Before, the server
//! refused the completion, the result was dropped, the attempt timed out and ran again, with
//! no end (6 dispatches in 15 s). Now the attempt is recorded as a final ActivityFailed with
//! the non-retryable `[STF-PAYLOAD]` error, the workflow gets that failure, and the activity
//! ran exactly once.

mod agent_common;

use anyhow::{Result, ensure};
use serde_json::Value;
use steadfast_proto::v1 as pb;

use agent_common::{Env, seed};

#[test]
fn an_oversized_activity_result_fails_the_activity_once_with_a_named_error() -> Result<()> {
    seed();
    let env = Env::start()?;
    let _worker = env.worker()?;
    // A short start-to-close: before the fix, the run would loop on timeouts within the wait.
    let run = env.start_run(
        "tool_call",
        r#"{"tool":"huge_result","start_to_close_ms":2000,"retry_initial_ms":100}"#,
        &[],
    )?;
    let info = env.wait_closed(&run)?;
    ensure!(
        info.status() == pb::RunStatus::Completed,
        "{:?} {:?}",
        info.status(),
        info.failure
    );
    let result: Value = serde_json::from_str(&env.ok(&["run", "result", &run])?)?;
    let message = result["error"].as_str().unwrap_or_default();
    ensure!(
        message.contains("[STF-PAYLOAD]") && message.contains("the limit is"),
        "the workflow did not get the named error: {result}"
    );
    let history = steadfast_tests::history(&env.rt, &env.url(), &run)?;
    let failed: Vec<&pb::ActivityFailed> = history
        .iter()
        .filter_map(|e| match &e.attributes {
            Some(pb::history_event::Attributes::ActivityFailed(f)) => Some(f),
            _ => None,
        })
        .collect();
    ensure!(failed.len() == 1, "{} ActivityFailed events", failed.len());
    let f = failed[0].failure.as_ref();
    ensure!(
        f.is_some_and(|f| f.non_retryable && f.r#type == "ResultRefused"),
        "{:?}",
        failed[0]
    );
    ensure!(
        !history
            .iter()
            .any(|e| e.kind() == pb::EventKind::ActivityTimedOut),
        "an attempt timed out"
    );
    ensure!(env.starts(&run)?.len() == 1, "the activity ran again");
    Ok(())
}
