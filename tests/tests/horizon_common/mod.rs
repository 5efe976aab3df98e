//! Shared by the horizon_*.rs tests: a server and a `horizon-worker` on a temp dir, and
//! small helpers over the client.

#![allow(dead_code)] // each test file uses a part of it

use std::time::Duration;

use anyhow::{Context, Result, bail};
use steadfast_proto::v1 as pb;
use steadfast_proto::v1::waiting_on::What;
use steadfast_sdk::client::Client;
use steadfast_tests::{Proc, Server, bin};

/// A server and one horizon-worker, killed on drop.
pub struct Stack {
    /// The worker (first, so it is stopped before the server).
    pub worker: Proc,
    /// The server.
    pub server: Server,
    /// Its data dir.
    pub dir: tempfile::TempDir,
}

impl Stack {
    /// Starts a server on a fresh temp dir and a horizon-worker against it.
    pub fn start() -> Result<Stack> {
        Self::start_with(&[])
    }

    /// Like [`Stack::start`], with more flags for the worker.
    pub fn start_with(worker_args: &[&str]) -> Result<Stack> {
        let dir = tempfile::tempdir()?;
        let server = Server::start(dir.path(), None)?;
        let worker = start_worker(&server.url(), worker_args)?;
        Ok(Stack {
            worker,
            server,
            dir,
        })
    }

    /// A client of the server.
    pub async fn client(&self) -> Result<Client> {
        Ok(Client::connect(self.server.url()).await?)
    }
}

/// Starts `horizon-worker` (src/bin/horizon-worker.rs) against `addr`, with `args`.
pub fn start_worker(addr: &str, args: &[&str]) -> Result<Proc> {
    let mut cmd = std::process::Command::new(bin("horizon-worker"));
    cmd.args(["--addr", addr]).args(args);
    if std::env::var_os("RUST_LOG").is_none() {
        cmd.env("RUST_LOG", "warn");
    }
    Proc::spawn("horizon-worker", &mut cmd)
}

/// Whether the run waits for signal `name`.
pub fn waits_for_signal(run: &pb::RunInfo, name: &str) -> bool {
    run.waiting_on
        .iter()
        .any(|w| matches!(&w.what, Some(What::Signal(s)) if s.name == name))
}

/// Describes `run_id` until `done` says yes (every 20 ms, for at most `timeout`).
pub async fn describe_until(
    client: &Client,
    run_id: &str,
    timeout: Duration,
    what: &str,
    mut done: impl FnMut(&pb::RunInfo) -> bool,
) -> Result<pb::RunInfo> {
    let end = tokio::time::Instant::now() + timeout;
    loop {
        let run = client.describe(run_id).await?;
        if done(&run) {
            return Ok(run);
        }
        if tokio::time::Instant::now() >= end {
            bail!("{what}: not within {timeout:?}; the run is {run:?}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// VmRSS of process `pid` in KiB, from /proc.
pub fn rss_kib(pid: u32) -> Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .with_context(|| format!("read /proc/{pid}/status"))?;
    let line = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .context("no VmRSS line")?;
    line.split_whitespace()
        .nth(1)
        .context("VmRSS value")?
        .parse()
        .context("VmRSS number")
}
