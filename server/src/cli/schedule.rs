//! `steadfast schedule ...`: workflows started on a cadence (ScheduleService; see the README,
//! "Schedules").

use clap::{Args, Subcommand};
use serde_json::{Value, json};
use steadfast_proto::v1 as pb;

use super::client::Conn;
use super::fmt::{rfc3339_s, time_json};
use super::render::table;
use super::run::json_payload;
use super::{Exit, Outcome, note, out_line, parse};

#[derive(Subcommand, Debug)]
pub enum ScheduleCmd {
    /// Create a schedule: `schedule create NAME (--cron EXPR | --every DUR) --type TYPE
    /// --input JSON`. Its first slot is the first one after now.
    Create(CreateArgs),
    /// List the schedules of the namespace with their next and last runs (a table, or JSON
    /// lines with --json).
    List {
        /// One JSON object per line (the shape of `schedule show --json`).
        #[arg(long)]
        json: bool,
    },
    /// Show one schedule.
    Show {
        /// Schedule name.
        name: String,
        /// Print it as one JSON object.
        #[arg(long)]
        json: bool,
    },
    /// Stop firing; slots that pass while paused are skipped.
    Pause {
        /// Schedule name.
        name: String,
    },
    /// Fire again, from the next slot after now.
    Resume {
        /// Schedule name.
        name: String,
    },
    /// Start one run now, whatever the overlap policy; prints its run id.
    Trigger {
        /// Schedule name.
        name: String,
    },
    /// Start one run per slot in [--from, --to] that has none yet; prints `SLOT RUN_ID` lines.
    Backfill(BackfillArgs),
    /// Delete the schedule (the runs it started are kept).
    Delete {
        /// Schedule name.
        name: String,
    },
}

#[derive(Args, Debug)]
pub struct CreateArgs {
    /// Schedule name: letters, digits, '-', '_', '.' (its runs' workflow ids are NAME@SLOT).
    name: String,
    /// Five-field cron expression, in UTC (`0 7 * * *`: every day at 07:00).
    #[arg(
        long,
        value_name = "EXPR",
        required_unless_present = "every",
        conflicts_with = "every"
    )]
    cron: Option<String>,
    /// A fixed interval, aligned to the Unix epoch: 1s at least; 90s, 15m, 1h, 1d.
    #[arg(long, value_name = "DUR", value_parser = parse::duration_ms)]
    every: Option<u64>,
    /// Workflow type each slot starts.
    #[arg(long = "type", value_name = "TYPE")]
    workflow_type: String,
    /// Input JSON of every run (inline, @file, or - for stdin).
    #[arg(long, value_name = "JSON", default_value = "null")]
    input: String,
    /// Task queue of its runs (server default: "default").
    #[arg(long, value_name = "Q", default_value = "")]
    task_queue: String,
    /// What a slot does while the previous run is still open: skip, buffer-one,
    /// cancel-previous or allow-all.
    #[arg(long, default_value = "skip", value_parser = overlap)]
    overlap: pb::ScheduleOverlap,
    /// Each slot fires up to this much later (the same delay on every node): 0, 30s, 5m...
    #[arg(long, value_name = "DUR", default_value = "0", value_parser = parse::duration_ms)]
    jitter: u64,
    /// Create it paused.
    #[arg(long)]
    paused: bool,
}

#[derive(Args, Debug)]
pub struct BackfillArgs {
    /// Schedule name.
    name: String,
    /// First time of the range: RFC 3339 UTC (2026-05-01T00:00:00Z) or Unix ms.
    #[arg(long, value_name = "TIME", value_parser = time_ms)]
    from: i64,
    /// Last time of the range (inclusive), same forms.
    #[arg(long, value_name = "TIME", value_parser = time_ms)]
    to: i64,
}

fn overlap(v: &str) -> Result<pb::ScheduleOverlap, String> {
    Ok(match v {
        "skip" => pb::ScheduleOverlap::Skip,
        "buffer-one" => pb::ScheduleOverlap::BufferOne,
        "cancel-previous" => pb::ScheduleOverlap::CancelPrevious,
        "allow-all" => pb::ScheduleOverlap::AllowAll,
        _ => {
            return Err(format!(
                "{v:?} is not an overlap policy: use skip, buffer-one, cancel-previous or allow-all"
            ));
        }
    })
}

fn overlap_name(v: i32) -> &'static str {
    match pb::ScheduleOverlap::try_from(v) {
        Ok(pb::ScheduleOverlap::Skip) => "skip",
        Ok(pb::ScheduleOverlap::BufferOne) => "buffer-one",
        Ok(pb::ScheduleOverlap::CancelPrevious) => "cancel-previous",
        Ok(pb::ScheduleOverlap::AllowAll) => "allow-all",
        Err(_) => "unknown",
    }
}

/// A time: Unix ms, or RFC 3339 in UTC (`YYYY-MM-DDTHH:MM:SS[.mmm]Z`).
pub fn time_ms(v: &str) -> Result<i64, String> {
    if let Ok(ms) = v.parse::<i64>() {
        return Ok(ms);
    }
    let bad =
        || format!("{v:?} is not a time: use RFC 3339 in UTC (2026-05-01T07:00:00Z) or Unix ms");
    let s = v.strip_suffix('Z').ok_or_else(bad)?;
    let (date, clock) = s.split_once('T').ok_or_else(bad)?;
    let num = |x: &str| x.parse::<i64>().map_err(|_| bad());
    let d: Vec<&str> = date.split('-').collect();
    let (clock, frac) = clock.split_once('.').unwrap_or((clock, ""));
    let c: Vec<&str> = clock.split(':').collect();
    if d.len() != 3 || c.len() != 3 || frac.len() > 3 {
        return Err(bad());
    }
    let (y, mo, day) = (num(d[0])?, num(d[1])?, num(d[2])?);
    let (h, mi, sec) = (num(c[0])?, num(c[1])?, num(c[2])?);
    if !(1..=12).contains(&mo) || !(1..=31).contains(&day) || h > 23 || mi > 59 || sec > 59 {
        return Err(bad());
    }
    let ms = if frac.is_empty() {
        0
    } else {
        num(frac)? * 10i64.pow(3 - frac.len() as u32)
    };
    // Days since the epoch of a proleptic Gregorian date (Howard Hinnant's days_from_civil).
    let y = if mo <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * (if mo > 2 { mo - 3 } else { mo + 9 }) + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Ok(((days * 24 + h) * 60 + mi) * 60_000 + sec * 1000 + ms)
}

fn cadence(s: &pb::ScheduleInfo) -> String {
    if s.cron.is_empty() {
        format!("every {}", super::fmt::duration(s.every_ms))
    } else {
        format!("cron {}", s.cron)
    }
}

/// A schedule as JSON (`show --json`, `list --json`).
pub fn schedule_json(s: &pb::ScheduleInfo) -> Value {
    json!({
        "namespace": s.namespace,
        "name": s.name,
        "cron": (!s.cron.is_empty()).then(|| s.cron.clone()),
        "every_ms": (s.every_ms != 0).then_some(s.every_ms),
        "workflow_type": s.workflow_type,
        "task_queue": s.task_queue,
        "overlap": overlap_name(s.overlap),
        "jitter_ms": s.jitter_ms,
        "paused": s.paused,
        "created": time_json(s.created_ms),
        "next_slot_ms": (s.next_slot_ms != 0).then_some(s.next_slot_ms),
        "next_fire": time_json(s.next_fire_ms),
        "last_run_id": (!s.last_run_id.is_empty()).then(|| s.last_run_id.clone()),
        "last_slot_ms": (s.last_slot_ms != 0).then_some(s.last_slot_ms),
        "fired": s.fired,
        "skipped": s.skipped,
        "buffered_slot_ms": (s.buffered_slot_ms != 0).then_some(s.buffered_slot_ms),
        "version": s.version,
    })
}

/// The `schedule list` table.
pub fn schedules_table(all: &[pb::ScheduleInfo]) -> String {
    let rows: Vec<Vec<String>> = all
        .iter()
        .map(|s| {
            vec![
                s.name.clone(),
                cadence(s),
                s.workflow_type.clone(),
                overlap_name(s.overlap).to_string(),
                if s.paused {
                    "paused".into()
                } else {
                    rfc3339_s(s.next_fire_ms)
                },
                rfc3339_s(s.last_slot_ms),
                if s.last_run_id.is_empty() {
                    "-".into()
                } else {
                    s.last_run_id.clone()
                },
                format!("{}/{}", s.fired, s.skipped),
            ]
        })
        .collect();
    table(
        &[
            "NAME",
            "CADENCE",
            "TYPE",
            "OVERLAP",
            "NEXT",
            "LAST SLOT",
            "LAST RUN",
            "FIRED/SKIPPED",
        ],
        &rows,
    )
}

fn show_text(s: &pb::ScheduleInfo) -> String {
    let mut out = format!(
        "schedule   {}\ncadence    {}\ntype       {}\nqueue      {}\noverlap    {}\njitter     {}\n",
        s.name,
        cadence(s),
        s.workflow_type,
        s.task_queue,
        overlap_name(s.overlap),
        super::fmt::duration(s.jitter_ms),
    );
    out += &format!(
        "state      {}\nnext       {}\nlast       {} {}\nfired      {}  skipped {}\n",
        if s.paused { "paused" } else { "active" },
        if s.paused {
            "-".into()
        } else {
            rfc3339_s(s.next_fire_ms)
        },
        rfc3339_s(s.last_slot_ms),
        if s.last_run_id.is_empty() {
            "-"
        } else {
            &s.last_run_id
        },
        s.fired,
        s.skipped,
    );
    if s.buffered_slot_ms != 0 {
        out += &format!("buffered   {}\n", rfc3339_s(s.buffered_slot_ms));
    }
    out
}

pub async fn dispatch(conn: &Conn, cmd: ScheduleCmd) -> Outcome {
    let ns = conn.namespace.clone();
    let named = |name: String| pb::ScheduleName {
        namespace: ns.clone(),
        name,
    };
    let mut api = conn.schedules();
    let st = |s| conn.status(s);
    match cmd {
        ScheduleCmd::Create(a) => {
            let input = json_payload("--input", &a.input)?;
            let req = pb::CreateScheduleRequest {
                namespace: ns.clone(),
                name: a.name,
                cron: a.cron.unwrap_or_default(),
                every_ms: a.every.unwrap_or(0),
                workflow_type: a.workflow_type,
                input: Some(input),
                task_queue: a.task_queue,
                overlap: a.overlap as i32,
                jitter_ms: a.jitter,
                paused: a.paused,
            };
            let s = api.create_schedule(req).await.map_err(st)?.into_inner();
            let s = s.schedule.unwrap_or_default();
            note(&format!(
                "schedule {} created; next run {}",
                s.name,
                rfc3339_s(s.next_fire_ms)
            ));
            out_line(&s.name)
        }
        ScheduleCmd::List { json } => {
            let r = api
                .list_schedules(pb::ListSchedulesRequest {
                    namespace: ns.clone(),
                })
                .await
                .map_err(st)?
                .into_inner();
            if json {
                for s in &r.schedules {
                    out_line(&schedule_json(s).to_string())?;
                }
                Ok(())
            } else {
                super::out(schedules_table(&r.schedules).as_bytes())
            }
        }
        ScheduleCmd::Show { name, json } => {
            let s = api
                .describe_schedule(named(name))
                .await
                .map_err(st)?
                .into_inner()
                .schedule
                .unwrap_or_default();
            if json {
                out_line(&schedule_json(&s).to_string())
            } else {
                super::out(show_text(&s).as_bytes())
            }
        }
        ScheduleCmd::Pause { name } => {
            api.pause_schedule(named(name.clone())).await.map_err(st)?;
            note(&format!("schedule {name} paused"));
            Ok(())
        }
        ScheduleCmd::Resume { name } => {
            let s = api
                .resume_schedule(named(name.clone()))
                .await
                .map_err(st)?
                .into_inner()
                .schedule
                .unwrap_or_default();
            note(&format!(
                "schedule {name} resumed; next run {}",
                rfc3339_s(s.next_fire_ms)
            ));
            Ok(())
        }
        ScheduleCmd::Trigger { name } => {
            let r = api
                .trigger_schedule(named(name))
                .await
                .map_err(st)?
                .into_inner();
            for id in &r.run_ids {
                out_line(id)?;
            }
            Ok(())
        }
        ScheduleCmd::Backfill(a) => {
            if a.from > a.to {
                return Err(Exit::usage(
                    "--from is after --to: give the range oldest first",
                ));
            }
            let r = api
                .backfill_schedule(pb::BackfillScheduleRequest {
                    namespace: ns.clone(),
                    name: a.name,
                    from_ms: a.from,
                    to_ms: a.to,
                })
                .await
                .map_err(st)?
                .into_inner();
            note(&format!("{} runs started", r.run_ids.len()));
            for (slot, id) in r.slots_ms.iter().zip(&r.run_ids) {
                out_line(&format!("{slot} {id}"))?;
            }
            Ok(())
        }
        ScheduleCmd::Delete { name } => {
            api.delete_schedule(named(name.clone())).await.map_err(st)?;
            note(&format!("schedule {name} deleted (its runs are kept)"));
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_parse_as_rfc3339_or_unix_ms() {
        assert_eq!(time_ms("0"), Ok(0));
        assert_eq!(time_ms("1700000000123"), Ok(1_700_000_000_123));
        assert_eq!(time_ms("1970-01-01T00:00:00Z"), Ok(0));
        assert_eq!(time_ms("2026-05-01T07:00:00Z"), Ok(1_777_618_800_000));
        assert_eq!(time_ms("2000-02-29T23:59:59.5Z"), Ok(951_868_799_500));
        for bad in [
            "2026-05-01",
            "2026-13-01T00:00:00Z",
            "2026-05-01T07:00:00",
            "x",
        ] {
            assert!(time_ms(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn overlap_names_round_trip() {
        for n in ["skip", "buffer-one", "cancel-previous", "allow-all"] {
            assert_eq!(overlap_name(overlap(n).unwrap() as i32), n);
        }
        assert!(overlap("sometimes").unwrap_err().contains("buffer-one"));
    }
}
