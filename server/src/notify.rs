//! Wake-ups: long polls waiting on a queue, and watchers waiting on a run.

use std::collections::HashMap;
use std::sync::Arc;

use parking_lot::Mutex;
use steadfast_engine::RunKey;
use steadfast_engine::store::TaskKind;
use tokio::sync::{Notify, broadcast};

/// Capacity of the run-change broadcast; a lagging watcher re-reads from the store.
const RUN_CHANGES_CAPACITY: usize = 4096;

/// Queue and run wake-ups.
pub struct Notifier {
    queues: Mutex<HashMap<(String, String, TaskKind), Arc<Notify>>>,
    runs: broadcast::Sender<(RunKey, u64)>,
    timers: Notify,
}

impl Default for Notifier {
    fn default() -> Self {
        Notifier {
            queues: Mutex::default(),
            runs: broadcast::channel(RUN_CHANGES_CAPACITY).0,
            timers: Notify::new(),
        }
    }
}

impl Notifier {
    /// The notify of one queue.
    pub fn queue(&self, namespace: &str, queue: &str, kind: TaskKind) -> Arc<Notify> {
        let mut q = self.queues.lock();
        q.entry((namespace.to_string(), queue.to_string(), kind))
            .or_default()
            .clone()
    }

    /// Wakes one poller of a queue (a task became ready there).
    pub fn task_ready(&self, namespace: &str, queue: &str, kind: TaskKind) {
        self.queue(namespace, queue, kind).notify_one();
    }

    /// Wakes every poller (tasks may have become visible by time).
    pub fn wake_all_queues(&self) {
        for n in self.queues.lock().values() {
            n.notify_waiters();
        }
    }

    /// Announces that a run's history grew to `last_seq`.
    pub fn run_changed(&self, key: &RunKey, last_seq: u64) {
        let _ = self.runs.send((key.clone(), last_seq));
    }

    /// Subscribes to run changes.
    pub fn subscribe_runs(&self) -> broadcast::Receiver<(RunKey, u64)> {
        self.runs.subscribe()
    }

    /// Wakes the timer loop (a new deadline may be earlier than the one it sleeps to).
    pub fn timers_changed(&self) {
        self.timers.notify_one();
    }

    /// The timer loop's wake-up.
    pub fn timers(&self) -> &Notify {
        &self.timers
    }
}
