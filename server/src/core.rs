//! What every service shares: the store, the clock, wake-ups, and the one way to change a
//! run (`Core::update`: read state, decide events, append at the expected seq, retry on
//! conflict, then wake whoever waits).

use std::collections::HashMap;
use std::sync::Arc;

use parking_lot::Mutex;
use steadfast_engine::clock::Clock;
use steadfast_engine::event::{Event, WorkflowTaskScheduled, WorkflowTaskStarted};
use steadfast_engine::payload::Payload;
use steadfast_engine::state::{ActivityPhase, ApplyError, RunState};
use steadfast_engine::store::core::WORKFLOW_TASK_TIMEOUT_MS_DEFAULT;
use steadfast_engine::store::limits::HistoryLimits;
use steadfast_engine::store::{self, AppendRequest, Appended, RequestKey, Store, TaskKind};
use steadfast_engine::{EventRecord, RunKey};
use tonic::Status;

use crate::notify::Notifier;

/// How often an update retries after losing an append race.
const UPDATE_ATTEMPTS_MAX: usize = 20;

/// Maps a store error to a gRPC status.
pub fn status(e: store::Error) -> Status {
    use store::Error as E;
    match e {
        E::Conflict { .. } | E::ScheduleConflict { .. } => Status::aborted(e.to_string()),
        E::WorkflowIdInUse { .. } | E::Duplicate { .. } => Status::already_exists(e.to_string()),
        E::NotFound(k) => Status::not_found(format!(
            "run {} not found in namespace {}",
            k.run_id,
            crate::validate::quote(&k.namespace)
        )),
        E::Illegal { .. } => Status::failed_precondition(e.to_string()),
        E::HistoryLimit { .. } => Status::resource_exhausted(e.to_string()),
        E::Invalid(_) => Status::invalid_argument(e.to_string()),
        E::Corrupt { .. } => Status::data_loss(e.to_string()),
        E::Unavailable(_) => Status::unavailable(e.to_string()),
    }
}

/// Why [`Core::update_once`] appended nothing.
#[derive(Debug)]
pub enum Updated {
    /// Refused; the status says why.
    Refused(Status),
    /// The request id was used before: the first request appended to `run_id` at `seq`.
    Duplicate {
        /// The run.
        run_id: steadfast_engine::ids::RunId,
        /// The first seq of the first request's append.
        seq: u64,
    },
}

impl From<Status> for Updated {
    fn from(s: Status) -> Updated {
        Updated::Refused(s)
    }
}

/// What a sticky worker has of a run: the worker id and the last seq it was sent.
#[derive(Debug, Clone)]
pub struct Sticky {
    /// Worker id.
    pub worker: String,
    /// Last seq it has seen.
    pub last_seq: u64,
    /// The WorkflowTaskStarted record of the task it was last sent (at `last_seq`), when
    /// known: a completion's fence is checked against it without a read.
    pub handed: Option<EventRecord>,
    /// Durable records right after `last_seq` that this server appended for the worker's
    /// own task completion (its command events), kept so that the run's next task for the
    /// same worker is sent from memory instead of read back. Small by construction (see
    /// [`Sticky::keep_after`]); empty when not kept.
    pub after: Vec<EventRecord>,
}

/// Most payload bytes [`Sticky::after`] keeps for one run.
const STICKY_AFTER_BYTES_MAX: usize = 4096;
/// Most records [`Sticky::after`] keeps for one run.
const STICKY_AFTER_RECORDS_MAX: usize = 16;

impl Sticky {
    /// A worker that has seen the run up to `last_seq`.
    pub fn new(worker: impl Into<String>, last_seq: u64) -> Sticky {
        Sticky {
            worker: worker.into(),
            last_seq,
            handed: None,
            after: Vec::new(),
        }
    }

    /// The durable record at `seq` with `hash` if this entry holds it (the task last handed
    /// out, or the records after it).
    pub fn record(&self, seq: u64, hash: &steadfast_engine::payload::Hash) -> Option<&EventRecord> {
        self.handed
            .iter()
            .chain(&self.after)
            .find(|r| r.seq == seq && r.hash == *hash)
    }

    /// Keeps `records` (durable, appended by `worker`'s completion of the task it was sent up
    /// to `last_seq`) when they follow `last_seq` and are small; otherwise keeps none.
    pub fn keep_after(&mut self, worker: &str, records: &[EventRecord]) {
        self.after.clear();
        if self.worker != worker
            || records.len() > STICKY_AFTER_RECORDS_MAX
            || records.first().map(|r| r.seq) != Some(self.last_seq + 1)
        {
            return;
        }
        let mut kept = records.to_vec();
        let bytes: usize = kept
            .iter_mut()
            .flat_map(|r| r.event.payloads_mut())
            .map(|p| p.data.len())
            .sum();
        if bytes <= STICKY_AFTER_BYTES_MAX {
            self.after = kept;
        }
    }
}

/// The records `first_seq..=last_seq` from `kept` (a [`Sticky::after`]) followed by
/// `appended`, when together they hold every one of them in order; `None` when any is
/// missing (then they are read from the store).
pub fn records_in_memory<'a>(
    kept: &'a [EventRecord],
    appended: &'a [EventRecord],
    first_seq: u64,
    last_seq: u64,
) -> Option<Vec<&'a EventRecord>> {
    let mut out = Vec::new();
    let mut next = first_seq;
    for r in kept.iter().chain(appended) {
        if r.seq < next {
            continue;
        }
        if r.seq != next || r.seq > last_seq {
            break;
        }
        out.push(r);
        next += 1;
    }
    (next == last_seq + 1).then_some(out)
}

/// What the heartbeat rate limit remembers of one activity.
#[derive(Debug, Clone, Copy)]
pub struct HeartbeatRecorded {
    /// When its details were last recorded.
    pub at_ms: i64,
    /// The attempt `forced` counts for.
    pub attempt: u32,
    /// Records that attempt forced (`HeartbeatActivityTaskRequest.record`).
    pub forced: u32,
}

/// Shared server state.
pub struct Core {
    /// The store.
    pub store: Arc<dyn Store>,
    /// Time.
    pub clock: Arc<dyn Clock>,
    /// Wake-ups.
    pub notify: Notifier,
    /// Which worker caches which run (an optimisation only: losing it costs a replay).
    pub sticky: Mutex<HashMap<RunKey, Sticky>>,
    /// Last time heartbeat details were recorded per activity, and how many forced records
    /// (`record`) which attempt asked for (a rate limit only: losing it records one more
    /// ActivityProgress).
    pub heartbeat_recorded: Mutex<HashMap<(RunKey, u32), HeartbeatRecorded>>,
    /// The history limits the store enforces (to warn workflows before them).
    pub limits: HistoryLimits,
    /// Longest delay before a held run's workflow task is offered again.
    pub held_backoff_max_ms: u64,
    /// How long a worker may hold a workflow task; recorded with each WorkflowTaskStarted.
    pub workflow_task_timeout_ms: u64,
    /// What callers may ask of this server (`--limit NAME=VALUE`).
    pub caller_limits: crate::limits::Limits,
    /// Runs whose children or outgoing signals need work (an optimisation: see
    /// [`crate::family`]).
    pub relay: crate::family::Relay,
    /// Queries waiting for a worker's answer (an optimisation: nothing about a query is
    /// durable; see [`crate::query`]).
    pub queries: crate::query::Queries,
    /// Upgrade checks waiting for a check-mode worker's report (an optimisation, like
    /// queries; see [`crate::service::check`]).
    pub checks: crate::service::check::Checks,
    /// See [`Settings::traceparent_to_workers`].
    pub traceparent_to_workers: bool,
    /// The traceparent each run started with, cached for dispatch (read only when
    /// `traceparent_to_workers`).
    pub run_traceparents: crate::traces::given::RunTraceparents,
    /// Running attempts' live output for watchers (ephemeral, this node only; see
    /// [`crate::live`]).
    pub live: crate::live::LiveOutput,
    /// Workflow long polls waiting on this node, for a new run's first task (see
    /// [`crate::sync_match`]).
    pub waiting_polls: crate::sync_match::Waiters,
}

/// Server settings that change how runs are driven (flags and env of `steadfast server`).
#[derive(Debug, Clone, Copy)]
pub struct Settings {
    /// The history limits the store was opened with.
    pub limits: HistoryLimits,
    /// Longest delay before a held run's workflow task is offered again.
    pub held_backoff_max_ms: u64,
    /// How long a worker may hold a workflow task (`--workflow-task-timeout`).
    pub workflow_task_timeout_ms: u64,
    /// How often to look again for work a crash interrupted (continue-as-new successors,
    /// children, signals) while serving; `None` looks only at start. Several nodes over one
    /// database set it: a node that died and never comes back leaves its work to the others.
    pub reconcile_period: Option<std::time::Duration>,
    /// What callers may ask of this server (`--limit NAME=VALUE`).
    pub caller_limits: crate::limits::Limits,
    /// Give workers each activity's W3C traceparent (only when traces are exported:
    /// `--otlp-endpoint`; otherwise the span it names never reaches a collector).
    pub traceparent_to_workers: bool,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            limits: HistoryLimits::default(),
            held_backoff_max_ms: crate::retry::HELD_BACKOFF_MAX_MS_DEFAULT,
            workflow_task_timeout_ms: WORKFLOW_TASK_TIMEOUT_MS_DEFAULT,
            reconcile_period: None,
            caller_limits: crate::limits::Limits::default(),
            traceparent_to_workers: false,
        }
    }
}

/// A decision about a run: `Ok(None)` means "nothing to append".
pub type Decision = Result<Option<Vec<Event>>, Status>;

impl Core {
    /// A core over `store`, with the default settings.
    pub fn new(store: Arc<dyn Store>, clock: Arc<dyn Clock>) -> Arc<Core> {
        Core::with_settings(store, clock, Settings::default())
    }

    /// A core over `store` with `settings`.
    pub fn with_settings(
        store: Arc<dyn Store>,
        clock: Arc<dyn Clock>,
        settings: Settings,
    ) -> Arc<Core> {
        Arc::new(Core {
            limits: settings.limits,
            held_backoff_max_ms: settings.held_backoff_max_ms,
            workflow_task_timeout_ms: settings.workflow_task_timeout_ms,
            caller_limits: settings.caller_limits,
            traceparent_to_workers: settings.traceparent_to_workers,
            store,
            clock,
            notify: Notifier::default(),
            sticky: Mutex::default(),
            heartbeat_recorded: Mutex::default(),
            relay: crate::family::Relay::default(),
            queries: crate::query::Queries::default(),
            checks: crate::service::check::Checks::default(),
            run_traceparents: Default::default(),
            live: crate::live::LiveOutput::default(),
            waiting_polls: crate::sync_match::Waiters::default(),
        })
    }

    /// The WorkflowTaskStarted that hands the task scheduled at `scheduled_seq` to `worker`,
    /// with this server's workflow-task timeout.
    pub fn workflow_task_started(&self, scheduled_seq: u64, worker: &str) -> Event {
        Event::WorkflowTaskStarted(WorkflowTaskStarted {
            scheduled_seq,
            worker: worker.to_string(),
            timeout_ms: self.workflow_task_timeout_ms,
        })
    }

    /// Now, in ms since the epoch.
    pub fn now(&self) -> i64 {
        self.clock.now_ms()
    }

    /// The run's state, or NOT_FOUND.
    pub async fn state(&self, key: &RunKey) -> Result<Arc<RunState>, Status> {
        self.store
            .run_state(key)
            .await
            .map_err(status)?
            .ok_or_else(|| {
                Status::not_found(format!(
                    "run {} not found in namespace {}",
                    key.run_id,
                    crate::validate::quote(&key.namespace)
                ))
            })
    }

    /// Reads the state, lets `decide` choose events, appends them at the expected seq (adding
    /// a WorkflowTaskScheduled when they leave the code with unseen events), and retries from
    /// a fresh state when another writer got there first. Returns what was appended.
    pub async fn update(
        &self,
        key: &RunKey,
        wait_durable: bool,
        decide: impl FnMut(&RunState, i64) -> Decision,
    ) -> Result<Option<Appended>, Status> {
        self.update_with(key, wait_durable, true, decide).await
    }

    /// [`Core::update`], optionally without waking activity pollers for the activities the
    /// append schedules: the caller hands them out itself (eager dispatch) and wakes pollers
    /// for the rest with [`Core::activities_ready`].
    pub async fn update_with(
        &self,
        key: &RunKey,
        wait_durable: bool,
        wake_activity_pollers: bool,
        decide: impl FnMut(&RunState, i64) -> Decision,
    ) -> Result<Option<Appended>, Status> {
        self.update_request(
            key,
            wait_durable,
            wake_activity_pollers,
            None,
            None,
            None,
            decide,
        )
        .await
        .map_err(|e| match e {
            Updated::Refused(s) => s,
            Updated::Duplicate { .. } => Status::internal("a duplicate without a request id"),
        })
    }

    /// [`Core::update`] at most once per request id ([`Store::append_once`]): a retry of the
    /// same request within the window appends nothing and is told so
    /// ([`Updated::Duplicate`]), so the caller can answer what the first one answered.
    pub async fn update_once(
        &self,
        key: &RunKey,
        request: RequestKey,
        decide: impl FnMut(&RunState, i64) -> Decision,
    ) -> Result<Option<Appended>, Updated> {
        self.update_request(key, true, true, Some(request), None, None, decide)
            .await
    }

    /// [`Core::update`] with the records stamped `time_ms` instead of now (and `decide` given
    /// that time): a held run's transient workflow-task attempt records, when it completes,
    /// the WorkflowTaskStarted its worker was sent at hand-out, and the code's `now()` was
    /// that time. Durable before it returns.
    pub async fn update_stamped(
        &self,
        key: &RunKey,
        time_ms: i64,
        decide: impl FnMut(&RunState, i64) -> Decision,
    ) -> Result<Option<Appended>, Status> {
        self.update_request(key, true, true, None, Some(time_ms), None, decide)
            .await
            .map_err(|e| match e {
                Updated::Refused(s) => s,
                Updated::Duplicate { .. } => Status::internal("a duplicate without a request id"),
            })
    }

    /// [`Core::update`] that, when the append schedules the run's next workflow task and
    /// `eager` would take it, starts that task for `eager`'s worker in the same append
    /// (eager workflow task): the caller hands it out once the append is durable.
    pub async fn update_eager(
        &self,
        key: &RunKey,
        eager: Option<&EagerStart>,
        decide: impl FnMut(&RunState, i64) -> Decision,
    ) -> Result<Option<Appended>, Status> {
        self.update_request(key, true, true, None, None, eager, decide)
            .await
            .map_err(|e| match e {
                Updated::Refused(s) => s,
                Updated::Duplicate { .. } => Status::internal("a duplicate without a request id"),
            })
    }

    #[allow(clippy::too_many_arguments)]
    async fn update_request(
        &self,
        key: &RunKey,
        wait_durable: bool,
        wake_activity_pollers: bool,
        request: Option<RequestKey>,
        stamp: Option<i64>,
        eager: Option<&EagerStart>,
        decide: impl FnMut(&RunState, i64) -> Decision,
    ) -> Result<Option<Appended>, Updated> {
        use tracing::Instrument;
        // Every log line about a run change carries the run, its type and the seq appended
        // at (`--log-format json` shows them as fields).
        let span = tracing::debug_span!(
            "run_update",
            run = %key.run_id,
            namespace = %key.namespace,
            workflow_type = tracing::field::Empty,
            seq = tracing::field::Empty,
        );
        self.update_request_in(
            key,
            wait_durable,
            wake_activity_pollers,
            request,
            stamp,
            eager,
            decide,
            &span,
        )
        .instrument(span.clone())
        .await
    }

    #[allow(clippy::too_many_arguments)]
    async fn update_request_in(
        &self,
        key: &RunKey,
        wait_durable: bool,
        wake_activity_pollers: bool,
        request: Option<RequestKey>,
        stamp: Option<i64>,
        eager: Option<&EagerStart>,
        mut decide: impl FnMut(&RunState, i64) -> Decision,
        span: &tracing::Span,
    ) -> Result<Option<Appended>, Updated> {
        for _ in 0..UPDATE_ATTEMPTS_MAX {
            let state = self.state(key).await?;
            span.record("workflow_type", state.workflow_type.as_str());
            span.record("seq", state.last_seq + 1);
            let now = stamp.unwrap_or_else(|| self.now());
            let Some(mut events) = decide(&state, now)? else {
                return Ok(None);
            };
            if events.is_empty() {
                return Ok(None);
            }
            let after = simulate(&state, &events, now)
                .map_err(|e| Status::failed_precondition(e.to_string()))?;
            if after.needs_workflow_task() {
                events.push(Event::WorkflowTaskScheduled(WorkflowTaskScheduled {
                    task_queue: state.task_queue.clone(),
                    attempt: 1,
                    not_before_ms: 0,
                }));
                if let Some(e) = eager.filter(|e| e.takes(&after)) {
                    let scheduled_seq = state.last_seq + events.len() as u64;
                    events.push(self.workflow_task_started(scheduled_seq, &e.worker));
                }
            }
            let req = AppendRequest {
                key: key.clone(),
                expected_next_seq: state.last_seq + 1,
                events,
                time_ms: now,
                wait_durable,
            };
            let appended = match &request {
                Some(q) => self.store.append_once(req, q.clone()).await,
                None => self.store.append(req).await,
            };
            match appended {
                Ok(a) => {
                    tracing::debug!(events = a.records.len(), "run updated");
                    self.after_append_with(&a, wake_activity_pollers);
                    return Ok(Some(a));
                }
                Err(store::Error::Conflict { .. }) => continue,
                Err(store::Error::Duplicate { run_id, seq }) => {
                    return Err(Updated::Duplicate { run_id, seq });
                }
                Err(e) => return Err(Updated::Refused(status(e))),
            }
        }
        Err(Updated::Refused(Status::aborted(format!(
            "run {key} is changing too fast; try again"
        ))))
    }

    /// Whether the run should continue as new: its history is past the soft limit, where new
    /// activities, timers and signal waits are refused ([`steadfast_engine::store::limits`]).
    pub fn continue_as_new_suggested(&self, s: &RunState) -> bool {
        self.limits
            .continue_as_new_suggested(s.last_seq, s.history_bytes)
    }

    /// Whether activity `id` of `s` is open and no worker holds it: queued, backing off
    /// before a retry, parked on the budget, or waiting for a human's approval. A cancellation has nothing to stop there, so
    /// it is recorded at once instead of waiting for a heartbeat that will never come.
    /// Read from the durable state alone: every hand-out is recorded (ActivityStarted)
    /// before the attempt leaves, so a Ready attempt is held by no worker, on any node and
    /// after any restart.
    pub fn is_undispatched(s: &RunState, id: u32) -> bool {
        s.activities.get(&id).is_some_and(|a| {
            matches!(
                a.phase,
                ActivityPhase::Ready { .. } | ActivityPhase::AwaitingApproval { .. }
            )
        })
    }

    /// Creates a run (the events must begin with RunStarted), at most once per request id
    /// when one is given.
    pub async fn create(
        &self,
        key: &RunKey,
        events: Vec<Event>,
        request: Option<RequestKey>,
    ) -> Result<Appended, store::Error> {
        let req = AppendRequest {
            key: key.clone(),
            expected_next_seq: 1,
            events,
            time_ms: self.now(),
            wait_durable: true,
        };
        let a = match request {
            Some(q) => self.store.append_once(req, q).await?,
            None => self.store.append(req).await?,
        };
        self.after_append(&a);
        Ok(a)
    }

    /// Wakes pollers, watchers and the timer loop after an append.
    pub fn after_append(&self, a: &Appended) {
        self.after_append_with(a, true)
    }

    /// Wakes one activity poller per activity scheduled in `a` except those in `taken`.
    pub fn activities_ready(&self, a: &Appended, taken: &[u32]) {
        for r in &a.records {
            if let Event::ActivityScheduled(e) = &r.event
                && !taken.contains(&e.command_seq)
            {
                self.notify.task_ready(
                    &a.state.key.namespace,
                    &e.options.task_queue,
                    TaskKind::Activity,
                );
            }
        }
    }

    fn after_append_with(&self, a: &Appended, wake_activity_pollers: bool) {
        let s = &a.state;
        for r in &a.records {
            match &r.event {
                Event::WorkflowTaskScheduled(e) => {
                    self.notify
                        .task_ready(&s.key.namespace, &e.task_queue, TaskKind::Workflow)
                }
                Event::ActivityScheduled(e) if wake_activity_pollers => self.notify.task_ready(
                    &s.key.namespace,
                    &e.options.task_queue,
                    TaskKind::Activity,
                ),
                Event::ActivityFailed(_)
                | Event::ActivityTimedOut(_)
                | Event::ActivityReconciled(_)
                | Event::ActivityApproved(_)
                | Event::BudgetUpdated(_) => {
                    for act in s.activities.values() {
                        self.notify.task_ready(
                            &s.key.namespace,
                            &act.options.task_queue,
                            TaskKind::Activity,
                        );
                    }
                }
                _ => {}
            }
        }
        if !s.is_open() {
            self.sticky.lock().remove(&s.key);
        }
        if crate::family::needs_relay(&a.records, s) {
            self.relay.push(&s.key);
        }
        self.forget_ended(a);
        self.notify.timers_changed();
        self.notify.run_changed(&s.key, s.last_seq);
    }

    /// Drops what `heartbeat_recorded` holds about activities that this append ended, so
    /// that it holds only what is in flight.
    fn forget_ended(&self, a: &Appended) {
        let s = &a.state;
        let (_, activities) = ended(&a.records, s);
        if !activities.is_empty() {
            let mut h = self.heartbeat_recorded.lock();
            for id in activities {
                h.remove(&(s.key.clone(), id));
            }
        }
        // A run that closed with attempts in flight (terminated, timed out, completed
        // without waiting for them): their workers may never report.
        if !s.is_open() && !s.activities.is_empty() {
            self.heartbeat_recorded
                .lock()
                .retain(|(k, _), _| k != &s.key);
        }
    }

    /// Inlines blob payloads of a record of a run in `namespace` for sending (its blobs are
    /// that namespace's).
    pub async fn inline(
        &self,
        namespace: &str,
        mut rec: EventRecord,
    ) -> Result<EventRecord, Status> {
        for p in rec.event.payloads_mut() {
            if p.blob.is_some() {
                *p = store::inline_payload(self.store.as_ref(), namespace, p)
                    .await
                    .map_err(status)?;
            }
        }
        Ok(rec)
    }

    /// Inlines one payload of a run in `namespace`.
    pub async fn inline_payload(&self, namespace: &str, p: &Payload) -> Result<Payload, Status> {
        store::inline_payload(self.store.as_ref(), namespace, p)
            .await
            .map_err(status)
    }

    /// Reads `[from, to]` of a run's history, inlined.
    pub async fn history(
        &self,
        key: &RunKey,
        from: u64,
        to: u64,
    ) -> Result<Vec<EventRecord>, Status> {
        let mut out = Vec::new();
        let mut next = from.max(1);
        while next <= to {
            let page = self
                .store
                .read_history(key, next, (to - next + 1).min(1000) as usize)
                .await
                .map_err(status)?;
            if page.is_empty() {
                break;
            }
            for r in page {
                next = r.seq + 1;
                out.push(self.inline(&key.namespace, r).await?);
            }
        }
        Ok(out)
    }
}

/// What `records` ended, given the state after them: the (activity, attempt) pairs whose
/// attempt is over, and the activities that closed.
fn ended(records: &[EventRecord], s: &RunState) -> (Vec<(u32, u32)>, Vec<u32>) {
    let mut attempts = Vec::new();
    let mut activities = Vec::new();
    for r in records {
        let (id, attempt) = match &r.event {
            Event::ActivityCompleted(e) => (e.command_seq, Some(e.attempt)),
            Event::ActivityFailed(e) => (e.command_seq, Some(e.attempt)),
            Event::ActivityTimedOut(e) => (e.command_seq, Some(e.attempt)),
            Event::ActivityOutcomeUnknown(e) => (e.command_seq, Some(e.attempt)),
            Event::ActivityCancelled(e) => (e.command_seq, None),
            _ => continue,
        };
        attempts.extend(attempt.map(|a| (id, a)));
        if !s.activities.contains_key(&id) {
            activities.push(id);
        }
    }
    (attempts, activities)
}

/// The state after `events`, without storing anything (hashes are not checked by `apply`).
pub fn simulate(state: &RunState, events: &[Event], now: i64) -> Result<RunState, ApplyError> {
    let mut s = state.clone();
    for (i, e) in events.iter().enumerate() {
        let rec = EventRecord {
            seq: state.last_seq + 1 + i as u64,
            time_ms: now,
            hash: [0; 32],
            event: e.clone(),
        };
        s.apply(&rec)?;
    }
    Ok(s)
}

#[cfg(test)]
mod tests {
    use super::*;
    use steadfast_engine::event as ev;

    fn rec(seq: u64, event: Event) -> EventRecord {
        EventRecord {
            seq,
            time_ms: 0,
            hash: [0; 32],
            event,
        }
    }

    fn marker(seq: u64) -> EventRecord {
        rec(
            seq,
            Event::WorkflowTaskScheduled(ev::WorkflowTaskScheduled {
                task_queue: "q".into(),
                attempt: 1,
                not_before_ms: 0,
            }),
        )
    }

    fn seqs(rs: Option<Vec<&EventRecord>>) -> Option<Vec<u64>> {
        rs.map(|rs| rs.iter().map(|r| r.seq).collect())
    }

    #[test]
    fn records_in_memory_only_when_none_is_missing() {
        let kept = vec![marker(5), marker(6), marker(7)];
        let appended = vec![marker(8), marker(9), marker(10)];
        assert_eq!(
            seqs(records_in_memory(&kept, &appended, 5, 10)),
            Some(vec![5, 6, 7, 8, 9, 10])
        );
        // Records before the first wanted are skipped; after the last, ignored.
        assert_eq!(
            seqs(records_in_memory(&kept, &appended, 7, 9)),
            Some(vec![7, 8, 9])
        );
        // A gap (another append came between) or a start before what is kept: read instead.
        assert_eq!(seqs(records_in_memory(&kept, &appended[1..], 5, 10)), None);
        assert_eq!(seqs(records_in_memory(&kept, &appended, 4, 10)), None);
        assert_eq!(seqs(records_in_memory(&[], &appended, 5, 10)), None);
        assert_eq!(seqs(records_in_memory(&[], &appended, 8, 12)), None);
    }

    #[test]
    fn sticky_keeps_only_its_own_small_following_completion() {
        let mut st = Sticky::new("w1", 4);
        st.keep_after("w1", &[marker(5), marker(6)]);
        assert_eq!(st.after.len(), 2);
        // Another worker's completion, or records that do not follow: nothing kept.
        st.keep_after("w2", &[marker(5)]);
        assert!(st.after.is_empty());
        st.keep_after("w1", &[marker(6)]);
        assert!(st.after.is_empty());
        // Too many records, or too many payload bytes: nothing kept.
        let many: Vec<EventRecord> = (5..5 + STICKY_AFTER_RECORDS_MAX as u64 + 1)
            .map(marker)
            .collect();
        st.keep_after("w1", &many);
        assert!(st.after.is_empty());
        let big = rec(
            5,
            Event::ActivityCompleted(ev::ActivityCompleted {
                command_seq: 3,
                attempt: 1,
                result: Payload {
                    encoding: "binary/plain".into(),
                    data: vec![0; STICKY_AFTER_BYTES_MAX + 1],
                    blob: None,
                },
                duration_ms: 0,
                usage: None,
                reconciled: false,
            }),
        );
        st.keep_after("w1", &[big]);
        assert!(st.after.is_empty());
    }

    #[test]
    fn ended_attempts_and_closed_activities() {
        let key = RunKey::new("default", steadfast_engine::RunId::new_v7());
        let started = rec(
            1,
            Event::RunStarted(ev::RunStarted {
                workflow_type: "t".into(),
                workflow_id: "w".into(),
                task_queue: "q".into(),
                input: Payload::default(),
                run_timeout_ms: 0,
                budget: ev::Budget::default(),
                continued_from: None,
                identity: String::new(),
                random_seed: 0,
                parent: None,
                forked_from: None,
                schedule: None,
                traceparent: None,
            }),
        );
        let mut s = RunState::start(key, &started).unwrap();
        // Activity 7 is still open (its attempt 1 timed out into a retry); 8 closed.
        s.activities.insert(
            7,
            steadfast_engine::state::ActivityState {
                activity_type: "a".into(),
                options: Default::default(),
                scheduled_ms: 0,
                scheduled_seq: 2,
                attempt: 2,
                phase: ActivityPhase::Ready { visible_ms: 0 },
                last_failure: None,
                ordinal: 1,
                cancel_requested: false,
                approved: false,
                approved_input_seq: None,
            },
        );
        let records = [
            rec(
                5,
                Event::ActivityTimedOut(ev::ActivityTimedOut {
                    command_seq: 7,
                    attempt: 1,
                    timeout: ev::TimeoutKind::StartToClose,
                    retry_at_ms: Some(10),
                }),
            ),
            rec(
                6,
                Event::ActivityCancelled(ev::ActivityCancelled { command_seq: 8 }),
            ),
            rec(
                7,
                Event::ProgressReported(ev::ProgressReported {
                    command_seq: 3,
                    done: 1,
                    total: 2,
                    message: String::new(),
                }),
            ),
        ];
        assert_eq!(ended(&records, &s), (vec![(7, 1)], vec![8]));
    }
}

/// A worker that would take a run's next workflow task right away (eager workflow task, see
/// `CompleteActivityTaskRequest.eager_workflow_task`): what its poll would ask for.
#[derive(Debug, Clone)]
pub struct EagerStart {
    /// The worker the task is started for.
    pub worker: String,
    /// The task queue it polls.
    pub task_queue: String,
    /// The type keys its workflow poll would read ([`crate::versioning::poll_keys`]): the
    /// same routing rule as a poll, builds included.
    pub keys: Vec<String>,
}

impl EagerStart {
    /// Whether a poll of this worker would get `s`'s next workflow task.
    pub fn takes(&self, s: &RunState) -> bool {
        s.is_open()
            && s.task_queue == self.task_queue
            && self
                .keys
                .contains(&steadfast_engine::store::routing::workflow_task_key(
                    &s.workflow_type,
                    s.routed_build(),
                ))
    }
}
