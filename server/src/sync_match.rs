//! Sync match on start: a new run's first workflow task goes straight to a worker already
//! waiting in a long poll for it.
//!
//! Without it a start appends RunStarted + WorkflowTaskScheduled and syncs; a poller wakes,
//! appends WorkflowTaskStarted and syncs again, then reads the history back. With it, the
//! start finds a waiting poller that would take the task (same namespace, queue and routing
//! key as its own poll would ask the store for), records WorkflowTaskStarted for that worker
//! in the run's first append, and hands the durable records to the poller: one append, one
//! sync and one wake-up fewer per run, and nothing read back.
//!
//! Nothing here is durable. A poller that left before its task reached it (its deadline
//! passed, its caller went away) is found out when the hand-over fails; the start then
//! times the task out at once (WorkflowTaskTimedOut), which schedules it again for any
//! worker, exactly as if the worker had died holding it. A start that fails after taking a
//! poller drops the hand-over and the poller goes on polling.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};

use parking_lot::Mutex;
use steadfast_engine::RunKey;
use steadfast_engine::store::Appended;
use tokio::sync::oneshot;

/// A new run's durable first append, with WorkflowTaskStarted recorded for the poller.
pub struct Matched {
    /// The run.
    pub key: RunKey,
    /// Its first append.
    pub appended: Appended,
}

/// A long poll waiting for a workflow task.
struct Waiter {
    id: u64,
    worker: String,
    /// The workflow types it runs (never empty: a poll for any type is not matched).
    types: Vec<String>,
    build: Option<String>,
    tx: oneshot::Sender<Matched>,
}

/// What a start may hand its first task to: a waiting poller's worker and what its poll
/// would ask for.
#[derive(Debug, Clone)]
pub struct Candidate {
    /// The waiter, to take it with [`Waiters::take`].
    pub id: u64,
    /// Worker id.
    pub worker: String,
    /// Its workflow types.
    pub types: Vec<String>,
    /// Its build.
    pub build: Option<String>,
}

/// The pollers waiting for workflow tasks, per namespace and task queue (this node only).
#[derive(Default)]
pub struct Waiters {
    queues: Mutex<HashMap<(String, String), Vec<Waiter>>>,
    next_id: AtomicU64,
}

/// A taken waiter: the start hands it the run with [`Taken::hand_over`].
pub struct Taken {
    worker: String,
    tx: oneshot::Sender<Matched>,
}

impl Taken {
    /// The worker the task is started for.
    pub fn worker(&self) -> &str {
        &self.worker
    }

    /// Gives the poller its task; false when the poller has left (the task must be timed
    /// out so that another worker gets it).
    pub fn hand_over(self, m: Matched) -> bool {
        self.tx.send(m).is_ok()
    }
}

/// A poller's place in the waiting list; leaves it when dropped.
pub struct Registration<'a> {
    waiters: &'a Waiters,
    place: (String, String),
    id: u64,
    /// Where a start's hand-over arrives.
    pub rx: oneshot::Receiver<Matched>,
}

impl Waiters {
    /// Puts a poll of `worker` (running `types`, of `build`) on `namespace`/`queue` in the
    /// waiting list.
    pub fn register(
        &self,
        namespace: &str,
        queue: &str,
        worker: &str,
        types: Vec<String>,
        build: Option<&str>,
    ) -> Registration<'_> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        let place = (namespace.to_string(), queue.to_string());
        self.queues
            .lock()
            .entry(place.clone())
            .or_default()
            .push(Waiter {
                id,
                worker: worker.to_string(),
                types,
                build: build.map(str::to_string),
                tx,
            });
        Registration {
            waiters: self,
            place,
            id,
            rx,
        }
    }

    /// The longest-waiting poller on `namespace`/`queue` that runs `workflow_type`, if any
    /// (it stays in the list: see [`Waiters::take`]).
    pub fn candidate(
        &self,
        namespace: &str,
        queue: &str,
        workflow_type: &str,
    ) -> Option<Candidate> {
        let queues = self.queues.lock();
        let list = queues.get(&(namespace.to_string(), queue.to_string()))?;
        list.iter()
            .find(|w| w.types.iter().any(|t| t == workflow_type) && !w.tx.is_closed())
            .map(|w| Candidate {
                id: w.id,
                worker: w.worker.clone(),
                types: w.types.clone(),
                build: w.build.clone(),
            })
    }

    /// Takes the waiter `id` out of the list; `None` when it left (or was taken) meanwhile.
    pub fn take(&self, namespace: &str, queue: &str, id: u64) -> Option<Taken> {
        let mut queues = self.queues.lock();
        let place = (namespace.to_string(), queue.to_string());
        let list = queues.get_mut(&place)?;
        let i = list.iter().position(|w| w.id == id)?;
        let w = list.remove(i);
        if list.is_empty() {
            queues.remove(&place);
        }
        Some(Taken {
            worker: w.worker,
            tx: w.tx,
        })
    }

    /// Pollers waiting (all queues).
    pub fn len(&self) -> usize {
        self.queues.lock().values().map(Vec::len).sum()
    }

    /// Whether no poller waits.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl Registration<'_> {
    /// Leaves the waiting list. False when a start took this poll meanwhile: its hand-over
    /// (or, if that start failed, the closed channel) arrives on `rx`.
    pub fn withdraw(&mut self) -> bool {
        self.waiters
            .take(&self.place.0, &self.place.1, self.id)
            .is_some()
    }
}

impl Drop for Registration<'_> {
    fn drop(&mut self) {
        self.withdraw();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn types(t: &[&str]) -> Vec<String> {
        t.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn a_start_finds_the_oldest_poller_of_its_queue_and_type() {
        let w = Waiters::default();
        let _a = w.register("ns", "q", "w-a", types(&["other"]), None);
        let _b = w.register("ns", "q", "w-b", types(&["wf"]), None);
        let _c = w.register("ns", "q", "w-c", types(&["wf"]), Some("b1"));
        let _d = w.register("ns2", "q", "w-d", types(&["wf"]), None);
        let c = w.candidate("ns", "q", "wf").expect("a candidate");
        assert_eq!(c.worker, "w-b");
        assert!(w.candidate("ns", "q2", "wf").is_none());
        assert!(w.candidate("ns", "q", "nobody").is_none());
        let taken = w.take("ns", "q", c.id).expect("still there");
        assert_eq!(taken.worker(), "w-b");
        // Taken once only.
        assert!(w.take("ns", "q", c.id).is_none());
        assert_eq!(w.candidate("ns", "q", "wf").unwrap().worker, "w-c");
    }

    #[test]
    fn a_poller_that_left_is_not_a_candidate_and_a_taken_one_cannot_withdraw() {
        let w = Waiters::default();
        {
            let _gone = w.register("ns", "q", "w-gone", types(&["wf"]), None);
        }
        assert!(w.is_empty());
        assert!(w.candidate("ns", "q", "wf").is_none());

        let mut r = w.register("ns", "q", "w-1", types(&["wf"]), None);
        let c = w.candidate("ns", "q", "wf").unwrap();
        let taken = w.take("ns", "q", c.id).unwrap();
        assert!(
            !r.withdraw(),
            "a start took it: the poller waits for the hand-over"
        );
        drop(taken);
        // The start failed: the poller sees the channel closed and goes on polling.
        assert!(r.rx.try_recv().is_err());
    }
}
