//! The file format of `history export` / `history replay --file`.
//!
//! JSON lines, one event per line, in seq order: the object `history show --json` prints
//! (`seq`, `kind`, `time`, `time_ms`, `hash`, `attributes`) plus `namespace`, `run_id` and
//! `wire`, the hex of the event's protobuf encoding (`steadfast.v1.HistoryEvent`). Replay reads
//! only `namespace`, `run_id` and `wire`: the readable fields are for people and `jq`, the wire
//! bytes are exact, so the hash chain verifies offline.
//!
//! A *bundle* (`history export RUN -o FILE`, read by `history import`) is the same lines after
//! one header line, which says what the file must hold: see docs/bundle.md.

use prost::Message;
use serde_json::Value;
use steadfast_engine::{RunId, RunKey};
use steadfast_proto::v1 as pb;

use super::events::event_json;

/// Version of the export line format, in every line as `export_version`.
pub const EXPORT_VERSION: u64 = 1;

/// Version of the bundle format, in its header as `steadfast_bundle`.
pub const BUNDLE_VERSION: u64 = 1;

/// The first line of a bundle (no trailing newline).
pub fn bundle_header(namespace: &str, run_id: &str, events: &[pb::HistoryEvent]) -> String {
    serde_json::json!({
        "steadfast_bundle": BUNDLE_VERSION,
        "namespace": namespace,
        "run_id": run_id,
        "events": events.len(),
        "last_hash": events.last().map(|e| hex::encode(&e.hash)).unwrap_or_default(),
    })
    .to_string()
}

/// Reads a bundle: its header must come first, and the events must be as many as it says and
/// end with the hash it names (a cut or padded file is refused). The chain itself is checked
/// by the caller (`replay::records_of`).
pub fn parse_bundle(text: &str, source: &str) -> Result<(RunKey, Vec<pb::HistoryEvent>), String> {
    let first = text.lines().next().unwrap_or_default();
    let header: Value = serde_json::from_str(first)
        .map_err(|e| format!("{source} line 1: not a bundle header ({e}); write bundles with `steadfast history export RUN -o FILE`"))?;
    let version = header
        .get("steadfast_bundle")
        .and_then(Value::as_u64)
        .ok_or_else(|| format!("{source} line 1: no \"steadfast_bundle\" version; write bundles with `steadfast history export RUN -o FILE`"))?;
    if version > BUNDLE_VERSION {
        return Err(format!(
            "{source}: bundle version {version} is newer than this steadfast ({BUNDLE_VERSION}); upgrade it"
        ));
    }
    let (key, events) = parse_export(text, source)?;
    if header.get("run_id").and_then(Value::as_str) != Some(&key.run_id.to_string())
        || header.get("namespace").and_then(Value::as_str) != Some(&key.namespace)
    {
        return Err(format!(
            "{source}: the header names another run than the events ({key})"
        ));
    }
    let count = header.get("events").and_then(Value::as_u64);
    if count != Some(events.len() as u64) {
        return Err(format!(
            "{source}: the header says {} events, the file holds {}: it was cut or added to",
            count.map_or("no".into(), |c| c.to_string()),
            events.len()
        ));
    }
    let last = events
        .last()
        .map(|e| hex::encode(&e.hash))
        .unwrap_or_default();
    if header.get("last_hash").and_then(Value::as_str) != Some(last.as_str()) {
        return Err(format!(
            "{source}: the last event's hash is not the one the header names: the file was altered"
        ));
    }
    Ok((key, events))
}

/// One line of an export (no trailing newline).
pub fn export_line(namespace: &str, run_id: &str, e: &pb::HistoryEvent) -> String {
    let mut m = event_json(e);
    m.insert("namespace".into(), namespace.into());
    m.insert("run_id".into(), run_id.into());
    m.insert("export_version".into(), EXPORT_VERSION.into());
    m.insert("wire".into(), hex::encode(e.encode_to_vec()).into());
    Value::Object(m).to_string()
}

/// Reads an export: the run it belongs to and its events. Errors name the line.
pub fn parse_export(text: &str, source: &str) -> Result<(RunKey, Vec<pb::HistoryEvent>), String> {
    let mut key: Option<RunKey> = None;
    let mut events = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let at = || format!("{source} line {}", i + 1);
        if line.trim().is_empty() {
            continue;
        }
        let v: Value =
            serde_json::from_str(line).map_err(|e| format!("{}: not JSON: {e}", at()))?;
        if i == 0 && v.get("steadfast_bundle").is_some() {
            // A bundle's header: checked by `parse_bundle`; replay reads the events alone.
            continue;
        }
        let field = |name: &str| {
            v.get(name).and_then(Value::as_str).ok_or_else(|| {
                format!("{}: no {name:?} field; is this a file written by `steadfast history export RUN > FILE`?", at())
            })
        };
        if let Some(version) = v.get("export_version").and_then(Value::as_u64)
            && version > EXPORT_VERSION
        {
            return Err(format!(
                "{}: export version {version} is newer than this steadfast ({EXPORT_VERSION}); upgrade it",
                at()
            ));
        }
        let run_id =
            RunId::parse(field("run_id")?).map_err(|e| format!("{}: bad run_id: {e}", at()))?;
        let line_key = RunKey::new(field("namespace")?, run_id);
        match &key {
            None => key = Some(line_key),
            Some(k) if *k != line_key => {
                return Err(format!(
                    "{}: event of run {line_key}, but the file began with run {k}",
                    at()
                ));
            }
            Some(_) => {}
        }
        let bytes = hex::decode(field("wire")?)
            .map_err(|e| format!("{}: \"wire\" is not hex: {e}", at()))?;
        let e = pb::HistoryEvent::decode(bytes.as_slice())
            .map_err(|e| format!("{}: \"wire\" is not a HistoryEvent: {e}", at()))?;
        events.push(e);
    }
    let key = key.ok_or_else(|| format!("{source} holds no events"))?;
    Ok((key, events))
}

#[cfg(test)]
mod tests {
    use super::*;

    const RUN: &str = "01900000-0000-7000-8000-000000000001";

    fn ev(seq: u64) -> pb::HistoryEvent {
        pb::HistoryEvent {
            seq,
            time_ms: 5,
            hash: vec![seq as u8; 32],
            kind: pb::EventKind::TimerFired as i32,
            attributes: Some(pb::history_event::Attributes::TimerFired(pb::TimerFired {
                command_seq: 3,
            })),
        }
    }

    #[test]
    fn round_trip() {
        let text: String = [ev(1), ev(2)]
            .iter()
            .map(|e| export_line("default", RUN, e) + "\n")
            .collect();
        let (key, events) = parse_export(&text, "f").unwrap();
        assert_eq!(key.to_string(), format!("default/{RUN}"));
        assert_eq!(events, vec![ev(1), ev(2)]);
        let first: Value = serde_json::from_str(text.lines().next().unwrap()).unwrap();
        assert_eq!(first["kind"], "TimerFired");
        assert_eq!(first["attributes"]["timer_id"], 3);
        assert_eq!(first["run_id"], RUN);
    }

    #[test]
    fn errors_name_the_line() {
        let good = export_line("default", RUN, &ev(1));
        assert!(
            parse_export(&format!("{good}\nnope\n"), "f")
                .unwrap_err()
                .starts_with("f line 2: not JSON")
        );
        assert!(
            parse_export("{\"seq\":1}", "f")
                .unwrap_err()
                .contains("no \"run_id\" field")
        );
        let other = export_line("default", "01900000-0000-7000-8000-000000000002", &ev(2));
        assert!(
            parse_export(&format!("{good}\n{other}"), "f")
                .unwrap_err()
                .contains("line 2: event of run")
        );
        let bad = good.replace("\"wire\":\"", "\"wire\":\"zz");
        assert!(parse_export(&bad, "f").unwrap_err().contains("not hex"));
        assert_eq!(parse_export("\n", "f").unwrap_err(), "f holds no events");
    }

    fn bundle(events: &[pb::HistoryEvent]) -> String {
        let mut text = bundle_header("default", RUN, events) + "\n";
        for e in events {
            text += &(export_line("default", RUN, e) + "\n");
        }
        text
    }

    #[test]
    fn bundles_say_what_they_hold() {
        let events = [ev(1), ev(2), ev(3)];
        let text = bundle(&events);
        let (key, got) = parse_bundle(&text, "b").unwrap();
        assert_eq!(key.run_id.to_string(), RUN);
        assert_eq!(got, events.to_vec());
        // Replay reads a bundle too.
        assert_eq!(parse_export(&text, "b").unwrap().1, events.to_vec());
        // Cut: the last line gone.
        let cut: String = text.lines().take(3).map(|l| format!("{l}\n")).collect();
        assert!(
            parse_bundle(&cut, "b")
                .unwrap_err()
                .contains("says 3 events, the file holds 2")
        );
        // The last event swapped for another.
        let swapped = bundle(&events).replace(
            &export_line("default", RUN, &ev(3)),
            &export_line(
                "default",
                RUN,
                &pb::HistoryEvent {
                    hash: vec![9; 32],
                    ..ev(3)
                },
            ),
        );
        assert!(parse_bundle(&swapped, "b").unwrap_err().contains("altered"));
        // Not a bundle: a plain export.
        let plain = export_line("default", RUN, &ev(1));
        assert!(
            parse_bundle(&plain, "b")
                .unwrap_err()
                .contains("steadfast_bundle")
        );
        let newer = text.replace("\"steadfast_bundle\":1", "\"steadfast_bundle\":99");
        assert!(parse_bundle(&newer, "b").unwrap_err().contains("newer"));
    }

    /// Fuzzes the bundle and export readers (issue 12): valid bundles damaged at random
    /// (characters changed, inserted, lines cut or swapped) and text that never was one.
    /// Nothing panics, errors stay short, and a damaged bundle that still reads holds the
    /// events the bundle was written with (what it does not check, the chain, replay checks).
    /// 256 cases by default, `FUZZ_CASES=N` for more; `TEST_SEED=...` replays.
    #[test]
    fn fuzz_bundle_reader() {
        use rand::rngs::StdRng;
        use rand::{Rng, SeedableRng};
        let seed: u64 = std::env::var("TEST_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(rand::random);
        let cases: u64 = std::env::var("FUZZ_CASES")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(256);
        eprintln!("fuzz bundle reader: {cases} cases, seed {seed} (replay with TEST_SEED={seed})");
        let mut rng = StdRng::seed_from_u64(seed);
        const ALPHABET: &[char] = &[
            '0', '1', 'a', 'f', 'z', '"', '{', '}', '[', ']', ':', ',', '\\', '\n', ' ', '-', 'e',
            '9', '\u{0}', '\u{202E}', 'é',
        ];
        for case in 0..cases {
            let n = rng.gen_range(1..6u64);
            let events: Vec<_> = (1..=n).map(ev).collect();
            let text = bundle(&events);
            let mut chars: Vec<char> = text.chars().collect();
            for _ in 0..rng.gen_range(1..4) {
                let at = rng.gen_range(0..chars.len());
                match rng.gen_range(0..4) {
                    0 => chars[at] = ALPHABET[rng.gen_range(0..ALPHABET.len())],
                    1 => chars.insert(at, ALPHABET[rng.gen_range(0..ALPHABET.len())]),
                    2 => chars.truncate(at),
                    _ => {
                        chars.remove(at);
                    }
                }
                if chars.is_empty() {
                    break;
                }
            }
            let damaged: String = chars.into_iter().collect();
            let noise: String = (0..rng.gen_range(0..200))
                .map(|_| ALPHABET[rng.gen_range(0..ALPHABET.len())])
                .collect();
            for input in [&damaged, &noise] {
                let bundle_read = parse_bundle(input, "b");
                if input == &damaged
                    && let Ok((_, got)) = &bundle_read
                {
                    // The header names the count and the last hash: those survive any damage
                    // that still reads (the rest of the chain is replay's to check).
                    assert!(
                        got.len() == events.len()
                            && got.last().map(|e| &e.hash) == events.last().map(|e| &e.hash),
                        "case {case} (TEST_SEED={seed}): a damaged bundle read as another"
                    );
                }
                for r in [bundle_read, parse_export(input, "b")] {
                    if let Err(e) = r {
                        assert!(
                            e.len() < 512,
                            "case {case} (TEST_SEED={seed}): a {} byte error",
                            e.len()
                        );
                    }
                }
            }
        }
    }
}
