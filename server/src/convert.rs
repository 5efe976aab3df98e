//! Engine types <-> wire types. Both directions: the server sends events and run states; the
//! CLI rebuilds engine events from a fetched history to replay them with the state machine.

use steadfast_engine::event::{self as ev, Event, EventRecord};
use steadfast_engine::payload::{ENCODING_JSON, Payload};
use steadfast_engine::state::{RunState, RunStatus, WaitingOn};
use steadfast_engine::{EventKind, RunId};
use steadfast_proto::v1 as pb;
use steadfast_proto::v1::history_event::Attributes as A;

/// A wire event that cannot be turned back into an engine event.
#[derive(Debug, thiserror::Error)]
#[error("event seq {seq}: {detail}")]
pub struct FromWireError {
    /// Seq of the event.
    pub seq: u64,
    /// What is wrong.
    pub detail: String,
}

/// Engine payload (must be inline) to wire.
pub fn payload(p: &Payload) -> pb::Payload {
    pb::Payload {
        encoding: p.encoding.clone(),
        data: p.data.clone(),
    }
}

/// Wire payload to engine payload; an empty encoding means JSON.
pub fn payload_from(p: &pb::Payload) -> Payload {
    let encoding = if p.encoding.is_empty() {
        ENCODING_JSON.to_string()
    } else {
        p.encoding.clone()
    };
    Payload {
        encoding,
        data: p.data.clone(),
        blob: None,
    }
}

fn opt_payload(p: &Option<pb::Payload>) -> Payload {
    p.as_ref()
        .map(payload_from)
        .unwrap_or_else(|| Payload::json(b"null".to_vec()))
}

/// Engine budget to wire.
pub fn budget(b: &ev::Budget) -> pb::Budget {
    pb::Budget {
        max_tokens: b.max_tokens,
        max_cost_micros: b.max_cost_micros,
        max_activities: b.max_activities,
        max_duration_ms: b.max_duration_ms,
    }
}

/// Wire budget to engine.
pub fn budget_from(b: &pb::Budget) -> ev::Budget {
    ev::Budget {
        max_tokens: b.max_tokens,
        max_cost_micros: b.max_cost_micros,
        max_activities: b.max_activities,
        max_duration_ms: b.max_duration_ms,
    }
}

/// Engine failure to wire.
pub fn failure(f: &ev::Failure) -> pb::Failure {
    pb::Failure {
        message: f.message.clone(),
        r#type: f.error_type.clone(),
        non_retryable: f.non_retryable,
        details: f.details.clone(),
    }
}

/// Wire failure to engine.
pub fn failure_from(f: &pb::Failure) -> ev::Failure {
    ev::Failure {
        message: f.message.clone(),
        error_type: f.r#type.clone(),
        non_retryable: f.non_retryable,
        details: f.details.clone(),
    }
}

fn usage(u: &ev::Usage) -> pb::Usage {
    pb::Usage {
        input_tokens: u.input_tokens,
        output_tokens: u.output_tokens,
        cost_micros: u.cost_micros,
        model: u.model.clone(),
        activities: 0,
        llm_calls: 0,
    }
}

/// Wire usage of one call to engine usage.
pub fn usage_from(u: &pb::Usage) -> ev::Usage {
    ev::Usage {
        input_tokens: u.input_tokens,
        output_tokens: u.output_tokens,
        cost_micros: u.cost_micros,
        model: u.model.clone(),
    }
}

/// Engine effect to wire.
pub fn effect(e: ev::Effect) -> pb::Effect {
    match e {
        ev::Effect::Read => pb::Effect::Read,
        ev::Effect::Idempotent => pb::Effect::Idempotent,
        ev::Effect::Write => pb::Effect::Write,
    }
}

/// Wire effect to engine (unspecified = idempotent).
pub fn effect_from(e: i32) -> ev::Effect {
    match pb::Effect::try_from(e).unwrap_or(pb::Effect::Unspecified) {
        pb::Effect::Read => ev::Effect::Read,
        pb::Effect::Write => ev::Effect::Write,
        _ => ev::Effect::Idempotent,
    }
}

/// Engine activity options to wire.
pub fn activity_options(o: &ev::ActivityOptions) -> pb::ActivityOptions {
    pb::ActivityOptions {
        task_queue: o.task_queue.clone(),
        retry: Some(pb::RetryPolicy {
            initial_interval_ms: o.retry.initial_interval_ms,
            backoff_coefficient: o.retry.backoff_coefficient,
            maximum_interval_ms: o.retry.maximum_interval_ms,
            maximum_attempts: o.retry.maximum_attempts,
            non_retryable_error_types: o.retry.non_retryable_error_types.clone(),
        }),
        schedule_to_close_timeout_ms: o.schedule_to_close_ms,
        start_to_close_timeout_ms: o.start_to_close_ms,
        heartbeat_timeout_ms: o.heartbeat_ms,
        effect: effect(o.effect) as i32,
        requires_approval: o.approval.is_some(),
        approval_reason: o.approval.clone().unwrap_or_default(),
    }
}

/// Wire activity options to engine (no defaults applied).
pub fn activity_options_from(o: &pb::ActivityOptions) -> ev::ActivityOptions {
    let r = o.retry.clone().unwrap_or_default();
    ev::ActivityOptions {
        task_queue: o.task_queue.clone(),
        retry: ev::RetryPolicy {
            initial_interval_ms: r.initial_interval_ms,
            backoff_coefficient: r.backoff_coefficient,
            maximum_interval_ms: r.maximum_interval_ms,
            maximum_attempts: r.maximum_attempts,
            non_retryable_error_types: r.non_retryable_error_types,
        },
        schedule_to_close_ms: o.schedule_to_close_timeout_ms,
        start_to_close_ms: o.start_to_close_timeout_ms,
        heartbeat_ms: o.heartbeat_timeout_ms,
        effect: effect_from(o.effect),
        approval: o.requires_approval.then(|| o.approval_reason.clone()),
    }
}

fn timeout_kind(t: ev::TimeoutKind) -> pb::TimeoutKind {
    match t {
        ev::TimeoutKind::StartToClose => pb::TimeoutKind::StartToClose,
        ev::TimeoutKind::ScheduleToClose => pb::TimeoutKind::ScheduleToClose,
        ev::TimeoutKind::Heartbeat => pb::TimeoutKind::Heartbeat,
    }
}

fn fail_cause(c: ev::WorkflowTaskFailCause) -> pb::WorkflowTaskFailCause {
    use ev::WorkflowTaskFailCause as C;
    match c {
        C::Unspecified => pb::WorkflowTaskFailCause::Unspecified,
        C::Nondeterminism => pb::WorkflowTaskFailCause::Nondeterminism,
        C::WorkflowPanic => pb::WorkflowTaskFailCause::WorkflowPanic,
        C::UnknownWorkflowType => pb::WorkflowTaskFailCause::UnknownWorkflowType,
        C::BadCommand => pb::WorkflowTaskFailCause::BadCommand,
    }
}

/// Wire fail cause to engine.
pub fn fail_cause_from(c: i32) -> ev::WorkflowTaskFailCause {
    use ev::WorkflowTaskFailCause as C;
    match pb::WorkflowTaskFailCause::try_from(c).unwrap_or(pb::WorkflowTaskFailCause::Unspecified) {
        pb::WorkflowTaskFailCause::Unspecified => C::Unspecified,
        pb::WorkflowTaskFailCause::Nondeterminism => C::Nondeterminism,
        pb::WorkflowTaskFailCause::WorkflowPanic => C::WorkflowPanic,
        pb::WorkflowTaskFailCause::UnknownWorkflowType => C::UnknownWorkflowType,
        pb::WorkflowTaskFailCause::BadCommand => C::BadCommand,
        // Until the engine has causes of their own; the message carries the precise code.
        pb::WorkflowTaskFailCause::CompletionRefused => C::BadCommand,
        pb::WorkflowTaskFailCause::WorkflowBlocked => C::WorkflowPanic,
    }
}

fn dimension_from(s: &str) -> Option<ev::BudgetDimension> {
    Some(match s {
        "tokens" => ev::BudgetDimension::Tokens,
        "cost" => ev::BudgetDimension::Cost,
        "activities" => ev::BudgetDimension::Activities,
        "duration" => ev::BudgetDimension::Duration,
        _ => return None,
    })
}

fn rid(r: &Option<RunId>) -> String {
    r.map(|r| r.to_string()).unwrap_or_default()
}

/// An engine record (payloads already inline) to the wire.
pub fn event(rec: &EventRecord) -> pb::HistoryEvent {
    let attrs = match &rec.event {
        Event::RunStarted(a) => A::RunStarted(pb::RunStarted {
            workflow_type: a.workflow_type.clone(),
            workflow_id: a.workflow_id.clone(),
            task_queue: a.task_queue.clone(),
            input: Some(payload(&a.input)),
            run_timeout_ms: a.run_timeout_ms,
            budget: Some(budget(&a.budget)),
            continued_from: rid(&a.continued_from),
            identity: a.identity.clone(),
            random_seed: a.random_seed,
            parent: crate::convert_family::parent(&a.parent),
            forked_from: a.forked_from.map(|f| pb::ForkRef {
                run_id: f.run_id.to_string(),
                seq: f.seq,
            }),
            schedule: a.schedule.as_ref().map(|s| pb::ScheduleRef {
                name: s.name.clone(),
                slot_ms: s.slot_ms,
            }),
            traceparent: a.traceparent.clone().unwrap_or_default(),
        }),
        Event::WorkflowTaskScheduled(a) => A::WorkflowTaskScheduled(pb::WorkflowTaskScheduled {
            task_queue: a.task_queue.clone(),
            attempt: a.attempt,
            not_before_ms: a.not_before_ms,
        }),
        Event::WorkflowTaskStarted(a) => A::WorkflowTaskStarted(pb::WorkflowTaskStarted {
            scheduled_seq: a.scheduled_seq,
            worker: a.worker.clone(),
            timeout_ms: a.timeout_ms,
        }),
        Event::WorkflowTaskCompleted(a) => A::WorkflowTaskCompleted(pb::WorkflowTaskCompleted {
            started_seq: a.started_seq,
            worker: a.worker.clone(),
        }),
        Event::WorkflowTaskFailed(a) => A::WorkflowTaskFailed(pb::WorkflowTaskFailed {
            started_seq: a.started_seq,
            cause: fail_cause(a.cause) as i32,
            message: a.message.clone(),
            worker: a.worker.clone(),
        }),
        Event::WorkflowTaskTimedOut(a) => A::WorkflowTaskTimedOut(pb::WorkflowTaskTimedOut {
            started_seq: a.started_seq,
        }),
        Event::ActivityScheduled(a) => A::ActivityScheduled(pb::ActivityScheduled {
            command_seq: a.command_seq,
            activity_type: a.activity_type.clone(),
            input: Some(payload(&a.input)),
            options: Some(activity_options(&a.options)),
        }),
        Event::ActivityStarted(a) => A::ActivityStarted(pb::ActivityStarted {
            command_seq: a.command_seq,
            attempt: a.attempt,
            worker: a.worker.clone(),
            effect: effect(a.effect) as i32,
        }),
        Event::ActivityCompleted(a) => A::ActivityCompleted(pb::ActivityCompleted {
            command_seq: a.command_seq,
            attempt: a.attempt,
            result: Some(payload(&a.result)),
            duration_ms: a.duration_ms,
            usage: a.usage.as_ref().map(usage),
            reconciled: a.reconciled,
        }),
        Event::ActivityFailed(a) => A::ActivityFailed(pb::ActivityFailed {
            command_seq: a.command_seq,
            attempt: a.attempt,
            failure: Some(failure(&a.failure)),
            retry_at_ms: a.retry_at_ms.unwrap_or(0),
            duration_ms: a.duration_ms,
            usage: a.usage.as_ref().map(usage),
        }),
        Event::ActivityTimedOut(a) => A::ActivityTimedOut(pb::ActivityTimedOut {
            command_seq: a.command_seq,
            attempt: a.attempt,
            timeout: timeout_kind(a.timeout) as i32,
            retry_at_ms: a.retry_at_ms.unwrap_or(0),
        }),
        Event::ActivityUsageReported(a) => A::ActivityUsageReported(pb::ActivityUsageReported {
            command_seq: a.command_seq,
            attempt: a.attempt,
            usage: Some(usage(&a.usage)),
        }),
        Event::ActivityCancelRequested(a) => {
            A::ActivityCancelRequested(pb::ActivityCancelRequested {
                command_seq: a.command_seq,
                activity_id: a.activity_id,
            })
        }
        Event::ActivityCancelled(a) => A::ActivityCancelled(pb::ActivityCancelled {
            command_seq: a.command_seq,
        }),
        Event::ActivityOutcomeUnknown(a) => A::ActivityOutcomeUnknown(pb::ActivityOutcomeUnknown {
            command_seq: a.command_seq,
            attempt: a.attempt,
        }),
        Event::ActivityReconciled(a) => A::ActivityReconciled(pb::ActivityReconciled {
            command_seq: a.command_seq,
            decision: pb::ReconcileDecision::Retry as i32,
            identity: a.identity.clone(),
        }),
        Event::ActivityProgress(a) => A::ActivityProgress(pb::ActivityProgress {
            command_seq: a.command_seq,
            attempt: a.attempt,
            details: Some(payload(&a.details)),
        }),
        Event::TimerStarted(a) => A::TimerStarted(pb::TimerStarted {
            command_seq: a.command_seq,
            fire_at_ms: a.fire_at_ms,
        }),
        Event::TimerFired(a) => A::TimerFired(pb::TimerFired {
            command_seq: a.command_seq,
        }),
        Event::TimerCancelled(a) => A::TimerCancelled(pb::TimerCancelled {
            command_seq: a.command_seq,
            timer_id: a.timer_id,
        }),
        Event::SignalWaitStarted(a) => A::SignalWaitStarted(pb::SignalWaitStarted {
            command_seq: a.command_seq,
            name: a.name.clone(),
            question: a.question.clone(),
            choices: a.choices.clone(),
        }),
        Event::SignalReceived(a) => A::SignalReceived(pb::SignalReceived {
            name: a.name.clone(),
            input: Some(payload(&a.input)),
            identity: a.identity.clone(),
            request_id: a.request_id.clone(),
        }),
        Event::ProgressReported(a) => A::ProgressReported(pb::ProgressReported {
            command_seq: a.command_seq,
            done: a.done,
            total: a.total,
            message: a.message.clone(),
        }),
        Event::PartialResultRecorded(a) => A::PartialResultRecorded(pb::PartialResultRecorded {
            command_seq: a.command_seq,
            result: Some(payload(&a.result)),
        }),
        Event::CancelRequested(a) => A::CancelRequested(pb::CancelRequested {
            reason: a.reason.clone(),
            identity: a.identity.clone(),
        }),
        Event::BudgetUpdated(a) => A::BudgetUpdated(pb::BudgetUpdated {
            budget: Some(budget(&a.budget)),
            identity: a.identity.clone(),
        }),
        Event::BudgetExceeded(a) => A::BudgetExceeded(pb::BudgetExceeded {
            dimension: a.dimension.as_str().into(),
            limit: a.limit,
            used: a.used,
        }),
        Event::RunCompleted(a) => A::RunCompleted(pb::RunCompleted {
            command_seq: a.command_seq,
            result: Some(payload(&a.result)),
        }),
        Event::RunFailed(a) => A::RunFailed(pb::RunFailed {
            command_seq: a.command_seq,
            failure: Some(failure(&a.failure)),
        }),
        Event::RunCancelled(a) => A::RunCancelled(pb::RunCancelled {
            command_seq: a.command_seq,
            partial_result: a.partial_result.as_ref().map(payload),
        }),
        Event::RunTerminated(a) => A::RunTerminated(pb::RunTerminated {
            reason: a.reason.clone(),
            identity: a.identity.clone(),
        }),
        Event::RunTimedOut(a) => A::RunTimedOut(pb::RunTimedOut {
            run_timeout_ms: a.run_timeout_ms,
        }),
        Event::RunContinuedAsNew(a) => A::RunContinuedAsNew(pb::RunContinuedAsNew {
            command_seq: a.command_seq,
            new_run_id: a.new_run_id.to_string(),
            input: Some(payload(&a.input)),
            keep_build: a.keep_build,
        }),
        other => crate::convert_family::to_wire(other)
            .or_else(|| crate::convert_search::to_wire(other))
            .or_else(|| crate::convert_approval::to_wire(other))
            .expect("every other event is converted above"),
    };
    pb::HistoryEvent {
        seq: rec.seq,
        time_ms: rec.time_ms,
        hash: rec.hash.to_vec(),
        kind: rec.event.kind() as i32,
        attributes: Some(attrs),
    }
}

/// A wire event back to an engine record (for replay and verification in the CLI).
pub fn event_from(e: &pb::HistoryEvent) -> Result<EventRecord, FromWireError> {
    let err = |detail: &str| FromWireError {
        seq: e.seq,
        detail: detail.to_string(),
    };
    let hash: [u8; 32] = e
        .hash
        .as_slice()
        .try_into()
        .map_err(|_| err("hash is not 32 bytes"))?;
    let run_id = |s: &str| -> Result<Option<RunId>, FromWireError> {
        if s.is_empty() {
            Ok(None)
        } else {
            RunId::parse(s).map(Some).map_err(|_| err("bad run id"))
        }
    };
    let attrs = e.attributes.as_ref().ok_or_else(|| err("no attributes"))?;
    let event = match attrs {
        A::RunStarted(a) => Event::RunStarted(ev::RunStarted {
            workflow_type: a.workflow_type.clone(),
            workflow_id: a.workflow_id.clone(),
            task_queue: a.task_queue.clone(),
            input: opt_payload(&a.input),
            run_timeout_ms: a.run_timeout_ms,
            budget: a.budget.as_ref().map(budget_from).unwrap_or_default(),
            continued_from: run_id(&a.continued_from)?,
            identity: a.identity.clone(),
            random_seed: a.random_seed,
            parent: crate::convert_family::parent_from(&a.parent).map_err(err)?,
            forked_from: match &a.forked_from {
                None => None,
                Some(f) => Some(ev::ForkRef {
                    run_id: RunId::parse(&f.run_id).map_err(|_| err("bad forked_from run id"))?,
                    seq: f.seq,
                }),
            },
            schedule: a.schedule.as_ref().map(|s| ev::ScheduleRef {
                name: s.name.clone(),
                slot_ms: s.slot_ms,
            }),
            traceparent: (!a.traceparent.is_empty()).then(|| a.traceparent.clone()),
        }),
        A::WorkflowTaskScheduled(a) => Event::WorkflowTaskScheduled(ev::WorkflowTaskScheduled {
            task_queue: a.task_queue.clone(),
            attempt: a.attempt,
            not_before_ms: a.not_before_ms,
        }),
        A::WorkflowTaskStarted(a) => Event::WorkflowTaskStarted(ev::WorkflowTaskStarted {
            scheduled_seq: a.scheduled_seq,
            worker: a.worker.clone(),
            timeout_ms: a.timeout_ms,
        }),
        A::WorkflowTaskCompleted(a) => Event::WorkflowTaskCompleted(ev::WorkflowTaskCompleted {
            started_seq: a.started_seq,
            worker: a.worker.clone(),
        }),
        A::WorkflowTaskFailed(a) => Event::WorkflowTaskFailed(ev::WorkflowTaskFailed {
            started_seq: a.started_seq,
            cause: fail_cause_from(a.cause),
            message: a.message.clone(),
            worker: a.worker.clone(),
        }),
        A::WorkflowTaskTimedOut(a) => Event::WorkflowTaskTimedOut(ev::WorkflowTaskTimedOut {
            started_seq: a.started_seq,
        }),
        A::ActivityScheduled(a) => Event::ActivityScheduled(ev::ActivityScheduled {
            command_seq: a.command_seq,
            activity_type: a.activity_type.clone(),
            input: opt_payload(&a.input),
            options: a
                .options
                .as_ref()
                .map(activity_options_from)
                .unwrap_or_default(),
        }),
        A::ActivityStarted(a) => Event::ActivityStarted(ev::ActivityStarted {
            command_seq: a.command_seq,
            attempt: a.attempt,
            worker: a.worker.clone(),
            // Unspecified: written before the field existed, when only writes were recorded.
            effect: match pb::Effect::try_from(a.effect).unwrap_or(pb::Effect::Unspecified) {
                pb::Effect::Unspecified => ev::Effect::Write,
                _ => effect_from(a.effect),
            },
        }),
        A::ActivityCompleted(a) => Event::ActivityCompleted(ev::ActivityCompleted {
            command_seq: a.command_seq,
            attempt: a.attempt,
            result: opt_payload(&a.result),
            duration_ms: a.duration_ms,
            usage: a.usage.as_ref().map(usage_from),
            reconciled: a.reconciled,
        }),
        A::ActivityFailed(a) => Event::ActivityFailed(ev::ActivityFailed {
            command_seq: a.command_seq,
            attempt: a.attempt,
            failure: a.failure.as_ref().map(failure_from).unwrap_or_default(),
            retry_at_ms: (a.retry_at_ms != 0).then_some(a.retry_at_ms),
            duration_ms: a.duration_ms,
            usage: a.usage.as_ref().map(usage_from),
        }),
        A::ActivityTimedOut(a) => Event::ActivityTimedOut(ev::ActivityTimedOut {
            command_seq: a.command_seq,
            attempt: a.attempt,
            timeout: match pb::TimeoutKind::try_from(a.timeout) {
                Ok(pb::TimeoutKind::ScheduleToClose) => ev::TimeoutKind::ScheduleToClose,
                Ok(pb::TimeoutKind::Heartbeat) => ev::TimeoutKind::Heartbeat,
                _ => ev::TimeoutKind::StartToClose,
            },
            retry_at_ms: (a.retry_at_ms != 0).then_some(a.retry_at_ms),
        }),
        A::ActivityUsageReported(a) => Event::ActivityUsageReported(ev::ActivityUsageReported {
            command_seq: a.command_seq,
            attempt: a.attempt,
            usage: a.usage.as_ref().map(usage_from).unwrap_or_default(),
        }),
        A::ActivityCancelRequested(a) => {
            Event::ActivityCancelRequested(ev::ActivityCancelRequested {
                command_seq: a.command_seq,
                activity_id: a.activity_id,
            })
        }
        A::ActivityCancelled(a) => Event::ActivityCancelled(ev::ActivityCancelled {
            command_seq: a.command_seq,
        }),
        A::ActivityOutcomeUnknown(a) => Event::ActivityOutcomeUnknown(ev::ActivityOutcomeUnknown {
            command_seq: a.command_seq,
            attempt: a.attempt,
        }),
        A::ActivityReconciled(a) => Event::ActivityReconciled(ev::ActivityReconciled {
            command_seq: a.command_seq,
            decision: ev::ReconcileDecision::Retry,
            identity: a.identity.clone(),
        }),
        A::ActivityProgress(a) => Event::ActivityProgress(ev::ActivityProgress {
            command_seq: a.command_seq,
            attempt: a.attempt,
            details: opt_payload(&a.details),
        }),
        A::TimerStarted(a) => Event::TimerStarted(ev::TimerStarted {
            command_seq: a.command_seq,
            fire_at_ms: a.fire_at_ms,
        }),
        A::TimerFired(a) => Event::TimerFired(ev::TimerFired {
            command_seq: a.command_seq,
        }),
        A::TimerCancelled(a) => Event::TimerCancelled(ev::TimerCancelled {
            command_seq: a.command_seq,
            timer_id: a.timer_id,
        }),
        A::SignalWaitStarted(a) => Event::SignalWaitStarted(ev::SignalWaitStarted {
            command_seq: a.command_seq,
            name: a.name.clone(),
            question: a.question.clone(),
            choices: a.choices.clone(),
        }),
        A::SignalReceived(a) => Event::SignalReceived(ev::SignalReceived {
            name: a.name.clone(),
            input: opt_payload(&a.input),
            identity: a.identity.clone(),
            request_id: a.request_id.clone(),
        }),
        A::ProgressReported(a) => Event::ProgressReported(ev::ProgressReported {
            command_seq: a.command_seq,
            done: a.done,
            total: a.total,
            message: a.message.clone(),
        }),
        A::PartialResultRecorded(a) => Event::PartialResultRecorded(ev::PartialResultRecorded {
            command_seq: a.command_seq,
            result: opt_payload(&a.result),
        }),
        A::CancelRequested(a) => Event::CancelRequested(ev::CancelRequested {
            reason: a.reason.clone(),
            identity: a.identity.clone(),
        }),
        A::BudgetUpdated(a) => Event::BudgetUpdated(ev::BudgetUpdated {
            budget: a.budget.as_ref().map(budget_from).unwrap_or_default(),
            identity: a.identity.clone(),
        }),
        A::BudgetExceeded(a) => Event::BudgetExceeded(ev::BudgetExceeded {
            dimension: dimension_from(&a.dimension)
                .ok_or_else(|| err("unknown budget dimension"))?,
            limit: a.limit,
            used: a.used,
        }),
        A::RunCompleted(a) => Event::RunCompleted(ev::RunCompleted {
            command_seq: a.command_seq,
            result: opt_payload(&a.result),
        }),
        A::RunFailed(a) => Event::RunFailed(ev::RunFailed {
            command_seq: a.command_seq,
            failure: a.failure.as_ref().map(failure_from).unwrap_or_default(),
        }),
        A::RunCancelled(a) => Event::RunCancelled(ev::RunCancelled {
            command_seq: a.command_seq,
            partial_result: a.partial_result.as_ref().map(payload_from),
        }),
        A::RunTerminated(a) => Event::RunTerminated(ev::RunTerminated {
            reason: a.reason.clone(),
            identity: a.identity.clone(),
        }),
        A::RunTimedOut(a) => Event::RunTimedOut(ev::RunTimedOut {
            run_timeout_ms: a.run_timeout_ms,
        }),
        A::RunContinuedAsNew(a) => Event::RunContinuedAsNew(ev::RunContinuedAsNew {
            command_seq: a.command_seq,
            new_run_id: run_id(&a.new_run_id)?.ok_or_else(|| err("missing new run id"))?,
            input: opt_payload(&a.input),
            keep_build: a.keep_build,
        }),
        other => crate::convert_family::from_wire(other)
            .or_else(|| crate::convert_search::from_wire(other))
            .or_else(|| crate::convert_approval::from_wire(other))
            .ok_or_else(|| err("unknown event"))?
            .map_err(|d| err(&d))?,
    };
    if EventKind::from_u16(e.kind as u16) != Some(event.kind()) {
        return Err(err("kind does not match its attributes"));
    }
    Ok(EventRecord {
        seq: e.seq,
        time_ms: e.time_ms,
        hash,
        event,
    })
}

/// Engine status to wire.
pub fn status(s: RunStatus) -> pb::RunStatus {
    match s {
        RunStatus::Running => pb::RunStatus::Running,
        RunStatus::Completed => pb::RunStatus::Completed,
        RunStatus::Failed => pb::RunStatus::Failed,
        RunStatus::Cancelled => pb::RunStatus::Cancelled,
        RunStatus::Terminated => pb::RunStatus::Terminated,
        RunStatus::TimedOut => pb::RunStatus::TimedOut,
        RunStatus::ContinuedAsNew => pb::RunStatus::ContinuedAsNew,
    }
}

/// Wire status to engine (`None` = unspecified).
pub fn status_from(s: i32) -> Option<RunStatus> {
    Some(match pb::RunStatus::try_from(s).ok()? {
        pb::RunStatus::Unspecified => return None,
        pb::RunStatus::Running => RunStatus::Running,
        pb::RunStatus::Completed => RunStatus::Completed,
        pb::RunStatus::Failed => RunStatus::Failed,
        pb::RunStatus::Cancelled => RunStatus::Cancelled,
        pb::RunStatus::Terminated => RunStatus::Terminated,
        pb::RunStatus::TimedOut => RunStatus::TimedOut,
        pb::RunStatus::ContinuedAsNew => RunStatus::ContinuedAsNew,
    })
}

/// One waiting-on entry to wire.
pub fn waiting(w: &WaitingOn) -> pb::WaitingOn {
    use pb::waiting_on::What;
    let what = match w {
        WaitingOn::Activity {
            id,
            activity_type,
            attempt,
            since_ms,
            next_retry_ms,
            state,
        } => What::Activity(pb::WaitActivity {
            activity_id: *id,
            activity_type: activity_type.clone(),
            attempt: *attempt,
            since_ms: *since_ms,
            next_retry_ms: next_retry_ms.unwrap_or(0),
            state: state.to_string(),
        }),
        WaitingOn::Timer { id, fire_at_ms } => What::Timer(pb::WaitTimer {
            timer_id: *id,
            fire_at_ms: *fire_at_ms,
        }),
        WaitingOn::Signal {
            name,
            question,
            choices,
            since_ms,
        } => What::Signal(pb::WaitSignal {
            name: name.clone(),
            question: question.clone(),
            choices: choices.clone(),
            since_ms: *since_ms,
        }),
        WaitingOn::Budget(h) => What::Budget(pb::WaitBudget {
            dimension: h.dimension.as_str().into(),
            limit: h.limit,
            used: h.used,
        }),
        WaitingOn::Reconciliation {
            id,
            activity_type,
            attempt,
        } => What::Reconciliation(pb::WaitReconciliation {
            activity_id: *id,
            activity_type: activity_type.clone(),
            attempt: *attempt,
        }),
        WaitingOn::WorkflowTask { held_reason } => What::WorkflowTask(pb::WaitWorkflowTask {
            held_reason: held_reason.clone().unwrap_or_default(),
        }),
        WaitingOn::Idle => What::Idle(pb::WaitIdle {}),
        WaitingOn::Approval {
            id,
            activity_type,
            attempt,
            reason,
            declared_by,
            arguments,
            since_ms,
        } => What::Approval(crate::convert_approval::waiting(
            *id,
            activity_type,
            *attempt,
            reason,
            declared_by,
            arguments,
            *since_ms,
        )),
        WaitingOn::Build { build } => What::Build(pb::WaitBuild {
            build_id: build.clone(),
        }),
        WaitingOn::Child {
            id,
            run_id,
            workflow_type,
            state,
        } => What::Child(pb::WaitChild {
            command_seq: *id,
            run_id: run_id.clone(),
            workflow_type: workflow_type.clone(),
            state: state.to_string(),
        }),
    };
    pb::WaitingOn { what: Some(what) }
}

/// A run state to wire; `result` must already be inline (see the caller).
pub fn run_info(s: &RunState, now_ms: i64, result: Option<Payload>) -> pb::RunInfo {
    pb::RunInfo {
        namespace: s.key.namespace.clone(),
        run_id: s.key.run_id.to_string(),
        workflow_id: s.workflow_id.clone(),
        workflow_type: s.workflow_type.clone(),
        task_queue: s.task_queue.clone(),
        status: status(s.status) as i32,
        started_ms: s.started_ms,
        closed_ms: s.closed_ms.unwrap_or(0),
        history_length: s.last_seq,
        usage: Some(pb::Usage {
            input_tokens: s.usage.input_tokens,
            output_tokens: s.usage.output_tokens,
            cost_micros: s.usage.cost_micros,
            model: String::new(),
            activities: s.usage.activities,
            llm_calls: s.usage.llm_calls,
        }),
        budget: Some(budget(&s.budget)),
        waiting_on: s.waiting_on(now_ms).iter().map(waiting).collect(),
        progress: s.progress.as_ref().map(|p| pb::Progress {
            done: p.done,
            total: p.total,
            message: p.message.clone(),
            time_ms: p.time_ms,
        }),
        result: result.as_ref().map(payload),
        failure: s.failure.as_ref().map(failure),
        continued_from: rid(&s.continued_from),
        continued_to: rid(&s.continued_to),
        cancel_requested: s.cancel_requested,
        history_bytes: s.history_bytes,
        parent_run_id: s.parent.map(|p| p.run_id.to_string()).unwrap_or_default(),
        children: crate::convert_family::children(s),
        forked_from_run_id: rid(&s.forked_from.map(|f| f.run_id)),
        forked_from_seq: s.forked_from.map_or(0, |f| f.seq),
        schedule: s
            .schedule
            .as_ref()
            .map(|r| r.name.clone())
            .unwrap_or_default(),
        schedule_slot_ms: s.schedule.as_ref().map_or(0, |r| r.slot_ms),
        build: s.pinned_build.clone().unwrap_or_default(),
        auto_upgrade: s.auto_upgrade,
        search_attributes: crate::convert_search::attributes(&s.search_attributes),
        memo: s.memo.as_ref().map(payload),
        failed_activity_types: s.failed_activity_types.iter().cloned().collect(),
    }
}
