//! The golden histories of worker versioning (build ids, discriminants 100-101), in files of
//! their own so that the older golden files keep their bytes: a run pinned by its first
//! completed workflow task that continues as new keeping its build, its successor pinned from
//! the start, and a run started auto-upgrading.

use super::history::*;
use steadfast_engine::event::*;
use steadfast_engine::payload::Payload;
use steadfast_engine::state::RunStatus;
use steadfast_engine::{RunId, RunKey};

fn id(n: u128) -> RunId {
    RunId(uuid::Uuid::from_u128(
        0x0190_0000_0000_7000_8000_0000_0000_0000 | n,
    ))
}

pub(crate) fn build_histories() -> Vec<History> {
    let successor = id(21);
    let pinned = vec![
        /* 1 */ started("builds", Budget::default(), None),
        /* 2 */ wft_scheduled(1, 0),
        /* 3 */ wft_started(2),
        /* 4 */
        Event::BuildPinned(BuildPinned {
            build_id: "agent-2026.05.1".into(),
        }),
        /* 5 */ wft_completed(3),
        /* 6 */
        Event::RunContinuedAsNew(RunContinuedAsNew {
            command_seq: 1,
            new_run_id: successor,
            input: Payload::json(r#"{"round":2}"#),
            keep_build: true,
        }),
    ];
    let kept = vec![
        /* 1 */ started("builds", Budget::default(), Some(id(20))),
        /* 2 */
        Event::VersioningSet(VersioningSet {
            pinned_build: "agent-2026.05.1".into(),
            auto_upgrade: false,
        }),
        /* 3 */ wft_scheduled(1, 0),
    ];
    let auto = vec![
        /* 1 */ started("auto", Budget::default(), None),
        /* 2 */
        Event::VersioningSet(VersioningSet {
            pinned_build: String::new(),
            auto_upgrade: true,
        }),
        /* 3 */ wft_scheduled(1, 0),
        /* 4 */ wft_started(3),
        /* 5 */ wft_completed(4),
    ];
    vec![
        History {
            name: "build_pinned",
            key: RunKey::new("default", id(20)),
            events: pinned,
            status: RunStatus::ContinuedAsNew,
        },
        History {
            name: "build_kept",
            key: RunKey::new("default", successor),
            events: kept,
            status: RunStatus::Running,
        },
        History {
            name: "build_auto_upgrade",
            key: RunKey::new("default", id(22)),
            events: auto,
            status: RunStatus::Running,
        },
    ]
}

/// What the histories fold to: the pin, the kept build and auto-upgrade.
#[test]
fn build_histories_fold_to_their_routing() {
    use steadfast_engine::state::RunState;
    let h = build_histories();
    let fold = |h: &History| RunState::from_history(h.key.clone(), &h.records()).unwrap();
    let pinned = fold(&h[0]);
    assert_eq!(pinned.pinned_build.as_deref(), Some("agent-2026.05.1"));
    assert!(pinned.successor_keeps_build);
    let kept = fold(&h[1]);
    assert_eq!(kept.routed_build(), Some("agent-2026.05.1"));
    let auto = fold(&h[2]);
    assert!(auto.auto_upgrade && auto.routed_build().is_none());
}
