//! In-process fuzzing of every decoder of what the engine reads back from disk (issue 12):
//! log frames, event records, and the embedded store's append, blob, drop and chunk records.
//! Inputs are valid encodings damaged at random (bytes changed, cut, inserted) and bytes that
//! were never an encoding. Properties: no decoder panics, and damage to a valid encoding is
//! an error (or, for an event record, a record whose chain hash no longer verifies).
//!
//! 256 cases per target by default; `FUZZ_CASES=N` for more (the figures in GUARANTEES.md
//! were run so). All randomness comes from one printed seed; `TEST_SEED=...` replays it.

use proptest::collection::vec;
use proptest::prelude::*;
use proptest::test_runner::{Config, RngAlgorithm, TestRng, TestRunner};

use crate::embedded::codec;
use crate::event::{
    Event, EventRecord, ProgressReported, TimerStarted, decode_record, encode_record, genesis_hash,
    record_hash,
};
use crate::ids::{RunId, RunKey};
use crate::log::frame::{self, Decoded, FrameHeader};

/// Cases per target without `FUZZ_CASES`.
const CASES_DEFAULT: u32 = 256;

/// A runner whose every choice comes from the test's seed.
fn runner(target: &str) -> TestRunner {
    let seed: u64 = std::env::var("TEST_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(rand::random);
    let cases = std::env::var("FUZZ_CASES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(CASES_DEFAULT);
    eprintln!("fuzz {target}: {cases} cases, seed {seed} (replay with TEST_SEED={seed})");
    let mut bytes = [0u8; 32];
    bytes[..8].copy_from_slice(&seed.to_le_bytes());
    TestRunner::new_with_rng(
        Config {
            cases,
            failure_persistence: None,
            ..Config::default()
        },
        TestRng::from_seed(RngAlgorithm::ChaCha, &bytes),
    )
}

/// Damage to apply to a valid encoding: byte changes (position, xor value), then a cut.
#[derive(Debug, Clone)]
struct Damage {
    changes: Vec<(usize, u8)>,
    inserts: Vec<(usize, u8)>,
    cut: Option<usize>,
}

fn damage() -> impl Strategy<Value = Damage> {
    (
        vec((any::<usize>(), 1u8..=255), 0..4),
        vec((any::<usize>(), any::<u8>()), 0..2),
        proptest::option::weighted(0.2, any::<usize>()),
    )
        .prop_map(|(changes, inserts, cut)| Damage {
            changes,
            inserts,
            cut,
        })
}

impl Damage {
    /// `bytes` damaged within its first `len` bytes (the region the decoder must check).
    fn apply(&self, bytes: &[u8], len: usize) -> Vec<u8> {
        let mut out = bytes.to_vec();
        if len == 0 {
            return out;
        }
        for (at, x) in &self.changes {
            out[at % len] ^= x;
        }
        for (at, b) in &self.inserts {
            out.insert(at % len, *b);
        }
        if let Some(at) = self.cut {
            out.truncate(at % len);
        }
        out
    }
}

fn key() -> RunKey {
    RunKey::new(
        "fuzz",
        RunId::parse("0190f0b2-7c1d-7aa4-9a8b-1c2d3e4f5a6b").unwrap(),
    )
}

fn record(seq: u64, message: &str) -> (EventRecord, Vec<u8>) {
    let event = if seq.is_multiple_of(2) {
        Event::TimerStarted(TimerStarted {
            command_seq: seq as u32,
            fire_at_ms: 1_700_000_000_000 + seq as i64,
        })
    } else {
        Event::ProgressReported(ProgressReported {
            command_seq: seq as u32,
            done: seq,
            total: 100,
            message: message.into(),
        })
    };
    let attrs = event.encode_attrs();
    let prev = genesis_hash(&key());
    let hash = record_hash(&prev, seq, 1_700_000_000_000, event.kind(), &attrs);
    let r = EventRecord {
        seq,
        time_ms: 1_700_000_000_000,
        hash,
        event,
    };
    (r, attrs)
}

#[test]
fn log_frames() {
    const MAX: usize = 1 << 16;
    let strategy = (
        vec(any::<u8>(), 0..600),
        any::<u64>(),
        any::<u64>(),
        any::<bool>(),
        damage(),
        vec(any::<u8>(), 0..200),
    );
    runner("log frames")
        .run(&strategy, |(payload, lsn, batch, last, dmg, noise)| {
            let header = FrameHeader {
                lsn,
                batch,
                kind: 1,
                last_in_batch: last,
            };
            let mut buf = Vec::new();
            frame::encode(&mut buf, header, &payload);
            let size = buf.len();
            // The valid frame decodes to itself.
            match frame::decode(&buf, MAX) {
                Decoded::Frame {
                    header: h,
                    payload: p,
                    size: s,
                } => prop_assert!(h == header && p == payload.as_slice() && s == size),
                other => prop_assert!(false, "a valid frame: {other:?}"),
            }
            // Damaged, it is never taken for a frame with other contents.
            let bad = dmg.apply(&buf, size);
            let damaged = bad.len() != size || bad[..] != buf[..];
            if damaged
                && let Decoded::Frame {
                    header: h,
                    payload: p,
                    ..
                } = frame::decode(&bad, MAX)
            {
                prop_assert!(
                    h == header && p == payload.as_slice(),
                    "damage accepted as a different frame"
                );
            }
            // Bytes that were never a frame, and frames followed by noise: no panic.
            let _ = frame::decode(&noise, MAX);
            let _ = frame::plausible_frame(&noise, MAX);
            buf.extend_from_slice(&noise);
            let _ = frame::decode(&buf[size.min(buf.len())..], MAX);
            Ok(())
        })
        .unwrap();
}

#[test]
fn event_records() {
    let strategy = (
        1u64..1_000,
        "[ -~\u{80}-\u{10ffff}]{0,80}",
        damage(),
        vec(any::<u8>(), 0..300),
    );
    runner("event records")
        .run(&strategy, |(seq, message, dmg, noise)| {
            let (rec, attrs) = record(seq, &message);
            let bytes = encode_record(&key(), &rec, &attrs);
            let prev = genesis_hash(&key());
            let d = decode_record(&bytes).expect("a valid record decodes");
            prop_assert!(d.verifies_after(&prev) && d.record == rec);
            let bad = dmg.apply(&bytes, bytes.len());
            if bad != bytes
                && let Ok(d) = decode_record(&bad)
            {
                // Damage that still decodes must break the chain, or change nothing the
                // record says (msgpack has more than one encoding of some values).
                prop_assert!(
                    !d.verifies_after(&prev) || d.record == rec,
                    "damage accepted: {:?}",
                    d.record
                );
            }
            let _ = decode_record(&noise);
            for kind in 0..64u16 {
                if let Some(k) = crate::event::EventKind::from_u16(kind) {
                    let _ = Event::decode_attrs(k, &noise);
                }
            }
            Ok(())
        })
        .unwrap();
}

#[test]
fn embedded_records() {
    let strategy = (vec(any::<u8>(), 0..300), damage(), vec(any::<u8>(), 0..300));
    runner("embedded records")
        .run(&strategy, |(data, dmg, noise)| {
            let hash = *blake3::hash(&data).as_bytes();
            let addr =
                crate::embedded::blob::BlobAddr::scoped("tenant", hash).expect("a short namespace");
            let blob = codec::encode_blob(&addr, &data);
            prop_assert!(codec::decode_blob(&blob).is_ok());
            let bad = dmg.apply(&blob, blob.len());
            if bad != blob {
                prop_assert!(codec::decode_blob(&bad).is_err(), "damaged blob accepted");
            }
            let keys = vec![key(); data.len() % 4];
            let drop = codec::encode_drop(&keys);
            prop_assert!(codec::decode_drop(&drop).unwrap() == keys);
            // A drop record has no checksum of its own (the frame's CRC covers it): damage
            // may name other runs, but must not panic.
            let _ = codec::decode_drop(&dmg.apply(&drop, drop.len()));
            let _ = codec::decode_blob(&noise);
            let _ = codec::decode_drop(&noise);
            let _ = codec::decode_append_request(&noise);
            let _ = codec::decode_chunk(&key(), 1, &noise);
            Ok(())
        })
        .unwrap();
}
