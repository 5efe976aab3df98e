//! Sending an attempt's queued live output ([`super::deltas`]) to the server.

use std::time::Duration;

use steadfast_proto::v1 as pb;

use super::ActivityContext;
use super::deltas::DELTA_REQUEST_BYTES_MAX;
use super::runtime::{ActivityTransport, RuntimeConfig};
use crate::backoff::is_transient;

/// The longest one publish may take: output is ephemeral, so a slow server costs watchers
/// text, never the attempt's progress.
const PUBLISH_TIMEOUT: Duration = Duration::from_secs(2);

/// Sends one batch of queued output; true when the server says the attempt should stop
/// (cancelled, closed or superseded), as a heartbeat's answer would.
pub(crate) async fn flush_once<T: ActivityTransport>(
    transport: &T,
    config: &RuntimeConfig,
    ctx: &ActivityContext,
    token: &str,
) -> bool {
    let deltas = ctx.shared.deltas.take(DELTA_REQUEST_BYTES_MAX);
    if deltas.is_empty() {
        return false;
    }
    let bytes: usize = deltas.iter().map(|d| d.text.len()).sum();
    let req = pb::PublishActivityDeltasRequest {
        namespace: config.namespace.clone(),
        task_token: token.to_owned(),
        attempt: ctx.attempt(),
        deltas,
    };
    match tokio::time::timeout(PUBLISH_TIMEOUT, transport.publish_deltas(req)).await {
        Ok(Ok(r)) => r.cancel_requested,
        Ok(Err(s)) if s.code() == tonic::Code::Unimplemented => {
            tracing::debug!("the server takes no live output (PublishActivityDeltas); not sent");
            ctx.shared.deltas.disable();
            false
        }
        Ok(Err(s)) if is_transient(&s) => {
            tracing::debug!(code = ?s.code(), bytes, "live output not sent; dropped");
            false
        }
        // Superseded or closed: the heartbeat stops the attempt; the output is dropped.
        Ok(Err(s)) => {
            tracing::debug!(code = ?s.code(), message = s.message(), bytes, "live output refused; dropped");
            false
        }
        Err(_) => {
            tracing::debug!(bytes, "live output not sent in time; dropped");
            false
        }
    }
}

/// Sends everything still queued (at the end of an attempt, before its outcome).
pub(crate) async fn flush_all<T: ActivityTransport>(
    transport: &T,
    config: &RuntimeConfig,
    ctx: &ActivityContext,
    token: &str,
) {
    // Bounded by what the outbox can hold: at most OUTBOX / REQUEST calls.
    while !ctx.shared.deltas.is_empty() {
        flush_once(transport, config, ctx, token).await;
    }
    let dropped = ctx.shared.deltas.dropped_bytes();
    if dropped > 0 {
        tracing::debug!(
            dropped_bytes = dropped,
            emitted_bytes = ctx.shared.deltas.emitted_bytes(),
            "live output over the worker's outbox limit was dropped"
        );
    }
}
