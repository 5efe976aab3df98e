//! The `steadfast` command line: `steadfast server` runs the server; every other command talks
//! gRPC to one (`--addr`, `STEADFAST_ADDR`).
//!
//! Conventions: data on stdout (run ids, results, tables, JSON lines), everything else on
//! stderr, no colour; the exit code says how it went (see [`exit`]). Pure logic (parsing,
//! rendering, replay) lives in functions with tests beside them; the network code is thin.

mod approve;
mod auth;
mod check;
mod client;
mod diff;
#[cfg(test)]
mod diff_tests;
pub(crate) mod events;
mod export;
pub(crate) mod fmt;
mod follow;
mod fork;
mod history;
mod live;
#[cfg(test)]
mod net_tests;
mod operate;
mod parse;
pub(crate) mod render;
pub(crate) mod replay;
mod run;
mod schedule;
mod search;
mod steer;
mod task_queue;
mod verify;

use std::ffi::OsString;
use std::io::Write;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::config::{DEFAULT_DATA_DIR, DEFAULT_LISTEN, ServerConfig};

/// Exit codes. Stable: scripts and tests depend on them.
pub mod exit {
    /// Success; for `run result` / `run watch`: the run completed.
    pub const OK: u8 = 0;
    /// The command failed: server unreachable, run not found, request refused, I/O error.
    pub const ERROR: u8 = 1;
    /// The command line is wrong (unknown flag, bad JSON, bad duration...).
    pub const USAGE: u8 = 2;
    /// The run failed.
    pub const FAILED: u8 = 3;
    /// The run was cancelled.
    pub const CANCELLED: u8 = 4;
    /// The run was terminated.
    pub const TERMINATED: u8 = 5;
    /// The run timed out (its run timeout).
    pub const TIMED_OUT: u8 = 6;
    /// The run is still open (`run result` without `--wait`, or `--timeout` passed).
    pub const RUNNING: u8 = 7;
    /// The history does not verify: a break in the hash chain, a gap, or an event the state
    /// machine refuses (`history replay`, `history verify`).
    pub const CORRUPT: u8 = 8;
    /// `workflow check`: at least one open run does not replay on the checked code.
    pub const DIVERGED: u8 = 9;
}

const EXIT_CODES: &str = "\
Exit codes:
  0  success; for `run result` and `run watch`: the run completed
  1  error: server unreachable, run not found, request refused
  2  bad command line (unknown flag, invalid JSON, bad duration)
  3  the run failed
  4  the run was cancelled
  5  the run was terminated
  6  the run timed out
  7  the run is still running (`run result` without --wait, or --timeout passed)
  8  the history does not verify (hash chain break, gap, illegal event)
  9  `workflow check`: an open run does not replay on the new code

Data goes to stdout, messages to stderr. Server address: --addr or STEADFAST_ADDR.";

/// How a command ended, when not with success: an exit code and what to say on stderr.
#[derive(Debug)]
pub struct Exit {
    /// The process exit code (see [`exit`]).
    pub code: u8,
    /// Printed on stderr as is, when set.
    pub message: Option<String>,
}

impl Exit {
    /// A failure ([`exit::ERROR`]): `error: <msg>`.
    pub fn error(msg: impl std::fmt::Display) -> Exit {
        Exit {
            code: exit::ERROR,
            message: Some(format!("error: {msg}")),
        }
    }

    /// A wrong command line ([`exit::USAGE`]).
    pub fn usage(msg: impl std::fmt::Display) -> Exit {
        Exit {
            code: exit::USAGE,
            message: Some(format!("error: {msg}")),
        }
    }

    /// Any code, with a message printed as is.
    pub fn with(code: u8, msg: impl Into<String>) -> Exit {
        Exit {
            code,
            message: Some(msg.into()),
        }
    }

    /// Any code, nothing more to say.
    pub fn quiet(code: u8) -> Exit {
        Exit {
            code,
            message: None,
        }
    }
}

/// Result of a command.
pub type Outcome = Result<(), Exit>;

/// Writes data to stdout. A closed pipe (`| head`) ends the command quietly.
pub fn out(data: &[u8]) -> Outcome {
    #[cfg(test)]
    if net_tests::capture(data) {
        return Ok(());
    }
    let mut stdout = std::io::stdout().lock();
    match stdout.write_all(data).and_then(|_| stdout.flush()) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Err(Exit::quiet(exit::OK)),
        Err(e) => Err(Exit::error(format!("cannot write to stdout: {e}"))),
    }
}

/// Writes one line of data to stdout.
pub fn out_line(line: &str) -> Outcome {
    out(format!("{line}\n").as_bytes())
}

/// Writes a message to stderr; never fails.
pub fn note(msg: &str) {
    let _ = writeln!(std::io::stderr().lock(), "{msg}");
}

/// The Steadfast server and admin CLI.
#[derive(Parser, Debug)]
#[command(name = "steadfast", version, about, after_help = EXIT_CODES, propagate_version = true)]
pub struct Cli {
    /// The server to talk to.
    #[arg(
        long,
        global = true,
        env = "STEADFAST_ADDR",
        default_value = "http://127.0.0.1:7233"
    )]
    addr: String,
    /// The namespace of every request.
    #[arg(long, global = true, env = "STEADFAST_NAMESPACE", default_value = steadfast_engine::ids::DEFAULT_NAMESPACE)]
    namespace: String,
    /// The bearer token sent with every request, when the server has an auth file. Prefer
    /// the environment variable: a flag shows in `ps`.
    #[arg(long, global = true, env = "STEADFAST_TOKEN", hide_env_values = true)]
    token: Option<String>,
    #[command(flatten)]
    tls: TlsArgs,
    #[command(subcommand)]
    command: Command,
}

/// TLS files (PEM). For `steadfast server`: its own certificate and key, and the CA that
/// client certificates must be signed by (mutual TLS). For every other command: the CA that
/// signed the server's certificate, and a client certificate and key for mutual TLS.
#[derive(clap::Args, Debug, Default, Clone)]
pub struct TlsArgs {
    /// Server: its certificate chain. Client: a certificate for mutual TLS.
    #[arg(long, global = true, env = "STEADFAST_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<std::path::PathBuf>,
    /// The private key of --tls-cert.
    #[arg(long, global = true, env = "STEADFAST_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<std::path::PathBuf>,
    /// Server: require client certificates signed by this CA (mutual TLS). Client: trust
    /// this CA for the server's certificate (default: the system's roots, for https://).
    #[arg(long, global = true, env = "STEADFAST_TLS_CA")]
    pub tls_ca: Option<std::path::PathBuf>,
    /// Client: the name the server's certificate must carry, when it is not the host of
    /// --addr.
    #[arg(long, global = true, env = "STEADFAST_TLS_DOMAIN")]
    pub tls_domain: Option<String>,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run the server (embedded store in --data-dir, or PostgreSQL with --store) until ctrl-c
    /// or SIGTERM.
    Server(Box<ServerArgs>),
    /// Make tokens and auth-file entries (nothing is sent to a server).
    #[command(subcommand)]
    Auth(auth::AuthCmd),
    /// Start runs, follow them, operate on them.
    #[command(subcommand, after_help = EXIT_CODES)]
    Run(run::RunCmd),
    /// Show, export and replay run histories.
    #[command(subcommand, after_help = EXIT_CODES)]
    History(history::HistoryCmd),
    /// Operate the server.
    #[command(subcommand, after_help = EXIT_CODES)]
    Schedule(schedule::ScheduleCmd),
    /// Check workflow code against the runs in flight.
    #[command(subcommand, after_help = EXIT_CODES)]
    Workflow(check::WorkflowCmd),
    /// A task queue's current worker build (build ids).
    #[command(subcommand, after_help = EXIT_CODES)]
    TaskQueue(task_queue::TaskQueueCmd),
    #[command(subcommand)]
    Admin(AdminCmd),
}

/// `steadfast server`.
#[derive(clap::Args, Debug)]
struct ServerArgs {
    /// Where the embedded store lives.
    #[arg(long, env = "STEADFAST_DATA_DIR", default_value = DEFAULT_DATA_DIR)]
    data_dir: std::path::PathBuf,
    /// Keep runs in PostgreSQL instead (`postgres://user:password@host:5432/database`):
    /// several server nodes over one database share every run.
    #[arg(long, env = "STEADFAST_STORE", value_parser = parse::store_url)]
    store: Option<String>,
    /// This node's id among several over one database (default: host name and listen
    /// port). Stable across its restarts; two live nodes must not share one.
    #[arg(long, env = "STEADFAST_NODE_ID")]
    node_id: Option<String>,
    /// With --store: how often this node looks for work that a crash of any node left
    /// undone (continue-as-new successors, children, signals). A duration: 30s, 5m.
    #[arg(long, env = "STEADFAST_RECONCILE_PERIOD", default_value = "30s", value_parser = parse::duration_ms)]
    reconcile_period: u64,
    /// Where to listen.
    #[arg(long, default_value = DEFAULT_LISTEN)]
    listen: std::net::SocketAddr,
    /// Keep closed runs this long after they close, then drop them (their histories,
    /// states and index entries); open runs are never dropped. `0` keeps everything.
    /// A duration: 90s, 12h, 30d.
    #[arg(long, env = "STEADFAST_RETENTION", default_value = "0", value_parser = parse::duration_ms)]
    retention: u64,
    /// The key that signs task tokens (32 bytes, or 64 hex digits). Default: generated
    /// once into <data-dir>/token.key. Give every node the same file to share tokens.
    #[arg(long, env = "STEADFAST_TOKEN_KEY_FILE")]
    token_key_file: Option<std::path::PathBuf>,
    /// Most events one run's history may hold. Past 90% of it no new activities, timers
    /// or signal waits are accepted and workflow tasks say `continue_as_new_suggested`;
    /// past it only what the run needs to end or continue as new (10% more at most),
    /// then only appends that close the run.
    #[arg(long, env = "STEADFAST_HISTORY_EVENTS_MAX", default_value_t = steadfast_engine::store::HISTORY_EVENTS_MAX, value_parser = clap::value_parser!(u64).range(10..))]
    history_events_max: u64,
    /// Most bytes one run's history may hold (payloads included); refused as for
    /// --history-events-max.
    #[arg(long, env = "STEADFAST_HISTORY_BYTES_MAX", default_value_t = steadfast_engine::store::HISTORY_BYTES_MAX, value_parser = clap::value_parser!(u64).range(4096..))]
    history_bytes_max: u64,
    /// Longest delay, in ms, before the workflow task of a held run (its code failed the
    /// last one, e.g. [STF-ND001]) is offered again; the delay doubles from 250 ms.
    #[arg(long, env = "STEADFAST_HELD_RUN_BACKOFF_MAX_MS", default_value_t = crate::retry::HELD_BACKOFF_MAX_MS_DEFAULT, value_parser = clap::value_parser!(u64).range(250..))]
    held_run_backoff_max_ms: u64,
    /// How long a worker may hold a workflow task before it is timed out and offered to
    /// another worker (a worker whose session ends gives its tasks back at once). A
    /// duration: 500ms, 10s, 2m; at least 100ms.
    #[arg(long, env = "STEADFAST_WORKFLOW_TASK_TIMEOUT", default_value = "10s", value_parser = parse::workflow_task_timeout_ms)]
    workflow_task_timeout: u64,
    /// Require a bearer token on every call: a file of token hashes, each with a role
    /// (client, worker, admin) and namespaces (see `steadfast auth hash`). Re-read when it
    /// changes, so tokens are rotated without a restart.
    #[arg(long, env = "STEADFAST_AUTH_FILE")]
    auth_file: Option<std::path::PathBuf>,
    /// Listen on a non-loopback --listen address without --auth-file (only behind
    /// something else that authenticates callers).
    #[arg(long, env = "STEADFAST_INSECURE_LISTEN_ANY")]
    insecure_listen_any: bool,
    /// Set one limit on what callers may ask, NAME=VALUE (repeatable; in the environment,
    /// comma-separated): payload_bytes_max, request_bytes_max, name_bytes_max,
    /// page_size_max, pending_activities_per_run_max, pending_timers_per_run_max,
    /// pending_signals_per_run_max, polls_in_flight_per_connection_max. Defaults and meaning:
    /// README, "Limits".
    #[arg(
        long = "limit",
        env = "STEADFAST_LIMITS",
        value_delimiter = ',',
        value_name = "NAME=VALUE"
    )]
    limits: Vec<String>,
    /// Serve Prometheus metrics on this address (`GET /metrics`, plain HTTP), e.g.
    /// 127.0.0.1:9464. Off by default; loopback only unless --insecure-listen-any (the
    /// endpoint has no authentication). Metric list: README, "Observability".
    #[arg(long, env = "STEADFAST_METRICS_LISTEN", value_name = "ADDR")]
    metrics_listen: Option<std::net::SocketAddr>,
    /// Export OpenTelemetry traces built from the log to this OTLP/HTTP collector (JSON, POST
    /// URL/v1/traces), e.g. http://127.0.0.1:4318. Off by default. One trace per run, a span
    /// per workflow task, activity, timer and signal wait. See README, "Observability".
    #[arg(long, env = "STEADFAST_OTLP_ENDPOINT", value_name = "URL")]
    otlp_endpoint: Option<String>,
    /// Serve the web UI on this address (plain HTTP), e.g. 127.0.0.1:7280: runs, what each
    /// waits on, timelines, costs, and the inbox of runs waiting on a person. Off by default;
    /// loopback only unless --insecure-listen-any. With --auth-file it asks for a token.
    /// See README, "Web UI".
    #[arg(long, env = "STEADFAST_UI_LISTEN", value_name = "ADDR")]
    ui_listen: Option<std::net::SocketAddr>,
    /// The web UI shows everything and changes nothing: every action answers 403.
    #[arg(long, env = "STEADFAST_UI_READ_ONLY")]
    ui_read_only: bool,
    /// How the server writes its logs on stderr: `text` for people, `json` for machines
    /// (one object per line, with the run id, workflow type and seq of run updates as
    /// fields). Payloads are never logged in either.
    #[arg(long, env = "STEADFAST_LOG_FORMAT", value_enum, default_value = "text")]
    log_format: crate::logging::LogFormat,
    /// Threads that serve requests (the async runtime's workers), 1 to 1024; 1 runs the
    /// current-thread scheduler. Default: half the CPUs, at least 1: the event log's writer
    /// and the read-model indexer run on threads of their own, and on a small machine every
    /// extra runtime thread costs more in wake-ups between threads than it adds (README,
    /// "Benchmarks").
    #[arg(long, env = "STEADFAST_RUNTIME_THREADS", value_parser = clap::value_parser!(u16).range(1..=1024))]
    runtime_threads: Option<u16>,
}

/// The default of `steadfast server --runtime-threads`: half the CPUs, at least 1.
pub fn default_runtime_threads() -> usize {
    std::thread::available_parallelism().map_or(1, |n| (n.get() / 2).max(1))
}

#[derive(Subcommand, Debug)]
enum AdminCmd {
    /// Force a checkpoint of the embedded store; prints the log position it covers.
    Checkpoint,
}

/// Parses `args` (program name first), runs the command on a runtime of its own (for
/// `server`, of `--runtime-threads` workers), returns the exit code.
pub fn run(args: impl IntoIterator<Item = OsString>) -> ExitCode {
    let cli = match parse(args) {
        Ok(cli) => cli,
        Err(code) => return code,
    };
    let threads = match &cli.command {
        Command::Server(a) => a
            .runtime_threads
            .map_or_else(default_runtime_threads, usize::from),
        _ => 1,
    };
    // One thread: the current-thread scheduler; every wake-up stays on the thread that
    // serves the requests. (The multi-thread scheduler with one worker is no faster. It once
    // showed, in about one benchmark round in sixteen, an AwaitResult answered only at its
    // deadline: two appends of one run announced out of order moved the run's watch channel
    // backwards; `Notifier::run_changed` now only moves it forward.)
    let rt = if threads == 1 {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(threads)
            .enable_all()
            .build()
    };
    match rt {
        Ok(rt) => rt.block_on(finish(cli)),
        Err(e) => {
            note(&format!("cannot start the async runtime: {e}"));
            ExitCode::from(exit::ERROR)
        }
    }
}

/// Parses `args` (program name first), runs the command, returns the exit code.
pub async fn main(args: impl IntoIterator<Item = OsString>) -> ExitCode {
    match parse(args) {
        Ok(cli) => finish(cli).await,
        Err(code) => code,
    }
}

fn parse(args: impl IntoIterator<Item = OsString>) -> Result<Cli, ExitCode> {
    Cli::try_parse_from(args).map_err(|e| {
        let _ = e.print();
        ExitCode::from(u8::try_from(e.exit_code()).unwrap_or(exit::USAGE))
    })
}

async fn finish(cli: Cli) -> ExitCode {
    match dispatch(cli).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            if let Some(m) = e.message {
                note(&m);
            }
            ExitCode::from(e.code)
        }
    }
}

async fn dispatch(cli: Cli) -> Outcome {
    let Cli {
        addr,
        namespace,
        token,
        tls,
        command,
    } = cli;
    let connect = || client::Conn::connect_with(&addr, &namespace, token.as_deref(), &tls);
    if !matches!(command, Command::Server(_)) {
        crate::logging::init_client();
    }
    match command {
        Command::Server(args) => {
            let ServerArgs {
                data_dir,
                store,
                node_id,
                reconcile_period,
                listen,
                retention,
                token_key_file,
                history_events_max,
                history_bytes_max,
                held_run_backoff_max_ms,
                workflow_task_timeout,
                auth_file,
                insecure_listen_any,
                limits,
                metrics_listen,
                otlp_endpoint,
                ui_listen,
                ui_read_only,
                log_format,
                runtime_threads: _,
            } = *args;
            let limits = crate::limits::Limits::parse(limits.iter().map(String::as_str))
                .map_err(|e| Exit::usage(e.to_string()))?;
            let tls = match (tls.tls_cert, tls.tls_key) {
                (Some(cert), Some(key)) => Some(crate::config::TlsFiles {
                    cert,
                    key,
                    client_ca: tls.tls_ca,
                }),
                _ if tls.tls_ca.is_some() => {
                    return Err(Exit::usage(
                        "--tls-ca for the server asks for client certificates (mutual TLS): give --tls-cert and --tls-key too",
                    ));
                }
                _ => None,
            };
            crate::logging::init(log_format);
            let retention = (retention > 0).then(|| std::time::Duration::from_millis(retention));
            crate::server::run(ServerConfig {
                data_dir,
                store,
                node_id,
                reconcile_period_ms: reconcile_period.max(1),
                listen,
                retention,
                token_key_file,
                history_events_max,
                history_bytes_max,
                held_backoff_max_ms: held_run_backoff_max_ms,
                workflow_task_timeout_ms: workflow_task_timeout,
                auth_file,
                tls,
                insecure_listen_any,
                limits,
                metrics_listen,
                otlp_endpoint,
                ui_listen,
                ui_read_only,
            })
            .await
            .map_err(|e| Exit::error(format!("server stopped: {e:#}")))
        }
        Command::Auth(cmd) => auth::dispatch(cmd),
        // Offline replay needs no server.
        Command::History(history::HistoryCmd::Replay(args)) if args.file.is_some() => {
            history::replay_file(&args)
        }
        Command::Run(cmd) => run::dispatch(&connect()?, cmd).await,
        Command::History(cmd) => history::dispatch(&connect()?, cmd).await,
        Command::Schedule(cmd) => schedule::dispatch(&connect()?, cmd).await,
        Command::Workflow(cmd) => check::dispatch(&connect()?, cmd).await,
        Command::TaskQueue(cmd) => task_queue::dispatch(&connect()?, cmd).await,
        Command::Admin(AdminCmd::Checkpoint) => {
            let conn = connect()?;
            let r = conn
                .admin()
                .checkpoint(steadfast_proto::v1::CheckpointRequest {})
                .await
                .map_err(|s| conn.status(s))?;
            note("checkpoint done");
            out_line(&r.into_inner().lsn.to_string())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn the_command_line_is_well_formed() {
        Cli::command().debug_assert();
    }

    #[test]
    fn global_flags_go_anywhere() {
        let cli = Cli::try_parse_from([
            "steadfast",
            "run",
            "show",
            "r1",
            "--namespace",
            "t1",
            "--addr",
            "h:1",
        ])
        .unwrap();
        assert_eq!(cli.namespace, "t1");
        assert_eq!(cli.addr, "h:1");
    }

    #[test]
    fn help_documents_exit_codes() {
        let help = Cli::command().render_long_help().to_string();
        assert!(help.contains("7  the run is still running"), "{help}");
    }
}
