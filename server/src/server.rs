//! Assembles the services over an embedded store and serves them until shutdown.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{self, Poll};
use std::time::Instant;

use anyhow::Context;
use steadfast_engine::clock::Clock;
use steadfast_engine::clock::SystemClock;
use steadfast_engine::embedded::{EmbeddedOptions, EmbeddedStore};
use steadfast_engine::store::Store;
use steadfast_engine::store::limits::HistoryLimits;
use steadfast_proto::v1 as pb;
use tokio::net::TcpListener;
use tokio_stream::wrappers::TcpListenerStream;
use tonic::codegen::{Service, http};
use tonic::transport::{Certificate, Identity, ServerTlsConfig};

use crate::auth::Authenticator;
use crate::auth::layer::AuthLayer;
use crate::config::{ServerConfig, TlsFiles};
use crate::core::{Core, Settings};
use crate::service::{admin::AdminApi, client::ClientApi, worker::WorkerApi};
use crate::timers;
use crate::token::TokenKey;

/// Largest request accepted (bytes). Payload limits are checked separately with clearer
/// messages; this only bounds what is decoded at all.
pub const REQUEST_BYTES_MAX: usize = 8 * 1024 * 1024;

/// How long a graceful shutdown waits for requests in flight.
pub const SHUTDOWN_GRACE: std::time::Duration = std::time::Duration::from_secs(3);

/// Opens the store in `config.data_dir`, listens on `config.listen` and serves until SIGTERM
/// or ctrl-c, then shuts down gracefully (in-flight requests finish, the store is closed).
pub async fn run(config: ServerConfig) -> anyhow::Result<()> {
    let started = Instant::now();
    config.check_listen()?;
    let security = Security::load(&config)?;
    std::fs::create_dir_all(&config.data_dir)
        .with_context(|| format!("cannot create data dir {}", config.data_dir.display()))?;
    let options = EmbeddedOptions {
        history_events_max: config.history_events_max,
        history_bytes_max: config.history_bytes_max,
        ..EmbeddedOptions::default()
    };
    let settings = Settings {
        limits: HistoryLimits {
            events_max: config.history_events_max,
            bytes_max: config.history_bytes_max,
        },
        held_backoff_max_ms: config.held_backoff_max_ms,
        workflow_task_timeout_ms: config.workflow_task_timeout_ms,
    };
    let (store, report) = EmbeddedStore::open(&config.data_dir, options)
        .with_context(|| format!("cannot open the store in {}", config.data_dir.display()))?;
    tracing::info!(?report, "store open");
    let token_key = match &config.token_key_file {
        Some(path) => TokenKey::load(path),
        None => TokenKey::load_or_create(&config.data_dir),
    }
    .context("cannot load the task token key")?;
    tracing::info!(fingerprint = %token_key.fingerprint(), "task token key loaded");
    let store = Arc::new(store);
    // A crash between the two appends of a continue-as-new leaves a successor uncreated.
    for (key, started) in store
        .missing_successors()
        .await
        .context("looking for continued runs without a successor")?
    {
        match crate::service::create_successor(store.as_ref(), &key, started, SystemClock.now_ms())
            .await
        {
            Ok(_) => {
                tracing::warn!(run = %key, "created the successor of a continue-as-new interrupted by a crash")
            }
            Err(e) => {
                tracing::error!(run = %key, error = %e, "could not create the successor of a continued run")
            }
        }
    }
    let listener = TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("cannot listen on {}", config.listen))?;
    let addr = listener.local_addr()?;
    tracing::info!(%addr, data_dir = %config.data_dir.display(), ms = started.elapsed().as_millis() as u64, "serving");
    // Tests and scripts read this line to learn the port when --listen uses port 0.
    eprintln!("steadfast server listening on {addr}");
    let retention = config
        .retention
        .map(|period| tokio::spawn(crate::retention::run(store.clone(), period, SystemClock)));
    let reload = security.auth.clone().map(|a| tokio::spawn(a.watch()));
    serve_secured(
        store.clone(),
        listener,
        shutdown_signal(),
        settings,
        token_key,
        security,
    )
    .await?;
    if let Some(task) = reload {
        task.abort();
    }
    if let Some(task) = retention {
        task.abort();
    }
    tracing::info!("shutting down: closing the store");
    if let Err(e) = store.close().await {
        tracing::warn!(error = %e, "closing the store failed; the log will be replayed on open");
    }
    Ok(())
}

/// Serves the API over `store` on `listener` until `shutdown` resolves, with the default
/// history limits, signing task tokens with a random key (tokens do not outlive this call; for
/// tests and embedding).
pub async fn serve(
    store: Arc<dyn Store>,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send,
) -> anyhow::Result<()> {
    serve_with(
        store,
        listener,
        shutdown,
        Settings::default(),
        TokenKey::random(),
    )
    .await
}

/// [`serve`], with `settings` (their history limits must be those the store was opened with:
/// the server tells workflow tasks when their run is past the soft limit), signing task tokens
/// with `token_key`.
pub async fn serve_with(
    store: Arc<dyn Store>,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send,
    settings: Settings,
    token_key: TokenKey,
) -> anyhow::Result<()> {
    serve_secured(
        store,
        listener,
        shutdown,
        settings,
        token_key,
        Security::default(),
    )
    .await
}

/// Who may call and how the wire is protected.
#[derive(Default)]
pub struct Security {
    /// Bearer tokens; `None` lets every caller do everything.
    pub auth: Option<Arc<Authenticator>>,
    /// TLS (with a client CA: mutual TLS); `None` is plaintext.
    pub tls: Option<ServerTlsConfig>,
}

impl Security {
    /// Reads the auth file and the TLS files that `config` names; each error names its file.
    pub fn load(config: &ServerConfig) -> anyhow::Result<Security> {
        let auth = match &config.auth_file {
            Some(path) => {
                let a = Authenticator::load(path)?;
                tracing::info!(file = %path.display(), "authentication required: bearer tokens from the auth file");
                Some(Arc::new(a))
            }
            None => None,
        };
        let tls = match &config.tls {
            Some(files) => Some(tls_config(files)?),
            None => None,
        };
        Ok(Security { auth, tls })
    }
}

fn read_pem(what: &str, path: &std::path::Path) -> anyhow::Result<Vec<u8>> {
    let pem =
        std::fs::read(path).with_context(|| format!("cannot read {what} {}", path.display()))?;
    if !pem.windows(11).any(|w| w == b"-----BEGIN ") {
        anyhow::bail!("{what} {} is not PEM (no -----BEGIN line)", path.display());
    }
    Ok(pem)
}

/// The server's TLS from its PEM files.
pub fn tls_config(files: &TlsFiles) -> anyhow::Result<ServerTlsConfig> {
    let cert = read_pem("--tls-cert", &files.cert)?;
    let key = read_pem("--tls-key", &files.key)?;
    let mut tls = ServerTlsConfig::new().identity(Identity::from_pem(cert, key));
    if let Some(ca) = &files.client_ca {
        // Client certificates are required once a CA is given (mutual TLS).
        tls = tls.client_ca_root(Certificate::from_pem(read_pem("--tls-ca", ca)?));
    }
    Ok(tls)
}

/// [`serve_with`], with `security`: an auth layer in front of every service, and TLS.
pub async fn serve_secured(
    store: Arc<dyn Store>,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send,
    settings: Settings,
    token_key: TokenKey,
    security: Security,
) -> anyhow::Result<()> {
    let core = Core::with_settings(store, Arc::new(SystemClock), settings);
    let timer_task = tokio::spawn(timers::run(core.clone()));
    let (mut health, health_service) = tonic_health::server::health_reporter();
    health
        .set_serving::<pb::client_service_server::ClientServiceServer<ClientApi>>()
        .await;
    health
        .set_serving::<pb::worker_service_server::WorkerServiceServer<WorkerApi>>()
        .await;
    let reflection = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(pb::FILE_DESCRIPTOR_SET)
        .build_v1()
        .context("reflection service")?;
    let client = TooLarge(
        pb::client_service_server::ClientServiceServer::new(ClientApi::new(core.clone()))
            .max_decoding_message_size(REQUEST_BYTES_MAX),
    );
    let worker_api = WorkerApi::new(core.clone(), token_key);
    let sessions = worker_api.sessions();
    let worker = TooLarge(
        pb::worker_service_server::WorkerServiceServer::new(worker_api)
            .max_decoding_message_size(REQUEST_BYTES_MAX),
    );
    let admin = TooLarge(
        pb::admin_service_server::AdminServiceServer::new(AdminApi::new(core.clone()))
            .max_decoding_message_size(REQUEST_BYTES_MAX),
    );
    // Graceful: stop accepting, let requests in flight finish, but do not wait on open long
    // polls for longer than the grace period (workers re-poll after a restart anyway).
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let mut builder = tonic::transport::Server::builder();
    if let Some(tls) = security.tls {
        builder = builder
            .tls_config(tls)
            .context("TLS: the certificate and key do not make a usable identity")?;
    }
    let server = builder
        .layer(AuthLayer(security.auth))
        .add_service(health_service)
        .add_service(reflection)
        .add_service(client)
        .add_service(worker)
        .add_service(admin)
        .serve_with_incoming_shutdown(incoming(listener), async {
            let _ = stop_rx.await;
        });
    tokio::pin!(server);
    let result = tokio::select! {
        r = &mut server => r,
        _ = shutdown => {
            // Worker sessions end because this server stops, not because the workers died.
            sessions.close();
            let _ = stop_tx.send(());
            match tokio::time::timeout(SHUTDOWN_GRACE, &mut server).await {
                Ok(r) => r,
                Err(_) => {
                    tracing::info!(grace_ms = SHUTDOWN_GRACE.as_millis() as u64, "open long polls cut at the end of the grace period");
                    Ok(())
                }
            }
        }
    };
    timer_task.abort();
    result.context("gRPC server")
}

/// A service whose requests too large to decode are refused with RESOURCE_EXHAUSTED, as gRPC
/// specifies for messages over the limit (and C5 promises), not with the OUT_OF_RANGE that
/// tonic's decoder answers.
#[derive(Clone)]
struct TooLarge<S>(S);

impl<S: tonic::server::NamedService> tonic::server::NamedService for TooLarge<S> {
    const NAME: &'static str = S::NAME;
}

impl<S, B, RB> Service<http::Request<B>> for TooLarge<S>
where
    S: Service<http::Request<B>, Response = http::Response<RB>>,
    S::Future: Send + 'static,
    S::Response: Send,
    S::Error: Send,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<S::Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut task::Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.0.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        let fut = self.0.call(req);
        Box::pin(async move {
            let mut resp = fut.await?;
            // The decoder's refusal is a trailers-only response: the status is in the headers.
            let headers = resp.headers_mut();
            let too_large = headers.get("grpc-status").is_some_and(|v| v == "11")
                && headers.get("grpc-message").is_some_and(|m| {
                    let m = String::from_utf8_lossy(m.as_bytes());
                    m.contains("message%20length%20too%20large")
                        || m.contains("message length too large")
                });
            if too_large {
                let code = (tonic::Code::ResourceExhausted as i32).to_string();
                headers.insert(
                    "grpc-status",
                    http::HeaderValue::from_str(&code).expect("digits are a header value"),
                );
            }
            Ok(resp)
        })
    }
}

/// Accepted connections with Nagle off: requests are small and latency-bound, and a 40 ms
/// delayed-ACK stall per round trip would dominate every step of a run.
fn incoming(
    listener: TcpListener,
) -> impl futures::Stream<Item = std::io::Result<tokio::net::TcpStream>> {
    use futures::StreamExt;
    TcpListenerStream::new(listener).map(|s| {
        let s = s?;
        s.set_nodelay(true)?;
        Ok(s)
    })
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(_) => {
                    let _ = ctrl_c.await;
                    return;
                }
            };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}
