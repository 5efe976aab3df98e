//! Steadfast and Restate side by side (`steadfast-bench --vs-restate DIR`): the same workload
//! shapes as the Restate peer harness (`../shared/peers/restate/bench.sh`), run interleaved
//! (Restate, Steadfast, Restate, Steadfast, ...), each round on a fresh data dir, and one
//! table of medians and ratios.
//!
//! The shapes and their knobs are the peer's own (`N`, `K`, `CONC`, `LAT_N`, `LAT_K`,
//! `LAT_WARMUP` in the environment): (a) `N` runs of `K` sequential durable steps with `CONC`
//! in flight; (b) `LAT_WARMUP` unmeasured then `LAT_N` sequential `LAT_K`-step runs, timed
//! from request to result; (c) the server's peak RSS over the whole round, a graceful stop and
//! a restart on the same data dir timed to the first finished run. The parts are separate
//! processes on both sides, so their CPU is counted apart: the server; the worker (Restate:
//! its service); the client (Restate: its load generator).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};
use steadfast_sdk::Client;

use crate::bench::{cpu_secs, dir_bytes, drive, rss_kib, start_server};

/// The workload shapes, read from the same environment variables as the peer's `bench.sh`.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
pub struct Shape {
    /// Runs in the throughput phase.
    pub n: usize,
    /// Sequential steps per throughput run.
    pub k: u32,
    /// Throughput runs in flight.
    pub conc: usize,
    /// Measured runs in the latency phase, one at a time.
    pub lat_n: usize,
    /// Steps per latency run.
    pub lat_k: u32,
    /// Unmeasured latency runs first.
    pub lat_warmup: usize,
}

impl Shape {
    /// The peer harness's defaults, overridden by `N`, `K`, `CONC`, `LAT_N`, `LAT_K`,
    /// `LAT_WARMUP`.
    pub fn from_env() -> Result<Shape> {
        fn var<T: std::str::FromStr>(name: &str, default: T) -> Result<T> {
            match std::env::var(name) {
                Ok(v) => v.parse().map_err(|_| {
                    anyhow::anyhow!("{name} must be a positive integer, got {v:.20?}")
                }),
                Err(_) => Ok(default),
            }
        }
        let s = Shape {
            n: var("N", 2000)?,
            k: var("K", 10)?,
            conc: var("CONC", 64)?,
            lat_n: var("LAT_N", 200)?,
            lat_k: var("LAT_K", 1)?,
            lat_warmup: var("LAT_WARMUP", 10)?,
        };
        if s.n == 0 || s.k == 0 || s.conc == 0 || s.lat_n == 0 || s.lat_k == 0 {
            bail!("N, K, CONC, LAT_N and LAT_K must be at least 1");
        }
        Ok(s)
    }

    fn env(&self) -> [(&'static str, String); 6] {
        [
            ("N", self.n.to_string()),
            ("K", self.k.to_string()),
            ("CONC", self.conc.to_string()),
            ("LAT_N", self.lat_n.to_string()),
            ("LAT_K", self.lat_k.to_string()),
            ("LAT_WARMUP", self.lat_warmup.to_string()),
        ]
    }
}

/// CPU seconds each part used during the throughput phase.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize)]
pub struct Cpu {
    /// The engine's server process.
    pub server: f64,
    /// The worker process (Restate: the service).
    pub worker: f64,
    /// The client process (Restate: the load generator).
    pub client: f64,
}

/// One engine's figures for one round.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Round {
    /// Throughput phase: durable steps per second.
    pub steps_per_s: f64,
    /// Throughput phase: a run's latency, median.
    pub run_p50_ms: f64,
    /// Latency phase: start to result, median and 99th percentile (nearest rank).
    pub latency_p50_ms: f64,
    /// See `latency_p50_ms`.
    pub latency_p99_ms: f64,
    /// CPU of each part during the throughput phase.
    pub cpu_s: Cpu,
    /// Steps done in the throughput phase (`N * K`).
    pub steps: u64,
    /// The server's peak RSS over the round (VmHWM).
    pub server_peak_rss_kib: u64,
    /// The data dir's allocated bytes after the throughput phase.
    pub data_dir_bytes: u64,
    /// Server spawn to the first finished 1-step run.
    pub first_run_ms: f64,
    /// SIGTERM to exit.
    pub graceful_stop_ms: f64,
    /// Restart on the same data dir to the first finished 1-step run.
    pub restart_first_run_ms: f64,
}

impl Round {
    /// CPU milliseconds per step of one part.
    fn cpu_ms_per_step(&self, part: fn(&Cpu) -> f64) -> f64 {
        part(&self.cpu_s) * 1e3 / self.steps.max(1) as f64
    }
}

/// Nearest-rank percentile, as the peer's load generator computes it.
pub fn nearest_rank(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil().max(1.0) as usize;
    sorted[rank.min(sorted.len()) - 1]
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    match v.len() {
        0 => 0.0,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

fn ms_since(t: Instant) -> f64 {
    t.elapsed().as_secs_f64() * 1e3
}

/// The bench worker in a process of its own (`steadfast-bench --worker ADDR`), killed by
/// PID on drop.
struct WorkerProcess(Child);

impl WorkerProcess {
    fn start(addr: &str) -> Result<WorkerProcess> {
        let exe = std::env::current_exe()?;
        let mut cmd = Command::new(exe);
        crate::bench::die_with_parent(&mut cmd);
        let child = cmd
            .args(["--worker", addr])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .spawn()
            .context("starting the bench worker process")?;
        Ok(WorkerProcess(child))
    }
}

impl Drop for WorkerProcess {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// One Steadfast round on a fresh data dir under `parent`.
pub async fn steadfast_round(shape: Shape, parent: &Path) -> Result<Round> {
    let tmp = tempfile::tempdir_in(parent)?;
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let t0 = Instant::now();
    let mut server = start_server(tmp.path(), port)?;
    let worker = WorkerProcess::start(&server.addr)?;
    let client = Client::connect(server.addr.as_str()).await?;
    drive(&client, 1, 1, "bench.seq", serde_json::json!(1)).await?;
    let first_run_ms = ms_since(t0);
    let spid = server.child.id();
    let wpid = worker.0.id();
    let me = std::process::id();

    // (a) throughput.
    let cpu0 = (cpu_secs(spid), cpu_secs(wpid), cpu_secs(me));
    let t = Instant::now();
    let mut runs = drive(
        &client,
        shape.n,
        shape.conc,
        "bench.seq",
        serde_json::json!(shape.k),
    )
    .await?;
    let secs = t.elapsed().as_secs_f64();
    let cpu_s = Cpu {
        server: cpu_secs(spid) - cpu0.0,
        worker: cpu_secs(wpid) - cpu0.1,
        client: cpu_secs(me) - cpu0.2,
    };
    runs.sort_by(|a, b| a.total_cmp(b));
    let data_dir_bytes = dir_bytes(tmp.path());

    // (b) latency.
    for _ in 0..shape.lat_warmup {
        drive(&client, 1, 1, "bench.seq", serde_json::json!(shape.lat_k)).await?;
    }
    let mut lat = Vec::with_capacity(shape.lat_n);
    for _ in 0..shape.lat_n {
        lat.extend(drive(&client, 1, 1, "bench.seq", serde_json::json!(shape.lat_k)).await?);
    }
    lat.sort_by(|a, b| a.total_cmp(b));

    // (c) resources, a graceful stop, a restart.
    let server_peak_rss_kib = rss_kib(spid, "VmHWM:");
    drop(client);
    let t = Instant::now();
    // SAFETY: kill(2) on the PID of a child this process started and has not reaped.
    unsafe { libc::kill(spid as i32, libc::SIGTERM) };
    let deadline = Instant::now() + Duration::from_secs(30);
    while server.child.try_wait()?.is_none() {
        if Instant::now() > deadline {
            bail!("the server did not stop within 30 s of SIGTERM");
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let graceful_stop_ms = ms_since(t);
    drop(server);
    let t = Instant::now();
    let server = start_server(tmp.path(), port)?;
    let client = Client::connect(server.addr.as_str()).await?;
    drive(&client, 1, 1, "bench.seq", serde_json::json!(1)).await?;
    let restart_first_run_ms = ms_since(t);
    drop(worker);
    drop(server);

    Ok(Round {
        steps_per_s: (shape.n as f64 * shape.k as f64) / secs,
        run_p50_ms: nearest_rank(&runs, 50.0),
        latency_p50_ms: nearest_rank(&lat, 50.0),
        latency_p99_ms: nearest_rank(&lat, 99.0),
        cpu_s,
        steps: shape.n as u64 * shape.k as u64,
        server_peak_rss_kib,
        data_dir_bytes,
        first_run_ms,
        graceful_stop_ms,
        restart_first_run_ms,
    })
}

/// The fields of the peer harness's `results.json` that the comparison reads.
#[derive(Deserialize)]
struct PeerResults {
    startup_ms: PeerStartup,
    throughput: PeerThroughput,
    throughput_cpu_s: PeerCpu,
    latency: PeerLatency,
    server_rss_kib: PeerRss,
    data_dir_allocated_kib: PeerDisk,
    graceful_stop_ms: f64,
    restart_ms: PeerStartup,
}
#[derive(Deserialize)]
struct PeerStartup {
    first_workflow_done: f64,
}
#[derive(Deserialize)]
struct PeerThroughput {
    ok: u64,
    errors: u64,
    steps: u64,
    steps_per_s: f64,
    per_wf_latency_ms: PeerRunLatency,
}
#[derive(Deserialize)]
struct PeerRunLatency {
    p50: f64,
}
#[derive(Deserialize)]
struct PeerCpu {
    server: f64,
    service: f64,
    loadgen: f64,
}
#[derive(Deserialize)]
struct PeerLatency {
    errors: u64,
    p50_ms: f64,
    p99_ms: f64,
}
#[derive(Deserialize)]
struct PeerRss {
    peak_vmhwm: u64,
}
#[derive(Deserialize)]
struct PeerDisk {
    after_a: u64,
}

/// Reads a peer `results.json` into a [`Round`]; refuses a run with failed workflows.
pub fn parse_peer_results(json: &str) -> Result<Round> {
    let r: PeerResults = serde_json::from_str(json).context("reading the peer's results.json")?;
    if r.throughput.errors > 0 || r.latency.errors > 0 {
        bail!(
            "the peer's run had failed workflows ({} in throughput, {} in latency): see its logs",
            r.throughput.errors,
            r.latency.errors
        );
    }
    Ok(Round {
        steps_per_s: r.throughput.steps_per_s,
        run_p50_ms: r.throughput.per_wf_latency_ms.p50,
        latency_p50_ms: r.latency.p50_ms,
        latency_p99_ms: r.latency.p99_ms,
        cpu_s: Cpu {
            server: r.throughput_cpu_s.server,
            worker: r.throughput_cpu_s.service,
            client: r.throughput_cpu_s.loadgen,
        },
        steps: r.throughput.ok * r.throughput.steps,
        server_peak_rss_kib: r.server_rss_kib.peak_vmhwm,
        data_dir_bytes: r.data_dir_allocated_kib.after_a * 1024,
        first_run_ms: r.startup_ms.first_workflow_done,
        graceful_stop_ms: r.graceful_stop_ms,
        restart_first_run_ms: r.restart_ms.first_workflow_done,
    })
}

/// One Restate round: the peer's own `bench.sh` in `peer_dir`, its results under `runs_dir`.
pub fn restate_round(shape: Shape, peer_dir: &Path, runs_dir: &Path, label: &str) -> Result<Round> {
    let script = peer_dir.join("bench.sh");
    if !script.exists() {
        bail!(
            "{} not found: give the directory of a copy of ../shared/peers/restate on which ./setup.sh has run",
            script.display()
        );
    }
    let log = runs_dir.join(format!("{label}.log"));
    let out = std::fs::File::create(&log)?;
    let status = Command::new("bash")
        .arg(&script)
        .arg(label)
        .envs(shape.env())
        .env("RUNS_DIR", runs_dir)
        .stdin(Stdio::null())
        .stdout(out.try_clone()?)
        .stderr(out)
        .status()
        .context("running the peer's bench.sh")?;
    if !status.success() {
        bail!(
            "the peer's bench.sh failed ({status}); its output is in {}",
            log.display()
        );
    }
    let results = runs_dir.join(label).join("results.json");
    parse_peer_results(
        &std::fs::read_to_string(&results)
            .with_context(|| format!("{} missing after bench.sh", results.display()))?,
    )
}

/// Every round of both engines, in the order they ran.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct Comparison {
    /// The shapes of every round.
    pub shape: Option<Shape>,
    /// Restate's rounds.
    pub restate: Vec<Round>,
    /// Steadfast's rounds.
    pub steadfast: Vec<Round>,
}

struct Metric {
    name: &'static str,
    unit: &'static str,
    get: fn(&Round) -> f64,
    /// The target as the ratio Steadfast / Restate: `(bound, at_least)`.
    target: Option<(f64, bool)>,
}

fn metrics() -> Vec<Metric> {
    vec![
        Metric {
            name: "throughput",
            unit: "steps/s",
            get: |r| r.steps_per_s,
            target: Some((2.0, true)),
        },
        Metric {
            name: "throughput: a run's latency p50",
            unit: "ms",
            get: |r| r.run_p50_ms,
            target: None,
        },
        Metric {
            name: "1-step run latency p50",
            unit: "ms",
            get: |r| r.latency_p50_ms,
            target: Some((0.4, false)),
        },
        Metric {
            name: "1-step run latency p99",
            unit: "ms",
            get: |r| r.latency_p99_ms,
            target: None,
        },
        Metric {
            name: "server peak RSS",
            unit: "MiB",
            get: |r| r.server_peak_rss_kib as f64 / 1024.0,
            target: Some((0.25, false)),
        },
        Metric {
            name: "server CPU per 1,000 steps",
            unit: "s",
            get: |r| r.cpu_ms_per_step(|c| c.server),
            target: Some((0.5, false)),
        },
        Metric {
            name: "worker (Restate: service) CPU per 1,000 steps",
            unit: "s",
            get: |r| r.cpu_ms_per_step(|c| c.worker),
            target: None,
        },
        Metric {
            name: "client (Restate: load generator) CPU per 1,000 steps",
            unit: "s",
            get: |r| r.cpu_ms_per_step(|c| c.client),
            target: None,
        },
        Metric {
            name: "all processes' CPU per 1,000 steps",
            unit: "s",
            get: |r| r.cpu_ms_per_step(|c| c.server + c.worker + c.client),
            target: Some((0.5, false)),
        },
        Metric {
            name: "data dir after the throughput phase, per step",
            unit: "bytes",
            get: |r| r.data_dir_bytes as f64 / r.steps.max(1) as f64,
            target: None,
        },
        Metric {
            name: "server spawn to first finished run",
            unit: "ms",
            get: |r| r.first_run_ms,
            target: None,
        },
        Metric {
            name: "graceful stop",
            unit: "ms",
            get: |r| r.graceful_stop_ms,
            target: None,
        },
        Metric {
            name: "restart to first finished run",
            unit: "ms",
            get: |r| r.restart_first_run_ms,
            target: None,
        },
    ]
}

fn fmt(v: f64) -> String {
    if v >= 100.0 {
        format!("{v:.0}")
    } else if v >= 10.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}

impl Comparison {
    /// The table of medians, ratios and targets, then every round's raw figures.
    pub fn report(&self) -> String {
        let mut s = String::new();
        if self.restate.is_empty() {
            s.push_str(&format!(
                "| median of {} rounds | Steadfast |\n|---|---:|\n",
                self.steadfast.len()
            ));
            for m in metrics() {
                let f = median(self.steadfast.iter().map(m.get).collect());
                s.push_str(&format!("| {} ({}) | {} |\n", m.name, m.unit, fmt(f)));
            }
            return s;
        }
        let rounds = self.restate.len().min(self.steadfast.len());
        s.push_str(&format!(
            "| median of {rounds} interleaved rounds | Restate | Steadfast | Steadfast / Restate | target | met |\n|---|---:|---:|---:|---|---|\n"
        ));
        for m in metrics() {
            let r = median(self.restate.iter().map(m.get).collect());
            let f = median(self.steadfast.iter().map(m.get).collect());
            let ratio = if r > 0.0 { f / r } else { f64::NAN };
            let (target, met) = match m.target {
                Some((bound, true)) => (format!(">= {bound}x"), yes_no(ratio >= bound)),
                Some((bound, false)) => (format!("<= {bound}x"), yes_no(ratio <= bound)),
                None => (String::new(), String::new()),
            };
            // CPU per step is printed per 1,000 steps: ms per step == s per 1,000 steps.
            s.push_str(&format!(
                "| {} ({}) | {} | {} | {:.2}x | {} | {} |\n",
                m.name,
                m.unit,
                fmt(r),
                fmt(f),
                ratio,
                target,
                met
            ));
        }
        s.push_str("\nEvery round (steps/s; 1-step p50 ms; server CPU s per 1,000 steps; server peak RSS MiB):\n");
        for (i, (r, f)) in self.restate.iter().zip(&self.steadfast).enumerate() {
            s.push_str(&format!(
                "  round {}: Restate {:.0}; {:.2}; {:.3}; {:.1}  |  Steadfast {:.0}; {:.2}; {:.3}; {:.1}\n",
                i + 1,
                r.steps_per_s,
                r.latency_p50_ms,
                r.cpu_ms_per_step(|c| c.server),
                r.server_peak_rss_kib as f64 / 1024.0,
                f.steps_per_s,
                f.latency_p50_ms,
                f.cpu_ms_per_step(|c| c.server),
                f.server_peak_rss_kib as f64 / 1024.0,
            ));
        }
        s
    }
}

fn yes_no(b: bool) -> String {
    if b { "yes".into() } else { "**no**".into() }
}

/// Runs `rounds` interleaved rounds (Restate first in each) and returns every figure.
/// `peer_dir` is the Restate harness after its `./setup.sh` (`None`: Steadfast's rounds
/// alone, e.g. for a profiler or a smoke run); each engine's round gets a fresh data dir under
/// `work`.
pub async fn compare(
    shape: Shape,
    peer_dir: Option<&Path>,
    rounds: usize,
    work: &Path,
) -> Result<Comparison> {
    let runs_dir: PathBuf = work.join("restate-runs");
    std::fs::create_dir_all(&runs_dir)?;
    let mut c = Comparison {
        shape: Some(shape),
        ..Comparison::default()
    };
    for i in 1..=rounds {
        if let Some(peer_dir) = peer_dir {
            eprintln!("round {i}/{rounds}: Restate");
            let dir = peer_dir.to_path_buf();
            let rd = runs_dir.clone();
            let label = format!("vs-{i}");
            let r = tokio::task::spawn_blocking(move || restate_round(shape, &dir, &rd, &label))
                .await??;
            eprintln!(
                "  {:.0} steps/s, 1-step p50 {:.2} ms",
                r.steps_per_s, r.latency_p50_ms
            );
            c.restate.push(r);
        }
        eprintln!("round {i}/{rounds}: Steadfast");
        let f = steadfast_round(shape, work).await?;
        eprintln!(
            "  {:.0} steps/s, 1-step p50 {:.2} ms",
            f.steps_per_s, f.latency_p50_ms
        );
        c.steadfast.push(f);
    }
    Ok(c)
}

/// The machine, for the record next to the figures: cores, CPU model, kernel, and the median
/// cost of a 4 KiB write + `fdatasync` in `dir` (what a durable append costs at the least).
pub fn machine(dir: &Path) -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|m| m.trim().to_string())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_string())
        .unwrap_or_default();
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let sync_us = fdatasync_us(dir).map_or_else(|e| format!("? ({e})"), |us| format!("{us:.0} µs"));
    format!("{cores} cores, {cpu}, Linux {kernel}; 4 KiB write + fdatasync median {sync_us}")
}

fn fdatasync_us(dir: &Path) -> Result<f64> {
    use std::io::Write;
    let path = dir.join("fdatasync-probe");
    let mut f = std::fs::File::create(&path)?;
    let block = [7u8; 4096];
    let mut times = Vec::with_capacity(200);
    for _ in 0..200 {
        let t = Instant::now();
        f.write_all(&block)?;
        f.sync_data()?;
        times.push(t.elapsed().as_secs_f64() * 1e6);
    }
    drop(f);
    let _ = std::fs::remove_file(path);
    Ok(median(times))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_matches_the_peer() {
        let v: Vec<f64> = (1..=200).map(f64::from).collect();
        assert_eq!(nearest_rank(&v, 50.0), 100.0);
        assert_eq!(nearest_rank(&v, 99.0), 198.0);
        assert_eq!(nearest_rank(&[5.0], 99.0), 5.0);
    }

    #[test]
    fn median_of_even_and_odd() {
        assert_eq!(median(vec![3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(vec![4.0, 1.0, 2.0, 3.0]), 2.5);
    }
}
