//! Queries against a live run (issue 18, point 4): a worker answers from the replayed
//! instance, nothing is written; an unknown name is a typed error; a closed run is queried
//! from its final history; a run no worker serves gets a clear DEADLINE_EXCEEDED.

use std::time::Duration;

use anyhow::{Result, ensure};
use serde_json::{Value, json};
use steadfast_proto::v1 as pb;
use steadfast_proto::v1::history_event::Attributes;
use steadfast_sdk::client::{Client, Error, StartOptions};
use steadfast_tests::{Server, cli, history, runtime, start_test_worker, wait_for};

const WAIT: Duration = Duration::from_secs(60);
const STEPS: u64 = 40;

fn completed(events: &[pb::HistoryEvent]) -> u64 {
    events
        .iter()
        .filter(|e| matches!(e.attributes, Some(Attributes::ActivityCompleted(_))))
        .count() as u64
}

#[test]
fn a_query_reads_a_running_seq_run_and_writes_nothing() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let server = Server::start(&dir.path().join("data"), None)?;
    let url = server.url();
    let _worker = start_test_worker(&url, &dir.path().join("side"), &[])?;
    let rt = runtime();
    let client = rt.block_on(Client::connect(url.clone()))?;
    let run = rt.block_on(client.start_workflow(
        "seq",
        &json!({ "n": STEPS, "sleep_ms": 100 }),
        StartOptions::default(),
    ))?;
    let id = run.run_id.clone();
    wait_for(WAIT, "two completed steps", || {
        let h = history(&rt, &url, &id).ok()?;
        (completed(&h) >= 2).then_some(())
    })?;
    let before = history(&rt, &url, &id)?;
    let seen = completed(&before);
    let progress: Value = rt.block_on(client.query(&id, "progress", &(), None))?;
    let done = progress["done"].as_u64().unwrap_or(0);
    ensure!(progress["total"] == json!(STEPS), "answer {progress}");
    ensure!(
        done >= seen && done < STEPS,
        "progress {progress} while the history had {seen} completed steps"
    );
    // Nothing written: the history only grew by the run's own progress, never a query event.
    let after = history(&rt, &url, &id)?;
    ensure!(
        after[..before.len()] == before[..],
        "a query changed the history"
    );
    ensure!(
        after
            .iter()
            .all(|e| e.kind != pb::EventKind::Unspecified as i32),
        "unknown events after a query"
    );

    // The CLI prints the answer as JSON on stdout.
    let (code, out, err) = cli(&url, &["run", "query", &id, "progress"])?;
    ensure!(code == 0, "run query failed: {err}");
    let printed: Value = serde_json::from_str(out.trim())?;
    ensure!(printed["total"] == json!(STEPS), "printed {out}");

    // An unknown name is typed, and names the handlers the workflow has.
    match rt.block_on(client.query::<Value>(&id, "nope", &(), None)) {
        Err(Error::UnknownQuery(m)) => {
            ensure!(m.contains("STF-QUERY001") && m.contains("progress"), "{m}")
        }
        other => anyhow::bail!("unknown query answered {other:?}"),
    }
    let (code, _, err) = cli(&url, &["run", "query", &id, "nope"])?;
    ensure!(
        code != 0 && err.contains("STF-QUERY001"),
        "CLI: {code} {err}"
    );

    // A closed run is answered from its final history.
    let out: Vec<u32> = rt.block_on(run.result(WAIT))?;
    ensure!(out.len() as u64 == STEPS);
    let progress: Value = rt.block_on(client.query(&id, "progress", &(), None))?;
    ensure!(
        progress == json!({ "done": STEPS, "total": STEPS }),
        "closed run answered {progress}"
    );
    Ok(())
}

#[test]
fn a_query_of_a_run_no_worker_serves_times_out_with_a_clear_error() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let server = Server::start(&dir.path().join("data"), None)?;
    let url = server.url();
    let rt = runtime();
    let client = rt.block_on(Client::connect(url.clone()))?;
    let run = rt.block_on(client.start_workflow(
        "seq",
        &json!({ "n": 1 }),
        StartOptions {
            task_queue: Some("nobody-polls".into()),
            ..Default::default()
        },
    ))?;
    let started = std::time::Instant::now();
    let r = rt.block_on(client.query::<Value>(
        &run.run_id,
        "progress",
        &(),
        Some(Duration::from_millis(300)),
    ));
    match r {
        Err(Error::Unavailable(m)) => ensure!(
            m.contains("no worker took") && m.contains("nobody-polls"),
            "message: {m}"
        ),
        other => anyhow::bail!("expected a deadline, got {other:?}"),
    }
    ensure!(started.elapsed() < Duration::from_secs(10));
    let (code, _, err) = cli(
        &url,
        &[
            "run",
            "query",
            &run.run_id,
            "progress",
            "--timeout-ms",
            "200",
        ],
    )?;
    ensure!(
        code != 0 && err.contains("DEADLINE_EXCEEDED"),
        "CLI: {code} {err}"
    );
    // And a run that does not exist is NOT_FOUND at once.
    let missing = "0190a0b0-0000-7000-8000-000000000000";
    match rt.block_on(client.query::<Value>(missing, "progress", &(), None)) {
        Err(Error::NotFound(_)) => Ok(()),
        other => anyhow::bail!("missing run answered {other:?}"),
    }
}
