//! `WatchRun`: a run's events after a seq, then new ones as they are appended; with
//! `include_deltas`, interleaved with the live output of its running attempts
//! ([`crate::live`]): first what is buffered, then what arrives.
//!
//! Order: output a worker published before it reported the attempt's outcome is sent before
//! the event that records that outcome, because each round passes on every delta received so
//! far before it reads the history.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use steadfast_engine::ids::RunKey;
use steadfast_engine::state::{ActivityPhase, RunState};
use steadfast_proto::v1 as pb;
use tokio::sync::broadcast::error::{RecvError, TryRecvError};
use tokio::sync::mpsc;
use tonic::Status;

use super::client::run_info;
use crate::convert;
use crate::core::Core;
use crate::live::{LiveWatch, unseen};

type Tx = mpsc::Sender<Result<pb::WatchRunResponse, Status>>;

/// How long a round waits for a change before it reads the store again anyway.
const RECHECK: Duration = Duration::from_secs(5);

/// Streams run `key` to `tx` until the run closes or the receiver goes away.
pub(super) async fn run(
    core: Arc<Core>,
    key: RunKey,
    after_seq: u64,
    include_deltas: bool,
    tx: Tx,
) {
    let mut changes = core.notify.watch_run(&key);
    let mut live = include_deltas.then(|| core.live.subscribe(&key));
    let mut shown = Shown::default();
    let mut after = after_seq;
    loop {
        let s = match core.state(&key).await {
            Ok(s) => s,
            Err(e) => {
                let _ = tx.send(Err(e)).await;
                return;
            }
        };
        if let Some(l) = live.as_mut()
            && !pass_on_deltas(l, &s, &mut shown, &tx).await
        {
            return;
        }
        if s.last_seq > after {
            let records = match core.history(&key, after + 1, s.last_seq).await {
                Ok(r) => r,
                Err(e) => {
                    let _ = tx.send(Err(e)).await;
                    return;
                }
            };
            let info = run_info(&core, &s).await.ok();
            for rec in &records {
                let last = rec.seq == s.last_seq;
                let msg = pb::WatchRunResponse {
                    event: Some(convert::event(rec)),
                    run: if last { info.clone() } else { None },
                    delta: None,
                };
                if tx.send(Ok(msg)).await.is_err() {
                    return;
                }
                after = rec.seq;
            }
        }
        if !s.is_open() {
            return;
        }
        let deadline = tokio::time::Instant::now() + RECHECK;
        let delta_ready = async {
            match live.as_mut() {
                // Resolves when something arrived; it is taken at the top of the next round.
                Some(l) => wait_ready(&mut l.rx).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = changes.changed_after(after, deadline) => {}
            first = delta_ready => {
                if let Some(d) = first
                    && !send_delta(&mut shown, d, &tx).await
                {
                    return;
                }
            }
            _ = tx.closed() => return,
        }
        if core.notify.is_stopping() {
            let _ = tx.send(Err(super::client::stopping())).await;
            return;
        }
    }
}

/// Waits for the next delta; `None` when the watcher fell behind (the next round resyncs
/// from the buffer) or the channel is gone.
async fn wait_ready(
    rx: &mut tokio::sync::broadcast::Receiver<pb::ActivityDelta>,
) -> Option<pb::ActivityDelta> {
    match rx.recv().await {
        Ok(d) => Some(d),
        Err(RecvError::Lagged(_)) => None,
        Err(RecvError::Closed) => std::future::pending().await,
    }
}

/// What this watcher has passed on per activity: the attempt and the offset after it.
#[derive(Default)]
struct Shown(HashMap<u32, (u32, u64)>);

/// Sends the part of `d` this watcher has not sent yet; false when the receiver is gone.
async fn send_delta(shown: &mut Shown, d: pb::ActivityDelta, tx: &Tx) -> bool {
    let entry = shown.0.entry(d.activity_id).or_insert((d.attempt, 0));
    if d.attempt < entry.0 {
        return true;
    }
    if d.attempt > entry.0 {
        *entry = (d.attempt, 0);
    }
    let Some((offset, text)) = unseen(entry.1, d.offset, &d.text) else {
        return true;
    };
    entry.1 = offset + text.len() as u64;
    let msg = pb::WatchRunResponse {
        event: None,
        run: None,
        delta: Some(pb::ActivityDelta {
            offset,
            text: text.to_owned(),
            ..d
        }),
    };
    tx.send(Ok(msg)).await.is_ok()
}

/// Passes on the buffer (first round, or after falling behind: only the output of attempts
/// `s` says still run) and everything received since (fenced when it was published). False
/// when the receiver is gone.
async fn pass_on_deltas(l: &mut LiveWatch<'_>, s: &RunState, shown: &mut Shown, tx: &Tx) -> bool {
    let running = |d: &pb::ActivityDelta| {
        s.activities.get(&d.activity_id).is_some_and(|a| {
            a.attempt == d.attempt && matches!(a.phase, ActivityPhase::Started { .. })
        })
    };
    let mut buffered = std::mem::take(&mut l.snapshot);
    loop {
        for d in buffered.drain(..).filter(|d| running(d)) {
            if !send_delta(shown, d, tx).await {
                return false;
            }
        }
        match l.rx.try_recv() {
            Ok(d) => {
                if !send_delta(shown, d, tx).await {
                    return false;
                }
            }
            Err(TryRecvError::Lagged(_)) => buffered = l.resync(),
            Err(TryRecvError::Empty | TryRecvError::Closed) => return true,
        }
    }
}
