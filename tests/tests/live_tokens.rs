//! Live tokens (issue 17 point 2): an `llm.chat` activity streams the model's answer to the
//! run's watchers as it arrives; nothing of it but the final answer is recorded.
//!
//! A real `steadfast server` and an `llm-stream-worker` process whose LLM is a fake
//! OpenAI-compatible server written here: it answers `stream: true` with server-sent events,
//! one chunk at a time, held at a gate the test opens (so "mid-generation" is a state the
//! test controls, not a race).
//!
//! - A watcher sees the deltas in order, gapless, before the ActivityCompleted, and they
//!   make up the recorded answer; a watcher that joins mid-generation first gets the buffer
//!   from the attempt's start; `steadfast run watch` prints the text before the event.
//! - The history holds the text once (the recorded answer) and no progress record; neither
//!   the server's nor the worker's debug log holds it.
//! - A superseded attempt's deltas are refused (raw worker protocol), a new attempt's start
//!   again at offset 0, and a watcher is told which attempt they belong to.
//! - Two nodes over one PostgreSQL, the worker on node A: watchers on A and on B (one of them
//!   joining mid-generation) all see the same text, from offset 0, before the
//!   ActivityCompleted (B gets it relayed over LISTEN/NOTIFY).

use std::fs::File;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use anyhow::{Context, Result, ensure};
use futures::StreamExt;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::json;
use steadfast_postgres::testing::PgCluster;
use steadfast_proto::v1 as pb;
use steadfast_proto::v1::history_event::Attributes as A;
use steadfast_sdk::client::{Client, StartOptions};
use steadfast_tests::raw::{Raw, schedule};
use steadfast_tests::{Proc, Server, bin, runtime, test_seed, wait_for};
use tonic::Code;

const QUEUE: &str = "live";
const WAIT: Duration = Duration::from_secs(60);

/// A fake OpenAI-compatible API that streams `chunks` as server-sent events, chunk `i` only
/// once the gate allows more than `i` chunks. Stopped (threads joined) on drop.
struct FakeSse {
    addr: SocketAddr,
    gate: Arc<(Mutex<usize>, Condvar)>,
    requests: Arc<Mutex<Vec<String>>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl FakeSse {
    fn start(chunks: Vec<String>, open: usize) -> Result<FakeSse> {
        let listener = TcpListener::bind("127.0.0.1:0")?;
        let addr = listener.local_addr()?;
        let gate = Arc::new((Mutex::new(open), Condvar::new()));
        let requests = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (g, log, stopped) = (gate.clone(), requests.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            let mut conns = Vec::new();
            for stream in listener.incoming() {
                if stopped.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(stream) = stream else { continue };
                let (g, log, chunks, stopped) =
                    (g.clone(), log.clone(), chunks.clone(), stopped.clone());
                conns.push(std::thread::spawn(move || {
                    if let Err(e) = serve(stream, &chunks, &g, &log, &stopped) {
                        eprintln!("[fake sse] {e:#}");
                    }
                }));
            }
            for c in conns {
                let _ = c.join();
            }
        });
        Ok(FakeSse {
            addr,
            gate,
            requests,
            stop,
            thread: Some(thread),
        })
    }

    fn base_url(&self) -> String {
        format!("http://{}/v1", self.addr)
    }

    /// Lets the first `n` chunks out.
    fn open(&self, n: usize) {
        let (m, cv) = &*self.gate;
        *m.lock().unwrap() = n;
        cv.notify_all();
    }
}

impl Drop for FakeSse {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        self.open(usize::MAX);
        let _ = TcpStream::connect(self.addr);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn serve(
    stream: TcpStream,
    chunks: &[String],
    gate: &(Mutex<usize>, Condvar),
    log: &Mutex<Vec<String>>,
    stop: &AtomicBool,
) -> Result<()> {
    let (_, body) = steadfast_tests::http::read_request(&stream)?;
    let body = String::from_utf8(body)?;
    log.lock().unwrap().push(body.clone());
    let asked: serde_json::Value = serde_json::from_str(&body)?;
    ensure!(
        asked["stream"] == json!(true) && asked["stream_options"]["include_usage"] == json!(true),
        "the activity did not ask for a stream with usage: {asked}"
    );
    let mut out = stream;
    write!(
        out,
        "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ncache-control: no-cache\r\nconnection: close\r\n\r\n"
    )?;
    out.write_all(b": a comment line, ignored\n\n")?;
    out.flush()?;
    for (i, text) in chunks.iter().enumerate() {
        {
            let (m, cv) = gate;
            let mut open = m.lock().unwrap();
            while *open <= i && !stop.load(Ordering::SeqCst) {
                open = cv.wait_timeout(open, Duration::from_secs(1)).unwrap().0;
            }
        }
        let chunk = json!({"id": "c1", "object": "chat.completion.chunk", "model": "live-model",
            "choices": [{"index": 0, "delta": {"content": text}, "finish_reason": null}]});
        write!(out, "data: {chunk}\n\n")?;
        out.flush()?;
    }
    let last = json!({"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]});
    let usage =
        json!({"choices": [], "usage": {"prompt_tokens": 11, "completion_tokens": chunks.len()}});
    write!(out, "data: {last}\n\ndata: {usage}\n\ndata: [DONE]\n\n")?;
    out.flush()?;
    Ok(())
}

/// The chunks of an answer with `secret` in its middle, drawn from `rng`.
fn answer_chunks(rng: &mut StdRng, secret: &str, n: usize) -> Vec<String> {
    const WORDS: [&str; 8] = [
        "the", "invoice", "was", "charged", "twice", "é", "refund", "now",
    ];
    (0..n)
        .map(|i| {
            if i == n / 2 {
                format!("{secret} ")
            } else {
                format!("{} ", WORDS[rng.gen_range(0..WORDS.len())])
            }
        })
        .collect()
}

fn start_worker(url: &str, llm: &FakeSse, log: &Path) -> Result<Proc> {
    let mut cmd = Command::new(bin("llm-stream-worker"));
    cmd.args(["--addr", url, "--task-queue", QUEUE])
        .env("STEADFAST_LLM_BASE_URL", llm.base_url())
        .env("STEADFAST_LLM_MODEL", "live-model")
        .env("RUST_LOG", "debug")
        .stdout(Stdio::null())
        .stderr(Stdio::from(File::create(log)?));
    Proc::spawn("llm-stream-worker", &mut cmd)
}

/// Everything a watcher received, in order.
type Seen = Arc<Mutex<Vec<pb::WatchRunResponse>>>;

fn spawn_watch(rt: &tokio::runtime::Runtime, client: &Client, run: &str) -> Seen {
    let seen: Seen = Arc::default();
    let (out, stream) = (seen.clone(), client.watch_live(run, 0));
    rt.spawn(async move {
        let mut stream = Box::pin(stream);
        while let Some(Ok(m)) = stream.next().await {
            out.lock().unwrap().push(m);
        }
    });
    seen
}

fn deltas(seen: &Seen) -> Vec<pb::ActivityDelta> {
    seen.lock()
        .unwrap()
        .iter()
        .filter_map(|m| m.delta.clone())
        .collect()
}

fn text_of(deltas: &[pb::ActivityDelta]) -> String {
    deltas.iter().map(|d| d.text.as_str()).collect()
}

/// Checks one watcher's stream: gapless deltas from offset 0 making up `expected`, all of
/// them before the ActivityCompleted of their activity.
fn check_watcher(name: &str, seen: &Seen, expected: &str) -> Result<()> {
    let all = seen.lock().unwrap().clone();
    let completed_at = all
        .iter()
        .position(|m| {
            matches!(
                m.event.as_ref().and_then(|e| e.attributes.as_ref()),
                Some(A::ActivityCompleted(_))
            )
        })
        .with_context(|| format!("{name}: no ActivityCompleted"))?;
    let mut end = 0u64;
    let mut text = String::new();
    for (i, m) in all.iter().enumerate() {
        let Some(d) = &m.delta else { continue };
        ensure!(m.event.is_none(), "{name}: a delta message with an event");
        ensure!(
            i < completed_at,
            "{name}: delta at {i} after the ActivityCompleted at {completed_at}"
        );
        ensure!(
            (d.activity_id, d.attempt, d.offset) == (1, 1, end),
            "{name}: delta {:?} out of order (expected activity 1, attempt 1, offset {end})",
            (d.activity_id, d.attempt, d.offset)
        );
        end += d.text.len() as u64;
        text.push_str(&d.text);
    }
    ensure!(
        text == expected,
        "{name}: streamed {text:?}, recorded {expected:?}"
    );
    Ok(())
}

#[test]
fn watchers_see_the_tokens_before_the_result_and_the_history_keeps_only_the_answer() -> Result<()> {
    let seed = test_seed();
    let mut rng = StdRng::seed_from_u64(seed);
    let secret = format!("streamed-{:016x}", rng.r#gen::<u64>());
    let chunks = answer_chunks(&mut rng, &secret, 24);
    let expected: String = chunks.concat();
    let first_part: String = chunks[..4].concat();

    let dir = tempfile::tempdir()?;
    let server_log = dir.path().join("server.log");
    let worker_log = dir.path().join("worker.log");
    let server = Server::start_logged(&dir.path().join("data"), &[], &server_log)?;
    let url = server.url();
    let llm = FakeSse::start(chunks.clone(), 4)?;
    let _worker = start_worker(&url, &llm, &worker_log)?;

    let rt = runtime();
    let client = rt.block_on(Client::connect(url.as_str()))?;
    let run = rt
        .block_on(client.start_workflow(
            "live.chat",
            &json!({"prompt": "what happened to my invoice?"}),
            StartOptions {
                task_queue: Some(QUEUE.into()),
                ..Default::default()
            },
        ))?
        .run_id;
    let early = spawn_watch(&rt, &client, &run);
    // The CLI, from the start: prints the text as it arrives, then the events.
    let mut cli = Command::new(bin("steadfast"));
    cli.args(["run", "watch", &run])
        .env("STEADFAST_ADDR", &url)
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    let mut cli = Proc::spawn("steadfast run watch", &mut cli)?;
    let mut cli_out = cli.take_stdout().context("cli stdout")?;

    // Mid-generation: 4 chunks out, the rest held at the gate.
    wait_for(WAIT, "the first chunks at the early watcher", || {
        (text_of(&deltas(&early)) == first_part).then_some(())
    })?;
    let late = spawn_watch(&rt, &client, &run);
    wait_for(WAIT, "the buffer at the late watcher", || {
        (text_of(&deltas(&late)) == first_part).then_some(())
    })?;
    let got = deltas(&late);
    ensure!(
        got[0].offset == 0,
        "the late watcher's first delta starts at {}, not at the attempt's start",
        got[0].offset
    );

    llm.open(usize::MAX);
    let result: serde_json::Value = rt.block_on(client.await_result(&run, WAIT))?;
    ensure!(
        result["text"] == json!(expected),
        "recorded {result}, streamed {expected:?}"
    );
    for (name, seen) in [("early watcher", &early), ("late watcher", &late)] {
        wait_run_completed(seen)?;
        check_watcher(name, seen, &expected)?;
    }

    // The CLI printed the text under its header, and only then the completion.
    let mut printed = String::new();
    cli_out.read_to_string(&mut printed)?;
    let text_at = printed
        .find(&expected.trim_end().to_string())
        .with_context(|| format!("run watch did not print the streamed text: {printed}"))?;
    let header = printed
        .find("--- live output of activity 1 (attempt 1) ---")
        .context("no live-output header")?;
    let completed = printed
        .find("ActivityCompleted")
        .with_context(|| format!("no ActivityCompleted line: {printed}"))?;
    ensure!(
        header < text_at && text_at < completed,
        "run watch printed the text after the completion: {printed}"
    );

    // The history: the text only in the recorded answer (and the run's result, which the
    // workflow returns it in), no progress records.
    let history = steadfast_tests::history(&rt, &url, &run)?;
    let mut holding = Vec::new();
    for e in &history {
        let encoded = prost::Message::encode_to_vec(e);
        if encoded
            .windows(secret.len())
            .any(|w| w == secret.as_bytes())
        {
            holding.push(events_name(e));
        }
        ensure!(
            !matches!(e.attributes, Some(A::ActivityProgress(_))),
            "a progress record in the history: {e:?}"
        );
    }
    ensure!(
        holding == ["ActivityCompleted", "RunCompleted"],
        "the streamed text is in {holding:?}, expected only the answer and the run's result"
    );
    ensure!(llm.requests.lock().unwrap().len() == 1, "one generation");

    // Deltas are payloads: in no log, at debug level.
    drop(_worker);
    for log in [&server_log, &worker_log] {
        let text = std::fs::read_to_string(log)?;
        ensure!(!text.is_empty(), "{} is empty", log.display());
        ensure!(
            !text.contains(&secret),
            "{} holds the streamed text",
            log.display()
        );
    }
    Ok(())
}

fn events_name(e: &pb::HistoryEvent) -> String {
    pb::EventKind::try_from(e.kind)
        .map(|k| {
            k.as_str_name()
                .trim_start_matches("EVENT_KIND_")
                .to_string()
        })
        .unwrap_or_default()
        .split('_')
        .map(|w| {
            let mut c = w.chars();
            c.next()
                .map(|f| {
                    f.to_uppercase()
                        .chain(c.flat_map(char::to_lowercase))
                        .collect()
                })
                .unwrap_or_default()
        })
        .collect::<Vec<String>>()
        .concat()
}

#[test]
fn a_superseded_attempt_s_deltas_are_refused_and_a_new_attempt_starts_over() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let server = Server::start(dir.path(), None)?;
    let rt = runtime();
    rt.block_on(async {
        let url = server.url();
        let mut raw = Raw::connect(&url).await?;
        let ns = "default";
        let run = raw.start(ns, "live.raw").await?;
        let task = raw.expect_workflow(ns, &["live.raw"], 10_000).await?;
        let options = pb::ActivityOptions {
            start_to_close_timeout_ms: 60_000,
            retry: Some(pb::RetryPolicy {
                initial_interval_ms: 10,
                maximum_attempts: 5,
                ..Default::default()
            }),
            ..Default::default()
        };
        raw.complete_workflow(ns, &task.task_token, vec![schedule(1, "stream", options)])
            .await?;
        let decl = [("stream", pb::Effect::Read)];
        let first = raw
            .poll_activity(ns, &["stream"], &decl, 10_000)
            .await?
            .context("attempt 1")?;
        let client = Client::connect(url.as_str()).await?;
        let mut watch = Box::pin(client.watch_live(&run, 0));
        let publish =
            |token: &str, attempt: u32, offset: u64, text: &str| pb::PublishActivityDeltasRequest {
                namespace: ns.into(),
                task_token: token.into(),
                attempt,
                deltas: vec![pb::ActivityDelta {
                    offset,
                    text: text.into(),
                    ..Default::default()
                }],
            };
        let mut w = raw.worker.clone();
        w.publish_activity_deltas(publish(&first.task_token, 1, 0, "first try"))
            .await?;
        let d = next_delta(&mut watch).await?;
        ensure!(
            (d.attempt, d.offset, d.text.as_str()) == (1, 0, "first try"),
            "{d:?}"
        );
        // The token names attempt 1: a request claiming another is refused.
        let wrong = w
            .publish_activity_deltas(publish(&first.task_token, 2, 9, "x"))
            .await
            .expect_err("a wrong attempt number");
        ensure!(wrong.code() == Code::InvalidArgument, "{wrong:?}");

        raw.fail_activity(ns, &first.task_token).await?;
        let second = raw
            .poll_activity(ns, &["stream"], &decl, 10_000)
            .await?
            .context("attempt 2")?;
        ensure!(second.attempt == 2, "attempt {}", second.attempt);
        let stale = w
            .publish_activity_deltas(publish(&first.task_token, 1, 9, " late"))
            .await
            .expect_err("a superseded attempt's deltas");
        ensure!(
            stale.code() == Code::FailedPrecondition && stale.message().contains("superseded"),
            "{stale:?}"
        );
        w.publish_activity_deltas(publish(&second.task_token, 2, 0, "second try"))
            .await?;
        let d = next_delta(&mut watch).await?;
        ensure!(
            (d.attempt, d.offset, d.text.as_str()) == (2, 0, "second try"),
            "the stale delta reached the watcher, or the new attempt did not start over: {d:?}"
        );
        // A watcher that joins now gets the current attempt's buffer only.
        let mut late = Box::pin(client.watch_live(&run, 0));
        let d = next_delta(&mut late).await?;
        ensure!(
            (d.attempt, d.offset, d.text.as_str()) == (2, 0, "second try"),
            "{d:?}"
        );
        raw.complete_activity(ns, &second.task_token, "\"done\"")
            .await?;
        // Closed: a publish now tells the worker to stop.
        let closed = w
            .publish_activity_deltas(publish(&second.task_token, 2, 10, "!"))
            .await?
            .into_inner();
        ensure!(closed.cancel_requested, "{closed:?}");
        anyhow::Ok(())
    })
}

async fn next_delta(
    stream: &mut (
             impl futures::Stream<Item = Result<pb::WatchRunResponse, steadfast_sdk::client::Error>>
             + Unpin
         ),
) -> Result<pb::ActivityDelta> {
    tokio::time::timeout(WAIT, async {
        while let Some(m) = stream.next().await {
            if let Some(d) = m?.delta {
                return Ok(d);
            }
        }
        anyhow::bail!("the watch ended without a delta")
    })
    .await
    .context("no delta in time")?
}

/// Waits until `seen` holds the run's RunCompleted.
fn wait_run_completed(seen: &Seen) -> Result<()> {
    wait_for(WAIT, "the watcher's terminal event", || {
        seen.lock()
            .unwrap()
            .iter()
            .any(|m| {
                matches!(
                    m.event.as_ref().and_then(|e| e.attributes.as_ref()),
                    Some(A::RunCompleted(_))
                )
            })
            .then_some(())
    })
}

#[test]
fn watchers_on_another_node_see_the_tokens_too() -> Result<()> {
    let Some(pg) = PgCluster::shared() else {
        return Ok(());
    };
    let seed = test_seed();
    let mut rng = StdRng::seed_from_u64(seed);
    let secret = format!("relayed-{:016x}", rng.r#gen::<u64>());
    let chunks = answer_chunks(&mut rng, &secret, 24);
    let expected: String = chunks.concat();
    let held = 3 + rng.gen_range(0..6);
    let first_part: String = chunks[..held].concat();

    let db = pg.create_database("live_nodes");
    let dir = tempfile::tempdir()?;
    let nodes = (0..2)
        .map(|i| {
            Server::start_logged(
                &dir.path().join(format!("node{i}")),
                &["--store", &db],
                &dir.path().join(format!("node{i}.log")),
            )
        })
        .collect::<Result<Vec<_>>>()?;
    let (a, b) = (nodes[0].url(), nodes[1].url());
    let llm = FakeSse::start(chunks.clone(), held)?;
    // The worker talks to node A only: its text reaches B through PostgreSQL or not at all.
    let worker = start_worker(&a, &llm, &dir.path().join("worker.log"))?;

    let rt = runtime();
    let on_a = rt.block_on(Client::connect(a.as_str()))?;
    let on_b = rt.block_on(Client::connect(b.as_str()))?;
    let run = rt
        .block_on(on_b.start_workflow(
            "live.chat",
            &json!({"prompt": "what happened to my invoice?"}),
            StartOptions {
                task_queue: Some(QUEUE.into()),
                ..Default::default()
            },
        ))?
        .run_id;
    let early_a = spawn_watch(&rt, &on_a, &run);
    let early_b = spawn_watch(&rt, &on_b, &run);
    wait_for(WAIT, "the first chunks at the watcher on node B", || {
        (text_of(&deltas(&early_b)) == first_part).then_some(())
    })?;
    // Joins mid-generation on B: the buffer B kept of A's relayed text, from offset 0.
    let late_b = spawn_watch(&rt, &on_b, &run);
    wait_for(WAIT, "the buffer at the late watcher on node B", || {
        (text_of(&deltas(&late_b)) == first_part).then_some(())
    })?;

    llm.open(usize::MAX);
    let result: serde_json::Value = rt.block_on(on_b.await_result(&run, WAIT))?;
    ensure!(
        result["text"] == json!(expected),
        "recorded {result}, streamed {expected:?}"
    );
    for (name, seen) in [
        ("watcher on node A", &early_a),
        ("watcher on node B", &early_b),
        ("late watcher on node B", &late_b),
    ] {
        wait_run_completed(seen)?;
        check_watcher(name, seen, &expected)?;
    }
    ensure!(llm.requests.lock().unwrap().len() == 1, "one generation");
    // Relayed text is a payload too: in neither node's debug log.
    drop(worker);
    drop(nodes);
    for i in 0..2 {
        let log = dir.path().join(format!("node{i}.log"));
        let text = std::fs::read_to_string(&log)?;
        ensure!(!text.is_empty(), "{} is empty", log.display());
        if let Some(line) = text.lines().find(|l| l.contains(&secret)) {
            let shown: String = line.chars().take(300).collect();
            anyhow::bail!("{} holds the relayed text: {shown}", log.display());
        }
    }
    Ok(())
}
