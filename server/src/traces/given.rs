//! The traceparent each run was started with (its RunStarted, seq 1), cached: every activity
//! handed out with traces on carries a traceparent in the run's trace, and a run's
//! RunStarted never changes, so reading it once per run (not once per dispatch) is enough.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};

use parking_lot::Mutex;
use steadfast_engine::event::{Event, EventRecord};
use steadfast_engine::ids::RunKey;
use steadfast_engine::store::{Error, Store};

/// Most runs cached; past it one entry is dropped per insert (its run is read again next
/// time). An entry is a run key and at most a 55-byte traceparent.
pub const RUN_TRACEPARENTS_MAX: usize = 10_000;

/// Run → the traceparent its RunStarted recorded (`None`: none given).
#[derive(Debug, Default)]
pub struct RunTraceparents {
    cache: Mutex<HashMap<RunKey, Option<String>>>,
    /// RunStarted records read (cache misses) since start.
    reads: AtomicU64,
}

impl RunTraceparents {
    /// The traceparent `key` was started with, from the cache or its RunStarted.
    pub async fn get(&self, store: &dyn Store, key: &RunKey) -> Result<Option<String>, Error> {
        if let Some(tp) = self.cache.lock().get(key) {
            return Ok(tp.clone());
        }
        self.reads.fetch_add(1, Ordering::Relaxed);
        let tp = match store.read_history(key, 1, 1).await?.pop() {
            Some(EventRecord {
                event: Event::RunStarted(a),
                ..
            }) => a.traceparent,
            // Not there (dropped): nothing to continue, and nothing worth caching.
            _ => return Ok(None),
        };
        let mut cache = self.cache.lock();
        if cache.len() >= RUN_TRACEPARENTS_MAX
            && let Some(evict) = cache.keys().next().cloned()
        {
            cache.remove(&evict);
        }
        cache.insert(key.clone(), tp.clone());
        Ok(tp)
    }

    /// RunStarted records read so far (for tests: a dispatch should not read one).
    pub fn reads(&self) -> u64 {
        self.reads.load(Ordering::Relaxed)
    }

    /// Runs cached now.
    pub fn len(&self) -> usize {
        self.cache.lock().len()
    }

    /// Whether no run is cached.
    pub fn is_empty(&self) -> bool {
        self.cache.lock().is_empty()
    }
}
