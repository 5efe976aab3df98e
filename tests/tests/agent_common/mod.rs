//! What the agent tests (agent_*.rs) share: a server in a temp dir, `agent-worker` processes,
//! the CLI, and the worker's side file (one JSON object per line, see
//! src/bin/agent-worker.rs).

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use serde_json::Value;
use steadfast_proto::v1 as pb;
use steadfast_sdk::Client;
use steadfast_tests::{Proc, Server, bin, cli, wait_for};

/// Generous bound of every wait on something the server or a worker does.
pub const WAIT: Duration = Duration::from_secs(60);

/// One test's world: a temp dir, a server in it, the side file, a client.
pub struct Env {
    /// Keeps the temp dir alive (and removes it at the end).
    pub dir: tempfile::TempDir,
    /// The server.
    pub server: Server,
    /// The side file `agent-worker`s append to.
    pub side: PathBuf,
    /// For async client calls.
    pub rt: tokio::runtime::Runtime,
    client: Client,
}

impl Env {
    /// A fresh temp dir and a server on a free port.
    pub fn start() -> Result<Env> {
        Env::start_with(&[])
    }

    /// [`Env::start`] with more `steadfast server` flags.
    pub fn start_with(server_args: &[&str]) -> Result<Env> {
        let dir = tempfile::tempdir()?;
        let server = Server::start_with(&dir.path().join("data"), None, server_args)?;
        let side = dir.path().join("side.jsonl");
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()?;
        let client = {
            let _guard = rt.enter();
            Client::connect_lazy(server.url())?
        };
        eprintln!(
            "[agent] server {} data {}",
            server.url(),
            dir.path().display()
        );
        Ok(Env {
            dir,
            server,
            side,
            rt,
            client,
        })
    }

    /// The server address as the CLI and workers take it.
    pub fn url(&self) -> String {
        self.server.url()
    }

    /// SIGKILLs the server and starts it again on the same port and data dir.
    pub fn server_restart(&mut self) -> Result<()> {
        eprintln!("[agent] SIGKILL the server and restart it");
        self.server.crash_and_restart()
    }

    /// Starts an `agent-worker` on task queue `default`.
    pub fn worker(&self) -> Result<Proc> {
        self.worker_on("default")
    }

    /// Starts an `agent-worker` polling `queue`.
    pub fn worker_on(&self, queue: &str) -> Result<Proc> {
        let mut cmd = Command::new(bin("agent-worker"));
        cmd.args(["--addr", &self.url(), "--task-queue", queue, "--log"])
            .arg(&self.side);
        Proc::spawn("agent-worker", &mut cmd)
    }

    /// Runs the CLI; returns (exit code, stdout, stderr).
    pub fn cli(&self, args: &[&str]) -> Result<(i32, String, String)> {
        cli(&self.url(), args)
    }

    /// Runs the CLI and expects exit code 0; returns stdout.
    pub fn ok(&self, args: &[&str]) -> Result<String> {
        let (code, out, err) = self.cli(args)?;
        if code != 0 {
            bail!("steadfast {args:?} exited {code}\nstdout: {out}\nstderr: {err}");
        }
        Ok(out)
    }

    /// `steadfast run start TYPE --input JSON EXTRA...`; returns the run id.
    pub fn start_run(&self, workflow_type: &str, input: &str, extra: &[&str]) -> Result<String> {
        let mut args = vec!["run", "start", workflow_type, "--input", input];
        args.extend_from_slice(extra);
        let out = self.ok(&args)?;
        let id = out.trim().to_string();
        if id.is_empty() {
            bail!("run start printed no run id");
        }
        eprintln!("[agent] started {workflow_type} run {id}");
        Ok(id)
    }

    /// `steadfast run show RUN --json`.
    pub fn show(&self, run: &str) -> Result<Value> {
        let out = self.ok(&["run", "show", run, "--json"])?;
        serde_json::from_str(&out).with_context(|| format!("run show --json printed {out:?}"))
    }

    /// DescribeRun through the SDK client (cheap enough to poll).
    pub fn describe(&self, run: &str) -> Result<pb::RunInfo> {
        Ok(self.rt.block_on(self.client.describe(run))?)
    }

    /// The SDK client.
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// Waits until DescribeRun satisfies `pred` (errors, e.g. a restarting server, count as
    /// "not yet"); returns that state.
    pub fn wait_run(
        &self,
        run: &str,
        what: &str,
        pred: impl Fn(&pb::RunInfo) -> bool,
    ) -> Result<pb::RunInfo> {
        wait_for(WAIT, what, || self.describe(run).ok().filter(|r| pred(r)))
    }

    /// Waits until the run is closed; returns its state.
    pub fn wait_closed(&self, run: &str) -> Result<pb::RunInfo> {
        self.wait_run(run, "the run to close", |r| {
            r.status() != pb::RunStatus::Running
        })
    }

    /// Waits until the run waits on something of `kind` (activity, timer, signal, budget,
    /// reconciliation).
    pub fn wait_waiting(&self, run: &str, kind: &str) -> Result<pb::RunInfo> {
        self.wait_run(run, &format!("run {run} to wait on {kind}"), |r| {
            waits_on(r, kind)
        })
    }

    /// The side file's lines.
    pub fn side_lines(&self) -> Result<Vec<Value>> {
        side_lines(&self.side)
    }

    /// The side file's `start` lines of run `run`.
    pub fn starts(&self, run: &str) -> Result<Vec<Value>> {
        Ok(self
            .side_lines()?
            .into_iter()
            .filter(|l| l["ev"] == "start" && l["run"] == run)
            .collect())
    }

    /// Waits until the side file holds at least `n` `start` lines of `run`; returns them.
    pub fn wait_starts(&self, run: &str, n: usize) -> Result<Vec<Value>> {
        wait_for(WAIT, &format!("{n} activity starts of run {run}"), || {
            self.starts(run).ok().filter(|s| s.len() >= n)
        })
    }
}

/// Whether the run says it waits on something of `kind`.
pub fn waits_on(r: &pb::RunInfo, kind: &str) -> bool {
    use pb::waiting_on::What;
    r.waiting_on.iter().any(|w| {
        matches!(
            (&w.what, kind),
            (Some(What::Activity(_)), "activity")
                | (Some(What::Timer(_)), "timer")
                | (Some(What::Signal(_)), "signal")
                | (Some(What::Budget(_)), "budget")
                | (Some(What::Reconciliation(_)), "reconciliation")
                | (Some(What::Approval(_)), "approval")
                | (Some(What::WorkflowTask(_)), "workflow_task")
        )
    })
}

/// The `waiting_on` entries of `run show --json` of one kind.
pub fn waiting_of<'a>(show: &'a Value, kind: &str) -> Vec<&'a Value> {
    show["waiting_on"]
        .as_array()
        .map(|a| a.iter().filter(|w| w["kind"] == kind).collect())
        .unwrap_or_default()
}

/// Every complete line of a JSON-lines side file (none when it does not exist yet).
pub fn side_lines(path: &Path) -> Result<Vec<Value>> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e).with_context(|| format!("read {}", path.display())),
    };
    // A last line without its newline is still being written.
    let complete = text.rfind('\n').map_or("", |i| &text[..=i]);
    complete
        .lines()
        .filter(|l| !l.is_empty())
        .map(|l| serde_json::from_str(l).with_context(|| format!("side file line {l:?}")))
        .collect()
}

/// Prints the seed (these tests draw no random numbers, but a failure report names the run).
pub fn seed() -> u64 {
    steadfast_tests::test_seed()
}
