//! The server's logs on stderr: text for people (the default) or JSON lines for machines
//! (`--log-format json`). Either way, never payloads: events log sizes and hashes.

use tracing_subscriber::EnvFilter;

/// How log lines are written.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// One human-readable line per event, with the fields of its spans.
    #[default]
    Text,
    /// One JSON object per line: `timestamp`, `level`, `target`, the event's fields at the
    /// top level (its message as `message`), the innermost span as `span` and every
    /// enclosing span as `spans` (a run update carries `run`, `namespace`, `workflow_type`,
    /// `seq`).
    Json,
}

/// For the CLI's client commands: logs on stderr only when `RUST_LOG` is set (their output
/// stays clean by default), so that the transport of a failing call can be looked at
/// (`RUST_LOG=debug steadfast run list`). Same rule as the server: sizes, never payloads or
/// tokens.
pub fn init_client() {
    if std::env::var_os("RUST_LOG").is_some() {
        init(LogFormat::Text);
    }
}

/// Capped whatever `RUST_LOG` says: tokio-postgres logs every statement's parameters at
/// debug, and those are payloads (appended events, relayed live output).
const QUIET_DEPENDENCY: &str = "tokio_postgres=info";

/// Installs the global subscriber (level from `RUST_LOG`, `info` by default). A second call
/// changes nothing (tests may start several servers in one process).
pub fn init(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| "info".into())
        .add_directive(QUIET_DEPENDENCY.parse().expect("a valid directive"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(false);
    let _ = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(true)
            .try_init(),
    };
}
