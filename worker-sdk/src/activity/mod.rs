//! The activity runtime: activities registered by name with their [`Effect`], run with an
//! [`ActivityContext`] that heartbeats, reports usage and hears cancellations.
//!
//! ```no_run
//! use steadfast_sdk::activity::{ActivityContext, ActivityError};
//!
//! async fn charge(ctx: ActivityContext, cents: u64) -> Result<String, ActivityError> {
//!     // Pass the idempotency key to the payment API so a retried attempt charges once.
//!     let key = ctx.idempotency_key().to_owned();
//!     ctx.heartbeat(("charging", cents));
//!     Ok(format!("charged {cents} with key {key}"))
//! }
//! ```

mod context;
mod deltas;
mod effect;
mod error;
mod publish;
mod registry;
pub(crate) mod runtime;

pub use context::{ActivityContext, ActivityInfo, NOT_RECORDED_TYPE};
pub use deltas::{DELTA_BATCH_INTERVAL, DELTA_OUTBOX_BYTES_MAX, DELTA_REQUEST_BYTES_MAX};
pub use effect::Effect;
pub use error::{APPROVAL_DENIED_TYPE, ActivityError, CANCELLED_TYPE, DEFAULT_ERROR_TYPE};
pub use registry::Activities;
pub use runtime::RESULT_REFUSED_ERROR_TYPE;
pub use steadfast_proto::v1::Usage;

#[cfg(test)]
mod tests;
