//! The side file: an append-only record, outside the server, of every activity *execution*.
//!
//! `test-worker` appends one line when an activity starts running, before it does any work,
//! and syncs it to disk before going on, so that a test can count executions even across a
//! SIGKILL of the worker or the server. Tests append marker lines (`# ...`) to the same file,
//! e.g. right after a kill, to tell "before" from "after" without comparing clocks.
//!
//! An execution line is space-separated:
//! `run_id activity_id attempt type idempotency_key deadline_ms pid`
//! (`deadline_ms` is the attempt deadline the server handed out, in its clock; `pid` is the
//! worker process's).

use std::fs::OpenOptions;
use std::io::Write;
use std::path::Path;

use anyhow::{Context, Result, bail};

/// One activity execution, as `test-worker` records it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Execution {
    /// The run.
    pub run_id: String,
    /// The activity id (its command seq).
    pub activity_id: u32,
    /// The attempt number, 1 for the first.
    pub attempt: u32,
    /// The activity type.
    pub activity_type: String,
    /// The idempotency key the server gave the attempt.
    pub idempotency_key: String,
    /// The attempt's deadline (ms since the epoch, the server's clock; 0 = unknown).
    pub deadline_ms: i64,
    /// The worker process.
    pub pid: u32,
}

impl Execution {
    /// The line as written to the side file (with its newline).
    pub fn line(&self) -> String {
        format!(
            "{} {} {} {} {} {} {}\n",
            self.run_id,
            self.activity_id,
            self.attempt,
            self.activity_type,
            self.idempotency_key,
            self.deadline_ms,
            self.pid
        )
    }

    fn parse(line: &str) -> Result<Execution> {
        let f: Vec<&str> = line.split(' ').collect();
        if f.len() != 7 {
            bail!(
                "side file line has {} fields, expected 7: {line:?}",
                f.len()
            );
        }
        Ok(Execution {
            run_id: f[0].to_string(),
            activity_id: f[1].parse().context("activity_id")?,
            attempt: f[2].parse().context("attempt")?,
            activity_type: f[3].to_string(),
            idempotency_key: f[4].to_string(),
            deadline_ms: f[5].parse().context("deadline_ms")?,
            pid: f[6].parse().context("pid")?,
        })
    }
}

/// One line of the side file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Line {
    /// An activity execution started.
    Execution(Execution),
    /// A marker a test wrote (the text after `# `).
    Marker(String),
}

/// Appends `text` (one line, newline added) with O_APPEND and syncs it: the line is on disk
/// before this returns, and concurrent appenders never interleave within a line.
pub fn append(path: &Path, text: &str) -> Result<()> {
    let mut f = OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .with_context(|| format!("open side file {}", path.display()))?;
    let mut buf = text.trim_end_matches('\n').to_string();
    buf.push('\n');
    // One write(2) per line: with O_APPEND the line lands whole at the end.
    f.write_all(buf.as_bytes())?;
    f.sync_data()?;
    Ok(())
}

/// Appends a marker line `# text`.
pub fn mark(path: &Path, text: &str) -> Result<()> {
    append(path, &format!("# {text}"))
}

/// Reads every complete line of the side file (none if it does not exist yet).
pub fn read(path: &Path) -> Result<Vec<Line>> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e).with_context(|| format!("read {}", path.display())),
    };
    let mut out = Vec::new();
    // A line without its newline is still being written: skip it.
    let complete = match text.rfind('\n') {
        Some(i) => &text[..=i],
        None => "",
    };
    for line in complete.lines().filter(|l| !l.is_empty()) {
        match line.strip_prefix("# ") {
            Some(m) => out.push(Line::Marker(m.to_string())),
            None => out.push(Line::Execution(Execution::parse(line)?)),
        }
    }
    Ok(out)
}

/// The executions of run `run_id`, in file order.
pub fn executions(path: &Path, run_id: &str) -> Result<Vec<Execution>> {
    Ok(read(path)?
        .into_iter()
        .filter_map(|l| match l {
            Line::Execution(e) if e.run_id == run_id => Some(e),
            _ => None,
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("side");
        assert!(read(&path).unwrap().is_empty());
        let e = Execution {
            run_id: "r1".into(),
            activity_id: 3,
            attempt: 2,
            activity_type: "step".into(),
            idempotency_key: "default/r1/3".into(),
            deadline_ms: 1_700_000_000_000,
            pid: 42,
        };
        append(&path, &e.line()).unwrap();
        mark(&path, "kill 1").unwrap();
        // A torn last line (no newline yet) is not read.
        std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap()
            .write_all(b"r1 4 1 st")
            .unwrap();
        assert_eq!(
            read(&path).unwrap(),
            vec![Line::Execution(e.clone()), Line::Marker("kill 1".into())]
        );
        assert_eq!(executions(&path, "r1").unwrap(), vec![e]);
        assert!(executions(&path, "r2").unwrap().is_empty());
    }
}
