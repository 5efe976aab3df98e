//! The upgrade check as a library call for CI ([`steadfast_sdk::check::check_bundles`]),
//! against golden bundles exported from a real server (`steadfast history export RUN -o F`):
//! `deploy_old_branch` was run by the code before a change (it scheduled `step`),
//! `deploy_new_branch` by the code with the change behind `ctx.patched` (a PatchMarker, then
//! `other`). Both wait for signal `go`. Each version of the code is checked against both: the
//! report names the run that does not replay, with the [STF-ND001] divergence, and counts the
//! runs on each branch of the patch.

use std::path::PathBuf;

use serde_json::{Value, json};
use steadfast_sdk::check::{CheckReport, Error, check_bundles, load_bundle};
use steadfast_sdk::replay::Replayer;
use steadfast_sdk::workflow::Registry;
use steadfast_sdk::{WorkflowContext, WorkflowError};

const PATCH_ID: &str = "deploy-label-v2";
const OLD_RUN: &str = "01a243a9-da9a-741b-855f-924307ffa13c";
const NEW_RUN: &str = "01a243a9-e6d9-71ab-85f6-088dbd99cc48";

#[derive(Clone, Copy, PartialEq)]
enum Version {
    /// Always `step`.
    Old,
    /// `other` behind `ctx.patched`.
    Patched,
    /// Only `other`, after `ctx.deprecate_patch`.
    Deprecated,
}

/// The `deploy` workflow of the cross-process tests (tests/src/deploy.rs), in three versions.
async fn deploy(ctx: WorkflowContext, _input: Value, v: Version) -> Result<Value, WorkflowError> {
    let step = json!({ "index": 0, "sleep_ms": 0 });
    let new = match v {
        Version::Old => false,
        Version::Patched => ctx.patched(PATCH_ID),
        Version::Deprecated => {
            ctx.deprecate_patch(PATCH_ID);
            true
        }
    };
    let label: u32 = if new {
        ctx.activity("other", &step).await?
    } else {
        ctx.activity("step", &step).await?
    };
    let _go: Value = ctx.wait_signal("go").await?;
    Ok(json!({ "label": label }))
}

fn replayer(v: Version) -> Replayer {
    let mut r = Registry::new();
    r.register_workflow("deploy", move |ctx, input| deploy(ctx, input, v));
    Replayer::new(r)
}

fn bundle(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/bundles")
        .join(format!("{name}.bundle"))
}

fn check(v: Version) -> CheckReport {
    check_bundles(
        &replayer(v),
        [bundle("deploy_old_branch"), bundle("deploy_new_branch")],
    )
    .expect("the golden bundles load")
}

#[test]
fn the_patched_code_replays_both_and_says_the_patch_must_stay() {
    let r = check(Version::Patched);
    assert!(r.is_clean(), "{r}");
    let t = &r.workflow_types["deploy"];
    assert_eq!((t.runs, t.clean), (2, 2));
    let p = r.patches[PATCH_ID];
    // One open run took the old branch: deprecate_patch is not safe yet.
    assert_eq!((p.runs_with_marker, p.runs_without_marker), (1, 1), "{r}");
}

#[test]
fn the_old_code_cannot_replay_the_patched_run_and_is_told_where() {
    let r = check(Version::Old);
    assert_eq!(r.diverged(), 1, "{r}");
    let t = &r.workflow_types["deploy"];
    assert_eq!((t.runs, t.clean), (2, 1));
    let d = &t.diverged[0];
    assert_eq!(d.run_id, NEW_RUN);
    assert_eq!(d.seq, 1);
    assert!(d.history.contains("PatchMarker"), "{d:?}");
    assert!(d.code.contains("step"), "{d:?}");
    assert!(d.message.starts_with("[STF-ND001]"), "{d:?}");
    // The old code asks no patch.
    assert!(r.patches.is_empty());
}

#[test]
fn deprecating_the_patch_too_early_is_caught_on_the_old_run() {
    let r = check(Version::Deprecated);
    let t = &r.workflow_types["deploy"];
    assert_eq!((t.runs, t.clean), (2, 1), "{r}");
    assert_eq!(t.diverged[0].run_id, OLD_RUN);
    assert!(
        t.diverged[0].history.contains("step"),
        "{:?}",
        t.diverged[0]
    );
    // deprecate_patch is not `patched`: nothing to report about it.
    assert!(r.patches.is_empty());
}

#[test]
fn a_cut_or_altered_bundle_is_refused_not_reported() {
    let dir = tempfile::tempdir().unwrap();
    let text = std::fs::read_to_string(bundle("deploy_old_branch")).unwrap();
    let (run, events) = load_bundle(&bundle("deploy_old_branch")).unwrap();
    assert_eq!((run.as_str(), events.len()), (OLD_RUN, 11));

    let cut = dir.path().join("cut.bundle");
    let lines: Vec<&str> = text.lines().collect();
    std::fs::write(&cut, lines[..lines.len() - 1].join("\n")).unwrap();
    let err = check_bundles(&replayer(Version::Patched), [&cut]).unwrap_err();
    assert!(
        matches!(err, Error::Bundle { .. }) && err.to_string().contains("cut"),
        "{err}"
    );

    let newer = dir.path().join("newer.bundle");
    std::fs::write(
        &newer,
        text.replace("\"steadfast_bundle\":1", "\"steadfast_bundle\":9"),
    )
    .unwrap();
    let err = load_bundle(&newer).unwrap_err().to_string();
    assert!(err.contains("newer"), "{err}");

    let missing = dir.path().join("missing.bundle");
    assert!(matches!(load_bundle(&missing), Err(Error::Io { .. })));
}
