//! Run search: typed search attributes, the memo, the failed-activity set and the free-text
//! summary, with their limits and validation. One home for the rules both stores, the server
//! and the CLI apply.
//!
//! - **Search attributes** are typed values a run carries under names (`customer=acme`,
//!   `priority:int=2`): set by the caller at start, or upserted by the workflow
//!   (`SearchAttributesUpserted`, a command event, so replay is deterministic). Both stores
//!   index them: a filter on one reads the runs that have that value, not every run.
//! - **The memo** is free-form JSON set at start (`MemoRecorded`), shown by `run show`, not
//!   indexed (its text is part of the summary).
//! - **Failed activity types**: the types of the activities whose *last* attempt failed or
//!   timed out (no retry left), which includes the activity a run failed because of.
//! - **The summary** that `--text` matches: workflow type, workflow id, memo text, last
//!   progress message, held message and failure message (see [`summary`]).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::event::TimeMs;
use crate::state::RunState;

/// Most search attributes one run may carry.
pub const SEARCH_ATTRIBUTES_MAX: usize = 32;
/// Longest attribute name, in bytes.
pub const SEARCH_ATTRIBUTE_NAME_BYTES_MAX: usize = 64;
/// Longest keyword value, in bytes.
pub const SEARCH_KEYWORD_BYTES_MAX: usize = 256;
/// Largest memo (JSON), in bytes.
pub const MEMO_BYTES_MAX: usize = 16 * 1024;
/// Most distinct failed activity types a run remembers (the first ones are kept).
pub const FAILED_ACTIVITY_TYPES_KEPT_MAX: usize = 32;
/// Longest `--text` query, in bytes.
pub const SEARCH_TEXT_BYTES_MAX: usize = 256;

/// A typed search attribute value. Stored in events and states (msgpack): never reorder.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum SearchValue {
    /// A string matched exactly (`customer=acme`).
    Keyword(String),
    /// A signed integer (`priority:int=2`).
    Int(i64),
    /// A boolean (`vip:bool=true`).
    Bool(bool),
    /// A time, ms since the Unix epoch (`due:time=2026-05-01T00:00:00Z` or ms).
    Time(TimeMs),
}

/// Attribute name -> value.
pub type SearchAttributes = BTreeMap<String, SearchValue>;

impl SearchValue {
    /// The type's name as the CLI writes it (`name:TYPE=value`).
    pub fn type_name(&self) -> &'static str {
        match self {
            SearchValue::Keyword(_) => "keyword",
            SearchValue::Int(_) => "int",
            SearchValue::Bool(_) => "bool",
            SearchValue::Time(_) => "time",
        }
    }

    /// Stable one-byte code of the type (in index keys: never reuse a number).
    pub fn type_code(&self) -> u8 {
        match self {
            SearchValue::Keyword(_) => 1,
            SearchValue::Int(_) => 2,
            SearchValue::Bool(_) => 3,
            SearchValue::Time(_) => 4,
        }
    }

    /// The value as text (what `run show` prints after `name:type=`).
    pub fn to_text(&self) -> String {
        match self {
            SearchValue::Keyword(s) => s.clone(),
            SearchValue::Int(i) | SearchValue::Time(i) => i.to_string(),
            SearchValue::Bool(b) => b.to_string(),
        }
    }

    /// Bytes that identify the value within its attribute: type code, then the value (an
    /// integer or time as 8 bytes that sort like the number).
    pub fn index_bytes(&self) -> Vec<u8> {
        let mut v = vec![self.type_code()];
        match self {
            SearchValue::Keyword(s) => v.extend_from_slice(s.as_bytes()),
            SearchValue::Int(i) | SearchValue::Time(i) => {
                v.extend_from_slice(&((*i as u64) ^ (1 << 63)).to_be_bytes())
            }
            SearchValue::Bool(b) => v.push(u8::from(*b)),
        }
        v
    }
}

/// The bytes that identify `name = value` in an index (both stores): name length u8 |
/// name | [`SearchValue::index_bytes`].
pub fn attribute_index_value(name: &str, value: &SearchValue) -> Vec<u8> {
    let mut v = vec![name.len().min(255) as u8];
    v.extend_from_slice(name.as_bytes());
    v.extend_from_slice(&value.index_bytes());
    v
}

/// Bad search input, with what to fix. Refused before anything is written.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// An attribute name breaks the rules.
    #[error(
        "search attribute name {0:?} is not valid: use 1 to {SEARCH_ATTRIBUTE_NAME_BYTES_MAX} bytes of letters, digits, '_', '-' or '.', starting with a letter"
    )]
    Name(String),
    /// More attributes than a run may carry.
    #[error(
        "a run may carry at most {SEARCH_ATTRIBUTES_MAX} search attributes; this would make it {0}"
    )]
    TooMany(usize),
    /// A keyword value is too long.
    #[error(
        "search attribute {name:?}: a keyword value may be at most {SEARCH_KEYWORD_BYTES_MAX} bytes, this one is {len}"
    )]
    ValueTooLong {
        /// The attribute.
        name: String,
        /// Its value's length.
        len: usize,
    },
    /// `name[:type]=value` did not parse.
    #[error("search attribute {input:?}: {detail}")]
    Syntax {
        /// A short prefix of the input.
        input: String,
        /// What is wrong.
        detail: String,
    },
    /// The memo is too large.
    #[error("the memo is {0} bytes; at most {MEMO_BYTES_MAX} are allowed")]
    MemoTooLarge(usize),
    /// The memo is not JSON.
    #[error("the memo is not valid JSON: {0}")]
    MemoNotJson(String),
    /// A `--text` query is too long.
    #[error("the text query is {0} bytes; at most {SEARCH_TEXT_BYTES_MAX} are allowed")]
    TextTooLong(usize),
}

/// Checks an attribute name: 1..=64 bytes of `[A-Za-z0-9_.-]`, starting with a letter.
pub fn validate_name(name: &str) -> Result<(), Error> {
    let ok = !name.is_empty()
        && name.len() <= SEARCH_ATTRIBUTE_NAME_BYTES_MAX
        && name.as_bytes()[0].is_ascii_alphabetic()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'));
    if ok {
        Ok(())
    } else {
        Err(Error::Name(short(name)))
    }
}

/// Checks one attribute (name and value).
pub fn validate_attribute(name: &str, value: &SearchValue) -> Result<(), Error> {
    validate_name(name)?;
    if let SearchValue::Keyword(s) = value
        && s.len() > SEARCH_KEYWORD_BYTES_MAX
    {
        return Err(Error::ValueTooLong {
            name: name.to_owned(),
            len: s.len(),
        });
    }
    Ok(())
}

/// Checks an upsert against the attributes a run already has: every attribute valid, and
/// the merged set within [`SEARCH_ATTRIBUTES_MAX`].
pub fn validate_upsert(existing: &SearchAttributes, new: &SearchAttributes) -> Result<(), Error> {
    for (n, v) in new {
        validate_attribute(n, v)?;
    }
    let merged = existing.len() + new.keys().filter(|n| !existing.contains_key(*n)).count();
    if merged > SEARCH_ATTRIBUTES_MAX {
        return Err(Error::TooMany(merged));
    }
    Ok(())
}

/// Checks a memo: JSON, at most [`MEMO_BYTES_MAX`] bytes.
pub fn validate_memo(json: &[u8]) -> Result<(), Error> {
    if json.len() > MEMO_BYTES_MAX {
        return Err(Error::MemoTooLarge(json.len()));
    }
    serde_json::from_slice::<serde_json::Value>(json)
        .map(|_| ())
        .map_err(|e| Error::MemoNotJson(e.to_string()))
}

/// A short prefix of user input, for error messages.
fn short(s: &str) -> String {
    const SHOWN_CHARS_MAX: usize = 40;
    if s.chars().count() <= SHOWN_CHARS_MAX {
        s.to_owned()
    } else {
        let mut p: String = s.chars().take(SHOWN_CHARS_MAX).collect();
        p.push_str("...");
        p
    }
}

/// Parses `name=value` (a keyword) or `name:TYPE=value` with TYPE one of `keyword`, `int`,
/// `bool`, `time` (RFC 3339 UTC or ms since the epoch), and validates it.
pub fn parse_assignment(input: &str) -> Result<(String, SearchValue), Error> {
    let syntax = |detail: String| Error::Syntax {
        input: short(input),
        detail,
    };
    let (lhs, raw) = input
        .split_once('=')
        .ok_or_else(|| syntax("expected NAME=VALUE or NAME:TYPE=VALUE".into()))?;
    let (name, ty) = lhs.split_once(':').unwrap_or((lhs, "keyword"));
    let value = match ty {
        "keyword" | "string" => SearchValue::Keyword(raw.to_owned()),
        "int" => SearchValue::Int(
            raw.parse()
                .map_err(|_| syntax(format!("{:?} is not an integer", short(raw))))?,
        ),
        "bool" => SearchValue::Bool(match raw {
            "true" => true,
            "false" => false,
            _ => return Err(syntax("a bool is true or false".into())),
        }),
        "time" => SearchValue::Time(parse_time_ms(raw).ok_or_else(|| {
            syntax(format!(
                "{:?} is not a time: give RFC 3339 UTC (2026-05-01T07:00:00Z) or ms since the epoch",
                short(raw)
            ))
        })?),
        other => {
            return Err(syntax(format!(
                "unknown type {:?}: use keyword, int, bool or time",
                short(other)
            )));
        }
    };
    validate_attribute(name, &value)?;
    Ok((name.to_owned(), value))
}

/// ms since the epoch, or RFC 3339 in UTC (`YYYY-MM-DDTHH:MM:SS[.fff]Z`).
pub fn parse_time_ms(s: &str) -> Option<TimeMs> {
    if let Ok(ms) = s.parse::<i64>() {
        return Some(ms);
    }
    let b = s.as_bytes();
    if b.len() < 20 || *b.last()? != b'Z' || b[4] != b'-' || b[7] != b'-' || b[10] != b'T' {
        return None;
    }
    let num = |r: std::ops::Range<usize>| s.get(r)?.parse::<i64>().ok();
    let (y, m, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (hh, mm, ss) = (num(11..13)?, num(14..16)?, num(17..19)?);
    if !(1..=12).contains(&m) || !(1..=31).contains(&d) || hh > 23 || mm > 59 || ss > 60 {
        return None;
    }
    let frac = &s[19..s.len() - 1];
    let ms = if frac.is_empty() {
        0
    } else {
        let digits = frac.strip_prefix('.')?;
        if digits.is_empty() || !digits.bytes().all(|c| c.is_ascii_digit()) {
            return None;
        }
        format!("{:0<3}", &digits[..digits.len().min(3)])
            .parse()
            .ok()?
    };
    // Days from the civil date (H. Hinnant).
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some(((days * 86_400 + hh * 3600 + mm * 60 + ss) * 1000) + ms)
}

/// The text `--text` matches: workflow type, workflow id, memo text, last progress message,
/// held message and failure message, one per line.
pub fn summary(s: &RunState) -> String {
    let mut out = format!("{}\n{}", s.workflow_type, s.workflow_id);
    if let Some(m) = &s.memo {
        out.push('\n');
        out.push_str(&String::from_utf8_lossy(&m.data));
    }
    if let Some(p) = &s.progress {
        out.push('\n');
        out.push_str(&p.message);
    }
    if let Some(h) = &s.held {
        out.push('\n');
        out.push_str(&h.message);
    }
    if let Some(f) = &s.failure {
        out.push('\n');
        out.push_str(&f.message);
    }
    out
}

/// Whether every word of `query` (split on whitespace) occurs in the run's [`summary`],
/// ignoring case. An empty query matches every run.
pub fn text_matches(s: &RunState, query: &str) -> bool {
    let words: Vec<String> = query.split_whitespace().map(str::to_lowercase).collect();
    if words.is_empty() {
        return true;
    }
    let text = summary(s).to_lowercase();
    words.iter().all(|w| text.contains(w.as_str()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn assignments_parse_with_their_types() {
        assert_eq!(
            parse_assignment("customer=acme").unwrap(),
            ("customer".into(), SearchValue::Keyword("acme".into()))
        );
        assert_eq!(
            parse_assignment("priority:int=-2").unwrap().1,
            SearchValue::Int(-2)
        );
        assert_eq!(
            parse_assignment("vip:bool=true").unwrap().1,
            SearchValue::Bool(true)
        );
        assert_eq!(
            parse_assignment("due:time=1970-01-02T00:00:00.5Z")
                .unwrap()
                .1,
            SearchValue::Time(86_400_500)
        );
        assert_eq!(
            parse_assignment("k=a=b").unwrap().1,
            SearchValue::Keyword("a=b".into())
        );
    }

    #[test]
    fn bad_assignments_say_what_to_fix() {
        let e = |s: &str| parse_assignment(s).unwrap_err().to_string();
        assert!(e("customer").contains("NAME=VALUE"));
        assert!(e("priority:int=high").contains("not an integer"));
        assert!(e("x:float=1").contains("unknown type"));
        assert!(e("1abc=x").contains("is not valid"));
        assert!(e("a b=x").contains("is not valid"));
        assert!(e("vip:bool=yes").contains("true or false"));
        assert!(e("due:time=tomorrow").contains("RFC 3339"));
        let long = format!("k={}", "v".repeat(SEARCH_KEYWORD_BYTES_MAX + 1));
        assert!(e(&long).contains("at most 256 bytes"));
        // A long bad input is quoted by a short prefix only.
        let noise = "x".repeat(1000);
        assert!(e(&noise).len() < 200);
    }

    #[test]
    fn upserts_are_bounded() {
        let mut have = SearchAttributes::new();
        for i in 0..SEARCH_ATTRIBUTES_MAX {
            have.insert(format!("a{i}"), SearchValue::Int(i as i64));
        }
        let same: SearchAttributes = [("a0".to_string(), SearchValue::Int(9))].into();
        assert!(validate_upsert(&have, &same).is_ok(), "overwriting is free");
        let one_more: SearchAttributes = [("b".to_string(), SearchValue::Int(9))].into();
        assert_eq!(
            validate_upsert(&have, &one_more),
            Err(Error::TooMany(SEARCH_ATTRIBUTES_MAX + 1))
        );
    }

    #[test]
    fn index_bytes_sort_like_numbers() {
        let b = |i| SearchValue::Int(i).index_bytes();
        assert!(b(-5) < b(-1) && b(-1) < b(0) && b(0) < b(7));
        assert_ne!(
            SearchValue::Keyword("1".into()).index_bytes(),
            SearchValue::Int(1).index_bytes()
        );
    }

    #[test]
    fn memos_are_json_and_bounded() {
        assert!(validate_memo(br#"{"ticket": 4711}"#).is_ok());
        assert!(matches!(
            validate_memo(b"{oops"),
            Err(Error::MemoNotJson(_))
        ));
        let big = format!("\"{}\"", "x".repeat(MEMO_BYTES_MAX));
        assert!(matches!(
            validate_memo(big.as_bytes()),
            Err(Error::MemoTooLarge(_))
        ));
    }
}
