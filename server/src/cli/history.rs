//! `steadfast history ...`: show, export, replay and verify a run's history.

use std::path::PathBuf;

use clap::{ArgGroup, Args, Subcommand};
use serde_json::Value;
use steadfast_engine::{RunId, RunKey};
use steadfast_proto::v1 as pb;

use super::client::Conn;
use super::export::{export_line, parse_export};
use super::{Exit, Outcome, events, exit, out, out_line, replay};

/// Events per GetHistory page (the server's maximum).
const PAGE_SIZE: u32 = 1_000;

#[derive(Subcommand, Debug)]
pub enum HistoryCmd {
    /// Print every event of a run: `seq  time  Kind  summary`, or with --json one object per
    /// line: {seq, kind, time, time_ms, hash, attributes}.
    Show {
        /// Run id.
        run: String,
        /// One JSON object per event per line.
        #[arg(long)]
        json: bool,
    },
    /// Write a run's history to stdout as JSON lines (the `show --json` objects plus
    /// namespace, run_id and wire, the hex protobuf of the event), for `replay --file`.
    Export {
        /// Run id.
        run: String,
    },
    /// Rebuild a run's state from its history: verifies the blake3 chain from the run's
    /// genesis, folds the events with the engine's state machine up to --until, and prints
    /// the state (status, pending activities and timers, what it waits on, usage, progress,
    /// results so far). A break in the chain exits with code 8, naming the seq.
    Replay(ReplayArgs),
    /// Have the server re-check a run's history (or every run's, --all) where its store keeps
    /// the record (the embedded store: the log, not sled's copy): gapless from seq 1, the
    /// blake3 chain from the run's genesis, ending where the run's state ends. Names the first
    /// bad seq; exits with code 8 on any damage.
    Verify(super::verify::VerifyArgs),
}

#[derive(Args, Debug)]
#[command(group(ArgGroup::new("source").required(true).args(["run", "file"])))]
pub struct ReplayArgs {
    /// Run id (fetched from the server).
    pub(super) run: Option<String>,
    /// An exported history instead (`history export RUN > FILE`; no server needed).
    #[arg(long, value_name = "FILE")]
    pub(super) file: Option<PathBuf>,
    /// Stop after this seq: the state as it was then.
    #[arg(long, value_name = "SEQ")]
    pub(super) until: Option<u64>,
    /// Print the state as one JSON object.
    #[arg(long)]
    pub(super) json: bool,
}

pub async fn dispatch(conn: &Conn, cmd: HistoryCmd) -> Outcome {
    match cmd {
        HistoryCmd::Show { run, json } => {
            for e in fetch(conn, &run, None).await? {
                let line = if json {
                    Value::Object(events::event_json(&e)).to_string()
                } else {
                    events::line(&e)
                };
                out_line(&line)?;
            }
            Ok(())
        }
        HistoryCmd::Export { run } => {
            let events = fetch(conn, &run, None).await?;
            let text: String = events
                .iter()
                .map(|e| export_line(&conn.namespace, &run, e) + "\n")
                .collect();
            out(text.as_bytes())?;
            super::note(&format!("exported {} events of run {run}", events.len()));
            Ok(())
        }
        HistoryCmd::Verify(a) => super::verify::run(conn, a).await,
        HistoryCmd::Replay(a) => {
            let run = a.run.clone().unwrap_or_default();
            let run_id = RunId::parse(&run)
                .map_err(|e| Exit::usage(format!("{run:?} is not a run id: {e}")))?;
            let events = fetch(conn, &run, a.until).await?;
            report(&RunKey::new(conn.namespace.clone(), run_id), &events, &a)
        }
    }
}

/// `history replay --file`: offline, no server.
pub fn replay_file(a: &ReplayArgs) -> Outcome {
    let path = a
        .file
        .as_ref()
        .ok_or_else(|| Exit::usage("--file is required"))?;
    let text = std::fs::read_to_string(path)
        .map_err(|e| Exit::error(format!("cannot read {}: {e}", path.display())))?;
    let (key, events) = parse_export(&text, &path.display().to_string())
        .map_err(|e| Exit::with(exit::CORRUPT, format!("error: {e}")))?;
    report(&key, &events, a)
}

fn report(key: &RunKey, events: &[pb::HistoryEvent], a: &ReplayArgs) -> Outcome {
    let r = replay::replay(key, events, a.until).map_err(|e| match e {
        replay::Error::UntilBeforeStart(_) => Exit::usage(e),
        e => Exit::with(
            exit::CORRUPT,
            format!("error: history of run {key} does not verify: {e}"),
        ),
    })?;
    if let Some(u) = a.until
        && r.state.last_seq < u
    {
        super::note(&format!(
            "the history ends at seq {}, before --until {u}",
            r.state.last_seq
        ));
    }
    if a.json {
        out_line(&serde_json::to_string_pretty(&r.to_json()).unwrap_or_default())
    } else {
        out(r.to_text().as_bytes())
    }
}

/// Every event of a run (up to `until`), page by page.
pub(super) async fn fetch(
    conn: &Conn,
    run: &str,
    until: Option<u64>,
) -> Result<Vec<pb::HistoryEvent>, Exit> {
    let mut events: Vec<pb::HistoryEvent> = Vec::new();
    let mut from_seq = 1;
    loop {
        let page_size = match until {
            Some(u) => u
                .saturating_sub(from_seq)
                .saturating_add(1)
                .min(u64::from(PAGE_SIZE)) as u32,
            None => PAGE_SIZE,
        };
        let req = pb::GetHistoryRequest {
            namespace: conn.namespace.clone(),
            run_id: run.to_string(),
            from_seq,
            page_size,
        };
        let r = conn
            .client()
            .get_history(req)
            .await
            .map_err(|s| conn.status(s))?
            .into_inner();
        let got = r.events.len();
        events.extend(r.events);
        let done = r.next_seq == 0 || until.is_some_and(|u| r.next_seq > u);
        // A page that does not move forward would loop forever: stop and let replay report the gap.
        if done || got == 0 || r.next_seq <= from_seq {
            break;
        }
        from_seq = r.next_seq;
    }
    if let Some(u) = until {
        events.retain(|e| e.seq <= u);
    }
    Ok(events)
}
