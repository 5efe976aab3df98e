//! ScheduleService: create, list, describe, pause, resume, trigger, backfill and delete
//! schedules. The slots themselves are fired by the schedule loop (`crate::schedules`).

use std::collections::BTreeSet;
use std::sync::Arc;

use steadfast_engine::event::TimeMs;
use steadfast_engine::schedule::{
    self, BACKFILL_SLOTS_MAX, Cadence, INPUT_BYTES_MAX, JITTER_MS_MAX, Overlap, Schedule,
};
use steadfast_engine::store::{self, RunFilter};
use steadfast_proto::v1 as pb;
use steadfast_proto::v1::schedule_service_server::ScheduleService;
use tonic::{Request, Response, Status};

use crate::core::{Core, status};
use crate::schedules::{self, Loaded};
use crate::validate;

/// Runs read per page when a backfill looks for the slots that already have one.
const RUNS_PAGE: usize = 1_000;
/// Compare-and-set retries of one pause/resume/delete against concurrent writers (the loop).
const CAS_TRIES_MAX: usize = 16;

/// The schedule service.
pub struct ScheduleApi {
    core: Arc<Core>,
}

impl ScheduleApi {
    /// Over `core`.
    pub fn new(core: Arc<Core>) -> ScheduleApi {
        ScheduleApi { core }
    }
}

/// A schedule name: the engine's rule (it becomes part of run ids and request ids).
fn name(v: &str) -> Result<(), Status> {
    // The engine's message quotes the name with `{:?}`, which leaves `%` as it is: tonic 0.12
    // does not percent-encode it in grpc-message, so `%a0` reached the client as the byte 0xA0
    // and the status as UNKNOWN (found by tests/tests/fuzz_requests.rs).
    schedule::validate_name(v).map_err(|m| Status::invalid_argument(m.replace('%', "\\u{25}")))
}

fn overlap_from(v: i32) -> Result<Overlap, Status> {
    match pb::ScheduleOverlap::try_from(v) {
        Ok(pb::ScheduleOverlap::Skip) => Ok(Overlap::Skip),
        Ok(pb::ScheduleOverlap::BufferOne) => Ok(Overlap::BufferOne),
        Ok(pb::ScheduleOverlap::CancelPrevious) => Ok(Overlap::CancelPrevious),
        Ok(pb::ScheduleOverlap::AllowAll) => Ok(Overlap::AllowAll),
        Err(_) => Err(Status::invalid_argument(format!(
            "overlap {v} is unknown: use skip (0), buffer-one (1), cancel-previous (2) or allow-all (3)"
        ))),
    }
}

fn overlap_to(o: Overlap) -> pb::ScheduleOverlap {
    match o {
        Overlap::Skip => pb::ScheduleOverlap::Skip,
        Overlap::BufferOne => pb::ScheduleOverlap::BufferOne,
        Overlap::CancelPrevious => pb::ScheduleOverlap::CancelPrevious,
        Overlap::AllowAll => pb::ScheduleOverlap::AllowAll,
    }
}

/// The wire form of a schedule.
pub fn info(l: &Loaded) -> pb::ScheduleInfo {
    let s = &l.schedule;
    let (cron, every_ms) = match &s.cadence {
        Cadence::Cron(e) => (e.clone(), 0),
        Cadence::EveryMs(n) => (String::new(), *n),
    };
    let next = if s.paused { None } else { s.next_slot() };
    let (last_run_id, last_slot_ms) = s
        .last_run
        .map(|(r, slot)| (r.to_string(), slot))
        .unwrap_or_default();
    pb::ScheduleInfo {
        namespace: s.namespace.clone(),
        name: s.name.clone(),
        cron,
        every_ms,
        workflow_type: s.workflow_type.clone(),
        task_queue: s.task_queue.clone(),
        overlap: overlap_to(s.overlap) as i32,
        jitter_ms: s.jitter_ms,
        paused: s.paused,
        created_ms: s.created_ms,
        next_slot_ms: next.unwrap_or(0),
        next_fire_ms: next.map(|n| s.fire_time(n)).unwrap_or(0),
        last_run_id,
        last_slot_ms,
        fired: s.fired,
        skipped: s.skipped,
        buffered_slot_ms: s.buffered_slot.unwrap_or(0),
        version: l.version,
    }
}

fn not_found(ns: &str, n: &str) -> Status {
    Status::not_found(format!(
        "no schedule {} in namespace {}: `steadfast schedule list` shows them",
        validate::quote(n),
        validate::quote(ns)
    ))
}

/// Validates a create request into the record to store (cursor at `now`: the first slot
/// fired is the first one after the creation).
fn schedule_from(r: &pb::CreateScheduleRequest, now: TimeMs) -> Result<Schedule, Status> {
    let namespace = validate::namespace(&r.namespace)?;
    name(&r.name)?;
    let cadence = match (r.cron.is_empty(), r.every_ms) {
        (false, 0) => Cadence::Cron(r.cron.clone()),
        (true, n) if n > 0 => Cadence::EveryMs(n),
        (true, _) => {
            return Err(Status::invalid_argument(
                "give a cadence: cron (5 fields, UTC) or every_ms",
            ));
        }
        (false, _) => {
            return Err(Status::invalid_argument("give cron or every_ms, not both"));
        }
    };
    cadence
        .validate()
        .map_err(|e| Status::invalid_argument(format!("cadence: {e}")))?;
    validate::name("workflow_type", &r.workflow_type)?;
    validate::opt_name("task_queue", &r.task_queue)?;
    let input = validate::payload("input", r.input.as_ref())?;
    if input.data.len() > INPUT_BYTES_MAX {
        return Err(Status::resource_exhausted(format!(
            "input is {} bytes; a schedule stores at most {INPUT_BYTES_MAX} bytes of input: pass a reference",
            input.data.len()
        )));
    }
    if r.jitter_ms > JITTER_MS_MAX {
        return Err(Status::invalid_argument(format!(
            "jitter_ms is {}; the limit is {JITTER_MS_MAX} (24 h)",
            r.jitter_ms
        )));
    }
    Ok(Schedule {
        namespace,
        name: r.name.clone(),
        cadence,
        workflow_type: r.workflow_type.clone(),
        task_queue: if r.task_queue.is_empty() {
            "default".into()
        } else {
            r.task_queue.clone()
        },
        input,
        overlap: overlap_from(r.overlap)?,
        jitter_ms: r.jitter_ms,
        paused: r.paused,
        created_ms: now,
        cursor_ms: now,
        last_run: None,
        buffered_slot: None,
        fired: 0,
        skipped: 0,
    })
}

impl ScheduleApi {
    async fn get(&self, ns: &str, n: &str) -> Result<Loaded, Status> {
        schedules::load(&self.core, ns, n)
            .await?
            .ok_or_else(|| not_found(ns, n))
    }

    /// Read, change, compare-and-set; again from a fresh read when the loop wrote between.
    async fn modify(
        &self,
        ns: &str,
        n: &str,
        change: impl Fn(&mut Schedule, TimeMs),
    ) -> Result<Loaded, Status> {
        for _ in 0..CAS_TRIES_MAX {
            let cur = self.get(ns, n).await?;
            let mut next = cur.schedule.clone();
            change(&mut next, self.core.now());
            match self
                .core
                .store
                .put_schedule(ns, n, cur.version, next.encode())
                .await
            {
                Ok(version) => {
                    self.core.notify.schedules_changed();
                    return Ok(Loaded {
                        schedule: next,
                        version,
                    });
                }
                Err(store::Error::ScheduleConflict { .. }) => continue,
                Err(e) => return Err(status(e)),
            }
        }
        Err(Status::aborted(format!(
            "schedule {} kept changing under this request: try again",
            validate::quote(n)
        )))
    }

    /// The slots of `name` that already have a run (any status), for backfill.
    async fn slots_with_runs(&self, ns: &str, n: &str) -> Result<BTreeSet<TimeMs>, Status> {
        let filter = RunFilter {
            schedule: Some(n.to_string()),
            ..Default::default()
        };
        let mut out = BTreeSet::new();
        let mut after = None;
        loop {
            let page = self
                .core
                .store
                .list_runs(ns, &filter, after, RUNS_PAGE, self.core.now())
                .await
                .map_err(status)?;
            out.extend(
                page.iter()
                    .filter_map(|s| s.schedule.as_ref().map(|r| r.slot_ms)),
            );
            if page.len() < RUNS_PAGE {
                return Ok(out);
            }
            after = page.last().map(|s| s.key.run_id);
        }
    }
}

#[tonic::async_trait]
impl ScheduleService for ScheduleApi {
    async fn create_schedule(
        &self,
        req: Request<pb::CreateScheduleRequest>,
    ) -> Result<Response<pb::ScheduleResponse>, Status> {
        let r = req.get_ref();
        crate::auth::namespace(&req, &r.namespace)?;
        let s = schedule_from(r, self.core.now())?;
        match self
            .core
            .store
            .put_schedule(&s.namespace, &s.name, 0, s.encode())
            .await
        {
            Ok(version) => {
                self.core.notify.schedules_changed();
                Ok(Response::new(pb::ScheduleResponse {
                    schedule: Some(info(&Loaded {
                        schedule: s,
                        version,
                    })),
                }))
            }
            Err(store::Error::ScheduleConflict { .. }) => Err(Status::already_exists(format!(
                "schedule {} already exists: delete it first, or pick another name",
                validate::quote(&s.name)
            ))),
            Err(e) => Err(status(e)),
        }
    }

    async fn describe_schedule(
        &self,
        req: Request<pb::ScheduleName>,
    ) -> Result<Response<pb::ScheduleResponse>, Status> {
        let r = req.get_ref();
        crate::auth::namespace(&req, &r.namespace)?;
        let ns = validate::namespace(&r.namespace)?;
        name(&r.name)?;
        let l = self.get(&ns, &r.name).await?;
        Ok(Response::new(pb::ScheduleResponse {
            schedule: Some(info(&l)),
        }))
    }

    async fn list_schedules(
        &self,
        req: Request<pb::ListSchedulesRequest>,
    ) -> Result<Response<pb::ListSchedulesResponse>, Status> {
        let r = req.get_ref();
        crate::auth::namespace(&req, &r.namespace)?;
        let ns = validate::namespace(&r.namespace)?;
        let all = self
            .core
            .store
            .list_schedules(Some(&ns))
            .await
            .map_err(status)?;
        let mut out = Vec::with_capacity(all.len());
        for stored in &all {
            out.push(info(&schedules::decode(stored)?));
        }
        Ok(Response::new(pb::ListSchedulesResponse { schedules: out }))
    }

    async fn pause_schedule(
        &self,
        req: Request<pb::ScheduleName>,
    ) -> Result<Response<pb::ScheduleResponse>, Status> {
        let r = req.get_ref();
        crate::auth::namespace(&req, &r.namespace)?;
        let ns = validate::namespace(&r.namespace)?;
        name(&r.name)?;
        let l = self.modify(&ns, &r.name, |s, _| s.paused = true).await?;
        Ok(Response::new(pb::ScheduleResponse {
            schedule: Some(info(&l)),
        }))
    }

    async fn resume_schedule(
        &self,
        req: Request<pb::ScheduleName>,
    ) -> Result<Response<pb::ScheduleResponse>, Status> {
        let r = req.get_ref();
        crate::auth::namespace(&req, &r.namespace)?;
        let ns = validate::namespace(&r.namespace)?;
        name(&r.name)?;
        let l = self
            .modify(&ns, &r.name, |s, now| {
                // Slots that passed while paused are skipped, not caught up.
                if s.paused {
                    s.cursor_ms = s.cursor_ms.max(now);
                }
                s.paused = false;
            })
            .await?;
        Ok(Response::new(pb::ScheduleResponse {
            schedule: Some(info(&l)),
        }))
    }

    async fn trigger_schedule(
        &self,
        req: Request<pb::ScheduleName>,
    ) -> Result<Response<pb::ScheduleStartResponse>, Status> {
        let r = req.get_ref();
        crate::auth::namespace(&req, &r.namespace)?;
        let ns = validate::namespace(&r.namespace)?;
        name(&r.name)?;
        let l = self.get(&ns, &r.name).await?;
        let slot = self.core.now();
        let run = schedules::start_slot(&self.core, &l.schedule, slot).await?;
        Ok(Response::new(pb::ScheduleStartResponse {
            run_ids: vec![run.to_string()],
            slots_ms: vec![slot],
        }))
    }

    async fn backfill_schedule(
        &self,
        req: Request<pb::BackfillScheduleRequest>,
    ) -> Result<Response<pb::ScheduleStartResponse>, Status> {
        let r = req.get_ref();
        crate::auth::namespace(&req, &r.namespace)?;
        let ns = validate::namespace(&r.namespace)?;
        name(&r.name)?;
        if r.from_ms > r.to_ms {
            return Err(Status::invalid_argument(format!(
                "from_ms {} is after to_ms {}: give the range oldest first",
                r.from_ms, r.to_ms
            )));
        }
        let l = self.get(&ns, &r.name).await?;
        let slots = l.schedule.slots_between(r.from_ms, r.to_ms);
        if slots.len() > BACKFILL_SLOTS_MAX {
            return Err(Status::invalid_argument(format!(
                "the range has more than {BACKFILL_SLOTS_MAX} slots: backfill it in parts"
            )));
        }
        // A slot that has a run (fired, or backfilled before, even long ago) is not started
        // again; the request id covers a concurrent fire of the same slot.
        let done = self.slots_with_runs(&ns, &r.name).await?;
        let mut out = pb::ScheduleStartResponse::default();
        for slot in slots.into_iter().filter(|s| !done.contains(s)) {
            let run = schedules::start_slot(&self.core, &l.schedule, slot).await?;
            out.run_ids.push(run.to_string());
            out.slots_ms.push(slot);
        }
        Ok(Response::new(out))
    }

    async fn delete_schedule(
        &self,
        req: Request<pb::ScheduleName>,
    ) -> Result<Response<pb::DeleteScheduleResponse>, Status> {
        let r = req.get_ref();
        crate::auth::namespace(&req, &r.namespace)?;
        let ns = validate::namespace(&r.namespace)?;
        name(&r.name)?;
        for _ in 0..CAS_TRIES_MAX {
            let cur = self.get(&ns, &r.name).await?;
            match self
                .core
                .store
                .delete_schedule(&ns, &r.name, cur.version)
                .await
            {
                Ok(()) => return Ok(Response::new(pb::DeleteScheduleResponse {})),
                Err(store::Error::ScheduleConflict { .. }) => continue,
                Err(e) => return Err(status(e)),
            }
        }
        Err(Status::aborted(format!(
            "schedule {} kept changing under this request: try again",
            validate::quote(&r.name)
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tonic::Code;

    fn req() -> pb::CreateScheduleRequest {
        pb::CreateScheduleRequest {
            name: "nightly".into(),
            every_ms: 60_000,
            workflow_type: "agent".into(),
            ..Default::default()
        }
    }

    #[test]
    fn a_create_request_is_checked_field_by_field() {
        let s = schedule_from(&req(), 5).unwrap();
        assert_eq!((s.cursor_ms, s.task_queue.as_str()), (5, "default"));
        let bad: Vec<(pb::CreateScheduleRequest, Code, &str)> = vec![
            (
                pb::CreateScheduleRequest {
                    name: "a b".into(),
                    ..req()
                },
                Code::InvalidArgument,
                "schedule name",
            ),
            (
                pb::CreateScheduleRequest {
                    every_ms: 0,
                    ..req()
                },
                Code::InvalidArgument,
                "give a cadence",
            ),
            (
                pb::CreateScheduleRequest {
                    cron: "* * * * *".into(),
                    ..req()
                },
                Code::InvalidArgument,
                "not both",
            ),
            (
                pb::CreateScheduleRequest {
                    every_ms: 0,
                    cron: "61 * * * *".into(),
                    ..req()
                },
                Code::InvalidArgument,
                "cadence",
            ),
            (
                pb::CreateScheduleRequest {
                    every_ms: 10,
                    ..req()
                },
                Code::InvalidArgument,
                "at least",
            ),
            (
                pb::CreateScheduleRequest {
                    workflow_type: String::new(),
                    ..req()
                },
                Code::InvalidArgument,
                "workflow_type",
            ),
            (
                pb::CreateScheduleRequest {
                    jitter_ms: JITTER_MS_MAX + 1,
                    ..req()
                },
                Code::InvalidArgument,
                "jitter_ms",
            ),
            (
                pb::CreateScheduleRequest {
                    overlap: 9,
                    ..req()
                },
                Code::InvalidArgument,
                "overlap",
            ),
            (
                pb::CreateScheduleRequest {
                    input: Some(pb::Payload {
                        encoding: String::new(),
                        data: b"{".to_vec(),
                    }),
                    ..req()
                },
                Code::InvalidArgument,
                "JSON",
            ),
            (
                pb::CreateScheduleRequest {
                    input: Some(pb::Payload {
                        encoding: "binary/plain".into(),
                        data: vec![0; INPUT_BYTES_MAX + 1],
                    }),
                    ..req()
                },
                Code::ResourceExhausted,
                "input",
            ),
        ];
        for (r, code, needle) in bad {
            let e = schedule_from(&r, 0).unwrap_err();
            assert_eq!(e.code(), code, "{}", e.message());
            assert!(
                e.message().contains(needle),
                "{needle:?} not in {}",
                e.message()
            );
        }
    }
}
