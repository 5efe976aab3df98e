//! `steadfast run ...`: start runs, list and show them, and operate on them. The network code
//! is thin: build a request, call, render with [`super::render`].

use clap::{Args, Subcommand};
use steadfast_proto::v1 as pb;

use super::client::Conn;
use super::follow::{self, ResultArgs, WatchArgs};
use super::fork::{self, ForkArgs};
use super::operate::{self, BudgetArgs, ReconcileArgs, SignalArgs};
use super::render::{inbox_table, run_json, run_text, runs_table};
use super::steer;
use super::{Exit, Outcome, note, out_line, parse};

#[derive(Subcommand, Debug)]
pub enum RunCmd {
    /// Start a run; prints its run id on stdout.
    Start(StartArgs),
    /// List runs, newest first (a table, or JSON lines with --json).
    ///
    /// With `--waiting signal` it is the inbox of runs waiting on a human: one row per
    /// question, with its choices.
    List(ListArgs),
    /// Show everything known about a run.
    Show {
        /// Run id.
        run: String,
        /// Print the run as one JSON object.
        #[arg(long)]
        json: bool,
        /// Show the arguments of the activities that wait for approval (they are payloads:
        /// only on request).
        #[arg(long)]
        preview: bool,
    },
    /// Print a run's result JSON; the exit code says how the run ended.
    Result(ResultArgs),
    /// Follow a run's events until it ends: a progress bar on a terminal, else one line per
    /// event (`seq  time  Kind  summary`).
    Watch(WatchArgs),
    /// Ask a run to cancel; the workflow sees the request and may return a partial result.
    Cancel {
        /// Run id.
        run: String,
        /// Why (recorded in the history).
        #[arg(long, default_value = "")]
        reason: String,
    },
    /// End a run now, without its workflow's cooperation.
    Terminate {
        /// Run id.
        run: String,
        /// Why (recorded in the history).
        #[arg(long, default_value = "")]
        reason: String,
    },
    /// Send a signal: `run signal RUN NAME --input JSON`, or by workflow id:
    /// `run signal --workflow-id ID NAME --input JSON [--start TYPE --start-input JSON]`.
    /// Prints the run id that got it.
    Signal(SignalArgs),
    /// Ask a run's code through a query handler it registered: `run query RUN NAME
    /// [--input JSON]`. A worker replays the run and answers; nothing is written. Prints the
    /// answer as JSON.
    Query(steer::QueryArgs),
    /// Steer a run through an update handler it registered: `run update RUN NAME --input
    /// JSON [--request-id ID]`. Recorded, validated, applied once per request id; waits for
    /// the handler's answer and prints it as JSON.
    Update(steer::UpdateArgs),
    /// Change a run's budget (a run parked on its budget resumes); prints the new budget.
    /// Limits not given are kept.
    Budget(BudgetArgs),
    /// Decide the outcome of a `write` activity whose attempt was lost.
    Reconcile(ReconcileArgs),
    /// Approve an activity that waits for approval: `run approve RUN --activity ID
    /// [--comment C] [--input JSON]` (an edit of its arguments, recorded). It runs now.
    Approve(super::approve::ApproveArgs),
    /// Deny it: `run deny RUN --activity ID --reason R`; the workflow gets a non-retryable
    /// ApprovalDenied failure.
    Deny(super::approve::DenyArgs),
    /// Start a new run from this run's history up to the last workflow-task boundary at or
    /// before --at: recorded activity results before it are reused, not run again; the
    /// current code continues. Prints the new run id.
    Fork(ForkArgs),
    /// Like fork, and terminate the original (its reason names the new run). Prints the new
    /// run id.
    Reset(ForkArgs),
}

/// Budget ceilings; 0 or absent = no limit at start, unchanged on update.
#[derive(Args, Debug, Default)]
pub struct BudgetFlags {
    /// Most input + output tokens.
    #[arg(long, value_name = "N")]
    max_tokens: Option<u64>,
    /// Most cost in US dollars (e.g. 2.50).
    #[arg(long, value_name = "USD", value_parser = parse::usd_micros)]
    max_cost_usd: Option<u64>,
    /// Most activities.
    #[arg(long, value_name = "N")]
    max_activities: Option<u64>,
    /// Most wall time since the run started: seconds, or 90s, 15m, 2h, 1d.
    #[arg(long, value_name = "SECS", value_parser = parse::duration_ms)]
    max_duration: Option<u64>,
}

impl BudgetFlags {
    /// The ceilings as sent; absent flags are 0.
    pub fn budget(&self) -> pb::Budget {
        pb::Budget {
            max_tokens: self.max_tokens.unwrap_or(0),
            max_cost_micros: self.max_cost_usd.unwrap_or(0),
            max_activities: self.max_activities.unwrap_or(0),
            max_duration_ms: self.max_duration.unwrap_or(0),
        }
    }
}

#[derive(Args, Debug)]
pub struct StartArgs {
    /// Workflow type.
    workflow_type: String,
    /// Input JSON (inline, @file, or - for stdin).
    #[arg(long, value_name = "JSON", default_value = "null")]
    input: String,
    /// Workflow id; at most one open run per workflow id (a second start returns it).
    #[arg(long, value_name = "ID")]
    workflow_id: Option<String>,
    /// Task queue of its workflow tasks (server default: "default").
    #[arg(long, value_name = "Q")]
    task_queue: Option<String>,
    /// Run timeout: seconds, or 90s, 15m, 2h, 1d.
    #[arg(long, value_name = "SECS", value_parser = parse::duration_ms)]
    run_timeout: Option<u64>,
    #[command(flatten)]
    budget: BudgetFlags,
    /// Never pin the run to a worker build: each of its workflow tasks goes to the task
    /// queue's current build (`task-queue set-build`).
    #[arg(long)]
    auto_upgrade: bool,
    /// A search attribute: NAME=VALUE (a keyword) or NAME:TYPE=VALUE with TYPE keyword, int,
    /// bool or time (RFC 3339 UTC or Unix ms). Repeat for more (at most 32).
    #[arg(long = "attr", value_name = "NAME[:TYPE]=VALUE", value_parser = super::search::attr)]
    attrs: Vec<pb::SearchAttribute>,
    /// Free-form JSON shown by `run show` (at most 16 KiB).
    #[arg(long, value_name = "JSON")]
    memo: Option<String>,
    /// Continue this W3C trace (00-<trace id>-<span id>-<flags>): with --otlp-endpoint the
    /// run's root span is a child of that span.
    #[arg(long, value_name = "TRACEPARENT")]
    traceparent: Option<String>,
}

#[derive(Args, Debug)]
pub struct ListArgs {
    /// Only runs in this status (running, completed, failed, cancelled, terminated, timed_out,
    /// continued_as_new).
    #[arg(long, value_parser = parse::status)]
    status: Option<steadfast_engine::RunStatus>,
    /// Only runs of this workflow type.
    #[arg(long = "type", value_name = "TYPE")]
    workflow_type: Option<String>,
    /// Only open runs waiting on: signal, approval, activity, timer, budget, reconciliation,
    /// workflow_task, idle (code that waits for nothing the server tracks).
    #[arg(long, value_parser = parse::waiting)]
    waiting: Option<String>,
    /// Only the child runs of this run, in the order it started them.
    #[arg(long, value_name = "RUN")]
    parent: Option<String>,
    /// Only the runs this schedule started.
    #[arg(long, value_name = "NAME")]
    schedule: Option<String>,
    /// Only the runs of this workflow id (open and closed; a reset keeps the id).
    #[arg(long, value_name = "ID")]
    workflow_id: Option<String>,
    /// Only the runs pinned to this worker build.
    #[arg(long, value_name = "BUILD")]
    build: Option<String>,
    /// Only runs started at or after this time: RFC 3339 UTC (2026-05-01T07:00:00Z) or Unix ms.
    #[arg(long, value_name = "TIME", value_parser = super::schedule::time_ms)]
    started_after: Option<i64>,
    /// Only runs started before this time, same forms.
    #[arg(long, value_name = "TIME", value_parser = super::schedule::time_ms)]
    started_before: Option<i64>,
    /// Only runs carrying this search attribute value (NAME=VALUE or NAME:TYPE=VALUE, as at
    /// start); repeat to require several.
    #[arg(long = "attr", value_name = "NAME[:TYPE]=VALUE", value_parser = super::search::attr)]
    attrs: Vec<pb::SearchAttribute>,
    /// Only runs where an activity of this type failed its last attempt (no retry left),
    /// including runs that failed because of it.
    #[arg(long, value_name = "TYPE")]
    failed_activity: Option<String>,
    /// Only runs whose summary holds every word (ignoring case): workflow type and id, memo,
    /// last progress message, held and failure messages.
    #[arg(long, value_name = "WORDS")]
    text: Option<String>,
    /// Only the forks of this run (`run fork` / `run reset` of it).
    #[arg(long, value_name = "RUN")]
    forked_from: Option<String>,
    /// Most runs to print (0 = all).
    #[arg(long, default_value_t = 100)]
    limit: u32,
    /// One JSON object per line (the shape of `run show --json`).
    #[arg(long)]
    json: bool,
}

/// A JSON payload from a flag value, or a usage error naming the flag.
pub fn json_payload(flag: &str, value: &str) -> Result<pb::Payload, Exit> {
    let data = parse::json_arg(flag, value).map_err(Exit::usage)?;
    Ok(pb::Payload {
        encoding: steadfast_engine::payload::ENCODING_JSON.into(),
        data,
    })
}

pub async fn dispatch(conn: &Conn, cmd: RunCmd) -> Outcome {
    let ns = conn.namespace.clone();
    match cmd {
        RunCmd::Start(a) => start(conn, a).await,
        RunCmd::List(a) => list(conn, a).await,
        RunCmd::Show { run, json, preview } => {
            let (r, forks) = describe_with_forks(conn, &run, preview).await?;
            if json {
                let mut v = run_json(&r);
                v["forks"] = serde_json::json!(forks);
                out_line(&serde_json::to_string_pretty(&v).unwrap_or_default())
            } else {
                let mut text = run_text(&r);
                if !forks.is_empty() {
                    // The original of a `run fork` / `run reset` names its forks (its own
                    // history does not: a closed run takes no events).
                    text.push_str(&format!("{:<15}{}\n", "forks", forks.join(", ")));
                }
                super::out(text.as_bytes())
            }
        }
        RunCmd::Result(a) => follow::result(conn, a).await,
        RunCmd::Watch(a) => follow::watch(conn, a).await,
        RunCmd::Cancel { run, reason } => {
            let req = pb::CancelRunRequest {
                namespace: ns,
                run_id: run.clone(),
                reason,
                identity: conn.identity.clone(),
            };
            conn.client()
                .cancel_run(req)
                .await
                .map_err(|s| conn.status(s))?;
            note(&format!(
                "cancel requested for run {run}; the workflow decides how to stop (`steadfast run result {run} --wait`)"
            ));
            Ok(())
        }
        RunCmd::Terminate { run, reason } => {
            let req = pb::TerminateRunRequest {
                namespace: ns,
                run_id: run.clone(),
                reason,
                identity: conn.identity.clone(),
            };
            conn.client()
                .terminate_run(req)
                .await
                .map_err(|s| conn.status(s))?;
            note(&format!("run {run} terminated"));
            Ok(())
        }
        RunCmd::Signal(a) => operate::signal(conn, a).await,
        RunCmd::Query(a) => steer::query(conn, a).await,
        RunCmd::Update(a) => steer::update(conn, a).await,
        RunCmd::Budget(a) => operate::budget(conn, a).await,
        RunCmd::Reconcile(a) => operate::reconcile(conn, a).await,
        RunCmd::Approve(a) => super::approve::approve(conn, a).await,
        RunCmd::Deny(a) => super::approve::deny(conn, a).await,
        RunCmd::Fork(a) => fork::fork(conn, a, false).await,
        RunCmd::Reset(a) => fork::fork(conn, a, true).await,
    }
}

/// DescribeRun.
pub async fn describe(conn: &Conn, run: &str) -> Result<pb::RunInfo, Exit> {
    Ok(describe_with_forks(conn, run, false).await?.0)
}

/// DescribeRun, with the ids of the runs forked from it (newest first, at most 100), and the
/// arguments of pending approvals when `previews`.
pub async fn describe_with_forks(
    conn: &Conn,
    run: &str,
    previews: bool,
) -> Result<(pb::RunInfo, Vec<String>), Exit> {
    let req = pb::DescribeRunRequest {
        namespace: conn.namespace.clone(),
        run_id: run.to_string(),
        approval_previews: previews,
    };
    let r = conn
        .client()
        .describe_run(req)
        .await
        .map_err(|s| conn.status(s))?
        .into_inner();
    let info = r
        .run
        .ok_or_else(|| Exit::error(format!("the server described run {run} with no content")))?;
    Ok((info, r.fork_run_ids))
}

async fn start(conn: &Conn, a: StartArgs) -> Outcome {
    let input = json_payload("--input", &a.input)?;
    let req = pb::StartWorkflowRequest {
        namespace: conn.namespace.clone(),
        workflow_type: a.workflow_type,
        workflow_id: a.workflow_id.clone().unwrap_or_default(),
        task_queue: a.task_queue.unwrap_or_default(),
        input: Some(input),
        run_timeout_ms: a.run_timeout.unwrap_or(0),
        budget: Some(a.budget.budget()),
        identity: conn.identity.clone(),
        request_id: String::new(),
        auto_upgrade: a.auto_upgrade,
        search_attributes: a.attrs,
        memo: a
            .memo
            .as_deref()
            .map(|m| json_payload("--memo", m))
            .transpose()?,
        traceparent: a.traceparent.unwrap_or_default(),
        wait_result_ms: 0,
    };
    let r = conn
        .client()
        .start_workflow(req)
        .await
        .map_err(|s| conn.status(s))?
        .into_inner();
    if !r.started {
        note(&format!(
            "workflow id {:?} already had an open run: {} (nothing new was started)",
            a.workflow_id.unwrap_or_default(),
            r.run_id
        ));
    }
    out_line(&r.run_id)
}

async fn list(conn: &Conn, a: ListArgs) -> Outcome {
    // 0 means "any" on the wire: a bound at or before the epoch cannot be sent as given.
    if a.started_before.is_some_and(|t| t <= 0) {
        return Err(Exit::usage(
            "--started-before must be after 1970-01-01T00:00:00Z: no run started earlier",
        ));
    }
    if let (Some(x), Some(y)) = (a.started_after, a.started_before)
        && x >= y
    {
        return Err(Exit::usage(format!(
            "--started-after {} is not before --started-before {}: the range is empty",
            super::fmt::rfc3339_ms(x),
            super::fmt::rfc3339_ms(y)
        )));
    }
    let mut runs = Vec::new();
    let mut page_token = String::new();
    let want = if a.limit == 0 {
        usize::MAX
    } else {
        a.limit as usize
    };
    loop {
        let req = pb::ListRunsRequest {
            namespace: conn.namespace.clone(),
            status: a
                .status
                .map(|s| crate::convert::status(s) as i32)
                .unwrap_or(0),
            workflow_type: a.workflow_type.clone().unwrap_or_default(),
            waiting: a.waiting.clone().unwrap_or_default(),
            page_size: want.saturating_sub(runs.len()).min(1_000) as u32,
            page_token: page_token.clone(),
            parent_run_id: a.parent.clone().unwrap_or_default(),
            schedule: a.schedule.clone().unwrap_or_default(),
            workflow_id: a.workflow_id.clone().unwrap_or_default(),
            started_after_ms: a.started_after.unwrap_or(0).max(0),
            started_before_ms: a.started_before.unwrap_or(0),
            build: a.build.clone().unwrap_or_default(),
            search_attributes: a.attrs.clone(),
            failed_activity: a.failed_activity.clone().unwrap_or_default(),
            text: a.text.clone().unwrap_or_default(),
            forked_from: a.forked_from.clone().unwrap_or_default(),
        };
        let r = conn
            .client()
            .list_runs(req)
            .await
            .map_err(|s| conn.status(s))?
            .into_inner();
        runs.extend(r.runs);
        // A page may be short or empty and still have a token (a `--text` search reads a
        // bounded number of runs per request); a token that does not move is the end.
        if r.next_page_token.is_empty() || runs.len() >= want || r.next_page_token == page_token {
            break;
        }
        page_token = r.next_page_token;
    }
    runs.truncate(want);
    if a.json {
        for r in &runs {
            out_line(&run_json(r).to_string())?;
        }
        return Ok(());
    }
    if runs.is_empty() {
        note("no runs match");
        return Ok(());
    }
    if a.waiting.as_deref() == Some("signal") {
        super::out(inbox_table(&runs).as_bytes())?;
        note("answer with: steadfast run signal RUN SIGNAL --input '\"<choice>\"'");
        Ok(())
    } else {
        super::out(runs_table(&runs).as_bytes())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser, Debug)]
    struct T {
        #[command(subcommand)]
        cmd: RunCmd,
    }

    fn parse(args: &[&str]) -> Result<RunCmd, clap::Error> {
        T::try_parse_from(std::iter::once("run").chain(args.iter().copied())).map(|t| t.cmd)
    }

    #[test]
    fn start_flags() {
        let RunCmd::Start(a) = parse(&[
            "start",
            "triage",
            "--input",
            "{}",
            "--max-cost-usd",
            "1.25",
            "--max-duration",
            "2h",
        ])
        .unwrap() else {
            panic!()
        };
        assert_eq!(
            a.budget.budget(),
            pb::Budget {
                max_cost_micros: 1_250_000,
                max_duration_ms: 7_200_000,
                ..Default::default()
            }
        );
        let err = parse(&["start", "t", "--max-cost-usd", "lots"]).unwrap_err();
        assert_eq!(err.exit_code(), 2);
        assert!(err.to_string().contains("is not a dollar amount"), "{err}");
        assert!(
            json_payload("--input", "{")
                .unwrap_err()
                .message
                .unwrap()
                .contains("--input is not valid JSON")
        );
    }

    #[test]
    fn reconcile_needs_exactly_one_decision() {
        assert!(parse(&["reconcile", "r", "--activity", "3"]).is_err());
        assert!(
            parse(&[
                "reconcile",
                "r",
                "--activity",
                "3",
                "--retry",
                "--fail",
                "x"
            ])
            .is_err()
        );
        assert!(parse(&["reconcile", "r", "--activity", "3", "--complete", "{}"]).is_ok());
    }

    #[test]
    fn signal_forms() {
        let RunCmd::Signal(a) = parse(&["signal", "r1", "approve", "--input", "\"yes\""]).unwrap()
        else {
            panic!()
        };
        assert_eq!(a.targets, ["r1", "approve"]);
        let RunCmd::Signal(a) = parse(&[
            "signal",
            "--workflow-id",
            "w",
            "approve",
            "--start",
            "triage",
            "--start-input",
            "{}",
        ])
        .unwrap() else {
            panic!()
        };
        assert_eq!(a.start.as_deref(), Some("triage"));
        assert!(
            parse(&["signal", "r1", "approve", "--start", "triage"]).is_err(),
            "--start needs --workflow-id"
        );
    }

    #[test]
    fn list_filters_are_checked() {
        assert!(parse(&["list", "--waiting", "human"]).is_err());
        assert!(parse(&["list", "--status", "done"]).is_err());
        assert!(
            parse(&[
                "list",
                "--status",
                "timed-out",
                "--waiting",
                "signal",
                "--json"
            ])
            .is_ok()
        );
    }
}
