//! `hello-worker`: workflow type `hello`, three activities in sequence on `{"name": ...}`.
//!
//! ```text
//! steadfast server                                  # terminal 1
//! cargo run -p steadfast-examples --bin hello-worker  # terminal 2
//! steadfast run start hello --input '{"name":"Ada"}'  # terminal 3, then `steadfast run result RUN --wait`
//! ```
//! It finds the server like the CLI does: `--addr`, or `STEADFAST_ADDR`, or http://127.0.0.1:7233;
//! `--token` / `STEADFAST_TOKEN` and `--tls-ca` (`--tls-cert`, `--tls-key`) for a secured one.

use clap::Parser;
use serde::{Deserialize, Serialize};
use steadfast_sdk::activity::{ActivityContext, ActivityError};
use steadfast_sdk::worker::{Worker, WorkerOptions};
use steadfast_sdk::{Effect, WorkflowContext, WorkflowError};

#[derive(Parser)]
#[command(about = "Runs the `hello` workflow and its activities")]
struct Args {
    /// Server address.
    #[arg(long, env = "STEADFAST_ADDR", default_value = "http://127.0.0.1:7233")]
    addr: String,
    /// Task queue to poll.
    #[arg(long, default_value = "default")]
    task_queue: String,
    #[command(flatten)]
    security: steadfast_examples::conn::Security,
}

#[derive(Debug, Serialize, Deserialize)]
struct HelloInput {
    name: String,
}

#[derive(Debug, Serialize, Deserialize)]
struct HelloOutput {
    greeting: String,
    shout: String,
    signature: String,
}

async fn hello(ctx: WorkflowContext, input: HelloInput) -> Result<HelloOutput, WorkflowError> {
    ctx.progress(0, 3, "greeting");
    let greeting: String = ctx.activity("hello.greet", &input.name).await?;
    ctx.progress(1, 3, "shouting");
    let shout: String = ctx.activity("hello.shout", &greeting).await?;
    ctx.progress(2, 3, "signing");
    let signature: String = ctx.activity("hello.sign", &input.name).await?;
    ctx.progress(3, 3, "done");
    Ok(HelloOutput {
        greeting,
        shout,
        signature,
    })
}

async fn greet(_ctx: ActivityContext, name: String) -> Result<String, ActivityError> {
    if name.trim().is_empty() {
        return Err(ActivityError::non_retryable("name is empty").with_type("BadInput"));
    }
    Ok(format!("Hello, {name}!"))
}

async fn shout(_ctx: ActivityContext, text: String) -> Result<String, ActivityError> {
    Ok(text.to_uppercase())
}

async fn sign(ctx: ActivityContext, name: String) -> Result<String, ActivityError> {
    Ok(format!(
        "signed for {name} (idempotency key {})",
        ctx.idempotency_key()
    ))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let args = Args::parse();
    let mut worker = Worker::new(
        args.security.config(&args.addr),
        WorkerOptions::new(args.task_queue),
    );
    worker
        .register_workflow("hello", hello)
        .register_activity("hello.greet", Effect::Read, greet)
        .register_activity("hello.shout", Effect::Read, shout)
        .register_activity("hello.sign", Effect::Idempotent, sign);
    eprintln!("hello-worker polling {} (ctrl-c to stop)", args.addr);
    worker.run().await?;
    Ok(())
}
