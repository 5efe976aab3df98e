//! A timed-out attempt's usage is counted (issue 9, point 6), over the raw worker protocol:
//! the attempt times out (start-to-close), its worker then reports a failure with the usage
//! of the LLM call it did make. The report is refused (the attempt is superseded) and the
//! activity's outcome stays the timeout, but the usage is recorded, once, in the history and
//! in the run's usage.

use std::time::Duration;

use anyhow::{Context, Result, ensure};
use steadfast_proto::v1 as pb;
use steadfast_proto::v1::history_event::Attributes as A;
use steadfast_tests::raw::{Raw, json, of_kind, schedule};
use steadfast_tests::{Server, runtime, wait_for};
use tonic::Code;

const NS: &str = "default";
const POLL_MS: u64 = 10_000;

fn usage() -> pb::Usage {
    pb::Usage {
        input_tokens: 1_200,
        output_tokens: 80,
        cost_micros: 3_400,
        model: "late-model".into(),
        ..Default::default()
    }
}

fn expect_refused(what: &str, r: Result<(), tonic::Status>, code: Code) -> Result<()> {
    match r {
        Ok(()) => anyhow::bail!("{what}: accepted, expected {code:?}"),
        Err(e) => {
            ensure!(e.code() == code, "{what}: {:?} {}", e.code(), e.message());
            Ok(())
        }
    }
}

#[test]
fn a_timed_out_attempt_reports_its_usage_once_and_it_is_counted() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let server = Server::start(dir.path(), None)?;
    let rt = runtime();
    let (run, attempt1) = rt.block_on(async {
        let mut raw = Raw::connect(&server.url()).await?;
        let run = raw.start(NS, "late").await?;
        let task = raw.expect_workflow(NS, &["late"], POLL_MS).await?;
        let options = pb::ActivityOptions {
            start_to_close_timeout_ms: 300,
            // The retry is far away: nothing takes attempt 2 while the test runs.
            retry: Some(pb::RetryPolicy {
                initial_interval_ms: 600_000,
                maximum_attempts: 3,
                ..Default::default()
            }),
            ..Default::default()
        };
        raw.complete_workflow(NS, &task.task_token, vec![schedule(1, "llm.chat", options)])
            .await?;
        let attempt1 = raw
            .poll_activity(
                NS,
                &["llm.chat"],
                &[("llm.chat", pb::Effect::Read)],
                POLL_MS,
            )
            .await?
            .context("attempt 1")?;
        ensure!(attempt1.attempt == 1, "attempt {}", attempt1.attempt);
        anyhow::Ok((run, attempt1))
    })?;
    let history = || -> Result<Vec<pb::HistoryEvent>> {
        rt.block_on(async { Raw::connect(&server.url()).await?.history(NS, &run).await })
    };
    wait_for(Duration::from_secs(30), "attempt 1's timeout", || {
        history()
            .ok()
            .filter(|h| !of_kind(h, pb::EventKind::ActivityTimedOut).is_empty())
    })?;

    rt.block_on(async {
        let mut raw = Raw::connect(&server.url()).await?;
        let fail = |usage: Option<pb::Usage>| pb::FailActivityTaskRequest {
            namespace: NS.into(),
            task_token: attempt1.task_token.clone(),
            failure: Some(pb::Failure {
                message: "cut off".into(),
                r#type: "Transient".into(),
                ..Default::default()
            }),
            worker_id: "raw-activity-worker".into(),
            usage,
        };
        // A late report without usage records nothing.
        let r = raw.worker.fail_activity_task(fail(None)).await.map(|_| ());
        expect_refused("late failure without usage", r, Code::FailedPrecondition)?;
        let h = raw.history(NS, &run).await?;
        ensure!(of_kind(&h, pb::EventKind::ActivityUsageReported).is_empty());

        // The late failure with usage: still superseded, but its usage is recorded.
        let r = raw
            .worker
            .fail_activity_task(fail(Some(usage())))
            .await
            .map(|_| ());
        expect_refused("late failure with usage", r, Code::FailedPrecondition)?;
        let h = raw.history(NS, &run).await?;
        let timed_out = of_kind(&h, pb::EventKind::ActivityTimedOut);
        let reported = of_kind(&h, pb::EventKind::ActivityUsageReported);
        ensure!(reported.len() == 1, "{} usage reports", reported.len());
        ensure!(
            timed_out[0].seq < reported[0].seq,
            "ActivityUsageReported (seq {}) before ActivityTimedOut (seq {})",
            reported[0].seq,
            timed_out[0].seq
        );
        let Some(A::ActivityUsageReported(u)) = &reported[0].attributes else {
            anyhow::bail!("no attributes");
        };
        ensure!((u.command_seq, u.attempt) == (1, 1), "{u:?}");
        ensure!(u.usage.as_ref() == Some(&usage()), "{u:?}");
        ensure!(
            of_kind(&h, pb::EventKind::ActivityFailed).is_empty()
                && of_kind(&h, pb::EventKind::ActivityCompleted).is_empty(),
            "the late report changed the activity's outcome"
        );

        // The run's usage counts it.
        let describe = || pb::DescribeRunRequest {
            namespace: NS.into(),
            run_id: run.clone(),
            ..Default::default()
        };
        let info = raw.client.describe_run(describe()).await?.into_inner();
        let used = info.run.context("run info")?.usage.context("usage")?;
        ensure!(
            (used.input_tokens, used.output_tokens, used.cost_micros) == (1_200, 80, 3_400),
            "run usage {used:?}"
        );

        // A second late report of the same attempt is refused and counts nothing.
        let r = raw
            .worker
            .fail_activity_task(fail(Some(usage())))
            .await
            .map(|_| ());
        expect_refused("second late failure", r, Code::FailedPrecondition)?;
        let r = raw
            .worker
            .complete_activity_task(pb::CompleteActivityTaskRequest {
                namespace: NS.into(),
                task_token: attempt1.task_token.clone(),
                result: Some(json("\"late\"")),
                worker_id: "raw-activity-worker".into(),
                usage: Some(usage()),
                ..Default::default()
            })
            .await
            .map(|_| ());
        expect_refused("late completion", r, Code::FailedPrecondition)?;
        let h = raw.history(NS, &run).await?;
        ensure!(
            of_kind(&h, pb::EventKind::ActivityUsageReported).len() == 1,
            "a second report of attempt 1 was recorded"
        );
        let info = raw.client.describe_run(describe()).await?.into_inner();
        let again = info.run.context("run info")?.usage.context("usage")?;
        ensure!(again.input_tokens == 1_200, "run usage {again:?}");
        anyhow::Ok(())
    })
}
