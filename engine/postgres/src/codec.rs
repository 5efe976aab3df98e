//! How run states, tasks and deadlines map to rows.
//!
//! Tasks and timers are keyed by small integer columns; the codes below are stored, so they
//! are never reused.

use steadfast_engine::event::{CommandSeq, TimeoutKind};
use steadfast_engine::ids::{RunId, RunKey};
use steadfast_engine::state::RunState;
use steadfast_engine::store::{DueTimer, Error, Task, TaskKind};

/// Version byte in front of a stored run state.
const STATE_VERSION: u8 = 1;

pub(crate) fn encode_state(state: &RunState) -> Vec<u8> {
    let mut v = vec![STATE_VERSION];
    rmp_serde::encode::write(&mut v, state).expect("msgpack encoding of plain data cannot fail");
    v
}

/// Decodes a stored run state; `history_bytes` is its own column (the state skips it).
pub(crate) fn decode_state(key: &RunKey, v: &[u8], history_bytes: i64) -> Result<RunState, Error> {
    let corrupt = |detail: String| Error::Corrupt {
        run: Some(key.clone()),
        seq: None,
        detail,
    };
    match v.first() {
        Some(&STATE_VERSION) => {}
        other => {
            return Err(corrupt(format!(
                "stored run state has format version {other:?}, expected {STATE_VERSION}"
            )));
        }
    }
    let mut state: RunState = rmp_serde::from_slice(&v[1..])
        .map_err(|e| corrupt(format!("stored run state does not decode: {e}")))?;
    if state.key != *key {
        return Err(corrupt(format!(
            "stored run state belongs to run {}",
            state.key
        )));
    }
    state.history_bytes = u64::try_from(history_bytes).unwrap_or(0);
    Ok(state)
}

pub(crate) fn kind_code(kind: TaskKind) -> i16 {
    match kind {
        TaskKind::Workflow => 0,
        TaskKind::Activity => 1,
    }
}

/// A task's row key: (kind, slot, attempt).
pub(crate) type TaskCols = (i16, i64, i64);

pub(crate) fn task_cols(task: &Task) -> (&RunKey, TaskCols) {
    match task {
        Task::Workflow { key, scheduled_seq } => (key, (0, *scheduled_seq as i64, 0)),
        Task::Activity { key, id, attempt } => (key, (1, i64::from(*id), i64::from(*attempt))),
    }
}

pub(crate) fn task_from_cols(key: RunKey, (kind, slot, attempt): TaskCols) -> Option<Task> {
    match kind {
        0 => Some(Task::Workflow {
            key,
            scheduled_seq: u64::try_from(slot).ok()?,
        }),
        1 => Some(Task::Activity {
            key,
            id: CommandSeq::try_from(slot).ok()?,
            attempt: u32::try_from(attempt).ok()?,
        }),
        _ => None,
    }
}

/// A deadline's row key: (kind, id, attempt, timeout).
pub(crate) type TimerCols = (i16, i64, i64, i16);

fn timeout_code(t: TimeoutKind) -> i16 {
    t as u8 as i16
}

fn timeout_of(code: i16) -> Option<TimeoutKind> {
    match code {
        1 => Some(TimeoutKind::StartToClose),
        2 => Some(TimeoutKind::ScheduleToClose),
        3 => Some(TimeoutKind::Heartbeat),
        _ => None,
    }
}

pub(crate) fn timer_cols(t: &DueTimer) -> (&RunKey, TimerCols) {
    match t {
        DueTimer::Timer { key, id } => (key, (1, i64::from(*id), 0, 0)),
        DueTimer::ActivityAttempt {
            key,
            id,
            attempt,
            timeout,
        } => (
            key,
            (
                2,
                i64::from(*id),
                i64::from(*attempt),
                timeout_code(*timeout),
            ),
        ),
        DueTimer::ActivityScheduleToClose { key, id } => (key, (3, i64::from(*id), 0, 0)),
        DueTimer::WorkflowTask { key, started_seq } => (key, (4, *started_seq as i64, 0, 0)),
        DueTimer::Run { key } => (key, (5, 0, 0, 0)),
    }
}

pub(crate) fn timer_from_cols(
    key: RunKey,
    (kind, id, attempt, timeout): TimerCols,
) -> Option<DueTimer> {
    let cmd = || CommandSeq::try_from(id).ok();
    Some(match kind {
        1 => DueTimer::Timer { key, id: cmd()? },
        2 => DueTimer::ActivityAttempt {
            key,
            id: cmd()?,
            attempt: u32::try_from(attempt).ok()?,
            timeout: timeout_of(timeout)?,
        },
        3 => DueTimer::ActivityScheduleToClose { key, id: cmd()? },
        4 => DueTimer::WorkflowTask {
            key,
            started_seq: u64::try_from(id).ok()?,
        },
        5 => DueTimer::Run { key },
        _ => return None,
    })
}

pub(crate) fn run_key(namespace: String, run_id: uuid::Uuid) -> RunKey {
    RunKey::new(namespace, RunId(run_id))
}
