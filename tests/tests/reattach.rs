//! Re-attaching to a generation (issue 17, point 3): `llm.chat` over the OpenAI Responses API
//! in background mode records the provider's response id before it waits, so a worker
//! SIGKILLed mid-generation costs one generation, not two.
//!
//! The provider is a fake written here (axum on a free loopback port): it counts the
//! generations created, holds each one `in_progress` until the test releases it, answers
//! polls, forgets ids on demand (an expired response: 404) and records cancellations. The
//! worker is a real process (`llm-worker`, the SDK's own `llm.chat` configured from the
//! environment), killed with SIGKILL while the generation is in flight.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, ensure};
use axum::Router;
use axum::extract::{Path as UrlPath, State};
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::{get, post};
use serde_json::{Value, json};
use steadfast_proto::v1 as pb;
use steadfast_proto::v1::history_event::Attributes as A;
use steadfast_sdk::Client;
use steadfast_sdk::activity::{ActivityContext, ActivityInfo};
use steadfast_sdk::client::StartOptions;
use steadfast_sdk::llm::{self, ChatRequest, ChatResponse, LlmClient, LlmConfig, Message};
use steadfast_tests::{Proc, Server, bin, history, runtime, wait_for};

/// In the prompt and the API key: neither may appear in the worker's logs.
const PROMPT_CANARY: &str = "PROMPT-CANARY-7f3a";
const KEY_CANARY: &str = "sk-KEY-CANARY-91c2";
const WAIT: Duration = Duration::from_secs(60);

#[derive(Default)]
struct FakeState {
    /// Response ids in creation order (the number of generations paid for).
    created: Vec<String>,
    /// The bodies of the create requests.
    bodies: Vec<Value>,
    /// Ids the fake knows; a forgotten one answers 404.
    known: HashSet<String>,
    /// Released ids answer `completed`; the others stay `in_progress`.
    released: HashSet<String>,
    /// Release every generation as soon as it is created.
    release_all: bool,
    polls: HashMap<String, u32>,
    cancelled: Vec<String>,
    /// The next this many polls answer 503.
    failing_polls: u32,
}

type Shared = Arc<std::sync::Mutex<FakeState>>;

/// The fake Responses API.
struct Fake {
    state: Shared,
    addr: SocketAddr,
}

impl Fake {
    fn start(rt: &tokio::runtime::Runtime) -> Result<Fake> {
        let state: Shared = Arc::default();
        let app = Router::new()
            .route("/v1/responses", post(create))
            .route("/v1/responses/:id", get(retrieve))
            .route("/v1/responses/:id/cancel", post(cancel))
            .with_state(state.clone());
        let listener = rt.block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))?;
        let addr = listener.local_addr()?;
        rt.spawn(async move { axum::serve(listener, app).await });
        Ok(Fake { state, addr })
    }

    fn base_url(&self) -> String {
        format!("http://{}/v1", self.addr)
    }

    fn with<T>(&self, f: impl FnOnce(&mut FakeState) -> T) -> T {
        f(&mut self.state.lock().unwrap())
    }

    fn created(&self) -> Vec<String> {
        self.with(|s| s.created.clone())
    }
}

fn answer_text(id: &str) -> String {
    format!("the answer of {id}")
}

fn json_response(status: StatusCode, body: Value) -> impl IntoResponse {
    (
        status,
        [(header::CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
}

fn object(s: &FakeState, id: &str) -> Value {
    if s.cancelled.iter().any(|c| c == id) {
        return json!({"id": id, "object": "response", "status": "cancelled"});
    }
    if !s.released.contains(id) && !s.release_all {
        return json!({"id": id, "object": "response", "status": "in_progress"});
    }
    json!({
        "id": id, "object": "response", "status": "completed", "model": "fake-model-2025",
        "output": [
            {"type": "reasoning", "id": "rs_1", "summary": []},
            {"type": "message", "role": "assistant",
             "content": [{"type": "output_text", "text": answer_text(id), "annotations": []}]}
        ],
        "usage": {"input_tokens": 11, "output_tokens": 7, "total_tokens": 18}
    })
}

async fn create(State(state): State<Shared>, body: String) -> impl IntoResponse {
    let mut s = state.lock().unwrap();
    let body: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
    let id = format!("resp_{}", s.created.len() + 1);
    s.created.push(id.clone());
    s.bodies.push(body);
    s.known.insert(id.clone());
    json_response(
        StatusCode::OK,
        json!({"id": id, "object": "response", "status": "queued"}),
    )
}

async fn retrieve(State(state): State<Shared>, UrlPath(id): UrlPath<String>) -> impl IntoResponse {
    let mut s = state.lock().unwrap();
    *s.polls.entry(id.clone()).or_default() += 1;
    if s.failing_polls > 0 {
        s.failing_polls -= 1;
        return json_response(
            StatusCode::SERVICE_UNAVAILABLE,
            json!({"error": {"message": "overloaded"}}),
        );
    }
    if !s.known.contains(&id) {
        return json_response(
            StatusCode::NOT_FOUND,
            json!({"error": {"message": format!("Response with id '{id}' not found."), "type": "invalid_request_error"}}),
        );
    }
    json_response(StatusCode::OK, object(&s, &id))
}

async fn cancel(State(state): State<Shared>, UrlPath(id): UrlPath<String>) -> impl IntoResponse {
    let mut s = state.lock().unwrap();
    if !s.known.contains(&id) {
        return json_response(
            StatusCode::NOT_FOUND,
            json!({"error": {"message": "not found"}}),
        );
    }
    s.cancelled.push(id.clone());
    json_response(StatusCode::OK, object(&s, &id))
}

/// A server, the fake provider, and `llm-worker` processes pointed at both.
struct World {
    rt: tokio::runtime::Runtime,
    fake: Fake,
    server: Server,
    dir: tempfile::TempDir,
    workers: usize,
}

impl World {
    fn start() -> Result<World> {
        let dir = tempfile::tempdir()?;
        let server = Server::start(dir.path(), None)?;
        let rt = runtime();
        let fake = Fake::start(&rt)?;
        Ok(World {
            rt,
            fake,
            server,
            dir,
            workers: 0,
        })
    }

    /// Starts an `llm-worker` in background mode; its stderr goes to `worker-N.log`.
    fn worker(&mut self) -> Result<Proc> {
        self.workers += 1;
        let log = self.dir.path().join(format!("worker-{}.log", self.workers));
        let mut cmd = Command::new(bin("llm-worker"));
        cmd.args(["--addr", &self.server.url()])
            .env("STEADFAST_LLM_BASE_URL", self.fake.base_url())
            .env("STEADFAST_LLM_API", "responses")
            .env("STEADFAST_LLM_BACKGROUND", "true")
            .env("STEADFAST_LLM_MODEL", "fake-model")
            .env("STEADFAST_LLM_API_KEY", KEY_CANARY)
            // Everything the SDK logs, to check that none of it is a payload or a secret.
            .env("RUST_LOG", "warn,steadfast_sdk=debug")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log)?);
        Proc::spawn("llm-worker", &mut cmd)
    }

    fn log(&self, n: usize) -> Result<String> {
        let path = self.dir.path().join(format!("worker-{n}.log"));
        Ok(std::fs::read_to_string(path)?)
    }

    fn start_chat(&self) -> Result<String> {
        let request = ChatRequest::new([
            Message::system("answer briefly"),
            Message::user(format!("what is the answer? {PROMPT_CANARY}")),
        ]);
        self.rt.block_on(async {
            let client = Client::connect(self.server.url()).await?;
            let run = client
                .start_workflow("chat", &request, StartOptions::default())
                .await?;
            Ok(run.run_id)
        })
    }

    fn result(&self, run: &str) -> Result<ChatResponse> {
        self.rt.block_on(async {
            let client = Client::connect(self.server.url()).await?;
            Ok(client.await_result(run, WAIT).await?)
        })
    }

    fn history(&self, run: &str) -> Result<Vec<pb::HistoryEvent>> {
        history(&self.rt, &self.server.url(), run)
    }

    /// The run's recorded heartbeat details: (attempt, details as JSON).
    fn progress(&self, run: &str) -> Result<Vec<(u32, Value)>> {
        Ok(self
            .history(run)?
            .iter()
            .filter_map(|e| match &e.attributes {
                Some(A::ActivityProgress(p)) => Some((
                    p.attempt,
                    p.details
                        .as_ref()
                        .and_then(|d| serde_json::from_slice(&d.data).ok())
                        .unwrap_or(Value::Null),
                )),
                _ => None,
            })
            .collect())
    }

    /// Waits until the history holds a recorded heartbeat `details` of `attempt`.
    fn wait_recorded(&self, run: &str, attempt: u32, details: Value) -> Result<()> {
        wait_for(
            WAIT,
            &format!("attempt {attempt} to record {details}"),
            || {
                self.progress(run)
                    .ok()
                    .filter(|p| p.contains(&(attempt, details.clone())))
            },
        )?;
        Ok(())
    }

    /// The attempts that completed the activity.
    fn completed_attempts(&self, run: &str) -> Result<Vec<u32>> {
        Ok(self
            .history(run)?
            .iter()
            .filter_map(|e| match &e.attributes {
                Some(A::ActivityCompleted(c)) => Some(c.attempt),
                _ => None,
            })
            .collect())
    }

    /// Neither the prompt nor the API key is in a worker's log.
    fn logs_are_clean(&self) -> Result<()> {
        for n in 1..=self.workers {
            let log = self.log(n)?;
            ensure!(
                !log.contains(PROMPT_CANARY),
                "worker {n} logged the prompt:\n{log}"
            );
            ensure!(
                !log.contains(KEY_CANARY),
                "worker {n} logged the API key:\n{log}"
            );
            ensure!(
                !log.contains(&answer_text("resp_")),
                "worker {n} logged the answer:\n{log}"
            );
        }
        Ok(())
    }
}

#[test]
fn a_worker_killed_mid_generation_costs_one_generation() -> Result<()> {
    let mut w = World::start()?;
    let mut first = w.worker()?;
    let run = w.start_chat()?;
    // The id is in the history before the attempt waits on the generation.
    w.wait_recorded(&run, 1, json!({"response_id": "resp_1"}))?;
    ensure!(w.fake.created() == ["resp_1"], "{:?}", w.fake.created());
    let body = w.fake.with(|s| s.bodies[0].clone());
    ensure!(
        body["background"] == json!(true) && body["store"] == json!(true),
        "{body}"
    );
    ensure!(body["model"] == "fake-model", "{body}");
    ensure!(body["input"][1]["role"] == "user", "{body}");
    ensure!(
        body["metadata"]["steadfast_idempotency_key"]
            .as_str()
            .is_some_and(|k| k.contains(&run)),
        "{body}"
    );

    first.kill9();
    let _second = w.worker()?;
    // Attempt 2 found the id its killed predecessor recorded and polls it: still in flight.
    w.wait_recorded(
        &run,
        2,
        json!({"response_id": "resp_1", "reattached": true}),
    )?;
    ensure!(w.fake.created() == ["resp_1"], "{:?}", w.fake.created());
    w.fake.with(|s| s.released.insert("resp_1".into()));

    let answer = w.result(&run)?;
    ensure!(answer.text() == answer_text("resp_1"), "{answer:?}");
    ensure!(answer.finish_reason == "stop", "{answer:?}");
    ensure!(
        (answer.usage.input_tokens, answer.usage.output_tokens) == (11, 7),
        "{answer:?}"
    );
    ensure!(answer.model == "fake-model-2025", "{answer:?}");
    ensure!(
        w.fake.created() == ["resp_1"],
        "one generation paid for, not two: {:?}",
        w.fake.created()
    );
    ensure!(w.completed_attempts(&run)? == [2], "completed by attempt 2");
    let progress = w.progress(&run)?;
    ensure!(
        progress
            == [
                (1, json!({"response_id": "resp_1"})),
                (2, json!({"response_id": "resp_1", "reattached": true}))
            ],
        "{progress:?}"
    );
    let info = steadfast_tests::describe(&w.rt, &w.server.url(), &run)?;
    let usage = info.usage.context("run usage")?;
    ensure!(
        (usage.input_tokens, usage.output_tokens) == (11, 7),
        "{usage:?}"
    );
    w.logs_are_clean()
}

#[test]
fn an_unknown_id_on_retry_starts_exactly_one_new_generation() -> Result<()> {
    let mut w = World::start()?;
    let mut first = w.worker()?;
    let run = w.start_chat()?;
    w.wait_recorded(&run, 1, json!({"response_id": "resp_1"}))?;
    first.kill9();
    // The provider expired the response meanwhile; the next one is answered at once.
    w.fake.with(|s| {
        s.known.remove("resp_1");
        s.release_all = true;
    });
    let _second = w.worker()?;
    let answer = w.result(&run)?;
    ensure!(answer.text() == answer_text("resp_2"), "{answer:?}");
    ensure!(
        w.fake.created() == ["resp_1", "resp_2"],
        "exactly one new generation: {:?}",
        w.fake.created()
    );
    ensure!(
        w.fake.with(|s| s.polls.get("resp_1").copied().unwrap_or(0)) >= 1,
        "the retry asked for the recorded id first"
    );
    let progress = w.progress(&run)?;
    ensure!(
        progress
            == [
                (1, json!({"response_id": "resp_1"})),
                (2, json!({"response_id": "resp_2"}))
            ],
        "{progress:?}"
    );
    let log = w.log(2)?;
    ensure!(
        log.contains("no longer knows the recorded response") && log.contains("resp_1"),
        "the worker says it started a new generation:\n{log}"
    );
    w.logs_are_clean()
}

#[test]
fn cancelling_the_run_cancels_the_generation_at_the_provider() -> Result<()> {
    let mut w = World::start()?;
    let _worker = w.worker()?;
    let run = w.start_chat()?;
    w.wait_recorded(&run, 1, json!({"response_id": "resp_1"}))?;
    w.rt.block_on(async {
        let client = Client::connect(w.server.url()).await?;
        client.cancel(&run, "test").await?;
        anyhow::Ok(())
    })?;
    wait_for(WAIT, "the provider to see the cancel", || {
        w.fake
            .with(|s| s.cancelled.contains(&"resp_1".to_owned()))
            .then_some(())
    })?;
    let info = wait_for(WAIT, "the run to close", || {
        steadfast_tests::describe(&w.rt, &w.server.url(), &run)
            .ok()
            .filter(|i| i.status != pb::RunStatus::Running as i32)
    })?;
    // The workflow sees its call end cancelled; the run ends without an answer.
    ensure!(
        info.status != pb::RunStatus::Completed as i32,
        "status {}",
        info.status
    );
    ensure!(w.fake.created() == ["resp_1"], "{:?}", w.fake.created());
    w.logs_are_clean()
}

/// A client of the fake in background mode, in this process (no worker, no server).
fn direct_client(fake: &Fake) -> Result<LlmClient> {
    Ok(LlmClient::new(
        LlmConfig::openai_compatible(fake.base_url())
            .model("fake-model")
            .responses_api(true)
            .poll_interval(Duration::from_millis(10), Duration::from_millis(20)),
    )?)
}

#[test]
fn an_id_that_cannot_be_recorded_cancels_its_generation_and_fails_retryably() -> Result<()> {
    let rt = runtime();
    let fake = Fake::start(&rt)?;
    let client = direct_client(&fake)?;
    // A context with no worker behind it: record_heartbeat cannot reach a server.
    let ctx = ActivityContext::new(ActivityInfo::default());
    let request = ChatRequest::new([Message::user("hi")]);
    let e = rt
        .block_on(client.chat_for(&ctx, &request))
        .expect_err("an unrecorded generation is not waited on");
    ensure!(matches!(e, llm::Error::NotRecorded(_)), "{e}");
    ensure!(e.is_retryable(), "{e}");
    ensure!(fake.created() == ["resp_1"], "{:?}", fake.created());
    ensure!(
        fake.with(|s| s.cancelled.clone()) == ["resp_1"],
        "the unrecorded generation is cancelled, not left running to be paid for"
    );
    Ok(())
}

#[test]
fn transient_poll_failures_are_waited_out_up_to_the_limit() -> Result<()> {
    let rt = runtime();
    let fake = Fake::start(&rt)?;
    let client = direct_client(&fake)?;
    let request = ChatRequest::new([Message::user("hi")]);
    fake.with(|s| {
        s.release_all = true;
        s.failing_polls = llm::responses::POLL_ERRORS_MAX;
    });
    let answer = rt.block_on(client.chat(&request))?;
    ensure!(answer.text() == answer_text("resp_1"), "{answer:?}");

    fake.with(|s| s.failing_polls = llm::responses::POLL_ERRORS_MAX + 1);
    let e = rt
        .block_on(client.chat(&request))
        .expect_err("one failure past the limit ends the call");
    ensure!(
        e.error_type() == llm::SERVER_ERROR_TYPE && e.is_retryable(),
        "{e}"
    );
    ensure!(
        fake.created() == ["resp_1", "resp_2"],
        "{:?}",
        fake.created()
    );
    Ok(())
}
