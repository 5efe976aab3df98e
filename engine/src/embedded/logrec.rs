//! The store's records in the segment log (the log itself treats them as opaque bytes).
//!
//! ```text
//! kind 1, append: version u8 = 1 | count u32 LE | count x (len u32 LE | encoded event record)
//! kind 2, blob:   version u8 = 1 | blake3 hash (32) | data
//! ```
//! One append is one log record, so an append is atomic in the log: it is either wholly in
//! the durable prefix or wholly cut with a torn tail. A blob record is written before the
//! first append that refers to it, in the same submission.

use crate::payload::Hash;

/// Log record kind of an append (events of one run).
pub(crate) const KIND_APPEND: u8 = 1;
/// Log record kind of a blob.
pub(crate) const KIND_BLOB: u8 = 2;

const VERSION: u8 = 1;

/// Encodes an append record from encoded event records.
pub(crate) fn encode_append<'a>(
    records: impl ExactSizeIterator<Item = &'a [u8]> + Clone,
) -> Vec<u8> {
    let len = 5 + records.clone().map(|r| 4 + r.len()).sum::<usize>();
    let mut out = Vec::with_capacity(len);
    out.push(VERSION);
    out.extend_from_slice(&(records.len() as u32).to_le_bytes());
    for r in records {
        out.extend_from_slice(&(r.len() as u32).to_le_bytes());
        out.extend_from_slice(r);
    }
    out
}

/// The encoded event records of an append record.
pub(crate) fn decode_append(data: &[u8]) -> Result<Vec<&[u8]>, String> {
    let (&version, rest) = data.split_first().ok_or("empty append record")?;
    if version != VERSION {
        return Err(format!(
            "append record version {version} (this build reads {VERSION})"
        ));
    }
    let (count, mut rest) = take_u32(rest).ok_or("append record without a count")?;
    let mut out = Vec::with_capacity((count as usize).min(rest.len() / 4));
    for i in 0..count {
        let (len, r) = take_u32(rest)
            .ok_or_else(|| format!("append record ends before event {i} of {count}"))?;
        let rec = r
            .get(..len as usize)
            .ok_or_else(|| format!("event {i} of {count} overruns the append record"))?;
        out.push(rec);
        rest = &r[len as usize..];
    }
    if !rest.is_empty() {
        return Err(format!(
            "{} trailing bytes after {count} events",
            rest.len()
        ));
    }
    Ok(out)
}

fn take_u32(b: &[u8]) -> Option<(u32, &[u8])> {
    let (n, rest) = b.split_at_checked(4)?;
    Some((u32::from_le_bytes(n.try_into().ok()?), rest))
}

/// Encodes a blob record.
pub(crate) fn encode_blob(hash: &Hash, data: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(33 + data.len());
    out.push(VERSION);
    out.extend_from_slice(hash);
    out.extend_from_slice(data);
    out
}

/// The hash and data of a blob record, verified against each other.
pub(crate) fn decode_blob(data: &[u8]) -> Result<(Hash, &[u8]), String> {
    let (&version, rest) = data.split_first().ok_or("empty blob record")?;
    if version != VERSION {
        return Err(format!(
            "blob record version {version} (this build reads {VERSION})"
        ));
    }
    let (hash, body) = rest
        .split_at_checked(32)
        .ok_or("blob record shorter than its hash")?;
    let hash: Hash = hash.try_into().map_err(|_| "blob hash is not 32 bytes")?;
    if *blake3::hash(body).as_bytes() != hash {
        return Err(format!(
            "blob {} does not match its hash",
            hex::encode(hash)
        ));
    }
    Ok((hash, body))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn append_round_trip_and_damage() {
        let recs: Vec<&[u8]> = vec![b"one", b"", b"three"];
        let enc = encode_append(recs.iter().copied());
        assert_eq!(decode_append(&enc).unwrap(), recs);
        for cut in 0..enc.len() {
            assert!(decode_append(&enc[..cut]).is_err(), "cut at {cut}");
        }
        let mut longer = enc.clone();
        longer.push(0);
        assert!(decode_append(&longer).is_err());
    }

    #[test]
    fn blob_round_trip_and_damage() {
        let data = vec![7u8; 1000];
        let h = *blake3::hash(&data).as_bytes();
        let enc = encode_blob(&h, &data);
        assert_eq!(decode_blob(&enc).unwrap(), (h, &data[..]));
        let mut bad = enc.clone();
        bad[500] ^= 1;
        assert!(decode_blob(&bad).is_err());
        assert!(decode_blob(&enc[..20]).is_err());
    }
}
