//! The raw worker protocol, spoken with the generated tonic clients (not the SDK): for tests
//! that act as a skeptical worker would — stale, forged, filtered — and check what the server
//! believes.

use anyhow::{Context, Result, bail};
use steadfast_proto::v1 as pb;
use steadfast_proto::v1::client_service_client::ClientServiceClient;
use steadfast_proto::v1::worker_service_client::WorkerServiceClient;
use tonic::transport::Channel;

/// The task queue the raw helpers use unless told otherwise.
pub const QUEUE: &str = "fenced";

/// One connection: the client and worker services of a server.
#[derive(Clone)]
pub struct Raw {
    /// ClientService.
    pub client: ClientServiceClient<Channel>,
    /// WorkerService.
    pub worker: WorkerServiceClient<Channel>,
}

impl Raw {
    /// Connects to `url`.
    pub async fn connect(url: &str) -> Result<Raw> {
        let channel = tonic::transport::Endpoint::from_shared(url.to_string())?
            .connect()
            .await
            .with_context(|| format!("connect to {url}"))?;
        Ok(Raw {
            client: ClientServiceClient::new(channel.clone()),
            worker: WorkerServiceClient::new(channel),
        })
    }

    /// Starts a run of `workflow_type` on [`QUEUE`] in `namespace`; returns its id.
    pub async fn start(&mut self, namespace: &str, workflow_type: &str) -> Result<String> {
        let r = self
            .client
            .start_workflow(pb::StartWorkflowRequest {
                namespace: namespace.into(),
                workflow_type: workflow_type.into(),
                task_queue: QUEUE.into(),
                input: Some(json("null")),
                ..Default::default()
            })
            .await?
            .into_inner();
        Ok(r.run_id)
    }

    /// Polls a workflow task of `types` (empty = any) for up to `timeout_ms`; `None` when the
    /// poll came back empty.
    pub async fn poll_workflow(
        &mut self,
        namespace: &str,
        types: &[&str],
        timeout_ms: u64,
    ) -> Result<Option<pb::PollWorkflowTaskResponse>> {
        let t = self
            .worker
            .poll_workflow_task(pb::PollWorkflowTaskRequest {
                namespace: namespace.into(),
                task_queue: QUEUE.into(),
                worker_id: "raw-workflow-worker".into(),
                workflow_types: types.iter().map(|s| s.to_string()).collect(),
                poll_timeout_ms: timeout_ms,
                build_id: String::new(),
            })
            .await?
            .into_inner();
        Ok((!t.task_token.is_empty()).then_some(t))
    }

    /// Polls a workflow task of `types`, failing when none comes within `timeout_ms`.
    pub async fn expect_workflow(
        &mut self,
        namespace: &str,
        types: &[&str],
        timeout_ms: u64,
    ) -> Result<pb::PollWorkflowTaskResponse> {
        match self.poll_workflow(namespace, types, timeout_ms).await? {
            Some(t) => Ok(t),
            None => bail!("no workflow task of {types:?} within {timeout_ms} ms"),
        }
    }

    /// Completes a workflow task with `commands`.
    pub async fn complete_workflow(
        &mut self,
        namespace: &str,
        token: &str,
        commands: Vec<pb::Command>,
    ) -> std::result::Result<(), tonic::Status> {
        self.worker
            .complete_workflow_task(pb::CompleteWorkflowTaskRequest {
                namespace: namespace.into(),
                task_token: token.into(),
                commands,
                worker_id: "raw-workflow-worker".into(),
                ..Default::default()
            })
            .await
            .map(|_| ())
    }

    /// Polls an activity task of `types` with `declarations` for up to `timeout_ms`.
    pub async fn poll_activity(
        &mut self,
        namespace: &str,
        types: &[&str],
        declarations: &[(&str, pb::Effect)],
        timeout_ms: u64,
    ) -> Result<Option<pb::PollActivityTaskResponse>> {
        let t = self
            .worker
            .poll_activity_task(activity_poll(namespace, types, declarations, timeout_ms))
            .await?
            .into_inner();
        Ok((!t.task_token.is_empty()).then_some(t))
    }

    /// Completes an activity attempt with a JSON result.
    pub async fn complete_activity(
        &mut self,
        namespace: &str,
        token: &str,
        result: &str,
    ) -> std::result::Result<(), tonic::Status> {
        self.worker
            .complete_activity_task(pb::CompleteActivityTaskRequest {
                namespace: namespace.into(),
                task_token: token.into(),
                result: Some(json(result)),
                worker_id: "raw-activity-worker".into(),
                ..Default::default()
            })
            .await
            .map(|_| ())
    }

    /// Fails an activity attempt, retryably.
    pub async fn fail_activity(
        &mut self,
        namespace: &str,
        token: &str,
    ) -> std::result::Result<(), tonic::Status> {
        self.worker
            .fail_activity_task(pb::FailActivityTaskRequest {
                namespace: namespace.into(),
                task_token: token.into(),
                failure: Some(pb::Failure {
                    message: "transient".into(),
                    r#type: "Transient".into(),
                    ..Default::default()
                }),
                worker_id: "raw-activity-worker".into(),
                usage: None,
            })
            .await
            .map(|_| ())
    }

    /// Heartbeats an activity attempt.
    pub async fn heartbeat(
        &mut self,
        namespace: &str,
        token: &str,
    ) -> std::result::Result<pb::HeartbeatActivityTaskResponse, tonic::Status> {
        self.worker
            .heartbeat_activity_task(pb::HeartbeatActivityTaskRequest {
                namespace: namespace.into(),
                task_token: token.into(),
                details: None,
                record: false,
            })
            .await
            .map(|r| r.into_inner())
    }

    /// The whole history of a run.
    pub async fn history(
        &mut self,
        namespace: &str,
        run_id: &str,
    ) -> Result<Vec<pb::HistoryEvent>> {
        let mut out = Vec::new();
        let mut from = 1;
        loop {
            let page = self
                .client
                .get_history(pb::GetHistoryRequest {
                    namespace: namespace.into(),
                    run_id: run_id.into(),
                    from_seq: from,
                    page_size: 1000,
                })
                .await?
                .into_inner();
            out.extend(page.events);
            if page.next_seq == 0 {
                return Ok(out);
            }
            from = page.next_seq;
        }
    }
}

/// A PollActivityTaskRequest on [`QUEUE`].
pub fn activity_poll(
    namespace: &str,
    types: &[&str],
    declarations: &[(&str, pb::Effect)],
    timeout_ms: u64,
) -> pb::PollActivityTaskRequest {
    pb::PollActivityTaskRequest {
        namespace: namespace.into(),
        task_queue: QUEUE.into(),
        worker_id: "raw-activity-worker".into(),
        activity_types: types.iter().map(|s| s.to_string()).collect(),
        poll_timeout_ms: timeout_ms,
        activities: declarations
            .iter()
            .map(|(t, e)| pb::ActivityDeclaration {
                activity_type: t.to_string(),
                effect: *e as i32,
                requires_approval: false,
            })
            .collect(),
    }
}

/// A JSON payload.
pub fn json(text: &str) -> pb::Payload {
    pb::Payload {
        encoding: "json/plain".into(),
        data: text.as_bytes().to_vec(),
    }
}

/// Command `seq`: schedule `activity_type` on [`QUEUE`] with `options` (its task queue is
/// filled in).
pub fn schedule(seq: u32, activity_type: &str, mut options: pb::ActivityOptions) -> pb::Command {
    options.task_queue = QUEUE.into();
    pb::Command {
        seq,
        command: Some(pb::command::Command::ScheduleActivity(
            pb::ScheduleActivityCommand {
                activity_type: activity_type.into(),
                input: Some(json("{}")),
                options: Some(options),
            },
        )),
    }
}

/// The events of `kind` in a history.
pub fn of_kind(history: &[pb::HistoryEvent], kind: pb::EventKind) -> Vec<&pb::HistoryEvent> {
    history.iter().filter(|e| e.kind == kind as i32).collect()
}
