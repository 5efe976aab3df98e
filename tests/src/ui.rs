//! The web UI from a test: a server with `--ui-listen` on a free loopback port, a JSON client
//! for its API (with or without a bearer token), and a reader of its server-sent events.

use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use serde_json::Value;

use crate::Server;

/// A free loopback port (the listener is dropped at once; the server binds it next).
pub fn free_port() -> Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// Starts a server with the UI on a free port; its base URL (`http://127.0.0.1:PORT`).
pub fn start_ui_server(data_dir: &Path, extra: &[&str]) -> Result<(Server, String)> {
    let port = free_port()?;
    let listen = format!("127.0.0.1:{port}");
    let mut args = vec!["--ui-listen", listen.as_str()];
    args.extend_from_slice(extra);
    let server = Server::start_with(data_dir, None, &args)?;
    let base = format!("http://{listen}");
    // The UI is bound before the gRPC port is announced; wait for it to answer anyway.
    crate::retry(Duration::from_secs(20), "the UI answers", || {
        std::net::TcpStream::connect(("127.0.0.1", port))?;
        Ok(())
    })?;
    Ok((server, base))
}

/// The UI's JSON API, as one caller.
#[derive(Clone)]
pub struct Api {
    http: reqwest::Client,
    base: String,
    token: Option<String>,
}

/// One server-sent event.
#[derive(Debug, Clone, Default)]
pub struct SseEvent {
    /// `id:`.
    pub id: Option<String>,
    /// `event:`.
    pub event: String,
    /// `data:`, parsed.
    pub data: Value,
}

impl Api {
    /// At `base`, sending `token` (or none).
    pub fn new(base: &str, token: Option<&str>) -> Api {
        Api {
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(60))
                .build()
                .expect("http client"),
            base: base.to_string(),
            token: token.map(str::to_string),
        }
    }

    fn req(&self, m: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        let r = self.http.request(m, format!("{}{path}", self.base));
        match &self.token {
            Some(t) => r.bearer_auth(t),
            None => r,
        }
    }

    /// `GET path`: the status and the body (JSON, or a string when it is not JSON).
    pub async fn get(&self, path: &str) -> Result<(u16, Value)> {
        let resp = self.req(reqwest::Method::GET, path).send().await?;
        answer(resp).await
    }

    /// `GET path`, the body as text.
    pub async fn get_text(&self, path: &str) -> Result<(u16, String)> {
        let resp = self.req(reqwest::Method::GET, path).send().await?;
        Ok((resp.status().as_u16(), resp.text().await?))
    }

    /// `POST path` with a JSON body.
    pub async fn post(&self, path: &str, body: &Value) -> Result<(u16, Value)> {
        let resp = self
            .req(reqwest::Method::POST, path)
            .header("content-type", "application/json")
            .body(body.to_string())
            .send()
            .await?;
        answer(resp).await
    }

    /// `GET path` as an event stream, resuming after `last_event_id` when given.
    pub async fn sse(&self, path: &str, last_event_id: Option<&str>) -> Result<Sse> {
        let mut r = self
            .http
            .get(format!("{}{path}", self.base))
            .header("accept", "text/event-stream");
        if let Some(t) = &self.token {
            r = r.bearer_auth(t);
        }
        if let Some(id) = last_event_id {
            r = r.header("last-event-id", id);
        }
        // No overall timeout: a stream lives as long as the test reads it.
        let resp = r.timeout(Duration::from_secs(3600)).send().await?;
        if !resp.status().is_success() {
            let s = resp.status();
            bail!("{path}: {s}: {}", resp.text().await.unwrap_or_default());
        }
        Ok(Sse {
            resp,
            buf: String::new(),
        })
    }
}

async fn answer(resp: reqwest::Response) -> Result<(u16, Value)> {
    let status = resp.status().as_u16();
    let text = resp.text().await?;
    let v = serde_json::from_str(&text).unwrap_or(Value::String(text));
    Ok((status, v))
}

/// An open event stream.
pub struct Sse {
    resp: reqwest::Response,
    buf: String,
}

impl Sse {
    /// The next event (comments skipped), waiting at most `timeout`; `None` when the stream
    /// ended.
    pub async fn next(&mut self, timeout: Duration) -> Result<Option<SseEvent>> {
        let end = tokio::time::Instant::now() + timeout;
        loop {
            if let Some(i) = self.buf.find("\n\n") {
                let block: String = self.buf.drain(..i + 2).collect();
                let mut ev = SseEvent::default();
                let mut data = String::new();
                for line in block.lines() {
                    if let Some(v) = line.strip_prefix("id:") {
                        ev.id = Some(v.trim().to_string());
                    } else if let Some(v) = line.strip_prefix("event:") {
                        ev.event = v.trim().to_string();
                    } else if let Some(v) = line.strip_prefix("data:") {
                        data.push_str(v.strip_prefix(' ').unwrap_or(v));
                    }
                }
                if ev.event.is_empty() && data.is_empty() {
                    continue; // a keep-alive comment
                }
                ev.data = serde_json::from_str(&data).with_context(|| format!("data: {data}"))?;
                return Ok(Some(ev));
            }
            let chunk = tokio::time::timeout_at(end, self.resp.chunk())
                .await
                .context("no server-sent event in time")??;
            match chunk {
                Some(c) => self.buf.push_str(&String::from_utf8_lossy(&c)),
                None => return Ok(None),
            }
        }
    }
}
