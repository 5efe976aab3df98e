//! The OpenAI chat-completions wire format (`POST {base}/chat/completions`), as spoken by
//! OpenAI and by the compatible servers (Ollama, vLLM, llama.cpp, LiteLLM, ...). Only the
//! fields Steadfast uses; unknown fields are ignored.

use serde::{Deserialize, Serialize};

use super::types::{ChatRequest, Message, ToolCall, ToolSpec};

/// The request body.
#[derive(Debug, Serialize)]
pub(crate) struct Request<'a> {
    pub model: &'a str,
    pub messages: Vec<WireMessage<'a>>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub tools: Vec<WireTool<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub temperature: Option<f32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_tokens: Option<u32>,
    /// Server-sent events (see `stream.rs`); absent = one JSON answer.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub stream: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stream_options: Option<StreamOptions>,
}

/// Asks for the usage in a last chunk of a stream (OpenAI's `include_usage`).
#[derive(Debug, Serialize)]
pub(crate) struct StreamOptions {
    pub include_usage: bool,
}

impl<'a> Request<'a> {
    pub(crate) fn new(model: &'a str, req: &'a ChatRequest) -> Self {
        Request {
            model,
            messages: req.messages.iter().map(WireMessage::from).collect(),
            tools: req.tools.iter().map(WireTool::from).collect(),
            temperature: req.temperature,
            max_tokens: req.max_tokens,
            stream: false,
            stream_options: None,
        }
    }

    /// The same request, answered as a stream with the usage at its end.
    pub(crate) fn streamed(mut self) -> Self {
        self.stream = true;
        self.stream_options = Some(StreamOptions {
            include_usage: true,
        });
        self
    }
}

#[derive(Debug, Serialize)]
pub(crate) struct WireMessage<'a> {
    role: &'a str,
    // Always sent, null when absent: some servers require the key on assistant messages.
    content: Option<&'a str>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    tool_calls: Vec<WireToolCall>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tool_call_id: Option<&'a str>,
}

impl<'a> From<&'a Message> for WireMessage<'a> {
    fn from(m: &'a Message) -> Self {
        WireMessage {
            role: &m.role,
            content: m.content.as_deref(),
            tool_calls: m.tool_calls.iter().map(WireToolCall::from).collect(),
            tool_call_id: m.tool_call_id.as_deref(),
        }
    }
}

#[derive(Debug, Serialize)]
pub(crate) struct WireTool<'a> {
    r#type: &'static str,
    function: WireFunctionSpec<'a>,
}

#[derive(Debug, Serialize)]
struct WireFunctionSpec<'a> {
    name: &'a str,
    #[serde(skip_serializing_if = "str::is_empty")]
    description: &'a str,
    parameters: &'a serde_json::Value,
}

impl<'a> From<&'a ToolSpec> for WireTool<'a> {
    fn from(t: &'a ToolSpec) -> Self {
        WireTool {
            r#type: "function",
            function: WireFunctionSpec {
                name: &t.name,
                description: &t.description,
                parameters: &t.parameters,
            },
        }
    }
}

/// A tool call, in both directions.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct WireToolCall {
    #[serde(default)]
    pub(crate) id: String,
    #[serde(default = "function_type")]
    r#type: String,
    pub(crate) function: WireFunctionCall,
}

fn function_type() -> String {
    "function".to_owned()
}

#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct WireFunctionCall {
    pub(crate) name: String,
    // A JSON text; some servers send an object instead, kept as its JSON text.
    #[serde(default, deserialize_with = "arguments_text")]
    pub(crate) arguments: String,
}

pub(crate) fn arguments_text<'de, D: serde::Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    Ok(match serde_json::Value::deserialize(d)? {
        serde_json::Value::String(s) => s,
        serde_json::Value::Null => String::new(),
        other => other.to_string(),
    })
}

impl From<&ToolCall> for WireToolCall {
    fn from(c: &ToolCall) -> Self {
        WireToolCall {
            id: c.id.clone(),
            r#type: function_type(),
            function: WireFunctionCall {
                name: c.name.clone(),
                arguments: c.arguments_json.clone(),
            },
        }
    }
}

impl From<WireToolCall> for ToolCall {
    fn from(c: WireToolCall) -> Self {
        ToolCall {
            id: c.id,
            name: c.function.name,
            arguments_json: c.function.arguments,
        }
    }
}

/// The response body of a success.
#[derive(Debug, Deserialize)]
pub(crate) struct Response {
    #[serde(default)]
    pub model: Option<String>,
    #[serde(default)]
    pub choices: Vec<Choice>,
    #[serde(default)]
    pub usage: Option<WireUsage>,
}

#[derive(Debug, Deserialize)]
pub(crate) struct Choice {
    pub message: ResponseMessage,
    #[serde(default)]
    pub finish_reason: Option<String>,
}

#[derive(Debug, Deserialize)]
pub(crate) struct ResponseMessage {
    #[serde(default)]
    pub content: Option<String>,
    #[serde(default)]
    pub tool_calls: Option<Vec<WireToolCall>>,
}

#[derive(Debug, Deserialize, Default)]
pub(crate) struct WireUsage {
    #[serde(default)]
    pub prompt_tokens: u64,
    #[serde(default)]
    pub completion_tokens: u64,
}

/// The body of an error answer: `{"error":{"message":"..."}}` (OpenAI) or
/// `{"error":"..."}` (some compatible servers).
#[derive(Debug, Deserialize)]
struct ErrorBody {
    error: ErrorDetail,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum ErrorDetail {
    Object { message: String },
    Text(String),
}

/// Longest API error text quoted in an error message, in chars.
pub(crate) const ERROR_TEXT_MAX_CHARS: usize = 300;

/// The API's error message from an error body: the JSON `error.message` when there is one,
/// else the start of the body (some proxies answer with HTML or plain text).
pub(crate) fn error_message(body: &str) -> String {
    let text = match serde_json::from_str::<ErrorBody>(body) {
        Ok(ErrorBody {
            error: ErrorDetail::Object { message } | ErrorDetail::Text(message),
        }) => message,
        Err(_) => body.trim().to_owned(),
    };
    if text.is_empty() {
        return "(no error message)".to_owned();
    }
    let mut chars = text.chars();
    let head: String = chars.by_ref().take(ERROR_TEXT_MAX_CHARS).collect();
    if chars.next().is_some() {
        format!("{head}...")
    } else {
        head
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_body_is_openai_shaped() {
        let req = ChatRequest::new([
            Message::system("s"),
            Message {
                role: "assistant".into(),
                content: None,
                tool_calls: vec![ToolCall {
                    id: "c1".into(),
                    name: "f".into(),
                    arguments_json: "{\"a\":1}".into(),
                }],
                tool_call_id: None,
            },
            Message::tool_result("c1", "ok"),
        ])
        .temperature(0.0)
        .tool(ToolSpec {
            name: "f".into(),
            description: "does f".into(),
            parameters: serde_json::json!({"type":"object"}),
        });
        let body = serde_json::to_value(Request::new("m", &req)).unwrap();
        assert_eq!(
            body,
            serde_json::json!({
                "model": "m",
                "messages": [
                    {"role":"system","content":"s"},
                    {"role":"assistant","content":null,"tool_calls":[
                        {"id":"c1","type":"function","function":{"name":"f","arguments":"{\"a\":1}"}}]},
                    {"role":"tool","content":"ok","tool_call_id":"c1"}
                ],
                "tools": [{"type":"function","function":{"name":"f","description":"does f","parameters":{"type":"object"}}}],
                "temperature": 0.0
            })
        );
    }

    #[test]
    fn tool_call_arguments_may_be_an_object() {
        let c: WireToolCall =
            serde_json::from_str(r#"{"id":"x","function":{"name":"f","arguments":{"a":1}}}"#)
                .unwrap();
        assert_eq!(ToolCall::from(c).arguments_json, r#"{"a":1}"#);
    }

    #[test]
    fn error_messages_are_extracted_and_bounded() {
        assert_eq!(
            error_message(r#"{"error":{"message":"bad model","type":"invalid_request_error"}}"#),
            "bad model"
        );
        assert_eq!(
            error_message(r#"{"error":"model not found"}"#),
            "model not found"
        );
        assert_eq!(error_message("  Bad Gateway \n"), "Bad Gateway");
        assert_eq!(error_message(""), "(no error message)");
        let long = "x".repeat(1000);
        assert_eq!(
            error_message(&long).chars().count(),
            ERROR_TEXT_MAX_CHARS + 3
        );
    }
}
