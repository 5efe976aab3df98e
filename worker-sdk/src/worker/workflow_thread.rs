//! The threads that own workflow instances. Instances are `!Send`, so each lives on one
//! dedicated thread for its whole life, in that thread's LRU cache; tasks reach it over a
//! channel and answers come back on a oneshot. A run always goes to the same thread (by a
//! hash of its id).

use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};
use std::num::NonZeroUsize;
use std::sync::Arc;

use lru::LruCache;
use steadfast_proto::v1 as pb;
use tokio::sync::{mpsc, oneshot};

use crate::workflow::{self, Registry, WorkflowInstance};

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

enum Job {
    Activate {
        task: pb::PollWorkflowTaskResponse,
        /// Events 1..first_seq-1, when the caller fetched them.
        earlier: Option<Vec<pb::HistoryEvent>>,
        reply: oneshot::Sender<Outcome>,
    },
    Evict(String),
}

/// Handles to the workflow threads.
#[derive(Clone)]
pub(crate) struct WorkflowThreads {
    senders: Arc<Vec<mpsc::UnboundedSender<Job>>>,
}

impl WorkflowThreads {
    /// Starts `threads` threads sharing `cache_size` cached instances.
    pub(crate) fn start(
        registry: Arc<Registry>,
        threads: usize,
        cache_size: usize,
    ) -> std::io::Result<Self> {
        let threads = threads.max(1);
        let per_thread =
            NonZeroUsize::new(cache_size.div_ceil(threads).max(1)).unwrap_or(NonZeroUsize::MIN);
        let mut senders = Vec::with_capacity(threads);
        for i in 0..threads {
            let (tx, rx) = mpsc::unbounded_channel();
            let registry = Arc::clone(&registry);
            std::thread::Builder::new()
                .name(format!("steadfast-wf-{i}"))
                .spawn(move || Cache::new(registry, per_thread).serve(rx))?;
            senders.push(tx);
        }
        Ok(WorkflowThreads {
            senders: Arc::new(senders),
        })
    }

    fn sender(&self, run_id: &str) -> &mpsc::UnboundedSender<Job> {
        let mut h = DefaultHasher::new();
        run_id.hash(&mut h);
        &self.senders[(h.finish() % self.senders.len() as u64) as usize]
    }

    /// Advances the run of `task`; `earlier` holds the events before `task.first_seq` when
    /// a previous answer asked for them.
    pub(crate) async fn activate(
        &self,
        task: pb::PollWorkflowTaskResponse,
        earlier: Option<Vec<pb::HistoryEvent>>,
    ) -> Outcome {
        let (reply, answer) = oneshot::channel();
        let run_id = task.run_id.clone();
        if self
            .sender(&run_id)
            .send(Job::Activate {
                task,
                earlier,
                reply,
            })
            .is_err()
        {
            return Outcome::Failed(workflow::Error::Panic {
                message: "the workflow thread is gone".into(),
            });
        }
        answer.await.unwrap_or_else(|_| {
            Outcome::Failed(workflow::Error::Panic {
                message: "the workflow thread dropped the task".into(),
            })
        })
    }

    /// Drops the cached instance of `run_id`, e.g. after its completion was refused.
    pub(crate) fn evict(&self, run_id: &str) {
        let _ = self.sender(run_id).send(Job::Evict(run_id.to_owned()));
    }
}

/// One thread's instances.
pub(crate) struct Cache {
    registry: Arc<Registry>,
    instances: LruCache<String, WorkflowInstance>,
}

impl Cache {
    pub(crate) fn new(registry: Arc<Registry>, capacity: NonZeroUsize) -> Self {
        Cache {
            registry,
            instances: LruCache::new(capacity),
        }
    }

    fn serve(mut self, mut jobs: mpsc::UnboundedReceiver<Job>) {
        while let Some(job) = jobs.blocking_recv() {
            match job {
                Job::Activate {
                    task,
                    earlier,
                    reply,
                } => {
                    let outcome = self.activate(task, earlier);
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
        WorkflowInstance::new(Arc::clone(&self.registry), run_id)
    }
}

#[cfg(test)]
#[path = "workflow_thread_tests.rs"]
mod tests;
