//! The Steadfast gRPC contract, package `steadfast.v1`, and its generated Rust code.
//!
//! The `.proto` files under `proto/steadfast/v1/` are the whole contract: a worker or client
//! in another language needs nothing else.
#![allow(missing_docs, clippy::all)]

/// Package `steadfast.v1`.
pub mod v1 {
    tonic::include_proto!("steadfast.v1");

    /// The encoded file descriptor set, for gRPC reflection.
    pub const FILE_DESCRIPTOR_SET: &[u8] =
        tonic::include_file_descriptor_set!("steadfast_descriptor");
}

pub use v1::*;
