//! Search attributes and the memo: engine <-> wire (the part of [`crate::convert`] for
//! events 110-111, `RunInfo`'s search fields and the requests that carry attributes).

use steadfast_engine::event::{self as ev, Event};
use steadfast_engine::search::{self, SearchAttributes, SearchValue};
use steadfast_proto::v1 as pb;
use steadfast_proto::v1::history_event::Attributes as A;
use steadfast_proto::v1::search_attribute::Value as V;

use crate::convert::{payload, payload_from};

/// Engine attributes to wire, by name.
pub fn attributes(a: &SearchAttributes) -> Vec<pb::SearchAttribute> {
    a.iter().map(|(n, v)| attribute(n, v)).collect()
}

/// One attribute to wire.
pub fn attribute(name: &str, v: &SearchValue) -> pb::SearchAttribute {
    pb::SearchAttribute {
        name: name.to_owned(),
        value: Some(match v {
            SearchValue::Keyword(s) => V::KeywordValue(s.clone()),
            SearchValue::Int(i) => V::IntValue(*i),
            SearchValue::Bool(b) => V::BoolValue(*b),
            SearchValue::Time(t) => V::TimeMs(*t),
        }),
    }
}

/// Wire attributes to engine ones, each validated (name, value size); a name given twice or
/// an attribute without a value is refused with what to fix.
pub fn attributes_from(list: &[pb::SearchAttribute]) -> Result<Vec<(String, SearchValue)>, String> {
    let mut out: Vec<(String, SearchValue)> = Vec::with_capacity(list.len());
    for a in list {
        let v = match &a.value {
            Some(V::KeywordValue(s)) => SearchValue::Keyword(s.clone()),
            Some(V::IntValue(i)) => SearchValue::Int(*i),
            Some(V::BoolValue(b)) => SearchValue::Bool(*b),
            Some(V::TimeMs(t)) => SearchValue::Time(*t),
            None => {
                search::validate_name(&a.name).map_err(|e| e.to_string())?;
                return Err(format!(
                    "search attribute {:?} has no value: set one of keyword_value, int_value, bool_value, time_ms",
                    a.name
                ));
            }
        };
        search::validate_attribute(&a.name, &v).map_err(|e| e.to_string())?;
        if out.iter().any(|(n, _)| *n == a.name) {
            return Err(format!("search attribute {:?} is given twice", a.name));
        }
        out.push((a.name.clone(), v));
    }
    Ok(out)
}

/// This module's events to wire; `None` for every other event.
pub fn to_wire(e: &Event) -> Option<A> {
    Some(match e {
        Event::SearchAttributesUpserted(a) => {
            A::SearchAttributesUpserted(pb::SearchAttributesUpserted {
                command_seq: a.command_seq,
                attributes: attributes(&a.attributes),
            })
        }
        Event::MemoRecorded(a) => A::MemoRecorded(pb::MemoRecorded {
            memo: Some(payload(&a.memo)),
        }),
        _ => return None,
    })
}

/// This module's wire events to engine events; `None` for every other event.
pub fn from_wire(a: &A) -> Option<Result<Event, String>> {
    Some(match a {
        A::SearchAttributesUpserted(a) => attributes_from(&a.attributes).map(|list| {
            Event::SearchAttributesUpserted(ev::SearchAttributesUpserted {
                command_seq: a.command_seq,
                attributes: list.into_iter().collect(),
            })
        }),
        A::MemoRecorded(a) => match &a.memo {
            Some(m) => Ok(Event::MemoRecorded(ev::MemoRecorded {
                memo: payload_from(m),
            })),
            None => Err("MemoRecorded without a memo".into()),
        },
        _ => return None,
    })
}

/// The events a start request's search attributes and memo add after its RunStarted
/// (validated: names, sizes, count, the memo JSON); refused with INVALID_ARGUMENT saying what
/// to fix.
pub fn start_events(r: &pb::StartWorkflowRequest) -> Result<Vec<Event>, tonic::Status> {
    let bad = |e: String| tonic::Status::invalid_argument(e);
    let mut out = Vec::new();
    if !r.search_attributes.is_empty() {
        let attributes: SearchAttributes = attributes_from(&r.search_attributes)
            .map_err(bad)?
            .into_iter()
            .collect();
        search::validate_upsert(&SearchAttributes::new(), &attributes)
            .map_err(|e| bad(e.to_string()))?;
        out.push(Event::SearchAttributesUpserted(
            ev::SearchAttributesUpserted {
                command_seq: 0,
                attributes,
            },
        ));
    }
    if let Some(m) = &r.memo {
        search::validate_memo(&m.data).map_err(|e| bad(e.to_string()))?;
        out.push(Event::MemoRecorded(ev::MemoRecorded {
            memo: steadfast_engine::payload::Payload::json(m.data.clone()),
        }));
    }
    Ok(out)
}
