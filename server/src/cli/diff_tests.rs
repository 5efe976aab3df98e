//! Tests of `history diff` over synthetic histories.

use serde_json::{Value, json};
use steadfast_proto::v1 as pb;
use steadfast_proto::v1::history_event::Attributes as A;

use super::diff::*;

fn ev(seq: u64, time_ms: i64, a: A) -> pb::HistoryEvent {
    pb::HistoryEvent {
        seq,
        time_ms,
        attributes: Some(a),
        ..Default::default()
    }
}

fn json_payload(v: Value) -> Option<pb::Payload> {
    Some(pb::Payload {
        encoding: String::new(),
        data: v.to_string().into_bytes(),
    })
}

/// A `seq`-like history: one activity per workflow task, then the run completes. Step
/// `i`'s input is `{"index": i, "salt": salt}`, its result `i * mult`, 10 tokens each.
fn steps(n: u32, salt: u32, mult: u32) -> Vec<pb::HistoryEvent> {
    let mut h = vec![ev(1, 0, A::RunStarted(Default::default()))];
    let mut push = |a: A| {
        let seq = h.len() as u64 + 1;
        h.push(ev(seq, seq as i64 * 10, a));
    };
    for i in 1..=n {
        push(A::WorkflowTaskCompleted(Default::default()));
        push(A::ActivityScheduled(pb::ActivityScheduled {
            command_seq: i,
            activity_type: "step".into(),
            input: json_payload(json!({ "index": i, "salt": salt })),
            ..Default::default()
        }));
        push(A::ActivityStarted(pb::ActivityStarted {
            command_seq: i,
            attempt: 1,
            ..Default::default()
        }));
        push(A::ActivityCompleted(pb::ActivityCompleted {
            command_seq: i,
            attempt: 1,
            result: json_payload(json!(i * mult)),
            duration_ms: 5,
            usage: Some(pb::Usage {
                input_tokens: 7,
                output_tokens: 3,
                cost_micros: 100,
                ..Default::default()
            }),
            ..Default::default()
        }));
    }
    push(A::WorkflowTaskCompleted(Default::default()));
    push(A::RunCompleted(pb::RunCompleted {
        command_seq: n + 1,
        result: json_payload(json!(n * mult)),
    }));
    h
}

#[test]
fn same_commands_are_identical() {
    let d = diff(&steps(3, 0, 1), &steps(3, 0, 1));
    assert!(d.identical());
    assert_eq!(d.a.commands.len(), 4);
    assert_eq!((d.a.tokens, d.a.cost_micros), (30, 300));
    assert_eq!(d.a.status, "completed");
    let text = d.to_text("A1", "B1", false);
    assert!(text.contains("same commands: 4 in both"), "{text}");
    let j = d.to_json("A1", "B1", false);
    assert_eq!(j["identical"], true);
    assert_eq!(j["first_divergence"], Value::Null);
    assert_eq!(j["activities"][0]["differs"], json!([]));
}

#[test]
fn a_longer_run_diverges_where_the_shorter_completes() {
    let d = diff(&steps(3, 0, 1), &steps(5, 0, 1));
    assert_eq!(d.divergence, Some(3));
    let j = d.to_json("a", "b", false);
    let first = &j["first_divergence"];
    assert_eq!(first["index"], 4);
    assert_eq!(first["a"]["kind"], "CompleteRun");
    assert_eq!(first["b"]["kind"], "ScheduleActivity");
    assert_eq!(first["b"]["name"], "step");
    assert_eq!(first["b"]["workflow_task"], 4);
    assert_eq!(j["activities"][4]["differs"], json!(["missing"]));
    assert_eq!(j["b"]["tokens"], 50);
    let text = d.to_text("a", "b", false);
    assert!(text.contains("first divergence at command 4"), "{text}");
    assert!(text.contains("A: CompleteRun input"), "{text}");
    assert!(text.contains("B: ScheduleActivity step input"), "{text}");
}

#[test]
fn different_inputs_diverge_at_the_first_command_with_hashes_not_payloads() {
    let d = diff(&steps(2, 1, 1), &steps(2, 2, 1));
    assert_eq!(d.divergence, Some(0));
    let j = d.to_json("a", "b", false);
    assert_eq!(
        j["activities"][0]["differs"],
        json!(["input"]),
        "same results, tokens and durations"
    );
    assert!(j["activities"][0]["a"]["input"].get("value").is_none());
    let text = d.to_text("a", "b", false);
    assert!(!text.contains("salt"), "no payloads unless asked: {text}");
    let shown = d.to_text("a", "b", true);
    assert!(shown.contains(r#"{"index":1,"salt":1}"#), "{shown}");
    let j = d.to_json("a", "b", true);
    assert_eq!(j["activities"][0]["a"]["input"]["value"]["salt"], 1);
}

#[test]
fn different_results_are_reported_but_the_structure_is_the_same_until_it_is_not() {
    // Same activity inputs, results doubled: the activities differ in result, and the
    // run results (a command's input) differ: the divergence is the CompleteRun.
    let d = diff(&steps(2, 0, 1), &steps(2, 0, 2));
    assert_eq!(d.divergence, Some(2));
    let j = d.to_json("a", "b", false);
    assert_eq!(j["activities"][0]["differs"], json!(["result"]));
}

#[test]
fn an_empty_history_differs_from_any_run() {
    let d = diff(&[], &steps(1, 0, 1));
    assert_eq!(d.divergence, Some(0));
    assert!(
        d.to_text("a", "b", false)
            .contains("A: no command (it issued 0)")
    );
    assert!(diff(&[], &[]).identical());
}
