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
    /// Where the store lives.
    pub data_dir: PathBuf,
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
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            data_dir: DEFAULT_DATA_DIR.into(),
            listen: DEFAULT_LISTEN.parse().expect("valid default address"),
            retention: None,
            token_key_file: None,
            history_events_max: steadfast_engine::store::HISTORY_EVENTS_MAX,
            history_bytes_max: steadfast_engine::store::HISTORY_BYTES_MAX,
            held_backoff_max_ms: crate::retry::HELD_BACKOFF_MAX_MS_DEFAULT,
            workflow_task_timeout_ms:
                steadfast_engine::store::core::WORKFLOW_TASK_TIMEOUT_MS_DEFAULT,
        }
    }
}
