//! The `deploy` workflow of the patching test (`tests/tests/patching.rs`), in the two versions
//! a deploy swaps: the test worker runs it (`--variant a` the old code, `--variant b` the
//! patched code), and the test replays recorded histories against the same code offline.
//!
//! `deploy` `{}`: one activity (`step`, returning 0, on the old branch; `other`, returning
//! 1000, on the new one), then waits for signal `go`; returns `{"branch", "label"}`.

use serde_json::{Value, json};
use steadfast_sdk::workflow::Registry;
use steadfast_sdk::{WorkflowContext, WorkflowError};

/// The workflow type.
pub const WORKFLOW: &str = "deploy";
/// The change id the patched code passes.
pub const PATCH_ID: &str = "deploy-label-v2";

/// Which code runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Version {
    /// Before the change: always `step`.
    Old,
    /// After it: `other` behind `ctx.patched(PATCH_ID)`, `step` for runs that predate it.
    Patched,
}

/// The workflow, as `version` of the code has it.
pub async fn deploy(
    ctx: WorkflowContext,
    _input: Value,
    version: Version,
) -> Result<Value, WorkflowError> {
    let step = json!({ "index": 0, "sleep_ms": 0 });
    let (branch, label) = if version == Version::Patched && ctx.patched(PATCH_ID) {
        ("new", ctx.activity::<u32>("other", &step).await?)
    } else {
        ("old", ctx.activity::<u32>("step", &step).await?)
    };
    let _go: Value = ctx.wait_signal("go").await?;
    Ok(json!({ "branch": branch, "label": label }))
}

/// A registry with `deploy` as `version` has it, for offline replay.
pub fn registry(version: Version) -> Registry {
    let mut r = Registry::new();
    r.register_workflow(WORKFLOW, move |ctx, input| deploy(ctx, input, version));
    r
}
