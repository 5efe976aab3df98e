//! Search attributes, the memo and the rest of search against a real server (issue 18 point
//! 5, issue 14 point 6): attributes set at start (CLI and Client) and upserted by the
//! workflow, the memo shown by `run show`, `run list --attr / --failed-activity / --text`
//! over the CLI and gRPC, bad attribute input refused with a clear message, and the same
//! answers after a server SIGKILL and after sled (the cache) is deleted: the attributes are
//! rebuilt from the events in the log.

use std::time::Duration;

use anyhow::Result;
use serde_json::{Value, json};
use steadfast_proto::v1 as pb;
use steadfast_sdk::client::{Client, ListOptions, StartOptions};
use steadfast_sdk::search::SearchValue;
use steadfast_tests::{Server, cli, describe, runtime, start_test_worker, wait_for};

fn ids(out: &str) -> Vec<String> {
    out.lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .map(|v| v["run_id"].as_str().unwrap_or_default().to_string())
        .collect()
}

#[test]
fn attributes_memo_and_search_survive_restart_and_cache_loss() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let data = dir.path().join("data");
    let mut server = Server::start(&data, None)?;
    let url = server.url();
    let rt = runtime();
    let client = rt.block_on(Client::connect(url.clone()))?;
    let worker = start_test_worker(&url, &dir.path().join("side"), &[])?;

    // A: started by the CLI with attributes and a memo; completes.
    let (code, out, err) = cli(
        &url,
        &[
            "run",
            "start",
            "tagged",
            "--input",
            r#"{"stage": "triaged"}"#,
            "--attr",
            "customer=acme",
            "--attr",
            "priority:int=2",
            "--memo",
            r#"{"note": "Refund request from ACME, ticket 4711"}"#,
        ],
    )?;
    anyhow::ensure!(code == 0, "run start: {err}");
    let a = out.trim().to_string();
    // B: started by the Client; its "broken" activity fails for good, so the run fails.
    let b = rt
        .block_on(client.start_workflow(
            "tagged",
            &json!({ "stage": "triaged", "fail": true }),
            StartOptions {
                search_attributes: vec![("customer".into(), SearchValue::from("globex"))],
                ..Default::default()
            },
        ))?
        .run_id;
    for run in [&a, &b] {
        wait_for(Duration::from_secs(60), "the run to close", || {
            describe(&rt, &url, run)
                .ok()
                .filter(|i| i.status != pb::RunStatus::Running as i32)
        })?;
    }
    let info_b = describe(&rt, &url, &b)?;
    assert_eq!(info_b.status, pb::RunStatus::Failed as i32);
    assert_eq!(info_b.failed_activity_types, vec!["broken".to_string()]);

    let check = |url: &str| -> Result<()> {
        let list = |args: &[&str]| -> Result<Vec<String>> {
            let mut all = vec!["run", "list", "--json"];
            all.extend(args);
            let (code, out, err) = cli(url, &all)?;
            anyhow::ensure!(code == 0, "{all:?}: {err}");
            Ok(ids(&out))
        };
        assert_eq!(list(&["--attr", "customer=acme"])?, vec![a.clone()]);
        assert_eq!(list(&["--attr", "customer=globex"])?, vec![b.clone()]);
        assert_eq!(
            list(&["--attr", "stage=triaged"])?,
            vec![b.clone(), a.clone()],
            "upserted by the workflow"
        );
        assert_eq!(
            list(&["--attr", "stage=triaged", "--attr", "priority:int=2"])?,
            vec![a.clone()]
        );
        assert!(list(&["--attr", "priority=2"])?.is_empty(), "typed values");
        assert_eq!(list(&["--failed-activity", "broken"])?, vec![b.clone()]);
        assert!(list(&["--failed-activity", "step"])?.is_empty());
        assert_eq!(list(&["--text", "refund ACME"])?, vec![a.clone()]);
        assert_eq!(
            list(&["--text", "broken on purpose"])?,
            vec![b.clone()],
            "the failure message"
        );
        // gRPC, through the SDK.
        let rt = runtime();
        let client = rt.block_on(Client::connect(url.to_string()))?;
        let (runs, _) = rt.block_on(client.list(ListOptions {
            search_attributes: vec![("step".into(), SearchValue::Int(1))],
            failed_activity: Some("broken".into()),
            ..Default::default()
        }))?;
        assert_eq!(
            runs.iter().map(|r| r.run_id.clone()).collect::<Vec<_>>(),
            vec![b.clone()]
        );
        // `run show`: the attributes and the memo.
        let (code, out, err) = cli(url, &["run", "show", &a])?;
        anyhow::ensure!(code == 0, "run show: {err}");
        assert!(out.contains("customer=acme"), "{out}");
        assert!(out.contains("priority:int=2"), "{out}");
        assert!(out.contains("stage=triaged"), "{out}");
        assert!(out.contains("Refund request"), "{out}");
        let (_, out, _) = cli(url, &["run", "show", &a, "--json"])?;
        let v: Value = serde_json::from_str(out.trim())?;
        assert_eq!(v["memo"]["note"], "Refund request from ACME, ticket 4711");
        assert_eq!(v["search_attributes"]["priority"], 2);
        Ok(())
    };
    check(&url)?;

    // Bad input: refused with what to fix, by the CLI (exit 2) and by the server.
    for (attr, says) in [
        ("1customer=acme", "is not valid"),
        ("priority:int=high", "not an integer"),
        ("customer", "NAME=VALUE"),
        ("due:date=1", "unknown type"),
    ] {
        let (code, _, err) = cli(&url, &["run", "start", "tagged", "--attr", attr])?;
        assert_eq!(code, 2, "{attr}: {err}");
        assert!(err.contains(says), "{attr}: {err}");
        let (code, _, err) = cli(&url, &["run", "list", "--attr", attr])?;
        assert_eq!(code, 2, "{attr}: {err}");
    }
    let (code, _, err) = cli(&url, &["run", "start", "tagged", "--memo", "{not json"])?;
    assert_eq!(code, 2, "{err}");
    let refused = rt.block_on(client.start_workflow(
        "tagged",
        &json!({}),
        StartOptions {
            search_attributes: vec![("bad name".into(), SearchValue::from("x"))],
            ..Default::default()
        },
    ));
    let e = format!("{:?}", refused.expect_err("a bad name is refused"));
    assert!(
        e.contains("InvalidArgument") && e.contains("is not valid"),
        "{e}"
    );
    let refused = rt.block_on(client.start_workflow(
        "tagged",
        &json!({}),
        StartOptions {
            memo: Some(json!({ "big": "x".repeat(20_000) })),
            ..Default::default()
        },
    ));
    let e = format!("{:?}", refused.expect_err("a large memo is refused"));
    assert!(e.contains("InvalidArgument") && e.contains("16384"), "{e}");
    let too_many = (0..33)
        .map(|i| (format!("a{i}"), SearchValue::Int(i)))
        .collect();
    let refused = rt.block_on(client.start_workflow(
        "tagged",
        &json!({}),
        StartOptions {
            search_attributes: too_many,
            ..Default::default()
        },
    ));
    let e = format!("{:?}", refused.expect_err("33 attributes are refused"));
    assert!(e.contains("at most 32"), "{e}");

    // A crash: the same answers.
    drop(worker);
    server.crash_and_restart()?;
    check(&url)?;
    // sled deleted (the cache): rebuilt from the log, the attributes with it.
    server.proc.kill9();
    std::fs::remove_dir_all(data.join("sled"))?;
    server.restart()?;
    check(&url)?;
    Ok(())
}
