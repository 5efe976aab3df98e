//! Patching ([`WorkflowContext::patched`], [`WorkflowContext::deprecate_patch`]) against
//! golden histories: a run recorded by the code before the change keeps the old branch, a run
//! recorded by the patched code keeps the new one, both replay against the patched code
//! without new commands, and code that forgot the patch is told which one.
//!
//! Regenerate (only when the change is meant to break old runs):
//! `STEADFAST_UPDATE_GOLDEN=1 cargo test -p steadfast-sdk --test patching`

use std::path::PathBuf;
use std::time::Duration;

use steadfast_proto::v1 as pb;
use steadfast_proto::v1::command::Command as Cmd;
use steadfast_sdk::replay::{Replayer, encode_history, load_history};
use steadfast_sdk::testing::{HistoryBuilder, TestRun};
use steadfast_sdk::workflow::Registry;
use steadfast_sdk::{WorkflowContext, WorkflowError};

const PATCH: &str = "classify-v2";

/// The code before the change.
async fn triage_v1(ctx: WorkflowContext, ticket: String) -> Result<String, WorkflowError> {
    let label: String = ctx.activity("classify", &ticket).await?;
    ctx.sleep(Duration::from_secs(60)).await;
    Ok(ctx.activity("draft_reply", &label).await?)
}

/// The change, deployed while runs of `triage_v1` are in flight.
async fn triage_v2(ctx: WorkflowContext, ticket: String) -> Result<String, WorkflowError> {
    let label: String = if ctx.patched(PATCH) {
        ctx.activity("classify_v2", &ticket).await?
    } else {
        ctx.activity("classify", &ticket).await?
    };
    ctx.sleep(Duration::from_secs(60)).await;
    // Asked again in a later task: the same answer, no second marker.
    let tag = if ctx.patched(PATCH) { "v2" } else { "v1" };
    let reply: String = ctx.activity("draft_reply", &label).await?;
    Ok(format!("{reply} ({tag})"))
}

/// Once no run of `triage_v1` is open: only the new branch.
async fn triage_v3(ctx: WorkflowContext, ticket: String) -> Result<String, WorkflowError> {
    ctx.deprecate_patch(PATCH);
    let label: String = ctx.activity("classify_v2", &ticket).await?;
    ctx.sleep(Duration::from_secs(60)).await;
    let reply: String = ctx.activity("draft_reply", &label).await?;
    Ok(format!("{reply} (v2)"))
}

fn registry(version: u8) -> Registry {
    let mut r = Registry::new();
    match version {
        1 => r.register_workflow("triage", triage_v1),
        2 => r.register_workflow("triage", triage_v2),
        _ => r.register_workflow("triage", triage_v3),
    }
    r
}

/// A run of `version` driven to its end as the server would have recorded it.
fn record(version: u8) -> (Vec<pb::HistoryEvent>, Vec<pb::Command>) {
    let mut run = TestRun::new(registry(version), "triage", &"printer on fire");
    let mut live = run.step().unwrap();
    let classify = live
        .iter()
        .find(|c| matches!(c.command, Some(Cmd::ScheduleActivity(_))))
        .expect("classify scheduled")
        .seq;
    run.history().activity_completed(classify, &"hardware");
    live.extend(run.step().unwrap());
    run.history().advance(60_000).timer_fired(classify + 1);
    live.extend(run.step().unwrap());
    run.history().activity_completed(classify + 2, &"unplug it");
    live.extend(run.step().unwrap());
    assert!(run.instance().is_finished(), "v{version} finished");
    (run.events().to_vec(), live)
}

fn path(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/histories")
        .join(format!("{name}.binpb"))
}

/// The golden history recorded by `version`, written first when regenerating.
fn golden(version: u8) -> Vec<pb::HistoryEvent> {
    let path = path(&format!("patch_recorded_by_v{version}"));
    if std::env::var_os("STEADFAST_UPDATE_GOLDEN").is_some() {
        std::fs::write(&path, encode_history(&record(version).0)).unwrap();
    }
    load_history(&path)
        .unwrap_or_else(|e| panic!("{e} (regenerate with STEADFAST_UPDATE_GOLDEN=1)"))
}

fn kinds(commands: &[pb::Command]) -> Vec<String> {
    commands
        .iter()
        .map(|c| match &c.command {
            Some(Cmd::ScheduleActivity(a)) => a.activity_type.clone(),
            Some(Cmd::RecordPatch(p)) => format!("patch:{}", p.patch_id),
            Some(Cmd::StartTimer(_)) => "timer".into(),
            Some(Cmd::CompleteRun(_)) => "complete".into(),
            other => format!("{other:?}"),
        })
        .collect()
}

fn result(events: &[pb::HistoryEvent]) -> String {
    use steadfast_proto::v1::history_event::Attributes as Ev;
    let Some(Ev::RunCompleted(done)) = events.last().and_then(|e| e.attributes.clone()) else {
        panic!("the run completed")
    };
    serde_json::from_slice(&done.result.unwrap().data).unwrap()
}

#[test]
fn old_runs_keep_the_old_branch_and_new_runs_take_the_new_one() {
    for version in [1, 2] {
        assert_eq!(
            golden(version),
            record(version).0,
            "v{version}: the stored history is what the run records"
        );
    }
    // A run in flight when v2 was deployed: its history has no marker, so v2 replays it on
    // the old branch.
    let old = Replayer::new(registry(2)).replay(golden(1)).unwrap();
    assert!(
        old.finished && old.commands.is_empty(),
        "{:?}",
        old.commands
    );
    assert_eq!(
        kinds(&old.confirmed),
        ["classify", "timer", "draft_reply", "complete"]
    );
    // A run started on v2 took the new branch and recorded the marker, once.
    let (events, live) = record(2);
    assert_eq!(
        kinds(&live),
        [
            "patch:classify-v2",
            "classify_v2",
            "timer",
            "draft_reply",
            "complete"
        ]
    );
    assert_eq!(result(&events), "unplug it (v2)");
    let new = Replayer::new(registry(2)).replay(golden(2)).unwrap();
    assert!(
        new.finished && new.commands.is_empty(),
        "{:?}",
        new.commands
    );
    assert_eq!(new.confirmed, live, "the same commands as live");
}

#[test]
fn deprecated_patch_replays_marked_runs_and_still_records_the_marker() {
    let replayed = Replayer::new(registry(3)).replay(golden(2)).unwrap();
    assert!(replayed.finished && replayed.commands.is_empty());
    // New runs keep recording it, so workers still running v2 replay them on the new branch.
    let (events, live) = record(3);
    assert_eq!(kinds(&live)[..2], ["patch:classify-v2", "classify_v2"]);
    let by_v2 = Replayer::new(registry(2)).replay(events).unwrap();
    assert!(by_v2.finished && by_v2.commands.is_empty());
}

#[test]
fn deprecated_patch_without_a_marker_records_nothing_on_replay() {
    // A history whose first task has no marker where the deprecated call is: nothing is
    // issued for it. (It goes on to differ, since v3 has no old branch: deprecating is for
    // when no such run is open.)
    let err = Replayer::new(registry(3)).replay(golden(1)).unwrap_err();
    let text = err.to_string();
    assert!(
        text.starts_with("[STF-ND001] nondeterminism at command seq 1: history has ActivityScheduled(type=classify,"),
        "{text}"
    );
    assert!(
        text.contains("ScheduleActivity(type=classify_v2,"),
        "{text}"
    );
}

#[test]
fn code_without_the_patch_is_told_which_patch_the_run_took() {
    let err = Replayer::new(registry(1)).replay(golden(2)).unwrap_err();
    let text = err.to_string();
    assert!(
        text.starts_with("[STF-ND001] nondeterminism at command seq 1: history has PatchMarker(patch=\"classify-v2\""),
        "{text}"
    );
    assert!(
        text.contains("ctx.patched(\"classify-v2\")"),
        "names the call to keep: {text}"
    );
    assert!(text.contains("ScheduleActivity(type=classify,"), "{text}");
}

/// The code reaches the patch for the first time in a task that is live, after tasks that
/// old code ran: the run takes the new branch from there.
#[test]
fn a_run_that_reaches_the_patch_after_the_deploy_takes_the_new_branch() {
    let mut r = Registry::new();
    r.register_workflow("late", |ctx: WorkflowContext, _: ()| async move {
        ctx.sleep(Duration::from_secs(1)).await;
        let branch = if ctx.patched("late-change") {
            "new"
        } else {
            "old"
        };
        Ok::<_, WorkflowError>(branch.to_owned())
    });
    // The first task (the timer) is in the history, recorded before the deploy.
    let mut h = HistoryBuilder::new("late", &());
    h.start_task().complete_task(&[pb::Command {
        seq: 1,
        command: Some(Cmd::StartTimer(pb::StartTimerCommand {
            duration_ms: 1_000,
        })),
    }]);
    h.advance(1_000).timer_fired(1);
    let history = h.events().to_vec();
    let outcome = Replayer::new(r).replay(history).unwrap();
    assert_eq!(kinds(&outcome.commands), ["patch:late-change", "complete"]);
}
