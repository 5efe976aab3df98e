//! [`WorkerOptions`].

use std::time::Duration;

/// How a [`super::Worker`] polls and how much it runs at once.
#[derive(Debug, Clone)]
pub struct WorkerOptions {
    /// Namespace of the task queue ("default").
    pub namespace: String,
    /// The task queue polled for workflow and activity tasks ("default").
    pub task_queue: String,
    /// Unique per worker process; the server routes cached runs' tasks back to it.
    /// Random (a UUIDv7) by default.
    pub worker_id: String,
    /// Workflow tasks advanced at once (each also holds one open poll while waiting).
    pub max_concurrent_workflow_tasks: usize,
    /// Activity attempts run at once.
    pub max_concurrent_activities: usize,
    /// Workflow instances kept in memory (LRU); a run not cached is replayed from its
    /// history.
    pub cache_size: usize,
    /// Threads that run workflow code.
    pub workflow_threads: usize,
    /// How long one long poll is held open by the server.
    pub poll_timeout: Duration,
    /// Every running activity heartbeats at least this often, which bounds how long a
    /// cancellation takes to reach it.
    pub heartbeat_interval: Duration,
    /// How long a cancelled activity may take to stop before it is reported cancelled.
    pub cancel_grace: Duration,
    /// How long to keep trying to report an outcome while the server is unreachable.
    pub report_timeout: Duration,
    /// On shutdown, how long to wait for in-flight tasks before giving up on them.
    pub shutdown_timeout: Duration,
    /// How long workflow code may run without yielding (one poll) before its task fails
    /// with `[STF-WT004]` and the thread that runs it is abandoned (the run is then
    /// quarantined on this worker). Deterministic workflow code takes microseconds per
    /// poll; keep this well under the server's workflow task timeout.
    pub activation_timeout: Duration,
    /// Check mode: take no workflow or activity tasks; answer `steadfast workflow check` by
    /// replaying every open run of the registered workflow types against this code
    /// ([`crate::check`]). Default: on when the environment has `STEADFAST_CHECK_MODE=1`
    /// (or `true`), so the binary of a deploy runs a check unchanged.
    pub check_mode: bool,
    /// The build id this worker declares (worker versioning; see the README, "Build ids"):
    /// it takes the workflow tasks of runs pinned to this build, and unpinned ones while this
    /// is the task queue's current build (or none is set); a run whose first workflow task
    /// it completes is pinned to it. Default: `STEADFAST_BUILD_ID`, else none (`""`).
    pub build_id: String,
}

/// The environment variable that turns [`WorkerOptions::check_mode`] on by default.
pub const CHECK_MODE_ENV: &str = "STEADFAST_CHECK_MODE";

fn check_mode_from_env() -> bool {
    std::env::var(CHECK_MODE_ENV).is_ok_and(|v| matches!(v.trim(), "1" | "true" | "yes"))
}

impl Default for WorkerOptions {
    fn default() -> Self {
        WorkerOptions {
            namespace: "default".into(),
            task_queue: "default".into(),
            worker_id: format!("worker-{}", uuid::Uuid::now_v7()),
            max_concurrent_workflow_tasks: 16,
            max_concurrent_activities: 64,
            cache_size: 1000,
            workflow_threads: 1,
            poll_timeout: Duration::from_secs(20),
            heartbeat_interval: Duration::from_millis(500),
            cancel_grace: Duration::from_secs(5),
            report_timeout: Duration::from_secs(60),
            shutdown_timeout: Duration::from_secs(30),
            activation_timeout: Duration::from_secs(2),
            check_mode: check_mode_from_env(),
            build_id: std::env::var("STEADFAST_BUILD_ID").unwrap_or_default(),
        }
    }
}

impl WorkerOptions {
    /// The defaults, on `task_queue`.
    pub fn new(task_queue: impl Into<String>) -> Self {
        WorkerOptions {
            task_queue: task_queue.into(),
            ..Default::default()
        }
    }
}
