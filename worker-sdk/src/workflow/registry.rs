//! [`Registry`]: workflow types by name, and the effects of the activities they call.

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;

use futures::future::LocalBoxFuture;
use serde::Serialize;
use serde::de::DeserializeOwned;
use steadfast_proto::v1 as pb;

use super::{WorkflowContext, WorkflowError};
use crate::{Effect, payload};

/// A type-erased workflow function: JSON payload in, JSON payload out.
pub(crate) type WorkflowFn = Arc<
    dyn Fn(
            WorkflowContext,
            Option<pb::Payload>,
        ) -> LocalBoxFuture<'static, Result<pb::Payload, WorkflowError>>
        + Send
        + Sync,
>;

/// Workflow types by name, plus the effect of each known activity type (filled into the
/// ScheduleActivity commands workflow code issues). The [`crate::Worker`] holds one; the
/// [`crate::replay::Replayer`] takes one.
#[derive(Clone)]
pub struct Registry {
    workflows: HashMap<String, WorkflowFn>,
    effects: Arc<HashMap<String, Effect>>,
    continue_as_new_after_events: u64,
}

/// The history length from which [`WorkflowContext::continue_as_new_suggested`] answers
/// true by default: 80% of the server's default `--history-events-max` (100,000), so a
/// workflow told to continue as new still has room to finish its step before the server's
/// soft limit (90%) refuses new activities, timers and signal waits.
pub const CONTINUE_AS_NEW_AFTER_EVENTS_DEFAULT: u64 = 80_000;

impl Default for Registry {
    fn default() -> Self {
        Registry {
            workflows: HashMap::new(),
            effects: Arc::default(),
            continue_as_new_after_events: CONTINUE_AS_NEW_AFTER_EVENTS_DEFAULT,
        }
    }
}

impl Registry {
    /// An empty registry.
    pub fn new() -> Self {
        Self::default()
    }

    /// From which history length (events, counted at the start of each workflow task)
    /// [`WorkflowContext::continue_as_new_suggested`] answers true. Default
    /// [`CONTINUE_AS_NEW_AFTER_EVENTS_DEFAULT`]; set it below 90% of the server's
    /// `--history-events-max` when that is not the default.
    ///
    /// The answer is derived from the history, not taken from the server's
    /// `continue_as_new_suggested` flag, because that flag is not recorded in the history: a
    /// replay of an older task could not know what it said then. Changing this value changes
    /// what the code decides, like a code change: runs that already read the answer may
    /// fail replay with `[STF-ND001]`.
    pub fn continue_as_new_after_events(&mut self, events: u64) -> &mut Self {
        self.continue_as_new_after_events = events;
        self
    }

    pub(crate) fn continue_as_new_threshold(&self) -> u64 {
        self.continue_as_new_after_events
    }

    /// Registers workflow type `name`: an async fn of a context and a JSON-decoded input.
    /// A later registration of the same name replaces the earlier one.
    pub fn register_workflow<I, O, F, Fut>(&mut self, name: impl Into<String>, f: F)
    where
        I: DeserializeOwned + 'static,
        O: Serialize + 'static,
        F: Fn(WorkflowContext, I) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<O, WorkflowError>> + 'static,
    {
        let name = name.into();
        let f = Arc::new(f);
        let erased: WorkflowFn = Arc::new(move |ctx, input: Option<pb::Payload>| {
            let decoded = payload::decode::<I>(input.as_ref());
            let f = Arc::clone(&f);
            Box::pin(async move {
                let input = decoded.map_err(|e| WorkflowError::Failed {
                    message: format!("cannot decode the workflow input: {e}"),
                    error_type: "steadfast.DecodeError".into(),
                })?;
                let output = f(ctx, input).await?;
                Ok(payload::encode(&output)?)
            })
        });
        self.workflows.insert(name, erased);
    }

    /// Declares the effect of activity type `name`, for activities implemented elsewhere
    /// (another worker, another language). Activities registered on a [`crate::Worker`]
    /// are declared by their registration.
    pub fn declare_activity_effect(&mut self, name: impl Into<String>, effect: Effect) {
        Arc::make_mut(&mut self.effects).insert(name.into(), effect);
    }

    /// The registered workflow type names.
    pub fn workflow_types(&self) -> Vec<String> {
        let mut types: Vec<String> = self.workflows.keys().cloned().collect();
        types.sort();
        types
    }

    /// Whether workflow type `name` is registered.
    pub fn has_workflow(&self, name: &str) -> bool {
        self.workflows.contains_key(name)
    }

    pub(crate) fn workflow(&self, name: &str) -> Option<&WorkflowFn> {
        self.workflows.get(name)
    }

    pub(crate) fn effects(&self) -> &Arc<HashMap<String, Effect>> {
        &self.effects
    }
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registry")
            .field("workflows", &self.workflow_types())
            .field("effects", &self.effects)
            .finish()
    }
}
