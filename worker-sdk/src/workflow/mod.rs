//! The deterministic workflow executor.
//!
//! A workflow is an async fn `async fn(WorkflowContext, I) -> Result<O, WorkflowError>`
//! (I and O serde types, carried as JSON). The SDK drives it with a small single-threaded
//! executor ([`WorkflowInstance`]): no tokio, no I/O, no clock and no OS randomness inside;
//! everything comes from the [`WorkflowContext`], and so from the history.
//!
//! Glossary, as in sdk-core: a *history event* is a recorded fact; a *command* is what the
//! code asks for; an *activation* applies a batch of events and polls the code until it
//! blocks; its *completion* is the commands issued that the history does not hold yet.
//!
//! ```no_run
//! use std::time::Duration;
//! use steadfast_sdk::workflow::{WorkflowContext, WorkflowError};
//!
//! async fn triage(ctx: WorkflowContext, ticket: String) -> Result<String, WorkflowError> {
//!     let label: String = ctx.activity("classify", &ticket).await?;
//!     ctx.progress(1, 2, "classified");
//!     ctx.sleep(Duration::from_secs(60)).await;
//!     let reply: String = ctx.activity("draft_reply", &(ticket, label)).await?;
//!     Ok(reply)
//! }
//! ```

mod awaitables;
mod child;
mod commands;
mod context;
mod error;
mod handlers;
mod instance;
mod options;
mod patch;
mod registry;
mod search;
mod select;
mod state;

pub use awaitables::{ActivityFuture, Cancelled, SignalFuture, SignalWithTimeout, Timer};
pub use child::{
    ChildBudget, ChildError, ChildOptions, ChildRun, ChildStart, ParentClosePolicy, SignalSent,
};
pub use commands::command_kind;
pub use context::WorkflowContext;
pub use error::{Error, REFUSAL_MESSAGE_CHARS_MAX, WorkflowError};
pub use handlers::{QUERY_MESSAGE_CHARS_MAX, QueryError};
pub use instance::{MAX_POLLS_PER_ACTIVATION, PANIC_MESSAGE_CHARS_MAX, WorkflowInstance};
pub(crate) use instance::{PollClock, panic_error};
pub use options::{ActivityOptions, RetryPolicy, WaitSignalOptions};
pub use registry::{CONTINUE_AS_NEW_AFTER_EVENTS_DEFAULT, Registry};
pub use select::{Either, Select2, SelectAll, select_all, select2};

#[cfg(test)]
mod tests;
