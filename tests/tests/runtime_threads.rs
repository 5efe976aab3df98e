//! `steadfast server --runtime-threads N`: how many threads serve requests. Out-of-range and
//! malformed values are refused before anything is opened; a server on more threads than
//! the default serves runs like any other (the default, half the CPUs, is what every other
//! test runs on).

use std::time::Duration;

use anyhow::{Context, Result, ensure};
use serde_json::{Value, json};
use steadfast_sdk::client::{Client, StartOptions};
use steadfast_tests::{Server, bin, run_bounded, runtime, start_hello_worker};

#[test]
fn bad_runtime_thread_counts_are_refused_with_a_clear_error() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let data = dir.path().join("data");
    let data_str = data.to_str().context("utf-8 path")?;
    for bad in ["0", "1025", "two", "-1"] {
        let mut cmd = std::process::Command::new(bin("steadfast"));
        cmd.args([
            "server",
            "--data-dir",
            data_str,
            "--listen",
            "127.0.0.1:0",
            &format!("--runtime-threads={bad}"),
        ]);
        let (code, _, err) = run_bounded(&mut cmd, Duration::from_secs(30))?;
        ensure!(code == 2, "--runtime-threads {bad}: exit {code}: {err}");
        ensure!(err.contains("--runtime-threads"), "{err}");
        ensure!(
            !data.exists(),
            "--runtime-threads {bad} opened the data dir"
        );
    }
    Ok(())
}

#[test]
fn a_server_on_several_runtime_threads_serves_runs() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let server = Server::start_with(&dir.path().join("data"), None, &["--runtime-threads", "3"])?;
    let url = server.url();
    let _hello = start_hello_worker(&url)?;
    let rt = runtime();
    let client = rt.block_on(Client::connect(url))?;
    let run = rt
        .block_on(client.start_workflow(
            "hello",
            &json!({ "name": "threads" }),
            StartOptions::default(),
        ))?
        .run_id;
    let out: Value = rt.block_on(client.await_result(&run, Duration::from_secs(60)))?;
    ensure!(out.to_string().contains("threads"), "{out}");
    Ok(())
}
