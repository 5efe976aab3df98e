//! Workflow commands -> events. Each command is checked against the run's state: its seq must
//! be the next one, only one command may end the run and it must come last, cancels must name
//! earlier commands. A bad command refuses the whole task (nothing is appended). Cancelling an
//! activity or timer that already closed is not bad: it is a recorded no-op, because the
//! workflow could not have known (the result arrived while its task was open).

use steadfast_engine::event::{self as ev, Event};
use steadfast_engine::state::{RunState, UpdatePhase};
use steadfast_engine::{RunId, RunStatus};
use steadfast_proto::v1 as pb;
use steadfast_proto::v1::command::Command as C;
use tonic::Status;

use crate::convert;
use crate::retry;
use crate::validate;

/// Most commands in one workflow task.
pub const COMMANDS_PER_TASK_MAX: usize = 1_000;

/// Error type of an attempt whose result was over `PAYLOAD_BYTES_MAX` or not valid JSON.
pub const RESULT_REFUSED_ERROR_TYPE: &str = "ResultRefused";

/// The event that records a worker's result for attempt `attempt` of activity `id`:
/// ActivityCompleted, or, when the result cannot be stored (over the payload limit, or not
/// valid JSON), a final ActivityFailed with the non-retryable error `[STF-PAYLOAD]`. Refusing
/// the request instead dropped the result: the attempt timed out and ran again, forever, since
/// the same code returns the same result (issue 10).
pub fn activity_result_event(
    id: u32,
    attempt: u32,
    result: Option<&pb::Payload>,
    usage: Option<&pb::Usage>,
    duration_ms: u64,
) -> Event {
    match validate::payload("result", result) {
        Ok(result) => Event::ActivityCompleted(ev::ActivityCompleted {
            command_seq: id,
            attempt,
            result,
            duration_ms,
            usage: usage.map(convert::usage_from),
            reconciled: false,
        }),
        Err(refused) => Event::ActivityFailed(ev::ActivityFailed {
            command_seq: id,
            attempt,
            failure: ev::Failure {
                message: format!(
                    "[STF-PAYLOAD] the activity's {}; a retry would return it again, so the activity fails",
                    refused.message()
                ),
                error_type: RESULT_REFUSED_ERROR_TYPE.into(),
                non_retryable: true,
                details: String::new(),
            },
            retry_at_ms: None,
            duration_ms,
            usage: None,
        }),
    }
}

/// The task queues the commands name explicitly (activities', children's): those that may
/// add a queue to the namespace (`task_queues_per_namespace_max`). A command without a queue
/// uses the run's, which has work already.
pub fn named_queues(cmds: &[pb::Command]) -> Vec<&str> {
    use pb::command::Command as C;
    let mut out: Vec<&str> = Vec::new();
    for c in cmds {
        let q = match &c.command {
            Some(C::ScheduleActivity(a)) => a.options.as_ref().map(|o| o.task_queue.as_str()),
            Some(C::StartChild(s)) => Some(s.task_queue.as_str()),
            _ => None,
        };
        if let Some(q) = q.filter(|q| !q.is_empty())
            && !out.contains(&q)
        {
            out.push(q);
        }
    }
    out
}

/// Refuses a task that would leave more activities or timers open than the limits allow. Only
/// growth is refused: a run already past a lowered limit can still finish what it has.
fn pending_within(
    before: &RunState,
    after: &RunState,
    limits: crate::limits::Limits,
) -> Result<(), Status> {
    let checks = [
        (
            "activities",
            before.activities.len(),
            after.activities.len(),
            "pending_activities_per_run_max",
            limits.pending_activities_per_run_max,
        ),
        (
            "timers",
            before.timers.len(),
            after.timers.len(),
            "pending_timers_per_run_max",
            limits.pending_timers_per_run_max,
        ),
    ];
    for (what, was, now, limit, max) in checks {
        if now > was && now as u64 > max {
            return Err(crate::limits::exceeded(
                format_args!(
                    "this task would leave {now} {what} open in the run: wait for some to close first"
                ),
                limit,
                max,
            ));
        }
    }
    Ok(())
}

pub(crate) fn bad(seq: u32, msg: impl std::fmt::Display) -> Status {
    Status::invalid_argument(format!("command seq {seq}: {msg}"))
}

/// The events of a workflow task completion, and the RunStarted of a continued run if the
/// task ends with continue-as-new: WorkflowTaskCompleted, then one event per command in
/// command order, then the events the server adds in reaction to them (ActivityCancelled for
/// each cancelled activity that no worker holds, per `undispatched`).
///
/// The reactions come last so that the task's command events stay one contiguous block
/// after WorkflowTaskCompleted: the SDK matches the code's commands against that block, and a
/// reaction in the middle of it ended the block early, so the next command was reported as
/// missing ([STF-ND001]) and the run was held forever (issue 10). When the task ends the run
/// there is nothing to react to.
pub fn task_completion(
    s: &RunState,
    started_seq: u64,
    worker: &str,
    commands: &[pb::Command],
    now: i64,
    undispatched: impl Fn(&RunState, u32) -> bool,
) -> Result<(Vec<Event>, Option<ev::RunStarted>), Status> {
    let mut events = vec![Event::WorkflowTaskCompleted(ev::WorkflowTaskCompleted {
        started_seq,
        worker: worker.to_string(),
    })];
    let (cmd_events, continued) = to_events(s, commands, now)?;
    events.extend(cmd_events);
    let after = crate::core::simulate(s, &events, now)
        .map_err(|e| Status::failed_precondition(e.to_string()))?;
    pending_within(s, &after, crate::limits::current())?;
    if after.is_open() {
        let mut confirmed: Vec<u32> = Vec::new();
        let mut reactions = Vec::new();
        for e in &events {
            if let Event::ActivityCancelRequested(c) = e
                && !confirmed.contains(&c.activity_id)
                && after.activities.contains_key(&c.activity_id)
                && undispatched(&after, c.activity_id)
            {
                confirmed.push(c.activity_id);
                reactions.push(Event::ActivityCancelled(ev::ActivityCancelled {
                    command_seq: c.activity_id,
                }));
            }
        }
        events.extend(reactions);
    }
    Ok((events, continued))
}

/// Refuses a workflow task with more than [`COMMANDS_PER_TASK_MAX`] commands
/// (RESOURCE_EXHAUSTED naming the limit: a worker reports it at once, it is not transient).
pub fn check_count(n: usize) -> Result<(), Status> {
    if n > COMMANDS_PER_TASK_MAX {
        return Err(Status::resource_exhausted(format!(
            "{n} commands in one task; the limit is {COMMANDS_PER_TASK_MAX}"
        )));
    }
    Ok(())
}

/// The events of a task's commands, and the RunStarted of a continued run if the task ends
/// with continue-as-new.
pub fn to_events(
    s: &RunState,
    commands: &[pb::Command],
    now: i64,
) -> Result<(Vec<Event>, Option<ev::RunStarted>), Status> {
    check_count(commands.len())?;
    let mut out = Vec::with_capacity(commands.len());
    let mut continued = None;
    let mut closed = false;
    for (next, c) in (s.next_command_seq..).zip(commands) {
        let seq = c.seq;
        if seq != next {
            return Err(bad(
                seq,
                format_args!(
                    "expected seq {next} (commands are numbered in issue order over the whole run)"
                ),
            ));
        }
        if closed {
            return Err(bad(seq, "a command after the one that ended the run"));
        }
        let cmd = c
            .command
            .as_ref()
            .ok_or_else(|| bad(seq, "empty command"))?;
        let e = match cmd {
            C::ScheduleActivity(a) => {
                validate::name("activity_type", &a.activity_type)
                    .map_err(|e| bad(seq, e.message()))?;
                let opts = a
                    .options
                    .as_ref()
                    .map(convert::activity_options_from)
                    .unwrap_or_default();
                validate::opt_name("task_queue", &opts.task_queue)
                    .map_err(|e| bad(seq, e.message()))?;
                Event::ActivityScheduled(ev::ActivityScheduled {
                    command_seq: seq,
                    activity_type: a.activity_type.clone(),
                    input: validate::payload("activity input", a.input.as_ref())?,
                    options: retry::with_defaults(opts, &s.task_queue),
                })
            }
            C::StartTimer(t) => Event::TimerStarted(ev::TimerStarted {
                command_seq: seq,
                fire_at_ms: now.saturating_add(t.duration_ms.min(i64::MAX as u64) as i64),
            }),
            C::CancelTimer(t) => {
                // A timer that fired while this task was open is still cancelled "successfully":
                // the command is recorded as a no-op and the workflow sees the TimerFired.
                if t.timer_id >= seq {
                    return Err(bad(
                        seq,
                        format_args!(
                            "timer {} names no earlier command: give the id of a StartTimer",
                            t.timer_id
                        ),
                    ));
                }
                Event::TimerCancelled(ev::TimerCancelled {
                    command_seq: seq,
                    timer_id: t.timer_id,
                })
            }
            C::WaitSignal(w) => {
                validate::name("signal name", &w.name).map_err(|e| bad(seq, e.message()))?;
                Event::SignalWaitStarted(ev::SignalWaitStarted {
                    command_seq: seq,
                    name: w.name.clone(),
                    question: w.question.clone(),
                    choices: w.choices.clone(),
                })
            }
            C::ReportProgress(p) => Event::ProgressReported(ev::ProgressReported {
                command_seq: seq,
                done: p.done,
                total: p.total,
                message: p.message.chars().take(1024).collect(),
            }),
            C::RecordPartialResult(p) => Event::PartialResultRecorded(ev::PartialResultRecorded {
                command_seq: seq,
                result: validate::payload("partial result", p.result.as_ref())?,
            }),
            C::CancelActivity(a) => {
                // An activity that closed while this task was open: the cancel is a recorded
                // no-op and the workflow gets the result (as `cancel_activity` documents).
                if a.activity_id >= seq {
                    return Err(bad(
                        seq,
                        format_args!(
                            "activity {} names no earlier command: give the id of a ScheduleActivity",
                            a.activity_id
                        ),
                    ));
                }
                Event::ActivityCancelRequested(ev::ActivityCancelRequested {
                    command_seq: seq,
                    activity_id: a.activity_id,
                })
            }
            C::StartChild(c) => crate::family::child_requested(s, seq, c, now)?,
            C::SignalRun(c) => crate::family::signal_requested(seq, c)?,
            C::RecordPatch(c) => {
                validate::name("patch id", &c.patch_id).map_err(|e| bad(seq, e.message()))?;
                Event::PatchMarker(ev::PatchMarker {
                    command_seq: seq,
                    patch_id: c.patch_id.clone(),
                })
            }
            C::UpsertSearchAttributes(c) => {
                let list = crate::convert_search::attributes_from(&c.attributes)
                    .map_err(|e| bad(seq, e))?;
                let attributes = list.into_iter().collect();
                steadfast_engine::search::validate_upsert(&s.search_attributes, &attributes)
                    .map_err(|e| bad(seq, e.to_string()))?;
                Event::SearchAttributesUpserted(ev::SearchAttributesUpserted {
                    command_seq: seq,
                    attributes,
                })
            }
            C::CompleteUpdate(c) => {
                open_update(s, seq, &c.update_id)?;
                Event::UpdateCompleted(ev::UpdateCompleted {
                    command_seq: seq,
                    update_id: c.update_id.clone(),
                    result: validate::payload("update result", c.result.as_ref())?,
                })
            }
            C::RejectUpdate(c) => {
                open_update(s, seq, &c.update_id)?;
                Event::UpdateRejected(ev::UpdateRejected {
                    command_seq: seq,
                    update_id: c.update_id.clone(),
                    reason: c.reason.chars().take(UPDATE_REASON_CHARS_MAX).collect(),
                })
            }
            C::CompleteRun(c) => {
                closed = true;
                Event::RunCompleted(ev::RunCompleted {
                    command_seq: seq,
                    result: validate::payload("result", c.result.as_ref())?,
                })
            }
            C::FailRun(f) => {
                closed = true;
                Event::RunFailed(ev::RunFailed {
                    command_seq: seq,
                    failure: f
                        .failure
                        .as_ref()
                        .map(convert::failure_from)
                        .unwrap_or_default(),
                })
            }
            C::CancelRun(c) => {
                if !s.cancel_requested {
                    return Err(bad(
                        seq,
                        "CancelRun answers a cancel request, and none was made; use FailRun or CompleteRun",
                    ));
                }
                closed = true;
                let partial = match &c.partial_result {
                    Some(p) => Some(validate::payload("partial result", Some(p))?),
                    None => None,
                };
                Event::RunCancelled(ev::RunCancelled {
                    command_seq: seq,
                    partial_result: partial,
                })
            }
            C::ContinueAsNew(c) => {
                closed = true;
                let input = validate::payload("continue-as-new input", c.input.as_ref())?;
                let new_run_id = RunId::new_v7();
                continued = Some(ev::RunStarted {
                    workflow_type: s.workflow_type.clone(),
                    workflow_id: s.workflow_id.clone(),
                    task_queue: s.task_queue.clone(),
                    input: input.clone(),
                    run_timeout_ms: s.run_timeout_ms,
                    budget: s.budget,
                    continued_from: Some(s.key.run_id),
                    identity: "continue-as-new".into(),
                    random_seed: u64::from_le_bytes(
                        new_run_id.as_bytes()[8..].try_into().expect("8 bytes"),
                    ),
                    parent: None,
                    forked_from: None,
                    schedule: None,
                    traceparent: None,
                });
                Event::RunContinuedAsNew(ev::RunContinuedAsNew {
                    command_seq: seq,
                    new_run_id,
                    input,
                    keep_build: c.keep_build,
                })
            }
        };
        out.push(e);
    }
    debug_assert!(s.status == RunStatus::Running);
    Ok((out, continued))
}

/// Most characters of an update rejection's reason that are recorded.
pub const UPDATE_REASON_CHARS_MAX: usize = 1_000;

/// An update command must answer an update the run was asked for and has not answered.
fn open_update(s: &RunState, seq: u32, id: &str) -> Result<(), Status> {
    match s.updates.get(id) {
        Some(UpdatePhase::Requested) => Ok(()),
        Some(p) => Err(bad(
            seq,
            format_args!("update {} is already {p:?}", validate::quote(id)),
        )),
        None => Err(bad(
            seq,
            format_args!(
                "update {} was never requested of this run",
                validate::quote(id)
            ),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use steadfast_engine::EventRecord;
    use steadfast_engine::RunKey;
    use steadfast_engine::event::EventKind;
    use steadfast_engine::payload::Payload;

    const NOW: i64 = 1_700_000_000_000;

    /// A run whose code scheduled activity 1 and started timer 2 in its first task, with a
    /// second workflow task started (at the returned seq).
    fn run_with_activity_and_timer() -> (RunState, u64) {
        let key = RunKey::new("default", RunId::new_v7());
        let events = vec![
            Event::RunStarted(ev::RunStarted {
                workflow_type: "t".into(),
                workflow_id: "w".into(),
                task_queue: "q".into(),
                input: Payload::default(),
                run_timeout_ms: 0,
                budget: ev::Budget::default(),
                continued_from: None,
                identity: String::new(),
                random_seed: 0,
                parent: None,
                forked_from: None,
                schedule: None,
                traceparent: None,
            }),
            Event::WorkflowTaskScheduled(ev::WorkflowTaskScheduled {
                task_queue: "q".into(),
                attempt: 1,
                not_before_ms: 0,
            }),
            Event::WorkflowTaskStarted(ev::WorkflowTaskStarted {
                scheduled_seq: 2,
                worker: "w1".into(),
                timeout_ms: 0,
            }),
            Event::WorkflowTaskCompleted(ev::WorkflowTaskCompleted {
                started_seq: 3,
                worker: "w1".into(),
            }),
            Event::ActivityScheduled(ev::ActivityScheduled {
                command_seq: 1,
                activity_type: "a".into(),
                input: Payload::default(),
                options: retry::with_defaults(Default::default(), "q"),
            }),
            Event::TimerStarted(ev::TimerStarted {
                command_seq: 2,
                fire_at_ms: NOW,
            }),
            Event::SignalReceived(ev::SignalReceived {
                name: "poke".into(),
                input: Payload::default(),
                identity: String::new(),
                request_id: String::new(),
            }),
            Event::WorkflowTaskScheduled(ev::WorkflowTaskScheduled {
                task_queue: "q".into(),
                attempt: 1,
                not_before_ms: 0,
            }),
            Event::WorkflowTaskStarted(ev::WorkflowTaskStarted {
                scheduled_seq: 8,
                worker: "w1".into(),
                timeout_ms: 0,
            }),
        ];
        let records: Vec<EventRecord> = events
            .into_iter()
            .enumerate()
            .map(|(i, event)| EventRecord {
                seq: i as u64 + 1,
                time_ms: NOW,
                hash: [0; 32],
                event,
            })
            .collect();
        (RunState::from_history(key, &records).unwrap(), 9)
    }

    fn cmd(seq: u32, c: C) -> pb::Command {
        pb::Command {
            seq,
            command: Some(c),
        }
    }

    fn cancel_activity(seq: u32, id: u32) -> pb::Command {
        cmd(
            seq,
            C::CancelActivity(pb::CancelActivityCommand { activity_id: id }),
        )
    }

    fn schedule(seq: u32) -> pb::Command {
        cmd(
            seq,
            C::ScheduleActivity(pb::ScheduleActivityCommand {
                activity_type: "next".into(),
                ..Default::default()
            }),
        )
    }

    fn progress(seq: u32) -> pb::Command {
        cmd(
            seq,
            C::ReportProgress(pb::ReportProgressCommand {
                done: 1,
                total: 2,
                message: "cancelled one".into(),
            }),
        )
    }

    fn kinds(events: &[Event]) -> Vec<EventKind> {
        events.iter().map(Event::kind).collect()
    }

    /// With the events a completion produces: the command events are one block right after
    /// WorkflowTaskCompleted, in command order.
    fn assert_commands_contiguous(events: &[Event], first_cmd: u32, n: u32) {
        let seqs: Vec<Option<u32>> = events[1..=n as usize]
            .iter()
            .map(Event::command_seq)
            .collect();
        let want: Vec<Option<u32>> = (first_cmd..first_cmd + n).map(Some).collect();
        assert_eq!(seqs, want, "{:?}", kinds(events));
        assert!(
            events[n as usize + 1..]
                .iter()
                .all(|e| e.command_seq().is_none()),
            "a command event after a reaction: {:?}",
            kinds(events)
        );
    }

    #[test]
    fn an_unstorable_result_fails_the_activity_for_good() {
        let big = pb::Payload {
            encoding: "binary/plain".into(),
            data: vec![0; steadfast_engine::payload::PAYLOAD_BYTES_MAX + 1],
        };
        let bad_json = pb::Payload {
            encoding: String::new(),
            data: b"{nope".to_vec(),
        };
        for p in [big, bad_json] {
            let Event::ActivityFailed(f) = activity_result_event(1, 2, Some(&p), None, 7) else {
                panic!("not a failure");
            };
            assert_eq!((f.command_seq, f.attempt, f.retry_at_ms), (1, 2, None));
            assert!(f.failure.non_retryable);
            assert_eq!(f.failure.error_type, RESULT_REFUSED_ERROR_TYPE);
            assert!(
                f.failure
                    .message
                    .starts_with("[STF-PAYLOAD] the activity's result is"),
                "{}",
                f.failure.message
            );
        }
        let ok = pb::Payload {
            encoding: String::new(),
            data: b"1".to_vec(),
        };
        assert!(matches!(
            activity_result_event(1, 1, Some(&ok), None, 0),
            Event::ActivityCompleted(_)
        ));
    }

    #[test]
    fn cancel_of_an_undispatched_activity_is_confirmed_after_the_task_commands() {
        let (s, started) = run_with_activity_and_timer();
        let commands = [cancel_activity(3, 1), schedule(4), progress(5)];
        let (events, continued) =
            task_completion(&s, started, "w1", &commands, NOW, |_, _| true).unwrap();
        assert!(continued.is_none());
        assert_eq!(
            kinds(&events),
            vec![
                EventKind::WorkflowTaskCompleted,
                EventKind::ActivityCancelRequested,
                EventKind::ActivityScheduled,
                EventKind::ProgressReported,
                EventKind::ActivityCancelled,
            ]
        );
        assert_commands_contiguous(&events, 3, 3);
        let after = crate::core::simulate(&s, &events, NOW).unwrap();
        assert!(
            !after.activities.contains_key(&1),
            "activity 1 is cancelled"
        );
        assert!(after.activities.contains_key(&4));
        assert!(after.needs_workflow_task(), "the code hears of the cancel");
    }

    #[test]
    fn cancel_of_a_held_activity_waits_for_its_worker() {
        let (s, started) = run_with_activity_and_timer();
        let commands = [cancel_activity(3, 1), schedule(4)];
        let (events, _) = task_completion(&s, started, "w1", &commands, NOW, |_, _| false).unwrap();
        assert_eq!(
            kinds(&events),
            vec![
                EventKind::WorkflowTaskCompleted,
                EventKind::ActivityCancelRequested,
                EventKind::ActivityScheduled,
            ]
        );
        let after = crate::core::simulate(&s, &events, NOW).unwrap();
        assert!(after.activities[&1].cancel_requested);
    }

    #[test]
    fn an_activity_scheduled_and_cancelled_in_one_task_is_cancelled_at_once() {
        let (s, started) = run_with_activity_and_timer();
        let commands = [schedule(3), cancel_activity(4, 3), progress(5)];
        let (events, _) = task_completion(&s, started, "w1", &commands, NOW, |_, _| true).unwrap();
        assert_eq!(
            events.last().map(Event::kind),
            Some(EventKind::ActivityCancelled)
        );
        assert_commands_contiguous(&events, 3, 3);
    }

    #[test]
    fn a_task_that_ends_the_run_gets_no_reactions() {
        let (s, started) = run_with_activity_and_timer();
        let commands = [
            cancel_activity(3, 1),
            cmd(4, C::CompleteRun(pb::CompleteRunCommand { result: None })),
        ];
        let (events, _) = task_completion(&s, started, "w1", &commands, NOW, |_, _| true).unwrap();
        assert_eq!(
            events.last().map(Event::kind),
            Some(EventKind::RunCompleted)
        );
        crate::core::simulate(&s, &events, NOW).unwrap();
    }

    #[test]
    fn cancels_of_what_already_happened_are_recorded_no_ops() {
        let (s, started) = run_with_activity_and_timer();
        // Activity 1 completed and timer 2 fired while the task was open.
        let mut closed = s.clone();
        closed.activities.clear();
        closed.timers.clear();
        let commands = [
            cancel_activity(3, 1),
            cmd(4, C::CancelTimer(pb::CancelTimerCommand { timer_id: 2 })),
            progress(5),
        ];
        let (events, _) =
            task_completion(&closed, started, "w1", &commands, NOW, |_, _| true).unwrap();
        assert_eq!(
            kinds(&events),
            vec![
                EventKind::WorkflowTaskCompleted,
                EventKind::ActivityCancelRequested,
                EventKind::TimerCancelled,
                EventKind::ProgressReported,
            ],
            "accepted, nothing to confirm"
        );
        let after = crate::core::simulate(&closed, &events, NOW).unwrap();
        assert_eq!(after.next_command_seq, 6);
        // A cancel that names no earlier command is still a bad command.
        for bad in [
            cancel_activity(3, 3),
            cmd(3, C::CancelTimer(pb::CancelTimerCommand { timer_id: 9 })),
        ] {
            let e = task_completion(&s, started, "w1", &[bad], NOW, |_, _| true).unwrap_err();
            assert_eq!(e.code(), tonic::Code::InvalidArgument);
            assert!(
                e.message().contains("names no earlier command"),
                "{}",
                e.message()
            );
        }
    }
}
