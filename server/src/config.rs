//! Server configuration.

use std::net::SocketAddr;
use std::path::PathBuf;

/// Default data directory, relative to the working directory.
pub const DEFAULT_DATA_DIR: &str = "./steadfast-data";
/// Default listen address: loopback only.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:7233";

/// How to run a server.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Where the embedded store lives (unused with `store`).
    pub data_dir: PathBuf,
    /// A PostgreSQL URL (`postgres://...`): several nodes share that database instead of the
    /// embedded store in `data_dir`.
    pub store: Option<String>,
    /// This node's id among several over one PostgreSQL (default: host name and port).
    pub node_id: Option<String>,
    /// With `store`: how often this node looks for work a crash of any node left undone.
    pub reconcile_period_ms: u64,
    /// Where to listen.
    pub listen: SocketAddr,
    /// How long closed runs are kept before retention drops them; `None` keeps them.
    pub retention: Option<std::time::Duration>,
    /// The key that signs task tokens; `None` = `<data_dir>/token.key`, generated once.
    /// Nodes that share one key accept each other's tokens.
    pub token_key_file: Option<PathBuf>,
    /// Most events one history may hold (the store's hard limit; see
    /// `steadfast_engine::store::limits` for what is refused near it).
    pub history_events_max: u64,
    /// Most bytes one history may hold.
    pub history_bytes_max: u64,
    /// Longest delay before a held run's workflow task is offered again.
    pub held_backoff_max_ms: u64,
    /// How long a worker may hold a workflow task before it is timed out and offered again
    /// (recorded with each WorkflowTaskStarted).
    pub workflow_task_timeout_ms: u64,
    /// Who may call: bearer tokens, hashed, with roles and namespaces (`crate::auth`). `None`
    /// lets every caller do everything, so the server then listens only on loopback unless
    /// [`ServerConfig::insecure_listen_any`].
    pub auth_file: Option<PathBuf>,
    /// TLS (and mutual TLS with a client CA); `None` serves plaintext HTTP/2.
    pub tls: Option<TlsFiles>,
    /// Listen on a non-loopback address even without an auth file.
    pub insecure_listen_any: bool,
    /// What callers may ask (`--limit NAME=VALUE`; see `crate::limits`).
    pub limits: crate::limits::Limits,
    /// Where to serve Prometheus metrics (`GET /metrics`, plain HTTP); `None` serves none.
    /// The endpoint has no authentication, so it is loopback only unless
    /// [`ServerConfig::insecure_listen_any`].
    pub metrics_listen: Option<SocketAddr>,
    /// Export spans from the log to this OTLP/HTTP collector (`{url}/v1/traces`, JSON);
    /// `None` exports none.
    pub otlp_endpoint: Option<String>,
    /// Where to serve the web UI (plain HTTP); `None` serves none. Loopback only unless
    /// [`ServerConfig::insecure_listen_any`], like the metrics.
    pub ui_listen: Option<SocketAddr>,
    /// The UI refuses every write (403).
    pub ui_read_only: bool,
}

/// The PEM files of the server's TLS.
#[derive(Debug, Clone)]
pub struct TlsFiles {
    /// The server's certificate chain.
    pub cert: PathBuf,
    /// Its private key.
    pub key: PathBuf,
    /// With it, clients must present a certificate signed by this CA (mutual TLS).
    pub client_ca: Option<PathBuf>,
}

/// Why a configuration is refused before the server starts.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Anyone who can reach the address could do anything.
    #[error(
        "refusing to listen on {0} without authentication: anyone who can reach it could start, read, cancel or complete any run. Give --auth-file (see README, Security), listen on loopback (127.0.0.1), or pass --insecure-listen-any if a firewall or proxy in front does the job"
    )]
    OpenListen(SocketAddr),
    /// The metrics endpoint has no authentication of its own.
    #[error(
        "refusing to serve metrics on {0}: the metrics endpoint has no authentication (--auth-file does not cover it), and its counts name workflow and activity types. Listen on loopback (--metrics-listen 127.0.0.1:9464) and scrape through a proxy, or pass --insecure-listen-any if a firewall in front does the job"
    )]
    OpenMetricsListen(SocketAddr),
    /// The UI over plain HTTP: tokens would cross the network in clear text.
    #[error(
        "refusing to serve the UI on {0}: it is plain HTTP, so bearer tokens and run data would cross the network unencrypted. Listen on loopback (--ui-listen 127.0.0.1:7280) and reach it through an SSH tunnel or a TLS proxy, or pass --insecure-listen-any if such a proxy is in front"
    )]
    OpenUiListen(SocketAddr),
}

impl ServerConfig {
    /// The loopback rule: without an auth file, only a loopback address (unless
    /// [`ServerConfig::insecure_listen_any`]).
    pub fn check_listen(&self) -> Result<(), Error> {
        if self.auth_file.is_none() && !self.insecure_listen_any && !self.listen.ip().is_loopback()
        {
            return Err(Error::OpenListen(self.listen));
        }
        if let Some(m) = self.metrics_listen
            && !self.insecure_listen_any
            && !m.ip().is_loopback()
        {
            return Err(Error::OpenMetricsListen(m));
        }
        if let Some(u) = self.ui_listen
            && !self.insecure_listen_any
            && !u.ip().is_loopback()
        {
            return Err(Error::OpenUiListen(u));
        }
        Ok(())
    }
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            data_dir: DEFAULT_DATA_DIR.into(),
            store: None,
            node_id: None,
            reconcile_period_ms: 30_000,
            listen: DEFAULT_LISTEN.parse().expect("valid default address"),
            retention: None,
            token_key_file: None,
            history_events_max: steadfast_engine::store::HISTORY_EVENTS_MAX,
            history_bytes_max: steadfast_engine::store::HISTORY_BYTES_MAX,
            held_backoff_max_ms: crate::retry::HELD_BACKOFF_MAX_MS_DEFAULT,
            workflow_task_timeout_ms:
                steadfast_engine::store::core::WORKFLOW_TASK_TIMEOUT_MS_DEFAULT,
            auth_file: None,
            tls: None,
            insecure_listen_any: false,
            limits: crate::limits::Limits::default(),
            metrics_listen: None,
            otlp_endpoint: None,
            ui_listen: None,
            ui_read_only: false,
        }
    }
}

impl ServerConfig {
    /// The store, for logs: the data dir, or the PostgreSQL URL without its credentials.
    pub fn store_label(&self) -> String {
        match &self.store {
            None => self.data_dir.display().to_string(),
            Some(url) => redact_url(url),
        }
    }
}

/// `postgres://user:secret@host/db` without the user info (never log a password).
pub fn redact_url(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            format!("{}://***@{}", &url[..scheme], &url[at + 1..])
        }
        _ => url.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn without_auth_only_loopback_is_served() {
        let at = |listen: &str, auth: bool, insecure: bool| ServerConfig {
            listen: listen.parse().unwrap(),
            auth_file: auth.then(|| "auth".into()),
            insecure_listen_any: insecure,
            ..ServerConfig::default()
        };
        assert!(at("127.0.0.1:1", false, false).check_listen().is_ok());
        assert!(at("[::1]:1", false, false).check_listen().is_ok());
        let e = at("0.0.0.0:1", false, false).check_listen().unwrap_err();
        assert!(e.to_string().contains("--auth-file"), "{e}");
        assert!(at("0.0.0.0:1", true, false).check_listen().is_ok());
        assert!(at("0.0.0.0:1", false, true).check_listen().is_ok());
    }

    #[test]
    fn metrics_are_served_on_loopback_only_unless_insecure() {
        let at = |metrics: &str, auth: bool, insecure: bool| ServerConfig {
            metrics_listen: Some(metrics.parse().unwrap()),
            auth_file: auth.then(|| "auth".into()),
            insecure_listen_any: insecure,
            ..ServerConfig::default()
        };
        assert!(at("127.0.0.1:9464", false, false).check_listen().is_ok());
        // An auth file protects the gRPC API, not the metrics endpoint.
        let e = at("0.0.0.0:9464", true, false).check_listen().unwrap_err();
        assert!(e.to_string().contains("--metrics-listen 127.0.0.1"), "{e}");
        assert!(at("0.0.0.0:9464", false, true).check_listen().is_ok());
    }

    #[test]
    fn the_ui_is_served_on_loopback_only_unless_insecure() {
        let at = |ui: &str, auth: bool, insecure: bool| ServerConfig {
            ui_listen: Some(ui.parse().unwrap()),
            auth_file: auth.then(|| "auth".into()),
            insecure_listen_any: insecure,
            ..ServerConfig::default()
        };
        assert!(at("127.0.0.1:7280", false, false).check_listen().is_ok());
        // Tokens protect the API, but plain HTTP would carry them in clear text.
        let e = at("0.0.0.0:7280", true, false).check_listen().unwrap_err();
        assert!(e.to_string().contains("--ui-listen 127.0.0.1"), "{e}");
        assert!(at("0.0.0.0:7280", true, true).check_listen().is_ok());
    }
}
