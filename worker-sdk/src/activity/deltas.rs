//! Live output of an attempt (an LLM call's tokens as they arrive): queued by activity code
//! with [`super::ActivityContext::emit_delta`], sent by the runtime in batches
//! (`PublishActivityDeltas`) to the server, which shows them to `WatchRun` subscribers and
//! records none of it.
//!
//! Unary calls, one per batch, rather than a client stream: each batch is fenced by the task
//! token exactly like a heartbeat (a superseded attempt's batch is refused), needs no
//! long-lived per-attempt stream state on either side, passes the auth layer and any proxy
//! like every other worker call, and a lost batch costs a watcher some text, nothing else.
//! At one call per [`DELTA_BATCH_INTERVAL`] the cost is at most 20 calls a second per
//! streaming attempt.

use std::time::Duration;

use parking_lot::Mutex;
use steadfast_proto::v1 as pb;
use tokio::sync::Notify;

/// How long the runtime gathers deltas before it sends them: the first delta after a send
/// waits this long, so that tokens arriving one by one go out a few dozen at a time.
pub const DELTA_BATCH_INTERVAL: Duration = Duration::from_millis(50);

/// Text queued but not yet sent, per attempt. Past it new text is dropped (its offsets
/// still advance, so watchers see the gap): a server that does not keep up costs watchers
/// text, never the worker's memory.
pub const DELTA_OUTBOX_BYTES_MAX: usize = 256 * 1024;

/// Text sent in one `PublishActivityDeltas` call (the server refuses more).
pub const DELTA_REQUEST_BYTES_MAX: usize = 64 * 1024;

/// The queue of one attempt's deltas.
#[derive(Default)]
pub(crate) struct Outbox {
    queue: Mutex<Queue>,
    ready: Notify,
}

#[derive(Default)]
struct Queue {
    /// Offset (UTF-8 bytes) of the next text emitted.
    next_offset: u64,
    /// Contiguous runs of text, in order.
    pending: Vec<pb::ActivityDelta>,
    pending_bytes: usize,
    /// Bytes dropped because the outbox was full.
    dropped_bytes: u64,
    /// The server does not take deltas (an older server): nothing is queued any more.
    disabled: bool,
}

impl Outbox {
    pub(crate) fn push(&self, text: &str) {
        if text.is_empty() {
            return;
        }
        let mut q = self.queue.lock();
        let offset = q.next_offset;
        q.next_offset += text.len() as u64;
        if q.disabled {
            return;
        }
        if q.pending_bytes + text.len() > DELTA_OUTBOX_BYTES_MAX {
            q.dropped_bytes += text.len() as u64;
            return;
        }
        q.pending_bytes += text.len();
        match q.pending.last_mut() {
            Some(last) if last.offset + last.text.len() as u64 == offset => {
                last.text.push_str(text)
            }
            _ => q.pending.push(pb::ActivityDelta {
                offset,
                text: text.to_owned(),
                ..Default::default()
            }),
        }
        drop(q);
        self.ready.notify_one();
    }

    /// Resolves once text was queued since the last [`Outbox::take`] noticed it.
    pub(crate) async fn ready(&self) {
        self.ready.notified().await;
    }

    /// Up to about `max_bytes` of queued text, oldest first (a single delta longer than
    /// that is split at a char boundary).
    pub(crate) fn take(&self, max_bytes: usize) -> Vec<pb::ActivityDelta> {
        let mut q = self.queue.lock();
        let mut out = Vec::new();
        let mut bytes = 0;
        while bytes < max_bytes && !q.pending.is_empty() {
            let room = max_bytes - bytes;
            let first = &mut q.pending[0];
            if first.text.len() <= room {
                bytes += first.text.len();
                out.push(q.pending.remove(0));
                continue;
            }
            let mut cut = room;
            while cut > 0 && !first.text.is_char_boundary(cut) {
                cut -= 1;
            }
            if cut == 0 {
                break;
            }
            let rest = first.text.split_off(cut);
            let head = pb::ActivityDelta {
                offset: first.offset,
                text: std::mem::replace(&mut first.text, rest),
                ..Default::default()
            };
            first.offset += cut as u64;
            bytes += cut;
            out.push(head);
        }
        q.pending_bytes -= bytes;
        out
    }

    /// Drops what is queued and queues nothing more.
    pub(crate) fn disable(&self) {
        let mut q = self.queue.lock();
        q.disabled = true;
        q.pending.clear();
        q.pending_bytes = 0;
    }

    /// Whether text is queued.
    pub(crate) fn is_empty(&self) -> bool {
        self.queue.lock().pending.is_empty()
    }

    /// Bytes emitted so far (sent, queued or dropped).
    pub(crate) fn emitted_bytes(&self) -> u64 {
        self.queue.lock().next_offset
    }

    /// Bytes dropped because the outbox was full.
    pub(crate) fn dropped_bytes(&self) -> u64 {
        self.queue.lock().dropped_bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn contiguous_text_is_coalesced_and_offsets_count_bytes() {
        let o = Outbox::default();
        o.push("héllo");
        o.push(" world");
        let got = o.take(usize::MAX);
        assert_eq!(got.len(), 1);
        assert_eq!((got[0].offset, got[0].text.as_str()), (0, "héllo world"));
        o.push("!");
        let got = o.take(usize::MAX);
        assert_eq!((got[0].offset, got[0].text.as_str()), (12, "!"));
        assert!(o.is_empty());
    }

    #[test]
    fn a_batch_is_bounded_and_cut_at_a_char_boundary() {
        let o = Outbox::default();
        o.push("aé"); // 'é' is 2 bytes: a cut at 2 falls inside it.
        let first = o.take(2);
        assert_eq!((first[0].offset, first[0].text.as_str()), (0, "a"));
        let rest = o.take(2);
        assert_eq!((rest[0].offset, rest[0].text.as_str()), (1, "é"));
    }

    #[test]
    fn a_full_outbox_drops_text_and_leaves_a_gap() {
        let o = Outbox::default();
        let big = "x".repeat(DELTA_OUTBOX_BYTES_MAX);
        o.push(&big);
        o.push("lost");
        assert_eq!(o.dropped_bytes(), 4);
        let _ = o.take(usize::MAX);
        o.push("kept");
        let got = o.take(usize::MAX);
        assert_eq!(
            (got[0].offset, got[0].text.as_str()),
            (DELTA_OUTBOX_BYTES_MAX as u64 + 4, "kept")
        );
        assert_eq!(o.emitted_bytes(), DELTA_OUTBOX_BYTES_MAX as u64 + 8);
    }
}
