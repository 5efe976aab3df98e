//! Group commit under concurrency (promise C1): every ticket resolves, many submitters
//! share one sync, and the log keeps each submitter's records in its own order.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use steadfast_engine::log::{Log, LogConfig, Lsn, Record};

fn payload(appender: u32, seq: u32, part: u32) -> Vec<u8> {
    let mut v = Vec::with_capacity(40);
    v.extend_from_slice(&appender.to_le_bytes());
    v.extend_from_slice(&seq.to_le_bytes());
    v.extend_from_slice(&part.to_le_bytes());
    v.resize(12 + (seq as usize % 29), 0x5a);
    v
}

fn parse(r: &Record) -> (u32, u32, u32) {
    let n = |i: usize| u32::from_le_bytes(r.data[i..i + 4].try_into().unwrap());
    (n(0), n(4), n(8))
}

/// Checks a reopened log: every appender's submissions are all there, in its own order,
/// and the records of one submission are adjacent.
fn check_reopened(dir: &Path, appenders: u32, per_appender: u32, parts: impl Fn(u32) -> u32) {
    let (log, _) = Log::open(LogConfig::new(dir)).unwrap();
    let records: Vec<Record> = log.read_from(1).unwrap().collect::<Result<_, _>>().unwrap();
    let lsns: Vec<Lsn> = records.iter().map(|r| r.lsn).collect();
    assert_eq!(lsns, (1..=records.len() as Lsn).collect::<Vec<_>>());
    let mut next: HashMap<u32, (u32, u32)> = HashMap::new();
    for (i, r) in records.iter().enumerate() {
        let (a, seq, part) = parse(r);
        assert_eq!(r.data, payload(a, seq, part), "lsn {}", r.lsn);
        assert_eq!(r.kind, a as u8);
        let want = next.entry(a).or_insert((0, 0));
        assert_eq!(
            (seq, part),
            *want,
            "appender {a} out of order at lsn {}",
            r.lsn
        );
        if part + 1 < parts(seq) {
            *want = (seq, part + 1);
            // The next part of a submission is the very next record.
            assert_eq!(parse(&records[i + 1]), (a, seq, part + 1));
        } else {
            *want = (seq + 1, 0);
        }
    }
    assert_eq!(next.len() as u32, appenders);
    assert!(
        next.values()
            .all(|&(seq, part)| (seq, part) == (per_appender, 0))
    );
}

async fn run_appenders(log: Arc<Log>, appenders: u32, per_appender: u32, parts: fn(u32) -> u32) {
    let mut tasks = Vec::new();
    for a in 0..appenders {
        let log = Arc::clone(&log);
        tasks.push(tokio::spawn(async move {
            let mut prev = 0;
            for seq in 0..per_appender {
                let records = (0..parts(seq))
                    .map(|p| (a as u8, payload(a, seq, p)))
                    .collect();
                let ticket = log.submit(records).unwrap();
                let expected = ticket.last_lsn();
                let lsn = ticket.wait().await.unwrap();
                assert_eq!(lsn, expected);
                assert!(lsn > prev, "lsns of one appender increase");
                assert!(log.durable_lsn() >= lsn, "resolved means durable");
                prev = lsn;
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
}

fn one(_: u32) -> u32 {
    1
}

fn one_to_three(seq: u32) -> u32 {
    1 + seq % 3
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn log_sixty_four_tasks_two_hundred_records_each() {
    let dir = tempfile::tempdir().unwrap();
    let (log, _) = Log::open(LogConfig::new(dir.path())).unwrap();
    let log = Arc::new(log);
    run_appenders(Arc::clone(&log), 64, 200, one_to_three).await;
    let stats = log.stats();
    println!("{stats:?}");
    let records: u64 = (0..200).map(|s| one_to_three(s) as u64).sum::<u64>() * 64;
    assert_eq!(stats.submits, 64 * 200);
    assert_eq!(stats.records, records);
    assert_eq!(log.last_lsn(), records);
    assert!(stats.syncs < stats.submits / 2, "{stats:?}");
    Arc::try_unwrap(log).unwrap().close().unwrap();
    check_reopened(dir.path(), 64, 200, one_to_three);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn log_two_hundred_fifty_six_appenders_share_syncs() {
    let dir = tempfile::tempdir().unwrap();
    let (log, _) = Log::open(LogConfig::new(dir.path())).unwrap();
    let log = Arc::new(log);
    let started = std::time::Instant::now();
    run_appenders(Arc::clone(&log), 256, 50, one).await;
    let stats = log.stats();
    println!(
        "{stats:?}: {:.0} records/s, {:.1} submits per sync",
        stats.records as f64 / started.elapsed().as_secs_f64(),
        stats.submits as f64 / stats.syncs as f64
    );
    assert_eq!(stats.records, 256 * 50);
    assert_eq!(stats.syncs, stats.batches);
    assert!(stats.syncs < stats.submits / 2, "{stats:?}");
    // Every sync lands in one records-per-sync bucket, and gathering shows in the buckets
    // above one record (at least one sync carried more than two: fewer than half as many
    // syncs as single-record submits).
    assert_eq!(stats.records_per_sync.iter().sum::<u64>(), stats.syncs);
    assert!(
        stats.records_per_sync[2..].iter().sum::<u64>() > 0,
        "{stats:?}"
    );
    Arc::try_unwrap(log).unwrap().close().unwrap();
    check_reopened(dir.path(), 256, 50, one);
}

#[test]
fn log_threads_with_blocking_waits() {
    let dir = tempfile::tempdir().unwrap();
    let (log, _) = Log::open(LogConfig::new(dir.path())).unwrap();
    let log = Arc::new(log);
    let handles: Vec<_> = (0..16u32)
        .map(|a| {
            let log = Arc::clone(&log);
            std::thread::spawn(move || {
                for seq in 0..100 {
                    let t = log.submit(vec![(a as u8, payload(a, seq, 0))]).unwrap();
                    t.wait_blocking().unwrap();
                }
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
    assert_eq!(log.stats().records, 1600);
    drop(log);
    check_reopened(dir.path(), 16, 100, one);
}

/// Readers run while submitters append across segment rolls: each sees exactly the records
/// durable when it was made, gapless, each one as submitted.
#[test]
fn log_readers_run_while_the_writer_appends() {
    let dir = tempfile::tempdir().unwrap();
    let config = LogConfig {
        segment_bytes: 8192,
        max_batch_bytes: 1024,
        ..LogConfig::new(dir.path())
    };
    let (log, _) = Log::open(config).unwrap();
    let log = Arc::new(log);
    let writers: Vec<_> = (0..4u32)
        .map(|a| {
            let log = Arc::clone(&log);
            std::thread::spawn(move || {
                for seq in 0..300 {
                    let t = log.submit(vec![(a as u8, payload(a, seq, 0))]).unwrap();
                    t.wait_blocking().unwrap();
                }
            })
        })
        .collect();
    let mut reads = 0;
    let mut longest = 0;
    while writers.iter().any(|w| !w.is_finished()) || reads == 0 {
        let from = (longest / 2).max(1);
        let reader = log.read_from(from).unwrap();
        let upto = reader.upto();
        let records: Vec<Record> = reader.collect::<Result<_, _>>().unwrap();
        assert_eq!(records.len() as Lsn, (upto + 1).saturating_sub(from));
        for (i, r) in records.iter().enumerate() {
            assert_eq!(r.lsn, from + i as Lsn);
            let (a, seq, part) = parse(r);
            assert_eq!(r.data, payload(a, seq, part));
        }
        longest = longest.max(upto);
        reads += 1;
    }
    for w in writers {
        w.join().unwrap();
    }
    assert!(log.stats().segments_created >= 5, "{:?}", log.stats());
    println!("{reads} reads while appending, the longest up to lsn {longest}");
}

#[test]
fn log_counts_each_sync_in_its_records_per_sync_bucket() {
    let dir = tempfile::tempdir().unwrap();
    let (log, _) = Log::open(LogConfig::new(dir.path())).unwrap();
    // One submission at a time, each waited for: one sync each, of exactly its records.
    for (seq, n) in [1u32, 3, 3, 100].into_iter().enumerate() {
        let records = (0..n).map(|i| (1u8, payload(9, seq as u32, i))).collect();
        log.submit(records).unwrap().wait_blocking().unwrap();
    }
    let stats = log.stats();
    let mut want = [0u64; steadfast_engine::log::RECORDS_PER_SYNC_BUCKETS];
    want[0] = 1; // 1 record: <= 1
    want[2] = 2; // 3 records: <= 4
    want[7] = 1; // 100 records: <= 128
    assert_eq!(stats.records_per_sync, want, "{stats:?}");
    log.close().unwrap();
}
