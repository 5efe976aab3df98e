//! A small JSON Schema checker for tool arguments: the keywords MCP servers put in their
//! `inputSchema` (what `schemars`, zod and pydantic generate), checked before a call so that
//! bad arguments are refused without reaching the tool.
//!
//! Checked: `type` (one or a list; `integer` means a number without a fraction), `enum`,
//! `const`, `properties`, `required`, `additionalProperties` (false or a schema), `items`,
//! `minItems`/`maxItems`, `minLength`/`maxLength` (in characters), `minimum`/`maximum`,
//! `exclusiveMinimum`/`exclusiveMaximum` (numbers), `allOf`/`anyOf`/`oneOf`, and local `$ref`s
//! (`#/$defs/...`, `#/definitions/...`). Not checked: `pattern` and `format` (no regex engine
//! in the SDK) and remote `$ref`s; the MCP server still validates what it receives, so what
//! this checker lets through is the server's to refuse.
//!
//! Why not the `jsonschema` crate: it brings a regex engine, a URL resolver and an HTTP client
//! for remote references to every worker that mounts a server, for keywords tools rarely use.

use serde_json::Value;

/// How deep the checker follows nested schemas and `$ref`s before it gives up (a schema that
/// refers to itself without consuming the value would otherwise loop).
pub const SCHEMA_DEPTH_MAX: usize = 64;

/// Why arguments do not match a tool's input schema: where (a JSON pointer into the arguments,
/// `""` for the whole) and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("argument {}: {problem}", if path.is_empty() { "(the whole object)".to_owned() } else { format!("{path:?}") })]
pub struct Mismatch {
    /// JSON pointer of the offending value in the arguments (`/title`, `/labels/2`).
    pub path: String,
    /// What is wrong, naming the expectation.
    pub problem: String,
}

/// Checks `value` against `schema`; the first mismatch found.
pub fn check(schema: &Value, value: &Value) -> Result<(), Mismatch> {
    Checker { root: schema }.check(schema, value, &mut String::new(), 0)
}

struct Checker<'a> {
    root: &'a Value,
}

fn mismatch(path: &str, problem: impl Into<String>) -> Mismatch {
    Mismatch {
        path: path.to_owned(),
        problem: problem.into(),
    }
}

/// A short name of a JSON value's type, as JSON Schema names types.
fn type_of(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(n) if n.is_i64() || n.is_u64() => "integer",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

fn is_type(v: &Value, ty: &str) -> bool {
    match ty {
        "integer" => match v {
            Value::Number(n) => {
                n.is_i64() || n.is_u64() || n.as_f64().is_some_and(|f| f.fract() == 0.0)
            }
            _ => false,
        },
        "number" => v.is_number(),
        other => type_of(v) == other,
    }
}

/// At most 40 characters of a value, for messages (never a whole payload).
fn short(v: &Value) -> String {
    let s = v.to_string();
    if s.chars().count() <= 40 {
        s
    } else {
        format!("{}...", s.chars().take(40).collect::<String>())
    }
}

/// Escapes a property name for a JSON pointer (RFC 6901).
fn pointer_token(name: &str) -> String {
    name.replace('~', "~0").replace('/', "~1")
}

impl Checker<'_> {
    fn check(
        &self,
        schema: &Value,
        value: &Value,
        path: &mut String,
        depth: usize,
    ) -> Result<(), Mismatch> {
        if depth > SCHEMA_DEPTH_MAX {
            return Err(mismatch(
                path,
                format!("the schema nests deeper than {SCHEMA_DEPTH_MAX} levels here"),
            ));
        }
        let obj = match schema {
            Value::Bool(true) => return Ok(()),
            Value::Bool(false) => return Err(mismatch(path, "no value is allowed here")),
            Value::Object(o) => o,
            // Not a schema: nothing to check against (the server validates anyway).
            _ => return Ok(()),
        };
        if let Some(Value::String(r)) = obj.get("$ref")
            && let Some(target) = self.resolve(r)
        {
            self.check(target, value, path, depth + 1)?;
        }
        if let Some(ty) = obj.get("type") {
            let allowed: Vec<&str> = match ty {
                Value::String(t) => vec![t.as_str()],
                Value::Array(ts) => ts.iter().filter_map(Value::as_str).collect(),
                _ => Vec::new(),
            };
            if !allowed.is_empty() && !allowed.iter().any(|t| is_type(value, t)) {
                return Err(mismatch(
                    path,
                    format!("expected {}, got {}", allowed.join(" or "), type_of(value)),
                ));
            }
        }
        if let Some(Value::Array(options)) = obj.get("enum")
            && !options.contains(value)
        {
            let shown: Vec<String> = options.iter().take(8).map(short).collect();
            return Err(mismatch(
                path,
                format!("{} is not one of {}", short(value), shown.join(", ")),
            ));
        }
        if let Some(c) = obj.get("const")
            && c != value
        {
            return Err(mismatch(path, format!("expected {}", short(c))));
        }
        match value {
            Value::Object(map) => self.check_object(obj, map, path, depth)?,
            Value::Array(items) => self.check_array(obj, items, path, depth)?,
            Value::String(s) => check_string(obj, s, path)?,
            Value::Number(n) => check_number(obj, n.as_f64().unwrap_or(f64::NAN), path)?,
            _ => {}
        }
        self.check_combinators(obj, value, path, depth)
    }

    fn check_object(
        &self,
        schema: &serde_json::Map<String, Value>,
        map: &serde_json::Map<String, Value>,
        path: &mut String,
        depth: usize,
    ) -> Result<(), Mismatch> {
        if let Some(Value::Array(required)) = schema.get("required") {
            for name in required.iter().filter_map(Value::as_str) {
                if !map.contains_key(name) {
                    return Err(mismatch(
                        path,
                        format!("required property {name:?} is missing"),
                    ));
                }
            }
        }
        let properties = schema.get("properties").and_then(Value::as_object);
        let additional = schema.get("additionalProperties");
        for (name, v) in map {
            let len = path.len();
            path.push('/');
            path.push_str(&pointer_token(name));
            let outcome = match properties.and_then(|p| p.get(name)) {
                Some(s) => self.check(s, v, path, depth + 1),
                None => match additional {
                    Some(Value::Bool(false)) => Err(mismatch(
                        path,
                        "is not a property of this tool (additionalProperties is false)",
                    )),
                    Some(s @ Value::Object(_)) => self.check(s, v, path, depth + 1),
                    _ => Ok(()),
                },
            };
            outcome?;
            path.truncate(len);
        }
        Ok(())
    }

    fn check_array(
        &self,
        schema: &serde_json::Map<String, Value>,
        items: &[Value],
        path: &mut String,
        depth: usize,
    ) -> Result<(), Mismatch> {
        let n = items.len() as u64;
        if let Some(min) = schema.get("minItems").and_then(Value::as_u64)
            && n < min
        {
            return Err(mismatch(
                path,
                format!("has {n} items, at least {min} are needed"),
            ));
        }
        if let Some(max) = schema.get("maxItems").and_then(Value::as_u64)
            && n > max
        {
            return Err(mismatch(
                path,
                format!("has {n} items, at most {max} are allowed"),
            ));
        }
        if let Some(item_schema @ (Value::Object(_) | Value::Bool(_))) = schema.get("items") {
            for (i, v) in items.iter().enumerate() {
                let len = path.len();
                path.push_str(&format!("/{i}"));
                self.check(item_schema, v, path, depth + 1)?;
                path.truncate(len);
            }
        }
        Ok(())
    }

    fn check_combinators(
        &self,
        schema: &serde_json::Map<String, Value>,
        value: &Value,
        path: &mut String,
        depth: usize,
    ) -> Result<(), Mismatch> {
        if let Some(Value::Array(all)) = schema.get("allOf") {
            for s in all {
                self.check(s, value, path, depth + 1)?;
            }
        }
        if let Some(Value::Array(any)) = schema.get("anyOf") {
            let mut first = None;
            for s in any {
                match self.check(s, value, &mut path.clone(), depth + 1) {
                    Ok(()) => return Ok(()),
                    Err(e) => {
                        first.get_or_insert(e);
                    }
                }
            }
            if let Some(e) = first {
                return Err(mismatch(
                    path,
                    format!(
                        "matches none of the {} allowed shapes (first: {e})",
                        any.len()
                    ),
                ));
            }
        }
        if let Some(Value::Array(one)) = schema.get("oneOf") {
            let matching = one
                .iter()
                .filter(|s| self.check(s, value, &mut path.clone(), depth + 1).is_ok())
                .count();
            if matching != 1 {
                return Err(mismatch(
                    path,
                    format!(
                        "must match exactly one of {} shapes, matches {matching}",
                        one.len()
                    ),
                ));
            }
        }
        Ok(())
    }

    /// The schema a local `$ref` names (`#`, `#/$defs/X`, `#/definitions/X`, any JSON pointer
    /// into the root); `None` for anything else, which is then not checked.
    fn resolve(&self, reference: &str) -> Option<&Value> {
        let pointer = reference.strip_prefix('#')?;
        self.root.pointer(pointer)
    }
}

fn check_string(
    schema: &serde_json::Map<String, Value>,
    s: &str,
    path: &str,
) -> Result<(), Mismatch> {
    let n = s.chars().count() as u64;
    if let Some(min) = schema.get("minLength").and_then(Value::as_u64)
        && n < min
    {
        return Err(mismatch(
            path,
            format!("is {n} characters long, at least {min} are needed"),
        ));
    }
    if let Some(max) = schema.get("maxLength").and_then(Value::as_u64)
        && n > max
    {
        return Err(mismatch(
            path,
            format!("is {n} characters long, at most {max} are allowed"),
        ));
    }
    Ok(())
}

fn check_number(
    schema: &serde_json::Map<String, Value>,
    x: f64,
    path: &str,
) -> Result<(), Mismatch> {
    let bound = |k: &str| schema.get(k).and_then(Value::as_f64);
    if let Some(min) = bound("minimum").filter(|m| x < *m) {
        return Err(mismatch(path, format!("{x} is below the minimum {min}")));
    }
    if let Some(max) = bound("maximum").filter(|m| x > *m) {
        return Err(mismatch(path, format!("{x} is above the maximum {max}")));
    }
    if let Some(min) = bound("exclusiveMinimum").filter(|m| x <= *m) {
        return Err(mismatch(path, format!("{x} must be greater than {min}")));
    }
    if let Some(max) = bound("exclusiveMaximum").filter(|m| x >= *m) {
        return Err(mismatch(path, format!("{x} must be less than {max}")));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn issue_schema() -> Value {
        json!({
            "type": "object",
            "properties": {
                "title": {"type": "string", "minLength": 3, "maxLength": 80},
                "priority": {"type": "integer", "minimum": 1, "maximum": 4},
                "labels": {"type": "array", "items": {"type": "string"}, "maxItems": 3},
                "kind": {"enum": ["bug", "feature"]},
                "owner": {"$ref": "#/$defs/Owner"}
            },
            "required": ["title", "priority"],
            "additionalProperties": false,
            "$defs": {"Owner": {"type": "object", "properties": {"email": {"type": "string"}}, "required": ["email"]}}
        })
    }

    fn path_of(v: Value) -> String {
        check(&issue_schema(), &v).unwrap_err().path
    }

    #[test]
    fn good_arguments_pass() {
        let ok = json!({"title": "Refund fails", "priority": 2, "labels": ["billing"], "kind": "bug", "owner": {"email": "a@b"}});
        assert_eq!(check(&issue_schema(), &ok), Ok(()));
        // 2.0 is an integer for JSON Schema.
        assert_eq!(check(&json!({"type": "integer"}), &json!(2.0)), Ok(()));
        assert_eq!(check(&json!(true), &json!(1)), Ok(()));
    }

    #[test]
    fn each_mismatch_names_the_field() {
        let e = check(&issue_schema(), &json!({"priority": 2})).unwrap_err();
        assert!(e.path.is_empty() && e.problem.contains("\"title\""), "{e}");
        assert_eq!(path_of(json!({"title": 5, "priority": 1})), "/title");
        assert_eq!(path_of(json!({"title": "ab", "priority": 1})), "/title");
        assert_eq!(path_of(json!({"title": "abc", "priority": 9})), "/priority");
        assert_eq!(
            path_of(json!({"title": "abc", "priority": 1.5})),
            "/priority"
        );
        assert_eq!(
            path_of(json!({"title": "abc", "priority": 1, "labels": ["a", 2]})),
            "/labels/1"
        );
        assert_eq!(
            path_of(json!({"title": "abc", "priority": 1, "labels": ["a", "b", "c", "d"]})),
            "/labels"
        );
        assert_eq!(
            path_of(json!({"title": "abc", "priority": 1, "kind": "chore"})),
            "/kind"
        );
        assert_eq!(
            path_of(json!({"title": "abc", "priority": 1, "extra": 1})),
            "/extra"
        );
        assert_eq!(
            path_of(json!({"title": "abc", "priority": 1, "owner": {}})),
            "/owner"
        );
        let e = check(&issue_schema(), &json!([1])).unwrap_err();
        assert_eq!(e.problem, "expected object, got array");
        assert!(e.to_string().contains("(the whole object)"), "{e}");
    }

    #[test]
    fn combinators_and_pointer_escapes() {
        let s = json!({"anyOf": [{"type": "string"}, {"type": "integer"}]});
        assert!(check(&s, &json!("x")).is_ok() && check(&s, &json!(1)).is_ok());
        assert!(
            check(&s, &json!(null))
                .unwrap_err()
                .problem
                .contains("none of the 2")
        );
        let s = json!({"oneOf": [{"type": "number"}, {"type": "integer"}]});
        assert!(check(&s, &json!(1)).is_err() && check(&s, &json!(1.5)).is_ok());
        let s = json!({"allOf": [{"type": "number"}, {"minimum": 0}]});
        assert!(check(&s, &json!(-1)).is_err());
        let s = json!({"properties": {"a/b": {"type": "string"}}});
        assert_eq!(check(&s, &json!({"a/b": 1})).unwrap_err().path, "/a~1b");
        let s = json!({"type": "number", "exclusiveMinimum": 0});
        assert!(check(&s, &json!(0)).is_err() && check(&s, &json!(0.1)).is_ok());
    }

    #[test]
    fn a_schema_that_refers_to_itself_ends_with_a_mismatch_not_a_stack_overflow() {
        let s = json!({"$ref": "#"});
        let e = check(&s, &json!({})).unwrap_err();
        assert!(e.problem.contains("deeper than"), "{e}");
        // Long strings are not quoted whole.
        let s = json!({"enum": ["a"]});
        let e = check(&s, &json!("x".repeat(1000))).unwrap_err();
        assert!(e.problem.len() < 100, "{e}");
    }
}
