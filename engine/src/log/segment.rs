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

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

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
pub(crate) fn fsync_dir(dir: &Path) -> Result<(), Error> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_err("fsync directory", dir))
}

/// Reserves `len` bytes for `file` so that later writes inside it do not change its size.
/// Unwritten space reads as zeros.
pub(crate) fn preallocate(file: &File, len: u64, path: &Path) -> Result<(), Error> {
    #[cfg(target_os = "linux")]
    {
        use std::os::fd::AsRawFd;
        let len = libc::off_t::try_from(len)
            .map_err(|_| io_err("preallocate", path)(io::Error::other("length overflows off_t")))?;
        // SAFETY: the fd is valid for the life of `file`; fallocate reads no memory of ours.
        let rc = unsafe { libc::fallocate(file.as_raw_fd(), 0, 0, len) };
        if rc == 0 {
            return Ok(());
        }
        let err = io::Error::last_os_error();
        // Filesystems without fallocate: fall back to extending the size (sparse zeros).
        if err.raw_os_error() != Some(libc::EOPNOTSUPP) {
            return Err(io_err("preallocate", path)(err));
        }
    }
    if file.metadata().map_err(io_err("stat", path))?.len() < len {
        file.set_len(len).map_err(io_err("extend", path))?;
    }
    Ok(())
}

/// Creates segment `first_lsn` durably (see the module docs) and returns it open for writing.
pub(crate) fn create(
    dir: &Path,
    header: SegmentHeader,
    segment_bytes: u64,
) -> Result<(File, PathBuf), Error> {
    let path = segment_path(dir, header.first_lsn);
    let tmp = path.with_extension("seg.tmp");
    if path.exists() {
        return Err(io_err("create segment", &path)(io::Error::new(
            io::ErrorKind::AlreadyExists,
            "segment file already exists",
        )));
    }
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(&tmp)
        .map_err(io_err("create segment", &tmp))?;
    preallocate(&file, segment_bytes, &tmp)?;
    file.write_all_at(&encode_header(header), 0)
        .map_err(io_err("write segment header", &tmp))?;
    file.sync_all().map_err(io_err("fsync segment", &tmp))?;
    std::fs::rename(&tmp, &path).map_err(io_err("rename segment", &tmp))?;
    fsync_dir(dir)?;
    tracing::debug!(
        first_lsn = header.first_lsn,
        segment_bytes,
        "log segment created"
    );
    Ok((file, path))
}

/// Lists the segments of `dir` sorted by first lsn, deleting interrupted creations
/// (`*.seg.tmp`). A `.seg` file whose name is not a segment name is corruption.
pub(crate) fn list(dir: &Path) -> Result<Vec<SegmentMeta>, Error> {
    let mut segments = Vec::new();
    let mut removed_tmp = false;
    for entry in std::fs::read_dir(dir).map_err(io_err("list directory", dir))? {
        let entry = entry.map_err(io_err("list directory", dir))?;
        let path = entry.path();
        let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
            continue;
        };
        if name.ends_with(TMP_SUFFIX) {
            std::fs::remove_file(&path).map_err(io_err("remove", &path))?;
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
                detail: "not a segment file name (expected 20 digits + .seg)".into(),
            })?;
        segments.push(SegmentMeta { first_lsn, path });
    }
    if removed_tmp {
        fsync_dir(dir)?;
    }
    segments.sort_by_key(|s| s.first_lsn);
    Ok(segments)
}

/// An exclusive advisory lock on the log directory, held while the log is open, so that two
/// writers can never interleave in one log.
#[derive(Debug)]
pub(crate) struct DirLock {
    _file: File,
}

pub(crate) const LOCK_FILE: &str = "LOCK";

pub(crate) fn lock_dir(dir: &Path) -> Result<DirLock, Error> {
    use std::os::fd::AsRawFd;
    let path = dir.join(LOCK_FILE);
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .map_err(io_err("open lock file", &path))?;
    // SAFETY: valid fd owned by `file`; flock touches no memory of ours.
    let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    if rc != 0 {
        let err = io::Error::last_os_error();
        if err.raw_os_error() == Some(libc::EWOULDBLOCK) {
            return Err(Error::Locked {
                dir: dir.to_path_buf(),
            });
        }
        return Err(io_err("lock", &path)(err));
    }
    Ok(DirLock { _file: file })
}

#[cfg(test)]
mod tests {
    use super::*;

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
        let l: Vec<_> = list(dir.path())
            .unwrap()
            .iter()
            .map(|s| s.first_lsn)
            .collect();
        assert_eq!(l, vec![2, 30, 100]);
        assert!(!dir.path().join("00000000000000000009.seg.tmp").exists());
        std::fs::write(dir.path().join("junk.seg"), b"").unwrap();
        assert!(matches!(list(dir.path()), Err(Error::Corrupt { .. })));
    }

    #[test]
    fn lock_is_exclusive() {
        let dir = tempfile::tempdir().unwrap();
        let a = lock_dir(dir.path()).unwrap();
        assert!(matches!(lock_dir(dir.path()), Err(Error::Locked { .. })));
        drop(a);
        lock_dir(dir.path()).unwrap();
    }
}
