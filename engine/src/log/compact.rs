//! Compaction: rewriting one sealed segment so that it holds only the records its owner
//! still needs, with their original lsns and batch numbers ([`Log::compact`]), and the
//! per-segment view the owner uses to pick sparse segments ([`Log::segments`],
//! [`Log::segment_of`]).
//!
//! Crash safety comes from the order of the steps: the new segment (version 2 header, see
//! `segment.rs`) is written to `{first_lsn:020}.seg.compact`, fsynced, renamed over the old
//! `.seg` file, and then the directory is fsynced. A power cut before the rename leaves the
//! old segment (open deletes the leftover `.seg.compact`); after it, either the old or the
//! new one, each whole; never both (one name) and never neither (rename replaces
//! atomically).
//!
//! Concurrency: the writer only ever writes the last segment, which is never compacted.
//! Readers open a segment file when they reach it and keep the handle, so one that opened
//! the old file keeps reading it after the rename; one that opens it later reads the new
//! one. Compactions are serialized with each other.

use std::path::Path;

use crate::log::frame::{self, FrameHeader};
use crate::log::segment::{self, Covers, SEGMENT_HEADER_BYTES, SegmentHeader, io_err};
use crate::log::vfs::{OpenMode, VfsFile};
use crate::log::walk::{Cursor, READ_CHUNK_BYTES, Step, Walk, corrupt};
use crate::log::{Error, Log, Lsn, Record};

/// What [`Log::compact`] did to one segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CompactReport {
    /// The segment's first lsn (its name).
    pub first_lsn: Lsn,
    /// The first lsn after the range the segment covers (the next segment's first lsn).
    pub end_lsn: Lsn,
    /// The segment file's size before.
    pub bytes_before: u64,
    /// The segment file's size after (header and kept frames, no preallocated tail).
    pub bytes_after: u64,
    /// Records the segment holds now.
    pub records_kept: u64,
    /// Records dropped by this compaction.
    pub records_dropped: u64,
}

/// One segment of the log, as [`Log::segments`] lists it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SegmentInfo {
    /// The lsn its range starts at (its name). Every lsn from here to the next segment's
    /// `first_lsn` was written to this segment; a compacted one holds only those kept.
    pub first_lsn: Lsn,
    /// The next segment's `first_lsn`; `None` for the segment being written.
    pub end_lsn: Option<Lsn>,
    /// The file's size in bytes (the whole preallocated size for the segment being
    /// written).
    pub file_bytes: u64,
    /// Whether it is complete: every segment but the last one. Only sealed segments can be
    /// compacted.
    pub sealed: bool,
    /// Whether it has been compacted (its lsns may have gaps).
    pub compacted: bool,
}

/// Buffers the kept frames and writes them out in chunks, holding one frame back until it
/// knows whether the next kept frame continues its batch.
struct CompactWriter<'a> {
    file: &'a dyn VfsFile,
    path: &'a Path,
    buf: Vec<u8>,
    at: u64,
    held: Option<(FrameHeader, Vec<u8>)>,
}

impl CompactWriter<'_> {
    /// Adds a kept frame. Kept frames of one original batch stay one batch: the held frame
    /// ends its batch unless this one has the same batch number.
    fn push(&mut self, header: FrameHeader, payload: Vec<u8>) -> Result<(), Error> {
        if let Some((mut h, p)) = self.held.take() {
            h.last_in_batch = h.batch != header.batch;
            self.encode(h, &p)?;
        }
        self.held = Some((header, payload));
        Ok(())
    }

    fn encode(&mut self, header: FrameHeader, payload: &[u8]) -> Result<(), Error> {
        frame::encode(&mut self.buf, header, payload);
        if self.buf.len() >= READ_CHUNK_BYTES {
            self.flush()?;
        }
        Ok(())
    }

    fn flush(&mut self) -> Result<(), Error> {
        if !self.buf.is_empty() {
            self.file
                .write_all_at(&self.buf, self.at)
                .map_err(io_err("write compacted segment", self.path))?;
            self.at += self.buf.len() as u64;
            self.buf.clear();
        }
        Ok(())
    }

    /// Writes the held frame as the end of its batch and everything buffered; returns the
    /// file's size.
    fn finish(mut self) -> Result<u64, Error> {
        if let Some((mut h, p)) = self.held.take() {
            h.last_in_batch = true;
            self.encode(h, &p)?;
        }
        self.flush()?;
        Ok(self.at)
    }
}

impl Log {
    /// Rewrites the sealed segment named `first_lsn` so that it holds only the records for
    /// which `keep` returns true, with their original lsns and batch numbers, and replaces
    /// the old file, crash-safely (see `compact.rs`). `keep` sees every record of the
    /// segment once, in lsn order (each frame verified first). Compacting a compacted
    /// segment again is fine; keeping everything still rewrites the file (without its
    /// preallocated tail).
    ///
    /// Readers and the writer keep working meanwhile. Errors: [`Error::NoSuchSegment`] if
    /// `first_lsn` names no segment (see [`Log::segments`], [`Log::segment_of`]),
    /// [`Error::SegmentNotSealed`] for the segment being written, [`Error::Corrupt`] if
    /// the segment (or the next one's header) is damaged, which compaction never hides:
    /// the old file is left as it is. On [`Error::Io`] the segment is either the old or
    /// the new one, each whole; the log itself keeps working.
    ///
    /// ```no_run
    /// # fn f(log: &steadfast_engine::log::Log) -> Result<(), steadfast_engine::log::Error> {
    /// let dead = |lsn: u64| lsn % 2 == 0; // the owner's idea of which records are dead
    /// if let Some(seg) = log.segments().into_iter().find(|s| s.sealed) {
    ///     let report = log.compact(seg.first_lsn, &mut |r| !dead(r.lsn))?;
    ///     println!("{} -> {} bytes", report.bytes_before, report.bytes_after);
    /// }
    /// # Ok(()) }
    /// ```
    pub fn compact(
        &self,
        first_lsn: Lsn,
        keep: &mut dyn FnMut(&Record) -> bool,
    ) -> Result<CompactReport, Error> {
        let _one_at_a_time = self.compact_lock.lock();
        let (meta, next) = {
            let segments = self.shared.segments.lock();
            let i = segments
                .binary_search_by_key(&first_lsn, |s| s.first_lsn)
                .map_err(|_| Error::NoSuchSegment { first_lsn })?;
            match segments.get(i + 1) {
                Some(next) => (segments[i].clone(), next.clone()),
                None => return Err(Error::SegmentNotSealed { first_lsn }),
            }
        };
        let vfs = &*self.shared.vfs;
        // The range the segment covers ends where the next segment starts.
        let next_header = Cursor::open(vfs, &next.path, OpenMode::Read)?.header(next.first_lsn)?;
        let covers = Covers {
            end_lsn: next_header.first_lsn,
            end_batch: next_header.first_batch,
        };
        let mut cur = Cursor::open(vfs, &meta.path, OpenMode::Read)?;
        let header = cur.header(meta.first_lsn)?;
        if header.covers.is_some_and(|c| c != covers) {
            return Err(corrupt(
                &next.path,
                0,
                Some(covers.end_lsn),
                format!(
                    "segment starts at lsn {} batch {}, but the compacted segment before it \
                     covers up to {:?}: a segment is missing or misplaced",
                    covers.end_lsn, covers.end_batch, header.covers
                ),
            ));
        }
        let tmp = segment::compact_path(&meta.path);
        let file = vfs
            .open(&tmp, OpenMode::CreateTruncate)
            .map_err(io_err("create compacted segment", &tmp))?;
        let written = write_compacted(&mut cur, &*file, &tmp, header, covers, &next, keep)
            .and_then(|(bytes, kept, dropped)| {
                file.sync_all()
                    .map_err(io_err("fsync compacted segment", &tmp))?;
                Ok((bytes, kept, dropped))
            });
        let (bytes_after, records_kept, records_dropped) = match written {
            Ok(w) => w,
            Err(e) => {
                // Best effort: open deletes a leftover `.seg.compact` anyway.
                drop(file);
                let _ = vfs.remove(&tmp);
                return Err(e);
            }
        };
        drop(file);
        vfs.rename(&tmp, &meta.path)
            .map_err(io_err("rename compacted segment", &tmp))?;
        segment::fsync_dir(vfs, &self.shared.dir)?;
        if let Some(m) = self
            .shared
            .segments
            .lock()
            .iter_mut()
            .find(|s| s.first_lsn == first_lsn)
        {
            m.bytes = bytes_after;
            m.compacted = true;
        }
        let report = CompactReport {
            first_lsn,
            end_lsn: covers.end_lsn,
            bytes_before: cur.len,
            bytes_after,
            records_kept,
            records_dropped,
        };
        tracing::info!(
            first_lsn,
            end_lsn = covers.end_lsn,
            bytes_before = report.bytes_before,
            bytes_after,
            records_kept,
            records_dropped,
            "log segment compacted"
        );
        Ok(report)
    }

    /// Every segment, oldest first, with its size and kind: what an owner needs to account
    /// dead bytes per segment and pick sparse ones to [`Log::compact`].
    pub fn segments(&self) -> Vec<SegmentInfo> {
        let segments = self.shared.segments.lock();
        segments
            .iter()
            .enumerate()
            .map(|(i, s)| {
                let end_lsn = segments.get(i + 1).map(|n| n.first_lsn);
                SegmentInfo {
                    first_lsn: s.first_lsn,
                    end_lsn,
                    file_bytes: s.bytes,
                    sealed: end_lsn.is_some(),
                    compacted: s.compacted,
                }
            })
            .collect()
    }

    /// The `first_lsn` of the segment whose range holds `lsn` (even if a compaction dropped
    /// that record), or `None` if `lsn` is not durable yet or before the log's first record.
    pub fn segment_of(&self, lsn: Lsn) -> Option<Lsn> {
        if lsn == 0 || lsn > self.durable_lsn() {
            return None;
        }
        let segments = self.shared.segments.lock();
        let i = segments.partition_point(|s| s.first_lsn <= lsn);
        i.checked_sub(1).map(|i| segments[i].first_lsn)
    }
}

/// Walks the old segment (verifying every frame and that it ends where the next segment
/// starts) and writes the kept frames and the version 2 header to `file`. Returns the new
/// size and the records kept and dropped.
fn write_compacted(
    cur: &mut Cursor,
    file: &dyn VfsFile,
    path: &Path,
    header: SegmentHeader,
    covers: Covers,
    next: &segment::SegmentMeta,
    keep: &mut dyn FnMut(&Record) -> bool,
) -> Result<(u64, u64, u64), Error> {
    let mut out = CompactWriter {
        file,
        path,
        buf: Vec::new(),
        at: SEGMENT_HEADER_BYTES as u64,
        held: None,
    };
    let mut walk = Walk::new(header);
    let (mut kept, mut dropped) = (0u64, 0u64);
    loop {
        match walk.step(cur, true)? {
            Step::Frame { header, payload } => {
                let record = Record {
                    lsn: header.lsn,
                    kind: header.kind,
                    data: payload,
                };
                if keep(&record) {
                    kept += 1;
                    out.push(header, record.data)?;
                } else {
                    dropped += 1;
                }
            }
            stopped => {
                walk.seal(cur, stopped)?;
                break;
            }
        }
    }
    // An appended segment must end exactly where the next one starts.
    walk.enter(
        &next.path,
        SegmentHeader {
            first_lsn: covers.end_lsn,
            first_batch: covers.end_batch,
            covers: None,
        },
    )?;
    let bytes = out.finish()?;
    let new_header = SegmentHeader {
        first_lsn: header.first_lsn,
        first_batch: header.first_batch,
        covers: Some(covers),
    };
    file.write_all_at(&segment::encode_header(new_header), 0)
        .map_err(io_err("write compacted segment header", path))?;
    Ok((bytes, kept, dropped))
}
