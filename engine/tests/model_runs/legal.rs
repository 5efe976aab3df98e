//! The events the server, its workers, its timer loop and its operators append, each
//! applied to the model first so that the state can be compared with it.

use super::*;

impl Sim {
    pub(super) fn legal(&mut self) {
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
                timeout_ms: 0,
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
                        keep_build: false,
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
        if !closes && nothing_open && self.rng.gen_bool(0.5) {
            // The code awaits only what the server does not track (a cancel, or a signal it
            // issued no wait for; or a raw-protocol worker): the task completes and the run
            // is idle until a signal or a cancel request wakes it, or it is terminated.
            self.append(events, "task completed, code idle");
            return;
        }
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
                    effect: Effect::Write,
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
                    usage: None,
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
}
