//! Filling a data dir with many runs fast, for `steadfast-bench-scale`: realistic histories
//! written through the embedded store directly (not over gRPC), each run in one durable append
//! by [`WRITERS`] concurrent appenders, as the engine's search bench does
//! (`engine/benches/search.rs`).
//!
//! Closed runs: one of [`WORKFLOW_TYPES`], each a workflow task, an activity, a workflow task
//! and the close — completed (90%), failed after its activity failed for good (5%) or
//! cancelled while it slept on a timer (5%). Open runs: the same start, then waiting on one of
//! [`OPEN_KINDS`] — an activity nobody has taken, a signal (with a question), a timer a month
//! out, or a tool call waiting for approval — so that the server derives their tasks and timers
//! from the history when it opens the store, as after any restart.

use std::sync::Arc;

use anyhow::Result;
use steadfast_engine::embedded::EmbeddedStore;
use steadfast_engine::event::{self, ActivityOptions, ArgumentsDigest, Budget, Effect, Event};
use steadfast_engine::ids::{RunId, RunKey};
use steadfast_engine::payload::Payload;
use steadfast_engine::store::{AppendRequest, Store};

/// Concurrent appenders while the runs are written (their appends share log syncs).
pub const WRITERS: usize = 64;
/// The workflow types of the runs, spread evenly (`run list --type` finds 1 run in 4).
pub const WORKFLOW_TYPES: [&str; 4] = ["triage", "summarize", "ingest", "refund"];
/// What the open runs wait on, spread evenly (`run list --waiting KIND`).
pub const OPEN_KINDS: [&str; 4] = ["activity", "signal", "timer", "approval"];
/// The task queue of every run and activity.
pub const QUEUE: &str = "scale";
/// How far out an open run's timer is: it does not fire while the bench runs.
const TIMER_AHEAD_MS: i64 = 30 * 24 * 3600 * 1000;

/// How a closed run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Closed {
    /// Its activity completed, then the run.
    Completed,
    /// Its activity failed for good, then the run.
    Failed,
    /// It was cancelled while sleeping on a timer.
    Cancelled,
}

impl Closed {
    /// The ending of closed run number `i`: 1 in 20 failed, 1 in 20 cancelled.
    pub fn of(i: usize) -> Closed {
        match i % 20 {
            0 => Closed::Failed,
            1 => Closed::Cancelled,
            _ => Closed::Completed,
        }
    }
}

fn json(s: &str) -> Payload {
    Payload::json(s.as_bytes().to_vec())
}

fn started(i: usize, open: bool) -> Event {
    let workflow_type = WORKFLOW_TYPES[i % WORKFLOW_TYPES.len()];
    Event::RunStarted(event::RunStarted {
        workflow_type: workflow_type.into(),
        workflow_id: format!("{}-{}-{i:07}", workflow_type, if open { "o" } else { "c" }),
        task_queue: QUEUE.into(),
        input: json(&format!(
            r#"{{"ticket":{i},"customer":"c{}","subject":"Refund for order {i} not received","priority":{}}}"#,
            i % 1000,
            i % 3
        )),
        run_timeout_ms: 0,
        budget: Budget::default(),
        continued_from: None,
        identity: "bench-scale".into(),
        random_seed: i as u64,
        parent: None,
        forked_from: None,
        schedule: None,
        traceparent: None,
    })
}

/// A workflow task scheduled at `seq`, started and completed: three events.
fn workflow_task(seq: u64) -> [Event; 3] {
    [
        Event::WorkflowTaskScheduled(event::WorkflowTaskScheduled {
            task_queue: QUEUE.into(),
            attempt: 1,
            not_before_ms: 0,
        }),
        Event::WorkflowTaskStarted(event::WorkflowTaskStarted {
            scheduled_seq: seq,
            worker: "bench-worker".into(),
            timeout_ms: 0,
        }),
        Event::WorkflowTaskCompleted(event::WorkflowTaskCompleted {
            started_seq: seq + 1,
            worker: "bench-worker".into(),
        }),
    ]
}

const ACTIVITY_INPUT: &str = r#"{"model":"offline","messages":[{"role":"user","content":"Classify this ticket and draft a reply."}]}"#;

fn activity(command_seq: u32, activity_type: &str, approval: Option<&str>) -> Event {
    Event::ActivityScheduled(event::ActivityScheduled {
        command_seq,
        activity_type: activity_type.into(),
        input: json(ACTIVITY_INPUT),
        options: ActivityOptions {
            task_queue: QUEUE.into(),
            effect: if approval.is_some() {
                Effect::Write
            } else {
                Effect::Read
            },
            approval: approval.map(str::to_string),
            ..ActivityOptions::default()
        },
    })
}

/// The whole history of closed run `i`.
pub fn closed_events(i: usize) -> Vec<Event> {
    let mut ev = vec![started(i, false)];
    ev.extend(workflow_task(2));
    match Closed::of(i) {
        Closed::Completed | Closed::Failed => {
            ev.push(activity(1, "llm.chat", None));
            ev.push(Event::ActivityStarted(event::ActivityStarted {
                command_seq: 1,
                attempt: 1,
                worker: "bench-worker".into(),
                effect: Effect::Read,
            }));
            if Closed::of(i) == Closed::Completed {
                ev.push(Event::ActivityCompleted(event::ActivityCompleted {
                    command_seq: 1,
                    attempt: 1,
                    result: json(r#"{"category":"billing","reply":"We are sorry: the refund was sent today and arrives in 3 to 5 days."}"#),
                    duration_ms: 840,
                    usage: Some(event::Usage {
                        input_tokens: 412,
                        output_tokens: 96,
                        cost_micros: 1_870,
                        model: "offline".into(),
                    }),
                    reconciled: false,
                }));
            } else {
                ev.push(Event::ActivityFailed(event::ActivityFailed {
                    command_seq: 1,
                    attempt: 1,
                    failure: event::Failure {
                        message: "the model refused the request".into(),
                        error_type: "Refused".into(),
                        non_retryable: true,
                        details: String::new(),
                    },
                    retry_at_ms: None,
                    duration_ms: 310,
                    usage: None,
                }));
            }
            ev.extend(workflow_task(8));
            ev.push(if Closed::of(i) == Closed::Completed {
                Event::RunCompleted(event::RunCompleted {
                    command_seq: 2,
                    result: json(r#"{"category":"billing","sent":true}"#),
                })
            } else {
                Event::RunFailed(event::RunFailed {
                    command_seq: 2,
                    failure: event::Failure {
                        message: "activity llm.chat failed: the model refused the request".into(),
                        error_type: "ActivityFailed".into(),
                        non_retryable: true,
                        details: String::new(),
                    },
                })
            });
        }
        Closed::Cancelled => {
            ev.push(Event::TimerStarted(event::TimerStarted {
                command_seq: 1,
                fire_at_ms: 1_900_000_000_000,
            }));
            ev.push(Event::CancelRequested(event::CancelRequested {
                reason: "the customer withdrew the ticket".into(),
                identity: "operator".into(),
            }));
            ev.extend(workflow_task(7));
            ev.push(Event::TimerCancelled(event::TimerCancelled {
                command_seq: 2,
                timer_id: 1,
            }));
            ev.push(Event::RunCancelled(event::RunCancelled {
                command_seq: 3,
                partial_result: None,
            }));
        }
    }
    ev
}

/// The history of open run `i` so far: started, one workflow task, then waiting on
/// `OPEN_KINDS[i % 4]`. `now_ms` places its timer.
pub fn open_events(i: usize, now_ms: i64) -> Vec<Event> {
    let mut ev = vec![started(i, true)];
    ev.extend(workflow_task(2));
    match OPEN_KINDS[i % OPEN_KINDS.len()] {
        "activity" => ev.push(activity(1, "llm.chat", None)),
        "signal" => ev.push(Event::SignalWaitStarted(event::SignalWaitStarted {
            command_seq: 1,
            name: "approve".into(),
            question: format!("Send the refund for ticket {i}?"),
            choices: vec!["yes".into(), "no".into()],
        })),
        "timer" => ev.push(Event::TimerStarted(event::TimerStarted {
            command_seq: 1,
            fire_at_ms: now_ms + TIMER_AHEAD_MS,
        })),
        _ => {
            let reason = "refunds over $100 need a person";
            ev.push(activity(1, "refund.send", Some(reason)));
            ev.push(Event::ApprovalRequested(event::ApprovalRequested {
                command_seq: 1,
                attempt: 1,
                reason: reason.into(),
                declared_by: String::new(),
                arguments: ArgumentsDigest::of(&json(ACTIVITY_INPUT)),
            }));
        }
    }
    ev
}

/// Writes runs `from..to` of `events(i)` durably, each in one append stamped `time_ms(i)`.
pub async fn write(
    store: &Arc<EmbeddedStore>,
    from: usize,
    to: usize,
    events: fn(usize, i64) -> Vec<Event>,
    time_ms: i64,
) -> Result<()> {
    let mut tasks = Vec::new();
    for w in 0..WRITERS {
        let store = Arc::clone(store);
        tasks.push(tokio::spawn(async move {
            for i in (from + w..to).step_by(WRITERS) {
                store
                    .append(AppendRequest {
                        key: RunKey::new("default", RunId::new_v7()),
                        expected_next_seq: 1,
                        events: events(i, time_ms),
                        time_ms: time_ms + i as i64,
                        wait_durable: true,
                    })
                    .await?;
            }
            anyhow::Ok(())
        }));
    }
    for t in tasks {
        t.await??;
    }
    Ok(())
}
