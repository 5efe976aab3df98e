//! Opening the store: recover the log, re-apply it to sled with every chain verified, refuse
//! what does not add up, and load the open runs into memory.
//!
//! What sled may be, relative to the log, after any crash: it holds everything up to the
//! log's checkpoint (a checkpoint fsyncs it first) and at most what the log holds (the
//! indexer writes only synced records). So: sled's `indexed_lsn` below the checkpoint means
//! sled lost data; above the log's end means the log lost acknowledged records. Both are
//! refused. In between, the log's records after the checkpoint are re-applied: those sled
//! already has must match it byte for byte, the others extend the run states.

use std::collections::{HashMap, VecDeque};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use parking_lot::Mutex;

use crate::embedded::codec::{
    KIND_APPEND, KIND_BLOB, KIND_DROP, Rec, decode_append_request, decode_blob, decode_chunk,
    decode_drop,
};
use crate::embedded::indexer::{Indexer, PrevSearch, StateWrite, write_chunks, write_states};
use crate::embedded::keys::{self, StoredState};
use crate::embedded::{
    EmbeddedOptions, EmbeddedStore, Head, Inner, LOG_DIR, OpenReport, RunHead, SLED_DIR, log_err,
    log_err_named, read, retention, sled_err,
};
use crate::event::genesis_hash;
use crate::ids::RunKey;
use crate::log::{Log, LogConfig, Record};
use crate::payload::Hash;
use crate::state::{RunState, RunStatus};
use crate::store::Error;
use crate::store::core::Core;

fn corrupt(run: Option<&RunKey>, seq: Option<u64>, detail: impl Into<String>) -> Error {
    Error::Corrupt {
        run: run.cloned(),
        seq,
        detail: detail.into(),
    }
}

pub(crate) fn open(
    dir: &Path,
    options: EmbeddedOptions,
) -> Result<(EmbeddedStore, OpenReport), Error> {
    let t0 = Instant::now();
    std::fs::create_dir_all(dir)
        .map_err(|e| Error::Unavailable(format!("create {}: {e}", dir.display())))?;
    let sled_dir = dir.join(SLED_DIR);
    let config = sled::Config::new()
        .path(&sled_dir)
        .cache_capacity(options.sled_cache_bytes)
        .flush_every_ms(options.sled_flush_every_ms)
        .segment_size(options.sled_segment_bytes);
    let mut log_config = LogConfig {
        segment_bytes: options.log_segment_bytes,
        max_batch_bytes: options.log_max_batch_bytes,
        ..LogConfig::new(dir.join(LOG_DIR))
    };
    if let Some(vfs) = &options.log_vfs {
        log_config.vfs = Arc::clone(vfs);
    }
    let (log, recovery) = match Log::open(log_config) {
        Ok(opened) => opened,
        // Damage the log finds at open: name the run and seq if the read models know which
        // event sat at the damaged lsn.
        Err(e) => {
            return Err(match open_sled(&config) {
                Ok(db) => log_err_named(&db, e),
                Err(_) => log_err(e),
            });
        }
    };
    if let Some(t) = &recovery.torn_tail {
        tracing::warn!(segment = %t.segment.display(), offset = t.offset, records = t.records_cut, "cut a torn log tail (never acknowledged)");
    }
    let log_end = recovery.last_lsn;
    let source = LogSource { log: &log };

    // sled is a cache of the log: whatever state it is in — stale, damaged, deleted — the
    // store opens with every durable record. First try to bring it up to date from where it
    // says it is; if anything in it does not add up, drop it and rebuild it from the log.
    let mut rebuilt = None;
    let (db, replayed, core, runs) = match open_sled(&config)
        .and_then(|db| catch_up(db, &source, log_end).map_err(Failure::into_error))
    {
        Ok(ok) => ok,
        Err(Error::Corrupt { run, seq, detail }) if !sled_outranks_log(&detail) => {
            tracing::warn!(run = ?run, seq, detail = %detail, "the read models (sled) do not match the log; rebuilding them from the log");
            rebuilt = Some(detail);
            wipe_sled(&sled_dir)?;
            let db = open_sled(&config)?;
            catch_up(db, &source, log_end).map_err(Failure::into_error)?
        }
        Err(e) => return Err(e),
    };
    super::search::backfill(&db)?;
    let runs_open = core.len() as u64;
    let (tx, rx) = super::index_queue::channel(super::indexer::INDEX_BATCH_OPS_MAX);
    let indexed = indexed_lsn(&db).map_err(Failure::into_error)?.unwrap_or(0);
    let schedules = super::schedules::Schedules::open(dir)?;
    let queue_builds = super::queue_builds::QueueBuilds::open(dir)?;
    let inner = Arc::new(Inner {
        dir: dir.to_path_buf(),
        schedules,
        queue_builds,
        options,
        log,
        db,
        head: Mutex::new(Head {
            core,
            runs,
            pending: Default::default(),
            pending_workflow_ids: HashMap::new(),
            requests: HashMap::new(),
            blobs: HashMap::new(),
            tx: Some(tx),
        }),
        backlog_bytes: AtomicU64::new(0),
        backlog_drained: tokio::sync::Notify::new(),
        failed: Mutex::new(None),
        records: AtomicU64::new(0),
        index: Default::default(),
    });
    let indexer = Indexer::new(Arc::clone(&inner), log_end.max(indexed));
    let handle = std::thread::Builder::new()
        .name("steadfast-indexer".into())
        .spawn(move || indexer.run(rx))
        .map_err(|e| Error::Unavailable(format!("spawn the indexer thread: {e}")))?;
    let report = OpenReport {
        records_replayed: replayed,
        torn_tail: recovery.torn_tail,
        runs_open,
        checkpoint_lsn: recovery.checkpoint_lsn,
        read_models_rebuilt: rebuilt,
        elapsed: t0.elapsed(),
    };
    inner.records.store(0, Ordering::Relaxed);
    tracing::info!(
        records_replayed = replayed,
        runs_open,
        rebuilt = report.read_models_rebuilt.is_some(),
        elapsed_ms = report.elapsed.as_millis() as u64,
        "embedded store open"
    );
    Ok((
        EmbeddedStore {
            inner,
            indexer: Mutex::new(Some(handle)),
        },
        report,
    ))
}

/// Why bringing sled up to date failed: its own damage (rebuild it) or the log's (refuse).
enum Failure {
    /// sled is damaged, stale in a way replay cannot fix, or does not match the log.
    Sled(Error),
    /// The log cannot give what is needed: nothing to rebuild from.
    Log(Error),
}

impl Failure {
    fn into_error(self) -> Error {
        match self {
            Failure::Sled(e) => e,
            Failure::Log(e) => match e {
                Error::Corrupt { run, seq, detail } => Error::Corrupt {
                    run,
                    seq,
                    detail: format!("{LOG_FAILURE_MARK}{detail}"),
                },
                e => e,
            },
        }
    }
}

/// Marks errors that rebuilding sled cannot fix (they come from the log).
const LOG_FAILURE_MARK: &str = "the log: ";

fn sled_outranks_log(detail: &str) -> bool {
    detail.starts_with(LOG_FAILURE_MARK)
}

/// Where replay reads the log from.
struct LogSource<'a> {
    log: &'a Log,
}

impl LogSource<'_> {
    /// Calls `f` with every durable log record from `from` on, in lsn order, each frame
    /// verified as it is read (bounded memory: the log streams).
    fn for_each(
        &self,
        db: &sled::Db,
        from: u64,
        mut f: impl FnMut(&Record) -> Result<(), Failure>,
    ) -> Result<(), Failure> {
        let first = self.log.first_lsn();
        if from < first {
            return Err(Failure::Log(corrupt(
                None,
                None,
                format!(
                    "the read models need the log from lsn {from}, but it holds records only from lsn {first} (a data directory written by a version that deleted checkpointed log segments: its read models cannot be rebuilt)"
                ),
            )));
        }
        let reader = self
            .log
            .read_from(from)
            .map_err(|e| Failure::Log(log_err(e)))?;
        for r in reader {
            let r = r.map_err(|e| Failure::Log(log_err_named(db, e)))?;
            f(&r)?;
        }
        Ok(())
    }
}

/// Brings `db` up to the log's end and loads the open runs, verifying each against its
/// chain. Any mismatch is [`Failure::Sled`].
fn catch_up(
    db: sled::Db,
    log: &LogSource<'_>,
    log_end: u64,
) -> Result<(sled::Db, u64, Core, HashMap<RunKey, RunHead>), Failure> {
    let indexed = match indexed_lsn(&db)? {
        Some(l) => l,
        // No marker: a new (or wiped) sled must be empty; anything else lost its marker.
        None if db.is_empty() => 0,
        None => {
            return Err(Failure::Sled(corrupt(
                None,
                None,
                "the read models (sled) hold data but no indexed lsn",
            )));
        }
    };
    if indexed > log_end {
        return Err(Failure::Log(lost_from_log(&db, log_end, indexed)));
    }
    let mut replay = Replay {
        db: &db,
        log: log.log,
        runs: HashMap::new(),
        batch: sled::Batch::default(),
        batch_records: 0,
        orphans: HashMap::new(),
    };
    let mut replayed = 0u64;
    log.for_each(&db, indexed + 1, |r| {
        replay.record(r).map_err(Failure::Sled)?;
        replayed += 1;
        if replay.batch_records >= REPLAY_FLUSH_EVENTS {
            replay.flush(r.lsn).map_err(Failure::Sled)?;
        }
        Ok(())
    })?;
    if let Some((key, (lsn, seq))) = replay.orphans.iter().min_by_key(|(_, (l, _))| *l) {
        let e = corrupt(
            Some(key),
            Some(*seq),
            format!(
                "the log continues a history at lsn {lsn} whose seq 1..{seq} is neither in the read models nor earlier in the log, and no drop record explains it"
            ),
        );
        // Replaying onto an existing sled, the start may be what sled lost: rebuild from the
        // whole log. From scratch, the log itself lacks it.
        return Err(if indexed > 0 {
            Failure::Sled(e)
        } else {
            Failure::Log(e)
        });
    }
    replay.flush(log_end.max(indexed)).map_err(Failure::Sled)?;

    let mut core = Core::new();
    let mut runs = HashMap::new();
    for item in db.scan_prefix([keys::OPEN]) {
        let (k, _) = item.map_err(|e| Failure::Sled(sled_err(e)))?;
        let key = RunKey::from_bytes(&k[1..]).ok_or_else(|| {
            Failure::Sled(corrupt(None, None, "malformed key in the open-runs index"))
        })?;
        let stored = read::load_verified(&db, &key)
            .map_err(Failure::Sled)?
            .ok_or_else(|| {
                Failure::Sled(corrupt(Some(&key), None, "an open run has no stored state"))
            })?;
        if !stored.state.is_open() {
            continue;
        }
        let state = Arc::new(stored.state);
        core.upsert(Arc::clone(&state));
        runs.insert(key, RunHead::new(state, stored.history_bytes));
    }
    core.expire_started_workflow_tasks();
    Ok((db, replayed, core, runs))
}

/// Deletes the whole sled directory (it is rebuilt from the log).
fn wipe_sled(sled_dir: &Path) -> Result<(), Error> {
    match std::fs::remove_dir_all(sled_dir) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(Error::Unavailable(format!(
            "remove the damaged read models at {}: {e}",
            sled_dir.display()
        ))),
    }
}

/// How long open waits for a previous handle of the same sled directory to let go of its
/// lock (sled 0.34 releases it from a background thread after the handle is dropped).
const SLED_LOCK_WAIT_MS: u64 = 5_000;

fn open_sled(config: &sled::Config) -> Result<sled::Db, Error> {
    let deadline = Instant::now() + std::time::Duration::from_millis(SLED_LOCK_WAIT_MS);
    loop {
        // sled 0.34 may panic on damaged files instead of answering an error.
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| config.open())).map_err(
            |_| {
                corrupt(
                    None,
                    None,
                    "the read models (sled) could not be opened: sled panicked on its files",
                )
            },
        )?;
        match r {
            Err(sled::Error::Io(e))
                if e.to_string().contains("could not acquire lock")
                    && Instant::now() < deadline =>
            {
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
            // Anything but an I/O error means sled cannot read its files.
            Err(e @ sled::Error::Io(_)) => return Err(sled_err(e)),
            Err(e) => {
                return Err(corrupt(
                    None,
                    None,
                    format!("the read models (sled) could not be opened: {e}"),
                ));
            }
            Ok(db) => return Ok(db),
        }
    }
}

/// sled's marker "every log record up to here is applied"; `None` when absent.
fn indexed_lsn(db: &sled::Db) -> Result<Option<u64>, Failure> {
    match db
        .get(keys::META_INDEXED_LSN)
        .map_err(|e| Failure::Sled(sled_err(e)))?
    {
        None => Ok(None),
        Some(v) => keys::decode_indexed_lsn(&v).map(Some).ok_or_else(|| {
            Failure::Sled(corrupt(
                None,
                None,
                "the indexed lsn of the read models fails its checksum",
            ))
        }),
    }
}

/// Names the first run and seq that sled holds beyond the log's end.
fn lost_from_log(db: &sled::Db, log_end: u64, indexed: u64) -> Error {
    let why = format!(
        "the log ends at lsn {log_end} but the read models hold records up to lsn {indexed}: acknowledged records were lost from the log (truncated or deleted segment?)"
    );
    let mut found: Option<(u64, RunKey, u64)> = None;
    for item in db.scan_prefix([keys::STATE]) {
        let Ok((k, v)) = item else { continue };
        let Some(key) = RunKey::from_bytes(&k[1..]) else {
            continue;
        };
        let Ok(stored) = keys::decode_state(&key, &v) else {
            continue;
        };
        if stored.lsn <= log_end {
            continue;
        }
        // Walk back through the run's chunks to its first event written after the log's end.
        let run = key.to_bytes();
        let mut first_lost = (stored.lsn, stored.state.last_seq);
        'chunks: for item in db
            .range(keys::chunk(&run, 0)..=keys::chunk(&run, u64::MAX))
            .rev()
        {
            let Ok((k, v)) = item else { break };
            let Some(first_seq) = keys::chunk_seq(&run, &k) else {
                break;
            };
            let Ok(chunk) = decode_chunk(&key, first_seq, &v) else {
                break;
            };
            for (lsn, rec) in chunk.recs.iter().rev() {
                if *lsn <= log_end {
                    break 'chunks;
                }
                first_lost = (*lsn, rec.seq);
            }
        }
        if found.as_ref().is_none_or(|(l, _, _)| first_lost.0 < *l) {
            found = Some((first_lost.0, key, first_lost.1));
        }
    }
    match found {
        Some((lsn, key, seq)) => corrupt(
            Some(&key),
            Some(seq),
            format!("{why}; this event was at lsn {lsn}"),
        ),
        None => corrupt(None, None, why),
    }
}

/// Sled records fetched ahead during replay, per run.
const REPLAY_PREFETCH_EVENTS: u64 = 256;
/// Events re-applied between two sled batches during replay (bounds memory of a rebuild).
const REPLAY_FLUSH_EVENTS: usize = 65_536;

/// One run during replay.
struct ReplayRun {
    state: Option<RunState>,
    /// Status as sled had it before replay (`None`: sled did not know the run).
    prev_status: Option<RunStatus>,
    /// Search index entries as sled had them before replay (`None`: sled did not know the
    /// run).
    prev_search: Option<Vec<Vec<u8>>>,
    history_bytes: u64,
    lsn: u64,
    /// Hash of the last replayed record of this run.
    prev_hash: Option<Hash>,
    /// Records sled already holds, fetched ahead for comparison.
    sled: VecDeque<Rec>,
    /// Records sled does not hold yet, with their lsn, and the hash before the first.
    new: Vec<(u64, Rec)>,
    new_prev: Hash,
}

struct Replay<'a> {
    db: &'a sled::Db,
    /// For counting dropped runs' records per log segment.
    log: &'a Log,
    runs: HashMap<RunKey, ReplayRun>,
    batch: sled::Batch,
    /// Events added to `batch` since the last flush.
    batch_records: usize,
    /// Runs met mid-history with no earlier record: (lsn, seq) of the first record seen.
    /// Legal only for runs a later drop record names (compaction removed their start).
    orphans: HashMap<RunKey, (u64, u64)>,
}

impl Replay<'_> {
    fn record(&mut self, r: &Record) -> Result<(), Error> {
        match r.kind {
            KIND_BLOB => {
                let (addr, data) = decode_blob(&r.data)
                    .map_err(|e| corrupt(None, None, format!("log record lsn {}: {e}", r.lsn)))?;
                self.batch_records += 1 + data.len() / 1024;
                self.batch.insert(keys::blob(&addr), data);
                Ok(())
            }
            KIND_APPEND => self.append(r),
            KIND_DROP => {
                let dropped = decode_drop(&r.data)
                    .map_err(|e| corrupt(None, None, format!("log record lsn {}: {e}", r.lsn)))?;
                // Everything before the drop goes to sled first, then the runs leave it.
                self.flush(r.lsn - 1)?;
                let mut batch = sled::Batch::default();
                let mut dead = HashMap::new();
                for key in &dropped {
                    self.runs.remove(key);
                    self.orphans.remove(key);
                    let stored = load(self.db, key).ok().flatten();
                    retention::count_dead(self.db, self.log, key, &mut dead)?;
                    batch.insert(keys::dropped(&key.to_bytes()), &r.lsn.to_be_bytes());
                    retention::remove_run(self.db, &mut batch, key, stored.as_ref())?;
                }
                retention::add_dead(self.db, &mut batch, &dead)?;
                batch.insert(keys::META_INDEXED_LSN, &keys::indexed_lsn_value(r.lsn));
                self.db.apply_batch(batch).map_err(sled_err)
            }
            k => Err(corrupt(
                None,
                None,
                format!("log record lsn {} has unknown kind {k}", r.lsn),
            )),
        }
    }

    fn append(&mut self, r: &Record) -> Result<(), Error> {
        let lsn = r.lsn;
        let (key, recs, request) = decode_append_request(&r.data)
            .map_err(|e| corrupt(None, None, format!("log record lsn {lsn}: {e}")))?;
        // The deduplication index is rebuilt with the records (idempotent if sled has it).
        if let (Some(q), Some(first)) = (&request, recs.first()) {
            let hit = keys::RequestHit {
                run_id: key.run_id,
                seq: first.seq,
                time_ms: first.time_ms,
            };
            self.batch.insert(
                keys::request(&key.namespace, q),
                &keys::request_value(&hit)[..],
            );
        }
        if self.orphans.contains_key(&key) {
            return Ok(());
        }
        if !self.runs.contains_key(&key) {
            let loaded = load(self.db, &key)?;
            // A run retention dropped whose first records compaction already removed: its
            // remaining records are skipped until the drop record (later in the log) names
            // it. If none does, the history really lost its start (checked at the end).
            if loaded.is_none() && recs.first().is_some_and(|r| r.seq != 1) {
                let seq = recs.first().map_or(0, |r| r.seq);
                self.orphans.insert(key, (lsn, seq));
                return Ok(());
            }
            let prev_status = loaded.as_ref().map(|s| s.state.status);
            let prev_search = loaded.as_ref().map(|s| keys::search_keys(&s.state));
            let (state, history_bytes) =
                loaded.map_or((None, 0), |s| (Some(s.state), s.history_bytes));
            let run = ReplayRun {
                state,
                prev_status,
                prev_search,
                history_bytes,
                lsn,
                prev_hash: None,
                sled: VecDeque::new(),
                new: Vec::new(),
                new_prev: [0; 32],
            };
            self.runs.insert(key.clone(), run);
        }
        let Some(run) = self.runs.get_mut(&key) else {
            return Ok(());
        };
        for rec in recs {
            let seq = rec.seq;
            let bad = |detail: String| corrupt(Some(&key), Some(seq), detail);
            let record = rec
                .to_record()
                .map_err(|e| bad(format!("log record lsn {lsn}: {e}")))?;
            let applied = match &mut run.state {
                None => {
                    if seq != 1 {
                        return Err(bad(format!(
                            "the log continues a history whose seq 1..{seq} the read models do not have"
                        )));
                    }
                    let genesis = genesis_hash(&key);
                    if !rec.verifies_after(&genesis) {
                        return Err(bad("[STF-C2-HASH] the hash chain does not verify".into()));
                    }
                    run.state = Some(
                        RunState::start(key.clone(), &record).map_err(|e| bad(e.to_string()))?,
                    );
                    run.new_prev = genesis;
                    true
                }
                Some(s) if seq <= s.last_seq => {
                    // sled indexed it before the crash: it must hold exactly this record.
                    if run.sled.front().is_none_or(|r| r.seq != seq) {
                        let hi = s.last_seq.min(seq + REPLAY_PREFETCH_EVENTS);
                        let (prev, got) = read::sled_records(self.db, &key, seq, hi)?;
                        run.prev_hash.get_or_insert(prev);
                        run.sled = got.into();
                    }
                    let stored = run.sled.pop_front();
                    if stored.as_ref() != Some(&rec) {
                        return Err(bad(format!(
                            "the read models and the log (lsn {lsn}) disagree on this event"
                        )));
                    }
                    let prev = run.prev_hash.unwrap_or_else(|| genesis_hash(&key));
                    if !rec.verifies_after(&prev) {
                        return Err(bad("[STF-C2-HASH] the hash chain does not verify".into()));
                    }
                    false
                }
                Some(s) if seq == s.last_seq + 1 => {
                    if !rec.verifies_after(&s.last_hash) {
                        return Err(bad("[STF-C2-HASH] the hash chain does not verify".into()));
                    }
                    if run.new.is_empty() {
                        run.new_prev = s.last_hash;
                    }
                    s.apply(&record)
                        .map_err(|e| bad(format!("the event does not apply: {e}")))?;
                    true
                }
                Some(s) => {
                    return Err(corrupt(
                        Some(&key),
                        Some(s.last_seq + 1),
                        "the event is missing from both the log and the read models",
                    ));
                }
            };
            run.prev_hash = Some(rec.hash);
            run.lsn = lsn;
            if applied {
                let mut event = record.event;
                let blobs: u64 = event
                    .payloads_mut()
                    .iter()
                    .filter_map(|p| p.blob.map(|b| b.len))
                    .sum();
                run.history_bytes += rec.attrs.len() as u64 + blobs;
                run.new.push((lsn, rec));
                self.batch_records += 1;
            }
        }
        Ok(())
    }

    /// Writes the re-applied records, the changed states and their indexes, and the indexed
    /// lsn, in one atomic batch; then forgets what it wrote (closed runs entirely), so that a
    /// rebuild of any size runs in bounded memory and a crash midway resumes from here.
    fn flush(&mut self, indexed_lsn: u64) -> Result<(), Error> {
        let mut batch = std::mem::take(&mut self.batch);
        self.batch_records = 0;
        let mut changed: Vec<(&RunKey, &ReplayRun)> = self
            .runs
            .iter()
            .filter(|(_, r)| !r.new.is_empty())
            .collect();
        changed.sort_by(|a, b| a.0.cmp(b.0));
        for (key, r) in &changed {
            let recs: Vec<(u64, &Rec)> = r.new.iter().map(|(l, rec)| (*l, rec)).collect();
            write_chunks(&mut batch, &key.to_bytes(), r.new_prev, &recs);
        }
        let writes: Vec<StateWrite<'_>> = changed
            .iter()
            .filter_map(|(_, r)| {
                r.state.as_ref().map(|s| StateWrite {
                    lsn: r.lsn,
                    state: s,
                    history_bytes: r.history_bytes,
                    prev_status: r.prev_status,
                    prev_search: match &r.prev_search {
                        Some(k) => PrevSearch::Keys(k.clone()),
                        None => PrevSearch::Unknown,
                    },
                })
            })
            .collect();
        write_states(&mut batch, &writes);
        batch.insert(
            keys::META_INDEXED_LSN,
            &keys::indexed_lsn_value(indexed_lsn),
        );
        self.db.apply_batch(batch).map_err(sled_err)?;
        self.runs.retain(|_, r| {
            r.new.clear();
            r.prev_status = r.state.as_ref().map(|s| s.status);
            r.prev_search = r.state.as_ref().map(keys::search_keys);
            r.state.as_ref().is_some_and(|s| s.is_open())
        });
        Ok(())
    }
}

fn load(db: &sled::Db, key: &RunKey) -> Result<Option<StoredState>, Error> {
    read::load_verified(db, key)
}
