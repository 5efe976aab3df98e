//! Executor and replay tests over histories built in code; no server.

use std::time::Duration;

use futures::future::{Either, select};
use steadfast_proto::v1 as pb;
use steadfast_proto::v1::command::Command as Cmd;

use super::*;
use crate::replay::Replayer;
use crate::testing::{HistoryBuilder, START_MS, TestRun};
use crate::{ActivityError, Effect, payload};

#[path = "tests_history.rs"]
mod history_decisions;
#[path = "tests_query.rs"]
mod queries;
#[path = "tests_search.rs"]
mod search;
#[path = "tests_update.rs"]
mod updates;

/// Commands in a compact, comparable form: "1:activity(a,\"x\")".
fn show(commands: &[pb::Command]) -> Vec<String> {
    commands
        .iter()
        .map(|c| {
            let body = match c.command.as_ref().unwrap() {
                Cmd::ScheduleActivity(a) => format!(
                    "activity({},{})",
                    a.activity_type,
                    String::from_utf8_lossy(&a.input.as_ref().unwrap().data)
                ),
                Cmd::StartTimer(t) => format!("timer({})", t.duration_ms),
                Cmd::CancelTimer(t) => format!("cancel_timer({})", t.timer_id),
                Cmd::WaitSignal(w) => format!("wait({})", w.name),
                Cmd::ReportProgress(p) => format!("progress({}/{})", p.done, p.total),
                Cmd::RecordPartialResult(p) => {
                    format!(
                        "partial({})",
                        String::from_utf8_lossy(&p.result.as_ref().unwrap().data)
                    )
                }
                Cmd::CancelActivity(a) => format!("cancel_activity({})", a.activity_id),
                Cmd::StartChild(c) => format!(
                    "child({},{})",
                    c.workflow_type,
                    String::from_utf8_lossy(&c.input.as_ref().unwrap().data)
                ),
                Cmd::SignalRun(c) => format!("signal_run({},{})", c.run_id, c.name),
                Cmd::RecordPatch(c) => format!("patch({})", c.patch_id),
                Cmd::UpsertSearchAttributes(c) => format!("attrs({})", c.attributes.len()),
                Cmd::CompleteUpdate(c) => format!(
                    "update_done({},{})",
                    c.update_id,
                    String::from_utf8_lossy(&c.result.as_ref().unwrap().data)
                ),
                Cmd::RejectUpdate(c) => format!("update_rejected({})", c.update_id),
                Cmd::CompleteRun(r) => {
                    format!(
                        "complete({})",
                        String::from_utf8_lossy(&r.result.as_ref().unwrap().data)
                    )
                }
                Cmd::FailRun(f) => format!("fail({})", f.failure.as_ref().unwrap().r#type),
                Cmd::CancelRun(r) => format!(
                    "cancel_run({})",
                    r.partial_result
                        .as_ref()
                        .map(|p| String::from_utf8_lossy(&p.data).into_owned())
                        .unwrap_or_default()
                ),
                Cmd::ContinueAsNew(_) => "continue_as_new".into(),
            };
            format!("{}:{body}", c.seq)
        })
        .collect()
}

async fn three_steps(ctx: WorkflowContext, input: String) -> Result<String, WorkflowError> {
    let a: String = ctx.activity("a", &input).await?;
    ctx.progress(1, 3, "a done");
    let b: String = ctx.activity("b", &a).await?;
    let c: String = ctx.activity("c", &b).await?;
    Ok(format!("{c}!"))
}

async fn join_select(ctx: WorkflowContext, _: ()) -> Result<String, WorkflowError> {
    let (x, y) = futures::join!(
        ctx.activity::<String>("x", &1),
        ctx.activity::<String>("y", &2)
    );
    let (x, y) = (x?, y?);
    let first = match select(
        ctx.activity::<String>("p", &3),
        ctx.activity::<String>("q", &4),
    )
    .await
    {
        Either::Left((p, _)) => format!("p={}", p?),
        Either::Right((q, _)) => format!("q={}", q?),
    };
    Ok(format!("{x}{y} {first}"))
}

async fn timers(ctx: WorkflowContext, _: ()) -> Result<(i64, i64), WorkflowError> {
    let before = ctx.now_ms();
    ctx.sleep(Duration::from_secs(10)).await;
    Ok((before, ctx.now_ms()))
}

async fn approval(ctx: WorkflowContext, _: ()) -> Result<String, WorkflowError> {
    let _: String = ctx.activity("prepare", &()).await?;
    let answer: String = ctx.wait_signal("approve").await?;
    Ok(answer)
}

async fn ask(ctx: WorkflowContext, _: ()) -> Result<Option<String>, WorkflowError> {
    let options = WaitSignalOptions::question("ok?")
        .choices(["yes", "no"])
        .timeout(Duration::from_secs(60));
    ctx.wait_signal_with::<String>("answer", options).await
}

async fn cancellable(ctx: WorkflowContext, _: ()) -> Result<String, WorkflowError> {
    let work = ctx.activity::<String>("long", &());
    let id = work.id();
    match select(work, ctx.cancelled()).await {
        Either::Left((r, _)) => Ok(r?),
        Either::Right(((), work)) => {
            ctx.cancel_activity(id);
            let outcome = work.await;
            assert_eq!(outcome, Err(ActivityError::Cancelled));
            ctx.set_partial_result(&"half")?;
            Err(WorkflowError::Cancelled {
                partial: Some("half".into()),
            })
        }
    }
}

async fn randomness(ctx: WorkflowContext, _: ()) -> Result<(u64, String), WorkflowError> {
    let r = ctx.random();
    ctx.sleep(Duration::from_millis(1)).await;
    Ok((r, ctx.uuid().to_string()))
}

async fn panics(ctx: WorkflowContext, _: ()) -> Result<(), WorkflowError> {
    let _: () = ctx.activity("a", &()).await?;
    panic!("boom in workflow code");
}

async fn cancelled_without_request(_: WorkflowContext, _: ()) -> Result<(), WorkflowError> {
    Err(WorkflowError::Cancelled { partial: None })
}

fn registry() -> Registry {
    let mut r = Registry::new();
    r.register_workflow("three_steps", three_steps);
    r.register_workflow("join_select", join_select);
    r.register_workflow("timers", timers);
    r.register_workflow("approval", approval);
    r.register_workflow("ask", ask);
    r.register_workflow("cancellable", cancellable);
    r.register_workflow("randomness", randomness);
    r.register_workflow("panics", panics);
    r.register_workflow("cancelled_without_request", cancelled_without_request);
    r.register_workflow("activity_b", |ctx: WorkflowContext, _: ()| async move {
        let _: () = ctx.activity("b", &()).await?;
        Ok(())
    });
    r.register_workflow("collect", |ctx: WorkflowContext, _: ()| async move {
        let a = ctx.activity::<String>("a", &());
        ctx.progress(0, 1, "started");
        let first: String = ctx.wait_signal("s").await?;
        let second: String = ctx.wait_signal("s").await?;
        let a = a.await?;
        Ok::<_, WorkflowError>(format!("{a}:{first}{second}"))
    });
    r.declare_activity_effect("a", Effect::Write);
    r
}

/// Replays the run's full history from scratch and checks it issues the same commands and
/// sends none again.
fn assert_replays_identically(run: &TestRun, live: &[pb::Command]) -> crate::replay::ReplayOutcome {
    let outcome = Replayer::new(registry())
        .replay(run.events().to_vec())
        .expect("replay");
    assert!(
        outcome.commands.is_empty(),
        "re-sent: {:?}",
        show(&outcome.commands)
    );
    assert_eq!(show(&outcome.confirmed), show(live));
    assert_eq!(outcome.confirmed, live, "commands differ in detail");
    outcome
}

#[test]
fn three_activities_activation_by_activation_then_replayed() {
    let mut run = TestRun::new(registry(), "three_steps", &"in");
    let mut live = Vec::new();

    let c = run.step().unwrap();
    assert_eq!(show(&c), ["1:activity(a,\"in\")"]);
    let opts = match &c[0].command {
        Some(Cmd::ScheduleActivity(a)) => a.options.clone().unwrap(),
        _ => unreachable!(),
    };
    assert_eq!(opts.effect(), pb::Effect::Write, "effect from the registry");
    live.extend(c);

    // A task with nothing new for the code: no commands.
    let c = run.step().unwrap();
    assert!(c.is_empty());

    run.history().activity_completed(1, &"A");
    let c = run.step().unwrap();
    assert_eq!(show(&c), ["2:progress(1/3)", "3:activity(b,\"A\")"]);
    live.extend(c);

    run.history().activity_failed(3, "flaky", START_MS + 10_000);
    run.history().activity_completed(3, &"B");
    let c = run.step().unwrap();
    assert_eq!(show(&c), ["4:activity(c,\"B\")"]);
    live.extend(c);

    run.history().activity_completed(4, &"C");
    let c = run.step().unwrap();
    assert_eq!(show(&c), ["5:complete(\"C!\")"]);
    live.extend(c);
    assert!(run.instance().is_finished());

    let outcome = assert_replays_identically(&run, &live);
    assert!(outcome.finished);
}

#[test]
fn join_and_select_resolve_the_same_on_replay() {
    // q completes before p, in separate tasks: select takes q.
    let mut run = TestRun::new(registry(), "join_select", &());
    let mut live = run.step().unwrap();
    assert_eq!(show(&live), ["1:activity(x,1)", "2:activity(y,2)"]);
    run.history().activity_completed(2, &"Y");
    assert!(run.step().unwrap().is_empty());
    run.history().activity_completed(1, &"X");
    let c = run.step().unwrap();
    assert_eq!(show(&c), ["3:activity(p,3)", "4:activity(q,4)"]);
    live.extend(c);
    run.history().activity_completed(4, &"Q");
    let c = run.step().unwrap();
    assert_eq!(show(&c), ["5:complete(\"XY q=Q\")"]);
    live.extend(c);
    // p's result arriving later changes nothing.
    run.history().activity_completed(3, &"P");
    assert_replays_identically(&run, &live);

    // Both in one batch, q first in history: poll order decides, p wins, on every replay.
    let mut run = TestRun::new(registry(), "join_select", &());
    let mut live = run.step().unwrap();
    run.history()
        .activity_completed(2, &"Y")
        .activity_completed(1, &"X");
    live.extend(run.step().unwrap());
    run.history()
        .activity_completed(4, &"Q")
        .activity_completed(3, &"P");
    let c = run.step().unwrap();
    assert_eq!(show(&c), ["5:complete(\"XY p=P\")"]);
    live.extend(c);
    assert_replays_identically(&run, &live);
}

#[test]
fn timer_and_task_time() {
    let mut run = TestRun::new(registry(), "timers", &());
    let mut live = run.step().unwrap();
    assert_eq!(show(&live), ["1:timer(10000)"]);
    let first_task_ms = run.events()[2].time_ms;
    run.history().advance(10_000).timer_fired(1);
    let c = run.step().unwrap();
    let second_task_ms = run.events()[run.events().len() - 3].time_ms;
    assert_eq!(
        show(&c),
        [format!("2:complete([{first_task_ms},{second_task_ms}])")]
    );
    assert!(second_task_ms >= first_task_ms + 10_000);
    live.extend(c);
    assert_replays_identically(&run, &live);
}

#[test]
fn signal_buffered_before_the_wait_is_taken_without_waiting() {
    let mut run = TestRun::new(registry(), "approval", &());
    let mut live = run.step().unwrap();
    // The signal arrives in the same batch as the activity result, before it.
    run.history()
        .signal("approve", &"yes")
        .activity_completed(1, &"ready");
    let c = run.step().unwrap();
    assert_eq!(
        show(&c),
        ["2:complete(\"yes\")"],
        "no WaitSignal: nothing to wait for"
    );
    live.extend(c);
    assert_replays_identically(&run, &live);

    // Signal after the wait: the WaitSignal command says what the run waits on.
    let mut run = TestRun::new(registry(), "approval", &());
    let mut live = run.step().unwrap();
    run.history().activity_completed(1, &"ready");
    let c = run.step().unwrap();
    assert_eq!(show(&c), ["2:wait(approve)"]);
    live.extend(c);
    run.history()
        .signal("other", &"ignored")
        .signal("approve", &"later");
    let c = run.step().unwrap();
    assert_eq!(show(&c), ["3:complete(\"later\")"]);
    live.extend(c);
    assert_replays_identically(&run, &live);
}

#[test]
fn signal_with_timeout() {
    // The timer fires first.
    let mut run = TestRun::new(registry(), "ask", &());
    let mut live = run.step().unwrap();
    assert_eq!(show(&live), ["1:wait(answer)", "2:timer(60000)"]);
    match &live[0].command {
        Some(Cmd::WaitSignal(w)) => {
            assert_eq!(w.question, "ok?");
            assert_eq!(w.choices, ["yes", "no"]);
        }
        _ => unreachable!(),
    }
    run.history().timer_fired(2);
    let c = run.step().unwrap();
    assert_eq!(show(&c), ["3:complete(null)"]);
    live.extend(c);
    assert_replays_identically(&run, &live);

    // The signal comes first: the timer is cancelled. Both in one batch: the signal wins
    // and the fired timer is not cancelled.
    for fire_too in [false, true] {
        let mut run = TestRun::new(registry(), "ask", &());
        let mut live = run.step().unwrap();
        if fire_too {
            run.history().timer_fired(2);
        }
        run.history().signal("answer", &"yes");
        let c = run.step().unwrap();
        let expected: &[&str] = if fire_too {
            &["3:complete(\"yes\")"]
        } else {
            &["3:cancel_timer(2)", "4:complete(\"yes\")"]
        };
        assert_eq!(show(&c), expected);
        live.extend(c);
        assert_replays_identically(&run, &live);
    }
}

#[test]
fn cancellation_ends_with_the_partial_result() {
    let mut run = TestRun::new(registry(), "cancellable", &());
    let mut live = run.step().unwrap();
    run.history().cancel_requested();
    let c = run.step().unwrap();
    assert_eq!(show(&c), ["2:cancel_activity(1)"]);
    live.extend(c);
    run.history().activity_cancelled(1);
    let c = run.step().unwrap();
    assert_eq!(show(&c), ["3:partial(\"half\")", "4:cancel_run(\"half\")"]);
    live.extend(c);
    assert_replays_identically(&run, &live);

    let mut run = TestRun::new(registry(), "cancelled_without_request", &());
    let c = run.step().unwrap();
    assert_eq!(show(&c), ["1:fail(steadfast.CancelledWithoutRequest)"]);
}

#[test]
fn activity_failures_resolve_only_when_final() {
    let mut run = TestRun::new(registry(), "three_steps", &"in");
    run.step().unwrap();
    run.history().activity_timed_out(1, START_MS + 1000);
    assert!(run.step().unwrap().is_empty(), "a retry is coming");
    run.history().activity_failed(1, "card declined", 0);
    let c = run.step().unwrap();
    assert_eq!(show(&c), ["2:fail(Error)"]);
}

#[test]
fn randomness_is_the_same_on_replay() {
    let mut run = TestRun::new(registry(), "randomness", &());
    let mut live = run.step().unwrap();
    run.history().timer_fired(1);
    live.extend(run.step().unwrap());
    let outcome = assert_replays_identically(&run, &live);
    let Some(Cmd::CompleteRun(done)) = &outcome.confirmed[1].command else {
        panic!("not completed")
    };
    let (r, u): (u64, String) = payload::decode(done.result.as_ref()).unwrap();
    assert_ne!(r, 0);
    assert_eq!(uuid::Uuid::parse_str(&u).unwrap().get_version_num(), 4);
}

#[test]
fn nondeterminism_names_seq_history_and_code() {
    // The history was written by code that called "a"; this code calls "b".
    let mut h = HistoryBuilder::new("activity_b", &());
    h.start_task();
    let recorded = pb::Command {
        seq: 1,
        command: Some(Cmd::ScheduleActivity(pb::ScheduleActivityCommand {
            activity_type: "a".into(),
            input: Some(payload::encode(&()).unwrap()),
            options: None,
        })),
    };
    h.complete_task(&[recorded]);
    h.activity_completed(1, &()).start_task();
    let err = Replayer::new(registry())
        .replay(h.events().to_vec())
        .unwrap_err();
    let Error::Nondeterminism { seq, history, code } = &err else {
        panic!("{err}")
    };
    assert_eq!(*seq, 1);
    assert!(
        history.starts_with("ActivityScheduled(type=a, input=blake3:"),
        "{history}"
    );
    assert!(
        code.starts_with("ScheduleActivity(type=b, input=blake3:"),
        "{code}"
    );
    let text = err.to_string();
    assert!(
        text.starts_with(
            "[STF-ND001] nondeterminism at command seq 1: history has ActivityScheduled(type=a"
        ),
        "{text}"
    );
    assert_eq!(err.fail_cause(), pb::WorkflowTaskFailCause::Nondeterminism);
}

#[test]
fn nondeterminism_when_code_issues_more_or_fewer_commands() {
    // History of "three_steps" whose first task recorded nothing: the code's command 1 is
    // extra.
    let mut h = HistoryBuilder::new("three_steps", &"in");
    h.start_task().complete_task(&[]).start_task();
    let err = Replayer::new(registry())
        .replay(h.events().to_vec())
        .unwrap_err();
    assert!(
        matches!(&err, Error::Nondeterminism { seq: 1, history, code } if history == "nothing" && code.contains("type=a")),
        "{err}"
    );

    // History with a timer the code never starts.
    let mut run = TestRun::new(registry(), "three_steps", &"in");
    let mut commands = run.step().unwrap();
    commands.push(pb::Command {
        seq: 2,
        command: Some(Cmd::StartTimer(pb::StartTimerCommand { duration_ms: 5 })),
    });
    let mut h = HistoryBuilder::new("three_steps", &"in");
    h.start_task().complete_task(&commands).start_task();
    let err = Replayer::new(registry())
        .replay(h.events().to_vec())
        .unwrap_err();
    assert!(
        matches!(&err, Error::Nondeterminism { seq: 2, history, code } if history.starts_with("TimerStarted") && code == "nothing"),
        "{err}"
    );
}

#[test]
fn a_workflow_panic_is_reported_not_propagated() {
    let mut run = TestRun::new(registry(), "panics", &());
    run.step().unwrap();
    run.history().activity_completed(1, &());
    let err = run.step().unwrap_err();
    assert!(
        matches!(&err, Error::Panic { message } if message == "boom in workflow code"),
        "{err}"
    );
    assert_eq!(err.fail_cause(), pb::WorkflowTaskFailCause::WorkflowPanic);
    // The instance stays failed.
    assert!(matches!(run.step(), Err(Error::Panic { .. })));
}

#[test]
fn unknown_workflow_type() {
    let mut run = TestRun::new(registry(), "nope", &());
    assert_eq!(
        run.step().unwrap_err(),
        Error::UnknownWorkflowType("nope".into())
    );
}

#[test]
fn a_failed_task_is_skipped_on_replay_and_a_stale_instance_is_detected() {
    let mut h = HistoryBuilder::new("three_steps", &"in");
    h.start_task()
        .fail_task(pb::WorkflowTaskFailCause::Nondeterminism, "old code");
    let mut run_cmds = Replayer::new(registry())
        .replay(h.events().to_vec())
        .unwrap()
        .commands;
    assert_eq!(show(&run_cmds), ["1:activity(a,\"in\")"]);
    h.start_task().complete_task(&run_cmds);
    h.activity_completed(1, &"A").start_task();
    let outcome = Replayer::new(registry())
        .replay(h.events().to_vec())
        .unwrap();
    assert_eq!(
        show(&outcome.commands),
        ["2:progress(1/3)", "3:activity(b,\"A\")"]
    );
    run_cmds.extend(outcome.commands);

    // An instance that advanced over a task that then timed out cannot go on.
    let mut run = TestRun::new(registry(), "three_steps", &"in");
    let mut h = HistoryBuilder::new("three_steps", &"in");
    h.start_task();
    let mut instance = WorkflowInstance::new(std::sync::Arc::new(registry()), "r");
    instance.activate(h.events().to_vec()).unwrap();
    h.push(
        steadfast_proto::v1::history_event::Attributes::WorkflowTaskTimedOut(
            pb::WorkflowTaskTimedOut { started_seq: 3 },
        ),
    );
    h.start_task();
    assert_eq!(instance.activate(h.events_after(3)), Err(Error::Stale(3)));
    run.step().unwrap();
}

#[test]
fn a_cached_instance_advances_with_only_the_new_events() {
    async fn many(ctx: WorkflowContext, n: u32) -> Result<u32, WorkflowError> {
        let mut sum = 0;
        for i in 0..n {
            sum += ctx.activity::<u32>("step", &i).await?;
        }
        Ok(sum)
    }
    let mut registry = Registry::new();
    registry.register_workflow("many", many);
    let mut run = TestRun::new(registry.clone(), "many", &500u32);
    let mut live = run.step().unwrap();
    for i in 1..=500u32 {
        let before_polls = run.instance().polls();
        let before_seq = run.instance().last_seq();
        run.history().activity_completed(i, &1u32);
        let c = run.step().unwrap();
        assert_eq!(c.len(), 1);
        // Each step hands the instance the same few events, and polls the code once,
        // however long the history already is.
        assert_eq!(run.instance().last_seq() - before_seq, 5);
        assert_eq!(run.instance().polls() - before_polls, 1);
        live.extend(c);
    }
    assert_eq!(show(&live[500..]), ["501:complete(500)"]);
    let outcome = Replayer::new(registry)
        .replay(run.events().to_vec())
        .unwrap();
    assert!(outcome.commands.is_empty());
    assert_eq!(outcome.confirmed, live);
}

#[test]
fn a_gap_in_the_events_is_refused() {
    let mut h = HistoryBuilder::new("three_steps", &"in");
    h.start_task();
    let mut instance = WorkflowInstance::new(std::sync::Arc::new(registry()), "r");
    let err = instance.activate(h.events_after(1)).unwrap_err();
    assert!(matches!(err, Error::BadHistory(_)), "{err}");
}

#[test]
fn server_events_between_a_tasks_command_events_are_results_in_history_order() {
    use pb::history_event::Attributes as Ev;
    let signal = |v: &str| {
        Ev::SignalReceived(pb::SignalReceived {
            name: "s".into(),
            input: Some(payload::encode(&v).unwrap()),
            ..Default::default()
        })
    };
    let mut run = TestRun::new(registry(), "collect", &());
    // The server records results (an eager activity result, signals) between this task's
    // command events.
    let mut live = run
        .step_with(|c| match c.seq {
            1 => vec![
                signal("x"),
                Ev::ActivityCompleted(pb::ActivityCompleted {
                    command_seq: 1,
                    attempt: 1,
                    result: Some(payload::encode(&"A").unwrap()),
                    ..Default::default()
                }),
            ],
            2 => vec![signal("y")],
            _ => Vec::new(),
        })
        .unwrap();
    assert_eq!(
        show(&live),
        ["1:activity(a,null)", "2:progress(0/1)", "3:wait(s)"]
    );
    let c = run.step().unwrap();
    assert_eq!(
        show(&c),
        ["4:complete(\"A:xy\")"],
        "signals taken in history order"
    );
    live.extend(c);
    assert_replays_identically(&run, &live);

    // Interleaving does not hide a command the history lacks: seq 2 is missing.
    let mut h = HistoryBuilder::new("collect", &());
    h.start_task();
    let mut commands = live[..3].to_vec();
    commands.remove(1);
    h.complete_task_with(&commands, |c| {
        if c.seq == 1 {
            vec![signal("x")]
        } else {
            Vec::new()
        }
    })
    .start_task();
    let err = Replayer::new(registry())
        .replay(h.events().to_vec())
        .unwrap_err();
    assert!(
        matches!(&err, Error::Nondeterminism { seq: 2, history, code } if history == "nothing" && code == "ReportProgress"),
        "{err}"
    );
}

/// Panics when dropped: user Drop code inside a workflow future.
struct PanicsOnDrop;

impl Drop for PanicsOnDrop {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            panic!("boom in Drop");
        }
    }
}

fn guarded_registry() -> Registry {
    let mut r = registry();
    r.register_workflow("drop_panics", |ctx: WorkflowContext, _: ()| async move {
        let _guard = PanicsOnDrop;
        let _: () = ctx.activity("a", &()).await?;
        Ok::<_, WorkflowError>(())
    });
    r.register_workflow("long_panic", |_: WorkflowContext, _: ()| async move {
        if true {
            panic!("{}", "x".repeat(10_000));
        }
        Ok::<_, WorkflowError>(())
    });
    r.register_workflow("foreign", |ctx: WorkflowContext, _: ()| async move {
        ctx.progress(0, 1, "about to wait on the wrong thing");
        let (_tx, rx) = futures::channel::oneshot::channel::<()>();
        let _ = rx.await;
        Ok::<_, WorkflowError>(())
    });
    r.register_workflow("forever", |_: WorkflowContext, _: ()| async move {
        futures::future::pending::<()>().await;
        Ok::<_, WorkflowError>(())
    });
    r.register_workflow("unordered", |ctx: WorkflowContext, _: ()| async move {
        // FuturesUnordered polls only woken futures: blocked on SDK futures all the same.
        use futures::StreamExt;
        let mut all: futures::stream::FuturesUnordered<_> =
            (0..3u32).map(|i| ctx.activity::<u32>("a", &i)).collect();
        let mut sum = 0;
        while let Some(r) = all.next().await {
            sum += r?;
        }
        Ok::<_, WorkflowError>(sum)
    });
    r
}

#[test]
fn panics_in_drop_of_workflow_futures_are_caught() {
    // Evicting a cached instance drops its future: the panic stays inside the SDK.
    let mut run = TestRun::new(guarded_registry(), "drop_panics", &());
    run.step().unwrap();
    drop(run);

    // The future is dropped when the workflow returns: reported as a panic.
    let mut run = TestRun::new(guarded_registry(), "drop_panics", &());
    run.step().unwrap();
    run.history().activity_completed(1, &());
    let err = run.step().unwrap_err();
    assert!(
        matches!(&err, Error::Panic { message } if message == "boom in Drop"),
        "{err}"
    );
}

#[test]
fn a_long_panic_message_is_truncated() {
    let mut run = TestRun::new(guarded_registry(), "long_panic", &());
    let Error::Panic { message } = run.step().unwrap_err() else {
        panic!()
    };
    assert_eq!(message.chars().count(), PANIC_MESSAGE_CHARS_MAX + 3);
    assert!(message.ends_with("x..."));
}

#[test]
fn awaiting_a_future_that_is_not_the_sdks_is_reported() {
    for name in ["foreign", "forever"] {
        let mut run = TestRun::new(guarded_registry(), name, &());
        let err = run.step().unwrap_err();
        assert_eq!(err, Error::ForeignAwait, "{name}");
        assert!(err.to_string().starts_with("[STF-WT005]"), "{err}");
        assert_eq!(err.fail_cause(), pb::WorkflowTaskFailCause::WorkflowBlocked);
    }
    // Blocked on SDK futures that a combinator does not re-poll: not reported.
    let mut run = TestRun::new(guarded_registry(), "unordered", &());
    let mut live = run.step().unwrap();
    assert_eq!(live.len(), 3);
    run.history().activity_completed(2, &20u32);
    live.extend(run.step().unwrap());
    run.history()
        .activity_completed(1, &10u32)
        .activity_completed(3, &30u32);
    let c = run.step().unwrap();
    assert_eq!(show(&c), ["4:complete(60)"]);
}

async fn race(ctx: WorkflowContext, _: ()) -> Result<String, WorkflowError> {
    let models = ["m0", "m1", "m2"].map(|m| ctx.activity::<String>(m, &()));
    let (first, index, rest) = select_all(models).await;
    assert_eq!(rest.len(), 2);
    let pair = select2(
        ctx.activity::<String>("p", &()),
        ctx.activity::<String>("q", &()),
    );
    let second = match pair.await {
        Either::Left((p, _)) => format!("p={}", p?),
        Either::Right((q, _)) => format!("q={}", q?),
    };
    Ok(format!("{index}:{} {second}", first?))
}

#[test]
fn deterministic_select_takes_the_first_written_ready_branch_on_replay() {
    let mut r = registry();
    r.register_workflow("race", race);
    let mut run = TestRun::new(r, "race", &());
    let mut live = run.step().unwrap();
    assert_eq!(live.len(), 3);
    // All three ready in one activation, recorded last-first: the first written wins.
    run.history()
        .activity_completed(3, &"c")
        .activity_completed(2, &"b")
        .activity_completed(1, &"a");
    let c = run.step().unwrap();
    assert_eq!(show(&c), ["4:activity(p,null)", "5:activity(q,null)"]);
    live.extend(c);
    run.history()
        .activity_completed(5, &"Q")
        .activity_completed(4, &"P");
    let c = run.step().unwrap();
    assert_eq!(show(&c), ["6:complete(\"0:a p=P\")"]);
    live.extend(c);
    let mut replayer = registry();
    replayer.register_workflow("race", race);
    let outcome = Replayer::new(replayer)
        .replay(run.events().to_vec())
        .expect("replay");
    assert_eq!(outcome.confirmed, live, "the same branches on replay");
    assert!(outcome.finished && outcome.commands.is_empty());
}
