//! `agent-worker`: the worker of the agent tests (tests/tests/agent_*.rs): LLM-like calls that
//! report usage, tools typed by effect, a human in the loop, progress and cancellation.
//!
//! ```text
//! agent-worker --addr http://127.0.0.1:PORT --log SIDE_FILE [--task-queue Q]
//! ```
//! It runs with the SDK's default [`WorkerOptions`] (heartbeat interval included), so what the
//! tests measure is what users get.
//!
//! The side file gets one JSON object per line, appended with `O_APPEND` and synced before the
//! activity goes on, so it survives a SIGKILL of the worker:
//! - `{"ev":"start","run","id","attempt","type","key","traceparent","pid","t_us", ...}` when
//!   an activity attempt starts, before it does anything (`traceparent`: what the context
//!   gave, null when the server exports no traces);
//! - `{"ev":"cancelled","run","id","attempt","t_us"}` when a `work` attempt observes its
//!   cancellation (`t_us`: wall clock, microseconds since the epoch).
//!
//! Workflows (JSON inputs; absent fields take their defaults):
//! - `llm_agent` `{steps, input_tokens, output_tokens, cost_micros, model}`: `steps` sequential
//!   `llm` calls, each reporting that usage; returns `{"replies": [...]}`.
//! - `human` `{question, choices, signal}`: waits for `signal` (default `approve`) with the
//!   question and choices; returns `{"answer": <its input>}`.
//! - `sleeper` `{ms}`: one durable timer.
//! - `tool_call` `{tool, hang_ms, hang_attempts, start_to_close_ms, task_queue,
//!   retry_initial_ms, max_attempts, approval}`: one call of activity `tool` (`write_tool`,
//!   `idem_tool`, `read_tool`, `gated_tool` (a write whose registration requires approval),
//!   `flaky`, `huge_result`, which returns 3 MiB, or `oversized_result`, which
//!   returns 9 MiB, over the server's 8 MiB request limit), asking a human first with reason
//!   `approval` when given; returns `{"tool": <result>}`, `{"denied": <message>}` when a
//!   human denied it, or `{"error": <failure message>}`;
//!   cancelled, it ends with `{"tool": <name>, "cancelled": true}`.
//! - `cancel_pending` `{delay_ms}`: calls `flaky`, and `delay_ms` later (while it backs off)
//!   cancels it; returns `{"cancelled": <activity id>}`.
//! - `cancel_then_continue` `{mode}`: schedules one activity (`queued`: `read_tool` on a queue
//!   nobody polls; `backoff`: `flaky`, which then waits 10 minutes to retry; `running`:
//!   `read_tool` hanging 10 minutes on its first attempt), waits for signal `go`, then in one
//!   workflow task cancels it, schedules `read_tool` and reports progress; returns
//!   `{"cancelled": <id>, "next": <read_tool's result>}` (issue 10: the server's confirmation
//!   of the cancel used to split that task's commands, and replay reported [STF-ND001]).
//! - `steps` `{n, step_ms, slow_step, slow_ms, gate_at}`: `n` `work` steps, each reported with
//!   `ctx.progress` and followed by a partial result `{"done": [...]}`; step `slow_step` takes
//!   `slow_ms`; before step `gate_at` it waits for signal `go`. On a cancellation it ends
//!   cancelled with `{"done": [...], "cancelled_at": i}`.

use std::fs::OpenOptions;
use std::io::Write;
use std::path::PathBuf;
use std::sync::OnceLock;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use steadfast_proto::v1 as pb;
use steadfast_sdk::activity::{ActivityContext, ActivityError};
use steadfast_sdk::worker::{Worker, WorkerOptions};
use steadfast_sdk::workflow::{ActivityOptions, RetryPolicy, WaitSignalOptions};
use steadfast_sdk::{Effect, WorkflowContext, WorkflowError};

/// The command line (parsed by hand: this crate's dependencies stay those of the harness).
struct Args {
    /// Server address.
    addr: String,
    /// Task queue to poll.
    task_queue: String,
    /// The side file activity attempts append to.
    log: PathBuf,
}

impl Args {
    fn parse() -> anyhow::Result<Args> {
        let mut addr = "http://127.0.0.1:7233".to_string();
        let mut task_queue = "default".to_string();
        let mut log = None;
        let mut it = std::env::args().skip(1);
        while let Some(flag) = it.next() {
            let mut value = || {
                it.next()
                    .ok_or_else(|| anyhow::anyhow!("{flag} needs a value"))
            };
            match flag.as_str() {
                "--addr" => addr = value()?,
                "--task-queue" => task_queue = value()?,
                "--log" => log = Some(PathBuf::from(value()?)),
                other => anyhow::bail!(
                    "unknown flag {other}: agent-worker --addr URL --log FILE [--task-queue Q]"
                ),
            }
        }
        let log = log.ok_or_else(|| anyhow::anyhow!("--log FILE is required"))?;
        Ok(Args {
            addr,
            task_queue,
            log,
        })
    }
}

static SIDE_FILE: OnceLock<PathBuf> = OnceLock::new();

/// Wall clock in microseconds since the epoch: the tests compare it with their own clock.
fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0)
}

/// Appends one JSON line to the side file and syncs it (blocking; lines are short).
fn side_append(mut line: Value) -> Result<(), ActivityError> {
    line["pid"] = json!(std::process::id());
    line["t_us"] = json!(now_us());
    let mut text = line.to_string();
    text.push('\n');
    let path = SIDE_FILE.get().expect("side file set in main");
    let write = || -> std::io::Result<()> {
        let mut f = OpenOptions::new().create(true).append(true).open(path)?;
        // One write(2): with O_APPEND the line lands whole.
        f.write_all(text.as_bytes())?;
        f.sync_data()
    };
    write().map_err(|e| ActivityError::non_retryable(format!("side file: {e}")))
}

/// Records that this attempt started, with `extra` fields.
fn record_start(ctx: &ActivityContext, extra: Value) -> Result<(), ActivityError> {
    let i = ctx.info();
    let mut line = json!({
        "ev": "start", "run": i.run_id, "id": i.activity_id, "attempt": i.attempt,
        "type": i.activity_type, "key": i.idempotency_key, "traceparent": ctx.traceparent(),
    });
    if let (Some(l), Value::Object(e)) = (line.as_object_mut(), extra) {
        l.extend(e);
    }
    side_append(line)
}

fn retry(initial_ms: u64, max_attempts: u32) -> RetryPolicy {
    RetryPolicy {
        initial_interval: Some(Duration::from_millis(initial_ms)),
        backoff_coefficient: Some(1.0),
        maximum_interval: Some(Duration::from_millis(initial_ms)),
        maximum_attempts: max_attempts,
        ..Default::default()
    }
}

// ---------------------------------------------------------------- llm_agent

#[derive(Debug, Deserialize)]
#[serde(default)]
struct AgentInput {
    steps: u32,
    input_tokens: u64,
    output_tokens: u64,
    cost_micros: u64,
    model: String,
}

impl Default for AgentInput {
    fn default() -> Self {
        AgentInput {
            steps: 3,
            input_tokens: 60,
            output_tokens: 40,
            cost_micros: 1_500,
            model: "fake-model".into(),
        }
    }
}

#[derive(Debug, Serialize, Deserialize)]
struct LlmCall {
    step: u32,
    prompt: String,
    input_tokens: u64,
    output_tokens: u64,
    cost_micros: u64,
    model: String,
}

async fn llm_agent(ctx: WorkflowContext, input: AgentInput) -> Result<Value, WorkflowError> {
    let mut replies = Vec::new();
    for step in 0..input.steps {
        let call = LlmCall {
            step,
            prompt: format!("step {step}: what next?"),
            input_tokens: input.input_tokens,
            output_tokens: input.output_tokens,
            cost_micros: input.cost_micros,
            model: input.model.clone(),
        };
        let reply: String = ctx
            .activity("llm", &call)
            .options(ActivityOptions::default().retry(retry(200, 0)))
            .await?;
        replies.push(reply);
    }
    Ok(json!({ "replies": replies }))
}

/// An LLM call stand-in: answers at once and reports the usage it was told to.
async fn llm(ctx: ActivityContext, call: LlmCall) -> Result<String, ActivityError> {
    record_start(&ctx, json!({ "step": call.step }))?;
    ctx.add_usage(&pb::Usage {
        input_tokens: call.input_tokens,
        output_tokens: call.output_tokens,
        cost_micros: call.cost_micros,
        model: call.model.clone(),
        ..Default::default()
    });
    Ok(format!("reply to step {}", call.step))
}

// ---------------------------------------------------------------- human, sleeper

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct HumanInput {
    question: String,
    choices: Vec<String>,
    signal: Option<String>,
}

async fn human(ctx: WorkflowContext, input: HumanInput) -> Result<Value, WorkflowError> {
    let name = input.signal.unwrap_or_else(|| "approve".into());
    let wait = WaitSignalOptions::question(input.question.clone()).choices(input.choices);
    let answer: Option<Value> = ctx.wait_signal_with(&name, wait).await?;
    Ok(json!({ "question": input.question, "answer": answer }))
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct SleeperInput {
    ms: u64,
}

async fn sleeper(ctx: WorkflowContext, input: SleeperInput) -> Result<String, WorkflowError> {
    ctx.sleep(Duration::from_millis(input.ms)).await;
    Ok("slept".into())
}

// ---------------------------------------------------------------- tool_call

#[derive(Debug, Deserialize)]
#[serde(default)]
struct ToolCallInput {
    tool: String,
    hang_ms: u64,
    hang_attempts: u32,
    start_to_close_ms: u64,
    task_queue: Option<String>,
    retry_initial_ms: u64,
    max_attempts: u32,
    /// Ask a human before the call runs, with this reason.
    approval: Option<String>,
}

impl Default for ToolCallInput {
    fn default() -> Self {
        ToolCallInput {
            tool: "write_tool".into(),
            hang_ms: 0,
            hang_attempts: 0,
            start_to_close_ms: 20_000,
            task_queue: None,
            retry_initial_ms: 100,
            max_attempts: 0,
            approval: None,
        }
    }
}

#[derive(Debug, Serialize, Deserialize)]
struct ToolInput {
    hang_ms: u64,
    hang_attempts: u32,
    /// Echoed back and recorded at the start: shows which arguments an attempt ran with
    /// (a human may edit them before approving).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    note: String,
}

async fn tool_call(ctx: WorkflowContext, input: ToolCallInput) -> Result<Value, WorkflowError> {
    let mut opts = ActivityOptions::default()
        .start_to_close(Duration::from_millis(input.start_to_close_ms))
        .retry(retry(input.retry_initial_ms, input.max_attempts));
    if let Some(q) = &input.task_queue {
        opts = opts.task_queue(q.clone());
    }
    if let Some(reason) = &input.approval {
        opts = opts.requires_approval(reason.clone());
    }
    let call = ToolInput {
        hang_ms: input.hang_ms,
        hang_attempts: input.hang_attempts,
        // Only for calls a human sees: other calls keep their exact arguments.
        note: if input.approval.is_some() || input.tool == "gated_tool" {
            "as scheduled".into()
        } else {
            String::new()
        },
    };
    match ctx
        .activity::<Value>(&input.tool, &call)
        .options(opts)
        .await
    {
        Ok(v) => Ok(json!({ "tool": v })),
        Err(e) if e.is_approval_denied() => Ok(json!({ "denied": e.to_string() })),
        Err(ActivityError::Failed { message, .. }) => Ok(json!({ "error": message })),
        Err(ActivityError::Cancelled) if ctx.is_cancel_requested() => {
            Err(WorkflowError::Cancelled {
                partial: Some(json!({ "tool": input.tool, "cancelled": true })),
            })
        }
        Err(e) => Err(e.into()),
    }
}

#[derive(Debug, Deserialize)]
#[serde(default)]
struct CancelPendingInput {
    delay_ms: u64,
}

impl Default for CancelPendingInput {
    fn default() -> Self {
        CancelPendingInput { delay_ms: 1_000 }
    }
}

/// Calls `flaky` (which backs off 10 minutes after its first failure), waits `delay_ms`, then
/// cancels it; returns `{"cancelled": <activity id>}` once the cancellation is confirmed.
async fn cancel_pending(
    ctx: WorkflowContext,
    input: CancelPendingInput,
) -> Result<Value, WorkflowError> {
    let call = ToolInput {
        hang_ms: 0,
        hang_attempts: 0,
        note: String::new(),
    };
    let pending = ctx
        .activity::<Value>("flaky", &call)
        .options(ActivityOptions::default().retry(retry(600_000, 0)));
    let id = pending.id();
    ctx.sleep(Duration::from_millis(input.delay_ms)).await;
    ctx.cancel_activity(id);
    match pending.await {
        Err(ActivityError::Cancelled) => Ok(json!({ "cancelled": id })),
        other => Err(WorkflowError::failed(format!(
            "expected a cancellation, got {other:?}"
        ))),
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct CancelThenContinueInput {
    mode: String,
}

async fn cancel_then_continue(
    ctx: WorkflowContext,
    input: CancelThenContinueInput,
) -> Result<Value, WorkflowError> {
    let quick = ToolInput {
        hang_ms: 0,
        hang_attempts: 0,
        note: String::new(),
    };
    let (name, call, options) = match input.mode.as_str() {
        "queued" => (
            "read_tool",
            &quick,
            ActivityOptions::default().task_queue("nobody-polls-this"),
        ),
        "backoff" => (
            "flaky",
            &quick,
            ActivityOptions::default().retry(retry(600_000, 0)),
        ),
        "running" => (
            "read_tool",
            &ToolInput {
                hang_ms: 600_000,
                hang_attempts: 1,
                note: String::new(),
            },
            ActivityOptions::default(),
        ),
        other => {
            return Err(WorkflowError::failed(format!(
                "mode {other:?}: use queued, backoff or running"
            )));
        }
    };
    let first = ctx.activity::<Value>(name, call).options(options);
    let id = first.id();
    let _go: Value = ctx.wait_signal("go").await?;
    // One workflow task: CancelActivity, ScheduleActivity, ReportProgress.
    ctx.cancel_activity(id);
    let next = ctx.activity::<Value>("read_tool", &quick);
    ctx.progress(1, 2, "cancelled the first activity");
    match first.await {
        Err(ActivityError::Cancelled) => {}
        other => {
            return Err(WorkflowError::failed(format!(
                "expected a cancellation, got {other:?}"
            )));
        }
    }
    let next = next.await?;
    Ok(json!({ "cancelled": id, "next": next }))
}

/// A tool: hangs for `hang_ms` on its first `hang_attempts` attempts (so that a test can kill
/// its worker mid-attempt), then answers with who ran it.
async fn tool(ctx: ActivityContext, input: ToolInput) -> Result<Value, ActivityError> {
    let note = if input.note.is_empty() {
        json!({})
    } else {
        json!({ "note": input.note })
    };
    record_start(&ctx, note.clone())?;
    if ctx.attempt() <= input.hang_attempts {
        tokio::time::sleep(Duration::from_millis(input.hang_ms)).await;
    }
    let mut out = json!({
        "attempt": ctx.attempt(), "key": ctx.idempotency_key(), "pid": std::process::id(),
    });
    if let (Some(o), Value::Object(n)) = (out.as_object_mut(), note) {
        o.extend(n);
    }
    Ok(out)
}

/// Returns 3 MiB, over the server's 2 MiB payload limit.
async fn huge_result(ctx: ActivityContext, _input: ToolInput) -> Result<Value, ActivityError> {
    record_start(&ctx, json!({}))?;
    Ok(Value::String("x".repeat(3 * 1024 * 1024)))
}

/// Returns 9 MiB, over the server's 8 MiB gRPC request limit: the completion cannot even be
/// received, so the SDK reports the attempt failed ([STF-PAYLOAD]).
async fn oversized_result(ctx: ActivityContext, _input: ToolInput) -> Result<Value, ActivityError> {
    record_start(&ctx, json!({}))?;
    Ok(Value::String("x".repeat(9 * 1024 * 1024)))
}

/// Always fails (retryably): the run waits on its retry backoff.
async fn flaky(ctx: ActivityContext, _input: ToolInput) -> Result<Value, ActivityError> {
    record_start(&ctx, json!({}))?;
    Err(ActivityError::retryable("flaky always fails").with_type("Flaky"))
}

// ---------------------------------------------------------------- steps

#[derive(Debug, Deserialize)]
#[serde(default)]
struct StepsInput {
    n: u32,
    step_ms: u64,
    slow_step: Option<u32>,
    slow_ms: u64,
    gate_at: Option<u32>,
}

impl Default for StepsInput {
    fn default() -> Self {
        StepsInput {
            n: 3,
            step_ms: 50,
            slow_step: None,
            slow_ms: 60_000,
            gate_at: None,
        }
    }
}

#[derive(Debug, Serialize, Deserialize)]
struct WorkInput {
    step: u32,
    ms: u64,
}

async fn steps(ctx: WorkflowContext, input: StepsInput) -> Result<Value, WorkflowError> {
    let n = input.n;
    let mut done: Vec<Value> = Vec::new();
    for step in 0..n {
        if input.gate_at == Some(step) {
            ctx.progress(
                u64::from(step),
                u64::from(n),
                format!("step {step} waits for go"),
            );
            let _: Value = ctx.wait_signal("go").await?;
        }
        if ctx.is_cancel_requested() {
            return Err(WorkflowError::Cancelled {
                partial: Some(json!({ "done": done, "cancelled_at": step })),
            });
        }
        ctx.progress(u64::from(step), u64::from(n), format!("step {step}"));
        let ms = if input.slow_step == Some(step) {
            input.slow_ms
        } else {
            input.step_ms
        };
        let opts = ActivityOptions::default()
            .start_to_close(Duration::from_millis(ms + 30_000))
            .retry(retry(200, 0));
        match ctx
            .activity::<Value>("work", &WorkInput { step, ms })
            .options(opts)
            .await
        {
            Ok(v) => done.push(v),
            Err(ActivityError::Cancelled) if ctx.is_cancel_requested() => {
                return Err(WorkflowError::Cancelled {
                    partial: Some(json!({ "done": done, "cancelled_at": step })),
                });
            }
            Err(e) => return Err(e.into()),
        }
        ctx.set_partial_result(&json!({ "done": done }))?;
    }
    ctx.progress(u64::from(n), u64::from(n), "done");
    Ok(json!({ "done": done }))
}

/// Works for `ms`, heartbeating `{step, tick}` every 100 ms; stops as soon as it is cancelled,
/// after recording when it noticed.
async fn work(ctx: ActivityContext, input: WorkInput) -> Result<Value, ActivityError> {
    record_start(&ctx, json!({ "step": input.step }))?;
    let end = tokio::time::Instant::now() + Duration::from_millis(input.ms);
    let mut tick = 0u64;
    loop {
        ctx.heartbeat(json!({ "step": input.step, "tick": tick }));
        let left = end.saturating_duration_since(tokio::time::Instant::now());
        if left.is_zero() {
            break;
        }
        tokio::select! {
            _ = ctx.cancelled() => {
                let i = ctx.info();
                side_append(json!({
                    "ev": "cancelled", "run": i.run_id, "id": i.activity_id, "attempt": i.attempt,
                }))?;
                return Err(ActivityError::Cancelled);
            }
            _ = tokio::time::sleep(left.min(Duration::from_millis(100))) => {}
        }
        tick += 1;
    }
    Ok(json!({ "step": input.step, "ticks": tick }))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse()?;
    SIDE_FILE.set(args.log).expect("side file set once");
    let mut worker = Worker::new(args.addr.as_str(), WorkerOptions::new(args.task_queue));
    worker
        .register_workflow("llm_agent", llm_agent)
        .register_workflow("human", human)
        .register_workflow("sleeper", sleeper)
        .register_workflow("tool_call", tool_call)
        .register_workflow("steps", steps)
        .register_workflow("cancel_pending", cancel_pending)
        .register_workflow("cancel_then_continue", cancel_then_continue)
        .register_activity("llm", Effect::Read, llm)
        .register_activity("write_tool", Effect::Write, tool)
        .register_activity("idem_tool", Effect::Idempotent, tool)
        .register_activity("read_tool", Effect::Read, tool)
        .register_activity("flaky", Effect::Idempotent, flaky)
        .register_activity("huge_result", Effect::Read, huge_result)
        .register_activity("oversized_result", Effect::Read, oversized_result)
        .register_activity("work", Effect::Read, work)
        // Its registration asks for approval: every call waits for a human.
        .register_activity("gated_tool", Effect::Write, tool)
        .require_approval("gated_tool");
    eprintln!(
        "agent-worker polling {} pid {}",
        args.addr,
        std::process::id()
    );
    worker.run().await?;
    Ok(())
}
