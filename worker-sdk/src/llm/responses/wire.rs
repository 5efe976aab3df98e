//! The OpenAI Responses API wire format (`POST {base}/responses`, `GET {base}/responses/{id}`):
//! the request built from a [`ChatRequest`], and the response object mapped back into the
//! fields of a [`super::super::ChatResponse`]. Only the fields Steadfast uses; unknown fields
//! and output item types (reasoning, web search, ...) are ignored.

use serde::{Deserialize, Serialize};

use super::super::Error;
use super::super::types::{ChatRequest, ToolCall, ToolSpec};
use super::super::wire::arguments_text;

/// Longest response id accepted (OpenAI's are ~50 chars).
pub(crate) const RESPONSE_ID_MAX_CHARS: usize = 200;

/// Whether `id` can name a response in a URL path as it is: 1 to [`RESPONSE_ID_MAX_CHARS`]
/// of `[A-Za-z0-9_-]`. Anything else (from a damaged history or a strange provider) is
/// never put in a URL.
pub(crate) fn valid_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= RESPONSE_ID_MAX_CHARS
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// The request body.
#[derive(Debug, Serialize)]
pub(crate) struct Request<'a> {
    pub model: &'a str,
    pub input: Vec<InputItem<'a>>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub tools: Vec<Tool<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub temperature: Option<f32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_output_tokens: Option<u32>,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub background: bool,
    /// Background mode requires stored responses; sent explicitly with it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub store: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub metadata: Option<Metadata<'a>>,
}

/// Set on the provider's response so that a generation can be traced back to its activity
/// (the provider's dashboard lists it).
#[derive(Debug, Serialize)]
pub(crate) struct Metadata<'a> {
    pub steadfast_idempotency_key: &'a str,
}

impl<'a> Request<'a> {
    pub(crate) fn new(
        model: &'a str,
        req: &'a ChatRequest,
        background: bool,
        idempotency_key: Option<&'a str>,
    ) -> Self {
        let mut input = Vec::with_capacity(req.messages.len());
        for m in &req.messages {
            if m.role == "tool" {
                input.push(InputItem::FunctionCallOutput {
                    call_id: m.tool_call_id.as_deref().unwrap_or(""),
                    output: m.text(),
                });
                continue;
            }
            // An assistant turn that only called tools has no message item.
            if m.content.is_some() || m.tool_calls.is_empty() {
                input.push(InputItem::Message {
                    role: &m.role,
                    content: m.text(),
                });
            }
            for c in &m.tool_calls {
                input.push(InputItem::FunctionCall {
                    call_id: &c.id,
                    name: &c.name,
                    arguments: &c.arguments_json,
                });
            }
        }
        Request {
            model,
            input,
            tools: req.tools.iter().map(Tool::from).collect(),
            temperature: req.temperature,
            max_output_tokens: req.max_tokens,
            background,
            store: background.then_some(true),
            metadata: idempotency_key.filter(|k| !k.is_empty()).map(|k| Metadata {
                steadfast_idempotency_key: k,
            }),
        }
    }
}

/// One item of `input`.
#[derive(Debug, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub(crate) enum InputItem<'a> {
    Message {
        role: &'a str,
        content: &'a str,
    },
    FunctionCall {
        call_id: &'a str,
        name: &'a str,
        arguments: &'a str,
    },
    FunctionCallOutput {
        call_id: &'a str,
        output: &'a str,
    },
}

/// A function tool (flat in this API, unlike chat completions).
#[derive(Debug, Serialize)]
pub(crate) struct Tool<'a> {
    r#type: &'static str,
    name: &'a str,
    #[serde(skip_serializing_if = "str::is_empty")]
    description: &'a str,
    parameters: &'a serde_json::Value,
    /// The API defaults to strict schemas, which reject the schemas chat completions
    /// accept (optional properties, no `additionalProperties: false`): same behaviour on
    /// both wires.
    strict: bool,
}

impl<'a> From<&'a ToolSpec> for Tool<'a> {
    fn from(t: &'a ToolSpec) -> Self {
        Tool {
            r#type: "function",
            name: &t.name,
            description: &t.description,
            parameters: &t.parameters,
            strict: false,
        }
    }
}

/// Where a response stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Status {
    Queued,
    InProgress,
    Completed,
    Failed,
    Cancelled,
    Incomplete,
    /// A status this code does not know; waited on like `in_progress`.
    Other(String),
}

impl Status {
    fn parse(s: Option<&str>) -> Status {
        match s {
            // Some compatible servers answer a synchronous call without a status.
            None | Some("completed") => Status::Completed,
            Some("queued") => Status::Queued,
            Some("in_progress") => Status::InProgress,
            Some("failed") => Status::Failed,
            Some("cancelled") => Status::Cancelled,
            Some("incomplete") => Status::Incomplete,
            Some(other) => Status::Other(other.chars().take(40).collect()),
        }
    }

    /// Whether the response will not change any more.
    pub(crate) fn is_terminal(&self) -> bool {
        matches!(
            self,
            Status::Completed | Status::Failed | Status::Cancelled | Status::Incomplete
        )
    }

    pub(crate) fn as_str(&self) -> &str {
        match self {
            Status::Queued => "queued",
            Status::InProgress => "in_progress",
            Status::Completed => "completed",
            Status::Failed => "failed",
            Status::Cancelled => "cancelled",
            Status::Incomplete => "incomplete",
            Status::Other(s) => s,
        }
    }
}

/// The response object (the answer of a create, a retrieve or a cancel).
#[derive(Debug, Deserialize)]
pub(crate) struct Response {
    pub id: String,
    #[serde(default)]
    status: Option<String>,
    #[serde(default)]
    pub model: Option<String>,
    #[serde(default)]
    output: Vec<OutputItem>,
    #[serde(default)]
    usage: Option<Usage>,
    #[serde(default)]
    error: Option<ErrorObject>,
    #[serde(default)]
    incomplete_details: Option<IncompleteDetails>,
}

#[derive(Debug, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum OutputItem {
    Message {
        #[serde(default)]
        content: Vec<Content>,
    },
    FunctionCall {
        #[serde(default)]
        call_id: String,
        name: String,
        #[serde(default, deserialize_with = "arguments_text")]
        arguments: String,
    },
    #[serde(other)]
    Other,
}

#[derive(Debug, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum Content {
    OutputText {
        #[serde(default)]
        text: String,
    },
    Refusal {
        #[serde(default)]
        refusal: String,
    },
    #[serde(other)]
    Other,
}

#[derive(Debug, Deserialize, Default, Clone, Copy)]
pub(crate) struct Usage {
    #[serde(default)]
    pub input_tokens: u64,
    #[serde(default)]
    pub output_tokens: u64,
}

#[derive(Debug, Deserialize)]
struct ErrorObject {
    #[serde(default)]
    code: Option<String>,
    #[serde(default)]
    message: Option<String>,
}

#[derive(Debug, Deserialize)]
struct IncompleteDetails {
    #[serde(default)]
    reason: Option<String>,
}

/// What a finished response says, in the terms of a chat completion.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Answer {
    pub content: Option<String>,
    pub tool_calls: Vec<ToolCall>,
    pub finish_reason: String,
}

impl Response {
    /// Parses a response body.
    pub(crate) fn parse(body: &str) -> Result<Response, Error> {
        let r: Response = serde_json::from_str(body).map_err(|e| {
            Error::InvalidResponse(format!("body is not a Responses API object: {e}"))
        })?;
        if !valid_id(&r.id) {
            return Err(Error::InvalidResponse(format!(
                "the response id {:?} is not 1 to {RESPONSE_ID_MAX_CHARS} of [A-Za-z0-9_-]",
                r.id.chars().take(40).collect::<String>()
            )));
        }
        Ok(r)
    }

    pub(crate) fn status(&self) -> Status {
        Status::parse(self.status.as_deref())
    }

    pub(crate) fn usage(&self) -> Usage {
        self.usage.unwrap_or_default()
    }

    /// The answer of a `completed` or `incomplete` response; the typed error of a `failed`
    /// or `cancelled` one.
    pub(crate) fn answer(&self) -> Result<Answer, Error> {
        let status = self.status();
        if matches!(status, Status::Failed | Status::Cancelled) {
            let (code, message) = match &self.error {
                Some(e) => (e.code.clone(), e.message.clone()),
                None => (None, None),
            };
            return Err(Error::Job {
                status: status.as_str().to_owned(),
                code: code.unwrap_or_else(|| status.as_str().to_owned()),
                message: super::super::wire::error_message(
                    message.as_deref().unwrap_or("(no error message)"),
                ),
            });
        }
        let mut text: Option<String> = None;
        let mut refusal: Option<String> = None;
        let mut tool_calls = Vec::new();
        for item in &self.output {
            match item {
                OutputItem::Message { content } => {
                    for c in content {
                        match c {
                            Content::OutputText { text: t } => {
                                text.get_or_insert_with(String::new).push_str(t)
                            }
                            Content::Refusal { refusal: r } => {
                                refusal.get_or_insert_with(String::new).push_str(r)
                            }
                            Content::Other => {}
                        }
                    }
                }
                OutputItem::FunctionCall {
                    call_id,
                    name,
                    arguments,
                } => tool_calls.push(ToolCall {
                    id: call_id.clone(),
                    name: name.clone(),
                    arguments_json: arguments.clone(),
                }),
                OutputItem::Other => {}
            }
        }
        let finish_reason = match status {
            Status::Incomplete => match self
                .incomplete_details
                .as_ref()
                .and_then(|d| d.reason.as_deref())
            {
                Some("max_output_tokens") | None => "length".to_owned(),
                Some(other) => other.chars().take(40).collect(),
            },
            _ if !tool_calls.is_empty() => "tool_calls".to_owned(),
            _ if text.is_none() && refusal.is_some() => "refusal".to_owned(),
            _ => "stop".to_owned(),
        };
        Ok(Answer {
            content: text.or(refusal),
            tool_calls,
            finish_reason,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::llm::Message;
    use serde_json::json;

    #[test]
    fn the_request_maps_messages_tools_and_background() {
        let req = ChatRequest::new([
            Message::system("be brief"),
            Message::user("weather in Paris?"),
            Message {
                role: "assistant".into(),
                content: None,
                tool_calls: vec![ToolCall {
                    id: "call_1".into(),
                    name: "weather".into(),
                    arguments_json: r#"{"city":"Paris"}"#.into(),
                }],
                tool_call_id: None,
            },
            Message::tool_result("call_1", "sunny"),
        ])
        .max_tokens(50)
        .tool(ToolSpec {
            name: "weather".into(),
            description: "".into(),
            parameters: json!({"type":"object"}),
        });
        let body =
            serde_json::to_value(Request::new("gpt-x", &req, true, Some("ns/run/3"))).unwrap();
        assert_eq!(
            body,
            json!({
                "model": "gpt-x",
                "input": [
                    {"type":"message","role":"system","content":"be brief"},
                    {"type":"message","role":"user","content":"weather in Paris?"},
                    {"type":"function_call","call_id":"call_1","name":"weather","arguments":"{\"city\":\"Paris\"}"},
                    {"type":"function_call_output","call_id":"call_1","output":"sunny"}
                ],
                "tools": [{"type":"function","name":"weather","parameters":{"type":"object"},"strict":false}],
                "max_output_tokens": 50,
                "background": true,
                "store": true,
                "metadata": {"steadfast_idempotency_key": "ns/run/3"}
            })
        );
        let plain = serde_json::to_value(Request::new("m", &req, false, None)).unwrap();
        assert!(plain.get("background").is_none() && plain.get("store").is_none());
        assert!(plain.get("metadata").is_none());
    }

    #[test]
    fn a_completed_response_maps_text_tool_calls_and_usage() {
        let r = Response::parse(
            &json!({
                "id": "resp_1", "object": "response", "status": "completed", "model": "gpt-x-2025",
                "output": [
                    {"type":"reasoning","id":"rs_1","summary":[]},
                    {"type":"message","role":"assistant","content":[
                        {"type":"output_text","text":"Hello ","annotations":[]},
                        {"type":"output_text","text":"there"}]},
                    {"type":"function_call","call_id":"call_9","name":"f","arguments":"{\"a\":1}"},
                    {"type":"function_call","call_id":"call_10","name":"g","arguments":{"b":2}}
                ],
                "usage": {"input_tokens": 12, "output_tokens": 7, "total_tokens": 19}
            })
            .to_string(),
        )
        .unwrap();
        assert_eq!(r.status(), Status::Completed);
        assert_eq!(r.model.as_deref(), Some("gpt-x-2025"));
        assert_eq!((r.usage().input_tokens, r.usage().output_tokens), (12, 7));
        let a = r.answer().unwrap();
        assert_eq!(a.content.as_deref(), Some("Hello there"));
        assert_eq!(a.finish_reason, "tool_calls");
        assert_eq!(
            a.tool_calls,
            vec![
                ToolCall {
                    id: "call_9".into(),
                    name: "f".into(),
                    arguments_json: r#"{"a":1}"#.into()
                },
                ToolCall {
                    id: "call_10".into(),
                    name: "g".into(),
                    arguments_json: r#"{"b":2}"#.into()
                },
            ]
        );
    }

    #[test]
    fn statuses_and_endings_map() {
        let parse = |v: serde_json::Value| Response::parse(&v.to_string()).unwrap();
        let queued = parse(json!({"id":"resp_q","status":"queued"}));
        assert!(!queued.status().is_terminal());
        assert!(
            !parse(json!({"id":"r","status":"in_progress"}))
                .status()
                .is_terminal()
        );
        assert!(
            !parse(json!({"id":"r","status":"thinking_hard"}))
                .status()
                .is_terminal()
        );

        let cut = parse(json!({"id":"r","status":"incomplete",
            "incomplete_details":{"reason":"max_output_tokens"},
            "output":[{"type":"message","content":[{"type":"output_text","text":"par"}]}]}));
        let a = cut.answer().unwrap();
        assert_eq!(
            (a.content.as_deref(), a.finish_reason.as_str()),
            (Some("par"), "length")
        );
        let filtered = parse(json!({"id":"r","status":"incomplete",
            "incomplete_details":{"reason":"content_filter"}}));
        assert_eq!(filtered.answer().unwrap().finish_reason, "content_filter");

        let refused = parse(json!({"id":"r","status":"completed","output":[
            {"type":"message","content":[{"type":"refusal","refusal":"no"}]}]}));
        let a = refused.answer().unwrap();
        assert_eq!(
            (a.content.as_deref(), a.finish_reason.as_str()),
            (Some("no"), "refusal")
        );

        let failed = parse(json!({"id":"r","status":"failed",
            "error":{"code":"rate_limit_exceeded","message":"slow down"}}));
        let e = failed.answer().unwrap_err();
        assert_eq!(e.error_type(), crate::llm::RATE_LIMITED_TYPE);
        assert!(e.to_string().contains("slow down"), "{e}");
        let bad = parse(json!({"id":"r","status":"failed",
            "error":{"code":"invalid_prompt","message":"nope"}}));
        assert!(!bad.answer().unwrap_err().is_retryable());
        let cancelled = parse(json!({"id":"r","status":"cancelled"}));
        let e = cancelled.answer().unwrap_err();
        assert!(e.is_retryable(), "{e}");
    }

    #[test]
    fn bad_bodies_and_ids_are_invalid_responses() {
        for body in [
            "not json".to_owned(),
            json!({"status":"completed"}).to_string(),
            json!({"id":"../../admin","status":"queued"}).to_string(),
            json!({"id":"","status":"queued"}).to_string(),
            json!({"id":"x".repeat(RESPONSE_ID_MAX_CHARS + 1)}).to_string(),
        ] {
            let e = Response::parse(&body).unwrap_err();
            assert_eq!(e.error_type(), crate::llm::INVALID_RESPONSE_TYPE, "{body}");
        }
        assert!(valid_id("resp_68af-9Z"));
    }
}
