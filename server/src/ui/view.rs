//! The JSON the API answers: the CLI's JSON shapes (`run show --json`, `history show
//! --json`), with every payload replaced by its size, so that a list or a history page never
//! carries payload bytes; and one payload shown on demand, cut when large.

use serde_json::{Value, json};
use steadfast_proto::v1 as pb;
use steadfast_proto::v1::history_event::Attributes as A;

use crate::cli::events::event_json;
use crate::cli::fmt::is_json;
use crate::cli::render::run_json;

/// Most payload bytes shown in a page; a larger payload is marked truncated and offered as a
/// download.
pub const PAYLOAD_VIEW_BYTES_MAX: usize = 64 * 1024;

/// The payloads an event carries, by the attribute name the JSON shapes use.
pub fn payload_fields(e: &pb::HistoryEvent) -> Vec<(&'static str, &pb::Payload)> {
    let field: (&'static str, &Option<pb::Payload>) = match &e.attributes {
        Some(A::RunStarted(a)) => ("input", &a.input),
        Some(A::ActivityScheduled(a)) => ("input", &a.input),
        Some(A::ActivityCompleted(a)) => ("result", &a.result),
        Some(A::ActivityProgress(a)) => ("details", &a.details),
        Some(A::SignalReceived(a)) => ("input", &a.input),
        Some(A::PartialResultRecorded(a)) => ("result", &a.result),
        Some(A::RunCompleted(a)) => ("result", &a.result),
        Some(A::RunCancelled(a)) => ("partial_result", &a.partial_result),
        Some(A::RunContinuedAsNew(a)) => ("input", &a.input),
        Some(A::ChildRunRequested(a)) => ("input", &a.input),
        Some(A::ChildRunClosed(a)) => ("result", &a.result),
        Some(A::RunSignalRequested(a)) => ("input", &a.input),
        Some(A::UpdateRequested(a)) => ("input", &a.input),
        Some(A::UpdateCompleted(a)) => ("result", &a.result),
        Some(A::ActivityApproved(a)) => ("edited_input", &a.input),
        _ => return Vec::new(),
    };
    field.1.iter().map(|p| (field.0, p)).collect()
}

/// A payload's place in a page: its size and encoding, never its bytes.
pub fn payload_stub(p: &pb::Payload) -> Value {
    json!({ "payload": true, "bytes": p.data.len(), "encoding": encoding(p) })
}

fn encoding(p: &pb::Payload) -> &str {
    if p.encoding.is_empty() {
        "json/plain"
    } else {
        &p.encoding
    }
}

/// An event for a history page: the `history show --json` object, payloads as stubs.
pub fn event_view(e: &pb::HistoryEvent) -> Value {
    let mut m = event_json(e);
    if let Some(Value::Object(attrs)) = m.get_mut("attributes") {
        for (name, p) in payload_fields(e) {
            attrs.insert(name.to_string(), payload_stub(p));
        }
    }
    Value::Object(m)
}

/// A run: the `run show --json` object, its result as a stub.
pub fn run_view(r: &pb::RunInfo) -> Value {
    let mut v = run_json(r);
    if let Some(p) = &r.result {
        v["result"] = payload_stub(p);
    }
    v
}

/// One payload, shown: the JSON value when it is JSON and small enough, else its first
/// [`PAYLOAD_VIEW_BYTES_MAX`] bytes as text, marked truncated with its full size.
pub fn payload_view(name: &str, p: &pb::Payload) -> Value {
    let bytes = p.data.len();
    let hash = hex::encode(blake3::hash(&p.data).as_bytes());
    let truncated = bytes > PAYLOAD_VIEW_BYTES_MAX;
    let shown = &p.data[..bytes.min(PAYLOAD_VIEW_BYTES_MAX)];
    let value = if !truncated && is_json(p) {
        serde_json::from_slice::<Value>(shown).ok()
    } else {
        None
    };
    let text = match &value {
        Some(_) => Value::Null,
        None => Value::from(String::from_utf8_lossy(shown).into_owned()),
    };
    json!({
        "field": name, "bytes": bytes, "encoding": encoding(p), "blake3": hash,
        "truncated": truncated, "value": value, "text": text,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn completed(data: Vec<u8>) -> pb::HistoryEvent {
        pb::HistoryEvent {
            seq: 7,
            time_ms: 1_700_000_000_000,
            hash: vec![0; 32],
            kind: steadfast_engine::EventKind::ActivityCompleted as i32,
            attributes: Some(A::ActivityCompleted(pb::ActivityCompleted {
                command_seq: 3,
                attempt: 1,
                result: Some(pb::Payload {
                    encoding: String::new(),
                    data,
                }),
                ..Default::default()
            })),
        }
    }

    #[test]
    fn a_history_page_carries_sizes_not_payloads() {
        let secret = br#"{"prompt":"the secret prompt"}"#.to_vec();
        let e = completed(secret.clone());
        let v = event_view(&e);
        let text = v.to_string();
        assert!(!text.contains("secret"), "{text}");
        assert_eq!(v["attributes"]["result"]["bytes"], secret.len());
        assert_eq!(v["attributes"]["activity_id"], 3);
    }

    #[test]
    fn a_large_payload_is_cut_and_marked() {
        let big = format!("\"{}\"", "x".repeat(PAYLOAD_VIEW_BYTES_MAX * 2)).into_bytes();
        let e = completed(big.clone());
        let (name, p) = payload_fields(&e)[0];
        let v = payload_view(name, p);
        assert_eq!(v["truncated"], true);
        assert_eq!(v["bytes"], big.len());
        assert_eq!(v["text"].as_str().unwrap().len(), PAYLOAD_VIEW_BYTES_MAX);
        let small = completed(br#"{"a":1}"#.to_vec());
        let (name, p) = payload_fields(&small)[0];
        let v = payload_view(name, p);
        assert_eq!(
            (v["truncated"].clone(), v["value"]["a"].clone()),
            (json!(false), json!(1))
        );
    }
}
