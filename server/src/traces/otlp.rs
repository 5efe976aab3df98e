//! The OTLP/HTTP JSON encoding of spans (`POST {endpoint}/v1/traces`,
//! `Content-Type: application/json`): ids in hex, times as string-encoded nanoseconds, as the
//! OTLP JSON mapping says.

use serde_json::{Value as Json, json};

use super::spans::{Attr, Span, Value};

/// The `service.name` resource attribute.
pub const SERVICE_NAME: &str = "steadfast";

fn value(v: &Value) -> Json {
    match v {
        Value::Str(s) => json!({ "stringValue": s }),
        Value::Int(i) => json!({ "intValue": i.to_string() }),
        Value::Double(d) => json!({ "doubleValue": d }),
    }
}

fn attrs(a: &[Attr]) -> Json {
    Json::Array(
        a.iter()
            .map(|(k, v)| json!({ "key": k, "value": value(v) }))
            .collect(),
    )
}

fn nanos(ms: i64) -> String {
    // Times before the epoch do not occur; clamp rather than wrap.
    (u128::try_from(ms).unwrap_or(0) * 1_000_000).to_string()
}

/// One `ExportTraceServiceRequest` holding `spans`.
pub fn encode(spans: &[Span]) -> Vec<u8> {
    let spans: Vec<Json> = spans
        .iter()
        .map(|s| {
            let mut o = json!({
                "traceId": hex::encode(s.trace_id),
                "spanId": hex::encode(s.span_id),
                "name": s.name,
                // SPAN_KIND_INTERNAL
                "kind": 1,
                "startTimeUnixNano": nanos(s.start_ms),
                "endTimeUnixNano": nanos(s.end_ms),
                "attributes": attrs(&s.attrs),
                "events": s.events.iter().map(|e| json!({
                    "timeUnixNano": nanos(e.time_ms),
                    "name": e.name,
                    "attributes": attrs(&e.attrs),
                })).collect::<Vec<_>>(),
                "status": match &s.error {
                    // STATUS_CODE_ERROR
                    Some(m) => json!({ "code": 2, "message": m }),
                    // STATUS_CODE_OK
                    None => json!({ "code": 1 }),
                },
            });
            if let Some(p) = s.parent {
                o["parentSpanId"] = json!(hex::encode(p));
            }
            o
        })
        .collect();
    let body = json!({
        "resourceSpans": [{
            "resource": { "attributes": [
                { "key": "service.name", "value": { "stringValue": SERVICE_NAME } }
            ] },
            "scopeSpans": [{
                "scope": { "name": "steadfast.log", "version": env!("CARGO_PKG_VERSION") },
                "spans": spans,
            }],
        }],
    });
    serde_json::to_vec(&body).expect("JSON of plain values")
}

/// The URL spans are posted to: `endpoint` itself when it already ends with `/v1/traces`,
/// else `endpoint` + `/v1/traces` (as OTEL_EXPORTER_OTLP_ENDPOINT is read).
pub fn traces_url(endpoint: &str) -> String {
    let e = endpoint.trim_end_matches('/');
    if e.ends_with("/v1/traces") {
        e.to_string()
    } else {
        format!("{e}/v1/traces")
    }
}
