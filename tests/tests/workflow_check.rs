//! Checking an upgrade before deploying it (issue 14, point 5): runs in flight on the old code
//! (test worker `--variant a`), then `steadfast workflow check` answered by the new code in
//! check mode (`--variant b`, `STEADFAST_CHECK_MODE=1`). `nondet` runs that already scheduled
//! their second activity diverge on the new code (it schedules `other` there); those still in
//! their first do not, nor do `deploy` runs (the new code puts its change behind
//! `ctx.patched`). The check names exactly the diverging runs and exits 9; once they are
//! terminated it exits 0. The check worker takes no task: nothing runs on it. Without a check
//! worker the CLI times out with a message saying what to start; bad arguments are refused.

use std::time::Duration;

use anyhow::{Context, Result, ensure};
use serde_json::{Value, json};
use steadfast_proto::v1::history_event::Attributes;
use steadfast_sdk::client::{Client, StartOptions};
use steadfast_tests::deploy::{PATCH_ID, WORKFLOW};
use steadfast_tests::{
    Server, cli, history, runtime, start_check_worker, start_test_worker, test_seed, wait_for,
};

const WAIT: Duration = Duration::from_secs(40);
/// Long enough that no activity of the test ends while it runs.
const LONG_MS: u64 = 600_000;

fn scheduled(rt: &tokio::runtime::Runtime, url: &str, run: &str) -> usize {
    history(rt, url, run)
        .map(|events| {
            events
                .iter()
                .filter(|e| matches!(e.attributes, Some(Attributes::ActivityScheduled(_))))
                .count()
        })
        .unwrap_or(0)
}

#[test]
fn a_check_names_the_runs_the_new_code_cannot_replay() -> Result<()> {
    let seed = test_seed();
    let past = 1 + (seed % 3) as usize; // nondet runs in their second activity: diverge
    let early = 1 + (seed / 3 % 2) as usize; // nondet runs in their first: replay
    let deploys = 1 + (seed / 6 % 2) as usize; // deploy runs waiting for `go`: replay
    let dir = tempfile::tempdir()?;
    let side_file = dir.path().join("side");
    let server = Server::start(&dir.path().join("data"), None)?;
    let url = server.url();
    let rt = runtime();
    let client = rt.block_on(Client::connect(url.clone()))?;
    let queue = format!("deploy-{seed}");
    let on_queue = || StartOptions {
        task_queue: Some(queue.clone()),
        ..Default::default()
    };

    // No check worker yet: a clear timeout. Bad arguments first.
    let (code, out, err) = cli(
        &url,
        &[
            "workflow",
            "check",
            "--task-queue",
            &queue,
            "--timeout",
            "1s",
        ],
    )?;
    ensure!(
        code == 1
            && out.is_empty()
            && err.contains("[STF-CHECK001]")
            && err.contains("STEADFAST_CHECK_MODE=1"),
        "no check worker: exit {code}\n{out}\n{err}"
    );
    let (code, _, err) = cli(&url, &["workflow", "check"])?;
    ensure!(
        code == 2 && err.contains("--task-queue"),
        "no queue: exit {code}: {err}"
    );
    let (code, _, err) = cli(
        &url,
        &[
            "workflow",
            "check",
            "--task-queue",
            &queue,
            "--timeout",
            "0s",
        ],
    )?;
    ensure!(
        code == 2 && err.contains("--timeout"),
        "zero timeout: exit {code}: {err}"
    );
    let (code, _, err) = cli(
        &url,
        &["workflow", "check", "--task-queue", "bad\u{1}queue"],
    )?;
    ensure!(
        code == 1 && err.contains("task_queue"),
        "bad queue: exit {code}: {err}"
    );

    // The old code, with runs in flight.
    let _old = start_test_worker(
        &url,
        &side_file,
        &["--variant", "a", "--task-queue", &queue],
    )?;
    let start = |ty: &str, input: Value| -> Result<String> {
        Ok(rt
            .block_on(client.start_workflow(ty, &input, on_queue()))?
            .run_id)
    };
    let mut diverging = Vec::new();
    for _ in 0..past {
        diverging.push(start(
            "nondet",
            json!({ "first_ms": 0, "second_ms": LONG_MS, "start_to_close_ms": LONG_MS }),
        )?);
    }
    let mut replaying = Vec::new();
    for _ in 0..early {
        replaying.push(start(
            "nondet",
            json!({ "first_ms": LONG_MS, "second_ms": 0, "start_to_close_ms": LONG_MS }),
        )?);
    }
    for i in 0..deploys {
        replaying.push(start(WORKFLOW, json!({ "n": i }))?);
    }
    for run in &diverging {
        wait_for(WAIT, "a nondet run to schedule its second activity", || {
            (scheduled(&rt, &url, run) == 2).then_some(())
        })?;
    }
    for run in &replaying {
        wait_for(WAIT, "a run to schedule its first activity", || {
            (scheduled(&rt, &url, run) == 1).then_some(())
        })?;
    }

    // The new code in check mode.
    let mut checker = start_check_worker(
        &url,
        &side_file,
        &["--variant", "b", "--task-queue", &queue],
    )?;
    let lengths: Vec<usize> = diverging
        .iter()
        .chain(&replaying)
        .map(|r| history(&rt, &url, r).map(|h| h.len()))
        .collect::<Result<_>>()?;
    let (code, out, err) = cli(
        &url,
        &[
            "workflow",
            "check",
            "--task-queue",
            &queue,
            "--timeout",
            "30s",
            "--json",
        ],
    )?;
    ensure!(
        code == 9,
        "a diverging check exits 9, got {code}\n{out}\n{err}"
    );
    let report: Value = serde_json::from_str(out.trim()).with_context(|| out.clone())?;
    let types = report["workflow_types"].as_array().context("types")?;
    let of = |ty: &str| {
        types
            .iter()
            .find(|t| t["workflow_type"] == ty)
            .cloned()
            .unwrap_or_default()
    };
    let nondet = of("nondet");
    ensure!(
        nondet["runs"] == json!(past + early) && nondet["clean"] == json!(early),
        "nondet: {nondet}"
    );
    let mut named: Vec<String> = nondet["diverged"]
        .as_array()
        .context("diverged")?
        .iter()
        .map(|d| d["run_id"].as_str().unwrap_or_default().to_owned())
        .collect();
    named.sort();
    let mut want = diverging.clone();
    want.sort();
    ensure!(
        named == want,
        "diverging runs named {named:?}, want {want:?}"
    );
    for d in nondet["diverged"].as_array().context("diverged")? {
        let message = d["message"].as_str().unwrap_or_default();
        ensure!(
            d["seq"] == 2
                && message.contains("[STF-ND001]")
                && d["history"].as_str().unwrap_or_default().contains("step")
                && d["code"].as_str().unwrap_or_default().contains("other"),
            "divergence: {d}"
        );
    }
    let deploy = of(WORKFLOW);
    ensure!(
        deploy["runs"] == json!(deploys) && deploy["clean"] == json!(deploys),
        "deploy: {deploy}"
    );
    // The old deploy runs passed the change on the old branch: keep `patched`.
    let patches = report["patches"].as_array().context("patches")?;
    ensure!(
        patches.len() == 1
            && patches[0]["patch_id"] == PATCH_ID
            && patches[0]["runs_without_marker"] == json!(deploys)
            && patches[0]["runs_with_marker"] == 0,
        "patches: {patches:?}"
    );
    // The readable form names the same runs.
    let (code, out, err) = cli(&url, &["workflow", "check", "--task-queue", &queue])?;
    ensure!(code == 9, "exit {code}: {err}");
    for run in &diverging {
        ensure!(
            out.contains(&format!("{run}  at command seq 2")),
            "{run} not in\n{out}"
        );
    }
    ensure!(
        out.contains(&format!(
            "nondet: {} open runs, {early} replay cleanly, {past} diverge",
            past + early
        )),
        "{out}"
    );
    ensure!(
        out.contains(&format!("keep ctx.patched({PATCH_ID:?})")),
        "{out}"
    );
    // The check recorded nothing: every history is as long as before.
    let after: Vec<usize> = diverging
        .iter()
        .chain(&replaying)
        .map(|r| history(&rt, &url, r).map(|h| h.len()))
        .collect::<Result<_>>()?;
    ensure!(
        after == lengths,
        "histories changed: {lengths:?} -> {after:?}"
    );

    // Without the runs it cannot replay, the new code is compatible with every open run.
    for run in &diverging {
        rt.block_on(client.terminate(run, "incompatible with the new code"))?;
    }
    let (code, out, err) = cli(
        &url,
        &[
            "workflow",
            "check",
            "--task-queue",
            &queue,
            "--timeout",
            "30s",
        ],
    )?;
    ensure!(code == 0, "a clean check exits 0, got {code}\n{out}\n{err}");
    ensure!(
        out.contains(&format!(
            "nondet: {early} open runs, {early} replay cleanly, 0 diverge"
        )),
        "{out}"
    );
    checker.kill9();
    Ok(())
}
