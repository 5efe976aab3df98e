//! Spans as a pure function of a run's history: the same records give the same spans, with
//! the same ids, on any node, before or after any restart.

use std::collections::BTreeMap;

use steadfast_engine::event::{Event, EventRecord, TimeMs, TimeoutKind, Usage};
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
    /// `workflow_task`, `activity <type>`, `timer`, `signal_wait <name>`, `run <type>`.
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
/// `workflow_task`, `activity`, `timer`, `signal_wait`).
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
    // A traceparent given at StartWorkflow: the run continues the caller's trace, its root
    // under the caller's span. (Validated when the run started; one from an imported
    // history that does not parse is ignored.)
    let given = records.first().and_then(|r| match &r.event {
        Event::RunStarted(a) => a
            .traceparent
            .as_deref()
            .and_then(|t| parse_traceparent(t).ok()),
        _ => None,
    });
    let trace = given.map_or_else(|| trace_id(key), |(t, _)| t);
    let root = span_id(key, "run", 1);
    let mut out = Vec::new();
    let mut run: Option<(TimeMs, String, String)> = None;
    let mut wft_scheduled: BTreeMap<u64, TimeMs> = BTreeMap::new();
    let mut wft_started: BTreeMap<u64, (u64, String)> = BTreeMap::new();
    let mut activities: BTreeMap<u32, OpenActivity> = BTreeMap::new();
    let mut timers: BTreeMap<u32, (u64, TimeMs)> = BTreeMap::new();
    let mut waits: Vec<(u64, TimeMs, String)> = Vec::new();
    let op = |kind: &str, seq: u64, name: String, start: TimeMs| Span {
        trace_id: trace,
        span_id: span_id(key, kind, seq),
        parent: Some(root),
        name,
        start_ms: start,
        end_ms: start,
        attrs: Vec::new(),
        events: Vec::new(),
        error: None,
        closed_seq: 0,
    };
    for r in records {
        let (seq, t) = (r.seq, r.time_ms);
        match &r.event {
            Event::RunStarted(a) => {
                run = Some((t, a.workflow_type.clone(), a.workflow_id.clone()));
            }
            Event::WorkflowTaskScheduled(_) => {
                wft_scheduled.insert(seq, t);
            }
            Event::WorkflowTaskStarted(a) => {
                wft_started.insert(seq, (a.scheduled_seq, a.worker.clone()));
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
                let Some((sched, worker)) = wft_started.remove(&started_seq) else {
                    continue;
                };
                let Some(start) = wft_scheduled.remove(&sched) else {
                    continue;
                };
                let mut s = op("workflow_task", sched, "workflow_task".into(), start);
                s.end_ms = t;
                s.closed_seq = seq;
                s.attrs.push(("steadfast.worker", Value::Str(worker)));
                s.error = error;
                out.push(s);
            }
            Event::ActivityScheduled(a) => {
                activities.insert(
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
                if let Some(o) = activities.get_mut(&a.command_seq) {
                    o.attempts.insert(a.attempt, t);
                }
            }
            Event::ActivityUsageReported(a) => {
                if let Some(o) = activities.get_mut(&a.command_seq) {
                    add_usage(&mut o.usage, &a.usage);
                }
            }
            Event::ActivityCompleted(a) => {
                if let Some(mut o) = activities.remove(&a.command_seq) {
                    if let Some(u) = &a.usage {
                        add_usage(&mut o.usage, u);
                    }
                    o.events
                        .push(attempt(a.attempt, t, "completed", &o, vec![]));
                    out.push(close_activity(&op, o, seq, t, None));
                }
            }
            Event::ActivityFailed(a) => {
                if let Some(o) = activities.get_mut(&a.command_seq) {
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
                        let o = activities.remove(&a.command_seq).expect("present");
                        let err = format!("failed ({})", a.failure.error_type);
                        out.push(close_activity(&op, o, seq, t, Some(err)));
                    }
                }
            }
            Event::ActivityTimedOut(a) => {
                if let Some(o) = activities.get_mut(&a.command_seq) {
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
                        let o = activities.remove(&a.command_seq).expect("present");
                        let err = format!("timed out ({})", timeout_name(a.timeout));
                        out.push(close_activity(&op, o, seq, t, Some(err)));
                    }
                }
            }
            Event::ActivityCancelled(a) => {
                if let Some(o) = activities.remove(&a.command_seq) {
                    out.push(close_activity(&op, o, seq, t, Some("cancelled".into())));
                }
            }
            Event::ActivityDenied(a) => {
                if let Some(o) = activities.remove(&a.command_seq) {
                    out.push(close_activity(&op, o, seq, t, Some("denied".into())));
                }
            }
            Event::TimerStarted(a) => {
                timers.insert(a.command_seq, (seq, t));
            }
            Event::TimerFired(a) => {
                if let Some((s0, t0)) = timers.remove(&a.command_seq) {
                    let mut s = op("timer", s0, "timer".into(), t0);
                    s.end_ms = t;
                    s.closed_seq = seq;
                    out.push(s);
                }
            }
            Event::TimerCancelled(a) => {
                if let Some((s0, t0)) = timers.remove(&a.timer_id) {
                    let mut s = op("timer", s0, "timer".into(), t0);
                    s.end_ms = t;
                    s.closed_seq = seq;
                    s.attrs
                        .push(("steadfast.closed_by", Value::Str("cancelled".into())));
                    out.push(s);
                }
            }
            Event::SignalWaitStarted(a) => waits.push((seq, t, a.name.clone())),
            Event::SignalReceived(a) => {
                if let Some(i) = waits.iter().position(|w| w.2 == a.name) {
                    let (s0, t0, name) = waits.remove(i);
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
                for (sched, start) in std::mem::take(&mut wft_scheduled) {
                    out.push(closed(op(
                        "workflow_task",
                        sched,
                        "workflow_task".into(),
                        start,
                    )));
                }
                for (_, o) in std::mem::take(&mut activities) {
                    let s = close_activity(&op, o, seq, t, None);
                    out.push(closed(s));
                }
                for (_, (s0, t0)) in std::mem::take(&mut timers) {
                    out.push(closed(op("timer", s0, "timer".into(), t0)));
                }
                for (s0, t0, name) in std::mem::take(&mut waits) {
                    let mut s = op("signal_wait", s0, format!("signal_wait {name}"), t0);
                    s.attrs.push(("steadfast.signal", Value::Str(name)));
                    out.push(closed(s));
                }
                if let Some((start, wf_type, wf_id)) = run.take() {
                    let error =
                        (!matches!(e, Event::RunCompleted(_) | Event::RunContinuedAsNew(_)))
                            .then(|| status.to_string());
                    out.push(Span {
                        trace_id: trace,
                        span_id: root,
                        parent: given.map(|(_, p)| p),
                        name: format!("run {wf_type}"),
                        start_ms: start,
                        end_ms: t,
                        attrs: vec![
                            ("steadfast.workflow_type", Value::Str(wf_type)),
                            ("steadfast.workflow_id", Value::Str(wf_id)),
                            ("steadfast.run_id", Value::Str(key.run_id.to_string())),
                            ("steadfast.namespace", Value::Str(key.namespace.clone())),
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
    out
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
