//! Issue 12: a server started with `--auth-file` admits only the tokens in it, each within its
//! role and namespaces, and keeps tenants apart.
//!
//! Real processes: the server, `hello-worker` with a worker token (from the environment, as an
//! operator would give it), the CLI with client tokens. Tokens and entries are made with
//! `steadfast auth new-token` / `steadfast auth hash`. Checked:
//! - no token, a malformed one or an unknown one: UNAUTHENTICATED, for every RPC;
//! - a tenant's own client and worker run a workflow to completion;
//! - every RPC sent by tenant B's client, worker and admin tokens into tenant A's namespace (the
//!   list of RPCs is read from the proto descriptor: one that is not tried fails the test) is
//!   PERMISSION_DENIED, with the same answer for a run that exists and one that does not, and
//!   tenant A's run is unchanged afterwards; B's worker polling A's queue is refused, not
//!   long-polled; a genuine task token of A presented by B's worker in B is PERMISSION_DENIED;
//! - roles: a worker token cannot start runs, a client token cannot poll or checkpoint;
//! - rotation without a restart: a new entry is admitted once the file is saved, a removed
//!   one refused.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, Result};
use steadfast_proto::v1 as pb;
use steadfast_sdk::client::{Client, ClientConfig, StartOptions};
use steadfast_tests::secure::{self, Fields, Services};
use steadfast_tests::{Proc, Server, bin, run_bounded, runtime, wait_for};
use tonic::Code;
use tonic::transport::Channel;

const TENANT_A: &str = "default";
const TENANT_B: &str = "tenant-b";
/// A run id no server gave out.
const UNKNOWN_RUN: &str = "01890000-0000-7000-8000-000000000000";

struct Tokens {
    client_a: String,
    worker_a: String,
    client_b: String,
    worker_b: String,
    admin_b: String,
    admin: String,
}

/// The CLI against `url` with `token` in STEADFAST_TOKEN (or none).
fn cli(url: &str, token: Option<&str>, args: &[&str]) -> Result<(i32, String, String)> {
    let mut cmd = Command::new(bin("steadfast"));
    cmd.args(args).env("STEADFAST_ADDR", url);
    match token {
        Some(t) => cmd.env("STEADFAST_TOKEN", t),
        None => cmd.env_remove("STEADFAST_TOKEN"),
    };
    run_bounded(&mut cmd, Duration::from_secs(60))
}

fn hello_worker(url: &str, token: &str) -> Result<Proc> {
    let mut cmd = Command::new(bin("hello-worker"));
    cmd.args(["--addr", url])
        .env("STEADFAST_TOKEN", token)
        .env("RUST_LOG", "warn");
    Proc::spawn("hello-worker", &mut cmd)
}

fn make_tokens(file: &Path) -> Result<(Tokens, Vec<String>)> {
    let t = Tokens {
        client_a: secure::new_token()?,
        worker_a: secure::new_token()?,
        client_b: secure::new_token()?,
        worker_b: secure::new_token()?,
        admin_b: secure::new_token()?,
        admin: secure::new_token()?,
    };
    let lines = vec![
        secure::entry(&t.client_a, "client-a", "client", TENANT_A)?,
        secure::entry(&t.worker_a, "worker-a", "worker", TENANT_A)?,
        secure::entry(&t.client_b, "client-b", "client", TENANT_B)?,
        secure::entry(&t.worker_b, "worker-b", "worker", TENANT_B)?,
        secure::entry(&t.admin_b, "admin-b", "admin", TENANT_B)?,
        secure::entry(&t.admin, "ops", "admin", "*")?,
    ];
    let refs: Vec<&str> = lines.iter().map(String::as_str).collect();
    secure::write_auth_file(file, &refs)?;
    Ok((t, lines))
}

#[test]
fn tokens_roles_and_namespaces_are_enforced_across_processes() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let file = dir.path().join("auth.txt");
    let (t, lines) = make_tokens(&file)?;
    let file_arg = file.to_str().context("utf-8 path")?;
    let server = Server::start_with(&dir.path().join("data"), None, &["--auth-file", file_arg])?;
    let url = server.url();

    // No token, a malformed one, an unknown one: UNAUTHENTICATED, before anything is read.
    let (code, _, err) = cli(&url, None, &["run", "list"])?;
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("UNAUTHENTICATED") && err.contains("STEADFAST_TOKEN"),
        "{err}"
    );
    let (code, _, err) = cli(
        &url,
        Some("stf_not-a-token-this-server-knows"),
        &["run", "list"],
    )?;
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("UNAUTHENTICATED"), "{err}");

    // Tenant A's own worker and client run a workflow to completion.
    let _worker = hello_worker(&url, &t.worker_a)?;
    let (code, out, err) = cli(
        &url,
        Some(&t.client_a),
        &["run", "start", "hello", "--input", r#"{"name":"Ada"}"#],
    )?;
    assert_eq!(code, 0, "start: {err}");
    let run_a = out.trim().to_string();
    let (code, out, err) = cli(
        &url,
        Some(&t.client_a),
        &["run", "result", &run_a, "--wait", "--timeout", "60s"],
    )?;
    assert_eq!(code, 0, "result: {err}");
    assert!(out.contains("Hello, Ada!"), "{out}");

    let rt = runtime();
    let channel: Channel = rt.block_on(Channel::from_shared(url.clone())?.connect())?;
    let before = rt.block_on(
        Services::new(channel.clone(), Some(&t.admin))
            .client
            .get_history(pb::GetHistoryRequest {
                namespace: TENANT_A.into(),
                run_id: run_a.clone(),
                ..Default::default()
            }),
    )?;
    let events_before = before.into_inner().events.len();

    // No token at all: every RPC is UNAUTHENTICATED.
    let fields = |run_id: &str| Fields {
        namespace: TENANT_A.into(),
        run_id: run_id.into(),
        name: "probe".into(),
        task_token: "not-a-task-token".into(),
        payload: "null".into(),
        poll_timeout_ms: 60_000,
    };
    let anonymous = rt.block_on(secure::every_rpc(
        &Services::new(channel.clone(), None),
        &fields(&run_a),
    ));
    // Every RPC of every service the proto declares is tried below: a new one fails here
    // until it is added to every_rpc (and so to the boundary checks).
    let untried = secure::untried(&anonymous)?;
    assert!(
        untried.is_empty(),
        "RPCs not tried across the tenant boundary: {untried:?}; add them to secure::every_rpc"
    );
    for (rpc, r, _) in anonymous {
        let code = r.err().map(|s| s.code());
        assert_eq!(code, Some(Code::Unauthenticated), "{rpc} without a token");
    }

    // Tenant B's tokens, every role, into tenant A: PERMISSION_DENIED, whether the run exists
    // or not, with the same message for both; polls answer at once (60 s asked for).
    for (who, token) in [
        ("client-b", &t.client_b),
        ("worker-b", &t.worker_b),
        ("admin-b", &t.admin_b),
    ] {
        let svc = Services::new(channel.clone(), Some(token));
        let started = std::time::Instant::now();
        let known = rt.block_on(secure::every_rpc(&svc, &fields(&run_a)));
        let unknown = rt.block_on(secure::every_rpc(&svc, &fields(UNKNOWN_RUN)));
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "{who}: a refused call waited ({:?})",
            started.elapsed()
        );
        for ((rpc, k, _), (_, u, _)) in known.into_iter().zip(unknown) {
            let (k, u) = (k.unwrap_err(), u.unwrap_err());
            assert_eq!(
                k.code(),
                Code::PermissionDenied,
                "{who} {rpc}: {}",
                k.message()
            );
            assert_eq!(
                u.code(),
                Code::PermissionDenied,
                "{who} {rpc}: {}",
                u.message()
            );
            assert_eq!(
                k.message(),
                u.message(),
                "{who} {rpc}: the answer must not say whether the run exists"
            );
        }
    }
    // Tenant A's run is as it was.
    let after = rt.block_on(
        Services::new(channel.clone(), Some(&t.admin))
            .client
            .describe_run(pb::DescribeRunRequest {
                namespace: TENANT_A.into(),
                run_id: run_a.clone(),
                ..Default::default()
            }),
    )?;
    let after = after.into_inner().run.context("run")?;
    assert_eq!(after.status(), pb::RunStatus::Completed);
    let history = rt.block_on(
        Services::new(channel.clone(), Some(&t.admin))
            .client
            .get_history(pb::GetHistoryRequest {
                namespace: TENANT_A.into(),
                run_id: run_a.clone(),
                ..Default::default()
            }),
    )?;
    assert_eq!(history.into_inner().events.len(), events_before);

    // Roles, in the token's own namespace.
    let worker_a = Services::new(channel.clone(), Some(&t.worker_a));
    let r = rt.block_on(
        worker_a
            .client
            .clone()
            .start_workflow(pb::StartWorkflowRequest {
                workflow_type: "hello".into(),
                ..Default::default()
            }),
    );
    let e = r.unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied, "{}", e.message());
    assert!(e.message().contains("role worker"), "{}", e.message());
    let client_a = Services::new(channel.clone(), Some(&t.client_a));
    let r = rt.block_on(
        client_a
            .worker
            .clone()
            .poll_activity_task(pb::PollActivityTaskRequest {
                task_queue: "default".into(),
                worker_id: "w".into(),
                ..Default::default()
            }),
    );
    assert_eq!(r.unwrap_err().code(), Code::PermissionDenied);
    let (code, _, err) = cli(&url, Some(&t.client_a), &["admin", "checkpoint"])?;
    assert!(
        code == 1 && err.contains("PERMISSION_DENIED"),
        "{code} {err}"
    );
    // A checkpoint acts on every namespace: an admin of one tenant may not.
    let (code, _, err) = cli(&url, Some(&t.admin_b), &["admin", "checkpoint"])?;
    assert!(
        code == 1 && err.contains("PERMISSION_DENIED"),
        "{code} {err}"
    );
    let (code, _, err) = cli(&url, Some(&t.admin), &["admin", "checkpoint"])?;
    assert_eq!(code, 0, "{err}");
    // Workers read histories in their namespace (a worker without the run cached replays).
    let r = rt.block_on(worker_a.client.clone().get_history(pb::GetHistoryRequest {
        run_id: run_a.clone(),
        ..Default::default()
    }));
    assert!(r.is_ok(), "{r:?}");
    // A genuine task token of tenant A, presented by tenant B's worker in its own namespace:
    // PERMISSION_DENIED from the token alone, the same while A's run is open and after it is
    // gone, naming neither the run nor A's namespace. A's run is unchanged.
    let client_a_svc = Services::new(channel.clone(), Some(&t.client_a));
    let probe = rt
        .block_on(
            client_a_svc
                .client
                .clone()
                .start_workflow(pb::StartWorkflowRequest {
                    workflow_type: "probe".into(),
                    task_queue: "a-probe".into(),
                    ..Default::default()
                }),
        )?
        .into_inner()
        .run_id;
    let task = rt
        .block_on(
            worker_a
                .worker
                .clone()
                .poll_workflow_task(pb::PollWorkflowTaskRequest {
                    task_queue: "a-probe".into(),
                    worker_id: "a-probe-worker".into(),
                    workflow_types: vec!["probe".into()],
                    poll_timeout_ms: 30_000,
                    ..Default::default()
                }),
        )?
        .into_inner();
    assert_eq!(task.run_id, probe, "the probe run's task");
    let worker_b = Services::new(channel.clone(), Some(&t.worker_b));
    let foreign = |token: &str| {
        let r = rt.block_on(worker_b.worker.clone().complete_workflow_task(
            pb::CompleteWorkflowTaskRequest {
                namespace: TENANT_B.into(),
                task_token: token.into(),
                worker_id: "b-worker".into(),
                ..Default::default()
            },
        ));
        r.unwrap_err()
    };
    let probe_history = |rt: &tokio::runtime::Runtime| -> Result<usize> {
        Ok(rt
            .block_on(
                client_a_svc
                    .client
                    .clone()
                    .get_history(pb::GetHistoryRequest {
                        run_id: probe.clone(),
                        ..Default::default()
                    }),
            )?
            .into_inner()
            .events
            .len())
    };
    let probe_events = probe_history(&rt)?;
    let open = foreign(&task.task_token);
    assert_eq!(open.code(), Code::PermissionDenied, "{}", open.message());
    for leak in [probe.as_str(), TENANT_A] {
        assert!(!open.message().contains(leak), "{}", open.message());
    }
    assert_eq!(
        probe_history(&rt)?,
        probe_events,
        "a refused token changed nothing"
    );
    rt.block_on(
        client_a_svc
            .client
            .clone()
            .terminate_run(pb::TerminateRunRequest {
                run_id: probe.clone(),
                reason: "probe done".into(),
                ..Default::default()
            }),
    )?;
    let closed = foreign(&task.task_token);
    assert_eq!(
        (closed.code(), closed.message()),
        (open.code(), open.message()),
        "the answer must not say whether the run is there"
    );

    // The SDK's client says what to fix.
    let sdk = rt.block_on(Client::connect(
        ClientConfig::new(url.clone()).token(Some(t.client_b.clone())),
    ))?;
    let e = rt.block_on(sdk.describe(&run_a)).unwrap_err();
    assert!(
        matches!(e, steadfast_sdk::client::Error::PermissionDenied(_)),
        "{e}"
    );

    // Rotation: add the new entry, move the client, remove the old entry. No restart.
    let new_token = secure::new_token()?;
    let new_line = secure::entry(&new_token, "client-a-2", "client", TENANT_A)?;
    let mut rotated: Vec<&str> = lines.iter().map(String::as_str).collect();
    rotated.push(&new_line);
    secure::write_auth_file(&file, &rotated)?;
    wait_for(
        Duration::from_secs(20),
        "the new token to be admitted",
        || {
            let (code, _, _) = cli(&url, Some(&new_token), &["run", "show", &run_a]).ok()?;
            (code == 0).then_some(())
        },
    )?;
    let (code, _, err) = cli(&url, Some(&t.client_a), &["run", "show", &run_a])?;
    assert_eq!(
        code, 0,
        "the old token works until its entry is removed: {err}"
    );
    rotated.retain(|l| !l.starts_with("client-a "));
    secure::write_auth_file(&file, &rotated)?;
    wait_for(
        Duration::from_secs(20),
        "the old token to be refused",
        || {
            let (_, _, err) = cli(&url, Some(&t.client_a), &["run", "show", &run_a]).ok()?;
            err.contains("UNAUTHENTICATED").then_some(())
        },
    )?;
    let (code, _, err) = cli(&url, Some(&new_token), &["run", "show", &run_a])?;
    assert_eq!(code, 0, "{err}");

    // A start by the new token still runs on tenant A's worker.
    let sdk = rt.block_on(Client::connect(
        ClientConfig::new(url.clone()).token(Some(new_token.clone())),
    ))?;
    let run = rt.block_on(sdk.start_workflow(
        "hello",
        &serde_json::json!({"name": "Grace"}),
        StartOptions::default(),
    ))?;
    let out: serde_json::Value =
        rt.block_on(sdk.await_result(&run.run_id, Duration::from_secs(60)))?;
    assert!(out.to_string().contains("Hello, Grace!"), "{out}");
    Ok(())
}

#[test]
fn without_auth_the_server_refuses_a_non_loopback_address() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let mut cmd = Command::new(bin("steadfast"));
    cmd.args(["server", "--listen", "0.0.0.0:0", "--data-dir"])
        .arg(dir.path().join("data"));
    let (code, _, err) = run_bounded(&mut cmd, Duration::from_secs(30))?;
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("refusing to listen on 0.0.0.0:0 without authentication")
            && err.contains("--auth-file")
            && err.contains("--insecure-listen-any"),
        "{err}"
    );
    assert!(
        !dir.path().join("data").exists(),
        "refused before anything was created"
    );
    Ok(())
}
