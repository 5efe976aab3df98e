//! AdminService.ForkRun: a new run whose history is an original's up to a workflow-task
//! boundary, continued by the current code (`run fork`), optionally terminating the original
//! (`run reset`).
//!
//! The boundary at or before `seq` is the end of the command events of the last
//! WorkflowTaskCompleted at or before `seq` (those events follow it in the same append; a
//! `seq` inside them still takes all of them), or seq 1 (RunStarted alone) when no task
//! completed by then. Everything up to it is copied with its recorded time (as history import
//! does), so the fork's seqs 1..=boundary are the original's and every recorded result is fed
//! to the code on replay instead of being run again. Then, at the current time:
//! - each activity attempt the boundary shows running (ActivityStarted, no outcome) is
//!   recorded as timed out with a retry due now: its worker reports to the original run, never
//!   to the fork, so the fork runs the activity again as the next attempt. Activities only
//!   scheduled at the boundary are dispatched as they are.
//! - a WorkflowTaskScheduled, so that the current code replays the prefix first: a prefix it
//!   does not reproduce fails that task with [STF-ND001] and the fork is held, accepting no
//!   command of the new code.
//!
//! Everything goes through the `Store` trait: both stores fork the same way.

use std::sync::Arc;

use steadfast_engine::event::{self as ev, Event, EventRecord, TimeoutKind};
use steadfast_engine::state::{ActivityPhase, RunState};
use steadfast_engine::store::{AppendRequest, Error as StoreError};
use steadfast_engine::{RunId, RunKey};
use steadfast_proto::v1 as pb;
use tonic::Status;

use crate::core::{Core, status};
use crate::service::client::closed_check;
use crate::service::import::appends;
use crate::validate;

/// Records read from the original per page while looking for the boundary.
const FORK_READ_PAGE_EVENTS: u64 = 1_000;

/// Where the prefix ends: the last seq copied.
pub fn boundary(records: &[EventRecord], seq: u64) -> u64 {
    let Some(w) = records
        .iter()
        .rposition(|r| r.seq <= seq && matches!(r.event, Event::WorkflowTaskCompleted(_)))
    else {
        return 1;
    };
    let commands = records[w + 1..]
        .iter()
        .take_while(|r| r.event.command_seq().is_some())
        .count();
    records[w].seq + commands as u64
}

/// The original's records 1..=boundary for a fork at `seq` (read page by page: a task's
/// command events may reach past `seq`).
async fn prefix(
    core: &Core,
    key: &RunKey,
    seq: u64,
    last: u64,
) -> Result<Vec<EventRecord>, Status> {
    let mut records = core.history(key, 1, seq).await?;
    loop {
        let b = boundary(&records, seq);
        let read_to = records.last().map_or(0, |r| r.seq);
        // The boundary is final once a record after it was read, or the history ends.
        if b < read_to || read_to >= last {
            records.truncate(b as usize);
            return Ok(records);
        }
        let more = core
            .history(
                key,
                read_to + 1,
                (read_to + FORK_READ_PAGE_EVENTS).min(last),
            )
            .await?;
        if more.is_empty() {
            records.truncate(b as usize);
            return Ok(records);
        }
        records.extend(more);
    }
}

/// Checks the prefix can be continued by a new run; returns its state.
fn check_prefix(key: &RunKey, records: &[EventRecord], seq: u64) -> Result<RunState, Status> {
    let state = RunState::from_history(key.clone(), records).map_err(|e| {
        Status::internal(format!(
            "the history of run {} does not fold up to seq {}: {e}",
            key.run_id,
            records.len()
        ))
    })?;
    if let Some(end) = records.iter().find(|r| r.event.is_terminal()) {
        let earlier = records
            .iter()
            .rev()
            .find(|r| matches!(r.event, Event::WorkflowTaskCompleted(_)) && r.seq < end.seq)
            .map_or(1, |r| r.seq.saturating_sub(1).max(1));
        return Err(Status::failed_precondition(format!(
            "seq {seq} of run {} is in the workflow task that closed the run ({} at seq {}): fork at an earlier seq (at most {earlier}) to run that task again",
            key.run_id,
            end.event.kind().name(),
            end.seq
        )));
    }
    if let Some((cs, _)) = state.children.iter().find(|(_, c)| c.is_open()) {
        return Err(Status::failed_precondition(format!(
            "run {} has a child run open at seq {} (command {cs}): a fork cannot take over a child; fork at a seq before the task that requested it",
            key.run_id,
            records.len()
        )));
    }
    Ok(state)
}

/// The events after the prefix, at `now`: attempts running at the boundary timed out with a
/// retry due now, then a workflow task for the current code. Returns them and the activities
/// scheduled again.
fn continuation(state: &RunState, now_ms: i64) -> (Vec<Event>, Vec<u32>) {
    let mut events = Vec::new();
    let mut again = Vec::new();
    for (id, a) in &state.activities {
        match a.phase {
            ActivityPhase::Started { .. } => {
                events.push(Event::ActivityTimedOut(ev::ActivityTimedOut {
                    command_seq: *id,
                    attempt: a.attempt,
                    timeout: TimeoutKind::StartToClose,
                    retry_at_ms: Some(now_ms),
                }));
                again.push(*id);
            }
            ActivityPhase::Ready { .. } => again.push(*id),
            // Still waiting for the human: the fork waits for its own decision (the state
            // it copied holds the request).
            ActivityPhase::AwaitingApproval { .. } => {}
            // A lost `write` attempt: its outcome is as unknown to the fork as to the
            // original, so the fork waits for the same reconciliation.
            ActivityPhase::OutcomeUnknown { .. } => {}
        }
    }
    events.push(Event::WorkflowTaskScheduled(ev::WorkflowTaskScheduled {
        task_queue: state.task_queue.clone(),
        attempt: 1,
        not_before_ms: 0,
    }));
    (events, again)
}

/// AdminService.ForkRun.
pub async fn fork(core: &Arc<Core>, r: &pb::ForkRunRequest) -> Result<pb::ForkRunResponse, Status> {
    let key = validate::run_key(&r.namespace, &r.run_id)?;
    validate::opt_name("workflow_id", &r.workflow_id)?;
    validate::opt_name("identity", &r.identity)?;
    let input = match &r.input {
        Some(p) => Some(validate::payload("input", Some(p))?),
        None => None,
    };
    if r.seq == 0 {
        return Err(Status::invalid_argument(
            "seq must be at least 1: history seqs start at 1 (RunStarted)",
        ));
    }
    let original = core.state(&key).await?;
    if r.seq > original.last_seq {
        return Err(Status::out_of_range(format!(
            "seq {} is past the end of run {}: its history ends at seq {}",
            r.seq, key.run_id, original.last_seq
        )));
    }
    if r.reset {
        closed_check(&original, "reset")?;
    }
    let records = prefix(core, &key, r.seq, original.last_seq).await?;
    let state = check_prefix(&key, &records, r.seq)?;
    let boundary_seq = records.len() as u64;

    let fork_id = RunId::new_v7();
    let fork_key = RunKey::new(key.namespace.clone(), fork_id);
    let Event::RunStarted(started) = &records[0].event else {
        return Err(Status::internal("seq 1 is not RunStarted"));
    };
    let mut started = started.clone();
    started.workflow_id = if !r.workflow_id.is_empty() {
        r.workflow_id.clone()
    } else if r.reset {
        started.workflow_id
    } else {
        fork_id.to_string()
    };
    if let Some(input) = input {
        started.input = input;
    }
    // The parent knows only its own child; a fork is a run of its own.
    started.parent = None;
    started.forked_from = Some(ev::ForkRef {
        run_id: key.run_id,
        seq: boundary_seq,
    });
    if !r.identity.is_empty() {
        started.identity = r.identity.clone();
    }

    if r.reset {
        // First, so that the fork may take the original's workflow id.
        let reason = format!("reset: continued by run {fork_id} (forked at seq {boundary_seq})");
        core.update(&key, true, |s, _| {
            closed_check(s, "reset")?;
            Ok(Some(vec![Event::RunTerminated(ev::RunTerminated {
                reason: reason.clone(),
                identity: r.identity.clone(),
            })]))
        })
        .await?;
    }

    let mut copied: Vec<EventRecord> = records;
    copied[0].event = Event::RunStarted(started);
    let mut last = None;
    for part in appends(&copied) {
        let a = core
            .store
            .append(AppendRequest {
                key: fork_key.clone(),
                expected_next_seq: part[0].seq,
                events: part.iter().map(|r| r.event.clone()).collect(),
                time_ms: part[0].time_ms,
                wait_durable: true,
            })
            .await
            .map_err(|e| refused(e, &key, &fork_key))?;
        last = Some(a);
    }
    let now = core.now();
    let (events, again) = continuation(&state, now);
    let a = core
        .store
        .append(AppendRequest {
            key: fork_key.clone(),
            expected_next_seq: boundary_seq + 1,
            events,
            time_ms: now,
            wait_durable: true,
        })
        .await
        .map_err(|e| refused(e, &key, &fork_key))?;
    // Pollers are woken once the fork is whole: the copied prefix is never handed out alone.
    if let Some(p) = &last {
        core.after_append(p);
    }
    core.after_append(&a);
    tracing::info!(run = %fork_key, from = %key, boundary_seq, reset = r.reset, "forked a run");
    Ok(pb::ForkRunResponse {
        run_id: fork_id.to_string(),
        boundary_seq,
        rescheduled_activities: again,
    })
}

fn refused(e: StoreError, original: &RunKey, fork: &RunKey) -> Status {
    match e {
        StoreError::WorkflowIdInUse {
            workflow_id,
            run_id,
        } => Status::already_exists(format!(
            "workflow id {} has an open run {run_id}: give the fork another --workflow-id (or reset run {} to continue it under its own)",
            validate::quote(&workflow_id),
            original.run_id
        )),
        e => {
            tracing::warn!(run = %fork, error = %e, "a fork could not be stored whole");
            status(e)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use steadfast_engine::event::{ActivityScheduled, TimerFired, WorkflowTaskCompleted};

    fn rec(seq: u64, event: Event) -> EventRecord {
        EventRecord {
            seq,
            time_ms: 1,
            hash: [0; 32],
            event,
        }
    }

    fn completed() -> Event {
        Event::WorkflowTaskCompleted(WorkflowTaskCompleted {
            started_seq: 0,
            worker: String::new(),
        })
    }

    fn scheduled(cs: u32) -> Event {
        Event::ActivityScheduled(ActivityScheduled {
            command_seq: cs,
            activity_type: "a".into(),
            input: Default::default(),
            options: Default::default(),
        })
    }

    fn other() -> Event {
        Event::TimerFired(TimerFired { command_seq: 1 })
    }

    #[test]
    fn boundary_takes_the_whole_task_at_or_before_seq() {
        // 1 start, 2 other, 3 done, 4-5 commands, 6 other, 7 done, 8 command, 9 other
        let recs: Vec<EventRecord> = [
            other(),
            other(),
            completed(),
            scheduled(1),
            scheduled(2),
            other(),
            completed(),
            scheduled(3),
            other(),
        ]
        .into_iter()
        .enumerate()
        .map(|(i, e)| rec(i as u64 + 1, e))
        .collect();
        assert_eq!(
            boundary(&recs, 1),
            1,
            "no task completed yet: RunStarted alone"
        );
        assert_eq!(boundary(&recs, 2), 1);
        assert_eq!(
            boundary(&recs, 3),
            5,
            "a task's command events come with it"
        );
        assert_eq!(
            boundary(&recs, 4),
            5,
            "a seq inside the commands takes all of them"
        );
        assert_eq!(boundary(&recs, 6), 5);
        assert_eq!(boundary(&recs, 7), 8);
        assert_eq!(boundary(&recs, 9), 8);
    }
}
