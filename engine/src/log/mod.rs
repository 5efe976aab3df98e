//! The append-only segment log with group commit: the durability boundary of the embedded
//! store (promises C1 and C2 in DESIGN.md), and the record of every event it keeps.
//!
//! The log knows nothing of events. A record is an opaque byte string with a `u8` kind tag,
//! numbered by a global [`Lsn`] (1, 2, 3, ...). Callers [`Log::submit`] records and get a
//! [`Durable`] ticket that resolves once the records are written *and* `fdatasync`ed; many
//! concurrent submissions share one write and one sync (see `writer.rs`).
//!
//! On disk: a directory of preallocated segment files `{first_lsn:020}.seg` (layout in
//! `segment.rs`) holding checksummed frames (layout in `frame.rs`), a `checkpoint` file
//! (`checkpoint.rs`) and a `LOCK` file.
//!
//! **The log keeps everything.** No segment is ever deleted by the log; a checkpoint is only
//! a durable hint from the owner ("my read models cover lsn ..=N", given back in
//! [`Recovery::checkpoint_lsn`]). A log written by an older version, which deleted
//! checkpointed segments, still opens: [`Recovery::first_lsn`] says where its records start.
//!
//! **Opening is cheap and reading streams.** [`Log::open`] checks every segment header
//! (names, checksums, growing lsns and batches) and verifies every frame of the last segment
//! in bounded memory; it cuts a torn last batch (the only thing a crash can leave
//! half-written) and refuses everything else as [`Error::Corrupt`] (`recovery.rs`). Records
//! are read with [`Log::read_from`], an iterator that finds its start segment by binary
//! search, verifies every frame it passes (so damage in older segments shows when they are
//! read), yields only records durable when it was made, and may run while the writer
//! appends.
//!
//! **Space comes back only through compaction.** [`Log::compact`] rewrites one sealed
//! segment with only the records its owner keeps, under their original lsns and batch
//! numbers, and replaces the old file crash-safely (write `*.seg.compact`, fsync, rename,
//! fsync the directory; `compact.rs`). A compacted segment (header version 2, `segment.rs`)
//! says which lsn range it covers, so gaps are legal there and continuity is still checked
//! at its ends; everywhere else lsns stay consecutive. [`Log::segments`] and
//! [`Log::segment_of`] tell the owner which segment holds what, so it can pick sparse ones.
//!
//! **All file I/O goes through [`vfs::Vfs`]** ([`LogConfig::vfs`], the OS by default). The
//! hidden `sim::SimVfs` keeps synced and unsynced state apart and can cut the power at any
//! I/O; `engine/tests/log_powercut.rs` uses it to check that no acknowledged record is ever
//! lost.

mod checkpoint;
mod compact;
pub(crate) mod frame;
mod reader;
mod recovery;
mod segment;
#[doc(hidden)]
pub mod sim;
pub mod vfs;
mod walk;
mod writer;

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread::JoinHandle;

use parking_lot::{Condvar, Mutex};
use tokio::sync::oneshot;

pub use compact::{CompactReport, SegmentInfo};
pub use frame::{FRAME_ALIGN_BYTES, FRAME_HEADER_BYTES, frame_bytes};
pub use reader::LogReader;
pub use segment::SEGMENT_HEADER_BYTES;

use segment::{DirLock, SegmentHeader, SegmentMeta, io_err};
use vfs::{OsVfs, Vfs};
use writer::{Counters, Pending, Queue, Shared, State, Writer};

/// A record's position in the log: global, starting at 1, given without gaps; only a
/// compacted segment has gaps (the records compaction dropped). 0 means "none".
pub type Lsn = u64;

/// Default size of a segment file (preallocated when created).
pub const DEFAULT_SEGMENT_BYTES: u64 = 64 << 20;
/// Smallest accepted `segment_bytes`; small values are for tests.
pub const MIN_SEGMENT_BYTES: u64 = 512;
/// Largest accepted `segment_bytes`.
pub const MAX_SEGMENT_BYTES: u64 = 1 << 30;
/// Default upper bound of one write + sync.
pub const DEFAULT_MAX_BATCH_BYTES: usize = 4 << 20;
/// Smallest accepted `max_batch_bytes`.
pub const MIN_BATCH_BYTES: usize = 256;
/// Largest accepted `max_batch_bytes`, and so the largest frame recovery will believe.
pub const MAX_BATCH_BYTES: usize = 64 << 20;
/// Default bound of bytes submitted but not yet written.
pub const DEFAULT_MAX_PENDING_BYTES: usize = 64 << 20;

/// How to open a log. Build with [`LogConfig::new`] and adjust fields.
#[derive(Debug, Clone)]
pub struct LogConfig {
    /// The directory holding the segments, the checkpoint and the lock file.
    pub dir: PathBuf,
    /// Size of each segment file, preallocated when the segment is created.
    pub segment_bytes: u64,
    /// Upper bound of the bytes of one batch (one write and one `fdatasync`). A record's
    /// payload may be at most this (or the segment size) minus the frame header.
    pub max_batch_bytes: usize,
    /// Upper bound of encoded bytes submitted but not yet written; beyond it `submit`
    /// answers [`Error::Backpressure`]. At least `max_batch_bytes`.
    pub max_pending_bytes: usize,
    /// The file system the log runs on: [`vfs::OsVfs`] unless a test simulates one.
    pub vfs: Arc<dyn Vfs>,
}

impl LogConfig {
    /// A config with the default limits for a log in `dir`.
    pub fn new(dir: impl Into<PathBuf>) -> LogConfig {
        LogConfig {
            dir: dir.into(),
            segment_bytes: DEFAULT_SEGMENT_BYTES,
            max_batch_bytes: DEFAULT_MAX_BATCH_BYTES,
            max_pending_bytes: DEFAULT_MAX_PENDING_BYTES,
            vfs: Arc::new(OsVfs),
        }
    }

    fn limits(&self) -> Result<Limits, Error> {
        if !(MIN_SEGMENT_BYTES..=MAX_SEGMENT_BYTES).contains(&self.segment_bytes) {
            return Err(Error::Config(format!(
                "segment_bytes {} outside {MIN_SEGMENT_BYTES}..={MAX_SEGMENT_BYTES}",
                self.segment_bytes
            )));
        }
        if !(MIN_BATCH_BYTES..=MAX_BATCH_BYTES).contains(&self.max_batch_bytes) {
            return Err(Error::Config(format!(
                "max_batch_bytes {} outside {MIN_BATCH_BYTES}..={MAX_BATCH_BYTES}",
                self.max_batch_bytes
            )));
        }
        if self.max_pending_bytes < self.max_batch_bytes {
            return Err(Error::Config(format!(
                "max_pending_bytes {} is below max_batch_bytes {}",
                self.max_pending_bytes, self.max_batch_bytes
            )));
        }
        let segment_room = (self.segment_bytes - SEGMENT_HEADER_BYTES as u64) as usize;
        let batch_bytes =
            self.max_batch_bytes.min(segment_room) / FRAME_ALIGN_BYTES * FRAME_ALIGN_BYTES;
        Ok(Limits {
            segment_bytes: self.segment_bytes,
            batch_bytes,
            record_bytes: batch_bytes - FRAME_HEADER_BYTES,
            pending_bytes: self.max_pending_bytes,
        })
    }
}

/// The limits derived from a validated [`LogConfig`].
#[derive(Debug, Clone, Copy)]
pub(crate) struct Limits {
    pub segment_bytes: u64,
    /// Bytes of one batch: fits both `max_batch_bytes` and an empty segment.
    pub batch_bytes: usize,
    /// Largest record payload: its frame fills a whole batch.
    pub record_bytes: usize,
    pub pending_bytes: usize,
}

/// One record read back from the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// Its position in the log.
    pub lsn: Lsn,
    /// The caller's tag.
    pub kind: u8,
    /// The caller's bytes.
    pub data: Vec<u8>,
}

/// What [`Log::open`] found. Read the records with [`Log::read_from`].
#[derive(Debug)]
pub struct Recovery {
    /// The owner's last checkpoint hint: its read models cover lsn ..=this (0 if never
    /// checkpointed). The log holds every record from [`Recovery::first_lsn`] on regardless.
    pub checkpoint_lsn: Lsn,
    /// The lsn of the log's first record: 1, unless the log was written by a version that
    /// deleted checkpointed segments (then at most `checkpoint_lsn + 1`). For a log without
    /// records, the lsn the first record will get.
    pub first_lsn: Lsn,
    /// The lsn of the last record after recovery (0 if none): everything up to it is durable.
    pub last_lsn: Lsn,
    /// The incomplete last batch that was cut off, if any. Its records were never
    /// acknowledged (a ticket resolves only after its whole batch is synced).
    pub torn_tail: Option<TornTail>,
}

/// A torn (incomplete, never acknowledged) last batch found and cut by [`Log::open`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TornTail {
    /// The segment file that held it.
    pub segment: PathBuf,
    /// Where it began; new appends are written from here.
    pub offset: u64,
    /// Bytes zeroed from `offset` on.
    pub bytes_cut: u64,
    /// Intact frames of the torn batch that were dropped (best effort: damaged ones are not
    /// counted).
    pub records_cut: usize,
}

/// Counters since the log was opened.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LogStats {
    /// Accepted `submit` calls.
    pub submits: u64,
    /// Records written and synced.
    pub records: u64,
    /// Batches written (one write each).
    pub batches: u64,
    /// `fdatasync` calls on batches (one per batch).
    pub syncs: u64,
    /// Frame bytes written, padding included.
    pub bytes_written: u64,
    /// Segment files created by the writer (rolls), not counting the first one.
    pub segments_created: u64,
    /// How many records each sync made durable: `records_per_sync[i]` counts the syncs of at
    /// most [`RECORDS_PER_SYNC_BOUNDS`]`[i]` records (and more than the bound before it); the
    /// last slot counts the larger ones. How well group commit gathers concurrent appends.
    pub records_per_sync: [u64; RECORDS_PER_SYNC_BUCKETS],
}

/// Upper bounds of the [`LogStats::records_per_sync`] buckets (records per sync).
pub const RECORDS_PER_SYNC_BOUNDS: [u64; 12] = [1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 4096];

/// Slots of [`LogStats::records_per_sync`]: one per bound, and one for the larger batches.
pub const RECORDS_PER_SYNC_BUCKETS: usize = RECORDS_PER_SYNC_BOUNDS.len() + 1;

/// Log errors, grouped by what the caller does next. Each has a stable code ([`Error::code`]).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// An I/O call failed (at open, checkpoint, or in the writer, which then turns every
    /// later call into [`Error::Failed`]). Give up on this log handle; reopen after fixing.
    #[error("[SF-LOG-001] log I/O error: {op} {}: {source}", .path.display())]
    Io {
        /// What was being done.
        op: &'static str,
        /// The file or directory it was done to.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The log on disk is damaged in a way a crash cannot explain. Needs an operator: the
    /// log refuses to open rather than silently serve or skip records.
    #[error("[SF-LOG-002] corrupt log file {} at offset {offset}{}: {detail}", .segment.display(), lsn_note(*.lsn))]
    Corrupt {
        /// The segment (or checkpoint) file.
        segment: PathBuf,
        /// Byte offset of the damage in that file.
        offset: u64,
        /// The lsn of the damaged record, when the log can tell (the one expected there).
        lsn: Option<Lsn>,
        /// What was wrong, and the nearest good lsn when known.
        detail: String,
    },
    /// The writer hit an I/O error earlier; the log refuses further appends (as Postgres
    /// does after a failed fsync: a retried sync could acknowledge lost data). Reopen.
    #[error("[SF-LOG-003] log writer failed earlier, appends refused: {0}")]
    Failed(String),
    /// The log was closed.
    #[error("[SF-LOG-004] log is closed")]
    Closed,
    /// A record exceeds the limit derived from the config. A caller bug: do not retry.
    #[error("[SF-LOG-005] record of {bytes} bytes exceeds the limit of {max} bytes")]
    RecordTooLarge {
        /// The record's payload size.
        bytes: usize,
        /// The largest payload accepted.
        max: usize,
    },
    /// Too many bytes are queued for the writer. Retry later (the queue drains at disk speed).
    #[error("[SF-LOG-006] log overloaded: {pending_bytes} bytes pending, limit {max}")]
    Backpressure {
        /// Bytes queued when the submission was refused.
        pending_bytes: usize,
        /// `max_pending_bytes`.
        max: usize,
    },
    /// The [`LogConfig`] is out of range.
    #[error("[SF-LOG-007] invalid log config: {0}")]
    Config(String),
    /// `checkpoint` was asked to cover records that are not durable yet. A caller bug.
    #[error("[SF-LOG-008] checkpoint at lsn {upto} is beyond the durable lsn {durable}")]
    CheckpointBeyondDurable {
        /// The requested checkpoint.
        upto: Lsn,
        /// The last durable lsn.
        durable: Lsn,
    },
    /// Another open `Log` (in this or another process) holds the directory.
    #[error("[SF-LOG-009] log directory {} is in use by another log handle", .dir.display())]
    Locked {
        /// The log directory.
        dir: PathBuf,
    },
    /// [`Log::compact`] was given a lsn that is not the first lsn of a segment. A caller
    /// bug: take it from [`Log::segments`] or [`Log::segment_of`].
    #[error(
        "[SF-LOG-010] no log segment starts at lsn {first_lsn}: compact takes a segment's \
         first lsn (see Log::segments or Log::segment_of)"
    )]
    NoSuchSegment {
        /// The lsn given.
        first_lsn: Lsn,
    },
    /// [`Log::compact`] was asked to compact the segment being written. Only sealed
    /// segments can be compacted; wait until the log has rolled past it.
    #[error(
        "[SF-LOG-011] log segment {first_lsn} is the one being written: only sealed \
         segments (all but the last) can be compacted"
    )]
    SegmentNotSealed {
        /// The segment's first lsn.
        first_lsn: Lsn,
    },
}

fn lsn_note(lsn: Option<Lsn>) -> String {
    lsn.map_or_else(String::new, |l| format!(" (record lsn {l})"))
}

impl Error {
    /// The stable code of this error, e.g. `"SF-LOG-002"` for corruption.
    pub fn code(&self) -> &'static str {
        match self {
            Error::Io { .. } => "SF-LOG-001",
            Error::Corrupt { .. } => "SF-LOG-002",
            Error::Failed(_) => "SF-LOG-003",
            Error::Closed => "SF-LOG-004",
            Error::RecordTooLarge { .. } => "SF-LOG-005",
            Error::Backpressure { .. } => "SF-LOG-006",
            Error::Config(_) => "SF-LOG-007",
            Error::CheckpointBeyondDurable { .. } => "SF-LOG-008",
            Error::Locked { .. } => "SF-LOG-009",
            Error::NoSuchSegment { .. } => "SF-LOG-010",
            Error::SegmentNotSealed { .. } => "SF-LOG-011",
        }
    }
}

/// A ticket for submitted records: resolves to the lsn of their last record once all of
/// them are written and synced, or to the error that prevented it.
#[derive(Debug)]
#[must_use = "a submission is not durable until its ticket resolves"]
pub struct Durable {
    last_lsn: Lsn,
    rx: oneshot::Receiver<Result<Lsn, Error>>,
}

impl Durable {
    /// The lsn the last record was given (known at once; durable only once the ticket
    /// resolves). For an empty submission, the lsn before it.
    pub fn last_lsn(&self) -> Lsn {
        self.last_lsn
    }

    /// Waits, without blocking the async runtime, until the records are durable.
    ///
    /// Then it yields once before returning. The writer resolves a sync's tickets one after
    /// another from its own thread; without the yield, the first caller to resume answers its
    /// request at once, the connection task writes that one response, then the next caller
    /// resumes, and so on: one socket write per response. With it, every caller of the sync
    /// runs to its answer before the connection task is polled again, and one write carries
    /// them all (the server's `writev` calls per second halve on the bench's throughput
    /// shape, at 5-15% more steps per second).
    pub async fn wait(self) -> Result<Lsn, Error> {
        let r = self.rx.await.unwrap_or_else(|_| Err(writer_gone()));
        tokio::task::yield_now().await;
        r
    }

    /// Blocks the thread until the records are durable. For sync callers; panics if called
    /// from inside an async runtime (use [`Durable::wait`] there).
    pub fn wait_blocking(self) -> Result<Lsn, Error> {
        self.rx
            .blocking_recv()
            .unwrap_or_else(|_| Err(writer_gone()))
    }
}

fn writer_gone() -> Error {
    Error::Failed("the log writer stopped without resolving this ticket".into())
}

/// The segment log. `Send + Sync`: share it with `Arc`.
///
/// Dropping it (like [`Log::close`]) refuses new submissions, lets the writer write and sync
/// what was already submitted, and joins the writer thread: it blocks for up to one batch
/// of I/O per queued batch.
pub struct Log {
    shared: Arc<Shared>,
    writer: Mutex<Option<JoinHandle<()>>>,
    /// The durable checkpoint lsn; the mutex also serializes `checkpoint` calls.
    checkpoint_lsn: Mutex<Lsn>,
    /// Serializes `compact` calls.
    compact_lock: Mutex<()>,
    _lock: DirLock,
}

impl std::fmt::Debug for Log {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Log")
            .field("dir", &self.shared.dir)
            .field("last_lsn", &self.last_lsn())
            .field("durable_lsn", &self.durable_lsn())
            .finish_non_exhaustive()
    }
}

impl Log {
    /// Opens (or creates) the log in `config.dir`, recovers it, and starts the writer thread.
    /// Fails with [`Error::Corrupt`] on damage that a crash cannot explain.
    pub fn open(config: LogConfig) -> Result<(Log, Recovery), Error> {
        let limits = config.limits()?;
        let dir = config.dir;
        let vfs = config.vfs;
        if !vfs.exists(&dir).map_err(io_err("stat", &dir))? {
            vfs.create_dir_all(&dir)
                .map_err(io_err("create log directory", &dir))?;
            if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
                segment::fsync_dir(&*vfs, parent)?;
            }
        }
        let lock = segment::lock_dir(&*vfs, &dir)?;
        let checkpoint_lsn = checkpoint::read(&*vfs, &dir)?;
        let recovered = recovery::recover(
            &*vfs,
            &dir,
            checkpoint_lsn,
            limits.segment_bytes,
            limits.batch_bytes,
        )?;
        let mut segments = recovered.segments;
        let tail = match recovered.tail {
            Some(tail) => tail,
            None => {
                let header = SegmentHeader {
                    first_lsn: recovered.next_lsn,
                    first_batch: recovered.next_batch,
                    covers: None,
                };
                let (file, path) = segment::create(&*vfs, &dir, header, limits.segment_bytes)?;
                segments.push(SegmentMeta {
                    first_lsn: header.first_lsn,
                    path: path.clone(),
                    bytes: limits.segment_bytes,
                    compacted: false,
                });
                recovery::Tail {
                    file,
                    path,
                    offset: SEGMENT_HEADER_BYTES as u64,
                    capacity: limits.segment_bytes,
                }
            }
        };
        let shared = Arc::new(Shared {
            queue: Mutex::new(Queue {
                pending: VecDeque::new(),
                pending_bytes: 0,
                next_lsn: recovered.next_lsn,
                wake_at: 1,
                state: State::Open,
            }),
            wake: Condvar::new(),
            durable_lsn: AtomicU64::new(recovered.next_lsn - 1),
            stats: Counters::default(),
            segments: Mutex::new(segments),
            limits,
            dir: dir.clone(),
            vfs,
        });
        let writer = Writer::new(Arc::clone(&shared), tail, recovered.next_batch);
        let handle = std::thread::Builder::new()
            .name("steadfast-log-writer".into())
            .spawn(move || writer.run())
            .map_err(io_err("spawn log writer thread", &dir))?;
        let log = Log {
            shared,
            writer: Mutex::new(Some(handle)),
            checkpoint_lsn: Mutex::new(checkpoint_lsn),
            compact_lock: Mutex::new(()),
            _lock: lock,
        };
        let recovery = Recovery {
            checkpoint_lsn,
            first_lsn: recovered.first_lsn,
            last_lsn: recovered.next_lsn - 1,
            torn_tail: recovered.torn_tail,
        };
        Ok((log, recovery))
    }

    /// Enqueues `records` (kind, payload) in order and returns at once, without I/O. The
    /// order of `submit` calls is the order in the log. The ticket resolves once the batch
    /// holding the last of them is written and synced. An empty `records` is a barrier: its
    /// ticket resolves once everything submitted before it is durable.
    pub fn submit(&self, records: Vec<(u8, Vec<u8>)>) -> Result<Durable, Error> {
        let limits = &self.shared.limits;
        let mut bytes = 0usize;
        for (_, data) in &records {
            if data.len() > limits.record_bytes {
                return Err(Error::RecordTooLarge {
                    bytes: data.len(),
                    max: limits.record_bytes,
                });
            }
            bytes = bytes.saturating_add(frame_bytes(data.len()));
        }
        let (tx, rx) = oneshot::channel();
        let (last_lsn, wake) = {
            let mut q = self.shared.queue.lock();
            match &q.state {
                State::Open => {}
                State::Closing | State::Closed => return Err(Error::Closed),
                State::Failed(message) => return Err(Error::Failed(message.clone())),
            }
            // An oversized submission is let through when nothing else waits, so that it
            // cannot be refused forever.
            if q.pending_bytes > 0 && q.pending_bytes.saturating_add(bytes) > limits.pending_bytes {
                return Err(Error::Backpressure {
                    pending_bytes: q.pending_bytes,
                    max: limits.pending_bytes,
                });
            }
            let last_lsn = q.next_lsn + records.len() as Lsn - 1;
            q.next_lsn = last_lsn + 1;
            q.pending_bytes += bytes;
            q.pending.push_back(Pending {
                records,
                last_lsn,
                bytes,
                tx,
            });
            (last_lsn, q.pending.len() >= q.wake_at)
        };
        if wake {
            self.shared.wake.notify_one();
        }
        self.shared.stats.submits.fetch_add(1, Ordering::Relaxed);
        Ok(Durable { last_lsn, rx })
    }

    /// Durably records the owner's hint "my read models cover every record with
    /// `lsn <= upto`", given back by the next [`Log::open`] as [`Recovery::checkpoint_lsn`].
    /// Deletes nothing: the log keeps every record. A checkpoint at or below the current one
    /// is a no-op; one beyond the durable lsn is refused.
    pub fn checkpoint(&self, upto: Lsn) -> Result<(), Error> {
        let mut current = self.checkpoint_lsn.lock();
        if upto <= *current {
            return Ok(());
        }
        let durable = self.durable_lsn();
        if upto > durable {
            return Err(Error::CheckpointBeyondDurable { upto, durable });
        }
        checkpoint::write(&*self.shared.vfs, &self.shared.dir, upto)?;
        *current = upto;
        tracing::debug!(checkpoint_lsn = upto, "log checkpoint");
        Ok(())
    }

    /// Streams every record with `lsn >= from_lsn` (from [`Log::first_lsn`] if earlier) up
    /// to the durable lsn at the time of this call, in order, verifying every frame it reads
    /// (see [`LogReader`]). Usable while the writer appends. Errors only if the log directory
    /// cannot be read; damage is reported by the iterator as [`Error::Corrupt`].
    ///
    /// ```no_run
    /// # fn f(log: &steadfast_engine::log::Log) -> Result<(), steadfast_engine::log::Error> {
    /// for record in log.read_from(1)? {
    ///     let record = record?;
    ///     println!("lsn {} kind {} {} bytes", record.lsn, record.kind, record.data.len());
    /// }
    /// # Ok(()) }
    /// ```
    pub fn read_from(&self, from_lsn: Lsn) -> Result<LogReader, Error> {
        // The durable lsn first: every record up to it is in a segment listed by then.
        let upto = self.durable_lsn();
        let segments = self.shared.segments.lock().clone();
        Ok(LogReader::new(
            Arc::clone(&self.shared.vfs),
            &segments,
            from_lsn,
            upto,
        ))
    }

    /// The lsn of the log's first record (see [`Recovery::first_lsn`]).
    pub fn first_lsn(&self) -> Lsn {
        self.shared
            .segments
            .lock()
            .first()
            .map_or(1, |s| s.first_lsn)
    }

    /// The lsn given to the last submitted record (durable or not); 0 for an empty log.
    pub fn last_lsn(&self) -> Lsn {
        self.shared.queue.lock().next_lsn - 1
    }

    /// Every record up to this lsn is written and synced.
    pub fn durable_lsn(&self) -> Lsn {
        self.shared.durable_lsn.load(Ordering::Acquire)
    }

    /// The checkpoint lsn (0 if none).
    pub fn checkpoint_lsn(&self) -> Lsn {
        *self.checkpoint_lsn.lock()
    }

    /// The log directory.
    pub fn dir(&self) -> &Path {
        &self.shared.dir
    }

    /// Counters since open.
    pub fn stats(&self) -> LogStats {
        self.shared.stats.snapshot()
    }

    /// Refuses new submissions, lets the writer write and sync everything already submitted,
    /// and joins it. Idempotent; [`Log::close`] and `Drop` call it. Returns
    /// [`Error::Failed`] if the writer had failed.
    pub fn shutdown(&self) -> Result<(), Error> {
        {
            let mut q = self.shared.queue.lock();
            if q.state == State::Open {
                q.state = State::Closing;
            }
        }
        self.shared.wake.notify_all();
        // Held while joining, so a concurrent caller returns only after the drain.
        let mut writer = self.writer.lock();
        if let Some(handle) = writer.take()
            && handle.join().is_err()
        {
            self.shared.fail("the log writer thread panicked");
        }
        let mut q = self.shared.queue.lock();
        match &q.state {
            State::Failed(message) => Err(Error::Failed(message.clone())),
            _ => {
                q.state = State::Closed;
                Ok(())
            }
        }
    }

    /// Drains, syncs and joins the writer, then releases the directory.
    pub fn close(self) -> Result<(), Error> {
        self.shutdown()
    }
}

impl Drop for Log {
    fn drop(&mut self) {
        if let Err(e) = self.shutdown() {
            tracing::warn!(error = %e, "log closed after a writer failure");
        }
    }
}

#[cfg(test)]
mod tests;
