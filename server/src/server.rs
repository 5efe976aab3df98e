//! Assembles the services over a store (embedded, or PostgreSQL) and serves them until shutdown.

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
use steadfast_postgres::{PgOptions, PgStore};
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

/// Largest request accepted by default (bytes; `--limit request_bytes_max=N`). Payload limits
/// are checked separately with clearer messages; this only bounds what is decoded at all.
pub const REQUEST_BYTES_MAX: usize = 8 * 1024 * 1024;

/// How long a graceful shutdown waits for requests in flight.
pub const SHUTDOWN_GRACE: std::time::Duration = std::time::Duration::from_secs(3);

/// Opens the store (the embedded one in `config.data_dir`, or PostgreSQL when `config.store`
/// names it), listens on `config.listen` and serves until SIGTERM or ctrl-c, then shuts down
/// gracefully (in-flight requests finish, the store is closed).
pub async fn run(config: ServerConfig) -> anyhow::Result<()> {
    let started = Instant::now();
    config.check_listen()?;
    let mut security = Security::load(&config)?;
    let settings = Settings {
        limits: HistoryLimits {
            events_max: config.history_events_max,
            bytes_max: config.history_bytes_max,
        },
        held_backoff_max_ms: config.held_backoff_max_ms,
        workflow_task_timeout_ms: config.workflow_task_timeout_ms,
        reconcile_period: config
            .store
            .is_some()
            .then(|| std::time::Duration::from_millis(config.reconcile_period_ms)),
        caller_limits: config.limits,
        traceparent_to_workers: config.otlp_endpoint.is_some(),
    };
    let (opened, listener) = match &config.store {
        None => {
            let opened = open_embedded(&config).await?;
            let listener = bind(&config).await?;
            (opened, listener)
        }
        // Bound first: the node's default id names its address.
        Some(url) => {
            let listener = bind(&config).await?;
            let opened = open_postgres(&config, url, listener.local_addr()?).await?;
            (opened, listener)
        }
    };
    let Opened {
        store,
        token_key,
        successors,
        open_runs,
        closer,
    } = opened;
    // The exporter reads the real store; the hook sits in the metered one.
    let traces = match &config.otlp_endpoint {
        Some(url) => Some(crate::traces::start(url, &config.data_dir, store.clone()).await?),
        None => None,
    };
    let tracer = traces.as_ref().map(|(t, _)| t.clone());
    let (store, metrics) = match config.metrics_listen {
        Some(addr) => {
            let sizes = match &closer {
                Closer::Embedded(_) => {
                    crate::metrics::StoreSizes::Embedded(config.data_dir.clone())
                }
                Closer::Postgres(pg) => crate::metrics::StoreSizes::Postgres(
                    crate::metrics::sizes::PgSampler::new(pg.clone()),
                ),
            };
            let (store, endpoint) = start_metrics(store, addr, Some(sizes), tracer).await?;
            (store, Some(endpoint))
        }
        None => match tracer {
            // Counts nobody scrapes, but the one hook every append passes.
            Some(t) => {
                let m = Arc::new(crate::metrics::Metrics::new());
                let s: Arc<dyn Store> =
                    Arc::new(crate::metrics::MeteredStore::new(store, m).with_tracer(t));
                (s, None)
            }
            None => (store, None),
        },
    };
    tracing::info!(fingerprint = %token_key.fingerprint(), "task token key loaded");
    create_successors(store.as_ref(), successors).await;
    let addr = listener.local_addr()?;
    tracing::info!(%addr, store = %config.store_label(), ms = started.elapsed().as_millis() as u64, "serving");
    // Tests and scripts read this line to learn the port when --listen uses port 0.
    eprintln!("steadfast server listening on {addr}");
    let retention = config
        .retention
        .map(|period| tokio::spawn(crate::retention::run(store.clone(), period, SystemClock)));
    let reload = security.auth.clone().map(|a| tokio::spawn(a.watch()));
    if let Some(addr) = config.ui_listen {
        let ui = crate::ui::UiListener::bind(crate::ui::UiOptions {
            listen: addr,
            read_only: config.ui_read_only,
        })
        .await?;
        // Tests and scripts read this line to learn the port when --ui-listen uses port 0.
        eprintln!("steadfast ui listening on {}", ui.listener.local_addr()?);
        security.ui = Some(ui);
    }
    serve_secured(
        store.clone(),
        listener,
        shutdown_signal(),
        settings,
        token_key,
        security,
        open_runs,
    )
    .await?;
    if let Some(task) = reload {
        task.abort();
    }
    if let Some((stop, mut task)) = metrics {
        let _ = stop.send(());
        // A scraper holding its connection open does not hold up the shutdown.
        if tokio::time::timeout(SHUTDOWN_GRACE, &mut task)
            .await
            .is_err()
        {
            task.abort();
        }
    }
    if let Some(task) = retention {
        task.abort();
    }
    if let Some((_, task)) = traces {
        // Unsent spans stay behind the durable cursor: the next start sends them.
        task.abort();
    }
    tracing::info!("shutting down: closing the store");
    closer.close().await;
    Ok(())
}

/// Binds the metrics endpoint on `addr` and serves it; returns `store` wrapped so that every
/// append is counted, and how to stop the endpoint.
async fn start_metrics(
    store: Arc<dyn Store>,
    addr: std::net::SocketAddr,
    sizes: Option<crate::metrics::StoreSizes>,
    tracer: Option<Arc<crate::traces::Tracer>>,
) -> anyhow::Result<(Arc<dyn Store>, MetricsEndpoint)> {
    let listener = TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen for metrics on {addr} (--metrics-listen)"))?;
    let metrics = Arc::new(crate::metrics::Metrics::new());
    metrics
        .seed(store.as_ref())
        .await
        .context("reading the open runs for the metrics")?;
    let exporter = Arc::new(crate::metrics::Exporter {
        metrics: metrics.clone(),
        store: store.clone(),
        sizes,
    });
    let local = listener.local_addr()?;
    tracing::info!(addr = %local, "serving metrics");
    eprintln!("steadfast metrics listening on {local}");
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        let stopped = async {
            let _ = stop_rx.await;
        };
        if let Err(e) = crate::metrics::http::serve(listener, exporter, stopped).await {
            tracing::error!(error = %e, "the metrics endpoint stopped");
        }
    });
    let mut metered = crate::metrics::MeteredStore::new(store, metrics);
    if let Some(t) = tracer {
        metered = metered.with_tracer(t);
    }
    let metered: Arc<dyn Store> = Arc::new(metered);
    Ok((metered, (stop_tx, task)))
}

/// Stops the metrics endpoint, and its task.
type MetricsEndpoint = (
    tokio::sync::oneshot::Sender<()>,
    tokio::task::JoinHandle<()>,
);

/// A crash between the two appends of a continue-as-new leaves a successor uncreated: create
/// them (an append at seq 1 of the successor's id: a successor another node created meanwhile
/// is a conflict, and nothing is written twice).
async fn create_successors(
    store: &dyn Store,
    successors: Vec<(
        steadfast_engine::RunKey,
        steadfast_engine::event::RunStarted,
    )>,
) {
    for (key, started) in successors {
        match crate::service::create_successor(store, &key, started, SystemClock.now_ms()).await {
            Ok(_) => {
                tracing::warn!(run = %key, "created the successor of a continue-as-new interrupted by a crash")
            }
            Err(e) => {
                tracing::error!(run = %key, error = %e, "could not create the successor of a continued run")
            }
        }
    }
}

/// Every `period`, what a crash of any node may have left undone: successors of
/// continue-as-new, and the children and signals of open runs.
async fn reconcile_periodically(core: Arc<Core>, period: std::time::Duration) {
    loop {
        tokio::time::sleep(period).await;
        match core.store.missing_successors().await {
            Ok(s) => create_successors(core.store.as_ref(), s).await,
            Err(e) => tracing::warn!(error = %e, "could not look for missing successors"),
        }
        match core.store.open_runs().await {
            Ok(runs) => crate::family::sweep(&core, runs).await,
            Err(e) => tracing::warn!(error = %e, "could not list open runs to reconcile"),
        }
    }
}

/// A store opened by [`run`], with what the server needs from it before serving.
struct Opened {
    store: Arc<dyn Store>,
    token_key: TokenKey,
    /// Continued runs whose successor a crash left uncreated.
    successors: Vec<(
        steadfast_engine::RunKey,
        steadfast_engine::event::RunStarted,
    )>,
    /// Open runs, reconciled once serving (child runs and signals a crash interrupted).
    open_runs: Vec<steadfast_engine::RunKey>,
    closer: Closer,
}

/// Closes the concrete store at shutdown.
enum Closer {
    Embedded(Arc<EmbeddedStore>),
    Postgres(Arc<PgStore>),
}

impl Closer {
    async fn close(self) {
        match self {
            Closer::Embedded(s) => {
                if let Err(e) = s.close().await {
                    tracing::warn!(error = %e, "closing the store failed; the log will be replayed on open");
                }
            }
            Closer::Postgres(s) => s.close().await,
        }
    }
}

async fn bind(config: &ServerConfig) -> anyhow::Result<TcpListener> {
    TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("cannot listen on {}", config.listen))
}

async fn open_embedded(config: &ServerConfig) -> anyhow::Result<Opened> {
    std::fs::create_dir_all(&config.data_dir)
        .with_context(|| format!("cannot create data dir {}", config.data_dir.display()))?;
    let options = EmbeddedOptions {
        history_events_max: config.history_events_max,
        history_bytes_max: config.history_bytes_max,
        ..EmbeddedOptions::default()
    };
    let (store, report) = EmbeddedStore::open(&config.data_dir, options)
        .with_context(|| format!("cannot open the store in {}", config.data_dir.display()))?;
    tracing::info!(?report, "store open");
    let token_key = match &config.token_key_file {
        Some(path) => TokenKey::load(path),
        None => TokenKey::load_or_create(&config.data_dir),
    }
    .context("cannot load the task token key")?;
    let store = Arc::new(store);
    let successors = store
        .missing_successors()
        .await
        .context("looking for continued runs without a successor")?;
    let open_runs = store.open_runs().await.context("listing open runs")?;
    Ok(Opened {
        store: store.clone(),
        token_key,
        successors,
        open_runs,
        closer: Closer::Embedded(store),
    })
}

/// The PostgreSQL store at `url`. The task-token key is shared through the database (made
/// once by the first node) unless `--token-key-file` names one; the node id defaults to the
/// host name and the listen address, stable across restarts on the same address.
async fn open_postgres(
    config: &ServerConfig,
    url: &str,
    addr: std::net::SocketAddr,
) -> anyhow::Result<Opened> {
    let node_id = config.node_id.clone().unwrap_or_else(|| {
        let host = std::fs::read_to_string("/etc/hostname")
            .ok()
            .map(|h| h.trim().to_string())
            .filter(|h| !h.is_empty())
            .unwrap_or_else(|| "steadfast".into());
        format!("{host}:{}", addr.port())
    });
    let options = PgOptions {
        node_id: node_id.clone(),
        history_events_max: config.history_events_max,
        history_bytes_max: config.history_bytes_max,
        ..PgOptions::default()
    };
    let store = PgStore::connect(url, options)
        .await
        .map_err(|e| anyhow::anyhow!("cannot open the PostgreSQL store: {e}"))?;
    tracing::info!(node = %node_id, "PostgreSQL store open");
    let token_key = match &config.token_key_file {
        Some(path) => TokenKey::load(path).context("cannot load the task token key")?,
        None => TokenKey::from_bytes(
            store
                .shared_secret(TOKEN_KEY_SETTING)
                .await
                .map_err(|e| anyhow::anyhow!("cannot read the shared task token key: {e}"))?,
        ),
    };
    let store = Arc::new(store);
    let successors = store
        .missing_successors()
        .await
        .map_err(|e| anyhow::anyhow!("looking for continued runs without a successor: {e}"))?;
    let open_runs = store
        .open_runs()
        .await
        .map_err(|e| anyhow::anyhow!("listing open runs: {e}"))?;
    Ok(Opened {
        store: store.clone(),
        token_key,
        successors,
        open_runs,
        closer: Closer::Postgres(store),
    })
}

/// The name of the task-token key in a PostgreSQL store's shared settings.
const TOKEN_KEY_SETTING: &str = "task-token-key";

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
        Vec::new(),
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
    /// The web UI's bound listener, served over the same core and tokens; `None` serves none.
    pub ui: Option<crate::ui::UiListener>,
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
        Ok(Security {
            auth,
            tls,
            ui: None,
        })
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
    open_runs: Vec<steadfast_engine::RunKey>,
) -> anyhow::Result<()> {
    let reconcile_period = settings.reconcile_period;
    crate::limits::install(settings.caller_limits);
    let request_bytes_max = settings.caller_limits.request_bytes_max as usize;
    let core = Core::with_settings(store, Arc::new(SystemClock), settings);
    let timer_task = tokio::spawn(timers::run(core.clone()));
    let reconcile_task =
        reconcile_period.map(|p| tokio::spawn(reconcile_periodically(core.clone(), p)));
    let schedule_task = tokio::spawn(crate::schedules::run(core.clone()));
    let relay_task = {
        let core = core.clone();
        tokio::spawn(async move {
            crate::family::sweep(&core, open_runs).await;
            crate::family::run(core).await;
        })
    };
    let changes_task = core
        .store
        .changes()
        .map(|rx| tokio::spawn(forward_changes(core.clone(), rx)));
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
            .max_decoding_message_size(request_bytes_max),
        request_bytes_max as u64,
    );
    let worker_api = WorkerApi::new(core.clone(), token_key);
    let sessions = worker_api.sessions();
    let core_for_stop = core.clone();
    let worker = TooLarge(
        pb::worker_service_server::WorkerServiceServer::new(worker_api)
            .max_decoding_message_size(request_bytes_max),
        request_bytes_max as u64,
    );
    let admin = TooLarge(
        pb::admin_service_server::AdminServiceServer::new(AdminApi::new(core.clone()))
            .max_decoding_message_size(request_bytes_max),
        request_bytes_max as u64,
    );
    let schedules = TooLarge(
        pb::schedule_service_server::ScheduleServiceServer::new(
            crate::service::schedule::ScheduleApi::new(core.clone()),
        )
        .max_decoding_message_size(request_bytes_max),
        request_bytes_max as u64,
    );
    let (ui_stop, ui_task) = match security.ui {
        Some(l) => {
            let ui = Arc::new(crate::ui::Ui::new(
                core.clone(),
                security.auth.clone(),
                l.read_only,
            ));
            let (tx, rx) = tokio::sync::oneshot::channel::<()>();
            let task = tokio::spawn(async move {
                let stopped = async {
                    let _ = rx.await;
                };
                if let Err(e) = crate::ui::serve(l.listener, ui, stopped).await {
                    tracing::error!(error = %e, "the UI endpoint stopped");
                }
            });
            (Some(tx), Some(task))
        }
        None => (None, None),
    };
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
        .add_service(schedules)
        .serve_with_incoming_shutdown(incoming(listener), async {
            let _ = stop_rx.await;
        });
    tokio::pin!(server);
    let result = tokio::select! {
        r = &mut server => r,
        _ = shutdown => {
            // Worker sessions end because this server stops, not because the workers died.
            sessions.close();
            // Long polls and waits answer now (empty, or UNAVAILABLE: call again), so the
            // shutdown does not wait out their deadlines.
            core_for_stop.notify.stop();
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
    if let Some(tx) = ui_stop {
        let _ = tx.send(());
    }
    if let Some(mut task) = ui_task {
        // Open live views (server-sent events) do not hold up the shutdown.
        if tokio::time::timeout(SHUTDOWN_GRACE, &mut task)
            .await
            .is_err()
        {
            task.abort();
        }
    }
    timer_task.abort();
    schedule_task.abort();
    relay_task.abort();
    if let Some(task) = reconcile_task {
        task.abort();
    }
    if let Some(task) = changes_task {
        task.abort();
    }
    result.context("gRPC server")
}

/// Wakes this node's long polls, watchers and timer loop for changes other nodes made.
async fn forward_changes(
    core: Arc<Core>,
    mut rx: tokio::sync::broadcast::Receiver<steadfast_engine::store::Change>,
) {
    use steadfast_engine::store::Change;
    use tokio::sync::broadcast::error::RecvError;
    loop {
        match rx.recv().await {
            Ok(Change::TaskReady {
                namespace,
                queue,
                kind,
            }) => core.notify.task_ready(&namespace, &queue, kind),
            Ok(Change::RunChanged { key, last_seq }) => core.notify.run_changed(&key, last_seq),
            Ok(Change::Timers) => core.notify.timers_changed(),
            // Fenced where it was received; here only kept and passed to this node's watchers.
            Ok(Change::Live(t)) => {
                let d = steadfast_proto::v1::ActivityDelta {
                    activity_id: t.activity_id,
                    attempt: t.attempt,
                    offset: t.offset,
                    text: t.text,
                };
                core.live.publish(&t.key, t.activity_id, t.attempt, &[d]);
            }
            // Missed some: wake everyone once; they re-read the store.
            Err(RecvError::Lagged(n)) => {
                tracing::debug!(missed = n, "change notifications lagged");
                core.notify.wake_all_queues();
                core.notify.timers_changed();
            }
            Err(RecvError::Closed) => return,
        }
    }
}

/// A service whose requests too large to decode are refused with RESOURCE_EXHAUSTED, as gRPC
/// specifies for messages over the limit (and C5 promises), not with the OUT_OF_RANGE that
/// tonic's decoder answers; and whose requests that do not decode at all are INVALID_ARGUMENT,
/// not tonic's INTERNAL ([`crate::validate::undecodable`]).
#[derive(Clone)]
struct TooLarge<S>(S, u64);

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
        let max = self.1;
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
            if !too_large {
                crate::validate::undecodable(headers);
            }
            if too_large {
                let code = (tonic::Code::ResourceExhausted as i32).to_string();
                headers.insert(
                    "grpc-status",
                    http::HeaderValue::from_str(&code).expect("digits are a header value"),
                );
                // Printable ASCII without `%`: a valid grpc-message as it is.
                let message = format!(
                    "the request is too large; the limit is request_bytes_max = {max} bytes (server setting --limit request_bytes_max=N): send large data as a blob or by reference"
                );
                headers.insert(
                    "grpc-message",
                    http::HeaderValue::from_str(&message).expect("ASCII is a header value"),
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
