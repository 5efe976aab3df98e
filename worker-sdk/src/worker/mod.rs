//! The [`Worker`]: polls a task queue for workflow and activity tasks and runs them.
//!
//! Workflow tasks go to dedicated threads that own the (`!Send`) workflow instances in an
//! LRU cache; activities run as tokio tasks. Polls are long and bounded in number; when the
//! server is down the worker backs off and reconnects, and keeps going when it is back.
//!
//! ```no_run
//! use steadfast_sdk::activity::{ActivityContext, ActivityError};
//! use steadfast_sdk::worker::{Worker, WorkerOptions};
//! use steadfast_sdk::{Effect, WorkflowContext, WorkflowError};
//!
//! async fn greet(ctx: WorkflowContext, name: String) -> Result<String, WorkflowError> {
//!     Ok(ctx.activity::<String>("shout", &name).await?)
//! }
//! async fn shout(_: ActivityContext, s: String) -> Result<String, ActivityError> {
//!     Ok(s.to_uppercase())
//! }
//! # async fn demo() -> Result<(), steadfast_sdk::worker::Error> {
//! let mut worker = Worker::new("http://127.0.0.1:7233", WorkerOptions::new("default"));
//! worker.register_workflow("greet", greet);
//! worker.register_activity("shout", Effect::Read, shout);
//! worker.run().await // until ctrl-c
//! # }
//! ```

mod options;
mod pollers;
mod workflow_thread;

use std::future::Future;

use serde::Serialize;
use serde::de::DeserializeOwned;

pub use options::{CHECK_MODE_ENV, WorkerOptions};

use crate::activity::{Activities, ActivityContext, ActivityError, Effect};
use crate::client::{self, ClientConfig};
use crate::workflow::{Registry, WorkflowContext, WorkflowError};

/// Why a worker could not run.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Neither a workflow nor an activity is registered (in check mode: no workflow): there
    /// is nothing to poll for.
    #[error("nothing registered: register a workflow (check mode) or an activity before run()")]
    NothingRegistered,
    /// The build id (`WorkerOptions::build_id`, `STEADFAST_BUILD_ID`) is not a valid name
    /// (blank, or with control characters; the server also limits its length).
    #[error("build id {0:?} is not a valid name: give a non-blank id without control characters")]
    BadBuildId(String),
    /// The client configuration is unusable (e.g. a bad address).
    #[error(transparent)]
    Client(#[from] client::Error),
    /// A workflow thread could not be started.
    #[error("cannot start a workflow thread: {0}")]
    Thread(#[from] std::io::Error),
}

/// Whether the server can accept `build_id` as a name ("" = none); it checks the length.
fn build_id_ok(build_id: &str) -> bool {
    build_id.is_empty() || (!build_id.trim().is_empty() && !build_id.chars().any(char::is_control))
}

/// Runs registered workflows and activities for one task queue.
pub struct Worker {
    config: ClientConfig,
    options: WorkerOptions,
    workflows: Registry,
    activities: Activities,
}

impl Worker {
    /// A worker for the server of `client_config` (an address or a [`ClientConfig`]).
    /// Nothing connects before [`Worker::run`].
    pub fn new(client_config: impl Into<ClientConfig>, options: WorkerOptions) -> Self {
        let mut config = client_config.into();
        config.namespace = options.namespace.clone();
        config.identity = options.worker_id.clone();
        Worker {
            config,
            options,
            workflows: Registry::new(),
            activities: Activities::new(),
        }
    }

    /// Registers workflow type `name`. See [`Registry::register_workflow`].
    pub fn register_workflow<I, O, F, Fut>(&mut self, name: impl Into<String>, f: F) -> &mut Self
    where
        I: DeserializeOwned + 'static,
        O: Serialize + 'static,
        F: Fn(WorkflowContext, I) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<O, WorkflowError>> + 'static,
    {
        self.workflows.register_workflow(name, f);
        self
    }

    /// Registers activity type `name` with its `effect`. The effect is also what this
    /// worker's workflows put in every ScheduleActivity of `name`.
    pub fn register_activity<I, O, F, Fut>(
        &mut self,
        name: impl Into<String>,
        effect: Effect,
        f: F,
    ) -> &mut Self
    where
        I: DeserializeOwned + Send + 'static,
        O: Serialize + 'static,
        F: Fn(ActivityContext, I) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<O, ActivityError>> + Send + 'static,
    {
        let name = name.into();
        self.workflows.declare_activity_effect(name.clone(), effect);
        self.activities.register(name, effect, f);
        self
    }

    /// Every call of activity `name` (registered on this worker) waits for a human's
    /// approval before its first attempt runs (`steadfast run approve` / `run deny`); an
    /// approved call's retries do not ask again.
    pub fn require_approval(&mut self, name: impl Into<String>) -> &mut Self {
        self.activities.require_approval(name);
        self
    }

    /// Every call of each `write` activity registered on this worker waits for a human's
    /// approval before its first attempt runs.
    pub fn require_approval_for_writes(&mut self) -> &mut Self {
        self.activities.require_approval_for_writes(true);
        self
    }

    /// Declares the effect of an activity that runs elsewhere (another worker or
    /// language), for the ScheduleActivity commands of this worker's workflows.
    pub fn declare_activity_effect(
        &mut self,
        name: impl Into<String>,
        effect: Effect,
    ) -> &mut Self {
        self.workflows.declare_activity_effect(name, effect);
        self
    }

    /// From which history length workflow code is told to continue as new. See
    /// [`Registry::continue_as_new_after_events`].
    pub fn continue_as_new_after_events(&mut self, events: u64) -> &mut Self {
        self.workflows.continue_as_new_after_events(events);
        self
    }

    /// Mounts MCP server `server` as `name`: starts or connects to it, lists its tools and
    /// registers each as activity `mcp.<name>.<tool>`, with its effect and approval from the
    /// tool's annotations (see [`crate::mcp`]). Returns the mounted tools, e.g. for
    /// [`crate::mcp::Mounted::tool_specs`].
    #[cfg(feature = "mcp")]
    pub async fn mount_mcp(
        &mut self,
        name: &str,
        server: crate::mcp::McpServer,
    ) -> Result<crate::mcp::Mounted, crate::mcp::Error> {
        crate::mcp::mount(self, name, server).await
    }

    /// The registered activity types, sorted.
    pub fn activity_types(&self) -> Vec<String> {
        self.activities.names()
    }

    /// The registered workflows (e.g. for a [`crate::replay::Replayer`] of the same code).
    pub fn registry(&self) -> &Registry {
        &self.workflows
    }

    /// The worker id.
    pub fn worker_id(&self) -> &str {
        &self.options.worker_id
    }

    /// Runs until ctrl-c, then shuts down gracefully ([`Worker::run_until`]).
    pub async fn run(self) -> Result<(), Error> {
        self.run_until(async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await
    }

    /// Runs until `shutdown` resolves; then stops polling and waits (up to
    /// [`WorkerOptions::shutdown_timeout`]) for the tasks in flight to finish.
    pub async fn run_until(self, shutdown: impl Future<Output = ()>) -> Result<(), Error> {
        if self.workflows.workflow_types().is_empty() && self.activities.is_empty() {
            return Err(Error::NothingRegistered);
        }
        if !build_id_ok(&self.options.build_id) {
            let shown: String = self.options.build_id.chars().take(40).collect();
            return Err(Error::BadBuildId(shown));
        }
        pollers::run(
            self.config,
            self.options,
            self.workflows,
            self.activities,
            shutdown,
        )
        .await
    }
}

#[cfg(test)]
mod build_id_tests {
    #[test]
    fn blank_and_control_characters_are_refused_before_polling() {
        assert!(super::build_id_ok("") && super::build_id_ok("agent-2026.05.1"));
        assert!(!super::build_id_ok("  ") && !super::build_id_ok("a\nb"));
    }
}
