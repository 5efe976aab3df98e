//! LLM calls as activities: the `llm.chat` activity (worker side) and [`chat`], the
//! workflow-side call that schedules it. The answer is recorded in the history once, so a
//! replay never calls the model again.

use std::sync::OnceLock;
use std::time::Duration;

use super::transcript::Link;
use super::{ChatRequest, ChatResponse, Error, LlmClient, NON_RETRYABLE_TYPES, resolve_transcript};
use futures::future::BoxFuture;

use crate::activity::ActivityContext;
use crate::worker::Worker;
use crate::workflow::{ActivityFuture, ActivityOptions, Registry, RetryPolicy};
use crate::{ActivityError, Effect, WorkflowContext};

/// The activity type of an LLM chat call.
pub const ACTIVITY_NAME: &str = "llm.chat";

/// The effect of `llm.chat`: it changes nothing in the world, so a lost attempt is simply
/// retried.
pub const ACTIVITY_EFFECT: Effect = Effect::Read;

/// Time of one `llm.chat` attempt.
pub const START_TO_CLOSE: Duration = Duration::from_secs(120);
/// Delay before the second attempt.
pub const RETRY_INITIAL_INTERVAL: Duration = Duration::from_secs(1);
/// Multiplier of the delay after each failed attempt.
pub const RETRY_BACKOFF: f64 = 2.0;
/// Attempts of one call, the first included.
pub const RETRY_MAX_ATTEMPTS: u32 = 5;
/// A call whose worker stops heartbeating for this long is retried (the worker runtime
/// heartbeats every running activity about every 500 ms), so a call lost with its worker
/// costs seconds, not the whole start-to-close timeout.
pub const HEARTBEAT_TIMEOUT: Duration = Duration::from_secs(5);

/// The options [`chat`] schedules `llm.chat` with: 120 s per attempt, lost after 5 s without
/// a heartbeat; retries after 1 s, 2 s, 4 s, 8 s (5 attempts); rate limits, 5xx and network
/// failures are retried, refused requests and credentials ([`NON_RETRYABLE_TYPES`]) are not.
pub fn chat_options() -> ActivityOptions {
    ActivityOptions::default()
        .start_to_close(START_TO_CLOSE)
        .heartbeat_timeout(HEARTBEAT_TIMEOUT)
        .retry(RetryPolicy {
            initial_interval: Some(RETRY_INITIAL_INTERVAL),
            backoff_coefficient: Some(RETRY_BACKOFF),
            maximum_interval: None,
            maximum_attempts: RETRY_MAX_ATTEMPTS,
            non_retryable_error_types: NON_RETRYABLE_TYPES.iter().map(|t| t.to_string()).collect(),
        })
}

/// Workflow side: schedules the `llm.chat` activity with [`chat_options`] (issues the
/// command now) and resolves with the recorded answer.
///
/// ```no_run
/// use steadfast_sdk::llm::{self, ChatRequest, Message};
/// use steadfast_sdk::{WorkflowContext, WorkflowError};
///
/// async fn agent(ctx: WorkflowContext, question: String) -> Result<String, WorkflowError> {
///     let request = ChatRequest::new([Message::user(question)]);
///     let answer = llm::chat(&ctx, &request).await?;
///     Ok(answer.text().to_owned())
/// }
/// ```
pub fn chat(ctx: &WorkflowContext, request: &ChatRequest) -> ActivityFuture<ChatResponse> {
    chat_with(ctx, request, chat_options())
}

/// Like [`chat`] with options of your choice (start from [`chat_options`]).
pub fn chat_with(
    ctx: &WorkflowContext,
    request: &ChatRequest,
    options: ActivityOptions,
) -> ActivityFuture<ChatResponse> {
    ctx.activity(ACTIVITY_NAME, request).options(options)
}

/// Declares `llm.chat` as [`ACTIVITY_EFFECT`] in a workflow registry, for workers that run
/// the workflows but not the activity (a worker that registers the activity declares it
/// by the registration).
pub fn declare(registry: &mut Registry) {
    registry.declare_activity_effect(ACTIVITY_NAME, ACTIVITY_EFFECT);
}

/// The process-wide client, configured from the environment on first use
/// ([`LlmClient::from_env`]); a configuration error is kept and returned on every call.
pub fn shared_client() -> Result<&'static LlmClient, Error> {
    static CLIENT: OnceLock<Result<LlmClient, Error>> = OnceLock::new();
    CLIENT
        .get_or_init(LlmClient::from_env)
        .as_ref()
        .map_err(Clone::clone)
}

/// Worker side: the `llm.chat` activity, with the [`shared_client`]. Its usage (tokens,
/// cost, model) is added to `ctx`, so the runtime reports it with the result.
///
/// ```no_run
/// use steadfast_sdk::llm;
/// use steadfast_sdk::worker::{Worker, WorkerOptions};
///
/// let mut worker = Worker::new("http://127.0.0.1:7233", WorkerOptions::new("default"));
/// worker.register_activity(llm::ACTIVITY_NAME, llm::ACTIVITY_EFFECT, llm::chat_activity);
/// // Or with a client configured in code:
/// llm::register(&mut worker, llm::LlmClient::offline());
/// ```
pub async fn chat_activity(
    ctx: ActivityContext,
    request: ChatRequest,
) -> Result<ChatResponse, ActivityError> {
    shared_client()?.run_activity(&ctx, request).await
}

/// Registers the `llm.chat` activity on `worker` with `client` (a client configured in
/// code; for the environment's, register [`chat_activity`]).
pub fn register(worker: &mut Worker, client: LlmClient) {
    worker.register_activity(ACTIVITY_NAME, ACTIVITY_EFFECT, activity_fn(client));
}

/// The `llm.chat` activity function of `client`, for registration by hand.
pub fn activity_fn(
    client: LlmClient,
) -> impl Fn(ActivityContext, ChatRequest) -> BoxFuture<'static, Result<ChatResponse, ActivityError>>
+ Send
+ Sync
+ Clone
+ 'static {
    move |ctx, request| {
        let client = client.clone();
        Box::pin(async move { client.run_activity(&ctx, request).await })
    }
}

impl LlmClient {
    /// The `llm.chat` activity with this client: one call with its usage added to `ctx`,
    /// its [`Error`] mapped to a retryable or non-retryable [`ActivityError`].
    ///
    /// A [`super::Conversation`] request's transcript reference is resolved first (see
    /// [`super::transcript`]); after a successful call its full transcript is cached for
    /// the conversation's next call.
    pub async fn run_activity(
        &self,
        ctx: &ActivityContext,
        request: ChatRequest,
    ) -> Result<ChatResponse, ActivityError> {
        let link = Link::of(ctx, &request);
        let request = resolve_transcript(ctx, request).await?;
        let response = self.chat_for(ctx, &request).await?;
        link.remember(request.messages);
        Ok(response)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::activity::Activities;
    use crate::activity::runtime::{ActivityTransport, RuntimeConfig, run_attempt};
    use crate::llm::error::{AUTH_TYPE, BAD_REQUEST_TYPE, UNAVAILABLE_TYPE};
    use crate::llm::{LlmConfig, Message, offline};
    use crate::payload;
    use parking_lot::Mutex;
    use std::sync::Arc;
    use steadfast_proto::v1 as pb;

    /// Stands in for the server: records what the runtime reports.
    #[derive(Clone, Default)]
    struct Recorder {
        completed: Arc<Mutex<Vec<pb::CompleteActivityTaskRequest>>>,
        failed: Arc<Mutex<Vec<pb::FailActivityTaskRequest>>>,
    }

    impl ActivityTransport for Recorder {
        async fn heartbeat(
            &self,
            _req: pb::HeartbeatActivityTaskRequest,
        ) -> Result<pb::HeartbeatActivityTaskResponse, tonic::Status> {
            Ok(pb::HeartbeatActivityTaskResponse::default())
        }

        async fn complete(
            &self,
            req: pb::CompleteActivityTaskRequest,
        ) -> Result<pb::CompleteActivityTaskResponse, tonic::Status> {
            self.completed.lock().push(req);
            Ok(pb::CompleteActivityTaskResponse::default())
        }

        async fn fail(&self, req: pb::FailActivityTaskRequest) -> Result<(), tonic::Status> {
            self.failed.lock().push(req);
            Ok(())
        }
    }

    async fn run(client: LlmClient, request: &ChatRequest) -> Recorder {
        let mut activities = Activities::new();
        activities.register(ACTIVITY_NAME, ACTIVITY_EFFECT, activity_fn(client));
        let recorder = Recorder::default();
        let config = RuntimeConfig {
            namespace: "default".into(),
            worker_id: "w1".into(),
            heartbeat_interval: Duration::from_secs(60),
            cancel_grace: Duration::from_secs(1),
            report_timeout: Duration::from_secs(1),
            client: None,
            eager_workflow: None,
        };
        let task = pb::PollActivityTaskResponse {
            task_token: "t".into(),
            run_id: "run".into(),
            activity_id: 1,
            activity_type: ACTIVITY_NAME.into(),
            input: Some(payload::encode(request).unwrap()),
            attempt: 1,
            namespace: "default".into(),
            ..Default::default()
        };
        run_attempt(&recorder, &config, &activities, task).await;
        recorder
    }

    #[test]
    fn default_options_match_the_llm_retry_needs() {
        let o = chat_options();
        assert_eq!(o.start_to_close_timeout, Some(Duration::from_secs(120)));
        let r = o.retry.unwrap();
        assert_eq!(r.initial_interval, Some(Duration::from_secs(1)));
        assert_eq!(r.backoff_coefficient, Some(2.0));
        assert_eq!(r.maximum_attempts, 5);
        assert!(
            r.non_retryable_error_types
                .contains(&BAD_REQUEST_TYPE.to_owned())
        );
        assert!(r.non_retryable_error_types.contains(&AUTH_TYPE.to_owned()));
    }

    #[tokio::test]
    async fn the_activity_reports_its_usage_with_the_result() {
        let request = ChatRequest::new([Message::user("hello")]);
        let recorder = run(LlmClient::offline(), &request).await;
        let completed = recorder.completed.lock().clone();
        let [done] = completed.as_slice() else {
            panic!("expected one completion, got {completed:?}");
        };
        let response: ChatResponse = payload::decode(done.result.as_ref()).unwrap();
        assert_eq!(response.model, offline::MODEL_NAME);
        let usage = done.usage.as_ref().expect("usage sent with the result");
        assert_eq!(usage, &response.usage.to_proto());
        assert_eq!(usage.input_tokens, offline::count_tokens("hello"));
        assert_eq!(usage.model, offline::MODEL_NAME);
    }

    #[tokio::test]
    async fn an_unreachable_api_fails_the_attempt_retryably() {
        // A port that was free a moment ago: connection refused.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let client = LlmClient::new(
            LlmConfig::openai_compatible(format!("http://127.0.0.1:{port}")).model("m"),
        )
        .unwrap();
        let recorder = run(client, &ChatRequest::new([Message::user("hi")])).await;
        assert!(recorder.completed.lock().is_empty());
        let failed = recorder.failed.lock().clone();
        let failure = failed[0].failure.as_ref().unwrap();
        assert_eq!(
            (failure.r#type.as_str(), failure.non_retryable),
            (UNAVAILABLE_TYPE, false)
        );
    }
}
