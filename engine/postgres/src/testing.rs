//! A throwaway PostgreSQL cluster for tests: initdb into a temp dir, a free 127.0.0.1 port,
//! stopped by PID.
//!
//! Binaries come from `PG_BIN`, else `pg_config --bindir`, else the newest
//! `/usr/lib/postgresql/*/bin`. When none is found, [`PgCluster::start`] prints
//! [`SKIP_MESSAGE`] and returns `None`, so that a developer machine without PostgreSQL skips
//! these tests (CI installs Debian's `postgresql`, so it never skips).
//!
//! Running as root, the data dir is chowned to `postgres` and the commands run as that user
//! (PostgreSQL refuses to run as root): `initdb` through `runuser -u postgres --`, and the
//! server with its uid and gid set directly (not through `runuser`, which would fork and leave
//! us holding `runuser`'s PID instead of the postmaster's).
//!
//! Stopping: an owned cluster stops in `Drop` (SIGINT, PostgreSQL's fast shutdown; SIGKILL after
//! [`STOP_GRACE`]) and removes its dir, also when a test panics. A test binary's shared cluster
//! ([`PgCluster::shared`]) lives in a `static`, whose `Drop` never runs; it is stopped instead
//! by the kernel: the postmaster is spawned with a parent-death signal (`PR_SET_PDEATHSIG`,
//! SIGINT) from a spawner thread that lives as long as the test process (the signal follows
//! the *thread* that forked, so a test thread would stop it when that test ends). Its dir is
//! removed by the next `start` of any test binary: dirs are named after the owning process,
//! and those whose process is gone are deleted. Measured here: initdb + start take ~0.75 s (of which initdb most),
//! so one shared cluster per binary (one database per test) rather than one per test.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

/// When set (to anything but `0`), a missing PostgreSQL fails the tests instead of skipping
/// them (`.ci/run` sets it).
pub const REQUIRE_ENV: &str = "STEADFAST_REQUIRE_POSTGRES";

/// What a test prints when it skips for want of PostgreSQL.
pub const SKIP_MESSAGE: &str =
    "skipping: PostgreSQL not found (install Debian's postgresql or set PG_BIN)";
/// How long a starting cluster may take to accept connections.
pub const START_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a stopping cluster gets after SIGINT before SIGKILL.
pub const STOP_GRACE: Duration = Duration::from_secs(10);
/// Connections the cluster accepts (tests run many stores side by side).
pub const MAX_CONNECTIONS: u32 = 200;
/// Prefix of the temp dirs of clusters (followed by the owning process's PID).
const DIR_PREFIX: &str = "steadfast-pg.";

/// A running throwaway cluster.
#[derive(Debug)]
pub struct PgCluster {
    bin: PathBuf,
    dir: Option<tempfile::TempDir>,
    port: u16,
    socket_dir: PathBuf,
    child: Option<Child>,
    run_as: Option<(u32, u32)>,
    next_db: std::sync::atomic::AtomicU64,
}

impl PgCluster {
    /// Starts a cluster, or prints [`SKIP_MESSAGE`] and returns `None` when PostgreSQL's
    /// binaries are not found. Panics when they are found but the cluster cannot start.
    pub fn start() -> Option<PgCluster> {
        let Some(bin) = find_bin_dir() else {
            // CI sets this: there a missing PostgreSQL is a failure, not a skip.
            if std::env::var_os(REQUIRE_ENV).is_some_and(|v| !v.is_empty() && v != "0") {
                panic!("{REQUIRE_ENV} is set, but PostgreSQL was not found: {SKIP_MESSAGE}");
            }
            eprintln!("{SKIP_MESSAGE}");
            return None;
        };
        let started = Instant::now();
        remove_stale_dirs();
        let cluster = PgCluster::start_in(bin).unwrap_or_else(|e| panic!("{e}"));
        eprintln!(
            "[pg] cluster on 127.0.0.1:{} started in {:?}",
            cluster.port,
            started.elapsed()
        );
        Some(cluster)
    }

    /// The cluster shared by the tests of this test binary, started on first use; `None`
    /// (after printing [`SKIP_MESSAGE`]) without PostgreSQL. Stopped when the process exits.
    pub fn shared() -> Option<&'static PgCluster> {
        static SHARED: OnceLock<Option<PgCluster>> = OnceLock::new();
        SHARED.get_or_init(PgCluster::start).as_ref()
    }

    /// The port on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The postmaster's PID.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Creates a database and returns its URL (`postgres://postgres@127.0.0.1:PORT/NAME`).
    /// The name gets a per-cluster counter appended, so tests may reuse names.
    pub fn create_database(&self, name: &str) -> String {
        let n = self
            .next_db
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let safe: String = name
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
            .take(40)
            .collect();
        let db = format!("{safe}_{n}");
        let out = Command::new(self.bin.join("createdb"))
            .args([
                "-h",
                "127.0.0.1",
                "-p",
                &self.port.to_string(),
                "-U",
                "postgres",
            ])
            .arg(&db)
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| panic!("cannot run createdb: {e}"));
        assert!(
            out.status.success(),
            "createdb {db} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        format!("postgres://postgres@127.0.0.1:{}/{db}", self.port)
    }

    /// Runs one SQL statement with `psql` in database `db` (a name, or the URL
    /// [`PgCluster::create_database`] returned) and returns its unaligned output: for
    /// benchmarks and tests that read PostgreSQL's own statistics.
    pub fn sql(&self, db: &str, query: &str) -> String {
        let db = db.rsplit('/').next().unwrap_or(db);
        let out = Command::new(self.bin.join("psql"))
            .args([
                "-h",
                "127.0.0.1",
                "-p",
                &self.port.to_string(),
                "-U",
                "postgres",
            ])
            .args(["-d", db, "-X", "-A", "-t", "-c", query])
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| panic!("cannot run psql: {e}"));
        assert!(
            out.status.success(),
            "psql failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    fn start_in(bin: PathBuf) -> Result<PgCluster, String> {
        let dir = tempfile::Builder::new()
            .prefix(&format!("{DIR_PREFIX}{}.", std::process::id()))
            .tempdir()
            .map_err(|e| format!("cannot create a temp dir for PostgreSQL: {e}"))?;
        let data = dir.path().join("data");
        let socket_dir = dir.path().join("sock");
        std::fs::create_dir(&socket_dir)
            .map_err(|e| format!("cannot create {socket_dir:?}: {e}"))?;
        // SAFETY: geteuid has no preconditions.
        let run_as = if unsafe { libc::geteuid() } == 0 {
            let ids = postgres_user()?;
            chown_tree(dir.path(), ids)?;
            Some(ids)
        } else {
            None
        };
        let mut initdb = match run_as {
            Some(_) => {
                let mut c = Command::new("runuser");
                c.args(["-u", "postgres", "--"]).arg(bin.join("initdb"));
                c
            }
            None => Command::new(bin.join("initdb")),
        };
        // --no-sync: a throwaway cluster's initdb need not survive a power cut; the server
        // itself runs with fsync on, so commits in tests cost what they cost in production.
        let out = initdb
            .args([
                "-U",
                "postgres",
                "--auth=trust",
                "-E",
                "UTF8",
                "--no-sync",
                "-D",
            ])
            .arg(&data)
            .stdin(Stdio::null())
            .output()
            .map_err(|e| format!("cannot run initdb: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "initdb failed: {}",
                String::from_utf8_lossy(&out.stderr)
            ));
        }
        // A port that was free a moment ago; a race with another process is possible, and
        // shows as a start that fails (retried with another port).
        let mut last_err = String::new();
        for _ in 0..5 {
            let port = free_port()?;
            let mut cmd = Command::new(bin.join("postgres"));
            cmd.arg("-D")
                .arg(&data)
                .args(["-p", &port.to_string(), "-k"])
                .arg(&socket_dir)
                .args(["-c", "listen_addresses=127.0.0.1"])
                .args(["-c", &format!("max_connections={MAX_CONNECTIONS}")])
                .args(["-c", "fsync=on"])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::from(
                    std::fs::File::create(dir.path().join("postgres.log"))
                        .map_err(|e| format!("cannot create the server log: {e}"))?,
                ));
            if let Some((uid, gid)) = run_as {
                use std::os::unix::process::CommandExt;
                cmd.uid(uid).gid(gid);
            }
            let child = spawn_with_parent_death_signal(cmd)
                .map_err(|e| format!("cannot start postgres: {e}"))?;
            let mut cluster = PgCluster {
                bin: bin.clone(),
                dir: None,
                port,
                socket_dir: socket_dir.clone(),
                child: Some(child),
                run_as,
                next_db: Default::default(),
            };
            match cluster.wait_ready() {
                Ok(()) => {
                    cluster.dir = Some(dir);
                    return Ok(cluster);
                }
                Err(e) => {
                    cluster.stop();
                    last_err = e;
                }
            }
        }
        let log = std::fs::read_to_string(dir.path().join("postgres.log")).unwrap_or_default();
        Err(format!("PostgreSQL did not start: {last_err}\n{log}"))
    }

    /// Waits until the server accepts connections (pg_isready), or it exited, or
    /// [`START_TIMEOUT`] passed.
    fn wait_ready(&mut self) -> Result<(), String> {
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if let Some(child) = self.child.as_mut()
                && let Ok(Some(status)) = child.try_wait()
            {
                return Err(format!("postgres exited: {status}"));
            }
            let ok = Command::new(self.bin.join("pg_isready"))
                .args([
                    "-q",
                    "-h",
                    "127.0.0.1",
                    "-p",
                    &self.port.to_string(),
                    "-U",
                    "postgres",
                ])
                .stdin(Stdio::null())
                .status()
                .is_ok_and(|s| s.success());
            if ok {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(format!("not accepting connections after {START_TIMEOUT:?}"));
            }
            // pg_isready itself takes a few ms; this bounds the rate of attempts, it does not
            // stand in for the condition.
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Stops the server by PID: SIGINT (fast shutdown), SIGKILL after [`STOP_GRACE`].
    fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        let pid = child.id() as libc::pid_t;
        // SAFETY: signalling our own child by its PID; it has not been reaped yet (we hold it).
        unsafe { libc::kill(pid, libc::SIGINT) };
        let deadline = Instant::now() + STOP_GRACE;
        loop {
            match child.try_wait() {
                Ok(Some(_)) | Err(_) => return,
                Ok(None) if Instant::now() > deadline => {
                    let _ = child.kill();
                    let _ = child.wait();
                    return;
                }
                Ok(None) => std::thread::sleep(Duration::from_millis(10)),
            }
        }
    }

    /// The socket dir (for `psql -h`).
    pub fn socket_dir(&self) -> &Path {
        &self.socket_dir
    }

    /// Whether the server runs as the `postgres` user (we are root).
    pub fn runs_as_postgres(&self) -> bool {
        self.run_as.is_some()
    }
}

impl Drop for PgCluster {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The directory of PostgreSQL's binaries, if any.
pub fn find_bin_dir() -> Option<PathBuf> {
    let has_postgres = |p: &Path| p.join("postgres").is_file() && p.join("initdb").is_file();
    if let Some(p) = std::env::var_os("PG_BIN") {
        let p = PathBuf::from(p);
        return has_postgres(&p).then_some(p);
    }
    if let Ok(out) = Command::new("pg_config").arg("--bindir").output()
        && out.status.success()
    {
        let p = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
        if has_postgres(&p) {
            return Some(p);
        }
    }
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .flatten()
        .filter_map(|e| {
            let v = e.file_name().to_string_lossy().parse::<u32>().ok()?;
            let bin = e.path().join("bin");
            has_postgres(&bin).then_some((v, bin))
        })
        .collect();
    versions.sort();
    versions.pop().map(|(_, p)| p)
}

fn free_port() -> Result<u16, String> {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(|e| format!("no free port: {e}"))
}

fn postgres_user() -> Result<(u32, u32), String> {
    let name = std::ffi::CString::new("postgres").expect("no NUL");
    // SAFETY: getpwnam returns a pointer into static storage or null; we copy the two ids
    // before any other call that could overwrite it.
    let pw = unsafe { libc::getpwnam(name.as_ptr()) };
    if pw.is_null() {
        return Err(
            "running as root, but there is no `postgres` user to run PostgreSQL as \
                    (install Debian's postgresql, which creates it)"
                .into(),
        );
    }
    // SAFETY: non-null, points to a valid passwd record (see above).
    Ok(unsafe { ((*pw).pw_uid, (*pw).pw_gid) })
}

fn chown_tree(path: &Path, (uid, gid): (u32, u32)) -> Result<(), String> {
    std::os::unix::fs::chown(path, Some(uid), Some(gid))
        .map_err(|e| format!("cannot chown {path:?} to postgres: {e}"))?;
    if path.is_dir() {
        for e in std::fs::read_dir(path).map_err(|e| format!("cannot list {path:?}: {e}"))? {
            let e = e.map_err(|e| format!("cannot list {path:?}: {e}"))?;
            chown_tree(&e.path(), (uid, gid))?;
        }
    }
    Ok(())
}

/// Deletes cluster dirs left by test processes that are gone (a shared cluster's dir cannot
/// be removed by its own process: statics are not dropped at exit).
fn remove_stale_dirs() {
    let Ok(entries) = std::fs::read_dir(std::env::temp_dir()) else {
        return;
    };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let Some(pid) = name
            .strip_prefix(DIR_PREFIX)
            .and_then(|rest| rest.split('.').next())
            .and_then(|p| p.parse::<libc::pid_t>().ok())
        else {
            continue;
        };
        // SAFETY: signal 0 only checks whether the process exists.
        let gone = unsafe { libc::kill(pid, 0) } != 0
            && std::io::Error::last_os_error().raw_os_error() == Some(libc::ESRCH);
        if gone {
            let _ = std::fs::remove_dir_all(e.path());
        }
    }
}

type SpawnRequest = (Command, mpsc::Sender<std::io::Result<Child>>);

/// Spawns `cmd` from a thread that lives as long as this process, with SIGINT as its
/// parent-death signal: when the test process exits (or is killed), the kernel stops the
/// postmaster.
fn spawn_with_parent_death_signal(mut cmd: Command) -> std::io::Result<Child> {
    static SPAWNER: OnceLock<Mutex<mpsc::Sender<SpawnRequest>>> = OnceLock::new();
    let tx = SPAWNER.get_or_init(|| {
        let (tx, rx) = mpsc::channel::<SpawnRequest>();
        std::thread::Builder::new()
            .name("pg-spawner".into())
            .spawn(move || {
                // Never returns while the process lives: the sender is in a static.
                for (mut cmd, reply) in rx {
                    let _ = reply.send(cmd.spawn());
                }
            })
            .expect("spawn the pg-spawner thread");
        Mutex::new(tx)
    });
    {
        use std::os::unix::process::CommandExt;
        let parent = std::process::id() as libc::pid_t;
        // SAFETY: prctl and getppid are async-signal-safe; nothing else runs in the child.
        unsafe {
            cmd.pre_exec(move || {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGINT) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                // The parent may have died before the prctl took effect.
                if libc::getppid() != parent {
                    return Err(std::io::Error::other("the test process is gone"));
                }
                Ok(())
            });
        }
    }
    let (reply_tx, reply_rx) = mpsc::channel();
    tx.lock()
        .map_err(|_| std::io::Error::other("pg-spawner lock poisoned"))?
        .send((cmd, reply_tx))
        .map_err(|_| std::io::Error::other("pg-spawner thread gone"))?;
    reply_rx
        .recv()
        .map_err(|_| std::io::Error::other("pg-spawner thread gone"))?
}
