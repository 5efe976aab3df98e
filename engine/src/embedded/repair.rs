//! Repairs after a crash that fall between two appends.
//!
//! Continue-as-new is two appends: the old run's RunContinuedAsNew (which names the new run
//! and holds its input), then the new run's RunStarted. A crash between them leaves a run
//! that points at a successor that was never created; the old run's event holds everything
//! needed to create it, so the server does that on start.

use crate::embedded::keys::{self, BY_STATUS};
use crate::embedded::{EmbeddedStore, sled_err};
use crate::event::RunStarted;
use crate::ids::{RunId, RunKey};
use crate::state::RunStatus;
use crate::store::Error;

impl EmbeddedStore {
    /// The keys of every open run (for the server's start-up reconciliation of child runs).
    pub async fn open_runs(&self) -> Result<Vec<RunKey>, Error> {
        runs_with_status(&self.inner.db, RunStatus::Running)
    }

    /// Runs continued as new whose successor does not exist, with the RunStarted that
    /// creates it (same workflow type, id, queue, timeout and budget; the continued input;
    /// `continued_from` the old run).
    pub async fn missing_successors(&self) -> Result<Vec<(RunKey, RunStarted)>, Error> {
        let continued = runs_with_status(&self.inner.db, RunStatus::ContinuedAsNew)?;
        crate::store::successor::missing_of(self, continued).await
    }
}

/// The runs of `status` in every namespace, read from the `x` index one namespace at a time:
/// only that status's keys are read, so the cost follows the runs returned (and the number
/// of namespaces), not every run stored. Both callers run at every start, and `open_runs` at
/// every metrics scrape: a scan of all `x` keys grew with the closed runs (a million of them
/// to find ten thousand open ones).
fn runs_with_status(db: &sled::Db, status: RunStatus) -> Result<Vec<RunKey>, Error> {
    let mut out = Vec::new();
    let mut from = vec![BY_STATUS];
    // x | ns len u8 | ns | status u8 | run id (16)
    while let Some(item) = db.range(from.clone()..).next() {
        let (k, _) = item.map_err(sled_err)?;
        if k.first() != Some(&BY_STATUS) {
            break;
        }
        let Some(&n) = k.get(1) else {
            from = after_prefix(&k);
            continue;
        };
        let ns_end = 2 + n as usize;
        let Some(ns_bytes) = k.get(2..ns_end) else {
            from = after_prefix(&k);
            continue;
        };
        if let Ok(ns) = std::str::from_utf8(ns_bytes) {
            for item in db.scan_prefix(keys::by_status_prefix(ns, status)) {
                let (k, _) = item.map_err(sled_err)?;
                if k.len() != ns_end + 1 + 16 {
                    continue;
                }
                if let Ok(id) = uuid::Uuid::from_slice(&k[ns_end + 1..]) {
                    out.push(RunKey::new(ns, RunId(id)));
                }
            }
        }
        // On to the next namespace: past every key of this one.
        from = after_prefix(&k[..ns_end]);
    }
    Ok(out)
}

/// The smallest key greater than every key that starts with `prefix`.
fn after_prefix(prefix: &[u8]) -> Vec<u8> {
    let mut k = prefix.to_vec();
    while let Some(last) = k.pop() {
        if last < u8::MAX {
            k.push(last + 1);
            return k;
        }
    }
    // Only 0xff bytes: nothing sorts after them in the `x` table.
    vec![BY_STATUS + 1]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::embedded::EmbeddedOptions;
    use crate::event::{self, Event};
    use crate::payload::Payload;
    use crate::store::contract::fixtures::started;
    use crate::store::{AppendRequest, Store};

    /// Open runs are found in every namespace and closed ones are not; a namespace whose name
    /// is a prefix of another's is not skipped.
    #[tokio::test]
    async fn open_runs_of_every_namespace_and_no_closed_one() {
        let dir = tempfile::tempdir().unwrap();
        let (store, _) = EmbeddedStore::open(dir.path(), EmbeddedOptions::default()).unwrap();
        let mut want = Vec::new();
        for ns in ["a", "ab", "b", "default", "z-last"] {
            for i in 0..4 {
                let key = RunKey::new(ns, RunId::new_v7());
                let mut events = vec![Event::RunStarted(started(&format!("{ns}-{i}"), "q"))];
                if i % 2 == 1 {
                    events.push(Event::RunCompleted(event::RunCompleted {
                        command_seq: 1,
                        result: Payload::json(b"1".to_vec()),
                    }));
                } else {
                    want.push(key.clone());
                }
                store
                    .append(AppendRequest {
                        key,
                        expected_next_seq: 1,
                        events,
                        time_ms: 1_700_000_000_000,
                        wait_durable: true,
                    })
                    .await
                    .unwrap();
            }
        }
        store.checkpoint().await.unwrap();
        let mut got = store.open_runs().await.unwrap();
        got.sort_by_key(|k| k.to_bytes());
        want.sort_by_key(|k| k.to_bytes());
        assert_eq!(got, want);
        assert!(store.missing_successors().await.unwrap().is_empty());
    }

    #[test]
    fn after_prefix_is_past_every_key_of_the_prefix() {
        assert_eq!(after_prefix(&[b'x', 1, b'a']), vec![b'x', 1, b'b']);
        assert_eq!(after_prefix(&[b'x', 1, 0xff]), vec![b'x', 2]);
        assert_eq!(after_prefix(&[0xff]), vec![BY_STATUS + 1]);
    }
}
