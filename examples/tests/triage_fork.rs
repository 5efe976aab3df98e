//! The README's fork walkthrough, across processes: a triage run on the v1 summary prompt, a
//! worker with `--prompt-version v2` in its place, `steadfast run fork RUN --at SEQ` at the
//! merge call, and `steadfast history diff RUN FORK`. The fork reuses every LLM result
//! recorded before the boundary (the product sub-agents' classify calls: the execution log
//! counts each model call), runs only the merge (in flight at the boundary) and the summary
//! on the v2 prompt, and the diff names the summary step as the first divergence.

use std::collections::HashMap;
use std::path::Path;
use std::process::Command;

use anyhow::{Context, Result, ensure};
use serde_json::Value;
use steadfast_proto::v1::history_event::Attributes as A;
use steadfast_sdk::Client;
use steadfast_sdk::client::ListOptions;
use steadfast_tests::{Proc, Server, cli, runtime};

const TICKETS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/triage/data/tickets.jsonl");

fn triage_worker(addr: &str, dir: &Path, prompt: &str) -> Result<Proc> {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join("worker.log"))?;
    Proc::spawn(
        "triage worker",
        Command::new(env!("CARGO_BIN_EXE_triage"))
            .args(["worker", "--addr", addr, "--prompt-version", prompt])
            .arg("--exec-log")
            .arg(dir.join("llm-executions.log"))
            .env("RUST_LOG", "warn")
            .stdout(std::process::Stdio::null())
            .stderr(log),
    )
}

/// Model calls per run, from the workers' execution log (one line per call made).
fn model_calls(dir: &Path) -> Result<HashMap<String, u64>> {
    let log = std::fs::read_to_string(dir.join("llm-executions.log"))?;
    let mut calls = HashMap::new();
    for l in log.lines() {
        let run = l.split(' ').next().unwrap_or_default().to_string();
        *calls.entry(run).or_default() += 1;
    }
    Ok(calls)
}

fn result_of(url: &str, run: &str) -> Result<Value> {
    let (code, out, err) = cli(url, &["run", "result", run, "--wait", "--timeout", "120"])?;
    ensure!(code == 0, "run {run} did not complete: {err}");
    Ok(serde_json::from_str(&out)?)
}

#[test]
fn a_fork_after_a_prompt_change_reuses_the_classify_calls_and_diff_names_the_summary() -> Result<()>
{
    let dir = tempfile::tempdir()?;
    let server = Server::start(&dir.path().join("server"), None)?;
    let url = server.url();
    let rt = runtime();
    let client = rt.block_on(Client::connect(url.as_str()))?;

    // The run, on the v1 prompt.
    let mut v1 = triage_worker(&url, dir.path(), "v1")?;
    let input = serde_json::json!({
        "tickets_path": TICKETS,
        "limit": 120,
        "report_path": dir.path().join("report-{run_id}.md"),
    })
    .to_string();
    let (code, out, err) = cli(&url, &["run", "start", "triage", "--input", &input])?;
    ensure!(code == 0, "run start: {err}");
    let run = out.trim().to_string();
    let original = result_of(&url, &run)?;
    v1.kill9();
    let calls_before = model_calls(dir.path())?;
    let llm_total = original["footer"]["llm_calls"]
        .as_u64()
        .context("llm_calls")?;

    // SEQ, as the README finds it: the run's first llm.chat is the merge (the classify
    // calls are in the sub-agents).
    let history = rt.block_on(client.history(&run))?;
    let seq = history
        .iter()
        .find_map(|e| match &e.attributes {
            Some(A::ActivityScheduled(s)) if s.activity_type == "llm.chat" => Some(e.seq),
            _ => None,
        })
        .context("the run's merge call")?;
    let (code, shown, err) = cli(&url, &["history", "show", &run])?;
    ensure!(code == 0, "history show: {err}");
    let merge_line = shown
        .lines()
        .find(|l| l.contains("llm.chat"))
        .context("history show lists the merge call")?;
    ensure!(
        merge_line.split_whitespace().next() == Some(&*seq.to_string()),
        "history show starts the merge call's line with its seq {seq}: {merge_line}"
    );

    // The prompt changes: a v2 worker takes over, and the run is forked at the merge.
    let _v2 = triage_worker(&url, dir.path(), "v2")?;
    let (code, out, err) = cli(&url, &["run", "fork", &run, "--at", &seq.to_string()])?;
    ensure!(code == 0, "run fork: {err}");
    let fork = out.trim().to_string();
    let forked = result_of(&url, &fork)?;

    // Counted model calls: the fork made two (the merge, in flight at the boundary, and the
    // summary); every classify call before the boundary was reused, none made again, and no
    // sub-agent was started again.
    let calls_after = model_calls(dir.path())?;
    ensure!(
        calls_after.get(&fork) == Some(&2),
        "the fork called the model {:?} times, not 2",
        calls_after.get(&fork)
    );
    for (r, n) in &calls_after {
        if r != &fork {
            ensure!(
                calls_before.get(r) == Some(n),
                "run {r} called the model again after the fork"
            );
        }
    }
    let sub_agents = |parent: Option<String>| {
        let (runs, _) = rt.block_on(client.list(ListOptions {
            workflow_type: Some("triage.product".into()),
            parent_run_id: parent,
            page_size: 100,
            ..Default::default()
        }))?;
        let mut ids: Vec<String> = runs.into_iter().map(|r| r.run_id).collect();
        ids.sort();
        anyhow::Ok(ids)
    };
    let all = sub_agents(None)?;
    ensure!(all.len() > 1, "one sub-agent per product: {all:?}");
    ensure!(
        all == sub_agents(Some(run.clone()))?,
        "every sub-agent in the namespace is the original's: the fork started none"
    );
    ensure!(
        forked["footer"]["llm_calls"] == llm_total,
        "{}",
        forked["footer"]
    );
    ensure!(forked["durability"]["executed_by_this_worker"] == 2);
    ensure!(forked["durability"]["replayed_from_log"] == llm_total - 2);
    ensure!(
        forked["facts"] == original["facts"],
        "same tickets, same facts"
    );
    let fork_info = rt.block_on(client.describe(&fork))?;
    ensure!(fork_info.forked_from_run_id == run);
    ensure!(
        forked["footer"]["input_tokens"].as_u64() > original["footer"]["input_tokens"].as_u64(),
        "the v2 summary prompt is longer"
    );
    let report = forked["report_path"].as_str().context("report_path")?;
    ensure!(
        report.contains(&fork),
        "the fork writes its own report: {report}"
    );
    ensure!(std::fs::read_to_string(report)?.contains("# Support ticket triage report"));

    // The diff names the first divergent step: where v2 took the patched summary prompt.
    let (code, out, err) = cli(&url, &["history", "diff", &run, &fork, "--json"])?;
    ensure!(code == 1, "diff exit {code}: the runs differ: {err}");
    let diff: Value = serde_json::from_str(&out)?;
    let first = &diff["first_divergence"];
    ensure!(first["a"]["kind"] == "ScheduleActivity", "{first}");
    ensure!(first["a"]["name"] == "llm.chat", "{first}");
    ensure!(
        first["b"]["name"] == "triage-summary-prompt-v2",
        "B's first differing command is the v2 patch: {first}"
    );
    let summary_seq = history
        .iter()
        .filter_map(|e| match &e.attributes {
            Some(A::ActivityScheduled(s)) if s.activity_type == "llm.chat" => Some(e.seq),
            _ => None,
        })
        .nth(1)
        .context("the run's summary call")?;
    ensure!(
        first["a"]["seq"] == summary_seq,
        "A's side is the summary call at seq {summary_seq}: {first}"
    );
    let (code, text, _) = cli(&url, &["history", "diff", &run, &fork])?;
    eprintln!("steadfast history diff RUN FORK:\n{text}");
    ensure!(
        code == 1 && text.contains("first divergence at command"),
        "{text}"
    );
    Ok(())
}
