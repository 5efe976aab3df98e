//! Issue 12, every field validated before any work: for every RPC (from the proto descriptor)
//! and every string, bytes and enum field its request reaches (nested messages included), a
//! request that is valid but aimed at nothing (an unknown run, task, query or schedule; a poll
//! that would wait) is sent once as it is and once per hostile value in that one field. The
//! hostile one must be refused at once (no long poll), never with INTERNAL or UNKNOWN, with a
//! short message that is not the plain request's answer: the field was checked before the
//! handler looked anything up or parked the call.
//!
//! The hostile values: a megabyte, control characters, bidirectional and zero-width
//! characters, invalid UTF-8 (bytes fields, and string fields, which the server must refuse as
//! a bad message rather than answer INTERNAL), and enum numbers no enum has. Free-text fields
//! (reasons, failure messages, questions) may hold any character: only their size is refused.
//! The randomness (where the nasty characters go) comes from one printed seed;
//! `TEST_SEED=...` replays it.

use std::time::{Duration, Instant};

use anyhow::Result;
use prost::Message;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use steadfast_proto::v1 as pb;
use steadfast_tests::wire::{self, Answer, FieldValue, Leaf, Schema};
use steadfast_tests::{Server, runtime, test_seed};
use tonic::Code;
use tonic::transport::Channel;

/// A run id in canonical form that no server gave out.
const UNKNOWN_RUN: &str = "01890000-0000-7000-8000-000000000000";
/// Longest error message accepted back.
const MESSAGE_BYTES_MAX: usize = 512;
/// The longest a refusal may take; the polls in the plain requests ask for a minute.
const REFUSAL_TIME_MAX: Duration = Duration::from_secs(5);
/// Far enough into a request to reach every field there is (commands, their options, their
/// retry policies).
const DEPTH: usize = 5;
/// Imported events are checked as a whole (hash chain, replay), not field by field.
const OPAQUE: &[&str] = &["steadfast.v1.HistoryEvent"];
/// The payload limit the server runs with: below the long hostile value, so that free text
/// bounded by it is refused too.
const PAYLOAD_LIMIT: &str = "payload_bytes_max=262144";

/// Fields of free text: any character is data, only the size is bounded.
const FREE_TEXT: &[&str] = &[
    "reason",
    "comment",
    "message",
    "details",
    "failure_message",
    "question",
    "choices",
];

/// Free text named by its whole path, where the last name alone is not free text elsewhere
/// (`text` is also the run search filter): a model's live output, any character is data.
const FREE_TEXT_PATHS: &[&str] = &["deltas.text"];

/// Fields whose hostile value is answered some other documented way than a refusal before
/// work (docs/validation.md).
fn other_answer(method: &str, field: &str) -> Option<&'static str> {
    match (method, field) {
        // An unstorable activity result fails the activity ([STF-PAYLOAD]) once the task token
        // is checked: refusing it would make the attempt time out and run again forever.
        ("CompleteActivityTask", f) if f.starts_with("result.") => Some("STF-PAYLOAD"),
        _ => None,
    }
}

fn json(s: &str) -> Option<pb::Payload> {
    Some(pb::Payload {
        encoding: "json/plain".into(),
        data: s.as_bytes().to_vec(),
    })
}

/// The plain request of `method`: valid in every field, aimed at nothing that exists.
fn plain(method: &str) -> Option<Vec<u8>> {
    let ns = String::from("default");
    let run = String::from(UNKNOWN_RUN);
    let ok = String::from("ok");
    let token = String::from("not-a-task-token");
    let start = pb::StartWorkflowRequest {
        namespace: ns.clone(),
        workflow_type: "hostile.fields".into(),
        task_queue: "hostile-fields-nobody".into(),
        input: json("null"),
        ..Default::default()
    };
    let schedule = pb::ScheduleName {
        namespace: ns.clone(),
        name: "no-such-schedule".into(),
    };
    Some(match method {
        "StartWorkflow" => start.encode_to_vec(),
        "DescribeRun" => pb::DescribeRunRequest {
            namespace: ns,
            run_id: run,
            approval_previews: true,
        }
        .encode_to_vec(),
        "ApproveActivity" => pb::ApproveActivityRequest {
            namespace: ns,
            run_id: run,
            activity_id: 1,
            comment: ok.clone(),
            input: json("null"),
            identity: ok,
        }
        .encode_to_vec(),
        "DenyActivity" => pb::DenyActivityRequest {
            namespace: ns,
            run_id: run,
            activity_id: 1,
            reason: ok.clone(),
            identity: ok,
        }
        .encode_to_vec(),
        "ListRuns" => pb::ListRunsRequest {
            namespace: ns,
            page_size: 1,
            ..Default::default()
        }
        .encode_to_vec(),
        "GetHistory" => pb::GetHistoryRequest {
            namespace: ns,
            run_id: run,
            ..Default::default()
        }
        .encode_to_vec(),
        "AwaitResult" => pb::AwaitResultRequest {
            namespace: ns,
            run_id: run,
            timeout_ms: 60_000,
        }
        .encode_to_vec(),
        "CancelRun" => pb::CancelRunRequest {
            namespace: ns,
            run_id: run,
            reason: ok.clone(),
            identity: ok,
        }
        .encode_to_vec(),
        "TerminateRun" => pb::TerminateRunRequest {
            namespace: ns,
            run_id: run,
            reason: ok.clone(),
            identity: ok,
        }
        .encode_to_vec(),
        "SignalRun" => pb::SignalRunRequest {
            namespace: ns,
            run_id: run,
            signal_name: ok,
            input: json("null"),
            ..Default::default()
        }
        .encode_to_vec(),
        "WatchRun" => pb::WatchRunRequest {
            namespace: ns,
            run_id: run,
            after_seq: 0,
            include_deltas: false,
        }
        .encode_to_vec(),
        "GetBlob" => pb::GetBlobRequest {
            namespace: ns,
            hash: vec![7; 32],
        }
        .encode_to_vec(),
        "QueryRun" => pb::QueryRunRequest {
            namespace: ns,
            run_id: run,
            query_name: ok,
            input: json("null"),
            timeout_ms: 60_000,
        }
        .encode_to_vec(),
        "UpdateRun" => pb::UpdateRunRequest {
            namespace: ns,
            run_id: run,
            update_name: ok,
            input: json("null"),
            timeout_ms: 60_000,
            ..Default::default()
        }
        .encode_to_vec(),
        "PollWorkflowTask" => pb::PollWorkflowTaskRequest {
            namespace: ns,
            task_queue: "hostile-fields-empty".into(),
            worker_id: ok,
            workflow_types: Vec::new(),
            poll_timeout_ms: 60_000,
            build_id: String::new(),
        }
        .encode_to_vec(),
        "CompleteWorkflowTask" => pb::CompleteWorkflowTaskRequest {
            namespace: ns,
            task_token: token,
            worker_id: ok,
            ..Default::default()
        }
        .encode_to_vec(),
        "FailWorkflowTask" => pb::FailWorkflowTaskRequest {
            namespace: ns,
            task_token: token,
            worker_id: ok.clone(),
            message: ok,
            ..Default::default()
        }
        .encode_to_vec(),
        "PollActivityTask" => pb::PollActivityTaskRequest {
            namespace: ns,
            task_queue: "hostile-fields-empty".into(),
            worker_id: ok,
            poll_timeout_ms: 60_000,
            ..Default::default()
        }
        .encode_to_vec(),
        "CompleteActivityTask" => pb::CompleteActivityTaskRequest {
            namespace: ns,
            task_token: token,
            result: json("null"),
            worker_id: ok,
            ..Default::default()
        }
        .encode_to_vec(),
        "FailActivityTask" => pb::FailActivityTaskRequest {
            namespace: ns,
            task_token: token,
            worker_id: ok,
            ..Default::default()
        }
        .encode_to_vec(),
        "HeartbeatActivityTask" => pb::HeartbeatActivityTaskRequest {
            namespace: ns,
            task_token: token,
            details: json("null"),
            record: false,
        }
        .encode_to_vec(),
        "PublishActivityDeltas" => pb::PublishActivityDeltasRequest {
            namespace: ns,
            task_token: token,
            attempt: 1,
            deltas: vec![pb::ActivityDelta {
                text: "hello".into(),
                ..Default::default()
            }],
        }
        .encode_to_vec(),
        "WorkerSession" => pb::WorkerSessionRequest {
            namespace: ns,
            worker_id: ok,
            task_queues: vec!["hostile-fields-empty".into()],
        }
        .encode_to_vec(),
        "PollQueryTask" => pb::PollQueryTaskRequest {
            namespace: ns,
            task_queue: "hostile-fields-empty".into(),
            worker_id: ok,
            workflow_types: Vec::new(),
            poll_timeout_ms: 60_000,
        }
        .encode_to_vec(),
        "SetTaskQueueBuild" => pb::SetTaskQueueBuildRequest {
            namespace: ns,
            task_queue: "hostile-fields-empty".into(),
            build_id: ok,
        }
        .encode_to_vec(),
        "DescribeTaskQueue" => pb::DescribeTaskQueueRequest {
            namespace: ns,
            task_queue: "hostile-fields-empty".into(),
        }
        .encode_to_vec(),
        "CheckWorkflows" => pb::CheckWorkflowsRequest {
            namespace: ns,
            task_queue: "hostile-fields-empty".into(),
            timeout_ms: 60_000,
        }
        .encode_to_vec(),
        "PollCheckTask" => pb::PollCheckTaskRequest {
            namespace: ns,
            task_queue: "hostile-fields-empty".into(),
            worker_id: ok,
            workflow_types: Vec::new(),
            poll_timeout_ms: 60_000,
        }
        .encode_to_vec(),
        "RespondCheckTask" => pb::RespondCheckTaskRequest {
            namespace: ns,
            check_id: "no-such-check".into(),
            worker_id: ok,
            ..Default::default()
        }
        .encode_to_vec(),
        "RespondQueryTask" => pb::RespondQueryTaskRequest {
            namespace: ns,
            query_id: "no-such-query".into(),
            worker_id: ok,
            result: json("null"),
            ..Default::default()
        }
        .encode_to_vec(),
        "UpdateBudget" => pb::UpdateBudgetRequest {
            namespace: ns,
            run_id: run,
            budget: Some(pb::Budget {
                max_tokens: 1,
                ..Default::default()
            }),
            identity: ok,
        }
        .encode_to_vec(),
        "ReconcileActivity" => pb::ReconcileActivityRequest {
            namespace: ns,
            run_id: run,
            activity_id: 1,
            identity: ok,
            decision: Some(pb::reconcile_activity_request::Decision::Retry(true)),
        }
        .encode_to_vec(),
        "Checkpoint" => pb::CheckpointRequest {}.encode_to_vec(),
        "VerifyHistory" => pb::VerifyHistoryRequest {
            namespace: ns,
            run_id: run,
        }
        .encode_to_vec(),
        "ImportHistory" => pb::ImportHistoryRequest {
            namespace: ns.clone(),
            run_id: run,
            source_namespace: ns,
            events: Vec::new(),
        }
        .encode_to_vec(),
        "ForkRun" => pb::ForkRunRequest {
            namespace: ns,
            run_id: run,
            seq: 1,
            ..Default::default()
        }
        .encode_to_vec(),
        "CreateSchedule" => pb::CreateScheduleRequest {
            namespace: ns,
            name: "hostile-fields".into(),
            every_ms: 3_600_000,
            workflow_type: "hostile.fields".into(),
            task_queue: "hostile-fields-nobody".into(),
            input: json("null"),
            paused: true,
            ..Default::default()
        }
        .encode_to_vec(),
        "DescribeSchedule" | "PauseSchedule" | "ResumeSchedule" | "TriggerSchedule"
        | "DeleteSchedule" => schedule.encode_to_vec(),
        "ListSchedules" => pb::ListSchedulesRequest { namespace: ns }.encode_to_vec(),
        "BackfillSchedule" => pb::BackfillScheduleRequest {
            namespace: ns,
            name: "no-such-schedule".into(),
            from_ms: 0,
            to_ms: 1,
        }
        .encode_to_vec(),
        _ => return None,
    })
}

/// Printable text with one of `nasty` somewhere in the first 40 characters.
fn with_nasty(rng: &mut StdRng, nasty: &[char]) -> String {
    let mut s: String = (0..rng.gen_range(2..40))
        .map(|_| (b'a' + rng.gen_range(0..26)) as char)
        .collect();
    let at = rng.gen_range(0..=s.len());
    s.insert(at, nasty[rng.gen_range(0..nasty.len())]);
    s
}

/// The hostile values for one leaf: a label and the value.
fn hostile_values(rng: &mut StdRng, leaf: Leaf) -> Vec<(&'static str, Hostile)> {
    match leaf {
        Leaf::Enum => vec![
            ("enum 9999", Hostile::Number(9_999)),
            ("enum -1", Hostile::Number(-1)),
        ],
        Leaf::String | Leaf::Bytes => {
            let mut long = "x".repeat(1 << 20);
            let at = rng.gen_range(0..64);
            long.insert(at, '\u{1b}');
            let mut out = vec![
                ("1 MiB", Hostile::Text(long.into_bytes())),
                (
                    "control characters",
                    Hostile::Text(
                        with_nasty(rng, &['\u{0}', '\u{7}', '\u{1b}', '\n', '\u{7f}']).into_bytes(),
                    ),
                ),
                (
                    "bidi / zero-width",
                    Hostile::Text(
                        with_nasty(rng, &['\u{202E}', '\u{200B}', '\u{2066}', '\u{FEFF}'])
                            .into_bytes(),
                    ),
                ),
            ];
            let mut bad = b"ok".to_vec();
            bad.extend([0xff, 0xfe, 0x80, b'{']);
            out.push(("invalid UTF-8", Hostile::Text(bad)));
            out
        }
    }
}

enum Hostile {
    Text(Vec<u8>),
    Number(i64),
}

#[derive(Default)]
struct Tally {
    cases: usize,
    refused_before_work: usize,
    free_text_accepted: usize,
    other_answer: usize,
    failures: Vec<String>,
}

#[test]
fn every_field_of_every_rpc_is_validated_before_any_work() -> Result<()> {
    let seed = test_seed();
    let mut rng = StdRng::seed_from_u64(seed);
    let dir = tempfile::tempdir()?;
    let server = Server::start_with(&dir.path().join("data"), None, &["--limit", PAYLOAD_LIMIT])?;
    let rt = runtime();
    let channel: Channel = rt.block_on(Channel::from_shared(server.url())?.connect())?;
    let schema = Schema::load()?;
    let mut tally = Tally::default();
    let mut methods = 0;
    for rpc in schema.rpcs() {
        let Some(body) = plain(&rpc.method) else {
            tally.failures.push(format!(
                "{}: no plain request in this test: add one to plain()",
                rpc.method
            ));
            continue;
        };
        methods += 1;
        let path = rpc.path();
        let plain_answer = rt.block_on(wire::call(&channel, &path, body.clone(), REFUSAL_TIME_MAX));
        let plain_message = match &plain_answer {
            Answer::Refused(s) => Some(s.message().to_string()),
            _ => None,
        };
        for field in schema.leaves(&rpc.input, DEPTH, OPAQUE)? {
            let free = FREE_TEXT.contains(&field.name.rsplit('.').next().unwrap_or(""))
                || FREE_TEXT_PATHS.contains(&field.name.as_str());
            for (label, value) in hostile_values(&mut rng, field.leaf) {
                // Invalid UTF-8 is a decoding error in a string: refused whatever the field.
                let long = label == "1 MiB";
                let decode_error = label == "invalid UTF-8" && field.leaf == Leaf::String;
                let mut req = body.clone();
                req.extend(wire::field_bytes(
                    &field.numbers,
                    match &value {
                        Hostile::Text(b) => FieldValue::Bytes(b),
                        Hostile::Number(n) => FieldValue::Number(*n),
                    },
                ));
                let what = format!("{} {} = {label} (TEST_SEED={seed})", rpc.method, field.name);
                tally.cases += 1;
                let started = Instant::now();
                let answer = rt.block_on(wire::call(&channel, &path, req, REFUSAL_TIME_MAX));
                let took = started.elapsed();
                let status = match answer {
                    Answer::Refused(s) => s,
                    Answer::Waiting => {
                        tally
                            .failures
                            .push(format!("{what}: not answered within {took:?} (parked)"));
                        continue;
                    }
                    a @ (Answer::Ok | Answer::Open) => {
                        if free && !long && !decode_error {
                            tally.free_text_accepted += 1;
                        } else {
                            tally.failures.push(format!("{what}: accepted ({a:?})"));
                        }
                        continue;
                    }
                };
                if matches!(status.code(), Code::Internal | Code::Unknown) {
                    tally.failures.push(format!(
                        "{what}: {:?} {}",
                        status.code(),
                        status.message()
                    ));
                    continue;
                }
                if status.message().len() > MESSAGE_BYTES_MAX {
                    tally.failures.push(format!(
                        "{what}: a {} byte message echoes the input",
                        status.message().len()
                    ));
                    continue;
                }
                if status.message().chars().any(|c| {
                    c.is_control() || matches!(c, '\u{202E}' | '\u{200B}' | '\u{2066}' | '\u{FEFF}')
                }) {
                    tally.failures.push(format!(
                        "{what}: the message holds an unescaped character: {:?}",
                        status.message()
                    ));
                    continue;
                }
                if plain_message.as_deref() == Some(status.message()) {
                    if free && !long && !decode_error {
                        tally.free_text_accepted += 1;
                    } else if let Some(why) = other_answer(&rpc.method, &field.name) {
                        tally.other_answer += 1;
                        eprintln!("{what}: answered as the plain request ({why})");
                    } else {
                        tally.failures.push(format!(
                            "{what}: answered as the plain request ({:?} {}): the field was not checked first",
                            status.code(),
                            status.message()
                        ));
                    }
                    continue;
                }
                tally.refused_before_work += 1;
            }
        }
    }
    eprintln!(
        "{methods} RPCs, {} cases: {} refused before any work, {} free text accepted, {} answered another documented way, {} failures",
        tally.cases,
        tally.refused_before_work,
        tally.free_text_accepted,
        tally.other_answer,
        tally.failures.len()
    );
    assert!(methods >= 30, "only {methods} RPCs tried");
    assert!(
        tally.failures.is_empty(),
        "{} failures:\n{}",
        tally.failures.len(),
        tally.failures.join("\n")
    );
    // Still serving.
    let alive = rt.block_on(wire::call(
        &channel,
        "/steadfast.v1.ClientService/ListRuns",
        pb::ListRunsRequest::default().encode_to_vec(),
        REFUSAL_TIME_MAX,
    ));
    assert!(matches!(alive, Answer::Ok), "{alive:?}");
    drop(server);
    Ok(())
}
