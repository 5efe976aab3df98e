//! `Store::verify_history` on the embedded store checks the log, the record, and not only the
//! copy in sled that reads are served from: a flipped byte in an acknowledged record of a
//! sealed log segment (which open does not re-read, since a checkpoint covers it) is found
//! and named by run and seq, although reads still serve the intact copy. Damage to sled alone
//! is repaired from the log and verifies clean.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use steadfast_engine::embedded::{EmbeddedOptions, EmbeddedStore};
use steadfast_engine::event::{self, Event, EventRecord};
use steadfast_engine::ids::RunKey;
use steadfast_engine::payload::Payload;
use steadfast_engine::store::{AppendRequest, Error, Store};

mod support;
use support::{copy_dir, run_id, seed, started};

fn options() -> EmbeddedOptions {
    EmbeddedOptions {
        log_segment_bytes: 64 << 10,
        sled_segment_bytes: 512 << 10,
        ..EmbeddedOptions::default()
    }
}

fn segments(dir: &Path) -> Vec<PathBuf> {
    let mut s: Vec<PathBuf> = std::fs::read_dir(dir.join("log"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "seg"))
        .collect();
    s.sort();
    s
}

/// A signal with a unique, inline (small) payload: its bytes can be found in the log.
fn unique_signal(rng: &mut StdRng) -> Event {
    let data: Vec<u8> = (0..96).map(|_| rng.gen_range(b'a'..=b'z')).collect();
    Event::SignalReceived(event::SignalReceived {
        name: "s".into(),
        input: Payload::json(data),
        identity: "t".into(),
        request_id: String::new(),
    })
}

type Model = BTreeMap<RunKey, Vec<EventRecord>>;

/// Runs of one event per append (so a log record holds exactly one event), until the log has
/// rolled past its first segment.
async fn write(store: &EmbeddedStore, rng: &mut StdRng, dir: &Path) -> Model {
    let mut model = Model::new();
    while segments(dir).len() < 3 {
        let key = RunKey::new("default", run_id(rng));
        let mut recs = Vec::new();
        for seq in 1..=20u64 {
            let e = if seq == 1 {
                started("")
            } else {
                unique_signal(rng)
            };
            let a = store
                .append(AppendRequest {
                    key: key.clone(),
                    expected_next_seq: seq,
                    events: vec![e],
                    time_ms: 1_000 + seq as i64,
                    wait_durable: true,
                })
                .await
                .unwrap();
            recs.extend(a.records);
        }
        model.insert(key, recs);
    }
    model
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_names_damage_in_a_sealed_log_segment_that_reads_do_not_see() {
    let mut rng = StdRng::seed_from_u64(seed("verify_sealed_damage"));
    let pristine = tempfile::tempdir().unwrap();
    let model = {
        let (store, _) = EmbeddedStore::open(pristine.path(), options()).unwrap();
        let m = write(&store, &mut rng, pristine.path()).await;
        for key in m.keys() {
            store.verify_history(key).await.unwrap();
        }
        store.close().await.unwrap();
        m
    };
    // A record in the first (sealed) segment: a random run, a random signal of it.
    let first = std::fs::read(&segments(pristine.path())[0]).unwrap();
    let in_first: Vec<(&RunKey, &EventRecord, usize)> = model
        .iter()
        .flat_map(|(k, recs)| recs.iter().skip(1).map(move |r| (k, r)))
        .filter_map(|(k, r)| {
            let Event::SignalReceived(s) = &r.event else {
                return None;
            };
            find(&first, &s.input.data).map(|at| (k, r, at))
        })
        .collect();
    assert!(!in_first.is_empty(), "no signal found in the first segment");
    let (victim, rec, at) = in_first[rng.gen_range(0..in_first.len())];
    let pos = at + rng.gen_range(0..96);

    let work = tempfile::tempdir().unwrap();
    copy_dir(pristine.path(), work.path());
    let seg = work
        .path()
        .join("log")
        .join(segments(pristine.path())[0].file_name().unwrap());
    let mut bytes = std::fs::read(&seg).unwrap();
    bytes[pos] ^= 0x04;
    std::fs::write(&seg, &bytes).unwrap();

    let (store, _) = EmbeddedStore::open(work.path(), options())
        .expect("a sealed segment covered by the checkpoint is not re-read at open");
    // Reads are served from sled's intact copy...
    let read = store.read_history(victim, 1, 1_000).await.unwrap();
    assert_eq!(
        &read, &model[victim],
        "reads serve the acknowledged history"
    );
    // ...verify reads the log and names the damaged record.
    match store.verify_history(victim).await {
        Err(Error::Corrupt {
            run: Some(run),
            seq: Some(seq),
            detail,
        }) => {
            eprintln!("named {run} seq {seq}: {detail}");
            assert_eq!((&run, seq), (victim, rec.seq), "{detail}");
        }
        other => panic!("damage at seq {} not found: {other:?}", rec.seq),
    }
    store.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn damage_to_sled_alone_verifies_clean_after_repair() {
    let mut rng = StdRng::seed_from_u64(seed("verify_sled_damage"));
    let dir = tempfile::tempdir().unwrap();
    let model = {
        let (store, _) = EmbeddedStore::open(dir.path(), options()).unwrap();
        let m = write(&store, &mut rng, dir.path()).await;
        store.close().await.unwrap();
        m
    };
    // Damage a stored event chunk through sled's API (sled's own checksums cannot see it).
    let keys: Vec<&RunKey> = model.keys().collect();
    let victim = keys[rng.gen_range(0..keys.len())];
    {
        let db = sled::Config::new()
            .path(dir.path().join("sled"))
            .segment_size(512 << 10)
            .open()
            .unwrap();
        let mut prefix = vec![b'e'];
        prefix.extend_from_slice(&victim.to_bytes());
        let (k, v) = db.scan_prefix(&prefix).next().unwrap().unwrap();
        let mut v = v.to_vec();
        let pos = rng.gen_range(0..v.len());
        v[pos] ^= 0x01;
        db.insert(&k, v).unwrap();
        db.flush().unwrap();
    }
    let (store, _) = EmbeddedStore::open(dir.path(), options()).unwrap();
    let v = store.verify_history(victim).await.unwrap();
    assert_eq!(v.events, model[victim].len() as u64);
    assert_eq!(v.last_hash, model[victim].last().unwrap().hash);
    store.close().await.unwrap();
}
