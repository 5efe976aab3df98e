//! Handing out activity attempts. Every attempt's start is recorded (ActivityStarted, with the
//! worker and the effect it declared) in the same durable append that reserves it against the
//! run's budget, before the attempt leaves the server. So "a worker runs this attempt", its
//! deadlines and its budget reservation are facts of the history: the same on every node,
//! after any restart, and decided at the expected seq, so concurrent dispatches of one run
//! are serialised by the append and can never cross a ceiling together.

use steadfast_engine::EventRecord;
use steadfast_engine::event::{self as ev, Effect, Event};
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
    /// Not startable any more (started elsewhere, closed, cancelled, parked already).
    Gone,
}

/// Decides whether attempt `attempt` of activity `id` may be handed to `worker`, which
/// declared `effect` for it.
pub(super) fn start_attempt(
    s: &RunState,
    id: u32,
    attempt: u32,
    worker: &str,
    effect: Effect,
    now: i64,
) -> Start {
    let ready = s.activities.get(&id).is_some_and(|a| {
        a.attempt == attempt
            && matches!(a.phase, ActivityPhase::Ready { .. })
            && !a.cancel_requested
    });
    if !s.is_open() || !ready {
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
    if s.reservation_block(id).is_some() {
        return Start::Reserved;
    }
    Start::Started(Event::ActivityStarted(ev::ActivityStarted {
        command_seq: id,
        attempt,
        worker: worker.to_string(),
        effect,
    }))
}

/// The ActivityStarted events to append with a workflow task's completion for the activities
/// it schedules that the completing worker takes at once (eager dispatch): at most `slots`, of
/// the types `runs` takes, on the run's own queue, and only those that start without parking
/// or waiting (the others are left to pollers). `after` is the state after `events`.
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
    for e in events {
        if out.len() >= slots {
            break;
        }
        let Event::ActivityScheduled(a) = e else {
            continue;
        };
        if a.options.task_queue != s.task_queue || !runs.takes(&a.activity_type) {
            continue;
        }
        let effect = runs.effect(&a.activity_type);
        if let Start::Started(started) = start_attempt(&s, a.command_seq, 1, worker, effect, now) {
            // The next one is decided with this one in flight (its budget reservation).
            match simulate(&s, std::slice::from_ref(&started), now) {
                Ok(next) => s = next,
                Err(_) => continue,
            }
            out.push(started);
        }
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
        let Task::Activity { key, id, attempt } = task else {
            return Ok(None);
        };
        let (id, attempt) = (*id, *attempt);
        let mut decided = Start::Gone;
        let appended = self
            .core
            .update(key, true, |s, now| {
                let effect = s
                    .activities
                    .get(&id)
                    .map_or(Effect::Write, |a| runs.effect(&a.activity_type));
                decided = start_attempt(s, id, attempt, worker, effect, now);
                Ok(match &decided {
                    Start::Started(e) | Start::Park(e) => Some(vec![e.clone()]),
                    Start::Reserved | Start::Gone => None,
                })
            })
            .await;
        let appended = match appended {
            Ok(a) => a,
            Err(e) if e.code() == tonic::Code::NotFound => None,
            Err(e) => return Err(e),
        };
        match (&decided, appended) {
            (Start::Started(_), Some(a)) => {
                let started = a
                    .records
                    .iter()
                    .find(|r| matches!(&r.event, Event::ActivityStarted(e) if e.command_seq == id))
                    .ok_or_else(|| Status::internal("the append did not record ActivityStarted"))?;
                let act = a.state.activities.get(&id).ok_or_else(|| {
                    Status::internal("a started activity is missing from the state")
                })?;
                let scheduled = self.scheduled_record(key, act).await?;
                let mut task = self.activity_task(&a.state, id, act, &scheduled, started);
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
                // Nobody holds it: the lease goes, so that a change (the budget raised, an
                // attempt in flight ending) offers it again at once.
                self.core.store.release_task(task).await.map_err(status)?;
                Ok(None)
            }
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

    /// The task a worker gets for a started attempt. `scheduled` is the activity's
    /// ActivityScheduled record (with its input inlined), `started` its ActivityStarted.
    pub(super) fn activity_task(
        &self,
        s: &RunState,
        id: u32,
        act: &ActivityState,
        scheduled: &EventRecord,
        started: &EventRecord,
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
            out.push(self.activity_task(s, e.command_seq, act, &scheduled, started));
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

    fn apply(s: &mut RunState, e: &Event) {
        let seq = s.last_seq + 1;
        s.apply(&rec(seq, e.clone())).unwrap();
    }

    #[test]
    fn every_effect_is_recorded_as_started() {
        for effect in [Effect::Read, Effect::Idempotent, Effect::Write] {
            let s = run(1, Budget::default());
            match start_attempt(&s, 1, 1, "w1", effect, 1_000) {
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
        let first = start_attempt(&s, 1, 1, "w", Effect::Read, 1_000);
        let Start::Started(e) = first else {
            panic!("{first:?}")
        };
        apply(&mut s, &e);
        let second = start_attempt(&s, 2, 1, "w", Effect::Read, 1_000);
        assert!(
            matches!(&second, Start::Park(Event::BudgetExceeded(b)) if b.dimension == BudgetDimension::Activities),
            "{second:?}"
        );
        assert_eq!(
            start_attempt(&s, 1, 1, "w", Effect::Read, 1_000),
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
        let park = start_attempt(&s, 2, 1, "w", Effect::Read, 1_000);
        let Start::Park(e) = park else {
            panic!("{park:?}")
        };
        apply(&mut s, &e);
        assert!(matches!(
            start_attempt(&s, 1, 1, "w", Effect::Read, 1_000),
            Start::Started(_)
        ));
        assert_eq!(
            start_attempt(&s, 3, 1, "w", Effect::Read, 1_000),
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
        let Start::Started(e) = start_attempt(&s, 1, 1, "w", Effect::Read, 1_000) else {
            panic!()
        };
        apply(&mut s, &e);
        assert_eq!(
            start_attempt(&s, 2, 1, "w", Effect::Read, 1_000),
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
