//! The activity runtime: activities registered by name, run with a context that heartbeats
//! and hears cancellations.

mod effect;
mod error;

pub use effect::Effect;
pub use error::{ActivityError, CANCELLED_TYPE, DEFAULT_ERROR_TYPE};
