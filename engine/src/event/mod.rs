//! The event model: one immutable fact about a run, versioned, with explicit discriminants.
//!
//! An [`Event`] is encoded as its [`EventKind`] (a `u16` that is never reused) plus its
//! attributes (msgpack, see [`attrs`]). A stored [`EventRecord`] adds the run's seq, the time
//! and the blake3 hash that chains it to the previous record of its run (see [`chain`]).

pub mod attrs;
pub mod chain;
mod codec;
mod run_started;
mod values;

pub use attrs::*;
pub use chain::{ChainError, genesis_hash, record_hash};
pub use codec::{DecodeError, Decoded, decode_record, encode_record};

use crate::payload::{Hash, Payload};

macro_rules! events {
    ($( $code:literal => $variant:ident ),* $(,)?) => {
        /// One immutable fact about a run.
        #[derive(Clone, Debug, PartialEq)]
        pub enum Event {
            $(
                #[doc = concat!("See [`attrs::", stringify!($variant), "`].")]
                $variant(attrs::$variant),
            )*
        }

        /// The stable discriminant of an event: stored, sent on the wire, never reused.
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        #[repr(u16)]
        pub enum EventKind {
            $(
                #[doc = concat!("[`Event::", stringify!($variant), "`]")]
                $variant = $code,
            )*
        }

        impl EventKind {
            /// Every kind, in discriminant order.
            pub const ALL: &'static [EventKind] = &[$(EventKind::$variant),*];

            /// The kind with this discriminant.
            pub fn from_u16(v: u16) -> Option<EventKind> {
                match v {
                    $($code => Some(EventKind::$variant),)*
                    _ => None,
                }
            }

            /// The name, as shown by the CLI.
            pub fn name(self) -> &'static str {
                match self {
                    $(EventKind::$variant => stringify!($variant),)*
                }
            }
        }

        impl Event {
            /// This event's kind.
            pub fn kind(&self) -> EventKind {
                match self {
                    $(Event::$variant(_) => EventKind::$variant,)*
                }
            }

            /// The attributes as stored (msgpack array).
            pub fn encode_attrs(&self) -> Vec<u8> {
                let r = match self {
                    $(Event::$variant(a) => rmp_serde::to_vec(a),)*
                };
                r.expect("msgpack encoding of plain data cannot fail")
            }

            /// Decodes attributes stored under `kind`.
            pub fn decode_attrs(kind: EventKind, bytes: &[u8]) -> Result<Event, rmp_serde::decode::Error> {
                Ok(match kind {
                    $(EventKind::$variant => Event::$variant(rmp_serde::from_slice(bytes)?),)*
                })
            }

            /// Every payload this event holds, for blob externalisation and size checks.
            pub fn payloads_mut(&mut self) -> Vec<&mut Payload> {
                match self {
                    Event::RunStarted(a) => vec![&mut a.input],
                    Event::ActivityScheduled(a) => vec![&mut a.input],
                    Event::ActivityCompleted(a) => vec![&mut a.result],
                    Event::ActivityProgress(a) => vec![&mut a.details],
                    Event::SignalReceived(a) => vec![&mut a.input],
                    Event::PartialResultRecorded(a) => vec![&mut a.result],
                    Event::RunCompleted(a) => vec![&mut a.result],
                    Event::RunCancelled(a) => a.partial_result.iter_mut().collect(),
                    Event::RunContinuedAsNew(a) => vec![&mut a.input],
                    Event::ChildRunRequested(a) => vec![&mut a.input],
                    Event::ChildRunClosed(a) => a.result.iter_mut().collect(),
                    Event::RunSignalRequested(a) => vec![&mut a.input],
                    Event::UpdateRequested(a) => vec![&mut a.input],
                    Event::UpdateCompleted(a) => vec![&mut a.result],
                    Event::ActivityApproved(a) => a.input.iter_mut().collect(),
                    _ => Vec::new(),
                }
            }
        }
    };
}

events! {
    1 => RunStarted,
    10 => WorkflowTaskScheduled,
    11 => WorkflowTaskStarted,
    12 => WorkflowTaskCompleted,
    13 => WorkflowTaskFailed,
    14 => WorkflowTaskTimedOut,
    20 => ActivityScheduled,
    21 => ActivityStarted,
    22 => ActivityCompleted,
    23 => ActivityFailed,
    24 => ActivityTimedOut,
    25 => ActivityCancelRequested,
    26 => ActivityCancelled,
    27 => ActivityOutcomeUnknown,
    28 => ActivityReconciled,
    29 => ActivityProgress,
    30 => TimerStarted,
    31 => TimerFired,
    32 => TimerCancelled,
    40 => SignalWaitStarted,
    41 => SignalReceived,
    50 => ProgressReported,
    51 => PartialResultRecorded,
    60 => CancelRequested,
    61 => BudgetUpdated,
    62 => BudgetExceeded,
    63 => ActivityUsageReported,
    70 => RunCompleted,
    71 => RunFailed,
    72 => RunCancelled,
    73 => RunTerminated,
    74 => RunTimedOut,
    75 => RunContinuedAsNew,
    80 => ChildRunRequested,
    81 => ChildRunStarted,
    82 => ChildRunStartFailed,
    83 => ChildRunClosed,
    84 => RunSignalRequested,
    85 => RunSignalResolved,
    90 => PatchMarker,
    91 => UpdateRequested,
    92 => UpdateCompleted,
    93 => UpdateRejected,
    100 => VersioningSet,
    101 => BuildPinned,
    110 => SearchAttributesUpserted,
    111 => MemoRecorded,
    120 => ApprovalRequested,
    121 => ActivityApproved,
    122 => ActivityDenied,
}

impl Event {
    /// Whether this event closes the run.
    pub fn is_terminal(&self) -> bool {
        matches!(
            self,
            Event::RunCompleted(_)
                | Event::RunFailed(_)
                | Event::RunCancelled(_)
                | Event::RunTerminated(_)
                | Event::RunTimedOut(_)
                | Event::RunContinuedAsNew(_)
        )
    }

    /// The command seq of an event produced by a workflow command, if it is one.
    pub fn command_seq(&self) -> Option<CommandSeq> {
        match self {
            Event::ActivityScheduled(a) => Some(a.command_seq),
            Event::TimerStarted(a) => Some(a.command_seq),
            Event::TimerCancelled(a) => Some(a.command_seq),
            Event::SignalWaitStarted(a) => Some(a.command_seq),
            Event::ProgressReported(a) => Some(a.command_seq),
            Event::PartialResultRecorded(a) => Some(a.command_seq),
            Event::ActivityCancelRequested(a) => Some(a.command_seq),
            Event::RunCompleted(a) => Some(a.command_seq),
            Event::RunFailed(a) if a.command_seq > 0 => Some(a.command_seq),
            Event::RunCancelled(a) if a.command_seq > 0 => Some(a.command_seq),
            Event::RunContinuedAsNew(a) => Some(a.command_seq),
            Event::ChildRunRequested(a) => Some(a.command_seq),
            Event::RunSignalRequested(a) => Some(a.command_seq),
            Event::PatchMarker(a) => Some(a.command_seq),
            Event::UpdateCompleted(a) => Some(a.command_seq),
            Event::UpdateRejected(a) => Some(a.command_seq),
            Event::SearchAttributesUpserted(a) if a.command_seq > 0 => Some(a.command_seq),
            _ => None,
        }
    }
}

/// An event as stored: its seq in the run's history, its time and its chain hash.
#[derive(Clone, Debug, PartialEq)]
pub struct EventRecord {
    /// Position in the run's history, from 1, gapless.
    pub seq: u64,
    /// When it was appended (ms since the Unix epoch).
    pub time_ms: TimeMs,
    /// blake3 chaining it to the previous record (see [`chain::record_hash`]).
    pub hash: Hash,
    /// The fact.
    pub event: Event,
}
