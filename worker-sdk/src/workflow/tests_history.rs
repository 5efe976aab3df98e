//! What the code decides from the history itself: the continue-as-new suggestion (from the
//! history length) and the activity effect (part of the nondeterminism check).

use std::time::Duration;

use steadfast_proto::v1 as pb;
use steadfast_proto::v1::command::Command as Cmd;

use super::*;

/// Sleeps in a loop and continues as new once told to, carrying its step count.
async fn long_loop(ctx: WorkflowContext, steps: u32) -> Result<(), WorkflowError> {
    let mut steps = steps;
    loop {
        if ctx.continue_as_new_suggested() {
            return Err(WorkflowError::continue_as_new(&steps));
        }
        ctx.sleep(Duration::from_millis(1)).await;
        steps += 1;
    }
}

fn loop_registry(after_events: u64) -> Registry {
    let mut r = Registry::new();
    r.register_workflow("long_loop", long_loop);
    r.continue_as_new_after_events(after_events);
    r
}

#[test]
fn continue_as_new_suggested_follows_the_history_length_and_replays_the_same() {
    assert_eq!(
        Registry::new().continue_as_new_threshold(),
        CONTINUE_AS_NEW_AFTER_EVENTS_DEFAULT
    );
    // Each loop step is a task (scheduled, started, completed), a TimerStarted and its
    // TimerFired: tasks start at seqs 3, 8, 13, 18, 23...
    let mut run = TestRun::new(loop_registry(20), "long_loop", &0u32);
    let mut live = Vec::new();
    let mut started_at = Vec::new();
    loop {
        let c = run.step().unwrap();
        started_at.push(run.events().len() as u64 - 1 - c.len() as u64);
        live.extend(c.clone());
        if run.instance().is_finished() {
            assert_eq!(show(&c), ["5:continue_as_new"]);
            break;
        }
        assert!(started_at.len() < 10, "never told to continue as new");
        let timer = c[0].seq;
        run.history().advance(1).timer_fired(timer);
    }
    // Told at the first task whose history had 20 events or more, not before.
    assert_eq!(started_at, [3, 8, 13, 18, 23]);
    // The carried step count: 4 sleeps before the task at seq 23.
    let Some(Cmd::ContinueAsNew(can)) = &live.last().unwrap().command else {
        unreachable!()
    };
    assert_eq!(can.input.as_ref().unwrap().data, b"4");

    // A cold replay of the whole history answers the same at every task, so it confirms
    // every command and sends none.
    let outcome = Replayer::new(loop_registry(20))
        .replay(run.events().to_vec())
        .expect("replay");
    assert!(outcome.commands.is_empty());
    assert_eq!(outcome.confirmed, live);
    assert!(outcome.finished);

    // The threshold is part of what the code decides: another one is another path, and
    // replay says so instead of silently taking it.
    let err = Replayer::new(loop_registry(10))
        .replay(run.events().to_vec())
        .unwrap_err();
    assert!(err.to_string().starts_with("[STF-ND001]"), "{err}");
}

/// A history of `three_steps` whose first task scheduled "a" with `options`.
fn history_scheduling_a_with(options: Option<pb::ActivityOptions>) -> Vec<pb::HistoryEvent> {
    let mut h = HistoryBuilder::new("three_steps", &"in");
    h.start_task();
    h.complete_task(&[pb::Command {
        seq: 1,
        command: Some(Cmd::ScheduleActivity(pb::ScheduleActivityCommand {
            activity_type: "a".into(),
            input: Some(payload::encode(&"in").unwrap()),
            options,
        })),
    }]);
    h.events().to_vec()
}

fn with_effect(effect: pb::Effect) -> Option<pb::ActivityOptions> {
    Some(pb::ActivityOptions {
        effect: effect as i32,
        ..Default::default()
    })
}

#[test]
fn another_effect_for_a_scheduled_activity_is_nondeterminism_naming_both() {
    // Recorded as `read`; this code declares "a" as `write` (see `registry`).
    let err = Replayer::new(registry())
        .replay(history_scheduling_a_with(with_effect(pb::Effect::Read)))
        .unwrap_err();
    let Error::Nondeterminism { seq, history, code } = &err else {
        panic!("{err}")
    };
    assert_eq!(*seq, 1);
    assert!(history.ends_with(", effect=read)"), "{history}");
    assert!(code.ends_with(", effect=write)"), "{code}");
    assert!(err.to_string().starts_with("[STF-ND001]"), "{err}");

    // The same effect replays; so does a history that recorded no options (it says nothing
    // about the effect).
    for ok in [with_effect(pb::Effect::Write), None] {
        Replayer::new(registry())
            .replay(history_scheduling_a_with(ok))
            .expect("same effect");
    }

    // Unspecified (a type this worker does not declare) is what the server records as
    // idempotent: the two match, and differ from read and write.
    let undeclared = Registry::new();
    let mut r = undeclared.clone();
    r.register_workflow("three_steps", three_steps);
    Replayer::new(r.clone())
        .replay(history_scheduling_a_with(with_effect(
            pb::Effect::Idempotent,
        )))
        .expect("unspecified is idempotent");
    let err = Replayer::new(r)
        .replay(history_scheduling_a_with(with_effect(pb::Effect::Write)))
        .unwrap_err();
    assert!(
        err.to_string().contains("effect=write") && err.to_string().contains("effect=idempotent"),
        "{err}"
    );
}
