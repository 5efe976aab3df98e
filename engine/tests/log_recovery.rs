//! Recovery of the segment log (promise C2): round trips, segment rolls, checkpoints, torn
//! tails cut at every byte, and corruption refused with the right segment named.
//!
//! Randomized tests print their seed and accept `TEST_SEED`.

use std::path::{Path, PathBuf};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use steadfast_engine::log::{
    self, FRAME_HEADER_BYTES, Log, LogConfig, Lsn, Record, SEGMENT_HEADER_BYTES, TornTail,
    frame_bytes,
};

/// What open reported, with every record read back (each frame verified).
#[derive(Debug)]
struct Opened {
    records: Vec<Record>,
    torn_tail: Option<TornTail>,
    checkpoint_lsn: Lsn,
    first_lsn: Lsn,
}

/// Opens the log and reads it all: damage anywhere, found at open or by the reader, is an
/// error here.
fn open_all(cfg: LogConfig) -> Result<(Log, Opened), log::Error> {
    let (log, r) = Log::open(cfg)?;
    let records = log.read_from(1)?.collect::<Result<Vec<_>, _>>()?;
    assert_eq!(r.last_lsn, records.last().map_or(0, |r| r.lsn));
    let opened = Opened {
        records,
        torn_tail: r.torn_tail,
        checkpoint_lsn: r.checkpoint_lsn,
        first_lsn: r.first_lsn,
    };
    Ok((log, opened))
}

fn config(dir: &Path, segment_bytes: u64) -> LogConfig {
    LogConfig {
        segment_bytes,
        max_batch_bytes: 4096.min(segment_bytes as usize),
        ..LogConfig::new(dir)
    }
}

fn seed() -> u64 {
    let seed = std::env::var("TEST_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(rand::random);
    println!("TEST_SEED={seed}");
    seed
}

/// Submits each inner vec as one submission and waits for it: one batch per submission
/// when it fits.
fn append(log: &Log, batches: &[Vec<(u8, Vec<u8>)>]) -> Vec<Record> {
    let mut out = Vec::new();
    for b in batches {
        let last = log.submit(b.clone()).unwrap().wait_blocking().unwrap();
        let first = last + 1 - b.len() as Lsn;
        for (i, (kind, data)) in b.iter().enumerate() {
            out.push(Record {
                lsn: first + i as Lsn,
                kind: *kind,
                data: data.clone(),
            });
        }
    }
    out
}

fn random_batches(
    rng: &mut StdRng,
    n: usize,
    max_records: usize,
    max_len: usize,
) -> Vec<Vec<(u8, Vec<u8>)>> {
    (0..n)
        .map(|_| {
            (0..rng.gen_range(1..=max_records))
                .map(|_| {
                    let len = rng.gen_range(0..=max_len);
                    (rng.r#gen(), (0..len).map(|_| rng.r#gen()).collect())
                })
                .collect()
        })
        .collect()
}

fn segment_files(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "seg"))
        .collect();
    v.sort();
    v
}

fn copy_dir(from: &Path) -> tempfile::TempDir {
    let to = tempfile::tempdir().unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let p = e.unwrap().path();
        if p.file_name().unwrap() != "LOCK" {
            std::fs::copy(&p, to.path().join(p.file_name().unwrap())).unwrap();
        }
    }
    to
}

/// A frame found by walking segments with the documented layout.
#[derive(Debug, Clone)]
struct FrameLoc {
    segment: PathBuf,
    start: usize,
    size: usize,
    batch: u64,
}

fn frames(dir: &Path) -> Vec<FrameLoc> {
    let mut out = Vec::new();
    for seg in segment_files(dir) {
        let buf = std::fs::read(&seg).unwrap();
        let mut pos = SEGMENT_HEADER_BYTES;
        while pos + FRAME_HEADER_BYTES <= buf.len() {
            let len = u32::from_le_bytes(buf[pos + 4..pos + 8].try_into().unwrap()) as usize;
            if len == 0 {
                break;
            }
            let batch = u64::from_le_bytes(buf[pos + 16..pos + 24].try_into().unwrap());
            let size = frame_bytes(len - FRAME_HEADER_BYTES);
            out.push(FrameLoc {
                segment: seg.clone(),
                start: pos,
                size,
                batch,
            });
            pos += size;
        }
    }
    out
}

#[test]
fn log_round_trip_in_order_with_lsns() {
    let dir = tempfile::tempdir().unwrap();
    let mut rng = StdRng::seed_from_u64(1);
    let (log, rec) = open_all(LogConfig::new(dir.path())).unwrap();
    assert!(rec.records.is_empty() && rec.torn_tail.is_none() && rec.checkpoint_lsn == 0);
    let mut want = append(&log, &random_batches(&mut rng, 20, 5, 300));
    want.extend(append(
        &log,
        &[vec![(0, vec![])], vec![(255, vec![0; 1000])]],
    ));
    assert_eq!(log.last_lsn(), want.len() as Lsn);
    log.close().unwrap();

    let (log, rec) = open_all(LogConfig::new(dir.path())).unwrap();
    assert_eq!(rec.records, want);
    assert!(rec.torn_tail.is_none());
    assert_eq!(log.last_lsn(), want.len() as Lsn);
    want.extend(append(&log, &random_batches(&mut rng, 5, 3, 50)));
    drop(log); // Drop, like close, drains and stops the writer.

    let (_log, rec) = open_all(LogConfig::new(dir.path())).unwrap();
    assert_eq!(rec.records, want);
    let lsns: Vec<Lsn> = rec.records.iter().map(|r| r.lsn).collect();
    assert_eq!(lsns, (1..=want.len() as Lsn).collect::<Vec<_>>());
}

#[test]
fn log_round_trip_across_segment_rolls() {
    let dir = tempfile::tempdir().unwrap();
    let mut rng = StdRng::seed_from_u64(2);
    let cfg = LogConfig {
        segment_bytes: 1024,
        max_batch_bytes: 512,
        ..LogConfig::new(dir.path())
    };
    let (log, _) = open_all(cfg.clone()).unwrap();
    // Some submissions exceed a batch and a segment's room: they are split across syncs.
    let mut want = append(&log, &random_batches(&mut rng, 60, 12, 200));
    let stats = log.stats();
    assert!(stats.segments_created >= 10, "{stats:?}");
    assert_eq!(stats.syncs, stats.batches);
    assert_eq!(stats.records, want.len() as u64);
    log.close().unwrap();
    assert_eq!(
        segment_files(dir.path()).len() as u64,
        stats.segments_created + 1
    );

    let (log, rec) = open_all(cfg.clone()).unwrap();
    assert_eq!(rec.records, want);
    want.extend(append(&log, &random_batches(&mut rng, 20, 12, 200)));
    log.close().unwrap();
    let (_log, rec) = open_all(cfg).unwrap();
    assert_eq!(rec.records, want);
}

#[test]
fn log_checkpoint_keeps_every_segment() {
    let dir = tempfile::tempdir().unwrap();
    let mut rng = StdRng::seed_from_u64(3);
    let cfg = config(dir.path(), 1024);
    let (log, _) = open_all(cfg.clone()).unwrap();
    let want = append(&log, &random_batches(&mut rng, 80, 3, 60));
    let n = want.len() as Lsn;
    let upto = n * 2 / 3;
    let before = segment_files(dir.path());
    assert!(before.len() >= 3);
    log.checkpoint(upto).unwrap();
    assert_eq!(
        segment_files(dir.path()),
        before,
        "a checkpoint deletes nothing"
    );
    let more = append(&log, &random_batches(&mut rng, 5, 3, 60));
    log.close().unwrap();

    let (log, rec) = open_all(cfg.clone()).unwrap();
    assert_eq!((rec.checkpoint_lsn, rec.first_lsn), (upto, 1));
    let all: Vec<Record> = want.into_iter().chain(more).collect();
    assert_eq!(rec.records, all);
    // Reading from the checkpoint on yields exactly the records after it.
    let suffix: Vec<Record> = log
        .read_from(upto + 1)
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(suffix, all[upto as usize..].to_vec());
    log.checkpoint(log.durable_lsn()).unwrap();
    let last = append(&log, &[vec![(9, b"after".to_vec())]]);
    log.close().unwrap();
    let (_log, rec) = open_all(cfg).unwrap();
    assert_eq!(rec.records, [all, last].concat());
    assert!(segment_files(dir.path()).len() >= before.len());
}

/// The old code deleted the segments a checkpoint covered (and open finished an interrupted
/// deletion). Such a directory still opens; the log starts where its first segment does.
#[test]
fn log_written_by_the_old_code_opens() {
    let dir = tempfile::tempdir().unwrap();
    let mut rng = StdRng::seed_from_u64(4);
    let cfg = config(dir.path(), 1024);
    let (log, _) = open_all(cfg.clone()).unwrap();
    let want = append(&log, &random_batches(&mut rng, 40, 3, 60));
    log.checkpoint(30).unwrap();
    log.close().unwrap();
    // A deletion interrupted before it began: everything is still there.
    let (log, rec) = open_all(cfg.clone()).unwrap();
    assert_eq!((rec.checkpoint_lsn, rec.first_lsn), (30, 1));
    assert_eq!(rec.records, want);
    drop(log);
    // What the old checkpoint left: the segments wholly covered by lsn ..=30 deleted.
    let segs = segment_files(dir.path());
    let firsts: Vec<Lsn> = segs
        .iter()
        .map(|p| p.file_stem().unwrap().to_str().unwrap().parse().unwrap())
        .collect();
    let covered = firsts.windows(2).take_while(|w| w[1] <= 31).count();
    assert!(covered >= 1, "{firsts:?}");
    for p in &segs[..covered] {
        std::fs::remove_file(p).unwrap();
    }
    let (log, rec) = open_all(cfg.clone()).unwrap();
    let first = firsts[covered];
    assert!(first > 1 && first <= 31, "{firsts:?}");
    assert_eq!((rec.checkpoint_lsn, rec.first_lsn), (30, first));
    assert_eq!(log.first_lsn(), first);
    // Reading from before the first record starts at the first record.
    assert_eq!(rec.records, want[first as usize - 1..].to_vec());
    let more = append(&log, &[vec![(5, b"new".to_vec())]]);
    log.close().unwrap();
    let (_log, rec) = open_all(cfg).unwrap();
    assert_eq!(
        rec.records,
        [want[first as usize - 1..].to_vec(), more].concat()
    );
}

/// Builds a log of acknowledged batches plus one final multi-record batch; returns the
/// directory, the records before the final batch, and the final batch's byte range.
fn log_with_final_batch(seed: u64) -> (tempfile::TempDir, Vec<Record>, PathBuf, usize, usize) {
    let dir = tempfile::tempdir().unwrap();
    let mut rng = StdRng::seed_from_u64(seed);
    let (log, _) = open_all(config(dir.path(), 8192)).unwrap();
    let earlier = append(&log, &random_batches(&mut rng, 6, 4, 40));
    let before = log.stats().bytes_written as usize;
    let sizes = [0usize, 1, 13, 40, 7, 100];
    let last: Vec<(u8, Vec<u8>)> = sizes.iter().map(|&n| (3, vec![0xab; n])).collect();
    append(&log, &[last]);
    let after = log.stats().bytes_written as usize;
    log.close().unwrap();
    let segs = segment_files(dir.path());
    assert_eq!(segs.len(), 1);
    let fr = frames(dir.path());
    let max_batch = fr.iter().map(|f| f.batch).max().unwrap();
    let start = fr.iter().find(|f| f.batch == max_batch).unwrap().start;
    assert_eq!(start, SEGMENT_HEADER_BYTES + before);
    (
        dir,
        earlier,
        segs[0].clone(),
        start,
        SEGMENT_HEADER_BYTES + after,
    )
}

/// After a torn tail was cut, the log takes new appends and a further open sees them.
fn appends_after_recovery_work(dir: &Path, mut expect: Vec<Record>) {
    let (log, _) = open_all(config(dir, 8192)).unwrap();
    expect.extend(append(&log, &[vec![(7, b"new".to_vec()), (8, vec![])]]));
    log.close().unwrap();
    let (_log, rec) = open_all(config(dir, 8192)).unwrap();
    assert!(rec.torn_tail.is_none());
    assert_eq!(rec.records, expect);
}

#[test]
fn log_torn_final_batch_is_cut_at_every_byte() {
    let (dir, earlier, seg, start, end) = log_with_final_batch(5);
    let full = std::fs::read(&seg).unwrap();
    for cut in start..end {
        let copy = copy_dir(dir.path());
        let seg_copy = copy.path().join(seg.file_name().unwrap());
        std::fs::write(&seg_copy, &full[..cut]).unwrap();
        let (log, rec) = open_all(config(copy.path(), 8192))
            .unwrap_or_else(|e| panic!("cut at {cut}: open failed: {e}"));
        assert_eq!(rec.records, earlier, "cut at {cut}");
        // Zeros are unwritten space; any nonzero byte of the final batch is a torn tail.
        if full[start..cut].iter().any(|&b| b != 0) {
            let torn = rec
                .torn_tail
                .unwrap_or_else(|| panic!("cut at {cut}: no torn tail"));
            assert_eq!(torn.segment, seg_copy);
            assert_eq!(torn.offset as usize, start, "cut at {cut}");
            assert!(torn.bytes_cut > 0 && torn.bytes_cut as usize <= cut - start);
            assert!(torn.records_cut < 6);
        } else {
            assert!(rec.torn_tail.is_none(), "cut at {cut}");
        }
        drop(log);
        appends_after_recovery_work(copy.path(), earlier.clone());
    }
}

#[test]
fn log_garbage_or_zeros_after_the_tail() {
    let (dir, earlier, seg, start, end) = log_with_final_batch(6);
    let full = std::fs::read(&seg).unwrap();
    let whole = copy_dir(dir.path());
    let (log, rec) = open_all(config(whole.path(), 8192)).unwrap();
    let all = rec.records;
    assert_eq!(all[..earlier.len()], earlier[..]);
    assert_eq!(all.len(), earlier.len() + 6);
    drop(log);
    let mut rng = StdRng::seed_from_u64(seed());
    let garbage: Vec<u8> = (0..300).map(|_| rng.gen_range(1..=255)).collect();

    // Zeros appended to the file: nothing to cut.
    let copy = copy_dir(dir.path());
    let p = copy.path().join(seg.file_name().unwrap());
    let mut bytes = full.clone();
    bytes.extend(vec![0u8; 4096]);
    std::fs::write(&p, &bytes).unwrap();
    let (log, rec) = open_all(config(copy.path(), 8192)).unwrap();
    assert_eq!((rec.records.clone(), rec.torn_tail), (all.clone(), None));
    drop(log);
    appends_after_recovery_work(copy.path(), all.clone());

    // Garbage right after the last whole batch, and garbage ending exactly where one batch
    // (4096 bytes here) from there ends: a torn batch whose headers are all lost.
    for at in [end, end + 4096 - garbage.len()] {
        let copy = copy_dir(dir.path());
        let p = copy.path().join(seg.file_name().unwrap());
        let mut bytes = full.clone();
        bytes.truncate(at);
        bytes.extend(&garbage);
        bytes.resize(bytes.len().max(full.len()), 0);
        std::fs::write(&p, &bytes).unwrap();
        let (log, rec) = open_all(config(copy.path(), 8192)).unwrap();
        assert_eq!(rec.records, all, "garbage at {at}");
        let torn = rec.torn_tail.expect("garbage reported");
        assert_eq!((torn.offset as usize, torn.records_cut), (end, 0));
        assert_eq!(torn.bytes_cut as usize, at + garbage.len() - end);
        drop(log);
        appends_after_recovery_work(copy.path(), all.clone());
    }
    // Garbage beyond the preallocated end, far past where one batch after the last whole
    // one could reach: no torn write explains it. (The old code cut it as a torn tail.)
    let copy = copy_dir(dir.path());
    let p = copy.path().join(seg.file_name().unwrap());
    let mut bytes = full.clone();
    bytes.extend(&garbage);
    std::fs::write(&p, &bytes).unwrap();
    match open_all(config(copy.path(), 8192)) {
        Err(e @ log::Error::Corrupt { .. }) => {
            assert!(e.to_string().contains("beyond the"), "{e}");
        }
        Err(e) => panic!("wrong error {e}"),
        Ok(_) => panic!("garbage far beyond the tail was cut as a torn write"),
    }
    assert!(start < end);
}

#[test]
fn log_bit_flip_in_final_batch_is_a_torn_tail() {
    let (dir, earlier, seg, start, end) = log_with_final_batch(7);
    let s = seed();
    let mut rng = StdRng::seed_from_u64(s);
    for _ in 0..50 {
        let copy = copy_dir(dir.path());
        let p = copy.path().join(seg.file_name().unwrap());
        let mut bytes = std::fs::read(&p).unwrap();
        let bit = rng.gen_range(start * 8..end * 8);
        bytes[bit / 8] ^= 1 << (bit % 8);
        std::fs::write(&p, &bytes).unwrap();
        let (_log, rec) = open_all(config(copy.path(), 8192))
            .unwrap_or_else(|e| panic!("seed {s} bit {bit}: {e}"));
        assert_eq!(rec.records, earlier, "seed {s} bit {bit}");
        assert_eq!(rec.torn_tail.expect("torn").offset as usize, start);
    }
}

#[test]
fn log_bit_flips_before_the_final_batch_are_corruption() {
    let base = tempfile::tempdir().unwrap();
    let cfg = config(base.path(), 1024);
    let (log, _) = open_all(cfg).unwrap();
    append(
        &log,
        &random_batches(&mut StdRng::seed_from_u64(8), 30, 4, 50),
    );
    log.close().unwrap();
    let fr = frames(base.path());
    let final_batch = fr.iter().map(|f| f.batch).max().unwrap();
    let candidates: Vec<&FrameLoc> = fr.iter().filter(|f| f.batch < final_batch).collect();
    assert!(segment_files(base.path()).len() >= 3);

    let s = seed();
    for i in 0..200u64 {
        let mut rng = StdRng::seed_from_u64(s.wrapping_add(i));
        let f = candidates[rng.gen_range(0..candidates.len())];
        let bit = rng.gen_range(0..f.size * 8);
        let copy = copy_dir(base.path());
        let p = copy.path().join(f.segment.file_name().unwrap());
        let mut bytes = std::fs::read(&p).unwrap();
        bytes[f.start + bit / 8] ^= 1 << (bit % 8);
        std::fs::write(&p, &bytes).unwrap();
        let ctx = format!("TEST_SEED={s} iteration {i}: frame {f:?} bit {bit}");
        match open_all(config(copy.path(), 1024)) {
            Err(log::Error::Corrupt {
                segment,
                offset,
                detail,
                ..
            }) => {
                assert_eq!(segment, p, "{ctx}: {detail}");
                assert_eq!(offset as usize, f.start, "{ctx}: {detail}");
            }
            Err(e) => panic!("{ctx}: wrong error {e}"),
            Ok(_) => panic!("{ctx}: corruption not detected"),
        }
    }
}

#[test]
fn log_structural_damage_is_corruption() {
    let base = tempfile::tempdir().unwrap();
    let (log, _) = open_all(config(base.path(), 1024)).unwrap();
    append(
        &log,
        &random_batches(&mut StdRng::seed_from_u64(9), 30, 4, 50),
    );
    // Small batches at the end, so that the last segment holds several.
    append(
        &log,
        &[vec![(1, vec![1])], vec![(2, vec![2])], vec![(3, vec![3])]],
    );
    log.close().unwrap();
    let segs = segment_files(base.path());
    assert!(segs.len() >= 3);
    let name = |i: usize| segs[i].file_name().unwrap().to_owned();
    let expect_corrupt =
        |copy: &tempfile::TempDir, seg: &std::ffi::OsStr, what: &str| match open_all(config(
            copy.path(),
            1024,
        )) {
            Err(e @ log::Error::Corrupt { .. }) => {
                let log::Error::Corrupt { segment, .. } = &e else {
                    unreachable!()
                };
                assert_eq!(segment.file_name().unwrap(), seg, "{what}: {e}");
                assert_eq!(e.code(), "SF-LOG-002");
            }
            Err(e) => panic!("{what}: wrong error {e}"),
            Ok(_) => panic!("{what}: not detected"),
        };

    // A missing middle segment: an lsn gap.
    let c = copy_dir(base.path());
    std::fs::remove_file(c.path().join(name(1))).unwrap();
    expect_corrupt(&c, &name(2), "missing segment");

    // A missing first segment with no checkpoint covering it.
    let c = copy_dir(base.path());
    std::fs::remove_file(c.path().join(name(0))).unwrap();
    expect_corrupt(&c, &name(1), "missing first segment");

    // A sealed segment cut short.
    let c = copy_dir(base.path());
    let fr: Vec<FrameLoc> = frames(base.path())
        .into_iter()
        .filter(|f| f.segment == segs[0])
        .collect();
    let bytes = std::fs::read(&segs[0]).unwrap();
    // At a batch boundary the segment looks whole; the gap shows at the next one.
    let last_batch = fr.last().unwrap().batch;
    let boundary = fr.iter().find(|f| f.batch == last_batch).unwrap().start;
    std::fs::write(c.path().join(name(0)), &bytes[..boundary]).unwrap();
    expect_corrupt(&c, &name(1), "sealed segment cut at a batch boundary");
    // Inside a batch, the segment itself is incomplete.
    let c = copy_dir(base.path());
    let inside = fr.last().unwrap().start + 8;
    std::fs::write(c.path().join(name(0)), &bytes[..inside]).unwrap();
    expect_corrupt(&c, &name(0), "sealed segment cut inside a batch");

    // A lost page in the last segment, followed by intact later batches.
    let c = copy_dir(base.path());
    let last = segs.len() - 1;
    let fr: Vec<FrameLoc> = frames(base.path())
        .into_iter()
        .filter(|f| f.segment == segs[last])
        .collect();
    let first_batch = fr[0].batch;
    assert!(
        fr.iter().any(|f| f.batch > first_batch),
        "last segment needs two batches"
    );
    let p = c.path().join(name(last));
    let mut bytes = std::fs::read(&p).unwrap();
    bytes[fr[0].start..fr[0].start + fr[0].size].fill(0);
    std::fs::write(&p, &bytes).unwrap();
    expect_corrupt(&c, &name(last), "zeroed frame before later batches");

    // A bad segment header.
    let c = copy_dir(base.path());
    let p = c.path().join(name(1));
    let mut bytes = std::fs::read(&p).unwrap();
    bytes[20] ^= 1;
    std::fs::write(&p, &bytes).unwrap();
    expect_corrupt(&c, &name(1), "segment header");

    // A damaged checkpoint file.
    let c = copy_dir(base.path());
    std::fs::write(c.path().join("checkpoint"), b"not a checkpoint at all!").unwrap();
    expect_corrupt(&c, std::ffi::OsStr::new("checkpoint"), "checkpoint");
}

#[test]
fn log_arbitrary_segment_bytes_never_panic() {
    let base = tempfile::tempdir().unwrap();
    let (log, _) = open_all(config(base.path(), 1024)).unwrap();
    append(
        &log,
        &random_batches(&mut StdRng::seed_from_u64(10), 20, 4, 50),
    );
    log.close().unwrap();
    let segs = segment_files(base.path());
    let s = seed();
    let mut rng = StdRng::seed_from_u64(s);
    for i in 0..100 {
        let c = copy_dir(base.path());
        let p = c
            .path()
            .join(segs[rng.gen_range(0..segs.len())].file_name().unwrap());
        let mut bytes = std::fs::read(&p).unwrap();
        for _ in 0..rng.gen_range(1..20) {
            let at = rng.gen_range(0..bytes.len());
            bytes[at] = rng.r#gen();
        }
        if rng.gen_bool(0.3) {
            bytes.truncate(rng.gen_range(0..bytes.len()));
        }
        std::fs::write(&p, &bytes).unwrap();
        // Any outcome but a panic (and no acknowledged record changed) is acceptable.
        if let Ok((_log, rec)) = open_all(config(c.path(), 1024)) {
            for (j, r) in rec.records.iter().enumerate() {
                assert_eq!(r.lsn, j as Lsn + 1, "TEST_SEED={s} iteration {i}");
            }
        }
    }
}

/// A one-segment log whose batches are given; returns the directory, the records, the
/// segment and each batch's (start, end) offsets.
fn log_of_batches(
    batches: &[Vec<(u8, Vec<u8>)>],
    segment_bytes: u64,
    max_batch_bytes: usize,
) -> (
    tempfile::TempDir,
    LogConfig,
    Vec<Record>,
    PathBuf,
    Vec<(usize, usize)>,
) {
    let dir = tempfile::tempdir().unwrap();
    let cfg = LogConfig {
        segment_bytes,
        max_batch_bytes,
        ..LogConfig::new(dir.path())
    };
    let (log, _) = open_all(cfg.clone()).unwrap();
    let records = append(&log, batches);
    log.close().unwrap();
    let segs = segment_files(dir.path());
    assert_eq!(segs.len(), 1);
    let fr = frames(dir.path());
    let mut spans: Vec<(usize, usize)> = Vec::new();
    let mut last_batch = None;
    for f in &fr {
        if last_batch == Some(f.batch) {
            spans.last_mut().unwrap().1 = f.start + f.size;
        } else {
            spans.push((f.start, f.start + f.size));
            last_batch = Some(f.batch);
        }
    }
    assert_eq!(spans.len(), batches.len(), "one batch per submission");
    (dir, cfg, records, segs[0].clone(), spans)
}

fn expect_corrupt_at(cfg: LogConfig, seg: &Path, offset: usize, lsn: Lsn, what: &str) {
    match open_all(cfg) {
        Err(e @ log::Error::Corrupt { .. }) => {
            let log::Error::Corrupt {
                segment,
                offset: o,
                lsn: l,
                ..
            } = &e
            else {
                unreachable!()
            };
            assert_eq!(segment.file_name(), seg.file_name(), "{what}: {e}");
            assert_eq!((*o as usize, *l), (offset, Some(lsn)), "{what}: {e}");
            assert!(e.to_string().contains(&format!("lsn {lsn}")), "{e}");
        }
        Err(e) => panic!("{what}: wrong error {e}"),
        Ok((_, rec)) => panic!("{what}: opened, torn tail {:?}", rec.torn_tail),
    }
}

/// Damage at the very end of the log that spans two acknowledged batches is corruption,
/// not a torn write: only the last batch can be torn.
#[test]
fn log_damage_across_two_acknowledged_batches_at_the_end_is_refused() {
    let s = seed();
    let mut rng = StdRng::seed_from_u64(s);
    let mut garbage = |n: usize| -> Vec<u8> { (0..n).map(|_| rng.gen_range(1..=255)).collect() };

    // Small batches: the second-to-last one wholly garbage, the last one's payload damaged
    // but its header intact. The old code (which looked only for wholly intact frames
    // after the damage) cut both as one torn tail.
    let batches: Vec<Vec<(u8, Vec<u8>)>> = (0..6u8).map(|i| vec![(i, vec![i; 100])]).collect();
    let (dir, cfg, records, seg, spans) = log_of_batches(&batches, 8192, 4096);
    let (a, b) = spans[4];
    let (c, _) = spans[5];
    assert_eq!(b, c);
    let mut bytes = std::fs::read(&seg).unwrap();
    bytes[a..b].copy_from_slice(&garbage(b - a));
    bytes[c + FRAME_HEADER_BYTES..c + FRAME_HEADER_BYTES + 8].copy_from_slice(&garbage(8));
    std::fs::write(&seg, &bytes).unwrap();
    expect_corrupt_at(
        cfg.clone(),
        &seg,
        a,
        records[4].lsn,
        "header of the last batch",
    );
    drop(dir);

    // Big batches, both wholly garbage: no header survives, but the damage spans more than
    // one batch may.
    let batches: Vec<Vec<(u8, Vec<u8>)>> = (0..4u8)
        .map(|i| (0..3).map(|_| (i, vec![i; 900])).collect())
        .collect();
    let (dir, cfg, records, seg, spans) = log_of_batches(&batches, 32768, 4096);
    let (a, _) = spans[2];
    let (_, d) = spans[3];
    assert!(d - a > 4096, "two batches exceed one batch's bytes");
    let good = std::fs::read(&seg).unwrap();
    let mut bytes = good.clone();
    bytes[a..d].copy_from_slice(&garbage(d - a));
    std::fs::write(&seg, &bytes).unwrap();
    let first_damaged = records.iter().find(|r| r.kind == 2).unwrap().lsn;
    expect_corrupt_at(cfg.clone(), &seg, a, first_damaged, "span of two batches");
    // The same garbage over the last batch alone is a torn write, and is cut.
    let (c, _) = spans[3];
    bytes[a..c].copy_from_slice(&good[a..c]);
    std::fs::write(&seg, &bytes).unwrap();
    let (_log, rec) = open_all(cfg).unwrap();
    assert_eq!(rec.records, records[..9].to_vec());
    assert_eq!(rec.torn_tail.unwrap().offset as usize, c);
    drop(dir);
}

/// A torn last batch leaves any subset of its pages on disk, each page old, new, or a
/// prefix of its 512-byte sectors new: every such image is cut back to the batch before.
#[test]
fn log_torn_last_batch_any_subset_of_pages_is_cut() {
    const PAGE: usize = 4096;
    const SECTOR: usize = 512;
    let mut batches: Vec<Vec<(u8, Vec<u8>)>> = (0..5u8).map(|i| vec![(i, vec![i; 300])]).collect();
    // The last batch: 14 records of ~1 KiB, spanning four or five pages.
    batches.push((0..14u8).map(|i| (9, vec![i ^ 0x5a; 1000])).collect());
    let (dir, cfg, records, seg, spans) = log_of_batches(&batches, 65536, 16384);
    let (start, end) = *spans.last().unwrap();
    assert!(end - start > 3 * PAGE);
    let earlier = records[..5].to_vec();
    let new = std::fs::read(&seg).unwrap();
    let mut old = new.clone();
    old[start..end].fill(0);
    let s = seed();
    let mut rng = StdRng::seed_from_u64(s);
    let pages: Vec<usize> = (start / PAGE..end.div_ceil(PAGE)).collect();
    let mut outcomes = std::collections::HashSet::new();
    for i in 0..150 {
        let mut img = old.clone();
        for &p in &pages {
            let keep = match rng.gen_range(0..3) {
                0 => 0,
                1 => PAGE,
                _ => rng.gen_range(1..PAGE / SECTOR) * SECTOR,
            };
            let from = p * PAGE;
            let to = (from + keep).min(new.len());
            img[from..to].copy_from_slice(&new[from..to]);
        }
        let c = copy_dir(dir.path());
        let p = c.path().join(seg.file_name().unwrap());
        std::fs::write(&p, &img).unwrap();
        let ctx = format!("TEST_SEED={s} image {i}");
        let (log, rec) = open_all(LogConfig {
            dir: c.path().to_path_buf(),
            ..cfg.clone()
        })
        .unwrap_or_else(|e| panic!("{ctx}: {e}"));
        if img[start..end] == new[start..end] {
            assert_eq!(rec.records, records, "{ctx}: all pages kept");
            outcomes.insert("whole");
        } else if img[start..end].iter().all(|&b| b == 0) {
            assert_eq!(
                (rec.records.clone(), rec.torn_tail),
                (earlier.clone(), None)
            );
            outcomes.insert("none");
        } else {
            assert_eq!(rec.records, earlier, "{ctx}");
            let torn = rec.torn_tail.unwrap_or_else(|| panic!("{ctx}: not cut"));
            assert_eq!(torn.offset as usize, start, "{ctx}");
            assert!(torn.records_cut <= 14, "{ctx}");
            outcomes.insert("cut");
        }
        let more = append(&log, &[vec![(1, b"after".to_vec())]]);
        drop(log);
        let (_log, rec) = open_all(LogConfig {
            dir: c.path().to_path_buf(),
            ..cfg.clone()
        })
        .unwrap();
        assert_eq!(rec.records.last(), more.last(), "{ctx}");
    }
    assert!(outcomes.contains("cut"), "{outcomes:?}");
}
