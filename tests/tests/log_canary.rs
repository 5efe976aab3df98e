//! Issue 12 point 5: no secrets or payloads in logs. A random secret (from the printed seed;
//! `TEST_SEED=...` replays it) is planted in a workflow input, hence in the activities'
//! arguments and results (`hello-worker` greets, shouts and signs the name), in a signal's
//! payload, in the client's and the worker's auth tokens (and a wrong token, refused), and in
//! an agent's LLM calls: `canary-worker` sends it in the prompt of `llm.chat` over HTTP to a
//! fake OpenAI-compatible API served by this test (API key derived from the secret too), the
//! model answers with a tool call whose arguments hold it, the tool returns it, and the
//! second call carries the tool's result. Server, workers and CLI run at [`RUST_LOG`] (debug
//! everywhere, so hyper, h2, tonic and reqwest log at debug; trace for our crates) with their
//! stderr in files; no line of any of them may hold the secret, in clear or encoded
//! ([`needles`]), or any long piece of it.

use std::fs::File;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use anyhow::{Context, Result};
use rand::{Rng, SeedableRng};
use steadfast_tests::{Proc, Server, bin, run_bounded, secure, test_seed};

/// A piece of the secret this long found in a log counts as a leak (shorter pieces of random
/// hex turn up by chance in hashes and ids).
const PIECE_CHARS: usize = 12;

/// The log level of every process: debug for all crates (the HTTP/2 and HTTP/1 stacks, tonic,
/// reqwest: what a user turning on `RUST_LOG=debug` gets), trace for ours.
const RUST_LOG: &str = "debug,steadfast=trace,steadfast_server=trace,steadfast_engine=trace,\
                        steadfast_sdk=trace,hello_worker=trace,canary_worker=trace";

fn cli(url: &str, token: &str, args: &[&str], log: &mut String) -> Result<(i32, String)> {
    let mut cmd = Command::new(bin("steadfast"));
    cmd.args(args)
        .env("STEADFAST_ADDR", url)
        .env("STEADFAST_TOKEN", token)
        .env("RUST_LOG", RUST_LOG);
    let (code, out, err) = run_bounded(&mut cmd, Duration::from_secs(90))?;
    log.push_str(&err);
    Ok((code, out))
}

/// Every line of a `--log-format json` log is one JSON object (but the address lines the
/// harness reads); the updates of `run` carry its id and workflow type as span fields, and
/// those an activity's report made carry the activity (type, id, attempt) too.
fn json_lines(text: &str, run: &str) -> Result<()> {
    let mut of_run = 0;
    let mut of_activity = 0;
    for line in text.lines() {
        if line.starts_with("steadfast server listening on ") {
            continue;
        }
        let v: serde_json::Value = serde_json::from_str(line)
            .with_context(|| format!("not a JSON log line: {}", &line[..line.len().min(200)]))?;
        anyhow::ensure!(
            v["level"].is_string() && v["timestamp"].is_string(),
            "no level or timestamp: {line}"
        );
        let span = &v["span"];
        if v["message"] == "run updated" && span["run"] == run {
            anyhow::ensure!(
                span["workflow_type"] == "hello" && span["seq"].as_u64().is_some_and(|s| s > 1),
                "the run's fields: {line}"
            );
            of_run += 1;
            let report = v["spans"].as_array().and_then(|spans| {
                spans
                    .iter()
                    .find(|s| s["name"] == "activity_report" && s["run"] == run)
            });
            if let Some(a) = report {
                anyhow::ensure!(
                    a["activity"]
                        .as_str()
                        .is_some_and(|t| t.starts_with("hello."))
                        && a["activity_id"].as_u64().is_some_and(|id| id >= 1)
                        && a["attempt"].as_u64().is_some_and(|n| n >= 1),
                    "the activity's fields: {line}"
                );
                of_activity += 1;
            }
        }
    }
    anyhow::ensure!(of_run > 0, "no JSON line of an update of run {run}");
    anyhow::ensure!(
        of_activity > 0,
        "no JSON line of an update of run {run} made by an activity's report"
    );
    Ok(())
}

/// Standard base64 (with padding) or URL-safe base64 (without), written here to keep the
/// harness's dependencies small.
fn base64(data: &[u8], url_safe: bool) -> String {
    let table: &[u8; 64] = if url_safe {
        b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    } else {
        b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
    };
    let mut out = String::new();
    for chunk in data.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..=chunk.len() {
            out.push(table[(n >> (18 - 6 * i) & 63) as usize] as char);
        }
        if !url_safe {
            out.extend(std::iter::repeat_n('=', 3 - chunk.len()));
        }
    }
    out
}

/// What a leak of `secret` looks like: every `PIECE_CHARS`-long piece of it in clear, of its
/// bytes in hex (either case), and of its base64 encodings (standard and URL-safe, from each of
/// the three alignments a secret inside a longer text can take; the last, partial group left
/// out). The secret is ASCII letters and digits, so its JSON-escaped, Rust-`Debug`-escaped and
/// percent-encoded forms are the clear text itself (the prompts put quotes and newlines around
/// it, so the escaping does happen around it).
fn needles(secret: &str) -> Vec<String> {
    let hex: String = secret.bytes().map(|b| format!("{b:02x}")).collect();
    let mut encoded = vec![secret.to_owned(), hex.clone(), hex.to_uppercase()];
    for skip in 0..3 {
        for url_safe in [false, true] {
            let b = base64(&secret.as_bytes()[skip..], url_safe);
            let whole = (secret.len() - skip) / 3 * 4;
            encoded.push(b[..whole].to_owned());
        }
    }
    let mut out: Vec<String> = encoded
        .iter()
        .flat_map(|e| (0..=e.len() - PIECE_CHARS).map(move |i| e[i..i + PIECE_CHARS].to_owned()))
        .collect();
    out.sort();
    out.dedup();
    out
}

/// The lines of `text` that hold the secret or a piece of it, in clear or encoded.
fn leaks(text: &str, needles: &[String]) -> Vec<String> {
    text.lines()
        .filter(|l| needles.iter().any(|p| l.contains(p.as_str())))
        .map(|l| l.chars().take(300).collect())
        .collect()
}

/// One request the fake LLM API received: its `Authorization` header and its body.
#[derive(Debug, Clone)]
struct LlmRequest {
    authorization: String,
    body: String,
}

/// A fake OpenAI-compatible API on a free loopback port (`POST /v1/chat/completions`, one
/// request per connection): a request without a tool result is answered with a call of
/// `canary_lookup` whose arguments hold the secret, one with a tool result with a text that
/// holds it. Stopped (its thread joined) on drop.
struct FakeLlm {
    addr: SocketAddr,
    received: Arc<Mutex<Vec<LlmRequest>>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl FakeLlm {
    fn start(secret: &str) -> Result<FakeLlm> {
        let listener = TcpListener::bind("127.0.0.1:0")?;
        let addr = listener.local_addr()?;
        let received = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (log, stopped, secret) = (received.clone(), stop.clone(), secret.to_owned());
        let thread = std::thread::spawn(move || {
            for stream in listener.incoming() {
                if stopped.load(Ordering::SeqCst) {
                    break;
                }
                if let Ok(stream) = stream
                    && let Err(e) = answer(stream, &secret, &log)
                {
                    eprintln!("[fake llm] {e:#}");
                }
            }
        });
        Ok(FakeLlm {
            addr,
            received,
            stop,
            thread: Some(thread),
        })
    }

    fn base_url(&self) -> String {
        format!("http://{}/v1", self.addr)
    }

    fn received(&self) -> Vec<LlmRequest> {
        self.received.lock().expect("fake llm log").clone()
    }
}

impl Drop for FakeLlm {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wakes the accept loop, which then sees the flag.
        let _ = TcpStream::connect(self.addr);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn answer(stream: TcpStream, secret: &str, log: &Mutex<Vec<LlmRequest>>) -> Result<()> {
    stream.set_read_timeout(Some(Duration::from_secs(30)))?;
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut request_line = String::new();
    reader.read_line(&mut request_line)?;
    let (mut length, mut authorization) = (0usize, String::new());
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line)? == 0 || line == "\r\n" {
            break;
        }
        if let Some((k, v)) = line.split_once(':') {
            match k.trim().to_ascii_lowercase().as_str() {
                "content-length" => length = v.trim().parse()?,
                "authorization" => authorization = v.trim().to_owned(),
                _ => {}
            }
        }
    }
    let mut body = vec![0; length];
    reader.read_exact(&mut body)?;
    let body = String::from_utf8(body)?;
    anyhow::ensure!(
        request_line.starts_with("POST /v1/chat/completions "),
        "unexpected request {request_line:?}"
    );
    let message = if body.contains(r#""role":"tool""#) {
        serde_json::json!({"role": "assistant", "content": format!("Account \"{secret}\" is active.")})
    } else {
        let arguments = serde_json::json!({ "key": secret }).to_string();
        serde_json::json!({"role": "assistant", "content": null, "tool_calls": [{
            "id": "call_1", "type": "function",
            "function": {"name": "canary_lookup", "arguments": arguments},
        }]})
    };
    let reply = serde_json::json!({
        "id": "chatcmpl-canary", "object": "chat.completion", "model": "canary-model",
        "choices": [{"index": 0, "message": message}],
        "usage": {"prompt_tokens": 40, "completion_tokens": 12},
    })
    .to_string();
    log.lock().expect("fake llm log").push(LlmRequest {
        authorization,
        body,
    });
    let mut stream = stream;
    write!(
        stream,
        "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\
         connection: close\r\n\r\n{reply}",
        reply.len()
    )?;
    stream.flush()?;
    Ok(())
}

#[test]
fn a_planted_secret_appears_in_no_log_of_server_worker_or_cli() -> Result<()> {
    canary(&[])
}

/// The same with the server's logs as JSON lines (`--log-format json`): still no secret, and
/// every line is a JSON object; run updates carry the run id and workflow type as fields.
#[test]
fn a_planted_secret_appears_in_no_json_log_either() -> Result<()> {
    canary(&["--log-format", "json"])
}

fn canary(server_args: &[&str]) -> Result<()> {
    let seed = test_seed();
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let secret: String = (0..32)
        .map(|_| char::from_digit(rng.gen_range(0..16), 16).expect("hex digit"))
        .collect();
    let secret = format!("cnry{secret}");
    let needles = needles(&secret);
    // The detector itself: a piece of the secret inside a line is found, in clear and encoded.
    let planted = format!("debug: arg={}..", &secret[5..5 + PIECE_CHARS]);
    assert_eq!(
        leaks(&format!("clean\n{planted}\n"), &needles),
        vec![planted]
    );
    let hex: String = secret.bytes().map(|b| format!("{b:02X}")).collect();
    for encoded in [
        base64(secret.as_bytes(), false),
        base64(&secret.as_bytes()[1..], true),
        hex,
    ] {
        let line = format!("body={encoded}");
        assert_eq!(leaks(&line, &needles), vec![line.clone()]);
    }
    assert_eq!(base64(b"canary!", false), "Y2FuYXJ5IQ==");
    let client_token = format!("{secret}-client");
    let worker_token = format!("{secret}-worker");
    let api_key = format!("{secret}-llm-key");
    let llm = FakeLlm::start(&secret)?;

    let dir = tempfile::tempdir()?;
    let auth = dir.path().join("auth.txt");
    let lines = [
        secure::entry(&client_token, "canary-client", "client", "default")?,
        secure::entry(&worker_token, "canary-worker", "worker", "default")?,
    ];
    let refs: Vec<&str> = lines.iter().map(String::as_str).collect();
    secure::write_auth_file(&auth, &refs)?;
    let server_log = dir.path().join("server.log");
    let worker_log = dir.path().join("worker.log");
    let mut args = vec!["--auth-file", auth.to_str().context("utf-8 path")?];
    args.extend_from_slice(server_args);
    let server = Server::start_logged_at(&dir.path().join("data"), &args, &server_log, RUST_LOG)?;
    let url = server.url();
    let mut cmd = Command::new(bin("hello-worker"));
    cmd.args(["--addr", &url])
        .env("STEADFAST_TOKEN", &worker_token)
        .env("RUST_LOG", RUST_LOG)
        .stdout(Stdio::from(File::create(dir.path().join("worker.out"))?))
        .stderr(Stdio::from(File::create(&worker_log)?));
    let mut worker = Proc::spawn("hello-worker", &mut cmd)?;
    let agent_log = dir.path().join("agent.log");
    let mut cmd = Command::new(bin("canary-worker"));
    cmd.args(["--addr", &url, "--task-queue", "canary-agent"])
        .env("STEADFAST_TOKEN", &worker_token)
        .env("STEADFAST_LLM_BASE_URL", llm.base_url())
        .env("STEADFAST_LLM_API_KEY", &api_key)
        .env("STEADFAST_LLM_MODEL", "canary-model")
        .env("RUST_LOG", RUST_LOG)
        .stdout(Stdio::from(File::create(dir.path().join("agent.out"))?))
        .stderr(Stdio::from(File::create(&agent_log)?));
    let mut agent = Proc::spawn("canary-worker", &mut cmd)?;

    let mut cli_log = String::new();
    let input = format!(r#"{{"name":"{secret}"}}"#);
    let (code, out) = cli(
        &url,
        &client_token,
        &["run", "start", "hello", "--input", &input],
        &mut cli_log,
    )?;
    assert_eq!(code, 0, "start: {cli_log}");
    let run = out.trim().to_string();
    let (code, out) = cli(
        &url,
        &client_token,
        &["run", "result", &run, "--wait", "--timeout", "60s"],
        &mut cli_log,
    )?;
    assert_eq!(code, 0, "result: {cli_log}");
    // The activities ran with the secret as argument and returned it in their results.
    assert!(out.contains(&secret), "{out}");
    // A signal carrying the secret, to a run that waits (no worker serves its queue).
    let (code, out) = cli(
        &url,
        &client_token,
        &[
            "run",
            "start",
            "canary.idle",
            "--task-queue",
            "canary-nobody",
        ],
        &mut cli_log,
    )?;
    assert_eq!(code, 0, "start idle: {cli_log}");
    let idle = out.trim().to_string();
    let (code, _) = cli(
        &url,
        &client_token,
        &["run", "signal", &idle, "approve", "--input", &input],
        &mut cli_log,
    )?;
    assert_eq!(code, 0, "signal: {cli_log}");
    // An agent: the secret in an LLM prompt, a tool call's arguments, the tool's result and
    // the model's answer.
    let agent_input = format!(r#"{{"secret":"{secret}"}}"#);
    let (code, out) = cli(
        &url,
        &client_token,
        &[
            "run",
            "start",
            "canary.agent",
            "--task-queue",
            "canary-agent",
            "--input",
            &agent_input,
        ],
        &mut cli_log,
    )?;
    assert_eq!(code, 0, "start agent: {cli_log}");
    let agent_run = out.trim().to_string();
    let (code, out) = cli(
        &url,
        &client_token,
        &["run", "result", &agent_run, "--wait", "--timeout", "60s"],
        &mut cli_log,
    )?;
    assert_eq!(code, 0, "agent result: {cli_log}");
    assert!(
        out.contains(&secret) && out.contains(r#""tool_calls":1"#),
        "{out}"
    );
    // The fake API got both calls over HTTP, with the key and the secret in the prompts.
    let calls = llm.received();
    assert_eq!(calls.len(), 2, "{calls:?}");
    for c in &calls {
        assert_eq!(c.authorization, format!("Bearer {api_key}"));
        assert!(c.body.contains(&secret), "{}", c.body);
    }
    assert!(
        calls[1].body.contains(r#""role":"tool""#),
        "{}",
        calls[1].body
    );
    // A wrong token, refused: the refusal quotes none of it.
    let (code, _) = cli(
        &url,
        &format!("{secret}-wrong"),
        &["run", "list"],
        &mut cli_log,
    )?;
    assert_ne!(code, 0, "a wrong token was accepted: {cli_log}");

    worker.terminate(Duration::from_secs(10));
    agent.terminate(Duration::from_secs(10));
    drop(server);
    let server_text = std::fs::read_to_string(&server_log)?;
    let worker_text = std::fs::read_to_string(&worker_log)?;
    let agent_text = std::fs::read_to_string(&agent_log)?;
    // The logs were written at the levels asked (a test that read empty logs would prove
    // nothing): trace in the server, debug in the workers (the agent's HTTP client included)
    // and the CLI.
    assert!(
        server_text.contains("TRACE")
            && worker_text.contains("DEBUG")
            && agent_text.contains("llm request")
            && agent_text.contains("DEBUG hyper")
            && cli_log.contains("DEBUG"),
        "server log {} bytes, worker log {} bytes, agent log {} bytes, CLI log {} bytes: \
         not at the levels asked",
        server_text.len(),
        worker_text.len(),
        agent_text.len(),
        cli_log.len()
    );
    if server_args.contains(&"json") {
        json_lines(&server_text, &run)?;
    }
    let mut found = Vec::new();
    for (who, text) in [
        ("server", &server_text),
        ("worker", &worker_text),
        ("agent worker", &agent_text),
        ("cli", &cli_log),
    ] {
        eprintln!("{who}: {} log lines", text.lines().count());
        found.extend(
            leaks(text, &needles)
                .into_iter()
                .map(|l| format!("{who}: {l}")),
        );
    }
    assert!(
        found.is_empty(),
        "the secret (seed {seed}) is in {} log lines:\n{}",
        found.len(),
        found.join("\n")
    );
    Ok(())
}
