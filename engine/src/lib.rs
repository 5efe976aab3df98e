//! The pure core of Steadfast: events, the run state machine, the store trait and the
//! embedded store (segment log + sled). No gRPC, no sockets; time is injected.
//!
//! - [`event`]: the versioned event model, its storage encoding and the blake3 chain.
//! - [`state`]: `RunState::apply(&EventRecord)`, the run state machine.
//! - [`store`]: the `Store` trait every backend implements.
//! - [`log`]: the append-only segment log with group commit (the durability boundary).
//! - [`clock`]: time as an injected dependency.
#![warn(missing_docs)]

pub mod clock;
pub mod embedded;
pub mod event;
pub mod ids;
pub mod log;
pub mod payload;
pub mod schedule;
pub mod search;
pub mod state;
pub mod store;

#[cfg(test)]
mod fuzz_tests;

pub use event::{Event, EventKind, EventRecord};
pub use ids::{RunId, RunKey};
pub use payload::Payload;
pub use state::{RunState, RunStatus};
pub use store::Store;
