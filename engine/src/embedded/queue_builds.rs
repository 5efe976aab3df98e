//! The task queues' current builds (worker versioning, [`crate::store::routing`]): one small
//! file per queue in `dir/queue_builds`, written like a schedule's (checksummed, replaced
//! atomically, the directory fsynced), and a copy in memory that every workflow poll reads.
//! One process owns the directory, so the copy cannot go stale.

use std::collections::BTreeMap;
use std::path::Path;

use parking_lot::Mutex;

use super::schedules::Schedules;
use crate::store::Error;

/// Subdirectory of the files.
pub const QUEUE_BUILDS_DIR: &str = "queue_builds";

pub(crate) struct QueueBuilds {
    files: Schedules,
    /// (namespace, queue) -> build. Also serialises writers.
    current: Mutex<BTreeMap<(String, String), String>>,
}

impl QueueBuilds {
    pub(crate) fn open(store_dir: &Path) -> Result<QueueBuilds, Error> {
        let files = Schedules::open_in(store_dir, QUEUE_BUILDS_DIR)?;
        let mut current = BTreeMap::new();
        for f in files.list(None)? {
            let build = String::from_utf8(f.data).map_err(|_| Error::Corrupt {
                run: None,
                seq: None,
                detail: format!("the build of task queue {} is not UTF-8", f.name),
            })?;
            current.insert((f.namespace, f.name), build);
        }
        Ok(QueueBuilds {
            files,
            current: Mutex::new(current),
        })
    }

    pub(crate) fn set(
        &self,
        namespace: &str,
        queue: &str,
        build: Option<&str>,
    ) -> Result<(), Error> {
        let mut current = self.current.lock();
        let version = self.files.get(namespace, queue)?.map_or(0, |f| f.version);
        let k = (namespace.to_string(), queue.to_string());
        match build {
            Some(b) => {
                self.files
                    .put(namespace, queue, version, b.as_bytes().to_vec())?;
                current.insert(k, b.to_string());
            }
            None if version > 0 => {
                self.files.delete(namespace, queue, version)?;
                current.remove(&k);
            }
            None => {}
        }
        Ok(())
    }

    pub(crate) fn get(&self, namespace: &str, queue: &str) -> Option<String> {
        self.current
            .lock()
            .get(&(namespace.to_string(), queue.to_string()))
            .cloned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn survives_a_reopen_and_clears() {
        let dir = tempfile::tempdir().unwrap();
        let q = QueueBuilds::open(dir.path()).unwrap();
        q.set("default", "agents", Some("v1")).unwrap();
        q.set("default", "agents", Some("v2")).unwrap();
        q.set("other", "agents", Some("x")).unwrap();
        drop(q);
        let q = QueueBuilds::open(dir.path()).unwrap();
        assert_eq!(q.get("default", "agents").as_deref(), Some("v2"));
        assert_eq!(q.get("other", "agents").as_deref(), Some("x"));
        assert_eq!(q.get("default", "else"), None);
        q.set("default", "agents", None).unwrap();
        drop(q);
        let q = QueueBuilds::open(dir.path()).unwrap();
        assert_eq!(q.get("default", "agents"), None);
    }
}
