//! The request and response of one chat call: what the `llm.chat` activity takes and
//! records. Field names follow the OpenAI chat-completions format where it has one, so a
//! plain message in that format deserializes as a [`Message`].

use serde::{Deserialize, Serialize};
use steadfast_proto::v1 as pb;

use super::offline;

/// One chat message: a richer, serde-compatible superset of [`offline::Message`].
///
/// Roles: `"system"`, `"user"`, `"assistant"` (may carry [`Message::tool_calls`] instead of
/// content) and `"tool"` (the result of a tool call, with [`Message::tool_call_id`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct Message {
    /// Who speaks: "system", "user", "assistant" or "tool".
    pub role: String,
    /// The text of the message; `None` for an assistant message that only calls tools.
    #[serde(default)]
    pub content: Option<String>,
    /// Tool calls requested by the assistant.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tool_calls: Vec<ToolCall>,
    /// For role "tool": the id of the call this message answers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_call_id: Option<String>,
}

impl Message {
    /// A message with the given role and text.
    pub fn new(role: &str, content: impl Into<String>) -> Self {
        Message {
            role: role.to_owned(),
            content: Some(content.into()),
            ..Default::default()
        }
    }

    /// A system message.
    pub fn system(content: impl Into<String>) -> Self {
        Self::new("system", content)
    }

    /// A user message.
    pub fn user(content: impl Into<String>) -> Self {
        Self::new("user", content)
    }

    /// An assistant message with text.
    pub fn assistant(content: impl Into<String>) -> Self {
        Self::new("assistant", content)
    }

    /// The result of tool call `tool_call_id`, sent back to the model.
    pub fn tool_result(tool_call_id: impl Into<String>, content: impl Into<String>) -> Self {
        Message {
            role: "tool".to_owned(),
            content: Some(content.into()),
            tool_call_id: Some(tool_call_id.into()),
            ..Default::default()
        }
    }

    /// The text of the message, empty when it has none.
    pub fn text(&self) -> &str {
        self.content.as_deref().unwrap_or("")
    }
}

impl From<offline::Message> for Message {
    fn from(m: offline::Message) -> Self {
        Message {
            role: m.role,
            content: Some(m.content),
            ..Default::default()
        }
    }
}

impl From<&Message> for offline::Message {
    fn from(m: &Message) -> Self {
        offline::Message {
            role: m.role.clone(),
            content: m.text().to_owned(),
        }
    }
}

/// A tool the model may call (sent as `{"type":"function","function":{...}}`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ToolSpec {
    /// The function name the model calls.
    pub name: String,
    /// What the tool does, for the model.
    #[serde(default)]
    pub description: String,
    /// JSON Schema of the arguments.
    #[serde(default = "empty_object_schema")]
    pub parameters: serde_json::Value,
}

fn empty_object_schema() -> serde_json::Value {
    serde_json::json!({"type": "object", "properties": {}})
}

/// A tool call requested by the model.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ToolCall {
    /// The call id, echoed back in the tool's result message.
    pub id: String,
    /// The function name.
    pub name: String,
    /// The arguments as the model wrote them: a JSON text, not validated.
    pub arguments_json: String,
}

/// One chat call: the input of the `llm.chat` activity.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct ChatRequest {
    /// The model; `None` = the client's default (`STEADFAST_LLM_MODEL`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    /// Set by [`super::Conversation`]: where [`ChatRequest::messages`] sit in a longer
    /// conversation. With [`TranscriptRef::prev`], the messages only continue the transcript
    /// of an earlier call, which the `llm.chat` activity resolves before calling the model
    /// (see [`super::conversation`] for the format). `None`: the messages are the whole
    /// conversation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub transcript: Option<TranscriptRef>,
    /// The conversation so far (or, with a [`TranscriptRef::prev`], its new messages).
    pub messages: Vec<Message>,
    /// Tools the model may call.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tools: Vec<ToolSpec>,
    /// Sampling temperature; `None` = the API's default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub temperature: Option<f32>,
    /// Cap on the answer's tokens; `None` = the API's default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_tokens: Option<u32>,
}

impl ChatRequest {
    /// A request with these messages and everything else default.
    pub fn new(messages: impl IntoIterator<Item = impl Into<Message>>) -> Self {
        ChatRequest {
            messages: messages.into_iter().map(Into::into).collect(),
            ..Default::default()
        }
    }

    /// Sets the model.
    pub fn model(mut self, model: impl Into<String>) -> Self {
        self.model = Some(model.into());
        self
    }

    /// Adds a tool.
    pub fn tool(mut self, tool: ToolSpec) -> Self {
        self.tools.push(tool);
        self
    }

    /// Sets the temperature.
    pub fn temperature(mut self, temperature: f32) -> Self {
        self.temperature = Some(temperature);
        self
    }

    /// Sets the answer's token cap.
    pub fn max_tokens(mut self, max_tokens: u32) -> Self {
        self.max_tokens = Some(max_tokens);
        self
    }
}

/// Where a request's messages sit in a conversation ([`ChatRequest::transcript`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct TranscriptRef {
    /// The earlier `llm.chat` call whose full transcript comes before this request's
    /// messages: the blake3 of that call's input payload bytes, 64 lowercase hex digits (the
    /// server stores such an input once, as a blob under that hash). `None`: the request's
    /// messages are the whole transcript.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prev: Option<String>,
    /// How many messages the `prev` call's full transcript holds (0 without `prev`); checked
    /// when the reference is resolved.
    #[serde(default)]
    pub prev_messages: u64,
}

impl ChatRequest {
    /// Whether the messages continue an earlier call's transcript that must be resolved
    /// before the model sees the request.
    pub fn has_transcript_ref(&self) -> bool {
        self.transcript.as_ref().is_some_and(|t| t.prev.is_some())
    }
}

/// Tokens and cost of one call (or of several, summed).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct LlmUsage {
    /// Prompt tokens.
    pub input_tokens: u64,
    /// Completion tokens.
    pub output_tokens: u64,
    /// Millionths of a US dollar, from the [`super::PriceTable`].
    pub cost_micros: u64,
    /// The model that answered.
    pub model: String,
}

impl LlmUsage {
    /// The wire form reported with `CompleteActivityTask`.
    pub fn to_proto(&self) -> pb::Usage {
        pb::Usage {
            input_tokens: self.input_tokens,
            output_tokens: self.output_tokens,
            cost_micros: self.cost_micros,
            model: self.model.clone(),
            // Run totals only: the server counts activities and LLM calls itself.
            activities: 0,
            llm_calls: 0,
        }
    }
}

/// The answer to a [`ChatRequest`]: the output of the `llm.chat` activity.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct ChatResponse {
    /// The answer's text, if any.
    pub content: Option<String>,
    /// Tool calls the model asks for (empty when it answered in text).
    #[serde(default)]
    pub tool_calls: Vec<ToolCall>,
    /// Why the model stopped: "stop", "tool_calls", "length", ...
    pub finish_reason: String,
    /// Tokens and cost.
    pub usage: LlmUsage,
    /// Wall time of the call, ms.
    pub latency_ms: u64,
    /// The model that answered, as reported by the API.
    pub model: String,
}

impl ChatResponse {
    /// The answer as an assistant message, to append to the conversation.
    pub fn to_message(&self) -> Message {
        Message {
            role: "assistant".to_owned(),
            content: self.content.clone(),
            tool_calls: self.tool_calls.clone(),
            tool_call_id: None,
        }
    }

    /// The answer's text, empty when it has none.
    pub fn text(&self) -> &str {
        self.content.as_deref().unwrap_or("")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn openai_shaped_messages_deserialize() {
        let m: Message = serde_json::from_str(r#"{"role":"user","content":"hi"}"#).unwrap();
        assert_eq!(m, Message::user("hi"));
        let m: Message = serde_json::from_str(r#"{"role":"assistant","content":null}"#).unwrap();
        assert_eq!(m.content, None);
        let json = serde_json::to_value(Message::tool_result("call_1", "42")).unwrap();
        assert_eq!(
            json,
            serde_json::json!({"role":"tool","content":"42","tool_call_id":"call_1"})
        );
    }

    #[test]
    fn offline_messages_convert_both_ways() {
        let offline_msg = offline::Message::new("system", "be brief");
        let m: Message = offline_msg.clone().into();
        assert_eq!(offline::Message::from(&m), offline_msg);
        // The offline JSON shape is accepted as is.
        let json = serde_json::to_string(&offline_msg).unwrap();
        assert_eq!(serde_json::from_str::<Message>(&json).unwrap(), m);
    }

    #[test]
    fn request_round_trips_and_omits_defaults() {
        let r = ChatRequest::new([Message::user("x")]);
        assert_eq!(
            serde_json::to_value(&r).unwrap(),
            serde_json::json!({"messages":[{"role":"user","content":"x"}]})
        );
        let r = r.model("m").temperature(0.5).max_tokens(9).tool(ToolSpec {
            name: "f".into(),
            description: "d".into(),
            parameters: serde_json::json!({"type":"object"}),
        });
        let back: ChatRequest = serde_json::from_value(serde_json::to_value(&r).unwrap()).unwrap();
        assert_eq!(back, r);
    }
}
