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
//!   reason it is held, and no run is left with unseen events and no workflow task.
//!
//! When a run closes a new one starts (its successor, after continue-as-new). The workflow
//! code is modelled like the SDK: a task whose commands would leave the run open with nothing
//! open (the code awaits something that is not the SDK's) is failed with `[STF-WT005]`
//! instead, because the state machine alone cannot tell that code from code that waits.
//!
//! Prints its seed; `TEST_SEED=<n>` replays it. `MODEL_RUNS_STEPS=<n>` runs longer (default
//! 5,000 steps).

use std::collections::BTreeMap;

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

    fn legal(&mut self) {
        let m = &self.model;
        let mut options: Vec<u8> = vec![6, 7];
        match m.task {
            Task::Scheduled { .. } => options.extend([0, 0, 0]),
            Task::Started { .. } => options.extend([1, 1, 1, 1, 2, 3]),
            Task::Idle => {}
        }
        if !m.acts.is_empty() {
            options.extend([4, 4, 4, 4]);
        }
        if !m.timers.is_empty() {
            options.extend([5, 5]);
        }
        if !m.cancel_requested {
            options.push(8);
        }
        if !m.parked
            && m.acts
                .values()
                .any(|a| matches!(a.phase, Phase::Ready { .. }))
        {
            options.push(9);
        }
        if m.parked {
            options.extend([10, 10]);
        }
        if self.rng.gen_bool(0.05) {
            options.push(11);
        }
        if m.run_timeout_ms > 0 && self.rng.gen_bool(0.02) {
            options.push(12);
        }
        match *options.choose(&mut self.rng).expect("never empty") {
            0 => self.task_started(),
            1 => self.task_completed(),
            2 => self.task_failed(),
            3 => self.task_timed_out(),
            4 => self.activity_event(),
            5 => self.timer_fires(),
            6 | 7 => self.signal(),
            8 => {
                self.model.cancel_requested = true;
                for a in self.model.acts.values_mut() {
                    a.cancel_requested = true;
                }
                self.append(
                    vec![Event::CancelRequested(CancelRequested {
                        reason: "user".into(),
                        identity: "cli".into(),
                    })],
                    "cancel request",
                );
            }
            9 => {
                self.model.parked = true;
                self.append(
                    vec![Event::BudgetExceeded(BudgetExceeded {
                        dimension: BudgetDimension::Activities,
                        limit: 3,
                        used: 3,
                    })],
                    "budget park",
                );
            }
            10 => {
                self.model.parked = false;
                self.append(
                    vec![Event::BudgetUpdated(BudgetUpdated {
                        budget: Budget::default(),
                        identity: "cli".into(),
                    })],
                    "budget raise",
                );
            }
            11 => {
                self.close_model(RunStatus::Terminated);
                self.append(
                    vec![Event::RunTerminated(RunTerminated {
                        reason: "operator".into(),
                        identity: "cli".into(),
                    })],
                    "terminate",
                );
            }
            _ => {
                self.close_model(RunStatus::TimedOut);
                let t = self.model.run_timeout_ms;
                self.append(
                    vec![Event::RunTimedOut(RunTimedOut { run_timeout_ms: t })],
                    "run timeout",
                );
            }
        }
    }

    fn close_model(&mut self, status: RunStatus) {
        let m = &mut self.model;
        m.status = status;
        m.task = Task::Idle;
        m.acts.clear();
        m.timers.clear();
        m.waits.clear();
        m.parked = false;
        m.held = false;
    }

    fn task_started(&mut self) {
        let Task::Scheduled { seq } = self.model.task else {
            unreachable!()
        };
        let started = self.state.last_seq + 1;
        self.append(
            vec![Event::WorkflowTaskStarted(WorkflowTaskStarted {
                scheduled_seq: seq,
                worker: "w1".into(),
            })],
            "task started",
        );
        self.model.task = Task::Started { seq: started };
    }

    fn started_seq(&self) -> u64 {
        let Task::Started { seq } = self.model.task else {
            unreachable!("only chosen with a started task")
        };
        seq
    }

    /// The code's commands for one task, then the server's reactions; or, when the commands
    /// would leave the run open with nothing open, the SDK's `[STF-WT005]` failure instead.
    fn task_completed(&mut self) {
        let started_seq = self.started_seq();
        let saved = self.model.clone();
        self.model.task = Task::Idle;
        self.model.held = false;
        let mut events = vec![Event::WorkflowTaskCompleted(WorkflowTaskCompleted {
            started_seq,
            worker: "w1".into(),
        })];
        let n = self.rng.gen_range(0..4);
        let mut closes = false;
        let mut cancelled: Vec<CommandSeq> = Vec::new();
        for _ in 0..n {
            let cs = self.model.next_cmd;
            self.model.next_cmd += 1;
            let e = match self.rng.gen_range(0..8) {
                0 | 1 => {
                    let effect = *[Effect::Read, Effect::Idempotent, Effect::Write]
                        .choose(&mut self.rng)
                        .expect("three");
                    self.model.acts.insert(
                        cs,
                        Act {
                            attempt: 1,
                            phase: Phase::Ready {
                                visible_ms: self.now,
                            },
                            write: effect == Effect::Write,
                            cancel_requested: false,
                        },
                    );
                    Event::ActivityScheduled(ActivityScheduled {
                        command_seq: cs,
                        activity_type: "tool".into(),
                        input: Payload::json("{}"),
                        options: ActivityOptions {
                            task_queue: "tools".into(),
                            effect,
                            ..Default::default()
                        },
                    })
                }
                2 => {
                    let at = self.now + self.rng.gen_range(1..20_000);
                    self.model.timers.insert(cs, at);
                    Event::TimerStarted(TimerStarted {
                        command_seq: cs,
                        fire_at_ms: at,
                    })
                }
                3 => {
                    let name = SIGNALS.choose(&mut self.rng).expect("two").to_string();
                    let issued = self.model.issued.entry(name.clone()).or_default();
                    *issued += 1;
                    if self.model.received.get(&name).copied().unwrap_or(0) < *issued {
                        self.model.waits.push((cs, name.clone()));
                    }
                    Event::SignalWaitStarted(SignalWaitStarted {
                        command_seq: cs,
                        name,
                        question: "go on?".into(),
                        choices: vec!["yes".into(), "no".into()],
                    })
                }
                4 if cs > 1 => {
                    // Any earlier command: an open activity, a closed one (its result raced
                    // the cancel: a recorded no-op) or something that is not an activity.
                    let id = self.rng.gen_range(1..cs);
                    match self.model.acts.get_mut(&id) {
                        Some(a) => {
                            a.cancel_requested = true;
                            if matches!(a.phase, Phase::Ready { .. }) && self.rng.gen_bool(0.6) {
                                cancelled.push(id);
                            }
                        }
                        None => self.cov.noop_cancels += 1,
                    }
                    Event::ActivityCancelRequested(ActivityCancelRequested {
                        command_seq: cs,
                        activity_id: id,
                    })
                }
                5 if cs > 1 => {
                    let id = self.rng.gen_range(1..cs);
                    if self.model.timers.remove(&id).is_none() {
                        self.cov.noop_cancels += 1;
                    }
                    Event::TimerCancelled(TimerCancelled {
                        command_seq: cs,
                        timer_id: id,
                    })
                }
                6 => Event::ProgressReported(ProgressReported {
                    command_seq: cs,
                    done: 1,
                    total: 2,
                    message: "half".into(),
                }),
                _ => Event::PartialResultRecorded(PartialResultRecorded {
                    command_seq: cs,
                    result: Payload::json("{}"),
                }),
            };
            events.push(e);
        }
        if self.rng.gen_bool(0.08) {
            let cs = self.model.next_cmd;
            self.model.next_cmd += 1;
            closes = true;
            let pick = self.rng.gen_range(0..4);
            let (status, e) = match pick {
                0 => (
                    RunStatus::Completed,
                    Event::RunCompleted(RunCompleted {
                        command_seq: cs,
                        result: Payload::json("\"ok\""),
                    }),
                ),
                1 => (
                    RunStatus::Failed,
                    Event::RunFailed(RunFailed {
                        command_seq: cs,
                        failure: failure(true),
                    }),
                ),
                2 if self.model.cancel_requested => (
                    RunStatus::Cancelled,
                    Event::RunCancelled(RunCancelled {
                        command_seq: cs,
                        partial_result: None,
                    }),
                ),
                _ => (
                    RunStatus::ContinuedAsNew,
                    Event::RunContinuedAsNew(RunContinuedAsNew {
                        command_seq: cs,
                        new_run_id: RunId(
                            uuid::Builder::from_random_bytes(self.rng.r#gen()).into_uuid(),
                        ),
                        input: Payload::json("{}"),
                    }),
                ),
            };
            events.push(e);
            self.close_model(status);
        } else {
            // The server confirms at once the cancel of an activity no worker holds, after
            // all of the task's command events.
            for id in cancelled {
                if self.model.acts.remove(&id).is_some() {
                    events.push(Event::ActivityCancelled(ActivityCancelled {
                        command_seq: id,
                    }));
                }
            }
        }
        let m = &self.model;
        let nothing_open = m.acts.is_empty() && m.timers.is_empty() && m.waits.is_empty();
        if !closes && nothing_open {
            // The code is blocked on something that is not the SDK's: the SDK fails the task.
            self.model = saved;
            self.cov.blocked_code += 1;
            self.fail_task("[STF-WT005] the workflow awaits a future that is not the SDK's".into());
            return;
        }
        self.append(events, "task completed");
    }

    fn task_failed(&mut self) {
        let msg = if self.rng.gen_bool(0.5) {
            "[STF-ND001] command 3: the history has ActivityScheduled, the code StartTimer"
        } else {
            "[STF-WT002] the server refused the completion: 1001 commands"
        };
        self.fail_task(msg.into());
    }

    /// WorkflowTaskFailed and the held task's next offer, as `FailWorkflowTask` appends them.
    fn fail_task(&mut self, message: String) {
        let started_seq = self.started_seq();
        let scheduled = self.state.last_seq + 2;
        let delay = self.rng.gen_range(1_000..60_000);
        self.append(
            vec![
                Event::WorkflowTaskFailed(WorkflowTaskFailed {
                    started_seq,
                    cause: WorkflowTaskFailCause::Nondeterminism,
                    message,
                    worker: "w1".into(),
                }),
                Event::WorkflowTaskScheduled(WorkflowTaskScheduled {
                    task_queue: "agents".into(),
                    attempt: 2,
                    not_before_ms: self.now + delay,
                }),
            ],
            "task failed",
        );
        self.model.held = true;
        self.model.task = Task::Scheduled { seq: scheduled };
    }

    fn task_timed_out(&mut self) {
        let started_seq = self.started_seq();
        self.model.task = Task::Idle;
        self.append(
            vec![Event::WorkflowTaskTimedOut(WorkflowTaskTimedOut {
                started_seq,
            })],
            "task timed out",
        );
    }

    /// One event about a random open activity, as a worker or the timer loop reports it.
    fn activity_event(&mut self) {
        let ids: Vec<CommandSeq> = self.model.acts.keys().copied().collect();
        let id = *ids.choose(&mut self.rng).expect("not empty");
        let a = self.model.acts[&id].clone();
        let retry_at = self.now + self.rng.gen_range(1..30_000);
        let retry = self.rng.gen_bool(0.6);
        let roll = self.rng.gen_range(0..6);
        let e = match (a.phase, roll) {
            // A lost `write` attempt; the operator's retry, or the outcome they found.
            (Phase::Started, 0) => {
                self.model.acts.get_mut(&id).expect("open").phase = Phase::Unknown;
                Event::ActivityOutcomeUnknown(ActivityOutcomeUnknown {
                    command_seq: id,
                    attempt: a.attempt,
                })
            }
            (Phase::Unknown, 0..=2) => {
                let act = self.model.acts.get_mut(&id).expect("open");
                act.attempt += 1;
                act.phase = Phase::Ready {
                    visible_ms: self.now,
                };
                Event::ActivityReconciled(ActivityReconciled {
                    command_seq: id,
                    decision: ReconcileDecision::Retry,
                    identity: "op".into(),
                })
            }
            (Phase::Ready { .. }, 0) if a.write => {
                self.model.acts.get_mut(&id).expect("open").phase = Phase::Started;
                Event::ActivityStarted(ActivityStarted {
                    command_seq: id,
                    attempt: a.attempt,
                    worker: "w2".into(),
                })
            }
            // The timer loop confirms the cancel of an attempt no worker holds.
            (Phase::Ready { .. }, 0) if a.cancel_requested => {
                self.model.acts.remove(&id);
                Event::ActivityCancelled(ActivityCancelled { command_seq: id })
            }
            (Phase::Unknown, 3 | 4) | (Phase::Ready { .. } | Phase::Started, 0 | 1) => {
                self.model.acts.remove(&id);
                Event::ActivityCompleted(ActivityCompleted {
                    command_seq: id,
                    attempt: a.attempt,
                    result: Payload::json("\"done\""),
                    duration_ms: 5,
                    usage: None,
                    reconciled: a.phase == Phase::Unknown,
                })
            }
            (Phase::Unknown, _) | (_, 2) => {
                // An operator's "fail" of a lost attempt never retries.
                let retry = retry && a.phase != Phase::Unknown;
                self.retry_or_close(id, a.attempt, retry, retry_at);
                Event::ActivityFailed(ActivityFailed {
                    command_seq: id,
                    attempt: a.attempt,
                    failure: failure(!retry),
                    retry_at_ms: retry.then_some(retry_at),
                    duration_ms: 5,
                })
            }
            (_, 3) => {
                self.retry_or_close(id, a.attempt, retry, retry_at);
                Event::ActivityTimedOut(ActivityTimedOut {
                    command_seq: id,
                    attempt: a.attempt,
                    timeout: TimeoutKind::StartToClose,
                    retry_at_ms: retry.then_some(retry_at),
                })
            }
            _ => Event::ActivityProgress(ActivityProgress {
                command_seq: id,
                attempt: a.attempt,
                details: Payload::json("{}"),
            }),
        };
        self.append(vec![e], "activity event");
    }

    fn retry_or_close(&mut self, id: CommandSeq, attempt: u32, retry: bool, at: TimeMs) {
        if retry {
            let act = self.model.acts.get_mut(&id).expect("open");
            act.attempt = attempt + 1;
            act.phase = Phase::Ready { visible_ms: at };
        } else {
            self.model.acts.remove(&id);
        }
    }

    fn timer_fires(&mut self) {
        let ids: Vec<CommandSeq> = self.model.timers.keys().copied().collect();
        let id = *ids.choose(&mut self.rng).expect("not empty");
        let at = self.model.timers.remove(&id).expect("open");
        self.now = self.now.max(at);
        self.append(
            vec![Event::TimerFired(TimerFired { command_seq: id })],
            "timer fired",
        );
    }

    fn signal(&mut self) {
        let name = SIGNALS.choose(&mut self.rng).expect("two").to_string();
        *self.model.received.entry(name.clone()).or_default() += 1;
        if let Some(i) = self.model.waits.iter().position(|(_, n)| *n == name) {
            self.model.waits.remove(i);
        }
        let seq = self.state.last_seq + 1;
        self.append(
            vec![Event::SignalReceived(SignalReceived {
                name,
                input: Payload::json("true"),
                identity: "human".into(),
                request_id: format!("req-{seq}"),
            })],
            "signal",
        );
    }

    /// One event the model knows is illegal now.
    fn illegal(&mut self) {
        let next = self.state.last_seq + 1;
        let cs = self.model.next_cmd;
        let task = self.model.task;
        let never = cs + 100;
        let pick = self.rng.gen_range(0..12);
        let (rec, expect, why) = match pick {
            0 => {
                let seq = if self.rng.gen_bool(0.5) {
                    next + 1
                } else {
                    next - 1
                };
                let e = Event::TimerFired(TimerFired { command_seq: 1 });
                (self.rec(seq, e), Refusal::Order, "wrong seq")
            }
            1 => {
                let (a, _) = run_started(&mut self.rng, None);
                (
                    self.rec(next, Event::RunStarted(a)),
                    Refusal::Order,
                    "second RunStarted",
                )
            }
            2 => {
                let e = Event::WorkflowTaskScheduled(WorkflowTaskScheduled {
                    task_queue: "agents".into(),
                    attempt: 1,
                    not_before_ms: 0,
                });
                if task == Task::Idle {
                    return;
                }
                (self.rec(next, e), Refusal::Illegal, "second pending task")
            }
            3 => {
                let scheduled_seq = match task {
                    Task::Scheduled { seq } => seq + 1,
                    _ => next - 1,
                };
                let e = Event::WorkflowTaskStarted(WorkflowTaskStarted {
                    scheduled_seq,
                    worker: "w1".into(),
                });
                (
                    self.rec(next, e),
                    Refusal::Illegal,
                    "start of no scheduled task",
                )
            }
            4 => {
                let started_seq = match task {
                    Task::Started { seq } => seq + 1,
                    _ => next - 1,
                };
                let e = match self.rng.gen_range(0..3) {
                    0 => Event::WorkflowTaskCompleted(WorkflowTaskCompleted {
                        started_seq,
                        worker: "w1".into(),
                    }),
                    1 => Event::WorkflowTaskFailed(WorkflowTaskFailed {
                        started_seq,
                        cause: WorkflowTaskFailCause::WorkflowPanic,
                        message: "x".into(),
                        worker: "w1".into(),
                    }),
                    _ => Event::WorkflowTaskTimedOut(WorkflowTaskTimedOut { started_seq }),
                };
                (
                    self.rec(next, e),
                    Refusal::Illegal,
                    "end of no started task",
                )
            }
            5 => {
                // A command outside a completion (a task is pending), or with the wrong seq.
                let (seq, why) = if task != Task::Idle && self.rng.gen_bool(0.5) {
                    (cs, "command while a task is open")
                } else {
                    (
                        cs + 1 + self.rng.gen_range(0..3),
                        "command with a wrong seq",
                    )
                };
                let e = Event::TimerStarted(TimerStarted {
                    command_seq: seq,
                    fire_at_ms: self.now + 1,
                });
                (self.rec(next, e), Refusal::Illegal, why)
            }
            6 => {
                // A report about an activity that is not open: closed, or never scheduled.
                let id = (1..cs)
                    .filter(|i| !self.model.acts.contains_key(i))
                    .collect::<Vec<_>>()
                    .choose(&mut self.rng)
                    .copied()
                    .unwrap_or(never);
                let e = match self.rng.gen_range(0..5) {
                    0 => Event::ActivityCompleted(ActivityCompleted {
                        command_seq: id,
                        attempt: 1,
                        result: Payload::json("1"),
                        duration_ms: 1,
                        usage: None,
                        reconciled: false,
                    }),
                    1 => Event::ActivityFailed(ActivityFailed {
                        command_seq: id,
                        attempt: 1,
                        failure: failure(false),
                        retry_at_ms: Some(self.now),
                        duration_ms: 1,
                    }),
                    2 => Event::ActivityTimedOut(ActivityTimedOut {
                        command_seq: id,
                        attempt: 1,
                        timeout: TimeoutKind::Heartbeat,
                        retry_at_ms: None,
                    }),
                    3 => Event::ActivityCancelled(ActivityCancelled { command_seq: id }),
                    _ => Event::ActivityProgress(ActivityProgress {
                        command_seq: id,
                        attempt: 1,
                        details: Payload::json("{}"),
                    }),
                };
                (
                    self.rec(next, e),
                    Refusal::Illegal,
                    "report of a closed activity",
                )
            }
            7 => {
                // A phase change the activity's phase does not allow.
                let Some((&id, a)) = self.model.acts.iter().next() else {
                    return;
                };
                let e = match a.phase {
                    Phase::Ready { .. } => Event::ActivityOutcomeUnknown(ActivityOutcomeUnknown {
                        command_seq: id,
                        attempt: a.attempt,
                    }),
                    Phase::Started | Phase::Unknown => {
                        if self.rng.gen_bool(0.5) && a.phase == Phase::Started {
                            Event::ActivityReconciled(ActivityReconciled {
                                command_seq: id,
                                decision: ReconcileDecision::Retry,
                                identity: "op".into(),
                            })
                        } else {
                            Event::ActivityStarted(ActivityStarted {
                                command_seq: id,
                                attempt: a.attempt,
                                worker: "w3".into(),
                            })
                        }
                    }
                };
                (
                    self.rec(next, e),
                    Refusal::Illegal,
                    "activity phase skipped",
                )
            }
            8 => {
                let id = (1..cs)
                    .filter(|i| !self.model.timers.contains_key(i))
                    .collect::<Vec<_>>()
                    .choose(&mut self.rng)
                    .copied()
                    .unwrap_or(never);
                let e = Event::TimerFired(TimerFired { command_seq: id });
                (
                    self.rec(next, e),
                    Refusal::Illegal,
                    "fire of a closed timer",
                )
            }
            9 => {
                // Cancels must name an earlier command (only legal right after a completion,
                // so try them where a task is not open, or they fail for that reason too).
                let e = if self.rng.gen_bool(0.5) {
                    Event::TimerCancelled(TimerCancelled {
                        command_seq: cs,
                        timer_id: cs + self.rng.gen_range(0..3),
                    })
                } else {
                    Event::ActivityCancelRequested(ActivityCancelRequested {
                        command_seq: cs,
                        activity_id: cs + self.rng.gen_range(0..3),
                    })
                };
                (
                    self.rec(next, e),
                    Refusal::Illegal,
                    "cancel of a later command",
                )
            }
            10 => {
                if !self.model.cancel_requested {
                    return;
                }
                let e = Event::CancelRequested(CancelRequested {
                    reason: "again".into(),
                    identity: "cli".into(),
                });
                (self.rec(next, e), Refusal::Illegal, "second cancel request")
            }
            _ => {
                // A bad chain link is the store's to catch, not `apply`'s: a record with the
                // right seq but another hash is accepted by the state machine. Instead: a
                // closing command carrying the wrong command seq.
                let e = Event::RunCompleted(RunCompleted {
                    command_seq: cs + 1,
                    result: Payload::json("1"),
                });
                (
                    self.rec(next, e),
                    Refusal::Illegal,
                    "close with a wrong command seq",
                )
            }
        };
        self.refuse(rec, expect, why);
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
        for w in &waiting {
            *self.cov.waiting.entry(w.category()).or_default() += 1;
        }
    }
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
    let c = &sim.cov;
    println!("{c:#?}");
    // A model that never reached these did not test what it claims to.
    if steps >= STEPS_DEFAULT {
        for cat in [
            "activity",
            "timer",
            "signal",
            "budget",
            "reconciliation",
            "workflow_task",
        ] {
            assert!(
                c.waiting.contains_key(cat),
                "seed {seed}: never waited on {cat}"
            );
        }
        for st in ["completed", "failed", "continued_as_new", "terminated"] {
            assert!(c.closed.contains_key(st), "seed {seed}: no run ended {st}");
        }
        assert!(
            c.refused.len() >= 10,
            "seed {seed}: few kinds refused: {:?}",
            c.refused
        );
        assert!(
            c.blocked_code > 0 && c.noop_cancels > 0,
            "seed {seed}: {c:?}"
        );
    }
}
