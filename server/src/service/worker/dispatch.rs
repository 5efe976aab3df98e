//! Handing out activity attempts. Every attempt's start is recorded (ActivityStarted, with the
//! worker and the effect it declared) in the same durable append that reserves it against the
//! run's budget, before the attempt leaves the server. So "a worker runs this attempt", its
//! deadlines and its budget reservation are facts of the history: the same on every node,
//! after any restart, and decided at the expected seq, so concurrent dispatches of one run
//! are serialised by the append and can never cross a ceiling together.

use steadfast_engine::EventRecord;
use steadfast_engine::event::{self as ev, ArgumentsDigest, Effect, Event};
use steadfast_engine::ids::RunKey;
use steadfast_engine::state::{ActivityPhase, ActivityState, RunState};
use steadfast_engine::store::Task;
use steadfast_proto::v1 as pb;
use tonic::Status;

use super::WorkerApi;
use crate::convert;
use crate::core::{simulate, status};
use crate::retry;
use crate::service::poll_filter::WorkerRuns;
use crate::token::{RecordRef, TaskToken};

/// How far back (in records) from a retry's start the server looks for the last heartbeat
/// details of the activity's earlier attempts: bounds the read a retry costs on a busy run.
pub const LAST_DETAILS_SCAN_MAX: u64 = 10_000;

/// What dispatching one attempt decides, from the run's state alone.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum Start {
    /// Record this ActivityStarted and hand the attempt out.
    Started(Event),
    /// The attempt would cross a ceiling: record this BudgetExceeded (the run parks).
    Park(Event),
    /// Attempts in flight reserved the room left under a token or cost ceiling: the attempt
    /// waits (it is not offered again until one of them ends; the run is not parked).
    Reserved,
    /// The activity needs a human's decision first (asked by the call, or declared by this
    /// worker for its type): record this ApprovalRequested; the run waits on `approval`.
    AskApproval(Event),
    /// It needs an approval, and the caller has not read the arguments' digest yet (read
    /// only then, so that the common dispatch costs no extra read): read it and decide again.
    NeedArguments,
    /// Not startable any more (started elsewhere, closed, cancelled, parked already).
    Gone,
}

/// What the worker that would take an attempt declared for its type.
#[derive(Debug, Clone, Copy)]
pub(super) struct Claim<'a> {
    /// Worker id.
    pub worker: &'a str,
    /// The effect it declared.
    pub effect: Effect,
    /// Whether it declared that calls of the type need a human's approval.
    pub requires_approval: bool,
    /// The digest of the arguments, when the caller read it (needed only to ask).
    pub arguments: Option<ArgumentsDigest>,
}

/// Decides whether attempt `attempt` of activity `id` may be handed to the worker of
/// `claim`.
pub(super) fn start_attempt(s: &RunState, id: u32, attempt: u32, claim: Claim, now: i64) -> Start {
    let Some(act) = s.activities.get(&id).filter(|a| {
        a.attempt == attempt
            && matches!(a.phase, ActivityPhase::Ready { .. })
            && !a.cancel_requested
    }) else {
        return Start::Gone;
    };
    if !s.is_open() {
        return Start::Gone;
    }
    if let Some(hit) = s.budget_block(id, now) {
        // Parked once is enough; an activity within the budget still starts even when a
        // later one parked the run first (concurrent polls may decide in either order).
        if s.budget_exceeded.is_some() {
            return Start::Gone;
        }
        return Start::Park(Event::BudgetExceeded(ev::BudgetExceeded {
            dimension: hit.dimension,
            limit: hit.limit,
            used: hit.used,
        }));
    }
    // Asked before the attempt runs, once per activity (an approved activity's retries and
    // every replay go straight on).
    if act.needs_approval(claim.requires_approval) {
        let Some(arguments) = claim.arguments else {
            return Start::NeedArguments;
        };
        let (reason, declared_by) = match &act.options.approval {
            Some(reason) => (reason.clone(), String::new()),
            None => (
                format!(
                    "worker {} declared that every call of {} needs approval",
                    claim.worker, act.activity_type
                ),
                claim.worker.to_string(),
            ),
        };
        return Start::AskApproval(Event::ApprovalRequested(ev::ApprovalRequested {
            command_seq: id,
            attempt,
            reason,
            declared_by,
            arguments,
        }));
    }
    if s.reservation_block(id).is_some() {
        return Start::Reserved;
    }
    Start::Started(Event::ActivityStarted(ev::ActivityStarted {
        command_seq: id,
        attempt,
        worker: claim.worker.to_string(),
        effect: claim.effect,
    }))
}

/// The ActivityStarted events to append with a workflow task's completion for the activities
/// it schedules that the completing worker takes at once (eager dispatch): at most `slots`, of
/// the types `runs` takes, on the run's own queue, and only those that start without parking
/// or waiting (the others are left to pollers). An activity that needs approval gets its
/// ApprovalRequested here instead (it could not start anyway). `after` is the state after
/// `events`.
pub(super) fn eager_starts(
    after: &RunState,
    events: &[Event],
    slots: usize,
    worker: &str,
    runs: &WorkerRuns,
    now: i64,
) -> Vec<Event> {
    let mut out = Vec::new();
    if slots == 0 || runs.takes_any() {
        return out;
    }
    let mut s = after.clone();
    let mut started_n = 0;
    for e in events {
        if started_n >= slots {
            break;
        }
        let Event::ActivityScheduled(a) = e else {
            continue;
        };
        if a.options.task_queue != s.task_queue || !runs.takes(&a.activity_type) {
            continue;
        }
        let claim = Claim {
            worker,
            effect: runs.effect(&a.activity_type),
            requires_approval: runs.requires_approval(&a.activity_type),
            arguments: Some(ArgumentsDigest::of(&a.input)),
        };
        let decided = start_attempt(&s, a.command_seq, 1, claim, now);
        let (Start::Started(next) | Start::AskApproval(next)) = decided else {
            continue;
        };
        // The next one is decided with this one in flight (its budget reservation).
        match simulate(&s, std::slice::from_ref(&next), now) {
            Ok(after_this) => s = after_this,
            Err(_) => continue,
        }
        if matches!(next, Event::ActivityStarted(_)) {
            started_n += 1;
        }
        out.push(next);
    }
    out
}

impl WorkerApi {
    /// Hands out a polled activity attempt: records its start durably (reserving against the
    /// budget), or parks the run on its budget, or gives the task back.
    pub(super) async fn start_activity_task(
        &self,
        task: &Task,
        worker: &str,
        runs: &WorkerRuns,
    ) -> Result<Option<pb::PollActivityTaskResponse>, Status> {
        let Task::Activity { key, id, .. } = task else {
            return Ok(None);
        };
        let mut arguments = None;
        let mut decided = Start::Gone;
        for _ in 0..2 {
            let appended = self
                .decide_start(task, worker, runs, arguments, &mut decided)
                .await?;
            if decided != Start::NeedArguments {
                return self.started_task(task, &decided, appended).await;
            }
            arguments = self.arguments_of(key, *id).await?;
        }
        // The arguments were read and the state still asks for them: only a run changing
        // under us does that; the task is offered again.
        self.started_task(task, &Start::Gone, None).await
    }

    /// One decision about a polled attempt, appended when it records something.
    async fn decide_start(
        &self,
        task: &Task,
        worker: &str,
        runs: &WorkerRuns,
        arguments: Option<ArgumentsDigest>,
        decided: &mut Start,
    ) -> Result<Option<steadfast_engine::store::Appended>, Status> {
        let Task::Activity { key, id, attempt } = task else {
            return Ok(None);
        };
        let (id, attempt) = (*id, *attempt);
        let appended = self
            .core
            .update(key, true, |s, now| {
                let (effect, requires_approval) =
                    s.activities.get(&id).map_or((Effect::Write, false), |a| {
                        (
                            runs.effect(&a.activity_type),
                            runs.requires_approval(&a.activity_type),
                        )
                    });
                let claim = Claim {
                    worker,
                    effect,
                    requires_approval,
                    arguments,
                };
                *decided = start_attempt(s, id, attempt, claim, now);
                Ok(match &*decided {
                    Start::Started(e) | Start::Park(e) | Start::AskApproval(e) => {
                        Some(vec![e.clone()])
                    }
                    Start::Reserved | Start::NeedArguments | Start::Gone => None,
                })
            })
            .await;
        match appended {
            Ok(a) => Ok(a),
            Err(e) if e.code() == tonic::Code::NotFound => {
                *decided = Start::Gone;
                Ok(None)
            }
            Err(e) => Err(e),
        }
    }

    /// The task for a decided attempt, or the task given back.
    async fn started_task(
        &self,
        task: &Task,
        decided: &Start,
        appended: Option<steadfast_engine::store::Appended>,
    ) -> Result<Option<pb::PollActivityTaskResponse>, Status> {
        let Task::Activity { key, id, .. } = task else {
            return Ok(None);
        };
        let id = *id;
        match (decided, appended) {
            (Start::Started(_), Some(a)) => {
                let started = a
                    .records
                    .iter()
                    .find(|r| matches!(&r.event, Event::ActivityStarted(e) if e.command_seq == id))
                    .ok_or_else(|| Status::internal("the append did not record ActivityStarted"))?;
                let act = a.state.activities.get(&id).ok_or_else(|| {
                    Status::internal("a started activity is missing from the state")
                })?;
                let mut scheduled = self.scheduled_record(key, act).await?;
                self.use_approved_input(key, act, &mut scheduled).await?;
                let tp = self.run_traceparent(key).await?;
                let mut task =
                    self.activity_task(&a.state, id, act, &scheduled, started, tp.as_deref());
                if act.attempt > 1 {
                    task.last_heartbeat_details = self
                        .last_heartbeat_details(key, id, scheduled.seq, started.seq)
                        .await?;
                }
                Ok(Some(task))
            }
            (decided, _) => {
                if let Start::Park(Event::BudgetExceeded(b)) = decided {
                    tracing::info!(run = %key, activity = id, dimension = b.dimension.as_str(), "run parked on its budget");
                }
                if let Start::AskApproval(_) = decided {
                    tracing::info!(run = %key, activity = id, "activity waits for approval");
                }
                // Nobody holds it: the lease goes, so that a change (the budget raised, an
                // attempt in flight ending) offers it again at once.
                self.core.store.release_task(task).await.map_err(status)?;
                Ok(None)
            }
        }
    }

    /// Puts the arguments a human edited before approving (ActivityApproved) in place of the
    /// scheduled ones in `scheduled` (the token still names the ActivityScheduled record).
    async fn use_approved_input(
        &self,
        key: &RunKey,
        act: &ActivityState,
        scheduled: &mut EventRecord,
    ) -> Result<(), Status> {
        let Some(seq) = act.approved_input_seq else {
            return Ok(());
        };
        let edited = match self.core.history(key, seq, seq).await?.pop() {
            Some(EventRecord {
                event: Event::ActivityApproved(ev::ActivityApproved { input: Some(p), .. }),
                ..
            }) => p,
            _ => {
                return Err(Status::data_loss(format!(
                    "run {key}: the ActivityApproved with edited arguments is missing at seq {seq}"
                )));
            }
        };
        if let Event::ActivityScheduled(a) = &mut scheduled.event {
            a.input = edited;
        }
        Ok(())
    }

    /// The digest of activity `id`'s scheduled arguments (what a human approves), `None`
    /// when the activity is no longer open.
    async fn arguments_of(&self, key: &RunKey, id: u32) -> Result<Option<ArgumentsDigest>, Status> {
        let s = self.core.state(key).await?;
        let Some(act) = s.activities.get(&id) else {
            return Ok(None);
        };
        match &self.scheduled_record(key, act).await?.event {
            Event::ActivityScheduled(a) => Ok(Some(ArgumentsDigest::of(&a.input))),
            _ => Ok(None),
        }
    }

    /// The details of the last ActivityProgress an earlier attempt of activity `id` recorded
    /// (looking back at most [`LAST_DETAILS_SCAN_MAX`] records from this attempt's start):
    /// where a retry picks up, e.g. the provider job an LLM call re-attaches to.
    async fn last_heartbeat_details(
        &self,
        key: &RunKey,
        id: u32,
        scheduled_seq: u64,
        started_seq: u64,
    ) -> Result<Option<pb::Payload>, Status> {
        let from = (scheduled_seq + 1).max(started_seq.saturating_sub(LAST_DETAILS_SCAN_MAX));
        let page = self.core.history(key, from, started_seq).await?;
        Ok(page.iter().rev().find_map(|r| match &r.event {
            Event::ActivityProgress(p) if p.command_seq == id => Some(convert::payload(&p.details)),
            _ => None,
        }))
    }

    /// The ActivityScheduled record of `act` (its input, and the record the token names).
    pub(super) async fn scheduled_record(
        &self,
        key: &RunKey,
        act: &ActivityState,
    ) -> Result<EventRecord, Status> {
        let mut page = self
            .core
            .history(key, act.scheduled_seq, act.scheduled_seq)
            .await?;
        match page.pop() {
            Some(r) if matches!(r.event, Event::ActivityScheduled(_)) => Ok(r),
            _ => Err(Status::data_loss(format!(
                "run {key}: the ActivityScheduled of an activity is missing at seq {}",
                act.scheduled_seq
            ))),
        }
    }

    /// The traceparent given when the run started (its RunStarted, seq 1), read only when
    /// workers get traceparents, and then once per run (cached).
    async fn run_traceparent(&self, key: &RunKey) -> Result<Option<String>, Status> {
        if !self.core.traceparent_to_workers {
            return Ok(None);
        }
        self.core
            .run_traceparents
            .get(self.core.store.as_ref(), key)
            .await
            .map_err(crate::core::status)
    }

    /// The task a worker gets for a started attempt. `scheduled` is the activity's
    /// ActivityScheduled record (with its input inlined), `started` its ActivityStarted,
    /// `given` the traceparent the run started with.
    pub(super) fn activity_task(
        &self,
        s: &RunState,
        id: u32,
        act: &ActivityState,
        scheduled: &EventRecord,
        started: &EventRecord,
        given: Option<&str>,
    ) -> pb::PollActivityTaskResponse {
        let key = &s.key;
        let input = match &scheduled.event {
            Event::ActivityScheduled(a) => Some(convert::payload(&a.input)),
            _ => None,
        };
        let (deadline, _) = retry::attempt_deadline(act, started.time_ms, started.time_ms);
        pb::PollActivityTaskResponse {
            task_token: TaskToken::Activity {
                key: key.clone(),
                activity_id: id,
                scheduled: RecordRef {
                    seq: scheduled.seq,
                    hash: scheduled.hash,
                },
                attempt: act.attempt,
            }
            .seal(&self.tokens),
            run_id: key.run_id.to_string(),
            activity_id: id,
            activity_type: act.activity_type.clone(),
            input,
            attempt: act.attempt,
            idempotency_key: format!("{}/{}/{}", key.namespace, key.run_id, id),
            options: Some(convert::activity_options(&act.options)),
            workflow_type: s.workflow_type.clone(),
            workflow_id: s.workflow_id.clone(),
            deadline_ms: deadline,
            namespace: key.namespace.clone(),
            last_heartbeat_details: None,
            traceparent: if self.core.traceparent_to_workers {
                crate::traces::spans::activity_traceparent(key, given, scheduled.seq)
            } else {
                String::new()
            },
        }
    }

    /// The tasks for the attempts a workflow task completion started eagerly (their
    /// ActivityStarted rode in the completion's append).
    pub(super) async fn eager_tasks(
        &self,
        appended: &steadfast_engine::store::Appended,
    ) -> Result<Vec<pb::PollActivityTaskResponse>, Status> {
        let s = &appended.state;
        let mut out = Vec::new();
        for started in &appended.records {
            let Event::ActivityStarted(e) = &started.event else {
                continue;
            };
            let Some(act) = s.activities.get(&e.command_seq) else {
                continue;
            };
            let scheduled = match appended.records.iter().find(|r| r.seq == act.scheduled_seq) {
                Some(r) => self.core.inline(&s.key.namespace, r.clone()).await?,
                None => self.scheduled_record(&s.key, act).await?,
            };
            let tp = self.run_traceparent(&s.key).await?;
            out.push(self.activity_task(s, e.command_seq, act, &scheduled, started, tp.as_deref()));
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use steadfast_engine::event::{ActivityOptions, Budget, BudgetDimension};
    use steadfast_engine::ids::{RunId, RunKey};
    use steadfast_engine::payload::Payload;

    fn rec(seq: u64, event: Event) -> EventRecord {
        EventRecord {
            seq,
            time_ms: 1_000,
            hash: [0; 32],
            event,
        }
    }

    /// A run with `n` activities scheduled (ids 1..=n) under `budget`.
    fn run(n: u32, budget: Budget) -> RunState {
        let key = RunKey::new("default", RunId(uuid::Uuid::from_u128(1)));
        let mut s = RunState::start(
            key,
            &rec(
                1,
                Event::RunStarted(ev::RunStarted {
                    workflow_type: "wf".into(),
                    workflow_id: "w".into(),
                    task_queue: "q".into(),
                    input: Payload::default(),
                    run_timeout_ms: 0,
                    budget,
                    continued_from: None,
                    identity: String::new(),
                    random_seed: 0,
                    parent: None,
                    forked_from: None,
                    schedule: None,
                    traceparent: None,
                }),
            ),
        )
        .unwrap();
        for id in 1..=n {
            let seq = s.last_seq + 1;
            s.apply(&rec(
                seq,
                Event::ActivityScheduled(ev::ActivityScheduled {
                    command_seq: id,
                    activity_type: "t".into(),
                    input: Payload::default(),
                    options: ActivityOptions {
                        task_queue: "q".into(),
                        ..Default::default()
                    },
                }),
            ))
            .unwrap();
        }
        s
    }

    fn claim(worker: &str, effect: Effect) -> Claim<'_> {
        Claim {
            worker,
            effect,
            requires_approval: false,
            arguments: Some(ArgumentsDigest::default()),
        }
    }

    /// A call that asks, or a worker that declares, gets an ApprovalRequested instead of a
    /// start; once approved it starts, and its retries never ask again.
    #[test]
    fn approval_is_asked_once_then_the_activity_starts() {
        let mut s = run(1, Budget::default());
        let declaring = Claim {
            requires_approval: true,
            ..claim("w", Effect::Write)
        };
        let asked = start_attempt(&s, 1, 1, declaring, 1_000);
        let Start::AskApproval(e) = asked else {
            panic!("{asked:?}")
        };
        assert!(matches!(&e, Event::ApprovalRequested(r) if r.declared_by == "w"));
        // Without the digest read, nothing is decided yet.
        let unread = Claim {
            arguments: None,
            ..declaring
        };
        assert_eq!(start_attempt(&s, 1, 1, unread, 1_000), Start::NeedArguments);
        apply(&mut s, &e);
        assert_eq!(start_attempt(&s, 1, 1, declaring, 1_000), Start::Gone);
        apply(
            &mut s,
            &Event::ActivityApproved(ev::ActivityApproved {
                command_seq: 1,
                identity: "alice".into(),
                comment: String::new(),
                input: None,
            }),
        );
        let Start::Started(started) = start_attempt(&s, 1, 1, declaring, 1_000) else {
            panic!("approved: it starts")
        };
        apply(&mut s, &started);
        apply(
            &mut s,
            &Event::ActivityFailed(ev::ActivityFailed {
                command_seq: 1,
                attempt: 1,
                failure: Default::default(),
                retry_at_ms: Some(1_000),
                duration_ms: 1,
                usage: None,
            }),
        );
        assert!(
            matches!(start_attempt(&s, 1, 2, declaring, 1_000), Start::Started(_)),
            "a retry of an approved activity does not ask again"
        );
        // Per call: the reason comes from the options.
        let mut s = run(1, Budget::default());
        s.activities.get_mut(&1).unwrap().options.approval = Some("refund".into());
        let asked = start_attempt(&s, 1, 1, claim("w", Effect::Write), 1_000);
        assert!(
            matches!(&asked, Start::AskApproval(Event::ApprovalRequested(r)) if r.reason == "refund" && r.declared_by.is_empty()),
            "{asked:?}"
        );
    }

    fn apply(s: &mut RunState, e: &Event) {
        let seq = s.last_seq + 1;
        s.apply(&rec(seq, e.clone())).unwrap();
    }

    #[test]
    fn every_effect_is_recorded_as_started() {
        for effect in [Effect::Read, Effect::Idempotent, Effect::Write] {
            let s = run(1, Budget::default());
            match start_attempt(&s, 1, 1, claim("w1", effect), 1_000) {
                Start::Started(Event::ActivityStarted(e)) => {
                    assert_eq!((e.command_seq, e.attempt, e.effect), (1, 1, effect));
                    assert_eq!(e.worker, "w1");
                }
                other => panic!("{other:?}"),
            }
        }
    }

    #[test]
    fn an_activity_budget_lets_exactly_one_of_three_start() {
        let mut s = run(
            3,
            Budget {
                max_activities: 1,
                ..Default::default()
            },
        );
        let first = start_attempt(&s, 1, 1, claim("w", Effect::Read), 1_000);
        let Start::Started(e) = first else {
            panic!("{first:?}")
        };
        apply(&mut s, &e);
        let second = start_attempt(&s, 2, 1, claim("w", Effect::Read), 1_000);
        assert!(
            matches!(&second, Start::Park(Event::BudgetExceeded(b)) if b.dimension == BudgetDimension::Activities),
            "{second:?}"
        );
        assert_eq!(
            start_attempt(&s, 1, 1, claim("w", Effect::Read), 1_000),
            Start::Gone
        );
    }

    /// Concurrent polls decide in any order: when the poll holding activity 2 parks the run
    /// first, activity 1 (within the budget) still starts, and 3 does not park it again.
    #[test]
    fn a_run_parked_by_a_later_activity_still_starts_one_within_the_budget() {
        let mut s = run(
            3,
            Budget {
                max_activities: 1,
                ..Default::default()
            },
        );
        let park = start_attempt(&s, 2, 1, claim("w", Effect::Read), 1_000);
        let Start::Park(e) = park else {
            panic!("{park:?}")
        };
        apply(&mut s, &e);
        assert!(matches!(
            start_attempt(&s, 1, 1, claim("w", Effect::Read), 1_000),
            Start::Started(_)
        ));
        assert_eq!(
            start_attempt(&s, 3, 1, claim("w", Effect::Read), 1_000),
            Start::Gone
        );
    }

    #[test]
    fn attempts_in_flight_reserve_the_room_under_a_token_ceiling() {
        let mut s = run(
            3,
            Budget {
                max_tokens: 1_000,
                ..Default::default()
            },
        );
        let Start::Started(e) = start_attempt(&s, 1, 1, claim("w", Effect::Read), 1_000) else {
            panic!()
        };
        apply(&mut s, &e);
        assert_eq!(
            start_attempt(&s, 2, 1, claim("w", Effect::Read), 1_000),
            Start::Reserved,
            "no usage known yet: one in flight holds all the room"
        );
        // Eager dispatch decides with each start in flight too.
        let s = run(
            3,
            Budget {
                max_tokens: 1_000,
                ..Default::default()
            },
        );
        let scheduled: Vec<Event> = (1..=3)
            .map(|id| {
                Event::ActivityScheduled(ev::ActivityScheduled {
                    command_seq: id,
                    activity_type: "t".into(),
                    input: Payload::default(),
                    options: ActivityOptions {
                        task_queue: "q".into(),
                        ..Default::default()
                    },
                })
            })
            .collect();
        let runs = WorkerRuns::activities("t", &["t".into()], "d", &[]).unwrap();
        let starts = eager_starts(&s, &scheduled, 3, "w", &runs, 1_000);
        assert_eq!(starts.len(), 1, "{starts:?}");
    }
}
