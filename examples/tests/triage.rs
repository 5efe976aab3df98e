//! The triage agent end to end, as the README runs it: the `triage` binary starts its server
//! and worker, runs the agent on a slice of the tickets (one product sub-agent per product,
//! as child runs), and writes the report.

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};

use serde_json::Value;
use steadfast_proto::v1 as pb;
use steadfast_proto::v1::history_event::Attributes as A;

const TICKETS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/triage/data/tickets.jsonl");

struct Kill(Child);

impl Drop for Kill {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The classify calls the run makes over the first `limit` tickets: each product's sub-agent
/// classifies its own tickets in batches of `batch`.
fn classify_calls(limit: usize, batch: usize) -> u64 {
    let text = std::fs::read_to_string(TICKETS).unwrap();
    let mut per_product: HashMap<String, usize> = HashMap::new();
    for line in text.lines().filter(|l| !l.trim().is_empty()).take(limit) {
        let t: Value = serde_json::from_str(line).unwrap();
        *per_product
            .entry(t["product"].as_str().unwrap_or("").to_string())
            .or_default() += 1;
    }
    per_product.values().map(|n| n.div_ceil(batch) as u64).sum()
}

fn triage(args: &[&str]) -> (Value, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_triage"))
        .args(["--tickets", TICKETS, "--json"])
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run triage");
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "triage failed:\n{stderr}");
    (
        serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|e| panic!("triage --json output: {e}\n{stderr}")),
        stderr,
    )
}

#[test]
fn report_structure_and_counts_add_up() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let report = dir.path().join("report.md");
    let (out, stderr) = triage(&[
        "--limit",
        "60",
        "--batch-size",
        "20",
        "--data-dir",
        data.to_str().unwrap(),
        "--report",
        report.to_str().unwrap(),
    ]);
    let facts = &out["facts"];
    let total = facts["total_tickets"].as_u64().unwrap();
    assert_eq!(total, 60);
    let themes = facts["themes"].as_array().unwrap();
    let in_themes: u64 = themes.iter().map(|t| t["count"].as_u64().unwrap()).sum();
    let noise = facts["noise_tickets"].as_u64().unwrap();
    let unclassified = facts["unclassified_tickets"].as_u64().unwrap();
    assert_eq!(
        in_themes + noise + unclassified,
        total,
        "every ticket is counted exactly once"
    );
    assert_eq!(unclassified, 0, "the offline model classifies every ticket");
    let shares: f64 = themes.iter().map(|t| t["share"].as_f64().unwrap()).sum();
    assert!((shares - in_themes as f64 / total as f64).abs() < 1e-9);
    for w in themes.windows(2) {
        assert!(
            w[0]["count"].as_u64() >= w[1]["count"].as_u64(),
            "themes sorted by count"
        );
    }
    // The product sub-agents' classify batches + merge + summary.
    let llm_calls = classify_calls(60, 20) + 2;
    assert!(llm_calls > 5, "60 tickets of several products: {llm_calls}");
    assert_eq!(out["footer"]["llm_calls"], llm_calls);
    assert!(out["footer"]["input_tokens"].as_u64().unwrap() > 0);
    assert_eq!(out["footer"]["model"], "offline-model");
    assert_eq!(out["durability"]["llm_calls_recorded"], llm_calls);
    assert_eq!(out["durability"]["replayed_from_log"], 0);

    let md = std::fs::read_to_string(&report).unwrap();
    for needle in [
        "# Support ticket triage report",
        "## Executive summary",
        "## Suggested actions",
        "## Top recurring issues",
        "| # | Theme | Tickets | Share |",
        "*Accounting:*",
        &format!("Durability: {llm_calls} LLM results recorded"),
    ] {
        assert!(md.contains(needle), "report lacks {needle:?}:\n{md}");
    }
    // The summary's tokens were shown live, and they are the recorded summary.
    let live = stderr
        .split_once("--- the summary, live from the model ---\n")
        .and_then(|(_, rest)| rest.split_once("\n--- end of the live summary ---"))
        .map(|(text, _)| text)
        .unwrap_or_else(|| panic!("no live summary on stderr:\n{stderr}"));
    assert!(live.trim().len() > 100, "a summary, not a word: {live:?}");
    assert!(
        md.contains(live.trim()),
        "the streamed summary is not the recorded one:\n{live}\n---\n{md}"
    );
    let top = &themes[0];
    let row = format!(
        "| 1 | {} | {} |",
        top["name"].as_str().unwrap(),
        top["count"]
    );
    assert!(md.contains(&row), "report lacks the top row {row:?}");
    assert!(md.contains(&format!("= {total} tickets")));
    let examples = top["examples"].as_array().unwrap();
    assert!(!examples.is_empty() && examples.len() <= 3);
    assert!(md.contains(examples[0]["id"].as_str().unwrap()));
}

/// Starts `triage server` on a free port and returns it with its address.
fn server(data: &Path) -> (Kill, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_triage"))
        .args([
            "server",
            "--listen",
            "127.0.0.1:0",
            "--data-dir",
            data.to_str().unwrap(),
        ])
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let addr = loop {
        let line = lines
            .next()
            .expect("server exited before listening")
            .unwrap();
        if let Some(a) = line.strip_prefix("steadfast server listening on ") {
            break a.trim().to_string();
        }
    };
    std::thread::spawn(move || for _ in lines {});
    (Kill(child), format!("http://{addr}"))
}

#[test]
fn worker_killed_midway_no_recorded_llm_call_runs_again() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    let (_server, addr) = server(&data);
    let (out, stderr) = triage(&[
        "--limit",
        "200",
        "--batch-size",
        "10",
        "--crash-worker-after",
        "5",
        "--addr",
        &addr,
        "--data-dir",
        data.to_str().unwrap(),
    ]);
    assert!(stderr.contains("killed the worker"), "{stderr}");
    let run_id = out["footer"]["run_id"].as_str().unwrap().to_string();
    let d = &out["durability"];
    let recorded = d["llm_calls_recorded"].as_u64().unwrap();
    assert_eq!(
        recorded,
        classify_calls(200, 10) + 2,
        "the sub-agents' classify batches + merge + summary"
    );
    assert!(d["replayed_from_log"].as_u64().unwrap() >= 5, "{d}");
    assert_eq!(
        d["replayed_from_log"].as_u64().unwrap() + d["executed_by_this_worker"].as_u64().unwrap(),
        recorded
    );

    let rt = tokio::runtime::Runtime::new().unwrap();
    let client = rt
        .block_on(steadfast_sdk::Client::connect(addr.as_str()))
        .unwrap();
    let runs = rt.block_on(runs_of(&client, &run_id));
    usage_rolls_up(&rt, &client, &runs, &out);

    // The histories (the run's and its sub-agents') say which attempt of each LLM call was
    // recorded; the execution log says which attempts actually called the model. No attempt
    // after the recorded one may exist, and the recorded attempt ran exactly once: a recorded
    // result was never called again.
    let mut recorded_attempt: HashMap<(String, u32), u32> = HashMap::new();
    for run in &runs {
        let history = rt.block_on(client.history(&run.run_id)).unwrap();
        let mut llm = std::collections::HashSet::new();
        for e in &history {
            match &e.attributes {
                Some(A::ActivityScheduled(s)) if s.activity_type == "llm.chat" => {
                    llm.insert(s.command_seq);
                }
                Some(A::ActivityCompleted(c)) if llm.contains(&c.command_seq) => {
                    assert!(
                        recorded_attempt
                            .insert((run.run_id.clone(), c.command_seq), c.attempt)
                            .is_none(),
                        "two completions recorded for activity {} of {}",
                        c.command_seq,
                        run.run_id
                    );
                }
                _ => {}
            }
        }
    }
    assert_eq!(recorded_attempt.len() as u64, recorded);
    let log = std::fs::read_to_string(data.join("llm-executions.log")).unwrap();
    let mut executions: HashMap<(String, u32, u32), u32> = HashMap::new();
    for l in log.lines() {
        let f: Vec<&str> = l.split(' ').collect();
        *executions
            .entry((
                f[0].to_string(),
                f[1].parse().unwrap(),
                f[2].parse().unwrap(),
            ))
            .or_default() += 1;
    }
    for ((run, id), attempt) in &recorded_attempt {
        assert_eq!(
            executions.get(&(run.clone(), *id, *attempt)),
            Some(&1),
            "recorded attempt {attempt} of LLM call {id} of {run} ran exactly once"
        );
        assert!(
            !executions
                .keys()
                .any(|(r, i, a)| r == run && i == id && a > attempt),
            "LLM call {id} of {run} ran again after its result was recorded"
        );
    }
}

/// The run and its product sub-agents (child runs), the run first.
async fn runs_of(client: &steadfast_sdk::Client, run_id: &str) -> Vec<pb::RunInfo> {
    let mut runs = vec![client.describe(run_id).await.unwrap()];
    let children = client
        .list(steadfast_sdk::client::ListOptions {
            parent_run_id: Some(run_id.into()),
            ..Default::default()
        })
        .await
        .unwrap();
    runs.extend(children.0);
    runs
}

/// The run's usage is its own LLM calls' plus its sub-agents' (rolled up when each closed),
/// and the report's footer says the same.
fn usage_rolls_up(
    rt: &tokio::runtime::Runtime,
    client: &steadfast_sdk::Client,
    runs: &[pb::RunInfo],
    out: &Value,
) {
    let (parent, children) = runs.split_first().unwrap();
    let products: std::collections::HashSet<String> = out["facts"]["themes"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|t| t["products"].as_array().unwrap().iter())
        .map(|p| p.as_str().unwrap().to_string())
        .collect();
    assert!(
        children.len() >= products.len() && children.len() > 1,
        "one sub-agent per product: {} children, products {products:?}",
        children.len()
    );
    let mut own = pb::Usage::default();
    for e in rt.block_on(client.history(&parent.run_id)).unwrap() {
        if let Some(A::ActivityCompleted(c)) = e.attributes
            && let Some(u) = c.usage
        {
            own.input_tokens += u.input_tokens;
            own.output_tokens += u.output_tokens;
            own.cost_micros += u.cost_micros;
            own.llm_calls += 1;
        }
    }
    assert_eq!(
        own.llm_calls, 2,
        "the run itself makes the merge and summary calls"
    );
    let mut sum = own.clone();
    for c in children {
        assert_eq!(c.parent_run_id, parent.run_id);
        assert_eq!(c.workflow_type, "triage.product");
        assert_eq!(c.status, pb::RunStatus::Completed as i32);
        let u = c.usage.clone().unwrap_or_default();
        assert!(u.llm_calls > 0, "a sub-agent made its classify calls");
        sum.input_tokens += u.input_tokens;
        sum.output_tokens += u.output_tokens;
        sum.cost_micros += u.cost_micros;
        sum.llm_calls += u.llm_calls;
    }
    let total = parent.usage.clone().unwrap_or_default();
    assert_eq!(
        (
            total.input_tokens,
            total.output_tokens,
            total.cost_micros,
            total.llm_calls
        ),
        (
            sum.input_tokens,
            sum.output_tokens,
            sum.cost_micros,
            sum.llm_calls
        ),
        "the run's usage is its own plus its children's"
    );
    let footer = &out["footer"];
    assert_eq!(footer["llm_calls"], total.llm_calls);
    assert_eq!(
        footer["input_tokens"].as_u64().unwrap() + footer["output_tokens"].as_u64().unwrap(),
        total.input_tokens + total.output_tokens
    );
}
