//! Nodes wake each other with LISTEN/NOTIFY, off the write path.
//!
//! NOTIFY takes a global lock at commit, so it is never part of an append's transaction: after
//! a commit, the append hands its changes (queues that got a task, the run's new last seq,
//! "timers") to a background task, which coalesces everything pending into as few
//! `SELECT pg_notify(...)` calls as fit PostgreSQL's payload limit (one, usually) and sends
//! them on a pooled connection. Another task holds a dedicated connection that LISTENs and
//! feeds a broadcast channel ([`steadfast_engine::store::Store::changes`]); it reconnects with
//! a bounded backoff. Best effort by contract: a change lost (a node crashing between commit
//! and notify, a listener reconnecting) costs a poll interval, never an outcome.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use futures::StreamExt;
use steadfast_engine::store::{Change, TaskKind};
use tokio::sync::{broadcast, mpsc};
use tokio::task::JoinHandle;
use tokio_postgres::AsyncMessage;

use crate::codec;
use crate::live::{self, LIVE_CHANNEL, LIVE_SENDS_MAX};

/// The channel every node listens on.
pub const CHANNEL: &str = "steadfast_changes";
/// Largest payload sent in one NOTIFY (PostgreSQL refuses 8000 bytes and more).
const PAYLOAD_BYTES_MAX: usize = 7_000;
/// Changes buffered for slow subscribers of [`Notifier::subscribe`].
const BROADCAST_CAPACITY: usize = 4_096;
/// Longest wait between two attempts to reconnect the listener.
const RECONNECT_MAX: Duration = Duration::from_secs(5);

pub(crate) struct Notifier {
    outbox: Option<mpsc::UnboundedSender<Vec<Change>>>,
    changes: Option<broadcast::Sender<Change>>,
    tasks: parking_lot::Mutex<Vec<JoinHandle<()>>>,
    /// Where live output is relayed from ([`Notifier::relay_live`]); `None` when disabled.
    live: Option<LiveRelay>,
}

struct LiveRelay {
    pool: deadpool_postgres::Pool,
    instance: String,
    sends: tokio::sync::Semaphore,
}

impl Notifier {
    pub(crate) fn start(
        config: tokio_postgres::Config,
        pool: deadpool_postgres::Pool,
        enabled: bool,
    ) -> Notifier {
        let instance = uuid::Uuid::now_v7().simple().to_string();
        if !enabled {
            return Notifier {
                outbox: None,
                changes: None,
                tasks: Default::default(),
                live: None,
            };
        }
        let (outbox, rx) = mpsc::unbounded_channel();
        let (changes, _) = broadcast::channel(BROADCAST_CAPACITY);
        let sender = tokio::spawn(send_loop(pool.clone(), instance.clone(), rx));
        let listener = tokio::spawn(listen_loop(config, instance.clone(), changes.clone()));
        Notifier {
            outbox: Some(outbox),
            changes: Some(changes),
            tasks: parking_lot::Mutex::new(vec![sender, listener]),
            live: Some(LiveRelay {
                pool,
                instance,
                sends: tokio::sync::Semaphore::new(LIVE_SENDS_MAX),
            }),
        }
    }

    /// Sends live output to the other nodes, in order, and returns once it is sent (see
    /// [`crate::live`]). Failures are logged (sizes only: the text is a payload).
    pub(crate) async fn relay_live(&self, pieces: &[steadfast_engine::store::LiveText]) {
        let Some(relay) = &self.live else { return };
        if pieces.is_empty() {
            return;
        }
        let payloads = live::payloads(&relay.instance, pieces);
        let Ok(_permit) = relay.sends.acquire().await else {
            return;
        };
        let client = match relay.pool.get().await {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(error = %e, "cannot relay live output: no connection");
                return;
            }
        };
        for p in &payloads {
            if let Err(e) = client
                .execute("SELECT pg_notify($1, $2)", &[&LIVE_CHANNEL, p])
                .await
            {
                tracing::warn!(error = %e, bytes = p.len(), "cannot relay live output");
                return;
            }
        }
    }

    /// Queues changes to announce to the other nodes (never blocks).
    pub(crate) fn announce(&self, changes: Vec<Change>) {
        if let Some(o) = &self.outbox
            && !changes.is_empty()
        {
            let _ = o.send(changes);
        }
    }

    pub(crate) fn subscribe(&self) -> Option<broadcast::Receiver<Change>> {
        self.changes.as_ref().map(broadcast::Sender::subscribe)
    }

    pub(crate) async fn stop(&self) {
        let tasks = std::mem::take(&mut *self.tasks.lock());
        for t in &tasks {
            t.abort();
        }
        for t in tasks {
            let _ = t.await;
        }
    }
}

impl Drop for Notifier {
    fn drop(&mut self) {
        for t in self.tasks.lock().iter() {
            t.abort();
        }
    }
}

/// Coalesced pending changes: each queue and run once (a run at its highest seq).
#[derive(Default)]
struct Pending {
    queues: BTreeSet<(String, String, i16)>,
    runs: BTreeMap<(String, uuid::Uuid), u64>,
    timers: bool,
}

impl Pending {
    fn add(&mut self, c: Change) {
        match c {
            Change::TaskReady {
                namespace,
                queue,
                kind,
            } => {
                self.queues
                    .insert((namespace, queue, codec::kind_code(kind)));
            }
            Change::RunChanged { key, last_seq } => {
                let e = self.runs.entry((key.namespace, key.run_id.0)).or_default();
                *e = (*e).max(last_seq);
            }
            Change::Timers => self.timers = true,
            // Relayed on a channel of its own (`Notifier::relay_live`), never coalesced here.
            Change::Live(_) => {}
        }
    }

    /// JSON payloads of at most [`PAYLOAD_BYTES_MAX`] bytes: `{"from": id, "c": [...]}` with
    /// `["q", ns, queue, kind]`, `["r", ns, run_id, last_seq]`, `["t"]`.
    fn payloads(self, from: &str) -> Vec<String> {
        let mut items: Vec<serde_json::Value> = Vec::new();
        if self.timers {
            items.push(serde_json::json!(["t"]));
        }
        for (ns, q, k) in self.queues {
            items.push(serde_json::json!(["q", ns, q, k]));
        }
        for ((ns, run), seq) in self.runs {
            items.push(serde_json::json!(["r", ns, run.to_string(), seq]));
        }
        let mut out = Vec::new();
        let mut batch: Vec<serde_json::Value> = Vec::new();
        let mut size = 0;
        for it in items {
            let n = it.to_string().len() + 1;
            if !batch.is_empty() && size + n > PAYLOAD_BYTES_MAX - 64 {
                out.push(serde_json::json!({"from": from, "c": batch}).to_string());
                batch = Vec::new();
                size = 0;
            }
            // A single item larger than a payload (a huge queue name) is dropped: best effort.
            if n <= PAYLOAD_BYTES_MAX - 64 {
                size += n;
                batch.push(it);
            }
        }
        if !batch.is_empty() {
            out.push(serde_json::json!({"from": from, "c": batch}).to_string());
        }
        out
    }
}

/// Decodes a payload; `None` for our own or a malformed one.
fn decode(payload: &str, own: &str) -> Option<Vec<Change>> {
    let v: serde_json::Value = serde_json::from_str(payload).ok()?;
    if v.get("from")?.as_str()? == own {
        return None;
    }
    let mut out = Vec::new();
    for it in v.get("c")?.as_array()? {
        let a = it.as_array()?;
        let s = |i: usize| a.get(i).and_then(|x| x.as_str()).map(str::to_string);
        match a.first()?.as_str()? {
            "t" => out.push(Change::Timers),
            "q" => out.push(Change::TaskReady {
                namespace: s(1)?,
                queue: s(2)?,
                kind: if a.get(3)?.as_i64()? == 0 {
                    TaskKind::Workflow
                } else {
                    TaskKind::Activity
                },
            }),
            "r" => out.push(Change::RunChanged {
                key: codec::run_key(s(1)?, s(2)?.parse().ok()?),
                last_seq: a.get(3)?.as_u64()?,
            }),
            _ => {}
        }
    }
    Some(out)
}

async fn send_loop(
    pool: deadpool_postgres::Pool,
    instance: String,
    mut rx: mpsc::UnboundedReceiver<Vec<Change>>,
) {
    while let Some(first) = rx.recv().await {
        let mut pending = Pending::default();
        first.into_iter().for_each(|c| pending.add(c));
        // Everything that queued up while the previous batch was being sent goes in this one.
        while let Ok(more) = rx.try_recv() {
            more.into_iter().for_each(|c| pending.add(c));
        }
        let payloads = pending.payloads(&instance);
        let client = match pool.get().await {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(error = %e, "cannot notify other nodes: no connection");
                continue;
            }
        };
        let sent = futures::future::try_join_all(payloads.iter().map(|p| {
            let client = &client;
            async move {
                client
                    .execute("SELECT pg_notify($1, $2)", &[&CHANNEL, p])
                    .await
            }
        }))
        .await;
        if let Err(e) = sent {
            tracing::warn!(error = %e, "cannot notify other nodes");
        }
    }
}

async fn listen_loop(
    config: tokio_postgres::Config,
    instance: String,
    changes: broadcast::Sender<Change>,
) {
    let mut backoff = Duration::from_millis(50);
    loop {
        match listen_once(&config, &instance, &changes).await {
            Ok(()) => backoff = Duration::from_millis(50),
            Err(e) => tracing::warn!(error = %e, "the LISTEN connection failed; reconnecting"),
        }
        // Whatever was announced while we were away is lost: let the timer loop and pollers
        // look again.
        let _ = changes.send(Change::Timers);
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(RECONNECT_MAX);
    }
}

async fn listen_once(
    config: &tokio_postgres::Config,
    instance: &str,
    changes: &broadcast::Sender<Change>,
) -> Result<(), tokio_postgres::Error> {
    let (client, mut conn) = config.connect(tokio_postgres::NoTls).await?;
    let (tx, mut rx) = mpsc::unbounded_channel();
    let driver = tokio::spawn(async move {
        let mut stream = futures::stream::poll_fn(move |cx| conn.poll_message(cx));
        while let Some(m) = stream.next().await {
            match m {
                Ok(AsyncMessage::Notification(n)) => {
                    let live = n.channel() == LIVE_CHANNEL;
                    if tx.send((live, n.payload().to_string())).is_err() {
                        break;
                    }
                }
                Ok(_) => {}
                Err(e) => {
                    tracing::warn!(error = %e, "the LISTEN connection broke");
                    break;
                }
            }
        }
    });
    client
        .batch_execute(&format!("LISTEN {CHANNEL}; LISTEN {LIVE_CHANNEL}"))
        .await?;
    while let Some((is_live, p)) = rx.recv().await {
        // One channel into `changes`, in the order they came: text a worker published before
        // an outcome reaches this node's watchers before the outcome's change.
        if is_live {
            for t in live::decode(&p, instance).unwrap_or_default() {
                let _ = changes.send(Change::Live(t));
            }
        } else if let Some(cs) = decode(&p, instance) {
            for c in cs {
                let _ = changes.send(c);
            }
        }
    }
    driver.abort();
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use steadfast_engine::ids::{RunId, RunKey};

    #[test]
    fn payloads_coalesce_split_and_decode() {
        let key = RunKey::new("ns", RunId::new_v7());
        let mut p = Pending::default();
        for seq in [3, 7, 5] {
            p.add(Change::RunChanged {
                key: key.clone(),
                last_seq: seq,
            });
        }
        for _ in 0..2 {
            p.add(Change::TaskReady {
                namespace: "ns".into(),
                queue: "q".into(),
                kind: TaskKind::Activity,
            });
            p.add(Change::Timers);
        }
        let payloads = p.payloads("a");
        assert_eq!(payloads.len(), 1);
        assert_eq!(decode(&payloads[0], "a"), None, "our own is ignored");
        assert_eq!(
            decode(&payloads[0], "b").unwrap(),
            vec![
                Change::Timers,
                Change::TaskReady {
                    namespace: "ns".into(),
                    queue: "q".into(),
                    kind: TaskKind::Activity
                },
                Change::RunChanged { key, last_seq: 7 },
            ]
        );
        let mut p = Pending::default();
        for i in 0..500 {
            p.add(Change::TaskReady {
                namespace: "ns".into(),
                queue: format!("queue-{i:04}"),
                kind: TaskKind::Workflow,
            });
        }
        let payloads = p.payloads("a");
        assert!(payloads.len() > 1);
        assert!(payloads.iter().all(|p| p.len() < PAYLOAD_BYTES_MAX));
        let n: usize = payloads.iter().map(|p| decode(p, "b").unwrap().len()).sum();
        assert_eq!(n, 500);
    }
}
