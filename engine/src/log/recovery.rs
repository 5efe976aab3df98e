//! Recovery on open: check every segment header, verify every frame of the last segment,
//! cut a torn last batch, and refuse anything else that is wrong. Frames of earlier (sealed)
//! segments are verified when they are read ([`crate::log::LogReader`]), so opening costs
//! one header per segment plus one pass over the last segment, in bounded memory.
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

//!
//! What a torn last batch may look like, and so what is cut: bytes from the batch's start,
//! spanning at most `max_batch_bytes` (the writer never writes more in one batch), in which
//! frames may be intact, damaged or missing. Beyond that region every byte must be zero, and
//! no frame header after the damage whose header checksum verifies may name another batch.
//! Anything else is [`Error::Corrupt`]: damage that spans acknowledged batches, even at the
//! very end of the log, is never cut as if it were a torn write. (So do not lower
//! `max_batch_bytes` across a crash: a torn batch written under the larger limit could be
//! refused.)

use std::path::{Path, PathBuf};

use crate::log::checkpoint::CHECKPOINT_FILE;
use crate::log::frame::{self, FRAME_ALIGN_BYTES, FRAME_HEADER_BYTES};
use crate::log::segment::{self, Covers, SegmentHeader, SegmentMeta, io_err};
use crate::log::vfs::{OpenMode, Vfs, VfsFile};
use crate::log::walk::{Cursor, Step, Walk, corrupt};
use crate::log::{Error, Lsn, MAX_BATCH_BYTES, TornTail};

/// Where the writer continues: the last segment and the offset after its last whole batch.
pub(crate) struct Tail {
    pub file: Box<dyn VfsFile>,
    pub path: PathBuf,
    pub offset: u64,
    pub capacity: u64,
}

/// Everything open learns from the directory.
pub(crate) struct Recovered {
    pub torn_tail: Option<TornTail>,
    pub segments: Vec<SegmentMeta>,
    /// `None` when the log has no segment yet.
    pub tail: Option<Tail>,
    pub first_lsn: Lsn,
    pub next_lsn: Lsn,
    pub next_batch: u64,
}

/// What the bytes after the point where the walk of the last segment stopped hold.
struct AfterStop {
    /// One past the last nonzero byte (at least the stop offset).
    extent_end: u64,
    /// The first nonzero byte beyond the region a torn batch may span.
    beyond: Option<u64>,
    /// A frame header (offset, lsn, batch) of a batch other than the torn one.
    foreign: Option<(u64, Lsn, u64)>,
    /// Frame headers of the torn batch after the damage.
    torn_headers: usize,
}

/// Scans from `walk.pos` to the end of the file: every aligned offset is tested for a
/// frame header (nothing after the damage is trusted to say where the next frame starts;
/// the header checksum makes each test O(1)), and every byte for being zero.
fn scan_after_stop(
    cur: &mut Cursor,
    walk: &Walk,
    torn_batch: u64,
    region_end: u64,
) -> Result<AfterStop, Error> {
    let mut out = AfterStop {
        extent_end: walk.pos,
        beyond: None,
        foreign: None,
        torn_headers: 0,
    };
    let mut y = walk.pos;
    while y < cur.len {
        let w = cur.window(y, FRAME_HEADER_BYTES)?;
        if w.is_empty() {
            break;
        }
        let step = w.len().min(FRAME_ALIGN_BYTES);
        if let Some(q) = w[..step].iter().rposition(|&b| b != 0) {
            out.extent_end = y + q as u64 + 1;
            if out.beyond.is_none() {
                let first = y + w[..step].iter().position(|&b| b != 0).expect("some") as u64;
                let last = y + q as u64;
                if last >= region_end {
                    out.beyond = Some(first.max(region_end));
                }
            }
        }
        if y > walk.pos
            && let Some((lsn, batch)) = frame::plausible_frame(w, MAX_BATCH_BYTES)
        {
            if batch == torn_batch {
                out.torn_headers += 1;
            } else if out.foreign.is_none() {
                out.foreign = Some((y, lsn, batch));
            }
        }
        y += FRAME_ALIGN_BYTES as u64;
    }
    Ok(out)
}

/// Decides whether the last segment ends in a torn batch (returned as cut offset, bytes,
/// records) or in corruption. `None` when it ends cleanly. On a cut, `walk` is moved back
/// to the torn batch's start.
fn check_tail(
    cur: &mut Cursor,
    walk: &mut Walk,
    stopped: &Step,
    batch_bytes: usize,
) -> Result<Option<(u64, u64, usize)>, Error> {
    let torn_batch = walk.open.map_or(walk.next_batch, |o| o.batch);
    let cut = walk.open.map_or(walk.pos, |o| o.start);
    let region_end = cut + batch_bytes as u64;
    let after = scan_after_stop(cur, walk, torn_batch, region_end)?;
    let bad = match stopped {
        Step::Bad(d) => Some(d.as_str()),
        _ => None,
    };
    if bad.is_none() && walk.open.is_none() && after.extent_end == walk.pos {
        return Ok(None);
    }
    let what = bad.unwrap_or("end of data inside a batch");
    let damaged_lsn = Some(walk.next_lsn);
    if let Some((y, lsn, batch)) = after.foreign {
        return Err(corrupt(
            &cur.path,
            walk.pos,
            damaged_lsn,
            format!(
                "{what} at offset {}, but a frame header of batch {batch} (lsn {lsn}) follows \
                 at offset {y}, and only the last batch ({torn_batch}) can be torn: damage \
                 to acknowledged records{}",
                walk.pos,
                walk.near()
            ),
        ));
    }
    if let Some(at) = after.beyond {
        return Err(corrupt(
            &cur.path,
            walk.pos,
            damaged_lsn,
            format!(
                "{what} at offset {}, and nonzero bytes at offset {at}, beyond the \
                 {batch_bytes} bytes one batch may span from its start at offset {cut}: \
                 damage a torn write cannot explain{}",
                walk.pos,
                walk.near()
            ),
        ));
    }
    let mut records_cut = after.torn_headers;
    if let Some(o) = walk.open {
        records_cut += (walk.next_lsn - o.first_lsn) as usize;
        walk.next_lsn = o.first_lsn;
        walk.open = None;
    }
    walk.pos = cut;
    Ok(Some((cut, after.extent_end - cut, records_cut)))
}

/// Checks the headers of all segments: names, checksums, lsns and batches that grow, and
/// that a compacted segment's range ends exactly where the next segment starts (a
/// compacted segment is never the last one). Returns the header of each, and fills in each
/// segment's size and kind.
fn check_headers(vfs: &dyn Vfs, segments: &mut [SegmentMeta]) -> Result<Vec<SegmentHeader>, Error> {
    let mut headers: Vec<SegmentHeader> = Vec::with_capacity(segments.len());
    for seg in segments.iter_mut() {
        let mut cur = Cursor::open(vfs, &seg.path, OpenMode::Read)?;
        let h = cur.header(seg.first_lsn)?;
        seg.bytes = cur.len;
        seg.compacted = h.covers.is_some();
        if let Some(c) = headers.last().and_then(|p| p.covers)
            && (h.first_lsn != c.end_lsn || h.first_batch != c.end_batch)
        {
            return Err(corrupt(
                &seg.path,
                0,
                Some(c.end_lsn),
                format!(
                    "segment starts at lsn {} batch {}, but the compacted segment before it \
                     covers up to lsn {} batch {} (exclusive): a segment is missing or \
                     misplaced",
                    h.first_lsn, h.first_batch, c.end_lsn, c.end_batch
                ),
            ));
        }
        if let Some(p) = headers.last()
            && (h.first_lsn <= p.first_lsn || h.first_batch <= p.first_batch)
        {
            return Err(corrupt(
                &seg.path,
                0,
                Some(h.first_lsn),
                format!(
                    "segment starts at lsn {} batch {}, not after the previous segment's \
                     start at lsn {} batch {}",
                    h.first_lsn, h.first_batch, p.first_lsn, p.first_batch
                ),
            ));
        }
        headers.push(h);
    }
    if let (Some(seg), Some(Covers { end_lsn, .. })) =
        (segments.last(), headers.last().and_then(|h| h.covers))
    {
        return Err(corrupt(
            &seg.path,
            0,
            Some(end_lsn),
            format!(
                "the last segment is a compacted one (covering up to lsn {end_lsn}), but only \
                 sealed segments are compacted: the segment starting at lsn {end_lsn} is \
                 missing"
            ),
        ));
    }
    Ok(headers)
}

/// Recovers `dir`: see the module docs. `checkpoint_lsn` is the owner's hint; the log must
/// reach it, and may start after lsn 1 only if the hint covers what is missing (a log
/// written by a version that deleted checkpointed segments).
pub(crate) fn recover(
    vfs: &dyn Vfs,
    dir: &Path,
    checkpoint_lsn: Lsn,
    segment_bytes: u64,
    batch_bytes: usize,
) -> Result<Recovered, Error> {
    let mut segments = segment::list(vfs, dir)?;
    if segments.is_empty() {
        if checkpoint_lsn > 0 {
            return Err(corrupt(
                &dir.join(CHECKPOINT_FILE),
                0,
                None,
                format!("checkpoint covers lsn 1..={checkpoint_lsn} but the log has no segment"),
            ));
        }
        return Ok(Recovered {
            torn_tail: None,
            segments,
            tail: None,
            first_lsn: 1,
            next_lsn: 1,
            next_batch: 1,
        });
    }
    if segments[0].first_lsn > checkpoint_lsn.saturating_add(1) {
        return Err(corrupt(
            &segments[0].path,
            0,
            None,
            format!(
                "first segment starts at lsn {} but the checkpoint covers only lsn ..={}: \
                 the records in between are missing",
                segments[0].first_lsn, checkpoint_lsn
            ),
        ));
    }
    let headers = check_headers(vfs, &mut segments)?;
    let last = segments.len() - 1;
    let meta = &segments[last];
    let mut cur = Cursor::open(vfs, &meta.path, OpenMode::ReadWrite)?;
    let mut walk = Walk::new(headers[last]);
    let stopped = loop {
        match walk.step(&mut cur, false)? {
            Step::Frame { .. } => {}
            stopped => break stopped,
        }
    };
    let torn = check_tail(&mut cur, &mut walk, &stopped, batch_bytes)?.map(
        |(offset, bytes_cut, records_cut)| TornTail {
            segment: meta.path.clone(),
            offset,
            bytes_cut,
            records_cut,
        },
    );
    let last_lsn = walk.next_lsn - 1;
    if checkpoint_lsn > last_lsn {
        return Err(corrupt(
            &dir.join(CHECKPOINT_FILE),
            0,
            None,
            format!("checkpoint covers lsn ..={checkpoint_lsn} but the log ends at lsn {last_lsn}"),
        ));
    }

    let path = meta.path.clone();
    let file = cur.file;
    if let Some(t) = &torn {
        tracing::warn!(
            segment = %t.segment.display(),
            offset = t.offset,
            bytes_cut = t.bytes_cut,
            records_cut = t.records_cut,
            "log: cutting a torn last batch (never acknowledged)"
        );
        segment::write_zeros(&*file, &path, t.offset, t.bytes_cut)?;
        file.sync_data().map_err(io_err("fdatasync", &path))?;
    }
    let mut capacity = cur.len;
    if capacity < segment_bytes {
        // Truncated by hand or by an older config: preallocate again before writing into it.
        segment::preallocate(&*file, segment_bytes, &path)?;
        file.sync_all().map_err(io_err("fsync segment", &path))?;
        capacity = segment_bytes;
    }
    segments[last].bytes = capacity;
    tracing::info!(
        segments = segments.len(),
        first_lsn = segments[0].first_lsn,
        checkpoint_lsn,
        last_lsn,
        "log recovered"
    );
    Ok(Recovered {
        torn_tail: torn,
        first_lsn: segments[0].first_lsn,
        segments,
        tail: Some(Tail {
            file,
            path,
            offset: walk.pos,
            capacity,
        }),
        next_lsn: walk.next_lsn,
        next_batch: walk.next_batch,
    })
}
