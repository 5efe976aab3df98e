//! Steadfast worker SDK: what users link to run durable workflows and activities.
//!
//! - [`workflow`]: the deterministic workflow executor and its [`WorkflowContext`].
//! - [`replay`]: replay a recorded history against workflow code (upgrade checks, tests).
//! - [`activity`]: activities, their context, effects and errors.
//! - [`testing`]: build histories in code, the way the server would record them.
//!
//! The SDK depends only on the `steadfast.v1` protobuf contract, never on the engine.
#![warn(missing_docs)]

pub mod activity;
mod backoff;
pub mod client;
pub mod llm;
pub mod payload;
pub mod replay;
pub mod testing;
pub mod worker;
pub mod workflow;

pub use activity::{ActivityError, Effect};
pub use workflow::{WorkflowContext, WorkflowError};
