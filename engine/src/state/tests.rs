//! Every transition of the run state machine, legal and illegal.
//!
//! Each illegal event must come back as the right typed [`ApplyError`] and leave the state
//! exactly as it was (compared against a clone), because the store validates a batch against
//! the state before the batch reaches the log.

mod activity;
mod builds;
mod lifecycle;
mod usage;
mod waits;
mod workflow_task;

use super::*;
use crate::event::*;

/// A fixed start time, so that every expectation about `*_ms` is a plain number.
const T0: TimeMs = 1_700_000_000_000;

fn run_id(n: u128) -> RunId {
    RunId(uuid::Uuid::from_u128(
        0x0190_0000_0000_7000_8000_0000_0000_0000 | n,
    ))
}

fn started(budget: Budget) -> RunStarted {
    RunStarted {
        workflow_type: "triage".into(),
        workflow_id: "ticket-42".into(),
        task_queue: "agents".into(),
        input: Payload::json(r#"{"ticket":42}"#),
        run_timeout_ms: 60_000,
        budget,
        continued_from: None,
        identity: "test".into(),
        random_seed: 7,
        parent: None,
        forked_from: None,
        schedule: None,
        traceparent: None,
    }
}

fn failure(msg: &str) -> Failure {
    Failure {
        message: msg.into(),
        error_type: "Boom".into(),
        non_retryable: false,
        details: String::new(),
    }
}

fn options(effect: Effect) -> ActivityOptions {
    ActivityOptions {
        task_queue: "tools".into(),
        effect,
        ..Default::default()
    }
}

fn usage(input: u64, output: u64, cost: u64) -> Usage {
    Usage {
        input_tokens: input,
        output_tokens: output,
        cost_micros: cost,
        model: "m".into(),
    }
}

/// A run under test: its state, the records applied so far and the chain they form.
struct Run {
    key: RunKey,
    state: RunState,
    records: Vec<EventRecord>,
    /// Time of the next record.
    now: TimeMs,
}

impl Run {
    fn new() -> Run {
        Run::with(started(Budget::default()))
    }

    fn with(a: RunStarted) -> Run {
        let key = RunKey::new("default", run_id(1));
        let rec = make(&genesis_hash(&key), 1, T0, Event::RunStarted(a));
        let state = RunState::start(key.clone(), &rec).expect("RunStarted at seq 1 starts a run");
        Run {
            key,
            state,
            records: vec![rec],
            now: T0,
        }
    }

    /// The next record of this history (chained to the last one), not applied.
    fn next(&self, event: Event) -> EventRecord {
        self.at_seq(self.state.last_seq + 1, event)
    }

    /// A record at any seq, chained to the last applied one.
    fn at_seq(&self, seq: u64, event: Event) -> EventRecord {
        make(&self.state.last_hash, seq, self.now, event)
    }

    /// Applies `event`, which must be legal, and returns the new state.
    fn ok(&mut self, event: Event) -> &RunState {
        let rec = self.next(event);
        if let Err(e) = self.state.apply(&rec) {
            panic!("{:?} should be legal here: {e}", rec.event.kind());
        }
        assert_eq!(self.state.last_seq, rec.seq);
        assert_eq!(self.state.last_hash, rec.hash);
        self.records.push(rec);
        &self.state
    }

    /// Applies `event`, which must be refused without changing the state.
    fn err(&mut self, event: Event) -> ApplyError {
        let rec = self.next(event);
        self.err_rec(&rec)
    }

    fn err_rec(&mut self, rec: &EventRecord) -> ApplyError {
        let before = self.state.clone();
        let e = self.state.apply(rec).expect_err("event should be refused");
        assert_eq!(
            self.state,
            before,
            "a refused {:?} changed the state",
            rec.event.kind()
        );
        e
    }

    /// The command seq the next command event must carry.
    fn cmd(&self) -> CommandSeq {
        self.state.next_command_seq
    }

    /// One full workflow task (scheduled, started, completed), after which commands may follow.
    fn task(&mut self) {
        let scheduled_seq = self.state.last_seq + 1;
        self.ok(Event::WorkflowTaskScheduled(WorkflowTaskScheduled {
            task_queue: "agents".into(),
            attempt: 1,
            not_before_ms: 0,
        }));
        let started_seq = self.state.last_seq + 1;
        self.ok(Event::WorkflowTaskStarted(WorkflowTaskStarted {
            scheduled_seq,
            worker: "w1".into(),
            timeout_ms: 0,
        }));
        self.ok(Event::WorkflowTaskCompleted(WorkflowTaskCompleted {
            started_seq,
            worker: "w1".into(),
        }));
    }

    /// Opens a workflow task and starts it; returns the WorkflowTaskStarted seq.
    fn open_task(&mut self) -> u64 {
        let scheduled_seq = self.state.last_seq + 1;
        self.ok(Event::WorkflowTaskScheduled(WorkflowTaskScheduled {
            task_queue: "agents".into(),
            attempt: 1,
            not_before_ms: 0,
        }));
        let started_seq = self.state.last_seq + 1;
        self.ok(Event::WorkflowTaskStarted(WorkflowTaskStarted {
            scheduled_seq,
            worker: "w1".into(),
            timeout_ms: 0,
        }));
        started_seq
    }

    fn schedule(&mut self, effect: Effect) -> CommandSeq {
        let id = self.cmd();
        self.ok(Event::ActivityScheduled(ActivityScheduled {
            command_seq: id,
            activity_type: "llm.chat".into(),
            input: Payload::json("{}"),
            options: options(effect),
        }));
        id
    }

    fn timer(&mut self, fire_at_ms: TimeMs) -> CommandSeq {
        let id = self.cmd();
        self.ok(Event::TimerStarted(TimerStarted {
            command_seq: id,
            fire_at_ms,
        }));
        id
    }

    fn wait_signal(&mut self, name: &str) -> CommandSeq {
        let id = self.cmd();
        self.ok(Event::SignalWaitStarted(SignalWaitStarted {
            command_seq: id,
            name: name.into(),
            question: format!("{name}?"),
            choices: vec!["yes".into(), "no".into()],
        }));
        id
    }

    fn signal(&mut self, name: &str) {
        self.ok(Event::SignalReceived(SignalReceived {
            name: name.into(),
            input: Payload::json("true"),
            identity: "human".into(),
            request_id: format!("req-{}", self.state.last_seq),
        }));
    }

    fn activity(&self, id: CommandSeq) -> &ActivityState {
        self.state.activities.get(&id).expect("activity is open")
    }
}

fn make(prev: &Hash, seq: u64, time_ms: TimeMs, event: Event) -> EventRecord {
    let hash = record_hash(prev, seq, time_ms, event.kind(), &event.encode_attrs());
    EventRecord {
        seq,
        time_ms,
        hash,
        event,
    }
}

fn completed(id: CommandSeq, attempt: u32, u: Option<Usage>) -> Event {
    Event::ActivityCompleted(ActivityCompleted {
        command_seq: id,
        attempt,
        result: Payload::json(r#""done""#),
        duration_ms: 5,
        usage: u,
        reconciled: false,
    })
}

fn failed(id: CommandSeq, attempt: u32, retry_at_ms: Option<TimeMs>) -> Event {
    Event::ActivityFailed(ActivityFailed {
        command_seq: id,
        attempt,
        failure: failure("nope"),
        retry_at_ms,
        duration_ms: 5,
        usage: None,
    })
}

fn timed_out(id: CommandSeq, attempt: u32, retry_at_ms: Option<TimeMs>) -> Event {
    Event::ActivityTimedOut(ActivityTimedOut {
        command_seq: id,
        attempt,
        timeout: TimeoutKind::StartToClose,
        retry_at_ms,
    })
}

fn write_started(id: CommandSeq, attempt: u32) -> Event {
    Event::ActivityStarted(ActivityStarted {
        command_seq: id,
        attempt,
        worker: "w2".into(),
        effect: Effect::Write,
    })
}

fn outcome_unknown(id: CommandSeq, attempt: u32) -> Event {
    Event::ActivityOutcomeUnknown(ActivityOutcomeUnknown {
        command_seq: id,
        attempt,
    })
}

fn reconciled(id: CommandSeq) -> Event {
    Event::ActivityReconciled(ActivityReconciled {
        command_seq: id,
        decision: ReconcileDecision::Retry,
        identity: "op".into(),
    })
}

fn timer_fired(id: CommandSeq) -> Event {
    Event::TimerFired(TimerFired { command_seq: id })
}

fn cancel_requested() -> Event {
    Event::CancelRequested(CancelRequested {
        reason: "user".into(),
        identity: "cli".into(),
    })
}

fn partial(cs: CommandSeq, body: &str) -> Event {
    Event::PartialResultRecorded(PartialResultRecorded {
        command_seq: cs,
        result: Payload::json(body),
    })
}

#[track_caller]
fn assert_illegal(e: &ApplyError, seq: u64, kind: EventKind, detail_has: &str) {
    match e {
        ApplyError::Illegal {
            seq: s,
            kind: k,
            detail,
        } => {
            assert_eq!((*s, *k), (seq, kind.name()), "{e}");
            assert!(
                detail.contains(detail_has),
                "detail {detail:?} should mention {detail_has:?}"
            );
        }
        other => panic!("expected Illegal, got {other:?}"),
    }
}

#[track_caller]
fn assert_order(e: &ApplyError, seq: u64, kind: &str) {
    match e {
        ApplyError::Order {
            seq: s, kind: k, ..
        } => assert_eq!((*s, *k), (seq, kind), "{e}"),
        other => panic!("expected Order, got {other:?}"),
    }
}
