//! The timer loop: turns due deadlines into events (timer fired, attempt timed out or lost,
//! workflow task timed out, run timed out). Deadlines live in the store's projections, so
//! they survive a restart; this loop only acts on them.

use std::sync::Arc;
use std::time::Duration;

use steadfast_engine::event::{self as ev, Event, TimeoutKind};
use steadfast_engine::state::{ActivityPhase, WorkflowTask};
use steadfast_engine::store::DueTimer;
use tonic::Status;

use crate::core::Core;
use crate::retry;

/// Deadlines handled per round.
const DUE_BATCH_MAX: usize = 512;
/// Longest sleep between rounds (a safety net; wake-ups normally come from appends).
const IDLE_WAKE_MS: u64 = 200;

/// Runs until the task is dropped.
pub async fn run(core: Arc<Core>) {
    loop {
        let now = core.now();
        match core.store.take_due_timers(now, DUE_BATCH_MAX).await {
            Ok(due) => {
                let n = due.len();
                for d in due {
                    if let Err(e) = fire(&core, &d).await {
                        tracing::debug!(timer = ?d, error = %e.message(), "deadline not applied (the run moved on)");
                    }
                }
                if n > 0 {
                    // Retries may have become visible; tasks of parked runs may be back.
                    core.notify.wake_all_queues();
                }
                if n == DUE_BATCH_MAX {
                    continue;
                }
            }
            Err(e) => tracing::error!(error = %e, "timer index unavailable"),
        }
        let sleep_ms = match core.store.next_wakeup_ms().await {
            Ok(Some(t)) => (t - core.now()).clamp(0, IDLE_WAKE_MS as i64) as u64,
            _ => IDLE_WAKE_MS,
        };
        let by_time = tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(sleep_ms)) => true,
            _ = core.notify.timers().notified() => false,
        };
        // Woken by time: a task may have become visible (a retry's backoff ended, a held
        // workflow task's delay passed). Woken by an append: pollers were told directly, and
        // waking them all here would only stampede them at the store.
        if by_time && sleep_ms > 0 {
            core.notify.wake_all_queues();
        }
    }
}

async fn fire(core: &Core, d: &DueTimer) -> Result<(), Status> {
    match d {
        DueTimer::Timer { key, id } => {
            core.update(key, true, |s, _| {
                Ok((s.is_open() && s.timers.contains_key(id))
                    .then(|| vec![Event::TimerFired(ev::TimerFired { command_seq: *id })]))
            })
            .await?;
        }
        DueTimer::ActivityAttempt {
            key,
            id,
            attempt,
            timeout,
        } => {
            core.update(key, true, |s, now| {
                let Some(act) = s
                    .activities
                    .get(id)
                    .filter(|a| a.attempt == *attempt && s.is_open())
                else {
                    return Ok(None);
                };
                Ok(Some(vec![match &act.phase {
                    // A write whose worker went silent: its outcome is unknown; never retried
                    // blindly. Only writes are recorded as started, by the effect the running
                    // worker declared (which may differ from the one in the schedule options).
                    ActivityPhase::Started { .. } => {
                        Event::ActivityOutcomeUnknown(ev::ActivityOutcomeUnknown {
                            command_seq: *id,
                            attempt: *attempt,
                        })
                    }
                    ActivityPhase::OutcomeUnknown { .. } => return Ok(None),
                    _ => Event::ActivityTimedOut(ev::ActivityTimedOut {
                        command_seq: *id,
                        attempt: *attempt,
                        timeout: *timeout,
                        retry_at_ms: retry::next_attempt_at(act, *attempt, None, now),
                    }),
                }]))
            })
            .await?;
        }
        DueTimer::ActivityScheduleToClose { key, id } => {
            core.update(key, true, |s, _| {
                let Some(act) = s.activities.get(id).filter(|_| s.is_open()) else {
                    return Ok(None);
                };
                if matches!(act.phase, ActivityPhase::OutcomeUnknown { .. }) {
                    return Ok(None);
                }
                Ok(Some(vec![Event::ActivityTimedOut(ev::ActivityTimedOut {
                    command_seq: *id,
                    attempt: act.attempt,
                    timeout: TimeoutKind::ScheduleToClose,
                    retry_at_ms: None,
                })]))
            })
            .await?;
        }
        DueTimer::WorkflowTask { key, started_seq } => {
            core.sticky.lock().remove(key);
            core.update(key, true, |s, _| match &s.workflow_task {
                WorkflowTask::Started { started_seq: q, .. } if q == started_seq && s.is_open() => {
                    Ok(Some(vec![Event::WorkflowTaskTimedOut(
                        ev::WorkflowTaskTimedOut {
                            started_seq: *started_seq,
                        },
                    )]))
                }
                _ => Ok(None),
            })
            .await?;
        }
        DueTimer::Run { key } => {
            core.update(key, true, |s, _| {
                Ok(s.is_open().then(|| {
                    vec![Event::RunTimedOut(ev::RunTimedOut {
                        run_timeout_ms: s.run_timeout_ms,
                    })]
                }))
            })
            .await?;
        }
    }
    Ok(())
}
