//! The blake3 hash chain of a run's history.
//!
//! `hash(1) = blake3("steadfast.chain.v1" | genesis(run) | 1 | time | kind | attrs)` where
//! `genesis(run) = blake3("steadfast.genesis.v1" | run key bytes)`, and for seq > 1 the
//! previous record's hash takes the place of the genesis. Binding the genesis to the run key
//! means a record cannot be moved to another run's history unnoticed.

use crate::event::{EventKind, EventRecord};
use crate::ids::RunKey;
use crate::payload::Hash;

/// The chain's starting point for a run.
pub fn genesis_hash(key: &RunKey) -> Hash {
    let mut h = blake3::Hasher::new();
    h.update(b"steadfast.genesis.v1");
    h.update(&key.to_bytes());
    *h.finalize().as_bytes()
}

/// The hash of one record given the previous one's (or the genesis).
pub fn record_hash(prev: &Hash, seq: u64, time_ms: i64, kind: EventKind, attrs: &[u8]) -> Hash {
    let mut h = blake3::Hasher::new();
    h.update(b"steadfast.chain.v1");
    h.update(prev);
    h.update(&seq.to_le_bytes());
    h.update(&time_ms.to_le_bytes());
    h.update(&(kind as u16).to_le_bytes());
    h.update(attrs);
    *h.finalize().as_bytes()
}

/// A break in a run's chain, named by run and seq.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChainError {
    /// A seq is missing or repeated.
    #[error(
        "[STF-C2-GAP] history of run {run} is not gapless: expected seq {expected}, found {found}"
    )]
    Gap {
        /// The run.
        run: RunKey,
        /// The seq that should come next.
        expected: u64,
        /// The seq found.
        found: u64,
    },
    /// A record's hash does not match its content and predecessor.
    #[error(
        "[STF-C2-HASH] hash chain of run {run} broken at seq {seq}: the record was altered or its predecessor is missing"
    )]
    Hash {
        /// The run.
        run: RunKey,
        /// The first record that does not verify.
        seq: u64,
    },
}

/// Verifies records `from..` of a run's history, given the hash before the first one
/// (the genesis when the first record is seq 1). Returns the last hash.
///
/// The attributes are re-encoded by this build, so this is for records of the current encoding
/// version (e.g. rebuilt from the wire by the CLI); stored records verify against their stored
/// bytes with [`crate::event::Decoded::verifies_after`].
pub fn verify(
    key: &RunKey,
    prev: Hash,
    first_seq: u64,
    records: &[EventRecord],
) -> Result<Hash, ChainError> {
    let mut prev = prev;
    for (expected, r) in (first_seq..).zip(records) {
        if r.seq != expected {
            return Err(ChainError::Gap {
                run: key.clone(),
                expected,
                found: r.seq,
            });
        }
        let h = record_hash(
            &prev,
            r.seq,
            r.time_ms,
            r.event.kind(),
            &r.event.encode_attrs(),
        );
        if h != r.hash {
            return Err(ChainError::Hash {
                run: key.clone(),
                seq: r.seq,
            });
        }
        prev = h;
    }
    Ok(prev)
}
