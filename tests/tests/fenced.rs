//! Fenced workers, tried over the raw worker protocol (the generated tonic client, not the
//! SDK) as a skeptical worker would: a stale attempt, forged and foreign tokens, a workflow
//! task token from before a server SIGKILL, polls for other types, and an effect declared only
//! by a separate tool worker that is SIGKILLed mid-write.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::{Context, Result, ensure};
use rand::{Rng, SeedableRng};
use steadfast_proto::v1 as pb;
use steadfast_tests::raw::{Raw, of_kind, schedule};
use steadfast_tests::{Proc, Server, bin, runtime, test_seed, wait_for};
use tonic::Code;

const NS: &str = "default";
const POLL_MS: u64 = 10_000;
/// A poll that is expected to come back empty waits this long.
const EMPTY_POLL_MS: u64 = 400;

fn quick_retries() -> pb::ActivityOptions {
    pb::ActivityOptions {
        retry: Some(pb::RetryPolicy {
            initial_interval_ms: 10,
            maximum_attempts: 5,
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn refused<T: std::fmt::Debug>(
    what: &str,
    r: std::result::Result<T, tonic::Status>,
    codes: &[Code],
    words: &[&str],
) -> Result<()> {
    let e = match r {
        Ok(v) => anyhow::bail!("{what}: accepted ({v:?}), expected one of {codes:?}"),
        Err(e) => e,
    };
    ensure!(
        codes.contains(&e.code()),
        "{what}: {:?} {}, expected one of {codes:?}",
        e.code(),
        e.message()
    );
    for w in words {
        ensure!(
            e.message().contains(w),
            "{what}: {:?} lacks {w:?}",
            e.message()
        );
    }
    Ok(())
}

/// Starts a run whose first workflow task schedules `activity_type`; returns the run id.
async fn run_with_activity(
    raw: &mut Raw,
    workflow_type: &str,
    activity_type: &str,
    options: pb::ActivityOptions,
) -> Result<String> {
    let run = raw.start(NS, workflow_type).await?;
    let task = raw.expect_workflow(NS, &[workflow_type], POLL_MS).await?;
    ensure!(
        task.run_id == run,
        "polled {} instead of {run}",
        task.run_id
    );
    raw.complete_workflow(
        NS,
        &task.task_token,
        vec![schedule(1, activity_type, options)],
    )
    .await?;
    Ok(run)
}

#[test]
fn stale_attempt_is_refused_and_the_current_one_is_recorded() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let server = Server::start(dir.path(), None)?;
    let rt = runtime();
    rt.block_on(async {
        let mut raw = Raw::connect(&server.url()).await?;
        let run = run_with_activity(&mut raw, "stale", "step", quick_retries()).await?;
        let decl = [("step", pb::Effect::Read)];
        let first = raw
            .poll_activity(NS, &["step"], &decl, POLL_MS)
            .await?
            .context("attempt 1")?;
        ensure!(first.attempt == 1, "attempt {}", first.attempt);
        raw.fail_activity(NS, &first.task_token).await?;
        let second = raw
            .poll_activity(NS, &["step"], &decl, POLL_MS)
            .await?
            .context("attempt 2")?;
        ensure!(second.attempt == 2, "attempt {}", second.attempt);

        // Attempt 1 comes back late: none of its reports counts.
        let late = raw
            .complete_activity(NS, &first.task_token, "\"late\"")
            .await;
        refused(
            "attempt 1 completes",
            late,
            &[Code::FailedPrecondition],
            &["superseded"],
        )?;
        let late = raw.fail_activity(NS, &first.task_token).await;
        refused(
            "attempt 1 fails",
            late,
            &[Code::FailedPrecondition],
            &["superseded"],
        )?;
        let late = raw.heartbeat(NS, &first.task_token).await;
        refused(
            "attempt 1 heartbeats",
            late,
            &[Code::FailedPrecondition],
            &["superseded"],
        )?;

        // The running attempt 2 is still current: its heartbeat and completion count.
        let hb = raw.heartbeat(NS, &second.task_token).await?;
        ensure!(!hb.cancel_requested, "attempt 2 told to stop");
        raw.complete_activity(NS, &second.task_token, "\"current\"")
            .await?;
        let history = raw.history(NS, &run).await?;
        let completed = of_kind(&history, pb::EventKind::ActivityCompleted);
        ensure!(completed.len() == 1, "{} completions", completed.len());
        let Some(pb::history_event::Attributes::ActivityCompleted(c)) = &completed[0].attributes
        else {
            anyhow::bail!("no attributes");
        };
        ensure!(c.attempt == 2, "recorded attempt {}", c.attempt);
        ensure!(
            c.result.as_ref().map(|p| p.data.as_slice()) == Some(b"\"current\"".as_slice()),
            "recorded the wrong result"
        );
        Ok(())
    })
}

#[test]
fn forged_and_foreign_tokens_are_refused_and_change_nothing() -> Result<()> {
    let seed = test_seed();
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let dir = tempfile::tempdir()?;
    let server = Server::start(dir.path(), None)?;
    let rt = runtime();
    rt.block_on(async {
        let mut raw = Raw::connect(&server.url()).await?;
        let run = run_with_activity(&mut raw, "forged", "step", quick_retries()).await?;
        let decl = [("step", pb::Effect::Read)];
        let act = raw
            .poll_activity(NS, &["step"], &decl, POLL_MS)
            .await?
            .context("attempt 1")?;
        // A second namespace with a workflow task in flight.
        let other_run = raw.start("tenant-b", "forged").await?;
        let other = raw
            .expect_workflow("tenant-b", &["forged"], POLL_MS)
            .await?;
        ensure!(other.run_id == other_run, "polled another run");
        let before = raw.history(NS, &run).await?;
        let other_before = raw.history("tenant-b", &other_run).await?;
        let started_seq = of_kind(&before, pb::EventKind::WorkflowTaskStarted)
            .last()
            .map(|e| e.seq)
            .context("a started workflow task")?;

        // Made up from what GetHistory shows, in the old plain format and in garbage.
        let made_up = [
            format!("a|{run}|1|1|{NS}"),
            format!("a|{run}|1|2|{NS}"),
            format!("w|{run}|{started_seq}|{NS}"),
            "AAAA".to_string(),
            "x".repeat(5000),
        ];
        for t in &made_up {
            let what = format!("made-up token {:?}", &t[..t.len().min(40)]);
            let r = raw.complete_activity(NS, t, "\"forged\"").await;
            refused(&what, r, &[Code::InvalidArgument], &["task_token"])?;
            let r = raw.complete_workflow(NS, t, Vec::new()).await;
            refused(&what, r, &[Code::InvalidArgument], &["task_token"])?;
        }
        // A real token with one character changed, at seeded places.
        const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
        for _ in 0..24 {
            let mut t = act.task_token.clone().into_bytes();
            let i = rng.gen_range(0..t.len());
            let c = loop {
                let c = ALPHABET[rng.gen_range(0..ALPHABET.len())];
                if c != t[i] {
                    break c;
                }
            };
            t[i] = c;
            let t = String::from_utf8(t)?;
            let r = raw.complete_activity(NS, &t, "\"forged\"").await;
            refused(
                &format!("token changed at {i}"),
                r,
                &[Code::InvalidArgument],
                &["task_token"],
            )?;
        }
        // Real tokens, sent in another namespace or to the other kind of call.
        let r = raw
            .complete_activity("tenant-b", &act.task_token, "\"foreign\"")
            .await;
        refused(
            "activity token in tenant-b",
            r,
            &[Code::PermissionDenied],
            &["namespace"],
        )?;
        let r = raw
            .complete_workflow(NS, &other.task_token, Vec::new())
            .await;
        refused(
            "tenant-b's workflow token in default",
            r,
            &[Code::PermissionDenied],
            &["namespace"],
        )?;
        let r = raw.complete_workflow(NS, &act.task_token, Vec::new()).await;
        refused(
            "activity token as a workflow token",
            r,
            &[Code::InvalidArgument],
            &["activity task"],
        )?;

        ensure!(
            raw.history(NS, &run).await? == before,
            "a forged token changed run {run}"
        );
        ensure!(
            raw.history("tenant-b", &other_run).await? == other_before,
            "a foreign token changed run {other_run}"
        );
        // The real tokens still work where they belong.
        raw.complete_activity(NS, &act.task_token, "\"real\"")
            .await?;
        raw.complete_workflow("tenant-b", &other.task_token, Vec::new())
            .await?;
        Ok(())
    })
}

#[test]
fn workflow_task_token_from_before_a_sigkill_is_refused_once_the_task_is_reissued() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let mut server = Server::start(dir.path(), None)?;
    let rt = runtime();
    let (run, old) = rt.block_on(async {
        let mut raw = Raw::connect(&server.url()).await?;
        let run = raw.start(NS, "crashy").await?;
        let old = raw.expect_workflow(NS, &["crashy"], POLL_MS).await?;
        anyhow::Ok((run, old))
    })?;
    let old_started = old.events.last().context("events")?.clone();
    ensure!(
        old_started.kind == pb::EventKind::WorkflowTaskStarted as i32,
        "the task's last event is not its start"
    );
    server.crash_and_restart()?;
    rt.block_on(async {
        let mut raw = Raw::connect(&server.url()).await?;
        // The restart times out the task the dead server handed out; it is offered again.
        let new = raw.expect_workflow(NS, &["crashy"], POLL_MS).await?;
        ensure!(new.run_id == run, "another run");
        ensure!(
            new.task_token != old.task_token,
            "the re-issued task has the old token"
        );
        let new_started = new.events.last().context("events")?;
        ensure!(
            new_started.seq > old_started.seq,
            "seq {} given out again",
            old_started.seq
        );
        let r = raw.complete_workflow(NS, &old.task_token, Vec::new()).await;
        refused(
            "the pre-crash token",
            r,
            &[Code::FailedPrecondition, Code::NotFound],
            &[],
        )?;
        // The old start is in the history as it was handed out (it was durable first).
        let history = raw.history(NS, &run).await?;
        let kept = history
            .iter()
            .find(|e| e.seq == old_started.seq)
            .context("the old start's seq")?;
        ensure!(
            kept.hash == old_started.hash,
            "the handed-out start was lost"
        );
        raw.complete_workflow(NS, &new.task_token, Vec::new())
            .await?;
        let history = raw.history(NS, &run).await?;
        let completed = of_kind(&history, pb::EventKind::WorkflowTaskCompleted);
        ensure!(completed.len() == 1, "{} completions", completed.len());
        let Some(pb::history_event::Attributes::WorkflowTaskCompleted(c)) =
            &completed[0].attributes
        else {
            anyhow::bail!("no attributes");
        };
        ensure!(c.started_seq == new_started.seq, "the wrong task completed");
        Ok(())
    })
}

#[test]
fn polls_get_only_the_types_they_run() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let server = Server::start(dir.path(), None)?;
    let rt = runtime();
    rt.block_on(async {
        let mut raw = Raw::connect(&server.url()).await?;
        // Started first, so first in the queue.
        let theirs = raw.start(NS, "wf_other").await?;
        let mine = raw.start(NS, "wf_mine").await?;
        let got = raw.expect_workflow(NS, &["wf_mine"], POLL_MS).await?;
        ensure!(
            got.run_id == mine,
            "workflow_types=[wf_mine] got {}",
            got.workflow_type
        );
        let none = raw.poll_workflow(NS, &["wf_mine"], EMPTY_POLL_MS).await?;
        ensure!(none.is_none(), "workflow_types=[wf_mine] got another type");
        raw.complete_workflow(
            NS,
            &got.task_token,
            vec![
                schedule(1, "other_type", quick_retries()),
                schedule(2, "only_this", quick_retries()),
            ],
        )
        .await?;
        let other = raw.expect_workflow(NS, &["wf_other"], POLL_MS).await?;
        ensure!(
            other.run_id == theirs,
            "workflow_types=[wf_other] got another run"
        );

        let got = raw
            .poll_activity(NS, &["only_this"], &[], POLL_MS)
            .await?
            .context("an only_this task")?;
        ensure!(
            got.activity_type == "only_this",
            "got {}",
            got.activity_type
        );
        let none = raw
            .poll_activity(NS, &["only_this"], &[], EMPTY_POLL_MS)
            .await?;
        ensure!(
            none.is_none(),
            "activity_types=[only_this] got {:?}",
            none.map(|t| t.activity_type)
        );
        // The types a worker declares are the types it takes, too.
        let got = raw
            .poll_activity(NS, &[], &[("other_type", pb::Effect::Read)], POLL_MS)
            .await?
            .context("an other_type task")?;
        ensure!(
            got.activity_type == "other_type",
            "got {}",
            got.activity_type
        );
        Ok(())
    })
}

/// Starts `raw-tool-worker` declaring `effect` for `activity_type`; returns it once it holds
/// an attempt (it then never reports).
fn tool_worker_holding_an_attempt(url: &str, activity_type: &str, effect: &str) -> Result<Proc> {
    let mut cmd = Command::new(bin("raw-tool-worker"));
    cmd.args(["--addr", url, "--type", activity_type, "--effect", effect])
        .stdout(Stdio::piped());
    let mut proc = Proc::spawn("raw-tool-worker", &mut cmd)?;
    let stdout = proc.take_stdout().context("tool worker stdout")?;
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let line = rx
        .recv_timeout(Duration::from_secs(30))
        .context("the tool worker got no attempt within 30 s")?;
    ensure!(line == "attempt 1", "tool worker printed {line:?}");
    Ok(proc)
}

#[test]
fn write_declared_only_by_a_killed_tool_worker_waits_for_reconciliation() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let server = Server::start(dir.path(), None)?;
    let rt = runtime();
    // The workflow side does not know the tools' effects: it schedules them unspecified.
    let options = pb::ActivityOptions {
        start_to_close_timeout_ms: 1_000,
        ..quick_retries()
    };
    let (write_run, read_run) = rt.block_on(async {
        let mut raw = Raw::connect(&server.url()).await?;
        let w = run_with_activity(&mut raw, "tools", "send_email", options.clone()).await?;
        let r = run_with_activity(&mut raw, "tools", "lookup", options.clone()).await?;
        anyhow::Ok((w, r))
    })?;
    let mut writer = tool_worker_holding_an_attempt(&server.url(), "send_email", "write")?;
    let mut reader = tool_worker_holding_an_attempt(&server.url(), "lookup", "read")?;
    let history = |run: &str| {
        rt.block_on(async {
            let mut raw = Raw::connect(&server.url()).await?;
            raw.history(NS, run).await
        })
    };
    // Recorded as started before each ran (every attempt is, issue 9), with the effect the
    // tool worker declared: that declaration, not the workflow's, decides what a loss means.
    let started_effects = |h: &[pb::HistoryEvent]| -> Vec<i32> {
        h.iter()
            .filter_map(|e| match &e.attributes {
                Some(pb::history_event::Attributes::ActivityStarted(s)) => Some(s.effect),
                _ => None,
            })
            .collect()
    };
    let h = history(&write_run)?;
    ensure!(
        started_effects(&h) == [pb::Effect::Write as i32],
        "the declared write was not recorded as a started write: {:?}",
        started_effects(&h)
    );
    let h = history(&read_run)?;
    ensure!(
        started_effects(&h) == [pb::Effect::Read as i32],
        "the declared read was not recorded as a started read: {:?}",
        started_effects(&h)
    );
    writer.kill9();
    reader.kill9();
    let h = wait_for(Duration::from_secs(30), "the lost write's outcome", || {
        history(&write_run)
            .ok()
            .filter(|h| !of_kind(h, pb::EventKind::ActivityOutcomeUnknown).is_empty())
    })?;
    ensure!(
        of_kind(&h, pb::EventKind::ActivityTimedOut).is_empty(),
        "the lost write timed out into a retry"
    );
    let info = rt.block_on(async {
        let mut raw = Raw::connect(&server.url()).await?;
        let r = raw
            .client
            .describe_run(pb::DescribeRunRequest {
                namespace: NS.into(),
                run_id: write_run.clone(),
                ..Default::default()
            })
            .await?
            .into_inner();
        r.run.context("run info")
    })?;
    ensure!(
        format!("{:?}", info.waiting_on)
            .to_lowercase()
            .contains("reconcil"),
        "the run does not wait for reconciliation: {:?}",
        info.waiting_on
    );
    // The lost read is retried (the control: the effect, not the setup, made the difference).
    wait_for(Duration::from_secs(30), "the lost read's retry", || {
        history(&read_run)
            .ok()
            .filter(|h| !of_kind(h, pb::EventKind::ActivityTimedOut).is_empty())
    })?;
    Ok(())
}
