//! Worker versioning: VersioningSet only right after RunStarted, BuildPinned only once and
//! only while a workflow task is started, and what each does to the routing and the waits.

use super::*;

fn pin(build: &str) -> Event {
    Event::BuildPinned(BuildPinned {
        build_id: build.into(),
    })
}

fn versioning(pinned_build: &str, auto_upgrade: bool) -> Event {
    Event::VersioningSet(VersioningSet {
        pinned_build: pinned_build.into(),
        auto_upgrade,
    })
}

#[test]
fn the_first_completion_pins_once() {
    let mut r = Run::new();
    // Not while no task is started.
    assert!(matches!(r.err(pin("A")), ApplyError::Illegal { .. }));
    let started_seq = r.open_task();
    r.ok(pin("A"));
    r.ok(Event::WorkflowTaskCompleted(WorkflowTaskCompleted {
        started_seq,
        worker: "w1".into(),
    }));
    assert_eq!(r.state.routed_build(), Some("A"));
    r.open_task();
    assert!(
        matches!(r.err(pin("B")), ApplyError::Illegal { .. }),
        "pinned twice"
    );
}

#[test]
fn a_scheduled_task_of_a_pinned_run_waits_on_its_build() {
    let mut r = Run::new();
    r.ok(versioning("A", false));
    r.ok(Event::WorkflowTaskScheduled(WorkflowTaskScheduled {
        task_queue: "agents".into(),
        attempt: 1,
        not_before_ms: 0,
    }));
    assert_eq!(
        r.state.waiting_on(T0),
        vec![WaitingOn::Build { build: "A".into() }]
    );
    assert_eq!(r.state.waiting_on(T0)[0].category(), "build");
}

#[test]
fn versioning_is_set_only_at_the_start_and_never_both_ways() {
    let mut r = Run::new();
    assert!(matches!(
        r.err(versioning("A", true)),
        ApplyError::Illegal { .. }
    ));
    r.ok(versioning("", true));
    assert!(r.state.auto_upgrade && r.state.routed_build().is_none());
    let started_seq = r.open_task();
    // An auto-upgrading run is never pinned.
    assert!(matches!(r.err(pin("A")), ApplyError::Illegal { .. }));
    r.ok(Event::WorkflowTaskCompleted(WorkflowTaskCompleted {
        started_seq,
        worker: "w1".into(),
    }));
    assert!(matches!(
        r.err(versioning("A", false)),
        ApplyError::Illegal { .. }
    ));
}
