//! `history replay`: wire events -> engine records -> blake3 chain check -> state machine fold,
//! up to a chosen seq (time travel). Pure: the caller fetches the events (server or file).

use serde_json::{Value, json};
use steadfast_engine::RunKey;
use steadfast_engine::event::{self as ev, ChainError, Event, EventRecord, chain};
use steadfast_engine::payload::{BlobRef, Hash, INLINE_BYTES_MAX, Payload};
use steadfast_engine::state::{ActivityPhase, ApplyError, RunState};
use steadfast_proto::v1 as pb;

use super::fmt::{self, rfc3339_ms, rfc3339_s};
use super::render;
use crate::convert::{self, FromWireError};

/// Why a history does not replay. Every variant names the seq.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// There is nothing to replay.
    #[error("the history is empty")]
    Empty,
    /// `--until` is before the first event.
    #[error("--until {0} is before the first event (seq 1)")]
    UntilBeforeStart(u64),
    /// An event could not be turned back into an engine event.
    #[error("malformed history: {0}")]
    Convert(#[from] FromWireError),
    /// The chain does not verify (C2).
    #[error("{0}")]
    Chain(#[from] ChainError),
    /// The state machine refused an event.
    #[error("the state machine refused the history at {0}")]
    Apply(#[from] ApplyError),
}

/// A completed activity's result, as of the replayed seq.
#[derive(Debug, Clone)]
pub struct ActivityResult {
    /// Activity id (its command seq).
    pub activity_id: u32,
    /// Activity type, from its ActivityScheduled.
    pub activity_type: String,
    /// Seq of the ActivityCompleted.
    pub seq: u64,
    /// The attempt that produced it.
    pub attempt: u32,
    /// The result.
    pub result: Payload,
    /// LLM usage, if any.
    pub usage: Option<ev::Usage>,
}

/// The state of a run at one seq of its history.
#[derive(Debug, Clone)]
pub struct Replay {
    /// The state after the last replayed event.
    pub state: RunState,
    /// Time of the last replayed event: "now" for what the run waits on.
    pub at_ms: i64,
    /// Events available in the input (the replay may stop before, with `--until`).
    pub history_length: u64,
    /// Completed activities, in history order.
    pub results: Vec<ActivityResult>,
}

/// Replays `events` (seq 1.. in order) of the run `key` up to `until` (inclusive; all when
/// `None`), verifying the chain from the run's genesis on the way.
pub fn replay(
    key: &RunKey,
    events: &[pb::HistoryEvent],
    until: Option<u64>,
) -> Result<Replay, Error> {
    if until == Some(0) {
        return Err(Error::UntilBeforeStart(0));
    }
    let mut prev = chain::genesis_hash(key);
    let mut state: Option<RunState> = None;
    let mut types = std::collections::BTreeMap::new();
    let mut results = Vec::new();
    let mut at_ms = 0;
    for e in events {
        if until.is_some_and(|u| e.seq > u) {
            break;
        }
        let rec = convert::event_from(e)?;
        let expected = state.as_ref().map_or(1, |s| s.last_seq + 1);
        prev = verify_one(key, &prev, expected, &rec, state.as_ref())?;
        match &mut state {
            None => state = Some(RunState::start(key.clone(), &rec)?),
            Some(s) => s.apply(&rec)?,
        }
        match &rec.event {
            Event::ActivityScheduled(a) => {
                types.insert(a.command_seq, a.activity_type.clone());
            }
            Event::ActivityCompleted(a) => results.push(ActivityResult {
                activity_id: a.command_seq,
                activity_type: types.get(&a.command_seq).cloned().unwrap_or_default(),
                seq: rec.seq,
                attempt: a.attempt,
                result: a.result.clone(),
                usage: a.usage.clone(),
            }),
            _ => {}
        }
        at_ms = rec.time_ms;
    }
    let state = state.ok_or(Error::Empty)?;
    Ok(Replay {
        state,
        at_ms,
        history_length: events.len() as u64,
        results,
    })
}

/// A whole history from the wire (a bundle), as it was appended: every record's chain
/// verified from `key`'s genesis and folded by the state machine. Payloads stay inline (the
/// store that takes them keeps large ones as blobs again, by the same hash); a RunTimedOut
/// gets back the run timeout the wire leaves out. Returns the records and the final state.
pub fn records_of(
    key: &RunKey,
    events: &[pb::HistoryEvent],
) -> Result<(Vec<EventRecord>, RunState), Error> {
    let mut prev = chain::genesis_hash(key);
    let mut state: Option<RunState> = None;
    let mut records = Vec::with_capacity(events.len());
    for e in events {
        let mut rec = convert::event_from(e)?;
        let expected = state.as_ref().map_or(1, |s| s.last_seq + 1);
        prev = verify_one(key, &prev, expected, &rec, state.as_ref())?;
        if let (Event::RunTimedOut(_), Some(s)) = (&rec.event, state.as_ref()) {
            rec.event = Event::RunTimedOut(ev::RunTimedOut {
                run_timeout_ms: s.run_timeout_ms,
            });
        }
        match &mut state {
            None => state = Some(RunState::start(key.clone(), &rec)?),
            Some(s) => s.apply(&rec)?,
        }
        records.push(rec);
    }
    let state = state.ok_or(Error::Empty)?;
    Ok((records, state))
}

/// Verifies one record against its predecessor's hash; returns its hash.
///
/// The hash covers the attributes as the store wrote them, and the wire carries a rebuilt
/// form; two known differences are tried before a break is declared: payloads the store
/// keeps as blobs (by hash and length, not inline), and a RunTimedOut whose run timeout the
/// wire does not carry (it is the RunStarted's). Each is a pure function of the wire content,
/// so a match still proves the content.
fn verify_one(
    key: &RunKey,
    prev: &Hash,
    expected: u64,
    rec: &EventRecord,
    state: Option<&RunState>,
) -> Result<Hash, ChainError> {
    let first = match chain::verify(key, *prev, expected, std::slice::from_ref(rec)) {
        Err(ChainError::Hash { .. }) => ChainError::Hash {
            run: key.clone(),
            seq: rec.seq,
        },
        other => return other,
    };
    let mut variants = Vec::new();
    let mut blobbed = rec.clone();
    let mut changed = false;
    for p in blobbed.event.payloads_mut() {
        if p.blob.is_none() && p.data.len() > INLINE_BYTES_MAX {
            p.blob = Some(BlobRef {
                hash: *blake3::hash(&p.data).as_bytes(),
                len: p.data.len() as u64,
            });
            p.data = Vec::new();
            changed = true;
        }
    }
    if changed {
        variants.push(blobbed);
    }
    if let (Event::RunTimedOut(_), Some(s)) = (&rec.event, state) {
        let mut r = rec.clone();
        r.event = Event::RunTimedOut(ev::RunTimedOut {
            run_timeout_ms: s.run_timeout_ms,
        });
        variants.push(r);
    }
    for v in &variants {
        if let Ok(h) = chain::verify(key, *prev, expected, std::slice::from_ref(v)) {
            return Ok(h);
        }
    }
    Err(first)
}

fn phase_json(a: &steadfast_engine::state::ActivityState, at_ms: i64) -> Value {
    match &a.phase {
        ActivityPhase::Ready { visible_ms } if *visible_ms > at_ms => {
            json!({ "state": "backoff", "next_attempt_at": rfc3339_ms(*visible_ms) })
        }
        ActivityPhase::Ready { .. } => json!({ "state": "scheduled" }),
        ActivityPhase::Started {
            since_ms, worker, ..
        } => {
            json!({ "state": "running", "since": rfc3339_ms(*since_ms), "worker": worker })
        }
        ActivityPhase::OutcomeUnknown { since_ms } => {
            json!({ "state": "outcome_unknown", "since": rfc3339_ms(*since_ms) })
        }
        ActivityPhase::AwaitingApproval { since_ms, .. } => {
            json!({ "state": "awaiting_approval", "since": rfc3339_ms(*since_ms) })
        }
    }
}

impl Replay {
    /// The state in the wire's RunInfo shape (what `run show` prints), as of the replayed seq.
    pub fn run_info(&self) -> pb::RunInfo {
        let mut info = convert::run_info(&self.state, self.at_ms, self.state.result.clone());
        if self.state.is_open() {
            info.result = self.state.partial_result.as_ref().map(convert::payload);
        }
        info
    }

    /// The report as JSON: the `run show --json` fields plus `seq`, `time`, `chain`,
    /// `activities`, `timers`, `results` and `partial_result`.
    pub fn to_json(&self) -> Value {
        let s = &self.state;
        let mut v = render::run_json(&self.run_info());
        let obj = v.as_object_mut().expect("run_json is an object");
        obj.insert("seq".into(), s.last_seq.into());
        obj.insert("time".into(), rfc3339_ms(self.at_ms).into());
        obj.insert(
            "chain".into(),
            json!({ "verified_through": s.last_seq, "last_hash": hex::encode(s.last_hash) }),
        );
        let activities: Vec<Value> = s
            .activities
            .iter()
            .map(|(id, a)| {
                let mut o = json!({
                    "activity_id": id, "activity_type": a.activity_type, "attempt": a.attempt,
                    "scheduled": rfc3339_ms(a.scheduled_ms), "scheduled_seq": a.scheduled_seq,
                    "last_failure": a.last_failure.as_ref().map(|f| render::failure_json(&convert::failure(f))),
                    "cancel_requested": a.cancel_requested,
                });
                if let (Some(o), Value::Object(p)) = (o.as_object_mut(), phase_json(a, self.at_ms)) {
                    o.extend(p);
                }
                o
            })
            .collect();
        obj.insert("activities".into(), activities.into());
        let timers: Vec<Value> = s
            .timers
            .iter()
            .map(|(id, at)| json!({ "timer_id": id, "fire_at": rfc3339_ms(*at) }))
            .collect();
        obj.insert("timers".into(), timers.into());
        obj.insert(
            "results".into(),
            self.results
                .iter()
                .map(result_json)
                .collect::<Vec<_>>()
                .into(),
        );
        obj.insert(
            "partial_result".into(),
            fmt::opt_payload_json(&s.partial_result.as_ref().map(convert::payload)),
        );
        v
    }

    /// The report for people.
    pub fn to_text(&self) -> String {
        let s = &self.state;
        let mut out = format!(
            "{:<15}seq {} ({}); {} events read, chain verified from genesis\n",
            "replayed to",
            s.last_seq,
            rfc3339_s(self.at_ms),
            self.history_length
        );
        out.push_str(&render::run_text(&self.run_info()));
        if !s.activities.is_empty() {
            out.push_str("pending activities\n");
            for (id, a) in &s.activities {
                let phase = phase_json(a, self.at_ms);
                let mut line = format!(
                    "  - #{id} {} attempt {} {}",
                    a.activity_type,
                    a.attempt,
                    phase["state"].as_str().unwrap_or("?")
                );
                if let Some(t) = phase.get("next_attempt_at").and_then(Value::as_str) {
                    line.push_str(&format!(" until {t}"));
                }
                if let Some(f) = &a.last_failure {
                    line.push_str(&format!(
                        " (last failure: {})",
                        render::failure_line(&convert::failure(f))
                    ));
                }
                out.push_str(&line);
                out.push('\n');
            }
        }
        if !s.timers.is_empty() {
            out.push_str("timers\n");
            for (id, at) in &s.timers {
                out.push_str(&format!("  - #{id} fires at {}\n", rfc3339_s(*at)));
            }
        }
        if !self.results.is_empty() {
            out.push_str("results so far\n");
            for r in &self.results {
                let p = convert::payload(&r.result);
                out.push_str(&format!(
                    "  - #{} {} (seq {}): {}\n",
                    r.activity_id,
                    r.activity_type,
                    r.seq,
                    fmt::payload_short(&p, 120)
                ));
            }
        }
        out
    }
}

fn result_json(r: &ActivityResult) -> Value {
    json!({
        "activity_id": r.activity_id, "activity_type": r.activity_type, "seq": r.seq, "attempt": r.attempt,
        "result": fmt::payload_json(&convert::payload(&r.result)),
        "usage": r.usage.as_ref().map(|u| json!({
            "input_tokens": u.input_tokens, "output_tokens": u.output_tokens, "cost_micros": u.cost_micros, "model": u.model,
        })),
    })
}

#[cfg(test)]
#[path = "replay_tests.rs"]
pub(super) mod tests;
