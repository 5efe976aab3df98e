//! `PublishActivityDeltas`: a running attempt's live output, fenced like a heartbeat, kept
//! in [`crate::live`] and passed on to watchers. Nothing is written, and nothing of the text
//! is logged (it is a payload): only sizes.

use steadfast_engine::state::ActivityPhase;
use steadfast_engine::store::LiveText;
use steadfast_proto::v1 as pb;
use tonic::{Request, Status};

use super::WorkerApi;
use super::fence::{self, current_attempt};
use crate::live::{LIVE_REQUEST_BYTES_MAX, LIVE_REQUEST_DELTAS_MAX};
use crate::validate;

pub(super) async fn publish(
    api: &WorkerApi,
    req: &Request<pb::PublishActivityDeltasRequest>,
) -> Result<pb::PublishActivityDeltasResponse, Status> {
    let r = req.get_ref();
    crate::auth::namespace(req, &r.namespace)?;
    validate::namespace(&r.namespace)?;
    if r.deltas.len() > LIVE_REQUEST_DELTAS_MAX {
        return Err(Status::resource_exhausted(format!(
            "{} deltas in one request; the limit is {LIVE_REQUEST_DELTAS_MAX}: send them in several",
            r.deltas.len()
        )));
    }
    let bytes: usize = r.deltas.iter().map(|d| d.text.len()).sum();
    if bytes > LIVE_REQUEST_BYTES_MAX {
        return Err(Status::resource_exhausted(format!(
            "{bytes} bytes of text in one request; the limit is {LIVE_REQUEST_BYTES_MAX}: send it in several"
        )));
    }
    if let Some(d) = r
        .deltas
        .iter()
        .find(|d| d.offset.checked_add(d.text.len() as u64).is_none())
    {
        return Err(Status::invalid_argument(format!(
            "delta offset {} overflows with its text: offsets count UTF-8 bytes from the attempt's start",
            d.offset
        )));
    }
    let a = api.activity_token(&r.task_token, &r.namespace)?;
    if r.attempt != a.attempt {
        return Err(Status::invalid_argument(format!(
            "attempt {} is not the one this task_token names ({}): send the attempt of the task",
            r.attempt, a.attempt
        )));
    }
    let scheduled = api
        .check_record(&a.key, a.scheduled, "ActivityScheduled")
        .await?;
    fence::check_activity_queue(req, &scheduled)?;
    let s = api.core.state(&a.key).await?;
    let act = match current_attempt(&s, &a) {
        Ok(act) => act,
        // Closed (recorded, cancelled, or the run ended): the attempt should stop.
        Err(e) if e.code() == tonic::Code::NotFound => {
            return Ok(pb::PublishActivityDeltasResponse {
                cancel_requested: true,
            });
        }
        // Superseded: refused.
        Err(e) => return Err(e),
    };
    if !matches!(act.phase, ActivityPhase::Started { .. }) {
        return Err(Status::failed_precondition(format!(
            "attempt {} of activity {} of run {} is not running (it timed out or was given back): its output is refused",
            a.attempt, a.id, a.key.run_id
        )));
    }
    let new = api.core.live.publish(&a.key, a.id, a.attempt, &r.deltas);
    tracing::trace!(
        activity = a.id,
        attempt = a.attempt,
        bytes,
        new_bytes = new.iter().map(|d| d.text.len()).sum::<usize>(),
        "live output"
    );
    // To the other nodes' watchers, before this call returns: the worker reports the outcome
    // only after, so they get the text before the outcome's change.
    let relayed: Vec<_> = new
        .into_iter()
        .map(|d| LiveText {
            key: a.key.clone(),
            activity_id: d.activity_id,
            attempt: d.attempt,
            offset: d.offset,
            text: d.text,
        })
        .collect();
    api.core.store.relay_live(&relayed).await;
    Ok(pb::PublishActivityDeltasResponse {
        cancel_requested: !s.is_open() || act.cancel_requested,
    })
}
