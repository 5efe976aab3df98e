//! AdminService.ImportHistory: a run created from a bundle exported elsewhere.
//!
//! Everything is checked before anything is written: the chain from the source run's genesis,
//! every event by the state machine, the run id free in the target namespace. Then the records
//! are appended in order, one append per run of equal timestamps, so that every event keeps
//! its recorded time (and, in the same namespace, its hash: the chain is bound to the run key,
//! so another namespace starts a new one). A workflow id with an open run in the target
//! refuses the first append, which stores nothing.

use steadfast_engine::event::EventRecord;
use steadfast_engine::store::{APPEND_EVENTS_MAX, AppendRequest, Error as StoreError};
use steadfast_proto::v1 as pb;
use tonic::Status;

use crate::cli::replay;
use crate::core::{Core, status};
use crate::validate;

/// Runs of consecutive records with the same time, at most [`APPEND_EVENTS_MAX`] each.
pub(crate) fn appends(records: &[EventRecord]) -> Vec<&[EventRecord]> {
    let mut out = Vec::new();
    let mut start = 0;
    for i in 1..=records.len() {
        let cut = i == records.len()
            || records[i].time_ms != records[start].time_ms
            || i - start == APPEND_EVENTS_MAX;
        if cut {
            out.push(&records[start..i]);
            start = i;
        }
    }
    out
}

pub async fn import(
    core: &Core,
    r: &pb::ImportHistoryRequest,
) -> Result<pb::ImportHistoryResponse, Status> {
    let target = validate::run_key(&r.namespace, &r.run_id)?;
    let source = validate::run_key(&r.source_namespace, &r.run_id)?;
    let (records, _) = replay::records_of(&source, &r.events).map_err(|e| {
        Status::invalid_argument(format!(
            "the bundle of run {source} does not verify, nothing was stored: {e}"
        ))
    })?;
    if core
        .store
        .run_state(&target)
        .await
        .map_err(status)?
        .is_some()
    {
        return Err(Status::already_exists(format!(
            "run {} already exists in namespace {:?}; nothing was stored",
            target.run_id, target.namespace
        )));
    }
    let mut stored: Vec<EventRecord> = Vec::with_capacity(records.len());
    for part in appends(&records) {
        let a = core
            .store
            .append(AppendRequest {
                key: target.clone(),
                expected_next_seq: part[0].seq,
                events: part.iter().map(|r| r.event.clone()).collect(),
                time_ms: part[0].time_ms,
                wait_durable: true,
            })
            .await
            .map_err(|e| match e {
                StoreError::WorkflowIdInUse {
                    workflow_id,
                    run_id,
                } => Status::already_exists(format!(
                    "workflow id {workflow_id:?} has an open run {run_id} in namespace {:?}; nothing was stored",
                    target.namespace
                )),
                // Another importer of the same run id raced us to seq 1.
                StoreError::Conflict { expected: 1, .. } => Status::already_exists(format!(
                    "run {} already exists in namespace {:?}; nothing was stored",
                    target.run_id, target.namespace
                )),
                e => status(e),
            })?;
        core.after_append(&a);
        stored.extend(a.records);
    }
    tracing::info!(run = %target, from = %source, events = stored.len(), "imported a history");
    let same_hashes = stored
        .iter()
        .zip(&r.events)
        .all(|(s, e)| s.hash.as_slice() == e.hash.as_slice());
    Ok(pb::ImportHistoryResponse {
        events: stored.len() as u64,
        last_hash: stored.last().map(|r| r.hash.to_vec()).unwrap_or_default(),
        same_hashes,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use steadfast_engine::event::{Event, TimerFired};

    fn rec(seq: u64, time_ms: i64) -> EventRecord {
        EventRecord {
            seq,
            time_ms,
            hash: [0; 32],
            event: Event::TimerFired(TimerFired { command_seq: 1 }),
        }
    }

    #[test]
    fn appends_keep_every_time() {
        let recs = vec![rec(1, 5), rec(2, 5), rec(3, 6), rec(4, 5)];
        let parts: Vec<Vec<u64>> = appends(&recs)
            .iter()
            .map(|p| p.iter().map(|r| r.seq).collect())
            .collect();
        assert_eq!(parts, vec![vec![1, 2], vec![3], vec![4]]);
        let many: Vec<EventRecord> = (1..=2_500).map(|s| rec(s, 7)).collect();
        let sizes: Vec<usize> = appends(&many).iter().map(|p| p.len()).collect();
        assert_eq!(sizes, vec![1_000, 1_000, 500]);
        assert!(appends(&[]).is_empty());
    }
}
