//! Patching: changing workflow code while runs are in flight ([`WorkflowContext::patched`],
//! [`WorkflowContext::deprecate_patch`]).
//!
//! `patched(id)` must answer at once, while the code runs, yet the marker that says which
//! branch a run took is recorded *after* the task that passed it (in the task's command
//! block). So before the code is polled for a task whose completion the history already holds,
//! the instance looks ahead at that task's command block and hands the markers it holds to
//! the run's state ([`markers_by_task`], [`Patches::begin_task`]): a marker there means the
//! run took the new branch; none means the code that ran that task did not (old code), and
//! the run keeps the old branch. A task the history does not hold yet is live: new code takes
//! the new branch and records the marker.

use std::collections::{HashMap, HashSet};

use steadfast_proto::v1 as pb;
use steadfast_proto::v1::command::Command as Cmd;
use steadfast_proto::v1::history_event::Attributes as Ev;

use super::context::WorkflowContext;

/// The patch markers of each task whose completion `events` hold, keyed by the seq of the
/// task's WorkflowTaskStarted. Tasks without markers are left out; one pass, no allocation
/// for a history without markers.
pub(crate) fn markers_by_task(events: &[pb::HistoryEvent]) -> HashMap<u64, HashSet<String>> {
    let mut out: HashMap<u64, HashSet<String>> = HashMap::new();
    let mut block_of = None;
    for e in events {
        match &e.attributes {
            Some(Ev::WorkflowTaskCompleted(c)) => block_of = Some(c.started_seq),
            Some(Ev::WorkflowTaskStarted(_)) => block_of = None,
            Some(Ev::PatchMarker(m)) => {
                if let Some(task) = block_of {
                    out.entry(task).or_default().insert(m.patch_id.clone());
                }
            }
            _ => {}
        }
    }
    out
}

/// What the run has decided about its patches.
#[derive(Default)]
pub(crate) struct Patches {
    /// Change ids asked about, and whether this run takes the new branch. Decided once per
    /// run: later calls answer the same, whatever task they are in.
    decided: HashMap<String, bool>,
    /// The markers the history holds for the task being run, when the history holds its
    /// completion (a replay); `None` when the task is new (live).
    recorded: Option<HashSet<String>>,
    /// The ids decided by `patched` (not `deprecate_patch`): what an upgrade check reports,
    /// so the user knows when `deprecate_patch` is safe.
    asked: HashSet<String>,
}

impl Patches {
    /// The code is about to run a task: `Some(markers)` when the history holds the task's
    /// completion (the markers of its command block), `None` when it is live.
    pub(crate) fn begin_task(&mut self, recorded: Option<HashSet<String>>) {
        self.recorded = recorded;
    }

    /// The change ids `patched` decided, each with whether the run took the new branch, in
    /// id order.
    pub(crate) fn asked(&self) -> Vec<(String, bool)> {
        let mut out: Vec<(String, bool)> = self
            .asked
            .iter()
            .filter_map(|id| self.decided.get(id).map(|&take| (id.clone(), take)))
            .collect();
        out.sort();
        out
    }

    /// Whether the current task holds (replay) or will hold (live) a marker for `id`.
    fn marked_now(&self, id: &str) -> bool {
        self.recorded.as_ref().is_none_or(|m| m.contains(id))
    }
}

impl WorkflowContext {
    /// Whether this run takes the new branch of change `patch_id`: wrap changed code in
    /// `if ctx.patched("id") { new } else { old }` to deploy it while runs are in flight.
    ///
    /// - Live (the code passes this point for the first time): returns `true` and records a
    ///   `PatchMarker` (issues RecordPatch), so the run replays the new branch from then on.
    /// - Replaying a task whose history holds the marker: `true`.
    /// - Replaying a task whose history holds none (it was run by code without the patch):
    ///   `false`, so the run keeps the old branch.
    ///
    /// Decided once per run and id: later calls answer the same without recording again.
    /// `patch_id` follows the server's rules for names (non-empty, at most 256 bytes, no
    /// control characters); a bad one is refused with the task's completion and the run held.
    /// Once no open run predates the patch, switch to [`WorkflowContext::deprecate_patch`].
    pub fn patched(&self, patch_id: &str) -> bool {
        let mut state = self.state();
        if let Some(&take) = state.patches.decided.get(patch_id) {
            return take;
        }
        let take = state.patches.marked_now(patch_id);
        state.patches.decided.insert(patch_id.to_owned(), take);
        state.patches.asked.insert(patch_id.to_owned());
        if take {
            state.issue(Cmd::RecordPatch(pb::RecordPatchCommand {
                patch_id: patch_id.to_owned(),
            }));
        }
        take
    }

    /// The second step of retiring a patch: call it where `patched(patch_id)` was, keep only
    /// the new branch, once no open run took the old one. Runs that recorded the marker
    /// replay (it matches it); runs without one replay too (it records nothing there); new
    /// runs still record the marker, so that workers still running code with
    /// `patched(patch_id)` replay them on the new branch. Remove the call once no open run
    /// predates it.
    pub fn deprecate_patch(&self, patch_id: &str) {
        let mut state = self.state();
        if state.patches.decided.contains_key(patch_id) {
            return;
        }
        let record = state.patches.marked_now(patch_id);
        state.patches.decided.insert(patch_id.to_owned(), true);
        if record {
            state.issue(Cmd::RecordPatch(pb::RecordPatchCommand {
                patch_id: patch_id.to_owned(),
            }));
        }
    }
}
