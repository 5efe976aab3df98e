//! Unit tests of the log's API edges; recovery and concurrency are in engine/tests/log_*.rs.

use super::*;

/// Every record of the log, each frame verified.
fn read_all(log: &Log) -> Vec<Record> {
    log.read_from(1)
        .unwrap()
        .collect::<Result<Vec<_>, _>>()
        .unwrap()
}

fn small(dir: &Path) -> LogConfig {
    LogConfig {
        segment_bytes: 4096,
        max_batch_bytes: 1024,
        max_pending_bytes: 2048,
        ..LogConfig::new(dir)
    }
}

#[test]
fn config_limits_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let cases = [
        LogConfig {
            segment_bytes: MIN_SEGMENT_BYTES - 1,
            ..small(dir.path())
        },
        LogConfig {
            segment_bytes: MAX_SEGMENT_BYTES + 1,
            ..small(dir.path())
        },
        LogConfig {
            max_batch_bytes: MIN_BATCH_BYTES - 1,
            ..small(dir.path())
        },
        LogConfig {
            max_batch_bytes: MAX_BATCH_BYTES + 1,
            max_pending_bytes: usize::MAX,
            ..small(dir.path())
        },
        LogConfig {
            max_pending_bytes: 1023,
            ..small(dir.path())
        },
    ];
    for c in cases {
        let err = Log::open(c.clone()).unwrap_err();
        assert!(matches!(err, Error::Config(_)), "{c:?}: {err}");
        assert_eq!(err.code(), "SF-LOG-007");
    }
    // The smallest segment still holds a batch of the smallest size.
    let tiny = LogConfig {
        segment_bytes: MIN_SEGMENT_BYTES,
        max_batch_bytes: MIN_BATCH_BYTES,
        ..small(dir.path())
    };
    let l = tiny.limits().unwrap();
    assert!(l.batch_bytes as u64 <= MIN_SEGMENT_BYTES - SEGMENT_HEADER_BYTES as u64);
    assert_eq!(frame_bytes(l.record_bytes), l.batch_bytes);
}

#[test]
fn record_limit_is_exact() {
    let dir = tempfile::tempdir().unwrap();
    let (log, _) = Log::open(small(dir.path())).unwrap();
    let max = 1024 - FRAME_HEADER_BYTES;
    let err = log.submit(vec![(1, vec![0; max + 1])]).unwrap_err();
    assert!(matches!(err, Error::RecordTooLarge { bytes, max: m } if bytes == max + 1 && m == max));
    assert_eq!(log.last_lsn(), 0, "a refused submit takes no lsn");
    let lsn = log.submit(vec![(1, vec![7; max])]).unwrap().wait_blocking();
    assert_eq!(lsn.unwrap(), 1);
    log.close().unwrap();
    let (log, _) = Log::open(small(dir.path())).unwrap();
    let records = read_all(&log);
    assert_eq!(records.len(), 1);
    assert_eq!(records[0].data, vec![7; max]);
}

#[test]
fn empty_submit_is_a_barrier() {
    let dir = tempfile::tempdir().unwrap();
    let (log, _) = Log::open(small(dir.path())).unwrap();
    assert_eq!(log.submit(vec![]).unwrap().wait_blocking().unwrap(), 0);
    let a = log
        .submit(vec![(1, b"a".to_vec()), (2, b"b".to_vec())])
        .unwrap();
    let barrier = log.submit(vec![]).unwrap();
    assert_eq!((a.last_lsn(), barrier.last_lsn()), (2, 2));
    assert_eq!(barrier.wait_blocking().unwrap(), 2);
    assert!(log.durable_lsn() >= 2);
    assert_eq!(a.wait_blocking().unwrap(), 2);
}

#[test]
fn submit_after_close_is_refused_and_earlier_tickets_resolve() {
    let dir = tempfile::tempdir().unwrap();
    let config = LogConfig {
        max_pending_bytes: 1 << 20,
        ..small(dir.path())
    };
    let (log, _) = Log::open(config).unwrap();
    let tickets: Vec<Durable> = (0..50u8)
        .map(|i| log.submit(vec![(i, vec![i; 10])]).unwrap())
        .collect();
    log.shutdown().unwrap();
    let err = log.submit(vec![(1, vec![1])]).unwrap_err();
    assert!(matches!(err, Error::Closed), "{err}");
    assert_eq!(err.code(), "SF-LOG-004");
    for (i, t) in tickets.into_iter().enumerate() {
        assert_eq!(t.wait_blocking().unwrap(), i as Lsn + 1);
    }
    log.shutdown().unwrap();
    log.close().unwrap();
    let (log, _) = Log::open(small(dir.path())).unwrap();
    assert_eq!(read_all(&log).len(), 50);
}

#[test]
fn checkpoint_beyond_durable_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (log, _) = Log::open(small(dir.path())).unwrap();
    log.submit(vec![(1, vec![1]); 3])
        .unwrap()
        .wait_blocking()
        .unwrap();
    let err = log.checkpoint(4).unwrap_err();
    assert!(matches!(
        err,
        Error::CheckpointBeyondDurable {
            upto: 4,
            durable: 3
        }
    ));
    log.checkpoint(3).unwrap();
    log.checkpoint(2).unwrap(); // below the current one: no-op
    assert_eq!(log.checkpoint_lsn(), 3);
}

#[test]
fn a_directory_has_one_writer() {
    let dir = tempfile::tempdir().unwrap();
    let (log, _) = Log::open(small(dir.path())).unwrap();
    let err = Log::open(small(dir.path())).unwrap_err();
    assert!(matches!(err, Error::Locked { .. }), "{err}");
    drop(log);
    Log::open(small(dir.path())).unwrap();
}

/// Blocks the writer deterministically: it needs the segment list to roll, and the test
/// holds it. Then the queue fills until submit refuses with Backpressure.
#[test]
fn backpressure_refuses_when_the_queue_is_full() {
    let dir = tempfile::tempdir().unwrap();
    let (log, _) = Log::open(small(dir.path())).unwrap();
    let guard = log.shared.segments.lock();
    let mut tickets = Vec::new();
    let refused = loop {
        match log.submit(vec![(1, vec![0; 200])]) {
            Ok(t) => tickets.push(t),
            Err(e) => break e,
        }
        // Segment room (4032) + queue limit (2048) bound the accepted submissions.
        assert!(tickets.len() < 40, "never refused");
    };
    assert!(
        matches!(refused, Error::Backpressure { max: 2048, .. }),
        "{refused}"
    );
    assert_eq!(refused.code(), "SF-LOG-006");
    drop(guard);
    let n = tickets.len() as Lsn;
    for (i, t) in tickets.into_iter().enumerate() {
        assert_eq!(t.wait_blocking().unwrap(), i as Lsn + 1);
    }
    assert_eq!(log.durable_lsn(), n);
}

/// Injects a real I/O error: the directory vanishes, so the next segment roll fails. The
/// failure is sticky, like Postgres after a failed fsync.
#[test]
fn an_io_error_fails_pending_and_later_appends() {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("log");
    let config = LogConfig {
        segment_bytes: MIN_SEGMENT_BYTES,
        max_batch_bytes: MIN_BATCH_BYTES,
        ..LogConfig::new(&dir)
    };
    let (log, _) = Log::open(config).unwrap();
    let first = log.submit(vec![(1, vec![0; 200])]).unwrap();
    assert_eq!(first.wait_blocking().unwrap(), 1);
    std::fs::remove_dir_all(&dir).unwrap();
    // 232 more frame bytes do not fit the 216 left: the writer must roll, and cannot.
    let err = log
        .submit(vec![(1, vec![0; 200])])
        .unwrap()
        .wait_blocking()
        .unwrap_err();
    assert!(
        matches!(err, Error::Failed(ref m) if m.contains("create segment")),
        "{err}"
    );
    assert_eq!(err.code(), "SF-LOG-003");
    let later = log.submit(vec![(1, vec![1])]).unwrap_err();
    assert!(matches!(later, Error::Failed(_)), "{later}");
    assert_eq!(log.durable_lsn(), 1, "nothing failed is counted durable");
    assert!(matches!(log.close(), Err(Error::Failed(_))));
}

#[test]
fn log_is_send_and_sync() {
    fn check<T: Send + Sync>() {}
    check::<Log>();
    check::<Durable>();
}

/// Writes a segment by hand: a header and frames given as (lsn, batch, last_in_batch).
fn handmade_segment(dir: &Path, name_lsn: Lsn, header: SegmentHeader, frames: &[(Lsn, u64, bool)]) {
    let mut bytes = segment::encode_header(header).to_vec();
    for &(lsn, batch, last_in_batch) in frames {
        let h = frame::FrameHeader {
            lsn,
            batch,
            kind: 1,
            last_in_batch,
        };
        frame::encode(&mut bytes, h, b"payload");
    }
    bytes.resize(4096, 0);
    std::fs::write(segment::segment_path(dir, name_lsn), bytes).unwrap();
}

fn open_err(dir: &Path) -> String {
    match Log::open(small(dir)) {
        Err(e @ Error::Corrupt { .. }) => e.to_string(),
        Err(e) => panic!("wrong error: {e}"),
        Ok(_) => panic!("opened"),
    }
}

/// Intact frames (checksums fine) that break the sequence were written like that: not a
/// torn write, whatever their position.
#[test]
fn intact_frames_out_of_sequence_are_corruption() {
    let header = SegmentHeader {
        first_lsn: 1,
        first_batch: 1,
        covers: None,
    };
    type Frames<'a> = &'a [(Lsn, u64, bool)];
    let cases: [(Frames, &str); 4] = [
        (&[(2, 1, true)], "lsn 2 batch 1, expected lsn 1 batch 1"),
        (
            &[(1, 1, true), (3, 2, true)],
            "lsn 3 batch 2, expected lsn 2",
        ),
        (
            &[(1, 1, true), (2, 3, true)],
            "lsn 2 batch 3, expected lsn 2 batch 2",
        ),
        (
            &[(1, 1, false), (2, 2, true)],
            "lsn 2 batch 2, expected lsn 2 batch 1",
        ),
    ];
    for (frames, want) in cases {
        let dir = tempfile::tempdir().unwrap();
        handmade_segment(dir.path(), 1, header, frames);
        let err = open_err(dir.path());
        assert!(err.contains(want), "{err}");
    }
    // Headers that would make lsn arithmetic overflow are refused, not trusted.
    for (first_lsn, first_batch) in [(0, 1), (1, 0), (u64::MAX, 1), (1, u64::MAX)] {
        let dir = tempfile::tempdir().unwrap();
        let h = SegmentHeader {
            first_lsn,
            first_batch,
            covers: None,
        };
        handmade_segment(dir.path(), first_lsn, h, &[(first_lsn, first_batch, true)]);
        let err = open_err(dir.path());
        assert!(err.contains("outside") || err.contains("missing"), "{err}");
    }
}

/// The OS's file system, except that `sync_data` waits while the gate is closed: a test
/// holds the writer in its sync until its own tasks are parked.
#[derive(Debug, Default)]
struct GatedVfs {
    closed: Arc<(parking_lot::Mutex<bool>, parking_lot::Condvar)>,
}

#[derive(Debug)]
struct GatedFile {
    file: Box<dyn vfs::VfsFile>,
    closed: Arc<(parking_lot::Mutex<bool>, parking_lot::Condvar)>,
}

impl GatedVfs {
    fn set_closed(&self, closed: bool) {
        *self.closed.0.lock() = closed;
        self.closed.1.notify_all();
    }
}

impl vfs::VfsFile for GatedFile {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> std::io::Result<usize> {
        self.file.read_at(buf, offset)
    }
    fn write_all_at(&self, buf: &[u8], offset: u64) -> std::io::Result<()> {
        self.file.write_all_at(buf, offset)
    }
    fn sync_data(&self) -> std::io::Result<()> {
        let mut closed = self.closed.0.lock();
        while *closed {
            self.closed.1.wait(&mut closed);
        }
        self.file.sync_data()
    }
    fn sync_all(&self) -> std::io::Result<()> {
        self.file.sync_all()
    }
    fn len(&self) -> std::io::Result<u64> {
        self.file.len()
    }
    fn preallocate(&self, len: u64) -> std::io::Result<()> {
        self.file.preallocate(len)
    }
}

impl Vfs for GatedVfs {
    fn open(&self, path: &Path, mode: vfs::OpenMode) -> std::io::Result<Box<dyn vfs::VfsFile>> {
        Ok(Box::new(GatedFile {
            file: OsVfs.open(path, mode)?,
            closed: Arc::clone(&self.closed),
        }))
    }
    fn exists(&self, path: &Path) -> std::io::Result<bool> {
        OsVfs.exists(path)
    }
    fn create_dir_all(&self, dir: &Path) -> std::io::Result<()> {
        OsVfs.create_dir_all(dir)
    }
    fn list(&self, dir: &Path) -> std::io::Result<Vec<PathBuf>> {
        OsVfs.list(dir)
    }
    fn rename(&self, from: &Path, to: &Path) -> std::io::Result<()> {
        OsVfs.rename(from, to)
    }
    fn remove(&self, path: &Path) -> std::io::Result<()> {
        OsVfs.remove(path)
    }
    fn sync_dir(&self, dir: &Path) -> std::io::Result<()> {
        OsVfs.sync_dir(dir)
    }
    fn lock(&self, path: &Path) -> std::io::Result<Box<dyn vfs::VfsLock>> {
        OsVfs.lock(path)
    }
}

/// Callers whose records became durable together all reach their answers before a task
/// that the first of them wakes (in the server: the connection task that writes responses)
/// runs, so that one socket write can carry all their responses ([`Durable::wait`]).
#[test]
fn every_caller_of_a_sync_resumes_before_the_task_the_first_one_wakes() {
    let dir = tempfile::tempdir().unwrap();
    let gate = Arc::new(GatedVfs::default());
    let (log, _) = Log::open(LogConfig {
        vfs: Arc::clone(&gate) as Arc<dyn Vfs>,
        ..LogConfig::new(dir.path())
    })
    .unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let order = Arc::new(parking_lot::Mutex::new(Vec::new()));
    let conn = Arc::new(tokio::sync::Notify::new());
    rt.block_on(async {
        // The writer takes `a` (and maybe `b`) and waits in its sync until every task parks.
        gate.set_closed(true);
        let a = log.submit(vec![(1, b"a".to_vec())]).unwrap();
        let b = log.submit(vec![(1, b"b".to_vec())]).unwrap();
        let last = b.last_lsn();
        let (o, c) = (Arc::clone(&order), Arc::clone(&conn));
        let writer = tokio::spawn(async move {
            c.notified().await;
            o.lock().push("connection");
        });
        let (o, c) = (Arc::clone(&order), Arc::clone(&conn));
        let first = tokio::spawn(async move {
            a.wait().await.unwrap();
            o.lock().push("a");
            c.notify_one();
        });
        let o = Arc::clone(&order);
        let second = tokio::spawn(async move {
            b.wait().await.unwrap();
            o.lock().push("b");
        });
        // Let all three park, then hold the runtime's only thread until both are durable:
        // both tickets are resolved, from the writer's thread, before any caller resumes.
        for _ in 0..3 {
            tokio::task::yield_now().await;
        }
        gate.set_closed(false);
        while log.durable_lsn() < last {
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        for t in [first, second, writer] {
            t.await.unwrap();
        }
    });
    // (tokio wakes yielded tasks last-in first-out, so `b` may come before `a`.)
    let order = order.lock().clone();
    assert_eq!(
        order.last(),
        Some(&"connection"),
        "a caller of the sync resumed only after the task the first one woke: {order:?}"
    );
    assert_eq!(order.len(), 3, "{order:?}");
}
