//! Breaking the embedded store on purpose (promise C2): truncated logs, crash images, flipped
//! bits. Every outcome is either "every acknowledged event is readable and verifies" or a
//! refusal that names the damage; never a panic, never a silently shorter history.
//!
//! Seeded: each test prints its seed; `TEST_SEED=<n>` replays one.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use steadfast_engine::embedded::{EmbeddedOptions, EmbeddedStore};
use steadfast_engine::event::EventRecord;
use steadfast_engine::ids::RunKey;
use steadfast_engine::store::{AppendRequest, Error, Store};

mod support;
use support::{copy_dir, files_under, run_id, seed, signal, started};

/// Small segments so that histories span several of them.
fn options() -> EmbeddedOptions {
    EmbeddedOptions {
        log_segment_bytes: 64 << 10,
        sled_segment_bytes: 512 << 10,
        ..EmbeddedOptions::default()
    }
}

/// What was acknowledged: every run's records.
type Model = BTreeMap<RunKey, Vec<EventRecord>>;

/// Appends (durably) to `runs` new runs, `appends` times each in random order.
async fn write_histories(
    store: &EmbeddedStore,
    rng: &mut StdRng,
    runs: usize,
    appends: usize,
) -> Model {
    let mut model = Model::new();
    for _ in 0..runs {
        let key = RunKey::new("default", run_id(rng));
        let a = store
            .append(AppendRequest {
                key: key.clone(),
                expected_next_seq: 1,
                events: vec![started("")],
                time_ms: 1_000,
                wait_durable: true,
            })
            .await
            .unwrap();
        model.insert(key, a.records);
    }
    let keys: Vec<RunKey> = model.keys().cloned().collect();
    for i in 0..runs * appends {
        let key = &keys[rng.gen_range(0..keys.len())];
        let n = rng.gen_range(1..=3);
        let events = (0..n).map(|_| signal(rng)).collect();
        let next = model[key].len() as u64 + 1;
        let req = AppendRequest {
            key: key.clone(),
            expected_next_seq: next,
            events,
            time_ms: 1_000 + i as i64,
            wait_durable: true,
        };
        let a = store.append(req).await.unwrap();
        model.get_mut(key).unwrap().extend(a.records);
    }
    model
}

/// Every run's whole history equals what was acknowledged; or a read is refused naming that
/// run and a seq of it. Returns how many runs were refused.
async fn verify(store: &EmbeddedStore, model: &Model, what: &str) -> usize {
    let mut refused = 0;
    for (key, want) in model {
        match store.read_history(key, 1, 100_000).await {
            Ok(got) => assert_eq!(
                &got, want,
                "{what}: history of {key} differs from what was acknowledged"
            ),
            Err(Error::Corrupt {
                run: Some(r),
                seq: Some(s),
                ..
            }) if r == *key && s >= 1 && s <= want.len() as u64 => refused += 1,
            Err(e) => panic!("{what}: reading {key}: {e}"),
        }
        if let Some(last) = want.last() {
            let state = store
                .run_state(key)
                .await
                .unwrap_or_else(|e| panic!("{what}: state of {key}: {e}"));
            if let Some(s) = state {
                assert_eq!(s.last_seq, last.seq, "{what}: state of {key}");
            }
        }
    }
    refused
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

/// Where the written data of a preallocated segment ends (its zeros begin).
fn data_end(seg: &Path) -> u64 {
    let b = std::fs::read(seg).unwrap();
    let last = b.iter().rposition(|&x| x != 0).map_or(0, |i| i + 1);
    (last as u64).div_ceil(8) * 8
}

/// Histories acknowledged, the store dropped without a checkpoint (sled flushed, as at any
/// clean stop or by its background flusher; the log holds everything). Then the last log
/// segment is truncated at every byte offset of its final records and at random points:
/// sled then holds acknowledged events that the log lost, and open must name one of them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn truncated_log_is_refused_naming_run_and_seq() {
    let mut rng = StdRng::seed_from_u64(seed("truncated_log"));
    let pristine = tempfile::tempdir().unwrap();
    let model = {
        let (store, _) = EmbeddedStore::open(pristine.path(), options()).unwrap();
        write_histories(&store, &mut rng, 4, 25).await
    };
    let seg = segments(pristine.path()).pop().unwrap();
    let end = data_end(&seg);
    let mut offsets: Vec<u64> = (end.saturating_sub(700)..=end + 16).collect();
    offsets.extend((0..40).map(|_| rng.gen_range(0..end)));
    let (mut refused, mut refused_by_log, mut intact) = (0, 0, 0);
    for t in offsets {
        let work = tempfile::tempdir().unwrap();
        copy_dir(pristine.path(), work.path());
        let f = std::fs::OpenOptions::new()
            .write(true)
            .open(work.path().join("log").join(seg.file_name().unwrap()))
            .unwrap();
        f.set_len(t).unwrap();
        drop(f);
        let what = format!(
            "truncation at byte {t} of {} (data ends at {end})",
            seg.display()
        );
        match EmbeddedStore::open(work.path(), options()) {
            Ok((store, _)) => {
                assert!(
                    t >= end,
                    "{what}: open accepted a log that lost acknowledged records"
                );
                assert_eq!(verify(&store, &model, &what).await, 0, "{what}");
                intact += 1;
            }
            Err(Error::Corrupt {
                run: Some(run),
                seq: Some(seq),
                detail,
            }) => {
                assert!(t < end, "{what}: refused an intact log: {detail}");
                let h = model
                    .get(&run)
                    .unwrap_or_else(|| panic!("{what}: names unknown run {run}"));
                assert!(
                    seq >= 1 && seq <= h.len() as u64,
                    "{what}: names seq {seq} of a {}-event history",
                    h.len()
                );
                refused += 1;
            }
            // A cut before the segment header or inside an earlier batch's frames is refused
            // by the log itself (it cannot name a run: it knows only lsns).
            Err(Error::Corrupt {
                run: None, detail, ..
            }) if t < end && detail.contains("SF-LOG-002") => refused_by_log += 1,
            Err(e) => panic!("{what}: {e}"),
        }
    }
    eprintln!(
        "truncations: {refused} refused naming run and seq, {refused_by_log} refused by the log, {intact} intact"
    );
    assert!(refused > 0 && intact > 0);
}

/// A crash image: the data directory copied while the store runs, sled never flushed (its
/// background flusher off), the log synced for every acknowledged append. Open re-applies
/// the log and serves every acknowledged event; the store then keeps working.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crash_image_without_sled_flush_keeps_every_acknowledged_event() {
    let mut rng = StdRng::seed_from_u64(seed("crash_image"));
    let opts = EmbeddedOptions {
        sled_flush_every_ms: None,
        ..options()
    };
    for round in 0..3 {
        let live = tempfile::tempdir().unwrap();
        let image = tempfile::tempdir().unwrap();
        let (store, _) = EmbeddedStore::open(live.path(), opts.clone()).unwrap();
        let mut model = write_histories(&store, &mut rng, 5, 20).await;
        if round == 1 {
            // Part of the history is checkpointed, the rest only in the log.
            store.checkpoint().await.unwrap();
            model.extend(write_histories(&store, &mut rng, 3, 20).await);
        }
        copy_dir(live.path(), image.path());
        drop(store);
        let (store, report) = EmbeddedStore::open(image.path(), opts.clone()).unwrap();
        assert!(report.records_replayed > 0);
        assert_eq!(
            verify(&store, &model, &format!("crash image {round}")).await,
            0
        );
        // It keeps working, and a clean restart keeps everything too.
        let more = write_histories(&store, &mut rng, 2, 5).await;
        model.extend(more);
        store.close().await.unwrap();
        drop(store);
        let (store, report) = EmbeddedStore::open(image.path(), opts.clone()).unwrap();
        assert_eq!(
            report.records_replayed, 0,
            "a clean close checkpoints everything"
        );
        assert_eq!(
            verify(&store, &model, &format!("after crash image {round}")).await,
            0
        );
    }
}

/// Random bits flipped in the log's segments and in sled's files: open refuses, or every
/// acknowledged event is readable and verifies, or reads of a damaged run are refused
/// naming it. Never a panic.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flipped_bits_are_refused_or_harmless() {
    let mut rng = StdRng::seed_from_u64(seed("flipped_bits"));
    let pristine = tempfile::tempdir().unwrap();
    let model = {
        let (store, _) = EmbeddedStore::open(pristine.path(), options()).unwrap();
        let m = write_histories(&store, &mut rng, 4, 30).await;
        // Half the history is checkpointed into sled, half only in the log (and sled).
        store.checkpoint().await.unwrap();
        let mut m = m;
        m.extend(write_histories(&store, &mut rng, 2, 30).await);
        m
    };
    let mut sled_files = Vec::new();
    files_under(&pristine.path().join("sled"), &mut sled_files);
    let segs = segments(pristine.path());
    let (mut refused_open, mut refused_read, mut intact) = (0, 0, 0);
    for i in 0..80 {
        let work = tempfile::tempdir().unwrap();
        copy_dir(pristine.path(), work.path());
        let in_log = i % 2 == 0;
        let file = if in_log {
            segs[rng.gen_range(0..segs.len())].clone()
        } else {
            sled_files[rng.gen_range(0..sled_files.len())].clone()
        };
        let rel = file.strip_prefix(pristine.path()).unwrap().to_path_buf();
        let target = work.path().join(&rel);
        let mut bytes = std::fs::read(&target).unwrap();
        let len = if in_log {
            data_end(&target) as usize
        } else {
            bytes.len()
        };
        if len == 0 {
            continue;
        }
        let flips = rng.gen_range(1..=3);
        let mut at = Vec::new();
        for _ in 0..flips {
            let pos = rng.gen_range(0..len);
            bytes[pos] ^= 1 << rng.gen_range(0..8);
            at.push(pos);
        }
        std::fs::write(&target, &bytes).unwrap();
        let what = format!("flip {i}: bits at {at:?} of {}", rel.display());
        match EmbeddedStore::open(work.path(), options()) {
            // sled is a cache: damage there is repaired from the log, never refused.
            Err(Error::Corrupt { detail, .. }) if in_log => {
                eprintln!("{what}: {}", &detail[..detail.len().min(150)]);
                refused_open += 1
            }
            Err(e) => panic!("{what}: refused without naming corruption: {e}"),
            Ok((store, _)) => {
                let r = verify(&store, &model, &what).await;
                assert!(
                    r == 0 || in_log,
                    "{what}: damage to the read models refused {r} reads instead of being rebuilt from the log"
                );
                if r > 0 {
                    refused_read += 1;
                } else {
                    intact += 1;
                }
            }
        }
    }
    eprintln!(
        "flips: {refused_open} refused at open, {refused_read} refused on read, {intact} intact or rebuilt"
    );
}

/// Damage that sled's own checksums cannot see (written through sled's API, as a sled bug
/// or a bad write by an older version would): a flipped bit in a stored chunk, a missing
/// chunk, a damaged run state. sled is a cache of the log: open or the first read notices
/// (every record is verified against the chain, every state against its checksum and the
/// chain's end), rebuilds the run from the log, and serves exactly what was acknowledged.
/// Never a refusal while the log can answer, and no other run is affected.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn damaged_read_models_are_rebuilt_from_the_log() {
    let mut rng = StdRng::seed_from_u64(seed("damaged_read_models"));
    let pristine = tempfile::tempdir().unwrap();
    let model = {
        let (store, _) = EmbeddedStore::open(pristine.path(), options()).unwrap();
        let m = write_histories(&store, &mut rng, 4, 30).await;
        store.close().await.unwrap();
        m
    };
    let keys: Vec<&RunKey> = model.keys().collect();
    let (mut at_open, mut on_read) = (0, 0);
    for i in 0..60 {
        let work = tempfile::tempdir().unwrap();
        copy_dir(pristine.path(), work.path());
        let victim = keys[rng.gen_range(0..keys.len())].clone();
        let damage = {
            let db = open_sled(&work.path().join("sled"));
            let mut prefix = vec![b'e'];
            prefix.extend_from_slice(&victim.to_bytes());
            let chunks: Vec<(sled::IVec, sled::IVec)> =
                db.scan_prefix(&prefix).map(|r| r.unwrap()).collect();
            let (k, v) = chunks[rng.gen_range(0..chunks.len())].clone();
            let what = match i % 4 {
                0 | 1 => {
                    let mut v = v.to_vec();
                    let pos = rng.gen_range(0..v.len());
                    v[pos] ^= 1 << rng.gen_range(0..8);
                    db.insert(&k, v).unwrap();
                    format!("bit flipped at byte {pos} of a chunk")
                }
                2 => {
                    db.remove(&k).unwrap();
                    "a chunk removed".to_string()
                }
                _ => {
                    let mut sk = vec![b's'];
                    sk.extend_from_slice(&victim.to_bytes());
                    let mut st = db.get(&sk).unwrap().unwrap().to_vec();
                    let pos = rng.gen_range(0..st.len());
                    st[pos] ^= 1 << rng.gen_range(0..8);
                    db.insert(&sk, st).unwrap();
                    format!("bit flipped at byte {pos} of the run state")
                }
            };
            db.flush().unwrap();
            what
        };
        let what = format!("damage {i} to {victim}: {damage}");
        let (store, report) = EmbeddedStore::open(work.path(), options())
            .unwrap_or_else(|e| panic!("{what}: refused although the log holds everything: {e}"));
        if report.read_models_rebuilt.is_some() {
            at_open += 1;
        } else {
            on_read += 1;
        }
        // Pages from the middle first (they must not be served from damaged chunks either),
        // then the whole history of every run.
        let one = &model[&victim];
        for from in [2, one.len() as u64 / 2, one.len() as u64] {
            let h = store
                .read_history(&victim, from, 5)
                .await
                .unwrap_or_else(|e| panic!("{what}: page from {from}: {e}"));
            assert_eq!(
                &h[..],
                &one[from as usize - 1..(from as usize + 4).min(one.len())],
                "{what}: page from {from}"
            );
        }
        assert_eq!(verify(&store, &model, &what).await, 0, "{what}");
        let state = store.run_state(&victim).await.unwrap().unwrap();
        assert_eq!(state.last_hash, one.last().unwrap().hash, "{what}: state");
    }
    eprintln!("damage: {at_open} rebuilt at open, {on_read} rebuilt on read, 0 refused");
}

fn open_sled(path: &Path) -> sled::Db {
    // A copy: no other handle holds its lock.
    sled::Config::new()
        .path(path)
        .segment_size(512 << 10)
        .open()
        .unwrap()
}

/// Damage to an acknowledged record in the last log segment (not a torn write: later batches
/// follow it) is refused at open and named by run and seq, found through the read models.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn log_damage_is_named_by_run_and_seq() {
    let mut rng = StdRng::seed_from_u64(seed("log_damage_named"));
    let pristine = tempfile::tempdir().unwrap();
    let model = {
        let (store, _) = EmbeddedStore::open(pristine.path(), options()).unwrap();
        let mut m = write_histories(&store, &mut rng, 3, 40).await;
        // The last segment may have just rolled: write until it holds several batches, so
        // that the damaged record has acknowledged batches after it.
        while data_end(&segments(pristine.path()).pop().unwrap()) < 8192 {
            m.extend(write_histories(&store, &mut rng, 1, 10).await);
        }
        store.close().await.unwrap();
        m
    };
    let seg = segments(pristine.path()).pop().unwrap();
    let work = tempfile::tempdir().unwrap();
    copy_dir(pristine.path(), work.path());
    let target = work.path().join("log").join(seg.file_name().unwrap());
    let mut bytes = std::fs::read(&target).unwrap();
    // The payload of the first append record (kind 1) of the segment (segment header 64 B,
    // frames: len u32 LE at +4, kind at +24, 32-byte header, 8-aligned): its header still
    // verifies, so the log knows the lsn; later batches follow, so it is not a torn tail.
    assert!(
        data_end(&target) > 4096,
        "the last segment holds several batches"
    );
    let mut at = 64usize;
    let frame = loop {
        let len = u32::from_le_bytes(bytes[at + 4..at + 8].try_into().unwrap()) as usize;
        assert!(len > 0, "no append record in the last segment");
        if bytes[at + 24] == 1 {
            break at;
        }
        at += len.div_ceil(8) * 8;
    };
    bytes[frame + 32 + 3] ^= 0x10;
    std::fs::write(&target, &bytes).unwrap();
    match EmbeddedStore::open(work.path(), options()) {
        Err(Error::Corrupt {
            run: Some(run),
            seq: Some(seq),
            detail,
        }) => {
            let h = model.get(&run).expect("names a known run");
            assert!(seq >= 1 && seq <= h.len() as u64, "{detail}");
            eprintln!(
                "named {run} seq {seq}: {}",
                &detail[..detail.len().min(200)]
            );
        }
        Err(e) => panic!("refused without naming the run and seq: {e}"),
        Ok(_) => panic!("opened a log with a damaged acknowledged record"),
    }
}
