//! Issue 12, named limits: a server started with every `--limit` set low refuses each request
//! past one with a status that names the limit and the setting (`--limit NAME=N`), appends
//! nothing for it, and keeps serving. Page sizes are cut to `page_size_max`, not refused.

use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};
use steadfast_proto::v1 as pb;
use steadfast_proto::v1::client_service_client::ClientServiceClient;
use steadfast_proto::v1::worker_service_client::WorkerServiceClient;
use steadfast_tests::{Server, cli, runtime};
use tonic::Code;
use tonic::transport::Channel;

const LIMITS: &[&str] = &[
    "--limit",
    "payload_bytes_max=1000",
    "--limit",
    "request_bytes_max=100000",
    "--limit",
    "name_bytes_max=20",
    "--limit",
    "page_size_max=3",
    "--limit",
    "pending_activities_per_run_max=2",
    "--limit",
    "pending_timers_per_run_max=2",
    "--limit",
    "pending_signals_per_run_max=3",
    "--limit",
    "polls_in_flight_per_connection_max=2",
];
/// How long a bounded wait on an observable condition may take.
const WAIT_MAX: Duration = Duration::from_secs(20);

fn refused<T: std::fmt::Debug>(
    what: &str,
    r: Result<tonic::Response<T>, tonic::Status>,
    code: Code,
    limit: &str,
) {
    let s = match r {
        Ok(r) => panic!("{what}: accepted past {limit}: {r:?}"),
        Err(s) => s,
    };
    assert_eq!(s.code(), code, "{what}: {}", s.message());
    assert!(
        s.message().contains(limit) && s.message().contains(&format!("--limit {limit}=")),
        "{what}: the message should name {limit} and its setting: {}",
        s.message()
    );
    assert!(s.message().len() < 512, "{what}: {}", s.message());
    eprintln!("{what}: {:?} {}", s.code(), s.message());
}

fn json(data: Vec<u8>) -> Option<pb::Payload> {
    Some(pb::Payload {
        encoding: "json/plain".into(),
        data,
    })
}

fn start(queue: &str) -> pb::StartWorkflowRequest {
    pb::StartWorkflowRequest {
        workflow_type: "limits.idle".into(),
        task_queue: queue.into(),
        ..Default::default()
    }
}

fn timer(seq: u32) -> pb::Command {
    pb::Command {
        seq,
        command: Some(pb::command::Command::StartTimer(pb::StartTimerCommand {
            duration_ms: 3_600_000,
        })),
    }
}

fn activity(seq: u32) -> pb::Command {
    pb::Command {
        seq,
        command: Some(pb::command::Command::ScheduleActivity(
            pb::ScheduleActivityCommand {
                activity_type: "limits.nothing".into(),
                input: None,
                options: None,
            },
        )),
    }
}

#[test]
fn every_limit_is_a_setting_and_its_refusal_names_it() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let server = Server::start_with(&dir.path().join("data"), None, LIMITS)?;
    let rt = runtime();
    let channel: Channel = rt.block_on(Channel::from_shared(server.url())?.connect())?;
    let mut client = ClientServiceClient::new(channel.clone());
    let mut worker = WorkerServiceClient::new(channel.clone());

    // payload_bytes_max: 1000 bytes of JSON pass, 1001 do not.
    let at = format!("\"{}\"", "x".repeat(998)).into_bytes();
    let mut req = start("limits-idle");
    req.input = json(at);
    rt.block_on(client.start_workflow(req))
        .context("a payload at the limit")?;
    let mut req = start("limits-idle");
    req.input = json(format!("\"{}\"", "x".repeat(999)).into_bytes());
    refused(
        "payload 1 byte over",
        rt.block_on(client.start_workflow(req)),
        Code::ResourceExhausted,
        "payload_bytes_max",
    );

    // request_bytes_max: refused before it is decoded.
    let mut req = start("limits-idle");
    req.input = Some(pb::Payload {
        encoding: "binary/plain".into(),
        data: vec![7; 150_000],
    });
    refused(
        "request over request_bytes_max",
        rt.block_on(client.start_workflow(req)),
        Code::ResourceExhausted,
        "request_bytes_max",
    );

    // name_bytes_max: 20 bytes pass, 21 do not.
    rt.block_on(client.start_workflow(start(&"q".repeat(20))))
        .context("a name at the limit")?;
    refused(
        "task queue 1 byte over",
        rt.block_on(client.start_workflow(start(&"q".repeat(21)))),
        Code::InvalidArgument,
        "name_bytes_max",
    );

    // page_size_max: pages are cut to 3, with a token for the rest.
    for _ in 0..3 {
        rt.block_on(client.start_workflow(start("limits-idle")))?;
    }
    let page = rt
        .block_on(client.list_runs(pb::ListRunsRequest {
            page_size: 100,
            ..Default::default()
        }))?
        .into_inner();
    ensure!(page.runs.len() == 3, "a page of {} runs", page.runs.len());
    ensure!(!page.next_page_token.is_empty(), "no token for the rest");

    // pending_signals_per_run_max: the 4th signal not waited for is refused, not recorded.
    let run = rt
        .block_on(client.start_workflow(start("limits-idle")))?
        .into_inner()
        .run_id;
    let signal = |n: u32| pb::SignalRunRequest {
        run_id: run.clone(),
        signal_name: "ping".into(),
        input: json(n.to_string().into_bytes()),
        ..Default::default()
    };
    for n in 0..3 {
        rt.block_on(client.signal_run(signal(n)))?;
    }
    refused(
        "a 4th pending signal",
        rt.block_on(client.signal_run(signal(3))),
        Code::ResourceExhausted,
        "pending_signals_per_run_max",
    );
    let history = rt
        .block_on(client.get_history(pb::GetHistoryRequest {
            run_id: run.clone(),
            page_size: 100,
            ..Default::default()
        }))?
        .into_inner();
    ensure!(
        history.events.len() == 3 && history.next_seq == 4,
        "history pages are cut to 3 events: {} events, next {}",
        history.events.len(),
        history.next_seq
    );

    // pending_activities_per_run_max and pending_timers_per_run_max: a task that would open
    // a third is refused and appends nothing; the same task with two of each is accepted.
    rt.block_on(client.start_workflow(pb::StartWorkflowRequest {
        workflow_type: "limits.busy".into(),
        task_queue: "limits-busy".into(),
        ..Default::default()
    }))?;
    let task = rt
        .block_on(worker.poll_workflow_task(pb::PollWorkflowTaskRequest {
            task_queue: "limits-busy".into(),
            worker_id: "w1".into(),
            poll_timeout_ms: 10_000,
            ..Default::default()
        }))?
        .into_inner();
    ensure!(!task.task_token.is_empty(), "no workflow task");
    let complete = |commands: Vec<pb::Command>| pb::CompleteWorkflowTaskRequest {
        task_token: task.task_token.clone(),
        worker_id: "w1".into(),
        commands,
        ..Default::default()
    };
    refused(
        "three activities",
        rt.block_on(worker.complete_workflow_task(complete(vec![
            activity(1),
            activity(2),
            activity(3),
        ]))),
        Code::ResourceExhausted,
        "pending_activities_per_run_max",
    );
    refused(
        "three timers",
        rt.block_on(worker.complete_workflow_task(complete(vec![timer(1), timer(2), timer(3)]))),
        Code::ResourceExhausted,
        "pending_timers_per_run_max",
    );
    rt.block_on(worker.complete_workflow_task(complete(vec![
        activity(1),
        activity(2),
        timer(3),
        timer(4),
    ])))
    .context("two of each are within the limits")?;
    let info = rt
        .block_on(client.describe_run(pb::DescribeRunRequest {
            run_id: task.run_id.clone(),
            ..Default::default()
        }))?
        .into_inner()
        .run
        .context("run")?;
    ensure!(info.status() == pb::RunStatus::Running, "{info:?}");

    // polls_in_flight_per_connection_max: two long polls wait on this connection; a third is
    // refused at once, while another connection may still poll.
    let long_poll = |mut w: WorkerServiceClient<Channel>| async move {
        w.poll_activity_task(pb::PollActivityTaskRequest {
            task_queue: "limits-nothing-here".into(),
            worker_id: "w2".into(),
            poll_timeout_ms: 60_000,
            ..Default::default()
        })
        .await
    };
    let waiting: Vec<_> = (0..2)
        .map(|_| rt.spawn(long_poll(worker.clone())))
        .collect();
    let short = pb::PollActivityTaskRequest {
        task_queue: "limits-nothing-here".into(),
        worker_id: "w2".into(),
        poll_timeout_ms: 1,
        ..Default::default()
    };
    let mut waiting = waiting;
    let since = Instant::now();
    let third = loop {
        // A long poll that arrived while a short one held a slot was refused: send it again,
        // until both wait and the short one is the third.
        for w in waiting.iter_mut() {
            if w.is_finished() {
                *w = rt.spawn(long_poll(worker.clone()));
            }
        }
        let r = rt.block_on(worker.poll_activity_task(short.clone()));
        if r.is_err() || since.elapsed() > WAIT_MAX {
            break r;
        }
    };
    refused(
        "a third poll on one connection",
        third,
        Code::ResourceExhausted,
        "polls_in_flight_per_connection_max",
    );
    let other: Channel = rt.block_on(Channel::from_shared(server.url())?.connect())?;
    rt.block_on(WorkerServiceClient::new(other).poll_activity_task(short.clone()))
        .context("another connection polls")?;
    for w in waiting {
        w.abort();
    }
    // Once the waiting polls are gone, their slots are given back.
    let since = Instant::now();
    while rt
        .block_on(worker.poll_activity_task(short.clone()))
        .is_err()
    {
        ensure!(
            since.elapsed() < WAIT_MAX,
            "poll slots were never given back"
        );
    }
    drop(server);
    Ok(())
}

#[test]
fn a_bad_limit_setting_is_refused_at_startup() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let data = dir.path().join("data");
    let (code, _, stderr) = cli(
        "127.0.0.1:1",
        &[
            "server",
            "--data-dir",
            data.to_str().context("utf-8 path")?,
            "--listen",
            "127.0.0.1:0",
            "--limit",
            "payload_bytes_max=3000000000",
        ],
    )?;
    ensure!(code == 2, "exit code {code}: {stderr}");
    ensure!(stderr.contains("from 1 to 2097152"), "{stderr}");
    let (code, _, stderr) = cli(
        "127.0.0.1:1",
        &["server", "--listen", "127.0.0.1:0", "--limit", "pages=3"],
    )?;
    ensure!(
        code == 2 && stderr.contains("page_size_max"),
        "{code}: {stderr}"
    );
    Ok(())
}

/// `task_queues_per_namespace_max`: a start, or an activity, on one more queue than a namespace
/// may have work on is refused naming the limit, and nothing is appended; queues that have work
/// take more, and another namespace counts its own.
#[test]
fn task_queues_per_namespace_are_a_limit() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let server = Server::start_with(
        &dir.path().join("data"),
        None,
        &["--limit", "task_queues_per_namespace_max=2"],
    )?;
    let rt = runtime();
    let channel: Channel = rt.block_on(Channel::from_shared(server.url())?.connect())?;
    let mut client = ClientServiceClient::new(channel.clone());
    let mut worker = WorkerServiceClient::new(channel.clone());

    rt.block_on(client.start_workflow(start("queue-a")))?;
    rt.block_on(client.start_workflow(start("queue-b")))?;
    // A queue with work takes more.
    rt.block_on(client.start_workflow(start("queue-a")))?;
    refused(
        "a start on a third queue",
        rt.block_on(client.start_workflow(start("queue-c"))),
        Code::ResourceExhausted,
        "task_queues_per_namespace_max",
    );
    let listed = |client: &mut ClientServiceClient<Channel>, ns: &str| -> Result<usize> {
        Ok(rt
            .block_on(client.list_runs(pb::ListRunsRequest {
                namespace: ns.into(),
                ..Default::default()
            }))?
            .into_inner()
            .runs
            .len())
    };
    ensure!(
        listed(&mut client, "default")? == 3,
        "the refused start made a run"
    );
    // Another namespace counts its own queues.
    let mut other = start("queue-c");
    other.namespace = "other".into();
    rt.block_on(client.start_workflow(other))?;

    // An activity on a third queue: the workflow task completion is refused, nothing appended.
    // (queue-a keeps its second run's task, queue-b its one: two queues with work.)
    let task = rt
        .block_on(worker.poll_workflow_task(pb::PollWorkflowTaskRequest {
            task_queue: "queue-a".into(),
            worker_id: "limits-worker".into(),
            poll_timeout_ms: WAIT_MAX.as_millis() as u64,
            ..Default::default()
        }))?
        .into_inner();
    ensure!(!task.task_token.is_empty(), "no workflow task on queue-a");
    let history_len = |client: &mut ClientServiceClient<Channel>| -> Result<usize> {
        Ok(rt
            .block_on(client.get_history(pb::GetHistoryRequest {
                run_id: task.run_id.clone(),
                ..Default::default()
            }))?
            .into_inner()
            .events
            .len())
    };
    let before = history_len(&mut client)?;
    let on_queue = |queue: &str| pb::Command {
        seq: 1,
        command: Some(pb::command::Command::ScheduleActivity(
            pb::ScheduleActivityCommand {
                activity_type: "limits.nothing".into(),
                input: None,
                options: Some(pb::ActivityOptions {
                    task_queue: queue.into(),
                    ..Default::default()
                }),
            },
        )),
    };
    refused(
        "an activity on a third queue",
        rt.block_on(
            worker.complete_workflow_task(pb::CompleteWorkflowTaskRequest {
                task_token: task.task_token.clone(),
                commands: vec![on_queue("queue-tools")],
                worker_id: "limits-worker".into(),
                ..Default::default()
            }),
        ),
        Code::ResourceExhausted,
        "task_queues_per_namespace_max",
    );
    ensure!(
        history_len(&mut client)? == before,
        "the refused completion appended events"
    );
    // On a queue with work, the same task completes.
    rt.block_on(
        worker.complete_workflow_task(pb::CompleteWorkflowTaskRequest {
            task_token: task.task_token.clone(),
            commands: vec![on_queue("queue-b")],
            worker_id: "limits-worker".into(),
            ..Default::default()
        }),
    )
    .context("an activity on a queue with work")?;
    drop(server);
    Ok(())
}
