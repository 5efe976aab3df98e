//! `steadfast workflow check --task-queue Q`: asks a worker started in check mode on the queue
//! to replay every open run of the workflow types it registers (AdminService.CheckWorkflows)
//! and prints its report; exit [`exit::DIVERGED`] when any run does not replay.

use clap::{Args, Subcommand};
use serde_json::json;
use steadfast_proto::v1 as pb;

use super::client::Conn;
use super::{Exit, Outcome, exit, note, out_line, parse};

/// `steadfast workflow ...`.
#[derive(Subcommand, Debug)]
pub enum WorkflowCmd {
    /// Check an upgrade before deploying it: a worker of the new code started in check mode
    /// (STEADFAST_CHECK_MODE=1) on the queue replays every open run of its workflow types.
    /// Exit 0 when all replay cleanly, 9 when any diverges.
    Check(CheckArgs),
}

/// What to check.
#[derive(Args, Debug)]
pub struct CheckArgs {
    /// The task queue the check-mode worker polls.
    #[arg(long, value_name = "Q")]
    task_queue: String,
    /// How long to wait for a check-mode worker to take the check and report (a duration:
    /// 30s, 5m; at most 10m).
    #[arg(long, default_value = "60s", value_parser = parse::duration_ms)]
    timeout: u64,
    /// Print the report as one JSON object.
    #[arg(long)]
    json: bool,
}

/// Runs a `workflow` command.
pub async fn dispatch(conn: &Conn, cmd: WorkflowCmd) -> Outcome {
    match cmd {
        WorkflowCmd::Check(a) => check(conn, a).await,
    }
}

async fn check(conn: &Conn, a: CheckArgs) -> Outcome {
    if a.timeout == 0 {
        return Err(Exit::usage("--timeout must be more than 0"));
    }
    note(&format!(
        "waiting for a check-mode worker of task queue {:?} (up to {} ms)",
        a.task_queue, a.timeout
    ));
    let mut req = tonic::Request::new(pb::CheckWorkflowsRequest {
        namespace: conn.namespace.clone(),
        task_queue: a.task_queue.clone(),
        timeout_ms: a.timeout,
    });
    // The server answers at its own deadline; a little slack so its message arrives.
    req.set_timeout(std::time::Duration::from_millis(
        a.timeout.saturating_add(10_000),
    ));
    let report = conn
        .admin()
        .check_workflows(req)
        .await
        .map_err(|s| conn.status(s))?
        .into_inner()
        .report
        .unwrap_or_default();
    note(&format!("checked by worker {}", report.worker_id));
    if a.json {
        out_line(&to_json(&report).to_string())?;
    } else {
        for line in lines(&report) {
            out_line(&line)?;
        }
    }
    if report.runs_not_checked > 0 {
        note(&format!(
            "{} open runs were not checked (over the server's limit per check)",
            report.runs_not_checked
        ));
    }
    if diverged(&report) > 0 {
        Err(Exit::with(
            exit::DIVERGED,
            format!(
                "{} open runs do not replay on this code: deploying it holds them with [STF-ND001]",
                diverged(&report)
            ),
        ))
    } else {
        Ok(())
    }
}

/// Runs that did not replay, over all types.
pub fn diverged(r: &pb::CheckReport) -> u64 {
    r.workflow_types
        .iter()
        .map(|t| t.runs.saturating_sub(t.clean))
        .sum()
}

/// The report as lines for a terminal.
pub fn lines(r: &pb::CheckReport) -> Vec<String> {
    let mut out = Vec::new();
    for t in &r.workflow_types {
        let bad = t.runs.saturating_sub(t.clean);
        out.push(format!(
            "{}: {} open runs, {} replay cleanly, {} diverge",
            t.workflow_type, t.runs, t.clean, bad
        ));
        for d in &t.diverged {
            if d.seq > 0 {
                out.push(format!(
                    "  {}  at command seq {}: history has {}; the code did {}",
                    d.run_id, d.seq, d.history, d.code
                ));
            } else {
                out.push(format!("  {}  {}", d.run_id, d.message));
            }
        }
        if (t.diverged.len() as u64) < bad {
            out.push(format!("  ... and {} more", bad - t.diverged.len() as u64));
        }
    }
    for p in &r.patches {
        let advice = if p.runs_without_marker == 0 {
            "no open run took the old branch: ctx.deprecate_patch is safe".to_string()
        } else {
            format!("keep ctx.patched({:?}) while they are open", p.patch_id)
        };
        out.push(format!(
            "patch {}: {} open runs took the new branch, {} the old one: {advice}",
            p.patch_id, p.runs_with_marker, p.runs_without_marker
        ));
    }
    out
}

/// The report as one JSON object.
pub fn to_json(r: &pb::CheckReport) -> serde_json::Value {
    json!({
        "worker_id": r.worker_id,
        "diverged": diverged(r),
        "runs_not_checked": r.runs_not_checked,
        "workflow_types": r.workflow_types.iter().map(|t| json!({
            "workflow_type": t.workflow_type,
            "runs": t.runs,
            "clean": t.clean,
            "diverged": t.diverged.iter().map(|d| json!({
                "run_id": d.run_id,
                "seq": d.seq,
                "history": d.history,
                "code": d.code,
                "message": d.message,
            })).collect::<Vec<_>>(),
        })).collect::<Vec<_>>(),
        "patches": r.patches.iter().map(|p| json!({
            "patch_id": p.patch_id,
            "runs_with_marker": p.runs_with_marker,
            "runs_without_marker": p.runs_without_marker,
        })).collect::<Vec<_>>(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_report_names_each_diverging_run_and_the_patch_advice() {
        let r = pb::CheckReport {
            worker_id: "w".into(),
            workflow_types: vec![pb::WorkflowTypeCheck {
                workflow_type: "deploy".into(),
                runs: 3,
                clean: 1,
                diverged: vec![pb::RunDivergence {
                    run_id: "r1".into(),
                    seq: 2,
                    history: "ScheduleActivity(step)".into(),
                    code: "ScheduleActivity(other)".into(),
                    message: "[STF-ND001] ...".into(),
                }],
            }],
            patches: vec![pb::PatchCheck {
                patch_id: "v2".into(),
                runs_with_marker: 2,
                runs_without_marker: 0,
            }],
            runs_not_checked: 0,
        };
        assert_eq!(diverged(&r), 2);
        let l = lines(&r);
        assert_eq!(l[0], "deploy: 3 open runs, 1 replay cleanly, 2 diverge");
        assert!(l[1].contains("r1  at command seq 2: history has ScheduleActivity(step)"));
        assert_eq!(l[2], "  ... and 1 more");
        assert!(l[3].contains("deprecate_patch is safe"), "{}", l[3]);
        assert_eq!(to_json(&r)["diverged"], 2);
    }
}
