//! The JSON API under `/api/v1`. Every handler authorizes the call for the gRPC method it
//! stands for ([`call::authorize`]), builds that method's request and calls its handler.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, State};

use super::query::ApiQuery;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{Value, json};
use steadfast_engine::payload::ENCODING_JSON;
use steadfast_proto::v1 as pb;
use steadfast_proto::v1::admin_service_server::AdminService;
use steadfast_proto::v1::client_service_server::ClientService;

use super::Ui;
use super::call::{self, ApiError, Method, authorize, ok_json, request};
use super::view::{event_view, payload_fields, payload_view, run_view};
use crate::auth::Principal;

/// Events in a history page when the request names no limit.
pub const HISTORY_PAGE_DEFAULT: u64 = 200;
/// Most events in one history page.
pub const HISTORY_PAGE_MAX: u64 = 1000;
/// Most runs the inbox lists per kind (signals, reconciliations); past it the answer says
/// `truncated` and the runs list (filter "waiting") pages through the rest.
pub const INBOX_RUNS_MAX: usize = 500;
/// Longest JSON body an action accepts (a signal's input is the large one; the gRPC limits
/// still apply to what it becomes).
pub const ACTION_BODY_BYTES_MAX: usize = 4 * 1024 * 1024;

/// Every query string may name the namespace; none is `default`.
#[derive(Debug, Default, Deserialize)]
pub struct Ns {
    /// The namespace.
    #[serde(default)]
    pub namespace: String,
}

/// Who the token is; also how the login form checks a token.
pub async fn session(State(ui): State<Arc<Ui>>, headers: HeaderMap) -> Result<Response, ApiError> {
    let p = authorize(&ui, &headers, call::LIST)?;
    Ok(ok_json(json!({
        "auth": ui.auth.is_some(),
        "read_only": ui.read_only,
        "name": p.as_ref().map(|p| p.name.clone()),
        "role": p.as_ref().map(|p| p.role.as_str()),
    })))
}

/// The filters of the runs list.
#[derive(Debug, Default, Deserialize)]
pub struct ListQuery {
    /// The namespace.
    #[serde(default)]
    pub namespace: String,
    /// A status name (`running`, `completed`, ...).
    #[serde(default)]
    pub status: String,
    /// A workflow type.
    #[serde(default, rename = "type")]
    pub workflow_type: String,
    /// A waiting kind (`signal`, `activity`, ...).
    #[serde(default)]
    pub waiting: String,
    /// A workflow id.
    #[serde(default)]
    pub workflow_id: String,
    /// A run id or a workflow id (the search box): a run id shows that run alone.
    #[serde(default)]
    pub id: String,
    /// Runs started at or after this time (ms since the epoch; 0 or absent: any).
    #[serde(default)]
    pub started_after: i64,
    /// Runs started before this time (ms since the epoch; 0 or absent: any).
    #[serde(default)]
    pub started_before: i64,
    /// Where the previous page ended.
    #[serde(default)]
    pub page_token: String,
    /// Runs per page (the server's page_size_max at most).
    #[serde(default)]
    pub page_size: u32,
}

/// The wire value of a status name, the names `run list --status` takes.
fn status_value(name: &str) -> Result<i32, ApiError> {
    if name.is_empty() {
        return Ok(0);
    }
    (1..=7)
        .find(|v| crate::cli::render::status_name(*v) == name)
        .ok_or_else(|| {
            ApiError::bad_request(format!(
                "status {} is unknown: use running, completed, failed, cancelled, terminated, timed_out or continued_as_new",
                crate::validate::quote(name)
            ))
        })
}

/// The ListRuns request of a list query (shared with the live list).
pub fn list_request(q: &ListQuery) -> Result<pb::ListRunsRequest, ApiError> {
    Ok(pb::ListRunsRequest {
        namespace: q.namespace.clone(),
        workflow_type: q.workflow_type.clone(),
        waiting: q.waiting.clone(),
        workflow_id: if q.id.is_empty() {
            q.workflow_id.clone()
        } else {
            q.id.clone()
        },
        status: status_value(&q.status)?,
        started_after_ms: q.started_after,
        started_before_ms: q.started_before,
        page_token: q.page_token.clone(),
        page_size: q.page_size,
        ..Default::default()
    })
}

/// One page of runs, as JSON (shared with the live list).
pub async fn list_page(
    ui: &Ui,
    q: &ListQuery,
    principal: &Option<Principal>,
) -> Result<Value, ApiError> {
    // A run id in the search box: that run alone (or none).
    if !q.id.is_empty() && uuid::Uuid::parse_str(&q.id).is_ok() {
        let req = pb::DescribeRunRequest {
            namespace: q.namespace.clone(),
            run_id: q.id.clone(),
            approval_previews: false,
        };
        return match ui.client.describe_run(request(req, principal)).await {
            Ok(r) => Ok(json!({
                "runs": r.into_inner().run.iter().map(run_view).collect::<Vec<_>>(),
                "next_page_token": "",
            })),
            Err(s) if s.code() == tonic::Code::NotFound => {
                Ok(json!({ "runs": [], "next_page_token": "" }))
            }
            Err(s) => Err(s.into()),
        };
    }
    let r = ui
        .client
        .list_runs(request(list_request(q)?, principal))
        .await?
        .into_inner();
    Ok(json!({
        "runs": r.runs.iter().map(run_view).collect::<Vec<_>>(),
        "next_page_token": r.next_page_token,
    }))
}

/// `GET /api/v1/runs`: one page of runs, newest first.
pub async fn list_runs(
    State(ui): State<Arc<Ui>>,
    headers: HeaderMap,
    ApiQuery(q): ApiQuery<ListQuery>,
) -> Result<Response, ApiError> {
    let p = authorize(&ui, &headers, call::LIST)?;
    Ok(ok_json(list_page(&ui, &q, &p).await?))
}

async fn describe_info(
    ui: &Ui,
    namespace: &str,
    run_id: &str,
    p: &Option<Principal>,
) -> Result<pb::RunInfo, ApiError> {
    let req = pb::DescribeRunRequest {
        namespace: namespace.to_string(),
        run_id: run_id.to_string(),
        approval_previews: false,
    };
    ui.client
        .describe_run(request(req, p))
        .await?
        .into_inner()
        .run
        .ok_or_else(|| ApiError::from(tonic::Status::internal("DescribeRun answered no run")))
}

/// `GET /api/v1/runs/{id}`: the run, what it waits on, its usage and children.
pub async fn describe(
    State(ui): State<Arc<Ui>>,
    headers: HeaderMap,
    Path(run_id): Path<String>,
    ApiQuery(ns): ApiQuery<Ns>,
) -> Result<Response, ApiError> {
    let p = authorize(&ui, &headers, call::DESCRIBE)?;
    let info = describe_info(&ui, &ns.namespace, &run_id, &p).await?;
    Ok(ok_json(
        json!({ "run": run_view(&info), "now_ms": ui.core.now() }),
    ))
}

/// A history page's bounds.
#[derive(Debug, Default, Deserialize)]
pub struct HistoryQuery {
    /// The namespace.
    #[serde(default)]
    pub namespace: String,
    /// The events before this seq (none: the tail).
    pub before: Option<u64>,
    /// How many.
    pub limit: Option<u64>,
}

/// Events `[from, to]` through GetHistory (which may answer in several pages).
async fn read_events(
    ui: &Ui,
    namespace: &str,
    run_id: &str,
    from: u64,
    to: u64,
    p: &Option<Principal>,
) -> Result<Vec<pb::HistoryEvent>, ApiError> {
    let mut out = Vec::new();
    let mut next = from.max(1);
    while next <= to {
        let req = pb::GetHistoryRequest {
            namespace: namespace.to_string(),
            run_id: run_id.to_string(),
            from_seq: next,
            page_size: u32::try_from(to - next + 1).unwrap_or(u32::MAX),
        };
        let page = ui.client.get_history(request(req, p)).await?.into_inner();
        let Some(last) = page.events.last().map(|e| e.seq) else {
            break;
        };
        out.extend(page.events.into_iter().filter(|e| e.seq <= to));
        next = last + 1;
        if page.next_seq == 0 {
            break;
        }
    }
    Ok(out)
}

/// `GET /api/v1/runs/{id}/history?before=SEQ&limit=N`: the events before `before` (the tail
/// without it), newest page first so that a long history opens at once; `older` is the
/// `before` of the page preceding this one (null at the start).
pub async fn history(
    State(ui): State<Arc<Ui>>,
    headers: HeaderMap,
    Path(run_id): Path<String>,
    ApiQuery(q): ApiQuery<HistoryQuery>,
) -> Result<Response, ApiError> {
    // The tail's end is the run's length, from its description: DescribeRun's access.
    let p = authorize(&ui, &headers, call::DESCRIBE)?;
    let limit = q.limit.unwrap_or(HISTORY_PAGE_DEFAULT);
    if limit == 0 || limit > HISTORY_PAGE_MAX {
        return Err(ApiError::bad_request(format!(
            "limit {limit} is out of range: give 1 to {HISTORY_PAGE_MAX}"
        )));
    }
    let end = match q.before {
        Some(b) => b.saturating_sub(1),
        None => {
            describe_info(&ui, &q.namespace, &run_id, &p)
                .await?
                .history_length
        }
    };
    let from = end.saturating_sub(limit - 1).max(1);
    let events = if end == 0 {
        Vec::new()
    } else {
        read_events(&ui, &q.namespace, &run_id, from, end, &p).await?
    };
    Ok(ok_json(json!({
        "events": events.iter().map(event_view).collect::<Vec<_>>(),
        "older": if from > 1 && end > 0 { Value::from(from) } else { Value::Null },
    })))
}

/// `GET /api/v1/runs/{id}/history.json`: the whole history, payloads included, as the JSON
/// lines of `history show --json` (a download).
pub async fn history_download(
    State(ui): State<Arc<Ui>>,
    headers: HeaderMap,
    Path(run_id): Path<String>,
    ApiQuery(ns): ApiQuery<Ns>,
) -> Result<Response, ApiError> {
    let p = authorize(&ui, &headers, call::HISTORY)?;
    let mut out = String::new();
    let mut next = 1;
    loop {
        let req = pb::GetHistoryRequest {
            namespace: ns.namespace.clone(),
            run_id: run_id.clone(),
            from_seq: next,
            page_size: 0,
        };
        let page = ui.client.get_history(request(req, &p)).await?.into_inner();
        for e in &page.events {
            out.push_str(&Value::Object(crate::cli::events::event_json(e)).to_string());
            out.push('\n');
        }
        if page.next_seq == 0 || page.events.is_empty() {
            break;
        }
        next = page.next_seq;
    }
    let name = format!(
        "attachment; filename=\"history-{}.jsonl\"",
        safe_file_name(&run_id)
    );
    Ok((
        [
            (header::CONTENT_TYPE, "application/x-ndjson".to_string()),
            (header::CONTENT_DISPOSITION, name),
        ],
        out,
    )
        .into_response())
}

fn safe_file_name(s: &str) -> String {
    s.chars()
        .filter(|c| c.is_ascii_alphanumeric() || *c == '-')
        .take(64)
        .collect()
}

/// Which payload of an event.
#[derive(Debug, Default, Deserialize)]
pub struct PayloadQuery {
    /// The namespace.
    #[serde(default)]
    pub namespace: String,
    /// The attribute (`input`, `result`, ...); none: all of the event's payloads, shown.
    #[serde(default)]
    pub field: String,
    /// The whole payload's bytes, as a file.
    #[serde(default)]
    pub download: bool,
}

/// `GET /api/v1/runs/{id}/events/{seq}/payloads`: the payloads of one event, each cut at
/// [`super::view::PAYLOAD_VIEW_BYTES_MAX`]; with `field` and `download=true`, that payload's
/// bytes whole.
pub async fn payloads(
    State(ui): State<Arc<Ui>>,
    headers: HeaderMap,
    Path((run_id, seq)): Path<(String, u64)>,
    ApiQuery(q): ApiQuery<PayloadQuery>,
) -> Result<Response, ApiError> {
    let p = authorize(&ui, &headers, call::HISTORY)?;
    if seq == 0 {
        return Err(ApiError::bad_request(
            "seq 0 names no event: seqs start at 1",
        ));
    }
    let events = read_events(&ui, &q.namespace, &run_id, seq, seq, &p).await?;
    let e = events.first().ok_or_else(|| ApiError {
        http: StatusCode::NOT_FOUND,
        code: "not_found",
        message: format!("run {} has no event {seq}", crate::validate::quote(&run_id)),
    })?;
    let fields = payload_fields(e);
    if q.field.is_empty() {
        let shown: Vec<Value> = fields.iter().map(|(n, p)| payload_view(n, p)).collect();
        return Ok(ok_json(json!({ "seq": seq, "payloads": shown })));
    }
    let (name, payload) = fields
        .iter()
        .find(|(n, _)| *n == q.field)
        .ok_or_else(|| ApiError {
            http: StatusCode::NOT_FOUND,
            code: "not_found",
            message: format!(
                "event {seq} has no payload {}: it has {}",
                crate::validate::quote(&q.field),
                fields
                    .iter()
                    .map(|(n, _)| *n)
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        })?;
    if !q.download {
        return Ok(ok_json(payload_view(name, payload)));
    }
    let json = crate::cli::fmt::is_json(payload);
    let file = format!(
        "attachment; filename=\"{}-{seq}-{name}.{}\"",
        safe_file_name(&run_id),
        if json { "json" } else { "bin" }
    );
    let ctype = if json {
        "application/json"
    } else {
        "application/octet-stream"
    };
    Ok((
        [
            (header::CONTENT_TYPE, ctype.to_string()),
            (header::CONTENT_DISPOSITION, file),
        ],
        payload.data.clone(),
    )
        .into_response())
}

/// `GET /api/v1/inbox`: the runs waiting on a person: on a signal (with its question and
/// choices), on the reconciliation of a `write` whose outcome is unknown, and on the approval
/// of a tool call (its reason, the arguments' size and hash; the arguments themselves through
/// [`super::approvals::arguments`]).
pub async fn inbox(
    State(ui): State<Arc<Ui>>,
    headers: HeaderMap,
    ApiQuery(ns): ApiQuery<Ns>,
) -> Result<Response, ApiError> {
    let p = authorize(&ui, &headers, call::LIST)?;
    let mut out = serde_json::Map::new();
    let mut truncated = false;
    for kind in ["signal", "reconciliation", "approval"] {
        let mut runs = Vec::new();
        let mut token = String::new();
        loop {
            let req = pb::ListRunsRequest {
                namespace: ns.namespace.clone(),
                waiting: kind.into(),
                page_token: token.clone(),
                ..Default::default()
            };
            let page = ui.client.list_runs(request(req, &p)).await?.into_inner();
            runs.extend(page.runs.iter().map(run_view));
            if runs.len() >= INBOX_RUNS_MAX {
                runs.truncate(INBOX_RUNS_MAX);
                truncated |= !page.next_page_token.is_empty();
                break;
            }
            if page.next_page_token.is_empty() {
                break;
            }
            token = page.next_page_token;
        }
        out.insert(format!("{kind}s"), Value::from(runs));
    }
    out.insert("truncated".into(), truncated.into());
    Ok(ok_json(Value::Object(out)))
}

/// The body of an action, parsed.
pub(super) fn body<T: for<'de> Deserialize<'de>>(bytes: &Bytes) -> Result<T, ApiError> {
    if bytes.len() > ACTION_BODY_BYTES_MAX {
        return Err(ApiError::bad_request(format!(
            "the body is {} bytes; the UI takes at most {ACTION_BODY_BYTES_MAX}",
            bytes.len()
        )));
    }
    let text = if bytes.is_empty() { &b"{}"[..] } else { bytes };
    serde_json::from_slice(text).map_err(|e| {
        ApiError::bad_request(format!("the body is not the JSON this action takes: {e}"))
    })
}

pub(super) fn json_payload(v: &Value) -> pb::Payload {
    pb::Payload {
        encoding: ENCODING_JSON.into(),
        data: v.to_string().into_bytes(),
    }
}

fn done(v: Value) -> Response {
    ok_json(v)
}

fn authorize_action(
    ui: &Ui,
    headers: &HeaderMap,
    m: Method,
) -> Result<Option<Principal>, ApiError> {
    authorize(ui, headers, m)
}

/// A signal.
#[derive(Debug, Deserialize)]
pub struct SignalBody {
    /// The signal's name.
    pub name: String,
    /// Its input (any JSON; none is null).
    #[serde(default)]
    pub input: Value,
    /// Deduplicates a retried submit.
    #[serde(default)]
    pub request_id: String,
}

/// `POST /api/v1/runs/{id}/signal` `{name, input, request_id}`: SignalRun.
pub async fn signal(
    State(ui): State<Arc<Ui>>,
    headers: HeaderMap,
    Path(run_id): Path<String>,
    ApiQuery(ns): ApiQuery<Ns>,
    bytes: Bytes,
) -> Result<Response, ApiError> {
    let p = authorize_action(&ui, &headers, call::SIGNAL)?;
    let b: SignalBody = body(&bytes)?;
    let req = pb::SignalRunRequest {
        namespace: ns.namespace,
        run_id,
        signal_name: b.name,
        input: Some(json_payload(&b.input)),
        identity: call::identity(&p),
        request_id: b.request_id,
        ..Default::default()
    };
    let r = ui.client.signal_run(request(req, &p)).await?.into_inner();
    Ok(done(json!({ "run_id": r.run_id })))
}

/// A reason.
#[derive(Debug, Default, Deserialize)]
pub struct ReasonBody {
    /// Why (recorded in the history).
    #[serde(default)]
    pub reason: String,
}

/// `POST /api/v1/runs/{id}/cancel` `{reason}`: CancelRun.
pub async fn cancel(
    State(ui): State<Arc<Ui>>,
    headers: HeaderMap,
    Path(run_id): Path<String>,
    ApiQuery(ns): ApiQuery<Ns>,
    bytes: Bytes,
) -> Result<Response, ApiError> {
    let p = authorize_action(&ui, &headers, call::CANCEL)?;
    let b: ReasonBody = body(&bytes)?;
    let req = pb::CancelRunRequest {
        namespace: ns.namespace,
        run_id,
        reason: b.reason,
        identity: call::identity(&p),
    };
    ui.client.cancel_run(request(req, &p)).await?;
    Ok(done(json!({})))
}

/// `POST /api/v1/runs/{id}/terminate` `{reason}`: TerminateRun.
pub async fn terminate(
    State(ui): State<Arc<Ui>>,
    headers: HeaderMap,
    Path(run_id): Path<String>,
    ApiQuery(ns): ApiQuery<Ns>,
    bytes: Bytes,
) -> Result<Response, ApiError> {
    let p = authorize_action(&ui, &headers, call::TERMINATE)?;
    let b: ReasonBody = body(&bytes)?;
    let req = pb::TerminateRunRequest {
        namespace: ns.namespace,
        run_id,
        reason: b.reason,
        identity: call::identity(&p),
    };
    ui.client.terminate_run(request(req, &p)).await?;
    Ok(done(json!({})))
}

/// New budget ceilings; 0 or absent keeps the current one.
#[derive(Debug, Default, Deserialize)]
pub struct BudgetBody {
    /// Tokens.
    #[serde(default)]
    pub max_tokens: u64,
    /// Cost, in micro-dollars.
    #[serde(default)]
    pub max_cost_micros: u64,
    /// Activities.
    #[serde(default)]
    pub max_activities: u64,
    /// Wall time, ms.
    #[serde(default)]
    pub max_duration_ms: u64,
}

/// `POST /api/v1/runs/{id}/budget`: UpdateBudget (admin).
pub async fn budget(
    State(ui): State<Arc<Ui>>,
    headers: HeaderMap,
    Path(run_id): Path<String>,
    ApiQuery(ns): ApiQuery<Ns>,
    bytes: Bytes,
) -> Result<Response, ApiError> {
    let p = authorize_action(&ui, &headers, call::BUDGET)?;
    let b: BudgetBody = body(&bytes)?;
    let req = pb::UpdateBudgetRequest {
        namespace: ns.namespace,
        run_id,
        budget: Some(pb::Budget {
            max_tokens: b.max_tokens,
            max_cost_micros: b.max_cost_micros,
            max_activities: b.max_activities,
            max_duration_ms: b.max_duration_ms,
        }),
        identity: call::identity(&p),
    };
    let r = ui.admin.update_budget(request(req, &p)).await?.into_inner();
    let b = r.budget.unwrap_or_default();
    Ok(done(json!({ "budget": {
        "max_tokens": b.max_tokens, "max_cost_micros": b.max_cost_micros,
        "max_activities": b.max_activities, "max_duration_ms": b.max_duration_ms,
    }})))
}

/// A reconciliation decision.
#[derive(Debug, Deserialize)]
pub struct ReconcileBody {
    /// The activity (its command seq).
    pub activity_id: u32,
    /// `retry`, `complete` or `fail`.
    pub decision: String,
    /// With `complete`: the result (JSON).
    #[serde(default)]
    pub result: Value,
    /// With `fail`: why.
    #[serde(default)]
    pub message: String,
}

/// `POST /api/v1/runs/{id}/reconcile`: ReconcileActivity (admin).
pub async fn reconcile(
    State(ui): State<Arc<Ui>>,
    headers: HeaderMap,
    Path(run_id): Path<String>,
    ApiQuery(ns): ApiQuery<Ns>,
    bytes: Bytes,
) -> Result<Response, ApiError> {
    use steadfast_proto::v1::reconcile_activity_request::Decision;
    let p = authorize_action(&ui, &headers, call::RECONCILE)?;
    let b: ReconcileBody = body(&bytes)?;
    let decision = match b.decision.as_str() {
        "retry" => Decision::Retry(true),
        "complete" => Decision::Complete(json_payload(&b.result)),
        "fail" => Decision::Fail(pb::Failure {
            message: b.message,
            r#type: "ReconciledAsFailed".into(),
            non_retryable: true,
            details: String::new(),
        }),
        other => {
            return Err(ApiError::bad_request(format!(
                "decision {} is unknown: use retry, complete or fail",
                crate::validate::quote(other)
            )));
        }
    };
    let req = pb::ReconcileActivityRequest {
        namespace: ns.namespace,
        run_id,
        activity_id: b.activity_id,
        decision: Some(decision),
        identity: call::identity(&p),
    };
    ui.admin.reconcile_activity(request(req, &p)).await?;
    Ok(done(json!({})))
}

/// A fork (or reset).
#[derive(Debug, Deserialize)]
pub struct ForkBody {
    /// Fork at the last workflow-task boundary at or before this seq.
    pub seq: u64,
    /// Terminate the original once the fork exists (`run reset`).
    #[serde(default)]
    pub reset: bool,
}

/// `POST /api/v1/runs/{id}/fork` `{seq, reset}`: ForkRun (admin).
pub async fn fork(
    State(ui): State<Arc<Ui>>,
    headers: HeaderMap,
    Path(run_id): Path<String>,
    ApiQuery(ns): ApiQuery<Ns>,
    bytes: Bytes,
) -> Result<Response, ApiError> {
    let p = authorize_action(&ui, &headers, call::FORK)?;
    let b: ForkBody = body(&bytes)?;
    let req = pb::ForkRunRequest {
        namespace: ns.namespace,
        run_id,
        seq: b.seq,
        reset: b.reset,
        identity: call::identity(&p),
        ..Default::default()
    };
    let r = ui.admin.fork_run(request(req, &p)).await?.into_inner();
    Ok(done(
        json!({ "run_id": r.run_id, "boundary_seq": r.boundary_seq }),
    ))
}

/// Any other path.
pub async fn not_found() -> ApiError {
    ApiError {
        http: StatusCode::NOT_FOUND,
        code: "not_found",
        message: "no such page or API call (the API is under /api/v1, see README, Web UI)".into(),
    }
}
