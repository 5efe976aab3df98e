//! Events the model knows to be illegal now, with the kind of refusal it predicts.

use super::*;

impl Sim {
    /// One event the model knows is illegal now.
    pub(super) fn illegal(&mut self) {
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
                    timeout_ms: 0,
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
                        usage: None,
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
                                effect: Effect::Write,
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
}
