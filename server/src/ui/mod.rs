//! The web UI (`steadfast server --ui-listen ADDR`): pages for the runs, one run, and the
//! human inbox, over a small JSON + server-sent-events API under `/api/v1`.
//!
//! - **One implementation of every rule.** Each API call builds the gRPC request and calls
//!   the gRPC handler itself ([`ClientApi`], [`AdminApi`]): validation, namespaces, limits
//!   and the run's state checks are the same code whether a person clicks or a program calls.
//! - **The same authentication.** With `--auth-file`, every API call carries
//!   `Authorization: Bearer <token>`, checked by [`crate::auth::layer::decide`] against the
//!   gRPC method it maps to, so a token's role and namespaces mean the same thing here. The
//!   pages keep the token in `sessionStorage` and send it as a header; there are no cookies,
//!   so a cross-site form cannot act with the user's rights.
//! - **Read-only mode** (`--ui-read-only`) refuses every write with 403 before anything is
//!   looked up.
//! - **Payloads only on demand.** Histories and runs come without payload bytes (sizes
//!   instead); a step's payloads are fetched one event at a time ([`api`]), and cut at
//!   [`view::PAYLOAD_VIEW_BYTES_MAX`] unless downloaded. Nothing here logs a payload.
//! - **Assets are embedded** from `server/ui/` (plain HTML, CSS and ES modules; no build
//!   step) by [`assets`].

pub mod api;
pub mod approvals;
pub mod assets;
pub mod call;
pub mod live;
pub mod query;
pub mod view;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::routing::{get, post};
use tokio::net::TcpListener;

use crate::auth::Authenticator;
use crate::core::Core;
use crate::service::{admin::AdminApi, client::ClientApi};

/// How the UI is served (`--ui-listen`, `--ui-read-only`).
#[derive(Debug, Clone, Copy)]
pub struct UiOptions {
    /// Where to listen (plain HTTP/1.1).
    pub listen: SocketAddr,
    /// Refuse every write (403).
    pub read_only: bool,
}

/// A bound UI listener, waiting for the core the server builds.
pub struct UiListener {
    /// The bound socket.
    pub listener: TcpListener,
    /// Read-only mode.
    pub read_only: bool,
}

impl UiListener {
    /// Binds `options.listen`; the error names the flag.
    pub async fn bind(options: UiOptions) -> anyhow::Result<UiListener> {
        use anyhow::Context;
        let listener = TcpListener::bind(options.listen).await.with_context(|| {
            format!(
                "cannot listen for the UI on {} (--ui-listen)",
                options.listen
            )
        })?;
        Ok(UiListener {
            listener,
            read_only: options.read_only,
        })
    }
}

/// What every handler shares.
pub struct Ui {
    /// The client service (the same handlers gRPC calls).
    pub client: ClientApi,
    /// The admin service.
    pub admin: AdminApi,
    /// For what the services do not offer as a call: run change notifications.
    pub core: Arc<Core>,
    /// Bearer tokens; `None` lets every caller do everything (as on the gRPC port).
    pub auth: Option<Arc<Authenticator>>,
    /// Refuse writes.
    pub read_only: bool,
}

impl Ui {
    /// Over `core`.
    pub fn new(core: Arc<Core>, auth: Option<Arc<Authenticator>>, read_only: bool) -> Ui {
        Ui {
            client: ClientApi::new(core.clone()),
            admin: AdminApi::new(core.clone()),
            core,
            auth,
            read_only,
        }
    }
}

/// The routes: the pages, their assets, and the API.
pub fn router(ui: Arc<Ui>) -> Router {
    Router::new()
        .route("/", get(assets::index))
        .route("/assets/:file", get(assets::file))
        .route("/api/v1/session", get(api::session))
        .route("/api/v1/runs", get(api::list_runs))
        .route("/api/v1/runs/live", get(live::list))
        .route("/api/v1/inbox", get(api::inbox))
        .route("/api/v1/runs/:run_id", get(api::describe))
        .route("/api/v1/runs/:run_id/history", get(api::history))
        .route(
            "/api/v1/runs/:run_id/history.json",
            get(api::history_download),
        )
        .route("/api/v1/runs/:run_id/events", get(live::run))
        .route(
            "/api/v1/runs/:run_id/events/:seq/payloads",
            get(api::payloads),
        )
        .route("/api/v1/runs/:run_id/signal", post(api::signal))
        .route("/api/v1/runs/:run_id/cancel", post(api::cancel))
        .route("/api/v1/runs/:run_id/terminate", post(api::terminate))
        .route("/api/v1/runs/:run_id/budget", post(api::budget))
        .route("/api/v1/runs/:run_id/reconcile", post(api::reconcile))
        .route("/api/v1/runs/:run_id/fork", post(api::fork))
        .route(
            "/api/v1/runs/:run_id/approvals/:activity_id",
            get(approvals::arguments),
        )
        .route(
            "/api/v1/runs/:run_id/approvals/:activity_id/approve",
            post(approvals::approve),
        )
        .route(
            "/api/v1/runs/:run_id/approvals/:activity_id/deny",
            post(approvals::deny),
        )
        .fallback(api::not_found)
        .with_state(ui)
}

/// Serves the UI on `listener` until `shutdown` resolves.
pub async fn serve(
    listener: TcpListener,
    ui: Arc<Ui>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, router(ui))
        .with_graceful_shutdown(shutdown)
        .await
}
