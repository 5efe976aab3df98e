//! Counters and latencies derived from the records this process appends: every change to a
//! run is an append, so counting there counts every path once; recovery and replay read
//! records without appending them, so a restart never counts anything twice.

use std::collections::HashMap;

use steadfast_engine::event::{Event, TimeMs, TimeoutKind, Usage};
use steadfast_engine::state::{ActivityPhase, RunState, WorkflowTask};
use steadfast_engine::{EventRecord, RunKey};

use super::registry::{CounterVec, HistogramVec, LATENCY_BUCKETS, LabelCap, RUN_BUCKETS};

/// Distinct workflow types kept as label values; later ones are counted as `other`.
pub const WORKFLOW_TYPE_LABELS_MAX: usize = 100;
/// Distinct activity types kept as label values.
pub const ACTIVITY_TYPE_LABELS_MAX: usize = 200;
/// Distinct LLM models kept as label values.
pub const MODEL_LABELS_MAX: usize = 50;
/// Most open activities and workflow tasks whose ready time is remembered for the
/// schedule-to-start latencies; past it new ones are not timed (never counted wrong).
pub const PENDING_MAX: usize = 200_000;

/// When an activity became ready, to time its start and its close.
#[derive(Debug, Clone)]
struct PendingActivity {
    activity_type: String,
    scheduled_ms: TimeMs,
    ready_ms: TimeMs,
}

/// The event-derived metrics.
#[derive(Debug)]
pub struct EventMetrics {
    workflow_types: LabelCap,
    activity_types: LabelCap,
    models: LabelCap,
    pub(super) appends: CounterVec,
    pub(super) events: CounterVec,
    pub(super) runs_started: CounterVec,
    pub(super) runs_closed: CounterVec,
    pub(super) workflow_tasks_dispatched: CounterVec,
    pub(super) workflow_tasks_failed: CounterVec,
    pub(super) workflow_tasks_timed_out: CounterVec,
    pub(super) activity_tasks_dispatched: CounterVec,
    pub(super) activity_attempts_failed: CounterVec,
    pub(super) activity_timeouts: CounterVec,
    pub(super) activity_retries: CounterVec,
    pub(super) activities_closed: CounterVec,
    pub(super) llm_calls: CounterVec,
    pub(super) llm_input_tokens: CounterVec,
    pub(super) llm_output_tokens: CounterVec,
    pub(super) llm_cost: CounterVec,
    pub(super) workflow_task_schedule_to_start: HistogramVec,
    pub(super) activity_schedule_to_start: HistogramVec,
    pub(super) activity_schedule_to_close: HistogramVec,
    pub(super) run_duration: HistogramVec,
    pub(super) append_duration: HistogramVec,
    /// Ready time of each scheduled workflow task, by run.
    workflow_tasks: HashMap<RunKey, (String, TimeMs)>,
    /// Open activities, by run and activity id.
    activities: HashMap<(RunKey, u32), PendingActivity>,
}

impl Default for EventMetrics {
    fn default() -> Self {
        EventMetrics::new()
    }
}

const WT: &[&str] = &["workflow_type"];
const AT: &[&str] = &["activity_type"];
const MODEL: &[&str] = &["model"];

impl EventMetrics {
    /// Every family at zero.
    pub fn new() -> EventMetrics {
        EventMetrics {
            workflow_types: LabelCap::new(WORKFLOW_TYPE_LABELS_MAX),
            activity_types: LabelCap::new(ACTIVITY_TYPE_LABELS_MAX),
            models: LabelCap::new(MODEL_LABELS_MAX),
            appends: CounterVec::counter(
                "steadfast_appends_total",
                "Appends to run histories by this process (each durable before it was acknowledged).",
                &[],
            ),
            events: CounterVec::counter(
                "steadfast_events_appended_total",
                "Events appended by this process, by event kind.",
                &["kind"],
            ),
            runs_started: CounterVec::counter(
                "steadfast_runs_started_total",
                "Runs started (RunStarted appended), by workflow type.",
                WT,
            ),
            runs_closed: CounterVec::counter(
                "steadfast_runs_closed_total",
                "Runs closed, by workflow type and status (completed, failed, cancelled, terminated, timed_out, continued_as_new).",
                &["workflow_type", "status"],
            ),
            workflow_tasks_dispatched: CounterVec::counter(
                "steadfast_workflow_tasks_dispatched_total",
                "Workflow tasks handed to a worker (WorkflowTaskStarted), by workflow type.",
                WT,
            ),
            workflow_tasks_failed: CounterVec::counter(
                "steadfast_workflow_tasks_failed_total",
                "Workflow task failures recorded (the run is held until fixed code completes a task), by workflow type.",
                WT,
            ),
            workflow_tasks_timed_out: CounterVec::counter(
                "steadfast_workflow_tasks_timed_out_total",
                "Workflow tasks whose worker went silent past the workflow-task timeout, by workflow type.",
                WT,
            ),
            activity_tasks_dispatched: CounterVec::counter(
                "steadfast_activity_tasks_dispatched_total",
                "Activity attempts handed to a worker (ActivityStarted), by activity type.",
                AT,
            ),
            activity_attempts_failed: CounterVec::counter(
                "steadfast_activity_attempts_failed_total",
                "Activity attempts that failed (ActivityFailed), retried or final, by activity type.",
                AT,
            ),
            activity_timeouts: CounterVec::counter(
                "steadfast_activity_timeouts_total",
                "Activity attempts that timed out, by activity type and timeout (start_to_close, schedule_to_close, heartbeat).",
                &["activity_type", "timeout"],
            ),
            activity_retries: CounterVec::counter(
                "steadfast_activity_retries_total",
                "Failed or timed-out attempts followed by another attempt (retry policy), by activity type.",
                AT,
            ),
            activities_closed: CounterVec::counter(
                "steadfast_activities_closed_total",
                "Activities closed, by activity type and outcome (completed, failed, timed_out, cancelled).",
                &["activity_type", "outcome"],
            ),
            llm_calls: CounterVec::counter(
                "steadfast_llm_calls_total",
                "Attempts that reported LLM usage, by model.",
                MODEL,
            ),
            llm_input_tokens: CounterVec::counter(
                "steadfast_llm_input_tokens_total",
                "LLM input tokens reported by activities, by model.",
                MODEL,
            ),
            llm_output_tokens: CounterVec::counter(
                "steadfast_llm_output_tokens_total",
                "LLM output tokens reported by activities, by model.",
                MODEL,
            ),
            llm_cost: CounterVec::counter(
                "steadfast_llm_cost_usd_total",
                "LLM cost reported by activities, in US dollars, by model.",
                MODEL,
            ),
            workflow_task_schedule_to_start: HistogramVec::new(
                "steadfast_workflow_task_schedule_to_start_seconds",
                "From a workflow task being ready to a worker taking it, by workflow type.",
                WT,
                LATENCY_BUCKETS,
            ),
            activity_schedule_to_start: HistogramVec::new(
                "steadfast_activity_schedule_to_start_seconds",
                "From an activity attempt being ready (scheduled, or its retry due) to a worker taking it, by activity type.",
                AT,
                LATENCY_BUCKETS,
            ),
            activity_schedule_to_close: HistogramVec::new(
                "steadfast_activity_schedule_to_close_seconds",
                "From an activity being scheduled to its close (all attempts and backoff), by activity type.",
                AT,
                LATENCY_BUCKETS,
            ),
            run_duration: HistogramVec::new(
                "steadfast_run_duration_seconds",
                "From a run's start to its close, by workflow type and status.",
                &["workflow_type", "status"],
                RUN_BUCKETS,
            ),
            append_duration: HistogramVec::new(
                "steadfast_append_duration_seconds",
                "Time an append took, its fdatasync included when it waited for durability.",
                &[],
                LATENCY_BUCKETS,
            ),
            workflow_tasks: HashMap::new(),
            activities: HashMap::new(),
        }
    }

    /// The label value of workflow type `t` (capped like the counters' labels).
    pub fn workflow_label(&mut self, t: &str) -> String {
        self.workflow_types.value(t)
    }

    /// Remembers what the open runs wait for, so that the latencies of tasks scheduled
    /// before this process started are measured too.
    pub fn seed(&mut self, s: &RunState) {
        if let WorkflowTask::Scheduled {
            not_before_ms,
            since_ms,
            ..
        } = &s.workflow_task
        {
            self.remember_workflow_task(&s.key, &s.workflow_type, (*since_ms).max(*not_before_ms));
        }
        for (id, a) in &s.activities {
            let ready_ms = match a.phase {
                ActivityPhase::Ready { visible_ms } => visible_ms,
                _ => a.scheduled_ms,
            };
            self.remember_activity(
                &s.key,
                *id,
                PendingActivity {
                    activity_type: a.activity_type.clone(),
                    scheduled_ms: a.scheduled_ms,
                    ready_ms,
                },
            );
        }
    }

    fn remember_workflow_task(&mut self, key: &RunKey, wf_type: &str, ready_ms: TimeMs) {
        if self.workflow_tasks.len() < PENDING_MAX || self.workflow_tasks.contains_key(key) {
            self.workflow_tasks
                .insert(key.clone(), (wf_type.to_string(), ready_ms));
        }
    }

    fn remember_activity(&mut self, key: &RunKey, id: u32, p: PendingActivity) {
        let k = (key.clone(), id);
        if self.activities.len() < PENDING_MAX || self.activities.contains_key(&k) {
            self.activities.insert(k, p);
        }
    }

    /// Counts one durable append: `records` as written, `state` the run after them.
    pub fn appended(&mut self, records: &[EventRecord], state: &RunState, elapsed_s: f64) {
        self.appends.add(&[], 1.0);
        self.append_duration.observe(&[], elapsed_s);
        let wf = self.workflow_types.value(&state.workflow_type);
        let key = &state.key;
        for r in records {
            self.events.add(&[r.event.kind().name()], 1.0);
            self.record(key, &wf, state, r);
        }
        if !state.is_open() {
            self.workflow_tasks.remove(key);
            self.activities.retain(|(k, _), _| k != key);
        }
    }

    fn activity_type(&mut self, key: &RunKey, id: u32, state: &RunState) -> String {
        let t = match self.activities.get(&(key.clone(), id)) {
            Some(p) => p.activity_type.clone(),
            None => state
                .activities
                .get(&id)
                .map_or_else(|| "unknown".to_string(), |a| a.activity_type.clone()),
        };
        self.activity_types.value(&t)
    }

    fn usage(&mut self, u: &Usage) {
        let m = self.models.value(if u.model.is_empty() {
            "unknown"
        } else {
            &u.model
        });
        self.llm_calls.add(&[&m], 1.0);
        self.llm_input_tokens.add(&[&m], u.input_tokens as f64);
        self.llm_output_tokens.add(&[&m], u.output_tokens as f64);
        self.llm_cost.add(&[&m], u.cost_micros as f64 / 1e6);
    }

    /// The activity closed at `time_ms` with `outcome`.
    fn activity_closed(&mut self, key: &RunKey, id: u32, at: &str, outcome: &str, time_ms: TimeMs) {
        self.activities_closed.add(&[at, outcome], 1.0);
        if let Some(p) = self.activities.remove(&(key.clone(), id)) {
            self.activity_schedule_to_close
                .observe(&[at], seconds(time_ms - p.scheduled_ms));
        }
    }

    fn retry_due(&mut self, key: &RunKey, id: u32, retry_at_ms: TimeMs) {
        if let Some(p) = self.activities.get_mut(&(key.clone(), id)) {
            p.ready_ms = retry_at_ms;
        }
    }

    fn record(&mut self, key: &RunKey, wf: &str, state: &RunState, r: &EventRecord) {
        let t = r.time_ms;
        match &r.event {
            Event::RunStarted(_) => self.runs_started.add(&[wf], 1.0),
            Event::RunCompleted(_) => self.run_closed(wf, "completed", state, t),
            Event::RunFailed(_) => self.run_closed(wf, "failed", state, t),
            Event::RunCancelled(_) => self.run_closed(wf, "cancelled", state, t),
            Event::RunTerminated(_) => self.run_closed(wf, "terminated", state, t),
            Event::RunTimedOut(_) => self.run_closed(wf, "timed_out", state, t),
            Event::RunContinuedAsNew(_) => self.run_closed(wf, "continued_as_new", state, t),
            Event::WorkflowTaskScheduled(e) => {
                self.remember_workflow_task(key, wf, t.max(e.not_before_ms))
            }
            Event::WorkflowTaskStarted(_) => {
                self.workflow_tasks_dispatched.add(&[wf], 1.0);
                if let Some((_, ready)) = self.workflow_tasks.remove(key) {
                    self.workflow_task_schedule_to_start
                        .observe(&[wf], seconds(t - ready));
                }
            }
            Event::WorkflowTaskFailed(_) => self.workflow_tasks_failed.add(&[wf], 1.0),
            Event::WorkflowTaskTimedOut(_) => self.workflow_tasks_timed_out.add(&[wf], 1.0),
            Event::ActivityScheduled(e) => self.remember_activity(
                key,
                e.command_seq,
                PendingActivity {
                    activity_type: e.activity_type.clone(),
                    scheduled_ms: t,
                    ready_ms: t,
                },
            ),
            Event::ActivityStarted(e) => {
                let at = self.activity_type(key, e.command_seq, state);
                self.activity_tasks_dispatched.add(&[&at], 1.0);
                if let Some(p) = self.activities.get(&(key.clone(), e.command_seq)) {
                    let ready = p.ready_ms;
                    self.activity_schedule_to_start
                        .observe(&[&at], seconds(t - ready));
                }
            }
            Event::ActivityCompleted(e) => {
                let at = self.activity_type(key, e.command_seq, state);
                if let Some(u) = &e.usage {
                    self.usage(u);
                }
                self.activity_closed(key, e.command_seq, &at, "completed", t);
            }
            Event::ActivityFailed(e) => {
                let at = self.activity_type(key, e.command_seq, state);
                if let Some(u) = &e.usage {
                    self.usage(u);
                }
                self.activity_attempts_failed.add(&[&at], 1.0);
                match e.retry_at_ms {
                    Some(due) => {
                        self.activity_retries.add(&[&at], 1.0);
                        self.retry_due(key, e.command_seq, due);
                    }
                    None => self.activity_closed(key, e.command_seq, &at, "failed", t),
                }
            }
            Event::ActivityTimedOut(e) => {
                let at = self.activity_type(key, e.command_seq, state);
                self.activity_timeouts
                    .add(&[&at, timeout_name(e.timeout)], 1.0);
                match e.retry_at_ms {
                    Some(due) => {
                        self.activity_retries.add(&[&at], 1.0);
                        self.retry_due(key, e.command_seq, due);
                    }
                    None => self.activity_closed(key, e.command_seq, &at, "timed_out", t),
                }
            }
            Event::ActivityCancelled(e) => {
                let at = self.activity_type(key, e.command_seq, state);
                self.activity_closed(key, e.command_seq, &at, "cancelled", t);
            }
            Event::ActivityUsageReported(e) => self.usage(&e.usage),
            _ => {}
        }
    }

    fn run_closed(&mut self, wf: &str, status: &str, state: &RunState, time_ms: TimeMs) {
        self.runs_closed.add(&[wf, status], 1.0);
        self.run_duration
            .observe(&[wf, status], seconds(time_ms - state.started_ms));
    }

    /// Appends every family to `out`.
    pub fn render(&self, out: &mut String) {
        for c in [
            &self.appends,
            &self.events,
            &self.runs_started,
            &self.runs_closed,
            &self.workflow_tasks_dispatched,
            &self.workflow_tasks_failed,
            &self.workflow_tasks_timed_out,
            &self.activity_tasks_dispatched,
            &self.activity_attempts_failed,
            &self.activity_timeouts,
            &self.activity_retries,
            &self.activities_closed,
            &self.llm_calls,
            &self.llm_input_tokens,
            &self.llm_output_tokens,
            &self.llm_cost,
        ] {
            c.render(out);
        }
        for h in [
            &self.workflow_task_schedule_to_start,
            &self.activity_schedule_to_start,
            &self.activity_schedule_to_close,
            &self.run_duration,
            &self.append_duration,
        ] {
            h.render(out);
        }
    }
}

fn timeout_name(k: TimeoutKind) -> &'static str {
    match k {
        TimeoutKind::StartToClose => "start_to_close",
        TimeoutKind::ScheduleToClose => "schedule_to_close",
        TimeoutKind::Heartbeat => "heartbeat",
    }
}

/// Milliseconds between two record times, in seconds (never negative: clocks of nodes may
/// disagree a little).
fn seconds(ms: i64) -> f64 {
    ms.max(0) as f64 / 1000.0
}

#[cfg(test)]
mod tests {
    use super::*;
    use steadfast_engine::Payload;
    use steadfast_engine::event as ev;
    use steadfast_engine::state::RunStatus;

    fn rec(seq: u64, time_ms: TimeMs, event: Event) -> EventRecord {
        EventRecord {
            seq,
            time_ms,
            hash: [0; 32],
            event,
        }
    }

    fn started(workflow_type: &str) -> (RunState, EventRecord) {
        let key = RunKey::new("default", steadfast_engine::RunId::new_v7());
        let r = rec(
            1,
            1_000,
            Event::RunStarted(ev::RunStarted {
                workflow_type: workflow_type.into(),
                workflow_id: "w".into(),
                task_queue: "q".into(),
                input: Payload::default(),
                run_timeout_ms: 0,
                budget: ev::Budget::default(),
                continued_from: None,
                identity: String::new(),
                random_seed: 0,
                parent: None,
                forked_from: None,
                schedule: None,
                traceparent: None,
            }),
        );
        (RunState::start(key, &r).unwrap(), r)
    }

    fn usage(model: &str, input_tokens: u64, cost_micros: u64) -> ev::Usage {
        ev::Usage {
            input_tokens,
            output_tokens: 7,
            cost_micros,
            model: model.into(),
        }
    }

    /// One run through a retried activity, appended in four appends as the server would:
    /// counts, latencies measured from the ready time (the retry's due time for a retry),
    /// usage by model, and nothing remembered once the run closed.
    #[test]
    fn a_run_with_a_retried_llm_activity_is_counted_once() {
        let mut m = EventMetrics::new();
        let (mut s, start) = started("agent");
        let wts = |seq, t| {
            rec(
                seq,
                t,
                Event::WorkflowTaskScheduled(ev::WorkflowTaskScheduled {
                    task_queue: "q".into(),
                    attempt: 1,
                    not_before_ms: 0,
                }),
            )
        };
        m.appended(&[start, wts(2, 1_000)], &s, 0.001);
        let task_started = rec(
            3,
            1_250,
            Event::WorkflowTaskStarted(ev::WorkflowTaskStarted {
                scheduled_seq: 2,
                worker: "w".into(),
                timeout_ms: 0,
            }),
        );
        m.appended(&[task_started], &s, 0.001);
        let scheduled = rec(
            4,
            2_000,
            Event::ActivityScheduled(ev::ActivityScheduled {
                command_seq: 1,
                activity_type: "llm".into(),
                input: Payload::default(),
                options: Default::default(),
            }),
        );
        let attempt = |seq, t, attempt| {
            rec(
                seq,
                t,
                Event::ActivityStarted(ev::ActivityStarted {
                    command_seq: 1,
                    attempt,
                    worker: "w".into(),
                    effect: ev::Effect::Read,
                }),
            )
        };
        m.appended(&[scheduled, attempt(5, 2_100, 1)], &s, 0.001);
        let failed = rec(
            6,
            2_500,
            Event::ActivityFailed(ev::ActivityFailed {
                command_seq: 1,
                attempt: 1,
                failure: Default::default(),
                retry_at_ms: Some(3_000),
                duration_ms: 400,
                usage: Some(usage("gpt", 10, 500)),
            }),
        );
        m.appended(&[failed], &s, 0.001);
        let completed = rec(
            8,
            3_500,
            Event::ActivityCompleted(ev::ActivityCompleted {
                command_seq: 1,
                attempt: 2,
                result: Payload::default(),
                duration_ms: 100,
                usage: Some(usage("gpt", 20, 1_500)),
                reconciled: false,
            }),
        );
        let closed = rec(
            9,
            4_000,
            Event::RunCompleted(ev::RunCompleted {
                command_seq: 2,
                result: Payload::default(),
            }),
        );
        m.appended(&[attempt(7, 3_400, 2)], &s, 0.001);
        s.status = RunStatus::Completed;
        m.appended(&[completed, closed], &s, 0.001);

        assert_eq!(m.appends.get(&[]), 6.0);
        assert_eq!(m.runs_started.get(&["agent"]), 1.0);
        assert_eq!(m.runs_closed.get(&["agent", "completed"]), 1.0);
        assert_eq!(m.workflow_tasks_dispatched.get(&["agent"]), 1.0);
        assert_eq!(m.activity_tasks_dispatched.get(&["llm"]), 2.0);
        assert_eq!(m.activity_attempts_failed.get(&["llm"]), 1.0);
        assert_eq!(m.activity_retries.get(&["llm"]), 1.0);
        assert_eq!(m.activities_closed.get(&["llm", "completed"]), 1.0);
        assert_eq!(m.llm_calls.get(&["gpt"]), 2.0);
        assert_eq!(m.llm_input_tokens.get(&["gpt"]), 30.0);
        assert_eq!(m.llm_output_tokens.get(&["gpt"]), 14.0);
        assert!((m.llm_cost.get(&["gpt"]) - 0.002).abs() < 1e-12);
        assert_eq!(m.events.get(&["ActivityStarted"]), 2.0);
        assert_eq!(m.activity_schedule_to_start.count(&["llm"]), 2);
        assert_eq!(m.workflow_task_schedule_to_start.count(&["agent"]), 1);
        assert_eq!(m.activity_schedule_to_close.count(&["llm"]), 1);
        assert_eq!(m.run_duration.count(&["agent", "completed"]), 1);
        let mut out = String::new();
        m.render(&mut out);
        // 100 ms to the first start, 400 ms from the retry's due time to the second.
        assert!(
            out.contains(
                "steadfast_activity_schedule_to_start_seconds_sum{activity_type=\"llm\"} 0.5\n"
            ),
            "{out}"
        );
        assert!(
            out.contains("steadfast_workflow_task_schedule_to_start_seconds_sum{workflow_type=\"agent\"} 0.25\n"),
            "{out}"
        );
        assert!(
            out.contains("steadfast_run_duration_seconds_sum{workflow_type=\"agent\",status=\"completed\"} 3\n"),
            "{out}"
        );
        assert!(m.activities.is_empty() && m.workflow_tasks.is_empty());
    }

    /// Tasks scheduled before the process started are timed from the state they were read
    /// from; seeding counts nothing.
    #[test]
    fn seeded_tasks_are_timed_but_not_counted() {
        let mut m = EventMetrics::new();
        let (mut s, _) = started("agent");
        s.activities.insert(
            3,
            steadfast_engine::state::ActivityState {
                activity_type: "tool".into(),
                options: Default::default(),
                scheduled_ms: 1_000,
                scheduled_seq: 2,
                attempt: 2,
                phase: ActivityPhase::Ready { visible_ms: 5_000 },
                last_failure: None,
                ordinal: 1,
                cancel_requested: false,
                approved: false,
                approved_input_seq: None,
            },
        );
        m.seed(&s);
        assert_eq!(m.appends.get(&[]), 0.0);
        let start = rec(
            9,
            5_200,
            Event::ActivityStarted(ev::ActivityStarted {
                command_seq: 3,
                attempt: 2,
                worker: "w".into(),
                effect: ev::Effect::Read,
            }),
        );
        s.activities.remove(&3);
        m.appended(&[start], &s, 0.0);
        assert_eq!(m.activity_tasks_dispatched.get(&["tool"]), 1.0);
        let mut out = String::new();
        m.render(&mut out);
        assert!(
            out.contains(
                "steadfast_activity_schedule_to_start_seconds_sum{activity_type=\"tool\"} 0.2\n"
            ),
            "{out}"
        );
    }

    #[test]
    fn workflow_types_past_the_cap_are_counted_as_other() {
        let mut m = EventMetrics::new();
        for i in 0..WORKFLOW_TYPE_LABELS_MAX + 5 {
            let (s, r) = started(&format!("type-{i}"));
            m.appended(&[r], &s, 0.0);
        }
        assert_eq!(m.runs_started.get(&["type-0"]), 1.0);
        assert_eq!(m.runs_started.get(&[super::super::registry::OTHER]), 5.0);
    }
}
