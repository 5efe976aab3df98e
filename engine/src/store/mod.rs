//! The store: the interface every backend implements, and its shared error type.
//!
//! A store keeps each run's history (append-only, gapless, chained), the run states folded from
//! them, the derived task queues and timers, and content-addressed blobs. Every backend passes
//! the same contract suite ([`contract`]), so that a shared backend (PostgreSQL) can be added
//! without touching the server.
//!
//! Queues and timers are *projections* of the run states: a run whose state says "workflow task
//! scheduled" is in its queue's ready set; an activity in phase Ready is in its queue from its
//! visible time; every deadline the state implies is in the timer index. So they are rebuilt
//! from the history after a crash, and nothing about a run's correctness lives only in memory.
//! Every hand-out is recorded (WorkflowTaskStarted, ActivityStarted) before the task leaves, so
//! what a worker holds and its deadlines are facts of the history. What is held only in memory
//! is an optimisation: the *lease* of a task a poll took but has not started yet (it expires,
//! see [`core::LEASE_MS`]), and the last heartbeat of a started attempt (after a restart its
//! heartbeat deadline counts from the open).

#[doc(hidden)]
pub mod contract;
pub mod core;
pub mod limits;
pub mod routing;
pub mod successor;

use std::sync::Arc;

use async_trait::async_trait;

use crate::event::{CommandSeq, Event, EventRecord, TimeMs, TimeoutKind};
use crate::ids::{RunId, RunKey};
use crate::payload::{Hash, Payload};
use crate::state::{ApplyError, RunState, RunStatus};

/// Most events one history may hold; how appends are refused near and past it (new work at
/// 90%, all but what a run needs to finish past it) is [`limits`]' policy.
pub const HISTORY_EVENTS_MAX: u64 = 100_000;
/// Most bytes one history may hold ([`RunState::history_bytes`]: attrs as stored, plus the
/// length of every blob an event refers to); refused as for [`HISTORY_EVENTS_MAX`].
pub const HISTORY_BYTES_MAX: u64 = 256 * 1024 * 1024;
/// Most events in one append.
pub const APPEND_EVENTS_MAX: usize = 1_000;

/// A store error, grouped by what the caller does next.
#[derive(Debug, Clone, thiserror::Error)]
pub enum Error {
    /// Another writer appended first: re-read the run state and try again.
    #[error(
        "append conflict on run {run}: expected next seq {expected}, the history is at {actual}"
    )]
    Conflict {
        /// The run.
        run: RunKey,
        /// The seq the caller expected to write.
        expected: u64,
        /// The history's next seq.
        actual: u64,
    },
    /// A start for a workflow id that already has an open run (the caller returns that run).
    #[error("workflow id {workflow_id:?} already has an open run {run_id}")]
    WorkflowIdInUse {
        /// The workflow id.
        workflow_id: String,
        /// Its open run.
        run_id: RunId,
    },
    /// The request id was already used by an earlier append (within
    /// [`REQUEST_DEDUP_WINDOW_MS`]): nothing was written; answer what the first one answered.
    #[error("request id already used by run {run_id} (seq {seq})")]
    Duplicate {
        /// The run the first request appended to (or created).
        run_id: RunId,
        /// The first seq the first request's append got.
        seq: u64,
    },
    /// No such run.
    #[error("run {0} not found")]
    NotFound(RunKey),
    /// The events do not fit the run's state; nothing was written.
    #[error("refused for run {run}: {source}")]
    Illegal {
        /// The run.
        run: RunKey,
        /// What the state machine said.
        #[source]
        source: ApplyError,
    },
    /// The history would exceed a limit; nothing was written.
    #[error(
        "[STF-LIMIT] history of run {run} would exceed {limit}: end this run with continue-as-new and carry its state into a fresh run"
    )]
    HistoryLimit {
        /// The run.
        run: RunKey,
        /// Which limit, with its value.
        limit: String,
    },
    /// A request too large or malformed to store.
    #[error("invalid append: {0}")]
    Invalid(String),
    /// Stored data failed verification (C2). Names the run and seq when known.
    #[error("[STF-C2] corruption in run {run:?} at seq {seq:?}: {detail}")]
    Corrupt {
        /// The run, when known.
        run: Option<RunKey>,
        /// The seq, when known.
        seq: Option<u64>,
        /// What failed.
        detail: String,
    },
    /// A schedule was changed (or created, or deleted) since the caller read it: re-read it and
    /// decide again. `actual` 0 = there is no such schedule.
    #[error(
        "schedule {namespace}/{name} is at version {actual}, not {expected}: re-read it and try again"
    )]
    ScheduleConflict {
        /// Namespace.
        namespace: String,
        /// Schedule name.
        name: String,
        /// The version the caller expected (0 = none).
        expected: u64,
        /// The stored version (0 = none).
        actual: u64,
    },
    /// The store cannot serve: an I/O failure, or it was closed. Retry later or restart.
    #[error("store unavailable: {0}")]
    Unavailable(String),
}

/// Events to append to one run.
#[derive(Debug, Clone)]
pub struct AppendRequest {
    /// The run.
    pub key: RunKey,
    /// The seq the first event gets: 1 creates the run (the first event must be RunStarted).
    pub expected_next_seq: u64,
    /// The events, in order.
    pub events: Vec<Event>,
    /// Time stamped on every record.
    pub time_ms: TimeMs,
    /// Wait until the records are durable before returning (C1). `false` is for records whose
    /// loss in a crash is harmless (e.g. WorkflowTaskStarted: a later durable append implies
    /// it, and if none follows the task is simply offered again).
    pub wait_durable: bool,
}

/// How long a request id deduplicates: a retry of a start or a signal with the same
/// request id within this window gets the first answer and writes nothing.
pub const REQUEST_DEDUP_WINDOW_MS: TimeMs = 24 * 3_600_000;
/// Longest request id accepted, in bytes.
pub const REQUEST_ID_BYTES_MAX: usize = 256;

/// Which kind of request a request id deduplicates (each kind has its own ids).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum RequestKind {
    /// StartWorkflow (and the start of signal-with-start).
    Start,
    /// SignalRun.
    Signal,
}

impl RequestKind {
    /// Stable one-byte code (stored in log records and keys: never reuse a number).
    pub fn code(self) -> u8 {
        match self {
            RequestKind::Start => 1,
            RequestKind::Signal => 2,
        }
    }

    /// The kind of a code.
    pub fn from_code(code: u8) -> Option<RequestKind> {
        match code {
            1 => Some(RequestKind::Start),
            2 => Some(RequestKind::Signal),
            _ => None,
        }
    }
}

/// A caller's request id, scoped by the run's namespace and the kind of request.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct RequestKey {
    /// Start or signal.
    pub kind: RequestKind,
    /// The caller's id (non-empty, at most [`REQUEST_ID_BYTES_MAX`] bytes).
    pub id: String,
}

/// What an append wrote.
#[derive(Debug, Clone)]
pub struct Appended {
    /// The records, with their seqs and hashes.
    pub records: Vec<EventRecord>,
    /// The run's state after them.
    pub state: Arc<RunState>,
}

/// Filters of [`Store::list_runs`]; `None` = any.
#[derive(Debug, Clone, Default)]
pub struct RunFilter {
    /// Status.
    pub status: Option<RunStatus>,
    /// Workflow type.
    pub workflow_type: Option<String>,
    /// A [`crate::state::WaitingOn::category`], for open runs.
    pub waiting: Option<String>,
    /// Runs the schedule of this name started.
    pub schedule: Option<String>,
    /// Workflow id (every run of it: open, closed, forks that kept it).
    pub workflow_id: Option<String>,
    /// Runs whose `started_ms` is at or after this time.
    pub started_after_ms: Option<TimeMs>,
    /// Runs whose `started_ms` is before this time.
    pub started_before_ms: Option<TimeMs>,
    /// Runs pinned to this worker build ([`RunState::pinned_build`]).
    pub build: Option<String>,
    /// Runs carrying every one of these search attributes with exactly this value.
    pub attributes: Vec<(String, crate::search::SearchValue)>,
    /// Runs where an activity of this type failed its last attempt
    /// ([`RunState::failed_activity_types`]).
    pub failed_activity: Option<String>,
    /// Runs whose [`crate::search::summary`] holds every word of this text (ignoring case).
    pub text: Option<String>,
    /// Forks of this run (its id in their [`RunState::forked_from`]): how the original of a
    /// `run fork` / `run reset` finds its forks.
    pub forked_from: Option<RunId>,
}

impl RunFilter {
    /// Whether a run matches the filters a state answers by itself (workflow id, start time,
    /// search attributes, failed activity, text); status, type, waiting and schedule are
    /// checked where they are indexed.
    pub fn matches_id_and_time(&self, s: &RunState) -> bool {
        self.workflow_id
            .as_ref()
            .is_none_or(|w| s.workflow_id == *w)
            && self.started_after_ms.is_none_or(|t| s.started_ms >= t)
            && self.started_before_ms.is_none_or(|t| s.started_ms < t)
            && self
                .build
                .as_ref()
                .is_none_or(|b| s.pinned_build.as_ref() == Some(b))
            && self
                .attributes
                .iter()
                .all(|(n, v)| s.search_attributes.get(n) == Some(v))
            && self
                .failed_activity
                .as_ref()
                .is_none_or(|t| s.failed_activity_types.contains(t))
            && self
                .text
                .as_ref()
                .is_none_or(|q| crate::search::text_matches(s, q))
            && self
                .forked_from
                .is_none_or(|f| s.forked_from.as_ref().is_some_and(|r| r.run_id == f))
    }
}

/// Which queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TaskKind {
    /// Workflow tasks.
    Workflow,
    /// Activity tasks.
    Activity,
}

/// A task taken from a queue. It is leased (not offered again) until the run's state moves on,
/// it is released, or its lease expires ([`core::LEASE_MS`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Task {
    /// The run's scheduled workflow task.
    Workflow {
        /// The run.
        key: RunKey,
        /// Seq of its WorkflowTaskScheduled.
        scheduled_seq: u64,
    },
    /// One attempt of an activity.
    Activity {
        /// The run.
        key: RunKey,
        /// Activity id.
        id: CommandSeq,
        /// Attempt.
        attempt: u32,
    },
}

/// A deadline that has come: the server appends the event it implies.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum DueTimer {
    /// A workflow timer fires.
    Timer {
        /// The run.
        key: RunKey,
        /// Timer id.
        id: CommandSeq,
    },
    /// An activity attempt handed to a worker ran out of time (start-to-close or heartbeat).
    ActivityAttempt {
        /// The run.
        key: RunKey,
        /// Activity id.
        id: CommandSeq,
        /// Attempt.
        attempt: u32,
        /// Which timeout.
        timeout: TimeoutKind,
    },
    /// An activity ran out of total time.
    ActivityScheduleToClose {
        /// The run.
        key: RunKey,
        /// Activity id.
        id: CommandSeq,
    },
    /// A worker holding a workflow task went silent.
    WorkflowTask {
        /// The run.
        key: RunKey,
        /// Seq of WorkflowTaskStarted.
        started_seq: u64,
    },
    /// The run timeout elapsed.
    Run {
        /// The run.
        key: RunKey,
    },
}

/// Numbers for benchmarks and `steadfast server` logs.
#[derive(Debug, Clone, Default)]
pub struct StoreStats {
    /// Records appended since open.
    pub records: u64,
    /// Log syncs since open.
    pub syncs: u64,
    /// Open runs in memory.
    pub open_runs: u64,
    /// The counters of the store's own event log (records per sync among them); `None` for a
    /// store without one.
    pub log: Option<crate::log::LogStats>,
}

/// The store interface. Implementations: [`crate::embedded::EmbeddedStore`].
#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// Appends events to a run at `expected_next_seq`. The events are validated against the
    /// run's state first (an illegal one refuses the whole append, nothing is written), then
    /// chained, written and, with `wait_durable`, synced before this returns. A RunStarted with
    /// a workflow id that has an open run is refused with [`Error::WorkflowIdInUse`].
    async fn append(&self, req: AppendRequest) -> Result<Appended, Error>;

    /// [`Store::append`], at most once per request id: if an append with the same request
    /// (kind and id, in the run's namespace) was made within [`REQUEST_DEDUP_WINDOW_MS`] of
    /// `req.time_ms`, nothing is written and [`Error::Duplicate`] names it. The request id is
    /// stored with the append, atomically and durably, so this holds across restarts.
    async fn append_once(&self, req: AppendRequest, request: RequestKey)
    -> Result<Appended, Error>;

    /// The run's current state.
    async fn run_state(&self, key: &RunKey) -> Result<Option<Arc<RunState>>, Error>;

    /// The open run of a workflow id.
    async fn open_run_for_workflow_id(
        &self,
        namespace: &str,
        workflow_id: &str,
    ) -> Result<Option<RunId>, Error>;

    /// Runs of a namespace, newest first, after `after` (a run id from the previous page).
    async fn list_runs(
        &self,
        namespace: &str,
        filter: &RunFilter,
        after: Option<RunId>,
        limit: usize,
        now_ms: TimeMs,
    ) -> Result<Vec<Arc<RunState>>, Error>;

    /// Up to `limit` records from `from_seq`, verified against the chain; corruption is an
    /// error naming the run and seq, never a shorter page.
    async fn read_history(
        &self,
        key: &RunKey,
        from_seq: u64,
        limit: usize,
    ) -> Result<Vec<EventRecord>, Error>;

    /// Re-checks a run's whole history where the backend keeps its record (the embedded
    /// store: the log, not sled's copy): gapless from seq 1, every record chained to the one
    /// before from the run's genesis, and ending where the run's state says it ends. Damage
    /// is [`Error::Corrupt`] naming the run and the first bad seq; an unknown run is
    /// [`Error::NotFound`]. The default reads the history through [`Store::read_history`]
    /// (which verifies every page) and checks its seqs and its end ([`verify_by_reading`]).
    async fn verify_history(&self, key: &RunKey) -> Result<VerifiedHistory, Error> {
        verify_by_reading(self, key).await
    }

    /// Takes the first visible task of a queue among `types` and leases it: workflow types for
    /// a workflow queue, activity types for an activity queue; any type when `types` is empty.
    /// Tasks of other types are neither leased nor moved, so however many of them are ahead (a
    /// type no live worker runs), a poll for the types that are served gets its task at once.
    async fn poll_task(
        &self,
        namespace: &str,
        queue: &str,
        kind: TaskKind,
        types: &[String],
        now_ms: TimeMs,
    ) -> Result<Option<Task>, Error>;

    /// The task queues of `namespace` that hold work, at most `limit`, in name order (the
    /// server's `task_queues_per_namespace_max`).
    async fn queues_with_work(&self, namespace: &str, limit: usize) -> Result<Vec<String>, Error>;

    /// Leases one specific task if it is offered and visible (eager dispatch); false when it
    /// is not offered (taken by a poller, not visible yet, parked).
    async fn take_task(&self, task: &Task, now_ms: TimeMs) -> Result<bool, Error>;

    /// Returns a leased task to its queue (the server could not hand it out).
    async fn release_task(&self, task: &Task) -> Result<(), Error>;

    /// Keeps a task away from pollers: it is not offered before `until_ms`, whether it is
    /// offered or leased now (a lease with that expiry; [`Store::release_task`] offers it at
    /// once). Records `attempt` as the task's current attempt, read back with
    /// [`Store::task_attempt`]. Both live as long as the run's state offers the task and may
    /// be lost in a restart (the task is then offered at once, with no attempt): the server
    /// uses them for a held run's transient workflow-task attempts, which the history does
    /// not count. Returns false, changing nothing, when the state does not offer the task.
    async fn defer_task(&self, task: &Task, until_ms: TimeMs, attempt: u32) -> Result<bool, Error>;

    /// The attempt recorded by the last [`Store::defer_task`] of `task`, while the run's state
    /// still offers the task; `None` when it was never deferred, the state moved past it, or
    /// the store was reopened since.
    async fn task_attempt(&self, task: &Task) -> Result<Option<u32>, Error>;

    /// A heartbeat of a started activity attempt: its heartbeat deadline becomes `deadline_ms`
    /// (`timeout` = [`TimeoutKind::Heartbeat`]; other kinds are ignored). Start-to-close is the
    /// durable start plus the options' timeout and is never moved.
    async fn set_attempt_deadline(
        &self,
        key: &RunKey,
        id: CommandSeq,
        attempt: u32,
        deadline_ms: TimeMs,
        timeout: TimeoutKind,
    ) -> Result<(), Error>;

    /// Removes and returns deadlines due at `now_ms`. A deadline whose event the server does
    /// not append comes back when the run's state next changes.
    async fn take_due_timers(&self, now_ms: TimeMs, limit: usize) -> Result<Vec<DueTimer>, Error>;

    /// The earliest deadline, or the earliest time a not-yet-visible task becomes visible.
    async fn next_wakeup_ms(&self) -> Result<Option<TimeMs>, Error>;

    /// Stores a blob in `namespace` (idempotent) durably; returns its hash. Blobs are
    /// content-addressed per namespace: the same bytes in two namespaces are two blobs.
    async fn put_blob(&self, namespace: &str, data: Vec<u8>) -> Result<Hash, Error>;

    /// A blob of `namespace` by hash; `None` when that namespace has none of that hash (the
    /// same answer whether another namespace has it). Payloads of a run's events refer to
    /// blobs of the run's namespace. The embedded store also serves blobs written before
    /// blobs were scoped, to every namespace (see its `blob` module).
    async fn get_blob(&self, namespace: &str, hash: &Hash) -> Result<Option<Vec<u8>>, Error>;

    /// Makes the read models durable and records how far they reach (so that an open replays
    /// less of the log); returns that position. Never deletes history.
    async fn checkpoint(&self) -> Result<u64, Error>;

    /// Retention: drops up to `limit` runs that closed before `closed_before_ms` (never an
    /// open run), durably, so that no restart or rebuild brings them back; returns how many.
    /// A dropped run reads as not found.
    async fn drop_closed_before(
        &self,
        closed_before_ms: TimeMs,
        limit: usize,
    ) -> Result<usize, Error>;

    /// Every open run, for the server's reconciliation of work a crash interrupted (children
    /// to create, signals to deliver).
    async fn open_runs(&self) -> Result<Vec<RunKey>, Error>;

    /// Runs continued as new whose successor does not exist (a crash between the two
    /// appends of a continue-as-new), with the RunStarted that creates it.
    async fn missing_successors(&self) -> Result<Vec<(RunKey, crate::event::RunStarted)>, Error>;

    /// Writes a schedule's record ([`crate::schedule::Schedule::encode`]) if its stored
    /// version is `expected_version` (0 = it does not exist yet), durably; returns the new
    /// version. Otherwise writes nothing: [`Error::ScheduleConflict`]. This compare-and-set is
    /// what lets several nodes (or a node retrying after a crash) move one schedule safely.
    async fn put_schedule(
        &self,
        namespace: &str,
        name: &str,
        expected_version: u64,
        data: Vec<u8>,
    ) -> Result<u64, Error>;

    /// Deletes a schedule if its stored version is `expected_version`, durably; otherwise
    /// [`Error::ScheduleConflict`]. The runs it started are untouched.
    async fn delete_schedule(
        &self,
        namespace: &str,
        name: &str,
        expected_version: u64,
    ) -> Result<(), Error>;

    /// One schedule's record.
    async fn get_schedule(
        &self,
        namespace: &str,
        name: &str,
    ) -> Result<Option<StoredSchedule>, Error>;

    /// Every schedule of `namespace` (every namespace when `None`), by namespace then name.
    async fn list_schedules(&self, namespace: Option<&str>) -> Result<Vec<StoredSchedule>, Error>;

    /// Sets (or, with `None`, clears) the current build of a task queue, durably: the build
    /// that takes the first workflow task of new runs and every task of auto-upgrading runs
    /// ([`routing`]). Runs pinned to other builds are not moved.
    async fn set_queue_build(
        &self,
        namespace: &str,
        queue: &str,
        build: Option<&str>,
    ) -> Result<(), Error>;

    /// The current build of a task queue, if one is set.
    async fn queue_build(&self, namespace: &str, queue: &str) -> Result<Option<String>, Error>;

    /// Counters.
    fn stats(&self) -> StoreStats;

    /// Changes written by *other* processes sharing this store (other server nodes), for
    /// waking long polls, watchers and the timer loop here; `None` for a store only this
    /// process writes (the server wakes itself after its own appends). Best effort: a missed
    /// change costs a poll interval, never an outcome (pollers and the timer loop re-check).
    fn changes(&self) -> Option<tokio::sync::broadcast::Receiver<Change>> {
        None
    }

    /// Passes the live output of a running attempt (ephemeral text a worker published to this
    /// node, never written) on to the other processes sharing this store, whose
    /// [`Store::changes`] yield it as [`Change::Live`]. Returns once it is on its way, so
    /// output relayed before an outcome is appended reaches the other nodes before that
    /// outcome's change. Best effort: a store only this process uses does nothing, and a
    /// failure costs the other nodes' watchers some text, nothing else.
    async fn relay_live(&self, _text: &[LiveText]) {}
}

/// A schedule's record as stored (see [`Store::put_schedule`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredSchedule {
    /// Namespace.
    pub namespace: String,
    /// Name.
    pub name: String,
    /// Version: 1 when created, one more per write.
    pub version: u64,
    /// The record ([`crate::schedule::Schedule::encode`]).
    pub data: Vec<u8>,
}

/// What [`Store::verify_history`] found intact.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedHistory {
    /// Events in the history (its last seq).
    pub events: u64,
    /// The hash of the last event: the end of the chain.
    pub last_hash: Hash,
}

/// Records per page when a history is verified by reading it.
pub const VERIFY_PAGE_EVENTS: usize = 1_000;

/// [`Store::verify_history`] through the store's verified reads: every page of
/// [`Store::read_history`] from seq 1, its seqs consecutive, and its last record the run
/// state's last seq and hash (so a lost tail is found too).
pub async fn verify_by_reading<S: Store + ?Sized>(
    store: &S,
    key: &RunKey,
) -> Result<VerifiedHistory, Error> {
    let state = store
        .run_state(key)
        .await?
        .ok_or_else(|| Error::NotFound(key.clone()))?;
    let corrupt = |seq: u64, detail: String| Error::Corrupt {
        run: Some(key.clone()),
        seq: Some(seq),
        detail,
    };
    let mut next = 1u64;
    let mut last_hash = None;
    while next <= state.last_seq {
        let want = (state.last_seq - next + 1).min(VERIFY_PAGE_EVENTS as u64) as usize;
        let page = store.read_history(key, next, want).await?;
        if page.is_empty() {
            return Err(corrupt(
                next,
                format!(
                    "[STF-C2-GAP] the history ends before seq {next}; the run's state says it ends at seq {}",
                    state.last_seq
                ),
            ));
        }
        for r in page {
            if r.seq != next {
                return Err(corrupt(
                    next,
                    format!(
                        "[STF-C2-GAP] expected seq {next}, the history holds seq {}",
                        r.seq
                    ),
                ));
            }
            last_hash = Some(r.hash);
            next += 1;
            if next > state.last_seq {
                break;
            }
        }
    }
    match last_hash {
        Some(h) if h == state.last_hash => Ok(VerifiedHistory {
            events: state.last_seq,
            last_hash: h,
        }),
        _ => Err(corrupt(
            state.last_seq,
            "[STF-C2-HASH] the history's last hash is not the one the run's state records".into(),
        )),
    }
}

/// A change another node made (see [`Store::changes`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// A task may have become ready in this queue.
    TaskReady {
        /// Namespace.
        namespace: String,
        /// Queue.
        queue: String,
        /// Which kind of queue.
        kind: TaskKind,
    },
    /// A run's history grew to `last_seq`.
    RunChanged {
        /// The run.
        key: RunKey,
        /// Its last seq.
        last_seq: u64,
    },
    /// The timer index changed (a new or earlier deadline).
    Timers,
    /// Live output another node received ([`Store::relay_live`]).
    Live(LiveText),
}

/// A piece of a running attempt's live output (an LLM call's tokens): ephemeral, relayed
/// between nodes so that a watcher on any node sees it, never part of a history.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LiveText {
    /// The run.
    pub key: RunKey,
    /// The activity (its ActivityScheduled seq).
    pub activity_id: u32,
    /// The attempt that produced it.
    pub attempt: u32,
    /// Where `text` starts, in UTF-8 bytes from the attempt's first output.
    pub offset: u64,
    /// The text.
    pub text: String,
}

/// Resolves a payload of a run in `namespace` that refers to a blob into an inline one.
pub async fn inline_payload(
    store: &dyn Store,
    namespace: &str,
    p: &Payload,
) -> Result<Payload, Error> {
    match &p.blob {
        None => Ok(p.clone()),
        Some(b) => {
            let data = store
                .get_blob(namespace, &b.hash)
                .await?
                .ok_or_else(|| Error::Corrupt {
                    run: None,
                    seq: None,
                    detail: format!("blob {} is missing", hex::encode(b.hash)),
                })?;
            Ok(Payload {
                encoding: p.encoding.clone(),
                data,
                blob: None,
            })
        }
    }
}
