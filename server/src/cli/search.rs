//! Search attributes and the memo on the command line: `--attr NAME[:TYPE]=VALUE` (at start
//! and as a `run list` filter), their JSON and text forms in `run show` and `history show`.

use serde_json::{Value, json};
use steadfast_engine::search;
use steadfast_proto::v1 as pb;
use steadfast_proto::v1::search_attribute::Value as V;

/// Parses `--attr NAME=VALUE` (a keyword) or `NAME:TYPE=VALUE` (TYPE: keyword, int, bool,
/// time), validated by the engine's rules (clap value parser).
pub fn attr(s: &str) -> Result<pb::SearchAttribute, String> {
    let (name, v) = search::parse_assignment(s).map_err(|e| e.to_string())?;
    Ok(crate::convert_search::attribute(&name, &v))
}

fn value_json(v: &Option<V>) -> Value {
    match v {
        Some(V::KeywordValue(s)) => json!(s),
        Some(V::IntValue(i)) => json!(i),
        Some(V::BoolValue(b)) => json!(b),
        Some(V::TimeMs(t)) => json!({ "time_ms": t, "time": super::fmt::rfc3339_ms(*t) }),
        None => Value::Null,
    }
}

/// `{name: value}` (a time as `{time_ms, time}`).
pub fn attributes_json(list: &[pb::SearchAttribute]) -> Value {
    Value::Object(
        list.iter()
            .map(|a| (a.name.clone(), value_json(&a.value)))
            .collect(),
    )
}

/// `name=value name:int=2 ...`, the way `--attr` takes them.
pub fn attributes_text(list: &[pb::SearchAttribute]) -> String {
    list.iter()
        .map(|a| match &a.value {
            Some(V::KeywordValue(s)) => format!("{}={s}", a.name),
            Some(V::IntValue(i)) => format!("{}:int={i}", a.name),
            Some(V::BoolValue(b)) => format!("{}:bool={b}", a.name),
            Some(V::TimeMs(t)) => format!("{}:time={}", a.name, super::fmt::rfc3339_ms(*t)),
            None => format!("{}=?", a.name),
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// A memo's JSON (what `run show --json` prints under `memo`).
pub fn memo_json(m: &Option<pb::Payload>) -> Value {
    m.as_ref()
        .map(|p| serde_json::from_slice(&p.data).unwrap_or(Value::Null))
        .unwrap_or(Value::Null)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attrs_round_trip_through_text() {
        let list: Vec<pb::SearchAttribute> = ["customer=acme", "priority:int=2", "vip:bool=true"]
            .iter()
            .map(|s| attr(s).unwrap())
            .collect();
        assert_eq!(
            attributes_text(&list),
            "customer=acme priority:int=2 vip:bool=true"
        );
        assert_eq!(
            attributes_json(&list),
            json!({"customer": "acme", "priority": 2, "vip": true})
        );
        assert!(
            attr("priority:int=two")
                .unwrap_err()
                .contains("not an integer")
        );
    }
}
