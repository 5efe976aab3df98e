//! Golden histories: recorded runs checked into `tests/histories/` and replayed against the
//! current workflow code. A change to the code (or to the SDK's replay) that would break
//! runs recorded by an older version fails here.
//!
//! Regenerate (only when the change is meant to break old runs):
//! `STEADFAST_UPDATE_GOLDEN=1 cargo test -p steadfast-sdk --test golden`

use std::path::PathBuf;
use std::time::Duration;

use futures::future::{Either, select};
use steadfast_sdk::replay::{Replayer, encode_history, load_history};
use steadfast_sdk::testing::TestRun;
use steadfast_sdk::workflow::{Registry, WaitSignalOptions};
use steadfast_sdk::{Effect, WorkflowContext, WorkflowError};

async fn triage(ctx: WorkflowContext, ticket: String) -> Result<String, WorkflowError> {
    let label: String = ctx.activity("classify", &ticket).await?;
    ctx.progress(1, 3, "classified");
    let (a, b) = futures::join!(
        ctx.activity::<String>("lookup_customer", &ticket),
        ctx.activity::<String>("search_kb", &label)
    );
    let draft: String = ctx.activity("draft_reply", &(a?, b?)).await?;
    ctx.set_partial_result(&draft)?;
    let options = WaitSignalOptions::question("Send this reply?")
        .choices(["send", "edit"])
        .timeout(Duration::from_secs(3600));
    let answer = ctx.wait_signal_with::<String>("review", options).await?;
    match answer.as_deref() {
        Some("send") => {
            let id: String = ctx.activity("send_reply", &draft).await?;
            Ok(id)
        }
        _ => Err(WorkflowError::failed("not approved")),
    }
}

async fn patient(ctx: WorkflowContext, _: ()) -> Result<u64, WorkflowError> {
    let work = ctx.activity::<u64>("long_job", &());
    let id = work.id();
    match select(work, ctx.cancelled()).await {
        Either::Left((r, _)) => Ok(r?),
        Either::Right(((), work)) => {
            ctx.cancel_activity(id);
            let _ = work.await;
            Err(WorkflowError::Cancelled {
                partial: Some(ctx.random().into()),
            })
        }
    }
}

fn registry() -> Registry {
    let mut r = Registry::new();
    r.register_workflow("triage", triage);
    r.register_workflow("patient", patient);
    r.declare_activity_effect("send_reply", Effect::Write);
    r.declare_activity_effect("search_kb", Effect::Read);
    r
}

/// Drives the recorded runs as the server would have.
fn record(name: &str) -> Vec<steadfast_proto::v1::HistoryEvent> {
    match name {
        "triage_sent" => {
            let mut run = TestRun::new(registry(), "triage", &"printer on fire");
            run.step().unwrap();
            run.history().activity_completed(1, &"hardware");
            run.step().unwrap();
            run.history().activity_completed(4, &"kb: unplug it");
            run.history().activity_completed(3, &"vip");
            run.step().unwrap();
            run.history().activity_completed(5, &"Dear vip, unplug it");
            run.step().unwrap();
            run.history().signal("review", &"send");
            run.step().unwrap();
            run.history().activity_completed(10, &"msg-1");
            run.step().unwrap();
            run.events().to_vec()
        }
        "triage_timed_out" => {
            let mut run = TestRun::new(registry(), "triage", &"lost password");
            run.step().unwrap();
            run.history().activity_completed(1, &"account");
            run.step().unwrap();
            run.history().activity_completed(3, &"user");
            run.history().activity_completed(4, &"kb: reset");
            run.step().unwrap();
            run.history().activity_failed(5, "llm overloaded", 1);
            run.history().activity_completed(5, &"Reset it here");
            run.step().unwrap();
            run.history().advance(3_600_000).timer_fired(8);
            run.step().unwrap();
            run.events().to_vec()
        }
        "patient_cancelled" => {
            let mut run = TestRun::new(registry(), "patient", &());
            run.step().unwrap();
            run.history().cancel_requested();
            run.step().unwrap();
            run.history().activity_cancelled(1);
            run.step().unwrap();
            run.events().to_vec()
        }
        other => panic!("no recording named {other}"),
    }
}

const NAMES: [&str; 3] = ["triage_sent", "triage_timed_out", "patient_cancelled"];

fn path(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/histories")
        .join(format!("{name}.binpb"))
}

#[test]
fn golden_histories_replay_without_new_commands() {
    let update = std::env::var_os("STEADFAST_UPDATE_GOLDEN").is_some();
    for name in NAMES {
        let path = path(name);
        if update {
            std::fs::write(&path, encode_history(&record(name))).unwrap();
        }
        let events = load_history(&path)
            .unwrap_or_else(|e| panic!("{e} (regenerate with STEADFAST_UPDATE_GOLDEN=1)"));
        let outcome = Replayer::new(registry())
            .replay(events)
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        assert!(outcome.finished, "{name}: the recorded run finished");
        assert!(outcome.commands.is_empty(), "{name}: nothing re-sent");
    }
}

#[test]
fn golden_history_against_changed_code_is_nondeterministic() {
    let mut changed = Registry::new();
    changed.register_workflow(
        "triage",
        |ctx: WorkflowContext, ticket: String| async move {
            // An upgrade that classifies with a different activity.
            let label: String = ctx.activity("classify_v2", &ticket).await?;
            Ok::<_, WorkflowError>(label)
        },
    );
    let err = Replayer::new(changed)
        .replay_file(path("triage_sent"))
        .unwrap_err();
    let text = err.to_string();
    assert!(
        text.starts_with("[STF-ND001] nondeterminism at command seq 1: history has ActivityScheduled(type=classify,"),
        "{text}"
    );
    assert!(
        text.contains("the code issued ScheduleActivity(type=classify_v2,"),
        "{text}"
    );
}
