//! The transitions. One arm per event kind; each checks legality before changing anything.

use std::collections::{BTreeMap, BTreeSet};

use super::*;
use crate::event::{Event, EventRecord, ReconcileDecision};

type R = Result<(), ApplyError>;

fn illegal(rec: &EventRecord, detail: impl Into<String>) -> ApplyError {
    ApplyError::Illegal {
        seq: rec.seq,
        kind: rec.event.kind().name(),
        detail: detail.into(),
    }
}

impl RunState {
    /// Builds the state from the first record of a history (must be RunStarted, seq 1).
    pub fn start(key: RunKey, rec: &EventRecord) -> Result<RunState, ApplyError> {
        let Event::RunStarted(a) = &rec.event else {
            return Err(ApplyError::Order {
                seq: rec.seq,
                kind: rec.event.kind().name(),
                detail: "cannot begin a history: the first event must be RunStarted".into(),
            });
        };
        if rec.seq != 1 {
            return Err(ApplyError::Order {
                seq: rec.seq,
                kind: "RunStarted",
                detail: "must be seq 1".into(),
            });
        }
        Ok(RunState {
            key,
            workflow_type: a.workflow_type.clone(),
            workflow_id: a.workflow_id.clone(),
            task_queue: a.task_queue.clone(),
            status: RunStatus::Running,
            started_ms: rec.time_ms,
            closed_ms: None,
            last_seq: 1,
            last_hash: rec.hash,
            run_timeout_ms: a.run_timeout_ms,
            budget: a.budget,
            usage: UsageTotals::default(),
            next_command_seq: 1,
            workflow_task: WorkflowTask::Idle,
            unseen_events: true,
            held: None,
            activities: BTreeMap::new(),
            timers: BTreeMap::new(),
            signal_waits: Vec::new(),
            signals_received: BTreeMap::new(),
            signal_waits_issued: BTreeMap::new(),
            cancel_requested: false,
            budget_exceeded: None,
            progress: None,
            partial_result: None,
            result: None,
            failure: None,
            continued_from: a.continued_from,
            continued_to: None,
            timed_out_attempts: BTreeSet::new(),
            parent: a.parent,
            forked_from: a.forked_from,
            schedule: a.schedule.clone(),
            children: BTreeMap::new(),
            signals_out: BTreeMap::new(),
            history_bytes: 0,
            updates: BTreeMap::new(),
            pinned_build: None,
            auto_upgrade: false,
            successor_keeps_build: false,
            search_attributes: BTreeMap::new(),
            memo: None,
            failed_activity_types: BTreeSet::new(),
        })
    }

    /// Folds a whole history (seq 1..n) into a state.
    pub fn from_history(key: RunKey, records: &[EventRecord]) -> Result<RunState, ApplyError> {
        let (first, rest) = records.split_first().ok_or_else(|| ApplyError::Order {
            seq: 0,
            kind: "none",
            detail: "an empty history has no state".into(),
        })?;
        let mut s = RunState::start(key, first)?;
        for r in rest {
            s.apply(r)?;
        }
        Ok(s)
    }

    /// Applies the next record. On error the state is unchanged.
    pub fn apply(&mut self, rec: &EventRecord) -> R {
        let kind = rec.event.kind().name();
        if rec.seq != self.last_seq + 1 {
            return Err(ApplyError::Order {
                seq: rec.seq,
                kind,
                detail: format!("expected seq {}", self.last_seq + 1),
            });
        }
        if self.status.is_closed() {
            return Err(ApplyError::Closed {
                seq: rec.seq,
                kind,
                status: self.status.as_str(),
            });
        }
        self.check_command_seq(rec)?;
        self.transition(rec)?;
        if let Some(cs) = rec.event.command_seq() {
            self.next_command_seq = cs + 1;
        }
        self.last_seq = rec.seq;
        self.last_hash = rec.hash;
        Ok(())
    }

    fn check_command_seq(&self, rec: &EventRecord) -> R {
        if let Some(cs) = rec.event.command_seq() {
            if cs != self.next_command_seq {
                return Err(illegal(
                    rec,
                    format!("command seq {cs}, expected {}", self.next_command_seq),
                ));
            }
            if !matches!(self.workflow_task, WorkflowTask::Idle) {
                return Err(illegal(
                    rec,
                    "command events follow WorkflowTaskCompleted, not an open task",
                ));
            }
        }
        Ok(())
    }

    fn activity_mut(
        &mut self,
        rec: &EventRecord,
        id: CommandSeq,
    ) -> Result<&mut ActivityState, ApplyError> {
        // Checked before borrowing mutably so the error can name the record.
        if !self.activities.contains_key(&id) {
            return Err(illegal(rec, format!("activity {id} is not open")));
        }
        Ok(self.activities.get_mut(&id).expect("checked above"))
    }

    fn child_mut(
        &mut self,
        rec: &EventRecord,
        id: CommandSeq,
        expected: ChildPhase,
    ) -> Result<&mut ChildState, ApplyError> {
        match self.children.get(&id) {
            Some(c) if c.phase == expected => {}
            Some(c) => {
                return Err(illegal(
                    rec,
                    format!("child {id} is {:?}, not {expected:?}", c.phase),
                ));
            }
            None => {
                return Err(illegal(
                    rec,
                    format!("no child was requested by command {id}"),
                ));
            }
        }
        Ok(self.children.get_mut(&id).expect("checked above"))
    }

    fn close(&mut self, rec: &EventRecord, status: RunStatus) {
        self.status = status;
        self.closed_ms = Some(rec.time_ms);
        self.workflow_task = WorkflowTask::Idle;
        self.unseen_events = false;
    }

    fn transition(&mut self, rec: &EventRecord) -> R {
        let now = rec.time_ms;
        match &rec.event {
            Event::RunStarted(_) => {
                return Err(ApplyError::Order {
                    seq: rec.seq,
                    kind: "RunStarted",
                    detail: "only seq 1 may be RunStarted".into(),
                });
            }
            Event::WorkflowTaskScheduled(a) => {
                if self.workflow_task != WorkflowTask::Idle {
                    return Err(illegal(rec, "a workflow task is already pending"));
                }
                self.workflow_task = WorkflowTask::Scheduled {
                    scheduled_seq: rec.seq,
                    attempt: a.attempt.max(1),
                    not_before_ms: a.not_before_ms,
                    since_ms: now,
                };
            }
            Event::WorkflowTaskStarted(a) => match &self.workflow_task {
                WorkflowTask::Scheduled {
                    scheduled_seq,
                    attempt,
                    ..
                } if *scheduled_seq == a.scheduled_seq => {
                    self.workflow_task = WorkflowTask::Started {
                        scheduled_seq: *scheduled_seq,
                        started_seq: rec.seq,
                        attempt: *attempt,
                        worker: a.worker.clone(),
                        since_ms: now,
                        timeout_ms: a.timeout_ms,
                    };
                    self.unseen_events = false;
                }
                _ => {
                    return Err(illegal(
                        rec,
                        format!("no scheduled workflow task at seq {}", a.scheduled_seq),
                    ));
                }
            },
            Event::WorkflowTaskCompleted(a) => {
                self.expect_started(rec, a.started_seq)?;
                self.workflow_task = WorkflowTask::Idle;
                self.held = None;
            }
            Event::WorkflowTaskFailed(a) => {
                self.expect_started(rec, a.started_seq)?;
                self.workflow_task = WorkflowTask::Idle;
                let recorded = self.held.as_ref().map_or(0, |h| h.recorded);
                self.held = Some(Held {
                    cause: format!("{:?}", a.cause),
                    message: a.message.clone(),
                    recorded: recorded.saturating_add(1),
                });
                self.unseen_events = true;
            }
            Event::WorkflowTaskTimedOut(a) => {
                self.expect_started(rec, a.started_seq)?;
                self.workflow_task = WorkflowTask::Idle;
                self.unseen_events = true;
            }
            Event::ActivityScheduled(a) => {
                self.usage.activities += 1;
                self.activities.insert(
                    a.command_seq,
                    ActivityState {
                        activity_type: a.activity_type.clone(),
                        options: a.options.clone(),
                        scheduled_ms: now,
                        scheduled_seq: rec.seq,
                        attempt: 1,
                        phase: ActivityPhase::Ready { visible_ms: now },
                        last_failure: None,
                        ordinal: self.usage.activities,
                        cancel_requested: false,
                        approved: false,
                        approved_input_seq: None,
                    },
                );
            }
            Event::ActivityStarted(a) => {
                let act = self.activity_mut(rec, a.command_seq)?;
                if !matches!(act.phase, ActivityPhase::Ready { .. }) {
                    return Err(illegal(
                        rec,
                        format!("activity {} is not ready to start", a.command_seq),
                    ));
                }
                act.attempt = a.attempt;
                act.phase = ActivityPhase::Started {
                    since_ms: now,
                    worker: a.worker.clone(),
                    effect: a.effect,
                };
            }
            Event::ActivityCompleted(a) => {
                self.activity_mut(rec, a.command_seq)?;
                self.activities.remove(&a.command_seq);
                if let Some(u) = &a.usage {
                    self.usage.add(u);
                    self.usage.llm_calls += 1;
                }
                self.unseen_events = true;
            }
            Event::ActivityFailed(a) => {
                let act = self.activity_mut(rec, a.command_seq)?;
                act.last_failure = Some(a.failure.clone());
                if a.retry_at_ms.is_none() {
                    let t = act.activity_type.clone();
                    self.note_failed_activity(t);
                }
                // A failed LLM call may have generated (and been billed for) tokens.
                if let Some(u) = &a.usage {
                    self.usage.add(u);
                }
                self.retry_or_close(a.command_seq, a.attempt, a.retry_at_ms);
            }
            Event::ActivityTimedOut(a) => {
                let act = self.activity_mut(rec, a.command_seq)?;
                // A worker may still be running it and report, late, what it used.
                let was_running =
                    act.attempt == a.attempt && matches!(act.phase, ActivityPhase::Started { .. });
                act.last_failure = Some(Failure {
                    message: format!("{:?} timeout", a.timeout),
                    error_type: "Timeout".into(),
                    ..Default::default()
                });
                if a.retry_at_ms.is_none() {
                    let t = act.activity_type.clone();
                    self.note_failed_activity(t);
                }
                self.retry_or_close(a.command_seq, a.attempt, a.retry_at_ms);
                if was_running {
                    self.timed_out_attempts.insert((a.command_seq, a.attempt));
                    if self.timed_out_attempts.len() > TIMED_OUT_ATTEMPTS_KEPT_MAX {
                        self.timed_out_attempts.pop_first();
                    }
                }
            }
            Event::ActivityUsageReported(a) => {
                // Only an attempt that timed out while it ran, once: the outcome of the
                // activity is not touched, only the run's usage (and so its budget).
                if !self.timed_out_attempts.remove(&(a.command_seq, a.attempt)) {
                    return Err(illegal(
                        rec,
                        format!(
                            "attempt {} of activity {} did not time out while running, or its usage was already reported",
                            a.attempt, a.command_seq
                        ),
                    ));
                }
                self.usage.add(&a.usage);
            }
            Event::ActivityCancelRequested(a) => {
                // Cancelling an activity that already closed (its result raced the cancel) is
                // a no-op: the workflow gets the result it already has in the history. It
                // must still name an earlier command, or it is not a cancel of anything.
                if self.activities.contains_key(&a.activity_id) {
                    self.activity_mut(rec, a.activity_id)?.cancel_requested = true;
                } else if a.activity_id >= a.command_seq {
                    return Err(illegal(
                        rec,
                        format!("activity {} is not open", a.activity_id),
                    ));
                }
            }
            Event::ActivityCancelled(a) => {
                self.activity_mut(rec, a.command_seq)?;
                self.activities.remove(&a.command_seq);
                self.unseen_events = true;
            }
            Event::ActivityOutcomeUnknown(a) => {
                let act = self.activity_mut(rec, a.command_seq)?;
                // Only a lost `write` waits for reconciliation; a lost read or idempotent
                // attempt times out and is retried with the same idempotency key.
                if !matches!(
                    act.phase,
                    ActivityPhase::Started {
                        effect: Effect::Write,
                        ..
                    }
                ) {
                    return Err(illegal(
                        rec,
                        format!("activity {} has no started write attempt", a.command_seq),
                    ));
                }
                act.phase = ActivityPhase::OutcomeUnknown { since_ms: now };
            }
            Event::ActivityReconciled(a) => {
                let act = self.activity_mut(rec, a.command_seq)?;
                if !matches!(act.phase, ActivityPhase::OutcomeUnknown { .. }) {
                    return Err(illegal(
                        rec,
                        format!(
                            "activity {} is not waiting for reconciliation",
                            a.command_seq
                        ),
                    ));
                }
                match a.decision {
                    ReconcileDecision::Retry => {
                        act.attempt += 1;
                        act.phase = ActivityPhase::Ready { visible_ms: now };
                    }
                }
            }
            Event::ApprovalRequested(a) => {
                let act = self.activity_mut(rec, a.command_seq)?;
                if act.approved
                    || act.attempt != a.attempt
                    || !matches!(act.phase, ActivityPhase::Ready { .. })
                {
                    return Err(illegal(
                        rec,
                        format!(
                            "attempt {} of activity {} is not ready, or was approved already",
                            a.attempt, a.command_seq
                        ),
                    ));
                }
                act.phase = ActivityPhase::AwaitingApproval {
                    since_ms: now,
                    reason: a.reason.clone(),
                    declared_by: a.declared_by.clone(),
                    arguments: a.arguments,
                };
            }
            Event::ActivityApproved(a) => {
                let act = self.awaiting_approval(rec, a.command_seq)?;
                act.approved = true;
                if a.input.is_some() {
                    act.approved_input_seq = Some(rec.seq);
                }
                act.phase = ActivityPhase::Ready { visible_ms: now };
            }
            Event::ActivityDenied(a) => {
                // Only a record: the ActivityFailed appended with it closes the activity.
                self.awaiting_approval(rec, a.command_seq)?;
            }
            Event::ActivityProgress(a) => {
                self.activity_mut(rec, a.command_seq)?;
            }
            Event::TimerStarted(a) => {
                self.timers.insert(a.command_seq, a.fire_at_ms);
            }
            Event::TimerFired(a) => {
                if self.timers.remove(&a.command_seq).is_none() {
                    return Err(illegal(rec, format!("timer {} is not open", a.command_seq)));
                }
                self.unseen_events = true;
            }
            Event::TimerCancelled(a) => {
                // Cancelling a timer that already fired (or was cancelled) is a no-op: the
                // workflow sees the TimerFired it raced with. It must name an earlier command.
                if self.timers.remove(&a.timer_id).is_none() && a.timer_id >= a.command_seq {
                    return Err(illegal(rec, format!("timer {} is not open", a.timer_id)));
                }
            }
            Event::SignalWaitStarted(a) => {
                let issued = self.signal_waits_issued.entry(a.name.clone()).or_default();
                *issued += 1;
                // A signal that arrived before the wait satisfies it at once.
                if self.signals_received.get(&a.name).copied().unwrap_or(0) < *issued {
                    self.signal_waits.push(SignalWait {
                        command_seq: a.command_seq,
                        name: a.name.clone(),
                        question: a.question.clone(),
                        choices: a.choices.clone(),
                        since_ms: now,
                    });
                }
            }
            Event::SignalReceived(a) => {
                *self.signals_received.entry(a.name.clone()).or_default() += 1;
                if let Some(i) = self.signal_waits.iter().position(|w| w.name == a.name) {
                    self.signal_waits.remove(i);
                }
                self.unseen_events = true;
            }
            Event::ProgressReported(a) => {
                self.progress = Some(ProgressState {
                    done: a.done,
                    total: a.total,
                    message: a.message.clone(),
                    time_ms: now,
                });
            }
            Event::PartialResultRecorded(a) => {
                self.partial_result = Some(a.result.clone());
            }
            Event::CancelRequested(_) => {
                if self.cancel_requested {
                    return Err(illegal(rec, "cancel was already requested"));
                }
                self.cancel_requested = true;
                // The request reaches the activities open now; cleanup activities the
                // workflow schedules after it are not cancelled by it.
                for act in self.activities.values_mut() {
                    act.cancel_requested = true;
                }
                self.unseen_events = true;
            }
            Event::BudgetUpdated(a) => {
                self.budget = a.budget;
                self.budget_exceeded = None;
            }
            Event::BudgetExceeded(a) => {
                self.budget_exceeded = Some(BudgetHit {
                    dimension: a.dimension,
                    limit: a.limit,
                    used: a.used,
                });
            }
            Event::RunCompleted(a) => {
                self.result = Some(a.result.clone());
                self.close(rec, RunStatus::Completed);
            }
            Event::RunFailed(a) => {
                self.failure = Some(a.failure.clone());
                self.result = self.partial_result.clone();
                self.close(rec, RunStatus::Failed);
            }
            Event::RunCancelled(a) => {
                self.result = a
                    .partial_result
                    .clone()
                    .or_else(|| self.partial_result.clone());
                self.close(rec, RunStatus::Cancelled);
            }
            Event::RunTerminated(_) => {
                self.result = self.partial_result.clone();
                self.close(rec, RunStatus::Terminated);
            }
            Event::RunTimedOut(_) => {
                self.result = self.partial_result.clone();
                self.close(rec, RunStatus::TimedOut);
            }
            Event::RunContinuedAsNew(a) => {
                self.continued_to = Some(a.new_run_id);
                self.successor_keeps_build = a.keep_build;
                self.close(rec, RunStatus::ContinuedAsNew);
            }
            Event::ChildRunRequested(a) => {
                self.children.insert(
                    a.command_seq,
                    ChildState {
                        run_id: a.child_run_id,
                        workflow_type: a.workflow_type.clone(),
                        workflow_id: a.workflow_id.clone(),
                        requested_seq: rec.seq,
                        policy: a.parent_close_policy,
                        phase: ChildPhase::Requested,
                    },
                );
            }
            Event::ChildRunStarted(a) => {
                let child = self.child_mut(rec, a.command_seq, ChildPhase::Requested)?;
                if child.run_id != a.run_id {
                    return Err(illegal(
                        rec,
                        format!(
                            "child {} was requested as run {}, not {}",
                            a.command_seq, child.run_id, a.run_id
                        ),
                    ));
                }
                child.phase = ChildPhase::Started;
                self.unseen_events = true;
            }
            Event::ChildRunStartFailed(a) => {
                self.child_mut(rec, a.command_seq, ChildPhase::Requested)?
                    .phase = ChildPhase::StartFailed;
                self.unseen_events = true;
            }
            Event::ChildRunClosed(a) => {
                self.child_mut(rec, a.command_seq, ChildPhase::Started)?
                    .phase = ChildPhase::Closed(a.outcome);
                // The child's usage counts against this run's budget from here on.
                self.usage.add(&a.usage);
                self.usage.activities = self.usage.activities.saturating_add(a.activities);
                self.usage.llm_calls = self.usage.llm_calls.saturating_add(a.llm_calls);
                self.unseen_events = true;
            }
            Event::RunSignalRequested(a) => {
                self.signals_out.insert(
                    a.command_seq,
                    OutgoingSignal {
                        run_id: a.run_id,
                        name: a.name.clone(),
                        requested_seq: rec.seq,
                    },
                );
            }
            Event::RunSignalResolved(a) => {
                if self.signals_out.remove(&a.command_seq).is_none() {
                    return Err(illegal(
                        rec,
                        format!(
                            "no signal to another run is pending at command {}",
                            a.command_seq
                        ),
                    ));
                }
                self.unseen_events = true;
            }
            Event::PatchMarker(_) => {}
            Event::VersioningSet(a) => {
                if rec.seq != 2 {
                    return Err(illegal(rec, "VersioningSet only follows RunStarted"));
                }
                if a.auto_upgrade && !a.pinned_build.is_empty() {
                    return Err(illegal(
                        rec,
                        "a run cannot be both pinned and auto-upgrading",
                    ));
                }
                self.auto_upgrade = a.auto_upgrade;
                self.pinned_build = Some(a.pinned_build.clone()).filter(|b| !b.is_empty());
            }
            Event::BuildPinned(a) => {
                if self.auto_upgrade || self.pinned_build.is_some() {
                    return Err(illegal(rec, "the run is already pinned or auto-upgrading"));
                }
                if !matches!(self.workflow_task, WorkflowTask::Started { .. }) {
                    return Err(illegal(
                        rec,
                        "a build is pinned only by a started workflow task",
                    ));
                }
                self.pinned_build = Some(a.build_id.clone());
            }
            Event::SearchAttributesUpserted(a) => {
                crate::search::validate_upsert(&self.search_attributes, &a.attributes)
                    .map_err(|e| illegal(rec, e.to_string()))?;
                self.search_attributes
                    .extend(a.attributes.iter().map(|(k, v)| (k.clone(), v.clone())));
            }
            Event::MemoRecorded(a) => {
                if a.memo.blob.is_some() || a.memo.data.len() > crate::search::MEMO_BYTES_MAX {
                    return Err(illegal(
                        rec,
                        format!(
                            "a memo is inline and at most {} bytes",
                            crate::search::MEMO_BYTES_MAX
                        ),
                    ));
                }
                self.memo = Some(a.memo.clone());
            }
            Event::UpdateRequested(a) => {
                if self.updates.contains_key(&a.update_id) {
                    return Err(illegal(
                        rec,
                        format!("update {:?} was already requested", a.update_id),
                    ));
                }
                self.updates
                    .insert(a.update_id.clone(), UpdatePhase::Requested);
                self.unseen_events = true;
            }
            Event::UpdateCompleted(a) => {
                self.answer_update(rec, &a.update_id, UpdatePhase::Completed)?
            }
            Event::UpdateRejected(a) => {
                self.answer_update(rec, &a.update_id, UpdatePhase::Rejected)?
            }
        }
        Ok(())
    }

    fn awaiting_approval(
        &mut self,
        rec: &EventRecord,
        id: CommandSeq,
    ) -> Result<&mut ActivityState, ApplyError> {
        let act = self.activity_mut(rec, id)?;
        if !matches!(act.phase, ActivityPhase::AwaitingApproval { .. }) {
            return Err(illegal(
                rec,
                format!("activity {id} is not waiting for approval"),
            ));
        }
        Ok(act)
    }

    fn answer_update(&mut self, rec: &EventRecord, id: &str, phase: UpdatePhase) -> R {
        match self.updates.get_mut(id) {
            Some(p @ UpdatePhase::Requested) => {
                *p = phase;
                Ok(())
            }
            Some(p) => Err(illegal(rec, format!("update {id:?} is already {p:?}"))),
            None => Err(illegal(rec, format!("update {id:?} was never requested"))),
        }
    }

    fn expect_started(&self, rec: &EventRecord, started_seq: u64) -> R {
        match &self.workflow_task {
            WorkflowTask::Started { started_seq: s, .. } if *s == started_seq => Ok(()),
            _ => Err(illegal(
                rec,
                format!("no started workflow task at seq {started_seq}"),
            )),
        }
    }

    /// Remembers that an activity of this type failed for good (bounded: the first types
    /// are kept, so a run's state does not grow with the types it tries).
    fn note_failed_activity(&mut self, activity_type: String) {
        if self.failed_activity_types.len() < crate::search::FAILED_ACTIVITY_TYPES_KEPT_MAX {
            self.failed_activity_types.insert(activity_type);
        }
    }

    fn retry_or_close(&mut self, id: CommandSeq, attempt: u32, retry_at: Option<TimeMs>) {
        match retry_at {
            Some(t) => {
                let act = self
                    .activities
                    .get_mut(&id)
                    .expect("caller checked the activity is open");
                act.attempt = attempt + 1;
                act.phase = ActivityPhase::Ready { visible_ms: t };
            }
            None => {
                self.activities.remove(&id);
                self.unseen_events = true;
            }
        }
    }
}
