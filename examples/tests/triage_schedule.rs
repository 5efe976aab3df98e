//! The triage agent on a schedule, as the README documents it: the `steadfast schedule create
//! triage-daily ...` line is read from the README and run as written against a real server
//! and triage worker; triggering it starts a run that completes on the offline model, writes
//! its report and carries the schedule's name.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, Result, bail, ensure};
use serde_json::Value;
use steadfast_tests::{Proc, Server, cli, wait_for};

const README: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../README.md");
const TICKETS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/triage/data/tickets.jsonl");
const RUN_DONE: Duration = Duration::from_secs(120);
const DAY_MS: i64 = 24 * 3600 * 1000;

/// The README's command line that starts with `prefix`, split into words as a POSIX shell
/// would (single and double quotes; no variables, which the documented line does not use).
fn documented_command(prefix: &str) -> Result<Vec<String>> {
    let readme = std::fs::read_to_string(README)?;
    let line = readme
        .lines()
        .find(|l| l.starts_with(prefix))
        .with_context(|| format!("the README has no line starting with {prefix:?}"))?;
    let line = line.split("  #").next().unwrap_or(line);
    let (mut words, mut word, mut quote, mut in_word) = (Vec::new(), String::new(), None, false);
    for ch in line.chars() {
        match (quote, ch) {
            (None, '\'' | '"') => (quote, in_word) = (Some(ch), true),
            (Some(q), c) if c == q => quote = None,
            (Some(_), c) => word.push(c),
            (None, c) if c.is_whitespace() => {
                if in_word {
                    words.push(std::mem::take(&mut word));
                    in_word = false;
                }
            }
            (None, '\\') => bail!("line continuations are not supported: {line}"),
            (None, c) => {
                word.push(c);
                in_word = true;
            }
        }
    }
    ensure!(quote.is_none(), "unbalanced quotes in {line}");
    if in_word {
        words.push(word);
    }
    Ok(words)
}

/// A triage worker (the `triage` binary) working in `cwd`, so that the documented relative
/// paths resolve there.
fn triage_worker(addr: &str, cwd: &Path) -> Result<Proc> {
    let log = std::fs::File::create(cwd.join("worker.log"))?;
    Proc::spawn(
        "triage worker",
        Command::new(env!("CARGO_BIN_EXE_triage"))
            .args(["worker", "--addr", addr])
            .current_dir(cwd)
            .env("RUST_LOG", "warn")
            .stdout(std::process::Stdio::null())
            .stderr(log),
    )
}

#[test]
fn the_documented_daily_schedule_runs_the_triage_agent() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let server = Server::start(&dir.path().join("server"), None)?;
    let url = server.url();
    // The worker's working directory looks like the repository root to the documented input.
    let cwd = dir.path().join("repo");
    std::fs::create_dir_all(cwd.join("examples/triage/data"))?;
    std::fs::create_dir_all(cwd.join("triage-data"))?;
    std::fs::copy(TICKETS, cwd.join("examples/triage/data/tickets.jsonl"))?;
    let _worker = triage_worker(&url, &cwd)?;

    let words = documented_command("steadfast schedule create triage-daily")?;
    ensure!(words[0] == "steadfast", "{words:?}");
    let args: Vec<&str> = words[1..].iter().map(String::as_str).collect();
    ensure!(
        args.contains(&"--cron") && args.contains(&"0 7 * * *"),
        "the documented line runs it every morning: {args:?}"
    );
    let (code, out, err) = cli(&url, &args)?;
    ensure!(code == 0, "{words:?} exited {code}:\n{out}\n{err}");

    // The cron means 07:00 UTC every day: the next slot is one.
    let (code, out, err) = cli(&url, &["schedule", "show", "triage-daily", "--json"])?;
    ensure!(code == 0, "schedule show: {err}");
    let show: Value = serde_json::from_str(&out).with_context(|| out.clone())?;
    let next = show["next_slot_ms"]
        .as_i64()
        .with_context(|| format!("no next slot in {show}"))?;
    ensure!(
        next.rem_euclid(DAY_MS) == 7 * 3600 * 1000,
        "next slot {next} is not 07:00 UTC: {show}"
    );

    let (code, out, err) = cli(&url, &["schedule", "trigger", "triage-daily"])?;
    ensure!(code == 0, "schedule trigger: {err}");
    let run_id = out.trim().to_string();
    let (code, out, err) = cli(
        &url,
        &["run", "result", &run_id, "--wait", "--timeout", "120"],
    )?;
    ensure!(
        code == 0,
        "the triggered run did not complete: {out}\n{err}"
    );
    let result: Value = serde_json::from_str(&out).with_context(|| out.clone())?;
    ensure!(
        result["facts"]["total_tickets"] == 720,
        "{}",
        result["facts"]
    );
    ensure!(result["footer"]["model"] == "offline-model");
    let report = cwd.join(format!("triage-data/report-{run_id}.md"));
    ensure!(
        result["report_path"].as_str() == Some(&*format!("triage-data/report-{run_id}.md")),
        "{}",
        result["report_path"]
    );
    let md = std::fs::read_to_string(&report).with_context(|| report.display().to_string())?;
    ensure!(md.contains("# Support ticket triage report"));

    // The run carries the schedule's name, and the schedule's run list finds it.
    let (code, out, err) = cli(&url, &["run", "show", &run_id, "--json"])?;
    ensure!(code == 0, "run show: {err}");
    let show: Value = serde_json::from_str(&out)?;
    ensure!(
        show["schedule"]["name"] == "triage-daily",
        "run show: schedule {}",
        show["schedule"]
    );
    let listed = wait_for(RUN_DONE, "run list --schedule", || {
        let (code, out, _) = cli(
            &url,
            &["run", "list", "--schedule", "triage-daily", "--json"],
        )
        .ok()?;
        (code == 0 && out.contains(&run_id)).then_some(out)
    })?;
    ensure!(
        listed.lines().count() == 1,
        "one run of the schedule: {listed}"
    );
    Ok(())
}
