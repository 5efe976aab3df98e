//! The web UI's JSON and server-sent-events API (issue 15, point 1), against a real server
//! process: the same tokens, roles and namespaces as gRPC; read-only mode refuses every
//! write; histories page from the tail; payloads come only on demand; a run's event stream
//! resumes from `Last-Event-ID` with nothing lost or repeated; the live list shows a new run.

use std::time::Duration;

use anyhow::{Context, Result, ensure};
use serde_json::{Value, json};
use steadfast_proto::v1 as pb;
use steadfast_sdk::client::{Client, StartOptions};
use steadfast_tests::secure::{Services, entry, new_token, write_auth_file};
use steadfast_tests::ui::{Api, start_ui_server};
use steadfast_tests::{Proc, bin, runtime, start_test_worker, wait_for};

const WAIT: Duration = Duration::from_secs(60);

fn json_payload(v: &Value) -> pb::Payload {
    pb::Payload {
        encoding: "json/plain".into(),
        data: v.to_string().into_bytes(),
    }
}

#[test]
fn tokens_roles_namespaces_and_read_only_apply_to_the_ui() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let (admin, client, worker, other) = (new_token()?, new_token()?, new_token()?, new_token()?);
    let auth = dir.path().join("auth");
    write_auth_file(
        &auth,
        &[
            &entry(&admin, "ops", "admin", "*")?,
            &entry(&client, "app", "client", "default")?,
            &entry(&worker, "wrk", "worker", "*")?,
            &entry(&other, "tenant-b", "client", "b")?,
        ],
    )?;
    let auth_s = auth.to_str().context("utf-8 path")?;
    let (server, base) = start_ui_server(&dir.path().join("data"), &["--auth-file", auth_s])?;
    let rt = runtime();
    let channel = rt.block_on(tonic::transport::Endpoint::from_shared(server.url())?.connect())?;
    let svc = Services::new(channel, Some(&client));
    let run_id = rt
        .block_on(svc.client.clone().start_workflow(pb::StartWorkflowRequest {
            workflow_type: "signal".into(),
            input: Some(json_payload(&json!({"question": "ship it?"}))),
            ..Default::default()
        }))?
        .into_inner()
        .run_id;

    // The pages themselves need no token (the login form is one of them).
    let anon = Api::new(&base, None);
    let (code, _) = rt.block_on(anon.get_text("/"))?;
    ensure!(code == 200, "index: {code}");
    let (code, js) = rt.block_on(anon.get_text("/assets/app.js"))?;
    ensure!(code == 200 && js.contains("import"), "app.js: {code}");

    // No token, an unknown token: 401; a worker token may not list runs: 403.
    let (code, body) = rt.block_on(anon.get("/api/v1/runs"))?;
    ensure!(code == 401, "no token: {code} {body}");
    ensure!(
        body["error"]["message"]
            .as_str()
            .unwrap_or("")
            .contains("Bearer"),
        "{body}"
    );
    let (code, _) =
        rt.block_on(Api::new(&base, Some("not-a-token-not-a-token")).get("/api/v1/runs"))?;
    ensure!(code == 401, "unknown token: {code}");
    let (code, body) = rt.block_on(Api::new(&base, Some(&worker)).get("/api/v1/runs"))?;
    ensure!(
        code == 403 && body["error"]["code"] == "permission_denied",
        "worker: {code} {body}"
    );

    // The client token lists its namespace, and not another.
    let app = Api::new(&base, Some(&client));
    let (code, body) = rt.block_on(app.get("/api/v1/runs"))?;
    ensure!(code == 200, "client list: {code} {body}");
    ensure!(body["runs"][0]["run_id"] == run_id.as_str(), "{body}");
    let (code, _) = rt.block_on(app.get("/api/v1/runs?namespace=b"))?;
    ensure!(code == 403, "client in namespace b: {code}");
    let (code, body) =
        rt.block_on(Api::new(&base, Some(&other)).get(&format!("/api/v1/runs/{run_id}")))?;
    ensure!(code == 403, "tenant-b reading a default run: {code} {body}");
    let (code, body) = rt.block_on(app.get("/api/v1/session"))?;
    ensure!(
        code == 200 && body["name"] == "app" && body["role"] == "client",
        "{body}"
    );

    // Bad filters get a message that says what to use.
    let (code, body) = rt.block_on(app.get("/api/v1/runs?status=sleepy"))?;
    ensure!(
        code == 400
            && body["error"]["message"]
                .as_str()
                .unwrap_or("")
                .contains("running"),
        "{body}"
    );

    // A client may signal; raising a budget is for admins.
    let (code, body) = rt.block_on(app.post(
        &format!("/api/v1/runs/{run_id}/signal"),
        &json!({"name": "approve", "input": {"ok": true}}),
    ))?;
    ensure!(code == 200, "signal: {code} {body}");
    let budget = json!({"max_tokens": 5000});
    let (code, _) = rt.block_on(app.post(&format!("/api/v1/runs/{run_id}/budget"), &budget))?;
    ensure!(code == 403, "client budget: {code}");
    let ops = Api::new(&base, Some(&admin));
    let (code, body) = rt.block_on(ops.post(&format!("/api/v1/runs/{run_id}/budget"), &budget))?;
    ensure!(
        code == 200 && body["budget"]["max_tokens"] == 5000,
        "admin budget: {code} {body}"
    );
    // Both went through the gRPC handlers: the history has them, with the UI's identity.
    let (code, page) = rt.block_on(ops.get(&format!("/api/v1/runs/{run_id}/history")))?;
    ensure!(code == 200, "history: {code}");
    let kinds: Vec<&str> = page["events"]
        .as_array()
        .context("events")?
        .iter()
        .filter_map(|e| e["kind"].as_str())
        .collect();
    ensure!(
        kinds.contains(&"SignalReceived") && kinds.contains(&"BudgetUpdated"),
        "{kinds:?}"
    );
    let signal = page["events"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["kind"] == "SignalReceived")
        .unwrap();
    ensure!(signal["attributes"]["identity"] == "ui:app", "{signal}");
    // The page carries the signal's size, not its input.
    ensure!(signal["attributes"]["input"]["payload"] == true, "{signal}");
    let seq = signal["seq"].as_u64().unwrap();
    let (code, p) =
        rt.block_on(app.get(&format!("/api/v1/runs/{run_id}/events/{seq}/payloads")))?;
    ensure!(
        code == 200 && p["payloads"][0]["value"]["ok"] == true,
        "payload: {code} {p}"
    );

    // A read-only UI over the same kind of server shows, and refuses every write with 403.
    drop(server);
    let (server, base) = start_ui_server(
        &dir.path().join("data"),
        &["--auth-file", auth_s, "--ui-read-only"],
    )?;
    let ro = Api::new(&base, Some(&admin));
    let (code, _) = rt.block_on(ro.get("/api/v1/runs"))?;
    ensure!(code == 200, "read-only list: {code}");
    for (path, body) in [
        ("signal", json!({"name": "approve"})),
        ("cancel", json!({"reason": "x"})),
        ("terminate", json!({"reason": "x"})),
        ("budget", json!({"max_tokens": 1})),
        ("reconcile", json!({"activity_id": 1, "decision": "retry"})),
        ("fork", json!({"seq": 2})),
        ("approvals/1/approve", json!({"comment": "x"})),
        ("approvals/1/deny", json!({"reason": "x"})),
    ] {
        let (code, b) = rt.block_on(ro.post(&format!("/api/v1/runs/{run_id}/{path}"), &body))?;
        ensure!(
            code == 403 && b["error"]["code"] == "read_only",
            "{path}: {code} {b}"
        );
    }
    // Refused before the token is even looked at.
    let (code, _) = rt.block_on(
        Api::new(&base, None).post(&format!("/api/v1/runs/{run_id}/cancel"), &json!({})),
    )?;
    ensure!(code == 403, "read-only, no token: {code}");
    let (code, run) = rt.block_on(ro.get(&format!("/api/v1/runs/{run_id}")))?;
    ensure!(code == 200 && run["run"]["status"] == "running", "{run}");
    drop(server);
    Ok(())
}

#[test]
fn history_pages_from_the_tail_and_streams_resume_from_last_event_id() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let (server, base) = start_ui_server(&dir.path().join("data"), &[])?;
    let url = server.url();
    let _worker = start_test_worker(&url, &dir.path().join("side"), &[])?;
    let rt = runtime();
    let client = rt.block_on(Client::connect(url.clone()))?;
    let api = Api::new(&base, None);

    // The live list first shows no run, then the one started.
    let mut live = rt.block_on(api.sse("/api/v1/runs/live", None))?;
    let first = rt.block_on(live.next(WAIT))?.context("live list ended")?;
    ensure!(
        first.event == "runs" && first.data["runs"] == json!([]),
        "{first:?}"
    );
    let run_id = rt
        .block_on(client.start_workflow(
            "seq",
            &json!({"n": 6, "sleep_ms": 0}),
            StartOptions::default(),
        ))?
        .run_id;
    let seen = rt.block_on(async {
        loop {
            let ev = live.next(WAIT).await?.context("live list ended")?;
            if ev.data["runs"]
                .as_array()
                .is_some_and(|r| r.iter().any(|r| r["run_id"] == run_id.as_str()))
            {
                return Ok::<_, anyhow::Error>(ev);
            }
        }
    })?;
    ensure!(
        seen.id
            .is_some_and(|id| id != first.id.clone().unwrap_or_default()),
        "a new id for a new list"
    );

    let closed = wait_for(WAIT, "the run completes", || {
        let (_, v) = rt
            .block_on(api.get(&format!("/api/v1/runs/{run_id}")))
            .ok()?;
        (v["run"]["status"] == "completed").then_some(v)
    })?;
    let last = closed["run"]["history_length"]
        .as_u64()
        .context("history_length")?;
    ensure!(
        last > 12,
        "a seq run of 6 steps has more than 12 events: {last}"
    );
    ensure!(closed["run"]["usage"]["activities"] == 6, "{closed}");
    // Its result is a stub; the bytes are one call away.
    ensure!(closed["run"]["result"]["payload"] == true, "{closed}");

    // Tail first, then older pages until none: every seq once, in order.
    let mut seqs = Vec::new();
    let mut path = format!("/api/v1/runs/{run_id}/history?limit=5");
    loop {
        let (code, page) = rt.block_on(api.get(&path))?;
        ensure!(code == 200, "{path}: {code} {page}");
        let mut got: Vec<u64> = page["events"]
            .as_array()
            .context("events")?
            .iter()
            .map(|e| e["seq"].as_u64().unwrap())
            .collect();
        ensure!(got.len() <= 5, "{got:?}");
        got.extend(seqs);
        seqs = got;
        match page["older"].as_u64() {
            Some(before) => path = format!("/api/v1/runs/{run_id}/history?before={before}&limit=5"),
            None => break,
        }
    }
    ensure!(seqs == (1..=last).collect::<Vec<_>>(), "{seqs:?}");
    let (code, _) = rt.block_on(api.get(&format!("/api/v1/runs/{run_id}/history?limit=0")))?;
    ensure!(code == 400, "limit 0: {code}");

    // A step's payloads on demand: the scheduled step's input and its result.
    let (_, page) = rt.block_on(api.get(&format!("/api/v1/runs/{run_id}/history?limit=1000")))?;
    let events = page["events"].as_array().context("events")?.clone();
    ensure!(
        !page.to_string().contains("\"index\""),
        "no payload bytes in a page"
    );
    let scheduled = events
        .iter()
        .find(|e| e["kind"] == "ActivityScheduled")
        .context("scheduled")?;
    let seq = scheduled["seq"].as_u64().unwrap();
    let (code, p) = rt.block_on(api.get(&format!(
        "/api/v1/runs/{run_id}/events/{seq}/payloads?field=input"
    )))?;
    ensure!(
        code == 200 && p["value"]["index"] == 0 && p["truncated"] == false,
        "{code} {p}"
    );
    let (code, p) = rt.block_on(api.get(&format!(
        "/api/v1/runs/{run_id}/events/{seq}/payloads?field=result"
    )))?;
    ensure!(
        code == 404
            && p["error"]["message"]
                .as_str()
                .unwrap_or("")
                .contains("input"),
        "{code} {p}"
    );
    let (code, raw) = rt.block_on(api.get_text(&format!("/api/v1/runs/{run_id}/history.json")))?;
    ensure!(
        code == 200 && raw.lines().count() as u64 == last,
        "download: {code}"
    );

    // The run's stream from Last-Event-ID 4: events 5..=last, then the end.
    let mut s = rt.block_on(api.sse(&format!("/api/v1/runs/{run_id}/events"), Some("4")))?;
    let mut ids = Vec::new();
    while let Some(ev) = rt.block_on(s.next(WAIT))? {
        if ev.event == "end" {
            break;
        }
        ensure!(ev.event == "event", "{ev:?}");
        let id: u64 = ev.id.as_deref().context("id")?.parse()?;
        ensure!(ev.data["event"]["seq"] == id, "{ev:?}");
        ids.push(id);
    }
    ensure!(ids == (5..=last).collect::<Vec<_>>(), "{ids:?}");
    drop(server);
    Ok(())
}

#[test]
fn a_live_run_stream_follows_a_signal_and_resumes_where_it_stopped() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let (server, base) = start_ui_server(&dir.path().join("data"), &[])?;
    let url = server.url();
    let _worker = start_test_worker(&url, &dir.path().join("side"), &[])?;
    let rt = runtime();
    let client = rt.block_on(Client::connect(url.clone()))?;
    let api = Api::new(&base, None);
    let run_id = rt
        .block_on(client.start_workflow(
            "signal",
            &json!({"question": "Deploy to prod?", "choices": ["yes", "no"]}),
            StartOptions::default(),
        ))?
        .run_id;
    // Follow until the run says it waits on the signal; remember the last id seen.
    let mut s = rt.block_on(api.sse(&format!("/api/v1/runs/{run_id}/events"), None))?;
    let mut last_id = 0u64;
    rt.block_on(async {
        loop {
            let ev = s.next(WAIT).await?.context("stream ended early")?;
            last_id = ev.id.as_deref().context("id")?.parse()?;
            if ev.data["run"]["waiting_on"].as_array().is_some_and(|w| {
                w.iter()
                    .any(|w| w["kind"] == "signal" && w["question"] == "Deploy to prod?")
            }) {
                return Ok::<_, anyhow::Error>(());
            }
        }
    })?;
    drop(s);
    // The inbox lists it, with its question and choices.
    let (code, inbox) = rt.block_on(api.get("/api/v1/inbox"))?;
    ensure!(code == 200, "{inbox}");
    let waiting = &inbox["signals"][0];
    ensure!(waiting["run_id"] == run_id.as_str(), "{inbox}");
    ensure!(
        waiting["waiting_on"][0]["choices"] == json!(["yes", "no"]),
        "{inbox}"
    );
    // Answer while no stream is open; a stream resumed from the last id sees the rest.
    let (code, body) = rt.block_on(api.post(
        &format!("/api/v1/runs/{run_id}/signal"),
        &json!({"name": "approve", "input": "yes"}),
    ))?;
    ensure!(code == 200, "{body}");
    let mut s = rt.block_on(api.sse(
        &format!("/api/v1/runs/{run_id}/events"),
        Some(&last_id.to_string()),
    ))?;
    let mut kinds = Vec::new();
    let mut next = last_id + 1;
    while let Some(ev) = rt.block_on(s.next(WAIT))? {
        if ev.event == "end" {
            break;
        }
        ensure!(
            ev.id.as_deref() == Some(next.to_string().as_str()),
            "gapless: {ev:?} after {}",
            next - 1
        );
        next += 1;
        kinds.push(ev.data["event"]["kind"].as_str().unwrap_or("").to_string());
    }
    ensure!(
        kinds.first().map(String::as_str) == Some("SignalReceived"),
        "{kinds:?}"
    );
    ensure!(
        kinds.last().map(String::as_str) == Some("RunCompleted"),
        "{kinds:?}"
    );
    let (code, bad) =
        rt.block_on(api.get_text(&format!("/api/v1/runs/{run_id}/events?after=x")))?;
    ensure!(code == 400, "bad after: {code} {bad}");
    drop(server);
    Ok(())
}

/// An `agent-worker` (its `tool_call` workflow asks for approvals) on queue `default`.
fn agent_worker(url: &str, side: &std::path::Path) -> Result<Proc> {
    let mut cmd = std::process::Command::new(bin("agent-worker"));
    cmd.args(["--addr", url, "--task-queue", "default", "--log"])
        .arg(side);
    Proc::spawn("agent-worker", &mut cmd)
}

/// The events of `run_id`'s history, whole (one page).
fn events(rt: &tokio::runtime::Runtime, api: &Api, run_id: &str) -> Result<Vec<Value>> {
    let (code, page) =
        rt.block_on(api.get(&format!("/api/v1/runs/{run_id}/history?limit=1000")))?;
    ensure!(code == 200, "history: {code} {page}");
    Ok(page["events"].as_array().context("events")?.clone())
}

/// The run's result, once it completed, through the payloads call.
fn completed_result(rt: &tokio::runtime::Runtime, api: &Api, run_id: &str) -> Result<Value> {
    let run = wait_for(WAIT, "the run closes", || {
        let (_, v) = rt
            .block_on(api.get(&format!("/api/v1/runs/{run_id}")))
            .ok()?;
        (v["run"]["status"] != "running").then_some(v)
    })?;
    ensure!(run["run"]["status"] == "completed", "{run}");
    let seq = run["run"]["history_length"].as_u64().context("length")?;
    let (code, p) = rt.block_on(api.get(&format!(
        "/api/v1/runs/{run_id}/events/{seq}/payloads?field=result"
    )))?;
    ensure!(code == 200, "{code} {p}");
    Ok(p["value"].clone())
}

#[test]
fn the_inbox_lists_approvals_and_approve_and_deny_let_the_runs_continue() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let (server, base) = start_ui_server(&dir.path().join("data"), &[])?;
    let url = server.url();
    let _worker = agent_worker(&url, &dir.path().join("side"))?;
    let rt = runtime();
    let client = rt.block_on(Client::connect(url.clone()))?;
    let api = Api::new(&base, None);
    let start = |input: Value| {
        rt.block_on(client.start_workflow("tool_call", &input, StartOptions::default()))
            .map(|r| r.run_id)
    };
    let approved = start(json!({"tool": "write_tool", "approval": "refund over 100 EUR"}))?;
    let denied = start(json!({"tool": "gated_tool"}))?;

    // Both show up in the inbox, with the tool, the reason and the arguments' size and hash.
    let inbox = wait_for(WAIT, "both runs wait on an approval", || {
        let (_, v) = rt.block_on(api.get("/api/v1/inbox")).ok()?;
        (v["approvals"].as_array()?.len() == 2).then_some(v)
    })?;
    let scheduled = br#"{"hang_ms":0,"hang_attempts":0,"note":"as scheduled"}"#;
    let find = |run: &str| -> Result<Value> {
        let r = inbox["approvals"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["run_id"] == run)
            .with_context(|| format!("{run} in {inbox}"))?;
        r["waiting_on"]
            .as_array()
            .and_then(|w| w.iter().find(|w| w["kind"] == "approval").cloned())
            .context("approval")
    };
    let a = find(&approved)?;
    ensure!(
        a["activity_type"] == "write_tool"
            && a["reason"] == "refund over 100 EUR"
            && a["arguments_bytes"] == scheduled.len()
            && a["arguments_blake3"] == hex::encode(blake3::hash(scheduled).as_bytes())
            && a["arguments_preview"].is_null(),
        "the inbox names tool, reason, size and hash, not the arguments: {a}"
    );
    let d = find(&denied)?;
    ensure!(d["activity_type"] == "gated_tool", "{d}");
    let aid = a["activity_id"].as_u64().context("activity_id")?;
    let did = d["activity_id"].as_u64().context("activity_id")?;

    // The arguments on demand.
    let (code, args) = rt.block_on(api.get(&format!("/api/v1/runs/{approved}/approvals/{aid}")))?;
    ensure!(
        code == 200
            && args["approval"]["arguments_preview"] == std::str::from_utf8(scheduled)?
            && args["approval"]["truncated"] == false,
        "{code} {args}"
    );
    let (code, _) =
        rt.block_on(api.get(&format!("/api/v1/runs/{approved}/approvals/{}", aid + 100)))?;
    ensure!(code == 404, "no such approval: {code}");

    // A denial needs a reason; the handler's message says so.
    let (code, body) = rt.block_on(api.post(
        &format!("/api/v1/runs/{denied}/approvals/{did}/deny"),
        &json!({}),
    ))?;
    ensure!(code == 400, "deny without a reason: {code} {body}");

    let (code, body) = rt.block_on(api.post(
        &format!("/api/v1/runs/{approved}/approvals/{aid}/approve"),
        &json!({"comment": "ok by finance"}),
    ))?;
    ensure!(code == 200, "approve: {code} {body}");
    let (code, body) = rt.block_on(api.post(
        &format!("/api/v1/runs/{denied}/approvals/{did}/deny"),
        &json!({"reason": "not to every customer"}),
    ))?;
    ensure!(code == 200, "deny: {code} {body}");
    // Decided once: a second decision is refused.
    let (code, _) = rt.block_on(api.post(
        &format!("/api/v1/runs/{approved}/approvals/{aid}/approve"),
        &json!({}),
    ))?;
    ensure!(code >= 400, "a second approval: {code}");

    // The runs continue: the approved tool ran, the denial reached the workflow.
    let r = completed_result(&rt, &api, &approved)?;
    ensure!(r.get("tool").is_some(), "approved run: {r}");
    let r = completed_result(&rt, &api, &denied)?;
    ensure!(
        r["denied"]
            .as_str()
            .is_some_and(|m| m.contains("not to every customer")),
        "denied run: {r}"
    );
    let ev = events(&rt, &api, &approved)?;
    let ok = ev
        .iter()
        .find(|e| e["kind"] == "ActivityApproved")
        .context("ActivityApproved")?;
    ensure!(
        ok["attributes"]["identity"] == "ui" && ok["attributes"]["comment"] == "ok by finance",
        "{ok}"
    );
    let ev = events(&rt, &api, &denied)?;
    ensure!(
        ev.iter().any(|e| e["kind"] == "ActivityDenied"
            && e["attributes"]["reason"] == "not to every customer"),
        "{ev:?}"
    );
    let (_, inbox) = rt.block_on(api.get("/api/v1/inbox"))?;
    ensure!(inbox["approvals"] == json!([]), "{inbox}");
    drop(server);
    Ok(())
}

#[test]
fn the_runs_list_filters_by_start_time() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let (server, base) = start_ui_server(&dir.path().join("data"), &[])?;
    let rt = runtime();
    let client = rt.block_on(Client::connect(server.url()))?;
    let api = Api::new(&base, None);
    let start = || {
        rt.block_on(client.start_workflow("signal", &json!({}), StartOptions::default()))
            .map(|r| r.run_id)
    };
    let started_ms = |run: &str| -> Result<i64> {
        let (code, v) = rt.block_on(api.get(&format!("/api/v1/runs/{run}")))?;
        ensure!(code == 200, "{v}");
        v["run"]["started_ms"].as_i64().context("started_ms")
    };
    let first = start()?;
    let t1 = started_ms(&first)?;
    // The second run must start later than the first: wait until the server's clock moved.
    wait_for(WAIT, "the server's clock passes the first start", || {
        let (_, v) = rt
            .block_on(api.get(&format!("/api/v1/runs/{first}")))
            .ok()?;
        (v["now_ms"].as_i64()? > t1).then_some(())
    })?;
    let second = start()?;
    let t2 = started_ms(&second)?;
    ensure!(t2 > t1, "{t1} {t2}");

    let ids = |query: &str| -> Result<Vec<String>> {
        let (code, v) = rt.block_on(api.get(&format!("/api/v1/runs?{query}")))?;
        ensure!(code == 200, "{query}: {code} {v}");
        Ok(v["runs"]
            .as_array()
            .context("runs")?
            .iter()
            .filter_map(|r| r["run_id"].as_str().map(String::from))
            .collect())
    };
    ensure!(ids("")?.len() == 2);
    ensure!(ids(&format!("started_after={t2}"))? == vec![second.clone()]);
    ensure!(ids(&format!("started_before={t2}"))? == vec![first.clone()]);
    ensure!(ids(&format!("started_after={t1}&started_before={t2}"))? == vec![first.clone()]);
    ensure!(ids(&format!("started_after={}", t2 + 1))?.is_empty());
    // The live list takes the same filters.
    let mut live = rt.block_on(api.sse(&format!("/api/v1/runs/live?started_after={t2}"), None))?;
    let ev = rt.block_on(live.next(WAIT))?.context("live list ended")?;
    ensure!(
        ev.data["runs"][0]["run_id"] == second.as_str()
            && ev.data["runs"].as_array().unwrap().len() == 1,
        "{ev:?}"
    );
    // An empty range and a non-number are refused with what to fix.
    let (code, v) = rt.block_on(api.get(&format!(
        "/api/v1/runs?started_after={t2}&started_before={t1}"
    )))?;
    ensure!(
        code == 400
            && v["error"]["message"]
                .as_str()
                .unwrap_or("")
                .contains("started_before"),
        "{code} {v}"
    );
    // A value that does not parse is a JSON refusal like the others (not axum's plain text),
    // naming the parameter, quoting its value and saying what it takes; on every call.
    for path in [
        "/api/v1/runs?started_after=yesterday",
        "/api/v1/runs?status=running&started_before=abc",
        "/api/v1/runs/live?started_after=yesterday",
    ] {
        let (code, v) = rt.block_on(api.get(path))?;
        let message = v["error"]["message"].as_str().unwrap_or("");
        let bad = path.rsplit('&').next().unwrap().rsplit('?').next().unwrap();
        let (name, value) = bad.split_once('=').unwrap();
        ensure!(
            code == 400
                && v["error"]["code"] == "invalid_argument"
                && message.contains(&format!("{name}=\"{value}\""))
                && message.contains("milliseconds since the epoch"),
            "{path}: {code} {v}"
        );
    }
    let (code, v) = rt.block_on(api.get(&format!("/api/v1/runs/{first}/history?limit=ten")))?;
    ensure!(
        code == 400
            && v["error"]["message"]
                .as_str()
                .unwrap_or("")
                .contains("limit=\"ten\""),
        "a non-number limit: {code} {v}"
    );
    drop(server);
    Ok(())
}

/// The run as the API describes it, once `pred` holds.
fn run_when(
    rt: &tokio::runtime::Runtime,
    api: &Api,
    run_id: &str,
    what: &str,
    pred: impl Fn(&Value) -> bool,
) -> Result<Value> {
    wait_for(WAIT, what, || {
        let (code, v) = rt
            .block_on(api.get(&format!("/api/v1/runs/{run_id}")))
            .ok()?;
        (code == 200 && pred(&v["run"])).then(|| v["run"].clone())
    })
}

fn waits_on(run: &Value, kind: &str) -> bool {
    run["waiting_on"]
        .as_array()
        .is_some_and(|w| w.iter().any(|w| w["kind"] == kind))
}

#[test]
fn cancel_terminate_fork_reset_and_reconcile_succeed_over_http() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let (server, base) = start_ui_server(&dir.path().join("data"), &[])?;
    let url = server.url();
    let mut worker = start_test_worker(&url, &dir.path().join("side"), &[])?;
    let rt = runtime();
    let client = rt.block_on(Client::connect(url.clone()))?;
    let api = Api::new(&base, None);
    let start = |wf: &str, input: Value| {
        rt.block_on(client.start_workflow(wf, &input, StartOptions::default()))
            .map(|r| r.run_id)
    };
    let post = |path: String, body: Value| -> Result<Value> {
        let (code, v) = rt.block_on(api.post(&path, &body))?;
        ensure!(code == 200, "{path}: {code} {v}");
        Ok(v)
    };

    // Cancel: the workflow sees the request and ends as cancelled.
    let child = start("child", json!({"x": 1}))?;
    run_when(&rt, &api, &child, "child waits on its signal", |r| {
        waits_on(r, "signal")
    })?;
    post(
        format!("/api/v1/runs/{child}/cancel"),
        json!({"reason": "not needed"}),
    )?;
    run_when(&rt, &api, &child, "child cancelled", |r| {
        r["status"] == "cancelled"
    })?;

    // Terminate: closed at once, whatever it waited on.
    let waiting = start("signal", json!({"question": "ship?"}))?;
    run_when(&rt, &api, &waiting, "run waits on its signal", |r| {
        waits_on(r, "signal")
    })?;
    post(
        format!("/api/v1/runs/{waiting}/terminate"),
        json!({"reason": "wrong input"}),
    )?;
    run_when(&rt, &api, &waiting, "run terminated", |r| {
        r["status"] == "terminated"
    })?;
    let (code, v) = rt.block_on(api.post(&format!("/api/v1/runs/{waiting}/cancel"), &json!({})))?;
    ensure!(code >= 400, "cancelling a closed run: {code} {v}");

    // Fork a completed run mid-way: the fork runs to the same result; the original stays.
    let done = start("seq", json!({"n": 3, "sleep_ms": 0}))?;
    let closed = run_when(&rt, &api, &done, "seq run completes", |r| {
        r["status"] == "completed"
    })?;
    let at = closed["history_length"].as_u64().context("length")? / 2;
    let f = post(format!("/api/v1/runs/{done}/fork"), json!({"seq": at}))?;
    let fork = f["run_id"].as_str().context("fork run_id")?.to_string();
    ensure!(
        fork != done && f["boundary_seq"].as_u64().is_some_and(|b| b <= at),
        "{f}"
    );
    run_when(&rt, &api, &fork, "the fork completes", |r| {
        r["status"] == "completed"
    })?;
    run_when(&rt, &api, &done, "the original unchanged", |r| {
        r["status"] == "completed"
    })?;

    // Reset an open run: the original is terminated, the new run waits where it waited.
    let open = start("signal", json!({"question": "again?"}))?;
    let o = run_when(&rt, &api, &open, "run waits on its signal", |r| {
        waits_on(r, "signal")
    })?;
    let end = o["history_length"].as_u64().context("length")?;
    let r = post(
        format!("/api/v1/runs/{open}/fork"),
        json!({"seq": end, "reset": true}),
    )?;
    let reset = r["run_id"].as_str().context("reset run_id")?.to_string();
    run_when(&rt, &api, &open, "the original terminated", |r| {
        r["status"] == "terminated"
    })?;
    run_when(
        &rt,
        &api,
        &reset,
        "the reset run waits on the signal",
        |r| r["status"] == "running" && waits_on(r, "signal"),
    )?;

    // Reconcile: a write lost with its worker waits for a person; "it happened" completes it.
    let write = start(
        "write",
        json!({"sleep_ms": 600_000, "start_to_close_ms": 600_000}),
    )?;
    run_when(&rt, &api, &write, "the write runs", |r| {
        r["waiting_on"].as_array().is_some_and(|w| {
            w.iter()
                .any(|w| w["kind"] == "activity" && w["state"] == "running")
        })
    })?;
    worker.kill9();
    let _second = start_test_worker(&url, &dir.path().join("side2"), &[])?;
    let rec = run_when(
        &rt,
        &api,
        &write,
        "the lost write waits for reconciliation",
        |r| waits_on(r, "reconciliation"),
    )?;
    let id = rec["waiting_on"]
        .as_array()
        .and_then(|w| w.iter().find(|w| w["kind"] == "reconciliation"))
        .and_then(|w| w["activity_id"].as_u64())
        .context("activity_id")?;
    post(
        format!("/api/v1/runs/{write}/reconcile"),
        json!({"activity_id": id, "decision": "complete", "result": "written by hand"}),
    )?;
    let w = run_when(&rt, &api, &write, "the write's run completes", |r| {
        r["status"] == "completed"
    })?;
    let seq = w["history_length"].as_u64().context("length")?;
    let (code, p) = rt.block_on(api.get(&format!(
        "/api/v1/runs/{write}/events/{seq}/payloads?field=result"
    )))?;
    ensure!(code == 200 && p["value"] == "written by hand", "{code} {p}");
    drop(server);
    Ok(())
}
