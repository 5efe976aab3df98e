//! Scale, not just speed (issue 13, point 4): a server over 10k, 100k and 1M closed runs and
//! 10,000 open ones — startup until serving, memory, disk per run, and the first and a deep
//! page of `ListRuns` and of the web UI's `GET /api/v1/runs`, unfiltered and filtered.
//!
//! ```sh
//! cargo build --release -p steadfast-server -p steadfast-tests --bins
//! target/release/steadfast-bench-scale            # SCALE_RUNS=10000,100000,1000000 SCALE_OPEN=10000
//! target/release/steadfast-bench-scale --quick    # 1,000 closed + 100 open (the CI smoke)
//! ```
//!
//! The runs are written through the embedded store directly ([`steadfast_tests::scale`]), the
//! store closed, then a real `steadfast server` started on the data dir (with `--ui-listen`)
//! and measured from outside: wall time from spawn until a `ListRuns` is answered, VmRSS and
//! VmHWM from /proc, the log and sled directories' allocated bytes. Each page time is the
//! median of [`REPEATS`] calls; a deep page is page [`DEEP_PAGE`] reached through page tokens
//! (or the last page, marked `(pN)`, when the filter has fewer). The data dir grows from one
//! size to the next; at the largest the server is SIGKILLed and restarted. One table per
//! measure, one column per size, so growth is visible. `SCALE_DIR` keeps the data dir.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, bail, ensure};
use steadfast_engine::embedded::{EmbeddedOptions, EmbeddedStore, LOG_DIR, SLED_DIR};
use steadfast_proto::v1 as pb;
use steadfast_proto::v1::client_service_client::ClientServiceClient;
use steadfast_tests::bench::{die_with_parent, dir_bytes, rss_kib, server_bin};
use steadfast_tests::scale;
use steadfast_tests::ui::{Api, free_port};
use tonic::transport::Channel;

/// Calls per measured page; the median is shown.
const REPEATS: usize = 5;
/// Runs per page (gRPC and UI).
const PAGE: u32 = 100;
/// The page a deep page is (through page tokens).
const DEEP_PAGE: usize = 50;
/// How long a server may take to serve before the bench gives up.
const SERVING_TIMEOUT: Duration = Duration::from_secs(900);
/// How long a server may take to stop on SIGTERM before it is killed.
const STOP_TIMEOUT: Duration = Duration::from_secs(60);

/// Tables in print order; each row one cell per size so far.
#[derive(Default)]
struct Tables {
    order: Vec<String>,
    rows: BTreeMap<String, Vec<(String, Vec<String>)>>,
}

impl Tables {
    fn put(&mut self, table: &str, row: &str, value: String) {
        if !self.rows.contains_key(table) {
            self.order.push(table.to_string());
        }
        let rows = self.rows.entry(table.to_string()).or_default();
        match rows.iter_mut().find(|(r, _)| r == row) {
            Some((_, cells)) => cells.push(value),
            None => rows.push((row.to_string(), vec![value])),
        }
    }

    fn render(&self, sizes: &[String]) -> String {
        let mut out = String::new();
        for t in &self.order {
            out.push_str(&format!("\n{t}\n\n| |"));
            for s in sizes {
                out.push_str(&format!(" {s} |"));
            }
            out.push_str("\n|---|");
            out.push_str(&"---:|".repeat(sizes.len()));
            out.push('\n');
            for (row, cells) in &self.rows[t] {
                out.push_str(&format!("| {row} |"));
                for i in 0..sizes.len() {
                    out.push_str(&format!(" {} |", cells.get(i).map_or("-", String::as_str)));
                }
                out.push('\n');
            }
        }
        out
    }
}

/// A `steadfast server` of the bench; SIGKILLed on drop.
struct Server {
    child: Child,
    port: u16,
    ui: String,
}

impl Server {
    fn spawn(dir: &Path, log: &Path) -> Result<Server> {
        let (port, ui_port) = (free_port()?, free_port()?);
        let mut cmd = Command::new(server_bin()?);
        die_with_parent(&mut cmd);
        let child = cmd
            .args(["server", "--listen", &format!("127.0.0.1:{port}")])
            .arg("--data-dir")
            .arg(dir)
            .args(["--ui-listen", &format!("127.0.0.1:{ui_port}")])
            .env(
                "RUST_LOG",
                std::env::var("STEADFAST_BENCH_SERVER_LOG").unwrap_or_else(|_| "warn".into()),
            )
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(log)?)
            .spawn()?;
        Ok(Server {
            child,
            port,
            ui: format!("http://127.0.0.1:{ui_port}"),
        })
    }

    /// Waits until a first page of `ListRuns` is answered; the connected client.
    async fn until_serving(&mut self, log: &Path) -> Result<ClientServiceClient<Channel>> {
        let end = Instant::now() + SERVING_TIMEOUT;
        let url = format!("http://127.0.0.1:{}", self.port);
        loop {
            if let Some(status) = self.child.try_wait()? {
                bail!(
                    "the server exited ({status}) before serving; its log {}:\n{}",
                    log.display(),
                    std::fs::read_to_string(log).unwrap_or_default()
                );
            }
            if let Ok(ch) = tonic::transport::Endpoint::from_shared(url.clone())?
                .connect()
                .await
            {
                let mut c = ClientServiceClient::new(ch);
                if c.list_runs(list(pb::ListRunsRequest::default()))
                    .await
                    .is_ok()
                {
                    return Ok(c);
                }
            }
            ensure!(
                Instant::now() < end,
                "the server did not serve within {SERVING_TIMEOUT:?}"
            );
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGTERM, and waits for it to close its store (SIGKILL after [`STOP_TIMEOUT`]).
    fn stop(mut self) -> Result<()> {
        // SAFETY: kill(2) on our own child's pid.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let end = Instant::now() + STOP_TIMEOUT;
        while Instant::now() < end {
            if self.child.try_wait()?.is_some() {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        bail!("the server did not stop within {STOP_TIMEOUT:?} of SIGTERM")
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A list request of the default namespace, a page of [`PAGE`].
fn list(req: pb::ListRunsRequest) -> pb::ListRunsRequest {
    pb::ListRunsRequest {
        namespace: "default".into(),
        page_size: PAGE,
        ..req
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// The median ms of [`REPEATS`] calls of `req`, and the runs the call answered.
async fn time_grpc(
    c: &mut ClientServiceClient<Channel>,
    req: &pb::ListRunsRequest,
) -> Result<(f64, usize)> {
    let mut ms = Vec::new();
    let mut n = 0;
    for _ in 0..REPEATS {
        let t = Instant::now();
        n = c.list_runs(req.clone()).await?.into_inner().runs.len();
        ms.push(t.elapsed().as_secs_f64() * 1000.0);
    }
    Ok((median(ms), n))
}

/// The page token of page [`DEEP_PAGE`] of `req` (or of the last page), and its number.
async fn deep_token(
    c: &mut ClientServiceClient<Channel>,
    req: &pb::ListRunsRequest,
) -> Result<(String, usize)> {
    let mut token = String::new();
    let mut page = 1;
    while page < DEEP_PAGE {
        let r = c
            .list_runs(pb::ListRunsRequest {
                page_token: token.clone(),
                ..req.clone()
            })
            .await?
            .into_inner();
        if r.next_page_token.is_empty() {
            break;
        }
        token = r.next_page_token;
        page += 1;
    }
    Ok((token, page))
}

fn deep_cell(ms: f64, page: usize) -> String {
    if page == DEEP_PAGE {
        format!("{ms:.2}")
    } else {
        format!("{ms:.2} (p{page})")
    }
}

/// `GET path` of the UI API: the median ms of [`REPEATS`] calls and the answer.
async fn time_ui(api: &Api, path: &str) -> Result<(f64, serde_json::Value)> {
    let mut ms = Vec::new();
    let mut body = serde_json::Value::Null;
    for _ in 0..REPEATS {
        let t = Instant::now();
        let (status, b) = api.get(path).await?;
        ms.push(t.elapsed().as_secs_f64() * 1000.0);
        ensure!(status == 200, "GET {path}: {status} {b}");
        body = b;
    }
    Ok((median(ms), body))
}

fn page_len(body: &serde_json::Value) -> usize {
    body["runs"].as_array().map_or(0, Vec::len)
}

fn mib(kib: u64) -> String {
    format!("{:.1}", kib as f64 / 1024.0)
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// Writes closed runs `from..to` (and the open ones when `open > 0`) and closes the store.
async fn fill(dir: &Path, from: usize, to: usize, open: usize) -> Result<f64> {
    let t = Instant::now();
    let (store, _) = EmbeddedStore::open(dir, EmbeddedOptions::default())?;
    let store = Arc::new(store);
    let now = now_ms();
    scale::write(&store, from, to, |i, _| scale::closed_events(i), now).await?;
    if open > 0 {
        scale::write(&store, 0, open, scale::open_events, now).await?;
    }
    store.close().await?;
    Ok(t.elapsed().as_secs_f64())
}

/// The ListRuns queries measured: (row name, request).
fn grpc_queries() -> Vec<(&'static str, pb::ListRunsRequest)> {
    let status = |s: pb::RunStatus| pb::ListRunsRequest {
        status: s as i32,
        ..Default::default()
    };
    let waiting = |w: &str| pb::ListRunsRequest {
        waiting: w.into(),
        ..Default::default()
    };
    vec![
        ("unfiltered", pb::ListRunsRequest::default()),
        ("status completed", status(pb::RunStatus::Completed)),
        ("status running", status(pb::RunStatus::Running)),
        (
            "type triage",
            pb::ListRunsRequest {
                workflow_type: scale::WORKFLOW_TYPES[0].into(),
                ..Default::default()
            },
        ),
        ("waiting signal", waiting("signal")),
        ("waiting activity", waiting("activity")),
    ]
}

/// Measures one size against a started server; returns its client.
async fn measure(
    t: &mut Tables,
    server: &mut Server,
    log: &Path,
    open: usize,
) -> Result<ClientServiceClient<Channel>> {
    let spawned = Instant::now();
    let mut c = server.until_serving(log).await?;
    let serving_ms = spawned.elapsed().as_secs_f64() * 1000.0;
    let pid = server.pid();
    t.put(
        "Startup and memory",
        "startup until serving (spawn to the first ListRuns answered), ms",
        format!("{serving_ms:.0}"),
    );
    t.put(
        "Startup and memory",
        "RSS after startup, MiB",
        mib(rss_kib(pid, "VmRSS:")),
    );
    t.put(
        "Startup and memory",
        "peak RSS (VmHWM) after startup, MiB",
        mib(rss_kib(pid, "VmHWM:")),
    );

    for (name, q) in grpc_queries() {
        let req = list(q);
        let (first, got) = time_grpc(&mut c, &req).await?;
        ensure!(got > 0, "ListRuns {name}: the first page is empty");
        if name == "status running" {
            ensure!(
                got == open.min(PAGE as usize),
                "ListRuns {name}: {got} runs on the first page, expected {} (the open runs were not all recovered)",
                open.min(PAGE as usize)
            );
        }
        t.put("ListRuns, first page (ms)", name, format!("{first:.2}"));
        let (token, page) = deep_token(&mut c, &req).await?;
        let (deep, _) = time_grpc(
            &mut c,
            &pb::ListRunsRequest {
                page_token: token,
                ..req.clone()
            },
        )
        .await?;
        t.put(
            &format!("ListRuns, page {DEEP_PAGE} through page tokens (ms)"),
            name,
            deep_cell(deep, page),
        );
    }

    let api = Api::new(&server.ui, None);
    let base = format!("/api/v1/runs?page_size={PAGE}");
    for (name, path) in [
        ("first page", base.clone()),
        ("status=completed", format!("{base}&status=completed")),
        ("status=running", format!("{base}&status=running")),
    ] {
        let (ms, body) = time_ui(&api, &path).await?;
        ensure!(page_len(&body) > 0, "GET {path}: no runs");
        t.put("UI API GET /api/v1/runs (ms)", name, format!("{ms:.2}"));
    }
    let mut token = String::new();
    let mut page = 1;
    while page < DEEP_PAGE {
        let (_, body) = api.get(&format!("{base}&page_token={token}")).await?;
        match body["next_page_token"].as_str() {
            Some(next) if !next.is_empty() => token = next.to_string(),
            _ => break,
        }
        page += 1;
    }
    let (ms, _) = time_ui(&api, &format!("{base}&page_token={token}")).await?;
    t.put(
        "UI API GET /api/v1/runs (ms)",
        &format!("page {DEEP_PAGE} (page_token)"),
        deep_cell(ms, page),
    );

    t.put(
        "Startup and memory",
        "RSS after the list calls, MiB",
        mib(rss_kib(pid, "VmRSS:")),
    );
    t.put(
        "Startup and memory",
        "peak RSS (VmHWM) after the list calls, MiB",
        mib(rss_kib(pid, "VmHWM:")),
    );
    Ok(c)
}

fn sizes() -> Result<(Vec<usize>, usize)> {
    if std::env::args().any(|a| a == "--quick") {
        return Ok((vec![1000], 100));
    }
    let parse = |name: &str, default: &str| -> Result<Vec<usize>> {
        std::env::var(name)
            .unwrap_or_else(|_| default.into())
            .split(',')
            .map(|s| {
                s.trim()
                    .parse()
                    .with_context(|| format!("{name}: {s:?} is not a number of runs"))
            })
            .collect()
    };
    let runs = parse("SCALE_RUNS", "10000,100000,1000000")?;
    ensure!(
        !runs.is_empty() && runs.windows(2).all(|w| w[0] < w[1]),
        "SCALE_RUNS must be growing sizes, e.g. 10000,100000"
    );
    let open = parse("SCALE_OPEN", "10000")?;
    ensure!(
        open.len() == 1 && open[0] > 0,
        "SCALE_OPEN is one number above 0"
    );
    Ok((runs, open[0]))
}

#[tokio::main]
async fn main() -> Result<()> {
    let (runs, open) = sizes()?;
    let tmp = tempfile::tempdir()?;
    let dir: PathBuf = match std::env::var("SCALE_DIR") {
        Ok(d) => PathBuf::from(d),
        Err(_) => tmp.path().join("data"),
    };
    let log = tmp.path().join("server.log");
    let mut t = Tables::default();
    let mut labels = Vec::new();
    let mut written = 0;
    for (k, &n) in runs.iter().enumerate() {
        let fill_s = fill(&dir, written, n, if k == 0 { open } else { 0 }).await?;
        written = n;
        eprintln!("{n} closed + {open} open runs written ({fill_s:.1} s)");
        labels.push(format!("{n} closed + {open} open"));
        let all = (n + open) as f64;
        let (log_b, sled_b) = (
            dir_bytes(&dir.join(LOG_DIR)),
            dir_bytes(&dir.join(SLED_DIR)),
        );
        t.put("Data", "writing the new runs, s", format!("{fill_s:.1}"));
        t.put(
            "Data",
            "log bytes per run",
            format!("{:.0}", log_b as f64 / all),
        );
        t.put(
            "Data",
            "sled bytes per run",
            format!("{:.0}", sled_b as f64 / all),
        );
        t.put(
            "Data",
            "data dir, MiB",
            format!("{:.1}", dir_bytes(&dir) as f64 / (1 << 20) as f64),
        );

        let mut server = Server::spawn(&dir, &log)?;
        measure(&mut t, &mut server, &log, open).await?;
        let last = k + 1 == runs.len();
        let restart = if last {
            // SIGKILL, then the same data dir again: recovery from the log's checkpoint.
            drop(server);
            let mut again = Server::spawn(&dir, &log)?;
            let spawned = Instant::now();
            again.until_serving(&log).await?;
            let ms = spawned.elapsed().as_secs_f64() * 1000.0;
            again.stop()?;
            format!("{ms:.0}")
        } else {
            server.stop()?;
            "-".into()
        };
        t.put(
            "Startup and memory",
            "restart after SIGKILL until serving (largest size), ms",
            restart,
        );
        eprintln!("{}", t.render(&labels));
    }
    println!(
        "Scale: {} open runs beside the closed ones; pages of {PAGE}; the median of {REPEATS} calls; (pN) = the last page, when there are fewer than {DEEP_PAGE}.",
        open
    );
    println!("{}", t.render(&labels));
    Ok(())
}
