//! Checking workflow code against runs in flight, before it is deployed: replay each run's
//! history against the registered workflows and report, per workflow type, how many replay
//! cleanly and, for each that diverges, the first divergence ([STF-ND001]: the command seq,
//! what the history has, what the code did); and, per `ctx.patched` change id, how many runs
//! took each branch (so you know when `deprecate_patch` is safe).
//!
//! Two ways in: a worker started in check mode ([`crate::WorkerOptions::check_mode`], or
//! `STEADFAST_CHECK_MODE=1`) answers `steadfast workflow check --task-queue Q` with the open
//! runs the server hands it; in CI, [`check_bundles`] replays exported bundles
//! (`steadfast history export RUN -o FILE`, docs/bundle.md) with no server.
//!
//! ```no_run
//! use steadfast_sdk::check::check_bundles;
//! use steadfast_sdk::replay::Replayer;
//! use steadfast_sdk::workflow::{Registry, WorkflowContext, WorkflowError};
//!
//! // The same registrations as the worker being deployed.
//! async fn greet(_ctx: WorkflowContext, name: String) -> Result<String, WorkflowError> {
//!     Ok(format!("hello {name}"))
//! }
//! let mut registry = Registry::new();
//! registry.register_workflow("greet", greet);
//!
//! let report = check_bundles(&Replayer::new(registry), ["tests/bundles/open-run.bundle"])?;
//! assert!(report.is_clean(), "{report}");
//! # Ok::<(), steadfast_sdk::check::Error>(())
//! ```

use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;

use prost::Message;
use steadfast_proto::v1 as pb;
use steadfast_proto::v1::history_event::Attributes;

use crate::replay::Replayer;
use crate::workflow::{self, WorkflowInstance};

/// Diverging runs listed per workflow type in a report; the rest are counted.
pub const DIVERGED_LISTED_MAX: usize = 100;
/// The newest bundle format version this SDK reads.
pub const BUNDLE_VERSION: u64 = 1;

/// Why a check did not run.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A bundle could not be read.
    #[error("cannot read bundle {path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// The cause.
        source: std::io::Error,
    },
    /// A file is not a bundle this SDK reads, or was cut or altered.
    #[error("{path}: {reason}")]
    Bundle {
        /// The file.
        path: String,
        /// What is wrong, and how to fix it.
        reason: String,
    },
}

/// The first divergence of one run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Divergence {
    /// The run.
    pub run_id: String,
    /// The command seq where history and code part ways; 0 when the replay failed otherwise
    /// (a panic, an unregistered type, a history that could not be read).
    pub seq: u32,
    /// What the history has at `seq`.
    pub history: String,
    /// What the code did at `seq`.
    pub code: String,
    /// The whole error, with its stable code.
    pub message: String,
}

impl Divergence {
    /// The divergence of `run_id` that `error` describes.
    pub fn of(run_id: &str, error: &workflow::Error) -> Divergence {
        let (seq, history, code) = match error {
            workflow::Error::Nondeterminism { seq, history, code } => {
                (*seq, history.clone(), code.clone())
            }
            _ => (0, String::new(), String::new()),
        };
        Divergence {
            run_id: run_id.to_owned(),
            seq,
            history,
            code,
            message: error.to_string(),
        }
    }
}

/// One workflow type's result.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TypeCheck {
    /// Runs replayed.
    pub runs: u64,
    /// Runs that replayed with the same commands to the end of their history.
    pub clean: u64,
    /// The first [`DIVERGED_LISTED_MAX`] runs that did not.
    pub diverged: Vec<Divergence>,
}

/// How the runs that passed one `ctx.patched(id)` went.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PatchCheck {
    /// Runs that took the new branch (their history holds the marker, or they pass the point
    /// on this code for the first time).
    pub runs_with_marker: u64,
    /// Runs that took the old branch: `deprecate_patch` is safe once this is 0.
    pub runs_without_marker: u64,
}

/// What a check found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CheckReport {
    /// Per workflow type (every registered type, with 0 runs when none was checked).
    pub workflow_types: BTreeMap<String, TypeCheck>,
    /// Per change id asked with `ctx.patched` during the replays.
    pub patches: BTreeMap<String, PatchCheck>,
}

impl CheckReport {
    /// An empty report listing `types`.
    pub fn for_types(types: impl IntoIterator<Item = String>) -> CheckReport {
        CheckReport {
            workflow_types: types
                .into_iter()
                .map(|t| (t, TypeCheck::default()))
                .collect(),
            patches: BTreeMap::new(),
        }
    }

    /// Runs that did not replay, over all types.
    pub fn diverged(&self) -> u64 {
        self.workflow_types.values().map(|t| t.runs - t.clean).sum()
    }

    /// Whether every run replayed cleanly.
    pub fn is_clean(&self) -> bool {
        self.diverged() == 0
    }

    /// Adds one run's replay: `Ok` with the run's patch decisions, or the error.
    pub fn add(
        &mut self,
        run_id: &str,
        workflow_type: &str,
        outcome: Result<Vec<(String, bool)>, workflow::Error>,
    ) {
        let t = self
            .workflow_types
            .entry(workflow_type.to_owned())
            .or_default();
        t.runs += 1;
        match outcome {
            Ok(patches) => {
                t.clean += 1;
                for (id, took_new) in patches {
                    let p = self.patches.entry(id).or_default();
                    if took_new {
                        p.runs_with_marker += 1;
                    } else {
                        p.runs_without_marker += 1;
                    }
                }
            }
            Err(e) => {
                if t.diverged.len() < DIVERGED_LISTED_MAX {
                    t.diverged.push(Divergence::of(run_id, &e));
                }
            }
        }
    }

    /// The report as the wire has it (`RespondCheckTask`).
    pub fn to_proto(&self, worker_id: &str, runs_not_checked: u64) -> pb::CheckReport {
        pb::CheckReport {
            worker_id: worker_id.to_owned(),
            workflow_types: self
                .workflow_types
                .iter()
                .map(|(ty, t)| pb::WorkflowTypeCheck {
                    workflow_type: ty.clone(),
                    runs: t.runs,
                    clean: t.clean,
                    diverged: t
                        .diverged
                        .iter()
                        .map(|d| pb::RunDivergence {
                            run_id: d.run_id.clone(),
                            seq: d.seq,
                            history: d.history.clone(),
                            code: d.code.clone(),
                            message: d.message.clone(),
                        })
                        .collect(),
                })
                .collect(),
            patches: self
                .patches
                .iter()
                .map(|(id, p)| pb::PatchCheck {
                    patch_id: id.clone(),
                    runs_with_marker: p.runs_with_marker,
                    runs_without_marker: p.runs_without_marker,
                })
                .collect(),
            runs_not_checked,
        }
    }
}

impl fmt::Display for CheckReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (ty, t) in &self.workflow_types {
            writeln!(
                f,
                "{ty}: {} runs, {} replay cleanly, {} diverge",
                t.runs,
                t.clean,
                t.runs - t.clean
            )?;
            for d in &t.diverged {
                writeln!(f, "  {}: {}", d.run_id, d.message)?;
            }
        }
        for (id, p) in &self.patches {
            writeln!(
                f,
                "patch {id}: {} runs with the marker, {} without",
                p.runs_with_marker, p.runs_without_marker
            )?;
        }
        Ok(())
    }
}

/// The workflow type a history's RunStarted names ("" when it has none).
pub fn workflow_type_of(events: &[pb::HistoryEvent]) -> String {
    match events.first().and_then(|e| e.attributes.as_ref()) {
        Some(Attributes::RunStarted(s)) => s.workflow_type.clone(),
        _ => String::new(),
    }
}

impl Replayer {
    /// Replays run `run_id`'s whole history for a check: `Ok` with the patch decisions the
    /// code made (change id, took the new branch), or the first divergence as an error.
    pub fn check_run(
        &self,
        run_id: &str,
        history: Vec<pb::HistoryEvent>,
    ) -> Result<Vec<(String, bool)>, workflow::Error> {
        let mut instance = WorkflowInstance::new(self.registry(), run_id);
        instance.activate(history)?;
        instance.finish_history()?;
        Ok(instance.patch_decisions())
    }

    /// Checks `runs` (run id, whole history) against the registered workflows.
    pub fn check<I>(&self, runs: I) -> CheckReport
    where
        I: IntoIterator<Item = (String, Vec<pb::HistoryEvent>)>,
    {
        let mut report = CheckReport::for_types(self.workflow_types());
        for (run_id, events) in runs {
            let ty = workflow_type_of(&events);
            let outcome = self.check_run(&run_id, events);
            report.add(&run_id, &ty, outcome);
        }
        report
    }
}

/// Replays exported bundles (docs/bundle.md) against the workflows of `replayer` and reports
/// per type. A file that is not a whole bundle is an error (nothing is reported); a run that
/// does not replay is in the report.
pub fn check_bundles<P: AsRef<Path>>(
    replayer: &Replayer,
    paths: impl IntoIterator<Item = P>,
) -> Result<CheckReport, Error> {
    let mut runs = Vec::new();
    for path in paths {
        runs.push(load_bundle(path.as_ref())?);
    }
    Ok(replayer.check(runs))
}

/// Reads a bundle: its run id and its events. The header's version, run, event count and last
/// hash are checked (a cut, padded or newer file is refused); the hash chain itself is
/// checked by `steadfast history replay --file` and `history import`.
pub fn load_bundle(path: &Path) -> Result<(String, Vec<pb::HistoryEvent>), Error> {
    let shown = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|source| Error::Io {
        path: shown.clone(),
        source,
    })?;
    let bad = |reason: String| Error::Bundle {
        path: shown.clone(),
        reason,
    };
    let mut lines = text.lines().filter(|l| !l.trim().is_empty());
    let header: serde_json::Value = lines
        .next()
        .and_then(|l| serde_json::from_str(l).ok())
        .ok_or_else(|| bad("line 1 is not a bundle header; write bundles with `steadfast history export RUN -o FILE`".into()))?;
    let version = header
        .get("steadfast_bundle")
        .and_then(serde_json::Value::as_u64)
        .ok_or_else(|| bad("no \"steadfast_bundle\" version in the header".into()))?;
    if version > BUNDLE_VERSION {
        return Err(bad(format!(
            "bundle version {version} is newer than this SDK reads ({BUNDLE_VERSION}); upgrade it"
        )));
    }
    let run_id = header
        .get("run_id")
        .and_then(serde_json::Value::as_str)
        .ok_or_else(|| bad("no \"run_id\" in the header".into()))?
        .to_owned();
    let mut events = Vec::new();
    for (i, line) in lines.enumerate() {
        let at = i + 2;
        let v: serde_json::Value =
            serde_json::from_str(line).map_err(|e| bad(format!("line {at}: not JSON: {e}")))?;
        if v.get("run_id").and_then(serde_json::Value::as_str) != Some(run_id.as_str()) {
            return Err(bad(format!(
                "line {at}: an event of another run than the header's"
            )));
        }
        let wire = v
            .get("wire")
            .and_then(serde_json::Value::as_str)
            .ok_or_else(|| bad(format!("line {at}: no \"wire\" field")))?;
        let bytes =
            hex::decode(wire).map_err(|e| bad(format!("line {at}: \"wire\" is not hex: {e}")))?;
        let e = pb::HistoryEvent::decode(bytes.as_slice())
            .map_err(|e| bad(format!("line {at}: \"wire\" is not a HistoryEvent: {e}")))?;
        if e.seq != events.len() as u64 + 1 {
            return Err(bad(format!(
                "line {at}: seq {} where {} was due",
                e.seq,
                events.len() + 1
            )));
        }
        events.push(e);
    }
    let count = header.get("events").and_then(serde_json::Value::as_u64);
    if count != Some(events.len() as u64) {
        return Err(bad(format!(
            "the header says {} events, the file holds {}: it was cut or added to",
            count.map_or("no".into(), |c| c.to_string()),
            events.len()
        )));
    }
    let last = events
        .last()
        .map(|e| hex::encode(&e.hash))
        .unwrap_or_default();
    if header.get("last_hash").and_then(serde_json::Value::as_str) != Some(last.as_str()) {
        return Err(bad(
            "the last event's hash is not the one the header names: the file was altered".into(),
        ));
    }
    Ok((run_id, events))
}
