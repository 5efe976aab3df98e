//! Helpers for servers that require tokens (and TLS): auth-file entries made with the real
//! `steadfast auth` commands, raw gRPC clients that send a token, and every RPC tried once.

use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};

use anyhow::{Context, Result, bail};
use steadfast_proto::v1 as pb;
use steadfast_proto::v1::admin_service_client::AdminServiceClient;
use steadfast_proto::v1::client_service_client::ClientServiceClient;
use steadfast_proto::v1::schedule_service_client::ScheduleServiceClient;
use steadfast_proto::v1::worker_service_client::WorkerServiceClient;
use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::Interceptor;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;

use crate::bin;

/// `steadfast auth new-token`.
pub fn new_token() -> Result<String> {
    let out = Command::new(bin("steadfast"))
        .args(["auth", "new-token"])
        .stdin(Stdio::null())
        .output()?;
    if !out.status.success() {
        bail!(
            "auth new-token failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8(out.stdout)?.trim().to_string())
}

/// `echo TOKEN | steadfast auth hash --name N --role R --namespaces NS`: the auth-file line.
pub fn entry(token: &str, name: &str, role: &str, namespaces: &str) -> Result<String> {
    entry_with_queues(token, name, role, namespaces, None)
}

/// [`entry`] with `--queues QUEUES` when given (a worker limited to those task queues).
pub fn entry_with_queues(
    token: &str,
    name: &str,
    role: &str,
    namespaces: &str,
    queues: Option<&str>,
) -> Result<String> {
    let mut child = Command::new(bin("steadfast"))
        .args(["auth", "hash", "--name", name, "--role", role])
        .args(["--namespaces", namespaces])
        .args(queues.map(|q| ["--queues", q]).into_iter().flatten())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    child
        .stdin
        .take()
        .context("stdin")?
        .write_all(format!("{token}\n").as_bytes())?;
    let out = child.wait_with_output()?;
    if !out.status.success() {
        bail!("auth hash failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    let line = String::from_utf8(out.stdout)?.trim().to_string();
    if line.contains(token) {
        bail!("the auth-file line contains the token itself");
    }
    Ok(line)
}

/// Writes `lines` as the auth file at `path` (replacing it whole, as an editor's save does).
pub fn write_auth_file(path: &Path, lines: &[&str]) -> Result<()> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, format!("# test auth file\n{}\n", lines.join("\n")))?;
    std::fs::rename(&tmp, path)?;
    Ok(())
}

/// Sends `authorization: Bearer <token>` (or nothing).
#[derive(Clone)]
pub struct Tok(Option<MetadataValue<Ascii>>);

impl Tok {
    /// For `token`; `None` sends no metadata.
    pub fn new(token: Option<&str>) -> Tok {
        Tok(token.map(|t| format!("Bearer {t}").parse().expect("ascii token")))
    }
}

impl Interceptor for Tok {
    fn call(&mut self, mut req: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(v) = &self.0 {
            req.metadata_mut().insert("authorization", v.clone());
        }
        Ok(req)
    }
}

type Svc = InterceptedService<Channel, Tok>;

/// The three services over one channel, every call with one token.
#[derive(Clone)]
pub struct Services {
    /// ClientService.
    pub client: ClientServiceClient<Svc>,
    /// WorkerService.
    pub worker: WorkerServiceClient<Svc>,
    /// AdminService.
    pub admin: AdminServiceClient<Svc>,
    /// ScheduleService.
    pub schedule: ScheduleServiceClient<Svc>,
}

impl Services {
    /// Over `channel`, sending `token`.
    pub fn new(channel: Channel, token: Option<&str>) -> Services {
        let t = Tok::new(token);
        let big = 64 << 20;
        Services {
            client: ClientServiceClient::with_interceptor(channel.clone(), t.clone())
                .max_encoding_message_size(big)
                .max_decoding_message_size(big),
            worker: WorkerServiceClient::with_interceptor(channel.clone(), t.clone())
                .max_encoding_message_size(big)
                .max_decoding_message_size(big),
            admin: AdminServiceClient::with_interceptor(channel.clone(), t.clone())
                .max_encoding_message_size(big)
                .max_decoding_message_size(big),
            schedule: ScheduleServiceClient::with_interceptor(channel, t)
                .max_encoding_message_size(big)
                .max_decoding_message_size(big),
        }
    }
}

/// What one request puts in every field that names something.
#[derive(Clone, Debug)]
pub struct Fields {
    /// The namespace of every request.
    pub namespace: String,
    /// Run ids.
    pub run_id: String,
    /// Workflow ids, types, queues, signal names, identities, request ids, worker ids.
    pub name: String,
    /// Task tokens.
    pub task_token: String,
    /// The data of every payload (JSON encoding).
    pub payload: String,
    /// Long polls return at once (the test does not wait for them).
    pub poll_timeout_ms: u64,
}

fn json(data: &str) -> Option<pb::Payload> {
    Some(pb::Payload {
        encoding: "json/plain".into(),
        data: data.as_bytes().to_vec(),
    })
}

/// One RPC's outcome: its method name, the result (a stream that opened counts as OK), and
/// how long it took to answer.
pub type Outcome = (&'static str, Result<(), tonic::Status>, std::time::Duration);

/// Calls every RPC of the three services once with `f` in its fields.
pub async fn every_rpc(s: &Services, f: &Fields) -> Vec<Outcome> {
    let mut s = s.clone();
    let ns = f.namespace.clone();
    let n = f.name.clone();
    let start = pb::StartWorkflowRequest {
        namespace: ns.clone(),
        workflow_type: n.clone(),
        workflow_id: n.clone(),
        task_queue: n.clone(),
        input: json(&f.payload),
        identity: n.clone(),
        request_id: n.clone(),
        ..Default::default()
    };
    let mut out: Vec<Outcome> = Vec::new();
    macro_rules! call {
        ($name:literal, $e:expr) => {{
            let started = std::time::Instant::now();
            let r = $e.await.map(|_| ());
            out.push(($name, r, started.elapsed()))
        }};
    }
    call!("StartWorkflow", s.client.start_workflow(start.clone()));
    call!(
        "DescribeRun",
        s.client.describe_run(pb::DescribeRunRequest {
            namespace: ns.clone(),
            run_id: f.run_id.clone(),
            approval_previews: true,
        })
    );
    call!(
        "ListRuns",
        s.client.list_runs(pb::ListRunsRequest {
            namespace: ns.clone(),
            workflow_type: n.clone(),
            waiting: n.clone(),
            page_token: n.clone(),
            ..Default::default()
        })
    );
    call!(
        "GetHistory",
        s.client.get_history(pb::GetHistoryRequest {
            namespace: ns.clone(),
            run_id: f.run_id.clone(),
            ..Default::default()
        })
    );
    call!(
        "AwaitResult",
        s.client.await_result(pb::AwaitResultRequest {
            namespace: ns.clone(),
            run_id: f.run_id.clone(),
            timeout_ms: 0,
        })
    );
    call!(
        "SignalRun",
        s.client.signal_run(pb::SignalRunRequest {
            namespace: ns.clone(),
            run_id: f.run_id.clone(),
            workflow_id: n.clone(),
            signal_name: n.clone(),
            input: json(&f.payload),
            identity: n.clone(),
            request_id: n.clone(),
            signal_with_start: Some(start.clone()),
        })
    );
    call!(
        "WatchRun",
        s.client.watch_run(pb::WatchRunRequest {
            namespace: ns.clone(),
            run_id: f.run_id.clone(),
            after_seq: 0,
            include_deltas: false,
        })
    );
    call!(
        "ApproveActivity",
        s.client.approve_activity(pb::ApproveActivityRequest {
            namespace: ns.clone(),
            run_id: f.run_id.clone(),
            activity_id: 1,
            comment: n.clone(),
            input: json(&f.payload),
            identity: n.clone(),
        })
    );
    call!(
        "DenyActivity",
        s.client.deny_activity(pb::DenyActivityRequest {
            namespace: ns.clone(),
            run_id: f.run_id.clone(),
            activity_id: 1,
            reason: n.clone(),
            identity: n.clone(),
        })
    );
    call!(
        "GetBlob",
        s.client.get_blob(pb::GetBlobRequest {
            namespace: ns.clone(),
            hash: n.as_bytes().iter().copied().take(64).collect(),
        })
    );
    call!(
        "PollWorkflowTask",
        s.worker.poll_workflow_task(pb::PollWorkflowTaskRequest {
            namespace: ns.clone(),
            task_queue: n.clone(),
            worker_id: n.clone(),
            workflow_types: vec![n.clone()],
            poll_timeout_ms: f.poll_timeout_ms,
            build_id: n.clone(),
        })
    );
    call!(
        "CompleteWorkflowTask",
        s.worker
            .complete_workflow_task(pb::CompleteWorkflowTaskRequest {
                namespace: ns.clone(),
                task_token: f.task_token.clone(),
                worker_id: n.clone(),
                eager_activity_types: vec![n.clone()],
                ..Default::default()
            })
    );
    call!(
        "FailWorkflowTask",
        s.worker.fail_workflow_task(pb::FailWorkflowTaskRequest {
            namespace: ns.clone(),
            task_token: f.task_token.clone(),
            message: n.clone(),
            worker_id: n.clone(),
            ..Default::default()
        })
    );
    call!(
        "PollActivityTask",
        s.worker.poll_activity_task(pb::PollActivityTaskRequest {
            namespace: ns.clone(),
            task_queue: n.clone(),
            worker_id: n.clone(),
            activity_types: vec![n.clone()],
            poll_timeout_ms: f.poll_timeout_ms,
            ..Default::default()
        })
    );
    call!(
        "CompleteActivityTask",
        s.worker
            .complete_activity_task(pb::CompleteActivityTaskRequest {
                namespace: ns.clone(),
                task_token: f.task_token.clone(),
                result: json(&f.payload),
                worker_id: n.clone(),
                ..Default::default()
            })
    );
    call!(
        "FailActivityTask",
        s.worker.fail_activity_task(pb::FailActivityTaskRequest {
            namespace: ns.clone(),
            task_token: f.task_token.clone(),
            worker_id: n.clone(),
            ..Default::default()
        })
    );
    call!(
        "HeartbeatActivityTask",
        s.worker
            .heartbeat_activity_task(pb::HeartbeatActivityTaskRequest {
                namespace: ns.clone(),
                task_token: f.task_token.clone(),
                details: json(&f.payload),
                record: false,
            })
    );
    call!(
        "PublishActivityDeltas",
        s.worker
            .publish_activity_deltas(pb::PublishActivityDeltasRequest {
                namespace: ns.clone(),
                task_token: f.task_token.clone(),
                attempt: 1,
                deltas: vec![pb::ActivityDelta {
                    text: f.payload.clone(),
                    ..Default::default()
                }],
            })
    );
    call!(
        "WorkerSession",
        s.worker.worker_session(pb::WorkerSessionRequest {
            namespace: ns.clone(),
            worker_id: n.clone(),
            task_queues: vec![n.clone()],
        })
    );
    call!(
        "UpdateBudget",
        s.admin.update_budget(pb::UpdateBudgetRequest {
            namespace: ns.clone(),
            run_id: f.run_id.clone(),
            budget: Some(pb::Budget {
                max_tokens: 1,
                ..Default::default()
            }),
            identity: n.clone(),
        })
    );
    call!(
        "ReconcileActivity",
        s.admin.reconcile_activity(pb::ReconcileActivityRequest {
            namespace: ns.clone(),
            run_id: f.run_id.clone(),
            activity_id: 1,
            identity: n.clone(),
            decision: Some(pb::reconcile_activity_request::Decision::Retry(
                Default::default()
            )),
        })
    );
    // Last: the ones above must not change a run (they are refused), but cancel and terminate
    // would end it if they were not.
    call!(
        "CancelRun",
        s.client.cancel_run(pb::CancelRunRequest {
            namespace: ns.clone(),
            run_id: f.run_id.clone(),
            reason: n.clone(),
            identity: n.clone(),
        })
    );
    call!(
        "TerminateRun",
        s.client.terminate_run(pb::TerminateRunRequest {
            namespace: ns.clone(),
            run_id: f.run_id.clone(),
            reason: n.clone(),
            identity: n.clone(),
        })
    );
    call!(
        "VerifyHistory",
        s.admin.verify_history(pb::VerifyHistoryRequest {
            namespace: ns.clone(),
            run_id: f.run_id.clone(),
        })
    );
    call!(
        "ImportHistory",
        s.admin.import_history(pb::ImportHistoryRequest {
            namespace: ns.clone(),
            run_id: f.run_id.clone(),
            source_namespace: ns.clone(),
            events: Vec::new(),
        })
    );
    call!(
        "ForkRun",
        s.admin.fork_run(pb::ForkRunRequest {
            namespace: ns.clone(),
            run_id: f.run_id.clone(),
            seq: 1,
            input: json(&f.payload),
            workflow_id: n.clone(),
            reset: false,
            identity: n.clone(),
        })
    );
    call!(
        "SetTaskQueueBuild",
        s.admin.set_task_queue_build(pb::SetTaskQueueBuildRequest {
            namespace: ns.clone(),
            task_queue: n.clone(),
            build_id: n.clone(),
        })
    );
    call!(
        "DescribeTaskQueue",
        s.admin.describe_task_queue(pb::DescribeTaskQueueRequest {
            namespace: ns.clone(),
            task_queue: n.clone(),
        })
    );
    call!(
        "QueryRun",
        s.client.query_run(pb::QueryRunRequest {
            namespace: ns.clone(),
            run_id: f.run_id.clone(),
            query_name: n.clone(),
            input: json(&f.payload),
            timeout_ms: 1,
        })
    );
    call!(
        "UpdateRun",
        s.client.update_run(pb::UpdateRunRequest {
            namespace: ns.clone(),
            run_id: f.run_id.clone(),
            update_name: n.clone(),
            input: json(&f.payload),
            request_id: n.clone(),
            identity: n.clone(),
            timeout_ms: 1,
        })
    );
    call!(
        "PollQueryTask",
        s.worker.poll_query_task(pb::PollQueryTaskRequest {
            namespace: ns.clone(),
            task_queue: n.clone(),
            worker_id: n.clone(),
            workflow_types: vec![n.clone()],
            poll_timeout_ms: f.poll_timeout_ms,
        })
    );
    call!(
        "RespondQueryTask",
        s.worker.respond_query_task(pb::RespondQueryTaskRequest {
            namespace: ns.clone(),
            query_id: n.clone(),
            worker_id: n.clone(),
            result: json(&f.payload),
            ..Default::default()
        })
    );
    call!(
        "CheckWorkflows",
        s.admin.check_workflows(pb::CheckWorkflowsRequest {
            namespace: ns.clone(),
            task_queue: n.clone(),
            timeout_ms: 1,
        })
    );
    call!(
        "PollCheckTask",
        s.worker.poll_check_task(pb::PollCheckTaskRequest {
            namespace: ns.clone(),
            task_queue: n.clone(),
            worker_id: n.clone(),
            workflow_types: vec![n.clone()],
            poll_timeout_ms: f.poll_timeout_ms,
        })
    );
    call!(
        "RespondCheckTask",
        s.worker.respond_check_task(pb::RespondCheckTaskRequest {
            namespace: ns.clone(),
            check_id: n.clone(),
            worker_id: n.clone(),
            report: Some(pb::CheckReport::default()),
            failure_message: String::new(),
        })
    );
    let schedule = pb::ScheduleName {
        namespace: ns.clone(),
        name: n.clone(),
    };
    call!(
        "CreateSchedule",
        s.schedule.create_schedule(pb::CreateScheduleRequest {
            namespace: ns.clone(),
            name: n.clone(),
            every_ms: 3_600_000,
            workflow_type: n.clone(),
            input: json(&f.payload),
            task_queue: n.clone(),
            paused: true,
            ..Default::default()
        })
    );
    call!(
        "DescribeSchedule",
        s.schedule.describe_schedule(schedule.clone())
    );
    call!(
        "ListSchedules",
        s.schedule.list_schedules(pb::ListSchedulesRequest {
            namespace: ns.clone(),
        })
    );
    call!("PauseSchedule", s.schedule.pause_schedule(schedule.clone()));
    call!(
        "ResumeSchedule",
        s.schedule.resume_schedule(schedule.clone())
    );
    call!(
        "TriggerSchedule",
        s.schedule.trigger_schedule(schedule.clone())
    );
    call!(
        "BackfillSchedule",
        s.schedule.backfill_schedule(pb::BackfillScheduleRequest {
            namespace: ns.clone(),
            name: n.clone(),
            from_ms: 0,
            to_ms: 1,
        })
    );
    call!("DeleteSchedule", s.schedule.delete_schedule(schedule));
    call!("Checkpoint", s.admin.checkpoint(pb::CheckpointRequest {}));
    out
}

/// Every method of the `steadfast.v1` services, as `Service/Method`, read from the proto
/// descriptor the server serves: what [`every_rpc`] must cover, so that a new RPC that is not
/// tried fails the tests that use it.
pub fn proto_methods() -> Result<Vec<String>> {
    use prost::Message;
    let set = prost_types::FileDescriptorSet::decode(pb::FILE_DESCRIPTOR_SET)?;
    let mut out = Vec::new();
    for file in set.file.iter().filter(|f| f.package() == "steadfast.v1") {
        for svc in &file.service {
            for m in &svc.method {
                out.push(format!("{}/{}", svc.name(), m.name()));
            }
        }
    }
    if out.is_empty() {
        bail!("the descriptor set names no steadfast.v1 method");
    }
    Ok(out)
}

/// The methods of [`proto_methods`] that [`every_rpc`]'s outcomes do not cover (by method
/// name; method names are unique across the services, which this checks too).
pub fn untried(outcomes: &[Outcome]) -> Result<Vec<String>> {
    let methods = proto_methods()?;
    let mut names: Vec<&str> = methods.iter().filter_map(|m| m.split('/').nth(1)).collect();
    names.sort_unstable();
    if names.windows(2).any(|w| w[0] == w[1]) {
        bail!("two services have a method of the same name: make every_rpc name its service");
    }
    Ok(methods
        .iter()
        .filter(|m| {
            let name = m.split('/').nth(1).unwrap_or("");
            !outcomes.iter().any(|(n, _, _)| *n == name)
        })
        .cloned()
        .collect())
}
