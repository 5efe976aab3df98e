//! Request validation: every bad request gets a status whose message says what to fix (C5).

use steadfast_engine::event::Effect;
use steadfast_engine::ids::{DEFAULT_NAMESPACE, NAME_LEN_MAX};
#[cfg(test)]
use steadfast_engine::payload::PAYLOAD_BYTES_MAX;
use steadfast_engine::payload::{ENCODING_JSON, Payload};
use steadfast_engine::{RunId, RunKey};
use steadfast_proto::v1 as pb;
use tonic::Status;

use crate::convert;

mod fields;
pub use fields::{commands, enumeration, failure, free_text, start_request, undecodable, usage};

/// Most characters of a refused value quoted back in an error message: enough to recognise
/// it, never an echo of a hostile megabyte.
pub const QUOTE_CHARS_MAX: usize = 40;

/// `v` for an error message: escaped (control characters, quotes, `%`), at most
/// [`QUOTE_CHARS_MAX`] characters, and its full length when cut.
pub fn quote(v: &str) -> String {
    let mut out: String = v.chars().take(QUOTE_CHARS_MAX).collect();
    let cut = out.len() < v.len();
    // `%` too: tonic 0.12 does not percent-encode it in grpc-message, so `%a0` in a message
    // reaches the client as the byte 0xA0 and the whole status as UNKNOWN.
    out = format!("{out:?}").replace('%', "\\u{25}");
    if cut {
        out.push_str(&format!("... ({} bytes)", v.len()));
    }
    out
}

/// The namespace of a request ("default" when empty).
pub fn namespace(ns: &str) -> Result<String, Status> {
    if ns.is_empty() {
        return Ok(DEFAULT_NAMESPACE.to_string());
    }
    name("namespace", ns)?;
    Ok(ns.to_string())
}

/// A non-empty name of at most NAME_LEN_MAX bytes without control characters.
pub fn name(field: &str, v: &str) -> Result<(), Status> {
    if v.trim().is_empty() {
        return Err(Status::invalid_argument(format!(
            "{field} is empty: give a non-empty name"
        )));
    }
    let max = crate::limits::current().name_bytes_max;
    if v.len() as u64 > max {
        return Err(Status::invalid_argument(format!(
            "{field} is {} bytes long; the limit is name_bytes_max = {max} (server setting --limit name_bytes_max=N, at most {NAME_LEN_MAX})",
            v.len()
        )));
    }
    if v.chars().any(char::is_control) {
        return Err(Status::invalid_argument(format!(
            "{field} contains control characters"
        )));
    }
    if v.chars().any(is_invisible) {
        return Err(Status::invalid_argument(format!(
            "{field} contains invisible formatting characters (zero-width or bidirectional controls): names must read as they are"
        )));
    }
    if v.trim() != v {
        return Err(Status::invalid_argument(format!(
            "{field} starts or ends with whitespace: trim it"
        )));
    }
    Ok(())
}

/// Characters that change how a name is displayed without being seen: two names that look
/// the same in `run list` must be the same name.
fn is_invisible(c: char) -> bool {
    matches!(c,
        '\u{200B}'..='\u{200F}' | '\u{202A}'..='\u{202E}' | '\u{2060}'..='\u{2069}' | '\u{FEFF}')
}

/// Longest free text (a cancel or terminate reason) a request may carry.
pub const TEXT_BYTES_MAX: usize = 4096;

/// Free text: at most [`TEXT_BYTES_MAX`] bytes (it is recorded in the history).
pub fn text(field: &str, v: &str) -> Result<(), Status> {
    if v.len() > TEXT_BYTES_MAX {
        return Err(Status::invalid_argument(format!(
            "{field} is {} bytes long; the limit is {TEXT_BYTES_MAX}",
            v.len()
        )));
    }
    Ok(())
}

/// A search query (`ListRuns.text`): at most `max_bytes`, and no control or invisible
/// formatting characters (a query that cannot be typed on a terminal is a mistake or a probe;
/// refusing it keeps `run list` answers readable).
pub fn query_text(field: &str, v: &str, max_bytes: usize) -> Result<(), Status> {
    if v.len() > max_bytes {
        return Err(Status::invalid_argument(format!(
            "{field} is {} bytes long; the limit is {max_bytes}",
            v.len()
        )));
    }
    if v.chars().any(|c| c.is_control() || is_invisible(c)) {
        return Err(Status::invalid_argument(format!(
            "{field} contains control or invisible formatting characters: give words to match"
        )));
    }
    Ok(())
}

/// Most workflow or activity types one poll may name.
pub const POLL_TYPES_MAX: usize = 1_000;

/// The type names of a poll: at most [`POLL_TYPES_MAX`], each a valid name.
pub fn type_names<'a>(
    field: &str,
    names: impl ExactSizeIterator<Item = &'a str>,
) -> Result<(), Status> {
    if names.len() > POLL_TYPES_MAX {
        return Err(Status::invalid_argument(format!(
            "{field} names {} types; the limit is {POLL_TYPES_MAX}",
            names.len()
        )));
    }
    for (i, n) in names.enumerate() {
        name(&format!("{field}[{i}]"), n)?;
    }
    Ok(())
}

/// The effect a worker declares for an activity: UNSPECIFIED is `write`, the safe default
/// (a lost attempt waits for reconciliation instead of being repeated).
pub fn declared_effect(field: &str, v: i32) -> Result<Effect, Status> {
    match pb::Effect::try_from(v) {
        Ok(pb::Effect::Read) => Ok(Effect::Read),
        Ok(pb::Effect::Idempotent) => Ok(Effect::Idempotent),
        Ok(pb::Effect::Write | pb::Effect::Unspecified) => Ok(Effect::Write),
        Err(_) => Err(Status::invalid_argument(format!(
            "{field} is {v}, not an Effect: use EFFECT_READ (1), EFFECT_IDEMPOTENT (2) or EFFECT_WRITE (3)"
        ))),
    }
}

/// An optional name: empty is fine.
pub fn opt_name(field: &str, v: &str) -> Result<(), Status> {
    if v.is_empty() { Ok(()) } else { name(field, v) }
}

/// A run id in canonical UUID form.
pub fn run_id(v: &str) -> Result<RunId, Status> {
    if v.is_empty() {
        return Err(Status::invalid_argument(
            "run_id is empty: give the id printed by `steadfast run start`",
        ));
    }
    RunId::parse(v).map_err(|_| {
        Status::invalid_argument(format!(
            "run_id {} is not a UUID (e.g. 0190f0b2-7c1d-7aa4-9a8b-1c2d3e4f5a6b)",
            quote(v)
        ))
    })
}

/// The run key of a request.
pub fn run_key(ns: &str, id: &str) -> Result<RunKey, Status> {
    Ok(RunKey::new(namespace(ns)?, run_id(id)?))
}

/// A payload: within the size limit, and valid JSON when its encoding says JSON.
/// `None` becomes JSON `null`.
pub fn payload(field: &str, p: Option<&pb::Payload>) -> Result<Payload, Status> {
    let Some(p) = p else {
        return Ok(Payload::json(b"null".to_vec()));
    };
    opt_name(&format!("{field}.encoding"), &p.encoding)?;
    let max = crate::limits::current().payload_bytes_max;
    if p.data.len() as u64 > max {
        return Err(crate::limits::exceeded(
            format_args!(
                "{field} is {} bytes: store large data elsewhere and pass a reference",
                p.data.len()
            ),
            "payload_bytes_max",
            max,
        ));
    }
    let out = convert::payload_from(p);
    if out.encoding == ENCODING_JSON
        && let Err(e) = serde_json::from_slice::<serde::de::IgnoredAny>(&out.data)
    {
        return Err(Status::invalid_argument(format!(
            "{field} is not valid JSON: {e}"
        )));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tonic::Code;

    #[test]
    fn names_and_ids() {
        assert_eq!(namespace("").unwrap(), "default");
        assert_eq!(
            name("workflow_type", "").unwrap_err().code(),
            Code::InvalidArgument
        );
        assert_eq!(
            name("workflow_type", &"x".repeat(NAME_LEN_MAX + 1))
                .unwrap_err()
                .code(),
            Code::InvalidArgument
        );
        assert!(run_id("nope").unwrap_err().message().contains("not a UUID"));
        assert!(run_id(&RunId::new_v7().to_string()).is_ok());
    }

    #[test]
    fn refused_values_are_quoted_short_and_escaped() {
        assert_eq!(quote("abc"), "\"abc\"");
        let long = "\u{1b}[2J".repeat(100_000);
        let q = quote(&long);
        assert!(q.len() < 2 * QUOTE_CHARS_MAX + 40, "{q}");
        assert!(
            !q.contains('\u{1b}') && q.ends_with("(400000 bytes)"),
            "{q}"
        );
        let e = run_id(&"x".repeat(1 << 20)).unwrap_err();
        assert!(e.message().len() < 200, "{}", e.message().len());
        assert_eq!(quote("100%ab"), "\"100\\u{25}ab\"");
        assert!(name("task_queue", "q\u{202E}evil").is_err());
        assert!(name("task_queue", " q").is_err());
        assert!(name("task_queue", "a queue").is_ok());
        assert!(text("reason", &"r".repeat(TEXT_BYTES_MAX + 1)).is_err());
    }

    #[test]
    fn poll_types_and_effects() {
        let many: Vec<String> = (0..=POLL_TYPES_MAX).map(|i| i.to_string()).collect();
        let e = type_names("activity_types", many.iter().map(String::as_str)).unwrap_err();
        assert!(e.message().contains("limit is 1000"), "{}", e.message());
        let e = type_names("activity_types", ["ok", ""].into_iter()).unwrap_err();
        assert!(
            e.message().contains("activity_types[1] is empty"),
            "{}",
            e.message()
        );
        assert_eq!(declared_effect("e", 0).unwrap(), Effect::Write);
        assert_eq!(declared_effect("e", 1).unwrap(), Effect::Read);
        assert_eq!(declared_effect("e", 2).unwrap(), Effect::Idempotent);
        assert_eq!(declared_effect("e", 3).unwrap(), Effect::Write);
        assert_eq!(
            declared_effect("e", 9).unwrap_err().code(),
            Code::InvalidArgument
        );
    }

    #[test]
    fn payloads() {
        let bad = pb::Payload {
            encoding: String::new(),
            data: b"{nope".to_vec(),
        };
        let e = payload("input", Some(&bad)).unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument);
        assert!(
            e.message().contains("input is not valid JSON"),
            "{}",
            e.message()
        );
        let big = pb::Payload {
            encoding: "binary/plain".into(),
            data: vec![0; PAYLOAD_BYTES_MAX + 1],
        };
        assert_eq!(
            payload("input", Some(&big)).unwrap_err().code(),
            Code::ResourceExhausted
        );
        let ok = pb::Payload {
            encoding: String::new(),
            data: b"{\"a\":1}".to_vec(),
        };
        assert_eq!(payload("input", Some(&ok)).unwrap().data, b"{\"a\":1}");
        assert_eq!(payload("input", None).unwrap().data, b"null");
    }
}
