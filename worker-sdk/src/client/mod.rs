//! The client: start runs and follow them (describe, list, await, signal, cancel,
//! terminate, history, watch), fork or reset them, and manage schedules.
//!
//! ```no_run
//! # async fn demo() -> Result<(), steadfast_sdk::client::Error> {
//! use std::time::Duration;
//! use steadfast_sdk::client::{Client, StartOptions};
//!
//! let client = Client::connect("http://127.0.0.1:7233").await?;
//! let run = client.start_workflow("triage", &"printer on fire", StartOptions::default()).await?;
//! let reply: String = run.result(Duration::from_secs(300)).await?;
//! # Ok(()) }
//! ```

mod approval;
mod config;
mod error;
mod schedule;
mod watch;

use std::time::Duration;

pub use config::{Bearer, ClientConfig, DEFAULT_ADDR, TlsFiles, Token, Transport};
pub use error::Error;
pub use schedule::{Cadence, Overlap, ScheduleSpec};
use serde::Serialize;
use serde::de::DeserializeOwned;
use steadfast_proto::v1 as pb;
use steadfast_proto::v1::admin_service_client::AdminServiceClient;
use steadfast_proto::v1::client_service_client::ClientServiceClient;
use tokio::time::Instant;
pub use watch::{WATCH_RECONNECTS_MAX, is_terminal};

use crate::backoff::Backoff;
use crate::payload;

/// The longest single AwaitResult long poll (the server caps it at 60 s too).
pub const AWAIT_POLL_MAX: Duration = Duration::from_secs(55);
/// The page size used to read histories.
pub const HISTORY_PAGE_SIZE: u32 = 1000;

/// How to start a run. Everything is optional.
#[derive(Debug, Clone, Default)]
pub struct StartOptions {
    /// A caller-chosen id: at most one open run per workflow id, so a second start with it
    /// returns the open run (`RunHandle::started` false). Defaults to the run id.
    pub workflow_id: Option<String>,
    /// Task queue of the run's workflow tasks; "default" when not given.
    pub task_queue: Option<String>,
    /// End the run (timed out) after this long.
    pub run_timeout: Option<Duration>,
    /// Ceilings the run may not cross.
    pub budget: Option<pb::Budget>,
    /// Deduplicates a retried start request.
    pub request_id: Option<String>,
    /// Never pin the run to a worker build: each of its workflow tasks goes to the task
    /// queue's current build (see the README, "Build ids").
    pub auto_upgrade: bool,
    /// Search attributes the run starts with ([`crate::search`]).
    pub search_attributes: Vec<(String, crate::search::SearchValue)>,
    /// Free-form JSON shown by `run show` / [`Client::describe`] (at most 16 KiB).
    pub memo: Option<serde_json::Value>,
    /// The W3C traceparent of the caller's span: when the server exports traces, the run's
    /// trace continues it (the run's root span is a child of that span).
    pub traceparent: Option<String>,
}

/// Filters of [`Client::list`].
#[derive(Debug, Clone, Default)]
pub struct ListOptions {
    /// Only runs in this status.
    pub status: Option<pb::RunStatus>,
    /// Only runs of this workflow type.
    pub workflow_type: Option<String>,
    /// Only runs waiting on: "signal", "activity", "timer", "budget", "reconciliation" or
    /// "workflow_task".
    pub waiting: Option<String>,
    /// Runs per page (server default 100).
    pub page_size: u32,
    /// The `next_page_token` of the previous page.
    pub page_token: Option<String>,
    /// Only the child runs of this run, in the order it started them (one page).
    pub parent_run_id: Option<String>,
    /// Only the runs this schedule started.
    pub schedule: Option<String>,
    /// Only the runs of this workflow id (open and closed).
    pub workflow_id: Option<String>,
    /// Only runs started at or after this time (ms since the epoch).
    pub started_after_ms: Option<i64>,
    /// Only runs started before this time (ms since the epoch).
    pub started_before_ms: Option<i64>,
    /// Only runs pinned to this worker build.
    pub build: Option<String>,
    /// Only runs carrying every one of these search attribute values.
    pub search_attributes: Vec<(String, crate::search::SearchValue)>,
    /// Only runs where an activity of this type failed its last attempt (no retry left).
    pub failed_activity: Option<String>,
    /// Only runs whose summary (workflow type and id, memo, last progress message, held and
    /// failure messages) holds every word of this text, ignoring case.
    pub text: Option<String>,
    /// Only the forks of this run (`run fork` / `run reset` of it).
    pub forked_from: Option<String>,
}

/// A run that was started (or found open) by a start call.
#[derive(Clone, Debug)]
pub struct RunHandle {
    /// The run id.
    pub run_id: String,
    /// False when an open run with the workflow id already existed.
    pub started: bool,
    client: Client,
}

impl RunHandle {
    /// Waits up to `timeout` for the run's result ([`Client::await_result`]).
    pub async fn result<O: DeserializeOwned>(&self, timeout: Duration) -> Result<O, Error> {
        self.client.await_result(&self.run_id, timeout).await
    }

    /// The run's state ([`Client::describe`]).
    pub async fn describe(&self) -> Result<pb::RunInfo, Error> {
        self.client.describe(&self.run_id).await
    }
}

/// A connection to a Steadfast server, for one namespace. Cheap to clone.
#[derive(Clone, Debug)]
pub struct Client {
    service: ClientServiceClient<Transport>,
    admin: AdminServiceClient<Transport>,
    schedules: steadfast_proto::v1::schedule_service_client::ScheduleServiceClient<Transport>,
    config: ClientConfig,
}

/// What a fork changes ([`Client::fork`]); the default keeps the input and gives the fork its
/// run id as workflow id.
#[derive(Debug, Clone, Default)]
pub struct ForkOptions {
    /// Replaces the RunStarted input (JSON). The code sees it on replay: commands before the
    /// boundary that depend on it must come out the same, or the fork is held ([STF-ND001]).
    pub input: Option<serde_json::Value>,
    /// The fork's workflow id (default: its run id; for a reset, the original's).
    pub workflow_id: Option<String>,
    /// Terminate the original once the fork exists (`run reset`).
    pub reset: bool,
}

impl Client {
    /// Connects to `config` (an address like "http://127.0.0.1:7233", or a
    /// [`ClientConfig`]). Fails if the server cannot be reached now; the connection is
    /// re-established by itself after a server restart.
    pub async fn connect(config: impl Into<ClientConfig>) -> Result<Client, Error> {
        let config = config.into();
        let channel = config.transport().await?;
        Ok(Self::with_channel(config, channel))
    }

    /// Like [`Client::connect`], but connects on first use: never fails for an unreachable
    /// server (calls do, with [`Error::Unavailable`], until it is up).
    pub fn connect_lazy(config: impl Into<ClientConfig>) -> Result<Client, Error> {
        let config = config.into();
        let channel = config.lazy_transport()?;
        Ok(Self::with_channel(config, channel))
    }

    /// Connects to the server named by `STEADFAST_ADDR` (default [`DEFAULT_ADDR`]) in
    /// namespace `STEADFAST_NAMESPACE` (default "default").
    pub async fn from_env() -> Result<Client, Error> {
        Self::connect(ClientConfig::from_env()).await
    }

    pub(crate) fn with_channel(config: ClientConfig, channel: Transport) -> Client {
        Client {
            service: ClientServiceClient::new(channel.clone())
                .max_decoding_message_size(config.max_message_bytes)
                .max_encoding_message_size(config.max_message_bytes),
            admin: AdminServiceClient::new(channel.clone())
                .max_decoding_message_size(config.max_message_bytes)
                .max_encoding_message_size(config.max_message_bytes),
            schedules: steadfast_proto::v1::schedule_service_client::ScheduleServiceClient::new(
                channel,
            )
            .max_decoding_message_size(config.max_message_bytes)
            .max_encoding_message_size(config.max_message_bytes),
            config,
        }
    }

    /// The namespace of every call.
    pub fn namespace(&self) -> &str {
        &self.config.namespace
    }

    /// The generated gRPC client, for calls this type does not wrap.
    pub fn service(&self) -> ClientServiceClient<Transport> {
        self.service.clone()
    }

    fn start_request(
        &self,
        workflow_type: &str,
        input: &(impl Serialize + ?Sized),
        options: StartOptions,
    ) -> Result<pb::StartWorkflowRequest, Error> {
        Ok(pb::StartWorkflowRequest {
            namespace: self.config.namespace.clone(),
            workflow_type: workflow_type.to_owned(),
            workflow_id: options.workflow_id.unwrap_or_default(),
            task_queue: options.task_queue.unwrap_or_default(),
            input: Some(payload::encode(input)?),
            run_timeout_ms: options.run_timeout.map_or(0, |d| d.as_millis() as u64),
            budget: options.budget,
            identity: self.config.identity.clone(),
            request_id: options.request_id.unwrap_or_default(),
            auto_upgrade: options.auto_upgrade,
            search_attributes: crate::search::list_to_proto(options.search_attributes),
            memo: options.memo.as_ref().map(payload::encode).transpose()?,
            traceparent: options.traceparent.unwrap_or_default(),
            wait_result_ms: 0,
        })
    }

    /// Starts a run of `workflow_type` with `input`; returns once RunStarted is durable.
    pub async fn start_workflow(
        &self,
        workflow_type: &str,
        input: &(impl Serialize + ?Sized),
        options: StartOptions,
    ) -> Result<RunHandle, Error> {
        let req = self.start_request(workflow_type, input, options)?;
        let resp = self.service().start_workflow(req).await?.into_inner();
        Ok(self.handle(resp.run_id, resp.started))
    }

    fn handle(&self, run_id: String, started: bool) -> RunHandle {
        RunHandle {
            run_id,
            started,
            client: self.clone(),
        }
    }

    /// The state of run `run_id`: status, what it waits on, progress, usage, result.
    pub async fn describe(&self, run_id: &str) -> Result<pb::RunInfo, Error> {
        let req = pb::DescribeRunRequest {
            namespace: self.config.namespace.clone(),
            run_id: run_id.to_owned(),
            ..Default::default()
        };
        let resp = self.service().describe_run(req).await?.into_inner();
        resp.run
            .ok_or_else(|| Error::NotFound(format!("run {run_id}")))
    }

    /// One page of runs; the second value is the next page's token (`None` at the end).
    pub async fn list(
        &self,
        options: ListOptions,
    ) -> Result<(Vec<pb::RunInfo>, Option<String>), Error> {
        let req = pb::ListRunsRequest {
            namespace: self.config.namespace.clone(),
            status: options.status.unwrap_or(pb::RunStatus::Unspecified) as i32,
            workflow_type: options.workflow_type.unwrap_or_default(),
            waiting: options.waiting.unwrap_or_default(),
            page_size: options.page_size,
            page_token: options.page_token.unwrap_or_default(),
            parent_run_id: options.parent_run_id.unwrap_or_default(),
            schedule: options.schedule.unwrap_or_default(),
            workflow_id: options.workflow_id.unwrap_or_default(),
            started_after_ms: options.started_after_ms.unwrap_or(0),
            started_before_ms: options.started_before_ms.unwrap_or(0),
            build: options.build.unwrap_or_default(),
            search_attributes: options
                .search_attributes
                .iter()
                .map(|(n, v)| crate::search::to_proto(n, v))
                .collect(),
            failed_activity: options.failed_activity.unwrap_or_default(),
            text: options.text.unwrap_or_default(),
            forked_from: options.forked_from.unwrap_or_default(),
        };
        let resp = self.service().list_runs(req).await?.into_inner();
        let next = Some(resp.next_page_token).filter(|t| !t.is_empty());
        Ok((resp.runs, next))
    }

    /// Waits up to `timeout` for run `run_id` to close and returns its result decoded as
    /// `O`. A run that continued as new is followed to its successor. A run that ended
    /// otherwise is an error (`RunFailed`, `RunCancelled`, ...). Rides out server restarts.
    pub async fn await_result<O: DeserializeOwned>(
        &self,
        run_id: &str,
        timeout: Duration,
    ) -> Result<O, Error> {
        self.follow(run_id.to_owned(), false, Instant::now() + timeout)
            .await
    }

    /// Starts a run of `workflow_type` with `input` and waits up to `timeout` for its result,
    /// like [`Client::start_workflow`] then [`Client::await_result`], but a run that closes
    /// within the wait takes one call, not two (the start waits on the server:
    /// `StartWorkflowRequest.wait_result_ms`); a longer run, a successor after continue-as-new
    /// or a server restart during the wait is followed with AwaitResult. As with
    /// `start_workflow`, a failed start is not retried (give `options.request_id` to retry it
    /// safely yourself).
    pub async fn execute_workflow<O: DeserializeOwned>(
        &self,
        workflow_type: &str,
        input: &(impl Serialize + ?Sized),
        options: StartOptions,
        timeout: Duration,
    ) -> Result<O, Error> {
        let deadline = Instant::now() + timeout;
        let mut req = self.start_request(workflow_type, input, options)?;
        req.wait_result_ms = timeout.min(AWAIT_POLL_MAX).as_millis() as u64;
        let resp = self.service().start_workflow(req).await?.into_inner();
        match resp.run.filter(|_| resp.closed) {
            Some(run) => match closed(&resp.run_id, run)? {
                Closed::Result(out) => Ok(out),
                Closed::ContinuedTo(next) => self.follow(next, true, deadline).await,
            },
            None => self.follow(resp.run_id, false, deadline).await,
        }
    }

    /// Waits for `run_id` (a successor named by continue-as-new when `following`) and the
    /// runs it continued to, until `deadline`.
    async fn follow<O: DeserializeOwned>(
        &self,
        mut run_id: String,
        mut following: bool,
        deadline: Instant,
    ) -> Result<O, Error> {
        let mut backoff = Backoff::default();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let req = pb::AwaitResultRequest {
                namespace: self.config.namespace.clone(),
                run_id: run_id.clone(),
                timeout_ms: left.min(AWAIT_POLL_MAX).as_millis() as u64,
            };
            let resp = match self.service().await_result(req).await {
                Ok(r) => r.into_inner(),
                Err(s) => {
                    let e = Error::from(s);
                    // A successor is created just after its predecessor records the
                    // hand-over, so for a moment the name it gave is not found yet.
                    let successor_pending = following && matches!(e, Error::NotFound(_));
                    if (e.is_retryable() || successor_pending) && Instant::now() < deadline {
                        tokio::time::sleep(backoff.next_delay().min(left)).await;
                        continue;
                    }
                    return Err(e);
                }
            };
            backoff.reset();
            if let Some(run) = resp.run.filter(|_| resp.closed) {
                match closed(&run_id, run)? {
                    Closed::Result(out) => return Ok(out),
                    // Continued as new: follow the chain.
                    Closed::ContinuedTo(next) => {
                        run_id = next;
                        following = true;
                        continue;
                    }
                }
            }
            if Instant::now() >= deadline {
                return Err(Error::Timeout);
            }
        }
    }

    /// Delivers signal `name` with `input` to run `run_id`.
    pub async fn signal(
        &self,
        run_id: &str,
        name: &str,
        input: &(impl Serialize + ?Sized),
    ) -> Result<(), Error> {
        let req = pb::SignalRunRequest {
            namespace: self.config.namespace.clone(),
            run_id: run_id.to_owned(),
            signal_name: name.to_owned(),
            input: Some(payload::encode(input)?),
            identity: self.config.identity.clone(),
            request_id: uuid::Uuid::now_v7().to_string(),
            ..Default::default()
        };
        self.service().signal_run(req).await?;
        Ok(())
    }

    /// Sends update `name` with `input` to run `run_id` and waits for the handler's result
    /// (registered with
    /// [`WorkflowContext::on_update`](crate::workflow::WorkflowContext::on_update)). The
    /// update is recorded before it runs and applied once per `request_id`: call again with
    /// the same id after a timeout or a server restart to get the same answer (the same
    /// id with another input gets the first update's answer). A validator's refusal is
    /// [`Error::UpdateRejected`]; no answer within `timeout` (`None`: 30 s) is
    /// [`Error::Unavailable`] and the update stays recorded.
    pub async fn update<O: DeserializeOwned>(
        &self,
        run_id: &str,
        name: &str,
        input: &(impl Serialize + ?Sized),
        request_id: &str,
        timeout: Option<Duration>,
    ) -> Result<O, Error> {
        let req = pb::UpdateRunRequest {
            namespace: self.config.namespace.clone(),
            run_id: run_id.to_owned(),
            update_name: name.to_owned(),
            input: Some(payload::encode(input)?),
            request_id: request_id.to_owned(),
            identity: self.config.identity.clone(),
            timeout_ms: timeout.map_or(0, |t| u64::try_from(t.as_millis()).unwrap_or(u64::MAX)),
        };
        let resp = self.service().update_run(req).await?.into_inner();
        Ok(payload::decode(resp.result.as_ref())?)
    }

    /// Asks run `run_id` through its query handler `name` (registered with
    /// [`WorkflowContext::on_query`](crate::workflow::WorkflowContext::on_query)) and decodes
    /// the answer. A worker of the run's task queue replays the run and answers; nothing is
    /// written. `timeout` bounds the wait for a worker (`None`: the server's default, 10 s).
    ///
    /// Errors: an unknown name is [`Error::UnknownQuery`]; a handler that failed (or a run its
    /// worker cannot replay) is [`Error::QueryFailed`]; no worker answering in time is
    /// [`Error::Unavailable`] (retry later, or start a worker).
    pub async fn query<O: DeserializeOwned>(
        &self,
        run_id: &str,
        name: &str,
        input: &(impl Serialize + ?Sized),
        timeout: Option<Duration>,
    ) -> Result<O, Error> {
        let req = pb::QueryRunRequest {
            namespace: self.config.namespace.clone(),
            run_id: run_id.to_owned(),
            query_name: name.to_owned(),
            input: Some(payload::encode(input)?),
            timeout_ms: timeout.map_or(0, |t| u64::try_from(t.as_millis()).unwrap_or(u64::MAX)),
        };
        let resp = self.service().query_run(req).await?.into_inner();
        Ok(payload::decode(resp.result.as_ref())?)
    }

    /// Delivers signal `name` to the open run of `workflow_id`, starting a run of
    /// `workflow_type` with `input` first when there is none.
    #[allow(clippy::too_many_arguments)]
    pub async fn signal_with_start(
        &self,
        workflow_id: &str,
        name: &str,
        signal_input: &(impl Serialize + ?Sized),
        workflow_type: &str,
        input: &(impl Serialize + ?Sized),
        mut options: StartOptions,
    ) -> Result<RunHandle, Error> {
        options.workflow_id = Some(workflow_id.to_owned());
        let start = self.start_request(workflow_type, input, options)?;
        let req = pb::SignalRunRequest {
            namespace: self.config.namespace.clone(),
            run_id: String::new(),
            workflow_id: workflow_id.to_owned(),
            signal_name: name.to_owned(),
            input: Some(payload::encode(signal_input)?),
            identity: self.config.identity.clone(),
            request_id: uuid::Uuid::now_v7().to_string(),
            signal_with_start: Some(start),
        };
        let resp = self.service().signal_run(req).await?.into_inner();
        Ok(self.handle(resp.run_id, resp.started))
    }

    /// Requests the cancellation of run `run_id`: the workflow sees it and may clean up
    /// and end with a partial result.
    pub async fn cancel(&self, run_id: &str, reason: &str) -> Result<(), Error> {
        let req = pb::CancelRunRequest {
            namespace: self.config.namespace.clone(),
            run_id: run_id.to_owned(),
            reason: reason.to_owned(),
            identity: self.config.identity.clone(),
        };
        self.service().cancel_run(req).await?;
        Ok(())
    }

    /// Ends run `run_id` now; its last partial result is kept.
    pub async fn terminate(&self, run_id: &str, reason: &str) -> Result<(), Error> {
        let req = pb::TerminateRunRequest {
            namespace: self.config.namespace.clone(),
            run_id: run_id.to_owned(),
            reason: reason.to_owned(),
            identity: self.config.identity.clone(),
        };
        self.service().terminate_run(req).await?;
        Ok(())
    }

    /// Forks run `run_id` at the last workflow-task boundary at or before `at_seq`: a new run
    /// whose history is the original's up to there (recorded activity results are reused, not
    /// run again), continued by the current code. Needs an admin token when auth is on.
    /// Returns the new run id, the boundary seq and the activities scheduled again.
    pub async fn fork(
        &self,
        run_id: &str,
        at_seq: u64,
        options: ForkOptions,
    ) -> Result<pb::ForkRunResponse, Error> {
        let input = match &options.input {
            Some(v) => Some(payload::encode(v)?),
            None => None,
        };
        let req = pb::ForkRunRequest {
            namespace: self.config.namespace.clone(),
            run_id: run_id.to_owned(),
            seq: at_seq,
            input,
            workflow_id: options.workflow_id.unwrap_or_default(),
            reset: options.reset,
            identity: self.config.identity.clone(),
        };
        Ok(self.admin.clone().fork_run(req).await?.into_inner())
    }

    /// The blob whose blake3 is `hash`: the bytes of a payload the server stored once,
    /// content-addressed (every event payload larger than the server's inline limit, 512
    /// bytes, is). `None` when the server has no such blob. The bytes are checked against
    /// the hash before they are returned.
    pub async fn get_blob(&self, hash: &[u8; 32]) -> Result<Option<Vec<u8>>, Error> {
        let req = pb::GetBlobRequest {
            namespace: self.config.namespace.clone(),
            hash: hash.to_vec(),
        };
        let resp = match self.service().get_blob(req).await {
            Ok(r) => r.into_inner(),
            Err(s) if s.code() == tonic::Code::NotFound => return Ok(None),
            Err(s) => return Err(s.into()),
        };
        let data = resp.payload.map(|p| p.data).unwrap_or_default();
        if blake3::hash(&data).as_bytes() != hash {
            return Err(Error::Server {
                code: tonic::Code::DataLoss,
                message: format!(
                    "blob {} does not match its hash ({} bytes received)",
                    hex::encode(hash),
                    data.len()
                ),
            });
        }
        Ok(Some(data))
    }

    /// The whole history of run `run_id`, all pages.
    pub async fn history(&self, run_id: &str) -> Result<Vec<pb::HistoryEvent>, Error> {
        self.history_range(run_id, 1, u64::MAX).await
    }

    /// The events of run `run_id` with seqs `from..=to` (fewer if the history is shorter).
    pub async fn history_range(
        &self,
        run_id: &str,
        from: u64,
        to: u64,
    ) -> Result<Vec<pb::HistoryEvent>, Error> {
        let mut events = Vec::new();
        let mut next = from.max(1);
        while next <= to {
            let want = (to - next)
                .saturating_add(1)
                .min(u64::from(HISTORY_PAGE_SIZE)) as u32;
            let req = pb::GetHistoryRequest {
                namespace: self.config.namespace.clone(),
                run_id: run_id.to_owned(),
                from_seq: next,
                page_size: want,
            };
            let page = self.service().get_history(req).await?.into_inner();
            let Some(last) = page.events.last().map(|e| e.seq) else {
                break;
            };
            events.extend(page.events.into_iter().filter(|e| e.seq <= to));
            if page.next_seq == 0 || last >= to {
                break;
            }
            next = page.next_seq;
        }
        Ok(events)
    }
}

/// What a closed run gives its waiter.
enum Closed<O> {
    Result(O),
    /// It continued as new: the successor to wait for.
    ContinuedTo(String),
}

/// The result of closed run `run` (id `run_id`) decoded as `O`, the successor it continued
/// to, or the error it ended with.
fn closed<O: DeserializeOwned>(run_id: &str, run: pb::RunInfo) -> Result<Closed<O>, Error> {
    let successor = run.continued_to.clone();
    if let Some(result) = outcome(run)? {
        return Ok(Closed::Result(payload::decode(result.as_ref())?));
    }
    if successor.is_empty() {
        return Err(Error::Server {
            code: tonic::Code::Internal,
            message: format!("run {run_id} continued as new, but its successor is not named"),
        });
    }
    Ok(Closed::ContinuedTo(successor))
}

/// The result of a closed run: `Some(result)` when completed, `None` when it continued as
/// new, an error for the other endings.
fn outcome(run: pb::RunInfo) -> Result<Option<Option<pb::Payload>>, Error> {
    let partial = |run: &pb::RunInfo| -> Option<serde_json::Value> {
        run.result
            .as_ref()
            .and_then(|p| payload::decode(Some(p)).ok())
    };
    let failure = run.failure.clone().unwrap_or_default();
    match run.status() {
        pb::RunStatus::Completed => Ok(Some(run.result)),
        pb::RunStatus::ContinuedAsNew => Ok(None),
        pb::RunStatus::Failed => Err(Error::RunFailed {
            message: failure.message,
            error_type: failure.r#type,
        }),
        pb::RunStatus::Cancelled => Err(Error::RunCancelled {
            partial: partial(&run),
        }),
        pb::RunStatus::Terminated => Err(Error::RunTerminated {
            reason: failure.message,
            partial: partial(&run),
        }),
        pb::RunStatus::TimedOut => Err(Error::RunTimedOut {
            partial: partial(&run),
        }),
        pb::RunStatus::Running | pb::RunStatus::Unspecified => Err(Error::Server {
            code: tonic::Code::Internal,
            message: format!(
                "run {} reported closed with status {:?}",
                run.run_id,
                run.status()
            ),
        }),
    }
}
