//! Issue 12 point 1: a worker token whose auth-file entry names task queues (`queues=`, made
//! with `steadfast auth hash --queues`) polls only those queues, and completes, fails and
//! heartbeats only tasks of them; a task of another queue is PERMISSION_DENIED even with a
//! genuine task token. A real `hello-worker` with a token limited to its own queue runs a
//! workflow to completion.

use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use steadfast_proto::v1 as pb;
use steadfast_tests::secure::{self, Services};
use steadfast_tests::{Proc, Server, bin, run_bounded, runtime};
use tonic::Code;
use tonic::transport::Channel;

const QUEUE_A: &str = "queue-a";
const QUEUE_B: &str = "queue-b";
/// A refused poll answers at once; one that long-polls would take the 30 s it asks for.
const REFUSAL_BOUND: Duration = Duration::from_secs(10);

fn denied<T: std::fmt::Debug>(what: &str, r: Result<tonic::Response<T>, tonic::Status>) {
    let e = r.expect_err(what);
    assert_eq!(e.code(), Code::PermissionDenied, "{what}: {}", e.message());
    assert!(
        e.message().contains("task queue") && e.message().contains("queues="),
        "{what}: the message should say which queue and how to allow it: {}",
        e.message()
    );
    eprintln!("{what}: {:?} {}", e.code(), e.message());
}

fn poll_wf(queue: &str) -> pb::PollWorkflowTaskRequest {
    pb::PollWorkflowTaskRequest {
        task_queue: queue.into(),
        worker_id: "queues-test".into(),
        workflow_types: vec!["probe".into()],
        poll_timeout_ms: 30_000,
        ..Default::default()
    }
}

fn poll_act(queue: &str) -> pb::PollActivityTaskRequest {
    pb::PollActivityTaskRequest {
        task_queue: queue.into(),
        worker_id: "queues-test".into(),
        activity_types: vec!["probe.tool".into()],
        poll_timeout_ms: 30_000,
        ..Default::default()
    }
}

#[test]
fn a_worker_token_limited_to_queues_polls_and_completes_only_their_tasks() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let file = dir.path().join("auth.txt");
    let client = secure::new_token()?;
    let worker_a = secure::new_token()?;
    let worker_b = secure::new_token()?;
    let hello = secure::new_token()?;
    let lines = [
        secure::entry(&client, "client", "client", "default")?,
        secure::entry_with_queues(&worker_a, "worker-a", "worker", "default", Some(QUEUE_A))?,
        secure::entry_with_queues(&worker_b, "worker-b", "worker", "default", Some(QUEUE_B))?,
        secure::entry_with_queues(&hello, "hello", "worker", "default", Some("hello-q"))?,
    ];
    assert!(lines[1].contains(" queues=queue-a "), "{}", lines[1]);
    let refs: Vec<&str> = lines.iter().map(String::as_str).collect();
    secure::write_auth_file(&file, &refs)?;
    let file_arg = file.to_str().context("utf-8 path")?;
    let server = Server::start_with(&dir.path().join("data"), None, &["--auth-file", file_arg])?;
    let url = server.url();

    // A real worker limited to its own queue: session, polls, completions all admitted.
    let mut cmd = Command::new(bin("hello-worker"));
    cmd.args(["--addr", &url, "--task-queue", "hello-q"])
        .env("STEADFAST_TOKEN", &hello)
        .env("RUST_LOG", "warn");
    let _hello = Proc::spawn("hello-worker", &mut cmd)?;
    let mut start = Command::new(bin("steadfast"));
    start
        .args(["run", "start", "hello", "--task-queue", "hello-q"])
        .args(["--input", r#"{"name":"Ada"}"#])
        .env("STEADFAST_ADDR", &url)
        .env("STEADFAST_TOKEN", &client);
    let (code, out, err) = run_bounded(&mut start, Duration::from_secs(60))?;
    assert_eq!(code, 0, "start: {err}");
    let mut result = Command::new(bin("steadfast"));
    result
        .args(["run", "result", out.trim(), "--wait", "--timeout", "60s"])
        .env("STEADFAST_ADDR", &url)
        .env("STEADFAST_TOKEN", &client);
    let (code, out, err) = run_bounded(&mut result, Duration::from_secs(90))?;
    assert_eq!(code, 0, "result: {err}");
    assert!(out.contains("Hello, Ada!"), "{out}");

    let rt = runtime();
    let channel: Channel = rt.block_on(Channel::from_shared(url.clone())?.connect())?;
    let c = Services::new(channel.clone(), Some(&client));
    let a = Services::new(channel.clone(), Some(&worker_a));
    let b = Services::new(channel.clone(), Some(&worker_b));

    // Polls of another queue are refused at once, not long-polled.
    let t0 = Instant::now();
    denied(
        "workflow poll of queue B with A's token",
        rt.block_on(a.worker.clone().poll_workflow_task(poll_wf(QUEUE_B))),
    );
    denied(
        "activity poll of queue B with A's token",
        rt.block_on(a.worker.clone().poll_activity_task(poll_act(QUEUE_B))),
    );
    assert!(t0.elapsed() < REFUSAL_BOUND, "{:?}", t0.elapsed());

    // A run on queue A: A's worker polls it and schedules an activity on queue B.
    let run = rt
        .block_on(c.client.clone().start_workflow(pb::StartWorkflowRequest {
            workflow_type: "probe".into(),
            task_queue: QUEUE_A.into(),
            ..Default::default()
        }))?
        .into_inner()
        .run_id;
    denied(
        "workflow poll of queue A with B's token",
        rt.block_on(b.worker.clone().poll_workflow_task(poll_wf(QUEUE_A))),
    );
    let task = rt
        .block_on(a.worker.clone().poll_workflow_task(poll_wf(QUEUE_A)))?
        .into_inner();
    assert_eq!(
        task.run_id, run,
        "A's worker gets the run's task from queue A"
    );
    let complete_wf = |token: &str, commands: Vec<pb::Command>| pb::CompleteWorkflowTaskRequest {
        task_token: token.into(),
        worker_id: "queues-test".into(),
        commands,
        ..Default::default()
    };
    let fail_wf = |token: &str| pb::FailWorkflowTaskRequest {
        task_token: token.into(),
        worker_id: "queues-test".into(),
        message: "probe".into(),
        ..Default::default()
    };
    // B's worker holding A's genuine workflow task token is refused.
    denied(
        "workflow completion of a queue-A task with B's token",
        rt.block_on(
            b.worker
                .clone()
                .complete_workflow_task(complete_wf(&task.task_token, vec![])),
        ),
    );
    denied(
        "workflow failure of a queue-A task with B's token",
        rt.block_on(
            b.worker
                .clone()
                .fail_workflow_task(fail_wf(&task.task_token)),
        ),
    );
    let schedule = pb::Command {
        seq: 1,
        command: Some(pb::command::Command::ScheduleActivity(
            pb::ScheduleActivityCommand {
                activity_type: "probe.tool".into(),
                input: None,
                options: Some(pb::ActivityOptions {
                    task_queue: QUEUE_B.into(),
                    heartbeat_timeout_ms: 60_000,
                    ..Default::default()
                }),
            },
        )),
    };
    rt.block_on(
        a.worker
            .clone()
            .complete_workflow_task(complete_wf(&task.task_token, vec![schedule])),
    )
    .context("A completes its own workflow task")?;

    // The activity is on queue B: A may not poll it, B polls it; A may not complete, fail or
    // heartbeat it with B's genuine token.
    let act = rt
        .block_on(b.worker.clone().poll_activity_task(poll_act(QUEUE_B)))?
        .into_inner();
    assert_eq!(act.run_id, run, "B's worker gets the activity from queue B");
    denied(
        "activity heartbeat of a queue-B task with A's token",
        rt.block_on(
            a.worker
                .clone()
                .heartbeat_activity_task(pb::HeartbeatActivityTaskRequest {
                    task_token: act.task_token.clone(),
                    ..Default::default()
                }),
        ),
    );
    denied(
        "activity failure of a queue-B task with A's token",
        rt.block_on(
            a.worker
                .clone()
                .fail_activity_task(pb::FailActivityTaskRequest {
                    task_token: act.task_token.clone(),
                    worker_id: "queues-test".into(),
                    ..Default::default()
                }),
        ),
    );
    denied(
        "activity completion of a queue-B task with A's token",
        rt.block_on(
            a.worker
                .clone()
                .complete_activity_task(pb::CompleteActivityTaskRequest {
                    task_token: act.task_token.clone(),
                    worker_id: "queues-test".into(),
                    ..Default::default()
                }),
        ),
    );
    rt.block_on(
        b.worker
            .clone()
            .heartbeat_activity_task(pb::HeartbeatActivityTaskRequest {
                task_token: act.task_token.clone(),
                ..Default::default()
            }),
    )
    .context("B heartbeats its own activity")?;
    rt.block_on(
        b.worker
            .clone()
            .complete_activity_task(pb::CompleteActivityTaskRequest {
                task_token: act.task_token.clone(),
                worker_id: "queues-test".into(),
                result: Some(pb::Payload {
                    encoding: "json/plain".into(),
                    data: b"1".to_vec(),
                }),
                ..Default::default()
            }),
    )
    .context("B completes its own activity")?;

    // The refused calls changed nothing: one ActivityCompleted, no failure recorded.
    let history = rt
        .block_on(c.client.clone().get_history(pb::GetHistoryRequest {
            run_id: run.clone(),
            ..Default::default()
        }))?
        .into_inner();
    let kinds: Vec<String> = history
        .events
        .iter()
        .map(|e| format!("{:?}", e.kind()))
        .collect();
    let count = |k: &str| kinds.iter().filter(|s| s.as_str() == k).count();
    assert_eq!(count("ActivityCompleted"), 1, "{kinds:#?}");
    assert_eq!(count("ActivityFailed"), 0, "{kinds:#?}");
    assert_eq!(count("WorkflowTaskFailed"), 0, "{kinds:#?}");
    Ok(())
}
