//! `steadfast history ...`: show, export, replay and verify a run's history.

use std::path::PathBuf;

use clap::{ArgGroup, Args, Subcommand};
use serde_json::Value;
use steadfast_engine::{RunId, RunKey};
use steadfast_proto::v1 as pb;

use super::client::Conn;
use super::export::{bundle_header, export_line, parse_bundle, parse_export};
use super::{Exit, Outcome, events, exit, fmt, out, out_line, replay};

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
    /// namespace, run_id and wire, the hex protobuf of the event), for `replay --file`; with
    /// -o, a self-contained bundle (a header line first, payloads inline) for `history import`
    /// and `replay --file` (format: docs/bundle.md).
    Export {
        /// Run id.
        run: String,
        /// Write a bundle to this file instead.
        #[arg(short = 'o', long = "output", value_name = "FILE")]
        output: Option<PathBuf>,
    },
    /// Create a run on this server (in --namespace) from a bundle written by `export -o`.
    /// The bundle is verified first (header, hash chain from its source run, the state
    /// machine); one that does not verify exits with code 8 and stores nothing. A run id that
    /// exists in the namespace is refused. Prints the run id.
    Import {
        /// The bundle.
        file: PathBuf,
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
    /// Compare two runs by what their code did, not by event seq: the commands of each
    /// (schedule activity, start timer, complete run, ...) in issue order, with the workflow
    /// task that issued them. Names the first command that differs (kind, activity type,
    /// input size and hash), then per activity at the same position the input, result,
    /// attempts, tokens, cost and durations of both, and the totals. Exits 0 when both issued
    /// the same commands with the same inputs, 1 when they differ (or on an error, with
    /// `error:` on stderr and nothing on stdout).
    Diff {
        /// The first run id (A).
        run_a: String,
        /// The second run id (B).
        run_b: String,
        /// One JSON object: {identical, a, b, first_divergence, activities}.
        #[arg(long)]
        json: bool,
        /// Print the payloads themselves, not only their sizes and hashes.
        #[arg(long)]
        show_payloads: bool,
    },
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
        HistoryCmd::Export {
            run,
            output: Some(path),
        } => {
            let events = fetch(conn, &run, None).await?;
            let mut text = bundle_header(&conn.namespace, &run, &events) + "\n";
            for e in &events {
                text += &(export_line(&conn.namespace, &run, e) + "\n");
            }
            std::fs::write(&path, text)
                .map_err(|e| Exit::error(format!("cannot write {}: {e}", path.display())))?;
            super::note(&format!(
                "wrote a bundle of {} events of run {run} to {}",
                events.len(),
                path.display()
            ));
            Ok(())
        }
        HistoryCmd::Import { file } => import(conn, &file).await,
        HistoryCmd::Export { run, output: None } => {
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
        HistoryCmd::Diff {
            run_a,
            run_b,
            json,
            show_payloads,
        } => {
            for run in [&run_a, &run_b] {
                RunId::parse(run).map_err(|e| {
                    Exit::usage(format!("{:?} is not a run id: {e}", fmt::cut(run, 40)))
                })?;
            }
            let a = fetch(conn, &run_a, None).await?;
            let b = fetch(conn, &run_b, None).await?;
            let d = super::diff::diff(&a, &b);
            if json {
                out_line(&d.to_json(&run_a, &run_b, show_payloads).to_string())?;
            } else {
                out(d.to_text(&run_a, &run_b, show_payloads).as_bytes())?;
            }
            if d.identical() {
                Ok(())
            } else {
                Err(Exit::quiet(exit::ERROR))
            }
        }
        HistoryCmd::Replay(a) => {
            let run = a.run.clone().unwrap_or_default();
            let run_id = RunId::parse(&run)
                .map_err(|e| Exit::usage(format!("{run:?} is not a run id: {e}")))?;
            let events = fetch(conn, &run, a.until).await?;
            report(&RunKey::new(conn.namespace.clone(), run_id), &events, &a)
        }
    }
}

/// Largest bundle `history import` sends: one request, within the server's request limit.
const IMPORT_BYTES_MAX: usize = crate::server::REQUEST_BYTES_MAX;

async fn import(conn: &Conn, path: &std::path::Path) -> Outcome {
    use prost::Message;
    let text = std::fs::read_to_string(path)
        .map_err(|e| Exit::error(format!("cannot read {}: {e}", path.display())))?;
    let source = path.display().to_string();
    let corrupt =
        |e: String| Exit::with(exit::CORRUPT, format!("error: {e}\nnothing was imported"));
    let (key, events) = parse_bundle(&text, &source).map_err(corrupt)?;
    replay::records_of(&key, &events).map_err(|e| {
        corrupt(format!(
            "the bundle {source} of run {key} does not verify: {e}"
        ))
    })?;
    let req = pb::ImportHistoryRequest {
        namespace: conn.namespace.clone(),
        run_id: key.run_id.to_string(),
        source_namespace: key.namespace.clone(),
        events,
    };
    let size = req.encoded_len();
    if size > IMPORT_BYTES_MAX {
        return Err(Exit::error(format!(
            "the bundle's history is {size} bytes; one import takes at most {IMPORT_BYTES_MAX} (the server's request limit)"
        )));
    }
    let r = conn
        .admin()
        .import_history(req)
        .await
        .map_err(|s| conn.status(s))?
        .into_inner();
    super::note(&format!(
        "imported {} events of run {key} into namespace {:?}{}",
        r.events,
        conn.namespace,
        if r.same_hashes {
            ", every hash as in the bundle"
        } else {
            " (a new chain: the namespace is part of it)"
        }
    ));
    out_line(&key.run_id.to_string())
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
