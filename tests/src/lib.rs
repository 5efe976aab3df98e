//! Cross-process test harness: builds the real binaries once, starts servers and workers on
//! loopback with ports chosen at run time and temp data dirs, and stops every process it
//! started (SIGKILL on drop), even when a test fails.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

pub mod bench;
pub mod deploy;
pub mod http;
pub mod metrics;
pub mod peer;
pub mod raw;
pub mod scale;
pub mod secure;
pub mod side;
pub mod ui;
pub mod wire;

/// Where the workspace's binaries are (target/debug), after building them once.
pub fn bin_dir() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let started = Instant::now();
        let mut cmd = Command::new(cargo);
        cmd.args([
            "build",
            "--quiet",
            "-p",
            "steadfast-server",
            "-p",
            "steadfast-examples",
            "-p",
            "steadfast-tests",
            "--bins",
        ])
        .current_dir(workspace_root())
        .stdin(Stdio::null());
        // `cargo test` sets these for the test process; build scripts that watch them (ring
        // watches CARGO_MANIFEST_DIR) would rerun and rebuild half the tree on every test
        // binary, and again on the next plain `cargo build`.
        for (k, _) in std::env::vars_os() {
            let k = k.to_string_lossy();
            if is_cargo_test_env(&k) {
                cmd.env_remove(&*k);
            }
        }
        let out = cmd.output().expect("run cargo build for the test binaries");
        assert!(
            out.status.success(),
            "building the binaries failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        eprintln!("[harness] binaries built in {:?}", started.elapsed());
        // target/debug/deps/<test> -> target/debug
        let exe = std::env::current_exe().expect("current exe");
        exe.parent()
            .and_then(Path::parent)
            .expect("target/debug")
            .to_path_buf()
    })
}

/// Whether `cargo test` set variable `k` for the crate under test (as opposed to cargo's own
/// configuration, such as CARGO_HOME or CARGO_TARGET_DIR, which the nested build keeps).
fn is_cargo_test_env(k: &str) -> bool {
    k.starts_with("CARGO_PKG_")
        || k.starts_with("CARGO_BIN_")
        || matches!(
            k,
            "CARGO_MANIFEST_DIR"
                | "CARGO_MANIFEST_PATH"
                | "CARGO_CRATE_NAME"
                | "CARGO_PRIMARY_PACKAGE"
                | "CARGO_TARGET_TMPDIR"
                | "CARGO_RUSTC_CURRENT_DIR"
                | "OUT_DIR"
        )
}

/// The repository root.
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root")
        .to_path_buf()
}

/// Path of a workspace binary.
pub fn bin(name: &str) -> PathBuf {
    bin_dir().join(name)
}

/// A child process killed (SIGKILL) and reaped on drop.
pub struct Proc {
    child: Option<Child>,
    name: String,
}

impl Proc {
    /// Spawns `cmd` with stdin closed.
    pub fn spawn(name: &str, cmd: &mut Command) -> Result<Proc> {
        let child = cmd
            .stdin(Stdio::null())
            .spawn()
            .with_context(|| format!("spawn {name}"))?;
        Ok(Proc {
            child: Some(child),
            name: name.to_string(),
        })
    }

    /// SIGKILL now, and wait for it.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM, then wait up to `grace` before SIGKILL. Returns whether it exited by itself.
    pub fn terminate(&mut self, grace: Duration) -> bool {
        let Some(mut c) = self.child.take() else {
            return true;
        };
        // SAFETY: kill(2) with a pid we own; no memory is touched.
        unsafe { libc::kill(c.id() as i32, libc::SIGTERM) };
        let end = Instant::now() + grace;
        while Instant::now() < end {
            if let Ok(Some(_)) = c.try_wait() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = c.kill();
        let _ = c.wait();
        false
    }

    /// Whether it is still running.
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.as_mut().map(|c| c.try_wait()), Some(Ok(None)))
    }

    /// Takes its stdout, when it was spawned with `Stdio::piped()`.
    pub fn take_stdout(&mut self) -> Option<std::process::ChildStdout> {
        self.child.as_mut().and_then(|c| c.stdout.take())
    }

    /// Takes its stderr, when it was spawned with `Stdio::piped()`.
    pub fn take_stderr(&mut self) -> Option<std::process::ChildStderr> {
        self.child.as_mut().and_then(|c| c.stderr.take())
    }

    /// Its pid.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if self.child.is_some() {
            eprintln!("[harness] stopping {}", self.name);
        }
        self.kill9();
    }
}

/// A running `steadfast server`.
pub struct Server {
    /// The process.
    pub proc: Proc,
    /// Where it listens.
    pub addr: SocketAddr,
    /// Its data dir.
    pub data_dir: PathBuf,
    /// Extra flags of `steadfast server`, kept for restarts.
    pub args: Vec<String>,
}

impl Server {
    /// Starts a server on a free loopback port (or `port` when given, e.g. for a restart).
    pub fn start(data_dir: &Path, port: Option<u16>) -> Result<Server> {
        Server::start_with(data_dir, port, &[])
    }

    /// [`Server::start`] with extra flags (e.g. `["--history-events-max", "40"]`).
    pub fn start_with(data_dir: &Path, port: Option<u16>, args: &[&str]) -> Result<Server> {
        Server::spawn(data_dir, port, args, None)
    }

    /// [`Server::start_with`] at `RUST_LOG=debug`, every stderr line appended to the file
    /// `log` instead of the test's output (for tests that read the server's logs).
    pub fn start_logged(data_dir: &Path, args: &[&str], log: &Path) -> Result<Server> {
        Server::start_logged_at(data_dir, args, log, "debug")
    }

    /// [`Server::start_logged`] with `RUST_LOG=rust_log` (e.g. `debug,steadfast_server=trace`).
    pub fn start_logged_at(
        data_dir: &Path,
        args: &[&str],
        log: &Path,
        rust_log: &str,
    ) -> Result<Server> {
        Server::spawn(data_dir, None, args, Some((log, rust_log)))
    }

    fn spawn(
        data_dir: &Path,
        port: Option<u16>,
        args: &[&str],
        log: Option<(&Path, &str)>,
    ) -> Result<Server> {
        let mut sink = match log {
            Some((p, _)) => Some(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(p)
                    .with_context(|| format!("open {}", p.display()))?,
            ),
            None => None,
        };
        let listen = format!("127.0.0.1:{}", port.unwrap_or(0));
        let mut cmd = Command::new(bin("steadfast"));
        cmd.args(["server", "--data-dir"])
            .arg(data_dir)
            .args(["--listen", &listen])
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        if let Some((_, rust_log)) = log {
            cmd.env("RUST_LOG", rust_log);
        } else if std::env::var_os("RUST_LOG").is_none() {
            cmd.env("RUST_LOG", "warn");
        }
        let mut proc = Proc::spawn("steadfast server", &mut cmd)?;
        let stderr = proc
            .child
            .as_mut()
            .and_then(|c| c.stderr.take())
            .context("server stderr")?;
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut sent = false;
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Some(f) = sink.as_mut() {
                    use std::io::Write;
                    let _ = writeln!(f, "{line}");
                }
                if !sent && let Some(a) = line.strip_prefix("steadfast server listening on ") {
                    let _ = tx.send(a.trim().to_string());
                    sent = true;
                    continue;
                }
                if sink.is_none() {
                    eprintln!("[server] {line}");
                }
            }
        });
        let addr = match rx.recv_timeout(Duration::from_secs(30)) {
            Ok(a) => a.parse().context("listen address")?,
            Err(_) => bail!("the server did not report its address within 30 s"),
        };
        Ok(Server {
            proc,
            addr,
            data_dir: data_dir.to_path_buf(),
            args: args.iter().map(|a| a.to_string()).collect(),
        })
    }

    /// The address as clients take it.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// SIGKILL the server and start it again on the same port and data dir.
    pub fn crash_and_restart(&mut self) -> Result<()> {
        self.proc.kill9();
        self.restart()
    }

    /// Starts the server again on the same port and data dir (after [`Proc::kill9`] of
    /// `self.proc`).
    pub fn restart(&mut self) -> Result<()> {
        let port = self.addr.port();
        let mut last = None;
        // The port can take a moment to be free again after a kill.
        for _ in 0..50 {
            let args: Vec<&str> = self.args.iter().map(String::as_str).collect();
            match Server::start_with(&self.data_dir, Some(port), &args) {
                Ok(s) => {
                    *self = s;
                    return Ok(());
                }
                Err(e) => last = Some(e),
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        Err(last.unwrap_or_else(|| anyhow::anyhow!("restart failed")))
    }
}

/// The longest a CLI call may take before the test gives up on it (and kills it).
pub const CLI_TIMEOUT: Duration = Duration::from_secs(120);

/// Runs the CLI against `addr`; returns (exit code, stdout, stderr). Killed (and an error)
/// after [`CLI_TIMEOUT`].
pub fn cli(addr: &str, args: &[&str]) -> Result<(i32, String, String)> {
    let mut cmd = Command::new(bin("steadfast"));
    cmd.args(args).env("STEADFAST_ADDR", addr);
    run_bounded(&mut cmd, CLI_TIMEOUT)
}

/// Runs `cmd` to its end with stdin closed, killing it (and failing) after `timeout`; returns
/// (exit code, stdout, stderr), the code -1 when it died by a signal.
pub fn run_bounded(cmd: &mut Command, timeout: Duration) -> Result<(i32, String, String)> {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("spawn {cmd:?}"))?;
    let read = |r: Option<Box<dyn std::io::Read + Send>>| {
        std::thread::spawn(move || {
            let mut buf = Vec::new();
            if let Some(mut r) = r {
                let _ = r.read_to_end(&mut buf);
            }
            String::from_utf8_lossy(&buf).into_owned()
        })
    };
    let out = read(child.stdout.take().map(|r| Box::new(r) as _));
    let err = read(child.stderr.take().map(|r| Box::new(r) as _));
    let end = Instant::now() + timeout;
    let status = loop {
        if let Some(status) = child.try_wait()? {
            break status;
        }
        if Instant::now() >= end {
            let _ = child.kill();
            let _ = child.wait();
            let (out, err) = (
                out.join().unwrap_or_default(),
                err.join().unwrap_or_default(),
            );
            bail!("{cmd:?} did not finish within {timeout:?}; stdout:\n{out}\nstderr:\n{err}");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let out = out.join().unwrap_or_default();
    let err = err.join().unwrap_or_default();
    Ok((status.code().unwrap_or(-1), out, err))
}

/// Starts `test-worker` (src/bin/test-worker.rs) against `addr`, appending its activity
/// executions to the side file `log`; `extra` are more flags (e.g. `["--variant", "b"]`).
pub fn start_test_worker(addr: &str, log: &Path, extra: &[&str]) -> Result<Proc> {
    let mut cmd = Command::new(bin("test-worker"));
    cmd.args(["--addr", addr, "--log"]).arg(log).args(extra);
    quiet_logs(&mut cmd);
    Proc::spawn("test-worker", &mut cmd)
}

/// Starts `test-worker` in check mode (`STEADFAST_CHECK_MODE=1`): it takes no tasks and
/// answers `steadfast workflow check` (tests/tests/workflow_check.rs).
pub fn start_check_worker(addr: &str, log: &Path, extra: &[&str]) -> Result<Proc> {
    let mut cmd = Command::new(bin("test-worker"));
    cmd.args(["--addr", addr, "--log"]).arg(log).args(extra);
    cmd.env("STEADFAST_CHECK_MODE", "1");
    quiet_logs(&mut cmd);
    Proc::spawn("test-worker (check mode)", &mut cmd)
}

/// Starts the `hello-worker` example against `addr`.
pub fn start_hello_worker(addr: &str) -> Result<Proc> {
    let mut cmd = Command::new(bin("hello-worker"));
    cmd.args(["--addr", addr]);
    quiet_logs(&mut cmd);
    Proc::spawn("hello-worker", &mut cmd)
}

/// Workers log at `warn` unless the test was run with `RUST_LOG`.
fn quiet_logs(cmd: &mut Command) {
    if std::env::var_os("RUST_LOG").is_none() {
        cmd.env("RUST_LOG", "warn");
    }
}

/// A tokio runtime for the async clients a (synchronous) test uses.
pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime")
}

/// Calls `f` until it succeeds (every 100 ms, for at most `timeout`): for requests that may
/// meet a server that is restarting.
pub fn retry<T>(timeout: Duration, what: &str, mut f: impl FnMut() -> Result<T>) -> Result<T> {
    let end = Instant::now() + timeout;
    loop {
        match f() {
            Ok(v) => return Ok(v),
            Err(e) if Instant::now() >= end => {
                return Err(e.context(format!("{what}: still failing after {timeout:?}")));
            }
            Err(_) => std::thread::sleep(Duration::from_millis(100)),
        }
    }
}

/// The whole history of `run_id`, read with a fresh connection (retried for up to 30 s, so a
/// server that is coming back up is waited for).
pub fn history(
    rt: &tokio::runtime::Runtime,
    url: &str,
    run_id: &str,
) -> Result<Vec<steadfast_proto::v1::HistoryEvent>> {
    retry(Duration::from_secs(30), "read the history", || {
        rt.block_on(async {
            let client = steadfast_sdk::Client::connect(url).await?;
            Ok(client.history(run_id).await?)
        })
    })
}

/// The state of `run_id` (DescribeRun), with a fresh connection, retried like [`history`].
pub fn describe(
    rt: &tokio::runtime::Runtime,
    url: &str,
    run_id: &str,
) -> Result<steadfast_proto::v1::RunInfo> {
    retry(Duration::from_secs(30), "describe the run", || {
        rt.block_on(async {
            let client = steadfast_sdk::Client::connect(url).await?;
            Ok(client.describe(run_id).await?)
        })
    })
}

/// Polls `f` every 50 ms until it returns `Some`, or fails after `timeout` with `what`.
pub fn wait_for<T>(timeout: Duration, what: &str, mut f: impl FnMut() -> Option<T>) -> Result<T> {
    let end = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return Ok(v);
        }
        if Instant::now() >= end {
            bail!("timed out after {timeout:?} waiting for {what}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A seed from `TEST_SEED` or the clock, printed so a failure can be replayed.
pub fn test_seed() -> u64 {
    let seed = std::env::var("TEST_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos() as u64)
                .unwrap_or(1)
        });
    eprintln!("[harness] TEST_SEED={seed}");
    seed
}
