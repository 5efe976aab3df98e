//! Where a blob lives in the embedded store: its namespace and its content hash.
//!
//! Blobs are content-addressed per namespace: the same bytes stored in two namespaces are two
//! blobs, and a read in one namespace never finds another's. Data dirs from before blobs were
//! scoped hold blob records without a namespace (log record version 1, sled key `b | hash`):
//! those are *legacy* blobs, which any namespace may read, because runs of every namespace
//! may refer to them and they were readable from every namespace when they were written. A
//! blob stored from now on is always scoped; `history export` + `history import` moves a run
//! onto scoped blobs.

use crate::ids::DEFAULT_NAMESPACE;
use crate::payload::Hash;
use crate::store::Error;

/// Longest namespace a blob can be scoped to (its length is one byte in keys and records,
/// as in run keys).
use crate::embedded::append::NAMESPACE_LEN_MAX as BLOB_NAMESPACE_BYTES_MAX;

/// A blob's address: namespace (empty for a legacy, unscoped blob) and content hash.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(crate) struct BlobAddr {
    pub(crate) namespace: String,
    pub(crate) hash: Hash,
}

impl BlobAddr {
    /// The blob `hash` in `namespace` (empty = the default namespace, as for runs).
    pub(crate) fn scoped(namespace: &str, hash: Hash) -> Result<BlobAddr, Error> {
        let namespace = if namespace.is_empty() {
            DEFAULT_NAMESPACE
        } else {
            namespace
        };
        if namespace.len() > BLOB_NAMESPACE_BYTES_MAX {
            return Err(Error::Invalid(format!(
                "a namespace of {} bytes; the limit is {BLOB_NAMESPACE_BYTES_MAX}",
                namespace.len()
            )));
        }
        Ok(BlobAddr {
            namespace: namespace.to_string(),
            hash,
        })
    }

    /// The legacy (unscoped) blob of the same hash: where a read looks second.
    pub(crate) fn legacy(&self) -> BlobAddr {
        BlobAddr {
            namespace: String::new(),
            hash: self.hash,
        }
    }

    /// Written before blobs were scoped.
    pub(crate) fn is_legacy(&self) -> bool {
        self.namespace.is_empty()
    }
}
