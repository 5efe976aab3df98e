//! LLM calls as activities.
//!
//! - [`LlmClient`]: one chat call to an OpenAI-compatible API (`POST {base}/chat/completions`:
//!   OpenAI, Ollama, vLLM, LiteLLM, ...), or to the built-in deterministic [`offline`] model
//!   when no API is configured. Configured from the environment ([`LlmConfig::from_env`]):
//!   `STEADFAST_LLM_BASE_URL`, `STEADFAST_LLM_API_KEY`, `STEADFAST_LLM_MODEL`,
//!   `STEADFAST_LLM_PRICES`, `STEADFAST_LLM_TIMEOUT_MS`, `STEADFAST_LLM_CONNECT_TIMEOUT_MS`;
//!   `STEADFAST_LLM_API=responses` (+ `STEADFAST_LLM_BACKGROUND=true`) for the OpenAI
//!   Responses API in background mode, re-attached after a worker crash ([`responses`]).
//! - [`PriceTable`]: USD per million tokens per model, so that each call carries its
//!   `cost_micros` and the server can enforce cost budgets.
//! - [`Error`]: failures typed by what to do next; as an [`crate::ActivityError`], rate
//!   limits, 5xx and network failures are retried by the activity's retry policy,
//!   refused requests and credentials are not.
//! - [`chat`] (workflow side) schedules the [`ACTIVITY_NAME`] (`llm.chat`) activity;
//!   [`chat_activity`] (worker side) runs it. The answer is recorded in the history, so
//!   a replay never calls the model again.
//! - [`Conversation`] (workflow side): long conversations whose history grows linearly.
//!   Each call records a reference to the previous call's transcript plus the new messages
//!   (format in [`conversation`]); the `llm.chat` activity resolves it ([`transcript`]:
//!   a per-worker cache, else `GetBlob`).
//! - Usage: [`chat_activity`] (and [`LlmClient::chat_for`] in activities of your own) adds
//!   each call's tokens and cost to the attempt's [`crate::activity::ActivityContext`]; the
//!   activity runtime sends them with `CompleteActivityTask.usage`, and the server adds them
//!   to the run's usage totals and checks its budget.
//!
//! Logs carry the model, sizes, token counts, cost and latency; never prompts, answers or
//! the API key.

mod activity;
mod client;
mod config;
pub mod conversation;
mod error;
pub mod offline;
mod prices;
pub mod responses;
mod stream;
pub mod transcript;
mod types;
mod wire;

pub use activity::{
    ACTIVITY_EFFECT, ACTIVITY_NAME, RETRY_BACKOFF, RETRY_INITIAL_INTERVAL, RETRY_MAX_ATTEMPTS,
    START_TO_CLOSE, activity_fn, chat, chat_activity, chat_options, chat_with, declare, register,
    shared_client,
};
pub use client::{LlmClient, MAX_RESPONSE_BYTES};
pub use config::{
    Api, DEFAULT_CONNECT_TIMEOUT, DEFAULT_POLL_INITIAL, DEFAULT_POLL_MAX, DEFAULT_TIMEOUT, ENV_API,
    ENV_API_KEY, ENV_BACKGROUND, ENV_BASE_URL, ENV_CONNECT_TIMEOUT_MS, ENV_MODEL,
    ENV_OFFLINE_PACE_MS, ENV_PRICES, ENV_TIMEOUT_MS, LlmConfig,
};
pub use conversation::{Conversation, SERVER_INLINE_BYTES_MAX};
pub use error::{
    AUTH_TYPE, BAD_REQUEST_TYPE, CONFIG_TYPE, Error, INVALID_RESPONSE_TYPE, NON_RETRYABLE_TYPES,
    RATE_LIMITED_TYPE, SERVER_ERROR_TYPE, TRANSCRIPT_TYPE, UNAVAILABLE_TYPE,
};
pub use prices::{ModelPrice, PriceTable};
pub use transcript::{CacheStats, cache_stats, resolve_transcript, set_cache_bytes_max};
pub use types::{ChatRequest, ChatResponse, LlmUsage, Message, ToolCall, ToolSpec, TranscriptRef};
