//! End-to-end benchmark over gRPC: the workloads of DESIGN.md's numbers table, printed as a
//! table. A real `steadfast server` process (built next to this binary), a worker and the
//! clients in this process.
//!
//! ```text
//! cargo build --release -p steadfast-server -p steadfast-tests --bins
//! target/release/steadfast-bench            # all workloads
//! target/release/steadfast-bench --quick    # smaller counts, for a smoke run
//! target/release/steadfast-bench --vs-restate /tmp/restate-peer [--rounds 3] [--json out.json]
//! ```
//! `--vs-restate DIR` runs the Restate peer harness in DIR (a copy of
//! `../shared/peers/restate` after its `./setup.sh`) and Steadfast on the same shapes,
//! interleaved, and prints medians and ratios (see `steadfast_tests::peer`);
//! `--steadfast-only` runs the same shapes on Steadfast alone.
//! `--profile-zero N` runs only N zero-step runs (256 in flight) and prints where a run's time
//! went, from its events' times; `--profile-seq N` one run of N sequential activities.
//! Machines here are shared and noisy: compare medians and ratios, not single numbers.

use std::sync::Arc;
use std::time::Instant;

use anyhow::{Result, bail};
use steadfast_sdk::{Client, StartOptions};
use steadfast_tests::bench::{dir_bytes, drive, pct, rss_kib, start_server, worker};

struct Row(String, String, String);

/// The worker and the clients run on as many runtime threads as the server does by default
/// (half the CPUs, at least 1, one being the current-thread scheduler; `steadfast server
/// --runtime-threads`), like the peer's service and load generator, each one Node.js event
/// loop.
fn main() -> Result<()> {
    let threads = std::thread::available_parallelism().map_or(1, |n| (n.get() / 2).max(1));
    let rt = if threads == 1 {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(threads)
            .enable_all()
            .build()?
    };
    rt.block_on(bench_main())
}

async fn bench_main() -> Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let flag = |name: &str| args.iter().skip_while(|a| *a != name).nth(1).cloned();
    // `--worker ADDR`: the bench worker alone, in its own process (the side-by-side rounds
    // count its CPU apart from the client's).
    if let Some(addr) = flag("--worker") {
        worker(&addr).run().await?;
        return Ok(());
    }
    let steadfast_only = args.iter().any(|a| a == "--steadfast-only");
    if let Some(dir) = flag("--vs-restate").or(steadfast_only.then(String::new)) {
        return vs_restate(
            (!steadfast_only).then(|| std::path::PathBuf::from(dir)),
            flag("--rounds").map_or(Ok(3), |r| r.parse())?,
            flag("--json"),
        )
        .await;
    }
    let quick = args.iter().any(|a| a == "--quick");
    // `--profile-seq N`: only N sequential activities in one run, for a profiler.
    let count = |name: &str, v: String| {
        v.parse::<usize>().ok().filter(|n| *n > 0).ok_or_else(|| {
            anyhow::anyhow!(
                "{name}: give a whole number of at least 1, not {:?}",
                v.chars().take(20).collect::<String>()
            )
        })
    };
    if let Some(n) = flag("--profile-seq") {
        return profile_seq(count("--profile-seq", n)?).await;
    }
    // `--profile-zero N`: only N zero-step runs, 256 in flight, for a profiler.
    if let Some(n) = flag("--profile-zero") {
        return profile_zero(count("--profile-zero", n)?).await;
    }
    let scale = |full: usize, small: usize| if quick { small } else { full };
    let tmp = tempfile::tempdir()?;
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let mut rows = Vec::new();

    let server = start_server(tmp.path(), port)?;
    let client = Client::connect(server.addr.as_str()).await?;
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let w = worker(&server.addr);
    let worker_task = tokio::spawn(async move {
        let _ = w
            .run_until(async {
                let _ = stop_rx.await;
            })
            .await;
    });
    // Warm up connections and caches.
    drive(&client, 20, 8, "bench.seq", serde_json::json!(2)).await?;

    // 1. Throughput: runs x 10 sequential activities, 64 in flight.
    let runs = scale(2000, 200);
    let t = Instant::now();
    drive(&client, runs, 64, "bench.seq", serde_json::json!(10)).await?;
    let secs = t.elapsed().as_secs_f64();
    let hwm = rss_kib(server.child.id(), "VmHWM:");
    rows.push(Row(
        format!("{runs} runs x 10 sequential activities, 64 in flight"),
        format!("{:.0} steps/s ({:.1} s)", (runs * 10) as f64 / secs, secs),
        ">= 6,000 steps/s".into(),
    ));
    rows.push(Row(
        "server memory (peak RSS) after that workload".into(),
        format!("{:.1} MiB", hwm as f64 / 1024.0),
        "<= 100 MiB".into(),
    ));

    // 2. Latency: 1-activity run, start -> result, one client.
    let mut lat = drive(
        &client,
        scale(500, 100),
        1,
        "bench.seq",
        serde_json::json!(1),
    )
    .await?;
    rows.push(Row(
        "1-activity run, start -> result, one client".into(),
        format!(
            "p50 {:.2} ms, p99 {:.2} ms",
            pct(&mut lat, 0.5),
            pct(&mut lat, 0.99)
        ),
        "p50 <= 2 ms, p99 <= 8 ms".into(),
    ));

    // 3. One run of 1,000 sequential activities.
    let t = Instant::now();
    drive(&client, 1, 1, "bench.seq", serde_json::json!(1000)).await?;
    rows.push(Row(
        "one run of 1,000 sequential activities".into(),
        format!(
            "{:.2} ms per step",
            t.elapsed().as_secs_f64() * 1e3 / 1000.0
        ),
        "<= 1 ms per step".into(),
    ));

    // 4. Long run: the cost of late steps vs early ones (watch the run's events).
    let long_steps = scale(10_000, 2_000) as u32;
    let h = client
        .start_workflow("bench.seq", &long_steps, StartOptions::default())
        .await?;
    let (first, last) = step_times(&client, &h.run_id, long_steps).await?;
    rows.push(Row(
        format!("last 1,000 vs first 1,000 of {long_steps} steps of one run"),
        format!("{:.2}x ({:.0} ms vs {:.0} ms)", last / first, last, first),
        "<= 1.2x".into(),
    ));

    // 5. Zero-step runs started and completed.
    rows.push(Row(
        "zero-step runs started and completed".into(),
        zero_steps(&client, server.child.id(), scale(10_000, 1_000)).await?,
        ">= 10,000/s".into(),
    ));

    let _ = stop_tx.send(());
    let _ = worker_task.await;

    // 6. Restart after SIGKILL with many open runs (no worker: they stay open).
    let open = scale(10_000, 1_000);
    drive_open(&client, open).await?;
    drop(client);
    let pid = server.child.id();
    drop(server); // SIGKILL
    let _ = pid;
    let t = Instant::now();
    let server = start_server(tmp.path(), port)?;
    let c = Client::connect(server.addr.as_str()).await?;
    let (runs_listed, _) = c.list(Default::default()).await?;
    let restart_ms = t.elapsed().as_secs_f64() * 1e3;
    rows.push(Row(
        format!("restart after SIGKILL with {open} open runs, until serving"),
        format!("{restart_ms:.0} ms ({} runs listed)", runs_listed.len()),
        "<= 1 s".into(),
    ));
    rows.push(Row(
        "data dir after all of the above".into(),
        format!("{:.1} MiB", dir_bytes(tmp.path()) as f64 / 1048576.0),
        String::new(),
    ));

    println!("\n| workload | measured | target |\n|---|---|---|");
    for r in rows {
        println!("| {} | {} | {} |", r.0, r.1, r.2);
    }
    Ok(())
}

async fn vs_restate(
    peer: Option<std::path::PathBuf>,
    rounds: usize,
    json: Option<String>,
) -> Result<()> {
    if rounds == 0 {
        bail!("--rounds must be at least 1");
    }
    let shape = steadfast_tests::peer::Shape::from_env()?;
    let work = tempfile::tempdir()?;
    let machine = steadfast_tests::peer::machine(work.path());
    eprintln!("{machine}\n{shape:?}, {rounds} rounds");
    let c = steadfast_tests::peer::compare(shape, peer.as_deref(), rounds, work.path()).await?;
    if let Some(path) = json {
        std::fs::write(&path, serde_json::to_string_pretty(&c)?)?;
    }
    println!(
        "\n{machine}\nN={} K={} CONC={} LAT_N={} LAT_K={} LAT_WARMUP={}\n\n{}",
        shape.n,
        shape.k,
        shape.conc,
        shape.lat_n,
        shape.lat_k,
        shape.lat_warmup,
        c.report()
    );
    Ok(())
}

/// A server in a temp dir and a bench worker against it, for the profile modes.
async fn profile_setup() -> Result<(tempfile::TempDir, steadfast_tests::bench::Server, Client)> {
    let tmp = tempfile::tempdir()?;
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let server = start_server(tmp.path(), port)?;
    eprintln!("server pid {}", server.child.id());
    let client = Client::connect(server.addr.as_str()).await?;
    let w = worker(&server.addr);
    tokio::spawn(async move {
        let _ = w.run().await;
    });
    Ok((tmp, server, client))
}

async fn profile_seq(n: usize) -> Result<()> {
    let (_tmp, _server, client) = profile_setup().await?;
    let t = Instant::now();
    drive(&client, 1, 1, "bench.seq", serde_json::json!(n)).await?;
    println!(
        "{:.3} ms per step",
        t.elapsed().as_secs_f64() * 1e3 / n as f64
    );
    Ok(())
}

async fn profile_zero(n: usize) -> Result<()> {
    let (_tmp, server, client) = profile_setup().await?;
    drive(&client, 200, 64, "bench.zero", serde_json::json!(null)).await?;
    println!("{}", zero_steps(&client, server.child.id(), n).await?);
    // Where a run's time went, from the event times of the newest 200 runs' histories (ms
    // resolution): which gap between two events holds the waiting.
    let (runs, _) = client
        .list(steadfast_sdk::client::ListOptions {
            page_size: 200,
            ..Default::default()
        })
        .await?;
    let mut gaps: std::collections::BTreeMap<String, Vec<f64>> = Default::default();
    for r in &runs {
        let h = client.history(&r.run_id).await?;
        for w in h.windows(2) {
            gaps.entry(format!("{:?} -> {:?}", w[0].kind(), w[1].kind()))
                .or_default()
                .push((w[1].time_ms - w[0].time_ms) as f64);
        }
    }
    for (gap, mut ms) in gaps {
        println!(
            "  {gap}: p50 {} ms, p90 {} ms, max {} ms",
            pct(&mut ms, 0.5),
            pct(&mut ms, 0.9),
            pct(&mut ms, 1.0)
        );
    }
    Ok(())
}

/// `n` zero-step runs started and completed, 256 in flight: the rate, and the CPU per run of
/// the server and of this process (the client and the worker) apart — what bounds the rate on
/// a small machine.
async fn zero_steps(client: &Client, server_pid: u32, n: usize) -> Result<String> {
    let cpu = steadfast_tests::bench::cpu_secs;
    let (server_cpu, own_cpu) = (cpu(server_pid), cpu(std::process::id()));
    let t = Instant::now();
    let mut lat = drive(client, n, 256, "bench.zero", serde_json::json!(null)).await?;
    let secs = t.elapsed().as_secs_f64();
    let per_run_ms = |before: f64, pid: u32| (cpu(pid) - before) * 1e3 / n as f64;
    Ok(format!(
        "{:.0} runs/s (a run's latency p50 {:.1} ms; CPU per run: server {:.3} ms, client + worker {:.3} ms)",
        n as f64 / secs,
        pct(&mut lat, 0.5),
        per_run_ms(server_cpu, server_pid),
        per_run_ms(own_cpu, std::process::id()),
    ))
}

async fn drive_open(client: &Client, n: usize) -> Result<()> {
    let sem = Arc::new(tokio::sync::Semaphore::new(128));
    let mut tasks = Vec::new();
    for _ in 0..n {
        let p = sem.clone().acquire_owned().await?;
        let c = client.clone();
        tasks.push(tokio::spawn(async move {
            let r = c
                .start_workflow(
                    "bench.unserved",
                    &serde_json::json!({}),
                    StartOptions::default(),
                )
                .await;
            drop(p);
            r
        }));
    }
    for t in tasks {
        t.await??;
    }
    Ok(())
}

/// Times the first and the last 1,000 steps of a run from its ActivityCompleted events.
async fn step_times(client: &Client, run_id: &str, steps: u32) -> Result<(f64, f64)> {
    use futures::StreamExt;
    use steadfast_proto::v1::history_event::Attributes as A;
    let mut times = Vec::with_capacity(steps as usize);
    let mut s = Box::pin(client.watch(run_id, 0));
    while let Some(ev) = s.next().await {
        let ev = ev?;
        if let Some(e) = ev.event
            && let Some(A::ActivityCompleted(_)) = e.attributes
        {
            times.push(e.time_ms);
        }
    }
    if times.len() < 2000 {
        bail!("only {} steps completed", times.len());
    }
    let first = (times[999] - times[0]) as f64;
    let n = times.len();
    let last = (times[n - 1] - times[n - 1000]) as f64;
    Ok((first.max(1.0), last.max(1.0)))
}
