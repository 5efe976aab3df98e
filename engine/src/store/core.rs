//! Backend-independent projections of run states: the open-run table, the task queues with
//! their in-memory leases, and the timer index.
//!
//! Every backend keeps one [`Core`] and calls [`Core::upsert`] with a run's new state after
//! each append (and for every open run after a restart). The queues and timers are functions
//! of the states alone, so they are rebuilt exactly after a crash. What lives only in memory
//! may be lost without changing any outcome:
//! - **leases**: a task taken by a poll is not offered again until it is released, its start
//!   is recorded (the state moves on), or [`LEASE_MS`] pass. A lease only keeps two pollers
//!   from racing for one task; the start itself is an append at the expected seq, so two
//!   hand-outs of one task can never both be recorded, and a leaked lease expires.
//! - **heartbeats**: the last heartbeat of a started attempt moves its heartbeat deadline
//!   (never its start-to-close, which is the durable start time plus the options). After a
//!   restart, the heartbeat deadline counts from when this table first saw the time (a grace
//!   as long as one heartbeat interval).
//!
//! Cost: each change touches only the entries of one run, `O(k log n)` for a run with `k`
//! open activities and timers among `n` entries. Iteration orders are deterministic
//! (`BTreeMap`/`BTreeSet` throughout).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use crate::event::{ActivityOptions, CommandSeq, TimeMs, TimeoutKind};
use crate::ids::{RunId, RunKey};
use crate::state::{ActivityPhase, RunState, WorkflowTask};
use crate::store::{DueTimer, Task, TaskKind};

/// How long a worker may hold a started workflow task before it is timed out, unless its
/// WorkflowTaskStarted records another (`steadfast server --workflow-task-timeout`).
pub const WORKFLOW_TASK_TIMEOUT_MS_DEFAULT: u64 = 10_000;

/// How long a task taken by a poll stays away from other pollers without its start being
/// recorded. Starting a task takes one durable append; a lease older than this was leaked
/// (an error path, a request dropped mid-way) and the task is offered again.
pub const LEASE_MS: TimeMs = 10_000;

/// Start-to-close timeout of an activity attempt that sets none (`start_to_close_ms == 0`).
pub const ACTIVITY_START_TO_CLOSE_DEFAULT_MS: u64 = 60_000;

/// One queue: its kind, namespace and name.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct QueueKey {
    kind: u8,
    namespace: String,
    queue: String,
}

impl QueueKey {
    fn new(kind: TaskKind, namespace: &str, queue: &str) -> QueueKey {
        let kind = match kind {
            TaskKind::Workflow => 0,
            TaskKind::Activity => 1,
        };
        QueueKey {
            kind,
            namespace: namespace.to_string(),
            queue: queue.to_string(),
        }
    }
}

/// A task of one run, without the run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Slot {
    Workflow { scheduled_seq: u64 },
    Activity { id: CommandSeq, attempt: u32 },
}

impl Slot {
    fn task(self, key: &RunKey) -> Task {
        match self {
            Slot::Workflow { scheduled_seq } => Task::Workflow {
                key: key.clone(),
                scheduled_seq,
            },
            Slot::Activity { id, attempt } => Task::Activity {
                key: key.clone(),
                id,
                attempt,
            },
        }
    }

    fn of(task: &Task) -> (&RunKey, Slot) {
        match task {
            Task::Workflow { key, scheduled_seq } => (
                key,
                Slot::Workflow {
                    scheduled_seq: *scheduled_seq,
                },
            ),
            Task::Activity { key, id, attempt } => (
                key,
                Slot::Activity {
                    id: *id,
                    attempt: *attempt,
                },
            ),
        }
    }
}

/// A queue entry: ordered by visibility time, then run, then task.
type Entry = (TimeMs, RunKey, Slot);

/// A task a state makes ready: its queue, its workflow or activity type, its visible time and
/// its slot. The type is what a poll filters on ([`Core::poll`]).
#[derive(Clone, Debug, PartialEq, Eq)]
struct ReadyTask {
    queue: QueueKey,
    type_name: String,
    visible: TimeMs,
    slot: Slot,
}

/// One queue's ready (offered, not leased) tasks, in two indexes of the same entries: all of
/// them, for a poll that takes any type, and per type, so that a poll for some types costs
/// `O(#types · log n)` however many tasks of other types are ahead of them (a type nobody
/// polls for never starves the others, C6).
#[derive(Debug, Default)]
struct Queue {
    all: BTreeSet<Entry>,
    by_type: BTreeMap<String, BTreeSet<Entry>>,
}

impl Queue {
    fn insert(&mut self, type_name: &str, entry: Entry) {
        match self.by_type.get_mut(type_name) {
            Some(set) => {
                set.insert(entry.clone());
            }
            None => {
                self.by_type
                    .insert(type_name.to_string(), BTreeSet::from([entry.clone()]));
            }
        }
        self.all.insert(entry);
    }

    /// Removes an entry; false when it was not there.
    fn remove(&mut self, type_name: &str, entry: &Entry) -> bool {
        if let Some(set) = self.by_type.get_mut(type_name) {
            set.remove(entry);
            if set.is_empty() {
                self.by_type.remove(type_name);
            }
        }
        self.all.remove(entry)
    }

    fn is_empty(&self) -> bool {
        self.all.is_empty()
    }

    /// The first entry visible at `now_ms` among `types` (any type when empty), with its type.
    fn first_visible(&self, types: &[String], now_ms: TimeMs) -> Option<(&Entry, Option<&str>)> {
        if types.is_empty() {
            return self
                .all
                .first()
                .filter(|e| e.0 <= now_ms)
                .map(|e| (e, None));
        }
        types
            .iter()
            .filter_map(|t| {
                let (name, set) = self.by_type.get_key_value(t.as_str())?;
                set.first().map(|e| (e, Some(name.as_str())))
            })
            .min_by(|a, b| a.0.cmp(b.0))
            .filter(|(e, _)| e.0 <= now_ms)
    }
}

/// A deadline in the timer index.
type Deadline = (TimeMs, DueTimer);

/// What one open run contributes to the indexes.
#[derive(Debug)]
struct RunSlot {
    state: Arc<RunState>,
    /// Tasks the state makes ready (offered unless leased).
    ready: Vec<ReadyTask>,
    /// Deadlines the state (and `heartbeats`) imply.
    timers: Vec<(TimeMs, DueTimer)>,
    /// Tasks taken by a poll whose start is not recorded yet: slot -> lease expiry.
    leases: BTreeMap<Slot, TimeMs>,
    /// Heartbeat deadlines of started attempts that heartbeated: (activity, attempt) -> when
    /// the next heartbeat is due.
    heartbeats: BTreeMap<(CommandSeq, u32), TimeMs>,
    /// The attempt recorded with the last [`Core::defer`] of a task the state still offers
    /// (a held run's transient workflow-task attempts, which the history does not count).
    attempts: BTreeMap<Slot, u32>,
}

impl RunSlot {
    /// The type of a task this run's state makes ready.
    fn ready_type(&self, slot: Slot) -> Option<&str> {
        self.ready
            .iter()
            .find(|r| r.slot == slot)
            .map(|r| r.type_name.as_str())
    }
}

/// The open-run table with its queues, leases and timers. Not synchronised: the backend
/// holds it under its own lock.
#[derive(Debug, Default)]
pub struct Core {
    runs: BTreeMap<RunKey, RunSlot>,
    queues: BTreeMap<QueueKey, Queue>,
    /// Queue entries not yet visible when inserted, for [`Core::next_wakeup_ms`].
    visibility: BTreeSet<Entry>,
    timers: BTreeSet<(TimeMs, DueTimer)>,
    /// Lease expiries, for [`Core::expire_leases`] and [`Core::next_wakeup_ms`].
    lease_expiries: BTreeSet<Entry>,
    workflow_ids: BTreeMap<(String, String), RunId>,
    /// The latest `now_ms` seen; entries visible by then need no wakeup.
    now_seen_ms: TimeMs,
    /// The first `now_ms` seen: the attempts started before it (by an earlier process) count
    /// their heartbeat deadline from here.
    opened_ms: Option<TimeMs>,
}

impl Core {
    /// An empty table.
    pub fn new() -> Core {
        Core::default()
    }

    /// Open runs in the table.
    pub fn len(&self) -> usize {
        self.runs.len()
    }

    /// Whether no run is open.
    pub fn is_empty(&self) -> bool {
        self.runs.is_empty()
    }

    /// The state of an open run.
    pub fn state(&self, key: &RunKey) -> Option<&Arc<RunState>> {
        self.runs.get(key).map(|s| &s.state)
    }

    /// The open run of a workflow id.
    pub fn open_run_for_workflow_id(&self, namespace: &str, workflow_id: &str) -> Option<RunId> {
        self.workflow_ids
            .get(&(namespace.to_string(), workflow_id.to_string()))
            .copied()
    }

    /// Open runs of `namespace` with a run id below `before` (all when `None`), newest first.
    pub fn open_runs_desc<'a>(
        &'a self,
        namespace: &str,
        before: Option<RunId>,
    ) -> impl Iterator<Item = &'a Arc<RunState>> + 'a {
        let lo = RunKey::new(namespace, RunId(uuid::Uuid::nil()));
        let hi = RunKey::new(namespace, before.unwrap_or(RunId(uuid::Uuid::max())));
        let inclusive_hi = before.is_none();
        self.runs
            .range(lo..=hi.clone())
            .rev()
            .filter(move |(k, _)| inclusive_hi || **k != hi)
            .map(|(_, s)| &s.state)
    }

    /// Makes every workflow task that is started now due for its timeout at once. Called when a
    /// store opens: the worker that held such a task talked to the previous server process,
    /// whose lease is gone, so waiting out the workflow-task timeout would only delay the run.
    /// (If that worker is alive and completes first, its completion still counts; otherwise
    /// the timeout event makes the task offered again.)
    pub fn expire_started_workflow_tasks(&mut self) {
        for slot in self.runs.values_mut() {
            for (due, timer) in slot.timers.iter_mut() {
                if matches!(timer, DueTimer::WorkflowTask { .. }) && *due > 0 {
                    self.timers.remove(&(*due, timer.clone()));
                    *due = 0;
                    self.timers.insert((0, timer.clone()));
                }
            }
        }
    }

    /// Replaces a run's state and recomputes everything it implies. A closed run leaves the
    /// table, with its leases and in-memory deadlines.
    pub fn upsert(&mut self, state: Arc<RunState>) {
        let key = state.key.clone();
        if let Some(slot) = self.runs.get_mut(&key) {
            let (ready, timers) = (
                std::mem::take(&mut slot.ready),
                std::mem::take(&mut slot.timers),
            );
            self.unindex(&key, &ready, &timers);
        }
        let wid = (key.namespace.clone(), state.workflow_id.clone());
        if !state.is_open() {
            self.runs.remove(&key);
            if self.workflow_ids.get(&wid) == Some(&key.run_id) {
                self.workflow_ids.remove(&wid);
            }
            return;
        }
        if !state.workflow_id.is_empty() {
            self.workflow_ids.entry(wid).or_insert(key.run_id);
        }
        let slot = self.runs.entry(key.clone()).or_insert_with(|| RunSlot {
            state: Arc::clone(&state),
            ready: Vec::new(),
            timers: Vec::new(),
            leases: BTreeMap::new(),
            heartbeats: BTreeMap::new(),
            attempts: BTreeMap::new(),
        });
        slot.state = state;
        let (ready, timers, dropped) = derive(
            &slot.state,
            &mut slot.leases,
            &mut slot.heartbeats,
            self.opened_ms,
        );
        // An attempt number lives as long as the task it counts: while its lease may.
        let leases = &slot.leases;
        let offered: BTreeSet<Slot> = ready.iter().map(|r| r.slot).collect();
        slot.attempts
            .retain(|s, _| offered.contains(s) || leases.contains_key(s));
        for (slot_dropped, expiry) in dropped {
            self.lease_expiries
                .remove(&(expiry, key.clone(), slot_dropped));
        }
        self.timers.extend(timers.iter().cloned());
        let offers: Vec<_> = ready
            .iter()
            .filter(|r| !slot.leases.contains_key(&r.slot))
            .cloned()
            .collect();
        slot.ready = ready;
        slot.timers = timers;
        for r in offers {
            self.offer(&r, key.clone());
        }
    }

    /// The task queues of `namespace` that hold work (a task offered, leased or waiting to be
    /// visible), at most `limit` of them, in name order: what `task_queues_per_namespace_max`
    /// counts.
    pub fn queues_with_work(&self, namespace: &str, limit: usize) -> Vec<String> {
        let mut names: BTreeSet<&str> = self
            .queues
            .keys()
            .filter(|k| k.namespace == namespace)
            .map(|k| k.queue.as_str())
            .collect();
        // A leased (or deferred) task has left its queue's offers but is still the queue's
        // work: the contract test found it uncounted here while PostgreSQL counted it.
        let first = RunKey {
            namespace: namespace.to_string(),
            run_id: crate::RunId(uuid::Uuid::nil()),
        };
        for (_, run) in self
            .runs
            .range(first..)
            .take_while(|(k, _)| k.namespace == namespace)
            .filter(|(_, run)| !run.leases.is_empty())
        {
            names.extend(
                run.ready
                    .iter()
                    .filter(|r| run.leases.contains_key(&r.slot))
                    .map(|r| r.queue.queue.as_str()),
            );
        }
        names.into_iter().take(limit).map(str::to_string).collect()
    }

    /// Takes the first visible task of a queue among `types` (workflow types for a workflow
    /// queue, activity types for an activity queue; any type when empty) and leases it. Tasks
    /// of other types stay where they are, untouched.
    pub fn poll(
        &mut self,
        namespace: &str,
        queue: &str,
        kind: TaskKind,
        types: &[String],
        now_ms: TimeMs,
    ) -> Option<Task> {
        self.observe(now_ms);
        let qk = QueueKey::new(kind, namespace, queue);
        let q = self.queues.get_mut(&qk)?;
        let (entry, type_name) = {
            let (e, t) = q.first_visible(types, now_ms)?;
            let t = match t {
                Some(t) => t.to_string(),
                None => self.runs.get(&e.1)?.ready_type(e.2)?.to_string(),
            };
            (e.clone(), t)
        };
        q.remove(&type_name, &entry);
        if q.is_empty() {
            self.queues.remove(&qk);
        }
        self.visibility.remove(&entry);
        let (_, key, slot) = entry;
        self.lease(&key, slot, now_ms);
        Some(slot.task(&key))
    }

    /// Leases `slot` of `key` until `now_ms + LEASE_MS`.
    fn lease(&mut self, key: &RunKey, slot: Slot, now_ms: TimeMs) {
        let Some(run) = self.runs.get_mut(key) else {
            return;
        };
        let expiry = now_ms.saturating_add(LEASE_MS);
        if let Some(old) = run.leases.insert(slot, expiry) {
            self.lease_expiries.remove(&(old, key.clone(), slot));
        }
        self.lease_expiries.insert((expiry, key.clone(), slot));
    }

    /// Offers again every task whose lease expired by `now_ms` (a leak: a start is recorded
    /// or given back well within [`LEASE_MS`]). Returns how many.
    pub fn expire_leases(&mut self, now_ms: TimeMs) -> usize {
        let mut n = 0;
        while let Some((at, key, slot)) = self.lease_expiries.first().cloned() {
            if at > now_ms {
                break;
            }
            self.lease_expiries.pop_first();
            let Some(run) = self.runs.get_mut(&key) else {
                continue;
            };
            if run.leases.get(&slot) != Some(&at) {
                continue;
            }
            run.leases.remove(&slot);
            n += 1;
            if let Some(r) = run.ready.iter().find(|r| r.slot == slot).cloned() {
                self.offer(&r, key);
            }
        }
        n
    }

    /// Leases one specific task if it is offered and visible at `now_ms` (eager dispatch: the
    /// server hands it to the worker whose completion scheduled it). False when it is not
    /// offered (already taken, not visible yet, parked).
    pub fn take(&mut self, task: &Task, now_ms: TimeMs) -> bool {
        self.observe(now_ms);
        let (key, slot) = Slot::of(task);
        let Some(run) = self.runs.get_mut(key) else {
            return false;
        };
        if run.leases.contains_key(&slot) {
            return false;
        }
        let Some(r) = run.ready.iter().find(|r| r.slot == slot).cloned() else {
            return false;
        };
        if r.visible > now_ms {
            return false;
        }
        let entry = (r.visible, key.clone(), slot);
        let Some(set) = self.queues.get_mut(&r.queue) else {
            return false;
        };
        if !set.remove(&r.type_name, &entry) {
            return false;
        }
        if set.is_empty() {
            self.queues.remove(&r.queue);
        }
        self.visibility.remove(&entry);
        self.lease(key, slot, now_ms);
        true
    }

    /// Keeps a task away from pollers until `until_ms` (whether it is offered or leased now)
    /// and records `attempt` as its current attempt ([`Core::attempt`]). This is a lease with
    /// another expiry: when it passes the task is offered again; a release offers it at once;
    /// the state moving past the task drops it with its attempt. False, and nothing changes,
    /// when the state does not offer the task (it moved on, or the run closed).
    pub fn defer(&mut self, task: &Task, until_ms: TimeMs, attempt: u32) -> bool {
        let (key, slot) = Slot::of(task);
        let Some(run) = self.runs.get_mut(key) else {
            return false;
        };
        let Some(r) = run.ready.iter().find(|r| r.slot == slot).cloned() else {
            return false;
        };
        run.attempts.insert(slot, attempt);
        match run.leases.insert(slot, until_ms) {
            Some(old) => {
                self.lease_expiries.remove(&(old, key.clone(), slot));
            }
            None => {
                let entry = (r.visible, key.clone(), slot);
                self.visibility.remove(&entry);
                if let Some(set) = self.queues.get_mut(&r.queue) {
                    set.remove(&r.type_name, &entry);
                    if set.is_empty() {
                        self.queues.remove(&r.queue);
                    }
                }
            }
        }
        self.lease_expiries.insert((until_ms, key.clone(), slot));
        true
    }

    /// The attempt recorded by the last [`Core::defer`] of `task`, while the state still
    /// offers it; `None` when it was never deferred (or the table was rebuilt since).
    pub fn attempt(&self, task: &Task) -> Option<u32> {
        let (key, slot) = Slot::of(task);
        self.runs.get(key)?.attempts.get(&slot).copied()
    }

    /// Returns a leased task to its queue, if the run's state still offers it.
    pub fn release(&mut self, task: &Task) {
        let (key, slot) = Slot::of(task);
        let Some(run) = self.runs.get_mut(key) else {
            return;
        };
        let Some(expiry) = run.leases.remove(&slot) else {
            return;
        };
        self.lease_expiries.remove(&(expiry, key.clone(), slot));
        if let Some(r) = run.ready.iter().find(|r| r.slot == slot).cloned() {
            self.offer(&r, key.clone());
        }
    }

    /// A heartbeat of a started attempt: its heartbeat deadline becomes `deadline_ms` (the
    /// server passes the heartbeat's time plus the heartbeat interval, with
    /// [`TimeoutKind::Heartbeat`]). Nothing else moves: start-to-close is the durable start
    /// time plus the options, and a heartbeat never extends it. Ignored for another kind, an
    /// attempt that is not the activity's current one, or one not recorded as started.
    pub fn set_attempt_deadline(
        &mut self,
        key: &RunKey,
        id: CommandSeq,
        attempt: u32,
        deadline_ms: TimeMs,
        timeout: TimeoutKind,
    ) {
        if timeout != TimeoutKind::Heartbeat {
            return;
        }
        let Some(run) = self.runs.get_mut(key) else {
            return;
        };
        let started = run.state.activities.get(&id).is_some_and(|a| {
            a.attempt == attempt && matches!(a.phase, ActivityPhase::Started { .. })
        });
        if !started {
            return;
        }
        run.heartbeats.insert((id, attempt), deadline_ms);
        let state = Arc::clone(&run.state);
        self.upsert(state);
    }

    /// Removes and returns up to `limit` deadlines due at `now_ms`, earliest first.
    pub fn take_due(&mut self, now_ms: TimeMs, limit: usize) -> Vec<DueTimer> {
        self.observe(now_ms);
        let mut out = Vec::new();
        while out.len() < limit {
            match self.timers.first() {
                Some((at, _)) if *at <= now_ms => {}
                _ => break,
            }
            if let Some((_, t)) = self.timers.pop_first() {
                out.push(t);
            }
        }
        out
    }

    /// The earliest deadline, or the earliest time a task not yet visible becomes visible.
    /// A lease expiring counts: its task is offered again then.
    pub fn next_wakeup_ms(&self) -> Option<TimeMs> {
        [
            self.timers.first().map(|(at, _)| *at),
            self.visibility.first().map(|(at, _, _)| *at),
            self.lease_expiries.first().map(|(at, _, _)| *at),
        ]
        .into_iter()
        .flatten()
        .min()
    }

    /// Tasks ready (offered, not leased) in a queue at `now_ms`; for tests and metrics.
    pub fn ready_len(&self, namespace: &str, queue: &str, kind: TaskKind, now_ms: TimeMs) -> usize {
        self.queues
            .get(&QueueKey::new(kind, namespace, queue))
            .map_or(0, |q| q.all.iter().take_while(|e| e.0 <= now_ms).count())
    }

    fn observe(&mut self, now_ms: TimeMs) {
        self.now_seen_ms = self.now_seen_ms.max(now_ms);
        while self.visibility.first().is_some_and(|e| e.0 <= now_ms) {
            self.visibility.pop_first();
        }
        if self.opened_ms.is_none() {
            self.opened_ms = Some(now_ms);
            // Attempts started by an earlier process get their heartbeat deadline from now:
            // their workers' heartbeats went to that process (a grace of one interval).
            let started: Vec<Arc<RunState>> = self
                .runs
                .values()
                .filter(|r| {
                    r.state.activities.values().any(|a| {
                        a.options.heartbeat_ms > 0
                            && matches!(a.phase, ActivityPhase::Started { .. })
                    })
                })
                .map(|r| Arc::clone(&r.state))
                .collect();
            for s in started {
                self.upsert(s);
            }
        }
        self.expire_leases(now_ms);
    }

    fn offer(&mut self, r: &ReadyTask, key: RunKey) {
        let entry = (r.visible, key, r.slot);
        if r.visible > self.now_seen_ms {
            self.visibility.insert(entry.clone());
        }
        self.queues
            .entry(r.queue.clone())
            .or_default()
            .insert(&r.type_name, entry);
    }

    fn unindex(&mut self, key: &RunKey, ready: &[ReadyTask], timers: &[(TimeMs, DueTimer)]) {
        for r in ready {
            let entry = (r.visible, key.clone(), r.slot);
            self.visibility.remove(&entry);
            if let Some(set) = self.queues.get_mut(&r.queue) {
                set.remove(&r.type_name, &entry);
                if set.is_empty() {
                    self.queues.remove(&r.queue);
                }
            }
        }
        for t in timers {
            self.timers.remove(t);
        }
    }
}

/// The start-to-close timeout of an attempt with these options (0 = the default).
pub fn start_to_close_ms(options: &ActivityOptions) -> u64 {
    if options.start_to_close_ms > 0 {
        options.start_to_close_ms
    } else {
        ACTIVITY_START_TO_CLOSE_DEFAULT_MS
    }
}

/// When a started attempt's start-to-close passes: its durable start time plus the timeout.
/// Nothing else moves it (not a heartbeat, not a restart).
pub fn start_to_close_deadline(since_ms: TimeMs, options: &ActivityOptions) -> TimeMs {
    since_ms.saturating_add(i64::try_from(start_to_close_ms(options)).unwrap_or(i64::MAX))
}

/// When a started workflow task times out: its durable start time plus the timeout recorded
/// with it (0 = [`WORKFLOW_TASK_TIMEOUT_MS_DEFAULT`]).
pub fn workflow_task_deadline(since_ms: TimeMs, timeout_ms: u64) -> TimeMs {
    let t = if timeout_ms > 0 {
        timeout_ms
    } else {
        WORKFLOW_TASK_TIMEOUT_MS_DEFAULT
    };
    since_ms.saturating_add(i64::try_from(t).unwrap_or(i64::MAX))
}

/// A task a run's state makes ready: its queue, when it becomes visible, and the task.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableTask {
    /// Which kind of queue.
    pub kind: TaskKind,
    /// The queue's name (in the run's namespace).
    pub queue: String,
    /// When the task becomes visible.
    pub visible_ms: TimeMs,
    /// Its workflow type (a workflow task) or activity type (an activity task): what a poll
    /// filters on.
    pub type_name: String,
    /// The task.
    pub task: Task,
}

/// What a run's state implies, for a backend that keeps queues and timers in tables of its own
/// (PostgreSQL) instead of a [`Core`]: the tasks it makes ready and its deadlines, by the same
/// rules. `heartbeats` holds the recorded heartbeat deadlines of started attempts
/// ((activity, attempt) -> due); a started attempt without one is due one heartbeat interval
/// after its durable start (a shared store loses no heartbeat in a restart, so no grace).
/// A closed run implies nothing.
pub fn derive_for_tables(
    state: &RunState,
    heartbeats: &BTreeMap<(CommandSeq, u32), TimeMs>,
) -> (Vec<TableTask>, Vec<(TimeMs, DueTimer)>) {
    if !state.is_open() {
        return (Vec::new(), Vec::new());
    }
    let mut heartbeats = heartbeats.clone();
    let (ready, timers, _) = derive(
        state,
        &mut BTreeMap::new(),
        &mut heartbeats,
        Some(TimeMs::MIN),
    );
    let ready = ready
        .into_iter()
        .map(|r| TableTask {
            kind: if r.queue.kind == 0 {
                TaskKind::Workflow
            } else {
                TaskKind::Activity
            },
            queue: r.queue.queue,
            visible_ms: r.visible,
            type_name: r.type_name,
            task: r.slot.task(&state.key),
        })
        .collect();
    (ready, timers)
}

/// Leases a state no longer allows, with their expiry (to drop from the expiry index).
type DroppedLeases = Vec<(Slot, TimeMs)>;

/// What a state implies: its ready tasks and its deadlines. Drops leases and heartbeat
/// deadlines the state has moved past (returning the dropped leases).
fn derive(
    s: &RunState,
    leases: &mut BTreeMap<Slot, TimeMs>,
    heartbeats: &mut BTreeMap<(CommandSeq, u32), TimeMs>,
    opened_ms: Option<TimeMs>,
) -> (Vec<ReadyTask>, Vec<Deadline>, DroppedLeases) {
    let key = &s.key;
    let mut ready = Vec::new();
    let mut timers = Vec::new();
    // Tasks that may stay leased: the scheduled workflow task and every Ready attempt (also
    // while parked on a budget: the poll that took it is still deciding).
    let mut leasable = BTreeSet::new();
    let attempt_timer = |id, attempt, timeout| DueTimer::ActivityAttempt {
        key: key.clone(),
        id,
        attempt,
        timeout,
    };
    match &s.workflow_task {
        WorkflowTask::Idle => {}
        WorkflowTask::Scheduled {
            scheduled_seq,
            not_before_ms,
            since_ms,
            ..
        } => {
            let slot = Slot::Workflow {
                scheduled_seq: *scheduled_seq,
            };
            leasable.insert(slot);
            ready.push(ReadyTask {
                queue: QueueKey::new(TaskKind::Workflow, &key.namespace, &s.task_queue),
                type_name: crate::store::routing::workflow_task_key(
                    &s.workflow_type,
                    s.routed_build(),
                ),
                visible: (*not_before_ms).max(*since_ms),
                slot,
            });
        }
        WorkflowTask::Started {
            started_seq,
            since_ms,
            timeout_ms,
            ..
        } => {
            timers.push((
                workflow_task_deadline(*since_ms, *timeout_ms),
                DueTimer::WorkflowTask {
                    key: key.clone(),
                    started_seq: *started_seq,
                },
            ));
        }
    }
    for (id, a) in &s.activities {
        let id = *id;
        match &a.phase {
            ActivityPhase::Ready { visible_ms } => {
                let slot = Slot::Activity {
                    id,
                    attempt: a.attempt,
                };
                leasable.insert(slot);
                if a.cancel_requested {
                    // Cancelling, and no worker holds the attempt (every hand-out is recorded
                    // as ActivityStarted first): it is never offered and nothing will report
                    // on it, so it is due now and the server confirms the cancellation.
                    timers.push((0, attempt_timer(id, a.attempt, TimeoutKind::StartToClose)));
                } else if s.budget_exceeded.is_none() && s.reservation_block(id).is_none() {
                    // Parked on a budget, or waiting for attempts in flight to free the room
                    // they reserved (RunState::reservation_block): not offered meanwhile.
                    let queue = if a.options.task_queue.is_empty() {
                        &s.task_queue
                    } else {
                        &a.options.task_queue
                    };
                    ready.push(ReadyTask {
                        queue: QueueKey::new(TaskKind::Activity, &key.namespace, queue),
                        type_name: a.activity_type.clone(),
                        visible: *visible_ms,
                        slot,
                    });
                }
            }
            ActivityPhase::Started { since_ms, .. } => {
                let stc = start_to_close_deadline(*since_ms, &a.options);
                timers.push((stc, attempt_timer(id, a.attempt, TimeoutKind::StartToClose)));
                if a.options.heartbeat_ms > 0 {
                    // The last heartbeat seen here, or the start, or (for an attempt started
                    // by an earlier process) when this process first saw the time.
                    let hb = i64::try_from(a.options.heartbeat_ms).unwrap_or(i64::MAX);
                    let due = heartbeats
                        .get(&(id, a.attempt))
                        .copied()
                        .unwrap_or_else(|| {
                            (*since_ms)
                                .max(opened_ms.unwrap_or(TimeMs::MAX))
                                .saturating_add(hb)
                        });
                    if due < stc {
                        timers.push((due, attempt_timer(id, a.attempt, TimeoutKind::Heartbeat)));
                    }
                }
            }
            // A human decides; not offered meanwhile. A cancel has nothing to stop (no worker
            // holds it): due now, as for a Ready attempt. Schedule-to-close still bounds it.
            ActivityPhase::AwaitingApproval { .. } => {
                if a.cancel_requested {
                    timers.push((0, attempt_timer(id, a.attempt, TimeoutKind::StartToClose)));
                }
            }
            // An operator decides; no deadline runs while the run waits for reconciliation.
            ActivityPhase::OutcomeUnknown { .. } => continue,
        }
        if a.options.schedule_to_close_ms > 0 {
            let at = a
                .scheduled_ms
                .saturating_add(i64::try_from(a.options.schedule_to_close_ms).unwrap_or(i64::MAX));
            timers.push((
                at,
                DueTimer::ActivityScheduleToClose {
                    key: key.clone(),
                    id,
                },
            ));
        }
    }
    let mut dropped = Vec::new();
    leases.retain(|l, expiry| {
        let keep = leasable.contains(l);
        if !keep {
            dropped.push((*l, *expiry));
        }
        keep
    });
    heartbeats.retain(|(id, attempt), _| {
        s.activities.get(id).is_some_and(|a| {
            a.attempt == *attempt && matches!(a.phase, ActivityPhase::Started { .. })
        })
    });
    for (id, at) in &s.timers {
        timers.push((
            *at,
            DueTimer::Timer {
                key: key.clone(),
                id: *id,
            },
        ));
    }
    if let Some(at) = s.run_deadline_ms() {
        timers.push((at, DueTimer::Run { key: key.clone() }));
    }
    (ready, timers, dropped)
}

#[cfg(test)]
mod tests;
