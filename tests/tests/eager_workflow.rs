//! Eager workflow tasks: an activity's completion from a worker that also runs the run's
//! workflow starts the run's next workflow task in the same durable append and hands it back
//! (`CompleteActivityTaskRequest.eager_workflow_task`), so the step needs no poll and no
//! append of its own; a worker on another task queue gets none and the task is polled as
//! before.

use std::time::Duration;

use steadfast_proto::v1::history_event::Attributes as A;
use steadfast_sdk::{Client, StartOptions};
use steadfast_tests::bench::worker;
use steadfast_tests::{Server, history, runtime};

const STEPS: u32 = 4;

/// Seqs of (ActivityCompleted, the WorkflowTaskScheduled right after it, the
/// WorkflowTaskStarted right after that, if any) for each completed activity.
fn after_each_completion(events: &[steadfast_proto::v1::HistoryEvent]) -> Vec<(bool, bool)> {
    let mut out = Vec::new();
    for (i, e) in events.iter().enumerate() {
        if matches!(e.attributes, Some(A::ActivityCompleted(_))) {
            let scheduled = matches!(
                events.get(i + 1).and_then(|e| e.attributes.as_ref()),
                Some(A::WorkflowTaskScheduled(_))
            );
            // Started in the same append: the next record, at the same time.
            let started = matches!(
                events.get(i + 2).and_then(|e| e.attributes.as_ref()),
                Some(A::WorkflowTaskStarted(_))
            ) && events[i + 2].time_ms == e.time_ms;
            out.push((scheduled, started));
        }
    }
    out
}

fn run_seq(
    rt: &tokio::runtime::Runtime,
    url: &str,
    w: steadfast_sdk::Worker,
    queue: &str,
) -> String {
    rt.block_on(async {
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            let _ = w
                .run_until(async {
                    let _ = stop_rx.await;
                })
                .await;
        });
        let client = Client::connect(url).await.unwrap();
        let h = client
            .start_workflow(
                "bench.seq",
                &STEPS,
                StartOptions {
                    task_queue: Some(queue.into()),
                    ..StartOptions::default()
                },
            )
            .await
            .unwrap();
        let sum: u32 = client
            .await_result(&h.run_id, Duration::from_secs(60))
            .await
            .unwrap();
        assert_eq!(sum, (1..=STEPS).sum::<u32>());
        let _ = stop_tx.send(());
        let _ = task.await;
        h.run_id
    })
}

#[test]
fn a_completion_hands_back_the_next_workflow_task_in_its_own_append() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), None).unwrap();
    let rt = runtime();
    let url = server.url();
    let run = run_seq(&rt, &url, worker(&url), "default");
    let events = history(&rt, &url, &run).unwrap();
    let after = after_each_completion(&events);
    assert_eq!(after.len(), STEPS as usize, "{events:#?}");
    // Every completion scheduled the next task and started it for the same worker at once.
    assert!(
        after.iter().all(|&(s, st)| s && st),
        "each ActivityCompleted is followed by WorkflowTaskScheduled and WorkflowTaskStarted in the same append: {after:?}"
    );
}

/// Raw completions: an eager ask is honoured only for a worker whose own poll would get the
/// run's task (its queue, one of its types); otherwise nothing is started and the task is
/// polled as before.
#[test]
fn only_a_worker_that_would_poll_the_task_gets_it_eagerly() {
    use steadfast_proto::v1 as pb;
    use steadfast_tests::raw::{QUEUE, Raw, schedule};
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), None).unwrap();
    let rt = runtime();
    let url = server.url();
    rt.block_on(async {
        let mut raw = Raw::connect(&url).await.unwrap();
        let ns = "default";
        let run = raw.start(ns, "wf.raw").await.unwrap();
        let mut wt = raw.expect_workflow(ns, &["wf.raw"], 5_000).await.unwrap();
        let read = [("act", pb::Effect::Read)];
        // Larger than a payload kept inline in the log: handed back inline all the same.
        let big = format!("\"{}\"", "r".repeat(4096));
        let ask = |token: &str, queue: &str, types: &[&str]| pb::CompleteActivityTaskRequest {
            namespace: ns.into(),
            task_token: token.into(),
            result: Some(steadfast_tests::raw::json(&big)),
            worker_id: "raw-both".into(),
            eager_workflow_task: true,
            task_queue: queue.into(),
            workflow_types: types.iter().map(|t| t.to_string()).collect(),
            ..Default::default()
        };
        // Three steps: asked from another queue, for another type, then as the poller would.
        let cases: [(&str, &[&str], bool); 3] = [
            ("elsewhere", &["wf.raw"], false),
            (QUEUE, &["other.type"], false),
            (QUEUE, &["wf.raw"], true),
        ];
        for (i, (queue, types, eager)) in cases.into_iter().enumerate() {
            raw.complete_workflow(
                ns,
                &wt.task_token,
                vec![schedule(i as u32 + 1, "act", Default::default())],
            )
            .await
            .unwrap();
            let act = raw
                .poll_activity(ns, &["act"], &read, 5_000)
                .await
                .unwrap()
                .expect("an activity task");
            let resp = raw
                .worker
                .complete_activity_task(ask(&act.task_token, queue, types))
                .await
                .unwrap()
                .into_inner();
            match (eager, resp.workflow_task) {
                (false, None) => {
                    // Not started: a poll gets it, as always.
                    wt = raw.expect_workflow(ns, &["wf.raw"], 5_000).await.unwrap();
                }
                (true, Some(t)) => {
                    assert_eq!(t.run_id, run);
                    assert!(!t.task_token.is_empty());
                    // The worker was sent what happened since its last task, as the history
                    // holds it: its own completion's commands, then the activity's result.
                    let history = raw.history(ns, &run).await.unwrap();
                    let since: Vec<_> = history
                        .iter()
                        .filter(|e| e.seq >= t.first_seq)
                        .cloned()
                        .collect();
                    assert_eq!(t.events, since);
                    let result = t.events.iter().find_map(|e| match &e.attributes {
                        Some(A::ActivityCompleted(c)) => c.result.clone(),
                        _ => None,
                    });
                    assert_eq!(result.map(|p| p.data), Some(big.as_bytes().to_vec()));
                    wt = t;
                }
                (want, got) => panic!("case {i}: eager {want}, got {got:?}"),
            }
        }
        // The eagerly started task is a real one: its token completes the run.
        raw.complete_workflow(
            ns,
            &wt.task_token,
            vec![pb::Command {
                seq: 4,
                command: Some(pb::command::Command::CompleteRun(pb::CompleteRunCommand {
                    result: Some(steadfast_tests::raw::json("\"done\"")),
                })),
            }],
        )
        .await
        .unwrap();
        let events = raw.history(ns, &run).await.unwrap();
        assert!(
            events
                .iter()
                .any(|e| matches!(e.attributes, Some(A::RunCompleted(_)))),
            "{events:#?}"
        );
    });
}
