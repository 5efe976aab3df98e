//! The durable export cursor: per run whose spans are not all acknowledged, the seq up to
//! which the collector acknowledged them. An append-only file of JSON lines, compacted at
//! start:
//! - `["+", ns, run]` a run is tracked (acknowledged up to 0), written and synced before the
//!   run's first append in this process is acknowledged to its caller, so that a crash cannot
//!   lose a run whose spans were not sent;
//! - `["=", ns, run, seq]` acknowledged up to seq (not synced: losing it re-sends spans with
//!   the same ids, which collectors keep once);
//! - `["-", ns, run]` the run is closed and every span of it acknowledged.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use steadfast_engine::ids::{RunId, RunKey};

/// The file's name in the data dir.
pub const CURSOR_FILE: &str = "traces.cursor";

/// The cursor file and what it says.
pub struct Cursor {
    path: PathBuf,
    file: std::fs::File,
    /// Acknowledged seq of each tracked run.
    pub acked: BTreeMap<RunKey, u64>,
}

impl Cursor {
    /// Reads `dir/traces.cursor` (a torn last line is ignored) and rewrites it compacted.
    pub fn open(dir: &Path) -> std::io::Result<Cursor> {
        std::fs::create_dir_all(dir)?;
        let path = dir.join(CURSOR_FILE);
        let mut acked = BTreeMap::new();
        if let Ok(text) = std::fs::read_to_string(&path) {
            for line in text.lines() {
                let Ok(v) = serde_json::from_str::<Vec<serde_json::Value>>(line) else {
                    continue;
                };
                let key = match (
                    v.get(1).and_then(|x| x.as_str()),
                    v.get(2).and_then(|x| x.as_str()),
                ) {
                    (Some(ns), Some(run)) => match RunId::parse(run) {
                        Ok(id) => RunKey::new(ns, id),
                        Err(_) => continue,
                    },
                    _ => continue,
                };
                match v.first().and_then(|x| x.as_str()) {
                    Some("+") => {
                        acked.entry(key).or_insert(0);
                    }
                    Some("=") => {
                        if let Some(seq) = v.get(3).and_then(|x| x.as_u64()) {
                            let e = acked.entry(key).or_insert(0);
                            *e = (*e).max(seq);
                        }
                    }
                    Some("-") => {
                        acked.remove(&key);
                    }
                    _ => {}
                }
            }
        }
        let tmp = dir.join(format!("{CURSOR_FILE}.tmp"));
        {
            let mut f = std::fs::File::create(&tmp)?;
            for (k, seq) in &acked {
                writeln!(f, "{}", line("=", k, Some(*seq)))?;
            }
            f.sync_all()?;
        }
        std::fs::rename(&tmp, &path)?;
        let file = std::fs::OpenOptions::new().append(true).open(&path)?;
        Ok(Cursor { path, file, acked })
    }

    /// Tracks `key` (durably) unless it is tracked already; true when it was new.
    pub fn track(&mut self, key: &RunKey) -> std::io::Result<bool> {
        if self.acked.contains_key(key) {
            return Ok(false);
        }
        writeln!(self.file, "{}", line("+", key, None))?;
        self.file.sync_data()?;
        self.acked.insert(key.clone(), 0);
        Ok(true)
    }

    /// The collector acknowledged `key`'s spans up to `seq`; `done` when the run is closed.
    pub fn ack(&mut self, key: &RunKey, seq: u64, done: bool) -> std::io::Result<()> {
        if done {
            writeln!(self.file, "{}", line("-", key, None))?;
            self.acked.remove(key);
        } else {
            writeln!(self.file, "{}", line("=", key, Some(seq)))?;
            self.acked.insert(key.clone(), seq);
        }
        Ok(())
    }

    /// Where the file is (for errors).
    pub fn path(&self) -> &Path {
        &self.path
    }
}

fn line(op: &str, k: &RunKey, seq: Option<u64>) -> String {
    let mut v = vec![
        serde_json::json!(op),
        serde_json::json!(k.namespace),
        serde_json::json!(k.run_id.to_string()),
    ];
    if let Some(s) = seq {
        v.push(serde_json::json!(s));
    }
    serde_json::Value::Array(v).to_string()
}
