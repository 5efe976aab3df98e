//! The search indexes of the embedded store (`a` keys, see [`keys`]): which index serves a
//! run list, and the one-time backfill of data dirs written before the indexes existed.
//!
//! Entries are written with the run states (indexer, recovery, rebuild) and removed with
//! them (retention). A list re-checks every filter on each run's state, so an entry left
//! stale by a rebuild costs a read, never a wrong answer; a *missing* entry would hide a run,
//! which is why every path that writes a state writes all of its entries when it does not
//! know the previous ones.

use crate::embedded::keys::{self, SearchIndex};
use crate::embedded::sled_err;
use crate::ids::RunKey;
use crate::store::{Error, RunFilter};

/// The set of indexes a data dir's `a` keys hold (the value of [`keys::META_SEARCH_INDEX`]):
/// 1 = workflow id, schedule, attribute, failed activity; 2 = also forks. A data dir with an
/// older set is backfilled again (inserting an entry twice is harmless).
const SEARCH_INDEX_VERSION: u8 = 2;

/// Entries written per sled batch during the backfill.
const BACKFILL_BATCH_RUNS: usize = 10_000;

/// The key prefix of the most selective index for `filter` among the search indexes (a
/// workflow id, then a search attribute, a schedule, a failed activity type), or `None`
/// when the filter names none of them.
pub(crate) fn index_prefix(namespace: &str, filter: &RunFilter) -> Option<Vec<u8>> {
    if let Some(f) = &filter.forked_from {
        return Some(keys::search_prefix(
            namespace,
            SearchIndex::ForkedFrom,
            f.as_bytes(),
        ));
    }
    if let Some(w) = &filter.workflow_id {
        return Some(keys::search_prefix(
            namespace,
            SearchIndex::WorkflowId,
            w.as_bytes(),
        ));
    }
    if let Some((n, v)) = filter.attributes.first() {
        return Some(keys::search_prefix(
            namespace,
            SearchIndex::Attribute,
            &keys::attribute_value(n, v),
        ));
    }
    if let Some(s) = &filter.schedule {
        return Some(keys::search_prefix(
            namespace,
            SearchIndex::Schedule,
            s.as_bytes(),
        ));
    }
    filter
        .failed_activity
        .as_ref()
        .map(|t| keys::search_prefix(namespace, SearchIndex::FailedActivity, t.as_bytes()))
}

/// Writes the search entries of every stored run once, when sled does not say it has them
/// (a data dir from before the indexes). A state that does not decode is skipped: reading
/// that run reports its damage.
pub(crate) fn backfill(db: &sled::Db) -> Result<(), Error> {
    if db
        .get(keys::META_SEARCH_INDEX)
        .map_err(sled_err)?
        .is_some_and(|v| v.first().is_some_and(|&n| n >= SEARCH_INDEX_VERSION))
    {
        return Ok(());
    }
    let mut batch = sled::Batch::default();
    let mut runs = 0usize;
    let mut total = 0u64;
    for item in db.scan_prefix([keys::STATE]) {
        let (k, v) = item.map_err(sled_err)?;
        let Some(key) = RunKey::from_bytes(&k[1..]) else {
            continue;
        };
        let Ok(stored) = keys::decode_state(&key, &v) else {
            continue;
        };
        for e in keys::search_keys(&stored.state) {
            batch.insert(e, &[]);
        }
        runs += 1;
        total += 1;
        if runs >= BACKFILL_BATCH_RUNS {
            db.apply_batch(std::mem::take(&mut batch))
                .map_err(sled_err)?;
            runs = 0;
        }
    }
    batch.insert(keys::META_SEARCH_INDEX, &[SEARCH_INDEX_VERSION][..]);
    db.apply_batch(batch).map_err(sled_err)?;
    if total > 0 {
        tracing::info!(
            runs = total,
            "search indexes built for runs stored before them"
        );
    }
    Ok(())
}
