//! End-to-end benchmark of several server nodes over one PostgreSQL, beside the embedded
//! store: the same workloads on the embedded store, on one node over PostgreSQL and on two
//! nodes over the same PostgreSQL, with the CPU each part used (server nodes, PostgreSQL's
//! processes, the bench's clients and workers), printed as a table.
//!
//! ```text
//! cargo build --release -p steadfast-server -p steadfast-tests --bins
//! target/release/steadfast-bench-nodes           # starts a throwaway PostgreSQL itself
//! target/release/steadfast-bench-nodes --quick   # smaller counts
//! ```
//! Machines here are shared and noisy: compare medians and ratios, not single numbers.

use std::time::Instant;

use anyhow::{Context, Result};
use steadfast_postgres::testing::PgCluster;
use steadfast_sdk::{Client, StartOptions};
use steadfast_tests::bench::{
    Server, cpu_secs, drive_spread, pct, start_server_with, tree_cpu_secs, worker_on,
};

/// One configuration: a store and a number of nodes.
struct Setup {
    name: &'static str,
    nodes: usize,
    postgres: bool,
}

struct Measured {
    name: &'static str,
    steps_per_s: f64,
    server_ms_per_step: f64,
    pg_ms_per_step: f64,
    bench_ms_per_step: f64,
    p50: f64,
    p99: f64,
    far_p50: Option<f64>,
    xacts_per_step: Option<f64>,
}

#[tokio::main]
async fn main() -> Result<()> {
    let quick = std::env::args().any(|a| a == "--quick");
    let runs = if quick { 200 } else { 2000 };
    let singles = if quick { 100 } else { 500 };
    let pg = PgCluster::start().context(
        "this benchmark needs PostgreSQL's server binaries (Debian's postgresql, or PG_BIN)",
    )?;
    let pg_pid = pg.pid().context("the cluster's postmaster PID")?;
    let setups = [
        Setup {
            name: "embedded store, 1 node",
            nodes: 1,
            postgres: false,
        },
        Setup {
            name: "PostgreSQL, 1 node",
            nodes: 1,
            postgres: true,
        },
        Setup {
            name: "PostgreSQL, 2 nodes",
            nodes: 2,
            postgres: true,
        },
    ];
    let mut out = Vec::new();
    for (i, setup) in setups.iter().enumerate() {
        let tmp = tempfile::tempdir()?;
        let url = setup
            .postgres
            .then(|| pg.create_database(&format!("bench{i}")));
        let mut nodes: Vec<Server> = Vec::new();
        for n in 0..setup.nodes {
            let port = std::net::TcpListener::bind("127.0.0.1:0")?
                .local_addr()?
                .port();
            let dir = tmp.path().join(format!("node{n}"));
            let extra: Vec<&str> = match &url {
                Some(u) => vec!["--store", u.as_str()],
                None => vec![],
            };
            nodes.push(start_server_with(&dir, port, &extra)?);
        }
        eprintln!("== {}", setup.name);
        let xacts = || {
            url.as_ref().map(|u| {
                pg.sql(
                    u,
                    "SELECT xact_commit + xact_rollback FROM pg_stat_database \
                     WHERE datname = current_database()",
                )
                .parse::<f64>()
                .unwrap_or(0.0)
            })
        };
        out.push(measure(setup, &nodes, pg_pid, runs, singles, xacts).await?);
    }
    println!(
        "\n| setup | throughput ({runs} runs x 10 steps, 64 in flight) | server CPU / step | PostgreSQL CPU / step | clients + workers CPU / step | 1-step run p50 / p99 | 1-step run, started on node 1, worker on node 2, p50 | PostgreSQL transactions / step |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---:|");
    for m in out {
        println!(
            "| {} | {:.0} steps/s | {:.2} ms | {:.2} ms | {:.2} ms | {:.2} / {:.2} ms | {} | {} |",
            m.name,
            m.steps_per_s,
            m.server_ms_per_step,
            m.pg_ms_per_step,
            m.bench_ms_per_step,
            m.p50,
            m.p99,
            m.far_p50
                .map(|v| format!("{v:.2} ms"))
                .unwrap_or_else(|| "-".into()),
            m.xacts_per_step
                .map(|v| format!("{v:.1}"))
                .unwrap_or_else(|| "-".into())
        );
    }
    Ok(())
}

async fn measure(
    setup: &Setup,
    nodes: &[Server],
    pg_pid: u32,
    runs: usize,
    singles: usize,
    xacts: impl Fn() -> Option<f64>,
) -> Result<Measured> {
    let mut clients = Vec::new();
    for n in nodes {
        clients.push(Client::connect(n.addr.as_str()).await?);
    }
    // A worker on every node, all on one queue; on two nodes, a second queue served only by
    // a worker on the last node, for runs started through the first (a cross-node wake-up).
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let mut workers = Vec::new();
    let mut spawn = |addr: &str, queue: &str| {
        let w = worker_on(addr, queue);
        let mut stop = stop_rx.clone();
        workers.push(tokio::spawn(async move {
            let _ = w
                .run_until(async move {
                    let _ = stop.wait_for(|s| *s).await;
                })
                .await;
        }));
    };
    for n in nodes {
        spawn(&n.addr, "default");
    }
    if nodes.len() > 1 {
        spawn(&nodes[nodes.len() - 1].addr, "far");
    }
    let seq = serde_json::json!(10);
    // Warm up connections, caches and prepared statements.
    drive_spread(
        &clients,
        40,
        8,
        "bench.seq",
        serde_json::json!(2),
        StartOptions::default(),
    )
    .await?;

    let pids: Vec<u32> = nodes.iter().map(|n| n.child.id()).collect();
    let server_cpu = || pids.iter().map(|&p| cpu_secs(p)).sum::<f64>();
    let me = std::process::id();
    let (s0, p0, b0, x0) = (server_cpu(), tree_cpu_secs(pg_pid), cpu_secs(me), xacts());
    let t = Instant::now();
    drive_spread(
        &clients,
        runs,
        64,
        "bench.seq",
        seq,
        StartOptions::default(),
    )
    .await?;
    let secs = t.elapsed().as_secs_f64();
    let (s1, p1, b1, x1) = (server_cpu(), tree_cpu_secs(pg_pid), cpu_secs(me), xacts());
    let steps = (runs * 10) as f64;
    let per_step = |a: f64, b: f64| (b - a) * 1e3 / steps;

    let mut lat = drive_spread(
        &clients[..1],
        singles,
        1,
        "bench.seq",
        serde_json::json!(1),
        StartOptions::default(),
    )
    .await?;
    let far_p50 = if nodes.len() > 1 {
        let far = StartOptions {
            task_queue: Some("far".into()),
            ..StartOptions::default()
        };
        let mut v = drive_spread(
            &clients[..1],
            singles,
            1,
            "bench.seq",
            serde_json::json!(1),
            far,
        )
        .await?;
        Some(pct(&mut v, 0.5))
    } else {
        None
    };
    let _ = stop_tx.send(true);
    for w in workers {
        let _ = w.await;
    }
    Ok(Measured {
        name: setup.name,
        steps_per_s: steps / secs,
        server_ms_per_step: per_step(s0, s1),
        pg_ms_per_step: if setup.postgres {
            per_step(p0, p1)
        } else {
            0.0
        },
        bench_ms_per_step: per_step(b0, b1),
        p50: pct(&mut lat, 0.5),
        p99: pct(&mut lat, 0.99),
        far_p50,
        // pg_stat_database lags by up to its reporting interval: an estimate.
        xacts_per_step: x0.zip(x1).map(|(a, b)| (b - a) / steps),
    })
}
