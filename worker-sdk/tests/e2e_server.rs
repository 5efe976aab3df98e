//! End to end against a real server process: a worker and a client in this process, the
//! `steadfast` binary in another (`STEADFAST_SERVER_BIN`, or target/debug/steadfast, built on
//! demand).

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use parking_lot::Mutex;
use steadfast_sdk::activity::{ActivityContext, ActivityError};
use steadfast_sdk::client::{self, Client, StartOptions};
use steadfast_sdk::worker::{Worker, WorkerOptions};
use steadfast_sdk::{Effect, WorkflowContext, WorkflowError};

struct Server {
    bin: PathBuf,
    dir: tempfile::TempDir,
    addr: String,
    log: PathBuf,
    child: Option<Child>,
}

/// The `steadfast` binary: `STEADFAST_SERVER_BIN`, or target/debug/steadfast, built here
/// (a nested `cargo build`, as the cross-process harness does) when it is missing.
fn server_bin() -> PathBuf {
    if let Some(bin) = std::env::var_os("STEADFAST_SERVER_BIN") {
        return PathBuf::from(bin);
    }
    static BUILT: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    BUILT
        .get_or_init(|| {
            let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                .parent()
                .unwrap()
                .to_path_buf();
            let mut cmd = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
            cmd.args([
                "build",
                "--quiet",
                "-p",
                "steadfast-server",
                "--bin",
                "steadfast",
            ])
            .current_dir(&root);
            // Variables `cargo test` sets would make build scripts rerun (see tests/src/lib.rs).
            for (k, _) in std::env::vars() {
                let set_by_cargo_test = k.starts_with("CARGO_PKG_")
                    || k.starts_with("CARGO_BIN_")
                    || matches!(
                        k.as_str(),
                        "CARGO_MANIFEST_DIR"
                            | "CARGO_MANIFEST_PATH"
                            | "CARGO_CRATE_NAME"
                            | "CARGO_PRIMARY_PACKAGE"
                            | "CARGO_TARGET_TMPDIR"
                            | "CARGO_RUSTC_CURRENT_DIR"
                            | "OUT_DIR"
                    );
                if set_by_cargo_test {
                    cmd.env_remove(k);
                }
            }
            let out = cmd.output().expect("run cargo build for the server binary");
            assert!(
                out.status.success(),
                "building steadfast failed:\n{}",
                String::from_utf8_lossy(&out.stderr)
            );
            // target/debug/deps/<this test> -> target/debug/steadfast
            let exe = std::env::current_exe().unwrap();
            exe.parent()
                .and_then(|d| d.parent())
                .unwrap()
                .join("steadfast")
        })
        .clone()
}

impl Server {
    fn start() -> Option<Server> {
        let bin = server_bin();
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let dir = tempfile::tempdir().unwrap();
        let mut s = Server {
            bin,
            log: std::env::temp_dir().join(format!("steadfast-e2e-{port}.log")),
            dir,
            addr: format!("127.0.0.1:{port}"),
            child: None,
        };
        s.spawn();
        Some(s)
    }

    /// Starts the server and waits for the line it prints once it listens (no polling).
    fn spawn(&mut self) {
        let mut child = Command::new(&self.bin)
            .args(["server", "--listen", &self.addr, "--data-dir"])
            .arg(self.dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("server starts");
        let stderr = child.stderr.take().unwrap();
        let log = self.log.clone();
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            use std::io::{BufRead, Write};
            let mut file = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(log)
                .unwrap();
            for line in std::io::BufReader::new(stderr)
                .lines()
                .map_while(Result::ok)
            {
                if line.contains("listening on") {
                    let _ = ready_tx.send(());
                }
                let _ = writeln!(file, "{line}");
            }
        });
        self.child = Some(child);
        // Called from multi-threaded tokio tests: let the runtime move other tasks away.
        let ready = tokio::task::block_in_place(|| ready_rx.recv_timeout(Duration::from_secs(30)));
        if ready.is_err() {
            let log = std::fs::read_to_string(&self.log).unwrap_or_default();
            panic!("server at {} did not come up; its log:\n{log}", self.addr);
        }
    }

    fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            c.kill().unwrap();
            c.wait().unwrap();
        }
    }

    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    async fn client(&self) -> Client {
        Client::connect(self.url())
            .await
            .expect("the server listens")
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill();
    }
}

type Counts = Arc<Mutex<HashMap<String, u32>>>;

async fn steps(ctx: WorkflowContext, n: u32) -> Result<u32, WorkflowError> {
    let mut total = 0;
    for i in 0..n {
        total += ctx.activity::<u32>("step", &i).await?;
        ctx.progress(u64::from(i + 1), u64::from(n), "step done");
    }
    ctx.sleep(Duration::from_millis(50)).await;
    let bonus: u32 = ctx.wait_signal("bonus").await?;
    Ok(total + bonus)
}

async fn patient(ctx: WorkflowContext, (): ()) -> Result<String, WorkflowError> {
    let work = ctx.activity::<String>("wait_for_cancel", &());
    let id = work.id();
    ctx.set_partial_result(&"started")?;
    futures::pin_mut!(work);
    match futures::future::select(&mut work, ctx.cancelled()).await {
        // The run's cancel can reach the activity before the workflow sees it (an activity no
        // worker holds yet is cancelled at once, in the same batch): that is a clean stop too.
        futures::future::Either::Left((Err(_), _)) if ctx.is_cancel_requested() => {
            Err(WorkflowError::Cancelled {
                partial: Some("stopped cleanly".into()),
            })
        }
        futures::future::Either::Left((r, _)) => Ok(r?),
        futures::future::Either::Right(_) => {
            ctx.cancel_activity(id);
            let _ = work.await;
            Err(WorkflowError::Cancelled {
                partial: Some("stopped cleanly".into()),
            })
        }
    }
}

fn worker(server: &Server, counts: &Counts) -> Worker {
    let mut w = Worker::new(server.url(), WorkerOptions::new("e2e"));
    w.register_workflow("steps", steps);
    w.register_workflow("patient", patient);
    let c = Arc::clone(counts);
    w.register_activity(
        "step",
        Effect::Idempotent,
        move |ctx: ActivityContext, i: u32| {
            let c = Arc::clone(&c);
            async move {
                *c.lock().entry(format!("{}/{i}", ctx.run_id())).or_default() += 1;
                tokio::time::sleep(Duration::from_millis(30)).await;
                Ok::<_, ActivityError>(i)
            }
        },
    );
    w.register_activity(
        "wait_for_cancel",
        Effect::Read,
        |ctx: ActivityContext, (): ()| async move {
            ctx.cancelled().await;
            Err::<String, _>(ActivityError::Cancelled)
        },
    );
    w
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runs_survive_a_server_restart() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .try_init();
    let Some(mut server) = Server::start() else {
        return;
    };
    let t0 = std::time::Instant::now();
    let mark = |what: &str| eprintln!("{:>6} ms  {what}", t0.elapsed().as_millis());
    let client = server.client().await;
    let counts = Counts::default();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let worker = tokio::spawn(worker(&server, &counts).run_until(async {
        let _ = stop_rx.await;
    }));

    let opts = || StartOptions {
        task_queue: Some("e2e".into()),
        ..Default::default()
    };
    let run = client
        .start_workflow("steps", &10u32, opts())
        .await
        .unwrap();
    // Watch until a few steps are recorded, then kill the server mid-run.
    let mut events = Box::pin(client.watch(&run.run_id, 0));
    let mut completed = 0;
    while let Some(ev) = events.next().await {
        let ev = ev.unwrap();
        if ev
            .event
            .as_ref()
            .is_some_and(|e| e.kind() == steadfast_proto::v1::EventKind::ActivityCompleted)
        {
            completed += 1;
            if completed == 3 {
                break;
            }
        }
    }
    drop(events);
    mark("3 steps done; killing the server");
    server.kill();
    server.spawn();
    let client = server.client().await;
    mark("server back");
    // The signal is buffered until the workflow waits for it.
    client.signal(&run.run_id, "bonus", &100u32).await.unwrap();
    let result: u32 = client
        .await_result(&run.run_id, Duration::from_secs(60))
        .await
        .unwrap();
    assert_eq!(result, 45 + 100);
    mark("steps run completed");
    let history = client.history(&run.run_id).await.unwrap();
    assert!(
        history
            .iter()
            .any(|e| e.kind() == steadfast_proto::v1::EventKind::RunCompleted)
    );
    // Every step ran; a step whose result was recorded before the kill never ran again
    // (at most the one in flight at the kill ran twice).
    let counts_now = counts.lock().clone();
    assert_eq!(counts_now.len(), 10, "{counts_now:?}");
    assert!(
        counts_now.values().filter(|n| **n > 1).count() <= 1,
        "{counts_now:?}"
    );

    // Cancellation reaches a running activity, and the run ends with its partial result.
    let run = client.start_workflow("patient", &(), opts()).await.unwrap();
    let mut events = Box::pin(client.watch(&run.run_id, 0));
    while let Some(ev) = events.next().await {
        if ev
            .unwrap()
            .event
            .is_some_and(|e| e.kind() == steadfast_proto::v1::EventKind::ActivityScheduled)
        {
            break;
        }
    }
    mark("patient run waits on its activity; cancelling");
    client.cancel(&run.run_id, "test").await.unwrap();
    match client
        .await_result::<String>(&run.run_id, Duration::from_secs(30))
        .await
    {
        Err(client::Error::RunCancelled { partial }) => {
            assert_eq!(partial, Some("stopped cleanly".into()))
        }
        other => panic!("{other:?}"),
    }

    // A run that does not exist.
    assert!(matches!(
        client
            .describe("0190a0a0-0000-7000-8000-000000000000")
            .await,
        Err(client::Error::NotFound(_))
    ));

    mark("patient run cancelled");
    let _ = stop_tx.send(());
    worker.await.unwrap().unwrap();
    mark("worker stopped");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_with_a_small_cache_replays_from_history() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .try_init();
    let Some(server) = Server::start() else {
        return;
    };
    let client = server.client().await;
    let counts = Counts::default();
    let mut w = worker(&server, &counts);
    // Overrides: one cached instance for three interleaved runs, so the server sends
    // deltas for runs this worker no longer holds, and it must fetch their history.
    w = {
        let mut options = WorkerOptions::new("e2e");
        options.cache_size = 1;
        let mut small = Worker::new(server.url(), options);
        small.register_workflow("steps", steps);
        let c = Arc::clone(&counts);
        small.register_activity(
            "step",
            Effect::Idempotent,
            move |ctx: ActivityContext, i: u32| {
                let c = Arc::clone(&c);
                async move {
                    *c.lock().entry(format!("{}/{i}", ctx.run_id())).or_default() += 1;
                    Ok::<_, ActivityError>(i)
                }
            },
        );
        drop(w);
        small
    };
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let worker = tokio::spawn(w.run_until(async {
        let _ = stop_rx.await;
    }));
    let opts = || StartOptions {
        task_queue: Some("e2e".into()),
        ..Default::default()
    };
    let mut runs = Vec::new();
    for i in 0..3u32 {
        let run = client.start_workflow("steps", &5u32, opts()).await.unwrap();
        client.signal(&run.run_id, "bonus", &i).await.unwrap();
        runs.push((run, i));
    }
    for (run, i) in runs {
        let result: u32 = run.result(Duration::from_secs(60)).await.unwrap();
        assert_eq!(result, 10 + i);
    }
    assert!(
        counts.lock().values().all(|n| *n == 1),
        "no activity ran twice"
    );
    let _ = stop_tx.send(());
    worker.await.unwrap().unwrap();
}

async fn upgrade_v1(ctx: WorkflowContext, (): ()) -> Result<String, WorkflowError> {
    let a: String = ctx.activity("a", &()).await?;
    let go: String = ctx.wait_signal("go").await?;
    Ok(format!("{a}+{go}"))
}

async fn upgrade_v2(ctx: WorkflowContext, (): ()) -> Result<String, WorkflowError> {
    // An incompatible change: another activity first.
    let b: String = ctx.activity("b", &()).await?;
    Ok(b)
}

fn upgrade_worker(
    server: &Server,
    v2: bool,
) -> (
    tokio::task::JoinHandle<Result<(), steadfast_sdk::worker::Error>>,
    tokio::sync::oneshot::Sender<()>,
) {
    let mut w = Worker::new(server.url(), WorkerOptions::new("upgrade"));
    if v2 {
        w.register_workflow("upgrade", upgrade_v2);
    } else {
        w.register_workflow("upgrade", upgrade_v1);
    }
    for name in ["a", "b"] {
        w.register_activity(name, Effect::Read, move |_: ActivityContext, (): ()| async move {
            Ok::<_, ActivityError>(name.to_owned())
        });
    }
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let handle = tokio::spawn(w.run_until(async {
        let _ = rx.await;
    }));
    (handle, tx)
}

/// Waits on the run's events until one of `kind` arrives; returns it.
async fn wait_for(
    client: &Client,
    run_id: &str,
    kind: steadfast_proto::v1::EventKind,
) -> steadfast_proto::v1::HistoryEvent {
    let mut events = Box::pin(client.watch(run_id, 0));
    while let Some(ev) = events.next().await {
        if let Some(e) = ev.unwrap().event.filter(|e| e.kind() == kind) {
            return e;
        }
    }
    panic!("the run ended without a {kind:?} event");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nondeterministic_code_holds_the_run_until_fixed_code_polls() {
    use steadfast_proto::v1::EventKind;
    use steadfast_proto::v1::history_event::Attributes;
    let Some(server) = Server::start() else {
        return;
    };
    let client = server.client().await;
    let opts = StartOptions {
        task_queue: Some("upgrade".into()),
        ..Default::default()
    };

    let (v1, stop) = upgrade_worker(&server, false);
    let run = client.start_workflow("upgrade", &(), opts).await.unwrap();
    wait_for(&client, &run.run_id, EventKind::SignalWaitStarted).await;
    let _ = stop.send(());
    v1.await.unwrap().unwrap();

    // Incompatible code gets the next task: it reports nondeterminism, the run is held.
    let (v2, stop) = upgrade_worker(&server, true);
    client.signal(&run.run_id, "go", &"go").await.unwrap();
    let failed = wait_for(&client, &run.run_id, EventKind::WorkflowTaskFailed).await;
    let Some(Attributes::WorkflowTaskFailed(f)) = failed.attributes else {
        panic!("{failed:?}")
    };
    assert_eq!(
        f.cause(),
        steadfast_proto::v1::WorkflowTaskFailCause::Nondeterminism
    );
    assert!(
        f.message.starts_with(
            "[STF-ND001] nondeterminism at command seq 1: history has ActivityScheduled(type=a"
        ),
        "{}",
        f.message
    );
    let _ = stop.send(());
    v2.await.unwrap().unwrap();
    let info = client.describe(&run.run_id).await.unwrap();
    assert_eq!(
        info.status(),
        steadfast_proto::v1::RunStatus::Running,
        "held, not failed"
    );

    // The right code arrives and completes it.
    let (v1, stop) = upgrade_worker(&server, false);
    let result: String = run.result(Duration::from_secs(30)).await.unwrap();
    assert_eq!(result, "a+go");
    let _ = stop.send(());
    v1.await.unwrap().unwrap();
}

/// Reports `n` progress steps in one task: over the server's per-task command limit when
/// `n` is large, a refusal no retry fixes.
async fn chatty(ctx: WorkflowContext, n: u64) -> Result<u64, WorkflowError> {
    for i in 0..n.min(CHATTY_FIXED_MAX) {
        ctx.progress(i, n, "step");
    }
    Ok(n)
}

/// What the fixed `chatty` caps its progress reports at.
const CHATTY_FIXED_MAX: u64 = 5_000;

fn chatty_worker(
    server: &Server,
    cap: u64,
) -> (
    tokio::task::JoinHandle<Result<(), steadfast_sdk::worker::Error>>,
    tokio::sync::oneshot::Sender<()>,
) {
    let mut w = Worker::new(server.url(), WorkerOptions::new("refused"));
    w.register_workflow("chatty", move |ctx: WorkflowContext, n: u64| {
        chatty(ctx, n.min(cap))
    });
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let handle = tokio::spawn(w.run_until(async {
        let _ = rx.await;
    }));
    (handle, tx)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_completion_is_reported_typed_and_fixed_code_continues() {
    use steadfast_proto::v1::EventKind;
    use steadfast_proto::v1::history_event::Attributes;
    let Some(server) = Server::start() else {
        return;
    };
    let client = server.client().await;
    let opts = StartOptions {
        task_queue: Some("refused".into()),
        ..Default::default()
    };
    // 2,000 commands in one task: refused (RESOURCE_EXHAUSTED naming the limit), which is
    // not transient: the worker reports it at once instead of retrying or timing out.
    let (bad, stop) = chatty_worker(&server, CHATTY_FIXED_MAX);
    let run = client
        .start_workflow("chatty", &2_000u64, opts)
        .await
        .unwrap();
    let failed = tokio::time::timeout(
        Duration::from_secs(30),
        wait_for(&client, &run.run_id, EventKind::WorkflowTaskFailed),
    )
    .await
    .expect("the refusal is reported well before the task timeout loop");
    let Some(Attributes::WorkflowTaskFailed(f)) = failed.attributes else {
        panic!("{failed:?}")
    };
    assert!(
        f.message.starts_with(
            "[STF-WT002] the server refused the task's completion: ResourceExhausted:"
        ),
        "{}",
        f.message
    );
    assert!(f.message.contains("limit"), "{}", f.message);
    // The wire carries COMPLETION_REFUSED; a server whose engine has no such cause yet
    // records it as BAD_COMMAND (the message carries the precise code either way).
    assert!(
        matches!(
            f.cause(),
            steadfast_proto::v1::WorkflowTaskFailCause::CompletionRefused
                | steadfast_proto::v1::WorkflowTaskFailCause::BadCommand
        ),
        "{:?}",
        f.cause()
    );
    let _ = stop.send(());
    bad.await.unwrap().unwrap();
    assert_eq!(
        client.describe(&run.run_id).await.unwrap().status(),
        steadfast_proto::v1::RunStatus::Running,
        "held, not failed"
    );

    // Fixed code (fewer reports per task) continues the run.
    let (good, stop) = chatty_worker(&server, 100);
    let result: u64 = run.result(Duration::from_secs(60)).await.unwrap();
    assert_eq!(result, 100);
    let _ = stop.send(());
    good.await.unwrap().unwrap();
}
