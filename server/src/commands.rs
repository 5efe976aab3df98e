//! Workflow commands -> events. Each command is checked against the run's state: its seq must
//! be the next one, only one command may end the run and it must come last, ids must name
//! open activities and timers. A bad command refuses the whole task (nothing is appended).

use steadfast_engine::event::{self as ev, Event};
use steadfast_engine::state::RunState;
use steadfast_engine::{RunId, RunStatus};
use steadfast_proto::v1 as pb;
use steadfast_proto::v1::command::Command as C;
use tonic::Status;

use crate::convert;
use crate::retry;
use crate::validate;

/// Most commands in one workflow task.
pub const COMMANDS_PER_TASK_MAX: usize = 1_000;

fn bad(seq: u32, msg: impl std::fmt::Display) -> Status {
    Status::invalid_argument(format!("command seq {seq}: {msg}"))
}

/// The events of a task's commands, and the RunStarted of a continued run if the task ends
/// with continue-as-new.
pub fn to_events(
    s: &RunState,
    commands: &[pb::Command],
    now: i64,
) -> Result<(Vec<Event>, Option<ev::RunStarted>), Status> {
    if commands.len() > COMMANDS_PER_TASK_MAX {
        return Err(Status::resource_exhausted(format!(
            "{} commands in one task; the limit is {COMMANDS_PER_TASK_MAX}",
            commands.len()
        )));
    }
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
                if !s.timers.contains_key(&t.timer_id)
                    && !out
                        .iter()
                        .any(|e| matches!(e, Event::TimerStarted(x) if x.command_seq == t.timer_id))
                {
                    return Err(bad(seq, format_args!("timer {} is not open", t.timer_id)));
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
                if !s.activities.contains_key(&a.activity_id) {
                    return Err(bad(
                        seq,
                        format_args!("activity {} is not open", a.activity_id),
                    ));
                }
                Event::ActivityCancelRequested(ev::ActivityCancelRequested {
                    command_seq: seq,
                    activity_id: a.activity_id,
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
                });
                Event::RunContinuedAsNew(ev::RunContinuedAsNew {
                    command_seq: seq,
                    new_run_id,
                    input,
                })
            }
        };
        out.push(e);
    }
    debug_assert!(s.status == RunStatus::Running);
    Ok((out, continued))
}
