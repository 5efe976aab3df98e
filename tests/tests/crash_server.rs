//! A run survives SIGKILLs of the server (promises C1, C2, C3).
//!
//! A `seq` run of 20 sequential activities runs while the server is killed with SIGKILL at 5
//! moments drawn from `TEST_SEED` (each: once activity `c` has started, plus a random delay
//! of up to 1.5 activity lengths, so kills land inside activities, around their completions
//! and inside workflow tasks), and restarted on the same port and data dir each time. The
//! worker lives on and reconnects.
//!
//! Asserted, after the run completed:
//! - the result is `[0, 1, ..., 19]`;
//! - C3, at most one completion: the history has exactly one ActivityCompleted for each
//!   activity id 1..=20 (and none for any other id), each with its own index as result;
//! - C1, acknowledged means durable: the history the server served just before each kill is
//!   a prefix of the final history (same seqs, same hashes);
//! - C2: `steadfast history replay` verifies the final history's chain;
//! - C3, a recorded result is never re-executed, in two forms:
//!   (P1, per kill, no clocks) with `S_k` = the activities whose ActivityCompleted the
//!   server served just before kill `k`, no activity of `S_k` has an execution line in the
//!   side file after the marker the test appended once the killed server was reaped;
//!   (P2, every moment) each execution's attempt was handed out (its deadline minus its
//!   start-to-close, the server's clock) no later than the time of its activity's
//!   ActivityCompleted (the server's clock too), i.e. no attempt of an activity was
//!   dispatched after its completion was recorded.
//!   Re-executions of an activity whose result was not recorded yet (an attempt lost with the
//!   server) are allowed and only counted.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use anyhow::{Context, Result, ensure};
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use serde_json::json;
use steadfast_proto::v1 as pb;
use steadfast_proto::v1::history_event::Attributes;
use steadfast_sdk::client::{Client, StartOptions};
use steadfast_tests::{
    Server, cli, history, runtime, side, start_test_worker, test_seed, wait_for,
};

const STEPS: u32 = 20;
const KILLS: usize = 5;
const STEP_MS: u64 = 150;
/// Start-to-close of each attempt: long, so that no attempt times out in this test, and
/// exact, so that an attempt's dispatch time is its deadline minus this.
const START_TO_CLOSE_MS: i64 = 20_000;

struct Kill {
    /// The marker written to the side file right after the kill.
    marker: String,
    /// The history the server served just before the kill.
    served: Vec<pb::HistoryEvent>,
}

/// Completed activity ids in `events`, with (seq, attempt, time_ms, result).
fn completions(events: &[pb::HistoryEvent]) -> BTreeMap<u32, Vec<(u64, u32, i64, String)>> {
    let mut out: BTreeMap<u32, Vec<_>> = BTreeMap::new();
    for e in events {
        if let Some(Attributes::ActivityCompleted(a)) = &e.attributes {
            let result = a
                .result
                .as_ref()
                .map(|p| String::from_utf8_lossy(&p.data).into_owned())
                .unwrap_or_default();
            out.entry(a.command_seq)
                .or_default()
                .push((e.seq, a.attempt, e.time_ms, result));
        }
    }
    out
}

#[test]
fn run_completes_across_server_sigkills() -> Result<()> {
    let seed = test_seed();
    let mut rng = StdRng::seed_from_u64(seed);
    // Kill once activity `c` has started, c in 1..=18: the run is still going at every kill.
    let mut points: Vec<u32> = (1..=18).collect::<Vec<_>>();
    points.shuffle(&mut rng);
    let mut points: Vec<u32> = points.into_iter().take(KILLS).collect();
    points.sort_unstable();
    let delays: Vec<u64> = (0..KILLS)
        .map(|_| rng.gen_range(0..STEP_MS * 3 / 2))
        .collect();
    eprintln!("kill after activity starts {points:?}, plus {delays:?} ms");

    let dir = tempfile::tempdir()?;
    let side_file = dir.path().join("side");
    let mut server = Server::start(&dir.path().join("data"), None)?;
    let url = server.url();
    let _worker = start_test_worker(&url, &side_file, &[])?;
    let rt = runtime();
    let client = rt.block_on(Client::connect(url.clone()))?;
    let input = json!({ "n": STEPS, "sleep_ms": STEP_MS, "start_to_close_ms": START_TO_CLOSE_MS });
    let run = rt
        .block_on(client.start_workflow("seq", &input, StartOptions::default()))?
        .run_id;
    eprintln!("run {run}");

    let t0 = std::time::Instant::now();
    let mut kills = Vec::new();
    for (k, (&point, &delay)) in points.iter().zip(&delays).enumerate() {
        wait_for(
            Duration::from_secs(30),
            &format!("activity {point} to start (before kill {})", k + 1),
            || {
                let ex = side::executions(&side_file, &run).ok()?;
                ex.iter().any(|e| e.activity_id >= point).then_some(())
            },
        )?;
        std::thread::sleep(Duration::from_millis(delay));
        let served = history(&rt, &url, &run)?;
        server.proc.kill9();
        let marker = format!("server killed ({} of {KILLS})", k + 1);
        side::mark(&side_file, &marker)?;
        eprintln!(
            "{:?} kill {}: {} events served before it, {} activities completed",
            t0.elapsed(),
            k + 1,
            served.len(),
            completions(&served).len()
        );
        kills.push(Kill { marker, served });
        server.restart()?;
        eprintln!("{:?} restarted", t0.elapsed());
    }

    let result: Vec<u32> = rt
        .block_on(client.await_result(&run, Duration::from_secs(120)))
        .context("the run's result")?;
    assert_eq!(result, (0..STEPS).collect::<Vec<_>>(), "the run's result");
    eprintln!("{:?} run completed", t0.elapsed());

    let events = history(&rt, &url, &run)?;
    let done = completions(&events);

    // C3: exactly one completion per activity, with the right result.
    let ids: BTreeSet<u32> = done.keys().copied().collect();
    assert_eq!(
        ids,
        (1..=STEPS).collect(),
        "activities with an ActivityCompleted"
    );
    for (id, recs) in &done {
        assert_eq!(
            recs.len(),
            1,
            "activity {id}: one ActivityCompleted expected, got {recs:?}"
        );
        assert_eq!(recs[0].3, (id - 1).to_string(), "activity {id}'s result");
    }

    // C1: what was served before a kill is still there, unchanged.
    for (k, kill) in kills.iter().enumerate() {
        ensure!(
            kill.served.len() <= events.len(),
            "kill {}: {} events were served before it, only {} are in the final history",
            k + 1,
            kill.served.len(),
            events.len()
        );
        for (a, b) in kill.served.iter().zip(&events) {
            assert_eq!(
                (a.seq, &a.hash, a.kind),
                (b.seq, &b.hash, b.kind),
                "kill {}: event {} served before the kill differs after it",
                k + 1,
                a.seq
            );
        }
    }

    // C2: the chain verifies.
    let (code, out, err) = cli(&url, &["history", "replay", &run])?;
    assert_eq!(code, 0, "history replay: {out}\n{err}");

    // C3, P1: nothing completed before a kill ran after it.
    let lines = side::read(&side_file)?;
    let mut kills_before = 0usize;
    let mut executions = Vec::new();
    for line in &lines {
        match line {
            side::Line::Marker(m) => {
                if kills.iter().any(|k| &k.marker == m) {
                    kills_before += 1;
                }
            }
            side::Line::Execution(e) if e.run_id == run => {
                executions.push(e);
                for (k, kill) in kills.iter().take(kills_before).enumerate() {
                    let served_done = completions(&kill.served);
                    assert!(
                        !served_done.contains_key(&e.activity_id),
                        "activity {} (attempt {}) ran after kill {}, but its completion was recorded before it: {e:?}",
                        e.activity_id,
                        e.attempt,
                        k + 1
                    );
                }
            }
            side::Line::Execution(_) => {}
        }
    }
    assert_eq!(kills_before, KILLS, "kill markers in the side file");

    // C3, P2: no attempt was handed out after its activity's completion was recorded.
    for e in &executions {
        let (_, _, completed_ms, _) = done[&e.activity_id][0];
        let dispatched_ms = e.deadline_ms - START_TO_CLOSE_MS;
        assert!(
            dispatched_ms <= completed_ms,
            "activity {} attempt {} was handed out at {dispatched_ms}, after its completion was recorded at {completed_ms}",
            e.activity_id,
            e.attempt
        );
    }

    // At least once: every activity ran; re-runs of unrecorded attempts are fine.
    let mut attempts: BTreeMap<u32, Vec<u32>> = BTreeMap::new();
    for e in &executions {
        attempts.entry(e.activity_id).or_default().push(e.attempt);
    }
    assert_eq!(attempts.len(), STEPS as usize, "activities executed");
    let reruns: Vec<_> = attempts.iter().filter(|(_, a)| a.len() > 1).collect();
    eprintln!(
        "{} executions for {STEPS} activities; re-executed (activity, attempts), results not recorded before a kill: {reruns:?}; {} events",
        executions.len(),
        events.len()
    );
    Ok(())
}
