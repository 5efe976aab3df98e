//! [`ClientConfig`]: where the server is and who we are.

use std::time::Duration;

use tonic::transport::Endpoint;

use super::Error;

/// The server address used when none is given.
pub const DEFAULT_ADDR: &str = "http://127.0.0.1:7233";

/// Where the server is and how to talk to it.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// "http://host:port".
    pub addr: String,
    /// The namespace of every call ("default").
    pub namespace: String,
    /// Who is calling, recorded with signals, cancels and starts.
    pub identity: String,
    /// How long to wait for a connection.
    pub connect_timeout: Duration,
    /// Largest message sent or received.
    pub max_message_bytes: usize,
}

impl ClientConfig {
    /// The defaults, for server `addr`.
    pub fn new(addr: impl Into<String>) -> Self {
        ClientConfig {
            addr: addr.into(),
            namespace: "default".into(),
            identity: format!("sdk@{}", std::process::id()),
            connect_timeout: Duration::from_secs(5),
            max_message_bytes: 64 << 20,
        }
    }

    /// `STEADFAST_ADDR` (default [`DEFAULT_ADDR`]) and `STEADFAST_NAMESPACE` (default
    /// "default").
    pub fn from_env() -> Self {
        let mut c = ClientConfig::new(
            std::env::var("STEADFAST_ADDR").unwrap_or_else(|_| DEFAULT_ADDR.into()),
        );
        if let Ok(ns) = std::env::var("STEADFAST_NAMESPACE") {
            c.namespace = ns;
        }
        c
    }

    /// Sets the namespace.
    pub fn namespace(mut self, namespace: impl Into<String>) -> Self {
        self.namespace = namespace.into();
        self
    }

    /// Sets the identity.
    pub fn identity(mut self, identity: impl Into<String>) -> Self {
        self.identity = identity.into();
        self
    }

    pub(crate) fn endpoint(&self) -> Result<Endpoint, Error> {
        let addr = if self.addr.contains("://") {
            self.addr.clone()
        } else {
            format!("http://{}", self.addr)
        };
        Ok(Endpoint::from_shared(addr)
            .map_err(|e| Error::BadAddress {
                addr: self.addr.clone(),
                message: e.to_string(),
            })?
            .connect_timeout(self.connect_timeout)
            .tcp_nodelay(true)
            .http2_keep_alive_interval(Duration::from_secs(30))
            .keep_alive_while_idle(true))
    }
}

impl From<&str> for ClientConfig {
    fn from(addr: &str) -> Self {
        ClientConfig::new(addr)
    }
}

impl From<String> for ClientConfig {
    fn from(addr: String) -> Self {
        ClientConfig::new(addr)
    }
}
