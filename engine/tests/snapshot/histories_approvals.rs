//! The golden history of tool approvals (discriminants 120-122), in a file of its own so
//! that the older golden files keep their bytes: one call that asks for approval with a
//! reason and is approved with edited arguments, one that a worker's registration holds and
//! that is denied (the ActivityFailed that follows is what the workflow sees).

use super::history::*;
use steadfast_engine::event::*;
use steadfast_engine::payload::Payload;
use steadfast_engine::state::RunStatus;
use steadfast_engine::{RunId, RunKey};

pub(crate) fn approval_history() -> History {
    let asked = ActivityOptions {
        task_queue: "tools".into(),
        effect: Effect::Write,
        approval: Some("refund over 100 EUR".into()),
        ..Default::default()
    };
    let plain = ActivityOptions {
        task_queue: "tools".into(),
        ..Default::default()
    };
    let args = Payload::json(r#"{"order":"A-17","amount":250}"#);
    let edited = Payload::json(r#"{"order":"A-17","amount":200}"#);
    let mail = Payload::json(r#"{"to":"all@example.com"}"#);
    let events = vec![
        /* 1 */ started("approvals", Budget::default(), None),
        /* 2 */ wft_scheduled(1, 0),
        /* 3 */ wft_started(2),
        /* 4 */ wft_completed(3),
        /* 5 */
        Event::ActivityScheduled(ActivityScheduled {
            command_seq: 1,
            activity_type: "refund".into(),
            input: args.clone(),
            options: asked,
        }),
        /* 6 */
        Event::ActivityScheduled(ActivityScheduled {
            command_seq: 2,
            activity_type: "send_mail".into(),
            input: mail.clone(),
            options: plain,
        }),
        /* 7 */
        Event::ApprovalRequested(ApprovalRequested {
            command_seq: 1,
            attempt: 1,
            reason: "refund over 100 EUR".into(),
            declared_by: String::new(),
            arguments: ArgumentsDigest::of(&args),
        }),
        /* 8 */
        Event::ApprovalRequested(ApprovalRequested {
            command_seq: 2,
            attempt: 1,
            reason: "the worker's registration requires approval".into(),
            declared_by: "worker-1".into(),
            arguments: ArgumentsDigest::of(&mail),
        }),
        /* 9 */
        Event::ActivityApproved(ActivityApproved {
            command_seq: 1,
            identity: "alice".into(),
            comment: "capped at 200".into(),
            input: Some(edited),
        }),
        /* 10 */
        Event::ActivityDenied(ActivityDenied {
            command_seq: 2,
            identity: "bob".into(),
            reason: "not to everyone".into(),
        }),
        /* 11 */
        Event::ActivityFailed(ActivityFailed {
            command_seq: 2,
            attempt: 1,
            failure: failure(
                "[STF-APPROVAL-DENIED] denied by bob: not to everyone",
                "ApprovalDenied",
                true,
            ),
            retry_at_ms: None,
            duration_ms: 0,
            usage: None,
        }),
        /* 12 */ wft_scheduled(1, 0),
    ];
    History {
        name: "approvals",
        key: RunKey::new(
            "default",
            RunId(uuid::Uuid::from_u128(
                0x0190_0000_0000_7000_8000_0000_0000_0030,
            )),
        ),
        events,
        status: RunStatus::Running,
    }
}

/// What the history folds to: activity 1 approved, ready with the edited arguments; 2 closed.
#[test]
fn approvals_fold_to_an_approved_activity_with_edited_arguments() {
    use steadfast_engine::state::{ActivityPhase, RunState};
    let h = approval_history();
    let records = h.records();
    let s = RunState::from_history(h.key.clone(), &records).unwrap();
    let a = &s.activities[&1];
    assert!(a.approved);
    assert_eq!(a.approved_input_seq, Some(9));
    assert!(matches!(a.phase, ActivityPhase::Ready { .. }));
    assert!(!s.activities.contains_key(&2));
    // Asked again after approval: illegal.
    let mut s2 = RunState::from_history(h.key.clone(), &records[..9]).unwrap();
    let again = EventRecord {
        seq: 10,
        time_ms: records[8].time_ms,
        hash: [0; 32],
        event: Event::ApprovalRequested(ApprovalRequested {
            command_seq: 1,
            attempt: 1,
            reason: String::new(),
            declared_by: String::new(),
            arguments: ArgumentsDigest::default(),
        }),
    };
    assert!(s2.apply(&again).is_err());
}
