//! The storage encoding of an event record.
//!
//! Layout (version 1), a msgpack array:
//! `[1, namespace: str, run_id: bin16, seq: uint, time_ms: int, hash: bin32, kind: uint16, attrs: bin]`.
//! The hash covers the attrs bytes exactly as stored, so verification never depends on
//! re-encoding (an older record with fewer fields still verifies).

use serde::{Deserialize, Serialize};

use crate::event::{Event, EventKind, EventRecord, record_hash};
use crate::ids::{RunId, RunKey};
use crate::payload::Hash;

const RECORD_VERSION: u8 = 1;

#[derive(Serialize, Deserialize)]
struct Wire<'a> {
    version: u8,
    #[serde(borrow)]
    namespace: &'a str,
    #[serde(with = "serde_bytes")]
    run_id: &'a [u8],
    seq: u64,
    time_ms: i64,
    #[serde(with = "serde_bytes")]
    hash: &'a [u8],
    kind: u16,
    #[serde(with = "serde_bytes")]
    attrs: &'a [u8],
}

/// A stored record that could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// The bytes are not a record of a known version.
    #[error("malformed event record: {0}")]
    Malformed(String),
    /// The kind discriminant is unknown (written by a newer version?).
    #[error("unknown event kind {kind} at seq {seq} of run {run}")]
    UnknownKind {
        /// The run.
        run: RunKey,
        /// The seq.
        seq: u64,
        /// The discriminant.
        kind: u16,
    },
    /// The attributes do not decode.
    #[error("event attributes of run {run} seq {seq} do not decode: {detail}")]
    Attrs {
        /// The run.
        run: RunKey,
        /// The seq.
        seq: u64,
        /// Decoder message.
        detail: String,
    },
}

/// Encodes a record of `key`'s history; `attrs` must be `record.event.encode_attrs()`.
pub fn encode_record(key: &RunKey, record: &EventRecord, attrs: &[u8]) -> Vec<u8> {
    let w = Wire {
        version: RECORD_VERSION,
        namespace: &key.namespace,
        run_id: key.run_id.as_bytes(),
        seq: record.seq,
        time_ms: record.time_ms,
        hash: &record.hash,
        kind: record.event.kind() as u16,
        attrs,
    };
    rmp_serde::to_vec(&w).expect("msgpack encoding of plain data cannot fail")
}

/// A decoded record with what verification needs.
#[derive(Debug, Clone)]
pub struct Decoded {
    /// Whose history.
    pub key: RunKey,
    /// The record.
    pub record: EventRecord,
    /// blake3 of this record computed from `prev`: equals `record.hash` iff it verifies.
    attrs_hash_input: Vec<u8>,
}

impl Decoded {
    /// Whether this record's hash matches its content given its predecessor's hash.
    pub fn verifies_after(&self, prev: &Hash) -> bool {
        let r = &self.record;
        record_hash(
            prev,
            r.seq,
            r.time_ms,
            r.event.kind(),
            &self.attrs_hash_input,
        ) == r.hash
    }
}

/// Decodes a record written by [`encode_record`]. Does not verify the chain: the caller holds
/// the predecessor's hash and calls [`Decoded::verifies_after`].
pub fn decode_record(bytes: &[u8]) -> Result<Decoded, DecodeError> {
    let w: Wire<'_> =
        rmp_serde::from_slice(bytes).map_err(|e| DecodeError::Malformed(e.to_string()))?;
    if w.version != RECORD_VERSION {
        return Err(DecodeError::Malformed(format!(
            "record version {} (this build reads {RECORD_VERSION})",
            w.version
        )));
    }
    let run_id =
        uuid::Uuid::from_slice(w.run_id).map_err(|e| DecodeError::Malformed(e.to_string()))?;
    let key = RunKey {
        namespace: w.namespace.to_string(),
        run_id: RunId(run_id),
    };
    let hash: Hash = w
        .hash
        .try_into()
        .map_err(|_| DecodeError::Malformed("hash is not 32 bytes".into()))?;
    let kind = EventKind::from_u16(w.kind).ok_or_else(|| DecodeError::UnknownKind {
        run: key.clone(),
        seq: w.seq,
        kind: w.kind,
    })?;
    let event = Event::decode_attrs(kind, w.attrs).map_err(|e| DecodeError::Attrs {
        run: key.clone(),
        seq: w.seq,
        detail: e.to_string(),
    })?;
    Ok(Decoded {
        record: EventRecord {
            seq: w.seq,
            time_ms: w.time_ms,
            hash,
            event,
        },
        attrs_hash_input: w.attrs.to_vec(),
        key,
    })
}
