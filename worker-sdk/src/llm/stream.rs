//! Streamed chat calls (`stream: true`): the answer arrives as server-sent events
//! (`data: {chunk}` lines, then `data: [DONE]`), its text is sent on to the run's watchers as
//! it arrives ([`ActivityContext::emit_delta`]), and the whole answer is assembled from the
//! chunks: content, tool calls (their `arguments` arrive in pieces, keyed by `index`), finish
//! reason, and the usage of the last chunk (`stream_options.include_usage`). Only that
//! assembled answer is returned, and so recorded; the deltas are ephemeral.
//!
//! A provider without streaming still works: one that ignores `stream` answers with one JSON
//! body (not `text/event-stream`), parsed as usual; one that refuses it (HTTP 400 naming
//! `stream`) is asked again without it.

use std::collections::BTreeMap;
use std::time::Instant;

use serde::Deserialize;

use super::types::{ChatRequest, ChatResponse, ToolCall};
use super::{Error, LlmClient, MAX_RESPONSE_BYTES};
use crate::activity::ActivityContext;

/// Words per chunk of a streamed offline answer (a few tokens, like a real model's chunks).
pub const OFFLINE_CHUNK_WORDS: usize = 3;

impl LlmClient {
    /// One streamed call to the API; see the module docs.
    pub(super) async fn chat_streamed(
        &self,
        http: &reqwest::Client,
        request: &ChatRequest,
        start: Instant,
        live: &ActivityContext,
    ) -> Result<ChatResponse, Error> {
        let (model, body) = self.request_body(request, true)?;
        let mut response = match self.post(http, model, body, start).await {
            Ok(r) => r,
            Err(Error::BadRequest { message, .. })
                if message.to_ascii_lowercase().contains("stream") =>
            {
                tracing::debug!(model, "the API refused a streamed call; asking without it");
                let (model, body) = self.request_body(request, false)?;
                let mut response = self.post(http, model, body, start).await?;
                return self.read_answer(model, &mut response, start).await;
            }
            Err(e) => return Err(e),
        };
        let is_sse = response
            .headers()
            .get(reqwest::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.trim_start().starts_with("text/event-stream"));
        if !is_sse {
            return self.read_answer(model, &mut response, start).await;
        }
        let mut sse = SseLines::default();
        let mut answer = Assembler::default();
        let mut received = 0usize;
        let mut done = false;
        while !done {
            let chunk = response
                .chunk()
                .await
                .map_err(|e| self.unavailable(start, e))?;
            let Some(chunk) = chunk else { break };
            received += chunk.len();
            if received > MAX_RESPONSE_BYTES {
                return Err(Error::InvalidResponse(format!(
                    "streamed response larger than {MAX_RESPONSE_BYTES} bytes"
                )));
            }
            for data in sse.feed(&chunk) {
                if data.trim() == "[DONE]" {
                    done = true;
                    break;
                }
                if let Some(text) = answer.apply(&data)? {
                    live.emit_delta(&text);
                }
            }
        }
        tracing::debug!(
            model,
            response_bytes = received,
            chunks = answer.chunks,
            complete = done,
            "llm streamed response"
        );
        if !done && answer.finish_reason.is_none() {
            return Err(Error::Unavailable(
                "the stream ended before the answer was complete (no [DONE], no finish_reason)"
                    .into(),
            ));
        }
        Ok(answer.finish(self, model))
    }

    /// The offline model's answer; with `live`, also sent to the run's watchers in chunks
    /// of [`OFFLINE_CHUNK_WORDS`] words, paced by the configuration's `offline_pace`.
    pub(super) async fn chat_offline_live(
        &self,
        request: &ChatRequest,
        live: Option<&ActivityContext>,
    ) -> ChatResponse {
        let response = self.chat_offline(request);
        if let Some(ctx) = live {
            let pace = self.config().offline_pace;
            for (i, piece) in offline_chunks(response.text()).enumerate() {
                if i > 0 && !pace.is_zero() {
                    tokio::time::sleep(pace).await;
                }
                ctx.emit_delta(piece);
            }
        }
        response
    }
}

/// `text` in pieces of [`OFFLINE_CHUNK_WORDS`] words, each with the whitespace after it;
/// the pieces concatenate to `text`.
pub(crate) fn offline_chunks(text: &str) -> impl Iterator<Item = &str> {
    let mut rest = text;
    std::iter::from_fn(move || {
        if rest.is_empty() {
            return None;
        }
        let mut words = 0;
        let mut in_word = false;
        let mut end = rest.len();
        for (i, c) in rest.char_indices() {
            if c.is_whitespace() {
                if in_word {
                    words += 1;
                    in_word = false;
                }
            } else {
                if !in_word && words == OFFLINE_CHUNK_WORDS {
                    end = i;
                    break;
                }
                in_word = true;
            }
        }
        let (piece, tail) = rest.split_at(end);
        rest = tail;
        Some(piece)
    })
}

/// Server-sent events: bytes in, the `data` of each complete event out (several `data:`
/// lines of one event joined by `\n`; comments and other fields ignored).
#[derive(Default)]
pub(crate) struct SseLines {
    partial: Vec<u8>,
    data: Option<String>,
}

impl SseLines {
    pub(crate) fn feed(&mut self, bytes: &[u8]) -> Vec<String> {
        self.partial.extend_from_slice(bytes);
        let mut events = Vec::new();
        while let Some(nl) = self.partial.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = self.partial.drain(..=nl).collect();
            let line = String::from_utf8_lossy(&line);
            let line = line.trim_end_matches(['\n', '\r']);
            if line.is_empty() {
                events.extend(self.data.take());
            } else if let Some(value) = line.strip_prefix("data:") {
                let value = value.strip_prefix(' ').unwrap_or(value);
                match &mut self.data {
                    Some(d) => {
                        d.push('\n');
                        d.push_str(value);
                    }
                    None => self.data = Some(value.to_owned()),
                }
            }
        }
        events
    }
}

/// One `chat.completion.chunk`.
#[derive(Debug, Deserialize)]
struct Chunk {
    #[serde(default)]
    model: Option<String>,
    #[serde(default)]
    choices: Vec<ChunkChoice>,
    #[serde(default)]
    usage: Option<super::wire::WireUsage>,
}

#[derive(Debug, Deserialize)]
struct ChunkChoice {
    #[serde(default)]
    delta: Option<ChunkDelta>,
    #[serde(default)]
    finish_reason: Option<String>,
}

#[derive(Debug, Deserialize, Default)]
struct ChunkDelta {
    #[serde(default)]
    content: Option<String>,
    #[serde(default)]
    tool_calls: Vec<ToolCallDelta>,
}

#[derive(Debug, Deserialize)]
struct ToolCallDelta {
    #[serde(default)]
    index: usize,
    #[serde(default)]
    id: Option<String>,
    #[serde(default)]
    function: Option<FunctionDelta>,
}

#[derive(Debug, Deserialize)]
struct FunctionDelta {
    #[serde(default)]
    name: Option<String>,
    #[serde(default, deserialize_with = "super::wire::arguments_text")]
    arguments: String,
}

/// The answer, assembled chunk by chunk.
#[derive(Default)]
pub(crate) struct Assembler {
    content: Option<String>,
    tool_calls: BTreeMap<usize, ToolCall>,
    finish_reason: Option<String>,
    usage: Option<super::wire::WireUsage>,
    model: Option<String>,
    chunks: usize,
}

impl Assembler {
    /// Applies one chunk; returns its new text, if any.
    pub(crate) fn apply(&mut self, data: &str) -> Result<Option<String>, Error> {
        let chunk: Chunk = serde_json::from_str(data).map_err(|e| {
            Error::InvalidResponse(format!(
                "a stream chunk is not a chat completion chunk: {e}"
            ))
        })?;
        self.chunks += 1;
        if let Some(m) = chunk.model.filter(|m| !m.is_empty()) {
            self.model = Some(m);
        }
        if chunk.usage.is_some() {
            self.usage = chunk.usage;
        }
        let mut text = None;
        // Only the first choice is used, as in a whole answer.
        if let Some(choice) = chunk.choices.into_iter().next() {
            if let Some(reason) = choice.finish_reason {
                self.finish_reason = Some(reason);
            }
            let delta = choice.delta.unwrap_or_default();
            if let Some(t) = delta.content.filter(|t| !t.is_empty()) {
                self.content.get_or_insert_with(String::new).push_str(&t);
                text = Some(t);
            }
            for d in delta.tool_calls {
                let call = self.tool_calls.entry(d.index).or_insert_with(|| ToolCall {
                    id: String::new(),
                    name: String::new(),
                    arguments_json: String::new(),
                });
                if let Some(id) = d.id.filter(|i| !i.is_empty()) {
                    call.id = id;
                }
                if let Some(f) = d.function {
                    if let Some(name) = f.name.filter(|n| !n.is_empty()) {
                        call.name.push_str(&name);
                    }
                    call.arguments_json.push_str(&f.arguments);
                }
            }
        }
        Ok(text)
    }

    fn finish(self, client: &LlmClient, asked_model: &str) -> ChatResponse {
        let model = self.model.unwrap_or_else(|| asked_model.to_owned());
        let usage = self.usage.unwrap_or_default();
        let tool_calls: Vec<ToolCall> = self.tool_calls.into_values().collect();
        let finish_reason = self.finish_reason.unwrap_or_else(|| {
            if tool_calls.is_empty() {
                "stop"
            } else {
                "tool_calls"
            }
            .to_owned()
        });
        ChatResponse {
            content: self.content,
            tool_calls,
            finish_reason,
            usage: client.usage(&model, usage.prompt_tokens, usage.completion_tokens),
            latency_ms: 0,
            model,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sse_events_split_across_reads_and_lines() {
        let mut sse = SseLines::default();
        assert!(sse.feed(b"data: {\"a\"").is_empty());
        assert!(sse.feed(b":1}\r\n").is_empty());
        assert_eq!(
            sse.feed(b"\r\n: a comment\n\ndata: x\ndata: y\n\n"),
            vec!["{\"a\":1}".to_owned(), "x\ny".to_owned()]
        );
        assert_eq!(sse.feed(b"data: [DONE]\n\n"), vec!["[DONE]".to_owned()]);
    }

    #[test]
    fn chunks_assemble_text_tool_calls_and_usage() {
        let client = LlmClient::offline();
        let mut a = Assembler::default();
        let chunks = [
            r#"{"model":"m1","choices":[{"index":0,"delta":{"role":"assistant","content":"Hel"}}]}"#,
            r#"{"choices":[{"index":0,"delta":{"content":"lo."}}]}"#,
            r#"{"choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"id":"c1","type":"function","function":{"name":"look","arguments":""}}]}}]}"#,
            r#"{"choices":[{"index":0,"delta":{"tool_calls":[{"index":1,"id":"c2","function":{"name":"other","arguments":"{}"}}]}}]}"#,
            r#"{"choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"function":{"arguments":"{\"k\":"}}]}}]}"#,
            r#"{"choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"function":{"arguments":"1}"}}]},"finish_reason":"tool_calls"}]}"#,
            r#"{"choices":[],"usage":{"prompt_tokens":7,"completion_tokens":5}}"#,
        ];
        let texts: Vec<String> = chunks.iter().filter_map(|c| a.apply(c).unwrap()).collect();
        assert_eq!(texts, ["Hel", "lo."]);
        let r = a.finish(&client, "asked");
        assert_eq!(r.content.as_deref(), Some("Hello."));
        assert_eq!(r.model, "m1");
        assert_eq!(r.finish_reason, "tool_calls");
        assert_eq!((r.usage.input_tokens, r.usage.output_tokens), (7, 5));
        let calls: Vec<(&str, &str, &str)> = r
            .tool_calls
            .iter()
            .map(|c| (c.id.as_str(), c.name.as_str(), c.arguments_json.as_str()))
            .collect();
        assert_eq!(calls, [("c1", "look", "{\"k\":1}"), ("c2", "other", "{}")]);
    }

    #[test]
    fn a_chunk_that_is_not_json_is_an_invalid_response() {
        let e = Assembler::default().apply("not json").unwrap_err();
        assert!(matches!(e, Error::InvalidResponse(_)), "{e}");
    }

    #[test]
    fn offline_chunks_concatenate_to_the_answer() {
        let text = "The  top issue is\nduplicate payments, then login. ";
        let pieces: Vec<&str> = offline_chunks(text).collect();
        assert_eq!(pieces.concat(), text);
        assert_eq!(pieces[0], "The  top issue ");
        assert!(pieces.len() >= 3);
        assert_eq!(offline_chunks("").count(), 0);
    }

    #[tokio::test]
    async fn the_offline_model_streams_its_answer_to_the_context() {
        let client = LlmClient::offline();
        let ctx = ActivityContext::new(crate::activity::ActivityInfo::default());
        let request = ChatRequest::new([super::super::Message::user(
            "Summarise: payments fail twice and logins time out for many customers.",
        )]);
        let answer = client.chat_for(&ctx, &request).await.unwrap();
        let sent = ctx.shared.deltas.take(usize::MAX);
        let streamed: String = sent.iter().map(|d| d.text.as_str()).collect();
        assert_eq!(streamed, answer.text());
        assert!(!streamed.is_empty());
    }
}
