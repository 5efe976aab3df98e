//! The tower layer in front of every service: authenticates the bearer token and checks that
//! its role may call the method, before the request is decoded or anything is looked up.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use tonic::Status;
use tonic::body::BoxBody;
use tonic::codegen::{Service, http};

use super::{Authenticator, Principal, Role, table::TOKEN_LEN_MAX};

/// Who may call a method.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Anyone, without a token (health checks: load balancers carry no token).
    Public,
    /// Any valid token (reflection, and methods this server does not have: they answer
    /// UNIMPLEMENTED, but only to a caller that is known).
    AnyRole,
    /// Only these roles.
    Roles(&'static [Role]),
}

const CLIENT: &[Role] = &[Role::Client, Role::Admin];
const WORKER: &[Role] = &[Role::Worker, Role::Admin];
/// Workers read histories (a worker without the run cached replays it) and blobs (large
/// inputs) in their namespaces.
const READ: &[Role] = &[Role::Client, Role::Worker, Role::Admin];
const ADMIN: &[Role] = &[Role::Admin];

/// Who may call the gRPC method at `path` (`/package.Service/Method`).
pub fn access(path: &str) -> Access {
    let mut parts = path.trim_start_matches('/').splitn(2, '/');
    let (service, method) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    match (service, method) {
        ("grpc.health.v1.Health", _) => Access::Public,
        ("steadfast.v1.ClientService", "GetHistory" | "GetBlob") => Access::Roles(READ),
        ("steadfast.v1.ClientService", _) => Access::Roles(CLIENT),
        ("steadfast.v1.WorkerService", _) => Access::Roles(WORKER),
        ("steadfast.v1.AdminService", _) => Access::Roles(ADMIN),
        // Schedules start runs: what a client may do, on a cadence.
        ("steadfast.v1.ScheduleService", _) => Access::Roles(CLIENT),
        _ => Access::AnyRole,
    }
}

/// The decision for one call: the principal to attach, or the refusal.
pub fn decide(
    auth: &Authenticator,
    path: &str,
    authorization: Option<&[u8]>,
) -> Result<Option<Principal>, Status> {
    let access = access(path);
    if access == Access::Public {
        return Ok(None);
    }
    let Some(value) = authorization else {
        return Err(Status::unauthenticated(
            "this server requires a token: send `authorization: Bearer <token>` metadata (--token or STEADFAST_TOKEN)",
        ));
    };
    let token = std::str::from_utf8(value)
        .ok()
        .and_then(|v| {
            let (scheme, rest) = v.split_once(' ')?;
            scheme.eq_ignore_ascii_case("bearer").then(|| rest.trim())
        })
        .ok_or_else(|| {
            Status::unauthenticated(
                "the authorization metadata must be `Bearer <token>` (--token or STEADFAST_TOKEN)",
            )
        })?;
    let principal = (token.len() <= TOKEN_LEN_MAX)
        .then(|| auth.find(token))
        .flatten()
        .ok_or_else(|| {
            Status::unauthenticated(
                "the token is not valid on this server (not in its auth file, or removed from it)",
            )
        })?;
    if let Access::Roles(roles) = access
        && !roles.contains(&principal.role)
    {
        let needs: Vec<&str> = roles.iter().map(|r| r.as_str()).collect();
        return Err(Status::permission_denied(format!(
            "token {:?} has role {}, which may not call {}: it needs a token of role {}",
            principal.name,
            principal.role.as_str(),
            path.trim_start_matches("/steadfast.v1."),
            needs.join(" or ")
        )));
    }
    Ok(Some(principal))
}

/// Wraps every service with [`Authenticated`].
#[derive(Clone)]
pub struct AuthLayer(pub Option<Arc<Authenticator>>);

impl<S> tower_layer::Layer<S> for AuthLayer {
    type Service = Authenticated<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Authenticated {
            inner,
            auth: self.0.clone(),
        }
    }
}

/// A service that lets through only calls [`decide`] accepts, with their [`Principal`] in the
/// request's extensions.
#[derive(Clone)]
pub struct Authenticated<S> {
    inner: S,
    auth: Option<Arc<Authenticator>>,
}

impl<S, B> Service<http::Request<B>> for Authenticated<S>
where
    S: Service<http::Request<B>, Response = http::Response<BoxBody>>,
    S::Future: Send + 'static,
{
    type Response = http::Response<BoxBody>;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: http::Request<B>) -> Self::Future {
        if let Some(auth) = &self.auth {
            let header = req
                .headers()
                .get(http::header::AUTHORIZATION)
                .map(|v| v.as_bytes());
            match decide(auth, req.uri().path(), header) {
                Ok(Some(p)) => {
                    req.extensions_mut().insert(p);
                }
                Ok(None) => {}
                Err(status) => {
                    tracing::debug!(path = req.uri().path(), code = ?status.code(), "call refused by auth");
                    return Box::pin(async move { Ok(status.into_http()) });
                }
            }
        }
        Box::pin(self.inner.call(req))
    }
}

#[cfg(test)]
mod tests {
    use super::super::{Namespaces, table};
    use super::*;
    use tonic::Code;

    fn auth() -> Authenticator {
        let text = [
            table::Entry::line("c", Role::Client, &Namespaces::Any, "client-token-0123456"),
            table::Entry::line("w", Role::Worker, &Namespaces::Any, "worker-token-0123456"),
            table::Entry::line("a", Role::Admin, &Namespaces::Any, "admin-token-01234567"),
        ]
        .join("\n");
        Authenticator::from_table(Table::parse("t", &text).unwrap())
    }

    use super::super::Table;

    fn code(path: &str, token: Option<&str>) -> Code {
        let header = token.map(|t| format!("Bearer {t}"));
        match decide(&auth(), path, header.as_deref().map(str::as_bytes)) {
            Ok(_) => Code::Ok,
            Err(s) => s.code(),
        }
    }

    #[test]
    fn each_role_calls_what_it_may() {
        let (c, w, a) = (
            Some("client-token-0123456"),
            Some("worker-token-0123456"),
            Some("admin-token-01234567"),
        );
        let client = "/steadfast.v1.ClientService/StartWorkflow";
        let poll = "/steadfast.v1.WorkerService/PollWorkflowTask";
        let history = "/steadfast.v1.ClientService/GetHistory";
        let blob = "/steadfast.v1.ClientService/GetBlob";
        let checkpoint = "/steadfast.v1.AdminService/Checkpoint";
        let denied = Code::PermissionDenied;
        assert_eq!(code(client, c), Code::Ok);
        assert_eq!(code(client, w), denied);
        assert_eq!(code(client, a), Code::Ok);
        assert_eq!(code(poll, c), denied);
        assert_eq!(code(poll, w), Code::Ok);
        assert_eq!(code(poll, a), Code::Ok);
        for p in [history, blob] {
            assert_eq!(
                (code(p, c), code(p, w), code(p, a)),
                (Code::Ok, Code::Ok, Code::Ok)
            );
        }
        assert_eq!((code(checkpoint, c), code(checkpoint, w)), (denied, denied));
        let schedule = "/steadfast.v1.ScheduleService/CreateSchedule";
        assert_eq!(
            (code(schedule, c), code(schedule, w), code(schedule, a)),
            (Code::Ok, denied, Code::Ok)
        );
        assert_eq!(code(checkpoint, a), Code::Ok);
        assert_eq!(code("/grpc.health.v1.Health/Check", None), Code::Ok);
        assert_eq!(
            code(
                "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
                c
            ),
            Code::Ok
        );
    }

    #[test]
    fn missing_malformed_and_unknown_tokens_are_unauthenticated() {
        let p = "/steadfast.v1.ClientService/DescribeRun";
        assert_eq!(code(p, None), Code::Unauthenticated);
        assert_eq!(code(p, Some("nope-nope-nope-nope")), Code::Unauthenticated);
        assert_eq!(
            code(p, Some(&"x".repeat(TOKEN_LEN_MAX + 1))),
            Code::Unauthenticated
        );
        assert_eq!(
            code(
                "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
                None
            ),
            Code::Unauthenticated
        );
        let e = decide(&auth(), p, Some(b"Basic abc")).unwrap_err();
        assert!(e.message().contains("Bearer"), "{}", e.message());
        // Not the token, not a hash of it.
        let e = decide(&auth(), p, Some(b"Bearer secret-secret-secret")).unwrap_err();
        assert!(!e.message().contains("secret"), "{}", e.message());
    }
}
