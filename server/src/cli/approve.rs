//! `steadfast run approve` / `run deny`: the human's decision on an activity that waits for
//! approval (`run list --waiting approval` lists them; `run show RUN --preview` shows their
//! arguments).

use clap::Args;
use steadfast_proto::v1 as pb;

use super::client::Conn;
use super::run::json_payload;
use super::{Exit, Outcome, note};

#[derive(Args, Debug)]
pub struct ApproveArgs {
    /// Run id.
    pub(super) run: String,
    /// The activity id (as shown by `run show`).
    #[arg(long, value_name = "ID")]
    pub(super) activity: u32,
    /// A comment, recorded with the approval.
    #[arg(long, value_name = "TEXT", default_value = "")]
    pub(super) comment: String,
    /// Run it with these arguments instead (JSON: inline, @file, or -); the edit is recorded.
    #[arg(long, value_name = "JSON")]
    pub(super) input: Option<String>,
}

#[derive(Args, Debug)]
pub struct DenyArgs {
    /// Run id.
    pub(super) run: String,
    /// The activity id (as shown by `run show`).
    #[arg(long, value_name = "ID")]
    pub(super) activity: u32,
    /// Why (required): the workflow receives it in the ApprovalDenied failure.
    #[arg(long, value_name = "TEXT")]
    pub(super) reason: String,
}

pub async fn approve(conn: &Conn, a: ApproveArgs) -> Outcome {
    let input = match &a.input {
        Some(v) => Some(json_payload("--input", v)?),
        None => None,
    };
    let edited = input.is_some();
    let req = pb::ApproveActivityRequest {
        namespace: conn.namespace.clone(),
        run_id: a.run.clone(),
        activity_id: a.activity,
        comment: a.comment,
        input,
        identity: conn.identity.clone(),
    };
    conn.client()
        .approve_activity(req)
        .await
        .map_err(|s| conn.status(s))?;
    note(&format!(
        "activity #{} of run {} approved{}; it runs now",
        a.activity,
        a.run,
        if edited {
            " with the edited arguments"
        } else {
            ""
        }
    ));
    Ok(())
}

pub async fn deny(conn: &Conn, a: DenyArgs) -> Outcome {
    if a.reason.trim().is_empty() {
        return Err(Exit::usage("--reason is empty: say why"));
    }
    let req = pb::DenyActivityRequest {
        namespace: conn.namespace.clone(),
        run_id: a.run.clone(),
        activity_id: a.activity,
        reason: a.reason,
        identity: conn.identity.clone(),
    };
    conn.client()
        .deny_activity(req)
        .await
        .map_err(|s| conn.status(s))?;
    note(&format!(
        "activity #{} of run {} denied; the workflow gets an ApprovalDenied failure",
        a.activity, a.run
    ));
    Ok(())
}
