//! Schedules: a workflow type started on a cadence (cron or a fixed interval).
//!
//! A schedule is one durable record in the store ([`crate::store::Store::put_schedule`]),
//! replaced by compare-and-set on its version. Its *cursor* says up to which slot every slot
//! has been decided (fired, skipped or buffered); the server's schedule loop decides the next
//! slot with [`Schedule::decide`], a pure function of the record, the time and whether the
//! last run is open.
//!
//! Exactly once per slot: the run a slot starts has a request id and a workflow id that are
//! functions of (schedule, slot) ([`slot_request_id`], [`slot_workflow_id`]), so a fire
//! retried after a crash (the run was started, the cursor not yet moved), or the same slot
//! fired by two nodes, starts one run; then the cursor moves by compare-and-set. A slot is only
//! ever fired within [`CATCHUP_WINDOW_MS`] of its time, which is shorter than the request-id
//! deduplication window, so every retry of a fire falls inside that window.

pub mod cron;

use serde::{Deserialize, Serialize};

use crate::event::TimeMs;
use crate::ids::RunId;
use crate::payload::Payload;
use crate::store::REQUEST_DEDUP_WINDOW_MS;

pub use cron::{Cron, CronError};

/// Slots older than this when they could first be fired (the server was down, the schedule
/// paused) are skipped, not caught up. Half the request-id window, so that a fire retried
/// after a crash is always deduplicated.
pub const CATCHUP_WINDOW_MS: TimeMs = REQUEST_DEDUP_WINDOW_MS / 2;
/// Longest schedule name, in bytes (it is part of the run's workflow id and request id).
pub const NAME_BYTES_MAX: usize = 128;
/// Largest input a schedule stores (inline, in its record).
pub const INPUT_BYTES_MAX: usize = 64 * 1024;
/// Shortest `--every` interval.
pub const EVERY_MS_MIN: u64 = 1_000;
/// Largest jitter.
pub const JITTER_MS_MAX: u64 = 24 * 3_600_000;
/// Most runs one backfill starts.
pub const BACKFILL_SLOTS_MAX: usize = 1_000;
/// Format version of [`Schedule::encode`].
const FORMAT_VERSION: u8 = 1;

/// When a schedule's slots are.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Cadence {
    /// A five-field cron expression, in UTC.
    Cron(String),
    /// Every `n` milliseconds, at multiples of `n` since the Unix epoch (so every node agrees).
    EveryMs(u64),
}

impl Cadence {
    /// Checks the cadence (a cron expression that parses, an interval of at least
    /// [`EVERY_MS_MIN`]).
    pub fn validate(&self) -> Result<(), String> {
        match self {
            Cadence::Cron(e) => Cron::parse(e).map(|_| ()).map_err(|e| e.to_string()),
            Cadence::EveryMs(n) if *n < EVERY_MS_MIN => Err(format!(
                "--every must be at least {} ms, got {n} ms",
                EVERY_MS_MIN
            )),
            Cadence::EveryMs(_) => Ok(()),
        }
    }

    /// The first slot strictly after `after_ms`.
    pub fn next_after(&self, after_ms: TimeMs) -> Option<TimeMs> {
        match self {
            Cadence::Cron(e) => Cron::parse(e).ok()?.next_after(after_ms),
            Cadence::EveryMs(n) => {
                let n = (*n).max(1) as i64;
                Some((after_ms.div_euclid(n) + 1) * n)
            }
        }
    }

    /// Human form: the cron expression, or `every 3600s`.
    pub fn describe(&self) -> String {
        match self {
            Cadence::Cron(e) => format!("cron {e:?}"),
            Cadence::EveryMs(n) if n % 1000 == 0 => format!("every {}s", n / 1000),
            Cadence::EveryMs(n) => format!("every {n}ms"),
        }
    }
}

/// What a slot does when the schedule's last run is still open.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Overlap {
    /// Skip the slot.
    Skip,
    /// Keep one slot and fire it when the open run closes; later ones are skipped.
    BufferOne,
    /// Ask the open run to cancel, and start the new one.
    CancelPrevious,
    /// Start the new run anyway.
    AllowAll,
}

impl Overlap {
    /// The CLI / wire name.
    pub fn name(self) -> &'static str {
        match self {
            Overlap::Skip => "skip",
            Overlap::BufferOne => "buffer-one",
            Overlap::CancelPrevious => "cancel-previous",
            Overlap::AllowAll => "allow-all",
        }
    }

    /// Parses a name from [`Overlap::name`].
    pub fn parse(s: &str) -> Option<Overlap> {
        [
            Overlap::Skip,
            Overlap::BufferOne,
            Overlap::CancelPrevious,
            Overlap::AllowAll,
        ]
        .into_iter()
        .find(|o| o.name() == s)
    }
}

/// A schedule as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Schedule {
    /// Namespace.
    pub namespace: String,
    /// Name, unique in the namespace.
    pub name: String,
    /// When.
    pub cadence: Cadence,
    /// What it starts.
    pub workflow_type: String,
    /// Its task queue.
    pub task_queue: String,
    /// Its input (inline, at most [`INPUT_BYTES_MAX`]).
    pub input: Payload,
    /// What a slot does while the last run is open.
    pub overlap: Overlap,
    /// Each slot fires at its time plus a delay in `[0, jitter_ms)` derived from the slot and
    /// the schedule's name ([`Schedule::jitter_of`]): the same on every node and every retry.
    pub jitter_ms: u64,
    /// Paused: no slot fires; slots that pass while paused are skipped.
    pub paused: bool,
    /// When it was created.
    pub created_ms: TimeMs,
    /// Every slot at or before this time has been decided.
    pub cursor_ms: TimeMs,
    /// The run the last fired slot started, and that slot.
    pub last_run: Option<(RunId, TimeMs)>,
    /// A slot kept by [`Overlap::BufferOne`] until the last run closes.
    pub buffered_slot: Option<TimeMs>,
    /// Slots fired (not counting triggers and backfills).
    pub fired: u64,
    /// Slots skipped (overlap, or older than the catch-up window).
    pub skipped: u64,
}

/// What the schedule loop does next for one schedule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Nothing is due; look again at `wake_ms` (`None`: never, e.g. paused).
    Idle {
        /// When the next slot fires.
        wake_ms: Option<TimeMs>,
    },
    /// Start the run of `slot_ms`; then set the cursor to `cursor_ms` (a buffered slot leaves
    /// it where it is). With `cancel_previous`, ask the open last run to cancel first.
    Fire {
        /// The slot.
        slot_ms: TimeMs,
        /// The cursor after it.
        cursor_ms: TimeMs,
        /// Slots passed over by this decision (overlap collapsing a backlog).
        skipped: u64,
        /// The last run is open and the policy is cancel-previous.
        cancel_previous: bool,
        /// This is the buffered slot.
        buffered: bool,
    },
    /// Fire nothing, move the cursor (slots skipped, or one of them buffered).
    Advance {
        /// The cursor after it.
        cursor_ms: TimeMs,
        /// Slots skipped.
        skipped: u64,
        /// The buffered slot after it.
        buffered_slot: Option<TimeMs>,
    },
}

impl Schedule {
    /// The stored bytes: a version byte, then the record as named msgpack (fields can be added).
    pub fn encode(&self) -> Vec<u8> {
        let mut out = vec![FORMAT_VERSION];
        out.extend(rmp_serde::to_vec_named(self).expect("a schedule always encodes"));
        out
    }

    /// Reads [`Schedule::encode`]'s bytes.
    pub fn decode(bytes: &[u8]) -> Result<Schedule, String> {
        match bytes.split_first() {
            Some((&FORMAT_VERSION, rest)) => {
                rmp_serde::from_slice(rest).map_err(|e| format!("schedule record: {e}"))
            }
            Some((v, _)) => Err(format!(
                "schedule record version {v} (this build reads {FORMAT_VERSION})"
            )),
            None => Err("empty schedule record".into()),
        }
    }

    /// The delay of a slot: blake3 of (namespace, name, slot) mod `jitter_ms`.
    pub fn jitter_of(&self, slot_ms: TimeMs) -> TimeMs {
        if self.jitter_ms == 0 {
            return 0;
        }
        let mut h = blake3::Hasher::new();
        h.update(self.namespace.as_bytes());
        h.update(&[0]);
        h.update(self.name.as_bytes());
        h.update(&slot_ms.to_le_bytes());
        let bytes = h.finalize();
        let n = u64::from_le_bytes(bytes.as_bytes()[..8].try_into().expect("8 bytes"));
        (n % self.jitter_ms) as TimeMs
    }

    /// When `slot_ms` fires (its time plus its jitter).
    pub fn fire_time(&self, slot_ms: TimeMs) -> TimeMs {
        slot_ms.saturating_add(self.jitter_of(slot_ms))
    }

    /// The next slot after the cursor (what `schedule list` shows as "next").
    pub fn next_slot(&self) -> Option<TimeMs> {
        self.cadence.next_after(self.cursor_ms)
    }

    /// Decides what to do at `now_ms`. `last_open`: the run of the last fired slot is open.
    pub fn decide(&self, now_ms: TimeMs, last_open: bool) -> Decision {
        if self.paused {
            return Decision::Idle { wake_ms: None };
        }
        if let (Some(slot), false) = (self.buffered_slot, last_open) {
            return Decision::Fire {
                slot_ms: slot,
                cursor_ms: self.cursor_ms,
                skipped: 0,
                cancel_previous: false,
                buffered: true,
            };
        }
        // Slots too old to catch up are skipped in one step.
        let oldest = now_ms - CATCHUP_WINDOW_MS;
        if self.cursor_ms < oldest {
            let mut skipped = 0u64;
            let mut c = self.cursor_ms;
            // Counting is bounded: the cursor jumps to the window's edge either way.
            while let Some(s) = self.cadence.next_after(c) {
                if s >= oldest || skipped >= 100_000 {
                    break;
                }
                skipped += 1;
                c = s;
            }
            return Decision::Advance {
                cursor_ms: oldest - 1,
                skipped,
                buffered_slot: self.buffered_slot,
            };
        }
        let Some(first) = self.cadence.next_after(self.cursor_ms) else {
            return Decision::Idle { wake_ms: None };
        };
        if self.fire_time(first) > now_ms {
            return Decision::Idle {
                wake_ms: Some(self.fire_time(first)),
            };
        }
        // The latest due slot, and how many are due (a backlog after downtime).
        let (mut last, mut due) = (first, 1u64);
        while let Some(s) = self.cadence.next_after(last) {
            if self.fire_time(s) > now_ms {
                break;
            }
            last = s;
            due += 1;
        }
        let fire = |slot_ms, skipped, cancel_previous| Decision::Fire {
            slot_ms,
            cursor_ms: slot_ms,
            skipped,
            cancel_previous,
            buffered: false,
        };
        match (self.overlap, last_open) {
            (Overlap::AllowAll, _) => fire(first, 0, false),
            (Overlap::CancelPrevious, open) => fire(last, due - 1, open),
            (Overlap::Skip | Overlap::BufferOne, false) => fire(last, due - 1, false),
            (Overlap::Skip, true) => Decision::Advance {
                cursor_ms: last,
                skipped: due,
                buffered_slot: None,
            },
            (Overlap::BufferOne, true) => {
                let buffered = self.buffered_slot.unwrap_or(first);
                let kept = u64::from(self.buffered_slot.is_none());
                Decision::Advance {
                    cursor_ms: last,
                    skipped: due - kept,
                    buffered_slot: Some(buffered),
                }
            }
        }
    }

    /// The record after `d` was carried out (`run`: the run a fire started).
    pub fn after(&self, d: &Decision, run: Option<RunId>) -> Schedule {
        let mut s = self.clone();
        match *d {
            Decision::Idle { .. } => {}
            Decision::Fire {
                slot_ms,
                cursor_ms,
                skipped,
                buffered,
                ..
            } => {
                s.cursor_ms = cursor_ms;
                s.skipped += skipped;
                s.fired += 1;
                if buffered {
                    s.buffered_slot = None;
                }
                if let Some(run) = run {
                    s.last_run = Some((run, slot_ms));
                }
            }
            Decision::Advance {
                cursor_ms,
                skipped,
                buffered_slot,
            } => {
                s.cursor_ms = cursor_ms;
                s.skipped += skipped;
                s.buffered_slot = buffered_slot;
            }
        }
        s
    }

    /// The slots in `[from_ms, to_ms]` (a backfill), at most [`BACKFILL_SLOTS_MAX`] + 1 so the
    /// caller can refuse a range that is too long.
    pub fn slots_between(&self, from_ms: TimeMs, to_ms: TimeMs) -> Vec<TimeMs> {
        let mut out = Vec::new();
        let mut c = from_ms - 1;
        while let Some(s) = self.cadence.next_after(c) {
            if s > to_ms || out.len() > BACKFILL_SLOTS_MAX {
                break;
            }
            out.push(s);
            c = s;
        }
        out
    }
}

/// The request id of the run a slot starts: the same for every fire of the slot (a retry, a
/// second node, a backfill over it), so the store deduplicates them.
pub fn slot_request_id(name: &str, slot_ms: TimeMs) -> String {
    format!("schedule/{name}/{slot_ms}")
}

/// The workflow id of the run a slot starts.
pub fn slot_workflow_id(name: &str, slot_ms: TimeMs) -> String {
    format!("{name}@{slot_ms}")
}

/// Checks a schedule name: 1 to [`NAME_BYTES_MAX`] bytes of letters, digits, `-`, `_`, `.`.
pub fn validate_name(name: &str) -> Result<(), String> {
    let short: String = name.chars().take(40).collect();
    if name.is_empty() || name.len() > NAME_BYTES_MAX {
        return Err(format!(
            "schedule name must be 1 to {NAME_BYTES_MAX} bytes, got {} ({short:?}...)",
            name.len()
        ));
    }
    if let Some(c) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')))
    {
        return Err(format!(
            "schedule name {short:?} has {c:?}: use letters, digits, '-', '_' and '.'"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests;
