//! Byte formats of the embedded store: its records in the segment log, and the chunks of
//! event copies in sled. Both are versioned; a retired version number is never reused.
//!
//! ```text
//! log record kind 1, append (one append = one log record, so it is atomic in the log);
//! version 2 appends `| request kind u8 | id len varint | id` (the caller's request id):
//!   version u8 = 1 | run key (RunKey::to_bytes) | first seq varint | time_ms zigzag varint
//!   | count varint | count x (kind varint | hash [32] | attrs len varint | attrs)
//! log record kind 2, blob (written before the first append that refers to it); version 2 is
//! scoped to a namespace, version 1 (written before blobs were scoped) to none (see
//! [`crate::embedded::blob`]):
//!   version u8 = 2 | ns len u8 | ns | blake3 hash [32] | data
//!   version u8 = 1 | blake3 hash [32] | data
//! log record kind 3, drop (retention: these runs' histories are gone from here on):
//!   version u8 = 1 | count varint | count x (run key len varint | run key)
//! sled chunk (consecutive events of one run; key `e | run key | first seq BE`):
//!   version u8 = 1 | prev hash [32] | end hash [32] | first lsn varint | count varint
//!   | count x (lsn delta varint | time delta zigzag varint | kind varint | attrs len varint | attrs)
//! ```
//! A chunk stores no per-event hashes: they are recomputed from `prev` along the chunk and
//! must arrive at `end`, so any damaged byte fails verification (named by the chunk's seq
//! range) while the chunk stays compact (sled roughly doubles what it stores).

use crate::embedded::blob::BlobAddr;
use crate::event::{Event, EventKind, EventRecord, TimeMs, record_hash};
use crate::ids::RunKey;
use crate::payload::Hash;
use crate::store::{RequestKey, RequestKind};

/// Log record kind of an append (events of one run).
pub(crate) const KIND_APPEND: u8 = 1;
/// Log record kind of a blob.
pub(crate) const KIND_BLOB: u8 = 2;
/// Log record kind of a retention drop (runs whose history is gone from now on).
pub(crate) const KIND_DROP: u8 = 3;

const VERSION: u8 = 1;
/// Version of an append record that also carries the caller's request id (deduplication).
const APPEND_VERSION_REQUEST: u8 = 2;

/// One stored event: the bytes its hash covers, and its hash.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Rec {
    pub seq: u64,
    pub time_ms: TimeMs,
    pub kind: EventKind,
    pub hash: Hash,
    pub attrs: Vec<u8>,
}

impl Rec {
    /// Whether this record's hash matches its content after `prev`.
    pub fn verifies_after(&self, prev: &Hash) -> bool {
        record_hash(prev, self.seq, self.time_ms, self.kind, &self.attrs) == self.hash
    }

    /// The event record (attributes decoded).
    pub fn to_record(&self) -> Result<EventRecord, String> {
        let event = Event::decode_attrs(self.kind, &self.attrs)
            .map_err(|e| format!("event attributes do not decode: {e}"))?;
        Ok(EventRecord {
            seq: self.seq,
            time_ms: self.time_ms,
            hash: self.hash,
            event,
        })
    }
}

/// Bytes did not parse; the caller names the run and seq.
pub(crate) type Malformed = String;

// --- varints (LEB128) ---

fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn zigzag(v: i64) -> u64 {
    ((v << 1) ^ (v >> 63)) as u64
}

fn unzigzag(v: u64) -> i64 {
    ((v >> 1) as i64) ^ -((v & 1) as i64)
}

/// A cursor over bytes that never panics.
struct Reader<'a> {
    b: &'a [u8],
}

impl<'a> Reader<'a> {
    fn varint(&mut self, what: &str) -> Result<u64, Malformed> {
        let mut v = 0u64;
        for i in 0..10 {
            let (&byte, rest) = self
                .b
                .split_first()
                .ok_or_else(|| format!("ends inside {what}"))?;
            self.b = rest;
            v |= u64::from(byte & 0x7f) << (7 * i);
            if byte & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err(format!("{what} is not a valid varint"))
    }

    fn bytes(&mut self, n: usize, what: &str) -> Result<&'a [u8], Malformed> {
        let (head, rest) = self
            .b
            .split_at_checked(n)
            .ok_or_else(|| format!("ends inside {what}"))?;
        self.b = rest;
        Ok(head)
    }

    fn hash(&mut self, what: &str) -> Result<Hash, Malformed> {
        let b = self.bytes(32, what)?;
        b.try_into().map_err(|_| format!("{what} is not 32 bytes"))
    }

    fn kind(&mut self) -> Result<EventKind, Malformed> {
        let k = self.varint("event kind")?;
        u16::try_from(k)
            .ok()
            .and_then(EventKind::from_u16)
            .ok_or_else(|| format!("unknown event kind {k}"))
    }

    fn attrs(&mut self) -> Result<Vec<u8>, Malformed> {
        let n = self.varint("attrs length")?;
        let n = usize::try_from(n).map_err(|_| "attrs length overflows".to_string())?;
        Ok(self.bytes(n, "attrs")?.to_vec())
    }

    fn version(&mut self, what: &str) -> Result<(), Malformed> {
        match self.bytes(1, what)? {
            [VERSION] => Ok(()),
            [v] => Err(format!("{what} version {v} (this build reads {VERSION})")),
            _ => Err(format!("empty {what}")),
        }
    }

    fn end(&self, what: &str) -> Result<(), Malformed> {
        if self.b.is_empty() {
            Ok(())
        } else {
            Err(format!("{} trailing bytes after {what}", self.b.len()))
        }
    }
}

// --- log append records ---

/// Encodes an append: consecutive records of one run, all stamped with the same time.
pub(crate) fn encode_append<'a>(
    key: &RunKey,
    recs: impl ExactSizeIterator<Item = &'a Rec> + Clone,
    request: Option<&RequestKey>,
) -> Vec<u8> {
    let size: usize = recs.clone().map(|r| r.attrs.len() + 40).sum();
    let mut out = Vec::with_capacity(32 + key.namespace.len() + size);
    let first = recs.clone().next();
    // Version 2 only when the append carries a request id: plain appends keep version 1.
    out.push(if request.is_some() {
        APPEND_VERSION_REQUEST
    } else {
        VERSION
    });
    out.extend_from_slice(&key.to_bytes());
    put_varint(&mut out, first.map_or(0, |r| r.seq));
    put_varint(&mut out, zigzag(first.map_or(0, |r| r.time_ms)));
    put_varint(&mut out, recs.len() as u64);
    for r in recs {
        put_varint(&mut out, r.kind as u64);
        out.extend_from_slice(&r.hash);
        put_varint(&mut out, r.attrs.len() as u64);
        out.extend_from_slice(&r.attrs);
    }
    if let Some(q) = request {
        out.push(q.kind.code());
        put_varint(&mut out, q.id.len() as u64);
        out.extend_from_slice(q.id.as_bytes());
    }
    out
}

/// The run key bytes of an append record (`RunKey::to_bytes`), without decoding the rest:
/// for finding one run's records in a pass over the log.
pub(crate) fn append_run_key(data: &[u8]) -> Option<&[u8]> {
    let ns_len = *data.get(1)? as usize;
    data.get(1..1 + 1 + ns_len + 16)
}

/// Decodes an append record (hashes as stored, not yet verified).
#[cfg(test)]
pub(crate) fn decode_append(data: &[u8]) -> Result<(RunKey, Vec<Rec>), Malformed> {
    decode_append_request(data).map(|(k, r, _)| (k, r))
}

/// Decodes an append record with the request id it carries, if any.
pub(crate) fn decode_append_request(
    data: &[u8],
) -> Result<(RunKey, Vec<Rec>, Option<RequestKey>), Malformed> {
    let mut r = Reader { b: data };
    let version = match r.bytes(1, "append record")? {
        [v @ (VERSION | APPEND_VERSION_REQUEST)] => *v,
        [v] => {
            return Err(format!(
                "append record version {v} (this build reads {VERSION} and {APPEND_VERSION_REQUEST})"
            ));
        }
        _ => return Err("empty append record".into()),
    };
    let ns_len = *r.b.first().ok_or("append record ends before its run")? as usize;
    let key_bytes = r.bytes(1 + ns_len + 16, "run key")?;
    let key = RunKey::from_bytes(key_bytes).ok_or("malformed run key")?;
    let first_seq = r.varint("first seq")?;
    let time_ms = unzigzag(r.varint("time")?);
    let count = r.varint("count")?;
    if first_seq == 0 || count == 0 {
        return Err(format!(
            "append record of {count} events from seq {first_seq}"
        ));
    }
    let mut recs = Vec::with_capacity((count as usize).min(data.len()));
    for i in 0..count {
        let kind = r.kind()?;
        let hash = r.hash("event hash")?;
        let attrs = r.attrs()?;
        recs.push(Rec {
            seq: first_seq + i,
            time_ms,
            kind,
            hash,
            attrs,
        });
    }
    let request = if version == APPEND_VERSION_REQUEST {
        let code = r.bytes(1, "request kind")?[0];
        let kind =
            RequestKind::from_code(code).ok_or_else(|| format!("unknown request kind {code}"))?;
        let len = r.varint("request id length")? as usize;
        let id = std::str::from_utf8(r.bytes(len, "request id")?)
            .map_err(|_| "request id is not UTF-8".to_string())?
            .to_string();
        Some(RequestKey { kind, id })
    } else {
        None
    };
    r.end("the append record")?;
    Ok((key, recs, request))
}

// --- blob records ---

/// Blob record version 2: scoped to a namespace.
const BLOB_VERSION_SCOPED: u8 = 2;

/// Encodes a blob record of `addr` (always the scoped version: a new blob has a namespace).
pub(crate) fn encode_blob(addr: &BlobAddr, data: &[u8]) -> Vec<u8> {
    let ns = addr.namespace.as_bytes();
    let mut out = Vec::with_capacity(2 + ns.len() + 4 + 32 + data.len());
    out.push(BLOB_VERSION_SCOPED);
    // Namespaces are at most NAME_LEN_MAX (256) bytes; validated names are shorter than 256.
    out.push(u8::try_from(ns.len()).expect("namespace of at most 255 bytes"));
    out.extend_from_slice(ns);
    // The hash covers the data only: the namespace carries a checksum of its own, so that a
    // damaged namespace is not read as another tenant's blob.
    out.extend_from_slice(&crc32fast::hash(ns).to_le_bytes());
    out.extend_from_slice(&addr.hash);
    out.extend_from_slice(data);
    out
}

/// The address and data of a blob record, verified against each other. A version-1 record
/// (from before blobs were scoped) has the legacy, unscoped address.
pub(crate) fn decode_blob(data: &[u8]) -> Result<(BlobAddr, &[u8]), Malformed> {
    let mut r = Reader { b: data };
    let namespace = match r.bytes(1, "blob record")? {
        [VERSION] => String::new(),
        [BLOB_VERSION_SCOPED] => {
            let n = r.bytes(1, "blob namespace length")?[0] as usize;
            let ns = r.bytes(n, "blob namespace")?;
            let crc = r.bytes(4, "blob namespace checksum")?;
            if crc != crc32fast::hash(ns).to_le_bytes() {
                return Err("blob namespace checksum mismatch".into());
            }
            let ns =
                std::str::from_utf8(ns).map_err(|_| "blob namespace is not UTF-8".to_string())?;
            if ns.is_empty() {
                return Err("a scoped blob record with an empty namespace".into());
            }
            ns.to_string()
        }
        [v] => {
            return Err(format!(
                "blob record version {v} (this build reads {VERSION} and {BLOB_VERSION_SCOPED})"
            ));
        }
        _ => return Err("empty blob record".into()),
    };
    let hash = r.hash("blob hash")?;
    if *blake3::hash(r.b).as_bytes() != hash {
        return Err(format!(
            "blob {} does not match its hash",
            hex::encode(hash)
        ));
    }
    Ok((BlobAddr { namespace, hash }, r.b))
}

// --- drop records ---

/// Encodes a drop record: these runs are dropped by retention.
pub(crate) fn encode_drop(keys: &[RunKey]) -> Vec<u8> {
    let mut out = Vec::with_capacity(2 + keys.len() * 40);
    out.push(VERSION);
    put_varint(&mut out, keys.len() as u64);
    for k in keys {
        let b = k.to_bytes();
        put_varint(&mut out, b.len() as u64);
        out.extend_from_slice(&b);
    }
    out
}

/// The runs of a drop record.
pub(crate) fn decode_drop(data: &[u8]) -> Result<Vec<RunKey>, Malformed> {
    let mut r = Reader { b: data };
    r.version("drop record")?;
    let n = r.varint("count")?;
    let mut keys = Vec::with_capacity((n as usize).min(data.len()));
    for _ in 0..n {
        let len = r.varint("run key length")? as usize;
        let b = r.bytes(len, "run key")?;
        keys.push(RunKey::from_bytes(b).ok_or("malformed run key in a drop record")?);
    }
    r.end("the drop record")?;
    Ok(keys)
}

// --- sled chunks ---

/// Encodes consecutive records of one run (with the lsn of each) as a chunk.
pub(crate) fn encode_chunk(prev: &Hash, recs: &[(u64, &Rec)]) -> Vec<u8> {
    let size: usize = recs.iter().map(|(_, r)| r.attrs.len() + 8).sum();
    let mut out = Vec::with_capacity(80 + size);
    out.push(VERSION);
    out.extend_from_slice(prev);
    out.extend_from_slice(&recs.last().map_or(*prev, |(_, r)| r.hash));
    let first_lsn = recs.first().map_or(0, |(l, _)| *l);
    put_varint(&mut out, first_lsn);
    put_varint(&mut out, recs.len() as u64);
    let mut time = 0;
    for (lsn, r) in recs {
        put_varint(&mut out, lsn.saturating_sub(first_lsn));
        put_varint(&mut out, zigzag(r.time_ms.wrapping_sub(time)));
        time = r.time_ms;
        put_varint(&mut out, r.kind as u64);
        put_varint(&mut out, r.attrs.len() as u64);
        out.extend_from_slice(&r.attrs);
    }
    out
}

/// A decoded and verified chunk.
#[derive(Debug, Clone)]
pub(crate) struct Chunk {
    /// Hash of the record before the first.
    pub prev: Hash,
    /// The records with their recomputed (and verified) hashes, and each one's lsn.
    pub recs: Vec<(u64, Rec)>,
}

impl Chunk {
    /// Seq of the last record.
    pub fn last_seq(&self) -> u64 {
        self.recs.last().map_or(0, |(_, r)| r.seq)
    }
}

/// Decodes the chunk of `key` starting at `first_seq` and verifies its chain from its `prev`
/// to its `end`. Errors name the run and the first seq they concern.
pub(crate) fn decode_chunk(
    key: &RunKey,
    first_seq: u64,
    bytes: &[u8],
) -> Result<Chunk, crate::store::Error> {
    let corrupt = |seq: u64, detail: String| crate::store::Error::Corrupt {
        run: Some(key.clone()),
        seq: Some(seq),
        detail: format!("stored chunk from seq {first_seq}: {detail}"),
    };
    let mut r = Reader { b: bytes };
    r.version("chunk").map_err(|e| corrupt(first_seq, e))?;
    let prev = r.hash("prev hash").map_err(|e| corrupt(first_seq, e))?;
    let end = r.hash("end hash").map_err(|e| corrupt(first_seq, e))?;
    let first_lsn = r.varint("first lsn").map_err(|e| corrupt(first_seq, e))?;
    let count = r.varint("count").map_err(|e| corrupt(first_seq, e))?;
    if count == 0 {
        return Err(corrupt(first_seq, "empty chunk".into()));
    }
    let mut recs = Vec::with_capacity((count as usize).min(bytes.len()));
    let mut hash = prev;
    let mut time: TimeMs = 0;
    for i in 0..count {
        let seq = first_seq + i;
        let mut one = || -> Result<(u64, Rec), Malformed> {
            let lsn = first_lsn.saturating_add(r.varint("lsn")?);
            time = time.wrapping_add(unzigzag(r.varint("time")?));
            let kind = r.kind()?;
            let attrs = r.attrs()?;
            Ok((
                lsn,
                Rec {
                    seq,
                    time_ms: time,
                    kind,
                    hash: [0; 32],
                    attrs,
                },
            ))
        };
        let (lsn, mut rec) = one().map_err(|e| corrupt(seq, e))?;
        hash = record_hash(&hash, seq, rec.time_ms, rec.kind, &rec.attrs);
        rec.hash = hash;
        recs.push((lsn, rec));
    }
    r.end("the chunk").map_err(|e| corrupt(first_seq, e))?;
    if hash != end {
        let last = first_seq + count - 1;
        return Err(corrupt(
            first_seq,
            format!(
                "[STF-C2-HASH] the hash chain of seq {first_seq}..={last} does not verify: a record was altered"
            ),
        ));
    }
    Ok(Chunk { prev, recs })
}

#[cfg(test)]
mod tests;
