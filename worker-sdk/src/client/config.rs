//! [`ClientConfig`]: where the server is and who we are.

use std::path::PathBuf;
use std::time::Duration;

use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::Interceptor;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};

use super::Error;

/// A bearer token. Its `Debug` never shows it (configurations get logged).
#[derive(Clone, PartialEq, Eq)]
pub struct Token(String);

impl Token {
    /// The token as sent.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Token({} chars)", self.0.len())
    }
}

/// Adds `authorization: Bearer <token>` to every call that has a token configured.
#[derive(Clone, Default)]
pub struct Bearer(Option<MetadataValue<Ascii>>);

impl Interceptor for Bearer {
    fn call(&mut self, mut req: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(v) = &self.0 {
            req.metadata_mut().insert("authorization", v.clone());
        }
        Ok(req)
    }
}

/// The channel every generated client of the SDK uses: a connection whose calls carry the
/// configured token.
pub type Transport = InterceptedService<Channel, Bearer>;

/// TLS files (PEM) for an `https://` server.
#[derive(Debug, Clone, Default)]
pub struct TlsFiles {
    /// The CA that signed the server's certificate; the system's roots when `None`.
    pub ca: Option<PathBuf>,
    /// A client certificate and key, for servers that require mutual TLS.
    pub client_identity: Option<(PathBuf, PathBuf)>,
    /// The name the server's certificate must carry, when it is not the address's host.
    pub domain: Option<String>,
}

/// The server address used when none is given.
pub const DEFAULT_ADDR: &str = "http://127.0.0.1:7233";

/// Where the server is and how to talk to it.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// "http://host:port".
    pub addr: String,
    /// The namespace of every call ("default").
    pub namespace: String,
    /// Who is calling, recorded with signals, cancels and starts.
    pub identity: String,
    /// How long to wait for a connection.
    pub connect_timeout: Duration,
    /// Largest message sent or received.
    pub max_message_bytes: usize,
    /// Sent as `authorization: Bearer <token>` when the server has an auth file.
    pub token: Option<Token>,
    /// TLS files; with any, or an `https://` address, the connection is TLS.
    pub tls: TlsFiles,
}

impl ClientConfig {
    /// The defaults, for server `addr`.
    pub fn new(addr: impl Into<String>) -> Self {
        ClientConfig {
            addr: addr.into(),
            namespace: "default".into(),
            identity: format!("sdk@{}", std::process::id()),
            connect_timeout: Duration::from_secs(5),
            max_message_bytes: 64 << 20,
            token: None,
            tls: TlsFiles::default(),
        }
    }

    /// `STEADFAST_ADDR` (default [`DEFAULT_ADDR`]), `STEADFAST_NAMESPACE` (default
    /// "default"), `STEADFAST_TOKEN`, and the TLS files `STEADFAST_TLS_CA`,
    /// `STEADFAST_TLS_CERT` + `STEADFAST_TLS_KEY` (mutual TLS) and `STEADFAST_TLS_DOMAIN`.
    pub fn from_env() -> Self {
        let mut c = ClientConfig::new(
            std::env::var("STEADFAST_ADDR").unwrap_or_else(|_| DEFAULT_ADDR.into()),
        );
        if let Ok(ns) = std::env::var("STEADFAST_NAMESPACE") {
            c.namespace = ns;
        }
        c.with_env_security()
    }

    /// Takes the token and TLS files from the environment (as [`ClientConfig::from_env`]),
    /// where set, keeping the rest.
    pub fn with_env_security(mut self) -> Self {
        let var = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
        if let Some(t) = var("STEADFAST_TOKEN") {
            self.token = Some(Token(t));
        }
        if let Some(ca) = var("STEADFAST_TLS_CA") {
            self.tls.ca = Some(ca.into());
        }
        if let (Some(cert), Some(key)) = (var("STEADFAST_TLS_CERT"), var("STEADFAST_TLS_KEY")) {
            self.tls.client_identity = Some((cert.into(), key.into()));
        }
        if let Some(d) = var("STEADFAST_TLS_DOMAIN") {
            self.tls.domain = Some(d);
        }
        self
    }

    /// Sets the bearer token (`None` or empty: no token).
    pub fn token(mut self, token: Option<impl Into<String>>) -> Self {
        self.token = token.map(Into::into).filter(|t| !t.is_empty()).map(Token);
        self
    }

    /// Sets the TLS files.
    pub fn tls(mut self, tls: TlsFiles) -> Self {
        self.tls = tls;
        self
    }

    /// Sets the namespace.
    pub fn namespace(mut self, namespace: impl Into<String>) -> Self {
        self.namespace = namespace.into();
        self
    }

    /// Sets the identity.
    pub fn identity(mut self, identity: impl Into<String>) -> Self {
        self.identity = identity.into();
        self
    }

    fn wants_tls(&self) -> bool {
        self.tls.ca.is_some() || self.tls.client_identity.is_some() || self.tls.domain.is_some()
    }

    /// The endpoints of [`ClientConfig::addr`]: one address, or several separated by commas
    /// (server nodes over one database), between which calls are balanced.
    pub(crate) fn endpoints(&self) -> Result<Vec<Endpoint>, Error> {
        let list: Vec<&str> = self
            .addr
            .split(',')
            .map(str::trim)
            .filter(|a| !a.is_empty())
            .collect();
        if list.is_empty() {
            return Err(Error::BadAddress {
                addr: self.addr.clone(),
                message: "no address given".into(),
            });
        }
        list.into_iter().map(|a| self.endpoint_of(a)).collect()
    }

    fn endpoint_of(&self, one: &str) -> Result<Endpoint, Error> {
        let addr = if one.contains("://") {
            one.to_string()
        } else if self.wants_tls() {
            format!("https://{one}")
        } else {
            format!("http://{one}")
        };
        let bad = |message: String| Error::BadAddress {
            addr: self.addr.clone(),
            message,
        };
        let https = addr.starts_with("https://");
        if self.wants_tls() && !https {
            return Err(bad(
                "TLS files are configured: use an https:// address".into()
            ));
        }
        let mut endpoint = Endpoint::from_shared(addr)
            .map_err(|e| bad(e.to_string()))?
            .connect_timeout(self.connect_timeout)
            .tcp_nodelay(true)
            .http2_keep_alive_interval(Duration::from_secs(30))
            .keep_alive_while_idle(true);
        if https {
            endpoint = endpoint
                .tls_config(self.tls_config()?)
                .map_err(|e| Error::Tls(e.to_string()))?;
        }
        Ok(endpoint)
    }

    fn tls_config(&self) -> Result<ClientTlsConfig, Error> {
        let read = |what: &str, p: &PathBuf| {
            std::fs::read(p)
                .map_err(|e| Error::Tls(format!("cannot read {what} {}: {e}", p.display())))
        };
        let mut tls = ClientTlsConfig::new();
        tls = match &self.tls.ca {
            Some(ca) => tls.ca_certificate(Certificate::from_pem(read("the CA file", ca)?)),
            None => tls.with_native_roots(),
        };
        if let Some((cert, key)) = &self.tls.client_identity {
            tls = tls.identity(Identity::from_pem(
                read("the client certificate", cert)?,
                read("the client key", key)?,
            ));
        }
        if let Some(d) = &self.tls.domain {
            tls = tls.domain_name(d.clone());
        }
        Ok(tls)
    }

    fn bearer(&self) -> Result<Bearer, Error> {
        let Some(t) = &self.token else {
            return Ok(Bearer(None));
        };
        let v = MetadataValue::try_from(format!("Bearer {}", t.0))
            .map_err(|_| Error::InvalidArgument("the token must be printable ASCII".into()))?;
        Ok(Bearer(Some(v)))
    }

    /// A connection made on first use, carrying the token.
    pub(crate) fn lazy_transport(&self) -> Result<Transport, Error> {
        let mut endpoints = self.endpoints()?;
        let channel = if endpoints.len() == 1 {
            endpoints.remove(0).connect_lazy()
        } else {
            Channel::balance_list(endpoints.into_iter())
        };
        Ok(InterceptedService::new(channel, self.bearer()?))
    }

    /// A connection made now, carrying the token. With several addresses, the first that
    /// answers proves the service reachable; calls are then balanced over all of them (an
    /// unreachable node is skipped until it answers).
    pub(crate) async fn transport(&self) -> Result<Transport, Error> {
        let bearer = self.bearer()?;
        let mut endpoints = self.endpoints()?;
        if endpoints.len() == 1 {
            let channel = endpoints
                .remove(0)
                .connect()
                .await
                .map_err(|e| Error::Unavailable(format!("{}: {e}", self.addr)))?;
            return Ok(InterceptedService::new(channel, bearer));
        }
        let mut last = None;
        for e in &endpoints {
            match e.connect().await {
                Ok(_) => {
                    last = None;
                    break;
                }
                Err(err) => last = Some(err),
            }
        }
        if let Some(err) = last {
            return Err(Error::Unavailable(format!(
                "none of {} answers: {err}",
                self.addr
            )));
        }
        Ok(InterceptedService::new(
            Channel::balance_list(endpoints.into_iter()),
            bearer,
        ))
    }
}

impl From<&str> for ClientConfig {
    fn from(addr: &str) -> Self {
        ClientConfig::new(addr)
    }
}

impl From<String> for ClientConfig {
    fn from(addr: String) -> Self {
        ClientConfig::new(addr)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_token_never_shows_in_debug_output() {
        let c = ClientConfig::new("http://127.0.0.1:1").token(Some("stf_secret-secret-secret"));
        let shown = format!("{c:?}");
        assert!(!shown.contains("secret"), "{shown}");
        assert!(shown.contains("Token(24 chars)"), "{shown}");
        assert!(ClientConfig::new("x").token(Some("")).token.is_none());
    }

    #[test]
    fn several_addresses_are_several_endpoints() {
        let c = ClientConfig::new("http://127.0.0.1:1, 127.0.0.1:2,");
        let e = c.endpoints().expect("two endpoints");
        assert_eq!(e.len(), 2);
        assert_eq!(e[1].uri().to_string(), "http://127.0.0.1:2/");
        assert!(matches!(
            ClientConfig::new(" , ").endpoints(),
            Err(Error::BadAddress { .. })
        ));
    }

    #[test]
    fn tls_files_with_a_plaintext_address_are_refused() {
        let tls = TlsFiles {
            ca: Some("ca.pem".into()),
            ..TlsFiles::default()
        };
        let c = ClientConfig::new("http://127.0.0.1:1").tls(tls.clone());
        assert!(matches!(c.endpoints(), Err(Error::BadAddress { .. })));
        // No scheme with TLS files means https; the missing CA file is named.
        let c = ClientConfig::new("127.0.0.1:1").tls(tls);
        match c.endpoints() {
            Err(Error::Tls(m)) => assert!(m.contains("ca.pem"), "{m}"),
            other => panic!("{other:?}"),
        }
    }
}
