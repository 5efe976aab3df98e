//! The side-by-side benchmark keeps building and running (issue 13's CI smoke): Steadfast's
//! rounds at a tiny scale, and the comparison end to end against a stand-in for the Restate
//! harness (a `bench.sh` that writes a fixed `results.json`), so the parsing, the medians and
//! the ratios are checked without Node or Restate. The real runs stay opt-in (README,
//! Benchmarks).

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use steadfast_tests::{bin, run_bounded};

const SMOKE_TIMEOUT: Duration = Duration::from_secs(240);

fn bench(args: &[&str]) -> Command {
    let mut cmd = Command::new(bin("steadfast-bench"));
    cmd.args(args)
        .env("N", "12")
        .env("K", "2")
        .env("CONC", "4")
        .env("LAT_N", "5")
        .env("LAT_K", "1")
        .env("LAT_WARMUP", "1");
    cmd
}

/// The value of a table row whose first cell starts with `name`, column `col` (0 = name).
fn cell<'a>(table: &'a str, name: &str, col: usize) -> &'a str {
    let line = table
        .lines()
        .find(|l| l.starts_with(&format!("| {name}")))
        .unwrap_or_else(|| panic!("no row {name:?} in:\n{table}"));
    line.split('|').map(str::trim).nth(col + 1).unwrap()
}

#[test]
fn steadfast_rounds_run_and_report() {
    let (code, out, err) = run_bounded(
        &mut bench(&["--steadfast-only", "--rounds", "1"]),
        SMOKE_TIMEOUT,
    )
    .unwrap();
    assert_eq!(code, 0, "stdout:\n{out}\nstderr:\n{err}");
    let steps: f64 = cell(&out, "throughput (steps/s)", 1).parse().unwrap();
    assert!(steps > 0.0, "{out}");
    let p50: f64 = cell(&out, "1-step run latency p50", 1).parse().unwrap();
    assert!(p50 > 0.0, "{out}");
    let rss: f64 = cell(&out, "server peak RSS", 1).parse().unwrap();
    assert!(rss > 1.0, "the server's peak RSS was read: {out}");
    let cpu: f64 = cell(&out, "server CPU per 1,000 steps", 1).parse().unwrap();
    assert!(cpu > 0.0, "the server's CPU was read: {out}");
    assert!(
        out.contains("fdatasync median"),
        "the machine is recorded: {out}"
    );
}

/// A stand-in for the peer harness: `bench.sh LABEL` writes `$RUNS_DIR/LABEL/results.json`
/// with the given figures; it refuses to run unless it is given the shapes.
fn fake_peer(dir: &Path, body: &str) {
    let script = format!(
        "#!/usr/bin/env bash\nset -eu\nmkdir -p \"$RUNS_DIR/$1\"\n[ \"$N $K $CONC $LAT_N $LAT_K $LAT_WARMUP\" = \"12 2 4 5 1 1\" ] || {{ echo \"wrong shapes\" >&2; exit 3; }}\n{body}\n"
    );
    std::fs::write(dir.join("bench.sh"), script).unwrap();
}

const RESULTS: &str = r#"cat > "$RUNS_DIR/$1/results.json" <<'JSON'
{"label":"x","startup_ms":{"healthy":900,"deployment_registered":950,"first_workflow_done":1000},
 "throughput":{"mode":"throughput","n":12,"steps":2,"concurrency":4,"ok":12,"errors":0,"errSamples":[],
   "wall_s":1.0,"workflows_per_s":12,"steps_per_s":24.0,"per_wf_latency_ms":{"p50":300.0,"p99":400.0,"max":500.0}},
 "throughput_cpu_s":{"server":2.4,"service":1.2,"loadgen":0.6},
 "latency":{"mode":"latency","n":5,"steps":1,"warmup":1,"ok":5,"errors":0,"errSamples":[],
   "p50_ms":1000.0,"p90_ms":1000.0,"p99_ms":1000.0,"min_ms":1000.0,"max_ms":1000.0,"mean_ms":1000.0},
 "server_rss_kib":{"after_a":1000,"peak_vmhwm":1048576,"threads":10},"service_peak_rss_kib":1000,
 "data_dir_bytes":{"after_a":1,"after_graceful_stop":1},"data_dir_allocated_kib":{"after_a":24,"after_graceful_stop":24},
 "graceful_stop_ms":400,"restart_ms":{"healthy":700,"first_workflow_done":800}}
JSON"#;

#[test]
fn comparison_reads_the_peer_results_and_prints_ratios() {
    let peer = tempfile::tempdir().unwrap();
    fake_peer(peer.path(), RESULTS);
    let json = peer.path().join("out.json");
    let (code, out, err) = run_bounded(
        &mut bench(&[
            "--vs-restate",
            peer.path().to_str().unwrap(),
            "--rounds",
            "2",
            "--json",
            json.to_str().unwrap(),
        ]),
        SMOKE_TIMEOUT,
    )
    .unwrap();
    assert_eq!(code, 0, "stdout:\n{out}\nstderr:\n{err}");
    // The stand-in's figures are the Restate column, as written.
    assert_eq!(cell(&out, "throughput (steps/s)", 1), "24.0", "{out}");
    assert_eq!(cell(&out, "server peak RSS", 1), "1024", "{out}");
    assert_eq!(cell(&out, "1-step run latency p50", 1), "1000", "{out}");
    // 2.4 s of server CPU over 24 steps: 100 s per 1,000 steps.
    assert_eq!(cell(&out, "server CPU per 1,000 steps", 1), "100", "{out}");
    // The ratio column is Steadfast's median over Restate's.
    let ours: f64 = cell(&out, "server peak RSS", 2).parse().unwrap();
    let ratio: f64 = cell(&out, "server peak RSS", 3)
        .trim_end_matches('x')
        .parse()
        .unwrap();
    assert!((ratio - ours / 1024.0).abs() < 0.006, "{out}");
    assert_eq!(cell(&out, "server peak RSS", 5), "yes", "{out}");
    assert!(out.contains("median of 2 interleaved rounds"), "{out}");
    let saved: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    assert_eq!(saved["restate"].as_array().unwrap().len(), 2);
    assert_eq!(saved["steadfast"].as_array().unwrap().len(), 2);
    assert_eq!(saved["shape"]["n"], 12);
}

#[test]
fn a_failed_peer_run_is_an_error_that_names_its_log() {
    let peer = tempfile::tempdir().unwrap();
    fake_peer(peer.path(), "echo 'port 8080 busy; aborting' >&2; exit 1");
    let (code, out, err) = run_bounded(
        &mut bench(&[
            "--vs-restate",
            peer.path().to_str().unwrap(),
            "--rounds",
            "1",
        ]),
        SMOKE_TIMEOUT,
    )
    .unwrap();
    assert_ne!(code, 0, "stdout:\n{out}\nstderr:\n{err}");
    assert!(err.contains("bench.sh failed"), "{err}");
    assert!(
        err.contains(".log"),
        "the message names the peer's log: {err}"
    );

    // A peer run with failed workflows is refused rather than compared.
    fake_peer(
        peer.path(),
        &RESULTS.replace(r#""ok":12,"errors":0"#, r#""ok":10,"errors":2"#),
    );
    let (code, _, err) = run_bounded(
        &mut bench(&[
            "--vs-restate",
            peer.path().to_str().unwrap(),
            "--rounds",
            "1",
        ]),
        SMOKE_TIMEOUT,
    )
    .unwrap();
    assert_ne!(code, 0);
    assert!(err.contains("failed workflows"), "{err}");

    // A directory without the harness says what to give.
    let (code, _, err) = run_bounded(
        &mut bench(&["--vs-restate", "/nonexistent-peer-dir", "--rounds", "1"]),
        SMOKE_TIMEOUT,
    )
    .unwrap();
    assert_ne!(code, 0);
    assert!(err.contains("setup.sh"), "{err}");
}

#[test]
fn profile_zero_prints_the_rate_and_where_a_run_waited() {
    let (code, out, err) =
        run_bounded(&mut bench(&["--profile-zero", "300"]), SMOKE_TIMEOUT).unwrap();
    assert_eq!(code, 0, "stdout:\n{out}\nstderr:\n{err}");
    let rate: f64 = out
        .split_whitespace()
        .next()
        .and_then(|r| r.parse().ok())
        .unwrap_or_else(|| panic!("no rate first: {out}"));
    assert!(rate > 0.0, "{out}");
    assert!(out.contains("CPU per run: server"), "{out}");
    // Every run went through its workflow task: the queue wait is one of the gaps printed.
    let queued = out
        .lines()
        .find(|l| {
            l.trim_start()
                .starts_with("WorkflowTaskScheduled -> WorkflowTaskStarted:")
        })
        .unwrap_or_else(|| panic!("no queue-wait line: {out}"));
    assert!(queued.contains("p50") && queued.contains("max"), "{out}");
    assert!(
        out.contains("WorkflowTaskCompleted -> RunCompleted"),
        "{out}"
    );
}

#[test]
fn a_bad_profile_count_is_refused_with_a_message() {
    for (flag, bad) in [("--profile-zero", "many"), ("--profile-seq", "0")] {
        let (code, _, err) = run_bounded(&mut bench(&[flag, bad]), SMOKE_TIMEOUT).unwrap();
        assert_ne!(code, 0);
        assert!(
            err.contains(&format!(
                "{flag}: give a whole number of at least 1, not \"{bad}\""
            )),
            "{err}"
        );
    }
}
