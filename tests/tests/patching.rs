//! Patching across a deploy (issue 18, point 2): runs in flight on the old code (test worker
//! `--variant a`) when the worker is replaced by the patched code (`--variant b`, with
//! `ctx.patched`) finish on the old branch; runs started after the deploy take the new one
//! and record the marker. Every history replays offline: through the server's state machine
//! (`steadfast history replay`) and against the patched code (the SDK's replayer); the old
//! code replaying a patched run is told which patch it lacks.

use std::time::Duration;

use anyhow::{Context, Result, ensure};
use serde_json::{Value, json};
use steadfast_proto::v1::history_event::Attributes;
use steadfast_proto::v1::waiting_on::What;
use steadfast_sdk::client::{Client, StartOptions};
use steadfast_sdk::replay::Replayer;
use steadfast_tests::deploy::{PATCH_ID, Version, WORKFLOW, registry};
use steadfast_tests::{
    Server, cli, describe, history, runtime, start_test_worker, test_seed, wait_for,
};

const WAIT: Duration = Duration::from_secs(40);

fn waits_for_go(rt: &tokio::runtime::Runtime, url: &str, run: &str) -> Option<()> {
    let info = describe(rt, url, run).ok()?;
    info.waiting_on
        .iter()
        .any(|w| matches!(&w.what, Some(What::Signal(s)) if s.name == "go"))
        .then_some(())
}

fn markers(events: &[steadfast_proto::v1::HistoryEvent]) -> Vec<String> {
    events
        .iter()
        .filter_map(|e| match &e.attributes {
            Some(Attributes::PatchMarker(m)) => Some(m.patch_id.clone()),
            _ => None,
        })
        .collect()
}

#[test]
fn runs_in_flight_keep_the_old_branch_across_a_deploy_and_new_runs_take_the_new_one() -> Result<()>
{
    let seed = test_seed();
    let old_runs = 1 + (seed % 3) as usize;
    let new_runs = 1 + (seed / 3 % 3) as usize;
    let dir = tempfile::tempdir()?;
    let side_file = dir.path().join("side");
    let server = Server::start(&dir.path().join("data"), None)?;
    let url = server.url();
    let rt = runtime();
    let client = rt.block_on(Client::connect(url.clone()))?;

    // The old code starts some runs; each passes the changed point and waits for `go`.
    let mut old_worker = start_test_worker(&url, &side_file, &["--variant", "a"])?;
    let mut old = Vec::new();
    for i in 0..old_runs {
        let input = json!({ "n": i });
        old.push(
            rt.block_on(client.start_workflow(WORKFLOW, &input, StartOptions::default()))?
                .run_id,
        );
    }
    for run in &old {
        wait_for(WAIT, "an old run to wait for go", || {
            waits_for_go(&rt, &url, run)
        })?;
    }
    // The deploy: the old worker goes away, the patched code takes over.
    old_worker.kill9();
    let _new_worker = start_test_worker(&url, &side_file, &["--variant", "b"])?;
    let mut new = Vec::new();
    for i in 0..new_runs {
        let input = json!({ "n": 100 + i });
        new.push(
            rt.block_on(client.start_workflow(WORKFLOW, &input, StartOptions::default()))?
                .run_id,
        );
    }
    for run in &new {
        wait_for(WAIT, "a new run to wait for go", || {
            waits_for_go(&rt, &url, run)
        })?;
    }
    for run in old.iter().chain(&new) {
        rt.block_on(client.signal(run, "go", &json!(seed)))?;
    }
    for (runs, branch, label) in [(&old, "old", 0), (&new, "new", 1000)] {
        for run in runs {
            let result: Value = rt
                .block_on(client.await_result(run, WAIT))
                .with_context(|| format!("the result of {run}"))?;
            ensure!(
                result == json!({ "branch": branch, "label": label }),
                "{run} ({branch} run): {result}"
            );
            let events = history(&rt, &url, run)?;
            let want: Vec<String> = if branch == "new" {
                vec![PATCH_ID.into()]
            } else {
                Vec::new()
            };
            ensure!(
                markers(&events) == want,
                "{run}: markers {:?}",
                markers(&events)
            );
            // Offline: the server's state machine and chain, then the patched code.
            let (code, out, err) = cli(&url, &["history", "replay", run])?;
            ensure!(code == 0, "history replay {run}: {out}\n{err}");
            let replayed = Replayer::new(registry(Version::Patched))
                .replay_run(run, events.clone())
                .with_context(|| format!("replaying {run} against the patched code"))?;
            ensure!(
                replayed.finished && replayed.commands.is_empty(),
                "{run}: replay re-sent {:?}",
                replayed.commands
            );
            // The old code cannot replay a patched run, and is told which patch it lacks.
            if branch == "new" {
                let err = Replayer::new(registry(Version::Old))
                    .replay_run(run, events)
                    .err()
                    .context("the old code replayed a patched run")?
                    .to_string();
                ensure!(
                    err.contains("[STF-ND001]")
                        && err.contains(&format!("ctx.patched({PATCH_ID:?})")),
                    "{err}"
                );
            }
        }
    }
    Ok(())
}
