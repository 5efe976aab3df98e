//! The pages' files, embedded from `server/ui/` (hand-written HTML, CSS and ES modules: what
//! is committed is what the browser runs).

use axum::extract::Path;
use axum::http::header;
use axum::response::{IntoResponse, Response};

use super::call::ApiError;

/// Every asset: name, content type, bytes.
const ASSETS: &[(&str, &str, &str)] = &[
    (
        "style.css",
        "text/css; charset=utf-8",
        include_str!("../../ui/style.css"),
    ),
    (
        "app.js",
        "text/javascript; charset=utf-8",
        include_str!("../../ui/app.js"),
    ),
    (
        "api.js",
        "text/javascript; charset=utf-8",
        include_str!("../../ui/api.js"),
    ),
    (
        "fmt.js",
        "text/javascript; charset=utf-8",
        include_str!("../../ui/fmt.js"),
    ),
    (
        "runs.js",
        "text/javascript; charset=utf-8",
        include_str!("../../ui/runs.js"),
    ),
    (
        "run.js",
        "text/javascript; charset=utf-8",
        include_str!("../../ui/run.js"),
    ),
    (
        "timeline.js",
        "text/javascript; charset=utf-8",
        include_str!("../../ui/timeline.js"),
    ),
    (
        "inbox.js",
        "text/javascript; charset=utf-8",
        include_str!("../../ui/inbox.js"),
    ),
];

/// The one page; the modules route by the URL's hash.
const INDEX: &str = include_str!("../../ui/index.html");

/// Pages may run only their own scripts, and may not be framed (clickjacking of the
/// operator actions).
const CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'";

fn secured(ctype: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, ctype),
            (header::CONTENT_SECURITY_POLICY, CSP),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
            (header::X_FRAME_OPTIONS, "DENY"),
            (header::REFERRER_POLICY, "no-referrer"),
        ],
        body,
    )
        .into_response()
}

/// `GET /`.
pub async fn index() -> Response {
    secured("text/html; charset=utf-8", INDEX)
}

/// `GET /assets/{file}`.
pub async fn file(Path(name): Path<String>) -> Result<Response, ApiError> {
    ASSETS
        .iter()
        .find(|(n, _, _)| *n == name)
        .map(|(_, ctype, body)| secured(ctype, body))
        .ok_or_else(|| ApiError {
            http: axum::http::StatusCode::NOT_FOUND,
            code: "not_found",
            message: format!("no asset {}", crate::validate::quote(&name)),
        })
}
