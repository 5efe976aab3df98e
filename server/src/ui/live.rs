//! Server-sent events for the live views.
//!
//! - **A run** (`GET /api/v1/runs/{id}/events`): its history events from WatchRun, each with
//!   its seq as the SSE `id`, so a reconnect sends `Last-Event-ID` and continues after the
//!   last event it saw, none lost and none twice. The last event of each batch carries the
//!   run's description (what it waits on now). The stream ends (`event: end`) when the run
//!   closes.
//! - **The list** (`GET /api/v1/runs/live`, the filters of `/api/v1/runs`): the store has no
//!   change counter across runs, so the list is read again every [`LIST_POLL`] and sent when
//!   it changed. Its SSE `id` is a hash of the page sent: a reconnect that sends it gets the
//!   next page only when the list differs from what it showed. Honest about what it is: a
//!   snapshot of the first page, not a log of changes.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Path, State};

use super::query::ApiQuery;
use axum::http::HeaderMap;
use axum::response::sse::{Event as Sse, KeepAlive};
use axum::response::{IntoResponse, Response};
use futures::{Stream, StreamExt};
use serde::Deserialize;
use serde_json::json;
use steadfast_proto::v1 as pb;
use steadfast_proto::v1::client_service_server::ClientService;

use super::Ui;
use super::api::{ListQuery, list_page};
use super::call::{self, ApiError, authorize, request};
use super::view::{event_view, run_view};

/// How often the live list reads the runs again.
pub const LIST_POLL: Duration = Duration::from_millis(1000);
/// How often an idle stream sends a comment, so proxies keep it open.
pub const KEEP_ALIVE: Duration = Duration::from_secs(15);

fn last_event_id(headers: &HeaderMap) -> Option<String> {
    headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
}

fn sse_response(stream: impl Stream<Item = Sse> + Send + 'static) -> Response {
    axum::response::sse::Sse::new(stream.map(Ok::<_, Infallible>))
        .keep_alive(KeepAlive::new().interval(KEEP_ALIVE))
        .into_response()
}

fn error_event(e: ApiError) -> Sse {
    Sse::default()
        .event("error")
        .data(json!({ "error": { "code": e.code, "message": e.message } }).to_string())
}

/// Where a run's stream starts.
#[derive(Debug, Default, Deserialize)]
pub struct RunQuery {
    /// The namespace.
    #[serde(default)]
    pub namespace: String,
    /// After this seq (`Last-Event-ID` wins when both are given).
    #[serde(default)]
    pub after: u64,
}

/// `GET /api/v1/runs/{id}/events`: the run's events after `Last-Event-ID` (or `?after=`).
pub async fn run(
    State(ui): State<Arc<Ui>>,
    headers: HeaderMap,
    Path(run_id): Path<String>,
    ApiQuery(q): ApiQuery<RunQuery>,
) -> Result<Response, ApiError> {
    let p = authorize(&ui, &headers, call::WATCH)?;
    let after = match last_event_id(&headers) {
        Some(id) => id.parse::<u64>().map_err(|_| {
            ApiError::bad_request(format!(
                "Last-Event-ID {} is not a seq",
                crate::validate::quote(&id)
            ))
        })?,
        None => q.after,
    };
    let req = pb::WatchRunRequest {
        namespace: q.namespace,
        run_id,
        after_seq: after,
        include_deltas: false,
    };
    let watch = ui.client.watch_run(request(req, &p)).await?.into_inner();
    let events = watch
        .map(|item| match item {
            Ok(m) => {
                let e = m.event.as_ref().map(event_view);
                let seq = m.event.as_ref().map(|e| e.seq).unwrap_or(0);
                let run = m.run.as_ref().map(run_view);
                Sse::default()
                    .id(seq.to_string())
                    .event("event")
                    .data(json!({ "event": e, "run": run }).to_string())
            }
            Err(s) => error_event(s.into()),
        })
        .chain(futures::stream::once(async {
            Sse::default().event("end").data("{}")
        }));
    Ok(sse_response(events))
}

/// `GET /api/v1/runs/live`: the first page of the list, sent again whenever it changes.
pub async fn list(
    State(ui): State<Arc<Ui>>,
    headers: HeaderMap,
    ApiQuery(q): ApiQuery<ListQuery>,
) -> Result<Response, ApiError> {
    authorize(&ui, &headers, call::LIST)?;
    // Bad filters are refused now, not as the stream's first event.
    super::api::list_request(&q)?;
    let shown = last_event_id(&headers);
    let state = (ui, headers, q, shown, true, false);
    let stream =
        futures::stream::unfold(state, |(ui, headers, q, shown, first, stop)| async move {
            if stop {
                return None;
            }
            if !first {
                tokio::time::sleep(LIST_POLL).await;
            }
            let mut shown = shown;
            loop {
                // Checked every time: a token removed from the auth file stops the stream.
                let page = match authorize(&ui, &headers, call::LIST) {
                    Ok(p) => list_page(&ui, &q, &p).await,
                    Err(e) => Err(e),
                };
                match page {
                    Ok(v) => {
                        let text = v.to_string();
                        let id = hex::encode(&blake3::hash(text.as_bytes()).as_bytes()[..8]);
                        if shown.as_deref() != Some(id.as_str()) {
                            let ev = Sse::default().id(id.clone()).event("runs").data(text);
                            shown = Some(id);
                            return Some((ev, (ui, headers, q, shown, false, false)));
                        }
                    }
                    // A refusal ends the stream: the page shows it and stops.
                    Err(e) => return Some((error_event(e), (ui, headers, q, shown, false, true))),
                }
                tokio::time::sleep(LIST_POLL).await;
            }
        });
    Ok(sse_response(stream))
}
