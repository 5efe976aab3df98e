//! `triage`: the support-ticket triage agent, end to end, in one command.
//!
//! ```text
//! cargo run -p steadfast-examples --bin triage                      # 720 tickets, offline model
//! cargo run -p steadfast-examples --bin triage -- --crash-worker-after 10
//! ```
//! With no `--addr`, it starts a Steadfast server (data in ./triage-data) and a worker as child
//! processes, starts the run, shows live progress and prints where the report is. With
//! `--crash-worker-after N` it kills the worker with SIGKILL once N LLM results are recorded,
//! starts a new one, and the report says how many results were replayed from the log.
//! `triage worker --addr A` runs only the worker (against your own `steadfast server`).

use std::io::{BufRead, BufReader, IsTerminal};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand};
use futures::StreamExt;
use steadfast_examples::conn::Security;
use steadfast_examples::triage::{self, PromptVersion, TriageInput, TriageOutput};
use steadfast_proto::v1 as pb;
use steadfast_proto::v1::history_event::Attributes as A;
use steadfast_sdk::llm::LlmClient;
use steadfast_sdk::{Client, StartOptions, Worker, WorkerOptions};

#[derive(Parser)]
#[command(
    about = "The support-ticket triage agent on Steadfast",
    args_conflicts_with_subcommands = true
)]
struct Args {
    #[command(subcommand)]
    cmd: Option<Cmd>,
    #[command(flatten)]
    run: RunArgs,
}

#[derive(clap::Args)]
struct RunArgs {
    /// Tickets (JSON Lines).
    #[arg(long, default_value = "examples/triage/data/tickets.jsonl")]
    tickets: PathBuf,
    /// Only the first N tickets.
    #[arg(long)]
    limit: Option<usize>,
    /// Tickets per LLM classify call.
    #[arg(long, default_value_t = triage::DEFAULT_BATCH_SIZE)]
    batch_size: usize,
    /// Classify calls in flight at once, per product sub-agent.
    #[arg(long, default_value_t = triage::DEFAULT_CONCURRENCY)]
    concurrency: usize,
    /// The summary prompt of the worker this command starts (v2: behind a patch, see the
    /// README's fork walkthrough).
    #[arg(long, value_enum, default_value = "v1")]
    prompt_version: PromptVersion,
    /// Where the server keeps its data (when this command starts the server).
    #[arg(long, default_value = "triage-data")]
    data_dir: PathBuf,
    /// Where to write the report (default: <data-dir>/report-<run id>.md).
    #[arg(long)]
    report: Option<PathBuf>,
    /// Use a running server instead of starting one (a worker is still started here).
    #[arg(long)]
    addr: Option<String>,
    /// Kill the worker with SIGKILL once N LLM results are recorded, then start a new one.
    #[arg(long, value_name = "N")]
    crash_worker_after: Option<u64>,
    /// Print the result as JSON on stdout (progress still goes to stderr).
    #[arg(long)]
    json: bool,
    /// A last step: file the top issues in a local tracker (<data-dir>/tracker/issues.json)
    /// through its MCP server; each filing waits for your approval, and this command prints
    /// the `steadfast run approve` line to run.
    #[arg(long)]
    file_issues: bool,
    /// With --file-issues: approve every filing from this command (for demos).
    #[arg(long, requires = "file_issues")]
    approve_all: bool,
    /// Token and TLS for a secured server given with --addr (handed to the worker too).
    #[command(flatten)]
    security: Security,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run only the worker (workflow `triage` and its tools) against a server.
    Worker {
        /// Server address.
        #[arg(long, env = "STEADFAST_ADDR", default_value = "http://127.0.0.1:7233")]
        addr: String,
        /// Log every executed LLM call here (`run activity attempt pid`).
        #[arg(long)]
        exec_log: Option<PathBuf>,
        /// Mount the local tracker (its MCP server, `triage-tracker`) with its issues in this
        /// directory, for runs that file issues.
        #[arg(long)]
        tracker_dir: Option<PathBuf>,
        /// The summary prompt: v1, or v2 (behind the patch `triage-summary-prompt-v2`, so
        /// runs that drafted their summary on v1 still replay).
        #[arg(long, value_enum, default_value = "v1")]
        prompt_version: PromptVersion,
        #[command(flatten)]
        security: Security,
    },
    /// Run only a Steadfast server (what `steadfast server` does).
    Server {
        /// Data directory.
        #[arg(long, default_value = "triage-data")]
        data_dir: PathBuf,
        /// Listen address.
        #[arg(long, default_value = "127.0.0.1:7233")]
        listen: std::net::SocketAddr,
    },
}

/// A child killed on drop, so nothing outlives this command.
struct ChildGuard(Option<Child>);

impl ChildGuard {
    fn kill9(&mut self) {
        if let Some(mut c) = self.0.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    fn stop(&mut self) {
        if let Some(mut c) = self.0.take() {
            // SAFETY: kill(2) on our own child's pid.
            unsafe { libc::kill(c.id() as i32, libc::SIGTERM) };
            for _ in 0..100 {
                if let Ok(Some(_)) = c.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        self.kill9();
    }
}

fn spawn_server(data_dir: &Path) -> Result<(ChildGuard, String)> {
    let exe = std::env::current_exe()?;
    let mut child = Command::new(exe)
        .args(["server", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(data_dir)
        .env(
            "RUST_LOG",
            std::env::var("RUST_LOG").unwrap_or_else(|_| "warn".into()),
        )
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .context("start the server")?;
    let stderr = child.stderr.take().context("server stderr")?;
    let guard = ChildGuard(Some(child));
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut sent = false;
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            match line.strip_prefix("steadfast server listening on ") {
                Some(a) if !sent => {
                    let _ = tx.send(a.trim().to_string());
                    sent = true;
                }
                _ => eprintln!("[server] {line}"),
            }
        }
    });
    let addr = rx
        .recv_timeout(Duration::from_secs(30))
        .context("the server did not start within 30 s")?;
    Ok((guard, format!("http://{addr}")))
}

fn spawn_worker(
    addr: &str,
    data_dir: &Path,
    security: &Security,
    prompt: PromptVersion,
    tracker_dir: Option<&Path>,
) -> Result<ChildGuard> {
    let exe = std::env::current_exe()?;
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(data_dir.join("worker.log"))?;
    let mut cmd = Command::new(exe);
    security.pass_to(&mut cmd);
    cmd.args(["worker", "--addr", addr, "--prompt-version"])
        .arg(match prompt {
            PromptVersion::V1 => "v1",
            PromptVersion::V2 => "v2",
        })
        .arg("--exec-log")
        .arg(data_dir.join("llm-executions.log"))
        // The offline model's summary streams at a readable pace (its JSON answers have no
        // spaces, so they go out in one piece and lose no time).
        .env(
            steadfast_sdk::llm::ENV_OFFLINE_PACE_MS,
            std::env::var(steadfast_sdk::llm::ENV_OFFLINE_PACE_MS)
                .unwrap_or_else(|_| OFFLINE_PACE_MS.to_string()),
        );
    if let Some(dir) = tracker_dir {
        cmd.arg("--tracker-dir").arg(dir);
    }
    let child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .context("start the worker")?;
    Ok(ChildGuard(Some(child)))
}

async fn run_worker(
    addr: String,
    exec_log: Option<PathBuf>,
    prompt: PromptVersion,
    security: Security,
    tracker_dir: Option<PathBuf>,
) -> Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    triage::set_execution_log(exec_log);
    let client = LlmClient::from_env().context("LLM configuration (STEADFAST_LLM_*)")?;
    eprintln!(
        "triage worker: model {}",
        if client.is_offline() {
            "offline-model (built in; set STEADFAST_LLM_BASE_URL for a real one)"
        } else {
            "from STEADFAST_LLM_*"
        }
    );
    let mut worker = Worker::new(security.config(&addr), WorkerOptions::default());
    triage::register(&mut worker, client, prompt);
    if let Some(dir) = tracker_dir {
        let tracker = triage::filing::mount_tracker(&mut worker, &dir).await?;
        eprintln!(
            "triage worker: tracker mounted ({} tools)",
            tracker.tools().len()
        );
    }
    worker.run().await?;
    Ok(())
}

fn absolute(p: &Path) -> Result<PathBuf> {
    Ok(if p.is_absolute() {
        p.to_path_buf()
    } else {
        std::env::current_dir()?.join(p)
    })
}

async fn run(a: RunArgs) -> Result<()> {
    let tickets = absolute(&a.tickets)?;
    if !tickets.is_file() {
        bail!(
            "no ticket file at {} (run from the repository root, or pass --tickets PATH)",
            tickets.display()
        );
    }
    std::fs::create_dir_all(&a.data_dir)
        .with_context(|| format!("create {}", a.data_dir.display()))?;
    let data_dir = absolute(&a.data_dir)?;
    let (mut server, addr) = match &a.addr {
        Some(addr) => (ChildGuard(None), addr.clone()),
        None => {
            let (g, addr) = spawn_server(&data_dir)?;
            eprintln!(
                "started a Steadfast server at {addr} (data in {})",
                data_dir.display()
            );
            (g, addr)
        }
    };
    let tracker_dir = a.file_issues.then(|| data_dir.join("tracker"));
    let mut worker = spawn_worker(
        &addr,
        &data_dir,
        &a.security,
        a.prompt_version,
        tracker_dir.as_deref(),
    )?;
    eprintln!(
        "started a worker (log in {})",
        data_dir.join("worker.log").display()
    );
    let client = Client::connect(a.security.config(&addr))
        .await
        .context("connect to the server")?;
    let report_hint = a.report.as_ref().map(|r| absolute(r)).transpose()?;
    let input = TriageInput {
        tickets_path: tickets.display().to_string(),
        limit: a.limit,
        batch_size: a.batch_size,
        concurrency: a.concurrency,
        report_path: report_hint
            .unwrap_or_else(|| data_dir.join(format!("report-{}.md", triage::RUN_ID_PLACEHOLDER)))
            .display()
            .to_string(),
        file_issues: a.file_issues.then(triage::filing::FileIssues::default),
    };
    let run = client
        .start_workflow(triage::WORKFLOW_TYPE, &input, StartOptions::default())
        .await?;
    let run_id = run.run_id.clone();
    eprintln!(
        "run {run_id} started; follow it from another terminal with: steadfast run watch {run_id} --addr {addr}"
    );

    let tty = std::io::stderr().is_terminal();
    let bar = indicatif::ProgressBar::new(0);
    if tty {
        bar.set_style(
            indicatif::ProgressStyle::with_template(
                "{bar:40.cyan/blue} {pos}/{len} tickets  {msg}",
            )
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
        );
    } else {
        bar.set_draw_target(indicatif::ProgressDrawTarget::hidden());
    }
    // The run's own events and those of its product sub-agents (child runs), merged: the
    // classify batches, their progress and their LLM results are recorded in the children.
    let mut llm_ids = std::collections::HashSet::new();
    let (mut llm_recorded, mut crashed) = (0u64, false);
    let (mut parent_done, mut child_done) = (0u64, std::collections::HashMap::new());
    let watch = |id: &str| {
        let id = id.to_string();
        client
            .watch(&id, 0)
            .map(move |item| (id.clone(), item))
            .boxed()
    };
    // The run's own events with live output: its summary's tokens are shown as they arrive.
    let parent = client
        .watch_live(&run_id, 0)
        .map({
            let id = run_id.clone();
            move |item| (id.clone(), item)
        })
        .boxed();
    let mut events = futures::stream::select_all([parent]);
    let mut summary = LiveSummary::new(tty);
    while let Some((from, item)) = events.next().await {
        let resp = item?;
        if let Some(d) = &resp.delta {
            summary.delta(&bar, d);
        }
        let Some(ev) = resp.event else { continue };
        if from == run_id {
            summary.event(&bar, &ev);
        }
        match ev.attributes {
            // Started, not requested: a requested child may not exist yet.
            Some(A::ChildRunStarted(c)) if from == run_id => events.push(watch(&c.run_id)),
            Some(A::ActivityScheduled(s))
                if s.activity_type == steadfast_sdk::llm::ACTIVITY_NAME =>
            {
                llm_ids.insert((from.clone(), s.command_seq));
            }
            Some(A::ActivityCompleted(c)) if llm_ids.contains(&(from.clone(), c.command_seq)) => {
                llm_recorded += 1
            }
            Some(A::ApprovalRequested(r)) if from == run_id => {
                triage::filing::on_approval_requested(&client, &addr, &run_id, &r, a.approve_all)
                    .await?
            }
            Some(A::ProgressReported(p)) => {
                let message = if from == run_id {
                    parent_done = p.done;
                    bar.set_length(p.total.max(1));
                    p.message.clone()
                } else {
                    child_done.insert(from.clone(), p.done);
                    format!("sub-agent {}", p.message)
                };
                let done = parent_done.max(child_done.values().sum());
                if tty {
                    bar.set_position(done);
                    bar.set_message(message);
                } else {
                    eprintln!("progress {done}/{}: {message}", bar.length().unwrap_or(0));
                }
            }
            _ => {}
        }
        if let Some(n) = a.crash_worker_after
            && !crashed
            && llm_recorded >= n
        {
            crashed = true;
            let pid = worker.0.as_ref().map(Child::id).unwrap_or(0);
            worker.kill9();
            bar.suspend(|| eprintln!("killed the worker (pid {pid}) with SIGKILL after {llm_recorded} recorded LLM results; starting a new worker"));
            worker = spawn_worker(
                &addr,
                &data_dir,
                &a.security,
                a.prompt_version,
                tracker_dir.as_deref(),
            )?;
        }
    }
    bar.finish_and_clear();
    let info = client.describe(&run_id).await?;
    worker.stop();
    server.stop();
    let status = pb::RunStatus::try_from(info.status).unwrap_or(pb::RunStatus::Unspecified);
    if status != pb::RunStatus::Completed {
        let failure = info.failure.map(|f| f.message).unwrap_or_default();
        bail!("run {run_id} ended {}: {failure}", status.as_str_name());
    }
    let out: TriageOutput =
        serde_json::from_slice(&info.result.map(|p| p.data).unwrap_or_default())
            .context("decode the run's result")?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&out)?);
    }
    eprintln!(
        "\nTop recurring issues ({} tickets, {} noise):",
        out.facts.total_tickets, out.facts.noise_tickets
    );
    for (i, t) in out.facts.themes.iter().take(8).enumerate() {
        eprintln!(
            "  {:>2}. {:<40} {:>4} tickets  {:>5.1}%",
            i + 1,
            t.name,
            t.count,
            t.share * 100.0
        );
    }
    let d = &out.durability;
    eprintln!(
        "\nLLM calls: {} recorded ({} tokens, ${:.4}, model {}); {} executed by the final worker, {} replayed from the log.",
        out.footer.llm_calls,
        out.footer.input_tokens + out.footer.output_tokens,
        out.footer.cost_micros as f64 / 1e6,
        out.footer.model,
        d.executed_by_this_worker,
        d.replayed_from_log
    );
    eprintln!("Report: {}", out.report_path);
    if let Some(dir) = &tracker_dir {
        triage::filing::print_filed(&out.filed, dir);
    }
    Ok(())
}

/// The offline model's pause between streamed chunks (of 3 words) in the one-command run.
const OFFLINE_PACE_MS: u64 = 10;

/// The summary's live tokens on stderr: found as the run's `llm.chat` scheduled after its
/// progress says [`triage::DRAFTING_SUMMARY`]; under the progress bar, whole lines above it.
struct LiveSummary {
    tty: bool,
    drafting: bool,
    activity: Option<u32>,
    partial: String,
    shown: bool,
}

/// The lines around the streamed summary (the examples' tests read the text between them).
const LIVE_BEGIN: &str = "--- the summary, live from the model ---";
const LIVE_END: &str = "--- end of the live summary ---";

impl LiveSummary {
    fn new(tty: bool) -> Self {
        LiveSummary {
            tty,
            drafting: false,
            activity: None,
            partial: String::new(),
            shown: false,
        }
    }

    fn event(&mut self, bar: &indicatif::ProgressBar, ev: &pb::HistoryEvent) {
        match &ev.attributes {
            Some(A::ProgressReported(p)) => self.drafting = p.message == triage::DRAFTING_SUMMARY,
            Some(A::ActivityScheduled(s))
                if self.drafting && s.activity_type == steadfast_sdk::llm::ACTIVITY_NAME =>
            {
                self.activity = Some(s.command_seq);
            }
            Some(A::ActivityCompleted(c)) if Some(c.command_seq) == self.activity => {
                if self.shown {
                    let rest = std::mem::take(&mut self.partial);
                    if self.tty {
                        bar.println(format!("{rest}\n{LIVE_END}"));
                    } else {
                        eprintln!("\n{LIVE_END}");
                    }
                }
                self.activity = None;
            }
            _ => {}
        }
    }

    fn delta(&mut self, bar: &indicatif::ProgressBar, d: &pb::ActivityDelta) {
        if Some(d.activity_id) != self.activity {
            return;
        }
        if !self.shown {
            self.shown = true;
            if self.tty {
                bar.println(LIVE_BEGIN);
            } else {
                eprintln!("{LIVE_BEGIN}");
            }
        }
        if !self.tty {
            eprint!("{}", d.text);
            return;
        }
        self.partial.push_str(&d.text);
        while let Some(nl) = self.partial.find('\n') {
            let line: String = self.partial.drain(..=nl).collect();
            bar.println(line.trim_end_matches('\n'));
        }
    }
}

fn main() -> Result<()> {
    let args = Args::parse();
    let rt = tokio::runtime::Runtime::new()?;
    match args.cmd {
        Some(Cmd::Worker {
            addr,
            exec_log,
            prompt_version,
            security,
            tracker_dir,
        }) => rt.block_on(run_worker(
            addr,
            exec_log,
            prompt_version,
            security,
            tracker_dir,
        )),
        Some(Cmd::Server { data_dir, listen }) => {
            tracing_subscriber::fmt()
                .with_env_filter(
                    tracing_subscriber::EnvFilter::try_from_default_env()
                        .unwrap_or_else(|_| "info".into()),
                )
                .with_writer(std::io::stderr)
                .init();
            rt.block_on(steadfast_server::server::run(
                steadfast_server::ServerConfig {
                    data_dir,
                    listen,
                    ..Default::default()
                },
            ))
        }
        None => rt.block_on(run(args.run)),
    }
}
