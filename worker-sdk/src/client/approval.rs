//! Tool approvals through the client: the human's decision on an activity that waits for one
//! (declared by its worker, or asked for by the workflow's call).
//!
//! ```no_run
//! # async fn demo(client: steadfast_sdk::client::Client, run_id: &str) -> Result<(), steadfast_sdk::client::Error> {
//! // Approve activity 3 as scheduled, or with edited arguments (recorded in the history).
//! client.approve(run_id, 3, "looks right", None::<&()>).await?;
//! client.approve(run_id, 4, "capped", Some(&serde_json::json!({"amount": 200}))).await?;
//! // Deny: the workflow gets an ActivityError for which `is_approval_denied()` holds.
//! client.deny(run_id, 5, "not to every customer").await?;
//! # Ok(()) }
//! ```

use serde::Serialize;
use steadfast_proto::v1 as pb;

use super::{Client, Error};
use crate::payload;

impl Client {
    /// Approves activity `activity_id` of run `run_id`, which waits for approval; it runs
    /// now, with `input` instead of its scheduled arguments when given (the edit is
    /// recorded). With auth on, the server records the token's name as who approved.
    pub async fn approve<T: Serialize + ?Sized>(
        &self,
        run_id: &str,
        activity_id: u32,
        comment: &str,
        input: Option<&T>,
    ) -> Result<(), Error> {
        let input = match input {
            Some(v) => Some(payload::encode(v)?),
            None => None,
        };
        let req = pb::ApproveActivityRequest {
            namespace: self.config.namespace.clone(),
            run_id: run_id.to_owned(),
            activity_id,
            comment: comment.to_owned(),
            input,
            identity: self.config.identity.clone(),
        };
        self.service().approve_activity(req).await?;
        Ok(())
    }

    /// Denies activity `activity_id` of run `run_id`: it fails for good with type
    /// `ApprovalDenied` and `reason` in its message, and the workflow handles the failure.
    pub async fn deny(&self, run_id: &str, activity_id: u32, reason: &str) -> Result<(), Error> {
        let req = pb::DenyActivityRequest {
            namespace: self.config.namespace.clone(),
            run_id: run_id.to_owned(),
            activity_id,
            reason: reason.to_owned(),
            identity: self.config.identity.clone(),
        };
        self.service().deny_activity(req).await?;
        Ok(())
    }
}
