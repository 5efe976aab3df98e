//! Nothing is visible before it is durable (promise C1): while an append's log sync is in
//! flight, no reader, poller or later appender's answer shows it; once synced, everyone does.
//! And after a power cut that loses an unsynced append, nothing that was ever shown is gone.
//!
//! The log runs on a simulated file system whose `fdatasync` can be held at a gate, so "a
//! sync in flight" is a state the test controls, not a race it hopes to win.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use parking_lot::{Condvar, Mutex};
use steadfast_engine::embedded::{EmbeddedOptions, EmbeddedStore};
use steadfast_engine::event::{self, Budget, Event, WorkflowTaskScheduled};
use steadfast_engine::ids::{RunId, RunKey};
use steadfast_engine::log::sim::SimVfs;
use steadfast_engine::log::vfs::{OpenMode, Vfs, VfsFile, VfsLock};
use steadfast_engine::payload::Payload;
use steadfast_engine::store::{AppendRequest, Appended, Error, RunFilter, Store, TaskKind};

/// Holds every `sync_data` while closed.
#[derive(Debug, Default)]
struct Gate {
    closed: Mutex<bool>,
    cv: Condvar,
    waiting: AtomicUsize,
}

impl Gate {
    fn close(&self) {
        *self.closed.lock() = true;
    }
    fn open(&self) {
        *self.closed.lock() = false;
        self.cv.notify_all();
    }
    fn pass(&self) {
        let mut closed = self.closed.lock();
        self.waiting.fetch_add(1, Ordering::SeqCst);
        while *closed {
            self.cv.wait(&mut closed);
        }
        self.waiting.fetch_sub(1, Ordering::SeqCst);
    }
}

#[derive(Debug)]
struct GatedVfs {
    inner: SimVfs,
    gate: Arc<Gate>,
}

#[derive(Debug)]
struct GatedFile {
    inner: Box<dyn VfsFile>,
    gate: Arc<Gate>,
}

impl VfsFile for GatedFile {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> std::io::Result<usize> {
        self.inner.read_at(buf, offset)
    }
    fn write_all_at(&self, buf: &[u8], offset: u64) -> std::io::Result<()> {
        self.inner.write_all_at(buf, offset)
    }
    fn sync_data(&self) -> std::io::Result<()> {
        self.gate.pass();
        self.inner.sync_data()
    }
    fn sync_all(&self) -> std::io::Result<()> {
        self.gate.pass();
        self.inner.sync_all()
    }
    fn len(&self) -> std::io::Result<u64> {
        self.inner.len()
    }
    fn preallocate(&self, len: u64) -> std::io::Result<()> {
        self.inner.preallocate(len)
    }
}

impl Vfs for GatedVfs {
    fn open(&self, path: &Path, mode: OpenMode) -> std::io::Result<Box<dyn VfsFile>> {
        Ok(Box::new(GatedFile {
            inner: self.inner.open(path, mode)?,
            gate: Arc::clone(&self.gate),
        }))
    }
    fn exists(&self, path: &Path) -> std::io::Result<bool> {
        self.inner.exists(path)
    }
    fn create_dir_all(&self, dir: &Path) -> std::io::Result<()> {
        self.inner.create_dir_all(dir)
    }
    fn list(&self, dir: &Path) -> std::io::Result<Vec<PathBuf>> {
        self.inner.list(dir)
    }
    fn rename(&self, from: &Path, to: &Path) -> std::io::Result<()> {
        self.inner.rename(from, to)
    }
    fn remove(&self, path: &Path) -> std::io::Result<()> {
        self.inner.remove(path)
    }
    fn sync_dir(&self, dir: &Path) -> std::io::Result<()> {
        self.inner.sync_dir(dir)
    }
    fn lock(&self, path: &Path) -> std::io::Result<Box<dyn VfsLock>> {
        self.inner.lock(path)
    }
}

fn options(vfs: Arc<dyn Vfs>) -> EmbeddedOptions {
    EmbeddedOptions {
        log_vfs: Some(vfs),
        sled_flush_every_ms: None,
        ..EmbeddedOptions::default()
    }
}

fn started() -> Event {
    Event::RunStarted(event::RunStarted {
        workflow_type: "wf".into(),
        workflow_id: "visible".into(),
        task_queue: "q".into(),
        input: Payload::json(b"{}".to_vec()),
        run_timeout_ms: 0,
        budget: Budget::default(),
        continued_from: None,
        identity: "visibility".into(),
        random_seed: 1,
        parent: None,
        forked_from: None,
        schedule: None,
        traceparent: None,
    })
}

fn signal(name: &str) -> Event {
    Event::SignalReceived(event::SignalReceived {
        name: name.into(),
        input: Payload::json(b"1".to_vec()),
        identity: "v".into(),
        request_id: String::new(),
    })
}

fn req(key: &RunKey, next: u64, events: Vec<Event>) -> AppendRequest {
    AppendRequest {
        key: key.clone(),
        expected_next_seq: next,
        events,
        time_ms: 1_000,
        wait_durable: true,
    }
}

/// A store whose log syncs can be held at `gate`, on a simulated disk that can lose power
/// (`sim`), and the key of a run for the test.
struct Gated {
    dir: tempfile::TempDir,
    gate: Arc<Gate>,
    sim: SimVfs,
    store: Arc<EmbeddedStore>,
    key: RunKey,
}

fn gated() -> Gated {
    let dir = tempfile::tempdir().unwrap();
    let gate = Arc::new(Gate::default());
    let sim = SimVfs::new();
    let vfs = Arc::new(GatedVfs {
        inner: sim.clone(),
        gate: Arc::clone(&gate),
    });
    let (store, _) = EmbeddedStore::open(dir.path(), options(vfs)).unwrap();
    Gated {
        dir,
        gate,
        sim,
        store: Arc::new(store),
        key: RunKey::new("default", RunId::new_v7()),
    }
}

/// [`gated`], with the run started (durably).
async fn gated_started() -> Gated {
    let g = gated();
    g.store
        .append(req(&g.key, 1, vec![started()]))
        .await
        .unwrap();
    g
}

impl Gated {
    /// Drops the store (every task using it must be done) and opens what the power cut left
    /// of its disk; the directory to keep for as long as that store is used.
    fn after_power_cut(self) -> (tempfile::TempDir, EmbeddedStore) {
        let Gated {
            dir, sim, store, ..
        } = self;
        drop(store);
        let image = sim.after_crash(7);
        let (store, _) = EmbeddedStore::open(dir.path(), options(Arc::new(image))).unwrap();
        (dir, store)
    }
}

/// Appends in a task of its own, so that its sync can be held at the gate meanwhile.
fn spawn_append(
    store: &Arc<EmbeddedStore>,
    key: &RunKey,
    next: u64,
    events: Vec<Event>,
) -> tokio::task::JoinHandle<Result<Appended, Error>> {
    let store = Arc::clone(store);
    let req = req(key, next, events);
    tokio::spawn(async move { store.append(req).await })
}

/// Waits (bounded) until `n` syncs are held at the gate.
async fn held(gate: &Gate, n: usize) {
    for _ in 0..2_000 {
        if gate.waiting.load(Ordering::SeqCst) >= n {
            return;
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    panic!("no sync reached the gate");
}

/// What every reader path shows of the run: (history length, state's last seq, open run of
/// the workflow id, runs listed, a workflow task polled).
async fn shown(store: &EmbeddedStore, key: &RunKey) -> (usize, u64, bool, usize, bool) {
    let history = match store.read_history(key, 1, 1_000).await {
        Ok(h) => h.len(),
        Err(Error::NotFound(_)) => 0,
        Err(e) => panic!("read_history: {e}"),
    };
    let last_seq = store
        .run_state(key)
        .await
        .unwrap()
        .map_or(0, |s| s.last_seq);
    let wid = store
        .open_run_for_workflow_id("default", "visible")
        .await
        .unwrap()
        .is_some();
    let filter = RunFilter {
        status: Some(steadfast_engine::state::RunStatus::Running),
        ..RunFilter::default()
    };
    let listed = store
        .list_runs("default", &filter, None, 10, 0)
        .await
        .unwrap()
        .len();
    let polled = store
        .poll_task("default", "q", TaskKind::Workflow, &[], i64::MAX / 2)
        .await
        .unwrap();
    if let Some(t) = &polled {
        store.release_task(t).await.unwrap();
    }
    (history, last_seq, wid, listed, polled.is_some())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_append_is_shown_only_once_its_sync_is_done() {
    // The directory and disk stay bound (not `..`) so that they outlive the store.
    let Gated {
        dir: _dir,
        gate,
        sim: _sim,
        store,
        key,
    } = gated();

    // The run's start, with its sync held: nobody sees the run.
    gate.close();
    let start = spawn_append(&store, &key, 1, vec![started()]);
    held(&gate, 1).await;
    assert_eq!(shown(&store, &key).await, (0, 0, false, 0, false));
    // A second start of the same workflow id is not told about a run that may never exist:
    // it waits for the first start's sync (and then is refused, naming it).
    let other = RunKey::new("default", RunId::new_v7());
    let second = spawn_append(&store, &other, 1, vec![started()]);
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(
        !second.is_finished(),
        "a start answered from an unsynced start"
    );
    gate.open();
    start.await.unwrap().unwrap();
    match second.await.unwrap() {
        Err(Error::WorkflowIdInUse { run_id, .. }) => assert_eq!(run_id, key.run_id),
        other => panic!("second start: {other:?}"),
    }
    assert_eq!(shown(&store, &key).await, (1, 1, true, 1, false));

    // A signal and a scheduled workflow task with their sync held: still not shown, and a
    // concurrent appender at the old seq queues behind them (expected-seq ordering).
    gate.close();
    let s1 = spawn_append(
        &store,
        &key,
        2,
        vec![
            signal("s1"),
            Event::WorkflowTaskScheduled(WorkflowTaskScheduled {
                task_queue: "q".into(),
                attempt: 1,
                not_before_ms: 0,
            }),
        ],
    );
    held(&gate, 1).await;
    assert_eq!(shown(&store, &key).await, (1, 1, true, 1, false));
    let racer = spawn_append(&store, &key, 2, vec![signal("late")]);
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(
        !racer.is_finished(),
        "a conflict answered from an unsynced append"
    );
    gate.open();
    s1.await.unwrap().unwrap();
    assert!(matches!(racer.await.unwrap(), Err(Error::Conflict { .. })));
    assert_eq!(shown(&store, &key).await, (3, 3, true, 1, true));
}

/// The scenario: S1's sync in flight, S2 sent meanwhile, a reader reads, the power
/// fails before S2 is synced. What the reader was shown is all back after the restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nothing_shown_is_lost_in_a_power_cut() {
    let g = gated_started().await;
    g.gate.close();
    let s1 = spawn_append(&g.store, &g.key, 2, vec![signal("s1")]);
    held(&g.gate, 1).await;
    // S2 is appended while S1's sync is in flight: it builds on S1 (seq 3), unacknowledged.
    let s2 = spawn_append(&g.store, &g.key, 3, vec![signal("s2")]);
    tokio::time::sleep(Duration::from_millis(20)).await;
    let seen = g.store.read_history(&g.key, 1, 100).await.unwrap();
    assert_eq!(seen.len(), 1, "a reader was shown an unsynced signal");
    // The power fails: S1's sync and everything after it never happen.
    g.sim.crash();
    g.gate.open();
    assert!(s1.await.unwrap().is_err());
    assert!(s2.await.unwrap().is_err());
    let key = g.key.clone();
    let (_dir, store) = g.after_power_cut();
    let back = store.read_history(&key, 1, 100).await.unwrap();
    assert_eq!(&back[..seen.len()], &seen[..], "something shown was lost");
}

/// A refusal that an unsynced append explains (here: an event after an unsynced close) is not
/// answered before that append is durable; if the power fails first, it is never answered as
/// a refusal at all, and the run is open after the restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refusal_is_not_explained_by_an_unsynced_close() {
    let g = gated_started().await;
    g.gate.close();
    let terminated = Event::RunTerminated(event::RunTerminated {
        reason: "visibility".into(),
        identity: "v".into(),
    });
    let close = spawn_append(&g.store, &g.key, 2, vec![terminated]);
    held(&g.gate, 1).await;
    // An appender at the seq after the close: the run it would be refused for is closed only
    // in an append nobody has been told of.
    let late = spawn_append(&g.store, &g.key, 3, vec![signal("late")]);
    tokio::time::sleep(Duration::from_millis(50)).await;
    let answered_early = late.is_finished();
    // The power fails before the close's sync (the gate opens before any assertion, so a
    // failing one does not leave the log writer held at it).
    g.sim.crash();
    g.gate.open();
    let late = late.await.unwrap();
    assert!(
        !answered_early,
        "a refusal answered from an unsynced close: {late:?}"
    );
    assert!(close.await.unwrap().is_err());
    match late {
        Err(Error::Illegal { .. }) => panic!("refused for a close that was never durable"),
        Err(_) => {}
        Ok(a) => panic!("appended after a close: {a:?}"),
    }
    let key = g.key.clone();
    let (_dir, store) = g.after_power_cut();
    let back = store.read_history(&key, 1, 100).await.unwrap();
    assert_eq!(back.len(), 1, "{back:?}");
    let state = store.run_state(&key).await.unwrap().unwrap();
    assert_eq!(state.status, steadfast_engine::state::RunStatus::Running);
}
