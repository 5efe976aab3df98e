//! C2, the log is intact: every record is chained to its predecessor by blake3, the chain of
//! each run starts from a genesis bound to the run, and any damage is detected and named.

use std::collections::HashMap;

use steadfast_engine::event::*;
use steadfast_engine::payload::{Hash, Payload};
use steadfast_engine::{RunId, RunKey};

const T0: TimeMs = 1_700_000_000_000;

fn key(n: u128, namespace: &str) -> RunKey {
    RunKey::new(
        namespace,
        RunId(uuid::Uuid::from_u128(
            0x0190_0000_0000_7000_8000_0000_0000_0000 | n,
        )),
    )
}

/// A small legal history with varied payloads; the same events for every run.
fn events() -> Vec<Event> {
    vec![
        Event::RunStarted(RunStarted {
            workflow_type: "triage".into(),
            workflow_id: "ticket-1".into(),
            task_queue: "agents".into(),
            input: Payload::json(r#"{"ticket":1}"#),
            run_timeout_ms: 0,
            budget: Budget {
                max_tokens: 1_000,
                ..Default::default()
            },
            continued_from: None,
            identity: "cli".into(),
            random_seed: 99,
            parent: None,
            forked_from: None,
            schedule: None,
            traceparent: None,
        }),
        Event::WorkflowTaskScheduled(WorkflowTaskScheduled {
            task_queue: "agents".into(),
            attempt: 1,
            not_before_ms: 0,
        }),
        Event::WorkflowTaskStarted(WorkflowTaskStarted {
            scheduled_seq: 2,
            worker: "w1".into(),
            timeout_ms: 0,
        }),
        Event::WorkflowTaskCompleted(WorkflowTaskCompleted {
            started_seq: 3,
            worker: "w1".into(),
        }),
        Event::ActivityScheduled(ActivityScheduled {
            command_seq: 1,
            activity_type: "llm.chat".into(),
            input: Payload::json(r#"{"prompt":"hi"}"#),
            options: ActivityOptions {
                task_queue: "llm".into(),
                ..Default::default()
            },
        }),
        Event::ActivityCompleted(ActivityCompleted {
            command_seq: 1,
            attempt: 1,
            result: Payload::json(r#""hello""#),
            duration_ms: 321,
            usage: Some(Usage {
                input_tokens: 10,
                output_tokens: 20,
                cost_micros: 30,
                model: "m".into(),
            }),
            reconciled: false,
        }),
        Event::SignalReceived(SignalReceived {
            name: "approve".into(),
            input: Payload::json("true"),
            identity: "alice".into(),
            request_id: "r1".into(),
        }),
        Event::RunCompleted(RunCompleted {
            command_seq: 2,
            result: Payload::json(r#"{"ok":true}"#),
        }),
    ]
}

fn history(key: &RunKey) -> Vec<EventRecord> {
    let mut prev = genesis_hash(key);
    events()
        .into_iter()
        .enumerate()
        .map(|(i, event)| {
            let seq = i as u64 + 1;
            let time_ms = T0 + 100 * i as i64;
            let hash = record_hash(&prev, seq, time_ms, event.kind(), &event.encode_attrs());
            prev = hash;
            EventRecord {
                seq,
                time_ms,
                hash,
                event,
            }
        })
        .collect()
}

fn encode(key: &RunKey, r: &EventRecord) -> Vec<u8> {
    encode_record(key, r, &r.event.encode_attrs())
}

/// The hash before `seq` in a history: the genesis for seq 1.
fn prev_of(key: &RunKey, records: &[EventRecord], seq: u64) -> Hash {
    if seq == 1 {
        genesis_hash(key)
    } else {
        records[seq as usize - 2].hash
    }
}

#[test]
fn decoded_records_verify_after_their_predecessor() {
    let k = key(1, "default");
    let records = history(&k);
    let mut prev = genesis_hash(&k);
    for r in &records {
        let d = decode_record(&encode(&k, r)).unwrap();
        assert_eq!(d.key, k);
        assert_eq!(&d.record, r);
        assert!(d.verifies_after(&prev), "seq {}", r.seq);
        // Not after any other predecessor.
        assert!(!d.verifies_after(&r.hash), "seq {}", r.seq);
        assert!(!d.verifies_after(&[0; 32]), "seq {}", r.seq);
        prev = d.record.hash;
    }
    assert_eq!(chain::verify(&k, genesis_hash(&k), 1, &records), Ok(prev));
}

/// The same events in two runs never share a hash: the genesis binds the run.
#[test]
fn the_genesis_binds_the_run() {
    let a = key(1, "default");
    let b = key(2, "default");
    let c = key(1, "other-ns");
    assert_ne!(genesis_hash(&a), genesis_hash(&b));
    assert_ne!(genesis_hash(&a), genesis_hash(&c));
    let (ha, hb, hc) = (history(&a), history(&b), history(&c));
    for ((ra, rb), rc) in ha.iter().zip(&hb).zip(&hc) {
        assert_eq!(ra.event, rb.event);
        assert_ne!(ra.hash, rb.hash, "seq {}", ra.seq);
        assert_ne!(ra.hash, rc.hash, "seq {}", ra.seq);
    }
}

#[test]
fn a_record_moved_to_another_run_fails() {
    let a = key(1, "default");
    let b = key(2, "default");
    let (ha, hb) = (history(&a), history(&b));

    // Run a's first record, rewritten under run b's key: it does not start b's chain.
    let moved = decode_record(&encode(&b, &ha[0])).unwrap();
    assert_eq!(moved.key, b);
    assert!(!moved.verifies_after(&genesis_hash(&b)));
    assert_eq!(
        chain::verify(&b, genesis_hash(&b), 1, &ha[..1]),
        Err(ChainError::Hash {
            run: b.clone(),
            seq: 1
        })
    );

    // Any record of a spliced into b's history at its own seq breaks b's chain right there.
    for i in 0..ha.len() {
        let mut spliced = hb.clone();
        spliced[i] = ha[i].clone();
        let seq = i as u64 + 1;
        assert_eq!(
            chain::verify(&b, genesis_hash(&b), 1, &spliced),
            Err(ChainError::Hash {
                run: b.clone(),
                seq
            }),
            "a's seq {seq} in b's history"
        );
        let d = decode_record(&encode(&b, &ha[i])).unwrap();
        assert!(
            !d.verifies_after(&prev_of(&b, &hb, seq)),
            "a's seq {seq} after b's seq {}",
            seq - 1
        );
    }

    // A whole history replayed under another run's key does not verify either.
    assert_eq!(
        chain::verify(&b, genesis_hash(&b), 1, &ha),
        Err(ChainError::Hash {
            run: b.clone(),
            seq: 1
        })
    );
}

/// Flips every bit of a few encoded records, one at a time. Each damaged record must fail to
/// decode or fail verification against the history of the run it claims to belong to (a flip
/// in the namespace or run id makes it claim another run, whose chain it does not fit).
#[test]
fn every_single_bit_flip_is_detected() {
    let a = key(1, "default");
    let b = key(2, "default");
    let mut chains: HashMap<RunKey, Vec<EventRecord>> = HashMap::new();
    chains.insert(a.clone(), history(&a));
    chains.insert(b.clone(), history(&b));
    let accepted = |d: &Decoded| -> bool {
        let Some(records) = chains.get(&d.key) else {
            // The seq 1 of an unknown run would start a new chain; anything later has no
            // predecessor and is refused as a gap.
            return d.record.seq == 1 && d.verifies_after(&genesis_hash(&d.key));
        };
        let seq = d.record.seq;
        seq >= 1
            && seq as usize <= records.len() + 1
            && d.verifies_after(&prev_of(&d.key, records, seq))
    };

    let records = &chains[&a];
    let (mut tried, mut undecodable) = (0, 0);
    // RunStarted (genesis), a usage-carrying completion, a signal and the terminal record.
    for r in [&records[0], &records[5], &records[6], &records[7]] {
        let bytes = encode(&a, r);
        assert!(
            accepted(&decode_record(&bytes).unwrap()),
            "the intact record is accepted"
        );
        for bit in 0..bytes.len() * 8 {
            let mut damaged = bytes.clone();
            damaged[bit / 8] ^= 1 << (bit % 8);
            tried += 1;
            match decode_record(&damaged) {
                Err(_) => undecodable += 1,
                Ok(d) => assert!(
                    !accepted(&d),
                    "seq {}: flipping bit {bit} (byte {}) went unnoticed: {:?}",
                    r.seq,
                    bit / 8,
                    d.record
                ),
            }
        }
    }
    eprintln!("{tried} single-bit flips: {undecodable} undecodable, the rest failed verification");
}

#[test]
fn every_truncation_fails_to_decode_or_verify() {
    let a = key(1, "default");
    let records = history(&a);
    for r in &records {
        let bytes = encode(&a, r);
        for len in 0..bytes.len() {
            if let Ok(d) = decode_record(&bytes[..len]) {
                assert!(
                    !d.verifies_after(&prev_of(&a, &records, r.seq)),
                    "seq {} cut to {len} bytes verifies",
                    r.seq
                );
            }
        }
    }
}

#[test]
fn verify_names_the_first_gap() {
    let k = key(1, "default");
    let g = genesis_hash(&k);
    let records = history(&k);
    let gap = |expected, found| {
        Err(ChainError::Gap {
            run: k.clone(),
            expected,
            found,
        })
    };

    // A missing record.
    let mut missing = records.clone();
    missing.remove(3);
    assert_eq!(chain::verify(&k, g, 1, &missing), gap(4, 5));
    // A repeated record.
    let mut repeated = records.clone();
    repeated.insert(3, records[2].clone());
    assert_eq!(chain::verify(&k, g, 1, &repeated), gap(4, 3));
    // Two records swapped.
    let mut swapped = records.clone();
    swapped.swap(4, 5);
    assert_eq!(chain::verify(&k, g, 1, &swapped), gap(5, 6));
    // A history that does not start where the caller expects.
    assert_eq!(chain::verify(&k, g, 1, &records[1..]), gap(1, 2));
    assert_eq!(
        chain::verify(&k, records[2].hash, 4, &records[4..]),
        gap(4, 5)
    );
    // The first of several breaks is the one named.
    let mut two = missing.clone();
    two.remove(5);
    assert_eq!(chain::verify(&k, g, 1, &two), gap(4, 5));

    let e = chain::verify(&k, g, 1, &missing).unwrap_err();
    let msg = e.to_string();
    assert!(
        msg.contains("STF-C2-GAP")
            && msg.contains(&k.to_string())
            && msg.contains("expected seq 4"),
        "{msg}"
    );
}

#[test]
fn verify_names_the_first_altered_record() {
    let k = key(1, "default");
    let g = genesis_hash(&k);
    let records = history(&k);
    let broken_at = |seq| {
        Err(ChainError::Hash {
            run: k.clone(),
            seq,
        })
    };

    // Verifying from the middle, given the predecessor's hash.
    assert_eq!(
        chain::verify(&k, records[2].hash, 4, &records[3..]),
        Ok(records.last().unwrap().hash)
    );
    assert_eq!(
        chain::verify(&k, g, 1, &[]),
        Ok(g),
        "an empty range verifies to its start"
    );

    for i in 0..records.len() {
        let seq = i as u64 + 1;
        // Changed content, time or stored hash: the record itself fails.
        let mut content = records.clone();
        match &mut content[i].event {
            Event::RunStarted(a) => a.random_seed += 1,
            Event::WorkflowTaskScheduled(a) => a.attempt += 1,
            Event::WorkflowTaskStarted(a) => a.worker.push('x'),
            Event::WorkflowTaskCompleted(a) => a.started_seq += 1,
            Event::ActivityScheduled(a) => a.input = Payload::json("{}"),
            Event::ActivityCompleted(a) => a.usage.as_mut().unwrap().output_tokens += 1,
            Event::SignalReceived(a) => a.name = "reject".into(),
            Event::RunCompleted(a) => a.result.data.push(b' '),
            other => panic!("add a mutation for {:?}", other.kind()),
        }
        assert_eq!(
            chain::verify(&k, g, 1, &content),
            broken_at(seq),
            "content of seq {seq}"
        );

        let mut time = records.clone();
        time[i].time_ms += 1;
        assert_eq!(
            chain::verify(&k, g, 1, &time),
            broken_at(seq),
            "time of seq {seq}"
        );

        let mut hash = records.clone();
        hash[i].hash[31] ^= 1;
        assert_eq!(
            chain::verify(&k, g, 1, &hash),
            broken_at(seq),
            "hash of seq {seq}"
        );

        // Altered and re-hashed: the record fits its predecessor, but its successor no
        // longer fits it.
        let mut rehashed = content.clone();
        let r = &mut rehashed[i];
        r.hash = record_hash(
            &prev_of(&k, &records, seq),
            seq,
            r.time_ms,
            r.event.kind(),
            &r.event.encode_attrs(),
        );
        if i + 1 < records.len() {
            assert_eq!(
                chain::verify(&k, g, 1, &rehashed),
                broken_at(seq + 1),
                "re-hashed seq {seq}"
            );
        } else {
            // Rewriting the tail is only caught against a hash kept elsewhere (the run's
            // last hash in its metadata, or a replica).
            let last = chain::verify(&k, g, 1, &rehashed).unwrap();
            assert_ne!(last, records[i].hash);
        }
    }

    let e = chain::verify(&k, g, 1, &{
        let mut r = records.clone();
        r[4].time_ms = 0;
        r
    })
    .unwrap_err();
    let msg = e.to_string();
    assert!(
        msg.contains("STF-C2-HASH") && msg.contains(&k.to_string()) && msg.contains("seq 5"),
        "{msg}"
    );
}

/// The hash covers the attrs exactly as stored, so a record written before a field was
/// appended still verifies after it decodes with the new field's default.
#[test]
fn an_older_record_with_fewer_fields_still_verifies() {
    let k = key(1, "default");
    let records = history(&k);
    // WorkflowTaskScheduled as written before `not_before_ms` existed: a 2-element array.
    let old_attrs = rmp_serde::to_vec(&("agents", 1u32)).unwrap();
    let prev = records[0].hash;
    let kind = EventKind::WorkflowTaskScheduled;
    let event = Event::decode_attrs(kind, &old_attrs).unwrap();
    assert_eq!(
        event,
        Event::WorkflowTaskScheduled(WorkflowTaskScheduled {
            task_queue: "agents".into(),
            attempt: 1,
            not_before_ms: 0
        })
    );
    let hash = record_hash(&prev, 2, T0, kind, &old_attrs);
    let rec = EventRecord {
        seq: 2,
        time_ms: T0,
        hash,
        event,
    };
    let d = decode_record(&encode_record(&k, &rec, &old_attrs)).unwrap();
    assert_eq!(d.record, rec);
    assert!(d.verifies_after(&prev));
}

#[test]
fn unknown_kinds_and_versions_are_refused_by_name() {
    let k = key(1, "default");
    let r = &history(&k)[1];
    let bytes = encode(&k, r);
    // Layout: fixarray(8), version, namespace, run id, seq, time, hash, kind, attrs; the
    // kind (10) is a positive fixint right before the attrs' bin8 header (0xc4, length).
    let attrs = r.event.encode_attrs();
    let kind_at = bytes.len() - attrs.len() - 3;
    assert_eq!(&bytes[kind_at + 1..kind_at + 3], &[0xc4, attrs.len() as u8]);
    assert_eq!(bytes[kind_at], EventKind::WorkflowTaskScheduled as u8);
    let mut unknown = bytes.clone();
    unknown[kind_at] = 9;
    match decode_record(&unknown) {
        Err(DecodeError::UnknownKind { run, seq, kind }) => {
            assert_eq!((run, seq, kind), (k.clone(), 2, 9))
        }
        other => panic!("{other:?}"),
    }
    let mut version = bytes.clone();
    assert_eq!(version[1], 1, "record version 1");
    version[1] = 2;
    match decode_record(&version) {
        Err(DecodeError::Malformed(m)) => assert!(m.contains("record version 2"), "{m}"),
        other => panic!("{other:?}"),
    }
}
