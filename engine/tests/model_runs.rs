//! A seeded model test of the run state machine (C6, "no stuck runs").
//!
//! A small model of one run (what is open, where the workflow task is, what was received)
//! drives `RunState::apply` with random batches of events as the server, its workers, its
//! timer loop and its operators would append them, interleaved with events the model knows
//! to be illegal. After every step:
//! - the state agrees with the model (status, open activities and their phases, timers,
//!   signal waits, workflow task, held, budget, cancel);
//! - an illegal event was refused with the predicted kind of error and left the state equal
//!   to a clone taken before;
//! - every open run is progressing or says what it waits on: `waiting_on(now)` is never empty,
//!   names every open activity, timer and signal wait, the budget it is parked on and the
//!   reason it is held, and no run is left with unseen events and no workflow task; an open
//!   run with nothing else to name is `Idle` (its code waits for nothing the server tracks).
//!
//! When a run closes a new one starts (its successor, after continue-as-new). The workflow
//! code is modelled like the SDK: a task whose commands would leave the run open with nothing
//! open is either completed (the code waits only for a cancel or an untracked signal: the run
//! is idle) or, as the SDK does for code that awaits a future that is not the SDK's, failed
//! with `[STF-WT005]`.
//!
//! Prints its seed; `TEST_SEED=<n>` replays it. `MODEL_RUNS_STEPS=<n>` runs longer (default
//! 5,000 steps).

use std::collections::BTreeMap;

#[path = "model_runs/illegal.rs"]
mod illegal;
#[path = "model_runs/legal.rs"]
mod legal;

use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use steadfast_engine::event::*;
use steadfast_engine::payload::Hash;
use steadfast_engine::state::{
    ActivityPhase, ApplyError, RunState, RunStatus, WaitingOn, WorkflowTask,
};
use steadfast_engine::{EventRecord, Payload, RunId, RunKey};

const STEPS_DEFAULT: u64 = 5_000;
const T0: TimeMs = 1_700_000_000_000;
const SIGNALS: [&str; 2] = ["approve", "more"];

/// Where the model believes one activity is.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Phase {
    Ready { visible_ms: TimeMs },
    Started,
    Unknown,
}

#[derive(Clone, Debug)]
struct Act {
    attempt: u32,
    phase: Phase,
    write: bool,
    cancel_requested: bool,
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Task {
    Idle,
    Scheduled { seq: u64 },
    Started { seq: u64 },
}

/// The model: what the test expects the state to hold.
#[derive(Clone, Debug)]
struct Model {
    status: RunStatus,
    task: Task,
    next_cmd: CommandSeq,
    acts: BTreeMap<CommandSeq, Act>,
    timers: BTreeMap<CommandSeq, TimeMs>,
    /// Open signal waits, in issue order: (command seq, name).
    waits: Vec<(CommandSeq, String)>,
    received: BTreeMap<String, u64>,
    issued: BTreeMap<String, u64>,
    cancel_requested: bool,
    parked: bool,
    held: bool,
    run_timeout_ms: u64,
}

/// The error kind the model predicts for an illegal event.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Refusal {
    Order,
    Closed,
    Illegal,
}

/// What the test saw, to prove it exercised what it claims to.
#[derive(Default, Debug)]
struct Coverage {
    steps: u64,
    runs: u64,
    refused: BTreeMap<&'static str, u64>,
    waiting: BTreeMap<&'static str, u64>,
    closed: BTreeMap<&'static str, u64>,
    blocked_code: u64,
    noop_cancels: u64,
}

struct Sim {
    rng: StdRng,
    key: RunKey,
    state: RunState,
    model: Model,
    now: TimeMs,
    cov: Coverage,
}

fn record(prev: &Hash, seq: u64, time_ms: TimeMs, event: Event) -> EventRecord {
    let hash = record_hash(prev, seq, time_ms, event.kind(), &event.encode_attrs());
    EventRecord {
        seq,
        time_ms,
        hash,
        event,
    }
}

fn run_started(rng: &mut StdRng, continued_from: Option<RunId>) -> (RunStarted, u64) {
    let run_timeout_ms = if rng.gen_bool(0.5) {
        0
    } else {
        rng.gen_range(60_000..600_000)
    };
    let a = RunStarted {
        workflow_type: "agent".into(),
        workflow_id: format!("wf-{}", rng.gen_range(0..4)),
        task_queue: "agents".into(),
        input: Payload::json("{}"),
        run_timeout_ms,
        budget: Budget {
            max_activities: if rng.gen_bool(0.3) { 3 } else { 0 },
            ..Default::default()
        },
        continued_from,
        identity: "model".into(),
        random_seed: rng.r#gen(),
        parent: None,
        forked_from: None,
        schedule: None,
        traceparent: None,
    };
    (a, run_timeout_ms)
}

fn failure(non_retryable: bool) -> Failure {
    Failure {
        message: "tool said no".into(),
        error_type: "Tool".into(),
        non_retryable,
        details: String::new(),
    }
}

impl Sim {
    fn new(seed: u64) -> Sim {
        let mut rng = StdRng::seed_from_u64(seed);
        let (key, state, model) = Sim::begin(&mut rng, T0, None);
        Sim {
            rng,
            key,
            state,
            model,
            now: T0,
            cov: Coverage {
                runs: 1,
                ..Default::default()
            },
        }
    }

    /// A new run: RunStarted + WorkflowTaskScheduled, as `StartWorkflow` appends them.
    fn begin(
        rng: &mut StdRng,
        now: TimeMs,
        continued_from: Option<RunId>,
    ) -> (RunKey, RunState, Model) {
        let id = RunId(uuid::Builder::from_random_bytes(rng.r#gen()).into_uuid());
        let key = RunKey::new("default", id);
        let (started, run_timeout_ms) = run_started(rng, continued_from);
        let first = record(&genesis_hash(&key), 1, now, Event::RunStarted(started));
        let mut state = RunState::start(key.clone(), &first).expect("RunStarted at seq 1");
        let wts = record(
            &state.last_hash,
            2,
            now,
            Event::WorkflowTaskScheduled(WorkflowTaskScheduled {
                task_queue: "agents".into(),
                attempt: 1,
                not_before_ms: 0,
            }),
        );
        state.apply(&wts).expect("the first task");
        let model = Model {
            status: RunStatus::Running,
            task: Task::Scheduled { seq: 2 },
            next_cmd: 1,
            acts: BTreeMap::new(),
            timers: BTreeMap::new(),
            waits: Vec::new(),
            received: BTreeMap::new(),
            issued: BTreeMap::new(),
            cancel_requested: false,
            parked: false,
            held: false,
            run_timeout_ms,
        };
        (key, state, model)
    }

    fn rec(&self, seq: u64, event: Event) -> EventRecord {
        record(&self.state.last_hash, seq, self.now, event)
    }

    /// Appends a legal batch as `Core::update` does: every event applies, and a
    /// WorkflowTaskScheduled follows when the batch leaves the code with unseen events.
    fn append(&mut self, events: Vec<Event>, what: &str) {
        let mut events = events;
        let mut probe = self.state.clone();
        for e in &events {
            let r = record(&probe.last_hash, probe.last_seq + 1, self.now, e.clone());
            if let Err(err) = probe.apply(&r) {
                panic!("{what}: legal {:?} refused: {err}", e.kind());
            }
        }
        if probe.needs_workflow_task() {
            events.push(Event::WorkflowTaskScheduled(WorkflowTaskScheduled {
                task_queue: "agents".into(),
                attempt: 1,
                not_before_ms: 0,
            }));
        }
        for e in events {
            if let Event::WorkflowTaskScheduled(_) = e {
                self.model.task = Task::Scheduled {
                    seq: self.state.last_seq + 1,
                };
            }
            let r = self.rec(self.state.last_seq + 1, e);
            self.state.apply(&r).expect("checked on the probe");
        }
    }

    /// Tries an event the model says is illegal: refused with the predicted error, and the
    /// state unchanged.
    fn refuse(&mut self, rec: EventRecord, expect: Refusal, why: &'static str) {
        let before = self.state.clone();
        let kind = rec.event.kind();
        match self.state.apply(&rec) {
            Ok(()) => panic!("{why}: illegal {kind:?} at seq {} was accepted", rec.seq),
            Err(e) => {
                let got = match e {
                    ApplyError::Order { .. } => Refusal::Order,
                    ApplyError::Closed { .. } => Refusal::Closed,
                    ApplyError::Illegal { .. } => Refusal::Illegal,
                };
                assert_eq!(got, expect, "{why}: {kind:?} refused as {e}");
            }
        }
        assert_eq!(
            self.state, before,
            "{why}: a refused {kind:?} changed the state"
        );
        *self.cov.refused.entry(why).or_default() += 1;
    }

    fn step(&mut self) {
        self.now += self.rng.gen_range(0..4_000);
        self.cov.steps += 1;
        if self.model.status.is_closed() {
            self.after_close();
            return;
        }
        if self.rng.gen_bool(0.25) {
            self.illegal();
        } else {
            self.legal();
        }
    }

    /// A closed run refuses everything; then its successor (or a new run) starts.
    fn after_close(&mut self) {
        let seq = self.state.last_seq + 1;
        let e = Event::SignalReceived(SignalReceived {
            name: "approve".into(),
            input: Payload::json("true"),
            identity: "human".into(),
            request_id: format!("late-{seq}"),
        });
        self.refuse(self.rec(seq, e), Refusal::Closed, "event after close");
        let from = self.state.continued_to.map(|_| self.key.run_id);
        let (key, state, model) = Sim::begin(&mut self.rng, self.now, from);
        (self.key, self.state, self.model) = (key, state, model);
        self.cov.runs += 1;
    }

    /// The state agrees with the model, and C6 holds.
    fn check(&mut self) {
        let s = &self.state;
        let m = &self.model;
        let ctx = format!("run {} seq {}", self.key, s.last_seq);
        assert_eq!(s.status, m.status, "{ctx}: status");
        let waiting = s.waiting_on(self.now);
        if s.status.is_closed() {
            assert!(
                waiting.is_empty(),
                "{ctx}: a closed run waits on {waiting:?}"
            );
            *self.cov.closed.entry(s.status.as_str()).or_default() += 1;
            return;
        }
        assert_eq!(s.next_command_seq, m.next_cmd, "{ctx}: next command seq");
        let task = match &s.workflow_task {
            WorkflowTask::Idle => Task::Idle,
            WorkflowTask::Scheduled { scheduled_seq, .. } => Task::Scheduled {
                seq: *scheduled_seq,
            },
            WorkflowTask::Started { started_seq, .. } => Task::Started { seq: *started_seq },
        };
        assert_eq!(task, m.task, "{ctx}: workflow task");
        assert_eq!(s.held.is_some(), m.held, "{ctx}: held");
        assert_eq!(s.budget_exceeded.is_some(), m.parked, "{ctx}: parked");
        assert_eq!(s.cancel_requested, m.cancel_requested, "{ctx}: cancel");
        assert_eq!(
            s.activities.keys().collect::<Vec<_>>(),
            m.acts.keys().collect::<Vec<_>>(),
            "{ctx}: open activities"
        );
        for (id, a) in &s.activities {
            let ma = &m.acts[id];
            assert_eq!(a.attempt, ma.attempt, "{ctx}: activity {id} attempt");
            assert_eq!(
                a.cancel_requested, ma.cancel_requested,
                "{ctx}: activity {id} cancel"
            );
            let same = match (&a.phase, ma.phase) {
                (ActivityPhase::Ready { visible_ms }, Phase::Ready { visible_ms: v }) => {
                    *visible_ms == v
                }
                (ActivityPhase::Started { .. }, Phase::Started) => true,
                (ActivityPhase::OutcomeUnknown { .. }, Phase::Unknown) => true,
                _ => false,
            };
            assert!(
                same,
                "{ctx}: activity {id} is {:?}, model {:?}",
                a.phase, ma.phase
            );
        }
        assert_eq!(s.timers, m.timers, "{ctx}: timers");
        let waits: Vec<(CommandSeq, String)> = s
            .signal_waits
            .iter()
            .map(|w| (w.command_seq, w.name.clone()))
            .collect();
        assert_eq!(waits, m.waits, "{ctx}: signal waits");

        // C6: open means progressing or waiting on something named.
        assert!(
            !s.needs_workflow_task(),
            "{ctx}: unseen events and no workflow task to show them"
        );
        assert!(
            !waiting.is_empty(),
            "{ctx}: an open run waits on nothing: {s:?}"
        );
        let named = |pred: &dyn Fn(&WaitingOn) -> bool| waiting.iter().any(pred);
        for (id, a) in &s.activities {
            let ok = named(&|w| match w {
                WaitingOn::Activity {
                    id: i,
                    state,
                    next_retry_ms,
                    ..
                } => {
                    i == id
                        && match a.phase {
                            ActivityPhase::Ready { visible_ms } if visible_ms > self.now => {
                                *state == "backoff" && *next_retry_ms == Some(visible_ms)
                            }
                            ActivityPhase::Ready { .. } => *state == "scheduled",
                            _ => *state == "running",
                        }
                }
                WaitingOn::Reconciliation { id: i, .. } => {
                    i == id && matches!(a.phase, ActivityPhase::OutcomeUnknown { .. })
                }
                _ => false,
            });
            assert!(
                ok,
                "{ctx}: activity {id} ({:?}) not named in {waiting:?}",
                a.phase
            );
        }
        for (id, at) in &s.timers {
            assert!(
                named(&|w| *w
                    == WaitingOn::Timer {
                        id: *id,
                        fire_at_ms: *at
                    }),
                "{ctx}: timer {id} not named"
            );
        }
        let signal_entries = waiting
            .iter()
            .filter(|w| matches!(w, WaitingOn::Signal { .. }))
            .count();
        assert_eq!(
            signal_entries,
            s.signal_waits.len(),
            "{ctx}: signal waits named"
        );
        if let Some(hit) = s.budget_exceeded {
            assert!(
                named(&|w| *w == WaitingOn::Budget(hit)),
                "{ctx}: budget not named"
            );
        }
        if let Some(h) = &s.held {
            let ok = named(&|w| match w {
                WaitingOn::WorkflowTask {
                    held_reason: Some(r),
                } => r.contains(&h.message) && !h.message.is_empty(),
                _ => false,
            });
            assert!(ok, "{ctx}: held without its reason in {waiting:?}");
        } else if s.workflow_task != WorkflowTask::Idle {
            assert!(
                named(&|w| *w == WaitingOn::WorkflowTask { held_reason: None }),
                "{ctx}: pending task not named"
            );
        }
        // Idle exactly when nothing else is named: never empty, never hiding a real wait.
        let idle = waiting.contains(&WaitingOn::Idle);
        let nothing_else = s.activities.is_empty()
            && s.timers.is_empty()
            && s.signal_waits.is_empty()
            && s.budget_exceeded.is_none()
            && s.held.is_none()
            && s.workflow_task == WorkflowTask::Idle;
        assert_eq!(idle, nothing_else, "{ctx}: idle in {waiting:?}");
        if idle {
            assert_eq!(waiting.len(), 1, "{ctx}: idle beside {waiting:?}");
        }
        for w in &waiting {
            *self.cov.waiting.entry(w.category()).or_default() += 1;
        }
    }
}

/// What a long enough model run must have reached, and has not yet.
fn not_covered(c: &Coverage) -> Vec<String> {
    let mut missing = Vec::new();
    for cat in [
        "activity",
        "timer",
        "signal",
        "budget",
        "reconciliation",
        "workflow_task",
        "idle",
    ] {
        if !c.waiting.contains_key(cat) {
            missing.push(format!("never waited on {cat}"));
        }
    }
    for st in ["completed", "failed", "continued_as_new", "terminated"] {
        if !c.closed.contains_key(st) {
            missing.push(format!("no run ended {st}"));
        }
    }
    if c.refused.len() < 10 {
        missing.push(format!("few kinds refused: {:?}", c.refused));
    }
    if c.blocked_code == 0 {
        missing.push("no command blocked".into());
    }
    if c.noop_cancels == 0 {
        missing.push("no no-op cancel".into());
    }
    missing
}

#[test]
fn every_open_run_progresses_or_names_what_it_waits_on() {
    let seed = std::env::var("TEST_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(rand::random);
    let steps = std::env::var("MODEL_RUNS_STEPS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(STEPS_DEFAULT);
    println!("TEST_SEED={seed} (model_runs, {steps} steps; replay with TEST_SEED={seed})");
    let mut sim = Sim::new(seed);
    sim.check();
    for _ in 0..steps {
        sim.step();
        sim.check();
    }
    // A model that never reached every wait, ending and refusal did not test what it claims
    // to. Some seeds reach the rarest (an outcome-unknown activity waiting on reconciliation)
    // late: a full-length run goes on, checking every step, until all are reached, and fails
    // if they are not within four times its length (about 1 seed in 100 needs more than
    // STEPS_DEFAULT).
    if steps >= STEPS_DEFAULT {
        let mut extra = 0;
        while !not_covered(&sim.cov).is_empty() && extra < 3 * steps {
            sim.step();
            sim.check();
            extra += 1;
        }
        let c = &sim.cov;
        println!("{c:#?}");
        if extra > 0 {
            println!("{extra} steps past {steps} to reach every case");
        }
        let missing = not_covered(c);
        assert!(
            missing.is_empty(),
            "seed {seed}, {} steps: {missing:?}",
            steps + extra
        );
    } else {
        println!("{:#?}", sim.cov);
    }
}
