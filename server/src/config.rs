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
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            data_dir: DEFAULT_DATA_DIR.into(),
            listen: DEFAULT_LISTEN.parse().expect("valid default address"),
            retention: None,
            token_key_file: None,
        }
    }
}
