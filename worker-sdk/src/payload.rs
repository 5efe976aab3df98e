//! Payloads on the wire: JSON bytes tagged "json/plain".
//!
//! Logs never carry payload contents, only their size and a short blake3 hash
//! ([`short_hash`]).

use serde::Serialize;
use serde::de::DeserializeOwned;
use steadfast_proto::v1::Payload;

/// The encoding tag of JSON payloads, the only encoding this SDK produces.
pub const JSON_ENCODING: &str = "json/plain";

/// Encodes `value` as a JSON payload.
pub fn encode<T: Serialize + ?Sized>(value: &T) -> Result<Payload, serde_json::Error> {
    Ok(Payload {
        encoding: JSON_ENCODING.to_owned(),
        data: serde_json::to_vec(value)?,
    })
}

/// Decodes a JSON payload (an empty encoding tag means JSON too). A missing payload, or one
/// with no bytes, decodes as JSON `null`, so that `()` and `Option<T>` round-trip.
pub fn decode<T: DeserializeOwned>(payload: Option<&Payload>) -> Result<T, serde_json::Error> {
    match payload {
        Some(p) if !p.data.is_empty() => {
            if !p.encoding.is_empty() && p.encoding != JSON_ENCODING {
                return Err(serde::de::Error::custom(format!(
                    "unsupported payload encoding {:?} (expected {JSON_ENCODING})",
                    p.encoding
                )));
            }
            serde_json::from_slice(&p.data)
        }
        _ => serde_json::from_slice(b"null"),
    }
}

/// The first 8 bytes of blake3(data), in hex: how payloads appear in logs and errors.
pub fn short_hash(data: &[u8]) -> String {
    let hash = blake3::hash(data);
    hex::encode(&hash.as_bytes()[..8])
}

/// The data of an optional payload, empty when absent.
pub(crate) fn data_of(payload: Option<&Payload>) -> &[u8] {
    payload.map(|p| p.data.as_slice()).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_null() {
        let p = encode(&vec![1, 2]).unwrap();
        assert_eq!(p.encoding, JSON_ENCODING);
        assert_eq!(decode::<Vec<i32>>(Some(&p)).unwrap(), vec![1, 2]);
        assert_eq!(decode::<Option<i32>>(None).unwrap(), None);
        decode::<()>(None).unwrap();
        let bad = Payload {
            encoding: "binary/plain".into(),
            data: vec![1],
        };
        assert!(decode::<i32>(Some(&bad)).is_err());
        assert_eq!(short_hash(b"x").len(), 16);
    }
}
