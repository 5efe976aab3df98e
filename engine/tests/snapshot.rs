//! Pins the storage format: the encoding of every event kind, the record layout, the
//! discriminants and the hash chain of fixed, known histories.
//!
//! The golden files in `tests/golden/` hold, for each history, the genesis hash and per record
//! its seq, kind, chain hash and encoded bytes (hex). The test fails on any change to the
//! attrs encoding, a discriminant, the record layout or the chain rule.
//!
//! Regenerate with `UPDATE_GOLDEN=1 cargo test -p steadfast-engine --test snapshot`. Doing so
//! is a storage format change: records already on disk were written in the old format, so it
//! needs a record version bump (`RECORD_VERSION` in `event/codec.rs`, or a new chain domain
//! string in `event/chain.rs`) and a reader for the old version. The golden bytes must keep
//! decoding and verifying (see `golden_records_still_decode_and_verify`): only ever add
//! golden files, never rewrite ones that describe a released format.

use std::collections::BTreeSet;

use steadfast_engine::event::*;
use steadfast_engine::payload::Hash;
use steadfast_engine::state::RunState;

#[path = "snapshot/histories_approvals.rs"]
mod histories_approvals;
#[path = "snapshot/histories_builds.rs"]
mod histories_builds;
#[path = "snapshot/histories_core.rs"]
mod histories_core;
#[path = "snapshot/histories_family.rs"]
mod histories_family;
#[path = "snapshot/histories_search.rs"]
mod histories_search;
#[path = "snapshot/history.rs"]
mod history;

use histories_family::histories;

#[test]
fn histories_are_legal_and_cover_every_kind() {
    let mut seen = BTreeSet::new();
    for h in histories() {
        let records = h.records();
        let state = RunState::from_history(h.key.clone(), &records)
            .unwrap_or_else(|e| panic!("{}: {e}", h.name));
        assert_eq!(state.status, h.status, "{}", h.name);
        chain::verify(&h.key, genesis_hash(&h.key), 1, &records).unwrap();
        seen.extend(records.iter().map(|r| r.event.kind() as u16));
    }
    let all: BTreeSet<u16> = EventKind::ALL.iter().map(|k| *k as u16).collect();
    let missing: Vec<_> = all
        .difference(&seen)
        .filter_map(|v| EventKind::from_u16(*v))
        .collect();
    assert!(
        missing.is_empty(),
        "the golden histories must hold every event kind; missing {missing:?}"
    );
}

#[test]
fn encoding_matches_golden_files() {
    let update = std::env::var_os("UPDATE_GOLDEN").is_some_and(|v| v == "1");
    let mut failures = Vec::new();
    for h in histories() {
        let path = h.golden_path();
        let now = h.render();
        if update {
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(&path, &now).unwrap();
            eprintln!("wrote {}", path.display());
            continue;
        }
        let golden = std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("{}: {e} (create it with UPDATE_GOLDEN=1)", path.display()));
        if golden != now {
            let first = golden
                .lines()
                .zip(now.lines())
                .find(|(g, n)| g != n)
                .map(|(g, n)| format!("\n  golden: {g}\n  now:    {n}"))
                .unwrap_or_else(|| "\n  (line count differs)".into());
            failures.push(format!("{}: first difference{first}", path.display()));
        }
    }
    assert!(
        failures.is_empty(),
        "the storage format changed (encoding, a discriminant or the chain rule). If that is \
         deliberate, bump the record version, keep reading the old one, and regenerate with \
         UPDATE_GOLDEN=1.\n{}",
        failures.join("\n")
    );
}

/// A golden file, parsed: the run, its genesis and `(seq, kind name, hash, record bytes)`.
type GoldenRecord = (u64, String, Hash, Vec<u8>);

fn parse_golden(text: &str) -> (String, Hash, Vec<GoldenRecord>) {
    let mut run = None;
    let mut genesis = None;
    let mut records = Vec::new();
    let hash = |s: &str| -> Hash { hex::decode(s).unwrap().try_into().unwrap() };
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let parts: Vec<&str> = line.split(' ').collect();
        match parts[..] {
            ["run", k] => run = Some(k.to_string()),
            ["genesis", g] => genesis = Some(hash(g)),
            [seq, kind, h, bytes] => records.push((
                seq.parse().unwrap(),
                kind.to_string(),
                hash(h),
                hex::decode(bytes).unwrap(),
            )),
            _ => panic!("bad golden line {line:?}"),
        }
    }
    (run.unwrap(), genesis.unwrap(), records)
}

/// Bytes on disk stay readable: the golden records decode to the same events and their chain
/// verifies, independently of how this build would encode them.
#[test]
fn golden_records_still_decode_and_verify() {
    for h in histories() {
        let text = std::fs::read_to_string(h.golden_path()).unwrap();
        let (run, genesis, golden) = parse_golden(&text);
        assert_eq!(run, h.key.to_string());
        assert_eq!(
            genesis,
            genesis_hash(&h.key),
            "{}: the genesis rule changed",
            h.name
        );
        let expected = h.records();
        assert_eq!(golden.len(), expected.len(), "{}", h.name);
        let mut prev = genesis;
        let mut decoded_records = Vec::new();
        for ((seq, kind, hash, bytes), want) in golden.iter().zip(&expected) {
            let d = decode_record(bytes).unwrap_or_else(|e| panic!("{} seq {seq}: {e}", h.name));
            assert_eq!(d.key, h.key);
            assert_eq!(&d.record, want, "{} seq {seq}", h.name);
            assert_eq!(
                (d.record.seq, d.record.event.kind().name(), d.record.hash),
                (*seq, kind.as_str(), *hash)
            );
            assert!(
                d.verifies_after(&prev),
                "{} seq {seq} does not verify",
                h.name
            );
            prev = *hash;
            decoded_records.push(d.record);
        }
        assert_eq!(
            chain::verify(&h.key, genesis, 1, &decoded_records),
            Ok(prev)
        );
    }
}

/// Discriminants are stored and sent on the wire: renumbering one corrupts every history.
/// New kinds get new numbers; removed ones stay reserved here forever.
#[test]
fn event_kind_discriminants_are_pinned() {
    use EventKind as K;
    let table: &[(K, &str, u16)] = &[
        (K::RunStarted, "RunStarted", 1),
        (K::WorkflowTaskScheduled, "WorkflowTaskScheduled", 10),
        (K::WorkflowTaskStarted, "WorkflowTaskStarted", 11),
        (K::WorkflowTaskCompleted, "WorkflowTaskCompleted", 12),
        (K::WorkflowTaskFailed, "WorkflowTaskFailed", 13),
        (K::WorkflowTaskTimedOut, "WorkflowTaskTimedOut", 14),
        (K::ActivityScheduled, "ActivityScheduled", 20),
        (K::ActivityStarted, "ActivityStarted", 21),
        (K::ActivityCompleted, "ActivityCompleted", 22),
        (K::ActivityFailed, "ActivityFailed", 23),
        (K::ActivityTimedOut, "ActivityTimedOut", 24),
        (K::ActivityCancelRequested, "ActivityCancelRequested", 25),
        (K::ActivityCancelled, "ActivityCancelled", 26),
        (K::ActivityOutcomeUnknown, "ActivityOutcomeUnknown", 27),
        (K::ActivityReconciled, "ActivityReconciled", 28),
        (K::ActivityProgress, "ActivityProgress", 29),
        (K::TimerStarted, "TimerStarted", 30),
        (K::TimerFired, "TimerFired", 31),
        (K::TimerCancelled, "TimerCancelled", 32),
        (K::SignalWaitStarted, "SignalWaitStarted", 40),
        (K::SignalReceived, "SignalReceived", 41),
        (K::ProgressReported, "ProgressReported", 50),
        (K::PartialResultRecorded, "PartialResultRecorded", 51),
        (K::CancelRequested, "CancelRequested", 60),
        (K::BudgetUpdated, "BudgetUpdated", 61),
        (K::BudgetExceeded, "BudgetExceeded", 62),
        (K::ActivityUsageReported, "ActivityUsageReported", 63),
        (K::RunCompleted, "RunCompleted", 70),
        (K::RunFailed, "RunFailed", 71),
        (K::RunCancelled, "RunCancelled", 72),
        (K::RunTerminated, "RunTerminated", 73),
        (K::RunTimedOut, "RunTimedOut", 74),
        (K::RunContinuedAsNew, "RunContinuedAsNew", 75),
        (K::ChildRunRequested, "ChildRunRequested", 80),
        (K::ChildRunStarted, "ChildRunStarted", 81),
        (K::ChildRunStartFailed, "ChildRunStartFailed", 82),
        (K::ChildRunClosed, "ChildRunClosed", 83),
        (K::RunSignalRequested, "RunSignalRequested", 84),
        (K::RunSignalResolved, "RunSignalResolved", 85),
        (K::PatchMarker, "PatchMarker", 90),
        (K::UpdateRequested, "UpdateRequested", 91),
        (K::UpdateCompleted, "UpdateCompleted", 92),
        (K::UpdateRejected, "UpdateRejected", 93),
        (K::VersioningSet, "VersioningSet", 100),
        (K::BuildPinned, "BuildPinned", 101),
        (K::SearchAttributesUpserted, "SearchAttributesUpserted", 110),
        (K::MemoRecorded, "MemoRecorded", 111),
        (K::ApprovalRequested, "ApprovalRequested", 120),
        (K::ActivityApproved, "ActivityApproved", 121),
        (K::ActivityDenied, "ActivityDenied", 122),
    ];
    assert_eq!(
        EventKind::ALL.len(),
        table.len(),
        "a kind was added or removed: add it to this table (and the golden histories) with a new number"
    );
    for &(kind, name, code) in table {
        assert_eq!(kind as u16, code, "{name} was renumbered");
        assert_eq!(kind.name(), name);
        assert_eq!(EventKind::from_u16(code), Some(kind));
    }
    let codes: BTreeSet<u16> = table.iter().map(|t| t.2).collect();
    assert_eq!(codes.len(), table.len(), "discriminants are unique");
    for v in 0..=u16::MAX {
        if !codes.contains(&v) {
            assert_eq!(EventKind::from_u16(v), None, "{v} is not a kind");
        }
    }
}

/// The small enums inside attributes are stored by number too.
#[test]
fn attribute_enum_discriminants_are_pinned() {
    fn code<T: serde::Serialize>(v: &T) -> Vec<u8> {
        rmp_serde::to_vec(v).unwrap()
    }
    let cases: &[(&str, Vec<u8>, u8)] = &[
        ("Effect::Read", code(&Effect::Read), 1),
        ("Effect::Idempotent", code(&Effect::Idempotent), 2),
        ("Effect::Write", code(&Effect::Write), 3),
        ("BudgetDimension::Tokens", code(&BudgetDimension::Tokens), 1),
        ("BudgetDimension::Cost", code(&BudgetDimension::Cost), 2),
        (
            "BudgetDimension::Activities",
            code(&BudgetDimension::Activities),
            3,
        ),
        (
            "BudgetDimension::Duration",
            code(&BudgetDimension::Duration),
            4,
        ),
        (
            "WorkflowTaskFailCause::Unspecified",
            code(&WorkflowTaskFailCause::Unspecified),
            0,
        ),
        (
            "WorkflowTaskFailCause::Nondeterminism",
            code(&WorkflowTaskFailCause::Nondeterminism),
            1,
        ),
        (
            "WorkflowTaskFailCause::WorkflowPanic",
            code(&WorkflowTaskFailCause::WorkflowPanic),
            2,
        ),
        (
            "WorkflowTaskFailCause::UnknownWorkflowType",
            code(&WorkflowTaskFailCause::UnknownWorkflowType),
            3,
        ),
        (
            "WorkflowTaskFailCause::BadCommand",
            code(&WorkflowTaskFailCause::BadCommand),
            4,
        ),
        (
            "TimeoutKind::StartToClose",
            code(&TimeoutKind::StartToClose),
            1,
        ),
        (
            "TimeoutKind::ScheduleToClose",
            code(&TimeoutKind::ScheduleToClose),
            2,
        ),
        ("TimeoutKind::Heartbeat", code(&TimeoutKind::Heartbeat), 3),
        (
            "ReconcileDecision::Retry",
            code(&ReconcileDecision::Retry),
            1,
        ),
        (
            "ParentClosePolicy::Cancel",
            code(&ParentClosePolicy::Cancel),
            1,
        ),
        (
            "ParentClosePolicy::Terminate",
            code(&ParentClosePolicy::Terminate),
            2,
        ),
        (
            "ParentClosePolicy::Abandon",
            code(&ParentClosePolicy::Abandon),
            3,
        ),
        ("ChildOutcome::Completed", code(&ChildOutcome::Completed), 1),
        ("ChildOutcome::Failed", code(&ChildOutcome::Failed), 2),
        ("ChildOutcome::Cancelled", code(&ChildOutcome::Cancelled), 3),
        (
            "ChildOutcome::Terminated",
            code(&ChildOutcome::Terminated),
            4,
        ),
        ("ChildOutcome::TimedOut", code(&ChildOutcome::TimedOut), 5),
        (
            "ChildOutcome::ContinuedAsNew",
            code(&ChildOutcome::ContinuedAsNew),
            6,
        ),
    ];
    for (name, got, want) in cases {
        // A positive fixint is the number itself, one byte.
        assert_eq!(got, &vec![*want], "{name} was renumbered");
    }
}
