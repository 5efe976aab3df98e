//! Round trips of the byte formats, and damage: never a panic, always an error.

use super::*;
use crate::event::genesis_hash;
use crate::ids::{RunId, RunKey};

fn key() -> RunKey {
    RunKey::new("ns", RunId(uuid::Uuid::from_u128(42)))
}

fn recs(key: &RunKey, n: u64, time_ms: TimeMs) -> Vec<Rec> {
    let mut prev = genesis_hash(key);
    (1..=n)
        .map(|seq| {
            let attrs = vec![seq as u8; seq as usize * 3];
            let kind = EventKind::SignalReceived;
            let hash = record_hash(&prev, seq, time_ms, kind, &attrs);
            prev = hash;
            Rec {
                seq,
                time_ms,
                kind,
                hash,
                attrs,
            }
        })
        .collect()
}

#[test]
fn varints_round_trip() {
    for v in [0u64, 1, 127, 128, 300, u32::MAX as u64, u64::MAX] {
        let mut b = Vec::new();
        put_varint(&mut b, v);
        assert_eq!(Reader { b: &b }.varint("v").unwrap(), v);
        for cut in 0..b.len() {
            assert!(Reader { b: &b[..cut] }.varint("v").is_err());
        }
    }
    for v in [0i64, 1, -1, i64::MIN, i64::MAX, 1_700_000_000_000] {
        assert_eq!(unzigzag(zigzag(v)), v);
    }
    assert!(Reader { b: &[0xff; 11] }.varint("v").is_err());
}

#[test]
fn append_round_trip_and_damage() {
    let k = key();
    let rs = recs(&k, 5, 1_700_000_000_123);
    let enc = encode_append(&k, rs.iter(), None);
    assert_eq!(decode_append(&enc).unwrap(), (k.clone(), rs.clone()));
    for cut in 0..enc.len() {
        assert!(decode_append(&enc[..cut]).is_err(), "cut at {cut}");
    }
    let mut longer = enc.clone();
    longer.push(0);
    assert!(decode_append(&longer).is_err());
    // Any flipped bit either fails to decode or changes what a chain check sees.
    for i in 0..enc.len() {
        let mut bad = enc.clone();
        bad[i] ^= 0x10;
        if let Ok((k2, r2)) = decode_append(&bad) {
            let mut prev = genesis_hash(&k2);
            let ok = r2.iter().all(|r| {
                let v = r.verifies_after(&prev);
                prev = r.hash;
                v
            }) && r2.first().map(|r| r.seq) == Some(1);
            assert!(
                !ok || (k2 == k && r2 == rs),
                "flip at byte {i} went unnoticed"
            );
        }
    }
}

#[test]
fn chunk_round_trip_and_every_flip_is_caught() {
    let k = key();
    let rs = recs(&k, 6, 1_700_000_000_000);
    let with_lsn: Vec<(u64, &Rec)> = rs
        .iter()
        .enumerate()
        .map(|(i, r)| (100 + i as u64 / 2, r))
        .collect();
    let enc = encode_chunk(&genesis_hash(&k), &with_lsn);
    let c = decode_chunk(&k, 1, &enc).unwrap();
    assert_eq!(c.prev, genesis_hash(&k));
    assert_eq!(
        c.recs.iter().map(|(_, r)| r.clone()).collect::<Vec<_>>(),
        rs
    );
    assert_eq!(
        c.recs.iter().map(|(l, _)| *l).collect::<Vec<_>>(),
        vec![100, 100, 101, 101, 102, 102]
    );
    assert_eq!(c.last_seq(), 6);
    // The chunk is bound to its position: at another seq it does not verify.
    assert!(decode_chunk(&k, 2, &enc).is_err());
    for i in 0..enc.len() {
        for bit in 0..8 {
            let mut bad = enc.clone();
            bad[i] ^= 1 << bit;
            match decode_chunk(&k, 1, &bad) {
                Err(crate::store::Error::Corrupt {
                    run, seq: Some(_), ..
                }) => assert_eq!(run, Some(k.clone())),
                Err(e) => panic!("flip at {i}.{bit}: untyped {e}"),
                // Only the lsn deltas are outside the hash chain.
                Ok(c2) => assert_eq!(
                    c2.recs.iter().map(|(_, r)| r.clone()).collect::<Vec<_>>(),
                    rs,
                    "flip at {i}.{bit}"
                ),
            }
        }
    }
    for cut in 0..enc.len() {
        assert!(decode_chunk(&k, 1, &enc[..cut]).is_err());
    }
}

#[test]
fn blob_round_trip_and_damage() {
    let data = vec![7u8; 1000];
    let h = *blake3::hash(&data).as_bytes();
    let addr = BlobAddr::scoped("tenant-a", h).unwrap();
    let enc = encode_blob(&addr, &data);
    assert_eq!(decode_blob(&enc).unwrap(), (addr, &data[..]));
    let mut bad = enc.clone();
    bad[500] ^= 1;
    assert!(decode_blob(&bad).is_err());
    assert!(decode_blob(&enc[..20]).is_err());
    assert!(decode_blob(&[]).is_err());
}

/// A blob record written before blobs were scoped (version 1: no namespace) still decodes,
/// as a legacy blob, and keeps its old sled key: old data dirs open and serve it.
#[test]
fn legacy_blob_records_decode_unscoped() {
    let data = vec![9u8; 300];
    let h = *blake3::hash(&data).as_bytes();
    let mut v1 = vec![1u8];
    v1.extend_from_slice(&h);
    v1.extend_from_slice(&data);
    let (addr, got) = decode_blob(&v1).unwrap();
    assert!(addr.is_legacy());
    assert_eq!((addr.hash, got), (h, &data[..]));
    let mut old_key = vec![b'b'];
    old_key.extend_from_slice(&h);
    assert_eq!(crate::embedded::keys::blob(&addr), old_key);
    let scoped = BlobAddr::scoped("", h).unwrap();
    assert_eq!(scoped.namespace, "default");
    assert_ne!(crate::embedded::keys::blob(&scoped), old_key);
    assert_eq!(scoped.legacy(), addr);
    // An unknown version is refused, naming it.
    let mut v9 = v1.clone();
    v9[0] = 9;
    assert!(decode_blob(&v9).unwrap_err().contains("version 9"));
}
