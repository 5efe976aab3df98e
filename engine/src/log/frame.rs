//! The on-disk frame: one record, checksummed, tagged with its lsn and batch.
//!
//! # Layout
//!
//! Every frame starts at an 8-byte aligned offset inside a segment and is padded with zero
//! bytes to the next multiple of 8. All integers are little-endian.
//!
//! ```text
//! offset size field
//!      0    4 crc         crc32 of bytes 4..frame_len (the rest of the header and the payload)
//!      4    4 frame_len   header + payload bytes, padding excluded; 0 = end of written data
//!      8    8 lsn         global record number, consecutive across the log
//!     16    8 batch       group-commit batch number, consecutive across the log
//!     24    1 kind        opaque tag chosen by the caller
//!     25    1 flags       bit 0: last frame of its batch; other bits must be 0
//!     26    1 version     FRAME_VERSION
//!     27    1 reserved    must be 0
//!     28    4 header_crc  crc32 of bytes 4..28
//!     32    n payload
//! 32 + n    p padding     zeros up to the next multiple of 8 (checked on read)
//! ```
//!
//! Why two checksums: `crc` is what makes a frame trustworthy; `header_crc` lets recovery
//! test every aligned offset after a bad frame for "is this a real frame of a later batch?"
//! in constant time, without trusting an unverified length to decide how much to checksum.
//! A zero `frame_len` can never belong to a real frame (the header alone is 32 bytes), so the
//! zeros of a preallocated segment read as "end of data".

use crate::log::Lsn;

/// Bytes of a frame header; the payload follows it.
pub const FRAME_HEADER_BYTES: usize = 32;
/// Frames start at offsets that are multiples of this, and are zero-padded to it.
pub const FRAME_ALIGN_BYTES: usize = 8;
/// The frame format version written in every header. Never reuse a retired number.
pub(crate) const FRAME_VERSION: u8 = 1;
/// `flags` bit: this frame is the last one of its batch (the batch is complete).
pub(crate) const FLAG_LAST_IN_BATCH: u8 = 0b0000_0001;

/// Bytes a record with a payload of `payload_len` bytes occupies on disk, padding included.
pub fn frame_bytes(payload_len: usize) -> usize {
    align_up(FRAME_HEADER_BYTES + payload_len)
}

/// Rounds `n` up to the next multiple of [`FRAME_ALIGN_BYTES`].
pub(crate) fn align_up(n: usize) -> usize {
    n.div_ceil(FRAME_ALIGN_BYTES) * FRAME_ALIGN_BYTES
}

/// The fields of a verified frame header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct FrameHeader {
    pub lsn: Lsn,
    pub batch: u64,
    pub kind: u8,
    pub last_in_batch: bool,
}

/// Appends one encoded frame (header, payload, padding) to `buf`.
///
/// The caller guarantees `payload.len()` is within the record limit, which is far below
/// `u32::MAX`.
pub(crate) fn encode(buf: &mut Vec<u8>, header: FrameHeader, payload: &[u8]) {
    let frame_len = FRAME_HEADER_BYTES + payload.len();
    let frame_len_u32 = u32::try_from(frame_len).expect("record limit keeps frames below 4 GiB");
    let start = buf.len();
    let mut h = [0u8; FRAME_HEADER_BYTES];
    h[4..8].copy_from_slice(&frame_len_u32.to_le_bytes());
    h[8..16].copy_from_slice(&header.lsn.to_le_bytes());
    h[16..24].copy_from_slice(&header.batch.to_le_bytes());
    h[24] = header.kind;
    h[25] = if header.last_in_batch {
        FLAG_LAST_IN_BATCH
    } else {
        0
    };
    h[26] = FRAME_VERSION;
    let header_crc = crc32fast::hash(&h[4..28]);
    h[28..32].copy_from_slice(&header_crc.to_le_bytes());
    let mut hasher = crc32fast::Hasher::new();
    hasher.update(&h[4..]);
    hasher.update(payload);
    h[0..4].copy_from_slice(&hasher.finalize().to_le_bytes());
    buf.extend_from_slice(&h);
    buf.extend_from_slice(payload);
    buf.resize(start + align_up(frame_len), 0);
}

/// What sits at one offset of a segment.
#[derive(Debug)]
pub(crate) enum Decoded<'a> {
    /// A zero length: nothing was written here (yet).
    End,
    /// A verified frame; `size` includes the padding.
    Frame {
        header: FrameHeader,
        payload: &'a [u8],
        size: usize,
    },
    /// Bytes that are not a whole, intact frame: torn or corrupted. Never trusted.
    Bad(String),
    /// A frame whose checksums verify but whose fields this version cannot accept: it was
    /// written like that, so it cannot be a torn write.
    Invalid(String),
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().expect("4 bytes"))
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().expect("8 bytes"))
}

/// The lsn and batch named by a frame header at the start of `buf` whose header checksum
/// verifies and whose length is possible, even if the frame runs past `buf`: what recovery
/// needs to tell a frame of a later batch from a piece of the torn one.
pub(crate) fn plausible_frame(buf: &[u8], max_frame_bytes: usize) -> Option<(Lsn, u64)> {
    if buf.len() < FRAME_HEADER_BYTES {
        return None;
    }
    let len = u32_at(buf, 4) as usize;
    if !(FRAME_HEADER_BYTES..=max_frame_bytes).contains(&len) {
        return None;
    }
    (crc32fast::hash(&buf[4..28]) == u32_at(buf, 28)).then(|| (u64_at(buf, 8), u64_at(buf, 16)))
}

/// Decodes the frame at the start of `buf` (the rest of the segment). Never panics and never
/// allocates: lengths are checked against `max_frame_bytes` and the bytes actually present.
pub(crate) fn decode(buf: &[u8], max_frame_bytes: usize) -> Decoded<'_> {
    if buf.len() < 8 {
        // Too short to hold a length: the segment ends here.
        return if buf.iter().all(|&b| b == 0) {
            Decoded::End
        } else {
            Decoded::Bad(format!(
                "{} stray bytes at the end of the segment",
                buf.len()
            ))
        };
    }
    let len = u32_at(buf, 4) as usize;
    if len == 0 {
        return Decoded::End;
    }
    if buf.len() < FRAME_HEADER_BYTES {
        return Decoded::Bad(format!(
            "truncated header: {} of {FRAME_HEADER_BYTES} bytes",
            buf.len()
        ));
    }
    if crc32fast::hash(&buf[4..28]) != u32_at(buf, 28) {
        return Decoded::Bad("header checksum mismatch".into());
    }
    if len < FRAME_HEADER_BYTES || len > max_frame_bytes {
        return Decoded::Bad(format!(
            "impossible frame length {len} (allowed {FRAME_HEADER_BYTES}..={max_frame_bytes})"
        ));
    }
    let size = align_up(len);
    if size > buf.len() {
        return Decoded::Bad(format!(
            "truncated frame: needs {size} bytes, {} remain",
            buf.len()
        ));
    }
    if crc32fast::hash(&buf[4..len]) != u32_at(buf, 0) {
        return Decoded::Bad("frame checksum mismatch".into());
    }
    if buf[len..size].iter().any(|&b| b != 0) {
        return Decoded::Bad("nonzero padding after the frame".into());
    }
    let (flags, version, reserved) = (buf[25], buf[26], buf[27]);
    if version != FRAME_VERSION {
        return Decoded::Invalid(format!("unknown frame version {version}"));
    }
    if flags & !FLAG_LAST_IN_BATCH != 0 || reserved != 0 {
        return Decoded::Invalid(format!(
            "unknown flags {flags:#04x} or reserved byte {reserved:#04x}"
        ));
    }
    Decoded::Frame {
        header: FrameHeader {
            lsn: u64_at(buf, 8),
            batch: u64_at(buf, 16),
            kind: buf[24],
            last_in_batch: flags & FLAG_LAST_IN_BATCH != 0,
        },
        payload: &buf[FRAME_HEADER_BYTES..len],
        size,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAX: usize = 1 << 20;

    fn one(lsn: Lsn, payload: &[u8], last: bool) -> Vec<u8> {
        let mut buf = Vec::new();
        let header = FrameHeader {
            lsn,
            batch: 7,
            kind: 3,
            last_in_batch: last,
        };
        encode(&mut buf, header, payload);
        buf
    }

    #[test]
    fn round_trip_and_padding() {
        for n in [0usize, 1, 7, 8, 9, 100] {
            let payload: Vec<u8> = (0..n).map(|i| i as u8 ^ 0x5a).collect();
            let buf = one(42, &payload, n % 2 == 0);
            assert_eq!(buf.len(), frame_bytes(n));
            assert_eq!(buf.len() % FRAME_ALIGN_BYTES, 0);
            match decode(&buf, MAX) {
                Decoded::Frame {
                    header,
                    payload: p,
                    size,
                } => {
                    assert_eq!(p, &payload[..]);
                    assert_eq!(size, buf.len());
                    assert_eq!(header.lsn, 42);
                    assert_eq!(header.batch, 7);
                    assert_eq!(header.kind, 3);
                    assert_eq!(header.last_in_batch, n % 2 == 0);
                }
                other => panic!("expected a frame, got {other:?}"),
            }
        }
    }

    /// Pins the encoding: a format change must be deliberate (bump FRAME_VERSION).
    #[test]
    fn encoding_snapshot() {
        let buf = one(1, b"abc", true);
        let hex: String = buf.iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(buf.len(), 40);
        assert_eq!(&hex[8..16], "23000000", "frame_len = 35");
        assert_eq!(&hex[16..32], "0100000000000000", "lsn");
        assert_eq!(&hex[32..48], "0700000000000000", "batch");
        assert_eq!(&hex[48..56], "03010100", "kind, flags, version, reserved");
        assert_eq!(&hex[64..70], "616263", "payload");
        assert_eq!(&hex[70..], "0000000000", "padding");
        assert_eq!(
            u32_at(&buf, 0),
            crc32fast::hash(&buf[4..35]),
            "crc covers header and payload"
        );
    }

    #[test]
    fn every_single_bit_flip_is_detected() {
        let buf = one(9, b"hello, frame", false);
        for bit in 0..buf.len() * 8 {
            let mut b = buf.clone();
            b[bit / 8] ^= 1 << (bit % 8);
            match decode(&b, MAX) {
                Decoded::Bad(_) | Decoded::End => {}
                other => panic!("bit {bit}: flip not detected: {other:?}"),
            }
        }
    }

    #[test]
    fn every_truncation_is_bad_or_end() {
        let buf = one(9, b"hello, frame", false);
        for cut in 0..buf.len() {
            match decode(&buf[..cut], MAX) {
                Decoded::Bad(_) => {}
                Decoded::End if cut < 8 => {}
                other => panic!("cut {cut}: {other:?}"),
            }
        }
    }

    #[test]
    fn lengths_are_capped() {
        let buf = one(9, &[1u8; 100], false);
        assert!(matches!(decode(&buf, 64), Decoded::Bad(_)));
        assert_eq!(plausible_frame(&buf, 64), None);
        assert_eq!(plausible_frame(&buf, MAX), Some((9, 7)));
        // A header is a header even when its frame runs past the bytes at hand.
        assert_eq!(plausible_frame(&buf[..40], MAX), Some((9, 7)));
        let mut flipped = buf.clone();
        flipped[20] ^= 1;
        assert_eq!(plausible_frame(&flipped, MAX), None);
        assert!(matches!(decode(&[0u8; 64], MAX), Decoded::End));
    }

    #[test]
    fn arbitrary_bytes_never_panic() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand::rngs::StdRng::seed_from_u64(0x5eed);
        for _ in 0..10_000 {
            let n = rng.gen_range(0..80);
            let mut b: Vec<u8> = (0..n).map(|_| rng.r#gen()).collect();
            if n >= 8 && rng.gen_bool(0.5) {
                let len = rng.gen_range(0..n as u32 + 8);
                b[4..8].copy_from_slice(&len.to_le_bytes());
            }
            let _ = decode(&b, MAX);
            let _ = plausible_frame(&b, MAX);
        }
    }
}
