//! Assembles the services over an embedded store and serves them until shutdown.

use crate::config::ServerConfig;

/// Opens the store in `config.data_dir`, listens on `config.listen` and serves until SIGTERM
/// or ctrl-c, then shuts down gracefully.
pub async fn run(config: ServerConfig) -> anyhow::Result<()> {
    anyhow::bail!("server not wired yet: {config:?}")
}
