//! A seeded model test of the embedded store: random appends (legal, illegal, conflicting),
//! reads, blobs, checkpoints and restarts (clean, dropped, and crash images) against a plain
//! in-memory model (every run's acknowledged events). Prints its seed; `TEST_SEED=<n>`
//! replays one, `MODEL_STEPS=<n>` runs longer.

use std::collections::BTreeMap;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use steadfast_engine::embedded::{EmbeddedOptions, EmbeddedStore};
use steadfast_engine::event::{self, Budget, Event, EventRecord};
use steadfast_engine::ids::{RunId, RunKey};
use steadfast_engine::payload::{Hash, Payload};
use steadfast_engine::state::RunStatus;
use steadfast_engine::store::{AppendRequest, Error, RunFilter, Store, inline_payload};

mod support;
use support::copy_dir;

fn options() -> EmbeddedOptions {
    // Small segments and frequent automatic checkpoints, so that both happen mid-test.
    EmbeddedOptions {
        log_segment_bytes: 32 << 10,
        checkpoint_every_bytes: 64 << 10,
        sled_segment_bytes: 512 << 10,
        sled_flush_every_ms: None,
        ..EmbeddedOptions::default()
    }
}

#[derive(Default)]
struct Model {
    runs: BTreeMap<RunKey, Vec<EventRecord>>,
    closed: BTreeMap<RunKey, bool>,
    blobs: BTreeMap<Hash, Vec<u8>>,
    /// Trailing events of each run appended without waiting for durability and not yet
    /// made durable by a later durable operation (the log is one sequence: a later sync
    /// covers every earlier append). A crash may lose them, and only them.
    pending: BTreeMap<RunKey, usize>,
}

fn started() -> Event {
    Event::RunStarted(event::RunStarted {
        workflow_type: "wf".into(),
        workflow_id: String::new(),
        task_queue: "q".into(),
        input: Payload::json(b"{}".to_vec()),
        run_timeout_ms: 0,
        budget: Budget::default(),
        continued_from: None,
        identity: "model".into(),
        random_seed: 1,
        parent: None,
        forked_from: None,
        schedule: None,
        traceparent: None,
    })
}

fn data(rng: &mut StdRng) -> Vec<u8> {
    let len = if rng.gen_bool(0.1) {
        rng.gen_range(513..4_000)
    } else {
        rng.gen_range(0..300)
    };
    (0..len).map(|_| rng.r#gen()).collect()
}

async fn check_run(store: &EmbeddedStore, key: &RunKey, want: &[EventRecord], step: usize) {
    let got = store
        .read_history(key, 1, 100_000)
        .await
        .unwrap_or_else(|e| panic!("step {step}: read {key}: {e}"));
    assert_eq!(got, want, "step {step}: history of {key}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_operations_match_the_model() {
    let seed = std::env::var("TEST_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(rand::random);
    eprintln!("store model: seed {seed} (replay with TEST_SEED={seed})");
    let steps: usize = std::env::var("MODEL_STEPS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(600);
    let mut rng = StdRng::seed_from_u64(seed);
    let mut dirs = vec![tempfile::tempdir().unwrap()];
    let (mut store, _) = EmbeddedStore::open(dirs[0].path(), options()).unwrap();
    let mut m = Model::default();
    let mut time = 1_000i64;
    for step in 0..steps {
        time += 1;
        let keys: Vec<RunKey> = m.runs.keys().cloned().collect();
        let open: Vec<RunKey> = keys
            .iter()
            .filter(|k| !m.closed.get(*k).copied().unwrap_or(false))
            .cloned()
            .collect();
        match rng.gen_range(0..100) {
            // A new run.
            0..=9 => {
                let key = RunKey::new(
                    "default",
                    RunId(uuid::Builder::from_random_bytes(rng.r#gen()).into_uuid()),
                );
                let a = store
                    .append(AppendRequest {
                        key: key.clone(),
                        expected_next_seq: 1,
                        events: vec![started()],
                        time_ms: time,
                        wait_durable: true,
                    })
                    .await
                    .unwrap();
                m.runs.insert(key, a.records);
            }
            // Events on an open run, sometimes with an illegal one, sometimes at a stale seq,
            // sometimes closing it.
            10..=54 if !open.is_empty() => {
                let key = &open[rng.gen_range(0..open.len())];
                let have = m.runs[key].len() as u64;
                let mut events: Vec<Event> = (0..rng.gen_range(1..=4))
                    .map(|_| {
                        Event::SignalReceived(event::SignalReceived {
                            name: "s".into(),
                            input: Payload::json(data(&mut rng)),
                            identity: String::new(),
                            request_id: String::new(),
                        })
                    })
                    .collect();
                let kind = rng.gen_range(0..20);
                if kind == 0 {
                    let at = rng.gen_range(0..=events.len());
                    events.insert(at, Event::TimerFired(event::TimerFired { command_seq: 77 }));
                }
                let close = kind == 1;
                if close {
                    events.push(Event::RunTerminated(event::RunTerminated {
                        reason: "model".into(),
                        identity: String::new(),
                    }));
                }
                let expected = if kind == 2 {
                    rng.gen_range(1..=have + 3)
                } else {
                    have + 1
                };
                let wait_durable = rng.gen_bool(0.9);
                let r = store
                    .append(AppendRequest {
                        key: key.clone(),
                        expected_next_seq: expected,
                        events,
                        time_ms: time,
                        wait_durable,
                    })
                    .await;
                match r {
                    Ok(a) => {
                        assert!(
                            kind != 0 && expected == have + 1,
                            "step {step}: a bad append was accepted"
                        );
                        if wait_durable {
                            m.pending.clear();
                        } else {
                            *m.pending.entry(key.clone()).or_default() += a.records.len();
                        }
                        m.runs.get_mut(key).unwrap().extend(a.records);
                        if close {
                            m.closed.insert(key.clone(), true);
                        }
                    }
                    Err(Error::Illegal { .. }) => assert_eq!(kind, 0, "step {step}"),
                    Err(Error::Conflict {
                        expected: e,
                        actual,
                        ..
                    }) => assert_eq!((e, actual), (expected, have + 1), "step {step}"),
                    Err(e) => panic!("step {step}: {e}"),
                }
            }
            // Appending to a closed run is refused.
            55..=57 if open.len() < keys.len() => {
                let key = keys
                    .iter()
                    .find(|k| m.closed.get(*k).copied().unwrap_or(false))
                    .unwrap();
                let have = m.runs[key].len() as u64;
                let r = store
                    .append(AppendRequest {
                        key: key.clone(),
                        expected_next_seq: have + 1,
                        events: vec![Event::SignalReceived(event::SignalReceived {
                            name: "late".into(),
                            input: Payload::default(),
                            identity: String::new(),
                            request_id: String::new(),
                        })],
                        time_ms: time,
                        wait_durable: true,
                    })
                    .await;
                assert!(
                    matches!(r, Err(Error::Illegal { .. })),
                    "step {step}: {r:?}"
                );
            }
            // Pages of a history.
            58..=79 if !keys.is_empty() => {
                let key = &keys[rng.gen_range(0..keys.len())];
                let h = &m.runs[key];
                let from = rng.gen_range(1..=h.len() as u64 + 2);
                let limit = rng.gen_range(0..12);
                let got = store
                    .read_history(key, from, limit)
                    .await
                    .unwrap_or_else(|e| panic!("step {step}: {e}"));
                // Events appended without waiting are shown only once durable: the page may
                // stop short of them (a later durable operation makes them visible).
                let visible_min = h.len() - m.pending.get(key).copied().unwrap_or(0);
                let lo = (from as usize - 1).min(h.len());
                let want = &h[lo..(lo + limit).min(h.len())];
                let want_min = (lo + limit).min(visible_min).saturating_sub(lo);
                assert!(
                    got.len() >= want_min && got[..] == want[..got.len()],
                    "step {step}: page {from}+{limit} of {key}: got {} events, want {want_min}..={} of {want:?}",
                    got.len(),
                    want.len()
                );
                for r in &got {
                    if let Event::SignalReceived(s) = &r.event {
                        let inlined = inline_payload(&store, &key.namespace, &s.input)
                            .await
                            .unwrap();
                        assert!(inlined.blob.is_none() && inlined.len() == s.input.len());
                    }
                }
                let state = store.run_state(key).await.unwrap().unwrap();
                assert!(
                    (visible_min as u64..=h.len() as u64).contains(&state.last_seq),
                    "step {step}: state at seq {}, history {visible_min}..={}",
                    state.last_seq,
                    h.len()
                );
                if state.last_seq == h.len() as u64 {
                    assert_eq!(
                        state.status == RunStatus::Running,
                        !m.closed.get(key).copied().unwrap_or(false)
                    );
                }
            }
            // Blobs.
            80..=85 => {
                let d = data(&mut rng);
                let h = store.put_blob("default", d.clone()).await.unwrap();
                m.pending.clear();
                m.blobs.insert(h, d);
                let (h, d) = m.blobs.iter().nth(rng.gen_range(0..m.blobs.len())).unwrap();
                assert_eq!(
                    store.get_blob("default", h).await.unwrap().as_ref(),
                    Some(d),
                    "step {step}"
                );
            }
            86..=89 => {
                store.checkpoint().await.unwrap();
                m.pending.clear();
            }
            // Lists.
            90..=92 => {
                let all = store
                    .list_runs("default", &RunFilter::default(), None, 1_000, time)
                    .await
                    .unwrap();
                let unsynced = m.pending.len();
                assert!(
                    all.len() <= m.runs.len() && all.len() + unsynced >= m.runs.len(),
                    "step {step}: {} runs listed of {} ({unsynced} with unsynced appends)",
                    all.len(),
                    m.runs.len()
                );
                let running = store
                    .list_runs(
                        "default",
                        &RunFilter {
                            status: Some(RunStatus::Running),
                            ..Default::default()
                        },
                        None,
                        1_000,
                        time,
                    )
                    .await
                    .unwrap();
                assert!(
                    running.len() <= open.len() + unsynced
                        && running.len() + unsynced >= open.len(),
                    "step {step}: {} running listed, {} open ({unsynced} with unsynced appends)",
                    running.len(),
                    open.len()
                );
            }
            // Restarts: clean, dropped (sled flushed, no checkpoint), crash image.
            93..=99 => {
                let how = rng.gen_range(0..3);
                let dir = store.dir().to_path_buf();
                let dir = match how {
                    0 => {
                        store.close().await.unwrap();
                        drop(store);
                        dir
                    }
                    1 => {
                        drop(store);
                        dir
                    }
                    _ => {
                        let image = tempfile::tempdir().unwrap();
                        copy_dir(&dir, image.path());
                        drop(store);
                        let p = image.path().to_path_buf();
                        dirs.push(image);
                        p
                    }
                };
                let (s, report) = EmbeddedStore::open(&dir, options())
                    .unwrap_or_else(|e| panic!("step {step}: reopen ({how}): {e}"));

                store = s;
                // A clean close or a drop syncs the log; a crash image may lack what was
                // never made durable, and then lacks a suffix of it.
                for (key, n) in std::mem::take(&mut m.pending) {
                    if how < 2 {
                        continue;
                    }
                    let h = m.runs.get_mut(&key).unwrap();
                    let got = store.read_history(&key, 1, 100_000).await.unwrap();
                    assert!(
                        got.len() + n >= h.len() && got[..] == h[..got.len()],
                        "step {step}: {key} lost durable events"
                    );
                    if got.len() < h.len() {
                        eprintln!(
                            "step {step}: the crash lost {} non-durable events of {key}",
                            h.len() - got.len()
                        );
                        if h[got.len()..].iter().any(|r| r.event.is_terminal()) {
                            m.closed.insert(key.clone(), false);
                        }
                        h.truncate(got.len());
                    }
                }
                let open = m
                    .runs
                    .keys()
                    .filter(|k| !m.closed.get(*k).copied().unwrap_or(false))
                    .count();
                assert_eq!(report.runs_open, open as u64, "step {step}");
                for (key, want) in &m.runs {
                    check_run(&store, key, want, step).await;
                }
            }
            _ => {}
        }
    }
    // The last steps may have appended without waiting: those events are shown only once
    // durable, so the final comparison follows a durable operation (a checkpoint syncs the log
    // and so covers every earlier append), then a clean close and reopen.
    store.checkpoint().await.unwrap();
    m.pending.clear();
    for (key, want) in &m.runs {
        check_run(&store, key, want, steps).await;
    }
    let dir = store.dir().to_path_buf();
    store.close().await.unwrap();
    drop(store);
    let (store, _) = EmbeddedStore::open(&dir, options()).unwrap();
    for (key, want) in &m.runs {
        check_run(&store, key, want, steps).await;
    }
    for (h, d) in &m.blobs {
        assert_eq!(
            store.get_blob("default", h).await.unwrap().as_ref(),
            Some(d)
        );
    }
    store.close().await.unwrap();
}
