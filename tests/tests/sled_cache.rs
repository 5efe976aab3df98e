//! The log is the record, sled only a cache (promise C1, issue "the log is the record"):
//! a server with thousands of closed runs is checkpointed (`steadfast admin checkpoint`),
//! stopped, its whole sled directory deleted, and started again. Nothing is lost: every run's
//! result, status and whole history (hash for hash) come back, rebuilt from the log, and the
//! server keeps taking new runs.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::{Context, Result, ensure};
use futures::StreamExt;
use serde_json::json;
use steadfast_sdk::client::{Client, StartOptions};
use steadfast_tests::{Server, cli, runtime, start_hello_worker};

/// Closed runs before the checkpoint ("thousands").
const RUNS: usize = 2_000;
/// Runs after the checkpoint (only in the log's newest part).
const RUNS_AFTER: usize = 200;
const IN_FLIGHT: usize = 64;

async fn hello_runs(
    client: &Client,
    n: usize,
    tag: &str,
) -> Result<Vec<(String, serde_json::Value)>> {
    let results = futures::stream::iter(0..n)
        .map(|i| {
            let client = client.clone();
            let name = format!("{tag}-{i}");
            async move {
                let h = client
                    .start_workflow("hello", &json!({ "name": name }), StartOptions::default())
                    .await?;
                let out: serde_json::Value = h.result(Duration::from_secs(120)).await?;
                anyhow::Ok((h.run_id, out))
            }
        })
        .buffer_unordered(IN_FLIGHT)
        .collect::<Vec<_>>()
        .await;
    results.into_iter().collect()
}

/// Each run's (status, result, every event's seq and hash).
type Snapshot = BTreeMap<String, (i32, String, Vec<(u64, Vec<u8>)>)>;

async fn snapshot(client: &Client, runs: &[(String, serde_json::Value)]) -> Result<Snapshot> {
    let mut out = Snapshot::new();
    for (run, _) in runs {
        let info = client.describe(run).await?;
        let history = client.history(run).await?;
        let result = info
            .result
            .as_ref()
            .map(|p| String::from_utf8_lossy(&p.data).into_owned())
            .unwrap_or_default();
        out.insert(
            run.clone(),
            (
                info.status,
                result,
                history.iter().map(|e| (e.seq, e.hash.clone())).collect(),
            ),
        );
    }
    Ok(out)
}

#[test]
fn deleting_sled_after_a_checkpoint_loses_nothing() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let mut server = Server::start(dir.path(), None)?;
    let url = server.url();
    let mut worker = start_hello_worker(&url)?;
    let rt = runtime();
    let client = rt.block_on(Client::connect(url.as_str()))?;
    let mut runs = rt.block_on(hello_runs(&client, RUNS, "before"))?;
    let (code, out, err) = cli(&url, &["admin", "checkpoint"])?;
    ensure!(code == 0, "admin checkpoint failed: {out} {err}");
    runs.extend(rt.block_on(hello_runs(&client, RUNS_AFTER, "after"))?);
    for (run, out) in &runs {
        ensure!(
            out.get("greeting").is_some(),
            "run {run} returned an unexpected result {out}"
        );
    }
    let before = rt.block_on(snapshot(&client, &runs))?;
    ensure!(before.len() == RUNS + RUNS_AFTER);

    worker.kill9();
    ensure!(
        server.proc.terminate(Duration::from_secs(30)),
        "the server did not stop on SIGTERM"
    );
    let sled = dir.path().join("sled");
    ensure!(sled.is_dir(), "no sled directory at {}", sled.display());
    std::fs::remove_dir_all(&sled).context("delete the sled directory")?;

    server.restart()?;
    let client = rt.block_on(Client::connect(server.url().as_str()))?;
    let after = rt.block_on(snapshot(&client, &runs))?;
    for (run, want) in &before {
        let got = after
            .get(run)
            .context("a run is missing after the rebuild")?;
        ensure!(
            got == want,
            "run {run} differs after sled was deleted: status/result/history {:?} vs {:?}",
            (got.0, &got.1, got.2.len()),
            (want.0, &want.1, want.2.len())
        );
    }
    let (code, out, _) = cli(&server.url(), &["run", "list"])?;
    ensure!(
        code == 0 && !out.trim().is_empty(),
        "run list after the rebuild: {out}"
    );
    // The rebuilt server keeps working.
    let _worker = start_hello_worker(&server.url())?;
    let more = rt.block_on(hello_runs(&client, 20, "later"))?;
    ensure!(more.len() == 20);
    eprintln!(
        "{} runs ({} events) identical after deleting sled",
        before.len(),
        before.values().map(|v| v.2.len()).sum::<usize>()
    );
    Ok(())
}
