//! The checkpoint file: a durable hint from the log's owner, "my read models cover every
//! record with lsn <= N". The log never deletes anything because of it (it keeps every
//! record); it reports N back on open ([`crate::log::Recovery::checkpoint_lsn`]) so that the
//! owner knows where replay may start, and refuses a log that ends before N (acknowledged
//! records were lost).
//!
//! Layout (24 bytes, little-endian): magic `b"SFCKPT01"`, lsn u64, crc32 of bytes 0..16,
//! 4 zero bytes. Written to `checkpoint.tmp`, fsynced, renamed over `checkpoint`, then the
//! directory is fsynced; so the file is always whole, and a bad one is corruption.

use std::path::Path;

use crate::log::segment::{fsync_dir, io_err};
use crate::log::vfs::{OpenMode, Vfs};
use crate::log::{Error, Lsn};

pub(crate) const CHECKPOINT_FILE: &str = "checkpoint";
const CHECKPOINT_TMP: &str = "checkpoint.tmp";
const CHECKPOINT_MAGIC: &[u8; 8] = b"SFCKPT01";
const CHECKPOINT_BYTES: usize = 24;

fn encode(lsn: Lsn) -> [u8; CHECKPOINT_BYTES] {
    let mut b = [0u8; CHECKPOINT_BYTES];
    b[0..8].copy_from_slice(CHECKPOINT_MAGIC);
    b[8..16].copy_from_slice(&lsn.to_le_bytes());
    let crc = crc32fast::hash(&b[0..16]);
    b[16..20].copy_from_slice(&crc.to_le_bytes());
    b
}

/// Reads the checkpoint lsn; 0 when there is none. Removes an interrupted `checkpoint.tmp`.
pub(crate) fn read(vfs: &dyn Vfs, dir: &Path) -> Result<Lsn, Error> {
    let tmp = dir.join(CHECKPOINT_TMP);
    if vfs.exists(&tmp).map_err(io_err("stat", &tmp))? {
        vfs.remove(&tmp).map_err(io_err("remove", &tmp))?;
    }
    let path = dir.join(CHECKPOINT_FILE);
    let file = match vfs.open(&path, OpenMode::Read) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(io_err("read checkpoint", &path)(e)),
    };
    let corrupt = |detail: &str| Error::Corrupt {
        segment: path.clone(),
        offset: 0,
        lsn: None,
        detail: detail.to_string(),
    };
    let len = file.len().map_err(io_err("stat checkpoint", &path))?;
    if len != CHECKPOINT_BYTES as u64 {
        return Err(corrupt(&format!(
            "checkpoint file has {len} bytes, expected {CHECKPOINT_BYTES}"
        )));
    }
    let mut bytes = [0u8; CHECKPOINT_BYTES];
    let n = file
        .read_at(&mut bytes, 0)
        .map_err(io_err("read checkpoint", &path))?;
    if n != CHECKPOINT_BYTES {
        return Err(corrupt("checkpoint file shrank while read"));
    }
    let lsn = Lsn::from_le_bytes(bytes[8..16].try_into().expect("8 bytes"));
    if bytes[..] != encode(lsn)[..] {
        return Err(corrupt(
            "checkpoint file fails its magic, checksum or padding check",
        ));
    }
    Ok(lsn)
}

/// Durably replaces the checkpoint with `lsn`.
pub(crate) fn write(vfs: &dyn Vfs, dir: &Path, lsn: Lsn) -> Result<(), Error> {
    let tmp = dir.join(CHECKPOINT_TMP);
    let file = vfs
        .open(&tmp, OpenMode::CreateTruncate)
        .map_err(io_err("create checkpoint", &tmp))?;
    file.write_all_at(&encode(lsn), 0)
        .map_err(io_err("write checkpoint", &tmp))?;
    file.sync_all().map_err(io_err("fsync checkpoint", &tmp))?;
    drop(file);
    let path = dir.join(CHECKPOINT_FILE);
    vfs.rename(&tmp, &path)
        .map_err(io_err("rename checkpoint", &tmp))?;
    fsync_dir(vfs, dir)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::log::vfs::OsVfs;

    #[test]
    fn round_trip_missing_and_corrupt() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(read(&OsVfs, dir.path()).unwrap(), 0);
        write(&OsVfs, dir.path(), 77).unwrap();
        assert_eq!(read(&OsVfs, dir.path()).unwrap(), 77);
        write(&OsVfs, dir.path(), 78).unwrap();
        assert_eq!(read(&OsVfs, dir.path()).unwrap(), 78);
        let path = dir.path().join(CHECKPOINT_FILE);
        let good = std::fs::read(&path).unwrap();
        for bit in 0..good.len() * 8 {
            let mut b = good.clone();
            b[bit / 8] ^= 1 << (bit % 8);
            std::fs::write(&path, &b).unwrap();
            assert!(
                matches!(read(&OsVfs, dir.path()), Err(Error::Corrupt { .. })),
                "bit {bit}"
            );
        }
        std::fs::write(&path, &good[..10]).unwrap();
        assert!(matches!(
            read(&OsVfs, dir.path()),
            Err(Error::Corrupt { .. })
        ));
    }
}
