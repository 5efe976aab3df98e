//! `steadfast history diff RUN_A RUN_B`: where two runs of a workflow went different ways.
//!
//! Histories are aligned by what the workflow code asked for, not by event seq: two runs with
//! the same commands can have different seqs (a retried attempt, a late signal, a fork's
//! extra events), and the question a user asks is "which step did the agent take differently".
//! Each history becomes its list of commands in issue order (the event a command produced:
//! ActivityScheduled, TimerStarted, RunCompleted, ...), with the workflow task that issued it;
//! command i of A is compared with command i of B by kind, name (activity type, signal name...)
//! and input (size and blake3 hash). The first mismatch is the divergence. Activities at the
//! same position are compared further: result, attempts, usage, cost and durations. Pure
//! functions over wire events; the network part is `history.rs`.

use serde_json::{Map, Value, json};
use steadfast_proto::v1 as pb;
use steadfast_proto::v1::history_event::Attributes as A;

use super::fmt::{duration, payload_json, usd};
use super::render::failure_line;

/// Hex digits of a blake3 hash shown for a payload (enough to tell payloads apart by eye).
const HASH_SHORT_HEX: usize = 12;

/// A payload by size and hash (and the payload itself, for `--show-payloads`).
#[derive(Debug, Clone, PartialEq)]
pub struct Digest {
    pub size: usize,
    pub blake3: String,
    pub encoding: String,
    payload: pb::Payload,
}

impl Digest {
    fn of(p: &pb::Payload) -> Digest {
        Digest {
            size: p.data.len(),
            blake3: hex::encode(blake3::hash(&p.data).as_bytes()),
            encoding: p.encoding.clone(),
            payload: p.clone(),
        }
    }

    /// A digest of text that is not a payload on the wire (a failure message, a progress
    /// line), so that it compares the same way.
    fn text(s: &str) -> Digest {
        Digest::of(&pb::Payload {
            encoding: String::new(),
            data: serde_json::to_vec(s).unwrap_or_default(),
        })
    }

    fn same(a: &Option<Digest>, b: &Option<Digest>) -> bool {
        a.as_ref().map(|d| &d.blake3) == b.as_ref().map(|d| &d.blake3)
    }

    fn short(d: &Option<Digest>) -> String {
        match d {
            None => "-".into(),
            Some(d) => format!("{} B {}", d.size, &d.blake3[..HASH_SHORT_HEX]),
        }
    }

    fn json(d: &Option<Digest>, payloads: bool) -> Value {
        let Some(d) = d else {
            return Value::Null;
        };
        let mut m = Map::new();
        m.insert("size".into(), d.size.into());
        m.insert("blake3".into(), d.blake3.clone().into());
        if payloads {
            m.insert("value".into(), payload_json(&d.payload));
        }
        Value::Object(m)
    }
}

/// One command as its event recorded it.
#[derive(Debug, Clone)]
pub struct Command {
    /// The workflow's own number for the command.
    pub command_seq: u32,
    /// The command's kind (`ScheduleActivity`, `CompleteRun`, ...).
    pub kind: &'static str,
    /// Activity or workflow type, signal, patch or update name; empty when the kind has none.
    pub name: String,
    /// What the command carried (activity input, run result, ...).
    pub input: Option<Digest>,
    /// 1-based: the workflow task that issued it (the WorkflowTaskCompleted events up to it: a
    /// task's completion is recorded just before the events of its commands).
    pub workflow_task: u32,
    /// The event's seq in its history (for `history show`; not used to align).
    pub seq: u64,
}

impl Command {
    fn same(&self, o: &Command) -> bool {
        self.kind == o.kind && self.name == o.name && Digest::same(&self.input, &o.input)
    }

    fn line(&self) -> String {
        let name = if self.name.is_empty() {
            String::new()
        } else {
            format!(" {}", self.name)
        };
        format!(
            "{}{name} input {} (command #{}, workflow task {}, seq {})",
            self.kind,
            Digest::short(&self.input),
            self.command_seq,
            self.workflow_task,
            self.seq
        )
    }

    fn json(&self, payloads: bool) -> Value {
        json!({
            "command_seq": self.command_seq, "kind": self.kind, "name": self.name,
            "input": Digest::json(&self.input, payloads), "workflow_task": self.workflow_task, "seq": self.seq,
        })
    }
}

/// What one activity came to.
#[derive(Debug, Clone, Default)]
pub struct Activity {
    pub outcome: &'static str,
    pub result: Option<Digest>,
    pub attempts: u32,
    pub tokens: u64,
    pub cost_micros: u64,
    /// The recorded duration of the attempt that closed it (as the worker measured it).
    pub duration_ms: u64,
    /// Scheduled to closed, by the events' times.
    pub wall_ms: u64,
    scheduled_ms: i64,
}

impl Activity {
    fn json(&self, payloads: bool) -> Value {
        json!({
            "outcome": self.outcome, "result": Digest::json(&self.result, payloads), "attempts": self.attempts,
            "tokens": self.tokens, "cost_micros": self.cost_micros, "duration_ms": self.duration_ms, "wall_ms": self.wall_ms,
        })
    }
}

/// One history reduced to what the diff compares.
#[derive(Debug, Clone, Default)]
pub struct Side {
    pub commands: Vec<Command>,
    /// By command_seq.
    pub activities: std::collections::BTreeMap<u32, Activity>,
    pub status: &'static str,
    pub events: usize,
    pub tokens: u64,
    pub cost_micros: u64,
    pub duration_ms: u64,
}

fn usage_of(u: &Option<pb::Usage>) -> (u64, u64) {
    u.as_ref()
        .map(|u| (u.input_tokens + u.output_tokens, u.cost_micros))
        .unwrap_or((0, 0))
}

/// Reduces a history to its commands, activities and totals.
pub fn side(events: &[pb::HistoryEvent]) -> Side {
    let mut s = Side {
        status: "running",
        events: events.len(),
        ..Default::default()
    };
    let mut task = 0u32;
    for e in events {
        let Some(a) = &e.attributes else { continue };
        let text = |s: &str| Some(Digest::text(s));
        let pay = |p: &Option<pb::Payload>| p.as_ref().map(Digest::of);
        let cmd = |seq: u32, kind: &'static str, name: String, input: Option<Digest>| Command {
            command_seq: seq,
            kind,
            name,
            input,
            workflow_task: task,
            seq: e.seq,
        };
        let command = match a {
            A::WorkflowTaskCompleted(_) => {
                task += 1;
                None
            }
            A::ActivityScheduled(x) => {
                s.activities.insert(
                    x.command_seq,
                    Activity {
                        outcome: "open",
                        scheduled_ms: e.time_ms,
                        ..Default::default()
                    },
                );
                Some(cmd(
                    x.command_seq,
                    "ScheduleActivity",
                    x.activity_type.clone(),
                    pay(&x.input),
                ))
            }
            A::TimerStarted(x) => Some(cmd(
                x.command_seq,
                "StartTimer",
                String::new(),
                text(&format!("{}", x.fire_at_ms.saturating_sub(e.time_ms))),
            )),
            A::SignalWaitStarted(x) => Some(cmd(x.command_seq, "WaitSignal", x.name.clone(), None)),
            A::ProgressReported(x) => Some(cmd(
                x.command_seq,
                "ReportProgress",
                String::new(),
                text(&format!("{}/{} {}", x.done, x.total, x.message)),
            )),
            A::PartialResultRecorded(x) => Some(cmd(
                x.command_seq,
                "RecordPartialResult",
                String::new(),
                pay(&x.result),
            )),
            A::RunCompleted(x) => Some(cmd(
                x.command_seq,
                "CompleteRun",
                String::new(),
                pay(&x.result),
            )),
            A::RunFailed(x) => Some(cmd(
                x.command_seq,
                "FailRun",
                String::new(),
                x.failure.as_ref().map(|f| Digest::text(&failure_line(f))),
            )),
            A::RunCancelled(x) => Some(cmd(
                x.command_seq,
                "CancelRun",
                String::new(),
                pay(&x.partial_result),
            )),
            A::RunContinuedAsNew(x) => Some(cmd(
                x.command_seq,
                "ContinueAsNew",
                String::new(),
                pay(&x.input),
            )),
            A::ChildRunRequested(x) => Some(cmd(
                x.command_seq,
                "StartChild",
                x.workflow_type.clone(),
                pay(&x.input),
            )),
            A::RunSignalRequested(x) => Some(cmd(
                x.command_seq,
                "SignalRun",
                x.name.clone(),
                pay(&x.input),
            )),
            A::PatchMarker(x) => Some(cmd(x.command_seq, "Patch", x.patch_id.clone(), None)),
            // Attributes set at start (command seq 0) are not a command of the code.
            A::SearchAttributesUpserted(x) if x.command_seq > 0 => Some(cmd(
                x.command_seq,
                "UpsertSearchAttributes",
                crate::cli::search::attributes_text(&x.attributes),
                None,
            )),
            A::UpdateCompleted(x) => Some(cmd(
                x.command_seq,
                "CompleteUpdate",
                String::new(),
                pay(&x.result),
            )),
            A::UpdateRejected(x) => Some(cmd(
                x.command_seq,
                "RejectUpdate",
                String::new(),
                text(&x.reason),
            )),
            A::ActivityCancelRequested(x) => Some(cmd(
                x.command_seq,
                "CancelActivity",
                String::new(),
                text(&x.activity_id.to_string()),
            )),
            A::TimerCancelled(x) => Some(cmd(
                x.command_seq,
                "CancelTimer",
                String::new(),
                text(&x.timer_id.to_string()),
            )),
            _ => None,
        };
        if let Some(c) = command {
            s.commands.push(c);
        }
        activity_event(&mut s, e, a);
        s.status = match a {
            A::RunCompleted(_) => "completed",
            A::RunFailed(_) => "failed",
            A::RunCancelled(_) => "cancelled",
            A::RunTerminated(_) => "terminated",
            A::RunTimedOut(_) => "timed_out",
            A::RunContinuedAsNew(_) => "continued_as_new",
            _ => s.status,
        };
    }
    if let (Some(f), Some(l)) = (events.first(), events.last()) {
        s.duration_ms = l.time_ms.saturating_sub(f.time_ms).max(0) as u64;
    }
    s
}

/// Folds an activity's own events (attempts, outcome, usage) into its entry.
fn activity_event(s: &mut Side, e: &pb::HistoryEvent, a: &A) {
    let (id, usage) = match a {
        A::ActivityStarted(x) => (x.command_seq, None),
        A::ActivityCompleted(x) => (x.command_seq, Some(&x.usage)),
        A::ActivityUsageReported(x) => (x.command_seq, Some(&x.usage)),
        A::ActivityFailed(x) => (x.command_seq, None),
        A::ActivityTimedOut(x) => (x.command_seq, None),
        A::ActivityCancelled(x) => (x.command_seq, None),
        _ => return,
    };
    let Some(act) = s.activities.get_mut(&id) else {
        return;
    };
    if let Some(u) = usage {
        let (t, c) = usage_of(u);
        act.tokens += t;
        act.cost_micros += c;
        s.tokens += t;
        s.cost_micros += c;
    }
    let wall = (e.time_ms.saturating_sub(act.scheduled_ms)).max(0) as u64;
    match a {
        A::ActivityStarted(x) => act.attempts = act.attempts.max(x.attempt),
        A::ActivityCompleted(x) => {
            act.outcome = "completed";
            act.result = x.result.as_ref().map(Digest::of);
            act.duration_ms = x.duration_ms;
            act.wall_ms = wall;
        }
        // A failure with a retry time is one attempt; the final one closes the activity.
        A::ActivityFailed(x) if x.retry_at_ms == 0 => {
            act.outcome = "failed";
            act.result = x.failure.as_ref().map(|f| Digest::text(&failure_line(f)));
            act.duration_ms = x.duration_ms;
            act.wall_ms = wall;
        }
        A::ActivityTimedOut(x) if x.retry_at_ms == 0 => {
            act.outcome = "timed_out";
            act.wall_ms = wall;
        }
        A::ActivityCancelled(_) => {
            act.outcome = "cancelled";
            act.wall_ms = wall;
        }
        _ => {}
    }
}

/// An activity as one side recorded it: the command that scheduled it and what it came to.
type ActivityOf<'a> = Option<(&'a Command, &'a Activity)>;

/// The comparison of two histories.
#[derive(Debug)]
pub struct Diff {
    pub a: Side,
    pub b: Side,
    /// Index into the command lists of the first command that differs (or that one side
    /// lacks); `None` when both issued the same commands.
    pub divergence: Option<usize>,
}

/// Compares two histories.
pub fn diff(a: &[pb::HistoryEvent], b: &[pb::HistoryEvent]) -> Diff {
    let (a, b) = (side(a), side(b));
    let n = a.commands.len().max(b.commands.len());
    let divergence = (0..n).find(|&i| match (a.commands.get(i), b.commands.get(i)) {
        (Some(x), Some(y)) => !x.same(y),
        _ => true,
    });
    Diff { a, b, divergence }
}

impl Diff {
    /// Whether both runs issued the same commands with the same inputs (results of
    /// activities may still differ; they are reported).
    pub fn identical(&self) -> bool {
        self.divergence.is_none()
    }

    /// Activity pairs at the same command position: (position, A's, B's).
    fn activity_rows(&self) -> Vec<(usize, ActivityOf<'_>, ActivityOf<'_>)> {
        fn pick(s: &Side, i: usize) -> Option<(&Command, &Activity)> {
            s.commands
                .get(i)
                .filter(|c| c.kind == "ScheduleActivity")
                .and_then(|c| s.activities.get(&c.command_seq).map(|a| (c, a)))
        }
        let n = self.a.commands.len().max(self.b.commands.len());
        (0..n)
            .filter_map(|i| {
                let (x, y) = (pick(&self.a, i), pick(&self.b, i));
                (x.is_some() || y.is_some()).then_some((i, x, y))
            })
            .collect()
    }

    /// The diff for a terminal: both runs in a line each, the divergence, then one block per
    /// activity.
    pub fn to_text(&self, run_a: &str, run_b: &str, payloads: bool) -> String {
        let mut out = String::new();
        for (tag, run, s) in [("A", run_a, &self.a), ("B", run_b, &self.b)] {
            out += &format!(
                "{tag} {run}  {}  {} events  {} commands  {} activities  {} tokens  {}  {}\n",
                s.status,
                s.events,
                s.commands.len(),
                s.activities.len(),
                s.tokens,
                usd(s.cost_micros),
                duration(s.duration_ms)
            );
        }
        match self.divergence {
            None => {
                out += &format!(
                    "same commands: {} in both (the same kinds, names and inputs)\n",
                    self.a.commands.len()
                )
            }
            Some(i) => {
                out += &format!("first divergence at command {} of the code:\n", i + 1);
                for (tag, s) in [("A", &self.a), ("B", &self.b)] {
                    let what =
                        s.commands.get(i).map(Command::line).unwrap_or_else(|| {
                            format!("no command (it issued {})", s.commands.len())
                        });
                    out += &format!("  {tag}: {what}\n");
                    if payloads && let Some(d) = s.commands.get(i).and_then(|c| c.input.as_ref()) {
                        out += &format!("     input: {}\n", payload_json(&d.payload));
                    }
                }
            }
        }
        let rows = self.activity_rows();
        if !rows.is_empty() {
            out += "activities (A | B):\n";
        }
        for (i, x, y) in rows {
            out += &activity_text(i, x, y, payloads);
        }
        out
    }

    /// The diff as one JSON object: `{identical, a, b, first_divergence, activities}`.
    pub fn to_json(&self, run_a: &str, run_b: &str, payloads: bool) -> Value {
        let side_json = |run: &str, s: &Side| {
            json!({
                "run_id": run, "status": s.status, "events": s.events, "commands": s.commands.len(),
                "activities": s.activities.len(), "tokens": s.tokens, "cost_micros": s.cost_micros, "duration_ms": s.duration_ms,
            })
        };
        let cmd = |s: &Side, i: usize| {
            s.commands
                .get(i)
                .map(|c| c.json(payloads))
                .unwrap_or(Value::Null)
        };
        let first = self
            .divergence
            .map(|i| json!({ "index": i + 1, "a": cmd(&self.a, i), "b": cmd(&self.b, i) }));
        let acts: Vec<Value> = self
            .activity_rows()
            .into_iter()
            .map(|(i, x, y)| {
                let one = |v: Option<(&Command, &Activity)>| {
                    v.map(|(c, a)| {
                        let mut o = a.json(payloads);
                        o["command_seq"] = c.command_seq.into();
                        o["activity_type"] = c.name.clone().into();
                        o["input"] = Digest::json(&c.input, payloads);
                        o
                    })
                    .unwrap_or(Value::Null)
                };
                json!({ "index": i + 1, "differs": differences(x, y), "a": one(x), "b": one(y) })
            })
            .collect();
        json!({
            "identical": self.identical(),
            "a": side_json(run_a, &self.a),
            "b": side_json(run_b, &self.b),
            "first_divergence": first,
            "activities": acts,
        })
    }
}

/// Which fields of an activity pair differ (`type`, `input`, `outcome`, `result`,
/// `attempts`, `tokens`, `cost`, `duration`); every field when one side has none.
fn differences(
    x: Option<(&Command, &Activity)>,
    y: Option<(&Command, &Activity)>,
) -> Vec<&'static str> {
    let (Some((cx, ax)), Some((cy, ay))) = (x, y) else {
        return vec!["missing"];
    };
    let mut d = Vec::new();
    let checks = [
        ("type", cx.name != cy.name),
        ("input", !Digest::same(&cx.input, &cy.input)),
        ("outcome", ax.outcome != ay.outcome),
        ("result", !Digest::same(&ax.result, &ay.result)),
        ("attempts", ax.attempts != ay.attempts),
        ("tokens", ax.tokens != ay.tokens),
        ("cost", ax.cost_micros != ay.cost_micros),
        ("duration", ax.duration_ms != ay.duration_ms),
    ];
    for (name, differs) in checks {
        if differs {
            d.push(name);
        }
    }
    d
}

fn activity_text(
    i: usize,
    x: Option<(&Command, &Activity)>,
    y: Option<(&Command, &Activity)>,
    payloads: bool,
) -> String {
    let head = |v: Option<(&Command, &Activity)>| {
        v.map(|(c, a)| format!("#{} {} {}", c.command_seq, c.name, a.outcome))
            .unwrap_or_else(|| "-".into())
    };
    let diffs = differences(x, y);
    let mark = if diffs.is_empty() {
        "same".to_string()
    } else {
        format!("differs: {}", diffs.join(", "))
    };
    let mut out = format!("  [{}] {} | {}  ({mark})\n", i + 1, head(x), head(y));
    let field = |label: &str, f: &dyn Fn(&Command, &Activity) -> String| {
        let v = |s: Option<(&Command, &Activity)>| {
            s.map(|(c, a)| f(c, a)).unwrap_or_else(|| "-".into())
        };
        format!("      {label:<9}{} | {}\n", v(x), v(y))
    };
    out += &field("input", &|c, _| Digest::short(&c.input));
    out += &field("result", &|_, a| Digest::short(&a.result));
    out += &field("attempts", &|_, a| a.attempts.to_string());
    out += &field("usage", &|_, a| {
        format!("{} tokens {}", a.tokens, usd(a.cost_micros))
    });
    out += &field("duration", &|_, a| {
        format!("{} (wall {})", duration(a.duration_ms), duration(a.wall_ms))
    });
    if payloads {
        let show = |d: &Option<Digest>| {
            d.as_ref()
                .map(|d| payload_json(&d.payload).to_string())
                .unwrap_or_else(|| "-".into())
        };
        for (tag, v) in [("A", x), ("B", y)] {
            if let Some((c, a)) = v {
                out += &format!(
                    "      {tag} input:  {}\n      {tag} result: {}\n",
                    show(&c.input),
                    show(&a.result)
                );
            }
        }
    }
    out
}
