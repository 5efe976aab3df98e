//! `Store::verify_history` for the embedded store: the run's records are read back from the
//! log, the record, not from sled's copy (which reads serve and which repairs itself from the
//! log, so checking it would only prove the repair works).
//!
//! Cost: one pass over the log per run (the log has no per-run index), the same as a rebuild.
//! Verification is an operator's tool (`steadfast history verify`), not a hot path.

use std::sync::Arc;

use crate::embedded::Inner;
use crate::embedded::codec::{
    KIND_APPEND, KIND_DROP, Rec, append_run_key, decode_append_request, decode_drop,
};
use crate::event::genesis_hash;
use crate::ids::RunKey;
use crate::payload::Hash;
use crate::store::{Error, VerifiedHistory};

fn corrupt(key: &RunKey, seq: u64, detail: impl Into<String>) -> Error {
    Error::Corrupt {
        run: Some(key.clone()),
        seq: Some(seq),
        detail: detail.into(),
    }
}

/// Verifies `key`'s history in the log up to `last_seq`, which must end with `last_hash`
/// (what the run's durable state says).
pub(crate) async fn verify_in_log(
    inner: &Arc<Inner>,
    key: &RunKey,
    last_seq: u64,
    last_hash: Hash,
) -> Result<VerifiedHistory, Error> {
    let inner = Arc::clone(inner);
    let key = key.clone();
    tokio::task::spawn_blocking(move || {
        let recs = collect(&inner, &key, last_seq)?;
        check_chain(&key, &recs, last_seq, last_hash)
    })
    .await
    .map_err(|e| Error::Unavailable(format!("the verification task stopped: {e}")))?
}

/// The run's records in the log, in order, up to `last_seq` (later ones may be appended while
/// the scan runs; the state read before it is what is checked).
fn collect(inner: &Inner, key: &RunKey, last_seq: u64) -> Result<Vec<Rec>, Error> {
    let run = key.to_bytes();
    let mut recs: Vec<Rec> = Vec::new();
    inner.scan_log(1, &mut |r| {
        if r.kind == KIND_DROP {
            let keys = decode_drop(&r.data).map_err(|e| Error::Corrupt {
                run: None,
                seq: None,
                detail: format!("log record lsn {}: {e}", r.lsn),
            })?;
            if keys.contains(key) {
                recs.clear();
            }
            return Ok(());
        }
        if r.kind != KIND_APPEND || append_run_key(&r.data) != Some(&run[..]) {
            return Ok(());
        }
        let next = recs.last().map_or(1, |x| x.seq + 1);
        let (_, got, _) = decode_append_request(&r.data)
            .map_err(|e| corrupt(key, next, format!("log record lsn {}: {e}", r.lsn)))?;
        recs.extend(got.into_iter().filter(|x| x.seq <= last_seq));
        Ok(())
    })?;
    Ok(recs)
}

/// The chain check proper: gapless from 1, every record verifies after its predecessor (from
/// the genesis), its attributes decode, and the history ends at `last_seq` with `last_hash`.
pub(crate) fn check_chain(
    key: &RunKey,
    recs: &[Rec],
    last_seq: u64,
    last_hash: Hash,
) -> Result<VerifiedHistory, Error> {
    let mut prev = genesis_hash(key);
    for (expected, rec) in (1u64..).zip(recs) {
        if rec.seq != expected {
            return Err(corrupt(
                key,
                expected,
                format!(
                    "[STF-C2-GAP] the log holds seq {} where seq {expected} belongs",
                    rec.seq
                ),
            ));
        }
        if !rec.verifies_after(&prev) {
            return Err(corrupt(
                key,
                expected,
                "[STF-C2-HASH] the record does not verify after its predecessor: it was altered, or the one before it is missing",
            ));
        }
        rec.to_record().map_err(|e| corrupt(key, expected, e))?;
        prev = rec.hash;
    }
    let have = recs.len() as u64;
    if have < last_seq {
        return Err(corrupt(
            key,
            have + 1,
            format!(
                "[STF-C2-GAP] the log holds the history up to seq {have}; the run's state says it ends at seq {last_seq}"
            ),
        ));
    }
    if prev != last_hash {
        return Err(corrupt(
            key,
            last_seq,
            "[STF-C2-HASH] the log's chain does not end with the hash the run's state records",
        ));
    }
    Ok(VerifiedHistory {
        events: last_seq,
        last_hash: prev,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{Event, WorkflowTaskScheduled, record_hash};
    use crate::ids::RunId;

    fn chain(key: &RunKey, n: u64) -> Vec<Rec> {
        let mut prev = genesis_hash(key);
        (1..=n)
            .map(|seq| {
                let event = Event::WorkflowTaskScheduled(WorkflowTaskScheduled {
                    task_queue: "q".into(),
                    attempt: 1,
                    not_before_ms: 0,
                });
                let (kind, attrs) = (event.kind(), event.encode_attrs());
                let hash = record_hash(&prev, seq, 1_000 + seq as i64, kind, &attrs);
                prev = hash;
                Rec {
                    seq,
                    time_ms: 1_000 + seq as i64,
                    kind,
                    hash,
                    attrs,
                }
            })
            .collect()
    }

    fn bad_seq(r: Result<VerifiedHistory, Error>) -> u64 {
        match r {
            Err(Error::Corrupt { seq: Some(s), .. }) => s,
            other => panic!("expected corruption, got {other:?}"),
        }
    }

    #[test]
    fn names_the_first_bad_seq() {
        let key = RunKey::new("default", RunId::new_v7());
        let recs = chain(&key, 6);
        let end = recs[5].hash;
        assert_eq!(check_chain(&key, &recs, 6, end).unwrap().events, 6);

        let mut altered = recs.clone();
        altered[3].time_ms += 1;
        assert_eq!(bad_seq(check_chain(&key, &altered, 6, end)), 4);

        let mut gap = recs.clone();
        gap.remove(2);
        assert_eq!(bad_seq(check_chain(&key, &gap, 6, end)), 3);

        // A lost tail: the records verify but stop short of what the state says.
        assert_eq!(bad_seq(check_chain(&key, &recs[..4], 6, end)), 5);

        // Another run's genesis: the very first record does not verify.
        let other = RunKey::new("default", RunId::new_v7());
        assert_eq!(bad_seq(check_chain(&other, &recs, 6, end)), 1);
    }
}
