//! Payloads: bytes plus an encoding tag, stored inline or as a content-addressed blob.

use serde::{Deserialize, Serialize};

/// The default encoding: UTF-8 JSON.
pub const ENCODING_JSON: &str = "json/plain";

/// Largest payload accepted from a request (bytes).
pub const PAYLOAD_BYTES_MAX: usize = 2 * 1024 * 1024;

/// Payloads larger than this are stored once as a blob and referred to by hash.
pub const INLINE_BYTES_MAX: usize = 512;

/// A blake3 hash (32 bytes).
pub type Hash = [u8; 32];

/// A value in an event: bytes and how to read them.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct Payload {
    /// "json/plain", "binary/plain", ...
    pub encoding: String,
    /// The bytes; empty when `blob` is set.
    #[serde(with = "serde_bytes")]
    pub data: Vec<u8>,
    /// Set when the data is stored as a content-addressed blob.
    pub blob: Option<BlobRef>,
}

/// A reference to a blob: its blake3 hash and length.
#[derive(Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Debug)]
pub struct BlobRef {
    /// blake3 of the data.
    #[serde(with = "serde_bytes_array")]
    pub hash: Hash,
    /// Length of the data.
    pub len: u64,
}

impl Payload {
    /// A JSON payload from bytes that are assumed to be JSON.
    pub fn json(data: impl Into<Vec<u8>>) -> Payload {
        Payload {
            encoding: ENCODING_JSON.into(),
            data: data.into(),
            blob: None,
        }
    }

    /// Serialises `value` as JSON.
    pub fn to_json<T: Serialize>(value: &T) -> Payload {
        Payload::json(serde_json::to_vec(value).expect("serde_json::to_vec of a Serialize value"))
    }

    /// The hash that identifies these bytes (the content address).
    pub fn data_hash(&self) -> Hash {
        match &self.blob {
            Some(b) => b.hash,
            None => *blake3::hash(&self.data).as_bytes(),
        }
    }

    /// Logical size of the data, inline or not.
    pub fn len(&self) -> u64 {
        match &self.blob {
            Some(b) => b.len,
            None => self.data.len() as u64,
        }
    }

    /// Whether there are no bytes at all.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl std::fmt::Debug for Payload {
    // Payloads never reach logs: only their size and hash.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let h = self.data_hash();
        write!(
            f,
            "Payload({}, {} B, blake3:{}{})",
            self.encoding,
            self.len(),
            hex::encode(&h[..6]),
            if self.blob.is_some() { ", blob" } else { "" }
        )
    }
}

pub(crate) mod serde_bytes_array {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &[u8; 32], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(v)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<[u8; 32], D::Error> {
        let v: serde_bytes::ByteBuf = Deserialize::deserialize(d)?;
        v.as_ref()
            .try_into()
            .map_err(|_| serde::de::Error::invalid_length(v.len(), &"32 bytes"))
    }
}
