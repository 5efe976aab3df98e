//! Schedules of the embedded store: one small file per schedule in `dir/schedules`, replaced
//! atomically (write a temporary file, fsync it, rename it over the old one, fsync the
//! directory), so a crash or power cut leaves the old record or the new one.
//!
//! Schedules are few, small and rarely written (once per fired slot), so they are not log
//! records: no sled index, no compaction, nothing to rebuild. Each file holds a version byte,
//! the schedule's version, namespace, name and record, and a blake3 checksum of all that; a
//! file that fails it is reported as corruption ([STF-C2]), never read as absent.
//! One process owns the directory (the embedded store is single-node), so a mutex makes the
//! compare-and-set atomic.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use parking_lot::Mutex;

use crate::store::{Error, StoredSchedule};

/// Subdirectory of the schedule files.
pub const SCHEDULES_DIR: &str = "schedules";
const FILE_VERSION: u8 = 1;
const EXT: &str = "sched";
/// Longest file name most file systems take (ext4, XFS, APFS: 255 bytes).
const FILE_NAME_BYTES_MAX: usize = 255;

pub(crate) struct Schedules {
    dir: PathBuf,
    lock: Mutex<()>,
}

fn io(what: &str, path: &Path) -> impl Fn(std::io::Error) -> Error {
    let what = format!("{what} {}", path.display());
    move |e| Error::Unavailable(format!("{what}: {e}"))
}

impl Schedules {
    pub(crate) fn open(store_dir: &Path) -> Result<Schedules, Error> {
        Schedules::open_in(store_dir, SCHEDULES_DIR)
    }

    /// The same files in another subdirectory, for other small records written rarely and
    /// atomically (the task queues' current builds, [`super::queue_builds`]).
    pub(crate) fn open_in(store_dir: &Path, subdir: &str) -> Result<Schedules, Error> {
        let dir = store_dir.join(subdir);
        fs::create_dir_all(&dir).map_err(io("create", &dir))?;
        // A temporary file is a write that never got renamed: it was never acknowledged.
        for entry in fs::read_dir(&dir).map_err(io("read", &dir))? {
            let path = entry.map_err(io("read", &dir))?.path();
            if path.extension().is_some_and(|e| e == "tmp") {
                fs::remove_file(&path).map_err(io("remove", &path))?;
            }
        }
        Ok(Schedules {
            dir,
            lock: Mutex::new(()),
        })
    }

    /// The file of a schedule: its namespace and name in hex when that fits in a file name,
    /// else `h` and the blake3 hash of them (a namespace may be 256 bytes long: its hex alone
    /// is over the 255 bytes a file name may have, and every schedule RPC of such a tenant
    /// answered UNAVAILABLE "File name too long"). Names that fit keep the hex form, so the
    /// files of existing data dirs are found where they are.
    fn path(&self, namespace: &str, name: &str) -> PathBuf {
        let mut key = Vec::with_capacity(namespace.len() + name.len() + 1);
        key.extend_from_slice(namespace.as_bytes());
        key.push(0);
        key.extend_from_slice(name.as_bytes());
        let file = if 2 * key.len() + 1 + EXT.len() <= FILE_NAME_BYTES_MAX {
            hex::encode(key)
        } else {
            format!("h{}", blake3::hash(&key).to_hex())
        };
        self.dir.join(format!("{file}.{EXT}"))
    }

    /// The schedule `namespace`/`name` from its file; a file that holds another schedule is
    /// corruption, never that schedule.
    fn read(&self, namespace: &str, name: &str) -> Result<Option<StoredSchedule>, Error> {
        let path = self.path(namespace, name);
        match read_file(&path)? {
            Some(s) if s.namespace != namespace || s.name != name => Err(Error::Corrupt {
                run: None,
                seq: None,
                detail: format!(
                    "schedule file {} holds schedule {}/{}, not the one its name says",
                    path.display(),
                    s.namespace,
                    s.name
                ),
            }),
            other => Ok(other),
        }
    }

    pub(crate) fn put(
        &self,
        namespace: &str,
        name: &str,
        expected: u64,
        data: Vec<u8>,
    ) -> Result<u64, Error> {
        let _g = self.lock.lock();
        let path = self.path(namespace, name);
        let actual = self.read(namespace, name)?.map_or(0, |s| s.version);
        if actual != expected {
            return Err(conflict(namespace, name, expected, actual));
        }
        let version = actual + 1;
        let bytes = encode(&StoredSchedule {
            namespace: namespace.into(),
            name: name.into(),
            version,
            data,
        });
        let tmp = path.with_extension("tmp");
        let mut f = fs::File::create(&tmp).map_err(io("create", &tmp))?;
        f.write_all(&bytes).map_err(io("write", &tmp))?;
        f.sync_all().map_err(io("fsync", &tmp))?;
        fs::rename(&tmp, &path).map_err(io("rename", &tmp))?;
        self.sync_dir()?;
        Ok(version)
    }

    pub(crate) fn delete(&self, namespace: &str, name: &str, expected: u64) -> Result<(), Error> {
        let _g = self.lock.lock();
        let path = self.path(namespace, name);
        let actual = self.read(namespace, name)?.map_or(0, |s| s.version);
        if actual != expected || actual == 0 {
            return Err(conflict(namespace, name, expected, actual));
        }
        fs::remove_file(&path).map_err(io("remove", &path))?;
        self.sync_dir()
    }

    pub(crate) fn get(&self, namespace: &str, name: &str) -> Result<Option<StoredSchedule>, Error> {
        self.read(namespace, name)
    }

    pub(crate) fn list(&self, namespace: Option<&str>) -> Result<Vec<StoredSchedule>, Error> {
        let mut out = Vec::new();
        for entry in fs::read_dir(&self.dir).map_err(io("read", &self.dir))? {
            let path = entry.map_err(io("read", &self.dir))?.path();
            if path.extension().is_none_or(|e| e != EXT) {
                continue;
            }
            // Deleted between the listing and the read: not an error.
            if let Some(s) = read_file(&path)?
                && namespace.is_none_or(|n| n == s.namespace)
            {
                out.push(s);
            }
        }
        out.sort_by(|a, b| (&a.namespace, &a.name).cmp(&(&b.namespace, &b.name)));
        Ok(out)
    }

    fn sync_dir(&self) -> Result<(), Error> {
        fs::File::open(&self.dir)
            .and_then(|d| d.sync_all())
            .map_err(io("fsync", &self.dir))
    }
}

fn conflict(namespace: &str, name: &str, expected: u64, actual: u64) -> Error {
    Error::ScheduleConflict {
        namespace: namespace.into(),
        name: name.into(),
        expected,
        actual,
    }
}

fn put_bytes(out: &mut Vec<u8>, b: &[u8]) {
    out.extend_from_slice(&(b.len() as u32).to_le_bytes());
    out.extend_from_slice(b);
}

fn encode(s: &StoredSchedule) -> Vec<u8> {
    let mut out = vec![FILE_VERSION];
    out.extend_from_slice(&s.version.to_le_bytes());
    put_bytes(&mut out, s.namespace.as_bytes());
    put_bytes(&mut out, s.name.as_bytes());
    put_bytes(&mut out, &s.data);
    let sum = blake3::hash(&out);
    out.extend_from_slice(sum.as_bytes());
    out
}

fn read_file(path: &Path) -> Result<Option<StoredSchedule>, Error> {
    let bytes = match fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io("read", path)(e)),
    };
    decode(&bytes).map(Some).map_err(|detail| Error::Corrupt {
        run: None,
        seq: None,
        detail: format!("schedule file {}: {detail}", path.display()),
    })
}

fn decode(bytes: &[u8]) -> Result<StoredSchedule, String> {
    let body_len = bytes
        .len()
        .checked_sub(32)
        .ok_or("shorter than its checksum")?;
    let (body, sum) = bytes.split_at(body_len);
    if blake3::hash(body).as_bytes() != sum {
        return Err("checksum mismatch".into());
    }
    let mut rest = body;
    let mut take = |n: usize| -> Result<&[u8], String> {
        if rest.len() < n {
            return Err("truncated".into());
        }
        let (a, b) = rest.split_at(n);
        rest = b;
        Ok(a)
    };
    let version_byte = take(1)?[0];
    if version_byte != FILE_VERSION {
        return Err(format!(
            "file version {version_byte} (this build reads {FILE_VERSION})"
        ));
    }
    let version = u64::from_le_bytes(take(8)?.try_into().expect("8 bytes"));
    let mut field = || -> Result<Vec<u8>, String> {
        let n = u32::from_le_bytes(take(4)?.try_into().expect("4 bytes")) as usize;
        Ok(take(n)?.to_vec())
    };
    let text = |b: Vec<u8>| String::from_utf8(b).map_err(|_| "a name is not UTF-8".to_string());
    let namespace = text(field()?)?;
    let name = text(field()?)?;
    let data = field()?;
    Ok(StoredSchedule {
        namespace,
        name,
        version,
        data,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_damaged_file_is_corruption_not_absence() {
        let dir = tempfile::tempdir().unwrap();
        let s = Schedules::open(dir.path()).unwrap();
        assert_eq!(s.put("default", "a", 0, b"x".to_vec()).unwrap(), 1);
        let path = s.path("default", "a");
        let mut bytes = fs::read(&path).unwrap();
        let mid = bytes.len() / 2;
        bytes[mid] ^= 1;
        fs::write(&path, bytes).unwrap();
        let e = s.get("default", "a").unwrap_err().to_string();
        assert!(e.contains("STF-C2") && e.contains("checksum"), "{e}");
        // A leftover temporary file is an unacknowledged write: removed at open.
        fs::write(path.with_extension("tmp"), b"junk").unwrap();
        Schedules::open(dir.path()).unwrap();
        assert!(!path.with_extension("tmp").exists());
    }

    /// Fuzz finding (tests/tests/fuzz_requests.rs, TEST_SEED=12012): a schedule of a
    /// 224-byte namespace (the limit is 256) answered UNAVAILABLE "File name too long".
    #[test]
    fn the_longest_namespace_and_name_have_a_schedule_file() {
        let dir = tempfile::tempdir().unwrap();
        let s = Schedules::open(dir.path()).unwrap();
        let ns = "n".repeat(crate::ids::NAME_LEN_MAX);
        let name = "s".repeat(crate::schedule::NAME_BYTES_MAX);
        assert_eq!(s.get(&ns, &name).unwrap(), None);
        assert_eq!(s.put(&ns, &name, 0, b"x".to_vec()).unwrap(), 1);
        assert_eq!(s.put(&ns, &name, 1, b"y".to_vec()).unwrap(), 2);
        assert_eq!(s.get(&ns, &name).unwrap().unwrap().data, b"y");
        let listed = s.list(Some(&ns)).unwrap();
        assert_eq!((listed.len(), listed[0].name.as_str()), (1, name.as_str()));
        // A short key keeps its hex file name (existing data dirs are read as they are).
        s.put("default", "a", 0, b"x".to_vec()).unwrap();
        assert!(
            dir.path()
                .join(SCHEDULES_DIR)
                .join("64656661756c740061.sched")
                .exists()
        );
        // A file under another schedule's name is corruption, not that schedule.
        fs::copy(s.path("default", "a"), s.path(&ns, &name)).unwrap();
        let e = s.get(&ns, &name).unwrap_err().to_string();
        assert!(e.contains("STF-C2") && e.contains("not the one"), "{e}");
        s.delete("default", "a", 1).unwrap();
    }
}
