//! The Prometheus endpoint (issue 16, point 1), across processes: a server with
//! `--metrics-listen`, the hello and test workers, a known workload (hello runs, an activity
//! that fails twice and is retried, one that times out and is retried, a cancelled run, a run
//! left waiting on a signal), then a scrape whose counts must be exactly the workload's. Every
//! event count must equal the events in the runs' histories (counted once, on append). After
//! a restart the process-local counters start from zero, and the gauges read from state (open
//! runs, runs waiting) are right again at once. Bad flag values are refused with a clear error.

use std::collections::BTreeMap;
use std::net::TcpStream;
use std::time::Duration;

use anyhow::{Context, Result, bail, ensure};
use serde_json::{Value, json};
use steadfast_proto::v1 as pb;
use steadfast_sdk::client::{Client, StartOptions};
use steadfast_tests::metrics::scrape;
use steadfast_tests::ui::free_port;
use steadfast_tests::{
    Server, bin, history, run_bounded, runtime, start_hello_worker, start_test_worker, wait_for,
};

const WAIT: Duration = Duration::from_secs(60);
const HELLO_RUNS: usize = 3;

/// The samples of an exposition: (name, labels) -> value.
type Samples = BTreeMap<(String, BTreeMap<String, String>), f64>;

fn parse(text: &str) -> Result<Samples> {
    let mut out = Samples::new();
    for line in text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
    {
        let (series, value) = line.rsplit_once(' ').context(line.to_string())?;
        let (name, labels) = match series.split_once('{') {
            Some((n, rest)) => {
                let rest = rest.strip_suffix('}').context(line.to_string())?;
                let mut labels = BTreeMap::new();
                // Label values here never hold `",`.
                for pair in rest.split("\",").filter(|p| !p.is_empty()) {
                    let (k, v) = pair.split_once("=\"").context(line.to_string())?;
                    labels.insert(k.to_string(), v.trim_end_matches('"').to_string());
                }
                (n.to_string(), labels)
            }
            None => (series.to_string(), BTreeMap::new()),
        };
        out.insert((name, labels), value.parse().context(line.to_string())?);
    }
    Ok(out)
}

/// The value of one series, 0 when absent.
fn get(s: &Samples, name: &str, labels: &[(&str, &str)]) -> f64 {
    let labels: BTreeMap<String, String> = labels
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    s.get(&(name.to_string(), labels)).copied().unwrap_or(0.0)
}

fn has_family(text: &str, name: &str) -> bool {
    text.contains(&format!("# TYPE {name} "))
}

fn expect(s: &Samples, name: &str, labels: &[(&str, &str)], want: f64) -> Result<()> {
    let got = get(s, name, labels);
    ensure!(got == want, "{name}{labels:?} = {got}, expected {want}");
    Ok(())
}

#[test]
fn a_scrape_after_a_known_workload_counts_it_exactly() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let port = free_port()?;
    let metrics_addr = format!("127.0.0.1:{port}");
    let mut server = Server::start_with(
        &dir.path().join("data"),
        None,
        &["--metrics-listen", &metrics_addr],
    )?;
    let url = server.url();
    let _hello = start_hello_worker(&url)?;
    let _worker = start_test_worker(&url, &dir.path().join("side"), &[])?;
    let rt = runtime();
    let client = rt.block_on(Client::connect(url.clone()))?;
    let start = |t: &str, input: Value| -> Result<String> {
        Ok(rt
            .block_on(client.start_workflow(t, &input, StartOptions::default()))?
            .run_id)
    };
    let mut runs = Vec::new();
    for i in 0..HELLO_RUNS {
        runs.push(start("hello", json!({ "name": format!("n{i}") }))?);
    }
    let flaky = start("flaky", json!({ "fail_attempts": 2 }))?;
    let slow = start(
        "slow",
        json!({ "sleep_ms": 5000, "start_to_close_ms": 1000 }),
    )?;
    let cancellable = start("cancellable", json!({ "long_ms": 120_000 }))?;
    let waiting = start("signal", json!({ "question": "ok?" }))?;
    for id in runs.iter().chain([&flaky, &slow]) {
        let _: Value = rt.block_on(client.await_result(id, WAIT))?;
    }
    // Cancel once the long activity runs (the workflow then ends as cancelled).
    wait_for(WAIT, "the long activity to start", || {
        let h = history(&rt, &url, &cancellable).ok()?;
        (h.iter()
            .filter(|e| e.kind() == pb::EventKind::ActivityStarted)
            .count()
            == 2)
            .then_some(())
    })?;
    rt.block_on(client.cancel(&cancellable, "metrics test"))?;
    wait_for(WAIT, "the cancelled run to close", || {
        let info = steadfast_tests::describe(&rt, &url, &cancellable).ok()?;
        (info.status() == pb::RunStatus::Cancelled).then_some(())
    })?;
    wait_for(WAIT, "the signal run to wait", || {
        let info = steadfast_tests::describe(&rt, &url, &waiting).ok()?;
        (!info.waiting_on.is_empty()).then_some(())
    })?;

    let all: Vec<&String> = runs
        .iter()
        .chain([&flaky, &slow, &cancellable, &waiting])
        .collect();
    // The histories are final except the waiting run's, which appends nothing while it
    // waits; read them, then scrape until the counters caught up with them (a scrape may
    // race the last append's acknowledgement).
    let mut by_kind: BTreeMap<String, f64> = BTreeMap::new();
    for id in &all {
        for e in history(&rt, &url, id)? {
            *by_kind
                .entry(
                    e.kind()
                        .as_str_name()
                        .trim_start_matches("EVENT_KIND_")
                        .to_string(),
                )
                .or_default() += 1.0;
        }
    }
    let total: f64 = by_kind.values().sum();
    let text = wait_for(WAIT, "the scrape to count every event", || {
        let text = scrape(port).ok()?;
        let s = parse(&text).ok()?;
        let counted: f64 = s
            .iter()
            .filter(|((n, _), _)| n == "steadfast_events_appended_total")
            .map(|(_, v)| v)
            .sum();
        (counted >= total).then_some(text)
    })?;
    let s = parse(&text)?;
    // Every event kind exactly as often as the histories hold it: counted once, on append.
    let counted: BTreeMap<String, f64> = s
        .iter()
        .filter(|((n, _), _)| n == "steadfast_events_appended_total")
        .map(|((_, l), v)| (l["kind"].clone(), *v))
        .collect();
    let wanted: BTreeMap<String, f64> = by_kind.iter().map(|(k, v)| (pascal(k), *v)).collect();
    ensure!(
        counted == wanted,
        "events counted {counted:?}\nin the histories {wanted:?}"
    );

    let n = HELLO_RUNS as f64;
    for (t, want) in [
        ("hello", n),
        ("flaky", 1.0),
        ("slow", 1.0),
        ("cancellable", 1.0),
        ("signal", 1.0),
    ] {
        expect(
            &s,
            "steadfast_runs_started_total",
            &[("workflow_type", t)],
            want,
        )?;
    }
    let closed = |t, status| [("workflow_type", t), ("status", status)];
    expect(
        &s,
        "steadfast_runs_closed_total",
        &closed("hello", "completed"),
        n,
    )?;
    expect(
        &s,
        "steadfast_runs_closed_total",
        &closed("flaky", "completed"),
        1.0,
    )?;
    expect(
        &s,
        "steadfast_runs_closed_total",
        &closed("slow", "completed"),
        1.0,
    )?;
    expect(
        &s,
        "steadfast_runs_closed_total",
        &closed("cancellable", "cancelled"),
        1.0,
    )?;
    expect(
        &s,
        "steadfast_run_duration_seconds_count",
        &closed("hello", "completed"),
        n,
    )?;
    let at = |t| [("activity_type", t)];
    for t in ["hello.greet", "hello.shout", "hello.sign"] {
        expect(&s, "steadfast_activity_tasks_dispatched_total", &at(t), n)?;
        expect(
            &s,
            "steadfast_activity_schedule_to_start_seconds_count",
            &at(t),
            n,
        )?;
        expect(
            &s,
            "steadfast_activities_closed_total",
            &[("activity_type", t), ("outcome", "completed")],
            n,
        )?;
    }
    // flaky: attempts 1 and 2 fail and are retried, attempt 3 completes.
    expect(
        &s,
        "steadfast_activity_tasks_dispatched_total",
        &at("flaky"),
        3.0,
    )?;
    expect(
        &s,
        "steadfast_activity_attempts_failed_total",
        &at("flaky"),
        2.0,
    )?;
    expect(&s, "steadfast_activity_retries_total", &at("flaky"), 2.0)?;
    expect(
        &s,
        "steadfast_activity_schedule_to_close_seconds_count",
        &at("flaky"),
        1.0,
    )?;
    // slow: attempt 1 times out (start-to-close 1 s, it sleeps 5 s), attempt 2 completes.
    expect(
        &s,
        "steadfast_activity_tasks_dispatched_total",
        &at("slow"),
        2.0,
    )?;
    expect(
        &s,
        "steadfast_activity_timeouts_total",
        &[("activity_type", "slow"), ("timeout", "start_to_close")],
        1.0,
    )?;
    expect(&s, "steadfast_activity_retries_total", &at("slow"), 1.0)?;
    expect(
        &s,
        "steadfast_activities_closed_total",
        &[("activity_type", "long"), ("outcome", "cancelled")],
        1.0,
    )?;
    // Workflow tasks: one per WorkflowTaskStarted in the histories.
    let wts: f64 = s
        .iter()
        .filter(|((n, _), _)| n == "steadfast_workflow_tasks_dispatched_total")
        .map(|(_, v)| v)
        .sum();
    ensure!(
        wts == by_kind["WORKFLOW_TASK_STARTED"],
        "workflow tasks {wts} vs {by_kind:?}"
    );
    // Gauges from state: only the signal run is open, waiting on its signal.
    expect(
        &s,
        "steadfast_runs_open",
        &[("workflow_type", "signal")],
        1.0,
    )?;
    expect(
        &s,
        "steadfast_runs_open",
        &[("workflow_type", "hello")],
        0.0,
    )?;
    expect(&s, "steadfast_runs_waiting", &[("kind", "signal")], 1.0)?;
    expect(&s, "steadfast_runs_waiting", &[("kind", "activity")], 0.0)?;
    expect(&s, "steadfast_runs_open_total", &[], 1.0)?;
    ensure!(
        get(&s, "steadfast_appends_total", &[]) > 0.0,
        "no appends counted"
    );
    let syncs = get(&s, "steadfast_log_syncs_total", &[]);
    let records = get(&s, "steadfast_log_records_total", &[]);
    ensure!(
        syncs > 0.0 && records >= total,
        "syncs {syncs}, records {records}"
    );
    // Records per sync, fed by the log writer at each group commit: one observation per
    // sync, and at least one log record per append (large payloads add blob records).
    let per_sync = get(&s, "steadfast_log_records_per_sync_count", &[]);
    ensure!(
        per_sync == syncs,
        "records-per-sync observations {per_sync} vs syncs {syncs}"
    );
    let per_sync_sum = get(&s, "steadfast_log_records_per_sync_sum", &[]);
    let appends = get(&s, "steadfast_appends_total", &[]);
    ensure!(
        per_sync_sum >= appends,
        "records in syncs {per_sync_sum} < appends {appends}"
    );
    let inf = get(
        &s,
        "steadfast_log_records_per_sync_bucket",
        &[("le", "+Inf")],
    );
    ensure!(inf == syncs, "+Inf bucket {inf} vs syncs {syncs}");
    ensure!(get(&s, "steadfast_log_bytes", &[]) > 0.0, "log bytes");
    ensure!(has_family(&text, "steadfast_sled_bytes"), "sled bytes");
    // Cardinality: no run id anywhere in the exposition.
    for id in &all {
        ensure!(!text.contains(id.as_str()), "run id {id} in the metrics");
    }

    // A restart: process-local counters start from zero; the gauges are read from state.
    // A scraper that keeps its connection open does not hold up a graceful stop.
    let idle = TcpStream::connect(("127.0.0.1", port))?;
    ensure!(
        server.proc.terminate(Duration::from_secs(10)),
        "server did not stop"
    );
    drop(idle);
    server.restart()?;
    let text = wait_for(WAIT, "the metrics endpoint after the restart", || {
        scrape(port).ok()
    })?;
    let s = parse(&text)?;
    ensure!(
        has_family(&text, "steadfast_runs_started_total"),
        "families are listed even before their first sample"
    );
    for t in ["hello", "flaky", "slow", "cancellable", "signal"] {
        expect(
            &s,
            "steadfast_runs_started_total",
            &[("workflow_type", t)],
            0.0,
        )?;
    }
    expect(
        &s,
        "steadfast_runs_closed_total",
        &closed("hello", "completed"),
        0.0,
    )?;
    expect(
        &s,
        "steadfast_runs_open",
        &[("workflow_type", "signal")],
        1.0,
    )?;
    expect(&s, "steadfast_runs_waiting", &[("kind", "signal")], 1.0)?;

    // The waiting run ends after the restart: counted once, by this process.
    let url = server.url();
    steadfast_tests::retry(WAIT, "signal approve", || {
        Ok(rt.block_on(async {
            let c = Client::connect(url.clone()).await?;
            c.signal(&waiting, "approve", &json!("yes")).await
        })?)
    })?;
    wait_for(WAIT, "the signal run to complete", || {
        let info = steadfast_tests::describe(&rt, &url, &waiting).ok()?;
        (info.status() == pb::RunStatus::Completed).then_some(())
    })?;
    let s = wait_for(WAIT, "the close to be counted", || {
        let s = parse(&scrape(port).ok()?).ok()?;
        (get(
            &s,
            "steadfast_runs_closed_total",
            &closed("signal", "completed"),
        ) == 1.0)
            .then_some(s)
    })?;
    expect(
        &s,
        "steadfast_runs_started_total",
        &[("workflow_type", "signal")],
        0.0,
    )?;
    expect(
        &s,
        "steadfast_runs_open",
        &[("workflow_type", "signal")],
        0.0,
    )?;
    expect(&s, "steadfast_runs_waiting", &[("kind", "signal")], 0.0)?;
    expect(&s, "steadfast_runs_open_total", &[], 0.0)?;
    Ok(())
}

/// `WORKFLOW_TASK_STARTED` -> `WorkflowTaskStarted` (the server's kind names).
fn pascal(s: &str) -> String {
    s.split('_')
        .map(|w| {
            let mut c = w.chars();
            match c.next() {
                Some(f) => f.to_string() + &c.as_str().to_ascii_lowercase(),
                None => String::new(),
            }
        })
        .collect()
}

#[test]
fn bad_metrics_flags_are_refused_with_a_clear_error() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let data = dir.path().join("data");
    let data = data.to_str().context("utf-8 path")?;
    let run = |metrics: &str| -> Result<(i32, String)> {
        let mut cmd = std::process::Command::new(bin("steadfast"));
        cmd.args([
            "server",
            "--data-dir",
            data,
            "--listen",
            "127.0.0.1:0",
            "--metrics-listen",
            metrics,
        ]);
        let (code, _, err) = run_bounded(&mut cmd, Duration::from_secs(30))?;
        Ok((code, err))
    };
    let (code, err) = run("localhost-nine")?;
    ensure!(code == 2, "exit {code}: {err}");
    ensure!(
        err.contains("--metrics-listen") && err.contains("localhost-nine"),
        "{err}"
    );
    let (code, err) = run("0.0.0.0:0")?;
    ensure!(code != 0, "an open metrics address was served: {err}");
    ensure!(
        err.contains("refusing to serve metrics on 0.0.0.0:0")
            && err.contains("--insecure-listen-any"),
        "{err}"
    );
    // A port that is taken: named in the error.
    let taken = std::net::TcpListener::bind("127.0.0.1:0")?;
    let addr = taken.local_addr()?.to_string();
    let (code, err) = run(&addr)?;
    ensure!(code != 0, "a taken metrics port was accepted: {err}");
    if !err.contains(&format!("cannot listen for metrics on {addr}")) {
        bail!("{err}");
    }
    Ok(())
}

/// On PostgreSQL the log's size is the `events` table's (sampled at scrape), and there is no
/// sled: its gauge is absent, as is the embedded log writer's records-per-sync histogram.
#[test]
fn on_postgres_the_log_size_is_the_events_table() -> Result<()> {
    let Some(pg) = steadfast_postgres::testing::PgCluster::shared() else {
        return Ok(());
    };
    let store = pg.create_database("metrics_sizes");
    let dir = tempfile::tempdir()?;
    let port = free_port()?;
    let metrics_addr = format!("127.0.0.1:{port}");
    let server = Server::start_with(
        &dir.path().join("data"),
        None,
        &["--store", &store, "--metrics-listen", &metrics_addr],
    )?;
    let url = server.url();
    let _hello = start_hello_worker(&url)?;
    let rt = runtime();
    let client = rt.block_on(Client::connect(url.clone()))?;
    let run = rt
        .block_on(client.start_workflow(
            "hello",
            &json!({ "name": "pg" }),
            StartOptions::default(),
        ))?
        .run_id;
    let _: Value = rt.block_on(client.await_result(&run, WAIT))?;
    let text = scrape(port)?;
    let s = parse(&text)?;
    let bytes = get(&s, "steadfast_log_bytes", &[]);
    // An empty events table takes 16 KiB (the metapages of its primary key and TOAST index);
    // the run's history adds at least a heap page and an index root page.
    ensure!(bytes >= 32_768.0, "steadfast_log_bytes = {bytes}\n{text}");
    ensure!(
        !has_family(&text, "steadfast_sled_bytes"),
        "a sled gauge on PostgreSQL"
    );
    ensure!(
        !has_family(&text, "steadfast_log_records_per_sync"),
        "a records-per-sync histogram on PostgreSQL"
    );
    expect(
        &s,
        "steadfast_runs_started_total",
        &[("workflow_type", "hello")],
        1.0,
    )?;
    Ok(())
}
