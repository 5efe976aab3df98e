//! Worker sessions: how the server notices within about a second that a worker is gone.
//!
//! A worker opens one long-lived `WorkerSession` stream when it starts and keeps it open. Its
//! process dying closes its connection, and with it the stream. When no session of that worker
//! id is open [`SESSION_GRACE_MS`] later (a restart of the stream, e.g. after a network blip,
//! comes back well within it), the server times out, at once, what the worker held: the started
//! workflow task and the started activity attempts whose durable start (WorkflowTaskStarted,
//! ActivityStarted) names that worker. They then follow the usual rules: the workflow task is
//! offered again, a read or idempotent attempt is retried with the same idempotency key, a
//! `write` waits for reconciliation.
//!
//! Long polls are not used as a liveness signal: a busy tool worker may have no poll open.
//! What the sessions map holds is an optimisation that may be lost (a server restart loses it,
//! and the workers open new sessions): it only decides *when* to look; *what* is given back is
//! read from the durable run states, so it is right on any node. A worker that never opens a
//! session (an older SDK, a raw client) is covered by the ordinary timeouts.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use futures::Stream;
use parking_lot::Mutex;
use steadfast_engine::RunStatus;
use steadfast_engine::event::TimeoutKind;
use steadfast_engine::ids::RunId;
use steadfast_engine::state::{ActivityPhase, RunState, WorkflowTask};
use steadfast_engine::store::{DueTimer, RunFilter};
use steadfast_proto::v1 as pb;
use tonic::Status;

use crate::core::{Core, status};
use crate::validate;

/// How long after a worker's last session ended the server waits for a new one before it gives
/// back what the worker held.
pub const SESSION_GRACE_MS: u64 = 500;
/// Open runs read per page while looking for what a gone worker held.
const SWEEP_PAGE: usize = 500;
/// Most task queues one session may name.
const SESSION_QUEUES_MAX: usize = validate::POLL_TYPES_MAX;

/// The stream a session is answered with.
pub type SessionStream = Pin<Box<dyn Stream<Item = Result<pb::WorkerSessionEvent, Status>> + Send>>;

/// Open sessions per (namespace, worker id): how many streams are open.
#[derive(Default)]
pub struct Sessions {
    open: Mutex<HashMap<(String, String), usize>>,
    /// Set when this server shuts down: its streams end because it stops, not because the
    /// workers died, so nothing is given back (the workers open sessions with the next one).
    closing: AtomicBool,
}

impl Sessions {
    /// The server is shutting down: sessions that end from now on give nothing back.
    pub fn close(&self) {
        self.closing.store(true, Ordering::SeqCst);
    }

    fn opened(&self, ns: &str, worker: &str) {
        *self
            .open
            .lock()
            .entry((ns.to_string(), worker.to_string()))
            .or_default() += 1;
    }

    /// One stream ended; true when it was the worker's last.
    fn closed(&self, ns: &str, worker: &str) -> bool {
        let mut open = self.open.lock();
        let k = (ns.to_string(), worker.to_string());
        match open.get_mut(&k) {
            Some(n) if *n > 1 => {
                *n -= 1;
                false
            }
            _ => {
                open.remove(&k);
                true
            }
        }
    }

    fn is_open(&self, ns: &str, worker: &str) -> bool {
        self.open
            .lock()
            .contains_key(&(ns.to_string(), worker.to_string()))
    }
}

/// Ends a session when the stream is dropped (the connection closed or the worker stopped).
struct SessionGuard {
    core: Arc<Core>,
    sessions: Arc<Sessions>,
    namespace: String,
    worker: String,
}

impl Drop for SessionGuard {
    fn drop(&mut self) {
        if !self.sessions.closed(&self.namespace, &self.worker)
            || self.sessions.closing.load(Ordering::SeqCst)
        {
            return;
        }
        let (core, sessions) = (self.core.clone(), self.sessions.clone());
        let (ns, worker) = (self.namespace.clone(), self.worker.clone());
        let Ok(rt) = tokio::runtime::Handle::try_current() else {
            return;
        };
        rt.spawn(async move {
            tokio::time::sleep(Duration::from_millis(SESSION_GRACE_MS)).await;
            if sessions.is_open(&ns, &worker) || sessions.closing.load(Ordering::SeqCst) {
                return;
            }
            match give_back(&core, &ns, &worker).await {
                Ok(0) => tracing::debug!(worker = %worker, "worker session ended; it held nothing"),
                Ok(n) => tracing::info!(worker = %worker, tasks = n, "worker gone (its session ended): its tasks are timed out now"),
                Err(e) => tracing::warn!(worker = %worker, error = %e.message(), "worker gone, but its tasks could not all be timed out; their deadlines still apply"),
            }
        });
    }
}

/// Opens a session for `r`: the stream sends one event (the grace) and then stays open until
/// the worker goes away.
pub fn open(
    core: Arc<Core>,
    sessions: Arc<Sessions>,
    r: &pb::WorkerSessionRequest,
) -> Result<SessionStream, Status> {
    let ns = validate::namespace(&r.namespace)?;
    validate::name("worker_id", &r.worker_id)?;
    if r.task_queues.len() > SESSION_QUEUES_MAX {
        return Err(Status::invalid_argument(format!(
            "task_queues holds {} queues; the limit is {SESSION_QUEUES_MAX}",
            r.task_queues.len()
        )));
    }
    for q in &r.task_queues {
        validate::name("task_queues", q)?;
    }
    sessions.opened(&ns, &r.worker_id);
    let guard = SessionGuard {
        core,
        sessions,
        namespace: ns,
        worker: r.worker_id.clone(),
    };
    let first = pb::WorkerSessionEvent {
        grace_ms: SESSION_GRACE_MS,
    };
    let stream = futures::stream::once(async move { Ok(first) }).chain(futures::stream::unfold(
        guard,
        |guard| async move {
            // Yields nothing: the stream lives (and holds the guard) until the worker's side
            // closes it, when the server drops it, or until this server stops (the sessions
            // are closed first, so ending them gives nothing back), so that an open session
            // does not hold up the shutdown.
            guard.core.notify.stopped().await;
            drop(guard);
            None
        },
    ));
    Ok(Box::pin(stream))
}

use futures::StreamExt as _;

/// Times out every started workflow task and activity attempt of `namespace` whose durable
/// start names `worker`. Returns how many.
pub async fn give_back(core: &Core, namespace: &str, worker: &str) -> Result<usize, Status> {
    let filter = RunFilter {
        status: Some(RunStatus::Running),
        ..Default::default()
    };
    let mut after: Option<RunId> = None;
    let mut due = Vec::new();
    loop {
        let page = core
            .store
            .list_runs(namespace, &filter, after, SWEEP_PAGE, core.now())
            .await
            .map_err(status)?;
        let Some(last) = page.last() else {
            break;
        };
        after = Some(last.key.run_id);
        for s in &page {
            held_by(s, worker, &mut due);
        }
        if page.len() < SWEEP_PAGE {
            break;
        }
    }
    let mut first_error = None;
    let n = due.len();
    for d in due {
        if let Err(e) = crate::timers::fire(core, &d).await {
            first_error.get_or_insert(e);
        }
    }
    match first_error {
        Some(e) => Err(e),
        None => Ok(n),
    }
}

/// The deadlines to fire now for what `worker` holds in run `s`.
fn held_by(s: &RunState, worker: &str, out: &mut Vec<DueTimer>) {
    if let WorkflowTask::Started {
        started_seq,
        worker: w,
        ..
    } = &s.workflow_task
        && w == worker
    {
        out.push(DueTimer::WorkflowTask {
            key: s.key.clone(),
            started_seq: *started_seq,
        });
    }
    for (id, a) in &s.activities {
        if let ActivityPhase::Started { worker: w, .. } = &a.phase
            && w == worker
        {
            // The worker stopped heartbeating for good.
            out.push(DueTimer::ActivityAttempt {
                key: s.key.clone(),
                id: *id,
                attempt: a.attempt,
                timeout: TimeoutKind::Heartbeat,
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use steadfast_engine::EventRecord;
    use steadfast_engine::event::{self as ev, ActivityOptions, Effect, Event};
    use steadfast_engine::ids::RunKey;
    use steadfast_engine::payload::Payload;

    #[test]
    fn a_worker_is_gone_only_when_its_last_session_ends() {
        let s = Sessions::default();
        s.opened("ns", "w");
        s.opened("ns", "w");
        assert!(
            !s.closed("ns", "w"),
            "another stream of the same worker is open"
        );
        assert!(s.is_open("ns", "w"));
        assert!(s.closed("ns", "w"));
        assert!(!s.is_open("ns", "w"));
        assert!(!s.is_open("other", "w"), "sessions are per namespace");
    }

    fn rec(seq: u64, event: Event) -> EventRecord {
        EventRecord {
            seq,
            time_ms: 1_000,
            hash: [0; 32],
            event,
        }
    }

    #[test]
    fn what_a_worker_held_is_read_from_the_durable_starts() {
        let key = RunKey::new("ns", RunId(uuid::Uuid::from_u128(1)));
        let mut s = RunState::start(
            key.clone(),
            &rec(
                1,
                Event::RunStarted(ev::RunStarted {
                    workflow_type: "wf".into(),
                    workflow_id: "w".into(),
                    task_queue: "q".into(),
                    input: Payload::default(),
                    run_timeout_ms: 0,
                    budget: Default::default(),
                    continued_from: None,
                    identity: String::new(),
                    random_seed: 0,
                    parent: None,
                    forked_from: None,
                    schedule: None,
                    traceparent: None,
                }),
            ),
        )
        .unwrap();
        let events = [
            Event::ActivityScheduled(ev::ActivityScheduled {
                command_seq: 1,
                activity_type: "t".into(),
                input: Payload::default(),
                options: ActivityOptions::default(),
            }),
            Event::ActivityScheduled(ev::ActivityScheduled {
                command_seq: 2,
                activity_type: "t".into(),
                input: Payload::default(),
                options: ActivityOptions::default(),
            }),
            Event::ActivityStarted(ev::ActivityStarted {
                command_seq: 1,
                attempt: 1,
                worker: "dead".into(),
                effect: Effect::Read,
            }),
            Event::ActivityStarted(ev::ActivityStarted {
                command_seq: 2,
                attempt: 1,
                worker: "alive".into(),
                effect: Effect::Write,
            }),
            Event::WorkflowTaskScheduled(ev::WorkflowTaskScheduled {
                task_queue: "q".into(),
                attempt: 1,
                not_before_ms: 0,
            }),
            Event::WorkflowTaskStarted(ev::WorkflowTaskStarted {
                scheduled_seq: 6,
                worker: "dead".into(),
                timeout_ms: 0,
            }),
        ];
        for (i, e) in events.into_iter().enumerate() {
            s.apply(&rec(2 + i as u64, e)).unwrap();
        }
        let mut due = Vec::new();
        held_by(&s, "dead", &mut due);
        assert_eq!(
            due,
            vec![
                DueTimer::WorkflowTask {
                    key: key.clone(),
                    started_seq: 7
                },
                DueTimer::ActivityAttempt {
                    key,
                    id: 1,
                    attempt: 1,
                    timeout: TimeoutKind::Heartbeat
                },
            ]
        );
        due.clear();
        held_by(&s, "someone-else", &mut due);
        assert!(due.is_empty());
    }
}
