//! Identifiers: namespaces, run ids and the key that names one run's history.

use std::fmt;

use serde::{Deserialize, Serialize};

/// Longest namespace, workflow id, type or task queue name accepted (bytes).
pub const NAME_LEN_MAX: usize = 256;

/// The namespace used when a request names none.
pub const DEFAULT_NAMESPACE: &str = "default";

/// A run's id: a UUIDv7, so ids sort by creation time.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct RunId(pub uuid::Uuid);

impl RunId {
    /// A new time-ordered id.
    pub fn new_v7() -> RunId {
        RunId(uuid::Uuid::now_v7())
    }

    /// Parses the canonical hyphenated form.
    pub fn parse(s: &str) -> Result<RunId, uuid::Error> {
        uuid::Uuid::parse_str(s).map(RunId)
    }

    /// The 16 raw bytes (big-endian, so byte order is time order).
    pub fn as_bytes(&self) -> &[u8; 16] {
        self.0.as_bytes()
    }
}

impl fmt::Display for RunId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0.hyphenated(), f)
    }
}

impl fmt::Debug for RunId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "RunId({self})")
    }
}

/// Names one run's history: its namespace and its run id.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct RunKey {
    /// The tenant boundary.
    pub namespace: String,
    /// The run.
    pub run_id: RunId,
}

impl RunKey {
    /// A key in `namespace`.
    pub fn new(namespace: impl Into<String>, run_id: RunId) -> RunKey {
        RunKey {
            namespace: namespace.into(),
            run_id,
        }
    }

    /// Bytes that sort by namespace, then run id: `len(ns) as u8 | ns | run_id`.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(1 + self.namespace.len() + 16);
        out.push(self.namespace.len() as u8);
        out.extend_from_slice(self.namespace.as_bytes());
        out.extend_from_slice(self.run_id.as_bytes());
        out
    }

    /// Inverse of [`RunKey::to_bytes`]; `None` on malformed input.
    pub fn from_bytes(b: &[u8]) -> Option<RunKey> {
        let n = *b.first()? as usize;
        if b.len() != 1 + n + 16 {
            return None;
        }
        let namespace = std::str::from_utf8(&b[1..1 + n]).ok()?.to_string();
        let id = uuid::Uuid::from_slice(&b[1 + n..]).ok()?;
        Some(RunKey {
            namespace,
            run_id: RunId(id),
        })
    }
}

impl fmt::Display for RunKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.namespace, self.run_id)
    }
}

impl fmt::Debug for RunKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "RunKey({self})")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn run_key_bytes_round_trip() {
        let k = RunKey::new("default", RunId::new_v7());
        assert_eq!(RunKey::from_bytes(&k.to_bytes()), Some(k.clone()));
        assert_eq!(RunKey::from_bytes(&k.to_bytes()[1..]), None);
        assert_eq!(RunKey::from_bytes(&[]), None);
    }

    #[test]
    fn v7_ids_sort_by_time() {
        let a = RunId::new_v7();
        let b = RunId::new_v7();
        assert!(a < b);
        assert!(a.as_bytes() < b.as_bytes());
    }
}
