//! Build ids across a deploy (issue 18, point 2): worker build A runs some runs (blocked on a
//! signal) when the task queue's current build becomes B and a worker of build B (changed
//! code: `builds` runs `other` where A runs `step`, so B is nondeterministic on A's
//! histories) starts beside A. Runs pinned to A finish on A (every WorkflowTaskStarted names
//! A's worker), new runs go to B, an auto-upgrading run moves to B, a continue-as-new moves
//! to B unless it keeps its build. Then A stops: a run pinned to A waits, naming build A in
//! `run show`, and B never takes it; when A returns, it finishes there.

use std::time::Duration;

use anyhow::{Context, Result, ensure};
use serde_json::{Value, json};
use steadfast_proto::v1::history_event::Attributes;
use steadfast_proto::v1::waiting_on::What;
use steadfast_sdk::client::{Client, StartOptions};
use steadfast_tests::{
    Server, cli, describe, history, runtime, start_test_worker, test_seed, wait_for,
};

const WAIT: Duration = Duration::from_secs(40);
const QUEUE: &str = "default";

fn waits_for_signal(rt: &tokio::runtime::Runtime, url: &str, run: &str, name: &str) -> Option<()> {
    let info = describe(rt, url, run).ok()?;
    info.waiting_on
        .iter()
        .any(|w| matches!(&w.what, Some(What::Signal(s)) if s.name == name))
        .then_some(())
}

/// The worker of every WorkflowTaskStarted, in history order.
fn task_workers(events: &[steadfast_proto::v1::HistoryEvent]) -> Vec<String> {
    events
        .iter()
        .filter_map(|e| match &e.attributes {
            Some(Attributes::WorkflowTaskStarted(s)) => Some(s.worker.clone()),
            _ => None,
        })
        .collect()
}

fn worker(url: &str, side: &std::path::Path, variant: &str) -> Result<steadfast_tests::Proc> {
    let build = variant.to_ascii_uppercase();
    let id = format!("worker-{variant}");
    start_test_worker(
        url,
        side,
        &[
            "--variant",
            variant,
            "--build-id",
            &build,
            "--worker-id",
            &id,
        ],
    )
}

#[test]
fn pinned_runs_stay_on_their_build_new_runs_go_to_the_current_one() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let server = Server::start(&dir.path().join("data"), None)?;
    deploy(dir.path(), &server.url(), &server.url())
}

/// The same over PostgreSQL with two server nodes: A's worker and the clients on one node,
/// B's worker on the other, so the current build set through one node routes the polls of
/// the other (skipped when no PostgreSQL is installed).
#[test]
fn pinned_runs_stay_on_their_build_over_two_postgres_nodes() -> Result<()> {
    let Some(pg) = steadfast_postgres::testing::PgCluster::shared() else {
        return Ok(());
    };
    let db = pg.create_database("build_ids");
    let dir = tempfile::tempdir()?;
    let node = |i: usize| {
        Server::start_with(
            &dir.path().join(format!("node{i}")),
            None,
            &["--store", &db],
        )
    };
    let (n0, n1) = (node(0)?, node(1)?);
    deploy(dir.path(), &n0.url(), &n1.url())
}

/// The deploy: clients, the CLI and A's worker talk to `url`, B's worker (and A's, when it
/// returns) to `other` (the same server, or another node over the same database).
fn deploy(dir: &std::path::Path, url: &str, other: &str) -> Result<()> {
    let seed = test_seed();
    let old_runs = 1 + (seed % 3) as usize;
    let new_runs = 1 + (seed / 3 % 3) as usize;
    let side = dir.join("side");
    let url = url.to_string();
    let rt = runtime();
    let client = rt.block_on(Client::connect(url.clone()))?;
    let start = |input: Value| -> Result<String> {
        let opts = StartOptions::default();
        Ok(rt
            .block_on(client.start_workflow("builds", &input, opts))?
            .run_id)
    };

    // Build A, no current build: A takes every run and pins the ones it completes a task of.
    let mut worker_a = worker(&url, &side, "a")?;
    let mut old = Vec::new();
    for _ in 0..old_runs {
        old.push(start(json!({}))?);
    }
    let keep = start(json!({ "can": "keep" }))?;
    let moves = start(json!({ "can": "move" }))?;
    let held = start(json!({}))?;
    // Through the CLI, as an operator would.
    let (code, out, err) = cli(
        &url,
        &["run", "start", "signal", "--input", "{}", "--auto-upgrade"],
    )?;
    ensure!(code == 0, "run start --auto-upgrade: {err}");
    let auto_cli = out.trim().to_string();
    let auto_opts = StartOptions {
        auto_upgrade: true,
        ..Default::default()
    };
    let auto_sdk = rt
        .block_on(client.start_workflow("signal", &json!({}), auto_opts))?
        .run_id;
    let autos = [auto_cli, auto_sdk];
    for run in old.iter().chain([&keep, &moves, &held]) {
        wait_for(WAIT, "a run of A to wait for go", || {
            waits_for_signal(&rt, &url, run, "go")
        })?;
        let info = describe(&rt, &url, run)?;
        ensure!(info.build == "A" && !info.auto_upgrade, "{run}: {info:?}");
    }
    for auto in &autos {
        wait_for(WAIT, "an auto-upgrading run to wait", || {
            waits_for_signal(&rt, &url, auto, "approve")
        })?;
        let info = describe(&rt, &url, auto)?;
        ensure!(info.build.is_empty() && info.auto_upgrade, "{info:?}");
    }

    // The deploy: B becomes the current build, and B's worker starts beside A's.
    let (code, out, err) = cli(
        &url,
        &["task-queue", "set-build", "--task-queue", QUEUE, "B"],
    )?;
    ensure!(code == 0, "set-build: {out}\n{err}");
    let (code, out, err) = cli(other, &["task-queue", "describe", "--task-queue", QUEUE])?;
    ensure!(
        code == 0 && out.trim() == "current_build B",
        "describe: {out}\n{err}"
    );
    let _worker_b = worker(other, &side, "b")?;
    let mut new = Vec::new();
    for _ in 0..new_runs {
        new.push(start(json!({}))?);
    }
    for run in &new {
        wait_for(WAIT, "a new run to wait for go", || {
            waits_for_signal(&rt, &url, run, "go")
        })?;
        ensure!(describe(&rt, &url, run)?.build == "B", "{run} is not on B");
    }
    // `run list --build A` names exactly the runs pinned to A.
    let (code, out, err) = cli(&url, &["run", "list", "--build", "A", "--json"])?;
    ensure!(code == 0, "run list --build: {err}");
    let mut listed: Vec<String> = out
        .lines()
        .map(|l| {
            serde_json::from_str::<Value>(l).map(|v| v["run_id"].as_str().unwrap_or("").to_string())
        })
        .collect::<Result<_, _>>()?;
    listed.sort();
    let mut want: Vec<String> = old.iter().chain([&keep, &moves, &held]).cloned().collect();
    want.sort();
    ensure!(
        listed == want,
        "run list --build A: {listed:?}, want {want:?}"
    );

    // Everything but `held` goes on.
    for run in old.iter().chain(&new).chain([&keep, &moves]) {
        rt.block_on(client.signal(run, "go", &json!(seed)))?;
    }
    for auto in &autos {
        rt.block_on(client.signal(auto, "approve", &json!("yes")))?;
    }
    for (runs, variant) in [(&old, "a"), (&new, "b")] {
        for run in runs {
            let result: Value = rt
                .block_on(client.await_result(run, WAIT))
                .with_context(|| format!("the result of {run}"))?;
            ensure!(result["variant"] == variant, "{run}: {result}");
            let workers = task_workers(&history(&rt, &url, run)?);
            let me = format!("worker-{variant}");
            ensure!(
                !workers.is_empty() && workers.iter().all(|w| *w == me),
                "{run} ran on {workers:?}, only {me} may"
            );
        }
    }
    // The auto-upgrading runs' tasks after the signal went to B.
    for auto in &autos {
        let _: Value = rt.block_on(client.await_result(auto, WAIT))?;
        let workers = task_workers(&history(&rt, &url, auto)?);
        ensure!(
            workers.first().map(String::as_str) == Some("worker-a")
                && workers.last().map(String::as_str) == Some("worker-b"),
            "the auto-upgrading run {auto} ran on {workers:?}"
        );
    }
    // Continue-as-new: the successor keeps A when asked, else goes to B.
    for (run, build, variant) in [(&keep, "A", "a"), (&moves, "B", "b")] {
        let successor = wait_for(WAIT, "the successor", || {
            let to = describe(&rt, &url, run).ok()?.continued_to;
            (!to.is_empty()).then_some(to)
        })?;
        wait_for(WAIT, "the successor to wait for go", || {
            waits_for_signal(&rt, &url, &successor, "go")
        })?;
        ensure!(
            describe(&rt, &url, &successor)?.build == build,
            "{successor}"
        );
        rt.block_on(client.signal(&successor, "go", &json!(seed)))?;
        let result: Value = rt.block_on(client.await_result(&successor, WAIT))?;
        ensure!(result["variant"] == variant, "{successor}: {result}");
        let me = format!("worker-{variant}");
        let workers = task_workers(&history(&rt, &url, &successor)?);
        ensure!(workers.iter().all(|w| *w == me), "{successor}: {workers:?}");
    }

    // A stops: the run still pinned to A waits for a worker of A, visibly, and B (polling all
    // the while) never takes it.
    worker_a.kill9();
    rt.block_on(client.signal(&held, "go", &json!(seed)))?;
    wait_for(WAIT, "the held run to wait on build A", || {
        describe(&rt, &url, &held)
            .ok()?
            .waiting_on
            .iter()
            .any(|w| matches!(&w.what, Some(What::Build(b)) if b.build_id == "A"))
            .then_some(())
    })?;
    let (code, out, err) = cli(&url, &["run", "show", &held])?;
    ensure!(
        code == 0 && out.contains("a worker of build \"A\"") && out.contains("pinned to A"),
        "run show: {out}\n{err}"
    );
    let (code, out, _) = cli(&url, &["run", "list", "--waiting", "build", "--json"])?;
    ensure!(
        code == 0 && out.contains(&held),
        "run list --waiting build: {out}"
    );
    // A returns and finishes it.
    let _worker_a = worker(other, &side, "a")?;
    let result: Value = rt.block_on(client.await_result(&held, WAIT))?;
    ensure!(result["variant"] == "a", "{held}: {result}");
    let workers = task_workers(&history(&rt, &url, &held)?);
    ensure!(
        workers.iter().all(|w| w == "worker-a"),
        "{held}: {workers:?}"
    );
    Ok(())
}

/// Over the raw protocol: a run pinned to A is not offered to B; a worker that names no types
/// (and so takes any task) and fails it with nondeterminism gets the build it needs recorded
/// in the failure, which `run show` then shows.
#[test]
fn a_pinned_runs_nondeterminism_names_the_build_it_needs() -> Result<()> {
    use steadfast_proto::v1 as pb;
    use steadfast_tests::raw::{QUEUE, Raw, json};

    let dir = tempfile::tempdir()?;
    let server = Server::start(&dir.path().join("data"), None)?;
    let url = server.url();
    let rt = runtime();
    let mut raw = rt.block_on(Raw::connect(&url))?;
    let poll = |raw: &mut Raw, types: &[&str], build: &str, timeout_ms: u64| {
        let req = pb::PollWorkflowTaskRequest {
            namespace: "default".into(),
            task_queue: QUEUE.into(),
            worker_id: format!("raw-{build}"),
            workflow_types: types.iter().map(|t| t.to_string()).collect(),
            poll_timeout_ms: timeout_ms,
            build_id: build.into(),
        };
        let r = rt
            .block_on(raw.worker.poll_workflow_task(req))?
            .into_inner();
        anyhow::Ok(Some(r).filter(|t| !t.task_token.is_empty()))
    };
    let run = rt.block_on(raw.start("default", "wf"))?;
    let first = poll(&mut raw, &["wf"], "A", 10_000)?.context("the first task")?;
    rt.block_on(
        raw.worker
            .complete_workflow_task(pb::CompleteWorkflowTaskRequest {
                namespace: "default".into(),
                task_token: first.task_token,
                worker_id: "raw-A".into(),
                build_id: "A".into(),
                ..Default::default()
            }),
    )?;
    ensure!(describe(&rt, &url, &run)?.build == "A");
    rt.block_on(raw.client.signal_run(pb::SignalRunRequest {
        namespace: "default".into(),
        run_id: run.clone(),
        signal_name: "poke".into(),
        input: Some(json("1")),
        ..Default::default()
    }))?;
    ensure!(
        poll(&mut raw, &["wf"], "B", 500)?.is_none(),
        "build B was offered a task of a run pinned to A"
    );
    // A poll naming no types takes any task; this one fails it as nondeterministic.
    let task = poll(&mut raw, &[], "", 10_000)?.context("the any-type poll")?;
    rt.block_on(raw.worker.fail_workflow_task(pb::FailWorkflowTaskRequest {
        namespace: "default".into(),
        task_token: task.task_token,
        cause: pb::WorkflowTaskFailCause::Nondeterminism as i32,
        message: "[STF-ND001] nondeterminism at command seq 1".into(),
        worker_id: "raw-B".into(),
        build_id: "B".into(),
    }))?;
    let failed = history(&rt, &url, &run)?
        .into_iter()
        .find_map(|e| match e.attributes {
            Some(Attributes::WorkflowTaskFailed(f)) => Some(f.message),
            _ => None,
        })
        .context("no WorkflowTaskFailed")?;
    ensure!(
        failed.starts_with("[STF-ND001]")
            && failed.contains("pinned to build \"A\"")
            && failed.contains("runs build \"B\""),
        "{failed}"
    );
    let (code, out, err) = cli(&url, &["run", "show", &run])?;
    ensure!(
        code == 0 && out.contains("pinned to build \"A\""),
        "run show: {out}\n{err}"
    );
    Ok(())
}
