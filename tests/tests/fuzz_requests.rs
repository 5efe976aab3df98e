//! Issue 12, a whole-message request fuzzer: every RPC of every service, from the proto
//! descriptor, sent arbitrary messages — every field of the request type filled at random
//! (names that exist and names that do not, run ids of real runs, control characters, invalid
//! UTF-8, random numbers and enum values, nested messages, repeated fields), raw random bytes
//! decoded as the message, and generated messages with bytes damaged — to a real server in
//! process over loopback. Properties: the server never panics or drops the connection, never
//! answers INTERNAL or UNKNOWN, and nothing stored changes for a refused request (the last seq
//! and chain hash of every run, and the schedules, before and after).
//!
//! `FUZZ_CASES=N` sets the number of requests (256 by default, seconds); all the randomness
//! comes from one printed seed, `TEST_SEED=...` replays it.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Result;
use prost::Message;
use prost_types::field_descriptor_proto::{Label, Type};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use steadfast_engine::EventKind;
use steadfast_engine::RunKey;
use steadfast_engine::embedded::{EmbeddedOptions, EmbeddedStore};
use steadfast_engine::store::Store;
use steadfast_engine::store::core::derive_for_tables;
use steadfast_proto::v1 as pb;
use steadfast_tests::test_seed;
use steadfast_tests::wire::{self, Answer, Schema};
use tonic::Code;
use tonic::transport::Channel;

/// Requests per `cargo test`.
const CASES_DEFAULT: usize = 256;
/// How deep generated messages nest.
const DEPTH: usize = 4;
/// The longest one call may take: a generated poll may wait that long, then it is dropped.
const CALL_WAIT: Duration = Duration::from_secs(2);

/// What a string field is filled with.
fn string(rng: &mut StdRng, runs: &[String]) -> Vec<u8> {
    match rng.gen_range(0..12) {
        0 => Vec::new(),
        1 => b"default".to_vec(),
        2 => b"fuzz".to_vec(),
        3 => b"fuzz-queue".to_vec(),
        4 => runs[rng.gen_range(0..runs.len())].clone().into_bytes(),
        5 => b"json/plain".to_vec(),
        6 => b"not-a-task-token".to_vec(),
        7 => {
            // Printable, any length up to a few KiB.
            let n = rng.gen_range(0..4096);
            (0..n).map(|_| rng.gen_range(0x20..0x7f)).collect()
        }
        8 => {
            // Random bytes: control characters and invalid UTF-8.
            let n = rng.gen_range(1..64);
            (0..n).map(|_| rng.r#gen::<u8>()).collect()
        }
        9 => "a\u{202E}b\u{200B}\u{0}".as_bytes().to_vec(),
        10 => vec![b'x'; rng.gen_range(200..80_000)],
        _ => b"0190f0b2-7c1d-7aa4-9a8b-1c2d3e4f5a6b".to_vec(),
    }
}

/// What a bytes field is filled with (payload data above all).
fn bytes(rng: &mut StdRng) -> Vec<u8> {
    match rng.gen_range(0..6) {
        0 => b"null".to_vec(),
        1 => b"{\"a\":[1,2,{\"b\":null}]}".to_vec(),
        2 => vec![7; 32],
        3 => Vec::new(),
        4 => vec![b'['; rng.gen_range(1..5000)],
        _ => (0..rng.gen_range(1..200))
            .map(|_| rng.r#gen::<u8>())
            .collect(),
    }
}

/// A number for a field called `name`: timeouts small (a poll must not hold the fuzzer),
/// other times either none or far away (nothing fires while the fuzzer compares states).
fn number(rng: &mut StdRng, name: &str) -> u64 {
    if name.ends_with("timeout_ms") {
        return rng.gen_range(0..20);
    }
    if name.ends_with("_ms") {
        return [0, 86_400_000_000, u64::MAX][rng.gen_range(0..3)];
    }
    match rng.gen_range(0..5) {
        0 => 0,
        1 => 1,
        2 => rng.gen_range(0..10),
        3 => u64::MAX,
        _ => rng.r#gen::<u32>() as u64,
    }
}

fn varint(mut v: u64, out: &mut Vec<u8>) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// A random message of type `message`: each field present or not, repeated ones 0 to 3 times.
fn generate(
    schema: &Schema,
    message: &str,
    depth: usize,
    rng: &mut StdRng,
    runs: &[String],
) -> Result<Vec<u8>> {
    let m = schema.message(message)?;
    let mut out = Vec::new();
    for f in &m.field {
        let times = if f.label() == Label::Repeated {
            rng.gen_range(0..4)
        } else {
            usize::from(rng.gen_bool(0.6))
        };
        for _ in 0..times {
            let n = f.number() as u64;
            match f.r#type() {
                Type::String | Type::Bytes | Type::Message => {
                    let v = match f.r#type() {
                        Type::String => string(rng, runs),
                        Type::Bytes => bytes(rng),
                        _ if depth == 0 => continue,
                        _ => generate(schema, f.type_name(), depth - 1, rng, runs)?,
                    };
                    varint((n << 3) | 2, &mut out);
                    varint(v.len() as u64, &mut out);
                    out.extend(v);
                }
                Type::Double => {
                    varint((n << 3) | 1, &mut out);
                    let v: f64 =
                        [0.0, 1.5, -1.0, f64::NAN, f64::INFINITY, 1e300][rng.gen_range(0..6)];
                    out.extend(v.to_le_bytes());
                }
                Type::Enum => {
                    varint(n << 3, &mut out);
                    let v: i64 = [0, 1, 2, 3, 7, 99, -1][rng.gen_range(0..7)];
                    varint(v as u64, &mut out);
                }
                _ => {
                    varint(n << 3, &mut out);
                    varint(number(rng, f.name()), &mut out);
                }
            }
        }
    }
    Ok(out)
}

/// Everything a request could change: the last seq and chain hash of every run known so far
/// or open now, and the schedules; and, apart, the earliest deadline each open run's state
/// implies (what may change it with no request at all).
#[derive(Default)]
struct Snapshot {
    stored: std::collections::BTreeMap<String, String>,
    due_ms: std::collections::BTreeMap<String, i64>,
}

async fn snapshot(store: &dyn Store, known: &mut Vec<RunKey>) -> Result<Snapshot> {
    known.extend(store.open_runs().await?);
    known.sort();
    known.dedup();
    let mut out = Snapshot::default();
    for k in known.iter() {
        if let Some(s) = store.run_state(k).await? {
            out.stored.insert(
                k.to_string(),
                format!("{} {}", s.last_seq, hex::encode(s.last_hash)),
            );
            let (_, timers) = derive_for_tables(&s, &Default::default());
            if let Some(due) = timers.iter().map(|(at, _)| *at).min() {
                out.due_ms.insert(k.to_string(), due);
            }
        }
    }
    for s in store.list_schedules(None).await? {
        out.stored.insert(
            format!("schedule {}/{}", s.namespace, s.name),
            format!("{s:?}"),
        );
    }
    Ok(out)
}

/// The milliseconds in a UUIDv7 run id (the first 48 bits): when the run was created.
fn created_ms(key: &str) -> Option<u64> {
    let id = key.rsplit('/').next()?;
    let id = steadfast_engine::RunId::parse(id).ok()?;
    let b = id.as_bytes();
    Some(b[..6].iter().fold(0u64, |acc, x| (acc << 8) | *x as u64))
}

/// What changed from `before` to `after` that a request sent at `sent_ms` could have done: a
/// run or schedule whose state differs, or a run created since. (A run created earlier whose
/// index entry lands late — the sled indexes are written after the acknowledgement — is not
/// a change of this request.)
fn changes(before: &Snapshot, after: &Snapshot, sent_ms: u64) -> Vec<String> {
    let (before, after) = (&before.stored, &after.stored);
    let mut out = Vec::new();
    for (k, v) in after {
        match before.get(k) {
            Some(old) if old == v => {}
            Some(_) => out.push(format!("{k} changed")),
            None if k.starts_with("schedule ") => out.push(format!("{k} created")),
            None if created_ms(k).is_none_or(|ms| ms >= sent_ms) => {
                out.push(format!("{k} created"))
            }
            None => {}
        }
    }
    for k in before.keys() {
        if !after.contains_key(k) {
            out.push(format!("{k} gone"));
        }
    }
    out
}

/// The events a deadline appends first (server/src/timers.rs): a timer fired, an attempt or
/// a schedule-to-close timeout, a workflow task or a whole run timed out.
const DEADLINE_EVENTS: &[EventKind] = &[
    EventKind::TimerFired,
    EventKind::ActivityTimedOut,
    EventKind::ActivityOutcomeUnknown,
    EventKind::ActivityCancelled,
    EventKind::WorkflowTaskTimedOut,
    EventKind::RunTimedOut,
];

/// Splits the runs changed from `before` to `after` into those a deadline explains and the
/// rest. A change is a deadline's (the delayed effect of an earlier *accepted* request, e.g. a
/// StartWorkflow with a run timeout of a few ms) when the run's state in `before` already had
/// a deadline, and the first event appended since is one a deadline appends, recorded at or
/// after that deadline. Anything else (another kind, a run with nothing due, a record before
/// its deadline) is the refused request's doing. Each entry names the appended events.
async fn explain(
    store: &dyn Store,
    before: &Snapshot,
    after: &Snapshot,
) -> (Vec<String>, Vec<String>) {
    let (mut deadline, mut other) = (Vec::new(), Vec::new());
    for (k, v) in &after.stored {
        let Some(old) = before.stored.get(k).filter(|old| *old != v) else {
            continue;
        };
        let key = k
            .split_once('/')
            .and_then(|(ns, id)| Some(RunKey::new(ns, steadfast_engine::RunId::parse(id).ok()?)));
        let from = old.split(' ').next().and_then(|s| s.parse::<u64>().ok());
        let (Some(key), Some(from)) = (key, from) else {
            other.push(format!("{k} changed"));
            continue;
        };
        let records = match store.read_history(&key, from + 1, 16).await {
            Ok(r) => r,
            Err(e) => {
                other.push(format!("{k} changed, unreadable: {e}"));
                continue;
            }
        };
        let kinds: Vec<String> = records
            .iter()
            .map(|r| format!("#{} {} at {}", r.seq, r.event.kind().name(), r.time_ms))
            .collect();
        let due = before.due_ms.get(k);
        let by_deadline = records.first().is_some_and(|first| {
            DEADLINE_EVENTS.contains(&first.event.kind())
                && due.is_some_and(|d| first.time_ms >= *d)
        });
        let line = format!("{k} (due {due:?}): {kinds:?}");
        if by_deadline {
            deadline.push(line);
        } else {
            other.push(line);
        }
    }
    (deadline, other)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn arbitrary_requests_never_break_the_server_and_refusals_change_nothing() -> Result<()> {
    let seed = test_seed();
    let cases: usize = std::env::var("FUZZ_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(CASES_DEFAULT);
    let mut rng = StdRng::seed_from_u64(seed);
    let dir = tempfile::tempdir()?;
    let (store, _) = EmbeddedStore::open(dir.path(), EmbeddedOptions::default())?;
    let store = Arc::new(store);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}", listener.local_addr()?);
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(steadfast_server::server::serve(
        store.clone(),
        listener,
        async {
            let _ = stopped.await;
        },
    ));
    let channel: Channel = Channel::from_shared(url)?.connect().await?;

    // Runs for the fuzzer to aim at, on a queue nobody polls.
    let mut runs = Vec::new();
    let mut seeded = Vec::new();
    for i in 0..3 {
        let mut grpc = pb::client_service_client::ClientServiceClient::new(channel.clone());
        let id = grpc
            .start_workflow(pb::StartWorkflowRequest {
                workflow_type: "fuzz.idle".into(),
                workflow_id: format!("fuzz-{i}"),
                task_queue: "fuzz-queue".into(),
                ..Default::default()
            })
            .await?
            .into_inner()
            .run_id;
        seeded.push(RunKey::new(
            "default",
            steadfast_engine::RunId::parse(&id).map_err(|e| anyhow::anyhow!("{e:?}"))?,
        ));
        runs.push(id);
    }

    let schema = Schema::load()?;
    let rpcs = schema.rpcs();
    let mut known = seeded.clone();
    let mut before = snapshot(store.as_ref(), &mut known).await?;
    let (mut refused, mut accepted, mut waiting) = (0usize, 0usize, 0usize);
    // Runs changed during a refused request by a deadline an earlier accepted request set.
    let mut by_deadline = 0usize;
    let started = std::time::Instant::now();
    for case in 0..cases {
        let rpc = &rpcs[rng.gen_range(0..rpcs.len())];
        let mode = rng.gen_range(0..20);
        let body = if mode < 3 {
            (0..rng.gen_range(0..300))
                .map(|_| rng.r#gen::<u8>())
                .collect()
        } else {
            let mut b = generate(&schema, &rpc.input, DEPTH, &mut rng, &runs)?;
            if mode < 6 && !b.is_empty() {
                for _ in 0..rng.gen_range(1..4) {
                    let at = rng.gen_range(0..b.len());
                    b[at] = rng.r#gen();
                }
            }
            b
        };
        let what = format!(
            "case {case} {} ({} bytes, TEST_SEED={seed})",
            rpc.method,
            body.len()
        );
        let sent_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)?
            .as_millis() as u64;
        match wire::call(&channel, &rpc.path(), body, CALL_WAIT).await {
            Answer::Refused(s) => {
                assert!(
                    !matches!(s.code(), Code::Internal | Code::Unknown | Code::Unavailable),
                    "{what}: {:?} {}",
                    s.code(),
                    s.message()
                );
                assert!(
                    s.message().len() <= 512,
                    "{what}: a {} byte message",
                    s.message().len()
                );
                let after = snapshot(store.as_ref(), &mut known).await?;
                let changed = changes(&before, &after, sent_ms);
                if !changed.is_empty() {
                    let (deadline, other) = explain(store.as_ref(), &before, &after).await;
                    let unexplained = changed.len() - deadline.len();
                    assert!(
                        unexplained == 0,
                        "{what}: refused ({:?} {}) but the store changed: {changed:?}; \
                         not a deadline's doing: {other:?}",
                        s.code(),
                        s.message()
                    );
                    by_deadline += deadline.len();
                }
                before = after;
                refused += 1;
            }
            a => {
                if matches!(a, Answer::Waiting) {
                    waiting += 1;
                } else {
                    accepted += 1;
                }
                before = snapshot(store.as_ref(), &mut known).await?;
            }
        }
    }
    eprintln!(
        "{cases} requests in {:?}: {refused} refused, {accepted} accepted, {waiting} still waiting after {CALL_WAIT:?}; {by_deadline} runs changed by a deadline during a refusal (TEST_SEED={seed})",
        started.elapsed()
    );
    // Still serving.
    let alive = wire::call(
        &channel,
        "/steadfast.v1.ClientService/ListRuns",
        pb::ListRunsRequest::default().encode_to_vec(),
        CALL_WAIT,
    )
    .await;
    assert!(matches!(alive, Answer::Ok), "{alive:?}");
    let _ = stop.send(());
    server.await??;
    Ok(())
}
