//! The query string of an API call, parsed into the call's parameters; a malformed one (say
//! `started_after=abc`) is answered like every other refusal, as a JSON 400 that names the
//! parameter, quotes the start of its value and says what it takes (axum's own `Query`
//! answers plain text that names neither).

use axum::async_trait;
use axum::extract::{FromRequestParts, Query};
use axum::http::Uri;
use axum::http::request::Parts;
use serde::de::DeserializeOwned;

use super::call::ApiError;

/// Most characters of a bad value quoted back.
const QUOTED_CHARS_MAX: usize = 32;

/// The parameters `T` of an API call, from its query string.
#[derive(Debug, Clone, Copy, Default)]
pub struct ApiQuery<T>(pub T);

#[async_trait]
impl<T, S> FromRequestParts<S> for ApiQuery<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, ApiError> {
        match Query::<T>::try_from_uri(&parts.uri) {
            Ok(Query(t)) => Ok(ApiQuery(t)),
            Err(e) => Err(ApiError::bad_request(explain::<T>(
                parts.uri.query().unwrap_or_default(),
                &e.body_text(),
            ))),
        }
    }
}

/// What is wrong with `query`: the first parameter that `T` refuses on its own (every
/// parameter of the API is optional), or the parser's message when none does alone.
fn explain<T: DeserializeOwned>(query: &str, detail: &str) -> String {
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let Ok(alone) = format!("/?{pair}").parse::<Uri>() else {
            continue;
        };
        let Err(e) = Query::<T>::try_from_uri(&alone) else {
            continue;
        };
        let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
        let shown: String = value.chars().take(QUOTED_CHARS_MAX).collect();
        let more = if value.chars().count() > QUOTED_CHARS_MAX {
            "..."
        } else {
            ""
        };
        let why = e
            .body_text()
            .trim_start_matches("Failed to deserialize query string: ")
            .to_string();
        return format!(
            "query parameter {name}={shown:?}{more} is not valid ({why}): {}",
            takes(name)
        );
    }
    let why = detail.trim_start_matches("Failed to deserialize query string: ");
    format!("the query string is not valid ({why}): check each parameter's value")
}

/// What a parameter takes, in the words of the API's documentation.
fn takes(name: &str) -> &'static str {
    match name {
        "started_after" | "started_before" => {
            "it takes a time in milliseconds since the epoch, e.g. 1700000000000"
        }
        "before" => "it takes a seq (a whole number): the `older` of the previous page",
        "after" => "it takes a seq (a whole number): the last event seen",
        "limit" => "it takes a whole number of events",
        "download" => "it takes true or false",
        _ => "see the API's parameters in the README (Web UI)",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(serde::Deserialize)]
    #[allow(dead_code)]
    struct Q {
        started_after: Option<i64>,
        status: Option<String>,
    }

    #[test]
    fn a_bad_value_is_named_quoted_and_explained() {
        let m = explain::<Q>("status=running&started_after=abc", "x");
        assert!(m.contains("started_after=\"abc\""), "{m}");
        assert!(m.contains("milliseconds since the epoch"), "{m}");
        let long = "9".repeat(100) + "x";
        let m = explain::<Q>(&format!("started_after={long}"), "x");
        assert!(m.contains("...") && !m.contains(&long), "{m}");
    }
}
