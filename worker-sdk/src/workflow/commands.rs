//! How commands correspond to the events the server records for them: which events are
//! command events, whether an event matches the command the code issued at its seq, and
//! how both are named in a nondeterminism error.
//!
//! | command             | event                   | checked                 |
//! |---------------------|-------------------------|-------------------------|
//! | ScheduleActivity    | ActivityScheduled       | type, blake3 of input, effect |
//! | StartTimer          | TimerStarted            | kind (fire_at unknowable)|
//! | CancelTimer         | TimerCancelled          | timer id                |
//! | WaitSignal          | SignalWaitStarted       | signal name             |
//! | ReportProgress      | ProgressReported        | kind                    |
//! | RecordPartialResult | PartialResultRecorded   | kind                    |
//! | CancelActivity      | ActivityCancelRequested | activity id             |
//! | CompleteRun         | RunCompleted            | kind                    |
//! | FailRun             | RunFailed               | kind                    |
//! | CancelRun           | RunCancelled            | kind                    |
//! | ContinueAsNew       | RunContinuedAsNew       | kind                    |
//! | StartChild          | ChildRunRequested       | type, blake3 of input   |
//! | SignalRun           | RunSignalRequested      | run id, signal name     |
//! | RecordPatch         | PatchMarker             | patch id                |
//! | CompleteUpdate      | UpdateCompleted         | update id               |
//! | RejectUpdate        | UpdateRejected          | update id               |
//! | UpsertSearchAttributes | SearchAttributesUpserted | names and values     |

use steadfast_proto::v1 as pb;
use steadfast_proto::v1::command::Command as Cmd;
use steadfast_proto::v1::history_event::Attributes as Ev;

use crate::payload::{data_of, short_hash};

/// The command seq of a command event; `None` for every other event.
pub(crate) fn command_seq(ev: &Ev) -> Option<u32> {
    Some(match ev {
        Ev::ActivityScheduled(e) => e.command_seq,
        Ev::TimerStarted(e) => e.command_seq,
        Ev::TimerCancelled(e) => e.command_seq,
        Ev::SignalWaitStarted(e) => e.command_seq,
        Ev::ProgressReported(e) => e.command_seq,
        Ev::PartialResultRecorded(e) => e.command_seq,
        Ev::ActivityCancelRequested(e) => e.command_seq,
        Ev::RunCompleted(e) => e.command_seq,
        Ev::RunFailed(e) => e.command_seq,
        Ev::RunCancelled(e) => e.command_seq,
        Ev::RunContinuedAsNew(e) => e.command_seq,
        Ev::ChildRunRequested(e) => e.command_seq,
        Ev::RunSignalRequested(e) => e.command_seq,
        Ev::PatchMarker(e) => e.command_seq,
        Ev::UpdateCompleted(e) => e.command_seq,
        Ev::UpdateRejected(e) => e.command_seq,
        // 0: set by the caller at start, not by a command.
        Ev::SearchAttributesUpserted(e) if e.command_seq > 0 => e.command_seq,
        _ => return None,
    })
}

/// Whether `ev` is what the server records for `cmd`.
pub(crate) fn matches(cmd: &Cmd, ev: &Ev) -> bool {
    match (cmd, ev) {
        (Cmd::ScheduleActivity(c), Ev::ActivityScheduled(e)) => {
            c.activity_type == e.activity_type
                && data_of(c.input.as_ref()) == data_of(e.input.as_ref())
                && e.options.as_ref().is_none_or(|recorded| {
                    effect_name(c.options.as_ref()) == effect_name(Some(recorded))
                })
        }
        (Cmd::StartTimer(_), Ev::TimerStarted(_)) => true,
        (Cmd::CancelTimer(c), Ev::TimerCancelled(e)) => c.timer_id == e.timer_id,
        (Cmd::WaitSignal(c), Ev::SignalWaitStarted(e)) => c.name == e.name,
        (Cmd::ReportProgress(_), Ev::ProgressReported(_)) => true,
        (Cmd::RecordPartialResult(_), Ev::PartialResultRecorded(_)) => true,
        (Cmd::CancelActivity(c), Ev::ActivityCancelRequested(e)) => c.activity_id == e.activity_id,
        (Cmd::CompleteRun(_), Ev::RunCompleted(_)) => true,
        (Cmd::FailRun(_), Ev::RunFailed(_)) => true,
        (Cmd::CancelRun(_), Ev::RunCancelled(_)) => true,
        (Cmd::ContinueAsNew(_), Ev::RunContinuedAsNew(_)) => true,
        (Cmd::StartChild(c), Ev::ChildRunRequested(e)) => {
            c.workflow_type == e.workflow_type
                && data_of(c.input.as_ref()) == data_of(e.input.as_ref())
        }
        (Cmd::SignalRun(c), Ev::RunSignalRequested(e)) => c.run_id == e.run_id && c.name == e.name,
        (Cmd::RecordPatch(c), Ev::PatchMarker(e)) => c.patch_id == e.patch_id,
        (Cmd::CompleteUpdate(c), Ev::UpdateCompleted(e)) => c.update_id == e.update_id,
        (Cmd::RejectUpdate(c), Ev::UpdateRejected(e)) => c.update_id == e.update_id,
        (Cmd::UpsertSearchAttributes(c), Ev::SearchAttributesUpserted(e)) => {
            c.attributes == e.attributes
        }
        _ => false,
    }
}

/// The effect an activity's options stand for, as the server resolves it: unspecified (an
/// activity type this worker does not know) is recorded as idempotent, so the two match.
/// The effect decides what a lost attempt does (`write` waits for reconciliation, the others
/// retry), so code that now declares another effect for an activity the history scheduled
/// would change how that recorded activity is treated: it is nondeterminism, not a detail.
fn effect_name(options: Option<&pb::ActivityOptions>) -> &'static str {
    match options.map_or(pb::Effect::Unspecified, |o| o.effect()) {
        pb::Effect::Read => "read",
        pb::Effect::Write => "write",
        pb::Effect::Idempotent | pb::Effect::Unspecified => "idempotent",
    }
}

/// How a command event is named in errors; payloads appear as hashes only.
pub(crate) fn describe_event(ev: &Ev) -> String {
    match ev {
        Ev::ActivityScheduled(e) => format!(
            "ActivityScheduled(type={}, input=blake3:{}, effect={})",
            e.activity_type,
            short_hash(data_of(e.input.as_ref())),
            e.options
                .as_ref()
                .map_or("not recorded", |o| effect_name(Some(o)))
        ),
        Ev::TimerStarted(e) => format!("TimerStarted(fire_at_ms={})", e.fire_at_ms),
        Ev::TimerCancelled(e) => format!("TimerCancelled(timer_id={})", e.timer_id),
        Ev::SignalWaitStarted(e) => format!("SignalWaitStarted(name={})", e.name),
        Ev::ProgressReported(_) => "ProgressReported".into(),
        Ev::PartialResultRecorded(_) => "PartialResultRecorded".into(),
        Ev::ActivityCancelRequested(e) => {
            format!("ActivityCancelRequested(activity_id={})", e.activity_id)
        }
        Ev::RunCompleted(_) => "RunCompleted".into(),
        Ev::RunFailed(_) => "RunFailed".into(),
        Ev::RunCancelled(_) => "RunCancelled".into(),
        Ev::RunContinuedAsNew(_) => "RunContinuedAsNew".into(),
        Ev::ChildRunRequested(e) => format!(
            "ChildRunRequested(type={}, input=blake3:{})",
            e.workflow_type,
            short_hash(data_of(e.input.as_ref()))
        ),
        Ev::RunSignalRequested(e) => {
            format!("RunSignalRequested(run={}, name={})", e.run_id, e.name)
        }
        Ev::PatchMarker(e) => format!(
            "PatchMarker(patch={:?}: this run took the new branch of ctx.patched({:?}); keep that call, or ctx.deprecate_patch({:?}), until no run with this marker is open)",
            e.patch_id, e.patch_id, e.patch_id
        ),
        other => format!("{other:?}").chars().take(80).collect(),
    }
}

/// How an issued command is named in errors; payloads appear as hashes only.
pub(crate) fn describe_command(cmd: &pb::Command) -> String {
    let Some(c) = &cmd.command else {
        return "an empty command".into();
    };
    match c {
        Cmd::ScheduleActivity(c) => format!(
            "ScheduleActivity(type={}, input=blake3:{}, effect={})",
            c.activity_type,
            short_hash(data_of(c.input.as_ref())),
            effect_name(c.options.as_ref())
        ),
        Cmd::StartTimer(c) => format!("StartTimer(duration_ms={})", c.duration_ms),
        Cmd::CancelTimer(c) => format!("CancelTimer(timer_id={})", c.timer_id),
        Cmd::WaitSignal(c) => format!("WaitSignal(name={})", c.name),
        Cmd::ReportProgress(_) => "ReportProgress".into(),
        Cmd::RecordPartialResult(_) => "RecordPartialResult".into(),
        Cmd::CancelActivity(c) => format!("CancelActivity(activity_id={})", c.activity_id),
        Cmd::CompleteRun(_) => "CompleteRun".into(),
        Cmd::FailRun(_) => "FailRun".into(),
        Cmd::CancelRun(_) => "CancelRun".into(),
        Cmd::ContinueAsNew(_) => "ContinueAsNew".into(),
        Cmd::StartChild(c) => format!(
            "StartChild(type={}, input=blake3:{})",
            c.workflow_type,
            short_hash(data_of(c.input.as_ref()))
        ),
        Cmd::SignalRun(c) => format!("SignalRun(run={}, name={})", c.run_id, c.name),
        Cmd::RecordPatch(c) => format!("RecordPatch(patch={:?})", c.patch_id),
        Cmd::CompleteUpdate(c) => format!("CompleteUpdate(update={:?})", c.update_id),
        Cmd::RejectUpdate(c) => format!("RejectUpdate(update={:?})", c.update_id),
        Cmd::UpsertSearchAttributes(c) => format!(
            "UpsertSearchAttributes({})",
            c.attributes
                .iter()
                .map(|a| a.name.as_str())
                .collect::<Vec<_>>()
                .join(",")
        ),
    }
}

/// The name of a command kind, for logs.
pub fn command_kind(cmd: &pb::Command) -> &'static str {
    match &cmd.command {
        None => "Empty",
        Some(Cmd::ScheduleActivity(_)) => "ScheduleActivity",
        Some(Cmd::StartTimer(_)) => "StartTimer",
        Some(Cmd::CancelTimer(_)) => "CancelTimer",
        Some(Cmd::WaitSignal(_)) => "WaitSignal",
        Some(Cmd::ReportProgress(_)) => "ReportProgress",
        Some(Cmd::RecordPartialResult(_)) => "RecordPartialResult",
        Some(Cmd::CancelActivity(_)) => "CancelActivity",
        Some(Cmd::CompleteRun(_)) => "CompleteRun",
        Some(Cmd::FailRun(_)) => "FailRun",
        Some(Cmd::CancelRun(_)) => "CancelRun",
        Some(Cmd::ContinueAsNew(_)) => "ContinueAsNew",
        Some(Cmd::StartChild(_)) => "StartChild",
        Some(Cmd::SignalRun(_)) => "SignalRun",
        Some(Cmd::RecordPatch(_)) => "RecordPatch",
        Some(Cmd::CompleteUpdate(_)) => "CompleteUpdate",
        Some(Cmd::RejectUpdate(_)) => "RejectUpdate",
        Some(Cmd::UpsertSearchAttributes(_)) => "UpsertSearchAttributes",
    }
}
