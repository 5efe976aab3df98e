//! What the store test binaries share: seeds, ids, events, directory copies. Every random
//! choice comes from the test's seeded generator, so `TEST_SEED` replays a failure exactly.

#![allow(dead_code)] // each test binary uses a part

use std::path::{Path, PathBuf};

use rand::Rng;
use rand::rngs::StdRng;
use steadfast_engine::event::{self, Budget, Event};
use steadfast_engine::ids::RunId;
use steadfast_engine::payload::Payload;

/// The test's seed: `TEST_SEED` if set, else a fresh one; printed so a failure can be replayed.
pub fn seed(test: &str) -> u64 {
    let s = std::env::var("TEST_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(rand::random);
    eprintln!("{test}: seed {s} (replay with TEST_SEED={s})");
    s
}

/// A run id from the seeded generator (not from the clock or the OS).
pub fn run_id(rng: &mut StdRng) -> RunId {
    RunId(uuid::Builder::from_random_bytes(rng.r#gen()).into_uuid())
}

/// A RunStarted of type "wf" on queue "q".
pub fn started(workflow_id: &str) -> Event {
    Event::RunStarted(event::RunStarted {
        workflow_type: "wf".into(),
        workflow_id: workflow_id.into(),
        task_queue: "q".into(),
        input: Payload::json(b"{}".to_vec()),
        run_timeout_ms: 0,
        budget: Budget::default(),
        continued_from: None,
        identity: "test".into(),
        random_seed: 1,
        parent: None,
        forked_from: None,
        schedule: None,
        traceparent: None,
    })
}

/// A signal whose payload is sometimes large enough to become a blob.
pub fn signal(rng: &mut StdRng) -> Event {
    let len = if rng.gen_bool(0.12) {
        rng.gen_range(600..2_500)
    } else {
        rng.gen_range(0..150)
    };
    let data: Vec<u8> = (0..len).map(|_| rng.gen_range(b'a'..=b'z')).collect();
    Event::SignalReceived(event::SignalReceived {
        name: "s".into(),
        input: Payload::json(data),
        identity: "t".into(),
        request_id: String::new(),
    })
}

/// A RunTerminated.
pub fn terminated() -> Event {
    Event::RunTerminated(event::RunTerminated {
        reason: "done".into(),
        identity: "test".into(),
    })
}

/// Copies a data directory (the lock file left out). The store may be running (a crash
/// image): a file it removed between the listing and the copy is simply not in the image.
pub fn copy_dir(src: &Path, dst: &Path) {
    std::fs::create_dir_all(dst).unwrap();
    for e in std::fs::read_dir(src).unwrap() {
        let e = e.unwrap();
        let to = dst.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &to);
        } else if e.file_name() != "LOCK" {
            match std::fs::copy(e.path(), &to) {
                Ok(_) => {}
                Err(err) if err.kind() == std::io::ErrorKind::NotFound => {}
                Err(err) => panic!("copy {}: {err}", e.path().display()),
            }
        }
    }
}

/// Every file under `dir`.
pub fn files_under(dir: &Path, out: &mut Vec<PathBuf>) {
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
