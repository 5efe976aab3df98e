//! The indexer's queue: a channel that wakes the indexer only when it must.
//!
//! A `std::sync::mpsc` receiver gathering with `recv_timeout` is woken by every send: one
//! futex wake and one context switch per append, on a path that waits for nothing (the
//! indexer gathers for [`super::indexer::INDEX_GATHER_MS`] anyway). Here a send wakes the
//! indexer only when it sleeps with nothing queued, when someone waits for the answer (a
//! control operation), when the batch is full, or when the last sender goes away.

use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex};

use crate::embedded::indexer::Op;

struct State {
    ops: Vec<Op>,
    /// The receiver sleeps until the first operation.
    idle: bool,
    /// A queued operation ends the gathering (someone waits for it).
    urgent: bool,
    senders: usize,
    receiver_alive: bool,
}

struct Shared {
    state: Mutex<State>,
    wake: Condvar,
    /// Most operations returned by one [`Receiver::recv_batch`].
    max: usize,
}

/// A send to a queue whose receiver is gone.
#[derive(Debug)]
pub(crate) struct Stopped;

/// The sending half; cloned like an `mpsc::Sender`. The queue closes when the last is dropped.
pub(crate) struct Sender {
    shared: Arc<Shared>,
}

/// The receiving half (the indexer thread).
pub(crate) struct Receiver {
    shared: Arc<Shared>,
}

/// A new queue whose batches hold at most `max` operations.
pub(crate) fn channel(max: usize) -> (Sender, Receiver) {
    let shared = Arc::new(Shared {
        state: Mutex::new(State {
            ops: Vec::new(),
            idle: false,
            urgent: false,
            senders: 1,
            receiver_alive: true,
        }),
        wake: Condvar::new(),
        max: max.max(1),
    });
    (
        Sender {
            shared: Arc::clone(&shared),
        },
        Receiver { shared },
    )
}

impl Sender {
    /// Queues `op`; refused when the receiver is gone (the indexer thread stopped).
    pub(crate) fn send(&self, op: Op) -> Result<(), Stopped> {
        let wake = {
            let mut s = self.shared.state.lock();
            if !s.receiver_alive {
                return Err(Stopped);
            }
            let urgent = op.is_control();
            s.urgent |= urgent;
            s.ops.push(op);
            s.idle || urgent || s.ops.len() >= self.shared.max
        };
        if wake {
            self.shared.wake.notify_one();
        }
        Ok(())
    }
}

impl Clone for Sender {
    fn clone(&self) -> Sender {
        self.shared.state.lock().senders += 1;
        Sender {
            shared: Arc::clone(&self.shared),
        }
    }
}

impl Drop for Sender {
    fn drop(&mut self) {
        let last = {
            let mut s = self.shared.state.lock();
            s.senders -= 1;
            s.senders == 0
        };
        if last {
            self.shared.wake.notify_one();
        }
    }
}

impl Receiver {
    /// The next batch: waits for a first operation, then gathers for `gather` unless an
    /// urgent operation, a full batch or the last sender's departure ends it sooner. `None`
    /// once every sender is gone and the queue is drained.
    pub(crate) fn recv_batch(&self, gather: Duration) -> Option<Vec<Op>> {
        let mut s = self.shared.state.lock();
        while s.ops.is_empty() {
            if s.senders == 0 {
                return None;
            }
            s.idle = true;
            self.shared.wake.wait(&mut s);
            s.idle = false;
        }
        let until = Instant::now() + gather;
        while !s.urgent && s.ops.len() < self.shared.max && s.senders > 0 {
            if self.shared.wake.wait_until(&mut s, until).timed_out() {
                break;
            }
        }
        let n = s.ops.len().min(self.shared.max);
        let rest = s.ops.split_off(n);
        let batch = std::mem::replace(&mut s.ops, rest);
        s.urgent = s.ops.iter().any(Op::is_control);
        Some(batch)
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        let ops = {
            let mut s = self.shared.state.lock();
            s.receiver_alive = false;
            std::mem::take(&mut s.ops)
        };
        // Answers waited for are dropped outside the lock (their waiters see "stopped").
        drop(ops);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::sync::oneshot;

    fn sync_op() -> (Op, oneshot::Receiver<Result<(), crate::store::Error>>) {
        let (tx, rx) = oneshot::channel();
        (Op::Sync(tx), rx)
    }

    #[test]
    fn an_urgent_operation_ends_the_gathering_at_once() {
        let (tx, rx) = channel(16);
        let t = std::thread::spawn(move || {
            let t0 = Instant::now();
            let batch = rx.recv_batch(Duration::from_secs(30)).expect("a batch");
            (batch.len(), t0.elapsed())
        });
        let (op, _answer) = sync_op();
        tx.send(op).map_err(|_| "receiver gone").unwrap();
        let (n, waited) = t.join().unwrap();
        assert_eq!(n, 1);
        assert!(waited < Duration::from_secs(30), "waited {waited:?}");
    }

    #[test]
    fn the_last_sender_leaving_ends_the_queue_after_it_drains() {
        let (tx, rx) = channel(2);
        let tx2 = tx.clone();
        for _ in 0..3 {
            let (op, _answer) = sync_op();
            let _ = tx2.send(op);
        }
        drop(tx);
        drop(tx2);
        assert_eq!(
            rx.recv_batch(Duration::from_secs(30)).map(|b| b.len()),
            Some(2)
        );
        assert_eq!(
            rx.recv_batch(Duration::from_secs(30)).map(|b| b.len()),
            Some(1)
        );
        assert!(rx.recv_batch(Duration::from_secs(30)).is_none());
    }

    #[test]
    fn a_send_after_the_receiver_is_gone_is_refused() {
        let (tx, rx) = channel(2);
        drop(rx);
        let (op, _answer) = sync_op();
        assert!(tx.send(op).is_err());
    }
}
