//! The one hook every append passes: a [`Store`] that forwards every call to the real one and
//! counts what each successful append wrote.

use std::sync::Arc;
use std::time::Instant;

use async_trait::async_trait;
use steadfast_engine::EventRecord;
use steadfast_engine::event::{CommandSeq, RunStarted, TimeMs, TimeoutKind};
use steadfast_engine::ids::{RunId, RunKey};
use steadfast_engine::payload::Hash;
use steadfast_engine::state::RunState;
use steadfast_engine::store::{
    AppendRequest, Appended, Change, DueTimer, Error, RequestKey, RunFilter, Store, StoreStats,
    StoredSchedule, Task, TaskKind, VerifiedHistory,
};

use super::Metrics;

/// `inner`, with every append counted in `metrics`.
pub struct MeteredStore {
    inner: Arc<dyn Store>,
    metrics: Arc<Metrics>,
    tracer: Option<Arc<crate::traces::Tracer>>,
}

impl MeteredStore {
    /// Wraps `inner`. Call [`Metrics::seed`] once with it so that tasks scheduled before this
    /// process started are timed too.
    pub fn new(inner: Arc<dyn Store>, metrics: Arc<Metrics>) -> MeteredStore {
        MeteredStore {
            inner,
            metrics,
            tracer: None,
        }
    }

    /// Also marks every appended run for the trace exporter (`--otlp-endpoint`).
    pub fn with_tracer(mut self, tracer: Arc<crate::traces::Tracer>) -> MeteredStore {
        self.tracer = Some(tracer);
        self
    }

    fn counted(
        &self,
        key: &RunKey,
        r: Result<Appended, Error>,
        started: Instant,
    ) -> Result<Appended, Error> {
        if let Ok(a) = &r {
            self.metrics
                .appended(&a.records, &a.state, started.elapsed().as_secs_f64());
            if let Some(t) = &self.tracer {
                t.appended(key, &a.records);
            }
        }
        r
    }
}

#[async_trait]
impl Store for MeteredStore {
    async fn append(&self, req: AppendRequest) -> Result<Appended, Error> {
        let started = Instant::now();
        let key = req.key.clone();
        let r = self.inner.append(req).await;
        self.counted(&key, r, started)
    }

    async fn append_once(
        &self,
        req: AppendRequest,
        request: RequestKey,
    ) -> Result<Appended, Error> {
        let started = Instant::now();
        let key = req.key.clone();
        let r = self.inner.append_once(req, request).await;
        self.counted(&key, r, started)
    }

    async fn run_state(&self, key: &RunKey) -> Result<Option<Arc<RunState>>, Error> {
        self.inner.run_state(key).await
    }

    async fn open_run_for_workflow_id(
        &self,
        namespace: &str,
        workflow_id: &str,
    ) -> Result<Option<RunId>, Error> {
        self.inner
            .open_run_for_workflow_id(namespace, workflow_id)
            .await
    }

    async fn list_runs(
        &self,
        namespace: &str,
        filter: &RunFilter,
        after: Option<RunId>,
        limit: usize,
        now_ms: TimeMs,
    ) -> Result<Vec<Arc<RunState>>, Error> {
        self.inner
            .list_runs(namespace, filter, after, limit, now_ms)
            .await
    }

    async fn read_history(
        &self,
        key: &RunKey,
        from_seq: u64,
        limit: usize,
    ) -> Result<Vec<EventRecord>, Error> {
        self.inner.read_history(key, from_seq, limit).await
    }

    async fn verify_history(&self, key: &RunKey) -> Result<VerifiedHistory, Error> {
        self.inner.verify_history(key).await
    }

    async fn poll_task(
        &self,
        namespace: &str,
        queue: &str,
        kind: TaskKind,
        types: &[String],
        now_ms: TimeMs,
    ) -> Result<Option<Task>, Error> {
        self.inner
            .poll_task(namespace, queue, kind, types, now_ms)
            .await
    }

    async fn take_task(&self, task: &Task, now_ms: TimeMs) -> Result<bool, Error> {
        self.inner.take_task(task, now_ms).await
    }

    async fn release_task(&self, task: &Task) -> Result<(), Error> {
        self.inner.release_task(task).await
    }

    async fn defer_task(&self, task: &Task, until_ms: TimeMs, attempt: u32) -> Result<bool, Error> {
        self.inner.defer_task(task, until_ms, attempt).await
    }

    async fn task_attempt(&self, task: &Task) -> Result<Option<u32>, Error> {
        self.inner.task_attempt(task).await
    }

    async fn set_attempt_deadline(
        &self,
        key: &RunKey,
        id: CommandSeq,
        attempt: u32,
        deadline_ms: TimeMs,
        timeout: TimeoutKind,
    ) -> Result<(), Error> {
        self.inner
            .set_attempt_deadline(key, id, attempt, deadline_ms, timeout)
            .await
    }

    async fn take_due_timers(&self, now_ms: TimeMs, limit: usize) -> Result<Vec<DueTimer>, Error> {
        self.inner.take_due_timers(now_ms, limit).await
    }

    async fn next_wakeup_ms(&self) -> Result<Option<TimeMs>, Error> {
        self.inner.next_wakeup_ms().await
    }

    async fn put_blob(&self, namespace: &str, data: Vec<u8>) -> Result<Hash, Error> {
        self.inner.put_blob(namespace, data).await
    }

    async fn get_blob(&self, namespace: &str, hash: &Hash) -> Result<Option<Vec<u8>>, Error> {
        self.inner.get_blob(namespace, hash).await
    }

    async fn checkpoint(&self) -> Result<u64, Error> {
        self.inner.checkpoint().await
    }

    async fn drop_closed_before(
        &self,
        closed_before_ms: TimeMs,
        limit: usize,
    ) -> Result<usize, Error> {
        self.inner.drop_closed_before(closed_before_ms, limit).await
    }

    async fn open_runs(&self) -> Result<Vec<RunKey>, Error> {
        self.inner.open_runs().await
    }

    async fn missing_successors(&self) -> Result<Vec<(RunKey, RunStarted)>, Error> {
        self.inner.missing_successors().await
    }

    async fn queues_with_work(&self, namespace: &str, limit: usize) -> Result<Vec<String>, Error> {
        self.inner.queues_with_work(namespace, limit).await
    }

    async fn set_queue_build(
        &self,
        namespace: &str,
        queue: &str,
        build: Option<&str>,
    ) -> Result<(), Error> {
        self.inner.set_queue_build(namespace, queue, build).await
    }

    async fn queue_build(&self, namespace: &str, queue: &str) -> Result<Option<String>, Error> {
        self.inner.queue_build(namespace, queue).await
    }

    async fn put_schedule(
        &self,
        namespace: &str,
        name: &str,
        expected_version: u64,
        data: Vec<u8>,
    ) -> Result<u64, Error> {
        self.inner
            .put_schedule(namespace, name, expected_version, data)
            .await
    }

    async fn delete_schedule(
        &self,
        namespace: &str,
        name: &str,
        expected_version: u64,
    ) -> Result<(), Error> {
        self.inner
            .delete_schedule(namespace, name, expected_version)
            .await
    }

    async fn get_schedule(
        &self,
        namespace: &str,
        name: &str,
    ) -> Result<Option<StoredSchedule>, Error> {
        self.inner.get_schedule(namespace, name).await
    }

    async fn list_schedules(&self, namespace: Option<&str>) -> Result<Vec<StoredSchedule>, Error> {
        self.inner.list_schedules(namespace).await
    }

    fn stats(&self) -> StoreStats {
        self.inner.stats()
    }

    fn changes(&self) -> Option<tokio::sync::broadcast::Receiver<Change>> {
        self.inner.changes()
    }

    async fn relay_live(&self, text: &[steadfast_engine::store::LiveText]) {
        self.inner.relay_live(text).await
    }
}
