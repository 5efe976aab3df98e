//! [`ActivityContext`]: what an activity attempt knows about itself, and how it talks back
//! (heartbeats, usage) and hears a cancellation.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures::future::BoxFuture;
use parking_lot::Mutex;
use serde::Serialize;
use serde::de::DeserializeOwned;
use steadfast_proto::v1 as pb;
use tokio::sync::watch;

use super::ActivityError;
use crate::client::Client;
use crate::payload;

/// Error type of a [`ActivityContext::record_heartbeat`] whose details the server did not
/// record (unreachable, refused, or no worker behind the context).
pub const NOT_RECORDED_TYPE: &str = "steadfast.NotRecorded";

/// Sends one heartbeat with `record = true` for this attempt (set by the runtime, which
/// knows the task token and the transport).
pub(crate) type Recorder = Arc<
    dyn Fn(
            pb::Payload,
        ) -> BoxFuture<'static, Result<pb::HeartbeatActivityTaskResponse, tonic::Status>>
        + Send
        + Sync,
>;

/// Who and where this attempt is.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ActivityInfo {
    /// The run's namespace.
    pub namespace: String,
    /// The run.
    pub run_id: String,
    /// The run's workflow id.
    pub workflow_id: String,
    /// The run's workflow type.
    pub workflow_type: String,
    /// The activity id (its command seq in the run).
    pub activity_id: u32,
    /// The activity type it was registered as.
    pub activity_type: String,
    /// 1 for the first attempt.
    pub attempt: u32,
    /// Stable across attempts: `<namespace>/<run_id>/<activity_id>`. Pass it to tools so
    /// that a retried write applies once.
    pub idempotency_key: String,
    /// When the server gives up on this attempt, ms since the epoch (0 = unknown).
    pub deadline_ms: i64,
    /// The W3C traceparent of this activity's span, when the server exports traces
    /// (`--otlp-endpoint`): start the activity code's own spans (tool calls, HTTP requests)
    /// as its children so that they nest under the activity in the trace.
    pub traceparent: Option<String>,
}

pub(crate) struct Shared {
    pub(crate) info: ActivityInfo,
    pub(crate) cancel: watch::Sender<bool>,
    /// Heartbeat details given since the last heartbeat was sent.
    pub(crate) details: Mutex<Option<pb::Payload>>,
    pub(crate) usage: Mutex<Option<pb::Usage>>,
    /// The worker's client, when the attempt came from a worker.
    pub(crate) client: Option<Client>,
    /// blake3 and length of the input payload's bytes, when the attempt came from a worker.
    pub(crate) input_digest: Option<([u8; 32], u64)>,
    /// What an earlier attempt last recorded (`PollActivityTaskResponse.last_heartbeat_details`).
    pub(crate) last_details: Option<pb::Payload>,
    /// `None` for a context built with [`ActivityContext::new`].
    pub(crate) recorder: Mutex<Option<Recorder>>,
    /// Live output not yet sent ([`ActivityContext::emit_delta`]).
    pub(crate) deltas: super::deltas::Outbox,
}

/// The context of one activity attempt. Cheap to clone, `Send`.
#[derive(Clone)]
pub struct ActivityContext {
    pub(crate) shared: Arc<Shared>,
}

impl ActivityContext {
    /// A context for `info`, not cancelled. The runtime builds these; tests of activity
    /// code can too.
    pub fn new(info: ActivityInfo) -> Self {
        Self::for_attempt(info, None, None, None)
    }

    /// The context of an attempt polled by a worker: with its client and the hash of the
    /// attempt's input.
    pub(crate) fn for_attempt(
        info: ActivityInfo,
        client: Option<Client>,
        input: Option<&pb::Payload>,
        last_details: Option<pb::Payload>,
    ) -> Self {
        ActivityContext {
            shared: Arc::new(Shared {
                info,
                cancel: watch::Sender::new(false),
                details: Mutex::new(None),
                usage: Mutex::new(None),
                client,
                input_digest: input
                    .map(|p| (*blake3::hash(&p.data).as_bytes(), p.data.len() as u64)),
                last_details,
                recorder: Mutex::new(None),
                deltas: Default::default(),
            }),
        }
    }

    /// A context for `info` whose earlier attempt recorded `details` (what the runtime
    /// builds for an attempt > 1); for tests of activity code that re-attaches.
    pub fn with_last_heartbeat_details(info: ActivityInfo, details: pb::Payload) -> Self {
        Self::for_attempt(info, None, None, Some(details))
    }

    pub(crate) fn set_recorder(&self, recorder: Recorder) {
        *self.shared.recorder.lock() = Some(recorder);
    }

    /// Everything known about this attempt.
    pub fn info(&self) -> &ActivityInfo {
        &self.shared.info
    }

    /// The W3C traceparent (`00-<trace id>-<span id>-01`) of this activity's span, `None`
    /// when the server exports no traces. The same on every attempt: attempts are events of
    /// one span.
    pub fn traceparent(&self) -> Option<&str> {
        self.shared.info.traceparent.as_deref()
    }

    /// The attempt number, 1 for the first.
    pub fn attempt(&self) -> u32 {
        self.shared.info.attempt
    }

    /// Stable across attempts; see [`ActivityInfo::idempotency_key`].
    pub fn idempotency_key(&self) -> &str {
        &self.shared.info.idempotency_key
    }

    /// The run this activity belongs to.
    pub fn run_id(&self) -> &str {
        &self.shared.info.run_id
    }

    /// The activity id (its command seq in the run).
    pub fn activity_id(&self) -> u32 {
        self.shared.info.activity_id
    }

    /// A client of the server this attempt came from (same connection and namespace as the
    /// worker), e.g. to fetch a blob; `None` for a context built with
    /// [`ActivityContext::new`].
    pub fn client(&self) -> Option<&Client> {
        self.shared.client.as_ref()
    }

    /// blake3 of the bytes of this attempt's input payload: its content address, under which
    /// the server stores it as a blob when it is large (see [`crate::client::Client::get_blob`]).
    /// `None` for a context built with [`ActivityContext::new`].
    pub fn input_hash(&self) -> Option<[u8; 32]> {
        self.shared.input_digest.map(|(h, _)| h)
    }

    /// Length in bytes of this attempt's input payload; `None` for a context built with
    /// [`ActivityContext::new`].
    pub fn input_len(&self) -> Option<u64> {
        self.shared.input_digest.map(|(_, n)| n)
    }

    /// When the server gives up on this attempt, if known.
    pub fn deadline(&self) -> Option<SystemTime> {
        let ms = u64::try_from(self.shared.info.deadline_ms)
            .ok()
            .filter(|ms| *ms > 0)?;
        Some(UNIX_EPOCH + Duration::from_millis(ms))
    }

    /// Records progress details. The runtime heartbeats on its own every few hundred ms;
    /// the latest details given since the previous heartbeat go with the next one (and on
    /// to `WatchRun` subscribers). Details that cannot be encoded are dropped.
    pub fn heartbeat(&self, details: impl Serialize) {
        match payload::encode(&details) {
            Ok(p) => *self.shared.details.lock() = Some(p),
            Err(e) => tracing::warn!(error = %e, "heartbeat details do not encode; dropped"),
        }
    }

    /// The details an earlier attempt of this activity last recorded (a
    /// [`ActivityContext::record_heartbeat`], or a sampled [`ActivityContext::heartbeat`]),
    /// decoded as `T`: where a retry picks up, e.g. the id of a job the killed attempt started
    /// elsewhere. `Ok(None)` on a first attempt or when no earlier attempt recorded any;
    /// an error when they do not decode as `T` (treat it as none, or fail).
    pub fn last_heartbeat_details<T: DeserializeOwned>(
        &self,
    ) -> Result<Option<T>, serde_json::Error> {
        match &self.shared.last_details {
            None => Ok(None),
            Some(p) => payload::decode(Some(p)).map(Some),
        }
    }

    /// The raw payload behind [`ActivityContext::last_heartbeat_details`].
    pub fn last_heartbeat_payload(&self) -> Option<&pb::Payload> {
        self.shared.last_details.as_ref()
    }

    /// Sends `details` now and returns once the server has recorded them in the run's
    /// history (an `ActivityProgress` event): a retry of this activity, after this worker dies
    /// say, finds them in [`ActivityContext::last_heartbeat_details`]. For what a retry must
    /// pick up, e.g. a provider's job id before waiting on the job. The server honours up to
    /// `HEARTBEAT_FORCED_RECORDS_MAX` (8) such records per attempt, then samples them like
    /// other heartbeats (at most one a second). A cancellation the answer carries is passed on
    /// ([`ActivityContext::is_cancelled`]).
    ///
    /// Fails (retryable, type [`NOT_RECORDED_TYPE`]) when the details do not encode, the
    /// server cannot be reached or refuses them, or the context has no worker behind it
    /// ([`ActivityContext::new`]).
    pub async fn record_heartbeat(&self, details: impl Serialize) -> Result<(), ActivityError> {
        let not_recorded = |why: String| ActivityError::retryable(why).with_type(NOT_RECORDED_TYPE);
        let p = payload::encode(&details)
            .map_err(|e| not_recorded(format!("heartbeat details do not encode: {e}")))?;
        let recorder = self.shared.recorder.lock().clone().ok_or_else(|| {
            not_recorded("record_heartbeat needs an attempt run by a worker".into())
        })?;
        let bytes = p.data.len();
        match recorder(p).await {
            Ok(r) => {
                if r.cancel_requested {
                    self.cancel();
                }
                tracing::debug!(details_bytes = bytes, "heartbeat details recorded");
                Ok(())
            }
            Err(s) => Err(not_recorded(format!(
                "heartbeat details not recorded ({:?}): {}",
                s.code(),
                s.message()
            ))),
        }
    }

    /// Sends live output (an LLM's tokens as they arrive) to `WatchRun` subscribers that ask
    /// for deltas (`steadfast run watch`). Ephemeral: never recorded, not part of the result,
    /// lost with the worker; a retry's output starts again. Batched by the runtime about
    /// every 50 ms ([`super::DELTA_BATCH_INTERVAL`]); bounded per attempt
    /// ([`super::DELTA_OUTBOX_BYTES_MAX`] queued at once, past it text is dropped and
    /// watchers see the gap). Like every payload, never logged.
    pub fn emit_delta(&self, text: &str) {
        self.shared.deltas.push(text);
    }

    /// Whether the activity was cancelled (by the workflow, a run cancellation, or because
    /// this attempt was superseded).
    pub fn is_cancelled(&self) -> bool {
        *self.shared.cancel.borrow()
    }

    /// Resolves once the activity is cancelled. Stop, clean up and return
    /// `Err(ActivityError::Cancelled)`; the runtime otherwise reports the cancellation
    /// itself after a grace period.
    pub async fn cancelled(&self) {
        let mut rx = self.shared.cancel.subscribe();
        // The sender lives in `self`, so the wait ends only by a cancellation.
        let _ = rx.wait_for(|c| *c).await;
    }

    /// Sets the usage (tokens, cost, model) reported with this attempt's result.
    pub fn set_usage(&self, usage: pb::Usage) {
        *self.shared.usage.lock() = Some(usage);
    }

    /// Adds to the usage reported with this attempt's result.
    pub fn add_usage(&self, usage: &pb::Usage) {
        let mut slot = self.shared.usage.lock();
        *slot = Some(merge_usage(slot.take(), Some(usage)).unwrap_or_default());
    }

    pub(crate) fn cancel(&self) {
        self.shared.cancel.send_replace(true);
    }

    pub(crate) fn take_details(&self) -> Option<pb::Payload> {
        self.shared.details.lock().take()
    }

    pub(crate) fn take_usage(&self) -> Option<pb::Usage> {
        self.shared.usage.lock().take()
    }
}

/// Sums two usages: tokens and cost add up (saturating), models are joined by `,`.
pub(crate) fn merge_usage(a: Option<pb::Usage>, b: Option<&pb::Usage>) -> Option<pb::Usage> {
    let Some(b) = b else { return a };
    let mut total = a.unwrap_or_default();
    total.input_tokens = total.input_tokens.saturating_add(b.input_tokens);
    total.output_tokens = total.output_tokens.saturating_add(b.output_tokens);
    total.cost_micros = total.cost_micros.saturating_add(b.cost_micros);
    total.activities = total.activities.saturating_add(b.activities);
    total.llm_calls = total.llm_calls.saturating_add(b.llm_calls);
    if total.model.is_empty() {
        total.model = b.model.clone();
    } else if !b.model.is_empty() && !total.model.split(',').any(|m| m == b.model) {
        total.model = format!("{},{}", total.model, b.model);
    }
    Some(total)
}
