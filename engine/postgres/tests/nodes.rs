//! Several stores (nodes) over one database: changes reach the other node, racing appends
//! never both extend a history, racing polls never share a task, racing timer sweeps take
//! each deadline once, and a damaged record is named by run and seq.
//!
//! Randomness comes from one seed, printed; `TEST_SEED=<n>` replays it.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use steadfast_engine::event::{self, Budget, Event};
use steadfast_engine::ids::{RunId, RunKey};
use steadfast_engine::payload::Payload;
use steadfast_engine::store::contract::{RunDriver, T0};
use steadfast_engine::store::{AppendRequest, Change, DueTimer, Error, Store, Task, TaskKind};
use steadfast_postgres::testing::PgCluster;
use steadfast_postgres::{PgOptions, PgStore};

/// How long a change may take to reach the other node before the test fails.
const CHANGE_BOUND: Duration = Duration::from_secs(5);

fn seeded(test: &str) -> StdRng {
    let seed = std::env::var("TEST_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos() as u64)
                .unwrap_or(1)
        });
    eprintln!("[{test}] TEST_SEED={seed}");
    StdRng::seed_from_u64(seed)
}

fn run_key(rng: &mut StdRng) -> RunKey {
    // Time-ordered ids are not needed here; all ids come from the seed.
    RunKey::new("default", RunId(uuid::Uuid::from_u128(rng.r#gen())))
}

async fn nodes(db: &str, n: usize) -> Option<Vec<Arc<PgStore>>> {
    let cluster = PgCluster::shared()?;
    let url = cluster.create_database(db);
    let mut out = Vec::new();
    for i in 0..n {
        let options = PgOptions {
            node_id: format!("node-{i}"),
            pool_size: 8,
            ..PgOptions::default()
        };
        out.push(Arc::new(
            PgStore::connect(&url, options).await.expect("connect"),
        ));
    }
    Some(out)
}

fn started(queue: &str) -> Event {
    Event::RunStarted(event::RunStarted {
        workflow_type: "wf".into(),
        workflow_id: String::new(),
        task_queue: queue.into(),
        input: Payload::json(b"{}".to_vec()),
        run_timeout_ms: 0,
        budget: Budget::default(),
        continued_from: None,
        identity: "nodes".into(),
        random_seed: 1,
        parent: None,
        forked_from: None,
        schedule: None,
        traceparent: None,
    })
}

fn signal(data: Vec<u8>) -> Event {
    Event::SignalReceived(event::SignalReceived {
        name: "s".into(),
        input: Payload::json(data),
        identity: "nodes".into(),
        request_id: String::new(),
    })
}

async fn start_run(store: &PgStore, key: RunKey, queue: &str) -> RunDriver {
    let mut r = RunDriver {
        key,
        next: 1,
        command: 1,
        time_ms: T0,
    };
    r.append(store, vec![started(queue)]).await;
    r
}

/// Waits for `want` on `rx` within [`CHANGE_BOUND`]; other changes are skipped.
async fn wait_for(rx: &mut tokio::sync::broadcast::Receiver<Change>, want: &Change) -> bool {
    let deadline = tokio::time::Instant::now() + CHANGE_BOUND;
    loop {
        match tokio::time::timeout_at(deadline, rx.recv()).await {
            Err(_) => return false,
            Ok(Ok(c)) if &c == want => return true,
            Ok(Ok(_)) | Ok(Err(tokio::sync::broadcast::error::RecvError::Lagged(_))) => {}
            Ok(Err(_)) => return false,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_append_through_one_node_wakes_the_other() {
    let mut rng = seeded("changes");
    let Some(n) = nodes("changes", 2).await else {
        return;
    };
    let (a, b) = (&n[0], &n[1]);
    assert!(a.changes().is_some(), "a PostgreSQL store reports changes");
    let mut rx = b.changes().expect("changes");
    let mut r = start_run(a, run_key(&mut rng), "q").await;
    // The listener connects in the background: append until the first change arrives.
    let ready = Instant::now();
    loop {
        r.append(a.as_ref(), vec![signal(vec![])]).await;
        let want = Change::RunChanged {
            key: r.key.clone(),
            last_seq: r.next - 1,
        };
        if wait_for(&mut rx, &want).await {
            break;
        }
        assert!(
            ready.elapsed() < Duration::from_secs(30),
            "no change ever arrived"
        );
    }
    let mut latencies = Vec::new();
    for _ in 0..100 {
        let data = vec![b'x'; rng.gen_range(0..64)];
        let t = Instant::now();
        r.append(a.as_ref(), vec![signal(data)]).await;
        let want = Change::RunChanged {
            key: r.key.clone(),
            last_seq: r.next - 1,
        };
        assert!(
            wait_for(&mut rx, &want).await,
            "{want:?} reached the other node"
        );
        latencies.push(t.elapsed());
    }
    latencies.sort();
    eprintln!(
        "[changes] append -> change on the other node: median {:?}, p90 {:?}, max {:?} (100 appends)",
        latencies[50], latencies[90], latencies[99]
    );
    // A task made ready through one node is announced to the other.
    let mut w = start_run(a, run_key(&mut rng), "wq").await;
    w.schedule_workflow_task(a.as_ref(), 0).await;
    assert!(
        wait_for(
            &mut rx,
            &Change::TaskReady {
                namespace: "default".into(),
                queue: "wq".into(),
                kind: TaskKind::Workflow
            }
        )
        .await
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn racing_appends_never_both_extend_a_history() {
    let mut rng = seeded("race");
    let Some(n) = nodes("race", 2).await else {
        return;
    };
    let key = run_key(&mut rng);
    start_run(&n[0], key.clone(), "q").await;
    const WRITERS: usize = 6;
    const APPENDS_EACH: usize = 25;
    let mut handles = Vec::new();
    for w in 0..WRITERS {
        let store = Arc::clone(&n[rng.gen_range(0..n.len())]);
        let key = key.clone();
        let sizes: Vec<usize> = (0..APPENDS_EACH).map(|_| rng.gen_range(1..4)).collect();
        handles.push(tokio::spawn(async move {
            let mut won = Vec::new();
            let mut conflicts = 0u32;
            for (i, k) in sizes.into_iter().enumerate() {
                loop {
                    let next = store.run_state(&key).await.unwrap().unwrap().last_seq + 1;
                    let events = (0..k)
                        .map(|j| signal(format!("{w}-{i}-{j}").into_bytes()))
                        .collect();
                    match store
                        .append(AppendRequest {
                            key: key.clone(),
                            expected_next_seq: next,
                            events,
                            time_ms: T0,
                            wait_durable: true,
                        })
                        .await
                    {
                        Ok(a) => {
                            won.extend(a.records.iter().map(|r| r.seq));
                            break;
                        }
                        Err(Error::Conflict { .. }) => conflicts += 1,
                        Err(e) => panic!("append failed: {e}"),
                    }
                }
            }
            (won, conflicts)
        }));
    }
    let mut seqs = BTreeSet::new();
    let mut conflicts = 0;
    for h in handles {
        let (won, c) = h.await.unwrap();
        conflicts += c;
        for s in won {
            assert!(seqs.insert(s), "seq {s} was written twice");
        }
    }
    let history = n[1].read_history(&key, 1, 10_000).await.unwrap();
    let last = history.last().unwrap().seq;
    assert_eq!(
        history.iter().map(|r| r.seq).collect::<Vec<_>>(),
        (1..=last).collect::<Vec<_>>(),
        "gapless"
    );
    assert_eq!(
        seqs,
        (2..=last).collect(),
        "every seq has exactly one winner"
    );
    eprintln!("[race] {} seqs, {conflicts} conflicts answered", seqs.len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_polling_one_queue_never_share_a_task() {
    let mut rng = seeded("poll");
    let Some(n) = nodes("poll", 2).await else {
        return;
    };
    const RUNS: usize = 60;
    let mut want = BTreeSet::new();
    for _ in 0..RUNS {
        let mut r = start_run(&n[0], run_key(&mut rng), "shared").await;
        let seq = r.schedule_workflow_task(n[0].as_ref(), 0).await;
        want.insert(format!("{}/{seq}", r.key));
    }
    let mut handles = Vec::new();
    for p in 0..8 {
        let store = Arc::clone(&n[p % 2]);
        handles.push(tokio::spawn(async move {
            let mut got = Vec::new();
            while let Some(t) = store
                .poll_task("default", "shared", TaskKind::Workflow, &[], T0)
                .await
                .unwrap()
            {
                got.push(t);
            }
            got
        }));
    }
    let mut seen = BTreeSet::new();
    for h in handles {
        for t in h.await.unwrap() {
            let Task::Workflow { key, scheduled_seq } = t else {
                panic!("a workflow task")
            };
            assert!(
                seen.insert(format!("{key}/{scheduled_seq}")),
                "{key} was handed out twice"
            );
        }
    }
    assert_eq!(seen, want, "every task handed out exactly once");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_take_each_due_timer_once() {
    let mut rng = seeded("timers");
    let Some(n) = nodes("timers", 2).await else {
        return;
    };
    const RUNS: usize = 40;
    let mut want = BTreeMap::new();
    for _ in 0..RUNS {
        let mut r = start_run(&n[0], run_key(&mut rng), "q").await;
        r.run_workflow_task(n[0].as_ref()).await;
        let id = r.next_command();
        let at = T0 + rng.gen_range(0..1_000);
        r.append(
            n[0].as_ref(),
            vec![Event::TimerStarted(event::TimerStarted {
                command_seq: id,
                fire_at_ms: at,
            })],
        )
        .await;
        want.insert(
            DueTimer::Timer {
                key: r.key.clone(),
                id,
            },
            0usize,
        );
    }
    let mut handles = Vec::new();
    for t in 0..6 {
        let store = Arc::clone(&n[t % 2]);
        let limits: Vec<usize> = (0..1_000).map(|_| rng.gen_range(1..5)).collect();
        handles.push(tokio::spawn(async move {
            let mut got = Vec::new();
            for limit in limits {
                let due = store.take_due_timers(T0 + 1_000, limit).await.unwrap();
                if due.is_empty() {
                    break;
                }
                got.extend(due);
            }
            got
        }));
    }
    for h in handles {
        for t in h.await.unwrap() {
            *want.get_mut(&t).expect("a timer of ours") += 1;
        }
    }
    let wrong: Vec<_> = want.iter().filter(|(_, n)| **n != 1).collect();
    assert!(wrong.is_empty(), "taken other than once: {wrong:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flipped_byte_in_an_event_is_named_by_run_and_seq() {
    let mut rng = seeded("flip");
    let Some(cluster) = PgCluster::shared() else {
        return;
    };
    let url = cluster.create_database("flip");
    let store = PgStore::connect(&url, PgOptions::default())
        .await
        .expect("connect");
    let mut r = start_run(&store, run_key(&mut rng), "q").await;
    for i in 0..rng.gen_range(3..12) {
        r.append(&store, vec![signal(format!("{i}").into_bytes())])
            .await;
    }
    let last = r.next - 1;
    let seq = rng.gen_range(1..=last) as i64;
    let (client, conn) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(conn);
    let len: i32 = client
        .query_one(
            "SELECT length(record) FROM events WHERE run_id = $1 AND seq = $2",
            &[&r.key.run_id.0, &seq],
        )
        .await
        .unwrap()
        .get(0);
    let pos = rng.gen_range(0..len);
    let bit = 1i32 << rng.gen_range(0..8);
    client
        .execute(
            "UPDATE events SET record = set_byte(record, $3, get_byte(record, $3) # $4) \
             WHERE run_id = $1 AND seq = $2",
            &[&r.key.run_id.0, &seq, &pos, &bit],
        )
        .await
        .unwrap();
    eprintln!("[flip] seq {seq} of {last}, byte {pos} of {len}, bit mask {bit}");
    match store.read_history(&r.key, 1, 100).await {
        Err(Error::Corrupt {
            run: Some(run),
            seq: Some(s),
            detail,
        }) => {
            assert_eq!(run, r.key);
            assert_eq!(s, seq as u64, "{detail}");
        }
        other => panic!("expected Corrupt naming seq {seq}, got {other:?}"),
    }
}
