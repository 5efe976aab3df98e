//! A worker that speaks the raw worker protocol (no SDK), opens a worker session, takes one
//! workflow task and one attempt of each activity type it is given, prints a line for each
//! (`workflow <run id>`, `attempt <type> <n>`), and then holds them all "forever" (until the
//! test SIGKILLs it): for the tests of what the server does when a worker dies.

use std::io::Write;

use anyhow::{Context, Result, bail};
use clap::Parser;
use steadfast_proto::v1 as pb;
use steadfast_tests::raw::{QUEUE, Raw, activity_poll};

#[derive(Parser)]
struct Args {
    /// The server.
    #[arg(long)]
    addr: String,
    /// Its worker id (sessions are per worker id).
    #[arg(long)]
    worker_id: String,
    /// A workflow type to take one task of.
    #[arg(long)]
    workflow_type: Option<String>,
    /// Activities to take one attempt of, as `type=effect` (read, idempotent, write).
    #[arg(long = "activity")]
    activities: Vec<String>,
}

fn say(line: &str) -> Result<()> {
    let mut out = std::io::stdout().lock();
    writeln!(out, "{line}")?;
    out.flush()?;
    Ok(())
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<()> {
    let args = Args::parse();
    let mut raw = Raw::connect(&args.addr).await?;
    let mut session = raw
        .worker
        .worker_session(pb::WorkerSessionRequest {
            namespace: "default".into(),
            worker_id: args.worker_id.clone(),
            task_queues: vec![QUEUE.into()],
        })
        .await?
        .into_inner();
    let first = session
        .message()
        .await?
        .context("the session ended before its first event")?;
    say(&format!("session grace_ms={}", first.grace_ms))?;
    // The session stays open while this process lives; a task drives it.
    tokio::spawn(async move { while let Ok(Some(_)) = session.message().await {} });

    for a in &args.activities {
        let (activity_type, effect) = a
            .split_once('=')
            .with_context(|| format!("--activity {a:?}: use type=effect"))?;
        let effect = match effect {
            "read" => pb::Effect::Read,
            "idempotent" => pb::Effect::Idempotent,
            "write" => pb::Effect::Write,
            other => bail!("--activity {a:?}: unknown effect {other:?}"),
        };
        loop {
            let mut poll = activity_poll(
                "default",
                &[activity_type],
                &[(activity_type, effect)],
                10_000,
            );
            poll.worker_id = args.worker_id.clone();
            let task = raw.worker.poll_activity_task(poll).await?.into_inner();
            if !task.task_token.is_empty() {
                say(&format!("attempt {activity_type} {}", task.attempt))?;
                break;
            }
        }
    }
    if let Some(wt) = &args.workflow_type {
        loop {
            let task = raw
                .worker
                .poll_workflow_task(pb::PollWorkflowTaskRequest {
                    namespace: "default".into(),
                    task_queue: QUEUE.into(),
                    worker_id: args.worker_id.clone(),
                    workflow_types: vec![wt.clone()],
                    poll_timeout_ms: 10_000,
                    build_id: String::new(),
                })
                .await?
                .into_inner();
            if !task.task_token.is_empty() {
                say(&format!("workflow {}", task.run_id))?;
                break;
            }
        }
    }
    say("holding")?;
    // Holds everything: never completes, fails or heartbeats. The test kills it here.
    std::future::pending::<()>().await;
    Ok(())
}
