//! The Steadfast server: gRPC services over the engine's store, task dispatch by long poll,
//! the timer loop, and the admin CLI. The `steadfast` binary is `src/main.rs`.
//!
//! - [`core`]: what the services share, and `Core::update`, the one way a run changes.
//! - [`service`]: ClientService, WorkerService, AdminService.
//! - [`commands`]: workflow commands -> events, validated against the run state.
//! - [`timers`]: deadlines -> events.
//! - [`schedules`]: the schedule loop: due slots -> runs.
//! - [`retention`]: closed runs past the retention period are dropped.
//! - [`auth`]: bearer tokens from the auth file: roles and namespaces.
//! - [`token`]: signed task tokens, and the key that signs them.
//! - [`query`]: queries parked until a worker answers them.
//! - [`metrics`]: Prometheus metrics from appended records and run states.
//! - [`traces`]: OpenTelemetry spans from the log, exported over OTLP/HTTP.
//! - [`ui`]: the web UI and its JSON + server-sent-events API.

// tonic::Status (176 bytes) is the error type of every gRPC handler and of the helpers that
// build one; boxing it everywhere would only add noise.
#![allow(clippy::result_large_err)]

pub mod auth;
pub mod cli;
pub mod commands;
pub mod config;
pub mod convert;
pub mod convert_approval;
pub mod convert_family;
pub mod convert_search;
pub mod core;
pub mod family;
pub mod limits;
pub mod live;
pub mod logging;
pub mod metrics;
pub mod notify;
pub mod query;
pub mod retention;
pub mod retry;
pub mod schedules;
pub mod server;
pub mod service;
pub mod sync_match;
pub mod timers;
pub mod token;
pub mod traces;
pub mod ui;
pub mod validate;
pub mod versioning;

pub use config::ServerConfig;
