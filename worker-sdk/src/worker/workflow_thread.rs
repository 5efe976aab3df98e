//! The threads that own workflow instances. Instances are `!Send`, so each lives on one
//! dedicated thread for its whole life, in that thread's LRU cache; tasks reach it over a
//! channel and answers come back on a oneshot. A run always goes to the same thread (by a
//! hash of its id).

use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};
use std::num::NonZeroUsize;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use lru::LruCache;
use parking_lot::Mutex;
use steadfast_proto::v1 as pb;
use tokio::sync::{mpsc, oneshot};

use crate::workflow::{self, PollClock, Registry, WorkflowInstance};

/// Runs whose code a watchdog had to abandon, remembered so that their tasks are failed at
/// once instead of costing this worker another spinning thread each.
const QUARANTINE_MAX: usize = 1024;

/// What a workflow thread answers for one task.
#[derive(Debug)]
pub(crate) enum Outcome {
    /// The task's completion.
    Completed(Vec<pb::Command>),
    /// The run is not cached (or the cached instance cannot go on): send the task again
    /// with the events before `first_seq`.
    NeedHistory(pb::PollWorkflowTaskResponse),
    /// The code could not be advanced; report it. The instance is gone.
    Failed(workflow::Error),
}

/// A task and the events before it; taken by the thread that runs it, or back by its
/// waiter when that thread was abandoned before it got there.
type Input = Arc<Mutex<Option<(pb::PollWorkflowTaskResponse, Option<Vec<pb::HistoryEvent>>)>>>;

enum Job {
    Activate {
        /// Unique per job, to tell which one a thread is running.
        id: u64,
        input: Input,
        reply: oneshot::Sender<Outcome>,
    },
    Evict(String),
}

/// One workflow thread as its callers see it: where to send jobs, what it runs now.
#[derive(Clone)]
struct Lane {
    jobs: mpsc::UnboundedSender<Job>,
    /// The job being run (0: none).
    running: Arc<AtomicU64>,
    clock: Arc<PollClock>,
    /// Bumped when the thread is abandoned and replaced.
    generation: u64,
}

/// Handles to the workflow threads.
///
/// The watchdog: workflow code that does not yield cannot be interrupted (no preemption in
/// Rust, and killing a thread is not safe), and a check on return never runs if it never
/// returns. So the waiter of a task watches the thread's [`PollClock`]; when one poll of
/// workflow code has run longer than the bound, it answers [`workflow::Error::DidNotYield`]
/// itself and replaces the thread: the stuck thread is abandoned (it exits if the code
/// ever returns), its other cached runs are replayed elsewhere, its queued jobs are resent.
/// A run abandoned once is quarantined on this worker, so that a spinning workflow costs
/// one thread, not one per retry.
#[derive(Clone)]
pub(crate) struct WorkflowThreads {
    lanes: Arc<Vec<Mutex<Lane>>>,
    registry: Arc<Registry>,
    per_thread: NonZeroUsize,
    activation_timeout: Duration,
    next_job: Arc<AtomicU64>,
    quarantined: Arc<Mutex<LruCache<String, ()>>>,
}

impl WorkflowThreads {
    /// Starts `threads` threads sharing `cache_size` cached instances; workflow code that
    /// runs longer than `activation_timeout` without yielding is abandoned.
    pub(crate) fn start(
        registry: Arc<Registry>,
        threads: usize,
        cache_size: usize,
        activation_timeout: Duration,
    ) -> std::io::Result<Self> {
        let threads = threads.max(1);
        let per_thread =
            NonZeroUsize::new(cache_size.div_ceil(threads).max(1)).unwrap_or(NonZeroUsize::MIN);
        let mut lanes = Vec::with_capacity(threads);
        for i in 0..threads {
            lanes.push(Mutex::new(spawn_lane(&registry, per_thread, i, 0)?));
        }
        Ok(WorkflowThreads {
            lanes: Arc::new(lanes),
            registry,
            per_thread,
            activation_timeout,
            next_job: Arc::new(AtomicU64::new(1)),
            quarantined: Arc::new(Mutex::new(LruCache::new(
                NonZeroUsize::new(QUARANTINE_MAX).unwrap_or(NonZeroUsize::MIN),
            ))),
        })
    }

    fn lane_index(&self, run_id: &str) -> usize {
        let mut h = DefaultHasher::new();
        run_id.hash(&mut h);
        (h.finish() % self.lanes.len() as u64) as usize
    }

    /// Advances the run of `task`; `earlier` holds the events before `task.first_seq` when
    /// a previous answer asked for them.
    pub(crate) async fn activate(
        &self,
        task: pb::PollWorkflowTaskResponse,
        earlier: Option<Vec<pb::HistoryEvent>>,
    ) -> Outcome {
        let run_id = task.run_id.clone();
        let limit_ms = u64::try_from(self.activation_timeout.as_millis()).unwrap_or(u64::MAX);
        if self.quarantined.lock().contains(&run_id) {
            return Outcome::Failed(workflow::Error::DidNotYield { limit_ms });
        }
        let index = self.lane_index(&run_id);
        let id = self.next_job.fetch_add(1, Ordering::Relaxed);
        let input: Input = Arc::new(Mutex::new(Some((task, earlier))));
        // Often enough to notice a stuck thread well within the bound.
        let tick = (self.activation_timeout / 4).max(Duration::from_millis(10));
        'send: loop {
            let lane = self.lanes[index].lock().clone();
            let (reply, mut answer) = oneshot::channel();
            let job = Job::Activate {
                id,
                input: Arc::clone(&input),
                reply,
            };
            if lane.jobs.send(job).is_err() {
                return Outcome::Failed(workflow::Error::Panic {
                    message: "the workflow thread is gone".into(),
                });
            }
            loop {
                match tokio::time::timeout(tick, &mut answer).await {
                    Ok(Ok(outcome)) => return outcome,
                    Ok(Err(_)) => {
                        return Outcome::Failed(workflow::Error::Panic {
                            message: "the workflow thread dropped the task".into(),
                        });
                    }
                    Err(_) => {}
                }
                if lane.running.load(Ordering::Acquire) == id
                    && lane
                        .clock
                        .running_for()
                        .is_some_and(|t| t > self.activation_timeout)
                {
                    self.abandon(index, lane.generation, &run_id);
                    return Outcome::Failed(workflow::Error::DidNotYield { limit_ms });
                }
                if self.lanes[index].lock().generation != lane.generation {
                    // The thread was abandoned while this job waited in its queue: take the
                    // job back and send it to the new thread (unless it already runs there).
                    if input.lock().is_some() {
                        continue 'send;
                    }
                }
            }
        }
    }

    /// Replaces lane `index`'s thread, if it is still the one of `generation`.
    fn abandon(&self, index: usize, generation: u64, run_id: &str) {
        self.quarantined.lock().put(run_id.to_owned(), ());
        let mut lane = self.lanes[index].lock();
        if lane.generation != generation {
            return;
        }
        match spawn_lane(&self.registry, self.per_thread, index, generation + 1) {
            Ok(fresh) => {
                tracing::error!(run = %run_id, thread = index, "workflow code did not yield; its thread is abandoned and replaced");
                *lane = fresh;
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot replace an abandoned workflow thread");
            }
        }
    }

    /// Drops the cached instance of `run_id`, e.g. after its completion was refused.
    pub(crate) fn evict(&self, run_id: &str) {
        let lane = self.lanes[self.lane_index(run_id)].lock().clone();
        let _ = lane.jobs.send(Job::Evict(run_id.to_owned()));
    }
}

fn spawn_lane(
    registry: &Arc<Registry>,
    capacity: NonZeroUsize,
    index: usize,
    generation: u64,
) -> std::io::Result<Lane> {
    let (tx, rx) = mpsc::unbounded_channel();
    let running = Arc::new(AtomicU64::new(0));
    let clock = Arc::new(PollClock::new());
    let registry = Arc::clone(registry);
    let thread_clock = Arc::clone(&clock);
    let thread_running = Arc::clone(&running);
    std::thread::Builder::new()
        .name(format!("steadfast-wf-{index}.{generation}"))
        .spawn(move || {
            let mut cache = Cache::new(registry, capacity);
            cache.clock = Some(thread_clock);
            cache.serve(rx, &thread_running)
        })?;
    Ok(Lane {
        jobs: tx,
        running,
        clock,
        generation,
    })
}

/// One thread's instances.
pub(crate) struct Cache {
    registry: Arc<Registry>,
    instances: LruCache<String, WorkflowInstance>,
    clock: Option<Arc<PollClock>>,
}

impl Cache {
    pub(crate) fn new(registry: Arc<Registry>, capacity: NonZeroUsize) -> Self {
        Cache {
            registry,
            instances: LruCache::new(capacity),
            clock: None,
        }
    }

    fn serve(mut self, mut jobs: mpsc::UnboundedReceiver<Job>, running: &AtomicU64) {
        while let Some(job) = jobs.blocking_recv() {
            match job {
                Job::Activate { id, input, reply } => {
                    // Taken back by its waiter when this thread was abandoned meanwhile.
                    let Some((task, earlier)) = input.lock().take() else {
                        continue;
                    };
                    running.store(id, Ordering::Release);
                    let run_id = task.run_id.clone();
                    // Workflow code is already guarded; this keeps the thread, and the
                    // other runs it holds, alive whatever else panics.
                    let outcome = catch_unwind(AssertUnwindSafe(|| self.activate(task, earlier)))
                        .unwrap_or_else(|p| {
                            self.instances.pop(&run_id);
                            Outcome::Failed(workflow::panic_error(&*p))
                        });
                    running.store(0, Ordering::Release);
                    let _ = reply.send(outcome);
                }
                Job::Evict(run_id) => {
                    self.instances.pop(&run_id);
                }
            }
        }
    }

    fn activate(
        &mut self,
        mut task: pb::PollWorkflowTaskResponse,
        earlier: Option<Vec<pb::HistoryEvent>>,
    ) -> Outcome {
        let run_id = task.run_id.clone();
        let server_suggests = task.continue_as_new_suggested;
        if !self.registry.has_workflow(&task.workflow_type) {
            self.instances.pop(&run_id);
            return Outcome::Failed(workflow::Error::UnknownWorkflowType(task.workflow_type));
        }
        let cached = self.instances.pop(&run_id);
        let (mut instance, events, retry) = if let Some(mut events) = earlier {
            events.append(&mut task.events);
            (self.fresh(&run_id), events, None)
        } else if task.first_seq <= 1 {
            let events = std::mem::take(&mut task.events);
            (self.fresh(&run_id), events, None)
        } else {
            match cached {
                Some(instance) if instance.last_seq() + 1 == task.first_seq => {
                    // Kept in case the instance turns out stale: the delta is small.
                    let events = task.events.clone();
                    (instance, events, Some(task))
                }
                _ => return Outcome::NeedHistory(task),
            }
        };
        let events_in = events.len();
        let started_seq = events.last().map_or(0, |e| e.seq);
        let threshold = self.registry.continue_as_new_threshold();
        if server_suggests && started_seq < threshold {
            // The server's flag is not in the history, so the code is not shown it (a replay
            // could not show it the same); the operator can align the two.
            tracing::warn!(
                run = %run_id,
                history_events = started_seq,
                continue_as_new_after_events = threshold,
                "the server suggests continue-as-new (past 90% of its history limits) before this worker's threshold; lower Worker::continue_as_new_after_events"
            );
        }
        match instance.activate(events) {
            Ok(commands) => {
                tracing::debug!(run = %run_id, events = events_in, commands = commands.len(), "workflow activated");
                if !instance.is_finished() {
                    self.instances.put(run_id, instance);
                }
                Outcome::Completed(commands)
            }
            Err(workflow::Error::Stale(seq)) => match retry {
                Some(task) => {
                    tracing::debug!(run = %run_id, started_seq = seq, "cached instance is stale; replaying");
                    Outcome::NeedHistory(task)
                }
                None => Outcome::Failed(workflow::Error::Stale(seq)),
            },
            Err(e) => Outcome::Failed(e),
        }
    }

    fn fresh(&self, run_id: &str) -> WorkflowInstance {
        let mut instance = WorkflowInstance::new(Arc::clone(&self.registry), run_id);
        if let Some(clock) = &self.clock {
            instance.set_poll_clock(Arc::clone(clock));
        }
        instance
    }
}

#[cfg(test)]
#[path = "workflow_thread_tests.rs"]
mod tests;
