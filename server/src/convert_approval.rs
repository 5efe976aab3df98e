//! Tool approvals: engine events and waiting-on entries <-> wire (the part of
//! [`crate::convert`] for issue 17's approval events, 120-122).

use steadfast_engine::event::{self as ev, ArgumentsDigest, Event};
use steadfast_engine::payload::Payload;
use steadfast_proto::v1 as pb;
use steadfast_proto::v1::history_event::Attributes as A;

use crate::convert::{payload, payload_from};

/// Most bytes of an activity's arguments shown as a preview to the human who decides (and
/// only when asked: arguments are payloads).
pub const APPROVAL_PREVIEW_BYTES_MAX: usize = 512;

/// One of this module's events to wire; `None` for every other event.
pub fn to_wire(e: &Event) -> Option<A> {
    Some(match e {
        Event::ApprovalRequested(a) => A::ApprovalRequested(pb::ApprovalRequested {
            command_seq: a.command_seq,
            attempt: a.attempt,
            reason: a.reason.clone(),
            declared_by: a.declared_by.clone(),
            arguments_bytes: a.arguments.len,
            arguments_hash: a.arguments.hash.to_vec(),
        }),
        Event::ActivityApproved(a) => A::ActivityApproved(pb::ActivityApproved {
            command_seq: a.command_seq,
            identity: a.identity.clone(),
            comment: a.comment.clone(),
            input: a.input.as_ref().map(payload),
        }),
        Event::ActivityDenied(a) => A::ActivityDenied(pb::ActivityDenied {
            command_seq: a.command_seq,
            identity: a.identity.clone(),
            reason: a.reason.clone(),
        }),
        _ => return None,
    })
}

/// One of this module's wire events back to an engine event; `None` for every other event,
/// `Some(Err)` naming what is wrong.
pub fn from_wire(a: &A) -> Option<Result<Event, String>> {
    Some(Ok(match a {
        A::ApprovalRequested(a) => {
            let Ok(hash) = <[u8; 32]>::try_from(a.arguments_hash.as_slice()) else {
                return Some(Err("arguments_hash must be 32 bytes".into()));
            };
            Event::ApprovalRequested(ev::ApprovalRequested {
                command_seq: a.command_seq,
                attempt: a.attempt,
                reason: a.reason.clone(),
                declared_by: a.declared_by.clone(),
                arguments: ArgumentsDigest {
                    len: a.arguments_bytes,
                    hash,
                },
            })
        }
        A::ActivityApproved(a) => Event::ActivityApproved(ev::ActivityApproved {
            command_seq: a.command_seq,
            identity: a.identity.clone(),
            comment: a.comment.clone(),
            input: a.input.as_ref().map(payload_from),
        }),
        A::ActivityDenied(a) => Event::ActivityDenied(ev::ActivityDenied {
            command_seq: a.command_seq,
            identity: a.identity.clone(),
            reason: a.reason.clone(),
        }),
        _ => return None,
    }))
}

/// The waiting-on entry of an activity that waits for approval (without a preview).
pub fn waiting(
    id: u32,
    activity_type: &str,
    attempt: u32,
    reason: &str,
    declared_by: &str,
    arguments: &ArgumentsDigest,
    since_ms: i64,
) -> pb::WaitApproval {
    pb::WaitApproval {
        activity_id: id,
        activity_type: activity_type.to_string(),
        attempt,
        reason: reason.to_string(),
        declared_by: declared_by.to_string(),
        arguments_bytes: arguments.len,
        arguments_hash: arguments.hash.to_vec(),
        since_ms,
        arguments_preview: String::new(),
    }
}

/// The first [`APPROVAL_PREVIEW_BYTES_MAX`] bytes of `p` (inline), cut at a character
/// boundary; binary data is shown as its length only.
pub fn preview(p: &Payload) -> String {
    let Ok(text) = std::str::from_utf8(&p.data) else {
        return format!("({} bytes, not UTF-8)", p.data.len());
    };
    if text.len() <= APPROVAL_PREVIEW_BYTES_MAX {
        return text.to_string();
    }
    let mut end = APPROVAL_PREVIEW_BYTES_MAX;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}... ({} bytes in all)", &text[..end], text.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_preview_is_cut_at_a_character_boundary() {
        let long = "é".repeat(APPROVAL_PREVIEW_BYTES_MAX);
        let p = preview(&Payload::json(long.as_bytes().to_vec()));
        assert!(p.starts_with("éé") && p.contains("bytes in all"), "{p}");
        assert_eq!(preview(&Payload::json(b"{}".to_vec())), "{}");
        assert!(preview(&Payload::json(vec![0xff, 0xfe])).contains("not UTF-8"));
    }

    #[test]
    fn approval_events_round_trip() {
        let events = [
            Event::ApprovalRequested(ev::ApprovalRequested {
                command_seq: 3,
                attempt: 1,
                reason: "why".into(),
                declared_by: "w".into(),
                arguments: ArgumentsDigest::of(&Payload::json(b"{}".to_vec())),
            }),
            Event::ActivityApproved(ev::ActivityApproved {
                command_seq: 3,
                identity: "alice".into(),
                comment: "ok".into(),
                input: Some(Payload::json(b"{\"a\":1}".to_vec())),
            }),
            Event::ActivityDenied(ev::ActivityDenied {
                command_seq: 3,
                identity: "bob".into(),
                reason: "no".into(),
            }),
        ];
        for e in events {
            let back = from_wire(&to_wire(&e).unwrap()).unwrap().unwrap();
            assert_eq!(back, e);
        }
    }
}
