//! Store errors from the log's and sled's, naming the run and seq where the read models can.

use crate::embedded::{codec, keys};
use crate::ids::RunKey;
use crate::log;
use crate::store::Error;

pub(crate) fn log_err(e: log::Error) -> Error {
    match e {
        log::Error::Corrupt { .. } => Error::Corrupt {
            run: None,
            seq: None,
            detail: e.to_string(),
        },
        // An append whose record exceeds what one log batch holds: a request too large.
        log::Error::RecordTooLarge { .. } => Error::Invalid(e.to_string()),
        e => Error::Unavailable(e.to_string()),
    }
}

/// [`log_err`], naming the run and seq of the damaged record when the read models know
/// which event sat at that lsn (a best-effort scan: this is the error path).
pub(crate) fn log_err_named(db: &sled::Db, e: log::Error) -> Error {
    let lsn = match &e {
        log::Error::Corrupt { lsn: Some(l), .. } => *l,
        _ => return log_err(e),
    };
    match event_at_lsn(db, lsn) {
        Some((run, seq)) => Error::Corrupt {
            run: Some(run),
            seq: Some(seq),
            detail: format!("{e} (the record holds this run's events from seq {seq})"),
        },
        None => log_err(e),
    }
}

/// The run and seq of the event the log holds at `lsn`, if sled indexed it.
fn event_at_lsn(db: &sled::Db, lsn: u64) -> Option<(RunKey, u64)> {
    for item in db.scan_prefix([keys::EVENT]) {
        let (k, v) = item.ok()?;
        let key = RunKey::from_bytes(k.get(1..k.len().checked_sub(8)?)?)?;
        let first_seq = keys::chunk_seq(&key.to_bytes(), &k)?;
        let Ok(chunk) = codec::decode_chunk(&key, first_seq, &v) else {
            continue;
        };
        if let Some((_, r)) = chunk.recs.iter().find(|(l, _)| *l == lsn) {
            return Some((key, r.seq));
        }
    }
    None
}

pub(crate) fn sled_err(e: sled::Error) -> Error {
    match e {
        sled::Error::Corruption { .. } | sled::Error::ReportableBug(_) => Error::Corrupt {
            run: None,
            seq: None,
            detail: format!("read models (sled): {e}"),
        },
        e => Error::Unavailable(format!("read models (sled): {e}")),
    }
}
