//! `steadfast history verify` against a real server whose data dir was damaged while it was
//! stopped (promise C2): a flipped byte in an acknowledged record of a sealed log segment is
//! found and named (run, seq, exit 8), although reads still serve sled's intact copy; a
//! flipped byte in sled's copy alone is repaired from the log and verifies clean, hash for
//! hash. All randomness (payloads, which record, which byte) comes from one printed seed.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, ensure};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::Value;
use steadfast_sdk::client::{Client, StartOptions};
use steadfast_tests::{Server, cli, history, runtime, test_seed};

/// Victim runs, and signals each (small, unique, inline payloads we can find on disk).
const VICTIMS: usize = 4;
const SIGNALS: usize = 5;
/// Filler inputs (kept as blobs) that roll the log past its first 16 MiB segment.
const FILLER_BYTES: usize = 1 << 20;

fn letters(rng: &mut StdRng, n: usize) -> String {
    (0..n).map(|_| rng.gen_range(b'a'..=b'z') as char).collect()
}

fn files_under(dir: &Path, out: &mut Vec<PathBuf>) {
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.flatten() {
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                files_under(&e.path(), out);
            } else {
                out.push(e.path());
            }
        }
    }
}

fn segments(data: &Path) -> Vec<PathBuf> {
    let mut s: Vec<PathBuf> = std::fs::read_dir(data.join("log"))
        .map(|rd| rd.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    s.retain(|p| p.extension().is_some_and(|x| x == "seg"));
    s.sort();
    s
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// A victim's signal: its run, its seq, the unique text it carries.
struct Marked {
    run: String,
    seq: u64,
    text: String,
}

/// Starts the victims (no worker: they stay open) and signals them; returns every signal.
fn victims(rt: &tokio::runtime::Runtime, url: &str, rng: &mut StdRng) -> Result<Vec<Marked>> {
    let client = rt.block_on(Client::connect(url))?;
    let mut texts = Vec::new();
    let mut runs = Vec::new();
    for i in 0..VICTIMS {
        let h = rt.block_on(client.start_workflow(
            "nobody-runs-this",
            &serde_json::json!({ "victim": i }),
            StartOptions::default(),
        ))?;
        for _ in 0..SIGNALS {
            let text = letters(rng, 64);
            rt.block_on(client.signal(&h.run_id, "note", &text))?;
            texts.push((h.run_id.clone(), text));
        }
        runs.push(h.run_id);
    }
    let mut marked = Vec::new();
    for (run, text) in texts {
        let events = history(rt, url, &run)?;
        let seq = events
            .iter()
            .find(|e| signal_data(e).is_some_and(|d| find(d, text.as_bytes()).is_some()))
            .map(|e| e.seq)
            .context("the signal is in the history")?;
        marked.push(Marked { run, seq, text });
    }
    Ok(marked)
}

/// A SignalReceived's input bytes.
fn signal_data(e: &steadfast_proto::v1::HistoryEvent) -> Option<&[u8]> {
    use steadfast_proto::v1::history_event::Attributes as A;
    match &e.attributes {
        Some(A::SignalReceived(s)) => s.input.as_ref().map(|p| p.data.as_slice()),
        _ => None,
    }
}

fn verify(url: &str, args: &[&str]) -> Result<(i32, String, String)> {
    let mut all = vec!["history", "verify"];
    all.extend_from_slice(args);
    cli(url, &all)
}

#[test]
fn damage_in_the_log_is_named_by_verify_while_reads_serve_the_intact_copy() -> Result<()> {
    let seed = test_seed();
    let mut rng = StdRng::seed_from_u64(seed);
    let dir = tempfile::tempdir()?;
    let data = dir.path().join("data");
    let mut server = Server::start(&data, None)?;
    let url = server.url();
    let rt = runtime();
    let marked = victims(&rt, &url, &mut rng)?;
    // Fill the log past its first segment, which is then sealed.
    let client = rt.block_on(Client::connect(url.as_str()))?;
    while segments(&data).len() < 2 {
        let filler = letters(&mut rng, FILLER_BYTES);
        rt.block_on(client.start_workflow("filler", &filler, StartOptions::default()))?;
    }
    let (code, out, err) = verify(&url, &[&marked[0].run])?;
    ensure!(code == 0, "an intact run verifies: {out} {err}");
    ensure!(out.contains("  ok  "), "{out}");
    ensure!(server.proc.terminate(Duration::from_secs(30)), "clean stop");

    // Flip one byte of one victim signal's record in the first (sealed) segment.
    let first = segments(&data)[0].clone();
    let mut bytes = std::fs::read(&first)?;
    let found: Vec<(&Marked, usize)> = marked
        .iter()
        .filter_map(|m| find(&bytes, m.text.as_bytes()).map(|at| (m, at)))
        .collect();
    ensure!(!found.is_empty(), "no victim record in the first segment");
    let (victim, at) = found[rng.gen_range(0..found.len())];
    let pos = at + rng.gen_range(0..victim.text.len());
    bytes[pos] ^= 0x02;
    std::fs::write(&first, &bytes)?;
    eprintln!(
        "flipped byte {pos} of {}: run {} seq {}",
        first.display(),
        victim.run,
        victim.seq
    );

    let server = Server::start(&data, None)?;
    let url = server.url();
    // Reads are served from sled's copy, which the damage did not touch...
    let (code, out, err) = cli(&url, &["history", "show", &victim.run])?;
    ensure!(code == 0, "history show: {out} {err}");
    // ...verify reads the log and names the record.
    let (code, out, err) = verify(&url, &[&victim.run])?;
    ensure!(
        code == 8,
        "verify exits 8 on damage, got {code}: {out} {err}"
    );
    let want = format!("{}  DAMAGED at seq {}:", victim.run, victim.seq);
    ensure!(out.contains(&want), "expected {want:?} in {out}");
    ensure!(out.contains("[STF-C2]"), "{out}");
    let (code, out, err) = verify(&url, &["--all"])?;
    ensure!(
        code == 8,
        "verify --all exits 8 on damage, got {code}: {out} {err}"
    );
    ensure!(out.contains(&want), "verify --all names the damage: {out}");
    ensure!(err.contains("damaged"), "summary on stderr: {err}");
    // Another run's check has to read past the damaged record: it says where the damage is.
    let other = marked
        .iter()
        .find(|m| m.run != victim.run)
        .context("a second victim")?;
    let (code, out, _) = verify(&url, &[&other.run, "--json"])?;
    ensure!(code == 8, "{out}");
    let v: Value = serde_json::from_str(out.trim())?;
    ensure!(v["damaged_run_id"] == victim.run.as_str(), "{v}");
    ensure!(v["first_bad_seq"] == victim.seq, "{v}");
    Ok(())
}

#[test]
fn damage_to_sled_alone_is_repaired_and_verifies_clean() -> Result<()> {
    let seed = test_seed();
    let mut rng = StdRng::seed_from_u64(seed);
    let dir = tempfile::tempdir()?;
    let data = dir.path().join("data");
    let mut server = Server::start(&data, None)?;
    let url = server.url();
    let rt = runtime();
    let marked = victims(&rt, &url, &mut rng)?;
    let before: Vec<Vec<(u64, Vec<u8>)>> = marked
        .iter()
        .map(|m| {
            history(&rt, &url, &m.run).map(|h| h.into_iter().map(|e| (e.seq, e.hash)).collect())
        })
        .collect::<Result<_>>()?;
    ensure!(server.proc.terminate(Duration::from_secs(30)), "clean stop");

    // Flip one byte of a victim signal where sled keeps its copy.
    let mut files = Vec::new();
    files_under(&data.join("sled"), &mut files);
    let mut hits = Vec::new();
    for f in &files {
        let b = std::fs::read(f)?;
        for (i, m) in marked.iter().enumerate() {
            if let Some(at) = find(&b, m.text.as_bytes()) {
                hits.push((f.clone(), i, at));
            }
        }
    }
    ensure!(!hits.is_empty(), "no victim signal found in sled's files");
    let (file, i, at) = hits[rng.gen_range(0..hits.len())].clone();
    let mut b = std::fs::read(&file)?;
    b[at + rng.gen_range(0..64)] ^= 0x02;
    std::fs::write(&file, &b)?;
    eprintln!(
        "flipped a byte of run {} seq {} in {}",
        marked[i].run,
        marked[i].seq,
        file.display()
    );

    let server = Server::start(&data, None)?;
    let url = server.url();
    for (m, hashes) in marked.iter().zip(&before) {
        let (code, out, err) = verify(&url, &[&m.run])?;
        ensure!(
            code == 0,
            "sled damage is repaired from the log: {out} {err}"
        );
        let after: Vec<(u64, Vec<u8>)> = history(&rt, &url, &m.run)?
            .into_iter()
            .map(|e| (e.seq, e.hash))
            .collect();
        ensure!(&after == hashes, "run {}: the history changed", m.run);
    }
    let (code, out, err) = verify(&url, &["--all"])?;
    ensure!(code == 0, "verify --all: {out} {err}");
    ensure!(
        err.contains(&format!("{VICTIMS} intact, 0 damaged")),
        "{err}"
    );
    Ok(())
}
