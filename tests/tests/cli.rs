//! The `steadfast` CLI end to end, against a real server and `test-worker`: what scripts rely
//! on (stdout carries only data, exit codes say how a run ended) and what people read.

use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result, ensure};
use serde_json::{Value, json};
use steadfast_tests::{Proc, Server, cli, side, start_test_worker, wait_for};

/// A server and a worker in a temp dir; everything stops when dropped.
struct Env {
    _worker: Proc,
    server: Server,
    dir: tempfile::TempDir,
}

impl Env {
    fn start() -> Result<Env> {
        let dir = tempfile::tempdir()?;
        let server = Server::start(&dir.path().join("data"), None)?;
        let worker = start_test_worker(&server.url(), &dir.path().join("side"), &[])?;
        Ok(Env {
            _worker: worker,
            server,
            dir,
        })
    }

    fn side_file(&self) -> std::path::PathBuf {
        self.dir.path().join("side")
    }

    /// Runs the CLI; fails unless it exits with `code`. Returns stdout.
    fn cli(&self, code: i32, args: &[&str]) -> Result<String> {
        let (got, out, err) = cli(&self.server.url(), args)?;
        ensure!(
            got == code,
            "steadfast {args:?}: exit {got}, expected {code}\nstdout:\n{out}\nstderr:\n{err}"
        );
        Ok(out)
    }

    /// `run start TYPE --input INPUT`: checks that stdout is the run id alone.
    fn start_run(&self, workflow_type: &str, input: &Value) -> Result<String> {
        let out = self.cli(
            0,
            &["run", "start", workflow_type, "--input", &input.to_string()],
        )?;
        let run = out.trim_end_matches('\n');
        ensure!(
            !run.contains('\n') && is_uuid(run),
            "run start should print the run id alone, printed {out:?}"
        );
        Ok(run.to_string())
    }
}

fn is_uuid(s: &str) -> bool {
    s.len() == 36
        && s.char_indices().all(|(i, c)| match i {
            8 | 13 | 18 | 23 => c == '-',
            _ => c.is_ascii_hexdigit(),
        })
}

fn json_lines(out: &str) -> Result<Vec<Value>> {
    out.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).with_context(|| format!("not a JSON line: {l}")))
        .collect()
}

fn listed(lines: &[Value], run: &str) -> bool {
    lines.iter().any(|r| r["run_id"] == run)
}

#[test]
fn start_result_show_history_replay_list_watch() -> Result<()> {
    let env = Env::start()?;
    let run = env.start_run("seq", &json!({ "n": 3, "sleep_ms": 300 }))?;

    // `run watch` with stdout not a terminal: one line per event, ending at the terminal
    // event. Started while the run is going, so it has to follow it.
    let url = env.server.url();
    let watched = {
        let run = run.clone();
        std::thread::spawn(move || cli(&url, &["run", "watch", &run]))
    };

    // `run result --wait` prints the result and exits 0 for a completed run.
    let out = env.cli(0, &["run", "result", &run, "--wait", "--timeout", "60s"])?;
    let result: Value = serde_json::from_str(out.trim()).context("run result prints JSON")?;
    assert_eq!(result, json!([0, 1, 2]));

    let (code, out, err) = watched.join().expect("watch thread")?;
    assert_eq!(code, 0, "run watch of a completed run: {err}");
    let lines: Vec<&str> = out.lines().filter(|l| !l.trim().is_empty()).collect();
    let seqs: Vec<u64> = lines
        .iter()
        .map(|l| l.split_whitespace().next().and_then(|s| s.parse().ok()))
        .collect::<Option<_>>()
        .with_context(|| format!("every watch line starts with its seq:\n{out}"))?;
    assert_eq!(
        seqs,
        (1..=lines.len() as u64).collect::<Vec<_>>(),
        "watch lines:\n{out}"
    );
    assert!(lines[0].contains("RunStarted"), "watch:\n{out}");
    assert!(
        lines.last().is_some_and(|l| l.contains("RunCompleted")),
        "watch ends at the terminal event:\n{out}"
    );

    // `run show --json`.
    let shown: Value = serde_json::from_str(&env.cli(0, &["run", "show", &run, "--json"])?)?;
    assert_eq!(shown["run_id"], run.as_str());
    assert_eq!(
        shown["workflow_id"],
        run.as_str(),
        "the workflow id defaults to the run id"
    );
    assert_eq!(shown["workflow_type"], "seq");
    assert_eq!(shown["status"], "completed");
    assert_eq!(shown["result"], json!([0, 1, 2]));
    let length = shown["history_length"].as_u64().context("history_length")?;

    // `history show --json`: seq, kind, time, hash on every line, seqs gapless.
    let events = json_lines(&env.cli(0, &["history", "show", &run, "--json"])?)?;
    assert_eq!(
        events.len() as u64,
        length,
        "events vs run show's history_length"
    );
    for (i, e) in events.iter().enumerate() {
        assert_eq!(e["seq"], json!(i + 1), "{e}");
        assert!(e["kind"].is_string() && e["time"].is_string(), "{e}");
        let hash = e["hash"].as_str().unwrap_or_default();
        assert!(
            hash.len() == 64 && hash.chars().all(|c| c.is_ascii_hexdigit()),
            "hash of {e}"
        );
    }
    assert_eq!(events[0]["kind"], "RunStarted");
    assert_eq!(events[events.len() - 1]["kind"], "RunCompleted");
    let seq_of = |kind: &str| {
        events
            .iter()
            .find(|e| e["kind"] == kind)
            .and_then(|e| e["seq"].as_u64())
            .with_context(|| format!("no {kind} in the history"))
    };

    // `history replay --until N`: the state as it was at N.
    let scheduled = seq_of("ActivityScheduled")?;
    let completed = seq_of("ActivityCompleted")?;
    let at = |n: u64| -> Result<Value> {
        let out = env.cli(
            0,
            &[
                "history",
                "replay",
                &run,
                "--until",
                &n.to_string(),
                "--json",
            ],
        )?;
        Ok(serde_json::from_str(&out)?)
    };
    let state = at(scheduled)?;
    assert_eq!(state["seq"], scheduled, "{state}");
    assert_eq!(state["status"], "running", "{state}");
    assert_eq!(
        state["results"],
        json!([]),
        "nothing completed yet: {state}"
    );
    let pending = state["activities"].as_array().context("activities")?;
    assert_eq!(
        pending.len(),
        1,
        "activity 1 is pending at {scheduled}: {state}"
    );
    let state = at(completed)?;
    assert_eq!(state["status"], "running", "{state}");
    assert_eq!(state["chain"]["verified_through"], completed, "{state}");
    let results = state["results"].as_array().context("results")?;
    assert_eq!(results.len(), 1, "{state}");
    assert_eq!(results[0]["activity_id"], 1);
    assert_eq!(results[0]["result"], 0);
    let text = env.cli(
        0,
        &["history", "replay", &run, "--until", &completed.to_string()],
    )?;
    assert!(text.contains(&format!("seq {completed}")), "{text}");
    assert!(text.contains("running"), "{text}");
    let whole: Value = serde_json::from_str(&env.cli(0, &["history", "replay", &run, "--json"])?)?;
    assert_eq!(whole["status"], "completed");
    assert_eq!(whole["result"], json!([0, 1, 2]));

    // `run list --status`.
    let done = json_lines(&env.cli(0, &["run", "list", "--status", "completed", "--json"])?)?;
    assert!(listed(&done, &run), "completed runs: {done:?}");
    let running = json_lines(&env.cli(0, &["run", "list", "--status", "running", "--json"])?)?;
    assert!(!listed(&running, &run), "running runs: {running:?}");
    let table = env.cli(0, &["run", "list", "--status", "completed"])?;
    assert!(
        table.contains(&run) && table.contains("completed"),
        "{table}"
    );
    Ok(())
}

#[test]
fn signal_inbox_and_answer() -> Result<()> {
    let env = Env::start()?;
    let question = "Ship release 1.2 to everyone?";
    let run = env.start_run(
        "signal",
        &json!({ "question": question, "choices": ["yes", "no"] }),
    )?;

    // Before the answer: the inbox lists the run with its question and choices.
    let waiting = wait_for(
        Duration::from_secs(20),
        "the run to wait on its signal",
        || {
            let out = env
                .cli(0, &["run", "list", "--waiting", "signal", "--json"])
                .ok()?;
            let lines = json_lines(&out).ok()?;
            lines.into_iter().find(|r| r["run_id"] == run.as_str())
        },
    )?;
    let wait = waiting["waiting_on"]
        .as_array()
        .and_then(|w| w.iter().find(|w| w["kind"] == "signal"))
        .with_context(|| format!("waiting_on of {waiting}"))?;
    assert_eq!(wait["name"], "approve", "{wait}");
    assert_eq!(wait["question"], question, "{wait}");
    assert_eq!(wait["choices"], json!(["yes", "no"]), "{wait}");
    let inbox = env.cli(0, &["run", "list", "--waiting", "signal"])?;
    assert!(
        inbox.contains(&run) && inbox.contains(question) && inbox.contains("approve"),
        "the inbox table:\n{inbox}"
    );
    let shown: Value = serde_json::from_str(&env.cli(0, &["run", "show", &run, "--json"])?)?;
    assert_eq!(shown["status"], "running");

    // The answer: `run signal` prints the run that got it.
    let out = env.cli(0, &["run", "signal", &run, "approve", "--input", "\"yes\""])?;
    assert_eq!(out.trim(), run, "run signal prints the run id");
    let out = env.cli(0, &["run", "result", &run, "--wait", "--timeout", "60s"])?;
    let result: Value = serde_json::from_str(out.trim())?;
    assert_eq!(result["answer"], "yes", "{result}");
    assert_eq!(result["input"]["question"], question, "{result}");
    let after = json_lines(&env.cli(0, &["run", "list", "--waiting", "signal", "--json"])?)?;
    assert!(
        !listed(&after, &run),
        "answered, so no longer in the inbox: {after:?}"
    );
    Ok(())
}

#[test]
fn cancel_ends_with_the_partial_result() -> Result<()> {
    let env = Env::start()?;
    let run = env.start_run("cancellable", &json!({ "long_ms": 60_000 }))?;
    wait_for(
        Duration::from_secs(20),
        "the long activity to start",
        || long_started(&env.side_file(), &run),
    )?;

    let out = env.cli(
        0,
        &[
            "run",
            "cancel",
            &run,
            "--reason",
            "the user changed their mind",
        ],
    )?;
    assert!(out.trim().is_empty(), "run cancel prints no data: {out:?}");
    // Exit code 4: the run was cancelled; stdout: its partial result.
    let out = env.cli(4, &["run", "result", &run, "--wait", "--timeout", "60s"])?;
    let partial: Value = serde_json::from_str(out.trim()).context("the partial result")?;
    assert_eq!(partial, json!({ "done": [0], "cancelled": "long" }));

    let shown: Value = serde_json::from_str(&env.cli(0, &["run", "show", &run, "--json"])?)?;
    assert_eq!(shown["status"], "cancelled", "{shown}");
    assert_eq!(shown["result"], partial, "{shown}");
    let kinds: Vec<String> = json_lines(&env.cli(0, &["history", "show", &run, "--json"])?)?
        .iter()
        .map(|e| e["kind"].as_str().unwrap_or_default().to_string())
        .collect();
    for kind in ["CancelRequested", "ActivityCancelled", "RunCancelled"] {
        assert!(kinds.iter().any(|k| k == kind), "{kind} in {kinds:?}");
    }
    assert_eq!(kinds.last().map(String::as_str), Some("RunCancelled"));
    Ok(())
}

fn long_started(side_file: &Path, run: &str) -> Option<()> {
    let ex = side::executions(side_file, run).ok()?;
    ex.iter().any(|e| e.activity_type == "long").then_some(())
}
