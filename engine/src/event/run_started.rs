//! `RunStarted`, the first event of every run, with its own encoding: its optional fields
//! were appended over time, and a trailing `None` is left out (an earlier one is written as
//! nil), so histories written before a field existed keep their exact bytes.

use serde::{Deserialize, Serialize};

use super::values::*;
use crate::ids::RunId;
use crate::payload::Payload;

/// A run began.
#[derive(Clone, Debug, PartialEq, Deserialize)]
pub struct RunStarted {
    /// Workflow type.
    pub workflow_type: String,
    /// Caller-chosen id (or the run id).
    pub workflow_id: String,
    /// Queue of its workflow tasks and default for activities.
    pub task_queue: String,
    /// Input.
    pub input: Payload,
    /// 0 = none.
    pub run_timeout_ms: u64,
    /// Ceilings.
    pub budget: Budget,
    /// The run this one continues (continue-as-new).
    pub continued_from: Option<RunId>,
    /// Who started it.
    pub identity: String,
    /// Seed of the workflow's deterministic randomness.
    pub random_seed: u64,
    /// The run that started this one as its child, and the command that did. Not written
    /// when absent (see the `Serialize` impl), so a run without a parent has the bytes of the
    /// older format.
    #[serde(default)]
    pub parent: Option<ParentRef>,
    /// The run and the seq this run was forked from (`run fork` / `run reset`): its
    /// history up to that seq is the original's. Not written when absent, so a run that
    /// is not a fork has the bytes of the older format.
    #[serde(default)]
    pub forked_from: Option<ForkRef>,
    /// The schedule that started this run, and the slot it fired for. Not written when
    /// absent, so a run no schedule started has the bytes of the older format.
    #[serde(default)]
    pub schedule: Option<ScheduleRef>,
    /// The W3C traceparent given at StartWorkflow (validated by the server): the run's trace
    /// continues the caller's. Not written when absent, so a run started without one has the
    /// bytes of the older format.
    #[serde(default)]
    pub traceparent: Option<String>,
}

/// Fields are written in order, as a msgpack array, so an optional field can only be left
/// out at the end: the trailing `None`s among `parent`, `forked_from`, `schedule` and
/// `traceparent` are not written (a run with none of them has the older format's bytes), and
/// a `None` before a `Some` is written as nil, so that every field keeps its position.
impl Serialize for RunStarted {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct;
        let tail = if self.traceparent.is_some() {
            4
        } else if self.schedule.is_some() {
            3
        } else if self.forked_from.is_some() {
            2
        } else {
            usize::from(self.parent.is_some())
        };
        let mut st = s.serialize_struct("RunStarted", 9 + tail)?;
        st.serialize_field("workflow_type", &self.workflow_type)?;
        st.serialize_field("workflow_id", &self.workflow_id)?;
        st.serialize_field("task_queue", &self.task_queue)?;
        st.serialize_field("input", &self.input)?;
        st.serialize_field("run_timeout_ms", &self.run_timeout_ms)?;
        st.serialize_field("budget", &self.budget)?;
        st.serialize_field("continued_from", &self.continued_from)?;
        st.serialize_field("identity", &self.identity)?;
        st.serialize_field("random_seed", &self.random_seed)?;
        if tail >= 1 {
            st.serialize_field("parent", &self.parent)?;
        } else {
            st.skip_field("parent")?;
        }
        if tail >= 2 {
            st.serialize_field("forked_from", &self.forked_from)?;
        } else {
            st.skip_field("forked_from")?;
        }
        if tail >= 3 {
            st.serialize_field("schedule", &self.schedule)?;
        } else {
            st.skip_field("schedule")?;
        }
        if tail >= 4 {
            st.serialize_field("traceparent", &self.traceparent)?;
        } else {
            st.skip_field("traceparent")?;
        }
        st.end()
    }
}

#[cfg(test)]
mod run_started_tests {
    use super::*;
    use crate::event::{Event, EventKind};

    fn base() -> RunStarted {
        RunStarted {
            workflow_type: "wf".into(),
            workflow_id: "id".into(),
            task_queue: "q".into(),
            input: Payload::json(b"{}".to_vec()),
            run_timeout_ms: 0,
            budget: Budget::default(),
            continued_from: None,
            identity: "t".into(),
            random_seed: 1,
            parent: None,
            forked_from: None,
            schedule: None,
            traceparent: None,
        }
    }

    /// Every combination of the optional fields reads back as written: a `None` before a
    /// `Some` must not shift the later fields into its place (a fork without a parent once
    /// read back as a run with a parent, a scheduled run not at all).
    #[test]
    fn optional_fields_keep_their_places() {
        let parent = ParentRef {
            run_id: RunId::new_v7(),
            command_seq: 3,
        };
        let fork = ForkRef {
            run_id: RunId::new_v7(),
            seq: 7,
        };
        let sched = ScheduleRef {
            name: "nightly".into(),
            slot_ms: 1_700_000_000_000,
        };
        let plain = Event::RunStarted(base()).encode_attrs();
        let tp = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
        for mask in 0u8..16 {
            let mut r = base();
            r.parent = (mask & 1 != 0).then_some(parent);
            r.forked_from = (mask & 2 != 0).then_some(fork);
            r.schedule = (mask & 4 != 0).then(|| sched.clone());
            r.traceparent = (mask & 8 != 0).then(|| tp.to_string());
            let bytes = Event::RunStarted(r.clone()).encode_attrs();
            let back = Event::decode_attrs(EventKind::RunStarted, &bytes)
                .unwrap_or_else(|e| panic!("mask {mask}: {e}"));
            assert_eq!(back, Event::RunStarted(r), "mask {mask}");
            if mask == 0 {
                assert_eq!(bytes, plain);
            }
        }
    }
}
