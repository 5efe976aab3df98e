//! [`WorkflowContext::upsert_search_attributes`]: a command recorded as
//! SearchAttributesUpserted, so a replay issues the same and finds it in the history.

use steadfast_proto::v1 as pb;
use steadfast_proto::v1::command::Command as Cmd;

use super::context::WorkflowContext;
use crate::search::{SearchValue, list_to_proto};

impl WorkflowContext {
    /// Sets search attributes of this run (values replace those of the same names; others
    /// stay), so that `run list --attr NAME=VALUE` finds it by them. Nothing to await: the
    /// attributes are recorded with this workflow task's commands. Deterministic like every
    /// command: on replay the same call matches the recorded event (same names and values),
    /// and a different one is nondeterminism. A bad name or value (see [`crate::search`]) is
    /// refused by the server with the task's completion (`INVALID_ARGUMENT`), as any bad
    /// command is.
    pub fn upsert_search_attributes<N: Into<String>>(
        &self,
        attrs: impl IntoIterator<Item = (N, SearchValue)>,
    ) {
        let attributes = list_to_proto(attrs);
        self.state().issue(Cmd::UpsertSearchAttributes(
            pb::UpsertSearchAttributesCommand { attributes },
        ));
    }
}
