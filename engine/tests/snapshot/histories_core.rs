//! The golden histories of the core events: a run's whole life, every way it ends, fields
//! appended to old attrs, late usage.

use super::history::*;
use steadfast_engine::event::*;
use steadfast_engine::payload::{BlobRef, Payload};
use steadfast_engine::state::RunStatus;
use steadfast_engine::{RunId, RunKey};

/// Every non-terminal kind, ending in continue-as-new.
pub(crate) fn main_history() -> History {
    let write = ActivityOptions {
        task_queue: "tools".into(),
        retry: RetryPolicy {
            initial_interval_ms: 1_000,
            backoff_coefficient: 2.0,
            maximum_interval_ms: 60_000,
            maximum_attempts: 5,
            non_retryable_error_types: vec!["InvalidInput".into(), "Forbidden".into()],
        },
        schedule_to_close_ms: 600_000,
        start_to_close_ms: 30_000,
        heartbeat_ms: 5_000,
        effect: Effect::Write,
        approval: None,
    };
    let llm = ActivityOptions {
        task_queue: "llm".into(),
        effect: Effect::Idempotent,
        ..Default::default()
    };
    let events = vec![
        /* 1 */
        started(
            "ticket-4711",
            Budget {
                max_tokens: 100_000,
                max_cost_micros: 2_500_000,
                max_activities: 50,
                max_duration_ms: 3_600_000,
            },
            Some(run_id("01900000-0000-7000-8000-00000000000a")),
        ),
        /* 2 */ wft_scheduled(1, 0),
        /* 3 */ wft_started(2),
        /* 4 */
        Event::WorkflowTaskFailed(WorkflowTaskFailed {
            started_seq: 3,
            cause: WorkflowTaskFailCause::Nondeterminism,
            message:
                "[STF-C4] seq 1: history has ActivityScheduled(classify), code started a timer"
                    .into(),
            worker: "worker-1".into(),
        }),
        /* 5 */ wft_scheduled(2, T0 + 10_000),
        /* 6 */ wft_started(5),
        /* 7 */ Event::WorkflowTaskTimedOut(WorkflowTaskTimedOut { started_seq: 6 }),
        /* 8 */ wft_scheduled(3, 0),
        /* 9 */ wft_started(8),
        /* 10 */ wft_completed(9),
        /* 11 */
        Event::ActivityScheduled(ActivityScheduled {
            command_seq: 1,
            activity_type: "crm.update_ticket".into(),
            input: Payload {
                encoding: "json/plain".into(),
                data: Vec::new(),
                blob: Some(BlobRef {
                    hash: *blake3::hash(b"a large input").as_bytes(),
                    len: 70_000,
                }),
            },
            options: write,
        }),
        /* 12 */
        Event::ActivityScheduled(ActivityScheduled {
            command_seq: 2,
            activity_type: "llm.chat".into(),
            input: Payload::json(r#"{"messages":[{"role":"user","content":"classify"}]}"#),
            options: llm,
        }),
        /* 13 */
        Event::TimerStarted(TimerStarted {
            command_seq: 3,
            fire_at_ms: T0 + 3_600_000,
        }),
        /* 14 */
        Event::SignalWaitStarted(SignalWaitStarted {
            command_seq: 4,
            name: "approve".into(),
            question: "Refund 120 EUR?".into(),
            choices: vec!["yes".into(), "no".into(), "escalate".into()],
        }),
        /* 15 */
        Event::ProgressReported(ProgressReported {
            command_seq: 5,
            done: 2,
            total: 5,
            message: "classifying".into(),
        }),
        /* 16 */
        Event::PartialResultRecorded(PartialResultRecorded {
            command_seq: 6,
            result: Payload::json(r#"{"draft":"..."}"#),
        }),
        /* 17 */
        Event::ActivityStarted(ActivityStarted {
            command_seq: 1,
            attempt: 1,
            worker: "worker-2".into(),
            effect: Effect::Write,
        }),
        /* 18 */
        Event::ActivityProgress(ActivityProgress {
            command_seq: 1,
            attempt: 1,
            details: payload("binary/plain", &[0, 1, 2, 255]),
        }),
        /* 19 */
        Event::ActivityOutcomeUnknown(ActivityOutcomeUnknown {
            command_seq: 1,
            attempt: 1,
        }),
        /* 20 */
        Event::ActivityReconciled(ActivityReconciled {
            command_seq: 1,
            decision: ReconcileDecision::Retry,
            identity: "operator".into(),
        }),
        /* 21 */
        Event::ActivityTimedOut(ActivityTimedOut {
            command_seq: 2,
            attempt: 1,
            timeout: TimeoutKind::StartToClose,
            retry_at_ms: Some(T0 + 21_000),
        }),
        /* 22 */
        Event::ActivityFailed(ActivityFailed {
            command_seq: 2,
            attempt: 2,
            failure: failure("rate limited", "RateLimit", false),
            retry_at_ms: Some(T0 + 23_000),
            duration_ms: 812,
            usage: None,
        }),
        /* 23 */
        Event::ActivityCompleted(ActivityCompleted {
            command_seq: 2,
            attempt: 3,
            result: Payload::json(r#"{"label":"hardware"}"#),
            duration_ms: 1_234,
            usage: Some(Usage {
                input_tokens: 1_200,
                output_tokens: 345,
                cost_micros: 4_560,
                model: "gpt-x".into(),
            }),
            reconciled: false,
        }),
        /* 24 */ Event::TimerFired(TimerFired { command_seq: 3 }),
        /* 25 */
        Event::SignalReceived(SignalReceived {
            name: "approve".into(),
            input: Payload::json(r#""yes""#),
            identity: "alice".into(),
            request_id: "req-0001".into(),
        }),
        /* 26 */
        Event::BudgetExceeded(BudgetExceeded {
            dimension: BudgetDimension::Cost,
            limit: 2_500_000,
            used: 2_500_001,
        }),
        /* 27 */
        Event::BudgetUpdated(BudgetUpdated {
            budget: Budget {
                max_tokens: 0,
                max_cost_micros: 5_000_000,
                max_activities: 50,
                max_duration_ms: 0,
            },
            identity: "alice".into(),
        }),
        /* 28 */
        Event::CancelRequested(CancelRequested {
            reason: "duplicate ticket".into(),
            identity: "bob".into(),
        }),
        /* 29 */ wft_scheduled(1, 0),
        /* 30 */ wft_started(29),
        /* 31 */ wft_completed(30),
        /* 32 */
        Event::ActivityCancelRequested(ActivityCancelRequested {
            command_seq: 7,
            activity_id: 1,
        }),
        /* 33 */
        Event::TimerStarted(TimerStarted {
            command_seq: 8,
            fire_at_ms: -1,
        }),
        /* 34 */
        Event::TimerCancelled(TimerCancelled {
            command_seq: 9,
            timer_id: 8,
        }),
        /* 35 */ Event::ActivityCancelled(ActivityCancelled { command_seq: 1 }),
        /* 36 */
        Event::RunContinuedAsNew(RunContinuedAsNew {
            keep_build: false,
            command_seq: 10,
            new_run_id: run_id("01900000-0000-7000-8000-0000000000ff"),
            input: Payload::json(r#"{"ticket":4711,"resume":true}"#),
        }),
    ];
    History {
        name: "continued_as_new",
        key: RunKey::new("default", run_id("01900000-0000-7000-8000-000000000001")),
        events,
        status: RunStatus::ContinuedAsNew,
    }
}

/// One short history per remaining terminal kind.
pub(crate) fn terminal_histories() -> Vec<History> {
    let short = |name, n: u128, ns: &str, tail: Vec<Event>, status| {
        let id = RunId(uuid::Uuid::from_u128(
            0x0190_0000_0000_7000_8000_0000_0000_0000 | n,
        ));
        let mut events = vec![started(name, Budget::default(), None)];
        events.extend(tail);
        History {
            name,
            key: RunKey::new(ns, id),
            events,
            status,
        }
    };
    vec![
        short(
            "completed",
            2,
            "default",
            vec![
                wft_scheduled(1, 0),
                wft_started(2),
                wft_completed(3),
                Event::RunCompleted(RunCompleted {
                    command_seq: 1,
                    result: Payload::json(r#"{"answer":42}"#),
                }),
            ],
            RunStatus::Completed,
        ),
        short(
            "failed",
            3,
            "acme-corp",
            vec![Event::RunFailed(RunFailed {
                command_seq: 0,
                failure: failure("no worker", "Unavailable", true),
            })],
            RunStatus::Failed,
        ),
        short(
            "cancelled",
            4,
            "default",
            vec![
                wft_scheduled(1, 0),
                wft_started(2),
                wft_completed(3),
                Event::RunCancelled(RunCancelled {
                    command_seq: 1,
                    partial_result: Some(Payload::json("[1,2]")),
                }),
            ],
            RunStatus::Cancelled,
        ),
        short(
            "terminated",
            5,
            "default",
            vec![Event::RunTerminated(RunTerminated {
                reason: "stuck".into(),
                identity: "operator".into(),
            })],
            RunStatus::Terminated,
        ),
        short(
            "timed_out",
            6,
            "default",
            vec![Event::RunTimedOut(RunTimedOut {
                run_timeout_ms: 86_400_000,
            })],
            RunStatus::TimedOut,
        ),
    ]
}

/// Fields appended after the first format, at values other than their defaults (at their
/// defaults they are not written, and the histories above keep their bytes): the
/// workflow-task timeout recorded with WorkflowTaskStarted, the declared effect of every
/// ActivityStarted, the usage of a failed attempt.
pub(crate) fn appended_fields_history() -> History {
    let id = RunId(uuid::Uuid::from_u128(
        0x0190_0000_0000_7000_8000_0000_0000_0000 | 7,
    ));
    let read = ActivityOptions {
        task_queue: "tools".into(),
        heartbeat_ms: 2_000,
        effect: Effect::Read,
        ..Default::default()
    };
    let events = vec![
        started("appended-fields", Budget::default(), None),
        wft_scheduled(1, 0),
        Event::WorkflowTaskStarted(WorkflowTaskStarted {
            scheduled_seq: 2,
            worker: "worker-1".into(),
            timeout_ms: 30_000,
        }),
        wft_completed(3),
        Event::ActivityScheduled(ActivityScheduled {
            command_seq: 1,
            activity_type: "llm.chat".into(),
            input: Payload::json(r#"{"prompt_hash":"ab12"}"#),
            options: read,
        }),
        Event::ActivityStarted(ActivityStarted {
            command_seq: 1,
            attempt: 1,
            worker: "worker-2".into(),
            effect: Effect::Read,
        }),
        Event::ActivityFailed(ActivityFailed {
            command_seq: 1,
            attempt: 1,
            failure: failure("context too long", "BadRequest", true),
            retry_at_ms: None,
            duration_ms: 950,
            usage: Some(Usage {
                input_tokens: 4_000,
                output_tokens: 12,
                cost_micros: 1_234,
                model: "gpt-test".into(),
            }),
        }),
        wft_scheduled(1, 0),
        Event::WorkflowTaskStarted(WorkflowTaskStarted {
            scheduled_seq: 8,
            worker: "worker-1".into(),
            timeout_ms: 0,
        }),
        wft_completed(9),
        Event::RunCompleted(RunCompleted {
            command_seq: 2,
            result: Payload::json("null"),
        }),
    ];
    History {
        name: "appended_fields",
        key: RunKey::new("default", id),
        events,
        status: RunStatus::Completed,
    }
}

/// Kinds added after the histories above were pinned, in a history of their own so that the
/// older golden files keep their bytes: the late usage report of an attempt that timed out
/// while it ran (ActivityUsageReported).
pub(crate) fn late_usage_history() -> History {
    let id = RunId(uuid::Uuid::from_u128(
        0x0190_0000_0000_7000_8000_0000_0000_0000 | 8,
    ));
    let idempotent = ActivityOptions {
        task_queue: "tools".into(),
        start_to_close_ms: 1_000,
        effect: Effect::Idempotent,
        ..Default::default()
    };
    let started_attempt = |attempt| {
        Event::ActivityStarted(ActivityStarted {
            command_seq: 1,
            attempt,
            worker: "worker-2".into(),
            effect: Effect::Idempotent,
        })
    };
    let events = vec![
        started("late-usage", Budget::default(), None),
        wft_scheduled(1, 0),
        wft_started(2),
        wft_completed(3),
        Event::ActivityScheduled(ActivityScheduled {
            command_seq: 1,
            activity_type: "llm.chat".into(),
            input: Payload::json(r#"{"prompt_hash":"cd34"}"#),
            options: idempotent,
        }),
        started_attempt(1),
        Event::ActivityTimedOut(ActivityTimedOut {
            command_seq: 1,
            attempt: 1,
            timeout: TimeoutKind::StartToClose,
            retry_at_ms: Some(T0 + 2_000),
        }),
        Event::ActivityUsageReported(ActivityUsageReported {
            command_seq: 1,
            attempt: 1,
            usage: Usage {
                input_tokens: 2_000,
                output_tokens: 150,
                cost_micros: 870,
                model: "gpt-test".into(),
            },
        }),
        started_attempt(2),
        Event::ActivityCompleted(ActivityCompleted {
            command_seq: 1,
            attempt: 2,
            result: Payload::json(r#""ok""#),
            duration_ms: 400,
            usage: None,
            reconciled: false,
        }),
        wft_scheduled(1, 0),
        wft_started(11),
        wft_completed(12),
        Event::RunCompleted(RunCompleted {
            command_seq: 2,
            result: Payload::json("null"),
        }),
    ];
    History {
        name: "late_usage",
        key: RunKey::new("default", id),
        events,
        status: RunStatus::Completed,
    }
}
