//! `triage --file-issues` end to end: the agent's last step files the top issues in the local
//! tracker (its MCP server, mounted by the triage worker); each filing is a destructive write
//! that waits for a human. This test is the human: it reads the `steadfast run approve` lines
//! the command prints, approves two filings and denies one through the `steadfast` CLI, and
//! checks that the tracker file holds exactly the approved issues.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::Value;
use steadfast_tests::{cli, wait_for};

const TICKETS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/triage/data/tickets.jsonl");
/// Bound of every wait on the command.
const WAIT: Duration = Duration::from_secs(120);

struct Kill(Child);

impl Drop for Kill {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `(run, activity id, addr)` of a line `... steadfast run approve RUN --activity ID --addr A ...`.
fn approve_line(line: &str) -> Option<(String, String, String)> {
    let rest = line.split("steadfast run approve ").nth(1)?;
    let words: Vec<&str> = rest.split_whitespace().collect();
    match words.as_slice() {
        [run, "--activity", id, "--addr", addr, ..] => {
            Some((run.to_string(), id.to_string(), addr.to_string()))
        }
        _ => None,
    }
}

#[test]
fn file_issues_waits_for_each_approval_and_files_only_the_approved() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    // Build the CLI (and every binary) before the command starts, so the approvals are quick.
    steadfast_tests::bin_dir();
    let mut child = Command::new(env!("CARGO_BIN_EXE_triage"))
        .args([
            "--tickets",
            TICKETS,
            "--json",
            "--limit",
            "60",
            "--file-issues",
        ])
        .arg("--data-dir")
        .arg(&data)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run triage");
    let stderr = child.stderr.take().unwrap();
    let mut stdout = child.stdout.take().unwrap();
    let mut child = Kill(child);
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            eprintln!("[triage] {line}");
            let _ = tx.send(line);
        }
    });
    let out_reader = std::thread::spawn(move || {
        let mut s = String::new();
        std::io::Read::read_to_string(&mut stdout, &mut s).map(|_| s)
    });

    // The three filings ask; nothing is filed before a decision.
    let deadline = Instant::now() + WAIT;
    let mut asked = Vec::new();
    while asked.len() < 3 {
        let left = deadline.saturating_duration_since(Instant::now());
        let line = rx
            .recv_timeout(left)
            .expect("three approval requests within the bound");
        if let Some(a) = approve_line(&line) {
            asked.push(a);
        }
    }
    let issues_file = data.join("tracker").join("issues.json");
    assert!(!issues_file.exists(), "nothing is filed before approval");
    asked.sort_by_key(|(_, id, _)| id.parse::<u32>().unwrap());
    let (run, _, addr) = asked[0].clone();
    assert!(asked.iter().all(|(r, _, a)| *r == run && *a == addr));
    // The CLI shows what a filing would send.
    let (code, show, err) = cli(&addr, &["run", "show", &run, "--preview"]).unwrap();
    assert_eq!(code, 0, "{err}");
    assert!(
        show.contains("mcp.tracker.file_issue") && show.contains("Recurring support issue"),
        "{show}"
    );
    for (_, id, _) in &asked[..2] {
        let (code, _, err) = cli(
            &addr,
            &[
                "run",
                "approve",
                &run,
                "--activity",
                id,
                "--comment",
                "file it",
            ],
        )
        .unwrap();
        assert_eq!(code, 0, "approve: {err}");
    }
    let denied = &asked[2].1;
    let (code, _, err) = cli(
        &addr,
        &[
            "run",
            "deny",
            &run,
            "--activity",
            denied,
            "--reason",
            "already tracked",
        ],
    )
    .unwrap();
    assert_eq!(code, 0, "deny: {err}");

    let status = wait_for(WAIT, "triage to finish after the decisions", || {
        child.0.try_wait().ok().flatten()
    })
    .unwrap();
    assert!(status.success(), "triage failed");
    let out: Value = serde_json::from_str(&out_reader.join().unwrap().unwrap()).unwrap();
    let filed = out["filed"].as_array().expect("filed issues in the result");
    let themes: Vec<&str> = out["facts"]["themes"]
        .as_array()
        .unwrap()
        .iter()
        .take(3)
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    assert_eq!(filed.len(), 3, "{filed:?}");
    // Activity ids follow the themes' order: the first two approved, the third denied.
    assert_eq!(filed[0]["id"], "TRK-1");
    assert_eq!(filed[1]["id"], "TRK-2");
    assert!(filed[2]["id"].is_null());
    let why = filed[2]["not_filed"].as_str().unwrap();
    assert!(
        why.contains("[STF-APPROVAL-DENIED]") && why.contains("already tracked"),
        "{why}"
    );
    for (f, theme) in filed.iter().zip(&themes) {
        assert_eq!(f["theme"], *theme);
    }

    let issues: Vec<Value> = serde_json::from_slice(&std::fs::read(&issues_file).unwrap()).unwrap();
    let titles: Vec<&str> = issues
        .iter()
        .map(|i| i["title"].as_str().unwrap())
        .collect();
    assert_eq!(
        titles,
        vec![
            format!("Recurring support issue: {}", themes[0]),
            format!("Recurring support issue: {}", themes[1]),
        ],
        "the tracker holds the approved issues only"
    );
    assert!(
        issues
            .iter()
            .all(|i| i["body"].as_str().unwrap().contains(&run))
    );
}
