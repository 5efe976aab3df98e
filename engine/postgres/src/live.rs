//! Live output relayed between nodes ([`Store::relay_live`]): ephemeral text of running
//! attempts sent with NOTIFY on a channel of its own, so that a watcher on any node sees
//! what a worker published to one.
//!
//! Never on the append path: the node that received the text sends it from the
//! `PublishActivityDeltas` call, on a pooled connection, at most [`LIVE_SENDS_MAX`] at a
//! time (a send that finds them busy waits, which slows that worker's publishing only).
//! Pieces are packed into as few payloads as fit PostgreSQL's limit (NOTIFY refuses 8000
//! bytes and more; text is split at character boundaries by its JSON-escaped length).
//! One connection sends them in order, one transaction each, and PostgreSQL delivers
//! notifications in commit order, so the other nodes get the text before the change of an
//! outcome the worker reported after publishing it.
//!
//! [`Store::relay_live`]: steadfast_engine::store::Store::relay_live

use steadfast_engine::store::LiveText;

use crate::codec;

/// The channel live output is relayed on (apart from [`crate::notify::CHANNEL`], so a burst
/// of text never delays a wakeup's decoding, and a node could stop listening to it).
pub(crate) const LIVE_CHANNEL: &str = "steadfast_live";
/// Largest payload sent in one NOTIFY (PostgreSQL refuses 8000 bytes and more).
pub(crate) const LIVE_PAYLOAD_BYTES_MAX: usize = 7_000;
/// Relays in flight at once on one node (each holds a pooled connection while it sends).
pub(crate) const LIVE_SENDS_MAX: usize = 2;
/// Room kept in a payload for its envelope (`{"from":"<32 hex>","l":[...]}`).
const ENVELOPE_BYTES: usize = 64;

/// JSON payloads of at most [`LIVE_PAYLOAD_BYTES_MAX`] bytes:
/// `{"from": id, "l": [[ns, run_id, activity_id, attempt, offset, text], ...]}`.
pub(crate) fn payloads(from: &str, pieces: &[LiveText]) -> Vec<String> {
    let budget = LIVE_PAYLOAD_BYTES_MAX - ENVELOPE_BYTES;
    let mut items = Vec::new();
    for p in pieces {
        let item = |offset: u64, text: &str| {
            serde_json::json!([
                p.key.namespace,
                p.key.run_id.0.to_string(),
                p.activity_id,
                p.attempt,
                offset,
                text
            ])
            .to_string()
        };
        // What the text may take in an item of its own: the rest is the item's fixed part.
        let room = budget.saturating_sub(item(p.offset, "").len());
        if room < 64 {
            // A namespace near its length limit full of escapes: best effort, dropped.
            continue;
        }
        for (offset, text) in split(p.offset, &p.text, room) {
            items.push(item(offset, text));
        }
    }
    let mut out = Vec::new();
    let mut batch: Vec<String> = Vec::new();
    let mut size = 0;
    for it in items {
        let n = it.len() + 1;
        if !batch.is_empty() && size + n > budget {
            out.push(envelope(from, &batch));
            batch.clear();
            size = 0;
        }
        size += n;
        batch.push(it);
    }
    if !batch.is_empty() {
        out.push(envelope(from, &batch));
    }
    out
}

fn envelope(from: &str, items: &[String]) -> String {
    format!(
        "{{\"from\":{},\"l\":[{}]}}",
        serde_json::Value::from(from),
        items.join(",")
    )
}

/// `text` (at `offset`) in pieces whose JSON-escaped length is at most `room`, cut at
/// character boundaries.
fn split(offset: u64, text: &str, room: usize) -> Vec<(u64, &str)> {
    let mut out = Vec::new();
    let (mut start, mut escaped) = (0, 0);
    for (i, c) in text.char_indices() {
        let n = escaped_len(c);
        if escaped + n > room {
            out.push((offset + start as u64, &text[start..i]));
            (start, escaped) = (i, 0);
        }
        escaped += n;
    }
    if start < text.len() {
        out.push((offset + start as u64, &text[start..]));
    }
    out
}

/// The bytes `c` takes inside a JSON string as serde_json writes it.
fn escaped_len(c: char) -> usize {
    match c {
        '"' | '\\' | '\n' | '\r' | '\t' | '\u{8}' | '\u{c}' => 2,
        c if (c as u32) < 0x20 => 6,
        c => c.len_utf8(),
    }
}

/// Decodes a payload; `None` for our own or a malformed one.
pub(crate) fn decode(payload: &str, own: &str) -> Option<Vec<LiveText>> {
    let v: serde_json::Value = serde_json::from_str(payload).ok()?;
    if v.get("from")?.as_str()? == own {
        return None;
    }
    let mut out = Vec::new();
    for it in v.get("l")?.as_array()? {
        let a = it.as_array()?;
        let s = |i: usize| a.get(i).and_then(|x| x.as_str());
        let n = |i: usize| a.get(i).and_then(serde_json::Value::as_u64);
        out.push(LiveText {
            key: codec::run_key(s(0)?.to_string(), s(1)?.parse().ok()?),
            activity_id: u32::try_from(n(2)?).ok()?,
            attempt: u32::try_from(n(3)?).ok()?,
            offset: n(4)?,
            text: s(5)?.to_string(),
        });
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use steadfast_engine::ids::{RunId, RunKey};

    fn piece(key: &RunKey, offset: u64, text: &str) -> LiveText {
        LiveText {
            key: key.clone(),
            activity_id: 3,
            attempt: 2,
            offset,
            text: text.into(),
        }
    }

    #[test]
    fn small_pieces_share_one_payload_and_decode_back() {
        let key = RunKey::new("ns", RunId::new_v7());
        let pieces = [piece(&key, 0, "Hel"), piece(&key, 3, "lo \"é\"\n")];
        let p = payloads("a", &pieces);
        assert_eq!(p.len(), 1);
        assert_eq!(decode(&p[0], "a"), None, "our own is ignored");
        assert_eq!(decode(&p[0], "b").unwrap(), pieces);
        assert_eq!(decode("{\"from\":\"b\",\"l\":[[1]]}", "a"), None);
    }

    #[test]
    fn large_text_is_split_under_the_limit_at_char_boundaries() {
        let key = RunKey::new("n".repeat(255), RunId::new_v7());
        // Every kind of char: plain, multi-byte, two-byte escapes, six-byte escapes.
        let unit = "ab é\u{1F600}\"\\\n\u{1}";
        let text = unit.repeat(4_000);
        let pieces = [
            piece(&key, 7, &text),
            piece(&key, 7 + text.len() as u64, "!"),
        ];
        let p = payloads("a", &pieces);
        assert!(p.len() > 5, "{}", p.len());
        assert!(p.iter().all(|p| p.len() <= LIVE_PAYLOAD_BYTES_MAX));
        let back: Vec<LiveText> = p.iter().flat_map(|p| decode(p, "b").unwrap()).collect();
        let mut end = 7;
        let mut joined = String::new();
        for b in &back {
            assert_eq!(b.offset, end, "contiguous offsets");
            end += b.text.len() as u64;
            joined.push_str(&b.text);
        }
        assert_eq!(joined, format!("{text}!"));
    }
}
