//! Tool approvals: `ApproveActivity` and `DenyActivity` (ClientService).
//!
//! An activity that needs a human decision is held at dispatch (ApprovalRequested, see
//! `worker/dispatch.rs`). Approving records who decided, their comment and any edit of the
//! arguments (ActivityApproved), and makes the attempt ready again; the approval is kept in
//! the run state, so a retry never asks again and a replay never asks at all. Denying
//! records ActivityDenied and, in the same append, a final ActivityFailed of type
//! [`DENIED_TYPE`] that the workflow handles like any activity failure.
//!
//! Who may decide: a client token bound to the run's namespace (the role that may signal a
//! run, as Temporal users expect of a human's answer). With auth on, the identity recorded
//! is the token's name, never what the request claims.

use steadfast_engine::event::{self as ev, Event};
use steadfast_engine::state::{ActivityPhase, RunState};
use steadfast_proto::v1 as pb;
use tonic::{Request, Status};

use crate::core::Core;
use crate::service::client::closed_check;
use crate::validate;

/// The failure type of a denied activity (`ActivityFailure.type`), for the workflow to
/// match.
pub const DENIED_TYPE: &str = "ApprovalDenied";

/// The stable code in a denied activity's failure message.
pub const DENIED_CODE: &str = "[STF-APPROVAL-DENIED]";

/// Who decides: the token's name when auth is on, else the identity the request gives
/// (`"anonymous"` when it gives none).
fn decider<T>(req: &Request<T>, claimed: &str) -> Result<String, Status> {
    if let Some(p) = req.extensions().get::<crate::auth::Principal>() {
        return Ok(p.name.clone());
    }
    validate::opt_name("identity", claimed)?;
    Ok(if claimed.is_empty() {
        "anonymous".into()
    } else {
        claimed.to_string()
    })
}

/// The activity `id` of `s`, waiting for approval; otherwise an error that says what it is
/// doing instead.
fn awaiting(s: &RunState, id: u32) -> Result<(), Status> {
    closed_check(s, "decide an approval of")?;
    let Some(a) = s.activities.get(&id) else {
        return Err(Status::not_found(format!(
            "activity {id} of run {} is not open (never scheduled, or already over): `steadfast run show {}` lists what it waits on",
            s.key.run_id, s.key.run_id
        )));
    };
    match &a.phase {
        ActivityPhase::AwaitingApproval { .. } => Ok(()),
        _ if a.approved => Err(Status::failed_precondition(format!(
            "activity {id} ({}) was approved already: a decision is taken once",
            a.activity_type
        ))),
        _ => Err(Status::failed_precondition(format!(
            "activity {id} ({}) is not waiting for approval (only an activity that asks for one, when it is about to run, is)",
            a.activity_type
        ))),
    }
}

/// `ApproveActivity`.
pub async fn approve(
    core: &Core,
    req: &Request<pb::ApproveActivityRequest>,
) -> Result<pb::ApproveActivityResponse, Status> {
    let r = req.get_ref();
    crate::auth::namespace(req, &r.namespace)?;
    let key = validate::run_key(&r.namespace, &r.run_id)?;
    validate::text("comment", &r.comment)?;
    let identity = decider(req, &r.identity)?;
    let input = match &r.input {
        Some(p) => Some(validate::payload("input", Some(p))?),
        None => None,
    };
    let id = r.activity_id;
    core.update(&key, true, |s, _| {
        awaiting(s, id)?;
        Ok(Some(vec![Event::ActivityApproved(ev::ActivityApproved {
            command_seq: id,
            identity: identity.clone(),
            comment: r.comment.clone(),
            input: input.clone(),
        })]))
    })
    .await?;
    tracing::info!(run = %key, activity = id, edited = input.is_some(), "activity approved");
    Ok(pb::ApproveActivityResponse {})
}

/// `DenyActivity`.
pub async fn deny(
    core: &Core,
    req: &Request<pb::DenyActivityRequest>,
) -> Result<pb::DenyActivityResponse, Status> {
    let r = req.get_ref();
    crate::auth::namespace(req, &r.namespace)?;
    let key = validate::run_key(&r.namespace, &r.run_id)?;
    if r.reason.trim().is_empty() {
        return Err(Status::invalid_argument(
            "reason is empty: say why (the workflow receives it in the failure)",
        ));
    }
    validate::text("reason", &r.reason)?;
    let identity = decider(req, &r.identity)?;
    let id = r.activity_id;
    core.update(&key, true, |s, _| {
        awaiting(s, id)?;
        let attempt = s.activities.get(&id).map_or(1, |a| a.attempt);
        Ok(Some(vec![
            Event::ActivityDenied(ev::ActivityDenied {
                command_seq: id,
                identity: identity.clone(),
                reason: r.reason.clone(),
            }),
            Event::ActivityFailed(ev::ActivityFailed {
                command_seq: id,
                attempt,
                failure: ev::Failure {
                    message: format!("{DENIED_CODE} denied by {identity}: {}", r.reason),
                    error_type: DENIED_TYPE.into(),
                    non_retryable: true,
                    details: String::new(),
                },
                retry_at_ms: None,
                duration_ms: 0,
                usage: None,
            }),
        ]))
    })
    .await?;
    tracing::info!(run = %key, activity = id, "activity denied");
    Ok(pb::DenyActivityResponse {})
}

/// Fills the arguments preview of every approval `run` waits on (DescribeRun with
/// `approval_previews`): the arguments are payloads, so they are read and shown only when
/// the caller asks.
pub async fn fill_previews(core: &Core, s: &RunState, run: &mut pb::RunInfo) -> Result<(), Status> {
    use pb::waiting_on::What;
    for w in &mut run.waiting_on {
        let Some(What::Approval(a)) = &mut w.what else {
            continue;
        };
        let Some(act) = s.activities.get(&a.activity_id) else {
            continue;
        };
        let seq = act.approved_input_seq.unwrap_or(act.scheduled_seq);
        let Some(rec) = core.history(&s.key, seq, seq).await?.pop() else {
            continue;
        };
        let rec = core.inline(&s.key.namespace, rec).await?;
        let input = match &rec.event {
            Event::ActivityScheduled(e) => Some(&e.input),
            Event::ActivityApproved(e) => e.input.as_ref(),
            _ => None,
        };
        if let Some(p) = input {
            a.arguments_preview = crate::convert_approval::preview(p);
        }
    }
    Ok(())
}
