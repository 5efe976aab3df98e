//! Spans as a pure function of a run's history: the same records give the same spans, with
//! the same ids, on any node, before or after any restart.

use std::collections::BTreeMap;

use steadfast_engine::event::{ChildOutcome, Event, EventRecord, TimeMs, TimeoutKind, Usage};
use steadfast_engine::ids::RunKey;

/// The activity type of the SDK's LLM calls, named in the span for readers.
pub const LLM_ACTIVITY: &str = "llm.chat";

/// One attribute value (the OTLP `AnyValue`s this exporter writes).
#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    /// A string.
    Str(String),
    /// An integer.
    Int(i64),
    /// A float.
    Double(f64),
}

/// A key and its value.
pub type Attr = (&'static str, Value);

/// A point in a span (an attempt and its outcome).
#[derive(Clone, Debug, PartialEq)]
pub struct SpanEvent {
    /// Name (`attempt`).
    pub name: &'static str,
    /// When (ms since the epoch).
    pub time_ms: TimeMs,
    /// What.
    pub attrs: Vec<Attr>,
}

/// One closed operation.
#[derive(Clone, Debug, PartialEq)]
pub struct Span {
    /// The run's trace.
    pub trace_id: [u8; 16],
    /// A function of the run and the seq of the event that opened the operation.
    pub span_id: [u8; 8],
    /// The root span's id for operations; for the root, the caller's span if any.
    pub parent: Option<[u8; 8]>,
    /// `workflow_task`, `activity <type>`, `timer`, `signal_wait <name>`, `child <type>`,
    /// `run <type>`.
    pub name: String,
    /// Start (ms).
    pub start_ms: TimeMs,
    /// End (ms).
    pub end_ms: TimeMs,
    /// Attributes.
    pub attrs: Vec<Attr>,
    /// Attempts.
    pub events: Vec<SpanEvent>,
    /// `Some(message)` when the operation ended in error.
    pub error: Option<String>,
    /// The seq of the event that closed it: the span is exported once the export cursor
    /// passes it.
    pub closed_seq: u64,
}

/// The trace of a run: the first 16 bytes of blake3("steadfast-trace" ‖ namespace ‖ run id).
pub fn trace_id(key: &RunKey) -> [u8; 16] {
    let mut h = blake3::Hasher::new();
    h.update(b"steadfast-trace\0");
    h.update(key.namespace.as_bytes());
    h.update(b"\0");
    h.update(key.run_id.0.as_bytes());
    h.finalize().as_bytes()[..16].try_into().expect("16 bytes")
}

/// The span of the operation that the event at `opened_seq` opened (kind: `run`,
/// `workflow_task`, `activity`, `timer`, `signal_wait`, `child`).
pub fn span_id(key: &RunKey, kind: &str, opened_seq: u64) -> [u8; 8] {
    let mut h = blake3::Hasher::new();
    h.update(b"steadfast-span\0");
    h.update(key.namespace.as_bytes());
    h.update(b"\0");
    h.update(key.run_id.0.as_bytes());
    h.update(kind.as_bytes());
    h.update(b"\0");
    h.update(&opened_seq.to_le_bytes());
    h.finalize().as_bytes()[..8].try_into().expect("8 bytes")
}

/// The W3C `traceparent` of an activity's span: what a worker passes to activity code so
/// that its own spans nest under the activity. `given` is the run's RunStarted.traceparent:
/// the run's trace is the caller's when it gave one.
pub fn activity_traceparent(key: &RunKey, given: Option<&str>, scheduled_seq: u64) -> String {
    let trace = given
        .and_then(|t| parse_traceparent(t).ok())
        .map_or_else(|| trace_id(key), |(t, _)| t);
    traceparent(&trace, &span_id(key, "activity", scheduled_seq))
}

/// The W3C `traceparent` a child run starts with: the span of the parent's child operation
/// (opened by its ChildRunRequested at `requested_seq`), in the parent's trace (the caller's
/// when the parent was started with `parent_given`). Recorded in the child's RunStarted, so
/// the child's trace continues the parent's.
pub fn child_traceparent(
    parent: &RunKey,
    parent_given: Option<&str>,
    requested_seq: u64,
) -> String {
    let trace = parent_given
        .and_then(|t| parse_traceparent(t).ok())
        .map_or_else(|| trace_id(parent), |(t, _)| t);
    traceparent(&trace, &span_id(parent, "child", requested_seq))
}

/// The trace id and parent span id of a W3C `traceparent` (version 00:
/// `00-<32 hex trace id>-<16 hex span id>-<2 hex flags>`, lowercase, ids not all zero), or
/// what is wrong with it.
pub fn parse_traceparent(v: &str) -> Result<([u8; 16], [u8; 8]), &'static str> {
    let parts: Vec<&str> = v.split('-').collect();
    let [version, trace, span, flags] = parts[..] else {
        return Err("it is not four dash-separated fields (version-traceid-spanid-flags)");
    };
    let lower_hex = |s: &str| {
        s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    };
    if version != "00" {
        return Err("only version 00 is understood");
    }
    if trace.len() != 32 || !lower_hex(trace) {
        return Err("the trace id is not 32 lowercase hex digits");
    }
    if span.len() != 16 || !lower_hex(span) {
        return Err("the parent span id is not 16 lowercase hex digits");
    }
    if flags.len() != 2 || !lower_hex(flags) {
        return Err("the flags are not 2 lowercase hex digits");
    }
    let mut t = [0u8; 16];
    let mut p = [0u8; 8];
    hex::decode_to_slice(trace, &mut t).map_err(|_| "the trace id is not hex")?;
    hex::decode_to_slice(span, &mut p).map_err(|_| "the parent span id is not hex")?;
    if t == [0; 16] {
        return Err("the trace id is all zeros (invalid in W3C trace context)");
    }
    if p == [0; 8] {
        return Err("the parent span id is all zeros (invalid in W3C trace context)");
    }
    Ok((t, p))
}

/// `00-<trace id>-<span id>-01`.
pub fn traceparent(trace: &[u8; 16], span: &[u8; 8]) -> String {
    format!("00-{}-{}-01", hex::encode(trace), hex::encode(span))
}

#[derive(Clone)]
struct OpenActivity {
    seq: u64,
    time_ms: TimeMs,
    activity_type: String,
    attempts: BTreeMap<u32, TimeMs>,
    events: Vec<SpanEvent>,
    usage: Option<Usage>,
}

fn add_usage(total: &mut Option<Usage>, u: &Usage) {
    let t = total.get_or_insert_with(Usage::default);
    t.input_tokens += u.input_tokens;
    t.output_tokens += u.output_tokens;
    t.cost_micros += u.cost_micros;
    t.model.clone_from(&u.model);
}

fn timeout_name(t: TimeoutKind) -> &'static str {
    match t {
        TimeoutKind::StartToClose => "start_to_close",
        TimeoutKind::ScheduleToClose => "schedule_to_close",
        TimeoutKind::Heartbeat => "heartbeat",
    }
}

/// Every operation of `records` (a run's history from seq 1, in order) that is closed in
/// them. Operations still open when the run closes end with it (`steadfast.closed_by` =
/// `run_closed`), so each operation gets exactly one span.
pub fn spans(key: &RunKey, records: &[EventRecord]) -> Vec<Span> {
    let mut b = SpanBuilder::new(key.clone());
    let mut out = Vec::new();
    for r in records {
        b.feed(r, &mut out);
    }
    out
}

/// A run's operations still open after the records fed so far: what [`spans`] keeps between
/// records, kept between exports so that a run's history is read once, from where the last
/// export stopped, not from seq 1 each time. Small: one entry per open operation.
#[derive(Clone)]
pub struct SpanBuilder {
    key: RunKey,
    /// The run's trace: its own, or the caller's given at StartWorkflow.
    trace: [u8; 16],
    root: [u8; 8],
    /// A traceparent given at StartWorkflow: the run continues the caller's trace, its root
    /// under the caller's span. (Validated when the run started; one from an imported history
    /// that does not parse is ignored.)
    given: Option<([u8; 16], [u8; 8])>,
    run: Option<(TimeMs, String, String)>,
    wft_scheduled: BTreeMap<u64, TimeMs>,
    wft_started: BTreeMap<u64, (u64, String)>,
    activities: BTreeMap<u32, OpenActivity>,
    timers: BTreeMap<u32, (u64, TimeMs)>,
    waits: Vec<(u64, TimeMs, String)>,
    children: BTreeMap<u32, (u64, TimeMs, String, String)>,
    /// The seq of the last record fed (0: none).
    fed_seq: u64,
}

impl SpanBuilder {
    /// Nothing fed yet: feed the history from seq 1.
    pub fn new(key: RunKey) -> SpanBuilder {
        SpanBuilder {
            trace: trace_id(&key),
            root: span_id(&key, "run", 1),
            key,
            given: None,
            run: None,
            wft_scheduled: BTreeMap::new(),
            wft_started: BTreeMap::new(),
            activities: BTreeMap::new(),
            timers: BTreeMap::new(),
            waits: Vec::new(),
            children: BTreeMap::new(),
            fed_seq: 0,
        }
    }

    /// The seq of the last record fed (0 when none): the next one to feed follows it.
    pub fn fed_seq(&self) -> u64 {
        self.fed_seq
    }

    /// Feeds the next record of the history (`r.seq` = [`SpanBuilder::fed_seq`] + 1); the
    /// spans it closes go to `out`.
    pub fn feed(&mut self, r: &EventRecord, out: &mut Vec<Span>) {
        debug_assert_eq!(r.seq, self.fed_seq + 1, "records fed out of order");
        self.fed_seq = r.seq;
        let (trace, root) = (self.trace, self.root);
        // Captures only `self.key` (closures borrow disjoint fields): the open maps stay mutable.
        let op = |kind: &str, seq: u64, name: String, start: TimeMs| Span {
            trace_id: trace,
            span_id: span_id(&self.key, kind, seq),
            parent: Some(root),
            name,
            start_ms: start,
            end_ms: start,
            attrs: Vec::new(),
            events: Vec::new(),
            error: None,
            closed_seq: 0,
        };
        let (seq, t) = (r.seq, r.time_ms);
        match &r.event {
            Event::RunStarted(a) => {
                self.given = a
                    .traceparent
                    .as_deref()
                    .and_then(|t| parse_traceparent(t).ok());
                if let Some((trace, _)) = self.given {
                    self.trace = trace;
                }
                self.run = Some((t, a.workflow_type.clone(), a.workflow_id.clone()));
            }
            Event::WorkflowTaskScheduled(_) => {
                self.wft_scheduled.insert(seq, t);
            }
            Event::WorkflowTaskStarted(a) => {
                self.wft_started
                    .insert(seq, (a.scheduled_seq, a.worker.clone()));
            }
            Event::WorkflowTaskCompleted(_)
            | Event::WorkflowTaskFailed(_)
            | Event::WorkflowTaskTimedOut(_) => {
                let (started_seq, error) = match &r.event {
                    Event::WorkflowTaskCompleted(a) => (a.started_seq, None),
                    Event::WorkflowTaskFailed(a) => (a.started_seq, Some(format!("{:?}", a.cause))),
                    Event::WorkflowTaskTimedOut(a) => (a.started_seq, Some("timed out".into())),
                    _ => unreachable!("matched above"),
                };
                let Some((sched, worker)) = self.wft_started.remove(&started_seq) else {
                    return;
                };
                let Some(start) = self.wft_scheduled.remove(&sched) else {
                    return;
                };
                let mut s = op("workflow_task", sched, "workflow_task".into(), start);
                s.end_ms = t;
                s.closed_seq = seq;
                s.attrs.push(("steadfast.worker", Value::Str(worker)));
                s.error = error;
                out.push(s);
            }
            Event::ActivityScheduled(a) => {
                self.activities.insert(
                    a.command_seq,
                    OpenActivity {
                        seq,
                        time_ms: t,
                        activity_type: a.activity_type.clone(),
                        attempts: BTreeMap::new(),
                        events: Vec::new(),
                        usage: None,
                    },
                );
            }
            Event::ActivityStarted(a) => {
                if let Some(o) = self.activities.get_mut(&a.command_seq) {
                    o.attempts.insert(a.attempt, t);
                }
            }
            Event::ActivityUsageReported(a) => {
                if let Some(o) = self.activities.get_mut(&a.command_seq) {
                    add_usage(&mut o.usage, &a.usage);
                }
            }
            Event::ActivityCompleted(a) => {
                if let Some(mut o) = self.activities.remove(&a.command_seq) {
                    if let Some(u) = &a.usage {
                        add_usage(&mut o.usage, u);
                    }
                    o.events
                        .push(attempt(a.attempt, t, "completed", &o, vec![]));
                    out.push(close_activity(&op, o, seq, t, None));
                }
            }
            Event::ActivityFailed(a) => {
                if let Some(o) = self.activities.get_mut(&a.command_seq) {
                    if let Some(u) = &a.usage {
                        add_usage(&mut o.usage, u);
                    }
                    let ev = attempt(
                        a.attempt,
                        t,
                        "failed",
                        o,
                        vec![("exception.type", Value::Str(a.failure.error_type.clone()))],
                    );
                    o.events.push(ev);
                    if a.retry_at_ms.is_none() {
                        let o = self.activities.remove(&a.command_seq).expect("present");
                        let err = format!("failed ({})", a.failure.error_type);
                        out.push(close_activity(&op, o, seq, t, Some(err)));
                    }
                }
            }
            Event::ActivityTimedOut(a) => {
                if let Some(o) = self.activities.get_mut(&a.command_seq) {
                    let ev = attempt(
                        a.attempt,
                        t,
                        "timed_out",
                        o,
                        vec![(
                            "steadfast.timeout",
                            Value::Str(timeout_name(a.timeout).into()),
                        )],
                    );
                    o.events.push(ev);
                    if a.retry_at_ms.is_none() {
                        let o = self.activities.remove(&a.command_seq).expect("present");
                        let err = format!("timed out ({})", timeout_name(a.timeout));
                        out.push(close_activity(&op, o, seq, t, Some(err)));
                    }
                }
            }
            Event::ActivityCancelled(a) => {
                if let Some(o) = self.activities.remove(&a.command_seq) {
                    out.push(close_activity(&op, o, seq, t, Some("cancelled".into())));
                }
            }
            Event::ActivityDenied(a) => {
                if let Some(o) = self.activities.remove(&a.command_seq) {
                    out.push(close_activity(&op, o, seq, t, Some("denied".into())));
                }
            }
            Event::TimerStarted(a) => {
                self.timers.insert(a.command_seq, (seq, t));
            }
            Event::TimerFired(a) => {
                if let Some((s0, t0)) = self.timers.remove(&a.command_seq) {
                    let mut s = op("timer", s0, "timer".into(), t0);
                    s.end_ms = t;
                    s.closed_seq = seq;
                    out.push(s);
                }
            }
            Event::TimerCancelled(a) => {
                if let Some((s0, t0)) = self.timers.remove(&a.timer_id) {
                    let mut s = op("timer", s0, "timer".into(), t0);
                    s.end_ms = t;
                    s.closed_seq = seq;
                    s.attrs
                        .push(("steadfast.closed_by", Value::Str("cancelled".into())));
                    out.push(s);
                }
            }
            Event::ChildRunRequested(a) => {
                self.children.insert(
                    a.command_seq,
                    (seq, t, a.workflow_type.clone(), a.child_run_id.to_string()),
                );
            }
            Event::ChildRunStartFailed(a) => {
                if let Some(c) = self.children.remove(&a.command_seq) {
                    let mut s = child_span(&op, c, seq, t);
                    s.error = Some(format!("not started ({})", a.failure.error_type));
                    out.push(s);
                }
            }
            Event::ChildRunClosed(a) => {
                if let Some(c) = self.children.remove(&a.command_seq) {
                    let mut s = child_span(&op, c, seq, t);
                    s.attrs
                        .push(("steadfast.outcome", Value::Str(a.outcome.as_str().into())));
                    if !matches!(
                        a.outcome,
                        ChildOutcome::Completed | ChildOutcome::ContinuedAsNew
                    ) {
                        s.error = Some(a.outcome.as_str().into());
                    }
                    out.push(s);
                }
            }
            Event::SignalWaitStarted(a) => self.waits.push((seq, t, a.name.clone())),
            Event::SignalReceived(a) => {
                if let Some(i) = self.waits.iter().position(|w| w.2 == a.name) {
                    let (s0, t0, name) = self.waits.remove(i);
                    let mut s = op("signal_wait", s0, format!("signal_wait {name}"), t0);
                    s.end_ms = t;
                    s.closed_seq = seq;
                    s.attrs.push(("steadfast.signal", Value::Str(name)));
                    out.push(s);
                }
            }
            e if e.is_terminal() => {
                let status = e.kind().name();
                let closed = |mut s: Span| {
                    s.end_ms = t;
                    s.closed_seq = seq;
                    s.attrs
                        .push(("steadfast.closed_by", Value::Str("run_closed".into())));
                    s
                };
                for (sched, start) in std::mem::take(&mut self.wft_scheduled) {
                    out.push(closed(op(
                        "workflow_task",
                        sched,
                        "workflow_task".into(),
                        start,
                    )));
                }
                for (_, o) in std::mem::take(&mut self.activities) {
                    let s = close_activity(&op, o, seq, t, None);
                    out.push(closed(s));
                }
                for (_, (s0, t0)) in std::mem::take(&mut self.timers) {
                    out.push(closed(op("timer", s0, "timer".into(), t0)));
                }
                for (_, c) in std::mem::take(&mut self.children) {
                    out.push(closed(child_span(&op, c, seq, t)));
                }
                for (s0, t0, name) in std::mem::take(&mut self.waits) {
                    let mut s = op("signal_wait", s0, format!("signal_wait {name}"), t0);
                    s.attrs.push(("steadfast.signal", Value::Str(name)));
                    out.push(closed(s));
                }
                if let Some((start, wf_type, wf_id)) = self.run.take() {
                    let error =
                        (!matches!(e, Event::RunCompleted(_) | Event::RunContinuedAsNew(_)))
                            .then(|| status.to_string());
                    out.push(Span {
                        trace_id: self.trace,
                        span_id: self.root,
                        parent: self.given.map(|(_, p)| p),
                        name: format!("run {wf_type}"),
                        start_ms: start,
                        end_ms: t,
                        attrs: vec![
                            ("steadfast.workflow_type", Value::Str(wf_type)),
                            ("steadfast.workflow_id", Value::Str(wf_id)),
                            ("steadfast.run_id", Value::Str(self.key.run_id.to_string())),
                            (
                                "steadfast.namespace",
                                Value::Str(self.key.namespace.clone()),
                            ),
                            ("steadfast.status", Value::Str(status.into())),
                        ],
                        events: Vec::new(),
                        error,
                        closed_seq: seq,
                    });
                }
            }
            _ => {}
        }
    }
}

fn attempt(
    n: u32,
    t: TimeMs,
    outcome: &'static str,
    o: &OpenActivity,
    mut more: Vec<Attr>,
) -> SpanEvent {
    let mut attrs = vec![
        ("steadfast.attempt", Value::Int(i64::from(n))),
        ("steadfast.outcome", Value::Str(outcome.into())),
    ];
    if let Some(started) = o.attempts.get(&n) {
        attrs.push(("steadfast.attempt_started_ms", Value::Int(*started)));
    }
    attrs.append(&mut more);
    SpanEvent {
        name: "attempt",
        time_ms: t,
        attrs,
    }
}

/// The span of a child run as the parent sees it: from its request to `t` (its close, its
/// failure to start, or the parent's close). The child's own trace continues under it.
fn child_span(
    op: &impl Fn(&str, u64, String, TimeMs) -> Span,
    (opened, start, workflow_type, run_id): (u64, TimeMs, String, String),
    seq: u64,
    t: TimeMs,
) -> Span {
    let mut s = op("child", opened, format!("child {workflow_type}"), start);
    s.end_ms = t;
    s.closed_seq = seq;
    s.attrs
        .push(("steadfast.child_workflow_type", Value::Str(workflow_type)));
    s.attrs.push(("steadfast.child_run_id", Value::Str(run_id)));
    s
}

fn close_activity(
    op: &impl Fn(&str, u64, String, TimeMs) -> Span,
    o: OpenActivity,
    seq: u64,
    t: TimeMs,
    error: Option<String>,
) -> Span {
    let mut s = op(
        "activity",
        o.seq,
        format!("activity {}", o.activity_type),
        o.time_ms,
    );
    s.end_ms = t;
    s.closed_seq = seq;
    s.error = error;
    s.attrs.push((
        "steadfast.activity_type",
        Value::Str(o.activity_type.clone()),
    ));
    s.attrs
        .push(("steadfast.attempts", Value::Int(o.events.len() as i64)));
    if let Some(u) = o.usage {
        // The SDK's LLM client speaks the OpenAI chat API (OpenAI itself or a compatible server).
        s.attrs.push(("gen_ai.system", Value::Str("openai".into())));
        s.attrs
            .push(("gen_ai.operation.name", Value::Str("chat".into())));
        s.attrs.push(("gen_ai.request.model", Value::Str(u.model)));
        s.attrs.push((
            "gen_ai.usage.input_tokens",
            Value::Int(i64::try_from(u.input_tokens).unwrap_or(i64::MAX)),
        ));
        s.attrs.push((
            "gen_ai.usage.output_tokens",
            Value::Int(i64::try_from(u.output_tokens).unwrap_or(i64::MAX)),
        ));
        s.attrs.push((
            "steadfast.cost_usd",
            Value::Double(u.cost_micros as f64 / 1_000_000.0),
        ));
    }
    s.events = o.events;
    s
}
