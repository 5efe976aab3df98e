//! The OpenAI Responses API (`POST {base}/responses`) and its background mode: a generation
//! that outlives the worker that started it, so a worker crash does not pay for it twice.
//!
//! Turned on by `STEADFAST_LLM_API=responses` and `STEADFAST_LLM_BACKGROUND=true` (or
//! [`super::LlmConfig::responses_api`]`(true)`). An `llm.chat` attempt then:
//! 1. **re-attaches** when an earlier attempt of the activity recorded a response id
//!    ([`Recorded`], read from [`ActivityContext::last_heartbeat_details`]): it polls that id
//!    instead of creating a generation, and records `{"response_id": ..., "reattached": true}`
//!    so that the history says so. An id the provider no longer knows (HTTP 404: expired or
//!    deleted) is logged and a new generation is started;
//! 2. otherwise **creates** one (`background: true`, `store: true`, the activity's
//!    idempotency key in `metadata.steadfast_idempotency_key`) and records
//!    `{"response_id": ...}` with [`ActivityContext::record_heartbeat`] *before* it waits. If
//!    that record fails, the generation is cancelled and the attempt fails retryably
//!    ([`Error::NotRecorded`]): a retry that could not find the id would pay for a second one;
//! 3. **polls** `GET {base}/responses/{id}` (waits from `poll_initial`, x1.5 up to `poll_max`;
//!    up to [`POLL_ERRORS_MAX`] transient failures in a row are waited out) until the response
//!    is `completed`, `incomplete`, `failed` or `cancelled`, while the worker runtime
//!    heartbeats the attempt;
//! 4. maps the output (message text, function calls as tool calls) and usage
//!    (`input_tokens` / `output_tokens`) into the same [`ChatResponse`] chat completions give,
//!    which is what the history records. `incomplete` is an answer (finish reason `length` or
//!    the provider's reason); `failed` and `cancelled` are [`Error::Job`], typed by the
//!    provider's error code.
//!
//! A cancelled activity cancels its generation (`POST {base}/responses/{id}/cancel`). Without
//! background mode the same wire is used synchronously (no id recorded, nothing to
//! re-attach to). A generation started but not yet recorded when its worker dies is lost
//! and a retry starts another: the window is one round trip to the Steadfast server.
//!
//! Logs carry response ids, statuses, poll counts and sizes; never prompts or answers.

mod wire;

use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::client::{read_body, unavailable};
use super::types::{ChatRequest, ChatResponse};
use super::{Error, LlmClient, LlmConfig, MAX_RESPONSE_BYTES};
use crate::activity::ActivityContext;
use wire::Response;

/// Transient poll failures in a row (network, 5xx, 429) waited out before the attempt fails;
/// its retry re-attaches to the same generation.
pub const POLL_ERRORS_MAX: u32 = 5;
/// Time limit of the cancel request sent when the activity is cancelled.
const CANCEL_TIMEOUT: Duration = Duration::from_secs(10);

/// The heartbeat details an attempt records before it waits on a background response (and
/// a re-attaching attempt records again, with `reattached`): what a retry reads to find
/// the generation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Recorded {
    /// The provider's response id (`resp_...`).
    pub response_id: String,
    /// Set by an attempt that re-attached to an earlier attempt's response.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub reattached: bool,
}

/// The response id an earlier attempt recorded, if any (details of another shape, or an id
/// that cannot be a response id, are none).
fn recorded_id(ctx: &ActivityContext) -> Option<String> {
    match ctx.last_heartbeat_details::<Recorded>() {
        Ok(Some(r)) if wire::valid_id(&r.response_id) => Some(r.response_id),
        Ok(Some(_)) => {
            tracing::warn!("the recorded response id is not a valid id; starting a new generation");
            None
        }
        Ok(None) => None,
        Err(_) => {
            tracing::debug!("the last recorded heartbeat details hold no response id");
            None
        }
    }
}

/// One call over the Responses API; `ctx` is the activity attempt, when there is one.
pub(super) async fn call(
    client: &LlmClient,
    http: &reqwest::Client,
    request: &ChatRequest,
    ctx: Option<&ActivityContext>,
    start: Instant,
) -> Result<ChatResponse, Error> {
    let config = client.config();
    let model = client.model_for(request).ok_or_else(|| {
        Error::Config("no model: set STEADFAST_LLM_MODEL or ChatRequest::model".into())
    })?;
    let api = Api {
        http,
        config,
        base_url: config.base_url.as_deref().unwrap_or_default(),
        start,
    };
    let background = config.background;

    let mut reattached = None;
    if background && let Some(id) = ctx.and_then(recorded_id) {
        match api.get(&id).await {
            Ok(r) => reattached = Some(r),
            Err(Fetch::Gone) => tracing::warn!(
                response_id = %id,
                "the provider no longer knows the recorded response (404); starting a new generation"
            ),
            Err(Fetch::Failed(e)) => return Err(e),
        }
    }
    let response = match reattached {
        Some(r) => {
            if let Some(ctx) = ctx {
                tracing::info!(
                    response_id = %r.id,
                    status = r.status().as_str(),
                    attempt = ctx.attempt(),
                    "re-attached to the recorded background response"
                );
                let note = Recorded {
                    response_id: r.id.clone(),
                    reattached: true,
                };
                // The id is in the history already (the earlier attempt's record): losing
                // this note loses only the remark that this attempt re-attached.
                if let Err(e) = ctx.record_heartbeat(&note).await {
                    tracing::warn!(error = %e, "could not record the re-attachment; going on");
                }
            }
            r
        }
        None => create(&api, model, request, ctx, background).await?,
    };
    let done = wait(&api, response, ctx).await?;
    let usage = done.usage();
    let model = done
        .model
        .clone()
        .filter(|m| !m.is_empty())
        .unwrap_or_else(|| model.to_owned());
    let usage = client.usage(&model, usage.input_tokens, usage.output_tokens);
    match done.answer() {
        Ok(a) => Ok(ChatResponse {
            content: a.content,
            tool_calls: a.tool_calls,
            finish_reason: a.finish_reason,
            usage,
            latency_ms: 0,
            model,
        }),
        Err(e) => {
            // A failed generation may have been billed: it counts in the run's usage.
            if let Some(ctx) = ctx
                && (usage.input_tokens, usage.output_tokens) != (0, 0)
            {
                ctx.add_usage(&usage.to_proto());
            }
            Err(e)
        }
    }
}

/// Creates a response; in background mode, records its id before anything waits on it.
async fn create(
    api: &Api<'_>,
    model: &str,
    request: &ChatRequest,
    ctx: Option<&ActivityContext>,
    background: bool,
) -> Result<Response, Error> {
    let body = wire::Request::new(model, request, background, ctx.map(|c| c.idempotency_key()));
    let body = serde_json::to_vec(&body)
        .map_err(|e| Error::Config(format!("cannot encode the request: {e}")))?;
    tracing::debug!(
        model,
        request_bytes = body.len(),
        background,
        "llm responses request"
    );
    let (status, text) = api
        .send(
            api.http
                .post(api.url(""))
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .body(body),
        )
        .await?;
    if !(200..300).contains(&status) {
        return Err(Error::from_status(
            status,
            super::wire::error_message(&text),
        ));
    }
    let r = Response::parse(&text)?;
    tracing::debug!(response_id = %r.id, status = r.status().as_str(), "background response created");
    if let Some(ctx) = ctx.filter(|_| background && !r.status().is_terminal()) {
        let note = Recorded {
            response_id: r.id.clone(),
            reattached: false,
        };
        if let Err(e) = ctx.record_heartbeat(&note).await {
            // Unrecorded, it would be paid for again by the retry: stop it now.
            api.cancel(&r.id).await;
            return Err(Error::NotRecorded(e.to_string()));
        }
    }
    Ok(r)
}

/// Polls `r` until it is terminal, or cancels it with the activity.
async fn wait(
    api: &Api<'_>,
    mut r: Response,
    ctx: Option<&ActivityContext>,
) -> Result<Response, Error> {
    let mut delay = api.config.poll_initial;
    let (mut polls, mut errors) = (0u32, 0u32);
    let cancelled = async {
        match ctx {
            Some(ctx) => ctx.cancelled().await,
            None => std::future::pending().await,
        }
    };
    tokio::pin!(cancelled);
    while !r.status().is_terminal() {
        let next = async {
            tokio::time::sleep(delay).await;
            api.get(&r.id).await
        };
        let got = tokio::select! {
            got = next => got,
            () = &mut cancelled => {
                api.cancel(&r.id).await;
                return Err(Error::Cancelled);
            }
        };
        polls += 1;
        delay = delay.mul_f64(1.5).min(api.config.poll_max);
        match got {
            Ok(next) => {
                errors = 0;
                if next.status() != r.status() {
                    tracing::debug!(response_id = %next.id, status = next.status().as_str(), polls, "background response status");
                }
                r = next;
            }
            Err(Fetch::Gone) => {
                return Err(Error::InvalidResponse(format!(
                    "the provider no longer knows response {} (404) while it was waited on",
                    r.id
                )));
            }
            Err(Fetch::Failed(e)) if e.is_retryable() && errors < POLL_ERRORS_MAX => {
                errors += 1;
                tracing::debug!(response_id = %r.id, error_type = e.error_type(), errors, "poll of a background response failed; polling again");
            }
            Err(Fetch::Failed(e)) => return Err(e),
        }
    }
    tracing::debug!(response_id = %r.id, status = r.status().as_str(), polls, "background response finished");
    Ok(r)
}

/// Why a response could not be read.
enum Fetch {
    /// HTTP 404: the provider does not know the id (expired, deleted, another account).
    Gone,
    Failed(Error),
}

/// The HTTP side, for one call.
struct Api<'a> {
    http: &'a reqwest::Client,
    config: &'a LlmConfig,
    base_url: &'a str,
    start: Instant,
}

impl Api<'_> {
    fn url(&self, suffix: &str) -> String {
        format!("{}/responses{suffix}", self.base_url)
    }

    /// Sends with the key; the status and the body (bounded).
    async fn send(&self, mut builder: reqwest::RequestBuilder) -> Result<(u16, String), Error> {
        if let Some(key) = &self.config.api_key {
            builder = builder.bearer_auth(key);
        }
        let unavailable = |e| unavailable(self.base_url, self.config.timeout, self.start, e);
        let mut response = builder.send().await.map_err(unavailable)?;
        let status = response.status().as_u16();
        let retry_after = response
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let body = read_body(&mut response).await.map_err(unavailable)?;
        tracing::debug!(status, response_bytes = body.len(), "llm responses answer");
        let Some(mut text) = body.into_text() else {
            return Err(Error::InvalidResponse(format!(
                "response body larger than {MAX_RESPONSE_BYTES} bytes"
            )));
        };
        if status == 429
            && let Some(after) = retry_after
        {
            text = format!(
                "{} (Retry-After: {after})",
                super::wire::error_message(&text)
            );
        }
        Ok((status, text))
    }

    async fn get(&self, id: &str) -> Result<Response, Fetch> {
        let (status, text) = self
            .send(self.http.get(self.url(&format!("/{id}"))))
            .await
            .map_err(Fetch::Failed)?;
        match status {
            404 => Err(Fetch::Gone),
            200..=299 => Response::parse(&text).map_err(Fetch::Failed),
            _ => Err(Fetch::Failed(Error::from_status(
                status,
                super::wire::error_message(&text),
            ))),
        }
    }

    /// Asks the provider to stop generating; best effort (the attempt ends either way).
    async fn cancel(&self, id: &str) {
        let sent = tokio::time::timeout(
            CANCEL_TIMEOUT,
            self.send(self.http.post(self.url(&format!("/{id}/cancel")))),
        )
        .await;
        match sent {
            Ok(Ok((status, _))) if (200..300).contains(&status) => {
                tracing::info!(response_id = %id, "background response cancelled");
            }
            Ok(Ok((status, _))) => {
                tracing::warn!(response_id = %id, status, "the provider refused to cancel the background response");
            }
            Ok(Err(e)) => {
                tracing::warn!(response_id = %id, error_type = e.error_type(), "could not cancel the background response");
            }
            Err(_) => tracing::warn!(
                response_id = %id,
                timeout_ms = CANCEL_TIMEOUT.as_millis() as u64,
                "cancelling the background response timed out"
            ),
        }
    }
}
