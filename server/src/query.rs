//! Queries: a caller's question to a run's workflow code, parked here until a worker of the
//! run's task queue takes it (`PollQueryTask`), replays the run and answers
//! (`RespondQueryTask`).
//!
//! Nothing about a query is durable, on purpose: a query reads, it writes nothing, so losing
//! a parked query in a restart costs the caller a retry, never a wrong outcome (an
//! optimisation in the sense of ARCHITECTURE.md, "Server state"). A query is answered
//! through the node it was asked on: the worker that answers must poll that node.

use std::collections::{HashMap, VecDeque};
use std::time::Duration;

use parking_lot::Mutex;
use steadfast_engine::RunKey;
use steadfast_proto::v1 as pb;
use tokio::sync::{Notify, oneshot};
use tonic::Status;

use crate::validate;

/// Queries (or upgrade checks) parked or being answered at once, over all queues, per kind;
/// more are refused with RESOURCE_EXHAUSTED (each holds a caller's connection and its input).
pub const QUERIES_PENDING_MAX: usize = 1_024;
/// How long a caller waits for an answer when it gives no timeout.
pub const QUERY_TIMEOUT_MS_DEFAULT: u64 = 10_000;
/// The longest a caller may wait for an answer.
pub const QUERY_TIMEOUT_MS_MAX: u64 = 60_000;

/// Most characters of a worker's failure message passed on to the caller.
pub const QUERY_FAILURE_CHARS_MAX: usize = 1_000;
/// Stable code of an unknown query name (INVALID_ARGUMENT).
pub const CODE_UNKNOWN_QUERY: &str = "[STF-QUERY001]";
/// Stable code of a query whose handler or replay failed (FAILED_PRECONDITION).
pub const CODE_QUERY_FAILED: &str = "[STF-QUERY002]";

/// What a worker answered.
#[derive(Debug)]
pub enum Answer {
    /// The handler's value.
    Value(pb::Payload),
    /// The handler could not answer.
    Failed {
        /// Why, as the worker classified it.
        kind: pb::QueryFailureKind,
        /// The worker's message.
        message: String,
    },
}

/// A parked query as a worker receives it.
#[derive(Debug, Clone)]
pub struct QueryTask {
    /// Unique per query on this node.
    pub id: String,
    /// The run asked.
    pub key: RunKey,
    /// Its workflow type.
    pub workflow_type: String,
    /// The handler's name.
    pub name: String,
    /// The handler's input.
    pub input: pb::Payload,
}

/// A request parked for a worker: a query, or an upgrade check ([`crate::check`]).
pub trait Parkable {
    /// Unique per parked request on this node.
    fn id(&self) -> &str;
    /// The namespace it belongs to: only a worker of it may take and answer it.
    fn namespace(&self) -> &str;
    /// Whether a worker that polls for `types` (its workflow types; empty = any) may take it.
    fn for_types(&self, types: &[String]) -> bool;
}

impl Parkable for QueryTask {
    fn id(&self) -> &str {
        &self.id
    }
    fn namespace(&self) -> &str {
        &self.key.namespace
    }
    fn for_types(&self, types: &[String]) -> bool {
        types.is_empty() || types.contains(&self.workflow_type)
    }
}

struct Parked<T, A> {
    task: T,
    reply: oneshot::Sender<A>,
}

struct Inner<T, A> {
    /// Requests no worker has taken, per (namespace, queue), oldest first.
    waiting: HashMap<(String, String), VecDeque<Parked<T, A>>>,
    /// Taken by a worker, waiting for its answer: the namespace (only a worker of it may
    /// answer) and the caller's channel.
    taken: HashMap<String, (String, oneshot::Sender<A>)>,
    count: usize,
}

impl<T, A> Default for Inner<T, A> {
    fn default() -> Self {
        Inner {
            waiting: HashMap::new(),
            taken: HashMap::new(),
            count: 0,
        }
    }
}

/// Requests of kind `T` parked on this node until a worker of their queue takes them and
/// answers with an `A`.
pub struct Broker<T, A> {
    inner: Mutex<Inner<T, A>>,
    /// Wakes pollers when a request is parked (they are rare: one notify for all queues).
    parked: Notify,
}

impl<T, A> Default for Broker<T, A> {
    fn default() -> Self {
        Broker {
            inner: Mutex::new(Inner::default()),
            parked: Notify::new(),
        }
    }
}

/// The parked queries of this node.
pub type Queries = Broker<QueryTask, Answer>;

struct Withdraw<'a, T: Parkable, A> {
    broker: &'a Broker<T, A>,
    id: &'a str,
}

impl<T: Parkable, A> Drop for Withdraw<'_, T, A> {
    fn drop(&mut self) {
        self.broker.withdraw(self.id);
    }
}

/// Why a parked request got no answer.
#[derive(Debug, PartialEq, Eq)]
pub enum Unanswered {
    /// No worker took it before the timeout.
    NotTaken,
    /// A worker took it and did not answer before the timeout.
    NotAnswered,
}

impl<T: Parkable, A> Broker<T, A> {
    /// Parks `task` for queue `queue` and waits up to `timeout` for a worker's answer. On
    /// timeout the request is withdrawn.
    pub async fn ask(
        &self,
        task: T,
        queue: &str,
        timeout: Duration,
    ) -> Result<Result<A, Unanswered>, Status> {
        let (tx, rx) = oneshot::channel();
        let id = task.id().to_owned();
        {
            let mut inner = self.inner.lock();
            if inner.count >= QUERIES_PENDING_MAX {
                return Err(Status::resource_exhausted(format!(
                    "{QUERIES_PENDING_MAX} requests are already waiting for workers on this server; retry later"
                )));
            }
            inner.count += 1;
            inner
                .waiting
                .entry((task.namespace().to_owned(), queue.to_owned()))
                .or_default()
                .push_back(Parked { task, reply: tx });
        }
        // Withdrawn however this call ends: answered, timed out, or dropped because the
        // caller went away.
        let _withdraw = Withdraw {
            broker: self,
            id: &id,
        };
        self.parked.notify_waiters();
        match tokio::time::timeout(timeout, rx).await {
            Ok(Ok(answer)) => Ok(Ok(answer)),
            Ok(Err(_)) | Err(_) => {
                if self.inner.lock().taken.contains_key(&id) {
                    Ok(Err(Unanswered::NotAnswered))
                } else {
                    Ok(Err(Unanswered::NotTaken))
                }
            }
        }
    }

    fn withdraw(&self, id: &str) {
        let mut inner = self.inner.lock();
        inner.count = inner.count.saturating_sub(1);
        if inner.taken.remove(id).is_none() {
            for q in inner.waiting.values_mut() {
                q.retain(|p| p.task.id() != id);
            }
            inner.waiting.retain(|_, q| !q.is_empty());
        }
    }

    /// Takes the oldest request of `queue` that a worker of `types` (empty = any) may take,
    /// waiting until `deadline`.
    pub async fn poll(
        &self,
        namespace: &str,
        queue: &str,
        types: &[String],
        deadline: tokio::time::Instant,
    ) -> Option<T> {
        loop {
            let notified = self.parked.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if let Some(task) = self.take(namespace, queue, types) {
                return Some(task);
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return None;
            }
        }
    }

    fn take(&self, namespace: &str, queue: &str, types: &[String]) -> Option<T> {
        let mut inner = self.inner.lock();
        let key = (namespace.to_owned(), queue.to_owned());
        let q = inner.waiting.get_mut(&key)?;
        let at = q.iter().position(|p| p.task.for_types(types))?;
        let parked = q.remove(at)?;
        if q.is_empty() {
            inner.waiting.remove(&key);
        }
        inner.taken.insert(
            parked.task.id().to_owned(),
            (parked.task.namespace().to_owned(), parked.reply),
        );
        Some(parked.task)
    }

    /// Delivers a worker's answer to a request of `namespace`. An unknown id (answered late,
    /// made up, or of another namespace) is refused.
    pub fn answer(&self, namespace: &str, id: &str, answer: A) -> Result<(), Status> {
        let reply = {
            let mut inner = self.inner.lock();
            match inner.taken.get(id) {
                Some((ns, _)) if ns == namespace => inner.taken.remove(id).map(|(_, tx)| tx),
                _ => None,
            }
        };
        match reply {
            Some(tx) => {
                // The caller may have just timed out: its loss, nothing to undo.
                let _ = tx.send(answer);
                Ok(())
            }
            None => Err(Status::not_found(format!(
                "request {} is not waiting for an answer (it timed out, or was answered)",
                validate::quote(id)
            ))),
        }
    }
}

/// The caller's wait: its timeout, or the default, capped.
pub fn timeout(ms: u64) -> Duration {
    let ms = if ms == 0 {
        QUERY_TIMEOUT_MS_DEFAULT
    } else {
        ms.min(QUERY_TIMEOUT_MS_MAX)
    };
    Duration::from_millis(ms)
}

/// The status a caller gets for a worker's failure.
pub fn failure_status(name: &str, kind: pb::QueryFailureKind, message: &str) -> Status {
    // The worker's own words (it bounds them); cut again so no worker can flood a caller.
    let message: String = message.chars().take(QUERY_FAILURE_CHARS_MAX).collect();
    match kind {
        pb::QueryFailureKind::UnknownQuery => Status::invalid_argument(format!(
            "{CODE_UNKNOWN_QUERY} the workflow has no query handler {}: {message}",
            validate::quote(name)
        )),
        pb::QueryFailureKind::ReplayFailed => Status::failed_precondition(format!(
            "{CODE_QUERY_FAILED} the worker could not replay the run to answer query {}: {message}",
            validate::quote(name)
        )),
        _ => Status::failed_precondition(format!(
            "{CODE_QUERY_FAILED} query handler {} failed: {message}",
            validate::quote(name)
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use steadfast_engine::ids::RunId;

    fn task(id: &str, ty: &str) -> QueryTask {
        QueryTask {
            id: id.into(),
            key: RunKey::new("default", RunId::new_v7()),
            workflow_type: ty.into(),
            name: "progress".into(),
            input: pb::Payload::default(),
        }
    }

    #[tokio::test]
    async fn a_polled_query_is_answered_and_a_late_answer_refused() {
        let q = Arc::new(Queries::default());
        let asker = {
            let q = Arc::clone(&q);
            tokio::spawn(async move {
                q.ask(task("a", "seq"), "main", Duration::from_secs(30))
                    .await
            })
        };
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        // Another type is not handed out.
        assert!(
            q.poll(
                "default",
                "main",
                &["other".into()],
                tokio::time::Instant::now()
            )
            .await
            .is_none()
        );
        let got = q
            .poll("default", "main", &["seq".into()], deadline)
            .await
            .expect("the parked query");
        assert_eq!(got.id, "a");
        let value = pb::Payload {
            encoding: String::new(),
            data: b"3".to_vec(),
        };
        assert_eq!(
            q.answer("other", "a", Answer::Value(value.clone()))
                .expect_err("another namespace's worker")
                .code(),
            tonic::Code::NotFound
        );
        q.answer("default", "a", Answer::Value(value))
            .expect("answered");
        match asker.await.expect("join").expect("asked") {
            Ok(Answer::Value(v)) => assert_eq!(v.data, b"3"),
            other => panic!("unexpected {other:?}"),
        }
        assert_eq!(
            q.answer("default", "a", Answer::Value(pb::Payload::default()))
                .expect_err("answered twice")
                .code(),
            tonic::Code::NotFound
        );
    }

    #[tokio::test]
    async fn an_untaken_query_times_out_and_is_withdrawn() {
        let q = Queries::default();
        let r = q
            .ask(task("b", "seq"), "main", Duration::from_millis(20))
            .await
            .expect("asked");
        assert!(matches!(r, Err(Unanswered::NotTaken)));
        assert!(q.take("default", "main", &[]).is_none());
        assert_eq!(q.inner.lock().count, 0);
    }
}
