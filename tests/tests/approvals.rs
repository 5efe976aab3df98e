//! Tool approvals across processes: an activity that needs a human decision (asked for by the
//! workflow's call, or declared by its worker's registration) waits on `approval` without
//! being dispatched; `steadfast run approve` (optionally with edited arguments, recorded)
//! runs it, `run deny` fails it with a typed ApprovalDenied the workflow handles. The wait
//! survives SIGKILLs of the server and of the worker, and a call is asked about, and run,
//! once.

mod agent_common;

use agent_common::{Env, waiting_of};
use anyhow::{Context, Result, ensure};
use serde_json::{Value, json};
use steadfast_proto::v1 as pb;
use steadfast_proto::v1::history_event::Attributes as A;

fn history(env: &Env, run: &str) -> Result<Vec<pb::HistoryEvent>> {
    Ok(env.rt.block_on(env.client().history(run))?)
}

fn result(env: &Env, run: &str) -> Result<Value> {
    let info = env.wait_closed(run)?;
    ensure!(
        info.status() == pb::RunStatus::Completed,
        "run {run} ended {:?}: {:?}",
        info.status(),
        info.failure
    );
    Ok(serde_json::from_str(&env.ok(&["run", "result", run])?)?)
}

fn count(h: &[pb::HistoryEvent], pred: impl Fn(&A) -> bool) -> usize {
    h.iter()
        .filter(|e| e.attributes.as_ref().is_some_and(&pred))
        .count()
}

/// The one approval `run show --json` lists for `run`.
fn approval_of(env: &Env, run: &str) -> Result<Value> {
    let show = env.show(run)?;
    let a = waiting_of(&show, "approval");
    ensure!(a.len() == 1, "{}", show["waiting_on"]);
    Ok(a[0].clone())
}

#[test]
fn approve_with_edited_arguments_and_deny_handled_by_the_workflow() -> Result<()> {
    agent_common::seed();
    let env = Env::start()?;
    let _worker = env.worker()?;
    // Asked for by the call, with a reason.
    let approved = env.start_run(
        "tool_call",
        &json!({ "tool": "write_tool", "approval": "refund over 100 EUR" }).to_string(),
        &[],
    )?;
    // Declared by the worker's registration (gated_tool).
    let denied = env.start_run(
        "tool_call",
        &json!({ "tool": "gated_tool" }).to_string(),
        &[],
    )?;
    for run in [&approved, &denied] {
        env.wait_waiting(run, "approval")?;
    }

    let a = approval_of(&env, &approved)?;
    // As the workflow serialised them (field order of its struct).
    let scheduled_args = br#"{"hang_ms":0,"hang_attempts":0,"note":"as scheduled"}"#.to_vec();
    ensure!(
        a["activity_type"] == "write_tool"
            && a["reason"] == "refund over 100 EUR"
            && a["declared_by"] == ""
            && a["attempt"] == 1
            && a["arguments_bytes"] == scheduled_args.len()
            && a["arguments_blake3"] == hex::encode(blake3::hash(&scheduled_args).as_bytes())
            && a["arguments_preview"].is_null(),
        "the approval names the tool, the reason and the arguments' size and hash, no preview unasked: {a}"
    );
    let d = approval_of(&env, &denied)?;
    ensure!(
        d["activity_type"] == "gated_tool"
            && d["declared_by"].as_str().is_some_and(|w| !w.is_empty())
            && d["reason"]
                .as_str()
                .is_some_and(|r| r.contains("gated_tool")),
        "{d}"
    );
    // The preview, on request.
    let show = env.ok(&["run", "show", &approved, "--json", "--preview"])?;
    let show: Value = serde_json::from_str(&show)?;
    let preview = &waiting_of(&show, "approval")[0]["arguments_preview"];
    ensure!(
        preview.as_str() == std::str::from_utf8(&scheduled_args).ok(),
        "{preview}"
    );
    // The inbox of human decisions.
    let listed: Vec<Value> = env
        .ok(&["run", "list", "--waiting", "approval", "--json"])?
        .lines()
        .map(serde_json::from_str)
        .collect::<Result<_, _>>()?;
    let mut ids: Vec<&str> = listed.iter().filter_map(|r| r["run_id"].as_str()).collect();
    ids.sort_unstable();
    let mut want = vec![approved.as_str(), denied.as_str()];
    want.sort_unstable();
    ensure!(ids == want, "run list --waiting approval: {ids:?}");
    ensure!(
        env.starts(&approved)?.is_empty() && env.starts(&denied)?.is_empty(),
        "nothing runs before a decision"
    );

    // Approve with edited arguments.
    let id = a["activity_id"].to_string();
    let edited = json!({ "hang_ms": 0, "hang_attempts": 0, "note": "edited by a human" });
    env.ok(&[
        "run",
        "approve",
        &approved,
        "--activity",
        &id,
        "--comment",
        "capped",
        "--input",
        &edited.to_string(),
    ])?;
    let out = result(&env, &approved)?;
    ensure!(
        out["tool"]["note"] == "edited by a human",
        "the activity got the edited arguments: {out}"
    );
    let starts = env.starts(&approved)?;
    ensure!(
        starts.len() == 1 && starts[0]["note"] == "edited by a human",
        "{starts:?}"
    );
    let h = history(&env, &approved)?;
    let approval: Vec<&pb::ActivityApproved> = h
        .iter()
        .filter_map(|e| match &e.attributes {
            Some(A::ActivityApproved(a)) => Some(a),
            _ => None,
        })
        .collect();
    ensure!(approval.len() == 1, "{approval:?}");
    let input = approval[0].input.as_ref().context("the edit is recorded")?;
    ensure!(
        serde_json::from_slice::<Value>(&input.data)? == edited
            && approval[0].comment == "capped"
            && !approval[0].identity.is_empty(),
        "{:?}",
        approval[0]
    );
    ensure!(count(&h, |a| matches!(a, A::ApprovalRequested(_))) == 1);

    // Deny: the workflow handles the typed failure.
    let id = d["activity_id"].to_string();
    let (code, _, err) = env.cli(&["run", "deny", &denied, "--activity", &id, "--reason", " "])?;
    ensure!(
        code != 0 && err.contains("reason"),
        "an empty reason: {err}"
    );
    env.ok(&[
        "run",
        "deny",
        &denied,
        "--activity",
        &id,
        "--reason",
        "not to every customer",
    ])?;
    let out = result(&env, &denied)?;
    let msg = out["denied"]
        .as_str()
        .context("the workflow saw a denial")?;
    ensure!(
        msg.contains("[STF-APPROVAL-DENIED]") && msg.contains("not to every customer"),
        "{out}"
    );
    ensure!(env.starts(&denied)?.is_empty(), "a denied tool never runs");
    let h = history(&env, &denied)?;
    ensure!(
        count(
            &h,
            |a| matches!(a, A::ActivityDenied(d) if d.reason == "not to every customer")
        ) == 1
    );
    ensure!(
        count(&h, |a| matches!(a, A::ActivityFailed(f)
        if f.failure.as_ref().is_some_and(|f| f.r#type == "ApprovalDenied" && f.non_retryable)
            && f.retry_at_ms == 0))
            == 1
    );
    Ok(())
}

#[test]
fn bad_decisions_get_clear_errors() -> Result<()> {
    agent_common::seed();
    let env = Env::start()?;
    let _worker = env.worker()?;
    let waiting = env.start_run(
        "tool_call",
        &json!({ "tool": "idem_tool", "approval": "check it",
                 "hang_ms": 600_000, "hang_attempts": 1 })
        .to_string(),
        &[],
    )?;
    env.wait_waiting(&waiting, "approval")?;
    let id = approval_of(&env, &waiting)?["activity_id"].to_string();
    // An activity that does not exist.
    let (code, _, err) = env.cli(&["run", "approve", &waiting, "--activity", "99"])?;
    ensure!(
        code != 0 && err.contains("activity 99") && err.contains("not open"),
        "{err}"
    );
    // A run that does not exist.
    let (code, _, err) = env.cli(&[
        "run",
        "approve",
        "0190f0b2-7c1d-7aa4-9a8b-1c2d3e4f5a6b",
        "--activity",
        "1",
    ])?;
    ensure!(code != 0 && !err.is_empty(), "{err}");
    // An activity that is not waiting for approval (running, never asked).
    let plain = env.start_run(
        "tool_call",
        &json!({ "tool": "read_tool", "hang_ms": 600_000, "hang_attempts": 1 }).to_string(),
        &[],
    )?;
    let start = env.wait_starts(&plain, 1)?;
    let plain_id = start[0]["id"].to_string();
    let (code, _, err) = env.cli(&[
        "run",
        "deny",
        &plain,
        "--activity",
        &plain_id,
        "--reason",
        "x",
    ])?;
    ensure!(
        code != 0 && err.contains("not waiting for approval"),
        "{err}"
    );
    // Twice: the second decision is refused, and nothing changes.
    env.ok(&["run", "approve", &waiting, "--activity", &id])?;
    env.wait_starts(&waiting, 1)?;
    let (code, _, err) = env.cli(&["run", "approve", &waiting, "--activity", &id])?;
    ensure!(code != 0 && err.contains("approved already"), "{err}");
    let (code, _, err) = env.cli(&[
        "run",
        "deny",
        &waiting,
        "--activity",
        &id,
        "--reason",
        "late",
    ])?;
    ensure!(code != 0 && err.contains("approved already"), "{err}");
    let h = history(&env, &waiting)?;
    ensure!(count(&h, |a| matches!(a, A::ActivityApproved(_))) == 1);
    ensure!(count(&h, |a| matches!(a, A::ActivityDenied(_))) == 0);
    // The unknown waiting kind names the known ones.
    let (code, _, err) = env.cli(&["run", "list", "--waiting", "approvals"])?;
    ensure!(code != 0 && err.contains("approval"), "{err}");
    Ok(())
}

#[test]
fn a_wait_for_approval_survives_sigkills_and_runs_once() -> Result<()> {
    agent_common::seed();
    let mut env = Env::start()?;
    let mut worker = env.worker()?;
    let run = env.start_run(
        "tool_call",
        &json!({ "tool": "write_tool", "approval": "deploy to production" }).to_string(),
        &[],
    )?;
    // Retried after approval: the first attempt hangs past its 2 s timeout.
    let retried = env.start_run(
        "tool_call",
        &json!({ "tool": "idem_tool", "approval": "charge the card",
                 "hang_ms": 600_000, "hang_attempts": 1, "start_to_close_ms": 2_000 })
        .to_string(),
        &[],
    )?;
    for r in [&run, &retried] {
        env.wait_waiting(r, "approval")?;
    }
    worker.kill9();
    env.server_restart()?;
    let _worker = env.worker()?;
    for r in [&run, &retried] {
        // Still waiting after both crashes, with a worker polling: nothing dispatched.
        let a = env.wait_run(r, "the approval to be listed after the restart", |i| {
            agent_common::waits_on(i, "approval")
        })?;
        ensure!(
            !agent_common::waits_on(&a, "activity"),
            "{:?}",
            a.waiting_on
        );
    }
    let id = approval_of(&env, &run)?["activity_id"].to_string();
    ensure!(env.starts(&run)?.is_empty(), "nothing ran while it waited");
    env.ok(&["run", "approve", &run, "--activity", &id])?;
    let out = result(&env, &run)?;
    ensure!(out["tool"]["attempt"] == 1, "{out}");
    ensure!(env.starts(&run)?.len() == 1, "executed once");
    let h = history(&env, &run)?;
    ensure!(
        count(&h, |a| matches!(a, A::ApprovalRequested(_))) == 1,
        "asked once"
    );
    ensure!(
        count(&h, |a| matches!(a, A::ActivityApproved(_))) == 1,
        "approved once"
    );

    let id = approval_of(&env, &retried)?["activity_id"].to_string();
    env.ok(&["run", "approve", &retried, "--activity", &id])?;
    let out = result(&env, &retried)?;
    ensure!(out["tool"]["attempt"] == 2, "{out}");
    let h = history(&env, &retried)?;
    ensure!(
        count(&h, |a| matches!(a, A::ApprovalRequested(_))) == 1,
        "a retry of an approved activity does not ask again"
    );
    Ok(())
}
