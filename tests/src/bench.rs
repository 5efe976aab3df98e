//! What the benchmark binaries share (`steadfast-bench`, `steadfast-bench-nodes`): server
//! processes, the benchmark workflows and worker, and the load driver.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use steadfast_sdk::activity::{ActivityContext, ActivityError};
use steadfast_sdk::{
    Client, Effect, StartOptions, Worker, WorkerOptions, WorkflowContext, WorkflowError,
};

/// A `steadfast server` process of a benchmark; SIGKILLed on drop.
pub struct Server {
    /// The process.
    pub child: Child,
    /// "http://127.0.0.1:PORT".
    pub addr: String,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The `steadfast` binary next to the running benchmark binary.
pub fn server_bin() -> Result<PathBuf> {
    let exe = std::env::current_exe()?;
    let bin = exe.parent().context("exe dir")?.join("steadfast");
    if !bin.exists() {
        bail!(
            "{} not found: build it first (cargo build --release -p steadfast-server)",
            bin.display()
        );
    }
    Ok(bin)
}

/// Starts `steadfast server` on `port` with its embedded store in `dir`.
pub fn start_server(dir: &Path, port: u16) -> Result<Server> {
    start_server_with(dir, port, &[])
}

/// [`start_server`] with more flags (e.g. `["--store", url]`).
pub fn start_server_with(dir: &Path, port: u16, extra: &[&str]) -> Result<Server> {
    let mut cmd = Command::new(server_bin()?);
    die_with_parent(&mut cmd);
    let mut child = cmd
        .args([
            "server",
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--data-dir",
        ])
        .arg(dir)
        .args(extra)
        // More flags for a profiling session, e.g. "--metrics-listen 127.0.0.1:9464".
        .args(
            std::env::var("STEADFAST_BENCH_SERVER_ARGS")
                .unwrap_or_default()
                .split_whitespace(),
        )
        .env(
            "RUST_LOG",
            std::env::var("STEADFAST_BENCH_SERVER_LOG").unwrap_or_else(|_| "warn".into()),
        )
        .stdin(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()?;
    let mut lines = BufReader::new(child.stderr.take().context("stderr")?).lines();
    let addr = loop {
        let line = lines.next().context("server exited")??;
        if let Some(a) = line.strip_prefix("steadfast server listening on ") {
            break a.trim().to_string();
        }
    };
    std::thread::spawn(move || lines.for_each(drop));
    Ok(Server {
        child,
        addr: format!("http://{addr}"),
    })
}

/// Makes the child die (SIGKILL) when the thread that started it exits, so a benchmark
/// killed by a timeout leaves no server or worker behind. Benchmarks start their children
/// from the main thread (the runtime's `block_on`), which lives as long as the process.
pub fn die_with_parent(cmd: &mut Command) {
    use std::os::unix::process::CommandExt;
    // SAFETY: prctl(PR_SET_PDEATHSIG) is async-signal-safe and touches no memory of the parent.
    unsafe {
        cmd.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

/// A `VmHWM:`-style field of /proc/PID/status, in KiB (0 when unreadable).
pub fn rss_kib(pid: u32, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(field))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

/// Bytes a directory tree takes on disk.
pub fn dir_bytes(p: &Path) -> u64 {
    let mut n = 0;
    if let Ok(rd) = std::fs::read_dir(p) {
        for e in rd.flatten() {
            let Ok(m) = e.metadata() else { continue };
            n += if m.is_dir() {
                dir_bytes(&e.path())
            } else {
                std::os::unix::fs::MetadataExt::blocks(&m) * 512
            };
        }
    }
    n
}

/// `bench.seq`: `n` sequential `bench.step` activities.
pub async fn seq(ctx: WorkflowContext, n: u32) -> Result<u32, WorkflowError> {
    let mut sum = 0u32;
    for i in 0..n {
        let v: u32 = ctx.activity("bench.step", &i).await?;
        sum = sum.wrapping_add(v);
    }
    Ok(sum)
}

/// `bench.zero`: no activity.
pub async fn zero(_ctx: WorkflowContext, _: serde_json::Value) -> Result<u32, WorkflowError> {
    Ok(0)
}

/// `bench.step`: returns its input plus one.
pub async fn step(_ctx: ActivityContext, i: u32) -> Result<u32, ActivityError> {
    Ok(i + 1)
}

/// A worker of the benchmark workflows against `addr`.
pub fn worker(addr: &str) -> Worker {
    worker_on(addr, "default")
}

/// [`worker`], polling `task_queue`.
pub fn worker_on(addr: &str, task_queue: &str) -> Worker {
    let opts = WorkerOptions {
        task_queue: task_queue.into(),
        max_concurrent_workflow_tasks: 64,
        max_concurrent_activities: 128,
        cache_size: 4096,
        workflow_threads: 2,
        ..WorkerOptions::default()
    };
    let mut w = Worker::new(addr, opts);
    w.register_workflow("bench.seq", seq)
        .register_workflow("bench.zero", zero)
        .register_activity("bench.step", Effect::Read, step);
    w
}

/// The `p` quantile of `v` (sorts it).
pub fn pct(v: &mut [f64], p: f64) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    v.sort_by(|a, b| a.total_cmp(b));
    v[((v.len() - 1) as f64 * p).round() as usize]
}

/// Starts `runs` runs of `wf(input)` with at most `in_flight` open at once; each waits for
/// its result. Returns the per-run latencies (ms).
pub async fn drive(
    client: &Client,
    runs: usize,
    in_flight: usize,
    wf: &'static str,
    input: serde_json::Value,
) -> Result<Vec<f64>> {
    drive_spread(
        std::slice::from_ref(client),
        runs,
        in_flight,
        wf,
        input,
        StartOptions::default(),
    )
    .await
}

/// [`drive`] through several clients (e.g. one per server node), run `i` through client
/// `i % clients.len()`, each started with `options`.
pub async fn drive_spread(
    clients: &[Client],
    runs: usize,
    in_flight: usize,
    wf: &'static str,
    input: serde_json::Value,
    options: StartOptions,
) -> Result<Vec<f64>> {
    let sem = Arc::new(tokio::sync::Semaphore::new(in_flight));
    let mut tasks = Vec::with_capacity(runs);
    for i in 0..runs {
        let permit = sem.clone().acquire_owned().await?;
        let c = clients[i % clients.len()].clone();
        let input = input.clone();
        let options = options.clone();
        tasks.push(tokio::spawn(async move {
            let t = Instant::now();
            // One call per run that closes within the wait, like the peer's ingress call.
            let _: serde_json::Value = c
                .execute_workflow(wf, &input, options, Duration::from_secs(120))
                .await?;
            drop(permit);
            anyhow::Ok(t.elapsed().as_secs_f64() * 1e3)
        }));
    }
    let mut out = Vec::with_capacity(runs);
    for t in tasks {
        out.push(t.await??);
    }
    Ok(out)
}

/// CPU time (user + system) a process has used, in seconds (0 when it is gone).
pub fn cpu_secs(pid: u32) -> f64 {
    stat_cpu_secs(pid, &[11, 12])
}

/// CPU time of a process, its reaped children and its live children, in seconds (e.g. a
/// PostgreSQL cluster: the postmaster and its backends).
pub fn tree_cpu_secs(pid: u32) -> f64 {
    stat_cpu_secs(pid, &[11, 12, 13, 14]) + children(pid).into_iter().map(cpu_secs).sum::<f64>()
}

fn stat_cpu_secs(pid: u32, fields: &[usize]) -> f64 {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return 0.0;
    };
    // Fields after the command name, which is in parentheses and may hold spaces.
    let Some(rest) = stat.rfind(')').map(|i| &stat[i + 2..]) else {
        return 0.0;
    };
    let f: Vec<&str> = rest.split_whitespace().collect();
    // utime, stime, cutime, cstime are fields 14-17 of the whole line: 11-14 counted from
    // 0 after the name.
    let ticks: u64 = fields
        .iter()
        .filter_map(|&i| f.get(i)?.parse::<u64>().ok())
        .sum();
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    ticks as f64 / hz
}

/// The PIDs of `parent`'s children (e.g. a PostgreSQL postmaster's backends).
pub fn children(parent: u32) -> Vec<u32> {
    let mut out = Vec::new();
    let Ok(rd) = std::fs::read_dir("/proc") else {
        return out;
    };
    for e in rd.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        let ppid = stat
            .rfind(')')
            .and_then(|i| stat[i + 2..].split_whitespace().nth(1)?.parse::<u32>().ok());
        if ppid == Some(parent) {
            out.push(pid);
        }
    }
    out
}
