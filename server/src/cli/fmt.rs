//! Formatting of values for people and JSON: times (RFC 3339), money, durations, payloads.
//! Pure functions.

use serde_json::{Value, json};
use steadfast_engine::payload::ENCODING_JSON;
use steadfast_proto::v1 as pb;

/// A time in ms since the Unix epoch as RFC 3339 UTC with milliseconds
/// (`2026-11-24T01:50:19.123Z`).
pub fn rfc3339_ms(ms: i64) -> String {
    let (secs, milli) = (ms.div_euclid(1000), ms.rem_euclid(1000));
    format!("{}.{milli:03}Z", ymd_hms(secs))
}

/// A time as RFC 3339 UTC to the second, for tables (`2026-11-24T01:50:19Z`); `-` for 0.
pub fn rfc3339_s(ms: i64) -> String {
    if ms == 0 {
        "-".into()
    } else {
        format!("{}Z", ymd_hms(ms.div_euclid(1000)))
    }
}

/// Optional time for JSON: `null` when 0 (unset on the wire).
pub fn time_json(ms: i64) -> Value {
    if ms == 0 {
        Value::Null
    } else {
        Value::String(rfc3339_ms(ms))
    }
}

fn ymd_hms(secs: i64) -> String {
    // Civil date from days since 1970-01-01 (H. Hinnant's algorithm), valid for any i64 day.
    let days = secs.div_euclid(86_400);
    let sod = secs.rem_euclid(86_400);
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}",
        sod / 3600,
        sod % 3600 / 60,
        sod % 60
    )
}

/// Millionths of a dollar as dollars, exact: `$0`, `$1.50`, `$0.001234`.
pub fn usd(micros: u64) -> String {
    if micros == 0 {
        return "$0".into();
    }
    let frac = format!("{:06}", micros % 1_000_000);
    let frac = frac.trim_end_matches('0');
    format!("${}.{frac:0<2}", micros / 1_000_000)
}

/// A duration in ms, short: `850ms`, `90s`, `15m`, `2h30m`, `3d`.
pub fn duration(ms: u64) -> String {
    match ms {
        0..1_000 => format!("{ms}ms"),
        _ if !ms.is_multiple_of(1_000) => format!("{:.1}s", ms as f64 / 1000.0),
        _ => {
            let s = ms / 1_000;
            let (d, h, m, s) = (s / 86_400, s % 86_400 / 3600, s % 3600 / 60, s % 60);
            let mut out = String::new();
            for (n, unit) in [(d, "d"), (h, "h"), (m, "m"), (s, "s")] {
                if n > 0 {
                    out.push_str(&format!("{n}{unit}"));
                }
            }
            out
        }
    }
}

/// Whether a payload is JSON (an empty encoding means JSON on the wire).
pub fn is_json(p: &pb::Payload) -> bool {
    p.encoding.is_empty() || p.encoding == ENCODING_JSON
}

/// A payload for JSON output: the value itself when it is JSON, else its encoding, size and
/// blake3 hash.
pub fn payload_json(p: &pb::Payload) -> Value {
    if is_json(p)
        && let Ok(v) = serde_json::from_slice::<Value>(&p.data)
    {
        return v;
    }
    json!({ "encoding": p.encoding, "size": p.data.len(), "blake3": hex::encode(blake3::hash(&p.data).as_bytes()) })
}

/// An optional payload for JSON output.
pub fn opt_payload_json(p: &Option<pb::Payload>) -> Value {
    p.as_ref().map(payload_json).unwrap_or(Value::Null)
}

/// A payload in one line for people, cut to `max` characters.
pub fn payload_short(p: &pb::Payload, max: usize) -> String {
    match payload_json(p) {
        v if is_json(p) && !(v.is_object() && v.get("blake3").is_some()) => {
            cut(&v.to_string(), max)
        }
        _ => format!(
            "<{} B {}, blake3 {}>",
            p.data.len(),
            p.encoding,
            &hex::encode(blake3::hash(&p.data).as_bytes())[..12]
        ),
    }
}

/// Cuts a string to `max` characters, marking the cut with `…`.
pub fn cut(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        s.to_string()
    } else {
        let mut out: String = s.chars().take(max.saturating_sub(1)).collect();
        out.push('…');
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339() {
        assert_eq!(rfc3339_ms(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(rfc3339_ms(951_782_400_123), "2000-02-29T00:00:00.123Z");
        assert_eq!(rfc3339_ms(1_795_916_619_005), "2026-11-29T01:43:39.005Z");
        assert_eq!(rfc3339_ms(-1), "1969-12-31T23:59:59.999Z");
        assert_eq!(rfc3339_s(0), "-");
        assert_eq!(rfc3339_s(4_102_444_800_000), "2100-01-01T00:00:00Z");
    }

    #[test]
    fn money_and_durations() {
        assert_eq!(usd(0), "$0");
        assert_eq!(usd(1_500_000), "$1.50");
        assert_eq!(usd(1_234), "$0.001234");
        assert_eq!(usd(12_000_000), "$12.00");
        assert_eq!(duration(850), "850ms");
        assert_eq!(duration(1_500), "1.5s");
        assert_eq!(duration(9_000_000), "2h30m");
        assert_eq!(duration(86_400_000), "1d");
    }

    #[test]
    fn payloads() {
        let j = pb::Payload {
            encoding: String::new(),
            data: br#"{"a":[1,2]}"#.to_vec(),
        };
        assert_eq!(payload_json(&j), json!({"a": [1, 2]}));
        assert_eq!(payload_short(&j, 8), "{\"a\":[1…");
        let b = pb::Payload {
            encoding: "binary/plain".into(),
            data: vec![0, 1, 2],
        };
        let v = payload_json(&b);
        assert_eq!(v["size"], 3);
        assert_eq!(v["encoding"], "binary/plain");
        assert_eq!(
            v["blake3"],
            hex::encode(blake3::hash(&[0, 1, 2]).as_bytes())
        );
        assert!(payload_short(&b, 50).starts_with("<3 B binary/plain, blake3 "));
        // JSON-tagged bytes that are not JSON are shown by size and hash, never dropped.
        let broken = pb::Payload {
            encoding: ENCODING_JSON.into(),
            data: b"{".to_vec(),
        };
        assert_eq!(payload_json(&broken)["size"], 1);
    }
}
