//! A tool worker that speaks the raw worker protocol (no SDK): polls one activity type on the
//! raw helpers' queue, declaring the effect it is given, prints `attempt <n>` when it holds
//! one, and then runs "forever" (until the test SIGKILLs it mid-run).

use std::io::Write;

use anyhow::Result;
use clap::Parser;
use steadfast_proto::v1 as pb;
use steadfast_tests::raw::{Raw, activity_poll};

#[derive(Parser)]
struct Args {
    /// The server.
    #[arg(long)]
    addr: String,
    /// The activity type it runs.
    #[arg(long = "type")]
    activity_type: String,
    /// The effect it declares: read, idempotent, write, or none (no declaration).
    #[arg(long)]
    effect: String,
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<()> {
    let args = Args::parse();
    let effect = match args.effect.as_str() {
        "read" => Some(pb::Effect::Read),
        "idempotent" => Some(pb::Effect::Idempotent),
        "write" => Some(pb::Effect::Write),
        "none" => None,
        other => anyhow::bail!("--effect {other:?}: use read, idempotent, write or none"),
    };
    let declarations: Vec<(&str, pb::Effect)> = effect
        .map(|e| (args.activity_type.as_str(), e))
        .into_iter()
        .collect();
    let mut raw = Raw::connect(&args.addr).await?;
    loop {
        let task = raw
            .worker
            .poll_activity_task(activity_poll(
                "default",
                &[args.activity_type.as_str()],
                &declarations,
                10_000,
            ))
            .await?
            .into_inner();
        if task.task_token.is_empty() {
            continue;
        }
        let mut out = std::io::stdout().lock();
        writeln!(out, "attempt {}", task.attempt)?;
        out.flush()?;
        drop(out);
        // Mid-write: never reports. The test kills this process here.
        std::future::pending::<()>().await;
    }
}
