//! Segment files: naming, the segment header, creation (preallocated, made durable before
//! use), and the directory operations that make creations, renames and deletions durable.
//!
//! # Segment header layout
//!
//! Each segment file is `{first_lsn:020}.seg` and starts with a 64-byte header;
//! frames follow from offset [`SEGMENT_HEADER_BYTES`]. Little-endian. Two versions exist;
//! numbers are never reused.
//!
//! ```text
//! offset size field        version 1: an appended segment
//!      0    8 magic        b"SFLOGSEG"
//!      8    4 version      1
//!     12    4 reserved     0
//!     16    8 first_lsn    lsn of the first frame this segment holds (= the file name)
//!     24    8 first_batch  batch number of the first frame this segment holds
//!     32    4 crc          crc32 of bytes 0..32
//!     36   28 reserved     0
//!
//! offset size field        version 2: a compacted segment (written by `Log::compact`)
//!      0    8 magic        b"SFLOGSEG"
//!      8    4 version      2
//!     12    4 reserved     0
//!     16    8 first_lsn    first lsn of the range it covers (= the file name)
//!     24    8 first_batch  first batch number of the range it covers
//!     32    4 crc          crc32 of bytes 0..32 followed by bytes 36..64
//!     36    8 end_lsn      first lsn after the range (= the next segment's first_lsn)
//!     44    8 end_batch    first batch after the range (= the next segment's first_batch)
//!     52   12 reserved     0
//! ```
//!
//! A version 1 segment holds consecutive lsns and batches. A version 2 segment covers
//! `[first_lsn, end_lsn)` and `[first_batch, end_batch)` but holds only the records kept by
//! a compaction, with their original lsns and batch numbers: gaps are legal there and
//! nowhere else. Inside it, kept records of one original batch stay together as one complete
//! batch (the last-in-batch flag on the last one kept), lsns strictly increase, and batch
//! numbers strictly increase from batch to batch. It may hold no frame at all (everything
//! dropped): the header alone still says which range it covers, so the continuity check
//! against the next segment (`end_lsn`/`end_batch` = its `first_lsn`/`first_batch`) still
//! works. That is why an empty compacted segment is kept rather than deleted: the only
//! other place the range could be recorded is the previous segment, and rewriting two files
//! cannot be made atomic with one rename. A compacted segment is written sized exactly
//! (header + frames, no zero tail): nothing is ever appended to it, so preallocating would
//! only give back the space compaction is meant to reclaim. It is never the last segment
//! (only sealed segments are compacted), and open refuses one that is.
//!
//! A segment is created as `*.seg.tmp`, preallocated, given its header, fsynced, renamed and
//! then the directory is fsynced; so a `.seg` file always has a valid header, and a leftover
//! `.seg.tmp` is an interrupted creation that open deletes. A compaction writes
//! `*.seg.compact` the same way and renames it over the old segment; a leftover
//! `.seg.compact` is an interrupted compaction (the old segment is still in place), and open
//! deletes it too.
//!
//! # Preallocation: zero-filled, not `fallocate`d
//!
//! A segment is preallocated so that an `fdatasync` after a batch does not also have to
//! persist a size change. `fallocate` (mode 0) leaves *unwritten* extents, and the first
//! write into each makes `fdatasync` journal an extent conversion as well. So new segments
//! are instead written with zeros once, at creation (and fsynced before the rename), which
//! costs one sequential write of the segment per roll, off the acknowledgement path of all
//! but the batch that triggers the roll.
//!
//! Measured with `cargo bench -p steadfast-engine --bench append` (release, 64 MiB segments,
//! ext4 on a virtio disk, 2 shared cores; three runs of each, interleaved; medians):
//!
//! ```text
//!                       zero-filled            fallocate
//! appenders       events/s   p50 us     events/s   p50 us
//!         1          4,122      132        3,901      100
//!        16         35,250      309       28,847      322
//!       256         78,315    1,476       74,225    1,597
//! restart, 10k open runs: 344 ms vs 474 ms
//! ```
//!
//! The machine is shared and noisy (single runs ranged 866-4,885 events/s at 1 appender),
//! but zero-filling had the better median throughput on every row, so it is what
//! [`PREALLOC`] selects. Switch it to re-measure.

use std::io;
use std::path::{Path, PathBuf};

use crate::log::vfs::{OpenMode, Vfs, VfsFile, VfsLock};
use crate::log::{Error, Lsn};

/// Bytes of the header at the start of every segment file.
pub const SEGMENT_HEADER_BYTES: usize = 64;
const SEGMENT_MAGIC: &[u8; 8] = b"SFLOGSEG";
/// The format version of an appended segment. Never reuse a retired number.
const SEGMENT_VERSION_APPENDED: u32 = 1;
/// The format version of a compacted segment (gaps allowed, range in the header).
const SEGMENT_VERSION_COMPACTED: u32 = 2;
const SEGMENT_SUFFIX: &str = ".seg";
const TMP_SUFFIX: &str = ".seg.tmp";
const COMPACT_SUFFIX: &str = ".seg.compact";
/// Digits in a segment file name: enough for any u64.
const NAME_DIGITS: usize = 20;

/// A segment the log knows about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SegmentMeta {
    pub first_lsn: Lsn,
    pub path: PathBuf,
    /// The file's size as last seen (at open, creation or compaction).
    pub bytes: u64,
    /// Whether it is a compacted (version 2) segment.
    pub compacted: bool,
}

/// The parsed segment header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct SegmentHeader {
    pub first_lsn: Lsn,
    pub first_batch: u64,
    /// `Some` for a compacted segment: the end of the range it covers.
    pub covers: Option<Covers>,
}

/// The end (exclusive) of the lsn and batch range a compacted segment covers: the next
/// segment's first lsn and batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Covers {
    pub end_lsn: Lsn,
    pub end_batch: u64,
}

/// Wraps an `io::Error` with what was being done and to which path.
pub(crate) fn io_err<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> Error + 'a {
    move |source| Error::Io {
        op,
        path: path.to_path_buf(),
        source,
    }
}

pub(crate) fn segment_path(dir: &Path, first_lsn: Lsn) -> PathBuf {
    dir.join(format!("{first_lsn:0NAME_DIGITS$}{SEGMENT_SUFFIX}"))
}

/// The path a compaction of `segment` writes before renaming it over `segment`.
pub(crate) fn compact_path(segment: &Path) -> PathBuf {
    segment.with_extension("seg.compact")
}

/// The header checksum: version 1 covers bytes 0..32, version 2 the whole header but the
/// checksum itself (its range fields live past it).
fn header_crc(b: &[u8], version: u32) -> u32 {
    let mut h = crc32fast::Hasher::new();
    h.update(&b[0..32]);
    if version == SEGMENT_VERSION_COMPACTED {
        h.update(&b[36..SEGMENT_HEADER_BYTES]);
    }
    h.finalize()
}

pub(crate) fn encode_header(h: SegmentHeader) -> [u8; SEGMENT_HEADER_BYTES] {
    let mut b = [0u8; SEGMENT_HEADER_BYTES];
    let version = match h.covers {
        None => SEGMENT_VERSION_APPENDED,
        Some(_) => SEGMENT_VERSION_COMPACTED,
    };
    b[0..8].copy_from_slice(SEGMENT_MAGIC);
    b[8..12].copy_from_slice(&version.to_le_bytes());
    b[16..24].copy_from_slice(&h.first_lsn.to_le_bytes());
    b[24..32].copy_from_slice(&h.first_batch.to_le_bytes());
    if let Some(c) = h.covers {
        b[36..44].copy_from_slice(&c.end_lsn.to_le_bytes());
        b[44..52].copy_from_slice(&c.end_batch.to_le_bytes());
    }
    let crc = header_crc(&b, version);
    b[32..36].copy_from_slice(&crc.to_le_bytes());
    b
}

/// Parses and verifies a segment header; the error is a human-readable reason.
pub(crate) fn decode_header(b: &[u8]) -> Result<SegmentHeader, String> {
    if b.len() < SEGMENT_HEADER_BYTES {
        return Err(format!(
            "file of {} bytes is shorter than the {SEGMENT_HEADER_BYTES}-byte segment header",
            b.len()
        ));
    }
    if &b[0..8] != SEGMENT_MAGIC {
        return Err("bad segment magic".into());
    }
    let crc = u32::from_le_bytes(b[32..36].try_into().expect("4 bytes"));
    let version = u32::from_le_bytes(b[8..12].try_into().expect("4 bytes"));
    let known = [SEGMENT_VERSION_APPENDED, SEGMENT_VERSION_COMPACTED].contains(&version);
    if header_crc(
        b,
        if known {
            version
        } else {
            SEGMENT_VERSION_APPENDED
        },
    ) != crc
    {
        return Err("segment header checksum mismatch".into());
    }
    if !known {
        return Err(format!("unknown segment version {version}"));
    }
    let reserved_from = if version == SEGMENT_VERSION_COMPACTED {
        52
    } else {
        36
    };
    if b[12..16]
        .iter()
        .chain(&b[reserved_from..SEGMENT_HEADER_BYTES])
        .any(|&x| x != 0)
    {
        return Err("nonzero reserved bytes in segment header".into());
    }
    let first_lsn = u64::from_le_bytes(b[16..24].try_into().expect("8 bytes"));
    let first_batch = u64::from_le_bytes(b[24..32].try_into().expect("8 bytes"));
    let covers = if version == SEGMENT_VERSION_COMPACTED {
        let c = Covers {
            end_lsn: u64::from_le_bytes(b[36..44].try_into().expect("8 bytes")),
            end_batch: u64::from_le_bytes(b[44..52].try_into().expect("8 bytes")),
        };
        // A sealed segment held at least one record of at least one batch.
        if c.end_lsn <= first_lsn || c.end_batch <= first_batch {
            return Err(format!(
                "compacted segment covers lsn {first_lsn}..{} batch {first_batch}..{}: an \
                 empty or reversed range",
                c.end_lsn, c.end_batch
            ));
        }
        Some(c)
    } else {
        None
    };
    Ok(SegmentHeader {
        first_lsn,
        first_batch,
        covers,
    })
}

/// Makes the directory entries of `dir` (creations, renames, deletions) durable.
pub(crate) fn fsync_dir(vfs: &dyn Vfs, dir: &Path) -> Result<(), Error> {
    vfs.sync_dir(dir).map_err(io_err("fsync directory", dir))
}

/// How a new segment gets its space. See the module docs for the measurements.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Prealloc {
    /// Write zeros over the whole segment once, at creation.
    ZeroFill,
    /// `fallocate` (unwritten extents, converted by the first write into each).
    #[allow(dead_code)]
    Fallocate,
}

/// The strategy new segments use (see the module docs for why).
pub(crate) const PREALLOC: Prealloc = Prealloc::ZeroFill;
/// Zeros written per call when zero-filling a segment or cutting a torn tail.
pub(crate) const ZERO_CHUNK_BYTES: usize = 1 << 20;

/// Writes zeros over `from..from + len` of `file` (not synced).
pub(crate) fn write_zeros(
    file: &dyn VfsFile,
    path: &Path,
    from: u64,
    len: u64,
) -> Result<(), Error> {
    let zeros = vec![0u8; ZERO_CHUNK_BYTES.min(len as usize)];
    let mut done = 0u64;
    while done < len {
        let n = (len - done).min(zeros.len() as u64) as usize;
        file.write_all_at(&zeros[..n], from + done)
            .map_err(io_err("write zeros", path))?;
        done += n as u64;
    }
    Ok(())
}

/// Makes `file` at least `len` bytes of durable-once-synced zeros beyond its data, so that
/// later writes inside it change neither its size nor its extents.
pub(crate) fn preallocate(file: &dyn VfsFile, len: u64, path: &Path) -> Result<(), Error> {
    let have = file.len().map_err(io_err("stat", path))?;
    if have >= len {
        return Ok(());
    }
    match PREALLOC {
        Prealloc::ZeroFill => write_zeros(file, path, have, len - have),
        Prealloc::Fallocate => file.preallocate(len).map_err(io_err("preallocate", path)),
    }
}

/// Creates segment `first_lsn` durably (see the module docs) and returns it open for writing.
pub(crate) fn create(
    vfs: &dyn Vfs,
    dir: &Path,
    header: SegmentHeader,
    segment_bytes: u64,
) -> Result<(Box<dyn VfsFile>, PathBuf), Error> {
    let path = segment_path(dir, header.first_lsn);
    let tmp = path.with_extension("seg.tmp");
    if vfs.exists(&path).map_err(io_err("stat", &path))? {
        return Err(io_err("create segment", &path)(io::Error::new(
            io::ErrorKind::AlreadyExists,
            "segment file already exists",
        )));
    }
    let file = vfs
        .open(&tmp, OpenMode::CreateTruncate)
        .map_err(io_err("create segment", &tmp))?;
    preallocate(&*file, segment_bytes, &tmp)?;
    file.write_all_at(&encode_header(header), 0)
        .map_err(io_err("write segment header", &tmp))?;
    file.sync_all().map_err(io_err("fsync segment", &tmp))?;
    vfs.rename(&tmp, &path)
        .map_err(io_err("rename segment", &tmp))?;
    fsync_dir(vfs, dir)?;
    tracing::debug!(
        first_lsn = header.first_lsn,
        segment_bytes,
        "log segment created"
    );
    Ok((file, path))
}

/// Lists the segments of `dir` sorted by first lsn, deleting interrupted creations
/// (`*.seg.tmp`) and compactions (`*.seg.compact`). `bytes` and `compacted` are left for
/// the caller to fill in from each file. A `.seg` file whose name is not a segment name is corruption.
pub(crate) fn list(vfs: &dyn Vfs, dir: &Path) -> Result<Vec<SegmentMeta>, Error> {
    let mut segments = Vec::new();
    let mut removed_tmp = false;
    for path in vfs.list(dir).map_err(io_err("list directory", dir))? {
        let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
            continue;
        };
        if name.ends_with(TMP_SUFFIX) || name.ends_with(COMPACT_SUFFIX) {
            vfs.remove(&path).map_err(io_err("remove", &path))?;
            removed_tmp = true;
            continue;
        }
        let Some(stem) = name.strip_suffix(SEGMENT_SUFFIX) else {
            continue;
        };
        let first_lsn = (stem.len() == NAME_DIGITS && stem.bytes().all(|b| b.is_ascii_digit()))
            .then(|| stem.parse::<Lsn>().ok())
            .flatten()
            .ok_or_else(|| Error::Corrupt {
                segment: path.clone(),
                offset: 0,
                lsn: None,
                detail: "not a segment file name (expected 20 digits + .seg)".into(),
            })?;
        segments.push(SegmentMeta {
            first_lsn,
            path,
            bytes: 0,
            compacted: false,
        });
    }
    if removed_tmp {
        fsync_dir(vfs, dir)?;
    }
    segments.sort_by_key(|s| s.first_lsn);
    Ok(segments)
}

/// An exclusive lock on the log directory, held while the log is open, so that two
/// writers can never interleave in one log.
#[derive(Debug)]
pub(crate) struct DirLock {
    _lock: Box<dyn VfsLock>,
}

pub(crate) const LOCK_FILE: &str = "LOCK";

pub(crate) fn lock_dir(vfs: &dyn Vfs, dir: &Path) -> Result<DirLock, Error> {
    let path = dir.join(LOCK_FILE);
    match vfs.lock(&path) {
        Ok(lock) => Ok(DirLock { _lock: lock }),
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => Err(Error::Locked {
            dir: dir.to_path_buf(),
        }),
        Err(e) => Err(io_err("lock", &path)(e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::log::vfs::OsVfs;

    #[test]
    fn header_round_trip_and_flips() {
        let appended = SegmentHeader {
            first_lsn: 123,
            first_batch: 45,
            covers: None,
        };
        let compacted = SegmentHeader {
            covers: Some(Covers {
                end_lsn: 200,
                end_batch: 50,
            }),
            ..appended
        };
        for h in [appended, compacted] {
            let b = encode_header(h);
            assert_eq!(decode_header(&b), Ok(h));
            for bit in 0..SEGMENT_HEADER_BYTES * 8 {
                let mut c = b;
                c[bit / 8] ^= 1 << (bit % 8);
                assert!(decode_header(&c).is_err(), "{h:?} bit {bit}");
            }
            assert!(decode_header(&b[..10]).is_err());
        }
        // Version 1 bytes are unchanged by version 2's existence.
        assert_eq!(&encode_header(appended)[8..12], &1u32.to_le_bytes());
        assert_eq!(&encode_header(compacted)[8..12], &2u32.to_le_bytes());
        let empty_range = SegmentHeader {
            covers: Some(Covers {
                end_lsn: 123,
                end_batch: 50,
            }),
            ..appended
        };
        assert!(decode_header(&encode_header(empty_range)).is_err());
    }

    #[test]
    fn names_sort_by_lsn() {
        let dir = tempfile::tempdir().unwrap();
        for lsn in [100u64, 2, 30] {
            std::fs::write(segment_path(dir.path(), lsn), b"").unwrap();
        }
        std::fs::write(dir.path().join("00000000000000000009.seg.tmp"), b"x").unwrap();
        std::fs::write(dir.path().join("00000000000000000002.seg.compact"), b"x").unwrap();
        std::fs::write(dir.path().join("checkpoint"), b"x").unwrap();
        let l: Vec<_> = list(&OsVfs, dir.path())
            .unwrap()
            .iter()
            .map(|s| s.first_lsn)
            .collect();
        assert_eq!(l, vec![2, 30, 100]);
        assert!(!dir.path().join("00000000000000000009.seg.tmp").exists());
        assert!(!dir.path().join("00000000000000000002.seg.compact").exists());
        std::fs::write(dir.path().join("junk.seg"), b"").unwrap();
        assert!(matches!(
            list(&OsVfs, dir.path()),
            Err(Error::Corrupt { .. })
        ));
    }

    #[test]
    fn lock_is_exclusive() {
        let dir = tempfile::tempdir().unwrap();
        let a = lock_dir(&OsVfs, dir.path()).unwrap();
        assert!(matches!(
            lock_dir(&OsVfs, dir.path()),
            Err(Error::Locked { .. })
        ));
        drop(a);
        lock_dir(&OsVfs, dir.path()).unwrap();
    }
}
