//! The state one workflow instance shares between its context, its futures and the
//! executor: issued commands, results waiting for their futures, buffered signals, the
//! cancel flag, the task time and the deterministic random generator.
//!
//! Everything is keyed so that applying one event costs O(1): results by command seq,
//! signals by name.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::task::{Context, Poll, Waker};

use steadfast_proto::v1 as pb;
use steadfast_proto::v1::command::Command as Cmd;

use super::child::ChildError;
use super::patch::Patches;
use crate::{ActivityError, Effect};

/// What a command's future receives from the history.
#[derive(Debug)]
pub(crate) enum Resolved {
    Activity(Result<pb::Payload, ActivityError>),
    TimerFired,
    /// A child's result, or a signal's delivery (an empty payload).
    Child(Result<pb::Payload, ChildError>),
}

enum Slot<T> {
    Waiting(Option<Waker>),
    Ready(T),
}

impl<T> Slot<T> {
    /// Stores `value` and wakes the future waiting for it.
    fn fill(&mut self, value: T) {
        if let Slot::Waiting(Some(waker)) = std::mem::replace(self, Slot::Ready(value)) {
            waker.wake();
        }
    }

    /// Registers the waker of a pending poll, cloning it only when it changed.
    fn register(&mut self, cx: &Context<'_>) {
        if let Slot::Waiting(waker) = self {
            match waker {
                Some(w) if w.will_wake(cx.waker()) => {}
                _ => *waker = Some(cx.waker().clone()),
            }
        }
    }
}

fn poll_slot<K: std::hash::Hash + Eq + Copy, T>(
    slots: &mut HashMap<K, Slot<T>>,
    key: K,
    cx: &Context<'_>,
) -> Poll<T> {
    match slots.get_mut(&key) {
        Some(Slot::Ready(_)) => match slots.remove(&key) {
            Some(Slot::Ready(v)) => Poll::Ready(v),
            _ => unreachable!("slot was ready a moment ago"),
        },
        Some(slot) => {
            slot.register(cx);
            Poll::Pending
        }
        None => Poll::Pending,
    }
}

#[derive(Default)]
struct SignalChannel {
    /// Signals received that no wait has taken yet, oldest first.
    buffered: VecDeque<pb::Payload>,
    /// Waits that found nothing buffered, oldest first.
    waiters: VecDeque<u64>,
}

/// SplitMix64: tiny, fast and fixed forever, so `random()` returns the same values in every
/// SDK version (a library PRNG may change its algorithm between releases).
pub(crate) struct SplitMix64(u64);

impl SplitMix64 {
    pub(crate) fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
}

/// The mutable state of one run, behind the context's `RefCell`.
pub(crate) struct RunState {
    next_seq: u32,
    /// Issued commands that the history does not hold yet, in seq order.
    pub(crate) pending: VecDeque<pb::Command>,
    /// Results of activities and timers, by command seq; an entry exists while its future
    /// lives.
    slots: HashMap<u32, Slot<Resolved>>,
    /// Child runs by command seq: their run id once started, for detached starts.
    child_starts: HashMap<u32, Slot<Result<String, ChildError>>>,
    signals: HashMap<String, SignalChannel>,
    signal_slots: HashMap<u64, Slot<pb::Payload>>,
    next_waiter: u64,
    cancel_requested: bool,
    cancel_wakers: Vec<Waker>,
    pub(crate) now_ms: i64,
    /// Events in the history when the current workflow task started (its
    /// WorkflowTaskStarted seq): the history length the code sees, the same on every replay.
    pub(crate) history_events: u64,
    /// From this history length on, the code is told to continue as new
    /// ([`super::Registry::continue_as_new_after_events`]).
    pub(crate) continue_as_new_after_events: u64,
    pub(crate) rng: SplitMix64,
    effects: Arc<HashMap<String, Effect>>,
    /// Which branch of each patch this run takes ([`super::WorkflowContext::patched`]).
    pub(crate) patches: Patches,
}

impl RunState {
    pub(crate) fn new(
        seed: u64,
        effects: Arc<HashMap<String, Effect>>,
        continue_as_new_after_events: u64,
    ) -> Self {
        RunState {
            next_seq: 1,
            pending: VecDeque::new(),
            slots: HashMap::new(),
            child_starts: HashMap::new(),
            signals: HashMap::new(),
            signal_slots: HashMap::new(),
            next_waiter: 0,
            cancel_requested: false,
            cancel_wakers: Vec::new(),
            now_ms: 0,
            history_events: 0,
            continue_as_new_after_events,
            rng: SplitMix64(seed),
            effects,
            patches: Patches::default(),
        }
    }

    /// Issues a command: gives it the next seq and queues it.
    pub(crate) fn issue(&mut self, command: Cmd) -> u32 {
        let seq = self.next_seq;
        self.next_seq += 1;
        self.pending.push_back(pb::Command {
            seq,
            command: Some(command),
        });
        seq
    }

    /// Issues a command whose future waits for a result event.
    pub(crate) fn issue_waiting(&mut self, command: Cmd) -> u32 {
        let seq = self.issue(command);
        self.slots.insert(seq, Slot::Waiting(None));
        seq
    }

    /// The effect registered for an activity type (unspecified when unknown here).
    pub(crate) fn effect_of(&self, activity_type: &str) -> pb::Effect {
        self.effects
            .get(activity_type)
            .map(|e| pb::Effect::from(*e))
            .unwrap_or(pb::Effect::Unspecified)
    }

    /// A still-pending command, for the builder methods that adjust it right after issue.
    pub(crate) fn pending_mut(&mut self, seq: u32) -> Option<&mut pb::Command> {
        self.pending.iter_mut().rev().find(|c| c.seq == seq)
    }

    /// Hands a result to the future of command `seq`; dropped when that future is gone.
    pub(crate) fn resolve(&mut self, seq: u32, value: Resolved) {
        if let Some(slot) = self.slots.get_mut(&seq) {
            slot.fill(value);
        }
    }

    /// A child was issued at `seq`: its start can be awaited.
    pub(crate) fn expect_child_start(&mut self, seq: u32) {
        self.child_starts.insert(seq, Slot::Waiting(None));
    }

    /// The child of command `seq` started (its run id) or could not start.
    pub(crate) fn child_started(&mut self, seq: u32, r: Result<String, ChildError>) {
        if let Some(slot) = self.child_starts.get_mut(&seq) {
            slot.fill(r);
        }
    }

    pub(crate) fn poll_child_start(
        &mut self,
        seq: u32,
        cx: &Context<'_>,
    ) -> Poll<Result<String, ChildError>> {
        poll_slot(&mut self.child_starts, seq, cx)
    }

    pub(crate) fn poll_result(&mut self, seq: u32, cx: &Context<'_>) -> Poll<Resolved> {
        poll_slot(&mut self.slots, seq, cx)
    }

    pub(crate) fn is_resolved(&self, seq: u32) -> bool {
        matches!(self.slots.get(&seq), Some(Slot::Ready(_)))
    }

    pub(crate) fn forget_result(&mut self, seq: u32) {
        self.slots.remove(&seq);
    }

    /// A signal arrived: the oldest waiting wait takes it, or it is buffered.
    pub(crate) fn signal_received(&mut self, name: &str, input: pb::Payload) {
        let channel = match self.signals.get_mut(name) {
            Some(c) => c,
            None => self.signals.entry(name.to_owned()).or_default(),
        };
        match channel.waiters.pop_front() {
            Some(waiter) => {
                if let Some(slot) = self.signal_slots.get_mut(&waiter) {
                    slot.fill(input);
                }
            }
            None => channel.buffered.push_back(input),
        }
    }

    /// Takes the oldest buffered signal of `name`, or registers a waiter for the next one.
    pub(crate) fn take_signal(&mut self, name: &str) -> Result<pb::Payload, u64> {
        if let Some(p) = self
            .signals
            .get_mut(name)
            .and_then(|c| c.buffered.pop_front())
        {
            return Ok(p);
        }
        let id = self.next_waiter;
        self.next_waiter += 1;
        self.signal_slots.insert(id, Slot::Waiting(None));
        self.signals
            .entry(name.to_owned())
            .or_default()
            .waiters
            .push_back(id);
        Err(id)
    }

    pub(crate) fn poll_signal(&mut self, waiter: u64, cx: &Context<'_>) -> Poll<pb::Payload> {
        poll_slot(&mut self.signal_slots, waiter, cx)
    }

    /// A wait went away: it stops waiting, and a signal it was handed but did not consume
    /// goes back to the front of the line.
    pub(crate) fn drop_waiter(&mut self, name: &str, waiter: u64) {
        match self.signal_slots.remove(&waiter) {
            Some(Slot::Ready(p)) => self.give_back(name, p),
            Some(Slot::Waiting(_)) => {
                if let Some(c) = self.signals.get_mut(name) {
                    c.waiters.retain(|w| *w != waiter);
                }
            }
            None => {}
        }
    }

    /// Returns an unconsumed signal to the front of its line.
    pub(crate) fn give_back(&mut self, name: &str, input: pb::Payload) {
        let channel = self.signals.entry(name.to_owned()).or_default();
        match channel.waiters.pop_front() {
            Some(waiter) => {
                if let Some(slot) = self.signal_slots.get_mut(&waiter) {
                    slot.fill(input);
                }
            }
            None => channel.buffered.push_front(input),
        }
    }

    pub(crate) fn request_cancel(&mut self) {
        self.cancel_requested = true;
        for w in self.cancel_wakers.drain(..) {
            w.wake();
        }
    }

    pub(crate) fn cancel_requested(&self) -> bool {
        self.cancel_requested
    }

    /// Whether some SDK future waits with a registered waker, i.e. whether an event in the
    /// history can still wake the workflow. A workflow that blocks while this is false
    /// awaits something else, which nothing will ever wake ([`super::Error::ForeignAwait`]).
    /// O(live futures), checked once per blocked activation.
    pub(crate) fn can_be_woken(&self) -> bool {
        let registered = |slot: &Slot<_>| matches!(slot, Slot::Waiting(Some(_)));
        !self.cancel_wakers.is_empty() && !self.cancel_requested
            || self.slots.values().any(registered)
            || self
                .child_starts
                .values()
                .any(|s| matches!(s, Slot::Waiting(Some(_))))
            || self
                .signal_slots
                .values()
                .any(|s| matches!(s, Slot::Waiting(Some(_))))
    }

    pub(crate) fn poll_cancelled(&mut self, cx: &Context<'_>) -> Poll<()> {
        if self.cancel_requested {
            return Poll::Ready(());
        }
        if !self.cancel_wakers.iter().any(|w| w.will_wake(cx.waker())) {
            self.cancel_wakers.push(cx.waker().clone());
        }
        Poll::Pending
    }
}
