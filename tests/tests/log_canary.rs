//! Issue 12 point 5: no secrets or payloads in logs. A random secret (from the printed seed;
//! `TEST_SEED=...` replays it) is planted in a workflow input, hence in the activities'
//! arguments and results (`hello-worker` greets, shouts and signs the name), in a signal's
//! payload, and in the client's and the worker's auth tokens. Server, worker and CLI run at
//! `RUST_LOG=debug` with their stderr in files; no line of any of them may hold the secret or
//! any long piece of it.

use std::fs::File;
use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::{Context, Result};
use rand::{Rng, SeedableRng};
use steadfast_tests::{Proc, Server, bin, run_bounded, secure, test_seed};

/// A piece of the secret this long found in a log counts as a leak (shorter pieces of random
/// hex turn up by chance in hashes and ids).
const PIECE_CHARS: usize = 12;

fn cli(url: &str, token: &str, args: &[&str], log: &mut String) -> Result<(i32, String)> {
    let mut cmd = Command::new(bin("steadfast"));
    cmd.args(args)
        .env("STEADFAST_ADDR", url)
        .env("STEADFAST_TOKEN", token)
        .env("RUST_LOG", "debug");
    let (code, out, err) = run_bounded(&mut cmd, Duration::from_secs(90))?;
    log.push_str(&err);
    Ok((code, out))
}

/// Every line of a `--log-format json` log is one JSON object (but the address lines the
/// harness reads); the updates of `run` carry its id and workflow type as span fields.
fn json_lines(text: &str, run: &str) -> Result<()> {
    let mut of_run = 0;
    for line in text.lines() {
        if line.starts_with("steadfast server listening on ") {
            continue;
        }
        let v: serde_json::Value = serde_json::from_str(line)
            .with_context(|| format!("not a JSON log line: {}", &line[..line.len().min(200)]))?;
        anyhow::ensure!(
            v["level"].is_string() && v["timestamp"].is_string(),
            "no level or timestamp: {line}"
        );
        let span = &v["span"];
        if v["message"] == "run updated" && span["run"] == run {
            anyhow::ensure!(
                span["workflow_type"] == "hello" && span["seq"].as_u64().is_some_and(|s| s > 1),
                "the run's fields: {line}"
            );
            of_run += 1;
        }
    }
    anyhow::ensure!(of_run > 0, "no JSON line of an update of run {run}");
    Ok(())
}

/// The lines of `text` that hold the secret or a piece of it.
fn leaks(text: &str, secret: &str) -> Vec<String> {
    let pieces: Vec<&str> = (0..=secret.len() - PIECE_CHARS)
        .map(|i| &secret[i..i + PIECE_CHARS])
        .collect();
    text.lines()
        .filter(|l| pieces.iter().any(|p| l.contains(p)))
        .map(|l| l.chars().take(300).collect())
        .collect()
}

#[test]
fn a_planted_secret_appears_in_no_log_of_server_worker_or_cli() -> Result<()> {
    canary(&[])
}

/// The same with the server's logs as JSON lines (`--log-format json`): still no secret, and
/// every line is a JSON object; run updates carry the run id and workflow type as fields.
#[test]
fn a_planted_secret_appears_in_no_json_log_either() -> Result<()> {
    canary(&["--log-format", "json"])
}

fn canary(server_args: &[&str]) -> Result<()> {
    let seed = test_seed();
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let secret: String = (0..32)
        .map(|_| char::from_digit(rng.gen_range(0..16), 16).expect("hex digit"))
        .collect();
    let secret = format!("cnry{secret}");
    // The detector itself: a piece of the secret inside a line is found.
    let planted = format!("debug: arg={}..", &secret[5..5 + PIECE_CHARS]);
    assert_eq!(
        leaks(&format!("clean\n{planted}\n"), &secret),
        vec![planted]
    );
    let client_token = format!("{secret}-client");
    let worker_token = format!("{secret}-worker");

    let dir = tempfile::tempdir()?;
    let auth = dir.path().join("auth.txt");
    let lines = [
        secure::entry(&client_token, "canary-client", "client", "default")?,
        secure::entry(&worker_token, "canary-worker", "worker", "default")?,
    ];
    let refs: Vec<&str> = lines.iter().map(String::as_str).collect();
    secure::write_auth_file(&auth, &refs)?;
    let server_log = dir.path().join("server.log");
    let worker_log = dir.path().join("worker.log");
    let mut args = vec!["--auth-file", auth.to_str().context("utf-8 path")?];
    args.extend_from_slice(server_args);
    let server = Server::start_logged(&dir.path().join("data"), &args, &server_log)?;
    let url = server.url();
    let mut cmd = Command::new(bin("hello-worker"));
    cmd.args(["--addr", &url])
        .env("STEADFAST_TOKEN", &worker_token)
        .env("RUST_LOG", "debug")
        .stdout(Stdio::from(File::create(dir.path().join("worker.out"))?))
        .stderr(Stdio::from(File::create(&worker_log)?));
    let mut worker = Proc::spawn("hello-worker", &mut cmd)?;

    let mut cli_log = String::new();
    let input = format!(r#"{{"name":"{secret}"}}"#);
    let (code, out) = cli(
        &url,
        &client_token,
        &["run", "start", "hello", "--input", &input],
        &mut cli_log,
    )?;
    assert_eq!(code, 0, "start: {cli_log}");
    let run = out.trim().to_string();
    let (code, out) = cli(
        &url,
        &client_token,
        &["run", "result", &run, "--wait", "--timeout", "60s"],
        &mut cli_log,
    )?;
    assert_eq!(code, 0, "result: {cli_log}");
    // The activities ran with the secret as argument and returned it in their results.
    assert!(out.contains(&secret), "{out}");
    // A signal carrying the secret, to a run that waits (no worker serves its queue).
    let (code, out) = cli(
        &url,
        &client_token,
        &[
            "run",
            "start",
            "canary.idle",
            "--task-queue",
            "canary-nobody",
        ],
        &mut cli_log,
    )?;
    assert_eq!(code, 0, "start idle: {cli_log}");
    let idle = out.trim().to_string();
    let (code, _) = cli(
        &url,
        &client_token,
        &["run", "signal", &idle, "approve", "--input", &input],
        &mut cli_log,
    )?;
    assert_eq!(code, 0, "signal: {cli_log}");

    worker.terminate(Duration::from_secs(10));
    drop(server);
    let server_text = std::fs::read_to_string(&server_log)?;
    let worker_text = std::fs::read_to_string(&worker_log)?;
    // The logs were written at debug level (a test that read empty logs would prove nothing).
    assert!(
        server_text.contains("DEBUG") && worker_text.contains("DEBUG"),
        "server log {} bytes, worker log {} bytes: not at debug level",
        server_text.len(),
        worker_text.len()
    );
    if server_args.contains(&"json") {
        json_lines(&server_text, &run)?;
    }
    let mut found = Vec::new();
    for (who, text) in [
        ("server", &server_text),
        ("worker", &worker_text),
        ("cli", &cli_log),
    ] {
        eprintln!("{who}: {} log lines", text.lines().count());
        found.extend(
            leaks(text, &secret)
                .into_iter()
                .map(|l| format!("{who}: {l}")),
        );
    }
    assert!(
        found.is_empty(),
        "the secret (seed {seed}) is in {} log lines:\n{}",
        found.len(),
        found.join("\n")
    );
    Ok(())
}
