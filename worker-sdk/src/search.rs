//! Search attributes: typed values a run carries under names, set at start
//! ([`crate::client::StartOptions::search_attributes`]) or by the workflow
//! ([`crate::workflow::WorkflowContext::upsert_search_attributes`]), and filtered on by
//! [`crate::client::ListOptions::search_attributes`] and `steadfast run list --attr`.
//!
//! The server enforces the rules: names are 1-64 bytes of letters, digits, `_`, `-` or `.`,
//! starting with a letter; a keyword is at most 256 bytes; a run carries at most 32.

use steadfast_proto::v1 as pb;
use steadfast_proto::v1::search_attribute::Value as V;

/// A typed search attribute value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SearchValue {
    /// A string matched exactly.
    Keyword(String),
    /// A signed integer.
    Int(i64),
    /// A boolean.
    Bool(bool),
    /// A time, ms since the Unix epoch.
    Time(i64),
}

impl From<&str> for SearchValue {
    fn from(s: &str) -> Self {
        SearchValue::Keyword(s.to_owned())
    }
}

impl From<String> for SearchValue {
    fn from(s: String) -> Self {
        SearchValue::Keyword(s)
    }
}

impl From<i64> for SearchValue {
    fn from(i: i64) -> Self {
        SearchValue::Int(i)
    }
}

impl From<bool> for SearchValue {
    fn from(b: bool) -> Self {
        SearchValue::Bool(b)
    }
}

impl SearchValue {
    /// The value of a wire attribute (`None` when it has none).
    pub fn from_proto(a: &pb::SearchAttribute) -> Option<SearchValue> {
        Some(match a.value.as_ref()? {
            V::KeywordValue(s) => SearchValue::Keyword(s.clone()),
            V::IntValue(i) => SearchValue::Int(*i),
            V::BoolValue(b) => SearchValue::Bool(*b),
            V::TimeMs(t) => SearchValue::Time(*t),
        })
    }
}

/// One attribute as the wire carries it.
pub fn to_proto(name: &str, v: &SearchValue) -> pb::SearchAttribute {
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

/// Attributes as the wire carries them, by name (a name given twice keeps its last value),
/// which is also the order the server records them in.
pub fn list_to_proto<N: Into<String>>(
    attrs: impl IntoIterator<Item = (N, SearchValue)>,
) -> Vec<pb::SearchAttribute> {
    let by_name: std::collections::BTreeMap<String, SearchValue> =
        attrs.into_iter().map(|(n, v)| (n.into(), v)).collect();
    by_name.iter().map(|(n, v)| to_proto(n, v)).collect()
}
