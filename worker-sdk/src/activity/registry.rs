//! [`Activities`]: activity functions by name, each with its [`Effect`].

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::sync::Arc;

use futures::future::BoxFuture;
use serde::Serialize;
use serde::de::DeserializeOwned;
use steadfast_proto::v1 as pb;

use super::{ActivityContext, ActivityError, Effect};
use crate::payload;

/// A type-erased activity: JSON payload in, JSON payload out.
pub(crate) type ActivityFn = Arc<
    dyn Fn(
            ActivityContext,
            Option<pb::Payload>,
        ) -> BoxFuture<'static, Result<pb::Payload, ActivityError>>
        + Send
        + Sync,
>;

/// The activities a worker runs, by name.
#[derive(Clone, Default)]
pub struct Activities {
    map: HashMap<String, (Effect, ActivityFn)>,
    /// Types whose every call waits for a human's approval before it runs.
    approvals: HashSet<String>,
    /// Every `write` activity of this worker waits for approval.
    approve_writes: bool,
}

impl Activities {
    /// No activities.
    pub fn new() -> Self {
        Self::default()
    }

    /// Registers activity `name` with its `effect`: an async fn of a context and a
    /// JSON-decoded input. A later registration of the same name replaces the earlier one.
    pub fn register<I, O, F, Fut>(&mut self, name: impl Into<String>, effect: Effect, f: F)
    where
        I: DeserializeOwned + Send + 'static,
        O: Serialize + 'static,
        F: Fn(ActivityContext, I) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<O, ActivityError>> + Send + 'static,
    {
        let f = Arc::new(f);
        let erased: ActivityFn = Arc::new(move |ctx, input: Option<pb::Payload>| {
            let input = payload::decode::<I>(input.as_ref());
            let f = Arc::clone(&f);
            Box::pin(async move {
                let input = input.map_err(|e| {
                    ActivityError::non_retryable(format!("cannot decode the activity input: {e}"))
                        .with_type("steadfast.DecodeError")
                })?;
                let output = f(ctx, input).await?;
                payload::encode(&output).map_err(|e| {
                    ActivityError::non_retryable(format!("cannot encode the activity result: {e}"))
                        .with_type("steadfast.EncodeError")
                })
            })
        });
        self.map.insert(name.into(), (effect, erased));
    }

    /// Every call of activity `name` waits for a human's approval (`steadfast run approve`)
    /// before its first attempt runs: declared to the server when this worker polls.
    pub fn require_approval(&mut self, name: impl Into<String>) {
        self.approvals.insert(name.into());
    }

    /// Every call of each `write` activity of this worker waits for a human's approval.
    pub fn require_approval_for_writes(&mut self, on: bool) {
        self.approve_writes = on;
    }

    /// Whether calls of `name` wait for approval by this worker's declaration.
    pub fn requires_approval(&self, name: &str) -> bool {
        self.approvals.contains(name)
            || (self.approve_writes && self.map.get(name).is_some_and(|(e, _)| *e == Effect::Write))
    }

    /// The registered names, sorted.
    pub fn names(&self) -> Vec<String> {
        let mut names: Vec<String> = self.map.keys().cloned().collect();
        names.sort();
        names
    }

    /// The registered effects by name.
    pub fn effects(&self) -> impl Iterator<Item = (&str, Effect)> {
        self.map.iter().map(|(n, (e, _))| (n.as_str(), *e))
    }

    /// What a worker declares to the server when it polls: each activity with its effect,
    /// sorted by name.
    pub(crate) fn declarations(&self) -> Vec<pb::ActivityDeclaration> {
        let mut d: Vec<pb::ActivityDeclaration> = self
            .effects()
            .map(|(name, effect)| pb::ActivityDeclaration {
                activity_type: name.to_string(),
                effect: pb::Effect::from(effect) as i32,
                requires_approval: self.requires_approval(name),
            })
            .collect();
        d.sort_by(|a, b| a.activity_type.cmp(&b.activity_type));
        d
    }

    /// Whether nothing is registered.
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    pub(crate) fn get(&self, name: &str) -> Option<&ActivityFn> {
        self.map.get(name).map(|(_, f)| f)
    }
}

impl std::fmt::Debug for Activities {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_map().entries(self.effects()).finish()
    }
}
