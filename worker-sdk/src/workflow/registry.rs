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
#[derive(Clone, Default)]
pub struct Registry {
    workflows: HashMap<String, WorkflowFn>,
    effects: Arc<HashMap<String, Effect>>,
}

impl Registry {
    /// An empty registry.
    pub fn new() -> Self {
        Self::default()
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
