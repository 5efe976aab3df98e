//! Several server nodes over one PostgreSQL (issue 11): real `steadfast server` processes
//! sharing a throwaway PostgreSQL cluster that this test binary starts itself.
//!
//! - Three nodes: runs started through every node, workers connected to other nodes than the
//!   ones their runs were started through, results awaited through yet another node. Every
//!   run completes, each activity has exactly one ActivityCompleted, histories are gapless
//!   and their chains verify.
//! - Two nodes, one SIGKILLed mid-load at a moment drawn from `TEST_SEED` and restarted:
//!   the same, and nothing a node acknowledged before the kill is lost.
//!
//! Skipped, with a message, on a machine without PostgreSQL (CI installs it).

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result, ensure};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::json;
use steadfast_postgres::testing::PgCluster;
use steadfast_proto::v1 as pb;
use steadfast_proto::v1::history_event::Attributes;
use steadfast_sdk::client::{Client, StartOptions};
use steadfast_tests::{
    Proc, Server, cli, history, runtime, side, start_test_worker, test_seed, wait_for,
};

const QUEUE: &str = "multi";

/// `n` server nodes over the database at `url`, each with its own (unused) data dir.
fn start_nodes(dir: &Path, url: &str, n: usize) -> Result<Vec<Server>> {
    (0..n)
        .map(|i| Server::start_with(&dir.join(format!("node{i}")), None, &["--store", url]))
        .collect()
}

fn worker(node: &Server, side_file: &Path) -> Result<Proc> {
    start_test_worker(&node.url(), side_file, &["--task-queue", QUEUE])
}

/// Completed activity ids of a history, with their results.
fn completions(events: &[pb::HistoryEvent]) -> BTreeMap<u32, Vec<String>> {
    let mut out: BTreeMap<u32, Vec<String>> = BTreeMap::new();
    for e in events {
        if let Some(Attributes::ActivityCompleted(a)) = &e.attributes {
            let result = a
                .result
                .as_ref()
                .map(|p| String::from_utf8_lossy(&p.data).into_owned())
                .unwrap_or_default();
            out.entry(a.command_seq).or_default().push(result);
        }
    }
    out
}

/// One `seq` run of `steps` activities: its history is gapless, each activity completed once
/// with its own index, and the chain verifies (checked by the server behind `url`).
fn check_run(
    rt: &tokio::runtime::Runtime,
    url: &str,
    run: &str,
    steps: u32,
) -> Result<Vec<pb::HistoryEvent>> {
    let events = history(rt, url, run)?;
    let seqs: Vec<u64> = events.iter().map(|e| e.seq).collect();
    ensure!(
        seqs == (1..=events.len() as u64).collect::<Vec<_>>(),
        "run {run}: the history has gaps: {seqs:?}"
    );
    let done = completions(&events);
    ensure!(
        done.keys().copied().collect::<BTreeSet<_>>() == (1..=steps).collect(),
        "run {run}: completed activities {:?}",
        done.keys()
    );
    for (id, results) in &done {
        ensure!(
            results == &vec![(id - 1).to_string()],
            "run {run}: activity {id} has completions {results:?}, expected one"
        );
    }
    let (code, out, err) = cli(url, &["history", "replay", run])?;
    ensure!(code == 0, "history replay {run}: {out}\n{err}");
    Ok(events)
}

fn start_seq(rt: &tokio::runtime::Runtime, url: &str, steps: u32, sleep_ms: u64) -> Result<String> {
    let client = rt.block_on(Client::connect(url.to_string()))?;
    let options = StartOptions {
        task_queue: Some(QUEUE.into()),
        ..StartOptions::default()
    };
    let input = json!({ "n": steps, "sleep_ms": sleep_ms, "start_to_close_ms": 20_000 });
    Ok(rt
        .block_on(client.start_workflow("seq", &input, options))?
        .run_id)
}

fn await_seq(rt: &tokio::runtime::Runtime, url: &str, run: &str, steps: u32) -> Result<()> {
    let client = rt.block_on(Client::connect(url.to_string()))?;
    let result: Vec<u32> = rt
        .block_on(client.await_result(run, Duration::from_secs(120)))
        .with_context(|| format!("the result of run {run}"))?;
    ensure!(
        result == (0..steps).collect::<Vec<_>>(),
        "run {run}'s result: {result:?}"
    );
    Ok(())
}

#[test]
fn runs_spread_over_three_nodes_complete_once() -> Result<()> {
    let Some(pg) = PgCluster::shared() else {
        return Ok(());
    };
    let url = pg.create_database("three_nodes");
    let dir = tempfile::tempdir()?;
    let nodes = start_nodes(dir.path(), &url, 3)?;
    let side_file = dir.path().join("side");
    // A worker on node 0, and one given nodes 1 and 2 as a list (its calls are balanced over
    // both); runs started through every node, awaited through the next.
    let _w0 = worker(&nodes[0], &side_file)?;
    let both = format!("{},{}", nodes[1].url(), nodes[2].url());
    let _w1 = start_test_worker(&both, &side_file, &["--task-queue", QUEUE])?;
    let rt = runtime();
    const RUNS: usize = 12;
    const STEPS: u32 = 4;
    let mut runs = Vec::new();
    for i in 0..RUNS {
        runs.push((i, start_seq(&rt, &nodes[i % 3].url(), STEPS, 10)?));
    }
    for (i, run) in &runs {
        await_seq(&rt, &nodes[(i + 1) % 3].url(), run, STEPS)?;
    }
    for (i, run) in &runs {
        check_run(&rt, &nodes[(i + 2) % 3].url(), run, STEPS)?;
    }
    // Which worker processes executed activities (both may; neither is required to).
    let pids: BTreeSet<u32> = side::read(&side_file)?
        .iter()
        .filter_map(|l| match l {
            side::Line::Execution(e) => Some(e.pid),
            side::Line::Marker(_) => None,
        })
        .collect();
    eprintln!("{RUNS} runs over 3 nodes, executed by workers {pids:?}");
    Ok(())
}

#[test]
fn a_node_killed_mid_load_loses_nothing() -> Result<()> {
    let Some(pg) = PgCluster::shared() else {
        return Ok(());
    };
    let seed = test_seed();
    let mut rng = StdRng::seed_from_u64(seed);
    let url = pg.create_database("node_killed");
    let dir = tempfile::tempdir()?;
    let mut nodes = start_nodes(dir.path(), &url, 2)?;
    let side_file = dir.path().join("side");
    let _w0 = worker(&nodes[0], &side_file)?;
    let _w1 = worker(&nodes[1], &side_file)?;
    let rt = runtime();
    const RUNS: usize = 16;
    const STEPS: u32 = 6;
    let mut runs = Vec::new();
    for i in 0..RUNS {
        runs.push(start_seq(&rt, &nodes[i % 2].url(), STEPS, 40)?);
    }
    // Kill node 0 once some activities of the load have run, plus a random delay.
    let after: usize = rng.gen_range(5..40);
    let delay_ms: u64 = rng.gen_range(0..200);
    eprintln!("killing node 0 after {after} executions, plus {delay_ms} ms");
    wait_for(
        Duration::from_secs(60),
        "executions before the kill",
        || {
            let n = side::read(&side_file).ok()?.len();
            (n >= after).then_some(())
        },
    )?;
    std::thread::sleep(Duration::from_millis(delay_ms));
    // What node 1 serves now is acknowledged: it must all be there at the end.
    let served: Vec<Vec<pb::HistoryEvent>> = runs
        .iter()
        .map(|r| history(&rt, &nodes[1].url(), r))
        .collect::<Result<_>>()?;
    nodes[0].proc.kill9();
    std::thread::sleep(Duration::from_millis(300));
    nodes[0].restart()?;
    for (i, run) in runs.iter().enumerate() {
        await_seq(&rt, &nodes[i % 2].url(), run, STEPS)?;
    }
    for (run, before) in runs.iter().zip(&served) {
        let events = check_run(&rt, &nodes[0].url(), run, STEPS)?;
        ensure!(
            before.len() <= events.len(),
            "run {run}: {} events were served before the kill, {} after",
            before.len(),
            events.len()
        );
        for (a, b) in before.iter().zip(&events) {
            ensure!(
                (a.seq, &a.hash) == (b.seq, &b.hash),
                "run {run}: event {} served before the kill changed",
                a.seq
            );
        }
    }
    Ok(())
}

/// A node that dies between the two appends of a continue-as-new (the old run closed, its
/// successor not created) and never comes back: another node, already running, creates the
/// successor at its next reconciliation — not only at its own start.
#[test]
fn work_a_dead_node_left_undone_is_finished_by_another() -> Result<()> {
    use steadfast_engine::event::{
        Budget, RunContinuedAsNew, RunStarted, WorkflowTaskCompleted, WorkflowTaskScheduled,
        WorkflowTaskStarted,
    };
    use steadfast_engine::payload::Payload;
    use steadfast_engine::store::{AppendRequest, Store};
    use steadfast_engine::{Event, RunId, RunKey};
    use steadfast_postgres::{PgOptions, PgStore};

    let Some(pg) = PgCluster::shared() else {
        return Ok(());
    };
    let url = pg.create_database("dead_node");
    let dir = tempfile::tempdir()?;
    let node = Server::start_with(
        &dir.path().join("node"),
        None,
        &["--store", &url, "--reconcile-period", "500ms"],
    )?;
    let rt = runtime();
    // The dead node's writes, made here through a store of our own.
    let (old, new_id) = rt.block_on(async {
        let store = PgStore::connect(
            &url,
            PgOptions {
                node_id: "dead-node".into(),
                notify: false,
                ..PgOptions::default()
            },
        )
        .await?;
        let old = RunKey::new("default", RunId::new_v7());
        let new_id = RunId::new_v7();
        // Written now, with a workflow task timeout the test never reaches: the live node
        // must have nothing to do on this run (a task started long ago with no time left
        // was timed out by it between two of these appends, which then conflicted).
        let now_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)?
            .as_millis() as i64;
        let append = |next: u64, events: Vec<Event>| {
            store.append(AppendRequest {
                key: old.clone(),
                expected_next_seq: next,
                events,
                time_ms: now_ms,
                wait_durable: true,
            })
        };
        let started = Event::RunStarted(RunStarted {
            workflow_type: "seq".into(),
            workflow_id: "continued".into(),
            task_queue: QUEUE.into(),
            input: Payload::json(b"{\"n\":1,\"sleep_ms\":1}".to_vec()),
            run_timeout_ms: 0,
            budget: Budget::default(),
            continued_from: None,
            identity: "test".into(),
            random_seed: 7,
            parent: None,
            forked_from: None,
            schedule: None,
            traceparent: None,
        });
        let scheduled = Event::WorkflowTaskScheduled(WorkflowTaskScheduled {
            task_queue: QUEUE.into(),
            attempt: 1,
            not_before_ms: 0,
        });
        append(1, vec![started, scheduled]).await?;
        append(
            3,
            vec![Event::WorkflowTaskStarted(WorkflowTaskStarted {
                scheduled_seq: 2,
                worker: "w".into(),
                timeout_ms: 600_000,
            })],
        )
        .await?;
        let completed = Event::WorkflowTaskCompleted(WorkflowTaskCompleted {
            started_seq: 3,
            worker: "w".into(),
        });
        let cont = Event::RunContinuedAsNew(RunContinuedAsNew {
            keep_build: false,
            command_seq: 1,
            new_run_id: new_id,
            input: Payload::json(b"{\"n\":1,\"sleep_ms\":1}".to_vec()),
        });
        append(4, vec![completed, cont]).await?;
        store.close().await;
        anyhow::Ok((old, new_id))
    })?;
    // The running node finds the closed run's missing successor and creates it.
    let new_run = new_id.to_string();
    let info = wait_for(
        Duration::from_secs(30),
        "the successor to be created",
        || {
            rt.block_on(async {
                let client = Client::connect(node.url()).await.ok()?;
                client.describe(&new_run).await.ok()
            })
        },
    )?;
    eprintln!(
        "successor {new_run} of {} created by the live node: {:?}",
        old.run_id, info.status
    );
    Ok(())
}

/// An agent run over two nodes: started through one, its LLM calls run by a worker on the
/// other, parked on its token budget (decided in the database, whichever node dispatches),
/// raised through the first, completed with its usage rolled up — and a hello run beside it.
#[test]
fn agent_runs_keep_their_budgets_across_nodes() -> Result<()> {
    use pb::waiting_on::What;
    use steadfast_tests::bin;

    let Some(pg) = PgCluster::shared() else {
        return Ok(());
    };
    let url = pg.create_database("agents");
    let dir = tempfile::tempdir()?;
    let nodes = start_nodes(dir.path(), &url, 2)?;
    let side = dir.path().join("agent-side.jsonl");
    let mut cmd = std::process::Command::new(bin("agent-worker"));
    cmd.args(["--addr", &nodes[1].url(), "--task-queue", "agents", "--log"])
        .arg(&side)
        .env("RUST_LOG", "warn");
    let _agent_worker = Proc::spawn("agent-worker", &mut cmd)?;
    let _hello = steadfast_tests::start_hello_worker(&nodes[0].url())?;
    let rt = runtime();

    // 4 calls of 150 tokens under a ceiling of 300: the third call waits on the budget.
    let input =
        r#"{"steps":4,"input_tokens":100,"output_tokens":50,"cost_micros":10,"model":"fake"}"#;
    let (code, out, err) = cli(
        &nodes[0].url(),
        &[
            "run",
            "start",
            "llm_agent",
            "--input",
            input,
            "--task-queue",
            "agents",
            "--max-tokens",
            "300",
        ],
    )?;
    ensure!(code == 0, "run start: {out}\n{err}");
    let run = out.trim().to_string();
    let (code, out, err) = cli(
        &nodes[1].url(),
        &["run", "start", "hello", "--input", r#"{"name":"Ada"}"#],
    )?;
    ensure!(code == 0, "run start hello: {out}\n{err}");
    let hello = out.trim().to_string();

    let parked = wait_for(Duration::from_secs(60), "the agent run to park", || {
        let info = rt
            .block_on(async {
                let c = Client::connect(nodes[1].url()).await?;
                anyhow::Ok(c.describe(&run).await?)
            })
            .ok()?;
        info.waiting_on
            .iter()
            .any(|w| matches!(w.what, Some(What::Budget(_))))
            .then_some(info)
    })?;
    let used = parked.usage.clone().unwrap_or_default();
    ensure!(
        used.input_tokens + used.output_tokens == 300,
        "parked after two calls of 150 tokens: {used:?}"
    );
    let (code, out, err) = cli(
        &nodes[1].url(),
        &["run", "budget", &run, "--max-tokens", "10000"],
    )?;
    ensure!(code == 0, "run budget: {out}\n{err}");
    let client = rt.block_on(Client::connect(nodes[0].url()))?;
    let _: serde_json::Value = rt
        .block_on(client.await_result(&run, Duration::from_secs(60)))
        .context("the agent run's result")?;
    let info = rt.block_on(client.describe(&run))?;
    let usage = info.usage.unwrap_or_default();
    ensure!(
        (usage.input_tokens, usage.output_tokens, usage.llm_calls) == (400, 200, 4),
        "usage after four calls: {usage:?}"
    );
    let greeting: serde_json::Value = rt
        .block_on(client.await_result(&hello, Duration::from_secs(60)))
        .context("the hello run's result")?;
    ensure!(
        greeting.to_string().contains("Ada"),
        "hello's result: {greeting}"
    );
    for r in [&run, &hello] {
        let (code, out, err) = cli(&nodes[0].url(), &["history", "replay", r])?;
        ensure!(code == 0, "history replay {r}: {out}\n{err}");
    }
    Ok(())
}
