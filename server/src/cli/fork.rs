//! `steadfast run fork` and `steadfast run reset`: a new run from an original's history up to
//! a workflow-task boundary (AdminService.ForkRun; see the README, "Fork and reset").

use clap::Args;
use steadfast_proto::v1 as pb;

use super::client::Conn;
use super::run::json_payload;
use super::{Exit, note, out_line};

/// Where to fork and what to change.
#[derive(Args, Debug)]
pub struct ForkArgs {
    /// The original run id.
    run: String,
    /// Fork at the last workflow-task boundary at or before this seq (see `history show`).
    #[arg(long, value_name = "SEQ")]
    at: u64,
    /// Replace the run's input (JSON): the code sees the new input on replay, so commands
    /// before the boundary that depend on it must come out the same, or the fork is held with
    /// [STF-ND001].
    #[arg(long, value_name = "JSON")]
    input: Option<String>,
    /// The fork's workflow id (default: its run id for a fork, the original's for a reset).
    #[arg(long, value_name = "ID", default_value = "")]
    workflow_id: String,
}

/// Forks (or, with `reset`, resets) a run; prints the new run id on stdout.
pub async fn fork(conn: &Conn, a: ForkArgs, reset: bool) -> Result<(), Exit> {
    let input = match &a.input {
        Some(v) => Some(json_payload("--input", v)?),
        None => None,
    };
    let req = pb::ForkRunRequest {
        namespace: conn.namespace.clone(),
        run_id: a.run.clone(),
        seq: a.at,
        input,
        workflow_id: a.workflow_id,
        reset,
        identity: conn.identity.clone(),
    };
    let r = conn
        .admin()
        .fork_run(req)
        .await
        .map_err(|s| conn.status(s))?
        .into_inner();
    let again = if r.rescheduled_activities.is_empty() {
        String::new()
    } else {
        let ids: Vec<String> = r
            .rescheduled_activities
            .iter()
            .map(|i| i.to_string())
            .collect();
        format!("; activities in flight there run again: {}", ids.join(", "))
    };
    note(&format!(
        "run {} is the history of run {} up to seq {}{again}{}",
        r.run_id,
        a.run,
        r.boundary_seq,
        if reset {
            format!("; run {} was terminated", a.run)
        } else {
            String::new()
        }
    ));
    out_line(&r.run_id)
}
