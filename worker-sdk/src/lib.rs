//! Steadfast worker SDK: what users link to run durable workflows and activities.
//!
//! - [`workflow`]: the deterministic workflow executor and its [`WorkflowContext`].
//! - [`replay`]: replay a recorded history against workflow code (upgrade checks, tests).
//! - [`activity`]: activities, their context, effects and errors.
//! - [`testing`]: build histories in code, the way the server would record them.
//! - [`worker`]: the [`Worker`] that polls a task queue and runs both.
//! - [`client`]: the [`Client`] that starts runs and follows them.
//! - [`llm`]: LLM calls as activities, with usage and cost.
//! - `mcp` (cargo feature `mcp`): MCP servers' tools as activities.
//!
//! The SDK depends only on the `steadfast.v1` protobuf contract, never on the engine.
#![warn(missing_docs)]

pub mod activity;
mod backoff;
pub mod check;
pub mod client;
pub mod llm;
#[cfg(feature = "mcp")]
pub mod mcp;
pub mod payload;
pub mod replay;
pub mod search;
pub mod testing;
pub mod worker;
pub mod workflow;

pub use activity::{ActivityContext, ActivityError, Effect};
pub use client::{Client, StartOptions};
pub use worker::{Worker, WorkerOptions};
pub use workflow::{WorkflowContext, WorkflowError};
