//! The timer loop: turns due deadlines into events (timer fired, attempt timed out or lost,
//! workflow task timed out, run timed out). Deadlines live in the store's projections, so
//! they survive a restart; this loop only acts on them.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use steadfast_engine::event::{self as ev, Effect, Event, TimeoutKind};
use steadfast_engine::state::{ActivityPhase, WorkflowTask};
use steadfast_engine::store::DueTimer;
use tonic::Status;

use crate::core::Core;
use crate::retry;

/// Deadlines handled per round.
const DUE_BATCH_MAX: usize = 512;
/// Longest sleep between rounds (a safety net; wake-ups normally come from appends).
const IDLE_WAKE_MS: u64 = 200;

/// First delay before a deadline whose event could not be appended is tried again.
const REFIRE_DELAY_MS_MIN: i64 = 100;
/// Longest delay between two tries of one deadline.
const REFIRE_DELAY_MS_MAX: i64 = 10_000;

/// Deadlines whose event could not be appended (store unavailable, too many conflicting
/// writers, a limit), tried again with a growing delay. The store hands a deadline out once;
/// before, a failed one was dropped until the run's state next changed, which for a run
/// waiting only on that deadline was never (issue 10). Memory only: after a restart every
/// deadline is derived again from the run states.
#[derive(Debug, Default)]
struct Refire {
    /// Deadline -> (when to try again, the delay that led there).
    due: BTreeMap<DueTimer, (i64, i64)>,
}

impl Refire {
    /// `d` failed at `now`: try again after a delay that doubles with each failure.
    fn failed(&mut self, d: DueTimer, now: i64) {
        let delay = self.due.get(&d).map_or(REFIRE_DELAY_MS_MIN, |(_, last)| {
            last.saturating_mul(2).min(REFIRE_DELAY_MS_MAX)
        });
        self.due.insert(d, (now.saturating_add(delay), delay));
    }

    /// `d` was applied (or is moot): forget it.
    fn done(&mut self, d: &DueTimer) {
        self.due.remove(d);
    }

    /// The deadlines to try again at `now` (they stay here until [`Refire::done`]).
    fn take_due(&self, now: i64) -> Vec<DueTimer> {
        self.due
            .iter()
            .filter(|(_, (at, _))| *at <= now)
            .map(|(d, _)| d.clone())
            .collect()
    }

    fn next_ms(&self) -> Option<i64> {
        self.due.values().map(|(at, _)| *at).min()
    }
}

/// Whether a failure to fire a deadline may succeed later (the run vanishing may not).
fn worth_retrying(e: &Status) -> bool {
    e.code() != tonic::Code::NotFound
}

/// Runs until the task is dropped.
pub async fn run(core: Arc<Core>) {
    let mut refire = Refire::default();
    loop {
        let now = core.now();
        match core.store.take_due_timers(now, DUE_BATCH_MAX).await {
            Ok(mut due) => {
                let n = due.len();
                due.extend(refire.take_due(now));
                for d in due {
                    match fire(&core, &d).await {
                        Ok(()) => refire.done(&d),
                        Err(e) if worth_retrying(&e) => {
                            tracing::warn!(timer = ?d, code = ?e.code(), error = %e.message(), "deadline not applied; trying again later");
                            refire.failed(d, core.now());
                        }
                        Err(e) => {
                            tracing::debug!(timer = ?d, error = %e.message(), "deadline not applied (the run is gone)");
                            refire.done(&d);
                        }
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
        let next: Option<i64> = core.store.next_wakeup_ms().await.unwrap_or_default();
        let next = match (next, refire.next_ms()) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        let sleep_ms = match next {
            Some(t) => t.saturating_sub(core.now()).clamp(0, IDLE_WAKE_MS as i64) as u64,
            None => IDLE_WAKE_MS,
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

/// Appends the event a due deadline implies (nothing when the run moved on). Also used to time
/// out at once what a gone worker held (`service::worker::session`).
pub(crate) async fn fire(core: &Core, d: &DueTimer) -> Result<(), Status> {
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
                    // Cancelling, and no worker holds it (a Ready attempt was never handed
                    // out: the store makes it due at once): it is cancelled.
                    ActivityPhase::Ready { .. } if act.cancel_requested => {
                        Event::ActivityCancelled(ev::ActivityCancelled { command_seq: *id })
                    }
                    // No deadline runs for an attempt that was not handed out.
                    ActivityPhase::Ready { .. } => return Ok(None),
                    // Waiting for a human, no worker holds it: a cancel ends it at once.
                    ActivityPhase::AwaitingApproval { .. } if act.cancel_requested => {
                        Event::ActivityCancelled(ev::ActivityCancelled { command_seq: *id })
                    }
                    ActivityPhase::AwaitingApproval { .. } => return Ok(None),
                    // A write whose worker went silent: its outcome is unknown; never retried
                    // blindly. The effect is the one the running worker declared when the
                    // attempt started (which may differ from the one in the schedule options).
                    ActivityPhase::Started {
                        effect: Effect::Write,
                        ..
                    } => Event::ActivityOutcomeUnknown(ev::ActivityOutcomeUnknown {
                        command_seq: *id,
                        attempt: *attempt,
                    }),
                    // A read or idempotent attempt that was being cancelled: it is over.
                    ActivityPhase::Started { .. } if act.cancel_requested => {
                        Event::ActivityCancelled(ev::ActivityCancelled { command_seq: *id })
                    }
                    ActivityPhase::Started { .. } => {
                        Event::ActivityTimedOut(ev::ActivityTimedOut {
                            command_seq: *id,
                            attempt: *attempt,
                            timeout: *timeout,
                            retry_at_ms: retry::next_attempt_at(act, *attempt, None, now),
                        })
                    }
                    ActivityPhase::OutcomeUnknown { .. } => return Ok(None),
                }]))
            })
            .await?;
        }
        DueTimer::ActivityScheduleToClose { key, id } => {
            core.update(key, true, |s, _| {
                let Some(act) = s.activities.get(id).filter(|_| s.is_open()) else {
                    return Ok(None);
                };
                match act.phase {
                    ActivityPhase::OutcomeUnknown { .. } => return Ok(None),
                    // A write that a worker may be running, or may have done: its outcome is
                    // unknown, so it waits for reconciliation; out of time never means "did
                    // not happen".
                    ActivityPhase::Started {
                        effect: Effect::Write,
                        ..
                    } => {
                        return Ok(Some(vec![Event::ActivityOutcomeUnknown(
                            ev::ActivityOutcomeUnknown {
                                command_seq: *id,
                                attempt: act.attempt,
                            },
                        )]));
                    }
                    _ => {}
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

#[cfg(test)]
#[path = "timers_tests.rs"]
mod tests;
