//! Request validation: every bad request gets a status whose message says what to fix (C5).

use steadfast_engine::event::Effect;
use steadfast_engine::ids::{DEFAULT_NAMESPACE, NAME_LEN_MAX};
use steadfast_engine::payload::{ENCODING_JSON, PAYLOAD_BYTES_MAX, Payload};
use steadfast_engine::{RunId, RunKey};
use steadfast_proto::v1 as pb;
use tonic::Status;

use crate::convert;

/// Most characters of a refused value quoted back in an error message: enough to recognise
/// it, never an echo of a hostile megabyte.
pub const QUOTE_CHARS_MAX: usize = 40;

/// `v` for an error message: escaped (control characters, quotes), at most
/// [`QUOTE_CHARS_MAX`] characters, and its full length when cut.
pub fn quote(v: &str) -> String {
    let mut out: String = v.chars().take(QUOTE_CHARS_MAX).collect();
    let cut = out.len() < v.len();
    out = format!("{out:?}");
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
    if v.len() > NAME_LEN_MAX {
        return Err(Status::invalid_argument(format!(
            "{field} is {} bytes long; the limit is {NAME_LEN_MAX}",
            v.len()
        )));
    }
    if v.chars().any(char::is_control) {
        return Err(Status::invalid_argument(format!(
            "{field} contains control characters"
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
            "run_id {v:?} is not a UUID (e.g. 0190f0b2-7c1d-7aa4-9a8b-1c2d3e4f5a6b)"
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
    if p.data.len() > PAYLOAD_BYTES_MAX {
        return Err(Status::resource_exhausted(format!(
            "{field} is {} bytes; the limit is {PAYLOAD_BYTES_MAX} bytes: store large data elsewhere and pass a reference",
            p.data.len()
        )));
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
