//! The timer loop's retries of deadlines it could not apply (issue 10).

use super::*;
use steadfast_engine::state::RunState;
use steadfast_engine::store::{self, AppendRequest, Appended, Store};
use steadfast_engine::{RunId, RunKey};

fn timer(id: u32) -> DueTimer {
    DueTimer::Timer {
        key: RunKey::new("default", RunId::new_v7()),
        id,
    }
}

#[test]
fn a_failed_deadline_is_tried_again_with_a_bounded_growing_delay() {
    let mut r = Refire::default();
    let d = timer(1);
    r.failed(d.clone(), 1_000);
    assert!(r.take_due(1_099).is_empty());
    assert_eq!(r.take_due(1_100), vec![d.clone()]);
    assert_eq!(r.next_ms(), Some(1_100));
    let mut now = 1_100;
    let mut delays = Vec::new();
    for _ in 0..10 {
        r.failed(d.clone(), now);
        let at = r.next_ms().unwrap();
        delays.push(at - now);
        now = at;
    }
    assert_eq!(&delays[..4], &[200, 400, 800, 1_600]);
    assert_eq!(delays[9], REFIRE_DELAY_MS_MAX, "capped: {delays:?}");
    r.done(&d);
    assert!(r.take_due(i64::MAX).is_empty());
    assert_eq!(r.next_ms(), None);
}

#[test]
fn only_a_vanished_run_is_not_retried() {
    assert!(!worth_retrying(&Status::not_found("gone")));
    assert!(worth_retrying(&Status::unavailable("store")));
    assert!(worth_retrying(&Status::resource_exhausted("[STF-LIMIT]")));
    assert!(worth_retrying(&Status::aborted("changing too fast")));
}

/// A store whose first `fail` appends of a TimerFired are refused as unavailable.
struct Flaky {
    inner: steadfast_engine::embedded::EmbeddedStore,
    fail: std::sync::atomic::AtomicU32,
}

#[async_trait::async_trait]
impl Store for Flaky {
    async fn append(&self, req: AppendRequest) -> Result<Appended, store::Error> {
        use std::sync::atomic::Ordering::SeqCst;
        let fires = req.events.iter().any(|e| matches!(e, Event::TimerFired(_)));
        if fires
            && self
                .fail
                .fetch_update(SeqCst, SeqCst, |n| n.checked_sub(1))
                .is_ok()
        {
            return Err(store::Error::Unavailable("injected".into()));
        }
        self.inner.append(req).await
    }
    async fn append_once(
        &self,
        req: AppendRequest,
        request: store::RequestKey,
    ) -> Result<Appended, store::Error> {
        self.inner.append_once(req, request).await
    }
    async fn drop_closed_before(
        &self,
        closed_before_ms: i64,
        limit: usize,
    ) -> Result<usize, store::Error> {
        self.inner.drop_closed_before(closed_before_ms, limit).await
    }
    async fn run_state(&self, key: &RunKey) -> Result<Option<Arc<RunState>>, store::Error> {
        self.inner.run_state(key).await
    }
    async fn open_run_for_workflow_id(
        &self,
        namespace: &str,
        workflow_id: &str,
    ) -> Result<Option<RunId>, store::Error> {
        self.inner
            .open_run_for_workflow_id(namespace, workflow_id)
            .await
    }
    async fn list_runs(
        &self,
        namespace: &str,
        filter: &store::RunFilter,
        after: Option<RunId>,
        limit: usize,
        now_ms: i64,
    ) -> Result<Vec<Arc<RunState>>, store::Error> {
        self.inner
            .list_runs(namespace, filter, after, limit, now_ms)
            .await
    }
    async fn read_history(
        &self,
        key: &RunKey,
        from_seq: u64,
        limit: usize,
    ) -> Result<Vec<steadfast_engine::EventRecord>, store::Error> {
        self.inner.read_history(key, from_seq, limit).await
    }
    async fn poll_task(
        &self,
        namespace: &str,
        queue: &str,
        kind: store::TaskKind,
        types: &[String],
        now_ms: i64,
    ) -> Result<Option<store::Task>, store::Error> {
        self.inner
            .poll_task(namespace, queue, kind, types, now_ms)
            .await
    }
    async fn queues_with_work(
        &self,
        namespace: &str,
        limit: usize,
    ) -> Result<Vec<String>, store::Error> {
        self.inner.queues_with_work(namespace, limit).await
    }
    async fn take_task(&self, task: &store::Task, now_ms: i64) -> Result<bool, store::Error> {
        self.inner.take_task(task, now_ms).await
    }
    async fn release_task(&self, task: &store::Task) -> Result<(), store::Error> {
        self.inner.release_task(task).await
    }
    async fn defer_task(
        &self,
        task: &store::Task,
        until_ms: i64,
        attempt: u32,
    ) -> Result<bool, store::Error> {
        self.inner.defer_task(task, until_ms, attempt).await
    }
    async fn put_schedule(
        &self,
        namespace: &str,
        name: &str,
        expected_version: u64,
        data: Vec<u8>,
    ) -> Result<u64, store::Error> {
        self.inner
            .put_schedule(namespace, name, expected_version, data)
            .await
    }
    async fn delete_schedule(
        &self,
        namespace: &str,
        name: &str,
        expected_version: u64,
    ) -> Result<(), store::Error> {
        self.inner
            .delete_schedule(namespace, name, expected_version)
            .await
    }
    async fn get_schedule(
        &self,
        namespace: &str,
        name: &str,
    ) -> Result<Option<store::StoredSchedule>, store::Error> {
        self.inner.get_schedule(namespace, name).await
    }
    async fn list_schedules(
        &self,
        namespace: Option<&str>,
    ) -> Result<Vec<store::StoredSchedule>, store::Error> {
        self.inner.list_schedules(namespace).await
    }
    async fn task_attempt(&self, task: &store::Task) -> Result<Option<u32>, store::Error> {
        self.inner.task_attempt(task).await
    }
    async fn set_attempt_deadline(
        &self,
        key: &RunKey,
        id: u32,
        attempt: u32,
        deadline_ms: i64,
        timeout: TimeoutKind,
    ) -> Result<(), store::Error> {
        self.inner
            .set_attempt_deadline(key, id, attempt, deadline_ms, timeout)
            .await
    }
    async fn take_due_timers(
        &self,
        now_ms: i64,
        limit: usize,
    ) -> Result<Vec<DueTimer>, store::Error> {
        self.inner.take_due_timers(now_ms, limit).await
    }
    async fn next_wakeup_ms(&self) -> Result<Option<i64>, store::Error> {
        self.inner.next_wakeup_ms().await
    }
    async fn put_blob(&self, ns: &str, data: Vec<u8>) -> Result<[u8; 32], store::Error> {
        self.inner.put_blob(ns, data).await
    }
    async fn get_blob(&self, ns: &str, hash: &[u8; 32]) -> Result<Option<Vec<u8>>, store::Error> {
        self.inner.get_blob(ns, hash).await
    }
    async fn checkpoint(&self) -> Result<u64, store::Error> {
        self.inner.checkpoint().await
    }
    async fn open_runs(&self) -> Result<Vec<steadfast_engine::RunKey>, store::Error> {
        self.inner.open_runs().await
    }
    async fn set_queue_build(
        &self,
        namespace: &str,
        queue: &str,
        build: Option<&str>,
    ) -> Result<(), store::Error> {
        self.inner.set_queue_build(namespace, queue, build).await
    }

    async fn queue_build(
        &self,
        namespace: &str,
        queue: &str,
    ) -> Result<Option<String>, store::Error> {
        self.inner.queue_build(namespace, queue).await
    }

    async fn missing_successors(
        &self,
    ) -> Result<
        Vec<(
            steadfast_engine::RunKey,
            steadfast_engine::event::RunStarted,
        )>,
        store::Error,
    > {
        self.inner.missing_successors().await
    }
    fn stats(&self) -> store::StoreStats {
        self.inner.stats()
    }
}

#[tokio::test]
async fn a_timer_whose_fire_failed_still_fires() {
    let dir = tempfile::tempdir().unwrap();
    let (inner, _) = steadfast_engine::embedded::EmbeddedStore::open(
        dir.path(),
        steadfast_engine::embedded::EmbeddedOptions::default(),
    )
    .unwrap();
    let store = Arc::new(Flaky {
        inner,
        fail: 3.into(),
    });
    let core = Core::new(
        store.clone(),
        Arc::new(steadfast_engine::clock::SystemClock),
    );
    let key = RunKey::new("default", RunId::new_v7());
    core.create(
        &key,
        vec![
            Event::RunStarted(ev::RunStarted {
                workflow_type: "t".into(),
                workflow_id: "w".into(),
                task_queue: "q".into(),
                input: Default::default(),
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
            Event::WorkflowTaskScheduled(ev::WorkflowTaskScheduled {
                task_queue: "q".into(),
                attempt: 1,
                not_before_ms: 0,
            }),
        ],
        None,
    )
    .await
    .unwrap();
    core.update(&key, true, |_, _| {
        Ok(Some(vec![Event::WorkflowTaskStarted(
            ev::WorkflowTaskStarted {
                scheduled_seq: 2,
                worker: "w".into(),
                timeout_ms: 0,
            },
        )]))
    })
    .await
    .unwrap();
    core.update(&key, true, |_, now| {
        Ok(Some(vec![
            Event::WorkflowTaskCompleted(ev::WorkflowTaskCompleted {
                started_seq: 3,
                worker: "w".into(),
            }),
            Event::TimerStarted(ev::TimerStarted {
                command_seq: 1,
                fire_at_ms: now,
            }),
        ]))
    })
    .await
    .unwrap();
    let loop_task = tokio::spawn(run(core.clone()));
    // Before, the first failure dropped the deadline and the run waited forever.
    let fired = tokio::time::timeout(std::time::Duration::from_secs(20), async {
        let mut watch = core.notify.watch_run(&key);
        loop {
            let s = core.state(&key).await.unwrap();
            if s.timers.is_empty() {
                return s;
            }
            let recheck = tokio::time::Instant::now() + std::time::Duration::from_secs(1);
            watch.changed_after(s.last_seq, recheck).await;
        }
    })
    .await;
    loop_task.abort();
    let s = fired.expect("the timer fired despite 3 failed appends");
    assert!(s.needs_workflow_task() || s.workflow_task != WorkflowTask::Idle);
    assert_eq!(store.fail.load(std::sync::atomic::Ordering::SeqCst), 0);
    store.inner.close().await.unwrap();
}
