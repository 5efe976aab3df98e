//! The schedule loop: fires each schedule's due slots (issue 18 point 3).
//!
//! Every round lists the schedules, and for each one decides the next step with the pure
//! [`Schedule::decide`], carries it out, and moves the cursor by compare-and-set on the
//! record's version. Nothing here is kept between rounds but the time to wake: the cursor is
//! durable, so a restarted node (or another node) picks up where the store says.
//!
//! Exactly once per slot: the run of a slot is started with the request id
//! [`schedule::slot_request_id`] and the workflow id [`schedule::slot_workflow_id`] *before*
//! the cursor moves. A crash between the two fires the slot again after the restart; the open
//! run of the workflow id, or the request id (deduplicated by the store for
//! `REQUEST_DEDUP_WINDOW_MS`, twice the catch-up window), answers with the first run. Several
//! nodes over PostgreSQL may run this loop at once: both may fire one slot, the dedup makes
//! that one run, and only one of their cursor writes succeeds (the other reloads and finds the
//! slot decided).

use std::sync::Arc;
use std::time::Duration;

use steadfast_engine::RunId;
use steadfast_engine::event::{ScheduleRef, TimeMs};
use steadfast_engine::ids::RunKey;
use steadfast_engine::schedule::{self, Decision, Schedule};
use steadfast_engine::store::{self, StoredSchedule};
use steadfast_proto::v1 as pb;
use tonic::Status;

use crate::convert;
use crate::core::{Core, status};
use crate::service::client;

/// Longest sleep between rounds: a safety net for changes made by other nodes, and the
/// delay with which a buffered slot notices that the last run closed.
const ROUND_MS_MAX: u64 = 1_000;
/// Steps (fires or cursor moves) one schedule may take in one round, so an allow-all backlog
/// does not starve the other schedules.
const STEPS_PER_ROUND_MAX: usize = 64;
/// How long to wait before retrying a round that could not list the schedules.
const ERROR_DELAY_MS: u64 = 500;

/// A stored schedule, decoded, with the version it was read at.
#[derive(Debug, Clone)]
pub struct Loaded {
    /// The record.
    pub schedule: Schedule,
    /// Its stored version (the compare-and-set expects it).
    pub version: u64,
}

/// Decodes a stored record; a record this build cannot read is an internal error naming it.
pub fn decode(stored: &StoredSchedule) -> Result<Loaded, Status> {
    let schedule = Schedule::decode(&stored.data).map_err(|e| {
        Status::internal(format!(
            "schedule {}/{} cannot be read: {e}",
            stored.namespace, stored.name
        ))
    })?;
    Ok(Loaded {
        schedule,
        version: stored.version,
    })
}

/// Reads one schedule (`None`: there is none of that name).
pub async fn load(core: &Core, namespace: &str, name: &str) -> Result<Option<Loaded>, Status> {
    match core
        .store
        .get_schedule(namespace, name)
        .await
        .map_err(status)?
    {
        Some(s) => decode(&s).map(Some),
        None => Ok(None),
    }
}

/// Starts the run of `slot_ms` (a scheduled fire, a trigger or a backfill: all the same
/// request), or finds the one a previous fire of the slot started.
pub async fn start_slot(core: &Core, s: &Schedule, slot_ms: TimeMs) -> Result<RunId, Status> {
    let req = pb::StartWorkflowRequest {
        namespace: s.namespace.clone(),
        workflow_type: s.workflow_type.clone(),
        workflow_id: schedule::slot_workflow_id(&s.name, slot_ms),
        input: Some(convert::payload(&s.input)),
        task_queue: s.task_queue.clone(),
        request_id: schedule::slot_request_id(&s.name, slot_ms),
        identity: format!("schedule/{}", s.name),
        ..Default::default()
    };
    let schedule = ScheduleRef {
        name: s.name.clone(),
        slot_ms,
    };
    let (run_id, _) = client::start_with(core, &req, None, Some(schedule)).await?;
    Ok(run_id)
}

/// Whether the run of the schedule's last fired slot is still open.
async fn last_run_open(core: &Core, s: &Schedule) -> Result<bool, Status> {
    let Some((run_id, _)) = s.last_run else {
        return Ok(false);
    };
    let key = RunKey::new(s.namespace.clone(), run_id);
    Ok(core
        .store
        .run_state(&key)
        .await
        .map_err(status)?
        .is_some_and(|st| st.is_open()))
}

/// Carries out the due steps of one schedule; returns when it next needs a look (`None`:
/// not before something changes, e.g. paused).
pub async fn step(core: &Core, mut cur: Loaded) -> Result<Option<TimeMs>, Status> {
    for _ in 0..STEPS_PER_ROUND_MAX {
        let s = &cur.schedule;
        let now = core.now();
        let open = last_run_open(core, s).await?;
        let d = s.decide(now, open);
        let run = match &d {
            Decision::Idle { wake_ms } => return Ok(*wake_ms),
            Decision::Fire {
                slot_ms,
                cancel_previous,
                ..
            } => {
                if *cancel_previous && let Some((prev, _)) = s.last_run {
                    let key = RunKey::new(s.namespace.clone(), prev);
                    let reason = format!("schedule {} fires slot {slot_ms}", s.name);
                    let identity = format!("schedule/{}", s.name);
                    if let Err(e) = client::request_cancel(core, &key, &reason, &identity).await
                        // Closed meanwhile, or gone: nothing to cancel.
                        && open_now(core, &key).await?
                    {
                        return Err(e);
                    }
                }
                let run = start_slot(core, s, *slot_ms).await?;
                tracing::info!(schedule = %s.name, namespace = %s.namespace, slot_ms, run = %run, "schedule fired");
                Some(run)
            }
            Decision::Advance { skipped, .. } => {
                tracing::debug!(schedule = %s.name, skipped, "schedule slots skipped");
                None
            }
        };
        let next = s.after(&d, run);
        match core
            .store
            .put_schedule(&s.namespace, &s.name, cur.version, next.encode())
            .await
        {
            Ok(version) => {
                cur = Loaded {
                    schedule: next,
                    version,
                }
            }
            // Changed meanwhile (paused, edited, another node moved it): decide again from
            // the stored record. A slot fired twice this way is one run (its request id).
            Err(store::Error::ScheduleConflict { .. }) => {
                match load(core, &cur.schedule.namespace, &cur.schedule.name).await? {
                    Some(l) => cur = l,
                    None => return Ok(None),
                }
            }
            Err(e) => return Err(status(e)),
        }
    }
    // More steps are due (a backlog): come back at once.
    Ok(Some(core.now()))
}

async fn open_now(core: &Core, key: &RunKey) -> Result<bool, Status> {
    Ok(core
        .store
        .run_state(key)
        .await
        .map_err(status)?
        .is_some_and(|st| st.is_open()))
}

/// One round over every schedule; returns the earliest time one of them needs a look.
pub async fn round(core: &Core) -> Result<Option<TimeMs>, Status> {
    let all = core.store.list_schedules(None).await.map_err(status)?;
    let mut wake: Option<TimeMs> = None;
    for stored in &all {
        let loaded = match decode(stored) {
            Ok(l) => l,
            Err(e) => {
                tracing::warn!(error = %e.message(), "schedule skipped");
                continue;
            }
        };
        match step(core, loaded).await {
            Ok(Some(w)) => wake = Some(wake.map_or(w, |x| x.min(w))),
            Ok(None) => {}
            // One schedule that cannot fire (its start refused, the store busy) does not
            // hold up the others; it is tried again next round.
            Err(e) => {
                tracing::warn!(schedule = %stored.name, namespace = %stored.namespace, code = ?e.code(), error = %e.message(), "schedule step failed; retried next round");
            }
        }
    }
    Ok(wake)
}

/// Runs until the task is dropped.
pub async fn run(core: Arc<Core>) {
    loop {
        let delay_ms = match round(&core).await {
            Ok(wake) => {
                let until = wake.map_or(ROUND_MS_MAX as i64, |w| w - core.now());
                until.clamp(0, ROUND_MS_MAX as i64) as u64
            }
            Err(e) => {
                tracing::warn!(code = ?e.code(), error = %e.message(), "schedule round failed");
                ERROR_DELAY_MS
            }
        };
        if delay_ms == 0 {
            tokio::task::yield_now().await;
            continue;
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(delay_ms)) => {}
            _ = core.notify.schedules().notified() => {}
        }
    }
}
