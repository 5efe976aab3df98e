//! Updates against a live run (issue 18, point 4): an update changes what the workflow
//! returns and is answered; a retry with the same request id is applied once; a rejected
//! update leaves only its request and its rejection; an update recorded before a server
//! SIGKILL is applied once and its retry gets the answer.

use std::time::Duration;

use anyhow::{Result, bail, ensure};
use serde_json::{Value, json};
use steadfast_proto::v1 as pb;
use steadfast_proto::v1::history_event::Attributes as A;
use steadfast_sdk::client::{Client, Error, StartOptions};
use steadfast_tests::{Server, cli, history, runtime, start_test_worker, test_seed};

const WAIT: Duration = Duration::from_secs(60);

fn count(h: &[pb::HistoryEvent], f: impl Fn(&A) -> bool) -> usize {
    h.iter()
        .filter(|e| e.attributes.as_ref().is_some_and(&f))
        .count()
}

fn requested(h: &[pb::HistoryEvent], id: &str) -> usize {
    count(
        h,
        |a| matches!(a, A::UpdateRequested(u) if u.update_id == id),
    )
}

fn completed(h: &[pb::HistoryEvent], id: &str) -> usize {
    count(
        h,
        |a| matches!(a, A::UpdateCompleted(u) if u.update_id == id),
    )
}

fn steps(h: &[pb::HistoryEvent]) -> usize {
    count(h, |a| matches!(a, A::ActivityScheduled(_)))
}

#[test]
fn updates_steer_a_run_once_per_request_id_and_rejections_leave_no_trace() -> Result<()> {
    let seed = test_seed();
    let (id1, id2) = (format!("u1-{seed}"), format!("u2-{seed}"));
    let dir = tempfile::tempdir()?;
    let server = Server::start(&dir.path().join("data"), None)?;
    let url = server.url();
    let _worker = start_test_worker(&url, &dir.path().join("side"), &[])?;
    let rt = runtime();
    let client = rt.block_on(Client::connect(url.clone()))?;
    let run = rt.block_on(client.start_workflow("steer", &(), StartOptions::default()))?;
    let id = run.run_id.clone();

    let n: usize = rt.block_on(client.update(&id, "add", "alpha", &id1, Some(WAIT)))?;
    ensure!(n == 1, "first update answered {n}");
    // A retry with the same id: the same answer, applied once.
    let again: usize = rt.block_on(client.update(&id, "add", "alpha", &id1, Some(WAIT)))?;
    ensure!(again == 1, "retry answered {again}");
    let h = history(&rt, &url, &id)?;
    ensure!(
        requested(&h, &id1) == 1 && completed(&h, &id1) == 1,
        "u1 recorded twice"
    );
    ensure!(steps(&h) == 1, "the handler ran {} activities", steps(&h));

    // A rejected update: its request and its rejection, nothing else.
    let before = history(&rt, &url, &id)?;
    match rt.block_on(client.update::<usize>(&id, "add", "bad-item", &id2, Some(WAIT))) {
        Err(Error::UpdateRejected(m)) => {
            ensure!(m.contains("STF-UPDATE001") && m.contains("bad"), "{m}")
        }
        other => bail!("a bad item was answered {other:?}"),
    }
    let after = history(&rt, &url, &id)?;
    let added: Vec<&str> = after[before.len()..]
        .iter()
        .filter_map(|e| e.attributes.as_ref())
        .filter(|a| {
            !matches!(
                a,
                A::WorkflowTaskScheduled(_)
                    | A::WorkflowTaskStarted(_)
                    | A::WorkflowTaskCompleted(_)
            )
        })
        .map(|a| match a {
            A::UpdateRequested(_) => "requested",
            A::UpdateRejected(_) => "rejected",
            _ => "other",
        })
        .collect();
    ensure!(
        added == ["requested", "rejected"],
        "a rejection left {added:?}"
    );

    // The CLI waits for the answer and prints it.
    let (code, out, err) = cli(&url, &["run", "update", &id, "add", "--input", "\"beta\""])?;
    ensure!(
        code == 0 && out.trim() == "2",
        "run update: {code} {out} {err}"
    );
    let items: Vec<String> = rt.block_on(client.query(&id, "items", &(), None))?;
    ensure!(items == ["alpha", "beta"], "items {items:?}");

    rt.block_on(client.signal(&id, "finish", &Value::Null))?;
    let out: Vec<String> = rt.block_on(run.result(WAIT))?;
    ensure!(out == ["alpha", "beta"], "result {out:?}");
    ensure!(steps(&history(&rt, &url, &id)?) == 2);
    Ok(())
}

#[test]
fn an_update_recorded_before_a_server_sigkill_is_applied_once() -> Result<()> {
    let seed = test_seed();
    let uid = format!("crash-{seed}");
    let dir = tempfile::tempdir()?;
    let mut server = Server::start(&dir.path().join("data"), None)?;
    let url = server.url();
    let side = dir.path().join("side");
    let rt = runtime();
    let client = rt.block_on(Client::connect(url.clone()))?;
    let run = rt.block_on(client.start_workflow("steer", &(), StartOptions::default()))?;
    let id = run.run_id.clone();
    // No worker yet: the update is recorded, not answered.
    match rt.block_on(client.update::<usize>(
        &id,
        "add",
        "gamma",
        &uid,
        Some(Duration::from_millis(500)),
    )) {
        Err(Error::Unavailable(m)) => {
            ensure!(m.contains(&uid), "the timeout names the request id: {m}")
        }
        other => bail!("expected a timeout, got {other:?}"),
    }
    ensure!(requested(&history(&rt, &url, &id)?, &uid) == 1);
    server.crash_and_restart()?;
    let _worker = start_test_worker(&url, &side, &[])?;
    let retry = || -> Result<usize> {
        let client = rt.block_on(Client::connect(url.clone()))?;
        Ok(rt.block_on(client.update(&id, "add", "gamma", &uid, Some(WAIT)))?)
    };
    let n = steadfast_tests::retry(WAIT, "retry the update", retry)?;
    ensure!(n == 1, "answered {n}");
    let n = retry()?;
    ensure!(n == 1, "second retry answered {n}");
    let h = history(&rt, &url, &id)?;
    ensure!(
        requested(&h, &uid) == 1 && completed(&h, &uid) == 1,
        "applied more than once"
    );
    ensure!(steps(&h) == 1, "the handler ran {} activities", steps(&h));
    let client = rt.block_on(Client::connect(url.clone()))?;
    rt.block_on(client.signal(&id, "finish", &json!(null)))?;
    let out: Vec<String> = rt.block_on(client.await_result(&id, WAIT))?;
    ensure!(out == ["gamma"], "result {out:?}");
    Ok(())
}
