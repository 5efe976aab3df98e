use super::*;

const SEC: TimeMs = 1_000;
const T0: TimeMs = 1_704_067_200_000;

fn every_second(overlap: Overlap) -> Schedule {
    Schedule {
        namespace: "default".into(),
        name: "nightly".into(),
        cadence: Cadence::EveryMs(1_000),
        workflow_type: "wf".into(),
        task_queue: "q".into(),
        input: Payload::default(),
        overlap,
        jitter_ms: 0,
        paused: false,
        created_ms: T0,
        cursor_ms: T0,
        last_run: None,
        buffered_slot: None,
        fired: 0,
        skipped: 0,
    }
}

fn fire(slot_ms: TimeMs, skipped: u64, cancel_previous: bool) -> Decision {
    Decision::Fire {
        slot_ms,
        cursor_ms: slot_ms,
        skipped,
        cancel_previous,
        buffered: false,
    }
}

#[test]
fn nothing_fires_before_the_first_slot() {
    let s = every_second(Overlap::AllowAll);
    assert_eq!(
        s.decide(T0 + 999, false),
        Decision::Idle {
            wake_ms: Some(T0 + SEC)
        }
    );
}

#[test]
fn allow_all_fires_every_slot_of_a_backlog_in_order() {
    let mut s = every_second(Overlap::AllowAll);
    let mut slots = Vec::new();
    while let d @ Decision::Fire { slot_ms, .. } = s.decide(T0 + 3_500, true) {
        slots.push(slot_ms);
        s = s.after(&d, Some(RunId::new_v7()));
    }
    assert_eq!(slots, vec![T0 + SEC, T0 + 2 * SEC, T0 + 3 * SEC]);
    assert_eq!((s.fired, s.skipped), (3, 0));
}

#[test]
fn skip_passes_over_slots_while_the_last_run_is_open() {
    let s = every_second(Overlap::Skip);
    assert_eq!(
        s.decide(T0 + 2_500, true),
        Decision::Advance {
            cursor_ms: T0 + 2 * SEC,
            skipped: 2,
            buffered_slot: None
        }
    );
    // Closed: a backlog collapses into its latest slot.
    assert_eq!(s.decide(T0 + 2_500, false), fire(T0 + 2 * SEC, 1, false));
}

#[test]
fn buffer_one_keeps_the_first_slot_until_the_run_closes() {
    let s = every_second(Overlap::BufferOne);
    let d = s.decide(T0 + 3_500, true);
    assert_eq!(
        d,
        Decision::Advance {
            cursor_ms: T0 + 3 * SEC,
            skipped: 2,
            buffered_slot: Some(T0 + SEC)
        }
    );
    let s = s.after(&d, None);
    // Still open at the next slot: the buffer is full, that slot is skipped.
    let d2 = s.decide(T0 + 4_000, true);
    assert_eq!(
        d2,
        Decision::Advance {
            cursor_ms: T0 + 4 * SEC,
            skipped: 1,
            buffered_slot: Some(T0 + SEC)
        }
    );
    let s = s.after(&d2, None);
    let d3 = s.decide(T0 + 4_200, false);
    assert_eq!(
        d3,
        Decision::Fire {
            slot_ms: T0 + SEC,
            cursor_ms: T0 + 4 * SEC,
            skipped: 0,
            cancel_previous: false,
            buffered: true
        }
    );
    assert_eq!(s.after(&d3, Some(RunId::new_v7())).buffered_slot, None);
}

#[test]
fn cancel_previous_fires_the_latest_slot_and_cancels_the_open_run() {
    let s = every_second(Overlap::CancelPrevious);
    assert_eq!(s.decide(T0 + 2_100, true), fire(T0 + 2 * SEC, 1, true));
    assert_eq!(s.decide(T0 + 1_100, false), fire(T0 + SEC, 0, false));
}

#[test]
fn paused_fires_nothing() {
    let mut s = every_second(Overlap::AllowAll);
    s.paused = true;
    assert_eq!(
        s.decide(T0 + 10_000, false),
        Decision::Idle { wake_ms: None }
    );
}

#[test]
fn slots_older_than_the_catchup_window_are_skipped() {
    let mut s = every_second(Overlap::AllowAll);
    s.cadence = Cadence::EveryMs(3_600_000);
    let now = T0 + CATCHUP_WINDOW_MS + 10 * 3_600_000;
    match s.decide(now, false) {
        Decision::Advance {
            cursor_ms, skipped, ..
        } => {
            assert_eq!(cursor_ms, now - CATCHUP_WINDOW_MS - 1);
            assert_eq!(skipped, 9);
        }
        d => panic!("expected a skip, got {d:?}"),
    }
}

#[test]
fn jitter_is_a_function_of_the_slot_and_the_name() {
    let mut s = every_second(Overlap::AllowAll);
    s.jitter_ms = 30_000;
    let a = s.jitter_of(T0);
    assert_eq!(a, s.jitter_of(T0), "the same slot gets the same delay");
    assert!((0..30_000).contains(&a));
    let spread: std::collections::BTreeSet<_> =
        (0..50).map(|i| s.jitter_of(T0 + i * SEC)).collect();
    assert!(spread.len() > 40, "slots get different delays: {spread:?}");
    let mut other = s.clone();
    other.name = "other".into();
    assert_ne!(
        (0..10).map(|i| s.jitter_of(T0 + i)).collect::<Vec<_>>(),
        (0..10).map(|i| other.jitter_of(T0 + i)).collect::<Vec<_>>()
    );
    // A slot is not due before its jittered time.
    let first = T0 + SEC;
    assert!(matches!(
        s.decide(s.fire_time(first) - 1, false),
        Decision::Idle { .. }
    ));
    assert!(matches!(
        s.decide(s.fire_time(first), false),
        Decision::Fire { .. }
    ));
}

#[test]
fn records_round_trip_and_versions_are_checked() {
    let mut s = every_second(Overlap::BufferOne);
    s.cadence = Cadence::Cron("0 7 * * *".into());
    s.last_run = Some((RunId::new_v7(), T0));
    assert_eq!(Schedule::decode(&s.encode()).unwrap(), s);
    let mut bad = s.encode();
    bad[0] = 9;
    assert!(Schedule::decode(&bad).unwrap_err().contains("version 9"));
}

#[test]
fn backfill_slots_are_bounded() {
    let s = every_second(Overlap::AllowAll);
    assert_eq!(
        s.slots_between(T0, T0 + 2 * SEC),
        vec![T0, T0 + SEC, T0 + 2 * SEC]
    );
    assert_eq!(
        s.slots_between(T0, T0 + 10_000 * SEC).len(),
        BACKFILL_SLOTS_MAX + 1
    );
}

#[test]
fn names_and_cadences_are_checked() {
    assert!(validate_name("nightly-report_v2.1").is_ok());
    assert!(validate_name("").is_err());
    assert!(validate_name("a/b").unwrap_err().contains("'/'"));
    assert!(validate_name(&"x".repeat(NAME_BYTES_MAX + 1)).is_err());
    assert!(Cadence::EveryMs(10).validate().is_err());
    assert!(Cadence::Cron("0 7 * *".into()).validate().is_err());
    assert!(Cadence::Cron("0 7 * * *".into()).validate().is_ok());
}
