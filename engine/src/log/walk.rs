//! Reading segments in bounded memory: a chunked cursor over one segment file, and the frame
//! walk (checksums, lsn and batch continuity) shared by recovery and [`crate::log::LogReader`].

use std::path::{Path, PathBuf};

use crate::log::frame::{self, Decoded, FRAME_HEADER_BYTES, FrameHeader, align_up};
use crate::log::segment::{self, Covers, SEGMENT_HEADER_BYTES, SegmentHeader, io_err};
use crate::log::vfs::{OpenMode, Vfs, VfsFile};
use crate::log::{Error, Lsn, MAX_BATCH_BYTES};

/// Bytes read per call: the cursor holds at most this, or one frame if larger (a frame is at
/// most [`MAX_BATCH_BYTES`]).
pub(crate) const READ_CHUNK_BYTES: usize = 1 << 20;
/// The largest lsn or batch number a segment header may claim (far beyond any real log).
const MAX_LSN: u64 = u64::MAX >> 1;

pub(crate) fn corrupt(segment: &Path, offset: u64, lsn: Option<Lsn>, detail: String) -> Error {
    Error::Corrupt {
        segment: segment.to_path_buf(),
        offset,
        lsn,
        detail,
    }
}

/// A window onto one segment file, refilled in chunks as the reader moves forward.
pub(crate) struct Cursor {
    pub file: Box<dyn VfsFile>,
    pub path: PathBuf,
    /// The file's size when opened.
    pub len: u64,
    buf: Vec<u8>,
    buf_at: u64,
}

impl Cursor {
    pub fn open(vfs: &dyn Vfs, path: &Path, mode: OpenMode) -> Result<Cursor, Error> {
        let file = vfs.open(path, mode).map_err(io_err("open segment", path))?;
        let len = file.len().map_err(io_err("stat segment", path))?;
        Ok(Cursor {
            file,
            path: path.to_path_buf(),
            len,
            buf: Vec::new(),
            buf_at: 0,
        })
    }

    /// The bytes from `at` on: at least `need` of them unless the file ends first.
    pub fn window(&mut self, at: u64, need: usize) -> Result<&[u8], Error> {
        let want_end = at.saturating_add(need as u64).min(self.len);
        let have_end = self.buf_at + self.buf.len() as u64;
        if at < self.buf_at || want_end > have_end || at > have_end {
            let n = self
                .len
                .saturating_sub(at)
                .min(need.max(READ_CHUNK_BYTES) as u64) as usize;
            self.buf.resize(n, 0);
            let got = self
                .file
                .read_at(&mut self.buf, at)
                .map_err(io_err("read segment", &self.path))?;
            self.buf.truncate(got);
            self.buf_at = at;
        }
        let from = ((at - self.buf_at) as usize).min(self.buf.len());
        Ok(&self.buf[from..])
    }

    /// Reads and checks the segment header against the name's lsn.
    pub fn header(&mut self, name_lsn: Lsn) -> Result<SegmentHeader, Error> {
        let path = self.path.clone();
        let h = segment::decode_header(self.window(0, SEGMENT_HEADER_BYTES)?)
            .map_err(|d| corrupt(&path, 0, None, d))?;
        if h.first_lsn != name_lsn {
            return Err(corrupt(
                &path,
                0,
                None,
                format!(
                    "header says first lsn {} but the file name says {name_lsn}",
                    h.first_lsn
                ),
            ));
        }
        // Bounds keep every later `+ 1` on lsns and batch numbers from overflowing, whatever
        // a (checksummed but hostile) header says.
        let ends = h.covers.map_or([None, None], |c| {
            [
                Some(("end lsn", c.end_lsn)),
                Some(("end batch", c.end_batch)),
            ]
        });
        let fields = [
            Some(("first lsn", h.first_lsn)),
            Some(("first batch", h.first_batch)),
        ];
        for (what, n) in fields.into_iter().chain(ends).flatten() {
            if !(1..=MAX_LSN).contains(&n) {
                return Err(corrupt(
                    &path,
                    0,
                    None,
                    format!("segment header has {what} {n}, outside 1..={MAX_LSN}"),
                ));
            }
        }
        Ok(h)
    }
}

/// A batch whose last frame has not been seen yet.
#[derive(Debug, Clone, Copy)]
pub(crate) struct OpenBatch {
    pub batch: u64,
    pub start: u64,
    pub first_lsn: Lsn,
}

/// What the walk found at one offset.
pub(crate) enum Step {
    /// A verified frame in sequence; the walk moved past it.
    Frame {
        header: FrameHeader,
        payload: Vec<u8>,
    },
    /// A zero length: the end of the written data.
    End,
    /// Bytes that are not a whole, intact frame.
    Bad(String),
}

/// Walks the frames of consecutive segments, checking lsn and batch continuity: exact in
/// appended segments; in compacted ones (`covers`), strictly increasing inside the covered
/// range, with whole batches.
#[derive(Debug, Clone)]
pub(crate) struct Walk {
    /// The next lsn in an appended segment; the lowest one possible in a compacted one.
    pub next_lsn: Lsn,
    /// Likewise for batch numbers.
    pub next_batch: u64,
    pub open: Option<OpenBatch>,
    /// The offset of the next frame in the current segment.
    pub pos: u64,
    /// The range of the current segment if it is compacted (gaps legal).
    pub covers: Option<Covers>,
    /// The lsn of the last verified frame (or the one before the first segment walked).
    last_good: Lsn,
}

impl Walk {
    /// Starts at the first frame of a segment with header `h`.
    pub fn new(h: SegmentHeader) -> Walk {
        Walk {
            next_lsn: h.first_lsn,
            next_batch: h.first_batch,
            open: None,
            pos: SEGMENT_HEADER_BYTES as u64,
            covers: h.covers,
            last_good: h.first_lsn - 1,
        }
    }

    /// Best-effort pointer to the nearest good record, for error messages.
    pub fn near(&self) -> String {
        match self.last_good {
            0 => " (no good record before it)".to_string(),
            l => format!(" (last good record before it: lsn {l})"),
        }
    }

    /// The lsn of the record expected at `pos`, for naming damage: exact in an appended
    /// segment; in a compacted one (with gaps) only what the damaged frame's own header
    /// says, if that header verifies and names an lsn the segment may hold.
    pub fn damaged_lsn(&self, cur: &mut Cursor) -> Result<Option<Lsn>, Error> {
        let Some(c) = self.covers else {
            return Ok(Some(self.next_lsn));
        };
        let w = cur.window(self.pos, FRAME_HEADER_BYTES)?;
        Ok(frame::plausible_frame(w, MAX_BATCH_BYTES)
            .map(|(lsn, _)| lsn)
            .filter(|l| (self.next_lsn..c.end_lsn).contains(l)))
    }

    /// Moves on to the next segment, whose header must continue exactly where this one
    /// ended: a missing or cut segment shows here.
    pub fn enter(&mut self, path: &Path, h: SegmentHeader) -> Result<(), Error> {
        if h.first_lsn != self.next_lsn || h.first_batch != self.next_batch {
            return Err(corrupt(
                path,
                0,
                Some(self.next_lsn),
                format!(
                    "segment starts at lsn {} batch {}, expected lsn {} batch {}: \
                     a segment is missing or was truncated{}",
                    h.first_lsn,
                    h.first_batch,
                    self.next_lsn,
                    self.next_batch,
                    self.near()
                ),
            ));
        }
        self.pos = SEGMENT_HEADER_BYTES as u64;
        self.covers = h.covers;
        Ok(())
    }

    /// Reads the frame at `self.pos`. Frames that verify but break the lsn/batch sequence,
    /// or that this version cannot accept, are corruption at once (they were written like
    /// that). `keep` copies the payload out.
    pub fn step(&mut self, cur: &mut Cursor, keep: bool) -> Result<Step, Error> {
        let pos = self.pos;
        let head = cur.window(pos, FRAME_HEADER_BYTES)?;
        let need = if head.len() >= 8 {
            let len = u32::from_le_bytes(head[4..8].try_into().expect("4 bytes")) as usize;
            if (FRAME_HEADER_BYTES..=MAX_BATCH_BYTES).contains(&len) {
                align_up(len)
            } else {
                FRAME_HEADER_BYTES
            }
        } else {
            FRAME_HEADER_BYTES
        };
        let path = cur.path.clone();
        let (h, payload, size) = match frame::decode(cur.window(pos, need)?, MAX_BATCH_BYTES) {
            Decoded::End => return Ok(Step::End),
            Decoded::Bad(d) => return Ok(Step::Bad(d)),
            Decoded::Invalid(d) => {
                let lsn = self.damaged_lsn(cur)?;
                return Err(corrupt(&path, pos, lsn, d + &self.near()));
            }
            Decoded::Frame {
                header,
                payload,
                size,
            } => (
                header,
                if keep { payload.to_vec() } else { Vec::new() },
                size,
            ),
        };
        let batch = match (self.covers, self.open) {
            (None, open) => open.map_or(self.next_batch, |o| o.batch),
            (Some(_), Some(o)) => o.batch,
            // A compacted segment: any later batch may come next.
            (Some(_), None) => h.batch,
        };
        let in_sequence = match self.covers {
            None => h.lsn == self.next_lsn && h.batch == batch,
            Some(c) => {
                (self.next_lsn..c.end_lsn).contains(&h.lsn)
                    && h.batch == batch
                    && (self.next_batch..c.end_batch).contains(&h.batch)
            }
        };
        if !in_sequence {
            let (lsn, detail) = match self.covers {
                None => (
                    Some(self.next_lsn),
                    format!(
                        "intact frame has lsn {} batch {}, expected lsn {} batch {}",
                        h.lsn, h.batch, self.next_lsn, batch
                    ),
                ),
                Some(c) => (
                    // It verifies, so it names itself, but out of order or out of range.
                    Some(h.lsn),
                    format!(
                        "intact frame has lsn {} batch {}, but this compacted segment may \
                         only hold lsn {}..{} and, next, {} (strictly increasing, whole \
                         batches)",
                        h.lsn,
                        h.batch,
                        self.next_lsn,
                        c.end_lsn,
                        self.open.map_or_else(
                            || format!("batch {}..{}", self.next_batch, c.end_batch),
                            |o| format!("more of batch {}", o.batch)
                        ),
                    ),
                ),
            };
            return Err(corrupt(&path, pos, lsn, detail + &self.near()));
        }
        if self.open.is_none() {
            self.open = Some(OpenBatch {
                batch,
                start: pos,
                first_lsn: h.lsn,
            });
        }
        self.next_lsn = h.lsn + 1;
        self.last_good = h.lsn;
        self.pos += size as u64;
        if h.last_in_batch {
            self.open = None;
            self.next_batch = batch + 1;
        }
        Ok(Step::Frame { header: h, payload })
    }

    /// A segment that is followed by another must end after a whole batch, with only zeros
    /// after its data (the writer rolls when the next frame does not fit, so that rest is
    /// smaller than one frame and cheap to check; a compacted segment has no such rest).
    /// After a compacted segment the walk continues at the end of the range it covers.
    pub fn seal(&mut self, cur: &mut Cursor, stopped: Step) -> Result<(), Error> {
        let path = cur.path.clone();
        if let Step::Bad(d) = stopped {
            let lsn = self.damaged_lsn(cur)?;
            let what = if self.covers.is_some() {
                "compacted"
            } else {
                "sealed (not last)"
            };
            return Err(corrupt(
                &path,
                self.pos,
                lsn,
                format!("{d} in a {what} segment{}", self.near()),
            ));
        }
        if let Some(o) = self.open {
            return Err(corrupt(
                &path,
                self.pos,
                self.covers.is_none().then_some(self.next_lsn),
                format!(
                    "sealed segment ends inside batch {} (begun at offset {}){}",
                    o.batch,
                    o.start,
                    self.near()
                ),
            ));
        }
        let mut at = self.pos;
        while at < cur.len {
            let w = cur.window(at, READ_CHUNK_BYTES)?;
            if w.is_empty() {
                break;
            }
            if let Some(q) = w.iter().position(|&b| b != 0) {
                return Err(corrupt(
                    &path,
                    self.pos,
                    self.covers.is_none().then_some(self.next_lsn),
                    format!(
                        "zero frame length (end of data) in a sealed segment, but nonzero \
                         bytes follow at offset {}: a frame was lost{}",
                        at + q as u64,
                        self.near()
                    ),
                ));
            }
            at += w.len() as u64;
        }
        if let Some(c) = self.covers {
            self.next_lsn = c.end_lsn;
            self.next_batch = c.end_batch;
        }
        Ok(())
    }
}
