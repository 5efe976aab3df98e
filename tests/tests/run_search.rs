//! `steadfast run list --workflow-id / --started-after / --started-before` against a real
//! server (issue 14, point 6): three runs, two of them of one workflow id, the first closed
//! before the second started; the filters select by id and by start time, alone and
//! together, across pages; an empty range and a bad time are refused with exit 2.

use std::time::Duration;

use anyhow::Result;
use serde_json::{Value, json};
use steadfast_proto::v1 as pb;
use steadfast_sdk::client::{Client, ListOptions, StartOptions};
use steadfast_tests::{Server, cli, describe, runtime, start_test_worker, wait_for};

fn ids(out: &str) -> Vec<String> {
    out.lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .map(|v| v["run_id"].as_str().unwrap_or_default().to_string())
        .collect()
}

#[test]
fn run_list_filters_by_workflow_id_and_start_time() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let server = Server::start(&dir.path().join("data"), None)?;
    let url = server.url();
    let rt = runtime();
    let client = rt.block_on(Client::connect(url.clone()))?;
    let _worker = start_test_worker(&url, &dir.path().join("side"), &[])?;
    let mut runs = Vec::new();
    for wid in ["alpha", "alpha", "beta"] {
        let opts = StartOptions {
            workflow_id: Some(wid.into()),
            ..Default::default()
        };
        let run = rt
            .block_on(client.start_workflow("seq", &json!({ "n": 1 }), opts))?
            .run_id;
        // Closed before the next starts: a second run of "alpha", a later start time.
        let info = wait_for(Duration::from_secs(60), "the run to close", || {
            describe(&rt, &url, &run)
                .ok()
                .filter(|i| i.status != pb::RunStatus::Running as i32)
        })?;
        runs.push((run, info.started_ms));
    }
    let (a1, a2, b) = (&runs[0].0, &runs[1].0, &runs[2].0);
    let list = |args: &[&str]| -> Result<Vec<String>> {
        let mut all = vec!["run", "list", "--json"];
        all.extend(args);
        let (code, out, err) = cli(&url, &all)?;
        anyhow::ensure!(code == 0, "{all:?}: {err}");
        Ok(ids(&out))
    };
    assert_eq!(
        list(&["--workflow-id", "alpha"])?,
        vec![a2.clone(), a1.clone()]
    );
    assert_eq!(list(&["--workflow-id", "beta"])?, vec![b.clone()]);
    assert!(list(&["--workflow-id", "gamma"])?.is_empty());
    let second = runs[1].1.to_string();
    assert_eq!(
        list(&["--started-after", &second])?,
        vec![b.clone(), a2.clone()]
    );
    assert_eq!(list(&["--started-before", &second])?, vec![a1.clone()]);
    assert_eq!(
        list(&["--workflow-id", "alpha", "--started-after", &second])?,
        vec![a2.clone()]
    );
    // RFC 3339 works as well as ms: from the first run's second (floor) to the third's start.
    let floor = runs[0].1 / 1000 * 1000;
    assert_eq!(
        list(&[
            "--started-after",
            &format_rfc3339(floor),
            "--started-before",
            &runs[2].1.to_string()
        ])?,
        vec![a2.clone(), a1.clone()]
    );
    // Paging keeps the filters: one run per page.
    let (page1, next) = rt.block_on(client.list(ListOptions {
        workflow_id: Some("alpha".into()),
        page_size: 1,
        ..Default::default()
    }))?;
    assert_eq!(page1.len(), 1);
    let (page2, _) = rt.block_on(client.list(ListOptions {
        workflow_id: Some("alpha".into()),
        page_size: 1,
        page_token: next,
        ..Default::default()
    }))?;
    assert_eq!(
        [page1, page2]
            .concat()
            .iter()
            .map(|r| r.run_id.clone())
            .collect::<Vec<_>>(),
        vec![a2.clone(), a1.clone()]
    );
    // An empty range: refused by the CLI and by the server.
    let (code, _, err) = cli(
        &url,
        &[
            "run",
            "list",
            "--started-after",
            &second,
            "--started-before",
            &second,
        ],
    )?;
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("the range is empty"), "{err}");
    let refused = rt.block_on(client.list(ListOptions {
        started_after_ms: Some(runs[1].1),
        started_before_ms: Some(runs[0].1),
        ..Default::default()
    }));
    let e = format!("{:?}", refused.expect_err("an empty range is refused"));
    assert!(e.contains("the range is empty"), "{e}");
    let (code, _, err) = cli(&url, &["run", "list", "--started-after", "yesterday"])?;
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("RFC 3339"), "{err}");
    Ok(())
}

/// RFC 3339 UTC of a Unix ms time, with a fixed `.mmm` (what `--started-after` accepts).
fn format_rfc3339(ms: i64) -> String {
    let secs = ms.div_euclid(1000);
    let days = secs.div_euclid(86_400);
    let sod = secs.rem_euclid(86_400);
    // Civil date from days since the epoch (H. Hinnant).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{:03}Z",
        sod / 3600,
        sod % 3600 / 60,
        sod % 60,
        ms.rem_euclid(1000)
    )
}
