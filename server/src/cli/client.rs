//! The connection to a server, and gRPC errors turned into messages that say what to fix.

use std::time::Duration;

use steadfast_proto::v1::admin_service_client::AdminServiceClient;
use steadfast_proto::v1::client_service_client::ClientServiceClient;
use steadfast_proto::v1::schedule_service_client::ScheduleServiceClient;
use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::Interceptor;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};
use tonic::{Code, Status};

use super::{Exit, TlsArgs};

/// Adds `authorization: Bearer <token>` to every call, when a token is given.
#[derive(Clone, Default)]
pub struct Bearer(Option<MetadataValue<Ascii>>);

impl Interceptor for Bearer {
    fn call(&mut self, mut req: tonic::Request<()>) -> Result<tonic::Request<()>, Status> {
        if let Some(v) = &self.0 {
            req.metadata_mut().insert("authorization", v.clone());
        }
        Ok(req)
    }
}

impl Bearer {
    /// The metadata for `token`; a token that cannot be a header value is a usage error.
    pub fn new(token: Option<&str>) -> Result<Bearer, Exit> {
        let Some(t) = token.map(str::trim).filter(|t| !t.is_empty()) else {
            return Ok(Bearer(None));
        };
        let v = MetadataValue::try_from(format!("Bearer {t}")).map_err(|_| {
            Exit::usage("--token / STEADFAST_TOKEN must be printable ASCII (as `steadfast auth new-token` makes them)")
        })?;
        Ok(Bearer(Some(v)))
    }
}

/// A channel whose calls carry the token.
pub type Authed = InterceptedService<Channel, Bearer>;

/// The client TLS for `args`, read from its PEM files.
fn client_tls(args: &TlsArgs) -> Result<ClientTlsConfig, Exit> {
    let read = |flag: &str, p: &std::path::Path| {
        std::fs::read(p)
            .map_err(|e| Exit::error(format!("cannot read {flag} {}: {e}", p.display())))
    };
    let mut tls = ClientTlsConfig::new();
    tls = match &args.tls_ca {
        Some(ca) => tls.ca_certificate(Certificate::from_pem(read("--tls-ca", ca)?)),
        None => tls.with_native_roots(),
    };
    if let (Some(cert), Some(key)) = (&args.tls_cert, &args.tls_key) {
        tls = tls.identity(Identity::from_pem(
            read("--tls-cert", cert)?,
            read("--tls-key", key)?,
        ));
    }
    if let Some(d) = &args.tls_domain {
        tls = tls.domain_name(d.clone());
    }
    Ok(tls)
}

/// Whether any TLS flag is given.
fn wants_tls(args: &TlsArgs) -> bool {
    args.tls_ca.is_some() || args.tls_cert.is_some() || args.tls_domain.is_some()
}

/// Largest message the CLI accepts: a history page of 1,000 events may carry large payloads.
const MESSAGE_BYTES_MAX: usize = 256 * 1024 * 1024;
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// A connected server, with the namespace every request uses.
#[derive(Clone)]
pub struct Conn {
    /// The address, as shown in messages.
    pub addr: String,
    /// The namespace of every request.
    pub namespace: String,
    /// Who the CLI says it is (recorded in events such as CancelRequested).
    pub identity: String,
    channel: Channel,
    bearer: Bearer,
}

/// `127.0.0.1:7233` -> `http://127.0.0.1:7233`; an address with a scheme is kept.
pub fn normalize_addr(addr: &str) -> String {
    let a = addr.trim();
    if a.contains("://") {
        a.to_string()
    } else {
        format!("http://{a}")
    }
}

/// The innermost cause of an error, in lower case words ("connection refused").
fn root_cause(e: &(dyn std::error::Error + 'static)) -> String {
    let mut cur = e;
    while let Some(next) = cur.source() {
        cur = next;
    }
    if let Some(io) = cur.downcast_ref::<std::io::Error>() {
        match io.kind() {
            std::io::ErrorKind::ConnectionRefused => return "connection refused".into(),
            std::io::ErrorKind::TimedOut => return "timed out".into(),
            _ => {}
        }
    }
    let s = cur.to_string();
    if s.is_empty() {
        "unknown error".into()
    } else {
        s
    }
}

/// The message for a server that cannot be reached.
pub fn unreachable(addr: &str, cause: &str) -> Exit {
    Exit::error(format!(
        "cannot reach the server at {addr}: is `steadfast server` running? ({cause})"
    ))
}

impl Conn {
    /// Prepares a connection to `addr` (scheme optional); connects on the first call.
    #[cfg(test)]
    pub fn connect(addr: &str, namespace: &str) -> Result<Conn, Exit> {
        Conn::connect_with(addr, namespace, None, &TlsArgs::default())
    }

    /// [`Conn::connect`] sending `token`, over TLS when `addr` is `https://` or a TLS flag
    /// is given (an address without a scheme then means `https://`).
    pub fn connect_with(
        addr: &str,
        namespace: &str,
        token: Option<&str>,
        tls: &TlsArgs,
    ) -> Result<Conn, Exit> {
        let addr = if wants_tls(tls) && !addr.contains("://") {
            format!("https://{}", addr.trim())
        } else {
            normalize_addr(addr)
        };
        let https = addr.starts_with("https://");
        if wants_tls(tls) && !https {
            return Err(Exit::usage(format!(
                "--addr {addr:?} is plaintext but TLS flags are given: use https://"
            )));
        }
        let bearer = Bearer::new(token)?;
        let mut endpoint = Endpoint::from_shared(addr.clone())
            .map_err(|e| {
                Exit::usage(format!(
                    "--addr {addr:?} is not a valid address: {e} (use e.g. http://127.0.0.1:7233)"
                ))
            })?
            .connect_timeout(CONNECT_TIMEOUT)
            .tcp_nodelay(true);
        if https {
            endpoint = endpoint
                .tls_config(client_tls(tls)?)
                .map_err(|e| Exit::usage(format!("TLS: {e}")))?;
        }
        // Lazy: a command checks its arguments before the first call; a server that cannot be
        // reached surfaces as UNAVAILABLE on that call (see `status`).
        let channel = endpoint.connect_lazy();
        let user = std::env::var("USER").unwrap_or_else(|_| "unknown".into());
        Ok(Conn {
            addr,
            namespace: namespace.to_string(),
            identity: format!("cli:{user}"),
            channel,
            bearer,
        })
    }

    fn authed(&self) -> Authed {
        InterceptedService::new(self.channel.clone(), self.bearer.clone())
    }

    /// The client service.
    pub fn client(&self) -> ClientServiceClient<Authed> {
        ClientServiceClient::new(self.authed())
            .max_decoding_message_size(MESSAGE_BYTES_MAX)
            .max_encoding_message_size(MESSAGE_BYTES_MAX)
    }

    /// The admin service.
    pub fn admin(&self) -> AdminServiceClient<Authed> {
        AdminServiceClient::new(self.authed())
            .max_decoding_message_size(MESSAGE_BYTES_MAX)
            .max_encoding_message_size(MESSAGE_BYTES_MAX)
    }

    /// The schedule service.
    pub fn schedules(&self) -> ScheduleServiceClient<Authed> {
        ScheduleServiceClient::new(self.authed())
            .max_decoding_message_size(MESSAGE_BYTES_MAX)
            .max_encoding_message_size(MESSAGE_BYTES_MAX)
    }

    /// A failed call as an exit: the server's message passed through, with its code.
    pub fn status(&self, s: Status) -> Exit {
        if s.code() == Code::Unavailable {
            let cause = std::error::Error::source(&s)
                .map(root_cause)
                .unwrap_or_else(|| s.message().to_string());
            return unreachable(&self.addr, &cause);
        }
        Exit::error(status_message(&s))
    }
}

/// `message (NOT_FOUND)`.
pub fn status_message(s: &Status) -> String {
    let msg = if s.message().is_empty() {
        "the server gave no details"
    } else {
        s.message()
    };
    format!("{msg} ({})", code_name(s.code()))
}

/// Whether a failed call may succeed if repeated (the server restarting, a dropped stream).
pub fn is_transient(s: &Status) -> bool {
    matches!(
        s.code(),
        Code::Unavailable
            | Code::Aborted
            | Code::DeadlineExceeded
            | Code::Unknown
            | Code::Cancelled
    )
}

/// The gRPC name of a code (`NOT_FOUND`).
pub fn code_name(c: Code) -> &'static str {
    match c {
        Code::Ok => "OK",
        Code::Cancelled => "CANCELLED",
        Code::Unknown => "UNKNOWN",
        Code::InvalidArgument => "INVALID_ARGUMENT",
        Code::DeadlineExceeded => "DEADLINE_EXCEEDED",
        Code::NotFound => "NOT_FOUND",
        Code::AlreadyExists => "ALREADY_EXISTS",
        Code::PermissionDenied => "PERMISSION_DENIED",
        Code::ResourceExhausted => "RESOURCE_EXHAUSTED",
        Code::FailedPrecondition => "FAILED_PRECONDITION",
        Code::Aborted => "ABORTED",
        Code::OutOfRange => "OUT_OF_RANGE",
        Code::Unimplemented => "UNIMPLEMENTED",
        Code::Internal => "INTERNAL",
        Code::Unavailable => "UNAVAILABLE",
        Code::DataLoss => "DATA_LOSS",
        Code::Unauthenticated => "UNAUTHENTICATED",
    }
}

/// Exponential backoff for reconnecting, bounded in total so a dead server ends the command.
#[derive(Debug)]
pub struct Backoff {
    delay: Duration,
    spent: Duration,
}

/// How long a stream keeps trying to reconnect before giving up.
pub const RECONNECT_FOR: Duration = Duration::from_secs(120);

impl Default for Backoff {
    fn default() -> Self {
        Backoff {
            delay: Duration::from_millis(200),
            spent: Duration::ZERO,
        }
    }
}

impl Backoff {
    /// The next delay, or `None` when [`RECONNECT_FOR`] is used up.
    pub fn next_delay(&mut self) -> Option<Duration> {
        if self.spent >= RECONNECT_FOR {
            return None;
        }
        let d = self.delay;
        self.spent += d;
        self.delay = (self.delay * 2).min(Duration::from_secs(5));
        Some(d)
    }

    /// Call after a success.
    pub fn reset(&mut self) {
        *self = Backoff::default();
    }

    /// Whether no delay was taken since the last success (the start of an outage: say so once).
    pub fn is_fresh(&self) -> bool {
        self.spent.is_zero()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses() {
        assert_eq!(normalize_addr("127.0.0.1:7233"), "http://127.0.0.1:7233");
        assert_eq!(normalize_addr(" https://h:1 "), "https://h:1");
    }

    #[test]
    fn statuses_say_what_happened() {
        let s = Status::not_found("run default/x not found");
        assert_eq!(status_message(&s), "run default/x not found (NOT_FOUND)");
        assert_eq!(
            status_message(&Status::internal("")),
            "the server gave no details (INTERNAL)"
        );
        assert!(is_transient(&Status::unavailable("x")));
        assert!(!is_transient(&Status::invalid_argument("x")));
    }

    #[test]
    fn backoff_is_bounded() {
        let mut b = Backoff::default();
        let delays: Vec<Duration> = std::iter::from_fn(|| b.next_delay()).collect();
        assert_eq!(delays[0], Duration::from_millis(200));
        assert!(delays.iter().all(|d| *d <= Duration::from_secs(5)));
        assert!(delays.iter().sum::<Duration>() < RECONNECT_FOR + Duration::from_secs(5));
    }

    #[tokio::test]
    async fn refused_connection_says_what_to_do() {
        // Bind then drop to get a port nobody listens on.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let conn = Conn::connect(&format!("127.0.0.1:{port}"), "default").unwrap();
        let req = steadfast_proto::v1::DescribeRunRequest::default();
        let e = conn.status(conn.client().describe_run(req).await.unwrap_err());
        assert_eq!(
            e.message.as_deref(),
            Some(format!("error: cannot reach the server at http://127.0.0.1:{port}: is `steadfast server` running? (connection refused)").as_str())
        );
        assert_eq!(e.code, super::super::exit::ERROR);
    }
}
