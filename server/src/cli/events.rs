//! Rendering of history events: the JSON line of `history show --json` / `history export`, and
//! the one-line summary of `history show` and `run watch`. Pure functions over wire events, so
//! that an event the engine cannot convert is still shown.

use serde_json::{Map, Value, json};
use steadfast_engine::EventKind;
use steadfast_proto::v1 as pb;
use steadfast_proto::v1::history_event::Attributes as A;

use super::fmt::{cut, duration, opt_payload_json, payload_short, rfc3339_ms, time_json, usd};
use super::render::{failure_json, failure_line};

/// The event's kind name (`ActivityCompleted`), or `Unknown(n)`.
pub fn kind_name(e: &pb::HistoryEvent) -> String {
    u16::try_from(e.kind)
        .ok()
        .and_then(EventKind::from_u16)
        .map(|k| k.name().to_string())
        .unwrap_or_else(|| format!("Unknown({})", e.kind))
}

/// Whether the event closes the run.
pub fn is_terminal(e: &pb::HistoryEvent) -> bool {
    matches!(
        e.attributes,
        Some(
            A::RunCompleted(_)
                | A::RunFailed(_)
                | A::RunCancelled(_)
                | A::RunTerminated(_)
                | A::RunTimedOut(_)
                | A::RunContinuedAsNew(_)
        )
    )
}

fn usage_json(u: &Option<pb::Usage>) -> Value {
    u.as_ref()
        .map(|u| {
            json!({ "input_tokens": u.input_tokens, "output_tokens": u.output_tokens, "cost_micros": u.cost_micros, "model": u.model })
        })
        .unwrap_or(Value::Null)
}

fn budget_json(b: &Option<pb::Budget>) -> Value {
    let b = b.unwrap_or_default();
    json!({ "max_tokens": b.max_tokens, "max_cost_micros": b.max_cost_micros, "max_activities": b.max_activities, "max_duration_ms": b.max_duration_ms })
}

fn enum_name<E: TryFrom<i32>>(v: i32, name: impl Fn(E) -> &'static str) -> String {
    E::try_from(v)
        .map(name)
        .map(|s| s.to_ascii_lowercase())
        .unwrap_or_else(|_| v.to_string())
}

fn effect(o: &Option<pb::ActivityOptions>) -> String {
    let e = o.as_ref().map(|o| o.effect).unwrap_or(0);
    enum_name(e, |e: pb::Effect| {
        e.as_str_name().trim_start_matches("EFFECT_")
    })
}

fn options_json(o: &Option<pb::ActivityOptions>) -> Value {
    let o = o.clone().unwrap_or_default();
    let r = o.retry.clone().unwrap_or_default();
    json!({
        "task_queue": o.task_queue,
        "start_to_close_timeout_ms": o.start_to_close_timeout_ms,
        "schedule_to_close_timeout_ms": o.schedule_to_close_timeout_ms,
        "heartbeat_timeout_ms": o.heartbeat_timeout_ms,
        "effect": effect(&Some(o.clone())),
        "retry": {
            "initial_interval_ms": r.initial_interval_ms, "backoff_coefficient": r.backoff_coefficient,
            "maximum_interval_ms": r.maximum_interval_ms, "maximum_attempts": r.maximum_attempts,
            "non_retryable_error_types": r.non_retryable_error_types,
        },
    })
}

/// The attributes of an event as JSON: payloads as their JSON value when JSON-encoded, else
/// `{encoding, size, blake3}`; enums by lowercase name; times in RFC 3339 beside their ms.
pub fn attributes_json(e: &pb::HistoryEvent) -> Value {
    let Some(a) = &e.attributes else {
        return Value::Null;
    };
    let fail = |f: &Option<pb::Failure>| f.as_ref().map(failure_json).unwrap_or(Value::Null);
    let retry_at = |ms: i64| {
        if ms == 0 {
            Value::Null
        } else {
            Value::from(rfc3339_ms(ms))
        }
    };
    match a {
        A::RunStarted(a) => json!({
            "workflow_type": a.workflow_type, "workflow_id": a.workflow_id, "task_queue": a.task_queue,
            "input": opt_payload_json(&a.input), "run_timeout_ms": a.run_timeout_ms, "budget": budget_json(&a.budget),
            "continued_from": a.continued_from, "identity": a.identity, "random_seed": a.random_seed,
        }),
        A::WorkflowTaskScheduled(a) => {
            json!({ "task_queue": a.task_queue, "attempt": a.attempt, "not_before": time_json(a.not_before_ms) })
        }
        A::WorkflowTaskStarted(a) => {
            json!({ "scheduled_seq": a.scheduled_seq, "worker": a.worker })
        }
        A::WorkflowTaskCompleted(a) => json!({ "started_seq": a.started_seq, "worker": a.worker }),
        A::WorkflowTaskFailed(a) => json!({
            "started_seq": a.started_seq, "worker": a.worker, "message": a.message,
            "cause": enum_name(a.cause, |c: pb::WorkflowTaskFailCause| c.as_str_name().trim_start_matches("WORKFLOW_TASK_FAIL_CAUSE_")),
        }),
        A::WorkflowTaskTimedOut(a) => json!({ "started_seq": a.started_seq }),
        A::ActivityScheduled(a) => json!({
            "activity_id": a.command_seq, "activity_type": a.activity_type, "input": opt_payload_json(&a.input), "options": options_json(&a.options),
        }),
        A::ActivityStarted(a) => {
            json!({ "activity_id": a.command_seq, "attempt": a.attempt, "worker": a.worker })
        }
        A::ActivityCompleted(a) => json!({
            "activity_id": a.command_seq, "attempt": a.attempt, "result": opt_payload_json(&a.result),
            "duration_ms": a.duration_ms, "usage": usage_json(&a.usage), "reconciled": a.reconciled,
        }),
        A::ActivityFailed(a) => json!({
            "activity_id": a.command_seq, "attempt": a.attempt, "failure": fail(&a.failure), "retry_at": retry_at(a.retry_at_ms), "duration_ms": a.duration_ms,
        }),
        A::ActivityTimedOut(a) => json!({
            "activity_id": a.command_seq, "attempt": a.attempt, "retry_at": retry_at(a.retry_at_ms),
            "timeout": enum_name(a.timeout, |t: pb::TimeoutKind| t.as_str_name().trim_start_matches("TIMEOUT_KIND_")),
        }),
        A::ActivityUsageReported(a) => {
            json!({ "activity_id": a.command_seq, "attempt": a.attempt, "usage": usage_json(&a.usage) })
        }
        A::ActivityCancelRequested(a) => {
            json!({ "command_seq": a.command_seq, "activity_id": a.activity_id })
        }
        A::ActivityCancelled(a) => json!({ "activity_id": a.command_seq }),
        A::ActivityOutcomeUnknown(a) => {
            json!({ "activity_id": a.command_seq, "attempt": a.attempt })
        }
        A::ActivityReconciled(a) => json!({
            "activity_id": a.command_seq, "identity": a.identity,
            "decision": enum_name(a.decision, |d: pb::ReconcileDecision| d.as_str_name().trim_start_matches("RECONCILE_DECISION_")),
        }),
        A::ActivityProgress(a) => {
            json!({ "activity_id": a.command_seq, "attempt": a.attempt, "details": opt_payload_json(&a.details) })
        }
        A::TimerStarted(a) => {
            json!({ "timer_id": a.command_seq, "fire_at": time_json(a.fire_at_ms), "fire_at_ms": a.fire_at_ms })
        }
        A::TimerFired(a) => json!({ "timer_id": a.command_seq }),
        A::TimerCancelled(a) => json!({ "command_seq": a.command_seq, "timer_id": a.timer_id }),
        A::SignalWaitStarted(a) => {
            json!({ "command_seq": a.command_seq, "name": a.name, "question": a.question, "choices": a.choices })
        }
        A::SignalReceived(a) => {
            json!({ "name": a.name, "input": opt_payload_json(&a.input), "identity": a.identity, "request_id": a.request_id })
        }
        A::ProgressReported(a) => {
            json!({ "command_seq": a.command_seq, "done": a.done, "total": a.total, "message": a.message })
        }
        A::PartialResultRecorded(a) => {
            json!({ "command_seq": a.command_seq, "result": opt_payload_json(&a.result) })
        }
        A::CancelRequested(a) => json!({ "reason": a.reason, "identity": a.identity }),
        A::BudgetUpdated(a) => json!({ "budget": budget_json(&a.budget), "identity": a.identity }),
        A::BudgetExceeded(a) => {
            json!({ "dimension": a.dimension, "limit": a.limit, "used": a.used })
        }
        A::RunCompleted(a) => {
            json!({ "command_seq": a.command_seq, "result": opt_payload_json(&a.result) })
        }
        A::RunFailed(a) => json!({ "command_seq": a.command_seq, "failure": fail(&a.failure) }),
        A::RunCancelled(a) => {
            json!({ "command_seq": a.command_seq, "partial_result": opt_payload_json(&a.partial_result) })
        }
        A::RunTerminated(a) => json!({ "reason": a.reason, "identity": a.identity }),
        A::RunTimedOut(_) => json!({}),
        A::RunContinuedAsNew(a) => {
            json!({ "command_seq": a.command_seq, "new_run_id": a.new_run_id, "input": opt_payload_json(&a.input) })
        }
        A::ChildRunRequested(a) => json!({
            "command_seq": a.command_seq, "child_run_id": a.child_run_id, "workflow_type": a.workflow_type,
            "workflow_id": a.workflow_id, "task_queue": a.task_queue, "input": opt_payload_json(&a.input),
            "run_timeout_ms": a.run_timeout_ms, "budget": budget_json(&a.budget),
            "parent_close_policy": enum_name(a.parent_close_policy, |c: pb::ParentClosePolicy| c.as_str_name()),
        }),
        A::ChildRunStarted(a) => json!({ "command_seq": a.command_seq, "run_id": a.run_id }),
        A::ChildRunStartFailed(a) => {
            json!({ "command_seq": a.command_seq, "failure": fail(&a.failure) })
        }
        A::ChildRunClosed(a) => json!({
            "command_seq": a.command_seq, "status": enum_name(a.status, |c: pb::RunStatus| c.as_str_name()),
            "result": opt_payload_json(&a.result), "failure": fail(&a.failure), "usage": usage_json(&a.usage),
        }),
        A::RunSignalRequested(a) => json!({
            "command_seq": a.command_seq, "run_id": a.run_id, "name": a.name, "input": opt_payload_json(&a.input),
        }),
        A::RunSignalResolved(a) => {
            json!({ "command_seq": a.command_seq, "delivered": a.delivered, "message": a.message })
        }
        A::PatchMarker(a) => json!({ "command_seq": a.command_seq, "patch_id": a.patch_id }),
        A::VersioningSet(a) => {
            json!({ "pinned_build": a.pinned_build, "auto_upgrade": a.auto_upgrade })
        }
        A::BuildPinned(a) => json!({ "build_id": a.build_id }),
        A::SearchAttributesUpserted(a) => json!({
            "command_seq": a.command_seq,
            "attributes": crate::cli::search::attributes_json(&a.attributes),
        }),
        A::MemoRecorded(a) => json!({ "memo": opt_payload_json(&a.memo) }),
        A::ApprovalRequested(a) => json!({
            "activity_id": a.command_seq, "attempt": a.attempt, "reason": a.reason,
            "declared_by": a.declared_by, "arguments_bytes": a.arguments_bytes,
            "arguments_blake3": hex::encode(&a.arguments_hash),
        }),
        A::ActivityApproved(a) => json!({
            "activity_id": a.command_seq, "identity": a.identity, "comment": a.comment,
            "edited_input": a.input.as_ref().map_or(Value::Null, |p| opt_payload_json(&Some(p.clone()))),
        }),
        A::ActivityDenied(a) => json!({
            "activity_id": a.command_seq, "identity": a.identity, "reason": a.reason,
        }),
        A::UpdateRequested(a) => json!({
            "update_id": a.update_id, "name": a.name, "input": opt_payload_json(&a.input), "identity": a.identity,
        }),
        A::UpdateCompleted(a) => json!({
            "command_seq": a.command_seq, "update_id": a.update_id, "result": opt_payload_json(&a.result),
        }),
        A::UpdateRejected(a) => json!({
            "command_seq": a.command_seq, "update_id": a.update_id, "reason": a.reason,
        }),
    }
}

/// One event as the JSON object of `history show --json`:
/// `{seq, kind, time, time_ms, hash, attributes}`.
pub fn event_json(e: &pb::HistoryEvent) -> Map<String, Value> {
    let mut m = Map::new();
    m.insert("seq".into(), e.seq.into());
    m.insert("kind".into(), kind_name(e).into());
    m.insert("time".into(), rfc3339_ms(e.time_ms).into());
    m.insert("time_ms".into(), e.time_ms.into());
    m.insert("hash".into(), hex::encode(&e.hash).into());
    m.insert("attributes".into(), attributes_json(e));
    m
}

/// What an event says, in a few words (no seq, no kind).
pub fn summary(e: &pb::HistoryEvent) -> String {
    const P: usize = 80;
    let p = |x: &Option<pb::Payload>| {
        x.as_ref()
            .map(|x| payload_short(x, P))
            .unwrap_or_else(|| "-".into())
    };
    let f = |x: &Option<pb::Failure>| x.as_ref().map(failure_line).unwrap_or_default();
    let retry = |ms: i64| {
        if ms == 0 {
            "final".to_string()
        } else {
            format!("retry at {}", rfc3339_ms(ms))
        }
    };
    let Some(a) = &e.attributes else {
        return "(no attributes)".into();
    };
    match a {
        A::RunStarted(a) => format!(
            "{} id={} queue={} input={}{}",
            a.workflow_type,
            a.workflow_id,
            a.task_queue,
            p(&a.input),
            a.forked_from.as_ref().map_or(String::new(), |f| format!(
                " forked from {} at seq {}",
                f.run_id, f.seq
            ))
        ),
        A::WorkflowTaskScheduled(a) => format!("queue={} attempt {}", a.task_queue, a.attempt),
        A::WorkflowTaskStarted(a) => format!("worker={}", a.worker),
        A::WorkflowTaskCompleted(a) => format!("worker={}", a.worker),
        A::WorkflowTaskFailed(a) => format!(
            "{}: {}",
            enum_name(a.cause, |c: pb::WorkflowTaskFailCause| c.as_str_name()),
            cut(&a.message, 200)
        ),
        A::WorkflowTaskTimedOut(a) => format!("task started at seq {}", a.started_seq),
        A::ActivityScheduled(a) => format!(
            "#{} {} ({}) input={}",
            a.command_seq,
            a.activity_type,
            effect(&a.options),
            p(&a.input)
        ),
        A::ActivityStarted(a) => format!(
            "#{} attempt {} worker={}",
            a.command_seq, a.attempt, a.worker
        ),
        A::ActivityCompleted(a) => {
            let mut s = format!(
                "#{} attempt {} in {}",
                a.command_seq,
                a.attempt,
                duration(a.duration_ms)
            );
            if let Some(u) = &a.usage {
                s.push_str(&format!(
                    ", {} tokens {} {}",
                    u.input_tokens + u.output_tokens,
                    usd(u.cost_micros),
                    u.model
                ));
            }
            if a.reconciled {
                s.push_str(", reconciled");
            }
            format!("{s}: {}", p(&a.result))
        }
        A::ActivityFailed(a) => format!(
            "#{} attempt {} ({}): {}",
            a.command_seq,
            a.attempt,
            retry(a.retry_at_ms),
            f(&a.failure)
        ),
        A::ActivityTimedOut(a) => format!(
            "#{} attempt {} {} ({})",
            a.command_seq,
            a.attempt,
            enum_name(a.timeout, |t: pb::TimeoutKind| t
                .as_str_name()
                .trim_start_matches("TIMEOUT_KIND_")),
            retry(a.retry_at_ms)
        ),
        A::ActivityUsageReported(a) => {
            let u = a.usage.clone().unwrap_or_default();
            format!(
                "#{} attempt {} (timed out) used {} tokens {} {}",
                a.command_seq,
                a.attempt,
                u.input_tokens + u.output_tokens,
                usd(u.cost_micros),
                u.model
            )
        }
        A::ActivityCancelRequested(a) => format!("#{}", a.activity_id),
        A::ActivityCancelled(a) => format!("#{}", a.command_seq),
        A::ActivityOutcomeUnknown(a) => format!(
            "#{} attempt {}: waits for `steadfast run reconcile`",
            a.command_seq, a.attempt
        ),
        A::ActivityReconciled(a) => format!("#{} retry by {}", a.command_seq, a.identity),
        A::ActivityProgress(a) => format!(
            "#{} attempt {}: {}",
            a.command_seq,
            a.attempt,
            p(&a.details)
        ),
        A::TimerStarted(a) => format!("#{} fires at {}", a.command_seq, rfc3339_ms(a.fire_at_ms)),
        A::TimerFired(a) => format!("#{}", a.command_seq),
        A::TimerCancelled(a) => format!("#{}", a.timer_id),
        A::SignalWaitStarted(a) => {
            let mut s = format!("{:?}", a.name);
            if !a.question.is_empty() {
                s.push_str(&format!(" question={:?}", a.question));
            }
            if !a.choices.is_empty() {
                s.push_str(&format!(" choices={}", a.choices.join("|")));
            }
            s
        }
        A::SignalReceived(a) => format!(
            "{:?} from {}: {}",
            a.name,
            if a.identity.is_empty() {
                "?"
            } else {
                &a.identity
            },
            p(&a.input)
        ),
        A::ProgressReported(a) => format!("{}/{} {}", a.done, a.total, a.message),
        A::PartialResultRecorded(a) => p(&a.result),
        A::CancelRequested(a) => format!("by {}: {}", a.identity, a.reason),
        A::BudgetUpdated(a) => super::render::budget_line(&a.budget.unwrap_or_default()),
        A::BudgetExceeded(a) => format!("{} used {} of {}", a.dimension, a.used, a.limit),
        A::RunCompleted(a) => p(&a.result),
        A::RunFailed(a) => f(&a.failure),
        A::RunCancelled(a) => format!("partial result: {}", p(&a.partial_result)),
        A::RunTerminated(a) => format!("by {}: {}", a.identity, a.reason),
        A::RunTimedOut(_) => String::new(),
        A::RunContinuedAsNew(a) => format!("new run {}", a.new_run_id),
        A::ChildRunRequested(a) => format!(
            "#{} {} run={} input={}",
            a.command_seq,
            a.workflow_type,
            a.child_run_id,
            p(&a.input)
        ),
        A::ChildRunStarted(a) => format!("#{} run={}", a.command_seq, a.run_id),
        A::ChildRunStartFailed(a) => format!("#{} {}", a.command_seq, f(&a.failure)),
        A::ChildRunClosed(a) => format!(
            "#{} {}",
            a.command_seq,
            enum_name(a.status, |c: pb::RunStatus| c.as_str_name())
        ),
        A::RunSignalRequested(a) => format!("#{} {} -> run {}", a.command_seq, a.name, a.run_id),
        A::RunSignalResolved(a) if a.delivered => format!("#{} delivered", a.command_seq),
        A::RunSignalResolved(a) => {
            format!("#{} not delivered: {}", a.command_seq, cut(&a.message, 200))
        }
        A::PatchMarker(a) => format!("#{} patch {}", a.command_seq, a.patch_id),
        A::VersioningSet(a) if a.auto_upgrade => "auto-upgrade".into(),
        A::VersioningSet(a) => format!("pinned to build {}", a.pinned_build),
        A::BuildPinned(a) => format!("build {}", a.build_id),
        A::SearchAttributesUpserted(a) => {
            let set = crate::cli::search::attributes_text(&a.attributes);
            if a.command_seq == 0 {
                format!("at start: {set}")
            } else {
                format!("#{} {set}", a.command_seq)
            }
        }
        A::MemoRecorded(a) => format!("memo {} B", a.memo.as_ref().map_or(0, |m| m.data.len())),
        A::ApprovalRequested(a) => format!(
            "#{} attempt {} waits for approval: {} (arguments {} B)",
            a.command_seq, a.attempt, a.reason, a.arguments_bytes
        ),
        A::ActivityApproved(a) => format!(
            "#{} approved by {}{}{}",
            a.command_seq,
            a.identity,
            if a.comment.is_empty() {
                String::new()
            } else {
                format!(": {}", a.comment)
            },
            if a.input.is_some() {
                " (arguments edited)"
            } else {
                ""
            }
        ),
        A::ActivityDenied(a) => {
            format!("#{} denied by {}: {}", a.command_seq, a.identity, a.reason)
        }
        A::UpdateRequested(a) => format!("{} id={}", a.name, a.update_id),
        A::UpdateCompleted(a) => format!("#{} id={}", a.command_seq, a.update_id),
        A::UpdateRejected(a) => format!(
            "#{} id={} rejected: {}",
            a.command_seq,
            a.update_id,
            cut(&a.reason, 200)
        ),
    }
}

/// `seq  time  Kind  summary`, the line of `history show` and of `run watch` off a terminal.
pub fn line(e: &pb::HistoryEvent) -> String {
    format!(
        "{:>5}  {}  {:<22}  {}",
        e.seq,
        rfc3339_ms(e.time_ms),
        kind_name(e),
        summary(e)
    )
    .trim_end()
    .to_string()
}

/// Whether `run watch` on a terminal prints this event above its progress bar.
pub fn is_notable(e: &pb::HistoryEvent) -> bool {
    !matches!(
        e.attributes,
        Some(
            A::WorkflowTaskScheduled(_)
                | A::WorkflowTaskStarted(_)
                | A::WorkflowTaskCompleted(_)
                | A::ProgressReported(_)
                | A::ActivityProgress(_)
                | A::ActivityStarted(_)
        )
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn completed_usage() -> Option<pb::Usage> {
        Some(pb::Usage {
            input_tokens: 100,
            output_tokens: 20,
            cost_micros: 1_500,
            model: "m".into(),
            ..Default::default()
        })
    }

    fn completed() -> pb::HistoryEvent {
        pb::HistoryEvent {
            seq: 7,
            time_ms: 1_000,
            hash: vec![0xab; 32],
            kind: pb::EventKind::ActivityCompleted as i32,
            attributes: Some(A::ActivityCompleted(pb::ActivityCompleted {
                command_seq: 2,
                attempt: 1,
                result: Some(pb::Payload {
                    encoding: "json/plain".into(),
                    data: br#"{"label":"bug"}"#.to_vec(),
                }),
                duration_ms: 1_200,
                usage: completed_usage(),
                reconciled: false,
            })),
        }
    }

    #[test]
    fn show_json_shape() {
        let v = Value::Object(event_json(&completed()));
        assert_eq!(
            v,
            json!({
                "seq": 7, "kind": "ActivityCompleted", "time": "1970-01-01T00:00:01.000Z", "time_ms": 1000,
                "hash": "ab".repeat(32),
                "attributes": {
                    "activity_id": 2, "attempt": 1, "result": {"label": "bug"}, "duration_ms": 1200,
                    "usage": {"input_tokens": 100, "output_tokens": 20, "cost_micros": 1500, "model": "m"},
                    "reconciled": false,
                },
            })
        );
    }

    #[test]
    fn binary_payloads_show_size_and_hash() {
        let e = pb::HistoryEvent {
            seq: 1,
            kind: pb::EventKind::SignalReceived as i32,
            attributes: Some(A::SignalReceived(pb::SignalReceived {
                name: "approve".into(),
                input: Some(pb::Payload {
                    encoding: "binary/plain".into(),
                    data: vec![1; 10],
                }),
                ..Default::default()
            })),
            ..Default::default()
        };
        let v = attributes_json(&e);
        assert_eq!(v["input"]["size"], 10);
        assert_eq!(v["input"]["encoding"], "binary/plain");
        assert!(summary(&e).contains("<10 B binary/plain"));
    }

    #[test]
    fn lines_and_kinds() {
        let e = completed();
        assert_eq!(
            line(&e),
            "    7  1970-01-01T00:00:01.000Z  ActivityCompleted       #2 attempt 1 in 1.2s, 120 tokens $0.0015 m: {\"label\":\"bug\"}"
        );
        assert!(!is_terminal(&e));
        assert!(is_notable(&e));
        assert_eq!(
            kind_name(&pb::HistoryEvent {
                kind: 999,
                ..Default::default()
            }),
            "Unknown(999)"
        );
        let late = pb::HistoryEvent {
            seq: 9,
            time_ms: 1_000,
            kind: pb::EventKind::ActivityUsageReported as i32,
            attributes: Some(A::ActivityUsageReported(pb::ActivityUsageReported {
                command_seq: 2,
                attempt: 1,
                usage: completed_usage(),
            })),
            ..Default::default()
        };
        assert_eq!(
            line(&late),
            "    9  1970-01-01T00:00:01.000Z  ActivityUsageReported   #2 attempt 1 (timed out) used 120 tokens $0.0015 m"
        );
        assert_eq!(
            attributes_json(&late),
            json!({"activity_id": 2, "attempt": 1, "usage": {"input_tokens": 100, "output_tokens": 20, "cost_micros": 1500, "model": "m"}})
        );
        let t = pb::HistoryEvent {
            kind: 74,
            attributes: Some(A::RunTimedOut(pb::RunTimedOut { run_timeout_ms: 0 })),
            ..Default::default()
        };
        assert!(is_terminal(&t));
        assert_eq!(attributes_json(&t), json!({}));
    }
}
