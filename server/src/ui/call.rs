//! From an HTTP request to a gRPC handler call and back: the bearer token checked against the
//! gRPC method the API call stands for, the principal attached as the auth layer attaches it,
//! and a `tonic::Status` answered as an HTTP status with a JSON body.

use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;
use tonic::{Code, Status};

use super::Ui;
use crate::auth::Principal;

/// An API refusal: the HTTP status and the message (the gRPC status's, when there is one).
#[derive(Debug)]
pub struct ApiError {
    /// The HTTP status.
    pub http: StatusCode,
    /// The gRPC code name (`not_found`, ...), for programs.
    pub code: &'static str,
    /// What to fix.
    pub message: String,
}

impl ApiError {
    /// A bad request made here (not by a handler): 400.
    pub fn bad_request(message: impl Into<String>) -> ApiError {
        ApiError {
            http: StatusCode::BAD_REQUEST,
            code: "invalid_argument",
            message: message.into(),
        }
    }

    /// A write in read-only mode: 403.
    pub fn read_only() -> ApiError {
        ApiError {
            http: StatusCode::FORBIDDEN,
            code: "read_only",
            message: "this UI is read-only (--ui-read-only): use the CLI or a UI served without that flag to change runs".into(),
        }
    }
}

impl From<Status> for ApiError {
    fn from(s: Status) -> ApiError {
        let (http, code) = match s.code() {
            Code::InvalidArgument | Code::OutOfRange => {
                (StatusCode::BAD_REQUEST, "invalid_argument")
            }
            Code::Unauthenticated => (StatusCode::UNAUTHORIZED, "unauthenticated"),
            Code::PermissionDenied => (StatusCode::FORBIDDEN, "permission_denied"),
            Code::NotFound => (StatusCode::NOT_FOUND, "not_found"),
            Code::AlreadyExists => (StatusCode::CONFLICT, "already_exists"),
            Code::FailedPrecondition => (StatusCode::CONFLICT, "failed_precondition"),
            Code::Aborted => (StatusCode::CONFLICT, "aborted"),
            Code::ResourceExhausted => (StatusCode::TOO_MANY_REQUESTS, "resource_exhausted"),
            Code::Unimplemented => (StatusCode::NOT_IMPLEMENTED, "unimplemented"),
            Code::Unavailable => (StatusCode::SERVICE_UNAVAILABLE, "unavailable"),
            Code::DeadlineExceeded => (StatusCode::GATEWAY_TIMEOUT, "deadline_exceeded"),
            Code::Cancelled => (StatusCode::SERVICE_UNAVAILABLE, "cancelled"),
            _ => (StatusCode::INTERNAL_SERVER_ERROR, "internal"),
        };
        ApiError {
            http,
            code,
            message: s.message().to_string(),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = json!({ "error": { "code": self.code, "message": self.message } });
        let mut resp = (self.http, json_body(&body)).into_response();
        resp.headers_mut().insert(
            header::CONTENT_TYPE,
            header::HeaderValue::from_static("application/json"),
        );
        if self.http == StatusCode::UNAUTHORIZED {
            resp.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                header::HeaderValue::from_static("Bearer"),
            );
        }
        resp
    }
}

/// A JSON value as a response body.
pub fn json_body(v: &serde_json::Value) -> String {
    v.to_string()
}

/// A 200 JSON response.
pub fn ok_json(v: serde_json::Value) -> Response {
    (
        [
            (header::CONTENT_TYPE, "application/json"),
            (header::CACHE_CONTROL, "no-store"),
        ],
        json_body(&v),
    )
        .into_response()
}

/// What an API call stands for: the gRPC method whose access rule applies, and whether it
/// changes anything (refused in read-only mode).
#[derive(Debug, Clone, Copy)]
pub struct Method {
    /// `Service/Method` under `steadfast.v1`.
    pub path: &'static str,
    /// A write.
    pub write: bool,
}

/// Reads.
pub const DESCRIBE: Method = Method {
    path: "ClientService/DescribeRun",
    write: false,
};
/// Reads.
pub const LIST: Method = Method {
    path: "ClientService/ListRuns",
    write: false,
};
/// Reads.
pub const HISTORY: Method = Method {
    path: "ClientService/GetHistory",
    write: false,
};
/// Reads.
pub const WATCH: Method = Method {
    path: "ClientService/WatchRun",
    write: false,
};
/// Writes.
pub const SIGNAL: Method = Method {
    path: "ClientService/SignalRun",
    write: true,
};
/// Writes.
pub const CANCEL: Method = Method {
    path: "ClientService/CancelRun",
    write: true,
};
/// Writes.
pub const TERMINATE: Method = Method {
    path: "ClientService/TerminateRun",
    write: true,
};
/// Writes.
pub const APPROVE: Method = Method {
    path: "ClientService/ApproveActivity",
    write: true,
};
/// Writes.
pub const DENY: Method = Method {
    path: "ClientService/DenyActivity",
    write: true,
};
/// Writes (admin).
pub const BUDGET: Method = Method {
    path: "AdminService/UpdateBudget",
    write: true,
};
/// Writes (admin).
pub const RECONCILE: Method = Method {
    path: "AdminService/ReconcileActivity",
    write: true,
};
/// Writes (admin).
pub const FORK: Method = Method {
    path: "AdminService/ForkRun",
    write: true,
};

/// Who calls: checked for `method` (read-only mode first, then the token), as the gRPC auth
/// layer checks a call. `None` without an auth file.
pub fn authorize(
    ui: &Ui,
    headers: &HeaderMap,
    method: Method,
) -> Result<Option<Principal>, ApiError> {
    if method.write && ui.read_only {
        return Err(ApiError::read_only());
    }
    let Some(auth) = &ui.auth else {
        return Ok(None);
    };
    let path = format!("/steadfast.v1.{}", method.path);
    let value = headers.get(header::AUTHORIZATION).map(|v| v.as_bytes());
    Ok(crate::auth::layer::decide(auth, &path, value)?)
}

/// A gRPC request carrying `principal`, as the auth layer would have passed it on.
pub fn request<T>(msg: T, principal: &Option<Principal>) -> tonic::Request<T> {
    let mut req = tonic::Request::new(msg);
    if let Some(p) = principal {
        req.extensions_mut().insert(p.clone());
    }
    req
}

/// The identity recorded in the events the UI's actions append: `ui`, with the token's name.
pub fn identity(principal: &Option<Principal>) -> String {
    match principal {
        Some(p) => format!("ui:{}", p.name),
        None => "ui".into(),
    }
}
