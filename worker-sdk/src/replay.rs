//! Replay a recorded history against workflow code: the same commands, or a typed
//! nondeterminism error naming the seq, what the history has and what the code did.
//!
//! Use it in tests (golden histories), before deploying new workflow code (replay the
//! histories of open runs), and from the CLI. Histories are stored as protobuf
//! `GetHistoryResponse` bytes (`.binpb`), the form `GetHistory` returns.

use std::path::Path;
use std::sync::Arc;

use prost::Message;
use steadfast_proto::v1 as pb;

use crate::workflow::{self, Registry, WorkflowInstance};

/// Why a replay from a file did not run.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The file could not be read.
    #[error("cannot read history file {path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// The cause.
        source: std::io::Error,
    },
    /// The file is not a protobuf GetHistoryResponse.
    #[error("cannot decode history file {path}: {source}")]
    Decode {
        /// The file.
        path: String,
        /// The cause.
        source: prost::DecodeError,
    },
    /// The replay itself failed (nondeterminism, panic, ...).
    #[error(transparent)]
    Workflow(#[from] workflow::Error),
}

/// What a replay produced.
#[derive(Debug, Clone, PartialEq)]
pub struct ReplayOutcome {
    /// Commands the code issued that the history does not hold: what the next workflow
    /// task would send. Empty for a closed history replayed by matching code.
    pub commands: Vec<pb::Command>,
    /// The commands the history confirmed, in seq order.
    pub confirmed: Vec<pb::Command>,
    /// Whether the workflow returned.
    pub finished: bool,
    /// Polls of the workflow future (a cost measure).
    pub polls: u64,
}

/// Replays histories against the workflows of a [`Registry`].
#[derive(Clone, Debug)]
pub struct Replayer {
    registry: Arc<Registry>,
}

impl Replayer {
    /// A replayer for the workflows registered in `registry`.
    pub fn new(registry: Registry) -> Self {
        Replayer {
            registry: Arc::new(registry),
        }
    }

    /// A replayer over a registry shared with a worker.
    pub(crate) fn from_registry(registry: Arc<Registry>) -> Self {
        Replayer { registry }
    }

    /// The registry replayed against.
    pub(crate) fn registry(&self) -> Arc<Registry> {
        Arc::clone(&self.registry)
    }

    /// The workflow types it replays.
    pub fn workflow_types(&self) -> Vec<String> {
        self.registry.workflow_types()
    }

    /// Replays a whole history (from seq 1) of run `run_id`.
    pub fn replay_run(
        &self,
        run_id: &str,
        history: Vec<pb::HistoryEvent>,
    ) -> Result<ReplayOutcome, workflow::Error> {
        let mut instance = WorkflowInstance::new(Arc::clone(&self.registry), run_id);
        instance.record_commands();
        let commands = instance.activate(history)?;
        instance.finish_history()?;
        Ok(ReplayOutcome {
            commands,
            confirmed: instance.confirmed_commands().to_vec(),
            finished: instance.is_finished(),
            polls: instance.polls(),
        })
    }

    /// Replays a whole history; the run id seen by the code is "replay".
    pub fn replay(&self, history: Vec<pb::HistoryEvent>) -> Result<ReplayOutcome, workflow::Error> {
        self.replay_run("replay", history)
    }

    /// Replays a history stored in a `.binpb` file ([`load_history`]).
    pub fn replay_file(&self, path: impl AsRef<Path>) -> Result<ReplayOutcome, Error> {
        Ok(self.replay(load_history(path)?)?)
    }
}

/// Reads a history stored as protobuf `GetHistoryResponse` bytes.
pub fn load_history(path: impl AsRef<Path>) -> Result<Vec<pb::HistoryEvent>, Error> {
    let path = path.as_ref();
    let bytes = std::fs::read(path).map_err(|source| Error::Io {
        path: path.display().to_string(),
        source,
    })?;
    pb::GetHistoryResponse::decode(bytes.as_slice())
        .map(|r| r.events)
        .map_err(|source| Error::Decode {
            path: path.display().to_string(),
            source,
        })
}

/// Encodes a history as protobuf `GetHistoryResponse` bytes, the `.binpb` form.
pub fn encode_history(events: &[pb::HistoryEvent]) -> Vec<u8> {
    pb::GetHistoryResponse {
        events: events.to_vec(),
        next_seq: 0,
    }
    .encode_to_vec()
}
