//! Wake-ups: long polls waiting on a queue, and watchers waiting on a run.

use std::collections::HashMap;
use std::sync::Arc;

use parking_lot::Mutex;
use steadfast_engine::RunKey;
use steadfast_engine::store::TaskKind;
use tokio::sync::{Notify, watch};

/// Queue and run wake-ups.
pub struct Notifier {
    queues: Mutex<HashMap<(String, String, TaskKind), Arc<Notify>>>,
    /// One channel per run that someone waits on (AwaitResult, WatchRun): an append wakes
    /// only the waiters of its own run.
    runs: Mutex<HashMap<RunKey, watch::Sender<u64>>>,
    timers: Notify,
    schedules: Notify,
    /// Set once when the server begins to stop: long polls and waits end at once instead of
    /// holding the shutdown for their deadline.
    stopping: watch::Sender<bool>,
}

impl Default for Notifier {
    fn default() -> Self {
        Notifier {
            queues: Mutex::default(),
            runs: Mutex::default(),
            timers: Notify::new(),
            schedules: Notify::new(),
            stopping: watch::channel(false).0,
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
    ///
    /// Appends to one run are pipelined (the next is committed while the last syncs), and on
    /// a multi-thread runtime the tasks that announce them can run in either order once both
    /// are durable. The channel only ever moves forward: an announcement older than the one
    /// it holds would hide the newer one from a waiter that already saw the older seq, and that
    /// waiter would sleep to its deadline with the run long closed.
    pub fn run_changed(&self, key: &RunKey, last_seq: u64) {
        if let Some(tx) = self.runs.lock().get(key) {
            tx.send_if_modified(|seen| {
                let newer = last_seq > *seen;
                if newer {
                    *seen = last_seq;
                }
                newer
            });
        }
    }

    /// Follows one run's changes until the returned guard is dropped.
    pub fn watch_run(&self, key: &RunKey) -> RunWatch<'_> {
        let rx = self
            .runs
            .lock()
            .entry(key.clone())
            .or_insert_with(|| watch::channel(0).0)
            .subscribe();
        RunWatch {
            notifier: self,
            key: key.clone(),
            rx,
        }
    }

    /// Wakes the timer loop (a new deadline may be earlier than the one it sleeps to).
    /// The server is stopping: every long poll and wait returns now.
    pub fn stop(&self) {
        self.stopping.send_replace(true);
    }

    /// Whether [`Notifier::stop`] was called.
    pub fn is_stopping(&self) -> bool {
        *self.stopping.borrow()
    }

    /// Resolves once [`Notifier::stop`] is called (at once if it was).
    pub async fn stopped(&self) {
        let mut rx = self.stopping.subscribe();
        let _ = rx.wait_for(|s| *s).await;
    }

    pub fn timers_changed(&self) {
        self.timers.notify_one();
    }

    /// Wakes the schedule loop (a schedule was created, resumed or changed here).
    pub fn schedules_changed(&self) {
        self.schedules.notify_one();
    }

    /// The schedule loop's wake-up.
    pub fn schedules(&self) -> &Notify {
        &self.schedules
    }

    /// The timer loop's wake-up.
    pub fn timers(&self) -> &Notify {
        &self.timers
    }
}

/// A subscription to one run's changes; the run's channel goes away with its last watcher.
pub struct RunWatch<'a> {
    notifier: &'a Notifier,
    key: RunKey,
    rx: watch::Receiver<u64>,
}

impl RunWatch<'_> {
    /// Waits until the run's history passes `seen`, the deadline, or the server begins to
    /// stop (the caller checks [`Notifier::is_stopping`]: a wait must not hold the shutdown
    /// for its deadline).
    pub async fn changed_after(&mut self, seen: u64, deadline: tokio::time::Instant) {
        let notifier = self.notifier;
        let stopped = notifier.stopped();
        tokio::pin!(stopped);
        loop {
            if *self.rx.borrow_and_update() > seen {
                return;
            }
            tokio::select! {
                changed = tokio::time::timeout_at(deadline, self.rx.changed()) => match changed {
                    Ok(Ok(())) => continue,
                    // Timed out, or the channel is gone: the caller re-reads the store.
                    _ => return,
                },
                _ = &mut stopped => return,
            }
        }
    }
}

impl Drop for RunWatch<'_> {
    fn drop(&mut self) {
        let mut runs = self.notifier.runs.lock();
        // Our own receiver still counts here.
        if runs
            .get(&self.key)
            .is_some_and(|tx| tx.receiver_count() <= 1)
        {
            runs.remove(&self.key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use steadfast_engine::RunId;

    #[tokio::test]
    async fn only_the_run_s_own_waiters_wake_and_channels_go_away() {
        let n = Notifier::default();
        let (a, b) = (
            RunKey::new("ns", RunId::new_v7()),
            RunKey::new("ns", RunId::new_v7()),
        );
        let mut wa = n.watch_run(&a);
        n.run_changed(&b, 9);
        let soon = tokio::time::Instant::now() + std::time::Duration::from_millis(20);
        wa.changed_after(0, soon).await;
        assert_eq!(
            *wa.rx.borrow(),
            0,
            "another run's change does not reach this watcher"
        );
        n.run_changed(&a, 3);
        wa.changed_after(
            2,
            tokio::time::Instant::now() + std::time::Duration::from_secs(5),
        )
        .await;
        assert_eq!(*wa.rx.borrow(), 3);
        drop(wa);
        assert!(n.runs.lock().is_empty(), "no channel is left behind");
    }

    /// A wait ends when the server begins to stop, not at its deadline.
    #[tokio::test(start_paused = true)]
    async fn a_wait_ends_when_the_server_begins_to_stop() {
        let n = Notifier::default();
        let key = RunKey::new("ns", RunId::new_v7());
        let mut w = n.watch_run(&key);
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(55);
        let wait = w.changed_after(0, deadline);
        tokio::pin!(wait);
        assert!(
            futures::poll!(&mut wait).is_pending(),
            "nothing happened yet"
        );
        n.stop();
        wait.await;
        assert!(
            tokio::time::Instant::now() < deadline,
            "the wait held the shutdown until its deadline"
        );
    }

    /// Two appends of one run announced out of order (seq 8, then the older 5) must not hide
    /// the newer one from a waiter that saw seq 5: it wakes at once, not at its deadline.
    #[tokio::test(start_paused = true)]
    async fn an_older_announcement_does_not_hide_a_newer_one() {
        let n = Notifier::default();
        let key = RunKey::new("ns", RunId::new_v7());
        let mut w = n.watch_run(&key);
        n.run_changed(&key, 8);
        n.run_changed(&key, 5);
        assert_eq!(*w.rx.borrow(), 8, "the channel never moves backwards");
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(55);
        w.changed_after(5, deadline).await;
        assert!(
            tokio::time::Instant::now() < deadline,
            "the waiter that saw seq 5 slept to its deadline although seq 8 was announced"
        );
        // A repeated or older announcement wakes nobody.
        n.run_changed(&key, 8);
        let soon = tokio::time::Instant::now() + std::time::Duration::from_secs(1);
        w.changed_after(8, soon).await;
        assert!(
            tokio::time::Instant::now() >= soon,
            "nothing newer than 8 was announced"
        );
    }
}
