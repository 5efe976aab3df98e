//! `test-worker`: the worker the cross-process tests drive (tests/tests/*.rs).
//!
//! ```text
//! test-worker --addr http://127.0.0.1:PORT --log SIDE_FILE [--task-queue Q] [--variant a|b]
//! ```
//! Every activity execution first appends one line to the side file (see
//! `steadfast_tests::side`) and syncs it, so tests can count executions across SIGKILLs.
//!
//! Workflows (inputs are JSON objects; every field has a default):
//! - `seq` `{n, sleep_ms, start_to_close_ms}` (query `progress`: `{done, total}`): `n`
//!   sequential `step` activities, each sleeping
//!   `sleep_ms` and returning its index; the result is the list of results. It issues no other
//!   command, so the activity ids are 1..=n.
//! - `steer` `null`: update `add` (a string; validated: not empty, not starting with "bad")
//!   runs one `step` activity, appends the item and answers the count; query `items`; returns
//!   the items at signal `finish`.
//! - `slow` `{sleep_ms, start_to_close_ms}`: one `slow` activity whose first attempt sleeps
//!   `sleep_ms` (kill the worker inside it) and whose retries (100 ms after a failure or
//!   timeout) return at once, so that a retry cannot time out too on a busy machine.
//! - `nondet` `{first_ms, second_ms, start_to_close_ms}`: `step` then, with `--variant a`,
//!   `step` again; with `--variant b`, `other`: replaying a history of one variant with the
//!   other is nondeterministic at command seq 2.
//! - `signal` `{question, choices}`: waits for signal `approve` (asking the question); returns
//!   `{"input": <its input>, "answer": <the signal's input>}`.
//! - `write` `{sleep_ms, start_to_close_ms}`: one `write` activity registered `Effect::Write`
//!   that sleeps: a lost attempt makes the run wait for reconciliation.
//! - `cancellable` `{long_ms, heartbeat_timeout_ms}`: `step`, records a partial result, then a
//!   `long` activity that heartbeats and stops when cancelled; on a run cancellation it ends
//!   as cancelled with `{"done": [0], "cancelled": "long"}` as its partial result.
//! - `parent` `{xs, policies}`: one `child` run per `xs[i]` (parent-close policy
//!   `policies[i]`: cancel (default), terminate or abandon), awaits them all and returns the
//!   sum of their results; on a cancel request it ends as cancelled at once.
//! - `child` `{x}`: waits for signal `go` and returns `2 * x`; on a cancel request it ends as
//!   cancelled.
//! - `flaky` `{fail_attempts}`: one `flaky` activity whose first `fail_attempts` attempts
//!   fail (retryable; retried after 100 ms) and whose next one returns its attempt number.
//! - `deploy` `{}`: `step` (variant a) or, behind `ctx.patched`, `other` (variant b), then
//!   waits for signal `go` (`steadfast_tests::deploy`).
//! - `builds` `{can}`: `step` (variant a) or `other` (variant b), unguarded, so each variant
//!   is nondeterministic on the other's histories; then waits for signal `go` and returns
//!   `{"variant", "label"}`, or with `can` "keep" / "move" continues as new with `{}`,
//!   keeping its build or not (`tests/tests/build_ids.rs`).
//! - `tool` `{tool, task_queue, args, start_to_close_ms}`: one call of activity `tool` with
//!   input `args` on `task_queue` (served by a Python tool worker in `python_worker.rs`);
//!   returns `{"tool": <result>}` or `{"error", "type", "non_retryable"}` of its failure.
//! - `tagged` `{stage, fail}`: upserts the search attributes `stage=<stage>` and
//!   `step:int=1`, runs one `step`, then (with `fail`) one `broken` activity, which fails
//!   for good on its only attempt, so the run fails because of it; else returns "done".

use std::path::PathBuf;
use std::sync::OnceLock;
use std::time::Duration;

use clap::{Parser, ValueEnum};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use steadfast_sdk::activity::{ActivityContext, ActivityError};
use steadfast_sdk::worker::{Worker, WorkerOptions};
use steadfast_sdk::workflow::{ActivityOptions, RetryPolicy, WaitSignalOptions};
use steadfast_sdk::{Effect, WorkflowContext, WorkflowError};
use steadfast_tests::{deploy, side};

#[derive(Parser)]
#[command(about = "The worker of the Steadfast cross-process tests")]
struct Args {
    /// Server address.
    #[arg(long, env = "STEADFAST_ADDR", default_value = "http://127.0.0.1:7233")]
    addr: String,
    /// Task queue to poll.
    #[arg(long, default_value = "default")]
    task_queue: String,
    /// The side file every activity execution appends a line to.
    #[arg(long, env = "STEADFAST_TEST_LOG")]
    log: PathBuf,
    /// Which code `nondet` and `deploy` run.
    #[arg(long, value_enum, default_value = "a")]
    variant: Variant,
    /// The build id this worker declares (none when empty).
    #[arg(long, env = "STEADFAST_BUILD_ID", default_value = "")]
    build_id: String,
    /// The worker id recorded in the history (default: random).
    #[arg(long)]
    worker_id: Option<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Variant {
    /// `nondet`: `step`, `step`; `deploy`: the old code.
    A,
    /// `nondet`: `step`, `other`; `deploy`: the patched code.
    B,
}

static SIDE_FILE: OnceLock<PathBuf> = OnceLock::new();

/// Default time of one attempt: long enough for every sleep here, short enough that a test
/// that loses an attempt does not wait a minute.
const START_TO_CLOSE_MS_DEFAULT: u64 = 20_000;

/// Short timeouts and a fast retry, so that a lost attempt is retried within the test budget.
fn options(start_to_close_ms: Option<u64>) -> ActivityOptions {
    ActivityOptions::default()
        .start_to_close(Duration::from_millis(
            start_to_close_ms.unwrap_or(START_TO_CLOSE_MS_DEFAULT),
        ))
        .retry(RetryPolicy {
            initial_interval: Some(Duration::from_millis(100)),
            maximum_interval: Some(Duration::from_millis(500)),
            ..Default::default()
        })
}

/// Appends this execution to the side file (synced) before the activity does anything.
async fn record(ctx: &ActivityContext) -> Result<(), ActivityError> {
    let info = ctx.info();
    let line = side::Execution {
        run_id: info.run_id.clone(),
        activity_id: info.activity_id,
        attempt: info.attempt,
        activity_type: info.activity_type.clone(),
        idempotency_key: info.idempotency_key.clone(),
        deadline_ms: info.deadline_ms,
        pid: std::process::id(),
    }
    .line();
    let path = SIDE_FILE.get().expect("side file set in main").clone();
    tokio::task::spawn_blocking(move || side::append(&path, &line))
        .await
        .map_err(|e| ActivityError::non_retryable(format!("side file writer: {e}")))?
        .map_err(|e| ActivityError::non_retryable(format!("side file: {e:#}")))
}

// ---------------------------------------------------------------- workflows

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct SeqInput {
    n: u32,
    sleep_ms: u64,
    start_to_close_ms: Option<u64>,
}

#[derive(Debug, Serialize, Deserialize)]
struct StepInput {
    index: u32,
    sleep_ms: u64,
}

async fn seq(ctx: WorkflowContext, input: SeqInput) -> Result<Vec<u32>, WorkflowError> {
    // Read by the "progress" query: the steps done so far, of n.
    let done = std::rc::Rc::new(std::cell::Cell::new(0u32));
    let seen = std::rc::Rc::clone(&done);
    let total = input.n;
    ctx.on_query(
        "progress",
        move |_: ()| serde_json::json!({ "done": seen.get(), "total": total }),
    );
    let mut out = Vec::with_capacity(input.n as usize);
    for index in 0..input.n {
        let step = StepInput {
            index,
            sleep_ms: input.sleep_ms,
        };
        let r: u32 = ctx
            .activity("step", &step)
            .options(options(input.start_to_close_ms))
            .await?;
        out.push(r);
        done.set(index + 1);
    }
    Ok(out)
}

/// Items added by the `add` update, each after one `step` activity; rejected when empty or
/// starting with "bad". Returns the items once signal `finish` arrives.
async fn steer(ctx: WorkflowContext, _: ()) -> Result<Vec<String>, WorkflowError> {
    let items = std::rc::Rc::new(std::cell::RefCell::new(Vec::<String>::new()));
    let (list, handler_ctx) = (std::rc::Rc::clone(&items), ctx.clone());
    ctx.on_update_validated(
        "add",
        |item: &String| {
            if item.is_empty() || item.starts_with("bad") {
                Err(format!(
                    "items may not be empty or start with \"bad\" (got {item:?})"
                ))
            } else {
                Ok(())
            }
        },
        move |item: String| {
            let (list, ctx) = (std::rc::Rc::clone(&list), handler_ctx.clone());
            async move {
                let index = list.borrow().len() as u32;
                let _: u32 = ctx
                    .activity("step", &StepInput { index, sleep_ms: 0 })
                    .options(options(None))
                    .await?;
                list.borrow_mut().push(item);
                let len = list.borrow().len();
                Ok::<_, WorkflowError>(len)
            }
        },
    );
    let seen = std::rc::Rc::clone(&items);
    ctx.on_query("items", move |_: ()| seen.borrow().clone());
    let _: serde_json::Value = ctx.wait_signal("finish").await?;
    let out = items.borrow().clone();
    Ok(out)
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct SlowInput {
    sleep_ms: u64,
    start_to_close_ms: Option<u64>,
}

async fn slow(ctx: WorkflowContext, input: SlowInput) -> Result<String, WorkflowError> {
    Ok(ctx
        .activity("slow", &input.sleep_ms)
        .options(options(input.start_to_close_ms))
        .await?)
}

async fn write(ctx: WorkflowContext, input: SlowInput) -> Result<String, WorkflowError> {
    Ok(ctx
        .activity("write", &input.sleep_ms)
        .options(options(input.start_to_close_ms))
        .await?)
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct FlakyInput {
    fail_attempts: u32,
}

async fn flaky(ctx: WorkflowContext, input: FlakyInput) -> Result<u32, WorkflowError> {
    Ok(ctx
        .activity("flaky", &input.fail_attempts)
        .options(options(None))
        .await?)
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct ToolInput {
    tool: String,
    task_queue: String,
    args: Value,
    start_to_close_ms: Option<u64>,
}

/// Calls activity `tool` on `task_queue` (a Python tool worker's, tests/python/tools.py);
/// a failure becomes the result, so that the test can read its type.
async fn tool(ctx: WorkflowContext, input: ToolInput) -> Result<Value, WorkflowError> {
    match ctx
        .activity::<Value>(&input.tool, &input.args)
        .options(options(input.start_to_close_ms).task_queue(input.task_queue))
        .await
    {
        Ok(v) => Ok(json!({ "tool": v })),
        Err(ActivityError::Failed {
            message,
            error_type,
            non_retryable,
        }) => Ok(json!({ "error": message, "type": error_type, "non_retryable": non_retryable })),
        Err(e) => Err(e.into()),
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct NondetInput {
    first_ms: u64,
    second_ms: u64,
    start_to_close_ms: Option<u64>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct BuildsInput {
    /// "keep" or "move": continue as new after `go` (keeping the build or not).
    can: Option<String>,
}

async fn builds(
    ctx: WorkflowContext,
    input: BuildsInput,
    variant: Variant,
) -> Result<Value, WorkflowError> {
    let step = json!({ "index": 0, "sleep_ms": 0 });
    let (name, activity) = match variant {
        Variant::A => ("a", "step"),
        Variant::B => ("b", "other"),
    };
    let label: u32 = ctx.activity(activity, &step).await?;
    let _go: Value = ctx.wait_signal("go").await?;
    match input.can.as_deref() {
        Some("keep") => Err(WorkflowError::continue_as_new_keeping_build(&json!({}))),
        Some(_) => Err(WorkflowError::continue_as_new(&json!({}))),
        None => Ok(json!({ "variant": name, "label": label })),
    }
}

async fn nondet(
    ctx: WorkflowContext,
    input: NondetInput,
    variant: Variant,
) -> Result<Vec<u32>, WorkflowError> {
    let first: u32 = ctx
        .activity(
            "step",
            &StepInput {
                index: 0,
                sleep_ms: input.first_ms,
            },
        )
        .options(options(input.start_to_close_ms))
        .await?;
    let second_type = match variant {
        Variant::A => "step",
        Variant::B => "other",
    };
    let second: u32 = ctx
        .activity(
            second_type,
            &StepInput {
                index: 1,
                sleep_ms: input.second_ms,
            },
        )
        .options(options(input.start_to_close_ms))
        .await?;
    Ok(vec![first, second])
}

#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(default)]
struct SignalInput {
    question: String,
    choices: Vec<String>,
}

async fn signal(ctx: WorkflowContext, input: SignalInput) -> Result<Value, WorkflowError> {
    let wait = WaitSignalOptions::question(input.question.clone()).choices(input.choices.clone());
    let answer: Option<Value> = ctx.wait_signal_with("approve", wait).await?;
    Ok(json!({ "input": input, "answer": answer }))
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct CancellableInput {
    long_ms: u64,
    heartbeat_timeout_ms: Option<u64>,
}

async fn cancellable(
    ctx: WorkflowContext,
    input: CancellableInput,
) -> Result<Value, WorkflowError> {
    let first: u32 = ctx
        .activity(
            "step",
            &StepInput {
                index: 0,
                sleep_ms: 0,
            },
        )
        .options(options(None))
        .await?;
    let partial = json!({ "done": [first], "cancelled": "long" });
    ctx.set_partial_result(&json!({ "done": [first] }))?;
    if ctx.is_cancel_requested() {
        return Err(WorkflowError::Cancelled {
            partial: Some(partial),
        });
    }
    let mut opts = options(None);
    if let Some(ms) = input.heartbeat_timeout_ms {
        opts = opts.heartbeat_timeout(Duration::from_millis(ms));
    }
    match ctx
        .activity::<u64>("long", &input.long_ms)
        .options(opts)
        .await
    {
        Ok(ticks) => Ok(json!({ "done": [first], "long_ticks": ticks })),
        Err(ActivityError::Cancelled) if ctx.is_cancel_requested() => {
            Err(WorkflowError::Cancelled {
                partial: Some(partial),
            })
        }
        Err(e) => Err(e.into()),
    }
}

#[derive(Serialize, Deserialize, Default)]
#[serde(default)]
struct ParentInput {
    xs: Vec<u64>,
    policies: Vec<String>,
}

async fn parent(ctx: WorkflowContext, input: ParentInput) -> Result<Value, WorkflowError> {
    use steadfast_sdk::workflow::{ChildOptions, ChildRun, Either, ParentClosePolicy, select2};
    let children: Vec<ChildRun<u64>> = input
        .xs
        .iter()
        .enumerate()
        .map(|(i, x)| {
            let policy = match input.policies.get(i).map(String::as_str) {
                Some("terminate") => ParentClosePolicy::Terminate,
                Some("abandon") => ParentClosePolicy::Abandon,
                _ => ParentClosePolicy::Cancel,
            };
            ctx.child("child", &json!({ "x": x }))
                .with_options(ChildOptions::default().parent_close_policy(policy))
        })
        .collect();
    let all = Box::pin(async move {
        let mut sum = 0u64;
        for c in children {
            sum += c.await?;
        }
        Ok::<u64, WorkflowError>(sum)
    });
    match select2(all, ctx.cancelled()).await {
        Either::Left((sum, _)) => Ok(json!({ "sum": sum? })),
        Either::Right(_) => Err(WorkflowError::Cancelled { partial: None }),
    }
}

#[derive(Serialize, Deserialize, Default)]
#[serde(default)]
struct ChildInput {
    x: u64,
}

async fn child(ctx: WorkflowContext, input: ChildInput) -> Result<u64, WorkflowError> {
    use steadfast_sdk::workflow::{Either, select2};
    match select2(ctx.wait_signal::<Value>("go"), ctx.cancelled()).await {
        Either::Left((go, _)) => {
            go?;
            Ok(2 * input.x)
        }
        Either::Right(_) => Err(WorkflowError::Cancelled { partial: None }),
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct TaggedInput {
    stage: String,
    fail: bool,
}

async fn tagged(ctx: WorkflowContext, input: TaggedInput) -> Result<String, WorkflowError> {
    use steadfast_sdk::search::SearchValue;
    ctx.upsert_search_attributes([
        ("stage", SearchValue::from(input.stage.as_str())),
        ("step", SearchValue::Int(1)),
    ]);
    let step = StepInput {
        index: 0,
        sleep_ms: 0,
    };
    let _: u32 = ctx.activity("step", &step).options(options(None)).await?;
    if input.fail {
        let _: u32 = ctx
            .activity("broken", &step)
            .options(options(None).retry(RetryPolicy::no_retries()))
            .await?;
    }
    Ok("done".into())
}

// ---------------------------------------------------------------- activities

async fn broken(ctx: ActivityContext, _: StepInput) -> Result<u32, ActivityError> {
    record(&ctx).await?;
    Err(ActivityError::non_retryable("broken on purpose"))
}

async fn step(ctx: ActivityContext, input: StepInput) -> Result<u32, ActivityError> {
    record(&ctx).await?;
    tokio::time::sleep(Duration::from_millis(input.sleep_ms)).await;
    Ok(input.index)
}

async fn other(ctx: ActivityContext, input: StepInput) -> Result<u32, ActivityError> {
    record(&ctx).await?;
    tokio::time::sleep(Duration::from_millis(input.sleep_ms)).await;
    Ok(input.index + 1000)
}

async fn sleep_then_report(ctx: ActivityContext, sleep_ms: u64) -> Result<String, ActivityError> {
    record(&ctx).await?;
    tokio::time::sleep(Duration::from_millis(sleep_ms)).await;
    Ok(format!(
        "{} done on attempt {} (idempotency key {})",
        ctx.info().activity_type,
        ctx.attempt(),
        ctx.idempotency_key()
    ))
}

async fn slow_first_attempt(ctx: ActivityContext, sleep_ms: u64) -> Result<String, ActivityError> {
    let sleep_ms = if ctx.attempt() == 1 { sleep_ms } else { 0 };
    sleep_then_report(ctx, sleep_ms).await
}

async fn flaky_activity(ctx: ActivityContext, fail_attempts: u32) -> Result<u32, ActivityError> {
    record(&ctx).await?;
    if ctx.attempt() <= fail_attempts {
        return Err(ActivityError::retryable(format!(
            "attempt {} fails on purpose",
            ctx.attempt()
        )));
    }
    Ok(ctx.attempt())
}

/// Heartbeats every 100 ms for `long_ms`, returning the number of ticks; stops as cancelled
/// as soon as the cancellation reaches it.
async fn long(ctx: ActivityContext, long_ms: u64) -> Result<u64, ActivityError> {
    record(&ctx).await?;
    let end = tokio::time::Instant::now() + Duration::from_millis(long_ms);
    let mut ticks = 0u64;
    while tokio::time::Instant::now() < end {
        ctx.heartbeat(json!({ "ticks": ticks }));
        tokio::select! {
            _ = ctx.cancelled() => return Err(ActivityError::Cancelled),
            _ = tokio::time::sleep(Duration::from_millis(100)) => {}
        }
        ticks += 1;
    }
    Ok(ticks)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let args = Args::parse();
    SIDE_FILE.set(args.log.clone()).expect("side file set once");
    let variant = args.variant;
    let mut options = WorkerOptions::new(args.task_queue);
    options.build_id = args.build_id.clone();
    if let Some(id) = &args.worker_id {
        options.worker_id = id.clone();
    }
    // Cancellations reach activities within a heartbeat interval: keep tests quick.
    options.heartbeat_interval = Duration::from_millis(200);
    let mut worker = Worker::new(args.addr.as_str(), options);
    worker
        .register_workflow("seq", seq)
        .register_workflow("steer", steer)
        .register_workflow("slow", slow)
        .register_workflow("write", write)
        .register_workflow("nondet", move |ctx, input| nondet(ctx, input, variant))
        .register_workflow("builds", move |ctx, input| builds(ctx, input, variant))
        .register_workflow("signal", signal)
        .register_workflow("cancellable", cancellable)
        .register_workflow("parent", parent)
        .register_workflow("child", child)
        .register_workflow("flaky", flaky)
        .register_workflow("tagged", tagged)
        .register_workflow("tool", tool)
        .register_workflow(deploy::WORKFLOW, move |ctx, input| {
            let version = match variant {
                Variant::A => deploy::Version::Old,
                Variant::B => deploy::Version::Patched,
            };
            deploy::deploy(ctx, input, version)
        })
        .register_activity("step", Effect::Idempotent, step)
        .register_activity("other", Effect::Idempotent, other)
        .register_activity("broken", Effect::Idempotent, broken)
        .register_activity("slow", Effect::Idempotent, slow_first_attempt)
        .register_activity("write", Effect::Write, sleep_then_report)
        .register_activity("long", Effect::Read, long)
        .register_activity("flaky", Effect::Idempotent, flaky_activity);
    eprintln!(
        "test-worker (variant {variant:?}) polling {} pid {}",
        args.addr,
        std::process::id()
    );
    worker.run().await?;
    Ok(())
}
