//! `run signal`, `run budget`, `run reconcile`: acting on a run from outside its workflow.

use clap::{ArgGroup, Args};
use steadfast_proto::v1 as pb;

use super::client::Conn;
use super::render::budget_line;
use super::run::{BudgetFlags, json_payload};
use super::{Exit, Outcome, note, out_line};

#[derive(Args, Debug)]
pub struct SignalArgs {
    /// RUN NAME, or NAME alone with --workflow-id.
    #[arg(value_name = "RUN NAME", num_args = 1..=2, required = true)]
    pub(super) targets: Vec<String>,
    /// Signal the open run of this workflow id instead of a run id.
    #[arg(long, value_name = "ID")]
    pub(super) workflow_id: Option<String>,
    /// Signal input JSON (inline, @file, or - for stdin).
    #[arg(long, value_name = "JSON", default_value = "null")]
    pub(super) input: String,
    /// With --workflow-id: start a run of this type when the workflow id has no open run.
    #[arg(long, value_name = "TYPE", requires = "workflow_id")]
    pub(super) start: Option<String>,
    /// Input JSON of the run --start starts.
    #[arg(long, value_name = "JSON", default_value = "null", requires = "start")]
    pub(super) start_input: String,
    /// Task queue of the run --start starts.
    #[arg(long, value_name = "Q", requires = "start")]
    pub(super) task_queue: Option<String>,
    /// Deduplicates retried deliveries of the same signal.
    #[arg(long, value_name = "ID")]
    pub(super) request_id: Option<String>,
}

#[derive(Args, Debug)]
pub struct BudgetArgs {
    /// Run id.
    pub(super) run: String,
    #[command(flatten)]
    pub(super) budget: BudgetFlags,
}

#[derive(Args, Debug)]
#[command(group(ArgGroup::new("decision").required(true).args(["retry", "complete", "fail"])))]
pub struct ReconcileArgs {
    /// Run id.
    pub(super) run: String,
    /// The activity id (as shown by `run show`).
    #[arg(long, value_name = "ID")]
    pub(super) activity: u32,
    /// The attempt did not happen: run the activity again.
    #[arg(long)]
    pub(super) retry: bool,
    /// The attempt happened: record this result JSON (inline, @file, or -).
    #[arg(long, value_name = "JSON")]
    pub(super) complete: Option<String>,
    /// The attempt failed: record this failure message.
    #[arg(long, value_name = "MSG")]
    pub(super) fail: Option<String>,
    /// Error type of the --fail failure.
    #[arg(long, value_name = "TYPE", requires = "fail")]
    pub(super) fail_type: Option<String>,
}

pub async fn signal(conn: &Conn, a: SignalArgs) -> Outcome {
    let (run_id, name) = match (&a.workflow_id, a.targets.as_slice()) {
        (Some(_), [name]) => (String::new(), name.clone()),
        (Some(_), _) => {
            return Err(Exit::usage(
                "with --workflow-id give only the signal NAME (not a run id)",
            ));
        }
        (None, [run, name]) => (run.clone(), name.clone()),
        (None, _) => return Err(Exit::usage("give RUN NAME, or --workflow-id ID NAME")),
    };
    let input = json_payload("--input", &a.input)?;
    let signal_with_start = match &a.start {
        Some(t) => Some(pb::StartWorkflowRequest {
            namespace: conn.namespace.clone(),
            workflow_type: t.clone(),
            workflow_id: a.workflow_id.clone().unwrap_or_default(),
            task_queue: a.task_queue.clone().unwrap_or_default(),
            input: Some(json_payload("--start-input", &a.start_input)?),
            identity: conn.identity.clone(),
            ..Default::default()
        }),
        None => None,
    };
    let req = pb::SignalRunRequest {
        namespace: conn.namespace.clone(),
        run_id,
        workflow_id: a.workflow_id.clone().unwrap_or_default(),
        signal_name: name.clone(),
        input: Some(input),
        identity: conn.identity.clone(),
        request_id: a.request_id.unwrap_or_default(),
        signal_with_start,
    };
    let r = conn
        .client()
        .signal_run(req)
        .await
        .map_err(|s| conn.status(s))?
        .into_inner();
    if r.started {
        note(&format!(
            "started run {} and delivered signal {name:?}",
            r.run_id
        ));
    } else {
        note(&format!("signal {name:?} delivered to run {}", r.run_id));
    }
    out_line(&r.run_id)
}

pub async fn reconcile(conn: &Conn, a: ReconcileArgs) -> Outcome {
    use pb::reconcile_activity_request::Decision;
    let (decision, what) = if a.retry {
        (Decision::Retry(true), "will be retried")
    } else if let Some(c) = &a.complete {
        (
            Decision::Complete(json_payload("--complete", c)?),
            "recorded as completed",
        )
    } else if let Some(m) = &a.fail {
        let failure = pb::Failure {
            message: m.clone(),
            r#type: a.fail_type.clone().unwrap_or_default(),
            non_retryable: true,
            details: String::new(),
        };
        (Decision::Fail(failure), "recorded as failed")
    } else {
        return Err(Exit::usage(
            "give one of --retry, --complete JSON, --fail MSG",
        ));
    };
    let req = pb::ReconcileActivityRequest {
        namespace: conn.namespace.clone(),
        run_id: a.run.clone(),
        activity_id: a.activity,
        decision: Some(decision),
        identity: conn.identity.clone(),
    };
    conn.admin()
        .reconcile_activity(req)
        .await
        .map_err(|s| conn.status(s))?;
    note(&format!("activity #{} of run {} {what}", a.activity, a.run));
    Ok(())
}

pub async fn budget(conn: &Conn, a: BudgetArgs) -> Outcome {
    let budget = a.budget.budget();
    if budget == pb::Budget::default() {
        return Err(Exit::usage(
            "give at least one of --max-tokens, --max-cost-usd, --max-activities, --max-duration",
        ));
    }
    let req = pb::UpdateBudgetRequest {
        namespace: conn.namespace.clone(),
        run_id: a.run.clone(),
        budget: Some(budget),
        identity: conn.identity.clone(),
    };
    let r = conn
        .admin()
        .update_budget(req)
        .await
        .map_err(|s| conn.status(s))?
        .into_inner();
    note(&format!("budget of run {} updated", a.run));
    out_line(&budget_line(&r.budget.unwrap_or_default()))
}
