//! The sled key space. One tree, one prefix byte per table, so that one indexer batch (one
//! `apply_batch`) is atomic across all of them.
//!
//! ```text
//! e | run key | first seq u64 BE        -> chunk of consecutive events (codec.rs)
//! s | run key                          -> version u8 = 2 | crc32 u32 BE | lsn u64 BE
//!                                         | history bytes u64 BE | msgpack RunState
//!                                         (the crc covers everything after it)
//! o | run key                          -> ()                      open runs
//! x | ns len u8 | ns | status u8 | run id -> ()                   runs by status
//! t | ns len u8 | ns | type len u16 BE | type | run id -> ()      runs by workflow type
//! w | ns len u8 | ns | workflow id     -> run id                  workflow id -> open run
//! c | closed ms (i64 BE, sign bit flipped) | run key -> ()       closed runs by close time
//! q | ns len u8 | ns | kind u8 | request id -> run id | first seq u64 BE | time ms i64 BE | crc32
//!                                                              request ids (deduplication)
//! d | run key                          -> drop record lsn u64 BE  runs dropped by retention
//! g | segment first lsn u64 BE         -> dead bytes u64 BE       retention's garbage per log segment
//! b | ns len u8 | ns | blake3 hash     -> blob bytes (scoped; `b | hash` for a legacy blob)
//! a | ns len u8 | ns | index u8 | len u16 BE | value | run id -> ()  search indexes:
//!                                         1 workflow id, 2 schedule name, 3 search
//!                                         attribute (name len u8 | name | type u8 |
//!                                         value), 4 failed activity type
//! m | name                             -> value                   meta (indexed_lsn:
//!                                         lsn u64 BE | crc32 u32 BE of the lsn)
//! ```
//! A run key is `RunKey::to_bytes` (`ns len u8 | ns | run id`), so every per-run table sorts
//! by namespace, then run id (= creation time, UUIDv7).

use crate::embedded::blob::BlobAddr;
use crate::ids::{RunId, RunKey};
use crate::state::{RunState, RunStatus};
use crate::store::Error;

pub(crate) const EVENT: u8 = b'e';
pub(crate) const STATE: u8 = b's';
pub(crate) const OPEN: u8 = b'o';
pub(crate) const BY_STATUS: u8 = b'x';
pub(crate) const BY_TYPE: u8 = b't';
pub(crate) const WORKFLOW_ID: u8 = b'w';
pub(crate) const BLOB: u8 = b'b';
pub(crate) const CLOSED: u8 = b'c';
pub(crate) const REQUEST: u8 = b'q';
pub(crate) const DROPPED: u8 = b'd';
pub(crate) const DEAD: u8 = b'g';
pub(crate) const SEARCH: u8 = b'a';
/// `m search_index`: the search indexes (`a`) cover every run (absent in data dirs from
/// before them: the open backfills them once).
pub(crate) const META_SEARCH_INDEX: &[u8] = b"msearch_index";
/// `m indexed_lsn`: every log record up to this lsn is applied to sled.
pub(crate) const META_INDEXED_LSN: &[u8] = b"mindexed_lsn";

fn with_prefix(prefix: u8, parts: &[&[u8]]) -> Vec<u8> {
    let len = 1 + parts.iter().map(|p| p.len()).sum::<usize>();
    let mut k = Vec::with_capacity(len);
    k.push(prefix);
    for p in parts {
        k.extend_from_slice(p);
    }
    k
}

/// `e | run | first seq` of a chunk.
pub(crate) fn chunk(run: &[u8], seq: u64) -> Vec<u8> {
    with_prefix(EVENT, &[run, &seq.to_be_bytes()])
}

/// `s | run`.
pub(crate) fn state(run: &[u8]) -> Vec<u8> {
    with_prefix(STATE, &[run])
}

/// `o | run`.
pub(crate) fn open(run: &[u8]) -> Vec<u8> {
    with_prefix(OPEN, &[run])
}

fn ns_part(namespace: &str) -> Vec<u8> {
    let mut v = Vec::with_capacity(1 + namespace.len());
    v.push(namespace.len() as u8);
    v.extend_from_slice(namespace.as_bytes());
    v
}

/// `x | ns | status` (the prefix of one status's runs).
pub(crate) fn by_status_prefix(namespace: &str, status: RunStatus) -> Vec<u8> {
    with_prefix(BY_STATUS, &[&ns_part(namespace), &[status_code(status)]])
}

/// `x | ns | status | run id`.
pub(crate) fn by_status(key: &RunKey, status: RunStatus) -> Vec<u8> {
    let mut k = by_status_prefix(&key.namespace, status);
    k.extend_from_slice(key.run_id.as_bytes());
    k
}

/// `t | ns | type` (the prefix of one type's runs).
pub(crate) fn by_type_prefix(namespace: &str, workflow_type: &str) -> Vec<u8> {
    let len = (workflow_type.len() as u16).to_be_bytes();
    with_prefix(
        BY_TYPE,
        &[&ns_part(namespace), &len, workflow_type.as_bytes()],
    )
}

/// `t | ns | type | run id`.
pub(crate) fn by_type(key: &RunKey, workflow_type: &str) -> Vec<u8> {
    let mut k = by_type_prefix(&key.namespace, workflow_type);
    k.extend_from_slice(key.run_id.as_bytes());
    k
}

/// `s | ns` (the prefix of a namespace's run states).
pub(crate) fn state_prefix(namespace: &str) -> Vec<u8> {
    with_prefix(STATE, &[&ns_part(namespace)])
}

/// `w | ns | workflow id`.
pub(crate) fn workflow_id(namespace: &str, workflow_id: &str) -> Vec<u8> {
    with_prefix(WORKFLOW_ID, &[&ns_part(namespace), workflow_id.as_bytes()])
}

/// An i64 as 8 bytes that sort like the numbers (sign bit flipped, big-endian).
fn ordered_i64(v: i64) -> [u8; 8] {
    ((v as u64) ^ (1 << 63)).to_be_bytes()
}

/// `c | closed ms | run` (retention's index of closed runs).
pub(crate) fn closed(closed_ms: i64, key: &RunKey) -> Vec<u8> {
    with_prefix(CLOSED, &[&ordered_i64(closed_ms), &key.to_bytes()])
}

/// The upper bound (exclusive) of `c` keys of runs closed before `ms`.
pub(crate) fn closed_before(ms: i64) -> Vec<u8> {
    with_prefix(CLOSED, &[&ordered_i64(ms)])
}

/// The run key of a `c` entry.
pub(crate) fn closed_run(k: &[u8]) -> Option<RunKey> {
    RunKey::from_bytes(k.get(9..)?)
}

/// Which search index (the byte after the namespace in an `a` key; never reuse a number).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SearchIndex {
    WorkflowId = 1,
    Schedule = 2,
    Attribute = 3,
    FailedActivity = 4,
    ForkedFrom = 5,
}

/// `a | ns | index | len | value` (the prefix of the runs with that value).
pub(crate) fn search_prefix(namespace: &str, index: SearchIndex, value: &[u8]) -> Vec<u8> {
    let len = (value.len().min(u16::MAX as usize) as u16).to_be_bytes();
    with_prefix(SEARCH, &[&ns_part(namespace), &[index as u8], &len, value])
}

/// The value part of an attribute's `a` key: name len | name | type | value.
pub(crate) fn attribute_value(name: &str, value: &crate::search::SearchValue) -> Vec<u8> {
    crate::search::attribute_index_value(name, value)
}

/// Every `a` key of a run: what its state says it is found by.
pub(crate) fn search_keys(s: &RunState) -> Vec<Vec<u8>> {
    let ns = &s.key.namespace;
    let mut out = Vec::with_capacity(1 + s.search_attributes.len());
    let mut push = |index, value: &[u8]| {
        let mut k = search_prefix(ns, index, value);
        k.extend_from_slice(s.key.run_id.as_bytes());
        out.push(k);
    };
    push(SearchIndex::WorkflowId, s.workflow_id.as_bytes());
    if let Some(r) = &s.schedule {
        push(SearchIndex::Schedule, r.name.as_bytes());
    }
    for (n, v) in &s.search_attributes {
        push(SearchIndex::Attribute, &attribute_value(n, v));
    }
    for t in &s.failed_activity_types {
        push(SearchIndex::FailedActivity, t.as_bytes());
    }
    if let Some(f) = &s.forked_from {
        push(SearchIndex::ForkedFrom, f.run_id.as_bytes());
    }
    out
}

/// `d | run` (a run retention dropped, with the lsn of its drop record).
pub(crate) fn dropped(run: &[u8]) -> Vec<u8> {
    with_prefix(DROPPED, &[run])
}

/// `g | segment first lsn` (bytes of dropped runs' records in that log segment).
pub(crate) fn dead(segment_first_lsn: u64) -> Vec<u8> {
    with_prefix(DEAD, &[&segment_first_lsn.to_be_bytes()])
}

/// A u64 stored big-endian; `None` when malformed.
pub(crate) fn decode_u64(v: &[u8]) -> Option<u64> {
    Some(u64::from_be_bytes(v.try_into().ok()?))
}

/// `q | ns | kind | request id`.
pub(crate) fn request(namespace: &str, q: &crate::store::RequestKey) -> Vec<u8> {
    with_prefix(
        REQUEST,
        &[&ns_part(namespace), &[q.kind.code()], q.id.as_bytes()],
    )
}

/// What a request id led to: the run, the first seq of its append, the append's time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct RequestHit {
    pub run_id: RunId,
    pub seq: u64,
    pub time_ms: i64,
}

/// The value of a `q` entry: run id | seq BE | time BE | crc32 BE of the 32 bytes before.
pub(crate) fn request_value(hit: &RequestHit) -> [u8; 36] {
    let mut v = [0u8; 36];
    v[..16].copy_from_slice(hit.run_id.as_bytes());
    v[16..24].copy_from_slice(&hit.seq.to_be_bytes());
    v[24..32].copy_from_slice(&hit.time_ms.to_be_bytes());
    let crc = crc32fast::hash(&v[..32]);
    v[32..].copy_from_slice(&crc.to_be_bytes());
    v
}

/// Decodes a `q` value; `None` when malformed or damaged (its checksum fails).
pub(crate) fn decode_request_value(v: &[u8]) -> Option<RequestHit> {
    if v.len() != 36 || crc32fast::hash(&v[..32]).to_be_bytes() != v[32..36] {
        return None;
    }
    Some(RequestHit {
        run_id: RunId(uuid::Uuid::from_slice(&v[..16]).ok()?),
        seq: u64::from_be_bytes(v[16..24].try_into().ok()?),
        time_ms: i64::from_be_bytes(v[24..32].try_into().ok()?),
    })
}

/// `b | ns len u8 | ns | hash` for a scoped blob; `b | hash` for a legacy (unscoped) one, as
/// data dirs from before blobs were scoped hold them (33 bytes, so never the same key as a
/// scoped one, which is at least 35).
pub(crate) fn blob(addr: &BlobAddr) -> Vec<u8> {
    if addr.is_legacy() {
        return with_prefix(BLOB, &[&addr.hash]);
    }
    let ns = addr.namespace.as_bytes();
    with_prefix(BLOB, &[&[ns.len() as u8], ns, &addr.hash])
}

/// Every status, for clearing a run's index entries whatever its status was.
pub(crate) const ALL_STATUSES: [RunStatus; 7] = [
    RunStatus::Running,
    RunStatus::Completed,
    RunStatus::Failed,
    RunStatus::Cancelled,
    RunStatus::Terminated,
    RunStatus::TimedOut,
    RunStatus::ContinuedAsNew,
];

/// A stable one-byte code per status (stored in index keys: never reuse a number).
pub(crate) fn status_code(s: RunStatus) -> u8 {
    match s {
        RunStatus::Running => 1,
        RunStatus::Completed => 2,
        RunStatus::Failed => 3,
        RunStatus::Cancelled => 4,
        RunStatus::Terminated => 5,
        RunStatus::TimedOut => 6,
        RunStatus::ContinuedAsNew => 7,
    }
}

/// The run id at the end of an index key.
pub(crate) fn trailing_run_id(k: &[u8]) -> Option<RunId> {
    let tail = k.len().checked_sub(16).map(|i| &k[i..])?;
    uuid::Uuid::from_slice(tail).ok().map(RunId)
}

/// The first seq of a chunk key of `run`.
pub(crate) fn chunk_seq(run: &[u8], k: &[u8]) -> Option<u64> {
    let rest = k.strip_prefix(&[EVENT])?.strip_prefix(run)?;
    Some(u64::from_be_bytes(rest.try_into().ok()?))
}

/// A run state as stored, with the lsn of its last append and its history size.
#[derive(Debug, Clone)]
pub(crate) struct StoredState {
    pub lsn: u64,
    pub history_bytes: u64,
    pub state: RunState,
}

/// Version byte of an `s` value. Never reuse a retired number (1 was the unversioned,
/// unchecked layout `lsn | history bytes | state`).
const STATE_VERSION: u8 = 2;
/// Bytes before the msgpack state: version, crc, lsn, history bytes.
const STATE_HEADER_BYTES: usize = 1 + 4 + 8 + 8;

/// The value of an `s` entry.
pub(crate) fn state_value(lsn: u64, history_bytes: u64, state: &RunState) -> Vec<u8> {
    let mut v = Vec::with_capacity(256);
    v.push(STATE_VERSION);
    v.extend_from_slice(&[0; 4]);
    v.extend_from_slice(&lsn.to_be_bytes());
    v.extend_from_slice(&history_bytes.to_be_bytes());
    // Plain data always encodes; an error here would be a bug in RunState's Serialize.
    if let Err(e) = rmp_serde::encode::write(&mut v, state) {
        tracing::error!(error = %e, "run state does not encode");
    }
    let crc = crc32fast::hash(&v[5..]);
    v[1..5].copy_from_slice(&crc.to_be_bytes());
    v
}

/// The value of `m indexed_lsn`.
pub(crate) fn indexed_lsn_value(lsn: u64) -> [u8; 12] {
    let mut v = [0u8; 12];
    v[..8].copy_from_slice(&lsn.to_be_bytes());
    let crc = crc32fast::hash(&v[..8]);
    v[8..].copy_from_slice(&crc.to_be_bytes());
    v
}

/// Decodes `m indexed_lsn`; `None` when damaged.
pub(crate) fn decode_indexed_lsn(v: &[u8]) -> Option<u64> {
    let lsn: [u8; 8] = v.get(..8)?.try_into().ok()?;
    let crc: [u8; 4] = v.get(8..12)?.try_into().ok()?;
    (v.len() == 12 && crc32fast::hash(&lsn) == u32::from_be_bytes(crc))
        .then(|| u64::from_be_bytes(lsn))
}

/// Decodes an `s` entry of `key`.
pub(crate) fn decode_state(key: &RunKey, v: &[u8]) -> Result<StoredState, Error> {
    let corrupt = |detail: String| Error::Corrupt {
        run: Some(key.clone()),
        seq: None,
        detail,
    };
    if v.len() < STATE_HEADER_BYTES {
        return Err(corrupt(format!("stored run state is {} bytes", v.len())));
    }
    if v[0] != STATE_VERSION {
        return Err(corrupt(format!(
            "stored run state has format version {}, expected {STATE_VERSION}",
            v[0]
        )));
    }
    let crc = u32::from_be_bytes(
        v[1..5]
            .try_into()
            .map_err(|_| corrupt("state crc".into()))?,
    );
    if crc32fast::hash(&v[5..]) != crc {
        return Err(corrupt("stored run state fails its checksum".into()));
    }
    let lsn = u64::from_be_bytes(
        v[5..13]
            .try_into()
            .map_err(|_| corrupt("state lsn".into()))?,
    );
    let history_bytes = u64::from_be_bytes(
        v[13..21]
            .try_into()
            .map_err(|_| corrupt("state size".into()))?,
    );
    let mut state: RunState = rmp_serde::from_slice(&v[STATE_HEADER_BYTES..])
        .map_err(|e| corrupt(format!("stored run state does not decode: {e}")))?;
    state.history_bytes = history_bytes;
    if state.key != *key {
        return Err(corrupt(format!(
            "stored run state belongs to run {}",
            state.key
        )));
    }
    Ok(StoredState {
        lsn,
        history_bytes,
        state,
    })
}
