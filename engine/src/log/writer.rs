//! The writer thread: group commit.
//!
//! Submitters append to a queue under a mutex (lsns are assigned there, so the order of
//! `submit` calls is the order in the log) and return at once. The one writer thread takes
//! everything queued so far, up to the batch limit, encodes it into one buffer, writes it
//! with one `pwrite` and makes it durable with one `fdatasync`; only then does it resolve the
//! tickets of the submissions it completed. While it syncs, new submissions queue up and
//! share the next sync. A batch never spans segments: when the next frame does not fit, the
//! batch ends there and the writer rolls to a new segment.
//!
//! An I/O error is sticky: the writer fails every pending ticket and every later `submit`
//! with [`Error::Failed`], and stops. After a failed `fdatasync` the page cache may claim
//! data is written that never reaches the disk, so retrying could acknowledge lost data.

use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex};
use tokio::sync::oneshot;

use crate::log::frame::{self, FrameHeader, frame_bytes};
use crate::log::recovery::Tail;
use crate::log::segment::{self, SEGMENT_HEADER_BYTES, SegmentHeader, SegmentMeta, io_err};
use crate::log::vfs::{Vfs, VfsFile};
use crate::log::{Error, Limits, LogStats, Lsn};

pub(crate) type TicketSender = oneshot::Sender<Result<Lsn, Error>>;

/// The records of one submission with the lsn of the first.
type Taken = (Lsn, Vec<(u8, Vec<u8>)>);

/// Whether the log accepts appends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum State {
    Open,
    /// `close` was called: the writer drains the queue and exits.
    Closing,
    Closed,
    /// The writer hit an I/O error; the message is given to every later caller.
    Failed(String),
}

/// One `submit` call waiting for the writer.
pub(crate) struct Pending {
    pub records: Vec<(u8, Vec<u8>)>,
    /// The lsn of the last record; for an empty submission, the lsn before it.
    pub last_lsn: Lsn,
    /// Encoded size, padding included.
    pub bytes: usize,
    pub tx: TicketSender,
}

pub(crate) struct Queue {
    pub pending: VecDeque<Pending>,
    pub pending_bytes: usize,
    pub next_lsn: Lsn,
    pub state: State,
    /// A submission wakes the writer once this many are queued (more than one while the
    /// writer waits for company, see [`Writer::gather`]).
    pub wake_at: usize,
}

#[derive(Default)]
pub(crate) struct Counters {
    pub submits: AtomicU64,
    pub records: AtomicU64,
    pub batches: AtomicU64,
    pub syncs: AtomicU64,
    pub bytes_written: AtomicU64,
    pub segments_created: AtomicU64,
    pub records_per_sync: [AtomicU64; super::RECORDS_PER_SYNC_BUCKETS],
}

impl Counters {
    pub fn snapshot(&self) -> LogStats {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        LogStats {
            submits: get(&self.submits),
            records: get(&self.records),
            batches: get(&self.batches),
            syncs: get(&self.syncs),
            bytes_written: get(&self.bytes_written),
            segments_created: get(&self.segments_created),
            records_per_sync: std::array::from_fn(|i| get(&self.records_per_sync[i])),
        }
    }
}

/// What the `Log` handle and the writer thread share.
pub(crate) struct Shared {
    pub queue: Mutex<Queue>,
    /// Signalled when the queue gets work or the state changes.
    pub wake: Condvar,
    /// Every lsn up to this one is written and synced.
    pub durable_lsn: AtomicU64,
    pub stats: Counters,
    /// Live segments, oldest first; the last one is being written.
    pub segments: Mutex<Vec<SegmentMeta>>,
    pub limits: Limits,
    pub dir: PathBuf,
    pub vfs: Arc<dyn Vfs>,
}

impl Shared {
    /// Makes the failure sticky and fails everything still queued.
    pub fn fail(&self, message: &str) {
        let drained: Vec<Pending> = {
            let mut q = self.queue.lock();
            q.state = State::Failed(message.to_string());
            q.pending_bytes = 0;
            q.pending.drain(..).collect()
        };
        for p in drained {
            let _ = p.tx.send(Err(Error::Failed(message.to_string())));
        }
        self.wake.notify_all();
    }
}

/// The writer thread's own state: the segment being written and where.
pub(crate) struct Writer {
    shared: Arc<Shared>,
    file: Box<dyn VfsFile>,
    path: PathBuf,
    offset: u64,
    capacity: u64,
    next_batch: u64,
    buf: Vec<u8>,
    /// Submissions the last batch carried.
    last_submits: usize,
    /// How long the last batch's write and sync took.
    last_sync: Duration,
}

/// Longest a batch waits for company (see [`Writer::gather`]).
const GATHER_MAX: Duration = Duration::from_micros(200);

impl Writer {
    pub fn new(shared: Arc<Shared>, tail: Tail, next_batch: u64) -> Writer {
        Writer {
            shared,
            file: tail.file,
            path: tail.path,
            offset: tail.offset,
            capacity: tail.capacity,
            next_batch,
            buf: Vec::new(),
            last_submits: 0,
            last_sync: Duration::ZERO,
        }
    }

    /// Group commit that waits for company. When the last batch carried several
    /// submissions (appends are concurrent), a batch that has fewer so far waits until as
    /// many are queued, but never longer than half the last sync took (at most
    /// [`GATHER_MAX`]): one sync then carries what two would have, for a delay shorter than
    /// the sync it saves. One append at a time (the last batch carried one) never waits.
    fn gather(&self, q: &mut parking_lot::MutexGuard<'_, Queue>) {
        let want = self.last_submits;
        let Some(wait) = gather_wait(want, q.pending.len(), self.last_sync) else {
            return;
        };
        let until = Instant::now() + wait;
        q.wake_at = want;
        while q.pending.len() < want && q.state == State::Open {
            if self.shared.wake.wait_until(q, until).timed_out() {
                break;
            }
        }
        q.wake_at = 1;
    }

    /// The thread body: take, write, sync, resolve; until closed and drained, or failed.
    pub fn run(mut self) {
        let mut records: Vec<Taken> = Vec::new();
        let mut tickets: VecDeque<(Lsn, TicketSender)> = VecDeque::new();
        loop {
            {
                let mut q = self.shared.queue.lock();
                while q.pending.is_empty() && q.state == State::Open {
                    self.shared.wake.wait(&mut q);
                }
                if q.pending.is_empty() {
                    return;
                }
                self.gather(&mut q);
                let mut bytes = 0usize;
                while let Some(p) = q.pending.front() {
                    if !tickets.is_empty() && bytes + p.bytes > self.shared.limits.batch_bytes {
                        break;
                    }
                    let p = q.pending.pop_front().expect("front exists");
                    bytes += p.bytes;
                    let first_lsn = p.last_lsn + 1 - p.records.len() as Lsn;
                    records.push((first_lsn, p.records));
                    tickets.push_back((p.last_lsn, p.tx));
                }
                q.pending_bytes -= bytes;
            }
            self.last_submits = records.len();
            let t0 = Instant::now();
            let result = self.write_all(&records, &mut tickets);
            self.last_sync = t0.elapsed();
            records.clear();
            if let Err(e) = result {
                let message = e.to_string();
                tracing::error!(error = %message, "log writer failed; refusing further appends");
                // Sticky first, so that whoever sees a failed ticket also sees a failed log.
                self.shared.fail(&message);
                for (_, tx) in tickets.drain(..) {
                    let _ = tx.send(Err(Error::Failed(message.clone())));
                }
                return;
            }
        }
    }

    /// Writes the taken submissions as one or more batches (more only when they exceed the
    /// batch limit or the segment's free space), resolving tickets as their records sync.
    fn write_all(
        &mut self,
        records: &[Taken],
        tickets: &mut VecDeque<(Lsn, TicketSender)>,
    ) -> Result<(), Error> {
        let items: Vec<(Lsn, u8, &[u8])> = records
            .iter()
            .flat_map(|(first, recs)| {
                recs.iter()
                    .enumerate()
                    .map(move |(i, (kind, data))| (first + i as Lsn, *kind, data.as_slice()))
            })
            .collect();
        let mut i = 0;
        while i < items.len() {
            let need = frame_bytes(items[i].2.len()) as u64;
            if self.capacity.saturating_sub(self.offset) < need {
                self.roll(items[i].0)?;
            }
            let room = (self.shared.limits.batch_bytes as u64).min(self.capacity - self.offset);
            let start = i;
            let mut size = 0u64;
            while i < items.len() {
                let f = frame_bytes(items[i].2.len()) as u64;
                if size + f > room {
                    break;
                }
                size += f;
                i += 1;
            }
            if i == start {
                // The record limit makes every frame fit a batch and an empty segment, so
                // this is a bug; refuse rather than loop or write a frame recovery rejects.
                return Err(io_err("write batch", &self.path)(std::io::Error::other(
                    format!("frame of {need} bytes does not fit {room} free bytes"),
                )));
            }
            self.buf.clear();
            for (j, &(lsn, kind, data)) in items[start..i].iter().enumerate() {
                let header = FrameHeader {
                    lsn,
                    batch: self.next_batch,
                    kind,
                    last_in_batch: start + j + 1 == i,
                };
                frame::encode(&mut self.buf, header, data);
            }
            debug_assert_eq!(self.buf.len() as u64, size);
            self.file
                .write_all_at(&self.buf, self.offset)
                .map_err(io_err("write batch", &self.path))?;
            self.file
                .sync_data()
                .map_err(io_err("fdatasync", &self.path))?;
            self.offset += size;
            self.next_batch += 1;
            let last_lsn = items[i - 1].0;
            let stats = &self.shared.stats;
            stats.batches.fetch_add(1, Ordering::Relaxed);
            stats.syncs.fetch_add(1, Ordering::Relaxed);
            stats.bytes_written.fetch_add(size, Ordering::Relaxed);
            stats
                .records
                .fetch_add((i - start) as u64, Ordering::Relaxed);
            let synced = (i - start) as u64;
            let bucket = super::RECORDS_PER_SYNC_BOUNDS
                .iter()
                .position(|b| synced <= *b)
                .unwrap_or(super::RECORDS_PER_SYNC_BOUNDS.len());
            stats.records_per_sync[bucket].fetch_add(1, Ordering::Relaxed);
            self.shared.durable_lsn.store(last_lsn, Ordering::Release);
            tracing::trace!(records = i - start, bytes = size, "log batch synced");
            resolve(tickets, last_lsn);
        }
        // Empty submissions (barriers) whose predecessors are all durable by now.
        resolve(tickets, Lsn::MAX);
        Ok(())
    }

    /// Starts a new segment whose first record will be `first_lsn`.
    fn roll(&mut self, first_lsn: Lsn) -> Result<(), Error> {
        let header = SegmentHeader {
            first_lsn,
            first_batch: self.next_batch,
            covers: None,
        };
        let segment_bytes = self.shared.limits.segment_bytes;
        let (file, path) =
            segment::create(&*self.shared.vfs, &self.shared.dir, header, segment_bytes)?;
        self.shared.segments.lock().push(SegmentMeta {
            first_lsn,
            path: path.clone(),
            bytes: segment_bytes,
            compacted: false,
        });
        self.shared
            .stats
            .segments_created
            .fetch_add(1, Ordering::Relaxed);
        self.file = file;
        self.path = path;
        self.offset = SEGMENT_HEADER_BYTES as u64;
        self.capacity = segment_bytes;
        Ok(())
    }
}

/// How long a batch with `queued` submissions waits for company when the last batch carried
/// `last_submits` and its sync took `last_sync` ([`Writer::gather`]); `None`: not at all.
fn gather_wait(last_submits: usize, queued: usize, last_sync: Duration) -> Option<Duration> {
    (last_submits >= 2 && queued < last_submits).then(|| (last_sync / 2).min(GATHER_MAX))
}

/// Resolves, in order, every ticket whose records are all durable (`last <= upto`).
fn resolve(tickets: &mut VecDeque<(Lsn, TicketSender)>, upto: Lsn) {
    while tickets.front().is_some_and(|(last, _)| *last <= upto) {
        let (last, tx) = tickets.pop_front().expect("front exists");
        // A dropped ticket is not an error: the caller chose not to wait.
        let _ = tx.send(Ok(last));
    }
}

#[cfg(test)]
mod gather_tests {
    use super::*;

    #[test]
    fn only_concurrent_appends_wait_for_company_and_never_longer_than_half_a_sync() {
        let sync = Duration::from_micros(120);
        // One append at a time: never waits.
        assert_eq!(gather_wait(0, 1, sync), None);
        assert_eq!(gather_wait(1, 1, sync), None);
        // As many queued as the last batch carried: goes at once.
        assert_eq!(gather_wait(3, 3, sync), None);
        assert_eq!(gather_wait(3, 5, sync), None);
        // Fewer: waits half the last sync, capped.
        assert_eq!(gather_wait(3, 1, sync), Some(Duration::from_micros(60)));
        assert_eq!(
            gather_wait(3, 1, Duration::from_millis(30)),
            Some(GATHER_MAX)
        );
    }
}
