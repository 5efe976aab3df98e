//! Schedules through the client: a workflow type started on a cadence, each slot once.
//!
//! ```no_run
//! # async fn demo(client: steadfast_sdk::client::Client) -> Result<(), steadfast_sdk::client::Error> {
//! use steadfast_sdk::client::{Cadence, Overlap, ScheduleSpec};
//!
//! let spec = ScheduleSpec::new("triage", Cadence::Cron("0 7 * * *".into()))
//!     .with_overlap(Overlap::Skip);
//! client.create_schedule("morning-triage", &spec, &"inbox").await?;
//! # Ok(()) }
//! ```

use std::time::Duration;

use serde::Serialize;
use steadfast_proto::v1 as pb;

use super::{Client, Error};
use crate::payload;

/// When a schedule's slots are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Cadence {
    /// A five-field cron expression, in UTC.
    Cron(String),
    /// A fixed interval (at least one second), aligned to the Unix epoch.
    Every(Duration),
}

/// What a slot does while the schedule's previous run is still open.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Overlap {
    /// Skip the slot.
    #[default]
    Skip,
    /// Keep one slot and start it when the open run closes.
    BufferOne,
    /// Ask the open run to cancel, and start the new one.
    CancelPrevious,
    /// Start the new run anyway.
    AllowAll,
}

/// What a schedule starts and when ([`Client::create_schedule`]).
#[derive(Debug, Clone)]
pub struct ScheduleSpec {
    /// Workflow type each slot starts.
    pub workflow_type: String,
    /// When.
    pub cadence: Cadence,
    /// Task queue of its runs (`None`: "default").
    pub task_queue: Option<String>,
    /// Overlap policy.
    pub overlap: Overlap,
    /// Each slot fires up to this much later (the same delay on every server node).
    pub jitter: Duration,
    /// Create it paused.
    pub paused: bool,
}

impl ScheduleSpec {
    /// A schedule of `workflow_type` on `cadence`, overlap skip, no jitter.
    pub fn new(workflow_type: &str, cadence: Cadence) -> ScheduleSpec {
        ScheduleSpec {
            workflow_type: workflow_type.to_owned(),
            cadence,
            task_queue: None,
            overlap: Overlap::Skip,
            jitter: Duration::ZERO,
            paused: false,
        }
    }

    /// With an overlap policy.
    pub fn with_overlap(mut self, overlap: Overlap) -> ScheduleSpec {
        self.overlap = overlap;
        self
    }

    /// With a jitter.
    pub fn with_jitter(mut self, jitter: Duration) -> ScheduleSpec {
        self.jitter = jitter;
        self
    }

    /// On a task queue.
    pub fn with_task_queue(mut self, queue: &str) -> ScheduleSpec {
        self.task_queue = Some(queue.to_owned());
        self
    }
}

impl Client {
    fn schedule_name(&self, name: &str) -> pb::ScheduleName {
        pb::ScheduleName {
            namespace: self.config.namespace.clone(),
            name: name.to_owned(),
        }
    }

    /// Creates schedule `name`: every slot of `spec.cadence` after now starts
    /// `spec.workflow_type` with `input`, at most once per slot.
    pub async fn create_schedule(
        &self,
        name: &str,
        spec: &ScheduleSpec,
        input: &(impl Serialize + ?Sized),
    ) -> Result<pb::ScheduleInfo, Error> {
        let (cron, every_ms) = match &spec.cadence {
            Cadence::Cron(e) => (e.clone(), 0),
            Cadence::Every(d) => (String::new(), d.as_millis() as u64),
        };
        let overlap = match spec.overlap {
            Overlap::Skip => pb::ScheduleOverlap::Skip,
            Overlap::BufferOne => pb::ScheduleOverlap::BufferOne,
            Overlap::CancelPrevious => pb::ScheduleOverlap::CancelPrevious,
            Overlap::AllowAll => pb::ScheduleOverlap::AllowAll,
        };
        let req = pb::CreateScheduleRequest {
            namespace: self.config.namespace.clone(),
            name: name.to_owned(),
            cron,
            every_ms,
            workflow_type: spec.workflow_type.clone(),
            input: Some(payload::encode(input)?),
            task_queue: spec.task_queue.clone().unwrap_or_default(),
            overlap: overlap as i32,
            jitter_ms: spec.jitter.as_millis() as u64,
            paused: spec.paused,
        };
        let r = self.schedules.clone().create_schedule(req).await?;
        Ok(r.into_inner().schedule.unwrap_or_default())
    }

    /// One schedule, with its next and last runs.
    pub async fn describe_schedule(&self, name: &str) -> Result<pb::ScheduleInfo, Error> {
        let r = self
            .schedules
            .clone()
            .describe_schedule(self.schedule_name(name))
            .await?;
        Ok(r.into_inner().schedule.unwrap_or_default())
    }

    /// Every schedule of the namespace.
    pub async fn list_schedules(&self) -> Result<Vec<pb::ScheduleInfo>, Error> {
        let req = pb::ListSchedulesRequest {
            namespace: self.config.namespace.clone(),
        };
        Ok(self
            .schedules
            .clone()
            .list_schedules(req)
            .await?
            .into_inner()
            .schedules)
    }

    /// Stops firing; slots that pass while paused are skipped.
    pub async fn pause_schedule(&self, name: &str) -> Result<pb::ScheduleInfo, Error> {
        let r = self
            .schedules
            .clone()
            .pause_schedule(self.schedule_name(name))
            .await?;
        Ok(r.into_inner().schedule.unwrap_or_default())
    }

    /// Fires again from the next slot after now.
    pub async fn resume_schedule(&self, name: &str) -> Result<pb::ScheduleInfo, Error> {
        let r = self
            .schedules
            .clone()
            .resume_schedule(self.schedule_name(name))
            .await?;
        Ok(r.into_inner().schedule.unwrap_or_default())
    }

    /// Starts one run now, whatever the overlap policy; returns its run id.
    pub async fn trigger_schedule(&self, name: &str) -> Result<String, Error> {
        let r = self
            .schedules
            .clone()
            .trigger_schedule(self.schedule_name(name))
            .await?
            .into_inner();
        r.run_ids
            .into_iter()
            .next()
            .ok_or_else(|| Error::NotFound(format!("no run started by schedule {name}")))
    }

    /// Starts one run per slot in `[from_ms, to_ms]` that has none yet; returns (slot, run id)
    /// pairs in slot order.
    pub async fn backfill_schedule(
        &self,
        name: &str,
        from_ms: i64,
        to_ms: i64,
    ) -> Result<Vec<(i64, String)>, Error> {
        let req = pb::BackfillScheduleRequest {
            namespace: self.config.namespace.clone(),
            name: name.to_owned(),
            from_ms,
            to_ms,
        };
        let r = self
            .schedules
            .clone()
            .backfill_schedule(req)
            .await?
            .into_inner();
        Ok(r.slots_ms.into_iter().zip(r.run_ids).collect())
    }

    /// Deletes the schedule; the runs it started are kept.
    pub async fn delete_schedule(&self, name: &str) -> Result<(), Error> {
        self.schedules
            .clone()
            .delete_schedule(self.schedule_name(name))
            .await?;
        Ok(())
    }
}
