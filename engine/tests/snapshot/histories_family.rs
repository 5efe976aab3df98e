//! The golden histories of child runs, signals between runs, patches and updates, and the
//! list of every history.

use super::histories_core::*;
use super::history::*;
use steadfast_engine::event::*;
use steadfast_engine::payload::Payload;
use steadfast_engine::state::RunStatus;
use steadfast_engine::{RunId, RunKey};

/// Kinds added with child runs, signals between runs and patching (discriminants 80-85 and
/// 90), in a history of their own so that the older golden files keep their bytes. The run is
/// itself a child (RunStarted's appended `parent`), starts three children (one with every
/// parent-close policy) that close completed, failed and terminated, one whose start fails,
/// signals another run twice (delivered, not delivered) and records a patch marker.
pub(crate) fn family_history() -> History {
    let id = RunId(uuid::Uuid::from_u128(
        0x0190_0000_0000_7000_8000_0000_0000_0000 | 9,
    ));
    let child_id = |n: u128| {
        RunId(uuid::Uuid::from_u128(
            0x0190_0000_0000_7000_8000_0000_0000_0100 | n,
        ))
    };
    let requested = |command_seq, n, policy| {
        Event::ChildRunRequested(ChildRunRequested {
            command_seq,
            child_run_id: child_id(n),
            workflow_type: "triage.product".into(),
            workflow_id: if n == 4 {
                "product-printers".into()
            } else {
                String::new()
            },
            task_queue: "agents".into(),
            input: Payload::json(r#"{"product":"printers"}"#),
            run_timeout_ms: if n == 1 { 3_600_000 } else { 0 },
            budget: Budget {
                max_tokens: 10_000,
                max_cost_micros: 250_000,
                max_activities: 0,
                max_duration_ms: 0,
            },
            parent_close_policy: policy,
        })
    };
    let child_usage = Usage {
        input_tokens: 900,
        output_tokens: 120,
        cost_micros: 2_100,
        model: String::new(),
    };
    let mut first = started("family", Budget::default(), None);
    if let Event::RunStarted(a) = &mut first {
        a.parent = Some(ParentRef {
            run_id: run_id("01900000-0000-7000-8000-0000000000aa"),
            command_seq: 3,
        });
    }
    let events = vec![
        /* 1 */ first,
        /* 2 */ wft_scheduled(1, 0),
        /* 3 */ wft_started(2),
        /* 4 */ wft_completed(3),
        /* 5 */
        Event::PatchMarker(PatchMarker {
            command_seq: 1,
            patch_id: "split-by-product".into(),
        }),
        /* 6 */ requested(2, 1, ParentClosePolicy::Cancel),
        /* 7 */ requested(3, 2, ParentClosePolicy::Terminate),
        /* 8 */ requested(4, 3, ParentClosePolicy::Abandon),
        /* 9 */ requested(5, 4, ParentClosePolicy::Cancel),
        /* 10 */
        Event::RunSignalRequested(RunSignalRequested {
            command_seq: 6,
            run_id: run_id("01900000-0000-7000-8000-0000000000aa"),
            name: "progress".into(),
            input: Payload::json(r#"{"products":4}"#),
        }),
        /* 11 */
        Event::RunSignalRequested(RunSignalRequested {
            command_seq: 7,
            run_id: run_id("01900000-0000-7000-8000-0000000000bb"),
            name: "hello".into(),
            input: Payload::json("null"),
        }),
        /* 12 */
        Event::ChildRunStarted(ChildRunStarted {
            command_seq: 2,
            run_id: child_id(1),
        }),
        /* 13 */
        Event::ChildRunStarted(ChildRunStarted {
            command_seq: 3,
            run_id: child_id(2),
        }),
        /* 14 */
        Event::ChildRunStarted(ChildRunStarted {
            command_seq: 4,
            run_id: child_id(3),
        }),
        /* 15 */
        Event::ChildRunStartFailed(ChildRunStartFailed {
            command_seq: 5,
            failure: failure(
                "workflow id product-printers has an open run",
                "WorkflowIdInUse",
                true,
            ),
        }),
        /* 16 */
        Event::RunSignalResolved(RunSignalResolved {
            command_seq: 6,
            delivered: true,
            message: String::new(),
        }),
        /* 17 */
        Event::RunSignalResolved(RunSignalResolved {
            command_seq: 7,
            delivered: false,
            message: "run 01900000-0000-7000-8000-0000000000bb is closed".into(),
        }),
        /* 18 */
        Event::ChildRunClosed(ChildRunClosed {
            command_seq: 2,
            outcome: ChildOutcome::Completed,
            result: Some(Payload::json(r#"{"label":"hardware"}"#)),
            failure: None,
            usage: child_usage.clone(),
            activities: 2,
            llm_calls: 1,
        }),
        /* 19 */
        Event::ChildRunClosed(ChildRunClosed {
            command_seq: 3,
            outcome: ChildOutcome::Failed,
            result: None,
            failure: Some(failure("no model answered", "Unavailable", true)),
            usage: child_usage,
            activities: 1,
            llm_calls: 0,
        }),
        /* 20 */
        Event::ChildRunClosed(ChildRunClosed {
            command_seq: 4,
            outcome: ChildOutcome::Terminated,
            result: None,
            failure: None,
            usage: Usage::default(),
            activities: 0,
            llm_calls: 0,
        }),
        /* 21 */ wft_scheduled(1, 0),
        /* 22 */ wft_started(21),
        /* 23 */ wft_completed(22),
        /* 24 */
        Event::RunCompleted(RunCompleted {
            command_seq: 8,
            result: Payload::json(r#"{"products":3}"#),
        }),
    ];
    History {
        name: "family",
        key: RunKey::new("default", id),
        events,
        status: RunStatus::Completed,
    }
}

/// Two updates: one the validator rejects, one whose handler runs an activity and answers.
pub(crate) fn updates_history() -> History {
    let id = RunId(uuid::Uuid::from_u128(
        0x0190_0000_0000_7000_8000_0000_0000_0000 | 10,
    ));
    let update = |update_id: &str, item: &str| {
        Event::UpdateRequested(UpdateRequested {
            update_id: update_id.into(),
            name: "add".into(),
            input: Payload::json(format!("{item:?}").into_bytes()),
            identity: "cli".into(),
        })
    };
    let events = vec![
        /* 1 */ started("steer", Budget::default(), None),
        /* 2 */ wft_scheduled(1, 0),
        /* 3 */ wft_started(2),
        /* 4 */ wft_completed(3),
        /* 5 */
        Event::SignalWaitStarted(SignalWaitStarted {
            command_seq: 1,
            name: "finish".into(),
            question: String::new(),
            choices: Vec::new(),
        }),
        /* 6 */ update("u-bad", "bad-item"),
        /* 7 */ wft_scheduled(1, 0),
        /* 8 */ wft_started(7),
        /* 9 */ wft_completed(8),
        /* 10 */
        Event::UpdateRejected(UpdateRejected {
            command_seq: 2,
            update_id: "u-bad".into(),
            reason: "items may not start with \"bad\"".into(),
        }),
        /* 11 */ update("u-1", "alpha"),
        /* 12 */ wft_scheduled(1, 0),
        /* 13 */ wft_started(12),
        /* 14 */ wft_completed(13),
        /* 15 */
        Event::ActivityScheduled(ActivityScheduled {
            command_seq: 3,
            activity_type: "step".into(),
            input: Payload::json(r#"{"index":0,"sleep_ms":0}"#),
            options: ActivityOptions::default(),
        }),
        /* 16 */
        Event::ActivityStarted(ActivityStarted {
            command_seq: 3,
            attempt: 1,
            worker: "worker-1".into(),
            effect: Effect::Idempotent,
        }),
        /* 17 */
        Event::ActivityCompleted(ActivityCompleted {
            command_seq: 3,
            attempt: 1,
            result: Payload::json("0"),
            duration_ms: 12,
            usage: None,
            reconciled: false,
        }),
        /* 18 */ wft_scheduled(1, 0),
        /* 19 */ wft_started(18),
        /* 20 */ wft_completed(19),
        /* 21 */
        Event::UpdateCompleted(UpdateCompleted {
            command_seq: 4,
            update_id: "u-1".into(),
            result: Payload::json("1"),
        }),
    ];
    History {
        name: "updates",
        key: RunKey::new("default", id),
        events,
        status: RunStatus::Running,
    }
}

pub(crate) fn histories() -> Vec<History> {
    let mut all = vec![main_history()];
    all.extend(terminal_histories());
    all.push(appended_fields_history());
    all.push(late_usage_history());
    all.push(family_history());
    all.push(updates_history());
    all.extend(super::histories_builds::build_histories());
    all.push(super::histories_search::search_history());
    all.push(super::histories_approvals::approval_history());
    all
}
