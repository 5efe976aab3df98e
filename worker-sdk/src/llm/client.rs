//! [`LlmClient`]: one chat call to an OpenAI-compatible API, or to the built-in offline
//! model when no API is configured.

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::types::{ChatRequest, ChatResponse, LlmUsage, ToolCall};
use super::{Api, Error, LlmConfig, offline, responses, wire};
use crate::activity::ActivityContext;

/// Largest response body read from the API; a bigger one is an invalid response.
pub const MAX_RESPONSE_BYTES: usize = 16 * 1024 * 1024;

/// A chat client. Cheap to clone (shared connection pool).
///
/// Every call logs model, sizes, token counts, cost and latency; never the prompt, the
/// answer or the API key. In an activity, call it with [`LlmClient::chat_for`] so that its
/// usage is reported with the attempt's result.
#[derive(Clone, Debug)]
pub struct LlmClient {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    config: LlmConfig,
    /// `None` in offline mode.
    http: Option<reqwest::Client>,
}

impl LlmClient {
    /// A client configured from the `STEADFAST_LLM_*` environment variables; the offline
    /// model when `STEADFAST_LLM_BASE_URL` is unset.
    pub fn from_env() -> Result<Self, Error> {
        Self::new(LlmConfig::from_env()?)
    }

    /// A client with this configuration.
    pub fn new(config: LlmConfig) -> Result<Self, Error> {
        let config = config.validated()?;
        let http = match &config.base_url {
            None => {
                tracing::info!(
                    model = offline::MODEL_NAME,
                    "no LLM API configured (STEADFAST_LLM_BASE_URL): using the deterministic offline model"
                );
                None
            }
            Some(base_url) => {
                tracing::info!(
                    base_url = %base_url,
                    model = config.model.as_deref().unwrap_or(""),
                    api_key_set = config.api_key.is_some(),
                    "LLM API configured"
                );
                let client = reqwest::Client::builder()
                    .timeout(config.timeout)
                    .connect_timeout(config.connect_timeout)
                    .build()
                    .map_err(|e| Error::Config(format!("cannot build the HTTP client: {e}")))?;
                Some(client)
            }
        };
        Ok(LlmClient {
            inner: Arc::new(Inner { config, http }),
        })
    }

    /// A client of the built-in offline model.
    pub fn offline() -> Self {
        LlmClient {
            inner: Arc::new(Inner {
                config: LlmConfig::default(),
                http: None,
            }),
        }
    }

    /// True when calls go to the built-in offline model (no API configured): every
    /// response and usage then names the model `offline-model`.
    pub fn is_offline(&self) -> bool {
        self.inner.http.is_none()
    }

    /// The configuration (its `Debug` hides the key).
    pub fn config(&self) -> &LlmConfig {
        &self.inner.config
    }

    /// The model a request is sent to: its own, else the configured default
    /// (`offline-model` in offline mode, whatever the request says).
    pub fn model_for<'a>(&'a self, request: &'a ChatRequest) -> Option<&'a str> {
        if self.is_offline() {
            return Some(offline::MODEL_NAME);
        }
        request
            .model
            .as_deref()
            .or(self.inner.config.model.as_deref())
    }

    /// Makes one chat call. Failures are typed by what to do next ([`Error::is_retryable`]);
    /// the client itself never retries: in an activity, the retry policy does.
    ///
    /// A request that refers to an earlier transcript ([`ChatRequest::has_transcript_ref`])
    /// is refused with [`Error::Transcript`]: resolve it first ([`super::resolve_transcript`],
    /// which [`LlmClient::chat_for`] and the `llm.chat` activity do).
    pub async fn chat(&self, request: &ChatRequest) -> Result<ChatResponse, Error> {
        self.call(request, None).await
    }

    /// One call; `ctx` is the activity attempt it runs in, if any: a chat-completions answer
    /// is then streamed and its text sent to the attempt's watchers as it arrives
    /// ([`ActivityContext::emit_delta`]); background responses record their id in it, and are
    /// cancelled with it.
    async fn call(
        &self,
        request: &ChatRequest,
        ctx: Option<&ActivityContext>,
    ) -> Result<ChatResponse, Error> {
        if request.has_transcript_ref() {
            return Err(Error::Transcript(
                "the request refers to an earlier transcript; resolve it first \
                 (llm::resolve_transcript, LlmClient::chat_for or the llm.chat activity)"
                    .into(),
            ));
        }
        let start = Instant::now();
        let result = match (&self.inner.http, ctx) {
            (None, ctx) => Ok(self.chat_offline_live(request, ctx).await),
            (Some(http), ctx) if self.inner.config.api == Api::Responses => {
                responses::call(self, http, request, ctx, start).await
            }
            (Some(http), None) => self.chat_http(http, request, start).await,
            (Some(http), Some(ctx)) => self.chat_streamed(http, request, start, ctx).await,
        };
        let latency_ms = elapsed_ms(start);
        match result {
            Ok(mut response) => {
                response.latency_ms = latency_ms;
                tracing::info!(
                    model = %response.model,
                    messages = request.messages.len(),
                    tools = request.tools.len(),
                    input_tokens = response.usage.input_tokens,
                    output_tokens = response.usage.output_tokens,
                    cost_micros = response.usage.cost_micros,
                    tool_calls = response.tool_calls.len(),
                    finish_reason = %response.finish_reason,
                    latency_ms,
                    "llm chat"
                );
                Ok(response)
            }
            Err(e) => {
                tracing::warn!(
                    model = self.model_for(request).unwrap_or(""),
                    messages = request.messages.len(),
                    error_type = e.error_type(),
                    retryable = e.is_retryable(),
                    latency_ms,
                    error = %e,
                    "llm chat failed"
                );
                Err(e)
            }
        }
    }

    /// [`LlmClient::chat`] inside an activity: on success, adds the call's usage to `ctx`,
    /// so that it is sent with the attempt's result and counted in the run's totals (and
    /// budget). Several calls in one attempt add up.
    ///
    /// A request that refers to an earlier transcript is resolved first
    /// ([`super::resolve_transcript`]).
    ///
    /// The answer is streamed (`stream: true`) and its text sent as it arrives to the run's
    /// watchers ([`ActivityContext::emit_delta`]); the offline model streams its answer in
    /// chunks too. Only the assembled answer is returned (and recorded). A provider that
    /// answers with one JSON body, or refuses `stream`, works as before.
    pub async fn chat_for(
        &self,
        ctx: &ActivityContext,
        request: &ChatRequest,
    ) -> Result<ChatResponse, Error> {
        let resolved;
        let request = if request.has_transcript_ref() {
            resolved = super::resolve_transcript(ctx, request.clone()).await?;
            &resolved
        } else {
            request
        };
        let response = self.call(request, Some(ctx)).await?;
        ctx.add_usage(&response.usage.to_proto());
        Ok(response)
    }

    pub(super) fn chat_offline(&self, request: &ChatRequest) -> ChatResponse {
        if let Some(asked) = request
            .model
            .as_deref()
            .filter(|m| *m != offline::MODEL_NAME)
        {
            tracing::debug!(
                asked,
                "offline mode: answering with {}",
                offline::MODEL_NAME
            );
        }
        let messages: Vec<offline::Message> = request.messages.iter().map(Into::into).collect();
        let content = offline::complete(&messages);
        let input_tokens = messages
            .iter()
            .map(|m| offline::count_tokens(&m.content))
            .sum();
        let output_tokens = offline::count_tokens(&content);
        ChatResponse {
            content: Some(content),
            tool_calls: Vec::new(),
            finish_reason: "stop".to_owned(),
            usage: self.usage(offline::MODEL_NAME, input_tokens, output_tokens),
            latency_ms: 0,
            model: offline::MODEL_NAME.to_owned(),
        }
    }

    async fn chat_http(
        &self,
        http: &reqwest::Client,
        request: &ChatRequest,
        start: Instant,
    ) -> Result<ChatResponse, Error> {
        let (model, body) = self.request_body(request, false)?;
        let mut response = self.post(http, model, body, start).await?;
        self.read_answer(model, &mut response, start).await
    }

    /// The model and the encoded body of `request` (as a stream when `streamed`).
    pub(super) fn request_body<'r>(
        &'r self,
        request: &'r ChatRequest,
        streamed: bool,
    ) -> Result<(&'r str, Vec<u8>), Error> {
        let model = self.model_for(request).ok_or_else(|| {
            Error::Config("no model: set STEADFAST_LLM_MODEL or ChatRequest::model".into())
        })?;
        let mut wire = wire::Request::new(model, request);
        if streamed {
            wire = wire.streamed();
        }
        let body = serde_json::to_vec(&wire)
            .map_err(|e| Error::Config(format!("cannot encode the request: {e}")))?;
        tracing::debug!(model, request_bytes = body.len(), streamed, "llm request");
        Ok((model, body))
    }

    /// Sends a request body; a non-success answer is read and returned as its [`Error`].
    pub(super) async fn post(
        &self,
        http: &reqwest::Client,
        model: &str,
        body: Vec<u8>,
        start: Instant,
    ) -> Result<reqwest::Response, Error> {
        let config = &self.inner.config;
        let base_url = config.base_url.as_deref().unwrap_or_default();
        let mut builder = http
            .post(format!("{base_url}/chat/completions"))
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(body);
        if let Some(key) = &config.api_key {
            builder = builder.bearer_auth(key);
        }
        let mut response = builder
            .send()
            .await
            .map_err(|e| self.unavailable(start, e))?;
        let status = response.status();
        if status.is_success() {
            return Ok(response);
        }
        let retry_after = response
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let body = self.read_text(model, &mut response, start).await?;
        let mut message = wire::error_message(&body);
        if let Some(after) = retry_after {
            message.push_str(&format!(" (Retry-After: {after})"));
        }
        Err(Error::from_status(status.as_u16(), message))
    }

    /// Reads a whole (non-streamed) answer and parses it.
    pub(super) async fn read_answer(
        &self,
        model: &str,
        response: &mut reqwest::Response,
        start: Instant,
    ) -> Result<ChatResponse, Error> {
        let body = self.read_text(model, response, start).await?;
        self.parse(model, &body)
    }

    async fn read_text(
        &self,
        model: &str,
        response: &mut reqwest::Response,
        start: Instant,
    ) -> Result<String, Error> {
        let status = response.status();
        let body = read_body(response)
            .await
            .map_err(|e| self.unavailable(start, e))?;
        tracing::debug!(
            model,
            status = status.as_u16(),
            response_bytes = body.len(),
            "llm response"
        );
        body.into_text().ok_or_else(|| {
            Error::InvalidResponse(format!(
                "response body larger than {MAX_RESPONSE_BYTES} bytes"
            ))
        })
    }

    /// A network failure of this client's API, as an [`Error::Unavailable`].
    pub(super) fn unavailable(&self, start: Instant, e: reqwest::Error) -> Error {
        let config = &self.inner.config;
        unavailable(
            config.base_url.as_deref().unwrap_or_default(),
            config.timeout,
            start,
            e,
        )
    }

    pub(super) fn parse(&self, model: &str, body: &str) -> Result<ChatResponse, Error> {
        let parsed: wire::Response = serde_json::from_str(body).map_err(|e| {
            Error::InvalidResponse(format!("body is not a chat completion JSON object: {e}"))
        })?;
        let Some(choice) = parsed.choices.into_iter().next() else {
            return Err(Error::InvalidResponse("no choices in the answer".into()));
        };
        let usage = parsed.usage.unwrap_or_default();
        let model = parsed
            .model
            .filter(|m| !m.is_empty())
            .unwrap_or_else(|| model.to_owned());
        let tool_calls: Vec<ToolCall> = choice
            .message
            .tool_calls
            .unwrap_or_default()
            .into_iter()
            .map(Into::into)
            .collect();
        let finish_reason = choice.finish_reason.unwrap_or_else(|| {
            if tool_calls.is_empty() {
                "stop"
            } else {
                "tool_calls"
            }
            .to_owned()
        });
        Ok(ChatResponse {
            content: choice.message.content,
            tool_calls,
            finish_reason,
            usage: self.usage(&model, usage.prompt_tokens, usage.completion_tokens),
            latency_ms: 0,
            model,
        })
    }

    pub(super) fn usage(&self, model: &str, input_tokens: u64, output_tokens: u64) -> LlmUsage {
        LlmUsage {
            input_tokens,
            output_tokens,
            cost_micros: self
                .inner
                .config
                .prices
                .cost_micros(model, input_tokens, output_tokens),
            model: model.to_owned(),
        }
    }
}

/// A body read up to [`MAX_RESPONSE_BYTES`].
pub(super) enum Body {
    Complete(Vec<u8>),
    TooLarge(usize),
}

impl Body {
    pub(super) fn len(&self) -> usize {
        match self {
            Body::Complete(b) => b.len(),
            Body::TooLarge(n) => *n,
        }
    }

    pub(super) fn into_text(self) -> Option<String> {
        match self {
            Body::Complete(b) => Some(String::from_utf8_lossy(&b).into_owned()),
            Body::TooLarge(_) => None,
        }
    }
}

pub(super) async fn read_body(response: &mut reqwest::Response) -> Result<Body, reqwest::Error> {
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await? {
        if body.len() + chunk.len() > MAX_RESPONSE_BYTES {
            return Ok(Body::TooLarge(body.len() + chunk.len()));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(Body::Complete(body))
}

pub(super) fn unavailable(
    base_url: &str,
    timeout: Duration,
    start: Instant,
    e: reqwest::Error,
) -> Error {
    // The URL is left out of reqwest's text: it is in our message once, and nothing else.
    let cause = e.without_url();
    if cause.is_timeout() {
        Error::Unavailable(format!(
            "{base_url} gave no answer within {} ms (timeout {} ms)",
            elapsed_ms(start),
            timeout.as_millis()
        ))
    } else if cause.is_connect() {
        Error::Unavailable(format!(
            "cannot connect to {base_url}: {}",
            source_chain(&cause)
        ))
    } else {
        Error::Unavailable(format!(
            "call to {base_url} failed: {}",
            source_chain(&cause)
        ))
    }
}

/// The error and its causes ("error sending request: connection refused").
fn source_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut text = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        text.push_str(": ");
        text.push_str(&c.to_string());
        cause = c.source();
    }
    text
}

fn elapsed_ms(start: Instant) -> u64 {
    u64::try_from(start.elapsed().as_millis()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::activity::ActivityInfo;
    use crate::llm::{ChatRequest, Message};

    #[tokio::test]
    async fn offline_answers_deterministically_and_reports_usage() {
        let client = LlmClient::offline();
        assert!(client.is_offline());
        let request = ChatRequest::new(offline::classify_prompt(
            r#"{"id":"T-1","subject":"Charged twice","body":"I was billed two times."}"#,
        ))
        .model("gpt-4o");
        let ctx = ActivityContext::new(ActivityInfo::default());
        let answer = client.chat_for(&ctx, &request).await.unwrap();
        assert_eq!(answer.model, offline::MODEL_NAME);
        assert_eq!(answer.usage.model, offline::MODEL_NAME);
        assert_eq!(answer.usage.cost_micros, 0);
        let offline_messages: Vec<offline::Message> =
            request.messages.iter().map(Into::into).collect();
        assert_eq!(answer.text(), offline::complete(&offline_messages));
        let again = client.chat_for(&ctx, &request).await.unwrap();
        assert_eq!(
            (&again.content, &again.usage),
            (&answer.content, &answer.usage)
        );
        let total = ctx.take_usage().unwrap();
        assert_eq!(total.model, offline::MODEL_NAME);
        assert_eq!(total.input_tokens, 2 * answer.usage.input_tokens);
    }

    #[tokio::test]
    async fn a_model_is_required_in_api_mode() {
        let client = LlmClient::new(LlmConfig::openai_compatible("http://127.0.0.1:9")).unwrap();
        let e = client
            .chat(&ChatRequest::new([Message::user("hi")]))
            .await
            .unwrap_err();
        assert!(matches!(e, Error::Config(_)), "{e}");
    }
}
