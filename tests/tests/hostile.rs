//! Issue 12, hostile input: every RPC, sent hostile values (a megabyte long, or short but with
//! control, bidirectional or zero-width characters, quotes and escapes, or padded with
//! whitespace) in one kind of field at a time, is refused with a short message (at most
//! [`MESSAGE_BYTES_MAX`], never an echo of the input), never INTERNAL or UNKNOWN, and at once:
//! a poll whose names are hostile is refused, not long-polled. The server keeps serving and a
//! run started before is unchanged.
//!
//! All the randomness (which characters, where) comes from one printed seed; `TEST_SEED=...`
//! replays it.

use std::time::Duration;

use anyhow::{Context, Result};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use steadfast_proto::v1 as pb;
use steadfast_tests::secure::{self, Fields, Outcome, Services};
use steadfast_tests::{Server, runtime, test_seed};
use tonic::Code;
use tonic::transport::Channel;

/// A run id in canonical form that no server gave out.
const UNKNOWN_RUN: &str = "01890000-0000-7000-8000-000000000000";
/// Longest error message accepted back.
const MESSAGE_BYTES_MAX: usize = 512;
/// A megabyte: the size of the long hostile values.
const LONG_BYTES: usize = 1 << 20;
/// The longest a refused call may take (a long poll would take its 60 s).
const REFUSAL_TIME_MAX: Duration = Duration::from_secs(10);

/// Characters that a name must not smuggle in.
const NASTY: &[char] = &[
    '\u{0}', '\u{7}', '\u{1b}', '\n', '\r', '\u{7f}', '\u{202E}', '\u{200B}', '\u{2066}',
    '\u{FEFF}', '"', '\\', '\'', '%', '{', '}',
];

/// A hostile value: `len` characters, mostly printable, with nasty ones at random places (at
/// least one that a name may not hold).
fn hostile(rng: &mut StdRng, len: usize) -> String {
    let mut out = String::with_capacity(len + 8);
    let printable: &[u8] = b"abcXYZ019-_.:/ ";
    while out.len() < len {
        if rng.gen_ratio(1, 16) {
            out.push(NASTY[rng.gen_range(0..NASTY.len())]);
        } else {
            out.push(printable[rng.gen_range(0..printable.len())] as char);
        }
    }
    // One that is always refused, somewhere inside.
    let at = rng.gen_range(0..=out.len().min(64));
    let at = (0..=at)
        .rev()
        .find(|i| out.is_char_boundary(*i))
        .unwrap_or(0);
    out.insert(at, ['\u{1b}', '\u{202E}', '\u{0}'][rng.gen_range(0..3)]);
    out
}

fn check(pass: &str, results: Vec<Outcome>) {
    for (rpc, r, took) in results {
        let what = format!("{pass}: {rpc}");
        assert!(
            took < REFUSAL_TIME_MAX,
            "{what} took {took:?}: a refusal must not wait"
        );
        let Err(s) = r else {
            panic!("{what}: accepted a hostile request");
        };
        assert!(
            !matches!(s.code(), Code::Internal | Code::Unknown),
            "{what}: {:?} {}",
            s.code(),
            s.message()
        );
        assert!(
            s.message().len() <= MESSAGE_BYTES_MAX,
            "{what}: a {} byte message echoes the input: {:?}...",
            s.message().len(),
            &s.message().chars().take(200).collect::<String>()
        );
        eprintln!("{what}: {took:?} {:?} {}", s.code(), s.message());
    }
}

/// Every RPC with `f`, but those in `skip` (they take none of the hostile fields).
fn every(
    rt: &tokio::runtime::Runtime,
    svc: &Services,
    f: &Fields,
    keep: impl Fn(&str) -> bool,
) -> Vec<Outcome> {
    rt.block_on(secure::every_rpc(svc, f))
        .into_iter()
        .filter(|(n, _, _)| *n != "Checkpoint" && keep(n))
        .collect()
}

#[test]
fn hostile_values_in_every_rpc_are_refused_briefly_and_at_once() -> Result<()> {
    let seed = test_seed();
    let mut rng = StdRng::seed_from_u64(seed);
    let dir = tempfile::tempdir()?;
    let server = Server::start(&dir.path().join("data"), None)?;
    let url = server.url();
    let rt = runtime();
    let channel: Channel = rt.block_on(Channel::from_shared(url.clone())?.connect())?;
    let svc = Services::new(channel, None);
    // A run nobody works on, to aim the run-id fields at.
    let run = rt
        .block_on(svc.client.clone().start_workflow(pb::StartWorkflowRequest {
            workflow_type: "hostile.idle".into(),
            task_queue: "hostile-nobody".into(),
            ..Default::default()
        }))?
        .into_inner()
        .run_id;
    let valid = Fields {
        namespace: "default".into(),
        run_id: run.clone(),
        name: "ok".into(),
        task_token: "not-a-task-token".into(),
        payload: "null".into(),
        poll_timeout_ms: 60_000,
    };

    for (size, label) in [(LONG_BYTES, "1 MiB"), (200, "short")] {
        let pass = |field: &str| format!("{label} hostile {field} (TEST_SEED={seed})");
        let f = Fields {
            namespace: hostile(&mut rng, size),
            ..valid.clone()
        };
        check(&pass("namespace"), every(&rt, &svc, &f, |_| true));
        let f = Fields {
            run_id: hostile(&mut rng, size),
            name: hostile(&mut rng, size.min(128 << 10)),
            ..valid.clone()
        };
        // ListSchedules takes nothing but the namespace.
        check(
            &pass("run_id and names"),
            every(&rt, &svc, &f, |n| n != "ListSchedules"),
        );
        // Names alone, with a valid run id: each RPC refuses on a name, not on the run.
        let f = Fields {
            name: hostile(&mut rng, size.min(128 << 10)),
            ..valid.clone()
        };
        // These take no names besides the namespace and run id.
        let no_names = [
            "DescribeRun",
            "GetHistory",
            "AwaitResult",
            "WatchRun",
            "VerifyHistory",
            "ImportHistory",
            "ListSchedules",
        ];
        check(
            &pass("names"),
            every(&rt, &svc, &f, |n| !no_names.contains(&n)),
        );
        // From here on names are valid: aim at a run that does not exist, so that the calls
        // this pass does not look at (a cancel, a terminate) cannot change the idle run.
        let f = Fields {
            task_token: hostile(&mut rng, size),
            run_id: UNKNOWN_RUN.into(),
            // The polls are valid here and not looked at: they need not wait.
            poll_timeout_ms: 1,
            ..valid.clone()
        };
        check(
            &pass("task_token"),
            every(&rt, &svc, &f, |n| {
                n.contains("Complete") || n.contains("Fail") || n.contains("Heartbeat")
            }),
        );
        // A payload that is not JSON: every call that carries one refuses it.
        let f = Fields {
            payload: hostile(&mut rng, size),
            run_id: UNKNOWN_RUN.into(),
            poll_timeout_ms: 1,
            ..valid.clone()
        };
        check(
            &pass("payload"),
            every(&rt, &svc, &f, |n| {
                matches!(
                    n,
                    "StartWorkflow"
                        | "SignalRun"
                        | "ApproveActivity"
                        | "HeartbeatActivityTask"
                        | "CompleteActivityTask"
                )
            }),
        );
    }

    // Still serving, and the run is as it was (a refused cancel or terminate did nothing).
    let info = rt
        .block_on(svc.client.clone().describe_run(pb::DescribeRunRequest {
            namespace: String::new(),
            run_id: run,
            ..Default::default()
        }))?
        .into_inner()
        .run
        .context("run")?;
    assert_eq!(info.status(), pb::RunStatus::Running);
    drop(server);
    Ok(())
}
