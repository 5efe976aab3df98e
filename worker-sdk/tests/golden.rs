//! Golden histories: recorded runs checked into `tests/histories/` and replayed against the
//! current workflow code. A change to the code (or to the SDK's replay) that would break
//! runs recorded by an older version fails here.
//!
//! Regenerate (only when the change is meant to break old runs):
//! `STEADFAST_UPDATE_GOLDEN=1 cargo test -p steadfast-sdk --test golden`

use std::path::PathBuf;
use std::time::Duration;

use futures::future::{Either, select};
use steadfast_proto::v1 as pb;
use steadfast_proto::v1::command::Command as Cmd;
use steadfast_proto::v1::history_event::Attributes as Ev;
use steadfast_sdk::replay::{Replayer, encode_history, load_history};
use steadfast_sdk::testing::{START_MS, TestRun};
use steadfast_sdk::workflow::{ChildOptions, ParentClosePolicy, Registry, WaitSignalOptions};
use steadfast_sdk::{ActivityError, Effect, WorkflowContext, WorkflowError};

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

/// Asks a slow model; if it has not answered within 30 s, cancels it and asks a fast one,
/// in the same task: CancelActivity, ScheduleActivity and ReportProgress in one completion.
async fn fallback(ctx: WorkflowContext, _: ()) -> Result<String, WorkflowError> {
    let slow = ctx.activity::<String>("slow_model", &());
    let slow_id = slow.id();
    let deadline = ctx.sleep(Duration::from_secs(30));
    match select(slow, deadline).await {
        Either::Left((answer, deadline)) => {
            deadline.cancel();
            Ok(answer?)
        }
        Either::Right(((), slow)) => {
            ctx.cancel_activity(slow_id);
            let fast = ctx.activity::<String>("fast_model", &());
            ctx.progress(1, 2, "fell back to the fast model");
            let slow = match slow.await {
                Err(ActivityError::Cancelled) => "cancelled".to_owned(),
                other => format!("{other:?}"),
            };
            let fast = fast.await?;
            Ok(format!("{fast} (slow model: {slow})"))
        }
    }
}

/// Fans out one child run per product, starts a detached audit run that outlives it, tells
/// the audit run how many products there are, then gathers the children's results: every
/// child and signal event the server records for a parent.
async fn fan_out(ctx: WorkflowContext, products: Vec<String>) -> Result<String, WorkflowError> {
    let children: Vec<_> = products
        .iter()
        .map(|p| ctx.child::<String>("product", p))
        .collect();
    let audit = ctx
        .child::<()>("audit", &products)
        .with_options(ChildOptions::default().parent_close_policy(ParentClosePolicy::Abandon))
        .start();
    let told = match audit.await {
        Ok(audit_id) => match ctx.signal_run(&audit_id, "products", &products.len()).await {
            Ok(()) => format!("told {audit_id}"),
            Err(e) => e.to_string(),
        },
        Err(e) => e.to_string(),
    };
    let mut out = vec![told];
    for child in children {
        out.push(match child.await {
            Ok(answer) => answer,
            Err(e) => e.to_string(),
        });
    }
    Ok(out.join("; "))
}

/// An agent steered by updates: `add` (validated) runs one activity and appends an item.
async fn steer(ctx: WorkflowContext, _: ()) -> Result<Vec<String>, WorkflowError> {
    let items = std::rc::Rc::new(std::cell::RefCell::new(Vec::<String>::new()));
    let (list, hctx) = (std::rc::Rc::clone(&items), ctx.clone());
    ctx.on_update_validated(
        "add",
        |item: &String| match item.starts_with("bad") {
            true => Err("no bad items".to_string()),
            false => Ok(()),
        },
        move |item: String| {
            let (list, ctx) = (std::rc::Rc::clone(&list), hctx.clone());
            async move {
                let checked: String = ctx.activity("check", &item).await?;
                list.borrow_mut().push(checked);
                let len = list.borrow().len();
                Ok::<_, WorkflowError>(len)
            }
        },
    );
    let _: serde_json::Value = ctx.wait_signal("finish").await?;
    let out = items.borrow().clone();
    Ok(out)
}

fn registry() -> Registry {
    let mut r = Registry::new();
    r.register_workflow("steer", steer);
    r.register_workflow("triage", triage);
    r.register_workflow("patient", patient);
    r.register_workflow("fallback", fallback);
    r.register_workflow("fan_out", fan_out);
    r.declare_activity_effect("send_reply", Effect::Write);
    r.declare_activity_effect("slow_model", Effect::Write);
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
        // Both children and the audit run start; one child completes, one fails.
        "fan_out_children" => {
            let mut run = TestRun::new(registry(), "fan_out", &["printers", "laptops"]);
            run.step().unwrap();
            run.history()
                .child_started(1)
                .child_started(2)
                .child_started(3);
            run.step().unwrap();
            run.history().signal_resolved(4, true, "");
            run.step().unwrap();
            run.history()
                .child_completed(1, &"printers: 3 tickets")
                .child_failed(2, "no model answered");
            run.step().unwrap();
            run.events().to_vec()
        }
        // The audit run's workflow id is in use; one child is terminated, one times out.
        "fan_out_start_failed" => {
            let mut run = TestRun::new(registry(), "fan_out", &["printers", "laptops"]);
            run.step().unwrap();
            run.history()
                .child_start_failed(3, "workflow id audit has an open run")
                .child_started(1)
                .child_ended(1, pb::RunStatus::Terminated);
            run.step().unwrap();
            run.history()
                .child_started(2)
                .advance(60_000)
                .child_ended(2, pb::RunStatus::TimedOut);
            run.step().unwrap();
            run.events().to_vec()
        }
        // A rejected update, then one whose handler runs an activity, then the end.
        "steered_by_updates" => {
            let mut run = TestRun::new(registry(), "steer", &());
            run.step().unwrap();
            run.history().update("u-bad", "add", &"bad-x");
            run.step().unwrap();
            run.history().update("u-1", "add", &"alpha");
            run.step().unwrap();
            run.history().activity_completed(3, &"alpha checked");
            run.step().unwrap();
            run.history().signal("finish", &());
            run.step().unwrap();
            run.events().to_vec()
        }
        other => record_interleaved(other).0,
    }
}

/// The server's reaction to a command when the cancelled activity is held by no worker
/// (queued, backing off, or dispatched before a restart): ActivityCancelled, recorded
/// right after ActivityCancelRequested, between the task's own command events.
fn cancelled_at_once(c: &pb::Command) -> Vec<Ev> {
    match &c.command {
        Some(Cmd::CancelActivity(a)) => vec![Ev::ActivityCancelled(pb::ActivityCancelled {
            command_seq: a.activity_id,
        })],
        _ => Vec::new(),
    }
}

/// Runs of `fallback` whose cancellation the server confirmed inside the command block, as
/// observed: `WorkflowTaskCompleted, ActivityCancelRequested, ActivityCancelled,
/// ActivityScheduled, ProgressReported, WorkflowTaskScheduled`. Returns the history and
/// the commands the code issued live.
fn record_interleaved(name: &str) -> (Vec<pb::HistoryEvent>, Vec<pb::Command>) {
    let mut run = TestRun::new(registry(), "fallback", &());
    let mut live = run.step().unwrap();
    match name {
        // Nobody polled the activity before its deadline: it is still queued.
        "fallback_cancel_queued" => {}
        // Its first attempt failed; the second waits for its backoff to pass.
        "fallback_cancel_backing_off" => {
            run.history()
                .activity_failed(1, "model overloaded", START_MS + 60_000);
            live.extend(run.step().unwrap());
        }
        // A worker held the attempt, then the server restarted: the task in flight timed
        // out, and no worker holds the attempt any more as far as the server knows.
        "fallback_cancel_after_restart" => {
            run.history()
                .activity_started(1)
                .start_task()
                .task_timed_out();
        }
        other => panic!("no recording named {other}"),
    }
    run.history().advance(30_000).timer_fired(2);
    let c = run.step_with(cancelled_at_once).unwrap();
    assert_eq!(
        c.len(),
        3,
        "cancel, schedule and progress in one task: {c:?}"
    );
    live.extend(c);
    run.history().activity_completed(4, &"fast answer");
    live.extend(run.step().unwrap());
    assert!(run.instance().is_finished());
    (run.events().to_vec(), live)
}

const INTERLEAVED: [&str; 3] = [
    "fallback_cancel_queued",
    "fallback_cancel_backing_off",
    "fallback_cancel_after_restart",
];

const NAMES: [&str; 9] = [
    "triage_sent",
    "triage_timed_out",
    "patient_cancelled",
    INTERLEAVED[0],
    INTERLEAVED[1],
    INTERLEAVED[2],
    "fan_out_children",
    "fan_out_start_failed",
    "steered_by_updates",
];

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
fn interleaved_server_events_replay_as_the_run_went_live() {
    for name in INTERLEAVED {
        let events = load_history(path(name))
            .unwrap_or_else(|e| panic!("{e} (regenerate with STEADFAST_UPDATE_GOLDEN=1)"));
        // The stored history has the server's confirmation between two command events.
        let kinds: Vec<pb::EventKind> = events.iter().map(|e| e.kind()).collect();
        let at = kinds
            .iter()
            .position(|k| *k == pb::EventKind::ActivityCancelRequested)
            .unwrap_or_else(|| panic!("{name}: no cancel request"));
        assert_eq!(
            kinds[at - 1..at + 4],
            [
                pb::EventKind::WorkflowTaskCompleted,
                pb::EventKind::ActivityCancelRequested,
                pb::EventKind::ActivityCancelled,
                pb::EventKind::ActivityScheduled,
                pb::EventKind::ProgressReported,
            ],
            "{name}"
        );
        let (recorded, live) = record_interleaved(name);
        assert_eq!(
            recorded, events,
            "{name}: the stored history is what the run records"
        );
        let outcome = Replayer::new(registry())
            .replay(events)
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(outcome.confirmed, live, "{name}: the same commands as live");
        assert!(outcome.commands.is_empty(), "{name}: nothing re-sent");
        assert!(outcome.finished, "{name}");
    }
    // The result the workflow saw, live and on replay: the cancellation, then the answer.
    let (events, _) = record_interleaved(INTERLEAVED[0]);
    let Some(Ev::RunCompleted(done)) = events.last().and_then(|e| e.attributes.clone()) else {
        panic!("the run completed")
    };
    assert_eq!(
        done.result.unwrap().data,
        br#""fast answer (slow model: cancelled)""#
    );
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

/// The child and signal events reach the code as they did live: the results, failures and
/// endings of the children and the delivery of the signal, in the parent's result.
#[test]
fn golden_child_runs_resolve_as_recorded() {
    let cases = [
        (
            "fan_out_children",
            "told child-3; printers: 3 tickets; child run failed (Error): no model answered",
        ),
        (
            "fan_out_start_failed",
            "child run did not start: workflow id audit has an open run; \
             child run ended terminated; child run ended timed_out",
        ),
    ];
    for (name, want) in cases {
        let events = load_history(path(name))
            .unwrap_or_else(|e| panic!("{e} (regenerate with STEADFAST_UPDATE_GOLDEN=1)"));
        assert_eq!(
            events,
            record(name),
            "{name}: the stored history is what the run records"
        );
        let Some(Ev::RunCompleted(done)) = events.last().and_then(|e| e.attributes.clone()) else {
            panic!("{name}: the run completed")
        };
        let got: String = serde_json::from_slice(&done.result.unwrap().data).unwrap();
        assert_eq!(got, want, "{name}");
        let outcome = Replayer::new(registry()).replay(events).unwrap();
        assert_eq!(
            outcome
                .confirmed
                .iter()
                .filter(|c| matches!(c.command, Some(Cmd::StartChild(_))))
                .count(),
            3,
            "{name}: two children and the audit run, each started once"
        );
    }
}

#[test]
fn golden_updates_are_answered_as_recorded() {
    let events = load_history(path("steered_by_updates")).unwrap();
    let answers: Vec<String> = events
        .iter()
        .filter_map(|e| match &e.attributes {
            Some(Ev::UpdateCompleted(u)) => Some(format!(
                "{} done {}",
                u.update_id,
                String::from_utf8_lossy(&u.result.as_ref().unwrap().data)
            )),
            Some(Ev::UpdateRejected(u)) => Some(format!("{} rejected {}", u.update_id, u.reason)),
            _ => None,
        })
        .collect();
    assert_eq!(answers, ["u-bad rejected no bad items", "u-1 done 1"]);
    let outcome = Replayer::new(registry()).replay(events).unwrap();
    assert!(outcome.finished && outcome.commands.is_empty());
}
