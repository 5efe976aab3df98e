//! A simulated file system that can lose power: for power-cut tests of the log and of the
//! store above it. Not for production; hidden from the docs.
//!
//! It keeps, for every file, the content that is durable apart from writes not yet synced
//! (tracked per 4 KiB page), and for directories the entries that are durable apart from
//! creations, renames and removals not yet made durable by a directory fsync. Directories
//! themselves are durable as soon as they are created (the log creates its directory once).
//!
//! Crash it ([`SimVfs::crash`], or at a chosen I/O with [`SimVfs::crash_at_op`]): every later
//! I/O of every handle fails, as the process would see nothing more. Then
//! [`SimVfs::after_crash`] builds the image a power cut leaves: each unsynced page of each
//! file independently dropped, kept, or torn (a prefix of its 512-byte sectors kept), and
//! each un-fsynced directory change kept or lost, all decided by a seed.
//!
//! `Clone` shares the state, so a test keeps a handle while the log owns another.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use parking_lot::Mutex;

use crate::log::vfs::{OpenMode, Vfs, VfsFile, VfsLock};

/// The unit in which unsynced writes survive or vanish.
pub const SIM_PAGE_BYTES: usize = 4096;
/// The unit a torn page keeps a prefix of.
pub const SIM_SECTOR_BYTES: usize = 512;

#[derive(Debug, Default, Clone)]
struct SimFile {
    /// What a reader sees now.
    data: Vec<u8>,
    /// What survives a power cut for sure.
    durable: Vec<u8>,
    /// Pages written since the last sync.
    dirty: BTreeSet<usize>,
}

impl SimFile {
    fn sync(&mut self) {
        self.durable.resize(self.data.len(), 0);
        for &p in &self.dirty {
            let from = p * SIM_PAGE_BYTES;
            let to = (from + SIM_PAGE_BYTES).min(self.data.len());
            if from < to {
                self.durable[from..to].copy_from_slice(&self.data[from..to]);
            }
        }
        self.dirty.clear();
    }
}

#[derive(Debug, Clone)]
enum DirOp {
    Link {
        path: PathBuf,
        inode: u64,
    },
    Unlink {
        path: PathBuf,
        inode: u64,
    },
    Rename {
        from: PathBuf,
        to: PathBuf,
        inode: u64,
    },
}

impl DirOp {
    fn dir(&self) -> Option<&Path> {
        match self {
            DirOp::Link { path, .. } | DirOp::Unlink { path, .. } => path.parent(),
            DirOp::Rename { to, .. } => to.parent(),
        }
    }

    fn apply(&self, entries: &mut BTreeMap<PathBuf, u64>) {
        match self {
            DirOp::Link { path, inode } => {
                entries.insert(path.clone(), *inode);
            }
            DirOp::Unlink { path, inode } => {
                if entries.get(path) == Some(inode) {
                    entries.remove(path);
                }
            }
            DirOp::Rename { from, to, inode } => {
                if entries.get(from) == Some(inode) {
                    entries.remove(from);
                }
                entries.insert(to.clone(), *inode);
            }
        }
    }
}

#[derive(Debug, Default)]
struct SimState {
    files: HashMap<u64, SimFile>,
    next_inode: u64,
    dirs: BTreeSet<PathBuf>,
    entries: BTreeMap<PathBuf, u64>,
    durable_entries: BTreeMap<PathBuf, u64>,
    /// Directory changes not yet fsynced, in the order they were made.
    pending: Vec<DirOp>,
    locks: HashSet<PathBuf>,
    /// Mutating I/O operations so far (writes, syncs, creations, renames, removals).
    ops: u64,
    crash_at: Option<u64>,
    crashed: bool,
}

fn power_cut() -> io::Error {
    io::Error::other("simulated power cut")
}

impl SimState {
    fn check(&self) -> io::Result<()> {
        if self.crashed {
            Err(power_cut())
        } else {
            Ok(())
        }
    }

    /// Counts a mutating operation; the one chosen by `crash_at` fails and crashes.
    fn op(&mut self) -> io::Result<()> {
        self.check()?;
        self.ops += 1;
        if self.crash_at.is_some_and(|n| self.ops >= n) {
            self.crashed = true;
            return Err(power_cut());
        }
        Ok(())
    }

    fn new_inode(&mut self) -> u64 {
        self.next_inode += 1;
        self.files.insert(self.next_inode, SimFile::default());
        self.next_inode
    }

    fn file(&mut self, inode: u64) -> &mut SimFile {
        self.files.entry(inode).or_default()
    }
}

/// The simulated file system. See the module docs.
#[doc(hidden)]
#[derive(Debug, Clone, Default)]
pub struct SimVfs {
    state: Arc<Mutex<SimState>>,
}

/// A small, seedable generator (splitmix64), so the library needs no `rand`.
#[derive(Debug, Clone)]
pub struct SimRng(u64);

impl SimRng {
    /// A generator whose every output follows from `seed`.
    pub fn new(seed: u64) -> SimRng {
        SimRng(seed)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A number in `0..n` (`n > 0`).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }
}

impl SimVfs {
    /// An empty file system.
    pub fn new() -> SimVfs {
        SimVfs::default()
    }

    /// Crashes now: every later I/O fails.
    pub fn crash(&self) {
        self.state.lock().crashed = true;
    }

    /// Crashes at the `n`th mutating I/O from now on (1 = the next one): that operation
    /// fails without effect, and so does everything after it.
    pub fn crash_at_op(&self, n: u64) {
        let mut s = self.state.lock();
        s.crash_at = Some(s.ops + n.max(1));
    }

    /// Whether it has crashed.
    pub fn is_crashed(&self) -> bool {
        self.state.lock().crashed
    }

    /// Mutating I/O operations done so far.
    pub fn ops(&self) -> u64 {
        self.state.lock().ops
    }

    /// What a reader sees now in `path`, if it exists.
    pub fn file_bytes(&self, path: &Path) -> Option<Vec<u8>> {
        let s = self.state.lock();
        let inode = s.entries.get(path)?;
        s.files.get(inode).map(|f| f.data.clone())
    }

    /// The file system a power cut now would leave, chosen by `seed` (see the module docs).
    /// The result is a fresh, uncrashed file system with everything in it durable; this one
    /// is left as it is.
    pub fn after_crash(&self, seed: u64) -> SimVfs {
        let s = self.state.lock();
        let mut rng = SimRng::new(seed);
        let mut entries = s.durable_entries.clone();
        for op in &s.pending {
            if rng.below(2) == 0 {
                op.apply(&mut entries);
            }
        }
        let mut files = HashMap::new();
        for &inode in entries.values() {
            if files.contains_key(&inode) {
                continue;
            }
            let f = s.files.get(&inode).cloned().unwrap_or_default();
            let mut image = f.durable.clone();
            for &p in &f.dirty {
                let keep = match rng.below(3) {
                    0 => 0,
                    1 => SIM_PAGE_BYTES,
                    _ => {
                        let sectors = SIM_PAGE_BYTES / SIM_SECTOR_BYTES;
                        (1 + rng.below(sectors as u64 - 1) as usize) * SIM_SECTOR_BYTES
                    }
                };
                let from = p * SIM_PAGE_BYTES;
                let to = (from + keep).min(f.data.len());
                if from < to {
                    if image.len() < to {
                        image.resize(to, 0);
                    }
                    image[from..to].copy_from_slice(&f.data[from..to]);
                }
            }
            files.insert(
                inode,
                SimFile {
                    data: image.clone(),
                    durable: image,
                    dirty: BTreeSet::new(),
                },
            );
        }
        SimVfs {
            state: Arc::new(Mutex::new(SimState {
                files,
                next_inode: s.next_inode,
                dirs: s.dirs.clone(),
                entries: entries.clone(),
                durable_entries: entries,
                pending: Vec::new(),
                locks: HashSet::new(),
                ops: 0,
                crash_at: None,
                crashed: false,
            })),
        }
    }
}

#[derive(Debug)]
struct SimHandle {
    state: Arc<Mutex<SimState>>,
    inode: u64,
}

impl VfsFile for SimHandle {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        let mut s = self.state.lock();
        s.check()?;
        let f = s.file(self.inode);
        let Ok(start) = usize::try_from(offset) else {
            return Ok(0);
        };
        if start >= f.data.len() {
            return Ok(0);
        }
        let n = buf.len().min(f.data.len() - start);
        buf[..n].copy_from_slice(&f.data[start..start + n]);
        Ok(n)
    }

    fn write_all_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        let mut s = self.state.lock();
        s.op()?;
        let f = s.file(self.inode);
        let start = usize::try_from(offset).map_err(|_| io::Error::other("offset too large"))?;
        let end = start + buf.len();
        if f.data.len() < end {
            f.data.resize(end, 0);
        }
        f.data[start..end].copy_from_slice(buf);
        if !buf.is_empty() {
            f.dirty
                .extend(start / SIM_PAGE_BYTES..=(end - 1) / SIM_PAGE_BYTES);
        }
        Ok(())
    }

    fn sync_data(&self) -> io::Result<()> {
        let mut s = self.state.lock();
        s.op()?;
        s.file(self.inode).sync();
        Ok(())
    }

    fn sync_all(&self) -> io::Result<()> {
        self.sync_data()
    }

    fn len(&self) -> io::Result<u64> {
        let mut s = self.state.lock();
        s.check()?;
        Ok(s.file(self.inode).data.len() as u64)
    }

    fn preallocate(&self, len: u64) -> io::Result<()> {
        let mut s = self.state.lock();
        s.op()?;
        let len = usize::try_from(len).map_err(|_| io::Error::other("length too large"))?;
        let f = s.file(self.inode);
        if f.data.len() < len {
            // A size change, durable at the next sync like on a real file system.
            f.data.resize(len, 0);
        }
        Ok(())
    }
}

#[derive(Debug)]
struct SimLock {
    state: Arc<Mutex<SimState>>,
    path: PathBuf,
}

impl VfsLock for SimLock {}

impl Drop for SimLock {
    fn drop(&mut self) {
        self.state.lock().locks.remove(&self.path);
    }
}

fn not_found(path: &Path) -> io::Error {
    io::Error::new(
        io::ErrorKind::NotFound,
        format!("{}: no such file", path.display()),
    )
}

impl Vfs for SimVfs {
    fn open(&self, path: &Path, mode: OpenMode) -> io::Result<Box<dyn VfsFile>> {
        let mut s = self.state.lock();
        s.check()?;
        let existing = s.entries.get(path).copied();
        let inode = match (mode, existing) {
            (OpenMode::Read | OpenMode::ReadWrite, Some(i)) | (OpenMode::CreateKeep, Some(i)) => i,
            (OpenMode::Read | OpenMode::ReadWrite, None) => return Err(not_found(path)),
            (OpenMode::CreateTruncate, _) | (OpenMode::CreateKeep, None) => {
                if !path.parent().is_some_and(|p| s.dirs.contains(p)) {
                    return Err(not_found(path));
                }
                s.op()?;
                // A fresh inode: the old content stays with the durable entry until the
                // directory is synced, like a truncation that has not reached the disk.
                let inode = s.new_inode();
                s.entries.insert(path.to_path_buf(), inode);
                s.pending.push(DirOp::Link {
                    path: path.to_path_buf(),
                    inode,
                });
                inode
            }
        };
        Ok(Box::new(SimHandle {
            state: Arc::clone(&self.state),
            inode,
        }))
    }

    fn exists(&self, path: &Path) -> io::Result<bool> {
        let s = self.state.lock();
        s.check()?;
        Ok(s.entries.contains_key(path) || s.dirs.contains(path))
    }

    fn create_dir_all(&self, dir: &Path) -> io::Result<()> {
        let mut s = self.state.lock();
        s.check()?;
        for a in dir.ancestors() {
            if !a.as_os_str().is_empty() {
                s.dirs.insert(a.to_path_buf());
            }
        }
        Ok(())
    }

    fn list(&self, dir: &Path) -> io::Result<Vec<PathBuf>> {
        let s = self.state.lock();
        s.check()?;
        if !s.dirs.contains(dir) {
            return Err(not_found(dir));
        }
        Ok(s.entries
            .keys()
            .filter(|p| p.parent() == Some(dir))
            .cloned()
            .collect())
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        let mut s = self.state.lock();
        s.check()?;
        let inode = *s.entries.get(from).ok_or_else(|| not_found(from))?;
        s.op()?;
        s.entries.remove(from);
        s.entries.insert(to.to_path_buf(), inode);
        s.pending.push(DirOp::Rename {
            from: from.to_path_buf(),
            to: to.to_path_buf(),
            inode,
        });
        Ok(())
    }

    fn remove(&self, path: &Path) -> io::Result<()> {
        let mut s = self.state.lock();
        s.check()?;
        let inode = *s.entries.get(path).ok_or_else(|| not_found(path))?;
        s.op()?;
        s.entries.remove(path);
        s.pending.push(DirOp::Unlink {
            path: path.to_path_buf(),
            inode,
        });
        Ok(())
    }

    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        let mut s = self.state.lock();
        s.op()?;
        let pending = std::mem::take(&mut s.pending);
        let mut rest = Vec::new();
        for op in pending {
            if op.dir() == Some(dir) {
                op.apply(&mut s.durable_entries);
            } else {
                rest.push(op);
            }
        }
        s.pending = rest;
        Ok(())
    }

    fn lock(&self, path: &Path) -> io::Result<Box<dyn VfsLock>> {
        let mut s = self.state.lock();
        s.check()?;
        if !s.locks.insert(path.to_path_buf()) {
            return Err(io::Error::from(io::ErrorKind::WouldBlock));
        }
        Ok(Box::new(SimLock {
            state: Arc::clone(&self.state),
            path: path.to_path_buf(),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir() -> PathBuf {
        PathBuf::from("/sim/d")
    }

    #[test]
    fn synced_data_survives_unsynced_may_not() {
        let vfs = SimVfs::new();
        vfs.create_dir_all(&dir()).unwrap();
        let p = dir().join("f");
        let f = vfs.open(&p, OpenMode::CreateTruncate).unwrap();
        f.write_all_at(&[1u8; 5000], 0).unwrap();
        f.sync_data().unwrap();
        vfs.sync_dir(&dir()).unwrap();
        f.write_all_at(&[2u8; 100], 4096).unwrap();
        let mut seen = HashSet::new();
        for seed in 0..64 {
            let img = vfs.after_crash(seed).file_bytes(&p).unwrap();
            assert_eq!(img.len(), 5000);
            assert!(img[..4096].iter().all(|&b| b == 1));
            // Dropped, kept or a sector prefix kept: never anything else.
            let twos = img[4096..4196].iter().take_while(|&&b| b == 2).count();
            assert!(img[4096 + twos..].iter().all(|&b| b == 1), "seed {seed}");
            seen.insert(twos);
        }
        assert_eq!(seen, HashSet::from([0, 100]));
    }

    #[test]
    fn directory_changes_need_a_directory_sync() {
        let vfs = SimVfs::new();
        vfs.create_dir_all(&dir()).unwrap();
        let p = dir().join("new");
        let f = vfs.open(&p, OpenMode::CreateTruncate).unwrap();
        f.write_all_at(b"x", 0).unwrap();
        f.sync_all().unwrap();
        let outcomes: HashSet<bool> = (0..32)
            .map(|s| vfs.after_crash(s).file_bytes(&p).is_some())
            .collect();
        assert_eq!(outcomes, HashSet::from([true, false]));
        vfs.sync_dir(&dir()).unwrap();
        assert!((0..8).all(|s| vfs.after_crash(s).file_bytes(&p) == Some(b"x".to_vec())));
    }

    #[test]
    fn a_crash_fails_every_later_io() {
        let vfs = SimVfs::new();
        vfs.create_dir_all(&dir()).unwrap();
        let f = vfs
            .open(&dir().join("f"), OpenMode::CreateTruncate)
            .unwrap();
        vfs.crash_at_op(2);
        f.write_all_at(b"a", 0).unwrap();
        assert!(f.sync_data().is_err());
        assert!(vfs.is_crashed());
        assert!(f.read_at(&mut [0u8; 1], 0).is_err());
        assert!(vfs.list(&dir()).is_err());
        for seed in 0..16 {
            let img = vfs.after_crash(seed);
            assert!(!img.is_crashed());
            if let Some(b) = img.file_bytes(&dir().join("f")) {
                assert!(b.is_empty() || b == b"a", "seed {seed}: {b:?}");
            }
        }
    }
}
