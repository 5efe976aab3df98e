//! Live output of running attempts (an LLM call's tokens): what workers publish with
//! `PublishActivityDeltas`, kept in a bounded in-memory buffer per activity and fanned out to
//! the `WatchRun` subscribers that ask for deltas.
//!
//! Ephemeral by design, and never shown as durable state: nothing here is written to the
//! history, a restart loses it (watchers then see the recorded result only), and it lives on
//! every node: the node whose `PublishActivityDeltas` received it relays what was new to the
//! other nodes over the same PostgreSQL ([`steadfast_engine::store::Store::relay_live`]),
//! which take it in here too ([`LiveOutput::publish`] from `Change::Live`), so a watcher on
//! any node sees it (see README "Live tokens").
//!
//! Each activity keeps the *last* [`LIVE_TEXT_BYTES_MAX`] bytes of its current attempt's
//! output: a watcher that joins late gets that tail, and its first delta's offset (> 0) says
//! how many bytes from the attempt's start it missed. A new attempt resets the buffer.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use steadfast_engine::RunKey;
use steadfast_proto::v1 as pb;
use tokio::sync::broadcast;

/// Output kept per activity (its current attempt's last bytes) for watchers that join late.
pub const LIVE_TEXT_BYTES_MAX: usize = 64 * 1024;
/// Output kept over all runs; past it the buffers of the runs updated longest ago go first.
pub const LIVE_TOTAL_BYTES_MAX: usize = 64 * 1024 * 1024;
/// Buffers of runs that received nothing for this long (and have no watcher) are dropped:
/// an attempt whose end this node never saw (a timeout, a completion on another node).
pub const LIVE_IDLE: Duration = Duration::from_secs(600);
/// Text in one `PublishActivityDeltas` request (the SDK sends at most this much).
pub const LIVE_REQUEST_BYTES_MAX: usize = 64 * 1024;
/// Deltas in one `PublishActivityDeltas` request.
pub const LIVE_REQUEST_DELTAS_MAX: usize = 1024;
/// Deltas a watcher may fall behind before it is resynchronised from the buffer.
const FANOUT_CAPACITY: usize = 1024;
/// How often the idle sweep runs at most (on a publish).
const SWEEP_EVERY: Duration = Duration::from_secs(30);

/// The live output of every run this node received some for.
pub struct LiveOutput {
    inner: Mutex<Inner>,
}

struct Inner {
    runs: HashMap<RunKey, RunOutput>,
    total_bytes: usize,
    swept: Instant,
}

struct RunOutput {
    activities: BTreeMap<u32, AttemptOutput>,
    fanout: broadcast::Sender<pb::ActivityDelta>,
    touched: Instant,
}

/// One attempt's kept output: contiguous runs of text (a gap the worker left stays a gap).
struct AttemptOutput {
    attempt: u32,
    segments: VecDeque<pb::ActivityDelta>,
    bytes: usize,
    /// The offset after the last byte received.
    end: u64,
}

impl Default for LiveOutput {
    fn default() -> Self {
        LiveOutput {
            inner: Mutex::new(Inner {
                runs: HashMap::new(),
                total_bytes: 0,
                swept: Instant::now(),
            }),
        }
    }
}

impl RunOutput {
    fn new() -> Self {
        RunOutput {
            activities: BTreeMap::new(),
            fanout: broadcast::channel(FANOUT_CAPACITY).0,
            touched: Instant::now(),
        }
    }

    fn bytes(&self) -> usize {
        self.activities.values().map(|a| a.bytes).sum()
    }

    fn snapshot(&self) -> Vec<pb::ActivityDelta> {
        self.activities
            .iter()
            .flat_map(|(id, a)| {
                a.segments.iter().map(move |s| pb::ActivityDelta {
                    activity_id: *id,
                    attempt: a.attempt,
                    offset: s.offset,
                    text: s.text.clone(),
                })
            })
            .collect()
    }
}

impl AttemptOutput {
    fn new(attempt: u32) -> Self {
        AttemptOutput {
            attempt,
            segments: VecDeque::new(),
            bytes: 0,
            end: 0,
        }
    }

    /// Adds what `offset`/`text` brings past `end`; returns that part (offset, text).
    fn add(&mut self, offset: u64, text: &str) -> Option<(u64, String)> {
        let (offset, text) = unseen(self.end, offset, text)?;
        self.end = offset + text.len() as u64;
        self.bytes += text.len();
        match self.segments.back_mut() {
            Some(last) if last.offset + last.text.len() as u64 == offset => {
                last.text.push_str(text)
            }
            _ => self.segments.push_back(pb::ActivityDelta {
                offset,
                text: text.to_owned(),
                ..Default::default()
            }),
        }
        Some((offset, text.to_owned()))
    }

    /// Drops output from the front until at most `max` bytes are kept; returns the bytes
    /// dropped.
    fn trim(&mut self, max: usize) -> usize {
        let before = self.bytes;
        while self.bytes > max {
            let Some(first) = self.segments.front_mut() else {
                break;
            };
            let excess = self.bytes - max;
            if first.text.len() <= excess {
                self.bytes -= first.text.len();
                self.segments.pop_front();
                continue;
            }
            let mut cut = excess;
            while !first.text.is_char_boundary(cut) {
                cut += 1;
            }
            first.text.drain(..cut);
            first.offset += cut as u64;
            self.bytes -= cut;
        }
        before - self.bytes
    }
}

/// The part of `text` (at `offset`) past `end`, what a receiver that has everything before
/// `end` has not seen; `None` when it has seen it all (or the cut would split a char, which
/// the same text never does).
pub fn unseen(end: u64, offset: u64, text: &str) -> Option<(u64, &str)> {
    let text_end = offset.checked_add(text.len() as u64)?;
    if text.is_empty() || text_end <= end {
        return None;
    }
    if offset >= end {
        return Some((offset, text));
    }
    let skip = usize::try_from(end - offset).ok()?;
    text.is_char_boundary(skip).then(|| (end, &text[skip..]))
}

/// A watcher's subscription: the buffered output at the moment it subscribed, then what
/// arrives. Dropping it lets the run's buffers go once nothing else needs them.
pub struct LiveWatch<'a> {
    live: &'a LiveOutput,
    key: RunKey,
    /// What was buffered when it subscribed (taken once).
    pub snapshot: Vec<pb::ActivityDelta>,
    /// What arrives after it.
    pub rx: broadcast::Receiver<pb::ActivityDelta>,
}

impl LiveWatch<'_> {
    /// The buffer as it is now (to catch up after falling behind).
    pub fn resync(&self) -> Vec<pb::ActivityDelta> {
        let inner = self.live.inner.lock();
        inner
            .runs
            .get(&self.key)
            .map(RunOutput::snapshot)
            .unwrap_or_default()
    }
}

impl Drop for LiveWatch<'_> {
    fn drop(&mut self) {
        let mut inner = self.live.inner.lock();
        let gone = inner
            .runs
            .get(&self.key)
            // Our own receiver still counts here.
            .is_some_and(|r| r.activities.is_empty() && r.fanout.receiver_count() <= 1);
        if gone {
            inner.runs.remove(&self.key);
        }
    }
}

impl LiveOutput {
    /// Follows run `key`'s output until the returned guard is dropped.
    pub fn subscribe(&self, key: &RunKey) -> LiveWatch<'_> {
        let mut inner = self.inner.lock();
        let run = inner.runs.entry(key.clone()).or_insert_with(RunOutput::new);
        LiveWatch {
            live: self,
            key: key.clone(),
            snapshot: run.snapshot(),
            rx: run.fanout.subscribe(),
        }
    }

    /// Takes the output of attempt `attempt` of activity `id` (fenced by whoever received it:
    /// the current, started attempt), keeps its tail and passes it on to the watchers. A new
    /// attempt resets the activity's buffer; an older one's output (relayed late from another
    /// node) is dropped. Returns the parts that were new (to relay to other nodes).
    pub fn publish(
        &self,
        key: &RunKey,
        id: u32,
        attempt: u32,
        deltas: &[pb::ActivityDelta],
    ) -> Vec<pb::ActivityDelta> {
        let mut inner = self.inner.lock();
        inner.sweep();
        let run = inner.runs.entry(key.clone()).or_insert_with(RunOutput::new);
        run.touched = Instant::now();
        let before = run.bytes();
        let out = run
            .activities
            .entry(id)
            .or_insert_with(|| AttemptOutput::new(attempt));
        if out.attempt > attempt {
            return Vec::new();
        }
        if out.attempt < attempt {
            *out = AttemptOutput::new(attempt);
        }
        let mut new = Vec::new();
        for d in deltas {
            let Some((offset, text)) = out.add(d.offset, &d.text) else {
                continue;
            };
            let d = pb::ActivityDelta {
                activity_id: id,
                attempt,
                offset,
                text,
            };
            // No receiver is not an error: nobody watches right now.
            let _ = run.fanout.send(d.clone());
            new.push(d);
        }
        out.trim(LIVE_TEXT_BYTES_MAX);
        let after = run.bytes();
        inner.total_bytes = (inner.total_bytes + after).saturating_sub(before);
        if inner.total_bytes > LIVE_TOTAL_BYTES_MAX {
            inner.evict(key);
        }
        new
    }

    /// Forgets activity `id`'s output (its outcome was recorded: watchers read it from the
    /// history now).
    pub fn finish(&self, key: &RunKey, id: u32) {
        let mut inner = self.inner.lock();
        let Some(run) = inner.runs.get_mut(key) else {
            return;
        };
        let freed = run.activities.remove(&id).map_or(0, |a| a.bytes);
        if run.activities.is_empty() && run.fanout.receiver_count() == 0 {
            inner.runs.remove(key);
        }
        inner.total_bytes = inner.total_bytes.saturating_sub(freed);
    }

    /// Bytes kept over all runs.
    pub fn total_bytes(&self) -> usize {
        self.inner.lock().total_bytes
    }
}

impl Inner {
    /// Past [`LIVE_TOTAL_BYTES_MAX`], drops whole runs' buffers, least recently updated
    /// first, never `keep`'s.
    fn evict(&mut self, keep: &RunKey) {
        while self.total_bytes > LIVE_TOTAL_BYTES_MAX {
            let Some(oldest) = self
                .runs
                .iter()
                .filter(|(k, r)| *k != keep && !r.activities.is_empty())
                .min_by_key(|(_, r)| r.touched)
                .map(|(k, _)| k.clone())
            else {
                break;
            };
            if let Some(run) = self.runs.get_mut(&oldest) {
                self.total_bytes = self.total_bytes.saturating_sub(run.bytes());
                run.activities.clear();
                if run.fanout.receiver_count() == 0 {
                    self.runs.remove(&oldest);
                }
            }
        }
    }

    /// Drops the buffers of runs idle for [`LIVE_IDLE`] that nobody watches.
    fn sweep(&mut self) {
        if self.swept.elapsed() < SWEEP_EVERY {
            return;
        }
        self.swept = Instant::now();
        self.runs
            .retain(|_, r| r.fanout.receiver_count() > 0 || r.touched.elapsed() < LIVE_IDLE);
        self.total_bytes = self.runs.values().map(RunOutput::bytes).sum();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use steadfast_engine::RunId;

    fn key() -> RunKey {
        RunKey::new("default", RunId::new_v7())
    }

    fn d(offset: u64, text: &str) -> pb::ActivityDelta {
        pb::ActivityDelta {
            offset,
            text: text.into(),
            ..Default::default()
        }
    }

    fn texts(v: &[pb::ActivityDelta]) -> Vec<(u32, u64, &str)> {
        v.iter()
            .map(|d| (d.attempt, d.offset, d.text.as_str()))
            .collect()
    }

    #[test]
    fn a_late_watcher_gets_the_buffer_then_what_arrives() {
        let live = LiveOutput::default();
        let k = key();
        live.publish(&k, 3, 1, &[d(0, "Hel"), d(3, "lo")]);
        let mut w = live.subscribe(&k);
        assert_eq!(texts(&w.snapshot), [(1, 0, "Hello")]);
        // A repeated range (a worker's retry of a batch) is passed on once.
        live.publish(&k, 3, 1, &[d(3, "lo, "), d(7, "world")]);
        assert_eq!(texts(&[w.rx.try_recv().unwrap()]), [(1, 5, ", ")]);
        assert_eq!(texts(&[w.rx.try_recv().unwrap()]), [(1, 7, "world")]);
        assert!(w.rx.try_recv().is_err());
    }

    #[test]
    fn a_new_attempt_resets_the_buffer() {
        let live = LiveOutput::default();
        let k = key();
        live.publish(&k, 1, 1, &[d(0, "first try")]);
        live.publish(&k, 1, 2, &[d(0, "again")]);
        // The old attempt's output relayed late from another node changes nothing.
        assert!(live.publish(&k, 1, 1, &[d(9, " late")]).is_empty());
        let w = live.subscribe(&k);
        assert_eq!(texts(&w.snapshot), [(2, 0, "again")]);
    }

    #[test]
    fn the_buffer_keeps_the_tail_and_says_what_it_skipped() {
        let live = LiveOutput::default();
        let k = key();
        let chunk = "é".repeat(1000); // 2,000 bytes
        let mut offset = 0;
        for _ in 0..40 {
            live.publish(&k, 1, 1, &[d(offset, &chunk)]);
            offset += chunk.len() as u64;
        }
        let w = live.subscribe(&k);
        let kept: usize = w.snapshot.iter().map(|d| d.text.len()).sum();
        assert!(
            kept <= LIVE_TEXT_BYTES_MAX && kept > LIVE_TEXT_BYTES_MAX - 4,
            "{kept}"
        );
        let first = &w.snapshot[0];
        assert_eq!(
            first.offset + kept as u64,
            offset,
            "the tail, up to the end"
        );
        assert!(first.offset > 0, "a late watcher learns what it missed");
        assert_eq!(live.total_bytes(), kept);
    }

    #[test]
    fn a_gap_stays_a_gap() {
        let live = LiveOutput::default();
        let k = key();
        live.publish(&k, 1, 1, &[d(0, "ab"), d(10, "cd")]);
        let w = live.subscribe(&k);
        assert_eq!(texts(&w.snapshot), [(1, 0, "ab"), (1, 10, "cd")]);
    }

    #[test]
    fn finished_and_unwatched_output_is_forgotten() {
        let live = LiveOutput::default();
        let k = key();
        live.publish(&k, 1, 1, &[d(0, "x")]);
        live.finish(&k, 1);
        assert_eq!(live.total_bytes(), 0);
        assert!(live.inner.lock().runs.is_empty());
        let w = live.subscribe(&k);
        assert!(w.snapshot.is_empty());
        drop(w);
        assert!(live.inner.lock().runs.is_empty());
    }

    #[test]
    fn unseen_trims_what_a_receiver_has() {
        assert_eq!(unseen(0, 0, "abc"), Some((0, "abc")));
        assert_eq!(unseen(2, 0, "abc"), Some((2, "c")));
        assert_eq!(unseen(3, 0, "abc"), None);
        assert_eq!(unseen(1, 0, "éa"), None, "never a split char");
        assert_eq!(unseen(0, 5, "x"), Some((5, "x")));
        assert_eq!(unseen(0, u64::MAX, "x"), None);
    }
}
