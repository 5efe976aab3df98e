//! Progress the user can follow, across processes: workflow progress and activity heartbeat
//! details reach `run watch` / `Client::watch` while the run runs, the stream resumes after any
//! seq, a cancellation reaches a running activity within a second, and a run that is
//! cancelled, timed out or terminated ends with its partial result, shown by `run result`
//! with the final status's exit code.

mod agent_common;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use agent_common::{Env, WAIT};
use anyhow::{Context, Result, bail, ensure};
use serde_json::Value;
use steadfast_proto::v1 as pb;
use steadfast_proto::v1::history_event::Attributes as A;
use steadfast_tests::bin;
// The stream combinators tonic re-exports (this crate does not depend on `futures`).
use tonic::codegen::tokio_stream::StreamExt;

/// Exit codes of `run result` (see `steadfast --help`).
const EXIT_CANCELLED: i32 = 4;
const EXIT_TERMINATED: i32 = 5;
const EXIT_TIMED_OUT: i32 = 6;

/// The issue's bound on how long a cancellation takes to reach a running activity.
const CANCEL_REACHES_ACTIVITY_MAX: Duration = Duration::from_secs(1);

fn now_us() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as i64)
        .unwrap_or(0)
}

/// `steadfast run watch` as a child process (stdout a pipe, so one line per event), its lines
/// read as they come. Killed on drop.
struct Watch {
    child: Child,
    lines: mpsc::Receiver<String>,
    seen: Vec<String>,
}

impl Watch {
    fn start(env: &Env, args: &[&str]) -> Result<Watch> {
        let mut child = Command::new(bin("steadfast"))
            .args(["run", "watch"])
            .args(args)
            .env("STEADFAST_ADDR", env.url())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .context("spawn steadfast run watch")?;
        let stdout = child.stdout.take().context("watch stdout")?;
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    return;
                }
            }
        });
        Ok(Watch {
            child,
            lines,
            seen: Vec::new(),
        })
    }

    /// Reads lines until one satisfies `pred`; returns it.
    fn until(&mut self, what: &str, pred: impl Fn(&str) -> bool) -> Result<String> {
        let end = Instant::now() + WAIT;
        loop {
            let left = end.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    self.seen.push(line.clone());
                    if pred(&line) {
                        return Ok(line);
                    }
                }
                Err(_) => bail!(
                    "run watch: no line with {what} within {WAIT:?}; saw:\n{}",
                    self.seen.join("\n")
                ),
            }
        }
    }

    /// Reads to the end of the output and waits for the exit code.
    fn finish(mut self) -> Result<(i32, Vec<String>)> {
        let end = Instant::now() + WAIT;
        loop {
            match self
                .lines
                .recv_timeout(end.saturating_duration_since(Instant::now()))
            {
                Ok(line) => self.seen.push(line),
                Err(mpsc::RecvTimeoutError::Disconnected) => break,
                Err(mpsc::RecvTimeoutError::Timeout) => bail!("run watch did not end"),
            }
        }
        let status = self.child.wait()?;
        Ok((status.code().unwrap_or(-1), std::mem::take(&mut self.seen)))
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The seq and kind of a `run watch` line (`  seq  time  Kind  summary`).
fn seq_kind(line: &str) -> Result<(u64, String)> {
    let mut f = line.split_whitespace();
    let seq = f.next().context("seq")?.parse()?;
    let _time = f.next();
    Ok((seq, f.next().context("kind")?.to_string()))
}

/// Asserts that `lines` are events `from..=to`, one each, in order.
fn assert_contiguous(lines: &[String], from: u64, to: u64) -> Result<()> {
    let seqs: Vec<u64> = lines
        .iter()
        .map(|l| seq_kind(l).map(|(s, _)| s))
        .collect::<Result<_>>()?;
    ensure!(
        seqs == (from..=to).collect::<Vec<_>>(),
        "expected seqs {from}..={to}, got {seqs:?}"
    );
    Ok(())
}

#[test]
fn progress_and_heartbeats_reach_watchers_while_running_and_resume_after_any_seq() -> Result<()> {
    agent_common::seed();
    let env = Env::start()?;
    let _worker = env.worker()?;
    // Steps long enough to heartbeat (every 500 ms); before step 2 the run waits for `go`.
    let run = env.start_run("steps", r#"{"n":4,"step_ms":1500,"gate_at":2}"#, &[])?;
    let mut watch = Watch::start(&env, &[&run])?;

    let hb = watch.until("heartbeat details of step 0", |l| {
        l.contains("ActivityProgress") && l.contains(r#""step":0"#)
    })?;
    ensure!(
        env.describe(&run)?.status() == pb::RunStatus::Running,
        "still running when {hb:?} arrived"
    );
    let gate = watch.until("the progress at the gate", |l| {
        l.contains("ProgressReported") && l.contains("2/4 step 2 waits for go")
    })?;
    let info = env.describe(&run)?;
    ensure!(
        info.status() == pb::RunStatus::Running,
        "progress arrives while the run runs"
    );
    let p = info.progress.context("DescribeRun has the progress")?;
    ensure!(
        (p.done, p.total, p.message.as_str()) == (2, 4, "step 2 waits for go"),
        "{p:?}"
    );
    let (gate_seq, _) = seq_kind(&gate)?;

    env.ok(&["run", "signal", &run, "go"])?;
    let (code, lines) = watch.finish()?;
    ensure!(
        code == 0,
        "run watch exits 0 for a completed run, got {code}"
    );
    let last = lines.last().context("no lines")?;
    let (last_seq, kind) = seq_kind(last)?;
    ensure!(kind == "RunCompleted", "{last}");
    assert_contiguous(&lines, 1, last_seq)?;
    let progress: Vec<&str> = lines
        .iter()
        .filter(|l| l.contains("ProgressReported"))
        .map(|l| l.split("ProgressReported").nth(1).unwrap_or("").trim())
        .collect();
    ensure!(
        progress
            == [
                "0/4 step 0",
                "1/4 step 1",
                "2/4 step 2 waits for go",
                "2/4 step 2",
                "3/4 step 3",
                "4/4 done"
            ],
        "{progress:?}"
    );

    // Resume after the gate's seq: only later events, the same lines.
    let resumed = Watch::start(&env, &[&run, "--after", &gate_seq.to_string()])?;
    let (code, again) = resumed.finish()?;
    ensure!(code == 0, "exit {code}");
    assert_contiguous(&again, gate_seq + 1, last_seq)?;
    ensure!(
        again.as_slice() == &lines[gate_seq as usize..],
        "a resumed watch prints the same lines"
    );

    // The SDK's watch, after any seq.
    let history = env.rt.block_on(env.client().history(&run))?;
    for after in [0, 1, gate_seq, last_seq - 1, last_seq] {
        let got: Vec<pb::WatchRunResponse> = env
            .rt
            .block_on(async {
                let stream = Box::pin(env.client().watch(&run, after));
                tokio::time::timeout(WAIT, stream.collect::<Vec<_>>()).await
            })?
            .into_iter()
            .collect::<Result<_, _>>()?;
        let events: Vec<pb::HistoryEvent> = got.iter().filter_map(|r| r.event.clone()).collect();
        ensure!(
            events == history[after as usize..],
            "Client::watch after {after}: {} events, history has {} after it",
            events.len(),
            history.len() - after as usize
        );
        if let Some(r) = got.last().and_then(|r| r.run.as_ref()) {
            ensure!(r.status() == pb::RunStatus::Completed, "{r:?}");
        }
    }
    Ok(())
}

/// Starts a `steps` run whose step 1 works for 10 minutes, waits until its heartbeat details
/// reach a watcher, cancels it, and returns (run, cancel latency).
fn cancel_during_a_long_step(env: &Env) -> Result<(String, Duration)> {
    let run = env.start_run(
        "steps",
        r#"{"n":3,"step_ms":100,"slow_step":1,"slow_ms":600000}"#,
        &[],
    )?;
    // Heartbeat details of the long step reach a watcher (the SDK's stream) while it runs.
    let delay_ms = env.rt.block_on(async {
        let mut stream = Box::pin(env.client().watch(&run, 0));
        tokio::time::timeout(WAIT, async {
            while let Some(msg) = stream.next().await {
                let msg = msg?;
                if let Some(e) = &msg.event
                    && let Some(A::ActivityProgress(p)) = &e.attributes
                {
                    let d: Value =
                        serde_json::from_slice(&p.details.as_ref().context("details")?.data)?;
                    if d["step"] == 1 {
                        return Ok(now_us() / 1000 - e.time_ms);
                    }
                }
            }
            bail!("the stream ended before heartbeat details came")
        })
        .await?
    })?;
    eprintln!(
        "[agent] heartbeat details reached the watcher {delay_ms} ms after they were recorded"
    );
    ensure!(
        delay_ms < 2_000,
        "heartbeat details took {delay_ms} ms to reach the watcher"
    );
    ensure!(env.describe(&run)?.status() == pb::RunStatus::Running);

    let asked_us = now_us();
    env.rt
        .block_on(env.client().cancel(&run, "the user changed their mind"))?;
    let observed =
        steadfast_tests::wait_for(WAIT, "the activity to observe the cancellation", || {
            env.side_lines()
                .ok()?
                .into_iter()
                .find(|l| l["ev"] == "cancelled" && l["run"] == run.as_str())
        })?;
    let at_us = observed["t_us"].as_i64().context("t_us")?;
    let latency = Duration::from_micros(u64::try_from(at_us - asked_us).unwrap_or(0));
    Ok((run, latency))
}

#[test]
fn cancellation_reaches_a_running_activity_within_a_second_and_keeps_the_partial_result()
-> Result<()> {
    agent_common::seed();
    let env = Env::start()?;
    let _worker = env.worker()?;
    let mut latencies = Vec::new();
    for _ in 0..3 {
        let (run, latency) = cancel_during_a_long_step(&env)?;
        eprintln!("[agent] cancel reached the activity of run {run} after {latency:?}");
        latencies.push(latency);
        ensure!(
            latency < CANCEL_REACHES_ACTIVITY_MAX,
            "the cancellation took {latency:?} to reach the running activity"
        );

        let info = env.wait_closed(&run)?;
        ensure!(
            info.status() == pb::RunStatus::Cancelled,
            "cancelled, not {:?}",
            info.status()
        );
        let (code, out, err) = env.cli(&["run", "result", &run])?;
        ensure!(code == EXIT_CANCELLED, "run result exit {code}: {err}");
        ensure!(err.contains("was cancelled"), "{err}");
        let partial: Value = serde_json::from_str(&out)?;
        ensure!(
            partial["cancelled_at"] == 1
                && partial["done"].as_array().map(Vec::len) == Some(1)
                && partial["done"][0]["step"] == 0,
            "partial result: {partial}"
        );
        let show = env.show(&run)?;
        ensure!(
            show["status"] == "cancelled" && show["result"] == partial,
            "{show}"
        );
        let steps: Vec<u64> = env
            .starts(&run)?
            .iter()
            .filter_map(|s| s["step"].as_u64())
            .collect();
        ensure!(steps == [0, 1], "nothing runs after the cancel: {steps:?}");
    }
    eprintln!("[agent] cancel latencies: {latencies:?}");
    Ok(())
}

/// Starts a `steps` run that completes two steps (recording a partial result) and then
/// waits for a signal that never comes.
fn stuck_after_two_steps(env: &Env, extra: &[&str]) -> Result<String> {
    env.start_run("steps", r#"{"n":4,"step_ms":50,"gate_at":2}"#, extra)
}

fn assert_partial_two_steps(out: &str) -> Result<()> {
    let partial: Value = serde_json::from_str(out).with_context(|| format!("{out:?}"))?;
    ensure!(
        partial["done"].as_array().map(Vec::len) == Some(2)
            && partial["done"][1]["step"] == 1
            && partial.get("cancelled_at").is_none(),
        "partial result: {partial}"
    );
    Ok(())
}

#[test]
fn timed_out_and_terminated_runs_end_with_their_partial_result() -> Result<()> {
    agent_common::seed();
    let env = Env::start()?;
    let _worker = env.worker()?;

    let timed = stuck_after_two_steps(&env, &["--run-timeout", "5s"])?;
    let stopped = stuck_after_two_steps(&env, &[])?;
    env.wait_waiting(&stopped, "signal")?;
    let (code, _, _) = env.cli(&["run", "result", &stopped])?;
    ensure!(code == 7, "still running: exit {code}");
    env.ok(&["run", "terminate", &stopped, "--reason", "enough for today"])?;

    for (run, status, exit) in [
        (&timed, "timed_out", EXIT_TIMED_OUT),
        (&stopped, "terminated", EXIT_TERMINATED),
    ] {
        env.wait_closed(run)?;
        let (code, out, err) = env.cli(&["run", "result", run])?;
        ensure!(
            code == exit,
            "run result of a {status} run: exit {code}: {err}"
        );
        assert_partial_two_steps(&out)?;
        let show = env.show(run)?;
        ensure!(show["status"] == status, "{}", show["status"]);
        ensure!(
            show["result"] == serde_json::from_str::<Value>(&out)?,
            "{}",
            show["result"]
        );
    }
    // The timeout hit while the run waited at its gate, after both steps.
    let events = env.rt.block_on(env.client().history(&timed))?;
    let kinds: Vec<&str> = events
        .iter()
        .filter_map(|e| match &e.attributes {
            Some(A::PartialResultRecorded(_)) => Some("partial"),
            Some(A::SignalWaitStarted(_)) => Some("wait"),
            Some(A::RunTimedOut(_)) => Some("timed_out"),
            _ => None,
        })
        .collect();
    ensure!(
        kinds == ["partial", "partial", "wait", "timed_out"],
        "{kinds:?}"
    );
    Ok(())
}

#[test]
fn cancelling_a_run_whose_activity_waits_to_be_dispatched_ends_it_with_its_partial_result()
-> Result<()> {
    agent_common::seed();
    let env = Env::start()?;
    let _worker = env.worker()?;
    // Parked on its budget after two steps, with their partial result recorded.
    let parked = env.start_run(
        "steps",
        r#"{"n":4,"step_ms":50}"#,
        &["--max-activities", "2"],
    )?;
    // Waiting 10 minutes to retry a failed tool call.
    let backoff = env.start_run(
        "tool_call",
        r#"{"tool":"flaky","retry_initial_ms":600000}"#,
        &[],
    )?;
    env.wait_waiting(&parked, "budget")?;
    env.wait_run(&backoff, "the retry backoff", |r| {
        r.waiting_on.iter().any(
            |w| matches!(&w.what, Some(pb::waiting_on::What::Activity(a)) if a.state == "backoff"),
        )
    })?;
    ensure!(
        env.describe(&parked)?
            .result
            .is_some_and(|p| p.data.starts_with(br#"{"done":"#)),
        "the parked run shows its partial result while open"
    );

    let steps_done = |v: &Value| -> Vec<Value> {
        v["done"]
            .as_array()
            .map(|d| d.iter().map(|s| s["step"].clone()).collect())
            .unwrap_or_default()
    };
    for run in [&parked, &backoff] {
        env.ok(&["run", "cancel", run])?;
        let info = env.wait_closed(run)?;
        ensure!(
            info.status() == pb::RunStatus::Cancelled,
            "run {run}: {:?}",
            info.status()
        );
        let (code, out, err) = env.cli(&["run", "result", run])?;
        ensure!(code == EXIT_CANCELLED, "exit {code}: {err}");
        let got: Value = serde_json::from_str(&out)?;
        if run == &parked {
            ensure!(
                got["cancelled_at"] == 2 && steps_done(&got) == [0, 1],
                "{got}"
            );
        } else {
            ensure!(
                got == serde_json::json!({"tool": "flaky", "cancelled": true}),
                "{got}"
            );
        }
    }
    // Nothing ran after the cancel.
    ensure!(env.starts(&parked)?.len() == 2, "the parked step ran");
    ensure!(
        env.starts(&backoff)?.len() == 1,
        "the failed tool ran again"
    );
    Ok(())
}

#[test]
fn a_workflow_cancelling_an_activity_that_waits_to_retry_hears_back_at_once() -> Result<()> {
    agent_common::seed();
    let env = Env::start()?;
    let _worker = env.worker()?;
    let run = env.start_run("cancel_pending", r#"{"delay_ms":1000}"#, &[])?;
    let info = env.wait_closed(&run)?;
    ensure!(
        info.status() == pb::RunStatus::Completed,
        "{:?}: {:?}",
        info.status(),
        info.failure
    );
    let result: Value = serde_json::from_str(&env.ok(&["run", "result", &run])?)?;
    ensure!(result == serde_json::json!({"cancelled": 1}), "{result}");
    ensure!(
        env.starts(&run)?.len() == 1,
        "the cancelled activity ran again"
    );
    Ok(())
}
