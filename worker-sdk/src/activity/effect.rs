//! [`Effect`]: how an activity affects the world.

use steadfast_proto::v1 as pb;

/// How an activity affects the world. Decides what the server does with an attempt whose
/// outcome was lost (the worker died mid-attempt).
///
/// The effect is declared once, where the activity is registered
/// ([`crate::Worker::register_activity`]); the workflow side fills it into every
/// ScheduleActivity command from the worker's registry of effects.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Effect {
    /// Reads only; safe to retry.
    Read,
    /// Writes, but the same idempotency key never applies twice; safe to retry.
    #[default]
    Idempotent,
    /// Writes that may not be repeated: a lost attempt waits for reconciliation.
    Write,
}

impl From<Effect> for pb::Effect {
    fn from(e: Effect) -> Self {
        match e {
            Effect::Read => pb::Effect::Read,
            Effect::Idempotent => pb::Effect::Idempotent,
            Effect::Write => pb::Effect::Write,
        }
    }
}
