//! Segment files: naming, the segment header, creation (preallocated, made durable before
//! use), and the directory operations that make creations, renames and deletions durable.
//!
//! # Segment header layout
//!
//! Each segment file is `{first_lsn:020}.seg` and starts with a 64-byte header;
//! frames follow from offset [`SEGMENT_HEADER_BYTES`]. Little-endian:
//!
//! ```text
//! offset size field
//!      0    8 magic        b"SFLOGSEG"
//!      8    4 version      SEGMENT_VERSION
//!     12    4 reserved     0
//!     16    8 first_lsn    lsn of the first frame this segment holds (= the file name)
//!     24    8 first_batch  batch number of the first frame this segment holds
//!     32    4 crc          crc32 of bytes 0..32
//!     36   28 reserved     0
//! ```
//!
//! A segment is created as `*.seg.tmp`, preallocated, given its header, fsynced, renamed and
//! then the directory is fsynced; so a `.seg` file always has a valid header, and a leftover
//! `.seg.tmp` is an interrupted creation that open deletes.
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
/// The segment format version. Never reuse a retired number.
const SEGMENT_VERSION: u32 = 1;
const SEGMENT_SUFFIX: &str = ".seg";
const TMP_SUFFIX: &str = ".seg.tmp";
/// Digits in a segment file name: enough for any u64.
const NAME_DIGITS: usize = 20;

/// A segment the log knows about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SegmentMeta {
    pub first_lsn: Lsn,
    pub path: PathBuf,
}

/// The parsed segment header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct SegmentHeader {
    pub first_lsn: Lsn,
    pub first_batch: u64,
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

pub(crate) fn encode_header(h: SegmentHeader) -> [u8; SEGMENT_HEADER_BYTES] {
    let mut b = [0u8; SEGMENT_HEADER_BYTES];
    b[0..8].copy_from_slice(SEGMENT_MAGIC);
    b[8..12].copy_from_slice(&SEGMENT_VERSION.to_le_bytes());
    b[16..24].copy_from_slice(&h.first_lsn.to_le_bytes());
    b[24..32].copy_from_slice(&h.first_batch.to_le_bytes());
    let crc = crc32fast::hash(&b[0..32]);
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
    if crc32fast::hash(&b[0..32]) != crc {
        return Err("segment header checksum mismatch".into());
    }
    let version = u32::from_le_bytes(b[8..12].try_into().expect("4 bytes"));
    if version != SEGMENT_VERSION {
        return Err(format!("unknown segment version {version}"));
    }
    if b[12..16]
        .iter()
        .chain(&b[36..SEGMENT_HEADER_BYTES])
        .any(|&x| x != 0)
    {
        return Err("nonzero reserved bytes in segment header".into());
    }
    Ok(SegmentHeader {
        first_lsn: u64::from_le_bytes(b[16..24].try_into().expect("8 bytes")),
        first_batch: u64::from_le_bytes(b[24..32].try_into().expect("8 bytes")),
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
/// (`*.seg.tmp`). A `.seg` file whose name is not a segment name is corruption.
pub(crate) fn list(vfs: &dyn Vfs, dir: &Path) -> Result<Vec<SegmentMeta>, Error> {
    let mut segments = Vec::new();
    let mut removed_tmp = false;
    for path in vfs.list(dir).map_err(io_err("list directory", dir))? {
        let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
            continue;
        };
        if name.ends_with(TMP_SUFFIX) {
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
        segments.push(SegmentMeta { first_lsn, path });
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
        let h = SegmentHeader {
            first_lsn: 123,
            first_batch: 45,
        };
        let b = encode_header(h);
        assert_eq!(decode_header(&b), Ok(h));
        for bit in 0..SEGMENT_HEADER_BYTES * 8 {
            let mut c = b;
            c[bit / 8] ^= 1 << (bit % 8);
            assert!(decode_header(&c).is_err(), "bit {bit}");
        }
        assert!(decode_header(&b[..10]).is_err());
    }

    #[test]
    fn names_sort_by_lsn() {
        let dir = tempfile::tempdir().unwrap();
        for lsn in [100u64, 2, 30] {
            std::fs::write(segment_path(dir.path(), lsn), b"").unwrap();
        }
        std::fs::write(dir.path().join("00000000000000000009.seg.tmp"), b"x").unwrap();
        std::fs::write(dir.path().join("checkpoint"), b"x").unwrap();
        let l: Vec<_> = list(&OsVfs, dir.path())
            .unwrap()
            .iter()
            .map(|s| s.first_lsn)
            .collect();
        assert_eq!(l, vec![2, 30, 100]);
        assert!(!dir.path().join("00000000000000000009.seg.tmp").exists());
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
