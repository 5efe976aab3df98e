//! Tool approvals from the inbox: the arguments of one waiting call on demand (DescribeRun
//! with previews), and approve / deny through the same ClientService handlers the CLI's
//! `run approve` / `run deny` call.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, State};

use super::query::ApiQuery;
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use serde::Deserialize;
use serde_json::{Value, json};
use steadfast_proto::v1 as pb;
use steadfast_proto::v1::client_service_server::ClientService;

use super::Ui;
use super::api::{Ns, body, json_payload};
use super::call::{self, ApiError, authorize, ok_json, request};

/// `GET /api/v1/runs/{id}/approvals/{activity_id}`: the approval the run waits on for that
/// activity, with the first bytes of its arguments (`arguments_preview`); `truncated` says
/// when the arguments are longer than the preview (the history download has them whole).
pub async fn arguments(
    State(ui): State<Arc<Ui>>,
    headers: HeaderMap,
    Path((run_id, activity_id)): Path<(String, u32)>,
    ApiQuery(ns): ApiQuery<Ns>,
) -> Result<Response, ApiError> {
    let p = authorize(&ui, &headers, call::DESCRIBE)?;
    let req = pb::DescribeRunRequest {
        namespace: ns.namespace,
        run_id: run_id.clone(),
        approval_previews: true,
    };
    let info = ui
        .client
        .describe_run(request(req, &p))
        .await?
        .into_inner()
        .run
        .ok_or_else(|| ApiError::from(tonic::Status::internal("DescribeRun answered no run")))?;
    let view = super::view::run_view(&info);
    let found = view["waiting_on"].as_array().and_then(|w| {
        w.iter()
            .find(|w| w["kind"] == "approval" && w["activity_id"] == activity_id)
            .cloned()
    });
    let Some(mut a) = found else {
        return Err(ApiError {
            http: StatusCode::NOT_FOUND,
            code: "not_found",
            message: format!(
                "run {} waits on no approval of activity {activity_id} (decided already, or another activity)",
                crate::validate::quote(&run_id)
            ),
        });
    };
    let shown = a["arguments_preview"].as_str().map_or(0, str::len) as u64;
    let bytes = a["arguments_bytes"].as_u64().unwrap_or(0);
    a["truncated"] = Value::from(shown < bytes);
    Ok(ok_json(json!({ "approval": a })))
}

/// An approval.
#[derive(Debug, Default, Deserialize)]
pub struct ApproveBody {
    /// Recorded with the decision.
    #[serde(default)]
    pub comment: String,
    /// Arguments to run the call with instead of the scheduled ones (any JSON); absent keeps
    /// them.
    #[serde(default)]
    pub input: Option<Value>,
}

/// `POST /api/v1/runs/{id}/approvals/{activity_id}/approve` `{comment, input}`:
/// ApproveActivity.
pub async fn approve(
    State(ui): State<Arc<Ui>>,
    headers: HeaderMap,
    Path((run_id, activity_id)): Path<(String, u32)>,
    ApiQuery(ns): ApiQuery<Ns>,
    bytes: Bytes,
) -> Result<Response, ApiError> {
    let p = authorize(&ui, &headers, call::APPROVE)?;
    let b: ApproveBody = body(&bytes)?;
    let req = pb::ApproveActivityRequest {
        namespace: ns.namespace,
        run_id,
        activity_id,
        comment: b.comment,
        input: b.input.as_ref().map(json_payload),
        identity: call::identity(&p),
    };
    ui.client.approve_activity(request(req, &p)).await?;
    Ok(ok_json(json!({})))
}

/// A denial.
#[derive(Debug, Default, Deserialize)]
pub struct DenyBody {
    /// Why; required (the workflow receives it in the failure).
    #[serde(default)]
    pub reason: String,
}

/// `POST /api/v1/runs/{id}/approvals/{activity_id}/deny` `{reason}`: DenyActivity.
pub async fn deny(
    State(ui): State<Arc<Ui>>,
    headers: HeaderMap,
    Path((run_id, activity_id)): Path<(String, u32)>,
    ApiQuery(ns): ApiQuery<Ns>,
    bytes: Bytes,
) -> Result<Response, ApiError> {
    let p = authorize(&ui, &headers, call::DENY)?;
    let b: DenyBody = body(&bytes)?;
    let req = pb::DenyActivityRequest {
        namespace: ns.namespace,
        run_id,
        activity_id,
        reason: b.reason,
        identity: call::identity(&p),
    };
    ui.client.deny_activity(request(req, &p)).await?;
    Ok(ok_json(json!({})))
}
