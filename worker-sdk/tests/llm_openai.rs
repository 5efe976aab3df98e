//! `llm::LlmClient` against a fake OpenAI-compatible server on 127.0.0.1 (a free port,
//! stopped when the test ends): parsing, cost, tool calls, error mapping, the key header,
//! and the offline model when no API is configured. No sleeps: every wait is on a socket.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{Value, json};
use steadfast_sdk::ActivityError;
use steadfast_sdk::activity::{ActivityContext, ActivityInfo};
use steadfast_sdk::llm::{
    self, ChatRequest, LlmClient, LlmConfig, Message, ModelPrice, PriceTable, ToolSpec, offline,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::{JoinHandle, JoinSet};

/// What the fake server answers to one request.
#[derive(Clone)]
enum Reply {
    /// Status, extra headers, body.
    Http(u16, Vec<(&'static str, &'static str)>, String),
    /// Read the request, then never answer.
    Hang,
}

fn ok(body: Value) -> Reply {
    Reply::Http(200, vec![], body.to_string())
}

/// One request as the fake server received it.
#[derive(Debug, Clone)]
struct Received {
    request_line: String,
    headers: Vec<(String, String)>,
    body: String,
}

impl Received {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    fn json(&self) -> Value {
        serde_json::from_str(&self.body).expect("request body is JSON")
    }
}

/// A minimal HTTP/1.1 server: one request per connection, answered with `reply`.
struct FakeApi {
    base_url: String,
    received: Arc<Mutex<Vec<Received>>>,
    server: JoinHandle<()>,
}

impl FakeApi {
    async fn start(reply: Reply) -> FakeApi {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base_url = format!("http://{}/v1", listener.local_addr().unwrap());
        let received = Arc::new(Mutex::new(Vec::new()));
        let log = Arc::clone(&received);
        let server = tokio::spawn(async move {
            // Connections live in the set, so aborting the server closes them all.
            let mut connections = JoinSet::new();
            loop {
                let (stream, _) = listener.accept().await.unwrap();
                connections.spawn(serve(stream, reply.clone(), Arc::clone(&log)));
            }
        });
        FakeApi {
            base_url,
            received,
            server,
        }
    }

    fn client(&self, key: Option<&str>) -> LlmClient {
        let mut prices = PriceTable::default();
        prices.set("test-model", ModelPrice::new(2.0, 8.0));
        let mut config = LlmConfig::openai_compatible(&self.base_url)
            .model("test-model")
            .prices(prices);
        if let Some(key) = key {
            config = config.api_key(key);
        }
        LlmClient::new(config).unwrap()
    }

    fn received(&self) -> Vec<Received> {
        self.received.lock().unwrap().clone()
    }
}

impl Drop for FakeApi {
    fn drop(&mut self) {
        self.server.abort();
    }
}

async fn serve(mut stream: TcpStream, reply: Reply, log: Arc<Mutex<Vec<Received>>>) {
    let mut buf = Vec::new();
    let header_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        let mut chunk = [0u8; 4096];
        let n = stream.read(&mut chunk).await.unwrap();
        assert!(n > 0, "client closed before the end of the headers");
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8(buf[..header_end].to_vec()).unwrap();
    let mut lines = head.split("\r\n");
    let request_line = lines.next().unwrap().to_owned();
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
        .collect();
    let length: usize = headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case("content-length"))
        .map(|(_, v)| v.parse().unwrap())
        .unwrap_or(0);
    while buf.len() < header_end + length {
        let mut chunk = [0u8; 4096];
        let n = stream.read(&mut chunk).await.unwrap();
        assert!(n > 0, "client closed before the end of the body");
        buf.extend_from_slice(&chunk[..n]);
    }
    let body = String::from_utf8(buf[header_end..header_end + length].to_vec()).unwrap();
    log.lock().unwrap().push(Received {
        request_line,
        headers,
        body,
    });
    match reply {
        Reply::Hang => std::future::pending::<()>().await,
        Reply::Http(status, extra, body) => {
            let mut response = format!(
                "HTTP/1.1 {status} Fake\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n",
                body.len()
            );
            for (k, v) in extra {
                response.push_str(&format!("{k}: {v}\r\n"));
            }
            response.push_str("\r\n");
            response.push_str(&body);
            stream.write_all(response.as_bytes()).await.unwrap();
            stream.shutdown().await.ok();
        }
    }
}

const SECRET_PROMPT: &str = "the secret prompt text";

fn request() -> ChatRequest {
    ChatRequest::new([Message::system("be brief"), Message::user(SECRET_PROMPT)])
        .temperature(0.2)
        .max_tokens(64)
}

fn answer(message: Value, finish: &str) -> Value {
    json!({
        "id": "chatcmpl-1", "object": "chat.completion", "model": "test-model",
        "choices": [{"index": 0, "message": message, "finish_reason": finish}],
        "usage": {"prompt_tokens": 1000, "completion_tokens": 250, "total_tokens": 1250}
    })
}

fn context() -> ActivityContext {
    ActivityContext::new(ActivityInfo::default())
}

/// Runs the `llm.chat` activity with `client` and returns its failure.
async fn activity_failure(client: &LlmClient) -> (String, bool, String) {
    match client.run_activity(&context(), request()).await {
        Err(ActivityError::Failed {
            message,
            error_type,
            non_retryable,
        }) => (error_type, non_retryable, message),
        other => panic!("expected a failure, got {other:?}"),
    }
}

#[tokio::test]
async fn a_normal_answer_is_parsed_and_priced() {
    let api = FakeApi::start(ok(answer(
        json!({"role": "assistant", "content": "Hello."}),
        "stop",
    )))
    .await;
    let client = api.client(Some("sk-test-key"));
    assert!(!client.is_offline());
    let response = client.run_activity(&context(), request()).await.unwrap();
    assert_eq!(response.content.as_deref(), Some("Hello."));
    assert!(response.tool_calls.is_empty());
    assert_eq!(response.finish_reason, "stop");
    assert_eq!(response.model, "test-model");
    assert_eq!(
        (response.usage.input_tokens, response.usage.output_tokens),
        (1000, 250)
    );
    // 1,000 x $2/M + 250 x $8/M = $0.004.
    assert_eq!(response.usage.cost_micros, 4_000);

    let received = api.received();
    assert_eq!(received.len(), 1);
    let r = &received[0];
    assert!(
        r.request_line.starts_with("POST /v1/chat/completions "),
        "{}",
        r.request_line
    );
    assert_eq!(r.header("authorization"), Some("Bearer sk-test-key"));
    assert_eq!(r.header("content-type"), Some("application/json"));
    let body = r.json();
    assert_eq!(body["model"], "test-model");
    assert_eq!(
        body["messages"][1],
        json!({"role": "user", "content": SECRET_PROMPT})
    );
    assert_eq!(body["max_tokens"], 64);
    assert!((body["temperature"].as_f64().unwrap() - 0.2).abs() < 1e-6);
    assert!(body.get("tools").is_none());
}

#[tokio::test]
async fn tool_calls_are_parsed_and_tools_sent_as_functions() {
    let api = FakeApi::start(ok(answer(
        json!({"role": "assistant", "content": null, "tool_calls": [
            {"id": "call_1", "type": "function",
             "function": {"name": "lookup_order", "arguments": "{\"order_id\":\"A-7\"}"}}
        ]}),
        "tool_calls",
    )))
    .await;
    let tool = ToolSpec {
        name: "lookup_order".into(),
        description: "Finds an order".into(),
        parameters: json!({"type": "object", "properties": {"order_id": {"type": "string"}}}),
    };
    let response = api
        .client(None)
        .chat(&request().model("other-model").tool(tool))
        .await
        .unwrap();
    assert_eq!(response.content, None);
    assert_eq!(response.finish_reason, "tool_calls");
    assert_eq!(response.tool_calls.len(), 1);
    let call = &response.tool_calls[0];
    assert_eq!(
        (call.id.as_str(), call.name.as_str()),
        ("call_1", "lookup_order")
    );
    let args: Value = serde_json::from_str(&call.arguments_json).unwrap();
    assert_eq!(args["order_id"], "A-7");
    // The answer goes back into the conversation in the wire format.
    assert_eq!(response.to_message().tool_calls, response.tool_calls);

    let r = &api.received()[0];
    assert_eq!(r.header("authorization"), None, "no key, no header");
    let body = r.json();
    assert_eq!(body["model"], "other-model", "the request's model wins");
    assert_eq!(
        body["tools"][0],
        json!({"type": "function", "function": {"name": "lookup_order", "description": "Finds an order",
            "parameters": {"type": "object", "properties": {"order_id": {"type": "string"}}}}})
    );
}

#[tokio::test]
async fn rate_limits_are_retryable() {
    let api = FakeApi::start(Reply::Http(
        429,
        vec![("Retry-After", "7")],
        json!({"error": {"message": "Rate limit reached for requests", "type": "requests"}})
            .to_string(),
    ))
    .await;
    let (ty, non_retryable, message) = activity_failure(&api.client(Some("k"))).await;
    assert_eq!(
        (ty.as_str(), non_retryable),
        (llm::RATE_LIMITED_TYPE, false)
    );
    assert!(
        message.contains("429") && message.contains("Rate limit reached"),
        "{message}"
    );
    assert!(message.contains("Retry-After: 7"), "{message}");
}

#[tokio::test]
async fn server_errors_are_retryable() {
    for status in [500, 503] {
        let api = FakeApi::start(Reply::Http(status, vec![], "upstream overloaded".into())).await;
        let (ty, non_retryable, message) = activity_failure(&api.client(None)).await;
        assert_eq!(
            (ty.as_str(), non_retryable),
            (llm::SERVER_ERROR_TYPE, false)
        );
        assert!(
            message.contains(&status.to_string()) && message.contains("upstream overloaded"),
            "{message}"
        );
    }
}

#[tokio::test]
async fn bad_requests_and_auth_are_not_retried() {
    let api = FakeApi::start(Reply::Http(
        400,
        vec![],
        json!({"error": {"message": "Invalid value for 'temperature'", "type": "invalid_request_error"}})
            .to_string(),
    ))
    .await;
    let (ty, non_retryable, message) = activity_failure(&api.client(Some("sk-test-key"))).await;
    assert_eq!((ty.as_str(), non_retryable), (llm::BAD_REQUEST_TYPE, true));
    assert!(message.contains("400") && message.contains("Invalid value for 'temperature'"));
    assert!(
        !message.contains(SECRET_PROMPT) && !message.contains("sk-test-key"),
        "{message}"
    );

    let api = FakeApi::start(Reply::Http(
        401,
        vec![],
        json!({"error": {"message": "Incorrect API key provided"}}).to_string(),
    ))
    .await;
    let (ty, non_retryable, message) = activity_failure(&api.client(Some("wrong"))).await;
    assert_eq!((ty.as_str(), non_retryable), (llm::AUTH_TYPE, true));
    assert!(
        message.contains("401") && message.contains("Incorrect API key"),
        "{message}"
    );
}

#[tokio::test]
async fn malformed_answers_are_clear_errors() {
    let api = FakeApi::start(Reply::Http(200, vec![], "{\"choices\": [".into())).await;
    let e = api.client(None).chat(&request()).await.unwrap_err();
    assert_eq!(e.error_type(), llm::INVALID_RESPONSE_TYPE);
    assert!(e.to_string().contains("not a chat completion JSON"), "{e}");

    let api = FakeApi::start(ok(json!({"choices": []}))).await;
    let e = api.client(None).chat(&request()).await.unwrap_err();
    assert!(e.to_string().contains("no choices"), "{e}");
}

#[tokio::test]
async fn unreachable_and_silent_apis_are_retryable() {
    // A port that was free a moment ago: connection refused.
    let port = TcpListener::bind("127.0.0.1:0")
        .await
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let client = LlmClient::new(
        LlmConfig::openai_compatible(format!("http://127.0.0.1:{port}/v1")).model("m"),
    )
    .unwrap();
    let (ty, non_retryable, message) = activity_failure(&client).await;
    assert_eq!((ty.as_str(), non_retryable), (llm::UNAVAILABLE_TYPE, false));
    assert!(message.contains("cannot connect"), "{message}");

    // A server that reads the request and never answers: the client's timeout ends it.
    let api = FakeApi::start(Reply::Hang).await;
    let client = LlmClient::new(
        LlmConfig::openai_compatible(&api.base_url)
            .model("m")
            .timeout(Duration::from_millis(300)),
    )
    .unwrap();
    let (ty, non_retryable, message) = activity_failure(&client).await;
    assert_eq!((ty.as_str(), non_retryable), (llm::UNAVAILABLE_TYPE, false));
    assert!(message.contains("no answer within"), "{message}");
    assert_eq!(api.received().len(), 1);
}

#[tokio::test]
async fn no_base_url_means_the_offline_model() {
    let client = LlmClient::new(LlmConfig::from_lookup(|_| None).unwrap()).unwrap();
    assert!(client.is_offline());
    let request = ChatRequest::new(offline::summary_prompt(
        r#"{"total_tickets":3,"themes":[]}"#,
    ))
    .model("gpt-4o");
    let response = client
        .run_activity(&context(), request.clone())
        .await
        .unwrap();
    let messages: Vec<offline::Message> = request.messages.iter().map(Into::into).collect();
    let expected = offline::complete(&messages);
    assert_eq!(response.text(), expected);
    assert_eq!(response.model, offline::MODEL_NAME);
    assert_eq!(response.usage.model, offline::MODEL_NAME);
    let input: u64 = messages
        .iter()
        .map(|m| offline::count_tokens(&m.content))
        .sum();
    assert_eq!(response.usage.input_tokens, input);
    assert_eq!(
        response.usage.output_tokens,
        offline::count_tokens(&expected)
    );
    assert_eq!(response.usage.cost_micros, 0);
    let again = client.chat(&request).await.unwrap();
    assert_eq!(
        (again.content, again.usage),
        (response.content, response.usage)
    );
}
