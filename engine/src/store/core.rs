//! Backend-independent projections of run states: the open-run table, the task queues with
//! their in-memory leases, and the timer index.
//!
//! Every backend keeps one [`Core`] and calls [`Core::upsert`] with a run's new state after
//! each append (and for every open run after a restart). The queues and timers are functions
//! of the states alone, so they are rebuilt exactly after a crash; only leases and the
//! attempt deadlines set by [`Core::set_attempt_deadline`] live in memory (losing them means a
//! task is offered again, see the module doc of [`crate::store`]).
//!
//! Cost: each change touches only the entries of one run, `O(k log n)` for a run with `k`
//! open activities and timers among `n` entries. Iteration orders are deterministic
//! (`BTreeMap`/`BTreeSet` throughout).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use crate::event::{CommandSeq, TimeMs, TimeoutKind};
use crate::ids::{RunId, RunKey};
use crate::state::{ActivityPhase, RunState, WorkflowTask};
use crate::store::{DueTimer, Task, TaskKind};

/// How long a worker may hold a started workflow task before it is timed out.
pub const WORKFLOW_TASK_TIMEOUT_MS: i64 = 10_000;

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

/// A task a state makes ready: its queue, visible time and slot.
type ReadyTask = (QueueKey, TimeMs, Slot);

/// A deadline in the timer index.
type Deadline = (TimeMs, DueTimer);

/// What one open run contributes to the indexes.
#[derive(Debug)]
struct RunSlot {
    state: Arc<RunState>,
    /// Tasks the state makes ready (offered unless leased): queue, visible time, task.
    ready: Vec<(QueueKey, TimeMs, Slot)>,
    /// Deadlines the state (and `attempt_deadlines`) imply.
    timers: Vec<(TimeMs, DueTimer)>,
    /// Tasks handed out and not yet released.
    leases: BTreeSet<Slot>,
    /// In-memory deadlines of leased attempts: (activity, attempt) -> (deadline, which).
    attempt_deadlines: BTreeMap<(CommandSeq, u32), (TimeMs, TimeoutKind)>,
}

/// The open-run table with its queues, leases and timers. Not synchronised: the backend
/// holds it under its own lock.
#[derive(Debug, Default)]
pub struct Core {
    runs: BTreeMap<RunKey, RunSlot>,
    queues: BTreeMap<QueueKey, BTreeSet<Entry>>,
    /// Queue entries not yet visible when inserted, for [`Core::next_wakeup_ms`].
    visibility: BTreeSet<Entry>,
    timers: BTreeSet<(TimeMs, DueTimer)>,
    workflow_ids: BTreeMap<(String, String), RunId>,
    /// The latest `now_ms` seen; entries visible by then need no wakeup.
    now_seen_ms: TimeMs,
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
    /// whose lease is gone, so waiting out WORKFLOW_TASK_TIMEOUT_MS would only delay the run.
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
            leases: BTreeSet::new(),
            attempt_deadlines: BTreeMap::new(),
        });
        slot.state = state;
        let (ready, timers) = derive(&slot.state, &mut slot.leases, &mut slot.attempt_deadlines);
        self.timers.extend(timers.iter().cloned());
        let offers: Vec<_> = ready
            .iter()
            .filter(|(_, _, s)| !slot.leases.contains(s))
            .cloned()
            .collect();
        slot.ready = ready;
        slot.timers = timers;
        for (q, visible, s) in offers {
            self.offer(q, visible, key.clone(), s);
        }
    }

    /// Takes the first visible task of a queue and leases it.
    pub fn poll(
        &mut self,
        namespace: &str,
        queue: &str,
        kind: TaskKind,
        now_ms: TimeMs,
    ) -> Option<Task> {
        self.observe(now_ms);
        let q = self
            .queues
            .get_mut(&QueueKey::new(kind, namespace, queue))?;
        let first = q.first()?;
        if first.0 > now_ms {
            return None;
        }
        let entry = q.pop_first()?;
        if q.is_empty() {
            self.queues.remove(&QueueKey::new(kind, namespace, queue));
        }
        self.visibility.remove(&entry);
        let (_, key, slot) = entry;
        if let Some(run) = self.runs.get_mut(&key) {
            run.leases.insert(slot);
        }
        Some(slot.task(&key))
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
        if run.leases.contains(&slot) {
            return false;
        }
        let Some((q, visible, _)) = run.ready.iter().find(|(_, _, s)| *s == slot).cloned() else {
            return false;
        };
        if visible > now_ms {
            return false;
        }
        let entry = (visible, key.clone(), slot);
        let Some(set) = self.queues.get_mut(&q) else {
            return false;
        };
        if !set.remove(&entry) {
            return false;
        }
        if set.is_empty() {
            self.queues.remove(&q);
        }
        self.visibility.remove(&entry);
        run.leases.insert(slot);
        true
    }

    /// Returns a leased task to its queue, if the run's state still offers it.
    pub fn release(&mut self, task: &Task) {
        let (key, slot) = Slot::of(task);
        let Some(run) = self.runs.get_mut(key) else {
            return;
        };
        if !run.leases.remove(&slot) {
            return;
        }
        if let Some((q, visible, _)) = run.ready.iter().find(|(_, _, s)| *s == slot).cloned() {
            self.offer(q, visible, key.clone(), slot);
        }
    }

    /// Sets the in-memory deadline of an activity attempt (replacing an earlier one). Ignored
    /// when the attempt is no longer the activity's current one.
    pub fn set_attempt_deadline(
        &mut self,
        key: &RunKey,
        id: CommandSeq,
        attempt: u32,
        deadline_ms: TimeMs,
        timeout: TimeoutKind,
    ) {
        let Some(run) = self.runs.get_mut(key) else {
            return;
        };
        let current = run.state.activities.get(&id).is_some_and(|a| {
            a.attempt == attempt && !matches!(a.phase, ActivityPhase::OutcomeUnknown { .. })
        });
        if !current {
            return;
        }
        let due = |t: TimeoutKind| DueTimer::ActivityAttempt {
            key: key.clone(),
            id,
            attempt,
            timeout: t,
        };
        if let Some((old_at, old_kind)) = run
            .attempt_deadlines
            .insert((id, attempt), (deadline_ms, timeout))
        {
            let old = (old_at, due(old_kind));
            self.timers.remove(&old);
            run.timers.retain(|t| *t != old);
        }
        let new = (deadline_ms, due(timeout));
        run.timers.push(new.clone());
        self.timers.insert(new);
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
    pub fn next_wakeup_ms(&self) -> Option<TimeMs> {
        let t = self.timers.first().map(|(at, _)| *at);
        let v = self.visibility.first().map(|(at, _, _)| *at);
        match (t, v) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Tasks ready (offered, not leased) in a queue at `now_ms`; for tests and metrics.
    pub fn ready_len(&self, namespace: &str, queue: &str, kind: TaskKind, now_ms: TimeMs) -> usize {
        self.queues
            .get(&QueueKey::new(kind, namespace, queue))
            .map_or(0, |q| q.iter().take_while(|e| e.0 <= now_ms).count())
    }

    fn observe(&mut self, now_ms: TimeMs) {
        self.now_seen_ms = self.now_seen_ms.max(now_ms);
        while self.visibility.first().is_some_and(|e| e.0 <= now_ms) {
            self.visibility.pop_first();
        }
    }

    fn offer(&mut self, q: QueueKey, visible: TimeMs, key: RunKey, slot: Slot) {
        let entry = (visible, key, slot);
        if visible > self.now_seen_ms {
            self.visibility.insert(entry.clone());
        }
        self.queues.entry(q).or_default().insert(entry);
    }

    fn unindex(
        &mut self,
        key: &RunKey,
        ready: &[(QueueKey, TimeMs, Slot)],
        timers: &[(TimeMs, DueTimer)],
    ) {
        for (q, visible, slot) in ready {
            let entry = (*visible, key.clone(), *slot);
            self.visibility.remove(&entry);
            if let Some(set) = self.queues.get_mut(q) {
                set.remove(&entry);
                if set.is_empty() {
                    self.queues.remove(q);
                }
            }
        }
        for t in timers {
            self.timers.remove(t);
        }
    }
}

/// What a state implies: its ready tasks and its deadlines. Drops leases and attempt
/// deadlines the state has moved past.
fn derive(
    s: &RunState,
    leases: &mut BTreeSet<Slot>,
    attempt_deadlines: &mut BTreeMap<(CommandSeq, u32), (TimeMs, TimeoutKind)>,
) -> (Vec<ReadyTask>, Vec<Deadline>) {
    let key = &s.key;
    let mut ready = Vec::new();
    let mut timers = Vec::new();
    // Tasks that may stay leased: the scheduled workflow task and every Ready attempt (also
    // while parked on a budget or cancelling: the worker that holds it still holds it).
    let mut leasable = BTreeSet::new();
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
            ready.push((
                QueueKey::new(TaskKind::Workflow, &key.namespace, &s.task_queue),
                (*not_before_ms).max(*since_ms),
                slot,
            ));
        }
        WorkflowTask::Started {
            started_seq,
            since_ms,
            ..
        } => {
            timers.push((
                since_ms.saturating_add(WORKFLOW_TASK_TIMEOUT_MS),
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
                if a.cancel_requested && !attempt_deadlines.contains_key(&(id, a.attempt)) {
                    // Cancelling, and no worker is known to hold the attempt (none was handed
                    // out by this process, e.g. after a restart): it is never offered and
                    // nothing will report on it, so it is due now and the server confirms the
                    // cancellation. Without this the workflow waited forever (issue 10).
                    timers.push((
                        0,
                        DueTimer::ActivityAttempt {
                            key: key.clone(),
                            id,
                            attempt: a.attempt,
                            timeout: TimeoutKind::StartToClose,
                        },
                    ));
                }
                if !a.cancel_requested && s.budget_exceeded.is_none() {
                    let queue = if a.options.task_queue.is_empty() {
                        &s.task_queue
                    } else {
                        &a.options.task_queue
                    };
                    ready.push((
                        QueueKey::new(TaskKind::Activity, &key.namespace, queue),
                        *visible_ms,
                        slot,
                    ));
                }
            }
            // Only `write` attempts are recorded as started; a lost one needs reconciliation.
            ActivityPhase::Started { since_ms, .. } => {
                let stc = if a.options.start_to_close_ms > 0 {
                    a.options.start_to_close_ms
                } else {
                    ACTIVITY_START_TO_CLOSE_DEFAULT_MS
                };
                let at = since_ms.saturating_add(i64::try_from(stc).unwrap_or(i64::MAX));
                timers.push((
                    at,
                    DueTimer::ActivityAttempt {
                        key: key.clone(),
                        id,
                        attempt: a.attempt,
                        timeout: TimeoutKind::StartToClose,
                    },
                ));
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
    leases.retain(|l| leasable.contains(l));
    attempt_deadlines.retain(|(id, attempt), _| {
        s.activities.get(id).is_some_and(|a| {
            a.attempt == *attempt && !matches!(a.phase, ActivityPhase::OutcomeUnknown { .. })
        })
    });
    for ((id, attempt), (at, timeout)) in attempt_deadlines.iter() {
        timers.push((
            *at,
            DueTimer::ActivityAttempt {
                key: key.clone(),
                id: *id,
                attempt: *attempt,
                timeout: *timeout,
            },
        ));
    }
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
    (ready, timers)
}

#[cfg(test)]
mod tests;
