//! One MCP server's session, re-established on the next call after its process (or its HTTP
//! session) went away.

use std::time::Duration;

use rmcp::model::{CallToolRequestParams, CallToolResult, Tool};
use rmcp::service::{Peer, RoleClient, RunningService, ServiceError, ServiceExt};
use rmcp::transport::{StreamableHttpClientTransport, TokioChildProcess};
use tokio::sync::Mutex;

use super::{Error, McpServer, Transport};

/// How long connecting (spawning, the MCP `initialize` handshake) may take before the
/// mount, or the call that reconnects, fails.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);

type Running = RunningService<RoleClient, ()>;

/// How a call ended when it did not return a tool result.
#[derive(Debug)]
pub(crate) enum CallError {
    /// No session could be established: nothing was sent.
    Connect(Error),
    /// The server answered the request with a JSON-RPC error: it did not run the tool
    /// (unknown tool, invalid params) or failed in a way it reported.
    Protocol(String),
    /// The session broke while the request was out: whether the tool ran is unknown.
    Lost(String),
}

/// The live session of one mounted server (none until the first connect, or after it broke).
pub(crate) struct Session {
    name: String,
    server: McpServer,
    current: Mutex<Option<Running>>,
}

impl Session {
    pub(crate) fn new(name: String, server: McpServer) -> Self {
        Session {
            name,
            server,
            current: Mutex::new(None),
        }
    }

    /// Connects (if no live session) and lists every tool (all pages).
    pub(crate) async fn list_tools(&self) -> Result<Vec<Tool>, Error> {
        let peer = self.peer().await?;
        peer.list_all_tools().await.map_err(|e| Error::ListTools {
            server: self.name.clone(),
            message: e.to_string(),
        })
    }

    /// A peer of a live session: the current one, or a new one when there is none or its
    /// transport has closed (the server process died, the HTTP session ended).
    async fn peer(&self) -> Result<Peer<RoleClient>, Error> {
        let mut slot = self.current.lock().await;
        if let Some(running) = slot.as_ref() {
            if !running.is_closed() && !running.peer().is_transport_closed() {
                return Ok(running.peer().clone());
            }
            tracing::info!(server = %self.name, "MCP session closed; reconnecting");
        }
        // Dropping the old service cancels it, which kills its child process if still there.
        *slot = None;
        let running = tokio::time::timeout(CONNECT_TIMEOUT, self.connect())
            .await
            .map_err(|_| Error::Connect {
                server: self.name.clone(),
                message: format!(
                    "no answer to initialize within {} s",
                    CONNECT_TIMEOUT.as_secs()
                ),
            })??;
        let peer = running.peer().clone();
        *slot = Some(running);
        Ok(peer)
    }

    async fn connect(&self) -> Result<Running, Error> {
        let fail = |message: String| Error::Connect {
            server: self.name.clone(),
            message,
        };
        match &self.server.transport {
            Transport::Stdio { command, args, env } => {
                let mut cmd = tokio::process::Command::new(command);
                cmd.args(args).envs(env.iter().map(|(k, v)| (k, v)));
                let child = TokioChildProcess::new(cmd)
                    .map_err(|e| fail(format!("cannot start {command:?}: {e}")))?;
                ().serve(child).await.map_err(|e| fail(e.to_string()))
            }
            Transport::Http { url } => {
                // rmcp's reqwest is built without a crypto provider (so no second one is
                // built) and panics creating its client when the process has none installed:
                // install ring, unless the application chose one.
                if rustls::crypto::CryptoProvider::get_default().is_none() {
                    // Losing a race with another installer is fine: one is installed.
                    let _ = rustls::crypto::ring::default_provider().install_default();
                }
                let transport = StreamableHttpClientTransport::from_uri(url.as_str());
                ().serve(transport).await.map_err(|e| fail(e.to_string()))
            }
        }
    }

    /// Calls `tool` with `arguments`. Dropping the returned future while the request is out
    /// (the activity was cancelled) sends the server `notifications/cancelled`: rmcp's
    /// request guard does it.
    pub(crate) async fn call(
        &self,
        tool: &str,
        arguments: serde_json::Map<String, serde_json::Value>,
    ) -> Result<CallToolResult, CallError> {
        let peer = self.peer().await.map_err(CallError::Connect)?;
        // Checked again right before sending: a session that closed between the check in
        // `peer` and here has sent nothing yet.
        if peer.is_transport_closed() {
            return Err(CallError::Connect(Error::Connect {
                server: self.name.clone(),
                message: "the session closed before the call was sent".into(),
            }));
        }
        let mut params = CallToolRequestParams::new(tool.to_owned());
        params.arguments = Some(arguments);
        match peer.call_tool(params).await {
            Ok(result) => Ok(result),
            Err(ServiceError::McpError(e)) => {
                Err(CallError::Protocol(format!("{} ({})", e.message, e.code.0)))
            }
            Err(e) => Err(CallError::Lost(e.to_string())),
        }
    }
}
