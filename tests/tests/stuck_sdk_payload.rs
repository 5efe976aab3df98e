//! An activity result over the server's gRPC request limit fails that activity clearly, from
//! the SDK side, once (issue 10; promise C6).
//!
//! `agent-worker`'s `oversized_result` returns 9 MiB; the server refuses any request over
//! 8 MiB with RESOURCE_EXHAUSTED before it can record anything. Before, the SDK dropped the
//! result: the attempt timed out and ran again, and returned the same result again, forever.
//! Now the SDK reports the attempt with FailActivityTask, non-retryable, `[STF-PAYLOAD]`
//! naming the size and the limit, and the workflow gets that failure at once. The attempt's
//! start-to-close is 2 minutes, longer than the test waits, so only the SDK's report can end
//! the run in time.

mod agent_common;

use anyhow::{Result, ensure};
use serde_json::Value;
use steadfast_proto::v1 as pb;

use agent_common::{Env, seed};

#[test]
fn a_result_over_the_request_limit_fails_the_activity_once_from_the_sdk() -> Result<()> {
    seed();
    let env = Env::start()?;
    let _worker = env.worker()?;
    let run = env.start_run(
        "tool_call",
        r#"{"tool":"oversized_result","start_to_close_ms":120000,"retry_initial_ms":100}"#,
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
    let size = 9 * 1024 * 1024 + 2; // the JSON string's quotes
    ensure!(
        message.starts_with(&format!(
            "[STF-PAYLOAD] the activity's result is {size} bytes; the limit is 8388608 bytes per request"
        )),
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
    ensure!(
        failed[0].attempt == 1 && failed[0].retry_at_ms == 0,
        "{:?}",
        failed[0]
    );
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
