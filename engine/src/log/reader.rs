//! Streaming records out of the log: [`LogReader`], made by [`crate::log::Log::read_from`].

use std::sync::Arc;

use crate::log::segment::SegmentMeta;
use crate::log::vfs::{OpenMode, Vfs};
use crate::log::walk::{Cursor, Step, Walk, corrupt};
use crate::log::{Error, Lsn, Record};

/// An iterator over the records with `from_lsn <= lsn <= upto`, where `upto` is the durable
/// lsn when the reader was made. Every frame it passes is verified (checksums, lsn and batch
/// continuity, segment boundaries); damage ends the iteration with [`Error::Corrupt`].
/// Memory is bounded by one read chunk (1 MiB) or one frame, whichever is larger.
///
/// It reads only frames that were durable when it was made, so it can run while the writer
/// appends; it never sees a record that a crash could still take back. It opens each
/// segment file when it gets there and keeps it open: a segment compacted meanwhile
/// ([`crate::log::Log::compact`]) is read as the reader finds it, the old file if it had
/// opened it already (an open file outlives the rename that replaces it), the new one
/// otherwise. In a compacted segment, lsns have gaps: records that compaction dropped
/// are not yielded.
pub struct LogReader {
    vfs: Arc<dyn Vfs>,
    /// The segments from the one holding `from_lsn` on.
    segments: Vec<SegmentMeta>,
    /// Index into `segments` of the segment `cursor` reads.
    seg: usize,
    cursor: Option<Cursor>,
    walk: Option<Walk>,
    from_lsn: Lsn,
    upto: Lsn,
    done: bool,
}

impl std::fmt::Debug for LogReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LogReader")
            .field("from_lsn", &self.from_lsn)
            .field("upto", &self.upto)
            .field("next_lsn", &self.walk.as_ref().map(|w| w.next_lsn))
            .finish_non_exhaustive()
    }
}

impl LogReader {
    /// `segments` is the log's whole list, oldest first.
    pub(crate) fn new(
        vfs: Arc<dyn Vfs>,
        segments: &[SegmentMeta],
        from_lsn: Lsn,
        upto: Lsn,
    ) -> LogReader {
        // Binary search: the last segment whose first record is at or before `from_lsn`.
        let start = segments
            .partition_point(|s| s.first_lsn <= from_lsn)
            .saturating_sub(1);
        LogReader {
            vfs,
            segments: segments.get(start..).unwrap_or_default().to_vec(),
            seg: 0,
            cursor: None,
            walk: None,
            from_lsn,
            upto,
            done: segments.is_empty() || from_lsn > upto,
        }
    }

    /// The last lsn this reader will yield (the durable lsn when it was made).
    pub fn upto(&self) -> Lsn {
        self.upto
    }

    fn advance(&mut self) -> Result<Option<Record>, Error> {
        loop {
            if self.walk.as_ref().is_some_and(|w| w.next_lsn > self.upto) {
                return Ok(None);
            }
            if self.cursor.is_none() {
                let Some(meta) = self.segments.get(self.seg) else {
                    let next = self.walk.as_ref().map_or(0, |w| w.next_lsn);
                    let last = self.segments.last().expect("not done, so not empty");
                    return Err(corrupt(
                        &last.path,
                        self.walk.as_ref().map_or(0, |w| w.pos),
                        Some(next),
                        format!(
                            "the log's data ends before lsn {next}, but lsn ..={} was durable",
                            self.upto
                        ),
                    ));
                };
                let mut cur = Cursor::open(&*self.vfs, &meta.path, OpenMode::Read)?;
                let h = cur.header(meta.first_lsn)?;
                match &mut self.walk {
                    None => self.walk = Some(Walk::new(h)),
                    Some(w) => w.enter(&meta.path, h)?,
                }
                self.cursor = Some(cur);
            }
            let cur = self.cursor.as_mut().expect("opened above");
            let walk = self.walk.as_mut().expect("set with the cursor");
            match walk.step(cur, true)? {
                Step::Frame { header, payload } => {
                    // Only possible in a compacted segment (where lsns jump), and only if
                    // it was compacted after this reader was made: still never past `upto`.
                    if header.lsn > self.upto {
                        return Ok(None);
                    }
                    if header.lsn >= self.from_lsn {
                        return Ok(Some(Record {
                            lsn: header.lsn,
                            kind: header.kind,
                            data: payload,
                        }));
                    }
                }
                stopped => {
                    // A compacted segment is sealed even when it was the last one listed
                    // (compacted after this reader was made): it ends at its range's end.
                    if self.seg + 1 < self.segments.len() || walk.covers.is_some() {
                        walk.seal(cur, stopped)?;
                    } else if let Step::Bad(d) = stopped {
                        // The last segment, before the durable lsn: this was verified at
                        // open or written since, so it is damage, not a torn write.
                        return Err(corrupt(
                            &cur.path,
                            walk.pos,
                            Some(walk.next_lsn),
                            format!("{d} before the durable lsn {}{}", self.upto, walk.near()),
                        ));
                    }
                    self.cursor = None;
                    self.seg += 1;
                }
            }
        }
    }
}

impl Iterator for LogReader {
    type Item = Result<Record, Error>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        match self.advance() {
            Ok(Some(r)) => Some(Ok(r)),
            Ok(None) => {
                self.done = true;
                None
            }
            Err(e) => {
                self.done = true;
                Some(Err(e))
            }
        }
    }
}
