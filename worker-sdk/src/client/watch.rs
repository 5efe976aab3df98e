//! [`Client::watch`]: a run's events as a stream that survives disconnects.

use std::collections::HashMap;

use futures::Stream;
use steadfast_proto::v1 as pb;
use steadfast_proto::v1::history_event::Attributes as Ev;

use super::{Client, Error};
use crate::backoff::Backoff;

/// Consecutive failed reconnects after which a watch gives up with the last error.
pub const WATCH_RECONNECTS_MAX: u32 = 20;

struct WatchState {
    client: Client,
    run_id: String,
    after_seq: u64,
    stream: Option<tonic::Streaming<pb::WatchRunResponse>>,
    done: bool,
    backoff: Backoff,
    /// Ask for live output ([`Client::watch_live`]).
    deltas: bool,
    /// Per activity, the attempt and the offset after the live output already yielded:
    /// after a reconnect the server sends its buffer again.
    shown: HashMap<u32, (u32, u64)>,
}

/// Whether `event` closes its run.
pub fn is_terminal(event: &pb::HistoryEvent) -> bool {
    matches!(
        event.attributes,
        Some(
            Ev::RunCompleted(_)
                | Ev::RunFailed(_)
                | Ev::RunCancelled(_)
                | Ev::RunTerminated(_)
                | Ev::RunTimedOut(_)
                | Ev::RunContinuedAsNew(_)
        )
    )
}

impl Client {
    /// The events of run `run_id` after `after_seq`, then new ones as they are appended,
    /// ending after the run's terminal event (at once when the run is closed and `after_seq`
    /// is at or past its last event). When the connection drops, the stream
    /// reconnects and resumes after the last event it yielded; it ends with an error after
    /// [`WATCH_RECONNECTS_MAX`] failed reconnects in a row, or on a refusal (e.g. not found).
    pub fn watch(
        &self,
        run_id: &str,
        after_seq: u64,
    ) -> impl Stream<Item = Result<pb::WatchRunResponse, Error>> + Send + 'static {
        self.watch_with(run_id, after_seq, false)
    }

    /// [`Client::watch`] with the live output of the run's running activities (an LLM
    /// call's tokens as they arrive, `WatchRunResponse::delta`), interleaved with the
    /// events: first what the server buffered since each current attempt started, then new
    /// output. Ephemeral: never in the history; a delta's `offset` past what was yielded
    /// means text was not kept (the server's buffer keeps the last 64 KiB per activity), a
    /// new `attempt` starts again at 0. Live output reaches the server node the worker talks
    /// to only: watch through that node to see it.
    pub fn watch_live(
        &self,
        run_id: &str,
        after_seq: u64,
    ) -> impl Stream<Item = Result<pb::WatchRunResponse, Error>> + Send + 'static {
        self.watch_with(run_id, after_seq, true)
    }

    fn watch_with(
        &self,
        run_id: &str,
        after_seq: u64,
        deltas: bool,
    ) -> impl Stream<Item = Result<pb::WatchRunResponse, Error>> + Send + 'static {
        let state = WatchState {
            client: self.clone(),
            run_id: run_id.to_owned(),
            after_seq,
            stream: None,
            done: false,
            backoff: Backoff::default(),
            deltas,
            shown: HashMap::new(),
        };
        futures::stream::unfold(state, |mut st| async move {
            loop {
                if st.done {
                    return None;
                }
                if st.stream.is_none() {
                    let req = pb::WatchRunRequest {
                        namespace: st.client.namespace().to_owned(),
                        run_id: st.run_id.clone(),
                        after_seq: st.after_seq,
                        include_deltas: st.deltas,
                    };
                    match st.client.service().watch_run(req).await {
                        Ok(resp) => st.stream = Some(resp.into_inner()),
                        Err(s) => {
                            let e = Error::from(s);
                            if !retry_later(&mut st, &e).await {
                                st.done = true;
                                return Some((Err(e), st));
                            }
                            continue;
                        }
                    }
                }
                let Some(stream) = st.stream.as_mut() else {
                    continue;
                };
                match stream.message().await {
                    Ok(Some(mut msg)) => {
                        st.backoff.reset();
                        if let Some(d) = msg.delta.take() {
                            match unseen(&mut st.shown, d) {
                                Some(d) => msg.delta = Some(d),
                                None => continue,
                            }
                        }
                        if let Some(ev) = &msg.event {
                            if ev.seq <= st.after_seq {
                                continue;
                            }
                            st.after_seq = ev.seq;
                            st.done = is_terminal(ev);
                        }
                        return Some((Ok(msg), st));
                    }
                    // Ended before a terminal event: the run closed before `after_seq` (the
                    // server ends the stream once a closed run has nothing more to send), or
                    // the server went away. Ask which; resume in the second case.
                    Ok(None) => {
                        st.stream = None;
                        match st.client.describe(&st.run_id).await {
                            Ok(run)
                                if !matches!(
                                    run.status(),
                                    pb::RunStatus::Running | pb::RunStatus::Unspecified
                                ) && st.after_seq >= run.history_length =>
                            {
                                return None;
                            }
                            Ok(_) => {}
                            Err(e) => {
                                if !retry_later(&mut st, &e).await {
                                    st.done = true;
                                    return Some((Err(e), st));
                                }
                            }
                        }
                    }
                    Err(s) => {
                        st.stream = None;
                        let e = Error::from(s);
                        if !retry_later(&mut st, &e).await {
                            st.done = true;
                            return Some((Err(e), st));
                        }
                    }
                }
            }
        })
    }
}

/// The part of `d` not yielded yet (`None`: all of it was, or it is an older attempt's).
fn unseen(
    shown: &mut HashMap<u32, (u32, u64)>,
    mut d: pb::ActivityDelta,
) -> Option<pb::ActivityDelta> {
    let entry = shown.entry(d.activity_id).or_insert((d.attempt, 0));
    if d.attempt < entry.0 {
        return None;
    }
    if d.attempt > entry.0 {
        *entry = (d.attempt, 0);
    }
    let end = d.offset.checked_add(d.text.len() as u64)?;
    if end <= entry.1 {
        return None;
    }
    if d.offset < entry.1 {
        let skip = usize::try_from(entry.1 - d.offset).ok()?;
        if !d.text.is_char_boundary(skip) {
            return None;
        }
        d.text.drain(..skip);
        d.offset = entry.1;
    }
    entry.1 = end;
    Some(d)
}

/// Sleeps before a reconnect when `e` is worth one; false when the watch should end.
async fn retry_later(st: &mut WatchState, e: &Error) -> bool {
    if !e.is_retryable() || st.backoff.failures() >= WATCH_RECONNECTS_MAX {
        return false;
    }
    tokio::time::sleep(st.backoff.next_delay()).await;
    true
}
