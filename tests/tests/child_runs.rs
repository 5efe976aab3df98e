//! Child runs (issue 18, point 1): a parent starts children, awaits them and sums their
//! results; a server SIGKILL between the children's start and their completion starts no
//! child twice; a cancelled parent applies each child's parent-close policy; `run list
//! --parent` finds the children.

use std::time::Duration;

use anyhow::{Result, ensure};
use serde_json::{Value, json};
use steadfast_proto::v1 as pb;
use steadfast_proto::v1::history_event::Attributes;
use steadfast_sdk::client::{Client, ListOptions, StartOptions};
use steadfast_tests::{Server, cli, runtime, start_test_worker, test_seed, wait_for};

const WAIT: Duration = Duration::from_secs(60);

async fn children(client: &Client, parent: &str) -> Result<Vec<pb::RunInfo>> {
    let (runs, _) = client
        .list(ListOptions {
            parent_run_id: Some(parent.into()),
            ..Default::default()
        })
        .await?;
    Ok(runs)
}

fn count(history: &[pb::HistoryEvent], f: impl Fn(&Attributes) -> bool) -> usize {
    history
        .iter()
        .filter(|e| e.attributes.as_ref().is_some_and(&f))
        .count()
}

#[test]
fn a_parent_sums_three_children_across_a_server_sigkill_starting_each_once() -> Result<()> {
    let seed = test_seed();
    let xs: Vec<u64> = (0..3u64)
        .map(|i| (seed.rotate_left(i as u32 * 7) % 1_000) + 1)
        .collect();
    let dir = tempfile::tempdir()?;
    let mut server = Server::start(&dir.path().join("data"), None)?;
    let url = server.url();
    let _worker = start_test_worker(&url, &dir.path().join("side"), &[])?;
    let rt = runtime();
    let client = rt.block_on(Client::connect(url.clone()))?;
    let run = rt.block_on(client.start_workflow(
        "parent",
        &json!({ "xs": xs }),
        StartOptions::default(),
    ))?;
    let parent = run.run_id.clone();
    // All three children exist and wait for their signal.
    wait_for(WAIT, "three running children", || {
        let kids = rt.block_on(children(&client, &parent)).ok()?;
        (kids.len() == 3
            && kids
                .iter()
                .all(|k| k.status == pb::RunStatus::Running as i32))
        .then_some(())
    })?;
    // The parent says it waits on each child, by run id and type; `--waiting child` finds it.
    let kids = rt.block_on(children(&client, &parent))?;
    let (code, out, err) = cli(&url, &["run", "show", &parent, "--json"])?;
    ensure!(code == 0, "run show --json: {err}");
    let shown: Value = serde_json::from_str(&out)?;
    let waits: Vec<&Value> = shown["waiting_on"]
        .as_array()
        .map(|w| w.iter().filter(|w| w["kind"] == "child").collect())
        .unwrap_or_default();
    for k in &kids {
        ensure!(
            waits.iter().any(|w| w["run_id"] == k.run_id.as_str()
                && w["workflow_type"] == "child"
                && w["state"] == "running"),
            "the parent's waiting_on lacks child {}: {waits:?}",
            k.run_id
        );
    }
    ensure!(waits.len() == 3, "three children waited on: {waits:?}");
    let (code, out, err) = cli(&url, &["run", "list", "--waiting", "child"])?;
    ensure!(code == 0, "run list --waiting child: {err}");
    ensure!(
        out.contains(&parent),
        "run list --waiting child lacks the parent:\n{out}"
    );
    // Only the parent: each child waits on a signal, not on a child.
    let (waiting, _) = rt.block_on(client.list(ListOptions {
        waiting: Some("child".into()),
        ..Default::default()
    }))?;
    let ids: Vec<&str> = waiting.iter().map(|r| r.run_id.as_str()).collect();
    ensure!(ids == [parent.as_str()], "waiting on a child: {ids:?}");
    server.crash_and_restart()?;
    let client = rt.block_on(Client::connect(url.clone()))?;
    let kids = rt.block_on(children(&client, &parent))?;
    ensure!(
        kids.len() == 3,
        "after the restart: {} children",
        kids.len()
    );
    for k in &kids {
        ensure!(k.parent_run_id == parent, "a child names its parent");
        rt.block_on(client.signal(&k.run_id, "go", &json!(true)))?;
    }
    let result: Value = rt.block_on(client.await_result(&parent, WAIT))?;
    let want: u64 = xs.iter().map(|x| 2 * x).sum();
    ensure!(
        result == json!({ "sum": want }),
        "result {result}, want sum {want}"
    );
    // Exactly one child run per command, each started and closed once in the parent.
    let history = rt.block_on(client.history(&parent))?;
    ensure!(count(&history, |a| matches!(a, Attributes::ChildRunRequested(_))) == 3);
    ensure!(count(&history, |a| matches!(a, Attributes::ChildRunStarted(_))) == 3);
    ensure!(count(&history, |a| matches!(a, Attributes::ChildRunClosed(_))) == 3);
    let kids = rt.block_on(children(&client, &parent))?;
    let mut ids: Vec<&str> = kids.iter().map(|k| k.run_id.as_str()).collect();
    ids.dedup();
    ensure!(ids.len() == 3, "three distinct children: {ids:?}");
    let (total, _) = rt.block_on(client.list(ListOptions {
        workflow_type: Some("child".into()),
        ..Default::default()
    }))?;
    ensure!(total.len() == 3, "{} child runs exist, not 3", total.len());
    // `run show` lists them, `run list --parent` finds them.
    let (code, out, err) = cli(&url, &["run", "show", &parent])?;
    ensure!(code == 0, "run show: {err}");
    ensure!(
        out.matches("child (completed)").count() == 3,
        "run show:\n{out}"
    );
    let (code, out, err) = cli(&url, &["run", "list", "--parent", &parent])?;
    ensure!(code == 0, "run list --parent: {err}");
    for k in &kids {
        ensure!(
            out.contains(&k.run_id),
            "run list --parent lacks {}:\n{out}",
            k.run_id
        );
    }
    let (code, _, err) = cli(&url, &["run", "list", "--parent", "not-a-run"])?;
    ensure!(
        code != 0 && err.contains("parent_run_id"),
        "a bad --parent is refused: {err}"
    );
    Ok(())
}

#[test]
fn a_cancelled_parent_applies_each_childs_policy() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let server = Server::start(&dir.path().join("data"), None)?;
    let url = server.url();
    let _worker = start_test_worker(&url, &dir.path().join("side"), &[])?;
    let rt = runtime();
    let client = rt.block_on(Client::connect(url.clone()))?;
    let run = rt.block_on(client.start_workflow(
        "parent",
        &json!({ "xs": [1, 2, 3], "policies": ["cancel", "terminate", "abandon"] }),
        StartOptions::default(),
    ))?;
    let parent = run.run_id.clone();
    wait_for(WAIT, "three running children", || {
        let kids = rt.block_on(children(&client, &parent)).ok()?;
        (kids.len() == 3
            && kids
                .iter()
                .all(|k| k.status == pb::RunStatus::Running as i32))
        .then_some(())
    })?;
    rt.block_on(client.cancel(&parent, "test"))?;
    let statuses = wait_for(WAIT, "the policies applied", || {
        let p = rt.block_on(client.describe(&parent)).ok()?;
        let kids = rt.block_on(children(&client, &parent)).ok()?;
        let s: Vec<i32> = kids.iter().map(|k| k.status).collect();
        (p.status == pb::RunStatus::Cancelled as i32
            && s[0] == pb::RunStatus::Cancelled as i32
            && s[1] == pb::RunStatus::Terminated as i32)
            .then_some(s)
    })?;
    ensure!(
        statuses[2] == pb::RunStatus::Running as i32,
        "the abandoned child runs on: {statuses:?}"
    );
    let kids = rt.block_on(children(&client, &parent))?;
    rt.block_on(client.signal(&kids[2].run_id, "go", &json!(true)))?;
    let r: Value = rt.block_on(client.await_result(&kids[2].run_id, WAIT))?;
    ensure!(
        r == json!(6),
        "the abandoned child finished on its own: {r}"
    );
    Ok(())
}
