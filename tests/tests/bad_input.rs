//! Promise C5: malformed or oversized requests get a clear gRPC status, nothing panics, and no
//! other run is affected.
//!
//! Against a running server (with `hello-worker`), every bad request below is sent with the
//! generated tonic clients, so the exact status code is seen; after each one the server must
//! still be running and still describe a run completed before the barrage, unchanged. A few
//! are repeated through the CLI for its exit codes and messages. At the end a new `hello`
//! run completes and the first run's history still verifies.

use std::time::Duration;

use anyhow::{Context, Result};
use serde_json::json;
use steadfast_engine::payload::PAYLOAD_BYTES_MAX;
use steadfast_proto::v1 as pb;
use steadfast_proto::v1::client_service_client::ClientServiceClient;
use steadfast_proto::v1::worker_service_client::WorkerServiceClient;
use steadfast_sdk::client::{Client, StartOptions};
use steadfast_tests::{Server, cli, runtime, start_hello_worker};
use tonic::Code;
use tonic::transport::Channel;

/// A run id in canonical form that no server gave out.
const UNKNOWN_RUN: &str = "01890000-0000-7000-8000-000000000000";
/// The server's request-size cap (`server::REQUEST_BYTES_MAX`): past it the request is not
/// even decoded.
const REQUEST_BYTES_MAX: usize = 8 * 1024 * 1024;

fn json_payload(data: &str) -> Option<pb::Payload> {
    Some(pb::Payload {
        encoding: "json/plain".into(),
        data: data.as_bytes().to_vec(),
    })
}

fn binary_payload(len: usize) -> Option<pb::Payload> {
    Some(pb::Payload {
        encoding: "binary/plain".into(),
        data: vec![0xA5; len],
    })
}

/// A start of a type nobody polls, on a queue nobody polls: it may be accepted but never runs.
fn start_request(input: Option<pb::Payload>) -> pb::StartWorkflowRequest {
    pb::StartWorkflowRequest {
        workflow_type: "bad-input.idle".into(),
        task_queue: "bad-input-nobody".into(),
        input,
        ..Default::default()
    }
}

/// Asserts that `result` is a refusal with `code` whose message contains every one of `words`.
fn refused<T: std::fmt::Debug>(
    what: &str,
    result: Result<tonic::Response<T>, tonic::Status>,
    code: Code,
    words: &[&str],
) {
    let status = match result {
        Ok(r) => panic!("{what}: expected {code:?}, the request was accepted: {r:?}"),
        Err(s) => s,
    };
    assert_eq!(
        status.code(),
        code,
        "{what}: status code (message: {:?})",
        status.message()
    );
    for w in words {
        assert!(
            status.message().contains(w),
            "{what}: the message should name {w:?}: {:?}",
            status.message()
        );
    }
    eprintln!("{what}: {:?} {}", status.code(), status.message());
}

#[test]
fn bad_requests_are_refused_and_nothing_is_lost() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let mut server = Server::start(&dir.path().join("data"), None)?;
    let url = server.url();
    let _worker = start_hello_worker(&url)?;
    let rt = runtime();
    let sdk = rt.block_on(Client::connect(url.clone()))?;
    let first = rt
        .block_on(sdk.start_workflow("hello", &json!({"name": "before"}), StartOptions::default()))?
        .run_id;
    let first_result: serde_json::Value =
        rt.block_on(sdk.await_result(&first, Duration::from_secs(30)))?;

    let channel: Channel = rt.block_on(Channel::from_shared(url.clone())?.connect())?;
    // Our side must not refuse the big requests before the server sees them.
    let mut client = ClientServiceClient::new(channel.clone())
        .max_encoding_message_size(64 * 1024 * 1024)
        .max_decoding_message_size(64 * 1024 * 1024);
    let mut worker = WorkerServiceClient::new(channel);

    // After each refusal: the server is up and the finished run reads as before.
    let mut still_serving = |what: &str| {
        assert!(server.proc.is_running(), "the server died after: {what}");
        let run = rt
            .block_on(sdk.describe(&first))
            .with_context(|| format!("describe the first run after: {what}"))
            .unwrap();
        assert_eq!(run.status(), pb::RunStatus::Completed, "after: {what}");
    };

    // Unknown and malformed run ids.
    let r = rt.block_on(client.describe_run(pb::DescribeRunRequest {
        run_id: UNKNOWN_RUN.into(),
        ..Default::default()
    }));
    refused("describe an unknown run", r, Code::NotFound, &[UNKNOWN_RUN]);
    still_serving("unknown run id");
    let r = rt.block_on(client.get_history(pb::GetHistoryRequest {
        run_id: UNKNOWN_RUN.into(),
        ..Default::default()
    }));
    refused("history of an unknown run", r, Code::NotFound, &[]);
    let r = rt.block_on(client.describe_run(pb::DescribeRunRequest {
        run_id: "not-a-run-id".into(),
        ..Default::default()
    }));
    refused(
        "describe a malformed run id",
        r,
        Code::InvalidArgument,
        &["run_id"],
    );
    still_serving("malformed run id");

    // Starts: no type, bad JSON, payloads at and past the limit.
    let mut no_type = start_request(json_payload("{}"));
    no_type.workflow_type = String::new();
    let r = rt.block_on(client.start_workflow(no_type));
    refused(
        "start with an empty workflow type",
        r,
        Code::InvalidArgument,
        &["workflow_type"],
    );
    still_serving("empty workflow type");
    let r = rt.block_on(client.start_workflow(start_request(json_payload("{\"name\": nope"))));
    refused(
        "start with malformed JSON",
        r,
        Code::InvalidArgument,
        &["input", "JSON"],
    );
    still_serving("malformed JSON input");
    let at_limit =
        rt.block_on(client.start_workflow(start_request(binary_payload(PAYLOAD_BYTES_MAX))));
    assert!(
        at_limit.is_ok(),
        "a payload of exactly the limit is accepted: {at_limit:?}"
    );
    let r =
        rt.block_on(client.start_workflow(start_request(binary_payload(PAYLOAD_BYTES_MAX + 1))));
    refused(
        "start with a payload 1 byte over the limit",
        r,
        Code::ResourceExhausted,
        &["input", &PAYLOAD_BYTES_MAX.to_string()],
    );
    still_serving("payload over the limit");
    let r = rt.block_on(client.start_workflow(start_request(binary_payload(
        REQUEST_BYTES_MAX + 1024 * 1024,
    ))));
    refused(
        "start with a request over the request cap",
        r,
        Code::ResourceExhausted,
        &[],
    );
    still_serving("request over the request cap");

    // Signals: to a finished run, with bad JSON, too big, without a name.
    let signal = |input: Option<pb::Payload>, name: &str, run: &str| pb::SignalRunRequest {
        run_id: run.into(),
        signal_name: name.into(),
        input,
        ..Default::default()
    };
    let r = rt.block_on(client.signal_run(signal(json_payload("true"), "approve", &first)));
    refused(
        "signal a completed run",
        r,
        Code::FailedPrecondition,
        &["completed"],
    );
    still_serving("signal to a finished run");
    let r = rt.block_on(client.signal_run(signal(json_payload("[1,"), "approve", &first)));
    refused(
        "signal with malformed JSON",
        r,
        Code::InvalidArgument,
        &["input"],
    );
    let r = rt.block_on(client.signal_run(signal(
        binary_payload(PAYLOAD_BYTES_MAX + 1),
        "approve",
        &first,
    )));
    refused(
        "signal with a payload over the limit",
        r,
        Code::ResourceExhausted,
        &["input"],
    );
    let r = rt.block_on(client.signal_run(signal(json_payload("1"), "", &first)));
    refused(
        "signal without a name",
        r,
        Code::InvalidArgument,
        &["signal_name"],
    );
    let r = rt.block_on(client.signal_run(signal(json_payload("1"), "approve", UNKNOWN_RUN)));
    refused("signal an unknown run", r, Code::NotFound, &[]);
    still_serving("bad signals");

    // Lists with unknown filters.
    let r = rt.block_on(client.list_runs(pb::ListRunsRequest {
        waiting: "nonsense".into(),
        ..Default::default()
    }));
    refused(
        "list runs waiting on nonsense",
        r,
        Code::InvalidArgument,
        &["waiting"],
    );
    let r = rt.block_on(client.list_runs(pb::ListRunsRequest {
        page_token: "forged".into(),
        ..Default::default()
    }));
    refused(
        "list runs with a forged page token",
        r,
        Code::InvalidArgument,
        &["page_token"],
    );

    // Workers: garbage task tokens.
    for token in ["garbage", "", "a|not-a-run|1|1|default", "w|||"] {
        let r = rt.block_on(
            worker.complete_activity_task(pb::CompleteActivityTaskRequest {
                task_token: token.into(),
                result: json_payload("1"),
                ..Default::default()
            }),
        );
        refused(
            &format!("complete activity with token {token:?}"),
            r,
            Code::InvalidArgument,
            &["task_token"],
        );
        let r = rt.block_on(
            worker.complete_workflow_task(pb::CompleteWorkflowTaskRequest {
                task_token: token.into(),
                ..Default::default()
            }),
        );
        refused(
            &format!("complete workflow task with token {token:?}"),
            r,
            Code::InvalidArgument,
            &["task_token"],
        );
        let r = rt.block_on(
            worker.heartbeat_activity_task(pb::HeartbeatActivityTaskRequest {
                task_token: token.into(),
                ..Default::default()
            }),
        );
        refused(
            &format!("heartbeat with token {token:?}"),
            r,
            Code::InvalidArgument,
            &["task_token"],
        );
    }
    still_serving("garbage task tokens");

    // The CLI: exit 1 for refusals (with the server's message on stderr), 2 for bad flags.
    let (code, out, err) = cli(&url, &["run", "show", UNKNOWN_RUN])?;
    assert_eq!(
        (code, out.as_str()),
        (1, ""),
        "run show of an unknown run: {err}"
    );
    assert!(
        err.contains("not found"),
        "run show of an unknown run: {err}"
    );
    let (code, _, err) = cli(&url, &["run", "start", "hello", "--input", "{nope"])?;
    assert_eq!(code, 2, "run start with bad JSON: {err}");
    assert!(err.contains("JSON"), "run start with bad JSON: {err}");
    let (code, _, err) = cli(&url, &["run", "start", ""])?;
    assert_eq!(code, 1, "run start with an empty type: {err}");
    assert!(
        err.contains("workflow_type"),
        "run start with an empty type: {err}"
    );
    let (code, _, err) = cli(
        &url,
        &["run", "signal", &first, "approve", "--input", "true"],
    )?;
    assert_eq!(code, 1, "run signal to a completed run: {err}");
    assert!(
        err.contains("completed"),
        "run signal to a completed run: {err}"
    );
    let (code, _, err) = cli(&url, &["run", "result", "not-a-run-id"])?;
    assert!(
        code == 1 || code == 2,
        "run result of a malformed id: {code} {err}"
    );
    still_serving("bad CLI calls");

    // Nothing was lost: a new run completes, the first one is as it was.
    let last = rt
        .block_on(sdk.start_workflow("hello", &json!({"name": "after"}), StartOptions::default()))?
        .run_id;
    let last_result: serde_json::Value =
        rt.block_on(sdk.await_result(&last, Duration::from_secs(30)))?;
    assert_eq!(last_result["greeting"], "Hello, after!");
    let again: serde_json::Value = rt.block_on(sdk.await_result(&first, Duration::from_secs(5)))?;
    assert_eq!(again, first_result, "the first run's result is unchanged");
    let (code, out, err) = cli(&url, &["history", "replay", &first])?;
    assert_eq!(code, 0, "the first run's history verifies: {out}\n{err}");
    Ok(())
}
