//! `history verify RUN | --all`: the server re-checks each history where its store keeps the
//! record (AdminService.VerifyHistory); this side lists the runs, shows progress and turns the
//! answers into lines and an exit code ([`exit::CORRUPT`] on any damage).

use std::io::IsTerminal;

use clap::{ArgGroup, Args};
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::json;
use steadfast_proto::v1 as pb;

use super::client::Conn;
use super::{Exit, Outcome, exit, note, out_line};

/// Runs per ListRuns page when verifying every run.
const LIST_PAGE: u32 = 1_000;

#[derive(Args, Debug)]
#[command(group(ArgGroup::new("which").required(true).args(["run", "all"])))]
pub struct VerifyArgs {
    /// Run id.
    pub(super) run: Option<String>,
    /// Every run of the namespace (a progress bar on a terminal; only damaged runs are
    /// printed, unless --json).
    #[arg(long)]
    pub(super) all: bool,
    /// One JSON object per run: {run_id, ok, events, last_hash, first_bad_seq,
    /// damaged_run_id, detail}.
    #[arg(long)]
    pub(super) json: bool,
}

/// One run's answer as a line: `RUN  ok  N events  blake3:HASH`, or `RUN  DAMAGED at seq S ...`.
pub fn line(run: &str, r: &pb::VerifyHistoryResponse) -> String {
    if r.ok {
        return format!(
            "{run}  ok  {} events  blake3:{}",
            r.events,
            hex::encode(&r.last_hash)
        );
    }
    let at = match (r.first_bad_seq, r.damaged_run_id.as_str()) {
        (0, _) => "at an unknown seq".to_string(),
        (s, d) if d.is_empty() || d == run => format!("at seq {s}"),
        (s, d) => format!("(the log is damaged at run {d} seq {s})"),
    };
    format!("{run}  DAMAGED {at}: {}", r.detail)
}

/// One run's answer as JSON.
pub fn json_of(run: &str, r: &pb::VerifyHistoryResponse) -> serde_json::Value {
    json!({
        "run_id": run,
        "ok": r.ok,
        "events": r.events,
        "last_hash": hex::encode(&r.last_hash),
        "first_bad_seq": r.first_bad_seq,
        "damaged_run_id": r.damaged_run_id,
        "detail": r.detail,
    })
}

async fn verify_one(conn: &Conn, run: &str) -> Result<pb::VerifyHistoryResponse, Exit> {
    Ok(conn
        .admin()
        .verify_history(pb::VerifyHistoryRequest {
            namespace: conn.namespace.clone(),
            run_id: run.to_string(),
        })
        .await
        .map_err(|s| conn.status(s))?
        .into_inner())
}

/// Every run id of the namespace, newest first.
async fn all_runs(conn: &Conn) -> Result<Vec<String>, Exit> {
    let mut runs = Vec::new();
    let mut page_token = String::new();
    loop {
        let r = conn
            .client()
            .list_runs(pb::ListRunsRequest {
                namespace: conn.namespace.clone(),
                page_size: LIST_PAGE,
                page_token: page_token.clone(),
                ..Default::default()
            })
            .await
            .map_err(|s| conn.status(s))?
            .into_inner();
        let empty = r.runs.is_empty();
        runs.extend(r.runs.into_iter().map(|i| i.run_id));
        // An empty page or a token that does not move would loop forever.
        if r.next_page_token.is_empty() || empty || r.next_page_token == page_token {
            return Ok(runs);
        }
        page_token = r.next_page_token;
    }
}

pub async fn run(conn: &Conn, a: VerifyArgs) -> Outcome {
    if let Some(run) = &a.run {
        let r = verify_one(conn, run).await?;
        if a.json {
            out_line(&json_of(run, &r).to_string())?;
        } else {
            out_line(&line(run, &r))?;
        }
        return if r.ok {
            Ok(())
        } else {
            Err(Exit::with(
                exit::CORRUPT,
                format!("error: the history of run {run} does not verify"),
            ))
        };
    }
    let runs = all_runs(conn).await?;
    let bar = if std::io::stderr().is_terminal() {
        let bar = ProgressBar::new(runs.len() as u64);
        bar.set_style(
            ProgressStyle::with_template("{bar:40} {pos}/{len} runs verified, {msg}")
                .unwrap_or_else(|_| ProgressStyle::default_bar()),
        );
        Some(bar)
    } else {
        None
    };
    let mut damaged = 0usize;
    for run in &runs {
        let r = verify_one(conn, run).await?;
        if !r.ok {
            damaged += 1;
        }
        if a.json {
            out_line(&json_of(run, &r).to_string())?;
        } else if !r.ok {
            match &bar {
                Some(b) => b.suspend(|| out_line(&line(run, &r)))?,
                None => out_line(&line(run, &r))?,
            }
        }
        if let Some(b) = &bar {
            b.set_message(format!("{damaged} damaged"));
            b.inc(1);
        }
    }
    if let Some(b) = bar {
        b.finish_and_clear();
    }
    let summary = format!(
        "verified {} runs of namespace {:?}: {} intact, {damaged} damaged",
        runs.len(),
        conn.namespace,
        runs.len() - damaged
    );
    if damaged > 0 {
        Err(Exit::with(exit::CORRUPT, format!("error: {summary}")))
    } else {
        note(&summary);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const RUN: &str = "01900000-0000-7000-8000-000000000001";

    #[test]
    fn lines_name_the_seq_and_the_damaged_run() {
        let ok = pb::VerifyHistoryResponse {
            ok: true,
            events: 12,
            last_hash: vec![0xab; 32],
            ..Default::default()
        };
        assert!(line(RUN, &ok).starts_with(&format!("{RUN}  ok  12 events  blake3:abab")));
        let bad = pb::VerifyHistoryResponse {
            ok: false,
            first_bad_seq: 7,
            damaged_run_id: RUN.into(),
            detail: "[STF-C2] x".into(),
            ..Default::default()
        };
        assert_eq!(
            line(RUN, &bad),
            format!("{RUN}  DAMAGED at seq 7: [STF-C2] x")
        );
        let elsewhere = pb::VerifyHistoryResponse {
            damaged_run_id: "other".into(),
            ..bad.clone()
        };
        assert!(line(RUN, &elsewhere).contains("damaged at run other seq 7"));
        let unknown = pb::VerifyHistoryResponse {
            first_bad_seq: 0,
            ..bad
        };
        assert!(line(RUN, &unknown).contains("at an unknown seq"));
        assert_eq!(json_of(RUN, &ok)["events"], 12);
    }
}
