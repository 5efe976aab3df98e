//! `UpdateRun`: a durable, validated request that the run's update handler applies and
//! answers. The request is recorded (UpdateRequested) before anything else happens, the
//! workflow answers with a command (UpdateCompleted, or UpdateRejected from its validator),
//! and the caller is answered from the history. The request id is the update's id in the
//! run: a retry (after a timeout, or a server crash) records nothing and waits for, or
//! reads, the same answer.

use std::time::Duration;

use steadfast_engine::event::{self as ev, Event};
use steadfast_engine::state::UpdatePhase;
use steadfast_proto::v1 as pb;
use tonic::Status;

use crate::core::Core;
use crate::service::client::closed_check;
use crate::validate;

/// How long a caller waits for the answer when it gives no timeout.
pub const UPDATE_TIMEOUT_MS_DEFAULT: u64 = 30_000;
/// The longest a caller may wait in one call (then it retries with the same request id).
pub const UPDATE_TIMEOUT_MS_MAX: u64 = 60_000;
/// Stable code of an update its validator refused (FAILED_PRECONDITION).
pub const CODE_UPDATE_REJECTED: &str = "[STF-UPDATE001]";

/// `UpdateRun`.
pub async fn update_run(
    core: &Core,
    r: &pb::UpdateRunRequest,
) -> Result<pb::UpdateRunResponse, Status> {
    let key = validate::run_key(&r.namespace, &r.run_id)?;
    validate::name("update_name", &r.update_name)?;
    validate::opt_name("request_id", &r.request_id)?;
    validate::opt_name("identity", &r.identity)?;
    let input = validate::payload("input", r.input.as_ref())?;
    let id = if r.request_id.is_empty() {
        uuid::Uuid::now_v7().to_string()
    } else {
        r.request_id.clone()
    };
    let timeout_ms = match r.timeout_ms {
        0 => UPDATE_TIMEOUT_MS_DEFAULT,
        ms => ms.min(UPDATE_TIMEOUT_MS_MAX),
    };
    let deadline = tokio::time::Instant::now() + Duration::from_millis(timeout_ms);
    let mut changes = core.notify.watch_run(&key);
    let appended = core
        .update(&key, true, |s, _| {
            // A retry of a recorded update: nothing more to record, wait for its answer.
            if s.updates.contains_key(&id) {
                return Ok(None);
            }
            closed_check(s, "update")?;
            Ok(Some(vec![Event::UpdateRequested(ev::UpdateRequested {
                update_id: id.clone(),
                name: r.update_name.clone(),
                input: input.clone(),
                identity: r.identity.clone(),
            })]))
        })
        .await?;
    // Where to look for the answer: after the request.
    let from = appended
        .and_then(|a| a.records.first().map(|rec| rec.seq))
        .unwrap_or(1);
    loop {
        let s = core.state(&key).await?;
        if matches!(
            s.updates.get(&id),
            Some(UpdatePhase::Completed | UpdatePhase::Rejected)
        ) {
            let records = core.history(&key, from, s.last_seq).await?;
            for rec in &records {
                match &rec.event {
                    Event::UpdateCompleted(c) if c.update_id == id => {
                        return Ok(pb::UpdateRunResponse {
                            result: Some(crate::convert::payload(&c.result)),
                            seq: rec.seq,
                        });
                    }
                    Event::UpdateRejected(c) if c.update_id == id => {
                        return Err(Status::failed_precondition(format!(
                            "{CODE_UPDATE_REJECTED} update {} of run {} was rejected: {}",
                            validate::quote(&r.update_name),
                            key.run_id,
                            c.reason
                        )));
                    }
                    _ => {}
                }
            }
            return Err(Status::internal(format!(
                "update {} is answered in the run's state but not in its history",
                validate::quote(&id)
            )));
        }
        if !s.is_open() {
            return Err(Status::failed_precondition(format!(
                "run {} closed before it answered update {} (request id {})",
                key.run_id,
                validate::quote(&r.update_name),
                validate::quote(&id)
            )));
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(Status::deadline_exceeded(format!(
                "update {} of run {} is recorded but was not answered within {timeout_ms} ms (is a worker running its workflow?); call again with request id {} to keep waiting",
                validate::quote(&r.update_name),
                key.run_id,
                validate::quote(&id)
            )));
        }
        changes.changed_after(s.last_seq, deadline).await;
        if core.notify.is_stopping() {
            return Err(super::client::stopping());
        }
    }
}
