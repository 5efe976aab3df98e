//! Recovery on open: verify every frame after the checkpoint, cut a torn last batch, and
//! refuse anything else that is wrong.
//!
//! Why only the last batch can be torn: the writer starts batch n+1 only after batch n was
//! written and fdatasync'ed, and a new segment is created (and its directory entry synced)
//! only after the previous segment's last batch was synced. So after a crash, everything
//! but the final batch of the final segment was durable before the crash, and any damage
//! there is corruption, not a torn write. Inside the final batch, a crash can leave any
//! subset of its pages on disk, in any order: a bad frame, a zero where a frame should be,
//! and intact frames of that same batch after the hole are all torn-write shapes. An intact
//! frame of a *later* batch after the damage is not: that batch was only written once the
//! damaged one had been synced.

use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use crate::log::checkpoint::CHECKPOINT_FILE;
use crate::log::frame::{self, Decoded, FRAME_ALIGN_BYTES, FRAME_HEADER_BYTES};
use crate::log::segment::{self, SEGMENT_HEADER_BYTES, SegmentMeta, io_err};
use crate::log::{Error, Lsn, MAX_BATCH_BYTES, MAX_SEGMENT_BYTES, Record, TornTail};

/// The largest lsn or batch number a segment header may claim (far beyond any real log).
const MAX_LSN: u64 = u64::MAX >> 1;
/// Zeros written per call when cutting a torn tail.
const ZERO_CHUNK_BYTES: usize = 1 << 20;

/// Where the writer continues: the last segment and the offset after its last whole batch.
pub(crate) struct Tail {
    pub file: File,
    pub path: PathBuf,
    pub offset: u64,
    pub capacity: u64,
}

/// Everything open learns from the directory.
pub(crate) struct Recovered {
    pub records: Vec<Record>,
    pub torn_tail: Option<TornTail>,
    pub segments: Vec<SegmentMeta>,
    /// `None` when the log has no segment yet.
    pub tail: Option<Tail>,
    pub next_lsn: Lsn,
    pub next_batch: u64,
}

/// A batch whose last frame has not been seen yet.
#[derive(Debug, Clone, Copy)]
struct OpenBatch {
    batch: u64,
    start: usize,
    first_lsn: Lsn,
    records_len: usize,
}

/// Where and why the frame walk of one segment stopped.
struct Stop {
    pos: usize,
    open: Option<OpenBatch>,
    bad: Option<String>,
}

struct Scan {
    checkpoint_lsn: Lsn,
    records: Vec<Record>,
    next_lsn: Lsn,
    /// The batch number the next batch must carry; known once a segment header was read.
    next_batch: u64,
}

fn corrupt(segment: &Path, offset: usize, detail: String) -> Error {
    Error::Corrupt {
        segment: segment.to_path_buf(),
        offset: offset as u64,
        detail,
    }
}

impl Scan {
    /// Best-effort pointer to the nearest good record, for error messages.
    fn near(&self) -> String {
        match self.next_lsn.checked_sub(1) {
            Some(l) if l > 0 => format!(" (last good record before it: lsn {l})"),
            _ => " (no good record before it)".to_string(),
        }
    }

    /// Checks the header of `seg` and walks its frames until the end of data or a bad frame.
    /// Frames that verify but break the lsn/batch sequence are corruption right away.
    fn walk(&mut self, seg: &SegmentMeta, buf: &[u8], first: bool) -> Result<Stop, Error> {
        let header = segment::decode_header(buf).map_err(|d| corrupt(&seg.path, 0, d))?;
        if header.first_lsn != seg.first_lsn {
            return Err(corrupt(
                &seg.path,
                0,
                format!(
                    "header says first lsn {} but the file name says {}",
                    header.first_lsn, seg.first_lsn
                ),
            ));
        }
        // Bounds keep every later `+ 1` on lsns and batch numbers from overflowing, whatever
        // a (checksummed but hostile) header says.
        for (what, n) in [("lsn", header.first_lsn), ("batch", header.first_batch)] {
            if !(1..=MAX_LSN).contains(&n) {
                return Err(corrupt(
                    &seg.path,
                    0,
                    format!("segment header has first {what} {n}, outside 1..={MAX_LSN}"),
                ));
            }
        }
        if first {
            self.next_lsn = header.first_lsn;
            self.next_batch = header.first_batch;
        } else if header.first_lsn != self.next_lsn || header.first_batch != self.next_batch {
            return Err(corrupt(
                &seg.path,
                0,
                format!(
                    "segment starts at lsn {} batch {}, expected lsn {} batch {}: \
                     a segment is missing or was truncated{}",
                    header.first_lsn,
                    header.first_batch,
                    self.next_lsn,
                    self.next_batch,
                    self.near()
                ),
            ));
        }
        let mut pos = SEGMENT_HEADER_BYTES;
        let mut open: Option<OpenBatch> = None;
        loop {
            let (h, payload, size) = match frame::decode(&buf[pos..], MAX_BATCH_BYTES) {
                Decoded::End => {
                    return Ok(Stop {
                        pos,
                        open,
                        bad: None,
                    });
                }
                Decoded::Bad(d) => {
                    return Ok(Stop {
                        pos,
                        open,
                        bad: Some(d),
                    });
                }
                Decoded::Invalid(d) => return Err(corrupt(&seg.path, pos, d + &self.near())),
                Decoded::Frame {
                    header,
                    payload,
                    size,
                } => (header, payload, size),
            };
            let batch = open.map_or(self.next_batch, |o| o.batch);
            if h.lsn != self.next_lsn || h.batch != batch {
                return Err(corrupt(
                    &seg.path,
                    pos,
                    format!(
                        "intact frame has lsn {} batch {}, expected lsn {} batch {}{}",
                        h.lsn,
                        h.batch,
                        self.next_lsn,
                        batch,
                        self.near()
                    ),
                ));
            }
            if open.is_none() {
                open = Some(OpenBatch {
                    batch,
                    start: pos,
                    first_lsn: h.lsn,
                    records_len: self.records.len(),
                });
            }
            if h.lsn > self.checkpoint_lsn {
                self.records.push(Record {
                    lsn: h.lsn,
                    kind: h.kind,
                    data: payload.to_vec(),
                });
            }
            self.next_lsn += 1;
            pos += size;
            if h.last_in_batch {
                open = None;
                self.next_batch = batch + 1;
            }
        }
    }

    /// A segment that is not the last one must end cleanly: whole batches, then zeros.
    fn check_sealed(&self, seg: &SegmentMeta, buf: &[u8], stop: Stop) -> Result<(), Error> {
        if let Some(d) = stop.bad {
            return Err(corrupt(
                &seg.path,
                stop.pos,
                format!("{d} in a sealed (not last) segment{}", self.near()),
            ));
        }
        if let Some(o) = stop.open {
            return Err(corrupt(
                &seg.path,
                stop.pos,
                format!(
                    "sealed segment ends inside batch {} (begun at offset {}){}",
                    o.batch,
                    o.start,
                    self.near()
                ),
            ));
        }
        if let Some(q) = buf[stop.pos..].iter().position(|&b| b != 0) {
            return Err(corrupt(
                &seg.path,
                stop.pos,
                format!(
                    "zero frame length (end of data) in a sealed segment, but nonzero bytes \
                     follow at offset {}: a frame was lost{}",
                    stop.pos + q,
                    self.near()
                ),
            ));
        }
        Ok(())
    }

    /// Decides whether the last segment ends in a torn batch (returned, and dropped from
    /// `records`) or in corruption. `None` when it ends cleanly.
    fn check_tail(
        &mut self,
        seg: &SegmentMeta,
        buf: &[u8],
        stop: &Stop,
    ) -> Result<Option<(usize, usize, usize)>, Error> {
        let torn_batch = stop.open.map_or(self.next_batch, |o| o.batch);
        let cut = stop.open.map_or(stop.pos, |o| o.start);
        let extent_end = buf
            .iter()
            .rposition(|&b| b != 0)
            .map_or(0, |p| p + 1)
            .max(stop.pos);
        if stop.bad.is_none() && stop.open.is_none() && extent_end == stop.pos {
            return Ok(None);
        }
        let what = stop.bad.as_deref().unwrap_or("end of data inside a batch");
        let mut records_cut = stop
            .open
            .map_or(0, |o| (self.next_lsn - o.first_lsn) as usize);
        let mut y = stop.pos + FRAME_ALIGN_BYTES;
        // Step every aligned offset: nothing after the damage is trusted to say where the
        // next frame starts. The header checksum makes each step O(1).
        while y < extent_end && y + FRAME_HEADER_BYTES <= buf.len() {
            let intact =
                frame::plausible_header(&buf[y..], MAX_BATCH_BYTES).and_then(
                    |_| match frame::decode(&buf[y..], MAX_BATCH_BYTES) {
                        Decoded::Frame { header, .. } => Some(header),
                        _ => None,
                    },
                );
            if let Some(h) = intact {
                if h.batch != torn_batch {
                    return Err(corrupt(
                        &seg.path,
                        stop.pos,
                        format!(
                            "{what} at offset {}, but an intact frame of batch {} (lsn {}) \
                             follows at offset {y}: damage before the last batch{}",
                            stop.pos,
                            h.batch,
                            h.lsn,
                            self.near()
                        ),
                    ));
                }
                records_cut += 1;
            }
            y += FRAME_ALIGN_BYTES;
        }
        if let Some(o) = stop.open {
            self.records.truncate(o.records_len);
            self.next_lsn = o.first_lsn;
        }
        Ok(Some((cut, extent_end - cut, records_cut)))
    }
}

fn read_segment(seg: &SegmentMeta) -> Result<Vec<u8>, Error> {
    let len = std::fs::metadata(&seg.path)
        .map_err(io_err("stat segment", &seg.path))?
        .len();
    if len > MAX_SEGMENT_BYTES {
        return Err(corrupt(
            &seg.path,
            0,
            format!("segment file of {len} bytes exceeds the limit of {MAX_SEGMENT_BYTES}"),
        ));
    }
    std::fs::read(&seg.path).map_err(io_err("read segment", &seg.path))
}

fn zero_range(file: &File, path: &Path, from: u64, len: u64) -> Result<(), Error> {
    let zeros = vec![0u8; ZERO_CHUNK_BYTES.min(len as usize)];
    let mut done = 0u64;
    while done < len {
        let n = (len - done).min(zeros.len() as u64) as usize;
        file.write_all_at(&zeros[..n], from + done)
            .map_err(io_err("cut torn tail", path))?;
        done += n as u64;
    }
    file.sync_data().map_err(io_err("fdatasync", path))
}

/// Scans `dir` after `checkpoint_lsn`, repairs a torn tail, and says where writing resumes.
pub(crate) fn recover(
    dir: &Path,
    checkpoint_lsn: Lsn,
    segment_bytes: u64,
) -> Result<Recovered, Error> {
    let mut segments = segment::list(dir)?;
    if segments.is_empty() {
        if checkpoint_lsn > 0 {
            return Err(corrupt(
                &dir.join(CHECKPOINT_FILE),
                0,
                format!("checkpoint covers lsn 1..={checkpoint_lsn} but the log has no segment"),
            ));
        }
        return Ok(Recovered {
            records: Vec::new(),
            torn_tail: None,
            segments,
            tail: None,
            next_lsn: 1,
            next_batch: 1,
        });
    }
    // Segments wholly covered by the checkpoint (a deletion interrupted by a crash); never
    // the last one, which says where the log continues.
    let covered = segments
        .windows(2)
        .take_while(|w| w[1].first_lsn <= checkpoint_lsn.saturating_add(1))
        .count();
    if covered > 0 {
        for s in segments.drain(..covered) {
            std::fs::remove_file(&s.path).map_err(io_err("remove segment", &s.path))?;
        }
        segment::fsync_dir(dir)?;
    }
    if segments[0].first_lsn > checkpoint_lsn.saturating_add(1) {
        return Err(corrupt(
            &segments[0].path,
            0,
            format!(
                "first segment starts at lsn {} but the checkpoint covers only lsn ..={}: \
                 the records in between are missing",
                segments[0].first_lsn, checkpoint_lsn
            ),
        ));
    }
    let mut scan = Scan {
        checkpoint_lsn,
        records: Vec::new(),
        next_lsn: 0,
        next_batch: 0,
    };
    let last = segments.len() - 1;
    let mut torn = None;
    let mut tail_offset = 0;
    for (i, seg) in segments.iter().enumerate() {
        let buf = read_segment(seg)?;
        let stop = scan.walk(seg, &buf, i == 0)?;
        if i < last {
            scan.check_sealed(seg, &buf, stop)?;
            continue;
        }
        tail_offset = stop.pos;
        if let Some((cut, bytes_cut, records_cut)) = scan.check_tail(seg, &buf, &stop)? {
            tail_offset = cut;
            torn = Some(TornTail {
                segment: seg.path.clone(),
                offset: cut as u64,
                bytes_cut: bytes_cut as u64,
                records_cut,
            });
        }
    }
    let last_lsn = scan.next_lsn - 1;
    if checkpoint_lsn > last_lsn {
        return Err(corrupt(
            &dir.join(CHECKPOINT_FILE),
            0,
            format!("checkpoint covers lsn ..={checkpoint_lsn} but the log ends at lsn {last_lsn}"),
        ));
    }

    let path = segments[last].path.clone();
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .open(&path)
        .map_err(io_err("open segment", &path))?;
    if let Some(t) = &torn {
        tracing::warn!(
            segment = %t.segment.display(),
            offset = t.offset,
            bytes_cut = t.bytes_cut,
            records_cut = t.records_cut,
            "log: cutting a torn last batch (never acknowledged)"
        );
        zero_range(&file, &path, t.offset, t.bytes_cut)?;
    }
    let mut capacity = file.metadata().map_err(io_err("stat", &path))?.len();
    if capacity < segment_bytes {
        // Truncated by hand or by an older config: preallocate again before writing into it.
        segment::preallocate(&file, segment_bytes, &path)?;
        file.sync_all().map_err(io_err("fsync segment", &path))?;
        capacity = segment_bytes;
    }
    tracing::info!(
        segments = segments.len(),
        records = scan.records.len(),
        checkpoint_lsn,
        last_lsn,
        "log recovered"
    );
    Ok(Recovered {
        records: scan.records,
        torn_tail: torn,
        segments,
        tail: Some(Tail {
            file,
            path,
            offset: tail_offset as u64,
            capacity,
        }),
        next_lsn: scan.next_lsn,
        next_batch: scan.next_batch,
    })
}
