//! [`Conversation`]: a long LLM conversation whose history grows linearly, not
//! quadratically.
//!
//! An agent sends its whole transcript on every call. Recorded naively (as [`super::chat`]
//! does), call `k` stores all `k` earlier messages again, so the history grows with the
//! square of the conversation. A [`Conversation`] sends each message once: every call's input
//! refers to the transcript of an earlier call by the content address of that call's input,
//! and carries only the messages that came after it. The server stores every payload larger
//! than [`SERVER_INLINE_BYTES_MAX`] once, as a blob under the blake3 of its bytes; the
//! `llm.chat` activity resolves the reference (from its per-worker cache, or from the server
//! with `GetBlob`, see [`super::transcript`]) and calls the model with the full transcript.
//!
//! # Format (the `llm.chat` input, JSON)
//!
//! A [`ChatRequest`] with [`ChatRequest::transcript`] set:
//!
//! ```json
//! {"transcript": {"prev": "<64 hex digits>", "prev_messages": 42},
//!  "messages": [{"role": "assistant", "content": "..."},
//!               {"role": "tool", "content": "...", "tool_call_id": "c7"}],
//!  "tools": [...], "model": "..."}
//! ```
//!
//! - `prev`: blake3 of the bytes of an earlier `llm.chat` input payload. Its full transcript
//!   is `full(prev)`, and this request's is `full(prev) ++ messages`, where `full(r)` of a
//!   request `r` without `prev` is `r.messages`. So a chain is resolved by walking back to a
//!   request without `prev` (or to one whose full transcript is cached).
//! - `prev_messages`: the length of `full(prev)`, checked on resolution.
//! - `transcript: {"prev_messages": 0}` (no `prev`): the messages are the whole transcript;
//!   it marks the request as part of a conversation, so the worker keeps its transcript for
//!   the next call.
//! - `model`, `tools`, `temperature` and `max_tokens` are this call's own; only messages
//!   chain.
//!
//! A reference points only at an input that is certainly stored as a blob: one whose bytes
//! are longer than [`SERVER_INLINE_BYTES_MAX`]. While the inputs are smaller, the messages
//! since the last referenced input (the whole transcript, at first) are sent inline; they
//! stay below that size plus one call's new messages. Inputs are built only from the
//! conversation's own state, so a replay issues the same bytes (the SDK compares them).

use std::future::Future;

use serde::{Deserialize, Serialize};

use super::{ACTIVITY_NAME, ChatRequest, ChatResponse, Message, ToolSpec, TranscriptRef};
use crate::ActivityError;
use crate::payload;
use crate::workflow::{ActivityOptions, WorkflowContext};

/// Payloads longer than this are stored by the server as blobs, once, under the blake3 of
/// their bytes (the engine's `INLINE_BYTES_MAX`; a test in `tests/` pins the two together).
/// Only an `llm.chat` input longer than this is ever referenced.
pub const SERVER_INLINE_BYTES_MAX: usize = 512;

/// The last call whose input may be referenced.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Base {
    /// blake3 of its input bytes, hex.
    blake3: String,
    /// Messages in its full transcript.
    messages: u64,
}

/// A conversation with an LLM, kept so that each message is recorded in the history once.
///
/// Workflow side. Add messages with [`Conversation::push`] (or [`Conversation::user`],
/// [`Conversation::tool_result`]); [`Conversation::chat`] schedules one `llm.chat` call with
/// what is new since the last referenced call, and appends the answer to the conversation.
/// The activity side needs nothing more than [`super::register`] (or
/// [`super::chat_activity`]): it resolves the reference.
///
/// It is plain data (`Serialize`): carry it into the input of a continued run
/// ([`crate::WorkflowError::continue_as_new`]) and the next run goes on where this one left
/// off, still referring to the blobs stored by this one.
///
/// ```no_run
/// use steadfast_sdk::llm::{ChatRequest, Conversation, Message};
/// use steadfast_sdk::{WorkflowContext, WorkflowError};
///
/// async fn agent(ctx: WorkflowContext, task: String) -> Result<String, WorkflowError> {
///     let mut conv = Conversation::new(ChatRequest::new([
///         Message::system("You are a careful agent."),
///         Message::user(task),
///     ]));
///     for step in 0..100 {
///         let answer = conv.chat(&ctx).await?; // the answer is appended to `conv`
///         let output: String = ctx.activity("tool", answer.text()).await?;
///         conv.tool_result(format!("call-{step}"), output);
///     }
///     Ok(conv.chat(&ctx).await?.text().to_owned())
/// }
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct Conversation {
    /// The model of every call; `None` = the worker's default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    model: Option<String>,
    /// Tools the model may call.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    tools: Vec<ToolSpec>,
    /// Sampling temperature.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    temperature: Option<f32>,
    /// Answer token cap.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    max_tokens: Option<u32>,
    /// The last call the next one refers to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    base: Option<Base>,
    /// The messages after `base` (all of them without one): what the next call sends.
    #[serde(default)]
    tail: Vec<Message>,
}

impl Conversation {
    /// A conversation that starts with `request`'s messages and makes every call with its
    /// model, tools, temperature and token cap.
    pub fn new(request: ChatRequest) -> Self {
        let ChatRequest {
            model,
            transcript: _,
            messages,
            tools,
            temperature,
            max_tokens,
        } = request;
        Conversation {
            model,
            tools,
            temperature,
            max_tokens,
            base: None,
            tail: messages,
        }
    }

    /// Adds a message.
    pub fn push(&mut self, message: Message) -> &mut Self {
        self.tail.push(message);
        self
    }

    /// Adds a user message.
    pub fn user(&mut self, content: impl Into<String>) -> &mut Self {
        self.push(Message::user(content))
    }

    /// Adds the result of tool call `tool_call_id`.
    pub fn tool_result(
        &mut self,
        tool_call_id: impl Into<String>,
        content: impl Into<String>,
    ) -> &mut Self {
        self.push(Message::tool_result(tool_call_id, content))
    }

    /// Messages in the whole conversation.
    pub fn len(&self) -> u64 {
        self.base.as_ref().map_or(0, |b| b.messages) + self.tail.len() as u64
    }

    /// Whether it has no message yet.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The messages not yet covered by a referenced call (all of them until the inputs
    /// grow past [`SERVER_INLINE_BYTES_MAX`]).
    pub fn tail(&self) -> &[Message] {
        &self.tail
    }

    /// The `llm.chat` input the next call sends.
    pub fn next_request(&self) -> ChatRequest {
        ChatRequest {
            model: self.model.clone(),
            transcript: Some(TranscriptRef {
                prev: self.base.as_ref().map(|b| b.blake3.clone()),
                prev_messages: self.base.as_ref().map_or(0, |b| b.messages),
            }),
            messages: self.tail.clone(),
            tools: self.tools.clone(),
            temperature: self.temperature,
            max_tokens: self.max_tokens,
        }
    }

    /// Schedules one `llm.chat` call with [`super::chat_options`] (issues the command now)
    /// and resolves with the answer, which is then appended to the conversation. If the
    /// future is dropped before it resolves, the answer is not appended.
    pub fn chat<'a>(
        &'a mut self,
        ctx: &WorkflowContext,
    ) -> impl Future<Output = Result<ChatResponse, ActivityError>> + use<'a> {
        self.chat_with(ctx, super::chat_options())
    }

    /// Like [`Conversation::chat`] with options of your choice (start from
    /// [`super::chat_options`]).
    pub fn chat_with<'a>(
        &'a mut self,
        ctx: &WorkflowContext,
        options: ActivityOptions,
    ) -> impl Future<Output = Result<ChatResponse, ActivityError>> + use<'a> {
        let request = self.next_request();
        // The very bytes `ctx.activity` sends (the encoding is deterministic), so the hash is
        // the key the server stores them under.
        if let Ok(p) = payload::encode(&request)
            && p.data.len() > SERVER_INLINE_BYTES_MAX
        {
            self.base = Some(Base {
                blake3: hex::encode(blake3::hash(&p.data).as_bytes()),
                messages: self.len(),
            });
            self.tail.clear();
        }
        let call = ctx
            .activity::<ChatResponse>(ACTIVITY_NAME, &request)
            .options(options);
        async move {
            let answer = call.await?;
            self.tail.push(answer.to_message());
            Ok(answer)
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use steadfast_proto::v1::command::Command as Cmd;

    use super::*;
    use crate::replay::Replayer;
    use crate::testing::TestRun;
    use crate::workflow::{Registry, WorkflowError};

    const TURNS: u32 = 40;

    fn answer(turn: u32) -> ChatResponse {
        ChatResponse {
            content: Some(format!("answer {turn}: {}", "words ".repeat(20))),
            finish_reason: "stop".into(),
            ..Default::default()
        }
    }

    /// A system prompt, then per turn: one call, then a tool result.
    async fn agent(ctx: WorkflowContext, turns: u32) -> Result<u64, WorkflowError> {
        let mut conv = Conversation::new(ChatRequest::new([Message::system("be brief")]));
        conv.user("go");
        for turn in 0..turns {
            conv.chat(&ctx).await?;
            conv.tool_result(format!("c{turn}"), format!("tool output {turn}"));
        }
        Ok(conv.len())
    }

    fn registry() -> Registry {
        let mut r = Registry::new();
        r.register_workflow("agent", agent);
        r
    }

    /// The transcript the model must see at call `turn` (0-based).
    fn expected(turn: u32) -> Vec<Message> {
        let mut m = vec![Message::system("be brief"), Message::user("go")];
        for t in 0..turn {
            m.push(answer(t).to_message());
            m.push(Message::tool_result(
                format!("c{t}"),
                format!("tool output {t}"),
            ));
        }
        m
    }

    #[test]
    fn each_call_sends_only_new_messages_and_resolves_to_the_whole_transcript() {
        let mut run = TestRun::new(registry(), "agent", &TURNS);
        let mut live = Vec::new();
        // Inputs by the hash of their bytes, as the server stores blobs.
        let mut stored: HashMap<String, ChatRequest> = HashMap::new();
        let mut input_sizes = Vec::new();
        for turn in 0..TURNS {
            let commands = run.step().unwrap();
            let [cmd] = commands.as_slice() else {
                panic!("turn {turn}: {commands:?}")
            };
            let Some(Cmd::ScheduleActivity(a)) = &cmd.command else {
                panic!("turn {turn}: {cmd:?}")
            };
            assert_eq!(a.activity_type, ACTIVITY_NAME);
            let bytes = &a.input.as_ref().unwrap().data;
            input_sizes.push(bytes.len());
            let request: ChatRequest = serde_json::from_slice(bytes).unwrap();
            // Resolve it the way the worker does, against what the "server" stored.
            let t = request.transcript.clone().expect("a conversation request");
            let mut full = match &t.prev {
                None => Vec::new(),
                Some(h) => {
                    let prev_bytes = serde_json::to_vec(&stored[h]).unwrap();
                    assert!(
                        prev_bytes.len() > SERVER_INLINE_BYTES_MAX,
                        "a reference points at an input the server stores inline"
                    );
                    resolve_locally(&stored, h)
                }
            };
            assert_eq!(full.len() as u64, t.prev_messages);
            full.extend(request.messages.clone());
            assert_eq!(full, expected(turn), "turn {turn}");
            stored.insert(hex::encode(blake3::hash(bytes).as_bytes()), request);
            let seq = cmd.seq;
            live.extend(commands);
            run.history().activity_completed(seq, &answer(turn));
        }
        let end = run.step().unwrap();
        assert!(matches!(end[0].command, Some(Cmd::CompleteRun(_))));
        live.extend(end);
        // References start once the inputs outgrow the inline limit, and then every input
        // stays small: linear in the conversation, not quadratic.
        let referencing = stored
            .values()
            .filter(|r| r.transcript.as_ref().unwrap().prev.is_some())
            .count();
        assert!(referencing as u32 >= TURNS - 3, "{referencing} of {TURNS}");
        let max_late = input_sizes[5..].iter().max().unwrap();
        assert!(*max_late < 2 * SERVER_INLINE_BYTES_MAX, "{input_sizes:?}");
        // A replay issues byte-identical inputs.
        let replayed = Replayer::new(registry())
            .replay(run.events().to_vec())
            .unwrap();
        assert_eq!(replayed.confirmed, live);
        assert!(replayed.finished);
    }

    fn resolve_locally(stored: &HashMap<String, ChatRequest>, hash: &str) -> Vec<Message> {
        let r = &stored[hash];
        let mut out = match r.transcript.as_ref().and_then(|t| t.prev.as_deref()) {
            None => Vec::new(),
            Some(h) => resolve_locally(stored, h),
        };
        out.extend(r.messages.clone());
        out
    }

    #[test]
    fn it_carries_over_as_plain_data() {
        let mut conv = Conversation::new(
            ChatRequest::new([Message::system("s")])
                .model("m")
                .max_tokens(10),
        );
        conv.user("u");
        let json = serde_json::to_value(&conv).unwrap();
        let back: Conversation = serde_json::from_value(json).unwrap();
        assert_eq!(back, conv);
        assert_eq!(back.len(), 2);
        let r = back.next_request();
        assert_eq!(r.model.as_deref(), Some("m"));
        assert_eq!(r.transcript.unwrap().prev, None);
    }
}
