//! The file abstraction every byte of the log goes through.
//!
//! The log needs few file operations, and their durability semantics are the whole point of
//! it: a write is durable only after `sync_data`/`sync_all` of its file, and a created,
//! renamed or removed directory entry only after `sync_dir` of its directory. [`OsVfs`]
//! maps them onto the OS; `sim::SimVfs` keeps durable and not-yet-durable state apart so
//! that tests can cut the power at any I/O and look at what survives.

use std::fmt::Debug;
use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

/// How [`Vfs::open`] opens a file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpenMode {
    /// An existing file, read only.
    Read,
    /// An existing file, read and write.
    ReadWrite,
    /// Create the file (emptying it if it exists), read and write.
    CreateTruncate,
    /// Create the file if missing, keep its content, read and write.
    CreateKeep,
}

/// An open file. Positions are explicit, so one handle may be shared by threads.
pub trait VfsFile: Send + Sync + Debug {
    /// Reads up to `buf.len()` bytes at `offset`; fewer only at the end of the file.
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize>;
    /// Writes all of `buf` at `offset` (not durable until a sync).
    fn write_all_at(&self, buf: &[u8], offset: u64) -> io::Result<()>;
    /// Makes the file's data (and the size, if it changed) durable: `fdatasync`.
    fn sync_data(&self) -> io::Result<()>;
    /// Makes the file's data and metadata durable: `fsync`.
    fn sync_all(&self) -> io::Result<()>;
    /// The file's current size.
    fn len(&self) -> io::Result<u64>;
    /// Whether the file is empty.
    fn is_empty(&self) -> io::Result<bool> {
        Ok(self.len()? == 0)
    }
    /// Reserves space so the file is at least `len` bytes; new space reads as zeros.
    fn preallocate(&self, len: u64) -> io::Result<()>;
}

/// A held directory lock; dropping it releases the lock.
pub trait VfsLock: Send + Sync + Debug {}

/// The file system the log runs on. `Send + Sync`: one is shared by the log and its writer.
pub trait Vfs: Send + Sync + Debug {
    /// Opens `path` as `mode` says.
    fn open(&self, path: &Path, mode: OpenMode) -> io::Result<Box<dyn VfsFile>>;
    /// Whether `path` (a file or a directory) exists.
    fn exists(&self, path: &Path) -> io::Result<bool>;
    /// Creates `dir` and its missing parents.
    fn create_dir_all(&self, dir: &Path) -> io::Result<()>;
    /// The paths of the entries of `dir`.
    fn list(&self, dir: &Path) -> io::Result<Vec<PathBuf>>;
    /// Renames `from` to `to`, replacing `to` (durable after `sync_dir`).
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()>;
    /// Removes the file `path` (durable after `sync_dir`).
    fn remove(&self, path: &Path) -> io::Result<()>;
    /// Makes the entries of `dir` (creations, renames, removals) durable.
    fn sync_dir(&self, dir: &Path) -> io::Result<()>;
    /// Takes an exclusive lock on the file `path` (created if missing), without waiting:
    /// `ErrorKind::WouldBlock` when someone else holds it.
    fn lock(&self, path: &Path) -> io::Result<Box<dyn VfsLock>>;
}

/// The operating system's file system.
#[derive(Debug, Clone, Copy, Default)]
pub struct OsVfs;

#[derive(Debug)]
struct OsFile(File);

#[derive(Debug)]
struct OsLock(#[allow(dead_code)] File);

impl VfsLock for OsLock {}

impl VfsFile for OsFile {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        let mut done = 0;
        while done < buf.len() {
            match self.0.read_at(&mut buf[done..], offset + done as u64) {
                Ok(0) => break,
                Ok(n) => done += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(done)
    }

    fn write_all_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        self.0.write_all_at(buf, offset)
    }

    fn sync_data(&self) -> io::Result<()> {
        self.0.sync_data()
    }

    fn sync_all(&self) -> io::Result<()> {
        self.0.sync_all()
    }

    fn len(&self) -> io::Result<u64> {
        Ok(self.0.metadata()?.len())
    }

    fn preallocate(&self, len: u64) -> io::Result<()> {
        #[cfg(target_os = "linux")]
        {
            use std::os::fd::AsRawFd;
            let off = libc::off_t::try_from(len)
                .map_err(|_| io::Error::other("length overflows off_t"))?;
            // SAFETY: the fd is valid for the life of the file; fallocate reads no memory
            // of ours.
            let rc = unsafe { libc::fallocate(self.0.as_raw_fd(), 0, 0, off) };
            if rc == 0 {
                return Ok(());
            }
            let err = io::Error::last_os_error();
            // Filesystems without fallocate: fall back to extending the size (sparse zeros).
            if err.raw_os_error() != Some(libc::EOPNOTSUPP) {
                return Err(err);
            }
        }
        if self.len()? < len {
            self.0.set_len(len)?;
        }
        Ok(())
    }
}

impl Vfs for OsVfs {
    fn open(&self, path: &Path, mode: OpenMode) -> io::Result<Box<dyn VfsFile>> {
        let mut o = OpenOptions::new();
        o.read(true);
        match mode {
            OpenMode::Read => {}
            OpenMode::ReadWrite => {
                o.write(true);
            }
            OpenMode::CreateTruncate => {
                o.write(true).create(true).truncate(true);
            }
            OpenMode::CreateKeep => {
                o.write(true).create(true).truncate(false);
            }
        }
        Ok(Box::new(OsFile(o.open(path)?)))
    }

    fn exists(&self, path: &Path) -> io::Result<bool> {
        path.try_exists()
    }

    fn create_dir_all(&self, dir: &Path) -> io::Result<()> {
        std::fs::create_dir_all(dir)
    }

    fn list(&self, dir: &Path) -> io::Result<Vec<PathBuf>> {
        std::fs::read_dir(dir)?
            .map(|e| e.map(|e| e.path()))
            .collect()
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        std::fs::rename(from, to)
    }

    fn remove(&self, path: &Path) -> io::Result<()> {
        std::fs::remove_file(path)
    }

    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        File::open(dir)?.sync_all()
    }

    fn lock(&self, path: &Path) -> io::Result<Box<dyn VfsLock>> {
        use std::os::fd::AsRawFd;
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)?;
        // SAFETY: valid fd owned by `file`; flock touches no memory of ours.
        let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
        if rc != 0 {
            let err = io::Error::last_os_error();
            if err.raw_os_error() == Some(libc::EWOULDBLOCK) {
                return Err(io::Error::from(io::ErrorKind::WouldBlock));
            }
            return Err(err);
        }
        Ok(Box::new(OsLock(file)))
    }
}
