//! The pure core of Steadfast: events, the run state machine, the store trait and the
//! embedded store (segment log + sled). No gRPC, no sockets; time is injected.
#![warn(missing_docs)]

pub mod log;
