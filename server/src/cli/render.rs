//! Rendering of runs for people (text, tables) and for programs (JSON). Pure functions.

use serde_json::{Value, json};
use steadfast_proto::v1 as pb;
use steadfast_proto::v1::waiting_on::What;

use super::fmt::{cut, duration, opt_payload_json, payload_short, rfc3339_s, time_json, usd};

/// The CLI name of a wire status (`running`, `timed_out`, ...).
pub fn status_name(status: i32) -> &'static str {
    crate::convert::status_from(status)
        .map(|s| s.as_str())
        .unwrap_or("unknown")
}

/// One waiting-on entry as JSON, tagged by `kind` (the `--waiting` names).
pub fn waiting_json(w: &pb::WaitingOn) -> Value {
    match &w.what {
        Some(What::Activity(a)) => json!({
            "kind": "activity", "activity_id": a.activity_id, "activity_type": a.activity_type,
            "attempt": a.attempt, "state": a.state, "since": time_json(a.since_ms),
            "next_retry": time_json(a.next_retry_ms),
        }),
        Some(What::Timer(t)) => {
            json!({ "kind": "timer", "timer_id": t.timer_id, "fire_at": time_json(t.fire_at_ms) })
        }
        Some(What::Signal(s)) => json!({
            "kind": "signal", "name": s.name, "question": s.question, "choices": s.choices, "since": time_json(s.since_ms),
        }),
        Some(What::Budget(b)) => {
            json!({ "kind": "budget", "dimension": b.dimension, "limit": b.limit, "used": b.used })
        }
        Some(What::Reconciliation(r)) => json!({
            "kind": "reconciliation", "activity_id": r.activity_id, "activity_type": r.activity_type, "attempt": r.attempt,
        }),
        Some(What::WorkflowTask(t)) => json!({
            "kind": "workflow_task", "held_reason": if t.held_reason.is_empty() { Value::Null } else { Value::from(t.held_reason.clone()) },
        }),
        Some(What::Idle(_)) => json!({ "kind": "idle" }),
        Some(What::Approval(a)) => json!({
            "kind": "approval", "activity_id": a.activity_id, "activity_type": a.activity_type,
            "attempt": a.attempt, "reason": a.reason, "declared_by": a.declared_by,
            "arguments_bytes": a.arguments_bytes, "arguments_blake3": hex::encode(&a.arguments_hash),
            "since": time_json(a.since_ms),
            "arguments_preview": if a.arguments_preview.is_empty() { Value::Null } else { Value::from(a.arguments_preview.clone()) },
        }),
        Some(What::Build(b)) => json!({ "kind": "build", "build_id": b.build_id }),
        Some(What::Child(c)) => json!({
            "kind": "child", "command_seq": c.command_seq, "run_id": c.run_id, "workflow_type": c.workflow_type, "state": c.state,
        }),
        None => json!({ "kind": "unknown" }),
    }
}

/// One waiting-on entry in a few words.
pub fn waiting_short(w: &pb::WaitingOn) -> String {
    match &w.what {
        Some(What::Activity(a)) => {
            let mut s = format!(
                "activity #{} {} attempt {} {}",
                a.activity_id, a.activity_type, a.attempt, a.state
            );
            if a.next_retry_ms != 0 {
                s.push_str(&format!(" until {}", rfc3339_s(a.next_retry_ms)));
            }
            s
        }
        Some(What::Timer(t)) => format!("timer #{} until {}", t.timer_id, rfc3339_s(t.fire_at_ms)),
        Some(What::Signal(s)) => format!("signal {:?}", s.name),
        Some(What::Budget(b)) => format!(
            "budget: {} {}",
            b.dimension,
            budget_used(&b.dimension, b.used, b.limit)
        ),
        Some(What::Reconciliation(r)) => format!(
            "reconcile #{} {} attempt {}",
            r.activity_id, r.activity_type, r.attempt
        ),
        Some(What::WorkflowTask(t)) if !t.held_reason.is_empty() => {
            format!("held: {}", t.held_reason)
        }
        Some(What::WorkflowTask(_)) => "workflow task".into(),
        Some(What::Build(b)) => format!("a worker of build {:?}", b.build_id),
        Some(What::Idle(_)) => {
            "idle: its code waits for nothing the server tracks (a cancel or terminate ends it)"
                .into()
        }
        Some(What::Child(c)) => format!("child {} {} {}", c.workflow_type, c.run_id, c.state),
        Some(What::Approval(a)) => {
            let mut s = format!(
                "approval #{} {}: {} (arguments {} B, blake3:{})",
                a.activity_id,
                a.activity_type,
                a.reason,
                a.arguments_bytes,
                hex::encode(a.arguments_hash.get(..6).unwrap_or_default())
            );
            if !a.arguments_preview.is_empty() {
                s.push_str(&format!(" arguments: {}", a.arguments_preview));
            }
            s
        }
        None => "?".into(),
    }
}

fn budget_used(dimension: &str, used: u64, limit: u64) -> String {
    match dimension {
        "cost" => format!("{}/{}", usd(used), usd(limit)),
        "duration" => format!("{}/{}", duration(used), duration(limit)),
        _ => format!("{used}/{limit}"),
    }
}

/// Everything the run says it waits on, joined.
pub fn waiting_summary(run: &pb::RunInfo) -> String {
    if run.waiting_on.is_empty() {
        return "-".into();
    }
    run.waiting_on
        .iter()
        .map(waiting_short)
        .collect::<Vec<_>>()
        .join("; ")
}

fn budget_json(b: &pb::Budget) -> Value {
    json!({
        "max_tokens": b.max_tokens, "max_cost_micros": b.max_cost_micros,
        "max_activities": b.max_activities, "max_duration_ms": b.max_duration_ms,
    })
}

/// A budget in one line; 0 fields read "none".
pub fn budget_line(b: &pb::Budget) -> String {
    let n = |v: u64, f: &dyn Fn(u64) -> String| if v == 0 { "none".into() } else { f(v) };
    format!(
        "max_tokens={} max_cost={} max_activities={} max_duration={}",
        n(b.max_tokens, &|v| v.to_string()),
        n(b.max_cost_micros, &usd),
        n(b.max_activities, &|v| v.to_string()),
        n(b.max_duration_ms, &duration),
    )
}

/// A failure as JSON.
pub fn failure_json(f: &pb::Failure) -> Value {
    json!({ "message": f.message, "type": f.r#type, "non_retryable": f.non_retryable, "details": f.details })
}

/// A run as JSON (`run show --json`, `run list --json`).
pub fn run_json(r: &pb::RunInfo) -> Value {
    let u = r.usage.clone().unwrap_or_default();
    let nonempty = |s: &str| {
        if s.is_empty() {
            Value::Null
        } else {
            Value::from(s)
        }
    };
    json!({
        "namespace": r.namespace,
        "run_id": r.run_id,
        "workflow_id": r.workflow_id,
        "workflow_type": r.workflow_type,
        "task_queue": r.task_queue,
        "status": status_name(r.status),
        "started": time_json(r.started_ms),
        "started_ms": r.started_ms,
        "closed": time_json(r.closed_ms),
        "closed_ms": if r.closed_ms == 0 { Value::Null } else { Value::from(r.closed_ms) },
        "history_length": r.history_length,
        "history_bytes": r.history_bytes,
        "usage": {
            "input_tokens": u.input_tokens, "output_tokens": u.output_tokens,
            "tokens": u.input_tokens.saturating_add(u.output_tokens),
            "cost_micros": u.cost_micros, "activities": u.activities, "llm_calls": u.llm_calls,
        },
        "budget": budget_json(&r.budget.unwrap_or_default()),
        "waiting_on": r.waiting_on.iter().map(waiting_json).collect::<Vec<_>>(),
        "progress": r.progress.as_ref().map(|p| json!({
            "done": p.done, "total": p.total, "message": p.message, "time": time_json(p.time_ms),
        })),
        "result": opt_payload_json(&r.result),
        "failure": r.failure.as_ref().map(failure_json),
        "cancel_requested": r.cancel_requested,
        "continued_from": nonempty(&r.continued_from),
        "continued_to": nonempty(&r.continued_to),
        "parent_run_id": nonempty(&r.parent_run_id),
        "build": nonempty(&r.build),
        "auto_upgrade": r.auto_upgrade,
        "schedule": (!r.schedule.is_empty()).then(|| json!({
            "name": r.schedule, "slot_ms": r.schedule_slot_ms, "slot": time_json(r.schedule_slot_ms),
        })),
        "forked_from": (!r.forked_from_run_id.is_empty()).then(|| json!({
            "run_id": r.forked_from_run_id, "seq": r.forked_from_seq,
        })),
        "search_attributes": super::search::attributes_json(&r.search_attributes),
        "memo": super::search::memo_json(&r.memo),
        "failed_activity_types": r.failed_activity_types,
        "children": r.children.iter().map(|c| json!({
            "command_seq": c.command_seq, "run_id": c.run_id, "workflow_type": c.workflow_type,
            "workflow_id": c.workflow_id, "state": c.state,
            "parent_close_policy": pb::ParentClosePolicy::try_from(c.parent_close_policy)
                .map(|p| p.as_str_name().trim_start_matches("PARENT_CLOSE_POLICY_").to_ascii_lowercase())
                .unwrap_or_default(),
        })).collect::<Vec<_>>(),
    })
}

/// A run for people (`run show`): one `key: value` per line, the waits indented below.
pub fn run_text(r: &pb::RunInfo) -> String {
    let u = r.usage.clone().unwrap_or_default();
    let mut lines = vec![
        ("run", format!("{} (namespace {})", r.run_id, r.namespace)),
        (
            "workflow",
            format!("{} (id {})", r.workflow_type, r.workflow_id),
        ),
        ("task queue", r.task_queue.clone()),
        (
            "status",
            format!(
                "{}{}",
                status_name(r.status),
                if r.cancel_requested && r.closed_ms == 0 {
                    " (cancel requested)"
                } else {
                    ""
                }
            ),
        ),
        ("started", rfc3339_s(r.started_ms)),
    ];
    if r.closed_ms != 0 {
        let took = (r.closed_ms - r.started_ms).max(0) as u64;
        lines.push((
            "closed",
            format!("{} (after {})", rfc3339_s(r.closed_ms), duration(took)),
        ));
    }
    lines.push((
        "history",
        format!("{} events, {} bytes", r.history_length, r.history_bytes),
    ));
    lines.push((
        "usage",
        format!(
            "{} activities, {} LLM calls, {} tokens ({} in, {} out), {}",
            u.activities,
            u.llm_calls,
            u.input_tokens.saturating_add(u.output_tokens),
            u.input_tokens,
            u.output_tokens,
            usd(u.cost_micros)
        ),
    ));
    lines.push(("budget", budget_line(&r.budget.unwrap_or_default())));
    if let Some(p) = &r.progress {
        lines.push((
            "progress",
            format!(
                "{}/{} {} ({})",
                p.done,
                p.total,
                p.message,
                rfc3339_s(p.time_ms)
            ),
        ));
    }
    if r.auto_upgrade || !r.build.is_empty() {
        lines.push(("build", build_line(r)));
    }
    if !r.continued_from.is_empty() {
        lines.push(("continued from", r.continued_from.clone()));
    }
    if !r.continued_to.is_empty() {
        lines.push(("continued to", r.continued_to.clone()));
    }
    if !r.forked_from_run_id.is_empty() {
        lines.push((
            "forked from",
            format!(
                "{} at seq {} (seqs 1..={} are its history)",
                r.forked_from_run_id, r.forked_from_seq, r.forked_from_seq
            ),
        ));
    }
    if !r.parent_run_id.is_empty() {
        lines.push(("parent", r.parent_run_id.clone()));
    }
    if !r.search_attributes.is_empty() {
        lines.push((
            "attributes",
            super::search::attributes_text(&r.search_attributes),
        ));
    }
    if let Some(m) = &r.memo {
        lines.push(("memo", payload_short(m, 200)));
    }
    if !r.failed_activity_types.is_empty() {
        lines.push(("failed types", r.failed_activity_types.join(", ")));
    }
    if let Some(p) = &r.result {
        lines.push(("result", payload_short(p, 200)));
    }
    if let Some(f) = &r.failure {
        lines.push(("failure", failure_line(f)));
    }
    let mut out: String = lines.iter().map(|(k, v)| format!("{k:<15}{v}\n")).collect();
    if !r.children.is_empty() {
        out.push_str("children\n");
        for c in &r.children {
            out.push_str(&format!(
                "  - #{} {} {} ({})\n",
                c.command_seq, c.run_id, c.workflow_type, c.state
            ));
        }
    }
    if !r.waiting_on.is_empty() {
        out.push_str("waiting on\n");
        for w in &r.waiting_on {
            out.push_str(&format!("  - {}\n", waiting_short(w)));
            if let Some(What::Signal(s)) = &w.what {
                if !s.question.is_empty() {
                    out.push_str(&format!("    question: {}\n", s.question));
                }
                if !s.choices.is_empty() {
                    out.push_str(&format!("    choices:  {}\n", s.choices.join(" | ")));
                }
            }
        }
    }
    out
}

/// A failure in one line: `message [type, non-retryable]`.
pub fn failure_line(f: &pb::Failure) -> String {
    let mut tags = Vec::new();
    if !f.r#type.is_empty() {
        tags.push(f.r#type.clone());
    }
    if f.non_retryable {
        tags.push("non-retryable".into());
    }
    if tags.is_empty() {
        f.message.clone()
    } else {
        format!("{} [{}]", f.message, tags.join(", "))
    }
}

/// A plain-text table: columns padded to their widest cell, two spaces apart, the last one
/// unpadded. Readable without colour, stable for tests.
pub fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: &mut dyn Iterator<Item = &str>| {
        let cells: Vec<&str> = cells.collect();
        let mut s = String::new();
        for (i, cell) in cells.iter().enumerate() {
            if i + 1 == cells.len() {
                s.push_str(cell);
            } else {
                s.push_str(&format!("{cell:<w$}  ", w = widths[i]));
            }
        }
        s.trim_end().to_string() + "\n"
    };
    let mut out = line(&mut header.iter().copied());
    for row in rows {
        out.push_str(&line(&mut row.iter().map(String::as_str)));
    }
    out
}

/// The `run list` table.
/// The build line of `run show`.
fn build_line(r: &pb::RunInfo) -> String {
    if r.auto_upgrade {
        "auto-upgrade (each workflow task goes to the task queue's current build)".into()
    } else {
        format!("pinned to {}", r.build)
    }
}

/// The build column: the pinned build, `auto-upgrade`, or `-` (not pinned yet).
fn build_short(r: &pb::RunInfo) -> String {
    if r.auto_upgrade {
        "auto-upgrade".into()
    } else if r.build.is_empty() {
        "-".into()
    } else {
        cut(&r.build, 24)
    }
}

pub fn runs_table(runs: &[pb::RunInfo]) -> String {
    let rows: Vec<Vec<String>> = runs
        .iter()
        .map(|r| {
            let u = r.usage.clone().unwrap_or_default();
            vec![
                r.run_id.clone(),
                cut(&r.workflow_id, 40),
                cut(&r.workflow_type, 30),
                status_name(r.status).to_string(),
                rfc3339_s(r.started_ms),
                u.activities.to_string(),
                u.input_tokens.saturating_add(u.output_tokens).to_string(),
                usd(u.cost_micros),
                build_short(r),
                waiting_summary(r),
            ]
        })
        .collect();
    table(
        &[
            "RUN ID",
            "WORKFLOW ID",
            "TYPE",
            "STATUS",
            "STARTED",
            "STEPS",
            "TOKENS",
            "COST",
            "BUILD",
            "WAITING ON",
        ],
        &rows,
    )
}

/// The inbox (`run list --waiting signal`): one row per open signal wait, with its question
/// and choices.
pub fn inbox_table(runs: &[pb::RunInfo]) -> String {
    let mut rows = Vec::new();
    for r in runs {
        for w in &r.waiting_on {
            if let Some(What::Signal(s)) = &w.what {
                rows.push(vec![
                    r.run_id.clone(),
                    cut(&r.workflow_id, 40),
                    cut(&r.workflow_type, 30),
                    s.name.clone(),
                    rfc3339_s(s.since_ms),
                    if s.choices.is_empty() {
                        "-".into()
                    } else {
                        s.choices.join("|")
                    },
                    if s.question.is_empty() {
                        "-".into()
                    } else {
                        s.question.clone()
                    },
                ]);
            }
        }
    }
    table(
        &[
            "RUN ID",
            "WORKFLOW ID",
            "TYPE",
            "SIGNAL",
            "WAITING SINCE",
            "CHOICES",
            "QUESTION",
        ],
        &rows,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn signal_run() -> pb::RunInfo {
        pb::RunInfo {
            namespace: "default".into(),
            run_id: "r1".into(),
            workflow_id: "ticket-7".into(),
            workflow_type: "triage".into(),
            status: pb::RunStatus::Running as i32,
            started_ms: 1_000,
            waiting_on: vec![pb::WaitingOn {
                what: Some(What::Signal(pb::WaitSignal {
                    name: "approve".into(),
                    question: "Refund $40?".into(),
                    choices: vec!["yes".into(), "no".into()],
                    since_ms: 2_000,
                })),
            }],
            result: Some(pb::Payload {
                encoding: String::new(),
                data: b"[1]".to_vec(),
            }),
            ..Default::default()
        }
    }

    #[test]
    fn run_json_shape() {
        let v = run_json(&signal_run());
        assert_eq!(v["run_id"], "r1");
        assert_eq!(v["status"], "running");
        assert_eq!(v["started"], "1970-01-01T00:00:01.000Z");
        assert_eq!(v["closed"], Value::Null);
        assert_eq!(v["result"], json!([1]));
        assert_eq!(v["failure"], Value::Null);
        assert_eq!(v["usage"]["tokens"], 0);
        assert_eq!(
            v["waiting_on"][0],
            json!({
                "kind": "signal", "name": "approve", "question": "Refund $40?", "choices": ["yes", "no"],
                "since": "1970-01-01T00:00:02.000Z",
            })
        );
    }

    #[test]
    fn an_idle_run_names_its_idleness() {
        let mut run = signal_run();
        run.waiting_on = vec![pb::WaitingOn {
            what: Some(What::Idle(pb::WaitIdle {})),
        }];
        assert_eq!(run_json(&run)["waiting_on"][0], json!({ "kind": "idle" }));
        let text = run_text(&run);
        assert!(
            text.contains("waiting on\n  - idle: its code waits for nothing the server tracks"),
            "{text}"
        );
        assert!(waiting_summary(&run).starts_with("idle"));
    }

    #[test]
    fn tables_and_text() {
        let runs = vec![signal_run()];
        let t = runs_table(&runs);
        let lines: Vec<&str> = t.lines().collect();
        assert!(
            lines[0].starts_with("RUN ID  WORKFLOW ID  TYPE    STATUS   STARTED"),
            "{t}"
        );
        assert!(lines[0].ends_with("COST  BUILD  WAITING ON"), "{t}");
        assert!(lines[1].ends_with("$0    -      signal \"approve\""), "{t}");
        let inbox = inbox_table(&runs);
        assert!(
            inbox
                .lines()
                .nth(1)
                .unwrap()
                .ends_with("yes|no   Refund $40?"),
            "{inbox}"
        );
        let text = run_text(&runs[0]);
        assert!(text.contains("status         running\n"), "{text}");
        assert!(text.contains("    question: Refund $40?\n"), "{text}");
        assert!(text.contains("result         [1]\n"), "{text}");
    }
}
