//! The activity runtime against a stand-in server (virtual time; no real sleeps).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::time::Duration;

use parking_lot::Mutex;
use steadfast_proto::v1 as pb;

use super::runtime::{ActivityTransport, RuntimeConfig, run_attempt};
use super::*;
use crate::payload;

#[derive(Debug, Clone, PartialEq)]
enum Call {
    Heartbeat(Option<String>),
    Recorded(String),
    Complete(String, Option<pb::Usage>),
    Fail(pb::Failure),
    Refused(usize),
}

#[derive(Clone, Default)]
struct FakeServer {
    calls: Arc<Mutex<Vec<Call>>>,
    cancel: Arc<AtomicBool>,
    unavailable_reports: Arc<AtomicU32>,
    details_over_limit: Arc<AtomicBool>,
    /// Completions whose result is over this many bytes are refused as the server refuses
    /// a request over its gRPC limit (0: no limit).
    request_bytes_max: Arc<std::sync::atomic::AtomicUsize>,
}

impl FakeServer {
    fn calls(&self) -> Vec<Call> {
        self.calls.lock().clone()
    }

    #[allow(clippy::result_large_err)]
    fn outage(&self) -> Result<(), tonic::Status> {
        let left = self.unavailable_reports.load(Ordering::SeqCst);
        if left > 0 {
            self.unavailable_reports.store(left - 1, Ordering::SeqCst);
            return Err(tonic::Status::unavailable("server restarting"));
        }
        Ok(())
    }
}

impl ActivityTransport for FakeServer {
    async fn heartbeat(
        &self,
        req: pb::HeartbeatActivityTaskRequest,
    ) -> Result<pb::HeartbeatActivityTaskResponse, tonic::Status> {
        let details = req.details.map(|d| String::from_utf8(d.data).unwrap());
        if req.record {
            self.calls
                .lock()
                .push(Call::Recorded(details.clone().unwrap_or_default()));
        } else {
            self.calls.lock().push(Call::Heartbeat(details));
        }
        if self.details_over_limit.load(Ordering::SeqCst) {
            return Err(tonic::Status::resource_exhausted(
                "details are 70000 bytes; the limit is 65536 bytes",
            ));
        }
        Ok(pb::HeartbeatActivityTaskResponse {
            cancel_requested: self.cancel.load(Ordering::SeqCst),
        })
    }

    async fn complete(
        &self,
        req: pb::CompleteActivityTaskRequest,
    ) -> Result<pb::CompleteActivityTaskResponse, tonic::Status> {
        self.outage()?;
        let limit = self.request_bytes_max.load(Ordering::SeqCst);
        let len = req.result.as_ref().map_or(0, |r| r.data.len());
        if limit > 0 && len > limit {
            self.calls.lock().push(Call::Refused(len));
            return Err(tonic::Status::resource_exhausted(format!(
                "Error, decoded message length too large: found {len} bytes, the limit is: {limit} bytes"
            )));
        }
        let result = String::from_utf8(req.result.unwrap().data).unwrap();
        self.calls.lock().push(Call::Complete(result, req.usage));
        Ok(pb::CompleteActivityTaskResponse::default())
    }

    async fn fail(&self, req: pb::FailActivityTaskRequest) -> Result<(), tonic::Status> {
        self.outage()?;
        self.calls.lock().push(Call::Fail(req.failure.unwrap()));
        Ok(())
    }
}

fn config() -> RuntimeConfig {
    RuntimeConfig {
        namespace: "default".into(),
        worker_id: "w1".into(),
        heartbeat_interval: Duration::from_millis(500),
        cancel_grace: Duration::from_secs(2),
        report_timeout: Duration::from_secs(60),
        client: None,
        eager_workflow: None,
    }
}

fn task(activity_type: &str, input: &impl serde::Serialize) -> pb::PollActivityTaskResponse {
    pb::PollActivityTaskResponse {
        task_token: "a|run|1|1|default".into(),
        run_id: "run".into(),
        activity_id: 1,
        activity_type: activity_type.into(),
        input: Some(payload::encode(input).unwrap()),
        attempt: 2,
        idempotency_key: "default/run/1".into(),
        namespace: "default".into(),
        ..Default::default()
    }
}

fn activities() -> Activities {
    let mut a = Activities::new();
    a.register(
        "echo",
        Effect::Read,
        |ctx: ActivityContext, s: String| async move {
            assert_eq!(
                (ctx.attempt(), ctx.idempotency_key(), ctx.activity_id()),
                (2, "default/run/1", 1)
            );
            ctx.add_usage(&pb::Usage {
                input_tokens: 10,
                output_tokens: 5,
                cost_micros: 7,
                model: "m".into(),
                ..Default::default()
            });
            Ok(format!("{s}!"))
        },
    );
    a.register(
        "slow",
        Effect::Write,
        |ctx: ActivityContext, (): ()| async move {
            ctx.heartbeat("started");
            ctx.cancelled().await;
            assert!(ctx.is_cancelled());
            Err::<(), _>(ActivityError::Cancelled)
        },
    );
    a.register(
        "stubborn",
        Effect::Write,
        |_ctx: ActivityContext, (): ()| async move {
            tokio::time::sleep(Duration::from_secs(3600)).await;
            Ok(())
        },
    );
    a.register(
        "fails",
        Effect::Idempotent,
        |_ctx: ActivityContext, (): ()| async move {
            Err::<(), _>(ActivityError::non_retryable("card declined").with_type("Declined"))
        },
    );
    a.register(
        "job",
        Effect::Idempotent,
        |ctx: ActivityContext, (): ()| async move {
            // Re-attach to what an earlier attempt recorded, else start (and record) a job.
            let prior: Option<String> = ctx.last_heartbeat_details().unwrap();
            let job = match prior {
                Some(job) => format!("{job} (re-attached)"),
                None => {
                    ctx.record_heartbeat("job-1").await?;
                    "job-1 (started)".to_owned()
                }
            };
            Ok(job)
        },
    );
    a.register(
        "huge",
        Effect::Read,
        |_ctx: ActivityContext, n: usize| async move { Ok("x".repeat(n)) },
    );
    a.register(
        "panics",
        Effect::Idempotent,
        |_ctx: ActivityContext, (): ()| async move {
            if true {
                panic!("tool exploded");
            }
            Ok(())
        },
    );
    a
}

#[tokio::test(start_paused = true)]
async fn a_result_is_completed_with_its_usage_after_an_outage() {
    let server = FakeServer::default();
    server.unavailable_reports.store(3, Ordering::SeqCst);
    run_attempt(&server, &config(), &activities(), task("echo", &"hi")).await;
    let calls = server.calls();
    let [Call::Complete(result, Some(usage))] = calls.as_slice() else {
        panic!("{calls:?}")
    };
    assert_eq!(result, "\"hi!\"");
    assert_eq!(
        (usage.input_tokens, usage.output_tokens, usage.cost_micros),
        (10, 5, 7)
    );
}

#[tokio::test(start_paused = true)]
async fn a_cancellation_reaches_the_activity_within_a_second() {
    let server = FakeServer::default();
    server.cancel.store(true, Ordering::SeqCst);
    let started = tokio::time::Instant::now();
    run_attempt(&server, &config(), &activities(), task("slow", &())).await;
    assert!(
        started.elapsed() <= Duration::from_secs(1),
        "{:?}",
        started.elapsed()
    );
    let calls = server.calls();
    assert_eq!(
        calls[0],
        Call::Heartbeat(Some("\"started\"".into())),
        "details go with the heartbeat"
    );
    let Some(Call::Fail(f)) = calls.last() else {
        panic!("{calls:?}")
    };
    assert_eq!(f.r#type, CANCELLED_TYPE);
}

#[tokio::test(start_paused = true)]
async fn an_activity_that_ignores_cancellation_is_reported_cancelled_after_the_grace() {
    let server = FakeServer::default();
    server.cancel.store(true, Ordering::SeqCst);
    let started = tokio::time::Instant::now();
    run_attempt(&server, &config(), &activities(), task("stubborn", &())).await;
    let elapsed = started.elapsed();
    assert!(
        elapsed >= Duration::from_secs(2) && elapsed < Duration::from_secs(4),
        "{elapsed:?}"
    );
    let Some(Call::Fail(f)) = server.calls().last().cloned() else {
        panic!()
    };
    assert_eq!(f.r#type, CANCELLED_TYPE);
}

#[tokio::test(start_paused = true)]
async fn heartbeats_keep_coming_while_the_activity_runs() {
    let server = FakeServer::default();
    let mut a = Activities::new();
    a.register(
        "ticks",
        Effect::Read,
        |ctx: ActivityContext, (): ()| async move {
            for i in 0..4 {
                ctx.heartbeat(i);
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            Ok(())
        },
    );
    run_attempt(&server, &config(), &a, task("ticks", &())).await;
    let beats = server
        .calls()
        .iter()
        .filter(|c| matches!(c, Call::Heartbeat(_)))
        .count();
    assert!(beats >= 3, "{:?}", server.calls());
}

#[tokio::test(start_paused = true)]
async fn heartbeat_details_over_a_limit_do_not_stop_the_attempt() {
    let server = FakeServer::default();
    server.details_over_limit.store(true, Ordering::SeqCst);
    let mut a = Activities::new();
    a.register(
        "ticks",
        Effect::Read,
        |ctx: ActivityContext, (): ()| async move {
            // Longer than the cancel grace: a stopped attempt would be reported cancelled.
            for i in 0..10 {
                ctx.heartbeat(i);
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            Ok(7u32)
        },
    );
    run_attempt(&server, &config(), &a, task("ticks", &())).await;
    let calls = server.calls();
    assert!(
        calls
            .iter()
            .filter(|c| matches!(c, Call::Heartbeat(_)))
            .count()
            >= 3,
        "{calls:?}"
    );
    assert!(
        matches!(calls.last(), Some(Call::Complete(r, _)) if r == "7"),
        "{calls:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn failures_panics_and_unknown_types_are_reported() {
    let server = FakeServer::default();
    for (ty, expect_type, non_retryable) in [
        ("fails", "Declined", true),
        ("panics", "steadfast.Panic", false),
        ("nope", "steadfast.UnknownActivityType", false),
    ] {
        run_attempt(&server, &config(), &activities(), task(ty, &())).await;
        let Some(Call::Fail(f)) = server.calls().last().cloned() else {
            panic!()
        };
        assert_eq!(
            (f.r#type.as_str(), f.non_retryable),
            (expect_type, non_retryable),
            "{f:?}"
        );
    }
    // An input of the wrong shape is not retried.
    run_attempt(&server, &config(), &activities(), task("echo", &42)).await;
    let Some(Call::Fail(f)) = server.calls().last().cloned() else {
        panic!()
    };
    assert_eq!(
        (f.r#type.as_str(), f.non_retryable),
        ("steadfast.DecodeError", true)
    );
}

#[tokio::test(start_paused = true)]
async fn a_result_refused_for_its_size_is_reported_as_a_final_named_failure() {
    let server = FakeServer::default();
    server.request_bytes_max.store(1000, Ordering::SeqCst);
    run_attempt(&server, &config(), &activities(), task("huge", &2000usize)).await;
    let calls = server.calls();
    let [Call::Refused(2002), Call::Fail(f)] = calls.as_slice() else {
        panic!("{calls:?}")
    };
    assert!(f.non_retryable, "{f:?}");
    assert_eq!(f.r#type, runtime::RESULT_REFUSED_ERROR_TYPE);
    assert!(
        f.message.starts_with(
            "[STF-PAYLOAD] the activity's result is 2002 bytes; the limit is 1000 bytes per request"
        ),
        "{}",
        f.message
    );

    // Under the limit it is completed as usual; other refusals are not turned into failures.
    let server = FakeServer::default();
    server.request_bytes_max.store(1000, Ordering::SeqCst);
    run_attempt(&server, &config(), &activities(), task("huge", &10usize)).await;
    assert!(matches!(server.calls().as_slice(), [Call::Complete(..)]));
}

#[test]
fn only_size_refusals_become_payload_failures() {
    let result = pb::Payload {
        data: vec![b'x'; 10],
        ..Default::default()
    };
    for (status, named) in [
        (
            tonic::Status::out_of_range(
                "Error, encoded message length too large: found 70000000 bytes, the limit is: 67108864 bytes",
            ),
            Some("the limit is 67108864 bytes per request (this worker's"),
        ),
        (
            tonic::Status::resource_exhausted("request too large"),
            Some("the limit is the server's request limit (the server's"),
        ),
        (
            tonic::Status::resource_exhausted(
                "the request is too large; the limit is request_bytes_max = 8388608 bytes (server setting --limit request_bytes_max=N): send large data as a blob or by reference",
            ),
            Some("the limit is 8388608 bytes per request (the server's"),
        ),
        (
            tonic::Status::invalid_argument("activity 1 is not open"),
            None,
        ),
        (
            tonic::Status::resource_exhausted("[STF-LIMIT] history holds 100000 events"),
            None,
        ),
        (tonic::Status::failed_precondition("stale token"), None),
    ] {
        let got = runtime::oversized_result_failure(&result, &status).map(|e| e.to_failure());
        match (got, named) {
            (Some(f), Some(text)) => assert!(f.message.contains(text), "{}", f.message),
            (None, None) => {}
            (got, _) => panic!("{status:?} gave {got:?}"),
        }
    }
}

#[tokio::test(start_paused = true)]
async fn record_heartbeat_is_sent_as_a_record_and_a_retry_sees_the_last_details() {
    let server = FakeServer::default();
    let mut first = task("job", &());
    first.attempt = 1;
    run_attempt(&server, &config(), &activities(), first).await;
    let calls = server.calls();
    assert_eq!(
        calls,
        vec![
            Call::Recorded("\"job-1\"".into()),
            Call::Complete("\"job-1 (started)\"".into(), None)
        ]
    );

    let server = FakeServer::default();
    let mut retry = task("job", &());
    retry.last_heartbeat_details = Some(payload::encode(&"job-1").unwrap());
    run_attempt(&server, &config(), &activities(), retry).await;
    assert_eq!(
        server.calls(),
        vec![Call::Complete("\"job-1 (re-attached)\"".into(), None)]
    );
}

#[tokio::test]
async fn record_heartbeat_without_a_worker_fails_retryably_and_details_decode_typed() {
    let ctx = ActivityContext::with_last_heartbeat_details(
        ActivityInfo::default(),
        payload::encode(&serde_json::json!({"job": 7})).unwrap(),
    );
    let e = ctx.record_heartbeat("x").await.unwrap_err();
    assert_eq!(e.error_type(), NOT_RECORDED_TYPE);
    assert!(!e.to_failure().non_retryable);
    assert_eq!(
        ctx.last_heartbeat_details::<serde_json::Value>().unwrap(),
        Some(serde_json::json!({"job": 7}))
    );
    assert!(ctx.last_heartbeat_details::<u64>().is_err());
    let first = ActivityContext::new(ActivityInfo::default());
    assert_eq!(first.last_heartbeat_details::<u64>().unwrap(), None);
}
