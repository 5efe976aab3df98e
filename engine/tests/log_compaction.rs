//! Compaction of sealed log segments (`Log::compact`): kept records come back with their
//! original lsns and payloads, across reopens, while submitters and readers run; the
//! segment being written is refused; a power cut at any I/O of a compaction leaves either
//! the old or the new segment; damage in a compacted segment is found on read.
//!
//! Randomized tests print their seed and accept `TEST_SEED`.

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use steadfast_engine::log::sim::SimVfs;
use steadfast_engine::log::{
    self, FRAME_HEADER_BYTES, Log, LogConfig, Lsn, Record, SEGMENT_HEADER_BYTES, frame_bytes,
};

fn seed() -> u64 {
    let seed = std::env::var("TEST_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(rand::random);
    println!("TEST_SEED={seed}");
    seed
}

fn config(dir: &Path) -> LogConfig {
    LogConfig {
        segment_bytes: 4096,
        max_batch_bytes: 1024,
        ..LogConfig::new(dir)
    }
}

/// The payload of record `lsn`: self-describing, of a length that varies with it.
fn payload(lsn: Lsn) -> Vec<u8> {
    let mut p = format!("record {lsn}:").into_bytes();
    p.extend((0..(lsn * 37 % 150) as usize).map(|i| (i as u64 ^ lsn) as u8));
    p
}

/// Appends `n` records in submissions of 1-3 (so batches hold several records) and
/// returns them.
fn append(log: &Log, n: u64) -> Vec<Record> {
    let mut out = Vec::new();
    let mut lsn = log.last_lsn() + 1;
    let end = lsn + n;
    while lsn < end {
        let k = (lsn % 3 + 1).min(end - lsn);
        let batch: Vec<(u8, Vec<u8>)> = (lsn..lsn + k).map(|l| (l as u8, payload(l))).collect();
        let last = log.submit(batch.clone()).unwrap().wait_blocking().unwrap();
        assert_eq!(last, lsn + k - 1);
        for (i, (kind, data)) in batch.into_iter().enumerate() {
            out.push(Record {
                lsn: lsn + i as Lsn,
                kind,
                data,
            });
        }
        lsn += k;
    }
    out
}

fn read_all(log: &Log, from: Lsn) -> Result<Vec<Record>, log::Error> {
    log.read_from(from)?.collect()
}

fn reopen(dir: &Path) -> Log {
    Log::open(config(dir)).unwrap().0
}

/// The records `keep` leaves of `all` in `[first, end)`, and all others unchanged.
fn expected(all: &[Record], first: Lsn, end: Lsn, keep: impl Fn(&Record) -> bool) -> Vec<Record> {
    all.iter()
        .filter(|r| !(first..end).contains(&r.lsn) || keep(r))
        .cloned()
        .collect()
}

#[test]
fn compaction_keeps_chosen_records_with_their_lsns_across_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let (log, _) = Log::open(config(dir.path())).unwrap();
    let mut all = append(&log, 120);
    let segments = log.segments();
    assert!(segments.len() >= 4, "{segments:?}");
    assert!(
        segments
            .iter()
            .rev()
            .skip(1)
            .all(|s| s.sealed && !s.compacted)
    );
    assert!(!segments.last().unwrap().sealed);
    let odd = |r: &Record| r.lsn % 2 == 1;
    let mut want = all.clone();
    for s in segments.iter().filter(|s| s.sealed) {
        let end = s.end_lsn.unwrap();
        let report = log.compact(s.first_lsn, &mut |r| odd(r)).unwrap();
        let held = (s.first_lsn..end).count() as u64;
        let kept = (s.first_lsn..end).filter(|l| l % 2 == 1).count() as u64;
        assert_eq!(
            (report.records_kept, report.records_dropped),
            (kept, held - kept)
        );
        assert_eq!(report.bytes_before, s.file_bytes);
        let frames: u64 = all
            .iter()
            .filter(|r| (s.first_lsn..end).contains(&r.lsn) && odd(r))
            .map(|r| frame_bytes(r.data.len()) as u64)
            .sum();
        assert_eq!(report.bytes_after, SEGMENT_HEADER_BYTES as u64 + frames);
        assert_eq!(report.end_lsn, end);
        want = expected(&want, s.first_lsn, end, odd);
    }
    assert_eq!(read_all(&log, 1).unwrap(), want);
    // Starting inside a gap, and on a kept record.
    for from in [2, 3, 40, 41] {
        let tail: Vec<Record> = want.iter().filter(|r| r.lsn >= from).cloned().collect();
        assert_eq!(read_all(&log, from).unwrap(), tail, "from {from}");
    }
    assert!(log.segments().iter().all(|s| s.compacted == s.sealed));
    // segment_of names the covering segment, dropped record or not.
    for s in log.segments() {
        assert_eq!(log.segment_of(s.first_lsn), Some(s.first_lsn));
        if let Some(end) = s.end_lsn {
            assert_eq!(log.segment_of(end - 1), Some(s.first_lsn));
        }
    }
    assert_eq!(log.segment_of(0), None);
    assert_eq!(log.segment_of(log.durable_lsn() + 1), None);
    log.close().unwrap();

    let log = reopen(dir.path());
    assert_eq!(read_all(&log, 1).unwrap(), want);
    assert!(log.segments().iter().all(|s| s.compacted == s.sealed));
    // Compacting again: keeping everything changes nothing; keeping fewer drops more.
    let first = log.segments()[1];
    let again = log.compact(first.first_lsn, &mut |_| true).unwrap();
    assert_eq!(again.bytes_after, again.bytes_before);
    assert_eq!(again.records_dropped, 0);
    assert_eq!(read_all(&log, 1).unwrap(), want);
    let quarter = |r: &Record| r.lsn % 4 == 1;
    let r = log.compact(first.first_lsn, &mut |r| quarter(r)).unwrap();
    assert!(
        r.records_dropped > 0 && r.bytes_after < r.bytes_before,
        "{r:?}"
    );
    want = expected(&want, first.first_lsn, first.end_lsn.unwrap(), quarter);
    // The log still appends, rolls and reads.
    all = append(&log, 60);
    want.extend(all);
    assert_eq!(read_all(&log, 1).unwrap(), want);
    log.close().unwrap();
    assert_eq!(read_all(&reopen(dir.path()), 1).unwrap(), want);
}

#[test]
fn compaction_keeping_nothing_leaves_an_empty_segment_that_still_covers_its_range() {
    let dir = tempfile::tempdir().unwrap();
    let (log, _) = Log::open(config(dir.path())).unwrap();
    let all = append(&log, 80);
    let segs = log.segments();
    assert!(segs.len() >= 3);
    let mut want = all.clone();
    // The first segment and a middle one.
    for s in [&segs[0], &segs[1]] {
        let r = log.compact(s.first_lsn, &mut |_| false).unwrap();
        assert_eq!(r.records_kept, 0);
        assert_eq!(r.bytes_after, SEGMENT_HEADER_BYTES as u64);
        want = expected(&want, s.first_lsn, s.end_lsn.unwrap(), |_| false);
    }
    assert_eq!(log.segments()[0].file_bytes, SEGMENT_HEADER_BYTES as u64);
    assert_eq!(read_all(&log, 1).unwrap(), want);
    assert_eq!(log.segment_of(1), Some(1));
    log.close().unwrap();
    let (log, rec) = Log::open(config(dir.path())).unwrap();
    assert_eq!(rec.first_lsn, 1);
    assert_eq!(rec.last_lsn, 80);
    assert_eq!(read_all(&log, 1).unwrap(), want);
    // An empty compacted segment compacts again to itself.
    let r = log
        .compact(1, &mut |_| panic!("no record to ask about"))
        .unwrap();
    assert_eq!((r.records_kept, r.records_dropped), (0, 0));
    let more = append(&log, 5);
    assert_eq!(more[0].lsn, 81);
}

#[test]
fn compaction_of_the_active_segment_or_of_no_segment_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (log, _) = Log::open(config(dir.path())).unwrap();
    let all = append(&log, 10);
    let active = log.segments().last().unwrap().first_lsn;
    let err = log.compact(active, &mut |_| false).unwrap_err();
    assert!(
        matches!(err, log::Error::SegmentNotSealed { first_lsn } if first_lsn == active),
        "{err}"
    );
    assert_eq!(err.code(), "SF-LOG-011");
    assert!(err.to_string().contains("being written"), "{err}");
    let err = log.compact(active + 1, &mut |_| false).unwrap_err();
    assert!(matches!(err, log::Error::NoSuchSegment { .. }), "{err}");
    assert_eq!(err.code(), "SF-LOG-010");
    // Nothing changed, and no temporary file was left.
    assert_eq!(read_all(&log, 1).unwrap(), all);
    let leftovers: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.ends_with(".compact"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

/// A reader that has opened a segment keeps reading the old file; one that reaches a
/// segment after its compaction reads the new one.
#[test]
fn readers_see_the_segment_as_they_find_it() {
    let dir = tempfile::tempdir().unwrap();
    let (log, _) = Log::open(config(dir.path())).unwrap();
    let all = append(&log, 80);
    let segs = log.segments();
    let (s0, s1) = (&segs[0], &segs[1]);
    let mut reader = log.read_from(1).unwrap();
    assert_eq!(reader.next().unwrap().unwrap(), all[0]);
    log.compact(s0.first_lsn, &mut |_| false).unwrap();
    log.compact(s1.first_lsn, &mut |r| r.lsn % 2 == 0).unwrap();
    let rest: Vec<Record> = reader.collect::<Result<_, _>>().unwrap();
    let want = expected(&all, s1.first_lsn, s1.end_lsn.unwrap(), |r| r.lsn % 2 == 0);
    assert_eq!(
        rest,
        want[1..],
        "old segment 0 in full, then the new segment 1"
    );
}

/// Submitters append, readers read and a compactor compacts every sealed segment (dropping
/// lsns divisible by 3) at the same time; every read is in order, as submitted, and misses
/// nothing but dropped records. Halfway, the submitters wait (bounded) until compactions
/// have happened, so that the overlap does not depend on timing.
#[test]
fn compaction_runs_with_concurrent_submitters_and_readers() {
    const APPENDERS: u64 = 4;
    const PER_APPENDER: u64 = 200;
    let dir = tempfile::tempdir().unwrap();
    let (log, _) = Log::open(config(dir.path())).unwrap();
    let log = Arc::new(log);
    let dropped = |lsn: Lsn| lsn.is_multiple_of(3);
    let done = Arc::new(AtomicBool::new(false));
    let compactions = Arc::new(AtomicU64::new(0));
    let writers: Vec<_> = (0..APPENDERS)
        .map(|a| {
            let log = Arc::clone(&log);
            let compactions = Arc::clone(&compactions);
            std::thread::spawn(move || {
                for seq in 0..PER_APPENDER {
                    if seq == PER_APPENDER / 2 {
                        let deadline = Instant::now() + Duration::from_secs(60);
                        while compactions.load(Ordering::Acquire) < 2 {
                            assert!(Instant::now() < deadline, "no compaction within 60 s");
                            std::thread::yield_now();
                        }
                    }
                    let data = format!("a{a} s{seq}").into_bytes();
                    log.submit(vec![(a as u8, data)])
                        .unwrap()
                        .wait_blocking()
                        .unwrap();
                }
            })
        })
        .collect();
    let compactor = {
        let (log, done, compactions) = (
            Arc::clone(&log),
            Arc::clone(&done),
            Arc::clone(&compactions),
        );
        std::thread::spawn(move || {
            let mut compacted = HashSet::new();
            loop {
                let finishing = done.load(Ordering::Acquire);
                for s in log.segments().into_iter().filter(|s| s.sealed) {
                    if compacted.insert(s.first_lsn) {
                        log.compact(s.first_lsn, &mut |r| !dropped(r.lsn)).unwrap();
                        compactions.fetch_add(1, Ordering::Release);
                    }
                }
                if finishing {
                    return;
                }
                std::thread::yield_now();
            }
        })
    };
    let check = |records: &[Record], from: Lsn, upto: Lsn| {
        let mut next_seq = [None::<u64>; APPENDERS as usize];
        let lsns: Vec<Lsn> = records.iter().map(|r| r.lsn).collect();
        let undropped: Vec<Lsn> = (from..=upto).filter(|l| !dropped(*l)).collect();
        let present: Vec<Lsn> = lsns.iter().copied().filter(|l| !dropped(*l)).collect();
        assert_eq!(present, undropped, "a record compaction kept is missing");
        assert!(lsns.windows(2).all(|w| w[0] < w[1]), "out of order");
        for r in records {
            let text = String::from_utf8(r.data.clone()).unwrap();
            let (a, seq) = text[1..].split_once(" s").unwrap();
            let (a, seq): (usize, u64) = (a.parse().unwrap(), seq.parse().unwrap());
            assert_eq!(r.kind as usize, a);
            assert!(
                next_seq[a].is_none_or(|n| seq >= n),
                "appender {a} went back"
            );
            next_seq[a] = Some(seq + 1);
        }
    };
    let mut reads = 0;
    while writers.iter().any(|w| !w.is_finished()) || reads == 0 {
        let from = (log.durable_lsn() / 2).max(1);
        let reader = log.read_from(from).unwrap();
        let upto = reader.upto();
        let records: Vec<Record> = reader.collect::<Result<_, _>>().unwrap();
        check(&records, from, upto);
        reads += 1;
    }
    for w in writers {
        w.join().unwrap();
    }
    done.store(true, Ordering::Release);
    compactor.join().unwrap();
    let total = APPENDERS * PER_APPENDER;
    let records = read_all(&log, 1).unwrap();
    check(&records, 1, total);
    let compactions = compactions.load(Ordering::Acquire);
    let sealed = log.segments().iter().filter(|s| s.sealed).count() as u64;
    assert_eq!(compactions, sealed, "every sealed segment compacted once");
    assert!(log.segments().iter().all(|s| s.compacted == s.sealed));
    drop(records);
    let log = Arc::try_unwrap(log).unwrap();
    log.close().unwrap();
    let records = read_all(&reopen(dir.path()), 1).unwrap();
    check(&records, 1, total);
    println!("{reads} reads and {compactions} compactions while appending");
}

/// Which records a compaction keeps.
type Keep = fn(&Record) -> bool;

fn sim_dir() -> PathBuf {
    PathBuf::from("/sim/compact")
}

fn sim_config(vfs: &SimVfs) -> LogConfig {
    LogConfig {
        vfs: Arc::new(vfs.clone()),
        ..config(&sim_dir())
    }
}

/// Power cut at every mutating I/O of a compaction (and of a second compaction of the
/// same segment), with seeded crash images: after reopening, the segment is the old one or
/// the new one, every other record is intact, no temporary file is left, and the log takes
/// appends.
#[test]
fn power_cut_at_every_step_of_a_compaction_leaves_old_or_new() {
    let seed = seed();
    let mut rng = StdRng::seed_from_u64(seed);
    const IMAGES_PER_CUT: u64 = 6;
    let base = SimVfs::new();
    let (log, _) = Log::open(sim_config(&base)).unwrap();
    let all = append(&log, 90);
    let seg = log.segments()[1];
    let (first, end) = (seg.first_lsn, seg.end_lsn.unwrap());
    log.close().unwrap();
    let tmp = sim_dir().join(format!("{first:020}.seg.compact"));
    let keep_a: Keep = |r| r.lsn % 2 == 1;
    let keep_b: Keep = |r| r.lsn % 4 == 1;
    let after_a = expected(&all, first, end, keep_a);
    let after_b = expected(&after_a, first, end, keep_b);
    // Case A compacts the appended segment; case B compacts the result again.
    let compacted_once = base.after_crash(0);
    {
        let (log, _) = Log::open(sim_config(&compacted_once)).unwrap();
        log.compact(first, &mut |r| keep_a(r)).unwrap();
        log.close().unwrap();
    }
    let cases = [
        ("appended", &base, (&all, &after_a), keep_a),
        ("compacted", &compacted_once, (&after_a, &after_b), keep_b),
    ];
    let (mut cuts, mut saw_old, mut saw_new) = (0u64, 0u64, 0u64);
    for (name, start, (old, new), keep) in cases {
        // How many mutating I/Os one compaction takes.
        let dry = start.after_crash(0);
        let (log, _) = Log::open(sim_config(&dry)).unwrap();
        let before = dry.ops();
        log.compact(first, &mut |r| keep(r)).unwrap();
        let ops = dry.ops() - before;
        drop(log);
        assert!(ops >= 4, "{name}: a compaction took only {ops} I/Os");
        for n in 1..=ops + 1 {
            for _ in 0..IMAGES_PER_CUT {
                let ctx = format!("TEST_SEED={seed} {name} cut at I/O {n} of {ops}");
                let image = start.after_crash(0);
                let (log, _) = Log::open(sim_config(&image)).unwrap();
                image.crash_at_op(n);
                let result = log.compact(first, &mut |r| keep(r));
                assert_eq!(result.is_ok(), n > ops, "{ctx}: {result:?}");
                image.crash();
                drop(log);
                let crashed = image.after_crash(rng.r#gen());
                let (log, _) = Log::open(sim_config(&crashed))
                    .unwrap_or_else(|e| panic!("{ctx}: reopen: {e}"));
                assert!(crashed.file_bytes(&tmp).is_none(), "{ctx}: temp file left");
                let got = read_all(&log, 1).unwrap_or_else(|e| panic!("{ctx}: read: {e}"));
                if &got == old {
                    saw_old += 1;
                } else if &got == new {
                    saw_new += 1;
                } else {
                    panic!("{ctx}: neither the old nor the new segment: {got:?}");
                }
                let more = append(&log, 3);
                assert_eq!(more[0].lsn, all.len() as Lsn + 1, "{ctx}");
                log.close().unwrap();
                let (log, _) = Log::open(sim_config(&crashed)).unwrap();
                let mut want = got;
                want.extend(more);
                assert_eq!(read_all(&log, 1).unwrap(), want, "{ctx}: after append");
                cuts += 1;
            }
        }
    }
    println!(
        "compaction power cuts: {cuts} cuts, {saw_old} kept the old segment, {saw_new} the new one"
    );
    assert!(
        saw_old > 0 && saw_new > 0,
        "the cuts never hit one of the outcomes"
    );
}

/// Every sampled bit flip in a compacted segment is found, at open (header) or on read
/// (frames, padding), naming the segment, and the record's lsn when its header verifies.
#[test]
fn bit_flips_in_a_compacted_segment_are_detected() {
    let seed = seed();
    let mut rng = StdRng::seed_from_u64(seed);
    let dir = tempfile::tempdir().unwrap();
    let (log, _) = Log::open(config(dir.path())).unwrap();
    let all = append(&log, 100);
    let seg = log.segments()[1];
    assert!(seg.sealed);
    let keep = |r: &Record| !r.lsn.is_multiple_of(3);
    log.compact(seg.first_lsn, &mut |r| keep(r)).unwrap();
    log.close().unwrap();
    let path = dir.path().join(format!("{:020}.seg", seg.first_lsn));
    let good = std::fs::read(&path).unwrap();
    // Where each kept record's payload lies in the compacted file.
    let mut payloads = BTreeMap::new();
    let mut at = SEGMENT_HEADER_BYTES;
    for r in all
        .iter()
        .filter(|r| (seg.first_lsn..seg.end_lsn.unwrap()).contains(&r.lsn) && keep(r))
    {
        payloads.insert(
            at + FRAME_HEADER_BYTES,
            (at + FRAME_HEADER_BYTES + r.data.len(), r.lsn),
        );
        at += frame_bytes(r.data.len());
    }
    assert_eq!(at, good.len(), "the documented layout, sized exactly");
    let mut bits: Vec<usize> = (0..SEGMENT_HEADER_BYTES * 8).step_by(7).collect();
    bits.extend((0..300).map(|_| rng.gen_range(SEGMENT_HEADER_BYTES * 8..good.len() * 8)));
    for bit in bits {
        let mut b = good.clone();
        b[bit / 8] ^= 1 << (bit % 8);
        std::fs::write(&path, &b).unwrap();
        let err = match Log::open(config(dir.path())) {
            Err(e) => e,
            Ok((log, _)) => read_all(&log, 1).expect_err(&format!("bit {bit}: flip not found")),
        };
        let log::Error::Corrupt { segment, lsn, .. } = &err else {
            panic!("TEST_SEED={seed} bit {bit}: {err}");
        };
        assert_eq!(segment, &path, "bit {bit}: {err}");
        let byte = bit / 8;
        if let Some((_, &(payload_end, record))) = payloads.range(..=byte).next_back()
            && byte < payload_end
        {
            assert_eq!(*lsn, Some(record), "TEST_SEED={seed} bit {bit}: {err}");
        }
    }
    std::fs::write(&path, &good).unwrap();
    let (log, _) = Log::open(config(dir.path())).unwrap();
    assert_eq!(
        read_all(&log, 1).unwrap(),
        expected(&all, seg.first_lsn, seg.end_lsn.unwrap(), keep)
    );
}

/// A compacted segment's range must meet the next segment, and it is never the last one.
#[test]
fn a_missing_segment_after_a_compacted_one_is_corruption() {
    let dir = tempfile::tempdir().unwrap();
    let (log, _) = Log::open(config(dir.path())).unwrap();
    append(&log, 100);
    let segs = log.segments();
    assert!(segs.len() >= 4);
    log.compact(segs[1].first_lsn, &mut |r| r.lsn % 2 == 0)
        .unwrap();
    log.close().unwrap();
    let name = |lsn: Lsn| dir.path().join(format!("{lsn:020}.seg"));
    // The segment after the compacted one goes missing: refused at open, naming the next.
    let moved = dir.path().join("aside");
    std::fs::rename(name(segs[2].first_lsn), &moved).unwrap();
    let err = Log::open(config(dir.path())).unwrap_err();
    assert!(
        matches!(&err, log::Error::Corrupt { segment, lsn: Some(l), .. }
            if *segment == name(segs[3].first_lsn) && *l == segs[2].first_lsn),
        "{err}"
    );
    // Every segment after it goes missing: a compacted last segment is refused too.
    for s in &segs[3..] {
        std::fs::remove_file(name(s.first_lsn)).unwrap();
    }
    let err = Log::open(config(dir.path())).unwrap_err();
    assert!(
        err.to_string().contains("last segment is a compacted one"),
        "{err}"
    );
}
