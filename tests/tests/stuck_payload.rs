//! An activity result too large to store fails that activity clearly, once (issue 10, point 4;
//! promise C6). Before, the result was dropped, the attempt timed out and ran again, with no
//! end. Now the attempt is recorded as a final ActivityFailed with the non-retryable
//! `[STF-PAYLOAD]` error (type `ResultRefused`), the workflow gets that failure, and the
//! activity ran exactly once. Two sizes, two places that refuse:
//!
//! - `huge_result` returns 3 MiB: over the 2 MiB payload limit, the server records the failure;
//! - `oversized_result` returns 9 MiB: over the 8 MiB request limit, the server cannot even
//!   receive it, so the SDK reports the failure. Its start-to-close is 2 minutes, longer than
//!   the test waits, so only the SDK's report can end the run in time.

mod agent_common;

use anyhow::{Result, ensure};
use serde_json::Value;
use steadfast_proto::v1 as pb;

use agent_common::{Env, seed};

/// Runs `tool` through the `tool_call` workflow and checks the one final `[STF-PAYLOAD]`
/// failure; returns the error message the workflow got and the ActivityFailed.
fn fails_once(tool: &str, start_to_close_ms: u64) -> Result<(String, pb::ActivityFailed)> {
    seed();
    let env = Env::start()?;
    let _worker = env.worker()?;
    let input = format!(
        r#"{{"tool":"{tool}","start_to_close_ms":{start_to_close_ms},"retry_initial_ms":100}}"#
    );
    let run = env.start_run("tool_call", &input, &[])?;
    let info = env.wait_closed(&run)?;
    ensure!(
        info.status() == pb::RunStatus::Completed,
        "{:?} {:?}",
        info.status(),
        info.failure
    );
    let result: Value = serde_json::from_str(&env.ok(&["run", "result", &run])?)?;
    let message = result["error"].as_str().unwrap_or_default().to_string();
    ensure!(
        message.contains("[STF-PAYLOAD]"),
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
    Ok((message, failed[0].clone()))
}

#[test]
fn an_oversized_activity_result_fails_the_activity_once_with_a_named_error() -> Result<()> {
    // A short start-to-close: before the fix, the run would loop on timeouts within the wait.
    let (message, _) = fails_once("huge_result", 2_000)?;
    ensure!(message.contains("the limit is"), "{message}");
    Ok(())
}

#[test]
fn a_result_over_the_request_limit_fails_the_activity_once_from_the_sdk() -> Result<()> {
    let (message, failed) = fails_once("oversized_result", 120_000)?;
    let size = 9 * 1024 * 1024 + 2; // the JSON string's quotes
    ensure!(
        message.starts_with(&format!(
            "[STF-PAYLOAD] the activity's result is {size} bytes; the limit is 8388608 bytes per request"
        )),
        "{message}"
    );
    ensure!(failed.attempt == 1 && failed.retry_at_ms == 0, "{failed:?}");
    Ok(())
}
