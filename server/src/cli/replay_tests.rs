//! Replay of synthetic histories built with engine types and `record_hash`, sent through the
//! wire conversion as the server would.

use serde_json::json;
use steadfast_engine::event::{self as ev, Event, EventRecord, genesis_hash, record_hash};
use steadfast_engine::payload::{BlobRef, Hash, Payload};
use steadfast_engine::state::RunStatus;
use steadfast_engine::{RunId, RunKey};
use steadfast_proto::v1 as pb;

use super::*;

const T0: i64 = 1_795_000_000_000;

/// Builds a chained history the way the store does: hash over the attributes as stored.
struct Builder {
    prev: Hash,
    records: Vec<EventRecord>,
}

impl Builder {
    fn new(key: &RunKey) -> Builder {
        Builder {
            prev: genesis_hash(key),
            records: Vec::new(),
        }
    }

    /// Appends `stored` (hashed) but records `shown` (what the wire carries).
    fn push_as(&mut self, stored: Event, shown: Event) -> &mut Builder {
        let seq = self.records.len() as u64 + 1;
        let time_ms = T0 + seq as i64 * 1_000;
        let hash = record_hash(
            &self.prev,
            seq,
            time_ms,
            stored.kind(),
            &stored.encode_attrs(),
        );
        self.prev = hash;
        self.records.push(EventRecord {
            seq,
            time_ms,
            hash,
            event: shown,
        });
        self
    }

    fn push(&mut self, e: Event) -> &mut Builder {
        self.push_as(e.clone(), e)
    }

    fn wire(&self) -> Vec<pb::HistoryEvent> {
        self.records.iter().map(crate::convert::event).collect()
    }
}

pub(in crate::cli) fn key() -> RunKey {
    RunKey::new(
        "default",
        RunId::parse("01900000-0000-7000-8000-000000000001").unwrap(),
    )
}

fn started(run_timeout_ms: u64) -> Event {
    Event::RunStarted(ev::RunStarted {
        workflow_type: "triage".into(),
        workflow_id: "ticket-7".into(),
        task_queue: "default".into(),
        input: Payload::json(br#"{"ticket":7}"#.to_vec()),
        run_timeout_ms,
        budget: ev::Budget {
            max_tokens: 10_000,
            ..Default::default()
        },
        continued_from: None,
        identity: "cli".into(),
        random_seed: 42,
        parent: None,
        forked_from: None,
        schedule: None,
        traceparent: None,
    })
}

/// One workflow task: scheduled at seq n, started n+1, completed n+2.
fn task(b: &mut Builder) {
    let n = b.records.len() as u64 + 1;
    b.push(Event::WorkflowTaskScheduled(ev::WorkflowTaskScheduled {
        task_queue: "default".into(),
        attempt: 1,
        not_before_ms: 0,
    }));
    b.push(Event::WorkflowTaskStarted(ev::WorkflowTaskStarted {
        scheduled_seq: n,
        worker: "w1".into(),
        timeout_ms: 0,
    }));
    b.push(Event::WorkflowTaskCompleted(ev::WorkflowTaskCompleted {
        started_seq: n + 1,
        worker: "w1".into(),
    }));
}

fn completed(id: u32, result: Payload) -> Event {
    Event::ActivityCompleted(ev::ActivityCompleted {
        command_seq: id,
        attempt: 1,
        result,
        duration_ms: 900,
        usage: Some(ev::Usage {
            input_tokens: 100,
            output_tokens: 50,
            cost_micros: 2_000,
            model: "m".into(),
        }),
        reconciled: false,
    })
}

/// seq 1 RunStarted; 2-4 task; 5 ActivityScheduled #1; 6 ProgressReported; 7 ActivityCompleted
/// #1; 8-10 task; 11 RunCompleted.
fn history() -> Builder {
    let mut b = Builder::new(&key());
    b.push(started(0));
    task(&mut b);
    b.push(Event::ActivityScheduled(ev::ActivityScheduled {
        command_seq: 1,
        activity_type: "fetch_ticket".into(),
        input: Payload::json(b"7".to_vec()),
        options: Default::default(),
    }));
    b.push(Event::ProgressReported(ev::ProgressReported {
        command_seq: 2,
        done: 1,
        total: 2,
        message: "fetching".into(),
    }));
    b.push(completed(1, Payload::json(br#"{"id":7}"#.to_vec())));
    task(&mut b);
    b.push(Event::RunCompleted(ev::RunCompleted {
        command_seq: 3,
        result: Payload::json(br#""done""#.to_vec()),
    }));
    b
}

/// The wire events of [`history`], for the network tests.
pub(in crate::cli) fn history_wire() -> Vec<pb::HistoryEvent> {
    history().wire()
}

#[test]
fn full_replay_reaches_the_end() {
    let r = replay(&key(), &history().wire(), None).unwrap();
    assert_eq!(r.state.status, RunStatus::Completed);
    assert_eq!(r.state.last_seq, 11);
    assert_eq!(r.history_length, 11);
    let v = r.to_json();
    assert_eq!(v["status"], "completed");
    assert_eq!(v["seq"], 11);
    assert_eq!(v["result"], json!("done"));
    assert_eq!(v["workflow_id"], "ticket-7");
    assert_eq!(v["usage"]["tokens"], 150);
    assert_eq!(v["usage"]["cost_micros"], 2_000);
    assert_eq!(v["budget"]["max_tokens"], 10_000);
    assert_eq!(v["results"][0]["activity_type"], "fetch_ticket");
    assert_eq!(v["results"][0]["result"], json!({"id": 7}));
    assert_eq!(v["results"][0]["seq"], 7);
    assert_eq!(v["activities"], json!([]));
    assert_eq!(v["chain"]["last_hash"], hex::encode(history().prev));
}

#[test]
fn until_travels_back_in_time() {
    let r = replay(&key(), &history().wire(), Some(6)).unwrap();
    assert_eq!(r.state.status, RunStatus::Running);
    assert_eq!(r.at_ms, T0 + 6_000);
    let v = r.to_json();
    assert_eq!(v["seq"], 6);
    assert_eq!(v["status"], "running");
    assert_eq!(v["result"], serde_json::Value::Null);
    assert_eq!(v["progress"]["done"], 1);
    assert_eq!(v["results"], json!([]));
    assert_eq!(v["activities"][0]["activity_id"], 1);
    assert_eq!(v["activities"][0]["state"], "scheduled");
    assert_eq!(v["waiting_on"][0]["kind"], "activity");
    let text = r.to_text();
    assert!(
        text.starts_with("replayed to    seq 6 (2026-11-18T11:06:46Z); 11 events read"),
        "{text}"
    );
    assert!(
        text.contains("pending activities\n  - #1 fetch_ticket attempt 1 scheduled\n"),
        "{text}"
    );
    let later = replay(&key(), &history().wire(), Some(8))
        .unwrap()
        .to_text();
    assert!(
        later.contains("results so far\n  - #1 fetch_ticket (seq 7): {\"id\":7}\n"),
        "{later}"
    );
}

#[test]
fn an_altered_event_breaks_the_chain_at_its_seq() {
    let mut w = history().wire();
    if let Some(pb::history_event::Attributes::ActivityCompleted(a)) = &mut w[6].attributes {
        a.result = Some(pb::Payload {
            encoding: "json/plain".into(),
            data: br#"{"id":8}"#.to_vec(),
        });
    }
    let err = replay(&key(), &w, None).unwrap_err();
    assert!(
        matches!(err, Error::Chain(ChainError::Hash { seq: 7, .. })),
        "{err}"
    );
    assert!(err.to_string().contains("broken at seq 7"), "{err}");
    // Replaying only up to before the alteration still verifies.
    assert!(replay(&key(), &w, Some(6)).is_ok());
}

#[test]
fn another_runs_history_does_not_verify() {
    let other = RunKey::new(
        "default",
        RunId::parse("01900000-0000-7000-8000-000000000002").unwrap(),
    );
    let err = replay(&other, &history().wire(), None).unwrap_err();
    assert!(
        matches!(err, Error::Chain(ChainError::Hash { seq: 1, .. })),
        "{err}"
    );
    let err = replay(
        &RunKey::new("tenant-b", key().run_id),
        &history().wire(),
        None,
    )
    .unwrap_err();
    assert!(
        matches!(err, Error::Chain(ChainError::Hash { seq: 1, .. })),
        "{err}"
    );
}

#[test]
fn a_missing_event_is_a_gap() {
    let mut w = history().wire();
    w.remove(4);
    let err = replay(&key(), &w, None).unwrap_err();
    assert!(
        matches!(
            err,
            Error::Chain(ChainError::Gap {
                expected: 5,
                found: 6,
                ..
            })
        ),
        "{err}"
    );
}

#[test]
fn blob_payloads_verify_by_hash() {
    let big = format!("\"{}\"", "x".repeat(2_000)).into_bytes();
    let stored = Payload {
        encoding: "json/plain".into(),
        data: Vec::new(),
        blob: Some(BlobRef {
            hash: *blake3::hash(&big).as_bytes(),
            len: big.len() as u64,
        }),
    };
    let mut b = Builder::new(&key());
    b.push(started(0));
    task(&mut b);
    b.push(Event::ActivityScheduled(ev::ActivityScheduled {
        command_seq: 1,
        activity_type: "llm".into(),
        input: Payload::json(b"1".to_vec()),
        options: Default::default(),
    }));
    b.push_as(
        completed(1, stored),
        completed(1, Payload::json(big.clone())),
    );
    let r = replay(&key(), &b.wire(), None).unwrap();
    assert_eq!(r.results[0].result.data, big);
}

#[test]
fn run_timed_out_verifies_with_the_started_timeout() {
    let mut b = Builder::new(&key());
    b.push(started(5_000));
    b.push(Event::RunTimedOut(ev::RunTimedOut {
        run_timeout_ms: 5_000,
    }));
    let r = replay(&key(), &b.wire(), None).unwrap();
    assert_eq!(r.state.status, RunStatus::TimedOut);
}

#[test]
fn illegal_events_are_refused_by_the_state_machine() {
    let mut b = Builder::new(&key());
    b.push(started(0));
    b.push(Event::TimerFired(ev::TimerFired { command_seq: 9 }));
    let err = replay(&key(), &b.wire(), None).unwrap_err();
    assert!(matches!(err, Error::Apply(_)), "{err}");
    assert!(err.to_string().contains("seq 2"), "{err}");
}

#[test]
fn empty_and_bad_until() {
    assert!(matches!(replay(&key(), &[], None), Err(Error::Empty)));
    assert!(matches!(
        replay(&key(), &history().wire(), Some(0)),
        Err(Error::UntilBeforeStart(0))
    ));
    let mut w = history().wire();
    w[0].hash = vec![1, 2, 3];
    assert!(matches!(replay(&key(), &w, None), Err(Error::Convert(_))));
}
