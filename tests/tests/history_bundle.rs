//! History bundles between two real servers: `history export RUN -o FILE` on one,
//! `history import FILE` on the other, hash for hash in the same namespace, a new chain in
//! another; a tampered or cut bundle exits 8 and stores nothing; a run id that exists is
//! refused. Payloads and the tampered byte come from one printed seed.

use std::path::Path;

use anyhow::{Result, ensure};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::Value;
use steadfast_tests::{Server, cli, test_seed};

fn letters(rng: &mut StdRng, n: usize) -> String {
    (0..n).map(|_| rng.gen_range(b'a'..=b'z') as char).collect()
}

/// Runs the CLI against `url`; fails unless it exits with `code`. Returns (stdout, stderr).
fn run(url: &str, code: i32, args: &[&str]) -> Result<(String, String)> {
    let (got, out, err) = cli(url, args)?;
    ensure!(
        got == code,
        "steadfast {args:?}: exit {got}, expected {code}\nstdout:\n{out}\nstderr:\n{err}"
    );
    Ok((out, err))
}

/// (seq, kind, hash, attributes) of every event, from `history show --json`.
fn events(url: &str, run_id: &str, ns: &str) -> Result<Vec<(u64, String, String, Value)>> {
    let (out, _) = run(
        url,
        0,
        &["history", "show", run_id, "--json", "--namespace", ns],
    )?;
    out.lines()
        .map(|l| {
            let v: Value = serde_json::from_str(l)?;
            Ok((
                v["seq"].as_u64().unwrap_or(0),
                v["kind"].as_str().unwrap_or("").to_string(),
                v["hash"].as_str().unwrap_or("").to_string(),
                v["attributes"].clone(),
            ))
        })
        .collect()
}

#[test]
fn bundles_move_a_run_between_servers_and_tampering_is_refused() -> Result<()> {
    let mut rng = StdRng::seed_from_u64(test_seed());
    let dir = tempfile::tempdir()?;
    let a = Server::start(&dir.path().join("a"), None)?;
    let b = Server::start(&dir.path().join("b"), None)?;
    let (ua, ub) = (a.url(), b.url());

    // A run with a small and a large (blob) signal, then terminated: nobody runs its code.
    let (out, _) = run(&ua, 0, &["run", "start", "nobody", "--input", r#"{"n":1}"#])?;
    let run_id = out.trim().to_string();
    let small = letters(&mut rng, 40);
    let big = letters(&mut rng, 3_000);
    for text in [&small, &big] {
        let input = Value::String(text.clone()).to_string();
        run(
            &ua,
            0,
            &["run", "signal", &run_id, "note", "--input", &input],
        )?;
    }
    run(&ua, 0, &["run", "terminate", &run_id])?;
    let original = events(&ua, &run_id, "default")?;
    ensure!(original.len() >= 5, "{original:?}");

    let bundle = dir.path().join("run.bundle");
    let path = bundle.to_str().unwrap_or_default();
    run(&ua, 0, &["history", "export", &run_id, "-o", path])?;
    // A bundle replays offline like a plain export.
    run(&ua, 0, &["history", "replay", "--file", path])?;

    // Same namespace on another server: every event, hash for hash.
    let (out, err) = run(&ub, 0, &["history", "import", path])?;
    ensure!(out.trim() == run_id, "import prints the run id: {out}");
    ensure!(err.contains("every hash as in the bundle"), "{err}");
    ensure!(
        events(&ub, &run_id, "default")? == original,
        "same history on b"
    );
    run(&ub, 0, &["history", "verify", &run_id])?;
    let (_, err) = run(&ub, 1, &["history", "import", path])?;
    ensure!(err.contains("already exists"), "{err}");

    // Another namespace: same events and times, a new chain.
    let (_, err) = run(&ub, 0, &["history", "import", path, "--namespace", "copy"])?;
    ensure!(err.contains("new chain"), "{err}");
    let copy = events(&ub, &run_id, "copy")?;
    ensure!(copy.len() == original.len(), "{copy:?}");
    for (c, o) in copy.iter().zip(&original) {
        ensure!((c.0, &c.1, &c.3) == (o.0, &o.1, &o.3), "{c:?} != {o:?}");
        ensure!(c.2 != o.2, "the chain is bound to the namespace");
    }
    run(
        &ub,
        0,
        &["history", "verify", &run_id, "--namespace", "copy"],
    )?;

    // Tampered: one byte of the large payload in the exact (wire) bytes.
    let text = std::fs::read_to_string(&bundle)?;
    let at = text
        .find(&hex(&big[..32]))
        .expect("the payload's wire hex is in the bundle");
    let pos = at + 2 * rng.gen_range(0..32);
    let old = &text[pos..pos + 2];
    let new = if old == "61" { "62" } else { "61" }; // another letter
    let tampered = format!("{}{new}{}", &text[..pos], &text[pos + 2..]);
    let t = dir.path().join("tampered.bundle");
    std::fs::write(&t, tampered)?;
    let t = t.to_str().unwrap_or_default();
    let (_, err) = run(&ub, 8, &["history", "import", t, "--namespace", "tampered"])?;
    ensure!(
        err.contains("does not verify") && err.contains("nothing was imported"),
        "{err}"
    );
    run(&ub, 1, &["run", "show", &run_id, "--namespace", "tampered"])?;

    // Cut: the last event gone.
    let cut: String = text
        .lines()
        .take(text.lines().count() - 1)
        .map(|l| format!("{l}\n"))
        .collect();
    let c = dir.path().join("cut.bundle");
    std::fs::write(&c, cut)?;
    let (_, err) = run(
        &ub,
        8,
        &[
            "history",
            "import",
            c.to_str().unwrap_or_default(),
            "--namespace",
            "cut",
        ],
    )?;
    ensure!(err.contains("was cut"), "{err}");
    run(&ub, 1, &["run", "show", &run_id, "--namespace", "cut"])?;

    // Not a bundle at all.
    let (_, err) = run(
        &ub,
        8,
        &["history", "import", &path_of(dir.path(), "nope", "hello")?],
    )?;
    ensure!(err.contains("not a bundle"), "{err}");
    Ok(())
}

fn hex(s: &str) -> String {
    s.bytes().map(|b| format!("{b:02x}")).collect()
}

fn path_of(dir: &Path, name: &str, content: &str) -> Result<String> {
    let p = dir.join(name);
    std::fs::write(&p, content)?;
    Ok(p.to_string_lossy().into_owned())
}
