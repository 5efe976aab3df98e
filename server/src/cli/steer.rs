//! `run query`, `run update`: asking a live run's code, and steering it.

use clap::Args;
use steadfast_proto::v1 as pb;

use super::client::Conn;
use super::fmt::opt_payload_json;
use super::run::json_payload;
use super::{Outcome, out_line};

#[derive(Args, Debug)]
pub struct QueryArgs {
    /// Run id.
    pub(super) run: String,
    /// The query handler's name, as the workflow registered it.
    pub(super) name: String,
    /// Query input JSON (inline, @file, or - for stdin).
    #[arg(long, value_name = "JSON", default_value = "null")]
    pub(super) input: String,
    /// How long to wait for a worker's answer, in ms (0 = the server's default, 10 s).
    #[arg(long, value_name = "MS", default_value_t = 0)]
    pub(super) timeout_ms: u64,
}

/// QueryRun: prints the handler's answer as JSON.
pub async fn query(conn: &Conn, a: QueryArgs) -> Outcome {
    let req = pb::QueryRunRequest {
        namespace: conn.namespace.clone(),
        run_id: a.run,
        query_name: a.name,
        input: Some(json_payload("--input", &a.input)?),
        timeout_ms: a.timeout_ms,
    };
    let r = conn
        .client()
        .query_run(req)
        .await
        .map_err(|s| conn.status(s))?
        .into_inner();
    out_line(&opt_payload_json(&r.result).to_string())
}

#[derive(Args, Debug)]
pub struct UpdateArgs {
    /// Run id.
    pub(super) run: String,
    /// The update handler's name, as the workflow registered it.
    pub(super) name: String,
    /// Update input JSON (inline, @file, or - for stdin).
    #[arg(long, value_name = "JSON", default_value = "null")]
    pub(super) input: String,
    /// The update's id: the same id is applied once and answered the same, so a retry
    /// (after a timeout or a server restart) is safe. Generated when not given.
    #[arg(long, value_name = "ID")]
    pub(super) request_id: Option<String>,
    /// How long to wait for the answer, in ms (0 = the server's default, 30 s).
    #[arg(long, value_name = "MS", default_value_t = 0)]
    pub(super) timeout_ms: u64,
}

/// UpdateRun: waits for the handler's answer and prints it as JSON. The request id is
/// printed on stderr, to retry with.
pub async fn update(conn: &Conn, a: UpdateArgs) -> Outcome {
    let request_id = a
        .request_id
        .unwrap_or_else(|| uuid::Uuid::now_v7().to_string());
    super::note(&format!("update request id {request_id}"));
    let req = pb::UpdateRunRequest {
        namespace: conn.namespace.clone(),
        run_id: a.run,
        update_name: a.name,
        input: Some(json_payload("--input", &a.input)?),
        request_id,
        identity: conn.identity.clone(),
        timeout_ms: a.timeout_ms,
    };
    let r = conn
        .client()
        .update_run(req)
        .await
        .map_err(|s| conn.status(s))?
        .into_inner();
    out_line(&opt_payload_json(&r.result).to_string())
}
