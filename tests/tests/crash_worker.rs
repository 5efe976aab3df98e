//! A worker SIGKILLed inside an activity: the lost attempt times out and another worker
//! retries it with the same idempotency key (promise C3: at least once, one completion, a
//! stable key across attempts).

use std::time::Duration;

use anyhow::{Context, Result};
use serde_json::json;
use steadfast_proto::v1 as pb;
use steadfast_proto::v1::history_event::Attributes;
use steadfast_sdk::client::{Client, StartOptions};
use steadfast_tests::{Server, history, runtime, side, start_test_worker, wait_for};

/// The first attempt sleeps this long (the test kills its worker well before the end)...
const SLEEP_MS: u64 = 30_000;
/// ...and an attempt may take this long, so the lost one times out soon. Retries return at
/// once.
const START_TO_CLOSE_MS: u64 = 1_500;

#[test]
fn lost_attempt_is_retried_by_another_worker_with_the_same_key() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let side_file = dir.path().join("side");
    let server = Server::start(&dir.path().join("data"), None)?;
    let url = server.url();
    let rt = runtime();
    let client = rt.block_on(Client::connect(url.clone()))?;

    let mut first = start_test_worker(&url, &side_file, &[])?;
    let first_pid = first.pid().context("first worker pid")?;
    let input = json!({ "sleep_ms": SLEEP_MS, "start_to_close_ms": START_TO_CLOSE_MS });
    let run = rt
        .block_on(client.start_workflow("slow", &input, StartOptions::default()))?
        .run_id;
    // Kill the worker once attempt 1 has started (its line is synced before it sleeps).
    wait_for(Duration::from_secs(20), "attempt 1 to start", || {
        let ex = side::executions(&side_file, &run).ok()?;
        ex.iter().any(|e| e.attempt == 1).then_some(())
    })?;
    first.kill9();
    let _second = start_test_worker(&url, &side_file, &[])?;

    let key = format!("default/{run}/1");
    let result: String = rt
        .block_on(client.await_result(&run, Duration::from_secs(30)))
        .context("the run's result")?;
    assert_eq!(
        result,
        format!("slow done on attempt 2 (idempotency key {key})")
    );

    // The side file: attempt 1 in the killed worker, attempt 2 in the new one, one key.
    let ex = side::executions(&side_file, &run)?;
    let seen: Vec<(u32, u32, bool)> = ex
        .iter()
        .map(|e| (e.activity_id, e.attempt, e.pid == first_pid))
        .collect();
    assert_eq!(
        seen,
        vec![(1, 1, true), (1, 2, false)],
        "executions (activity, attempt, in the killed worker): {ex:?}"
    );
    for e in &ex {
        assert_eq!(e.idempotency_key, key, "attempt {}'s key", e.attempt);
    }

    // The history: attempt 1 timed out, attempt 2's completion is the one. The kill ends the
    // worker's session, so the server times the attempt out about half a second later
    // (Heartbeat: the worker went silent for good), or start-to-close comes first on a slow
    // machine; either way once, and never as a completion.
    let events = history(&rt, &url, &run)?;
    let timed_out: Vec<(u32, u32, i32)> = events
        .iter()
        .filter_map(|e| match &e.attributes {
            Some(Attributes::ActivityTimedOut(t)) => Some((t.command_seq, t.attempt, t.timeout)),
            _ => None,
        })
        .collect();
    let kinds = [
        pb::TimeoutKind::Heartbeat as i32,
        pb::TimeoutKind::StartToClose as i32,
    ];
    assert!(
        matches!(timed_out[..], [(1, 1, kind)] if kinds.contains(&kind)),
        "ActivityTimedOut events: {timed_out:?}"
    );
    let completed: Vec<(u32, u32)> = events
        .iter()
        .filter_map(|e| match &e.attributes {
            Some(Attributes::ActivityCompleted(c)) => Some((c.command_seq, c.attempt)),
            _ => None,
        })
        .collect();
    assert_eq!(completed, vec![(1, 2)], "ActivityCompleted events");
    Ok(())
}
